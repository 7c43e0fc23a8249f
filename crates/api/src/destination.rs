//! Names the destination service and its clients share: the default cluster domain and
//! the metric label keys carried on endpoints.
//!
//! A proxy prefixes each key with `dst_` when it labels outbound metrics (`dst_pod`,
//! `dst_deployment`, ...), as Linkerd's proxy does.

/// The DNS suffix of service names when none is configured: `<svc>.<ns>.svc.cluster.local`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The weight of every endpoint the control plane sends (Linkerd's default).
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 10_000;

/// Address-set label: the namespace of the service.
pub const LABEL_NAMESPACE: &str = "namespace";
/// Address-set label: the name of the service.
pub const LABEL_SERVICE: &str = "service";
/// Endpoint label: the instance (pod) name.
pub const LABEL_POD: &str = "pod";
/// Endpoint label: the instance's service account.
pub const LABEL_SERVICE_ACCOUNT: &str = "serviceaccount";

/// Returns the endpoint label key naming the owning workload of the given kind.
///
/// The kind is the key (`deployment`, `statefulset`, ...), except `job`, which becomes
/// `k8s_job` as in Linkerd (a bare `job` label collides with Prometheus' own).
pub fn workload_label(kind: &str) -> &str {
    if kind == "job" {
        "k8s_job"
    } else {
        kind
    }
}

/// The prefix a proxy puts before endpoint label keys on its outbound metrics.
pub const METRIC_LABEL_PREFIX: &str = "dst_";

/// Returns the context token a proxy sends with every lookup: Linkerd's JSON form,
/// `{"ns":"<namespace>","nodeName":"<node>","pod":"<pod>"}`.
///
/// The control plane reads `ns` to resolve one-label names (`echo:8080`) and logs `pod`.
pub fn context_token(namespace: &str, node_name: &str, pod: &str) -> String {
    format!(
        r#"{{"ns":"{}","nodeName":"{}","pod":"{}"}}"#,
        json_escape(namespace),
        json_escape(node_name),
        json_escape(pod)
    )
}

fn json_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_label_renames_only_job() {
        assert_eq!(workload_label("deployment"), "deployment");
        assert_eq!(workload_label("job"), "k8s_job");
    }

    #[test]
    fn context_tokens_are_linkerd_json() {
        assert_eq!(
            context_token("default", "node-1", "web-0"),
            r#"{"ns":"default","nodeName":"node-1","pod":"web-0"}"#
        );
        assert_eq!(
            context_token("a\"b", "", "c\\d"),
            r#"{"ns":"a\"b","nodeName":"","pod":"c\\d"}"#
        );
    }
}
