//! The checks that ask the control plane itself (its public API through a port-forward on
//! a cluster, or directly with `--local`) and the injector (a dry-run pod create).

use ferry_api::check as local;
use ferry_api::k8s as names;
use ferry_api::overview::{Proxies, ProxyInfo};
use serde_json::Value;

use super::checks::{fail, get_ok, has_proxy, CheckFuture, MIN_VALIDITY};
use super::kube::KubeApi;
use super::Outcome;
use crate::sidecar::VERSION;

/// Judges a `Health` body from the control plane.
fn health(answer: Result<Value, Outcome>) -> Outcome {
    match answer {
        Ok(h) => judged(local::judge_health(
            h["status"].as_str(),
            h["version"].as_str(),
            &h.to_string(),
        )),
        Err(f) => f,
    }
}

/// An outcome from one of the judgements shared with the dashboard.
fn judged(judgement: local::Judgement) -> Outcome {
    match judgement {
        Ok(seen) => Outcome::Pass(seen),
        Err((problem, hint)) => fail(problem, hint),
    }
}

/// GETs `path` from the control plane's public API through the port-forward.
async fn control_ok(api: &KubeApi, ns: &str, path: &str, hint: &str) -> Result<Value, Outcome> {
    api.control_get(ns, path)
        .await
        .map_err(|problem| fail(problem, hint))
}

pub(super) fn api_healthy_in_cluster<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = format!("kubectl -n {ns} logs deploy/{}", names::CONTROL_NAME);
        let path = ferry_api::control_api::HEALTH_PATH;
        health(control_ok(api, ns, path, &hint).await)
    })
}

/// The pod `ferry check` asks the API server to create with `dryRun=All`: nothing is
/// stored, but admission (the injector) runs.
fn dry_run_pod() -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "ferry-check-", "labels": {"app": "ferry-check"}},
        "spec": {"containers": [{"name": "ferry-check", "image": "ferry-check"}]},
    })
}

pub(super) fn webhook_injects<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let label = format!("{}=enabled", names::ANNOTATION_INJECT);
        let path = format!(
            "/api/v1/namespaces?{}",
            crate::control::query_string([("labelSelector", &label)])
        );
        let namespaces = match get_ok(api, &path, "").await {
            Ok(l) => l["items"].as_array().cloned().unwrap_or_default(),
            Err(f) => return f,
        };
        let Some(target) = namespaces
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .next()
        else {
            return fail(
                format!("no namespace is labelled {label} to try a pod in"),
                format!("label one to mesh its pods: kubectl label namespace NS {label}"),
            );
        };
        let hint = format!(
            "kubectl -n {ns} logs deploy/{} (the injector), and check that the API server \
             reaches service {ns}/{}",
            names::CONTROL_NAME,
            names::INJECTOR_NAME
        );
        let path = format!("/api/v1/namespaces/{target}/pods?dryRun=All");
        match api.post(&path, &dry_run_pod()).await {
            Ok(a) if a.status.is_success() && has_proxy(&a.body) => {
                Outcome::Pass(format!("a pod in namespace {target} gets the proxy"))
            }
            Ok(a) if a.status.is_success() => fail(
                format!("a dry-run pod in namespace {target} came back without the proxy"),
                hint,
            ),
            Ok(a) => fail(
                format!(
                    "{path}: HTTP {}: {}",
                    a.status,
                    a.body["message"].as_str().unwrap_or("")
                ),
                hint,
            ),
            Err(e) => fail(e.to_string(), hint),
        }
    })
}

/// Time left until an RFC 3339 instant.
fn until(rfc3339: &str) -> Result<time::Duration, String> {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("bad time {rfc3339:?}: {e}"))?;
    Ok(at - time::OffsetDateTime::now_utc())
}

pub(super) fn identity_issues<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = format!(
            "kubectl -n {ns} logs deploy/{}; the issuer comes from secret {ns}/{}",
            names::CONTROL_NAME,
            names::SECRET_IDENTITY_ISSUER
        );
        let path = ferry_api::control_api::IDENTITY_PATH;
        let body = match control_ok(api, ns, path, &hint).await {
            Ok(b) => b,
            Err(f) => return f,
        };
        let info: ferry_api::control_api::IdentityInfo = match serde_json::from_value(body) {
            Ok(i) => i,
            Err(e) => return fail(format!("{path}: {e}"), hint),
        };
        if info.trust_anchors.is_empty() {
            return fail("the control plane has no trust anchors", hint);
        }
        match until(&info.issuer.not_after) {
            Ok(left) if left > MIN_VALIDITY => Outcome::Pass(format!(
                "issuer {} ({}d left) for {}, {} trust anchor(s)",
                info.issuer.subject,
                left.whole_days(),
                info.trust_domain,
                info.trust_anchors.len()
            )),
            Ok(left) => fail(
                format!(
                    "the issuer {} expires in {} min: it cannot issue {}-hour certificates",
                    info.issuer.subject,
                    left.whole_minutes(),
                    MIN_VALIDITY.whole_hours()
                ),
                hint,
            ),
            Err(e) => fail(format!("{path}: {e}"), hint),
        }
    })
}

/// A proxy's certificate must have at least this long left: it renews well before expiry,
/// so less means renewal is failing.
const PROXY_CERT_MIN: time::Duration = time::Duration::hours(1);

pub(super) fn proxies_ready_in_cluster<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = "a control plane of this release serves /api/v1/proxies";
        let path = ferry_api::overview::PROXIES_PATH;
        let proxies = match control_ok(api, ns, path, hint).await {
            Ok(body) => match serde_json::from_value::<Proxies>(body) {
                Ok(p) => p.proxies,
                Err(e) => return fail(format!("{path}: {e}"), hint),
            },
            Err(f) => return f,
        };
        let ready = match local::judge_proxies_ready(&proxies) {
            Ok(seen) => seen,
            Err((problem, _)) => {
                return fail(
                    problem,
                    "kubectl -n NS logs POD -c ferry-proxy; `ferry diagnostics` shows what the control plane tells it",
                )
            }
        };
        let mut expiring = Vec::new();
        let mut shortest: Option<i64> = None;
        for p in proxies
            .iter()
            .filter(|p| p.meshed && p.admin_addr.is_some())
        {
            let left = p
                .state
                .as_ref()
                .and_then(|s| s["identity"]["certificate"]["expires_in_seconds"].as_i64());
            match left {
                Some(left) if left > PROXY_CERT_MIN.whole_seconds() => {
                    shortest = Some(shortest.map_or(left, |s| s.min(left)));
                }
                Some(left) => expiring.push(format!(
                    "{}/{} (expires in {} min)",
                    p.namespace,
                    p.pod,
                    left / 60
                )),
                None => expiring.push(format!("{}/{} (no certificate)", p.namespace, p.pod)),
            }
        }
        if !expiring.is_empty() {
            return fail(
                format!("certificates near expiry: {}", expiring.join(", ")),
                "a proxy renews its certificate well before expiry: check its logs \
                 (kubectl -n NS logs POD -c ferry-proxy) and the identity service's",
            );
        }
        match shortest {
            Some(s) => Outcome::Pass(format!(
                "{ready}, certificates valid {} h or more",
                s / 3600
            )),
            None => Outcome::Pass(ready),
        }
    })
}

pub(super) fn api_healthy_local<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = "start it (`ferry-control`), or pass --api-server with its public API address";
        health(get_ok(api, ferry_api::control_api::HEALTH_PATH, hint).await)
    })
}

pub(super) fn version_matches_local<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let h = match get_ok(api, ferry_api::control_api::HEALTH_PATH, "").await {
            Ok(h) => h,
            Err(f) => return f,
        };
        judged(local::judge_version(
            h["version"].as_str(),
            VERSION,
            "this CLI",
        ))
    })
}

/// The control plane's view of its proxies (`GET /api/v1/proxies`).
async fn local_proxies(api: &KubeApi) -> Result<Vec<ProxyInfo>, Outcome> {
    let hint = "a control plane of this release serves /api/v1/proxies";
    let body = get_ok(api, ferry_api::overview::PROXIES_PATH, hint).await?;
    serde_json::from_value::<Proxies>(body)
        .map(|p| p.proxies)
        .map_err(|e| fail(format!("/api/v1/proxies: {e}"), hint))
}

pub(super) fn proxies_ready_local<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        match local_proxies(api).await {
            Ok(proxies) => judged(local::judge_proxies_ready(&proxies)),
            Err(f) => f,
        }
    })
}

pub(super) fn proxies_version_local<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        // Proxies are judged against the control plane they talk to, as the dashboard does
        // (the CLI against the control plane is the check before); this CLI's version only
        // when the control plane does not say.
        let control = get_ok(api, ferry_api::control_api::HEALTH_PATH, "")
            .await
            .ok()
            .and_then(|h| h["version"].as_str().map(str::to_owned));
        let version = control.as_deref().unwrap_or(VERSION);
        match local_proxies(api).await {
            Ok(proxies) => judged(local::judge_proxies_version(&proxies, version)),
            Err(f) => f,
        }
    })
}
