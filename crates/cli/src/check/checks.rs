//! The checks that read the Kubernetes API; those asking the control plane itself are in
//! `control_plane`.

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use ferry_api::check as local;
use ferry_api::k8s as names;
use hyper::StatusCode;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use serde_json::Value;

use super::control_plane::{
    api_healthy_in_cluster, api_healthy_local, identity_issues, proxies_ready_in_cluster,
    proxies_ready_local, proxies_version_local, version_matches_local, webhook_injects,
};
use super::kube::{Answer, KubeApi};
use super::Outcome;
use crate::sidecar::VERSION;

/// The oldest Kubernetes minor version Ferry supports: native sidecars (1.29).
pub const MIN_MINOR: u64 = 29;
/// Certificates must stay valid at least this long (a workload certificate's lifetime).
pub(super) const MIN_VALIDITY: time::Duration = time::Duration::hours(24);

pub(super) type CheckFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// One named check.
pub struct Check {
    /// `category: what holds`.
    pub name: &'static str,
    /// When it fails, the checks after it cannot say anything useful.
    pub fatal: bool,
    /// Runs it against the API, for the control plane in the given namespace.
    pub run: for<'a> fn(&'a KubeApi, &'a str) -> CheckFuture<'a>,
}

/// Checks before `ferry install`.
pub fn pre_install() -> Vec<Check> {
    vec![
        Check {
            name: "kubernetes-api: the API server answers",
            fatal: true,
            run: api_reachable,
        },
        Check {
            name: "kubernetes-version: at least 1.29",
            fatal: false,
            run: version,
        },
        Check {
            name: "pre-install: no control plane in the namespace yet",
            fatal: false,
            run: namespace_free,
        },
        Check {
            name: "pre-install: permitted to create the control plane",
            fatal: false,
            run: can_install,
        },
    ]
}

/// Checks of an installed control plane and its proxies.
pub fn post_install() -> Vec<Check> {
    vec![
        Check {
            name: "kubernetes-api: the API server answers",
            fatal: true,
            run: api_reachable,
        },
        Check {
            name: "kubernetes-version: at least 1.29",
            fatal: false,
            run: version,
        },
        Check {
            name: "control-plane: namespace exists",
            fatal: true,
            run: namespace_exists,
        },
        Check {
            name: "control-plane: ferry-control deployment is available",
            fatal: false,
            run: deployment_available,
        },
        Check {
            name: "control-plane: pods are ready",
            fatal: false,
            run: pods_ready,
        },
        Check {
            name: "control-plane: public API answers through a port-forward",
            fatal: false,
            run: api_healthy_in_cluster,
        },
        Check {
            name: "webhook: proxy injector registered with a CA bundle",
            fatal: false,
            run: webhook_registered,
        },
        Check {
            name: "webhook: a dry-run pod create comes back injected",
            fatal: false,
            run: webhook_injects,
        },
        Check {
            name: "identity: certificates valid for more than 24 h",
            fatal: false,
            run: certificates_valid,
        },
        Check {
            name: "identity: the control plane issues certificates",
            fatal: false,
            run: identity_issues,
        },
        Check {
            name: "data-plane: proxies run this version",
            fatal: false,
            run: proxies_up_to_date,
        },
        Check {
            name: "data-plane: proxies are ready with certificates not near expiry",
            fatal: false,
            run: proxies_ready_in_cluster,
        },
        Check {
            name: local::POLICIES_MATCH,
            fatal: false,
            run: super::policy::policies_match,
        },
    ]
}

/// Checks of a control plane running on this machine (`ferry demo`, VMs), at its public API.
///
/// The first four are the dashboard's check page's, judged by the same functions
/// (`ferry_api::check`), which the control plane runs on itself; the policy check is the
/// one `post_install` runs, over the control plane's listing of its documents and pods.
pub fn local() -> Vec<Check> {
    vec![
        Check {
            name: local::API_ANSWERS,
            fatal: true,
            run: api_healthy_local,
        },
        Check {
            name: local::RUNS_THIS_VERSION,
            fatal: false,
            run: version_matches_local,
        },
        Check {
            name: local::PROXIES_READY,
            fatal: false,
            run: proxies_ready_local,
        },
        Check {
            name: local::PROXIES_VERSION,
            fatal: false,
            run: proxies_version_local,
        },
        Check {
            name: local::POLICIES_MATCH,
            fatal: false,
            run: super::policy::policies_match_local,
        },
    ]
}

pub(super) fn fail(problem: impl Into<String>, hint: impl Into<String>) -> Outcome {
    Outcome::Fail {
        problem: problem.into(),
        hint: hint.into(),
    }
}

/// GETs `path`, turning transport errors and unexpected statuses into failures.
pub(super) async fn get_ok(api: &KubeApi, path: &str, hint: &str) -> Result<Value, Outcome> {
    match api.get(path).await {
        Ok(Answer { status, body }) if status == StatusCode::OK => Ok(body),
        Ok(Answer { status, body }) => Err(fail(
            format!(
                "{path}: HTTP {status}: {}",
                body["message"].as_str().unwrap_or("")
            ),
            hint,
        )),
        Err(e) => Err(fail(format!("{e}"), hint)),
    }
}

fn api_reachable<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = "check the kubeconfig (--kubeconfig, KUBECONFIG, --context; `kubectl version` \
             should answer), or pass --api-server";
        match get_ok(api, "/version", hint).await {
            Ok(v) => Outcome::Pass(format!(
                "{} at {}",
                v["gitVersion"].as_str().unwrap_or("?"),
                api.base()
            )),
            Err(f) => f,
        }
    })
}

fn version<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let v = match get_ok(api, "/version", "").await {
            Ok(v) => v,
            Err(f) => return f,
        };
        let number =
            |key: &str| -> Option<u64> { v[key].as_str()?.trim_end_matches('+').parse().ok() };
        match (number("major"), number("minor")) {
            (Some(1), Some(minor)) if minor >= MIN_MINOR => Outcome::Pass(format!("1.{minor}")),
            (Some(major), Some(minor)) if major > 1 => Outcome::Pass(format!("{major}.{minor}")),
            (Some(major), Some(minor)) => fail(
                format!("{major}.{minor} is older than 1.{MIN_MINOR}"),
                "the proxy runs as a native sidecar (1.29+); on older clusters inject with --no-native-sidecar",
            ),
            _ => fail("/version has no numeric major/minor", "is this a Kubernetes API server?"),
        }
    })
}

fn namespace_free<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        match api.get(&format!("/api/v1/namespaces/{ns}")).await {
            Ok(a) if a.status == StatusCode::NOT_FOUND => {
                Outcome::Pass(format!("namespace {ns} is free"))
            }
            Ok(a) if a.status == StatusCode::OK => fail(
                format!("namespace {ns} already exists"),
                "Ferry looks installed: run `ferry check`, or install elsewhere with --namespace",
            ),
            Ok(a) => fail(
                format!("reading namespace {ns}: HTTP {}", a.status),
                "check your credentials",
            ),
            Err(e) => fail(e.to_string(), "check the API server address"),
        }
    })
}

/// What `ferry install` creates: (group, resource, namespaced).
const INSTALL_PERMISSIONS: &[(&str, &str, bool)] = &[
    ("", "namespaces", false),
    ("", "serviceaccounts", true),
    ("", "services", true),
    ("", "configmaps", true),
    ("", "secrets", true),
    ("apps", "deployments", true),
    ("policy", "poddisruptionbudgets", true),
    ("rbac.authorization.k8s.io", "clusterroles", false),
    ("rbac.authorization.k8s.io", "clusterrolebindings", false),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        false,
    ),
];

fn can_install<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let mut denied = Vec::new();
        for (group, resource, namespaced) in INSTALL_PERMISSIONS {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(group.to_string()),
                        resource: Some(resource.to_string()),
                        verb: Some("create".to_string()),
                        namespace: namespaced.then(|| ns.to_string()),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let body = serde_json::to_value(&review).unwrap_or_default();
            let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
            match api.post(path, &body).await {
                Ok(a) if a.status.is_success() && a.body["status"]["allowed"] == true => {}
                Ok(_) => denied.push(format!("create {resource}")),
                Err(e) => return fail(e.to_string(), "check the API server address"),
            }
        }
        if denied.is_empty() {
            Outcome::Pass(format!(
                "may create all {} kinds of object",
                INSTALL_PERMISSIONS.len()
            ))
        } else {
            fail(
                format!("not permitted to {}", denied.join(", ")),
                "install with cluster-admin rights: it creates RBAC and a webhook configuration",
            )
        }
    })
}

fn namespace_exists<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = "install the control plane: `ferry install | kubectl apply -f -`";
        match get_ok(api, &format!("/api/v1/namespaces/{ns}"), hint).await {
            Ok(_) => Outcome::Pass(format!("namespace {ns}")),
            Err(f) => f,
        }
    })
}

fn deployment_available<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = format!(
            "kubectl -n {ns} describe deployment {}",
            names::CONTROL_NAME
        );
        let path = format!(
            "/apis/apps/v1/namespaces/{ns}/deployments/{}",
            names::CONTROL_NAME
        );
        let d = match get_ok(api, &path, &hint).await {
            Ok(d) => d,
            Err(f) => return f,
        };
        let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
        let available = d["status"]["availableReplicas"].as_u64().unwrap_or(0);
        if available >= want && want > 0 {
            Outcome::Pass(format!("{available}/{want} replicas available"))
        } else {
            fail(format!("{available}/{want} replicas available"), hint)
        }
    })
}

fn pods_ready<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = format!(
            "kubectl -n {ns} get pods -l {}=control",
            names::LABEL_CONTROL_PLANE_COMPONENT
        );
        let path = format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector={}%3Dcontrol",
            names::LABEL_CONTROL_PLANE_COMPONENT
        );
        let list = match get_ok(api, &path, &hint).await {
            Ok(l) => l,
            Err(f) => return f,
        };
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        let not_ready: Vec<String> = pods
            .iter()
            .filter(|p| {
                !p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("?").to_string())
            .collect();
        if pods.is_empty() {
            fail("no control-plane pods", hint)
        } else if not_ready.is_empty() {
            Outcome::Pass(format!("{} ready", pods.len()))
        } else {
            fail(format!("not ready: {}", not_ready.join(", ")), hint)
        }
    })
}

fn webhook_registered<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let name = format!("{}-{ns}", names::INJECTOR_NAME);
        let hint = "re-apply the output of `ferry install`";
        let path =
            format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}");
        let mwc = match get_ok(api, &path, hint).await {
            Ok(m) => m,
            Err(f) => return f,
        };
        let hook = &mwc["webhooks"][0];
        let service = &hook["clientConfig"]["service"];
        if hook["clientConfig"]["caBundle"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            fail(format!("{name} has no caBundle"), hint)
        } else if service["name"] != names::INJECTOR_NAME || service["namespace"] != ns {
            fail(format!("{name} points at {service}"), hint)
        } else {
            Outcome::Pass(format!("{name} → service {}/{}", ns, names::INJECTOR_NAME))
        }
    })
}

/// Seconds until the first certificate in `pem` expires.
fn remaining(pem: &[u8]) -> Result<time::Duration, String> {
    let mut shortest: Option<i64> = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("bad PEM: {e}"))?;
        let cert = block
            .parse_x509()
            .map_err(|e| format!("bad certificate: {e}"))?;
        let not_after = cert.validity().not_after.timestamp();
        shortest = Some(shortest.map_or(not_after, |s| s.min(not_after)));
    }
    let not_after = shortest.ok_or("no certificate")?;
    Ok(time::Duration::seconds(
        not_after - time::OffsetDateTime::now_utc().unix_timestamp(),
    ))
}

fn certificates_valid<'a>(api: &'a KubeApi, ns: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = "rotate the identity certificates: `ferry install` with new --identity-* files";
        let roots = format!(
            "/api/v1/namespaces/{ns}/configmaps/{}",
            names::CONFIGMAP_TRUST_ROOTS
        );
        let issuer = format!(
            "/api/v1/namespaces/{ns}/secrets/{}",
            names::SECRET_IDENTITY_ISSUER
        );
        let anchors = match get_ok(api, &roots, hint).await {
            Ok(cm) => cm["data"]["ca-bundle.crt"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
            Err(f) => return f,
        };
        let issuer_pem = match get_ok(api, &issuer, hint).await {
            Ok(s) => base64::engine::general_purpose::STANDARD
                .decode(s["data"]["tls.crt"].as_str().unwrap_or_default())
                .unwrap_or_default(),
            Err(f) => return f,
        };
        let mut seen = Vec::new();
        for (what, pem) in [("trust anchors", anchors), ("issuer", issuer_pem)] {
            match remaining(&pem) {
                Ok(left) if left > MIN_VALIDITY => {
                    seen.push(format!("{what} {}d", left.whole_days()))
                }
                Ok(left) => {
                    return fail(
                        format!("{what} expires in {} min", left.whole_minutes()),
                        hint,
                    );
                }
                Err(e) => return fail(format!("the {what}: {e}"), hint),
            }
        }
        Outcome::Pass(seen.join(", "))
    })
}

pub(super) fn has_proxy(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|field| {
        pod["spec"][field]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == names::CONTAINER_PROXY))
    })
}

fn proxies_up_to_date<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let pods = match get_ok(api, "/api/v1/pods", "").await {
            Ok(l) => l["items"].as_array().cloned().unwrap_or_default(),
            Err(f) => return f,
        };
        let meshed: Vec<&Value> = pods.iter().filter(|p| has_proxy(p)).collect();
        let outdated: Vec<String> = meshed
            .iter()
            .filter_map(|p| {
                let version = p["metadata"]["annotations"][names::ANNOTATION_PROXY_VERSION]
                    .as_str()
                    .unwrap_or("unknown");
                (version != VERSION).then(|| {
                    let meta = &p["metadata"];
                    format!(
                        "{}/{} ({version})",
                        meta["namespace"].as_str().unwrap_or("?"),
                        meta["name"].as_str().unwrap_or("?")
                    )
                })
            })
            .collect();
        if outdated.is_empty() {
            Outcome::Pass(format!(
                "{} meshed pod(s) of {}, all at {VERSION}",
                meshed.len(),
                pods.len()
            ))
        } else {
            fail(
                format!("{} of {} meshed pods run another proxy: {}", outdated.len(), meshed.len(), outdated.join(", ")),
                "re-inject them: `kubectl get deploy -n NS -o yaml | ferry inject - | kubectl apply -f -`",
            )
        }
    })
}
