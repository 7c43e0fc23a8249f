//! `ferry check` of an installed control plane, against the fake API server: every check
//! passing, each failing with its hint, and the control plane's own answers (through the
//! port-forward to a second fake serving its public API) judged.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{
    cluster_pods, control_pod, fake, fake_api, ferry_check, get, installed, shared, Routes,
};

/// A pod as the API server answers a dry-run create: the check's pod, injected or not.
fn dry_run_answer(injected: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ferry-check-x7k2p", "namespace": "emojivoto"},
        "spec": {"containers": [{"name": "ferry-check", "image": "ferry-check"}]},
    });
    if injected {
        let cfg = ferry::sidecar::ProxyConfig::default();
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::to_value(&pod).unwrap();
        let (docs, _) = ferry::inject::inject_docs(vec![yaml], &cfg).unwrap();
        pod = serde_json::to_value(&docs[0]).unwrap();
    }
    pod
}

const DRY_RUN: &str = "/api/v1/namespaces/emojivoto/pods?dryRun=All";

fn post_install_routes(
    objects: &HashMap<(String, String), Value>,
    available: u64,
    ready: bool,
    proxy_version: &str,
) -> Routes {
    let obj = |k: &str, n: &str| objects[&(k.to_string(), n.to_string())].clone();
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/version",
        shared("openapi/discovery/version.json"),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry",
        obj("Namespace", "ferry"),
    );
    let mut deploy = obj("Deployment", "ferry-control");
    deploy["status"] =
        json!({"replicas": 1, "availableReplicas": available, "readyReplicas": available});
    get(
        &mut routes,
        "/apis/apps/v1/namespaces/ferry/deployments/ferry-control",
        deploy,
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/pods?labelSelector=ferry.io/control-plane-component%3Dcontrol",
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [control_pod(ready)]}),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/configmaps/ferry-identity-trust-roots",
        obj("ConfigMap", "ferry-identity-trust-roots"),
    );
    get(
        &mut routes,
        "/api/v1/namespaces/ferry/secrets/ferry-identity-issuer",
        obj("Secret", "ferry-identity-issuer"),
    );
    get(&mut routes, "/api/v1/pods", cluster_pods(proxy_version));
    // The recorded emojivoto namespace is labelled ferry.io/inject=enabled.
    get(
        &mut routes,
        "/api/v1/namespaces?labelSelector=ferry.io/inject%3Denabled",
        shared("scenario/namespaces.list.json")
            .pipe_filter(|n| n["metadata"]["name"] == "emojivoto"),
    );
    routes
}

/// Keeps the items of a list for which `keep` holds.
trait PipeFilter {
    fn pipe_filter(self, keep: impl Fn(&Value) -> bool) -> Value;
}

impl PipeFilter for Value {
    fn pipe_filter(mut self, keep: impl Fn(&Value) -> bool) -> Value {
        let items = self["items"].as_array().cloned().unwrap_or_default();
        self["items"] = Value::Array(items.into_iter().filter(|i| keep(i)).collect());
        self
    }
}

/// What a healthy control plane's public API answers (a fake one: the port-forward's target).
fn control_api_routes(issuer_left: time::Duration, cert_left_seconds: i64) -> Routes {
    use ferry_api::control_api::{CertificateInfo, IdentityInfo};
    let not_after = (time::OffsetDateTime::now_utc() + issuer_left)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let cert = |subject: &str| CertificateInfo {
        subject: subject.into(),
        sha256: "00".into(),
        not_after: not_after.clone(),
    };
    let identity = IdentityInfo {
        trust_domain: "cluster.local".into(),
        trust_anchors_pem: String::new(),
        trust_anchors: vec![cert("CN=root.cluster.local")],
        issuer: cert("CN=identity.ferry.cluster.local"),
        certificate_lifetime_seconds: 86_400,
    };
    let here = env!("CARGO_PKG_VERSION");
    let proxy = json!({"namespace": "emojivoto", "pod": "web-0", "meshed": true, "ready": true,
        "adminAddr": "10.244.0.5:4191", "state": {"version": here,
        "identity": {"certificate": {"expires_in_seconds": cert_left_seconds}}}});
    let mut routes = Routes::new();
    get(
        &mut routes,
        "/api/v1/health",
        json!({"status": "ok", "version": here}),
    );
    get(
        &mut routes,
        "/api/v1/identity",
        serde_json::to_value(identity).unwrap(),
    );
    get(&mut routes, "/api/v1/proxies", json!({"proxies": [proxy]}));
    routes
}

#[test]
fn healthy_install_passes_every_check() {
    let objects = installed(time::OffsetDateTime::now_utc());
    let mut routes = post_install_routes(&objects, 1, true, env!("CARGO_PKG_VERSION"));
    get(
        &mut routes,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/ferry-proxy-injector-ferry",
        objects[&("MutatingWebhookConfiguration".to_string(), "ferry-proxy-injector-ferry".to_string())].clone(),
    );
    routes.insert(("POST".into(), DRY_RUN.into()), (201, dry_run_answer(true)));
    // The policy CRDs are installed, with one Server that selects the meshed pod.
    for plural in [
        "authorizationpolicies",
        "meshtlsauthentications",
        "networkauthentications",
        "jwtauthentications",
        "httplocalratelimitpolicies",
    ] {
        get(
            &mut routes,
            &format!("/apis/policy.ferry.io/v1alpha1/{plural}"),
            json!({"kind": "List", "items": []}),
        );
    }
    let pod = &cluster_pods(env!("CARGO_PKG_VERSION"))["items"][0]["metadata"];
    let server = json!({
        "apiVersion": "policy.ferry.io/v1alpha1",
        "kind": "Server",
        "metadata": {"namespace": pod["namespace"], "name": "meshed"},
        "spec": {"podSelector": {"matchLabels": pod["labels"]}, "port": 8080},
    });
    get(
        &mut routes,
        "/apis/policy.ferry.io/v1alpha1/servers",
        json!({"kind": "ServerList", "items": [server]}),
    );
    let control = fake(control_api_routes(time::Duration::days(300), 80_000), None);
    let target: SocketAddr = control.url()["http://".len()..].parse().unwrap();
    let api = fake(routes, Some(target));
    let (ok, out) = ferry_check(&["--api-server", &api.url()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("✓ policy: every Server, AuthorizationPolicy and authentication matches something: 1 Server(s), 0 AuthorizationPolicy(ies)"),
        "{out}"
    );
    assert_eq!(out.matches('✓').count(), 13, "{out}");
    for expected in [
        "1/1 replicas available",
        "trust anchors 36",
        "1 meshed pod(s) of",
        "✓ control-plane: public API answers through a port-forward: ok, version",
        "✓ webhook: a dry-run pod create comes back injected: a pod in namespace emojivoto gets the proxy",
        "✓ identity: the control plane issues certificates: issuer CN=identity.ferry.cluster.local (29",
        "✓ data-plane: proxies are ready with certificates not near expiry: 1 of 1 ready, certificates valid 22 h or more",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // The checks reached the control plane only through the pod's port-forward.
    let forwards: Vec<String> = api
        .requests()
        .into_iter()
        .map(|(_, p, _)| fake_api::normalize(&p))
        .filter(|p| p.contains("/portforward"))
        .collect();
    assert!(!forwards.is_empty(), "no port-forward");
    assert!(
        forwards.iter().all(|p| p
            == "/api/v1/namespaces/ferry/pods/ferry-control-7c9d-ready/portforward?ports=8084"),
        "{forwards:?}"
    );
    let dry_run = api
        .requests()
        .into_iter()
        .find(|(m, p, _)| m == "POST" && p == DRY_RUN)
        .expect("a dry-run create");
    let pod: Value = serde_json::from_str(&dry_run.2).unwrap();
    assert_eq!(pod["metadata"]["generateName"], "ferry-check-");
}

#[test]
fn broken_install_fails_each_check_with_a_hint() {
    // The issuer was made 364 days and 23 hours ago: one hour of its year is left.
    let now =
        time::OffsetDateTime::now_utc() - time::Duration::days(365) + time::Duration::hours(1);
    let objects = installed(now);
    let mut routes = post_install_routes(&objects, 0, false, "0.0.1");
    routes.insert(
        ("POST".into(), DRY_RUN.into()),
        (201, dry_run_answer(false)),
    );
    let api = fake(routes, None);
    let (ok, out) = ferry_check(&["--api-server", &api.url()]);
    assert!(!ok, "{out}");
    for expected in [
        "✓ control-plane: namespace exists",
        "× control-plane: ferry-control deployment is available: 0/1 replicas available",
        "    hint: kubectl -n ferry describe deployment ferry-control",
        "× control-plane: pods are ready: not ready: emoji-",
        "× webhook: proxy injector registered with a CA bundle: /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/ferry-proxy-injector-ferry: HTTP 404",
        "× webhook: a dry-run pod create comes back injected: a dry-run pod in namespace emojivoto came back without the proxy",
        "× identity: certificates valid for more than 24 h: issuer expires in ",
        "× data-plane: proxies run this version: 1 of 1 meshed pods run another proxy: emojivoto/meshed-0 (0.0.1)",
        "× control-plane: public API answers through a port-forward: port-forward to the control plane: no ready ferry-control pod in namespace ferry",
        "    hint: kubectl -n ferry logs deploy/ferry-control",
        "× identity: the control plane issues certificates: port-forward to the control plane: no ready",
        "‼ policy: every Server, AuthorizationPolicy and authentication matches something: the policy.ferry.io CRDs are not installed",
        "    hint: ferry install --crds | kubectl apply -f -",
        "9 of 13 check(s) failed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let minutes: i64 = out
        .split("issuer expires in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (50..=60).contains(&minutes),
        "{minutes} min left, expected about an hour"
    );
}

#[test]
fn proxies_near_expiry_and_an_expiring_issuer_fail() {
    let objects = installed(time::OffsetDateTime::now_utc());
    let routes = post_install_routes(&objects, 1, true, env!("CARGO_PKG_VERSION"));
    let control = fake(control_api_routes(time::Duration::hours(2), 1_200), None);
    let target: SocketAddr = control.url()["http://".len()..].parse().unwrap();
    let api = fake(routes, Some(target));
    let (ok, out) = ferry_check(&["--api-server", &api.url()]);
    assert!(!ok, "{out}");
    for expected in [
        "✓ control-plane: public API answers through a port-forward",
        "× identity: the control plane issues certificates: the issuer CN=identity.ferry.cluster.local expires in 1",
        "× data-plane: proxies are ready with certificates not near expiry: certificates near expiry: emojivoto/web-0 (expires in 20 min)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
