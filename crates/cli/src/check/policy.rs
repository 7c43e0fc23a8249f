//! The authorization policy check: objects that match nothing (docs/authorization.md) —
//! a `Server` selecting no pod, a policy whose target or authentication does not exist, an
//! authentication no policy uses. They are warnings: the mesh works, the policy just does
//! not say what its author meant.

use std::collections::BTreeMap;

use serde_json::Value;

use super::checks::CheckFuture;
use super::kube::{Answer, KubeApi};
use super::Outcome;

const POLICY: &str = "/apis/policy.ferry.io/v1alpha1";

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

/// `policy: every Server, AuthorizationPolicy and authentication matches something`.
pub(super) fn policies_match<'a>(api: &'a KubeApi, _: &'a str) -> CheckFuture<'a> {
    Box::pin(async move {
        let hint = "see `ferry authz deploy/NAME` and docs/authorization.md";
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
        let kinds = [
            ("Server", format!("{POLICY}/servers")),
            (
                "AuthorizationPolicy",
                format!("{POLICY}/authorizationpolicies"),
            ),
            (
                "MeshTLSAuthentication",
                format!("{POLICY}/meshtlsauthentications"),
            ),
            (
                "NetworkAuthentication",
                format!("{POLICY}/networkauthentications"),
            ),
            ("JWTAuthentication", format!("{POLICY}/jwtauthentications")),
            (
                "HTTPLocalRateLimitPolicy",
                format!("{POLICY}/httplocalratelimitpolicies"),
            ),
            (
                "HTTPRoute",
                "/apis/gateway.networking.k8s.io/v1/httproutes".to_string(),
            ),
            (
                "GRPCRoute",
                "/apis/gateway.networking.k8s.io/v1/grpcroutes".to_string(),
            ),
        ];
        for (kind, path) in kinds {
            match list(path).await {
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
                Err(problem) => return super::checks::fail(problem, hint),
            }
        }
        objects.pods = match list("/api/v1/pods".to_string()).await {
            Ok(items) => items.unwrap_or_default(),
            Err(problem) => return super::checks::fail(problem, hint),
        };
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
                problem: warnings.join("; "),
                hint: hint.to_string(),
            }
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
}
