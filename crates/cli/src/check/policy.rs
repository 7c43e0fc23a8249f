//! The authorization policy check: objects that match nothing (docs/authorization.md) —
//! a `Server` selecting no pod, a policy whose target or authentication does not exist, an
//! authentication no policy uses. They are warnings: the mesh works, the policy just does
//! not say what its author meant. The objects come from the Kubernetes API on a cluster,
//! and from the control plane's `GET /api/v1/policy/objects` with `--local`; one set of
//! rules judges both.

use std::collections::BTreeMap;

use ferry_api::authz::PolicyObjectList;
use serde_json::Value;

use super::checks::CheckFuture;
use super::kube::{Answer, KubeApi};
use super::Outcome;

/// The objects the check reads, as the API server lists them.
#[derive(Debug, Default)]
pub struct PolicyObjects {
    /// Every pod.
    pub pods: Vec<Value>,
    /// Items by kind: `Server`, `AuthorizationPolicy`, the authentications,
    /// `HTTPLocalRateLimitPolicy`, `HTTPRoute`, `GRPCRoute`.
    pub by_kind: BTreeMap<&'static str, Vec<Value>>,
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn at(item: &Value) -> (&str, &str) {
    (
        text(&item["metadata"]["namespace"]),
        text(&item["metadata"]["name"]),
    )
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let labels_ok = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let exprs_ok = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let v = label(text(&e["key"]));
            match text(&e["operator"]) {
                "In" => v.is_some_and(|v| values.contains(&v)),
                "NotIn" => v.is_none_or(|v| !values.contains(&v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        });
    labels_ok && exprs_ok
}

impl PolicyObjects {
    fn items(&self, kind: &str) -> &[Value] {
        self.by_kind.get(kind).map_or(&[], Vec::as_slice)
    }

    fn exists(&self, kind: &str, ns: &str, name: &str) -> bool {
        self.items(kind).iter().any(|i| at(i) == (ns, name))
    }

    /// What matches nothing, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.items("Server") {
            let (ns, name) = at(s);
            let any = self.pods.iter().any(|p| {
                at(p).0 == ns && selects(&s["spec"]["podSelector"], &p["metadata"]["labels"])
            });
            if !any {
                out.push(format!("Server {ns}/{name} selects no pods"));
            }
        }
        let mut used = std::collections::BTreeSet::new();
        for p in self.items("AuthorizationPolicy") {
            let (ns, name) = at(p);
            let t = &p["spec"]["targetRef"];
            let (kind, target) = (text(&t["kind"]), text(&t["name"]));
            let found = match kind {
                "Namespace" => target == ns,
                kind => self.exists(kind, ns, target),
            };
            if !found {
                out.push(format!(
                    "AuthorizationPolicy {ns}/{name} targets {kind} {target}, which does not exist"
                ));
            }
            for r in p["spec"]["requiredAuthenticationRefs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let kind = text(&r["kind"]);
                let rns = r["namespace"].as_str().unwrap_or(ns);
                let rname = text(&r["name"]);
                if kind == "ServiceAccount" {
                    continue;
                }
                used.insert((kind.to_string(), rns.to_string(), rname.to_string()));
                if !self.exists(kind, rns, rname) {
                    out.push(format!(
                        "AuthorizationPolicy {ns}/{name} requires {kind} {rns}/{rname}, which does not exist: it admits no one"
                    ));
                }
            }
        }
        for kind in [
            "MeshTLSAuthentication",
            "NetworkAuthentication",
            "JWTAuthentication",
        ] {
            for a in self.items(kind) {
                let (ns, name) = at(a);
                if !used.contains(&(kind.to_string(), ns.to_string(), name.to_string())) {
                    out.push(format!(
                        "{kind} {ns}/{name} is required by no AuthorizationPolicy"
                    ));
                }
            }
        }
        for l in self.items("HTTPLocalRateLimitPolicy") {
            let (ns, name) = at(l);
            let target = text(&l["spec"]["targetRef"]["name"]);
            if !self.exists("Server", ns, target) {
                out.push(format!(
                    "HTTPLocalRateLimitPolicy {ns}/{name} targets Server {target}, which does not exist"
                ));
            }
        }
        out
    }
}

/// Each kind `PolicyObjects` reads, with where the Kubernetes API lists it.
const KINDS: [(&str, &str); 8] = [
    ("Server", "/apis/policy.ferry.io/v1alpha1/servers"),
    (
        "AuthorizationPolicy",
        "/apis/policy.ferry.io/v1alpha1/authorizationpolicies",
    ),
    (
        "MeshTLSAuthentication",
        "/apis/policy.ferry.io/v1alpha1/meshtlsauthentications",
    ),
    (
        "NetworkAuthentication",
        "/apis/policy.ferry.io/v1alpha1/networkauthentications",
    ),
    (
        "JWTAuthentication",
        "/apis/policy.ferry.io/v1alpha1/jwtauthentications",
    ),
    (
        "HTTPLocalRateLimitPolicy",
        "/apis/policy.ferry.io/v1alpha1/httplocalratelimitpolicies",
    ),
    ("HTTPRoute", "/apis/gateway.networking.k8s.io/v1/httproutes"),
    ("GRPCRoute", "/apis/gateway.networking.k8s.io/v1/grpcroutes"),
];

const HINT: &str = "see `ferry authz deploy/NAME` and docs/authorization.md";

impl From<PolicyObjectList> for PolicyObjects {
    fn from(mut list: PolicyObjectList) -> Self {
        let by_kind = KINDS
            .iter()
            .map(|(kind, _)| (*kind, list.items.remove(*kind).unwrap_or_default()))
            .collect();
        Self {
            pods: list.pods,
            by_kind,
        }
    }
}

/// The check's outcome over `objects`, on a cluster or a local control plane: a pass, or a
/// warning with one line per object that matches nothing.
fn judge(objects: &PolicyObjects) -> Outcome {
    let warnings = objects.warnings();
    if warnings.is_empty() {
        let n = |k| objects.items(k).len();
        Outcome::Pass(format!(
            "{} Server(s), {} AuthorizationPolicy(ies), each matching something",
            n("Server"),
            n("AuthorizationPolicy")
        ))
    } else {
        Outcome::Warn {
            problem: warnings.join("\n"),
            hint: HINT.to_string(),
        }
    }
}

/// `policy: every Server, AuthorizationPolicy and authentication matches something`, from
/// the Kubernetes API.
pub(super) fn policies_match<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let list = |path: String| async move {
            match api.get(&path).await {
                Ok(Answer { status, body }) if status.is_success() => {
                    Ok(Some(body["items"].as_array().cloned().unwrap_or_default()))
                }
                Ok(Answer { status, .. }) if status.as_u16() == 404 => Ok(None),
                Ok(Answer { status, .. }) => Err(format!("{path}: HTTP {status}")),
                Err(e) => Err(format!("{path}: {e}")),
            }
        };
        let mut objects = PolicyObjects::default();
        for (kind, path) in KINDS {
            match list(path.to_string()).await {
                Ok(Some(items)) => {
                    objects.by_kind.insert(kind, items);
                }
                Ok(None) if kind == "Server" => {
                    return Outcome::Warn {
                        problem: "the policy.ferry.io CRDs are not installed".to_string(),
                        hint: "ferry install --crds | kubectl apply -f -".to_string(),
                    }
                }
                Ok(None) => {}
                Err(problem) => return super::checks::fail(problem, HINT),
            }
        }
        objects.pods = match list("/api/v1/pods".to_string()).await {
            Ok(items) => items.unwrap_or_default(),
            Err(problem) => return super::checks::fail(problem, HINT),
        };
        judge(&objects)
    })
}

/// The same check against a control plane on this machine: the documents it loaded from
/// `--routes` and its workloads' pods, as `GET /api/v1/policy/objects` lists them.
pub(super) fn policies_match_local<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let path = ferry_api::authz::POLICY_OBJECTS_PATH;
        let hint = format!("a control plane of this release serves {path}");
        let body = match super::checks::get_ok(api, path, &hint).await {
            Ok(b) => b,
            Err(f) => return f,
        };
        match serde_json::from_value::<PolicyObjectList>(body) {
            Ok(list) => judge(&PolicyObjects::from(list)),
            Err(e) => super::checks::fail(format!("{path}: {e}"), hint),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, name: &str, spec: Value) -> Value {
        json!({"kind": kind, "metadata": {"namespace": "emojivoto", "name": name}, "spec": spec})
    }

    #[test]
    fn warns_about_each_object_that_matches_nothing() {
        let mut o = PolicyObjects {
            pods: vec![
                json!({"metadata": {"namespace": "emojivoto", "name": "voting-0", "labels": {"app": "voting"}}}),
            ],
            ..PolicyObjects::default()
        };
        o.by_kind.insert(
            "Server",
            vec![
                object("Server", "voting", json!({"podSelector": {"matchLabels": {"app": "voting"}}})),
                object("Server", "ghost", json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["ghost"]}]}})),
            ],
        );
        o.by_kind.insert(
            "AuthorizationPolicy",
            vec![
                object("AuthorizationPolicy", "ok", json!({
                    "targetRef": {"kind": "Server", "name": "voting"},
                    "requiredAuthenticationRefs": [{"kind": "MeshTLSAuthentication", "name": "web"}],
                })),
                object("AuthorizationPolicy", "lost", json!({
                    "targetRef": {"kind": "HTTPRoute", "name": "gone"},
                    "requiredAuthenticationRefs": [{"kind": "NetworkAuthentication", "name": "nope"}],
                })),
            ],
        );
        o.by_kind.insert(
            "MeshTLSAuthentication",
            vec![
                object("MeshTLSAuthentication", "web", json!({})),
                object("MeshTLSAuthentication", "unused", json!({})),
            ],
        );
        assert_eq!(
            o.warnings(),
            [
                "Server emojivoto/ghost selects no pods",
                "AuthorizationPolicy emojivoto/lost targets HTTPRoute gone, which does not exist",
                "AuthorizationPolicy emojivoto/lost requires NetworkAuthentication emojivoto/nope, which does not exist: it admits no one",
                "MeshTLSAuthentication emojivoto/unused is required by no AuthorizationPolicy",
            ]
        );
    }

    #[test]
    fn a_control_planes_listing_is_judged_alike_with_a_line_per_object() {
        let list: PolicyObjectList = serde_json::from_value(json!({
            "pods": [{"metadata": {"namespace": "emojivoto", "name": "voting-0", "labels": {"app": "voting"}}}],
            "items": {
                "Server": [object("Server", "voting", json!({"podSelector": {"matchLabels": {"app": "voting"}}}))],
                "NetworkAuthentication": [object("NetworkAuthentication", "a", json!({})), object("NetworkAuthentication", "b", json!({}))],
                "Unknown": [object("Unknown", "x", json!({}))],
            },
        }))
        .unwrap();
        let objects = PolicyObjects::from(list);
        assert_eq!(
            objects.by_kind.len(),
            KINDS.len(),
            "every kind, nothing else"
        );
        assert_eq!(
            judge(&objects),
            Outcome::Warn {
                problem:
                    "NetworkAuthentication emojivoto/a is required by no AuthorizationPolicy\n\
                          NetworkAuthentication emojivoto/b is required by no AuthorizationPolicy"
                        .to_string(),
                hint: HINT.to_string(),
            }
        );
        let rendered = super::super::render(
            &[super::super::CheckResult {
                name: "policy: x".to_string(),
                outcome: judge(&objects),
            }],
            1,
        );
        assert!(
            rendered.starts_with(
                "‼ policy: x: NetworkAuthentication emojivoto/a is required by no AuthorizationPolicy\n\
                 ‼ policy: x: NetworkAuthentication emojivoto/b is required by no AuthorizationPolicy\n    hint: "
            ),
            "{rendered}"
        );
    }
}
