//! Workload identity names: what a proxy's certificate says it is, and what a client
//! expects its peer to be.
//!
//! The destination service puts [`dns_name`] on every endpoint it sends; the identity CA
//! issues certificates carrying the same name (and [`spiffe_uri`]). Both sides build the
//! name here so they cannot disagree.

/// The trust domain used when none is configured (Kubernetes' default cluster domain).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The control plane's name inside identity names, where Linkerd puts its control-plane
/// namespace (`...identity.linkerd.cluster.local`).
pub const CONTROL_PLANE_NAME: &str = "ferry";

/// Returns the DNS-like identity of a workload:
/// `<sa>.<ns>.serviceaccount.identity.ferry.<trust-domain>`.
///
/// The shape is Linkerd's, so a stock linkerd2-proxy verifies our peers the same way.
pub fn dns_name(service_account: &str, namespace: &str, trust_domain: &str) -> String {
    format!(
        "{service_account}.{namespace}.serviceaccount.identity.{CONTROL_PLANE_NAME}.{trust_domain}"
    )
}

/// Returns the control plane's own identity: its service account (`ferry-control`) in its
/// namespace, named like any workload's. Its certificate, issued by its own CA, is what
/// proxies' tap servers authorise by default.
pub fn control_plane_name(namespace: &str, trust_domain: &str) -> String {
    dns_name(crate::k8s::CONTROL_NAME, namespace, trust_domain)
}

/// Returns the SPIFFE ID of a workload: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe_uri(service_account: &str, namespace: &str, trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_linkerd_and_spiffe_shapes() {
        assert_eq!(
            dns_name("web", "emojivoto", DEFAULT_TRUST_DOMAIN),
            "web.emojivoto.serviceaccount.identity.ferry.cluster.local"
        );
        assert_eq!(
            spiffe_uri("web", "emojivoto", "example.org"),
            "spiffe://example.org/ns/emojivoto/sa/web"
        );
    }
}
