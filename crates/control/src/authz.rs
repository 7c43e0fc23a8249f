//! Inbound authorization as data: Linkerd-shaped `Server`, `AuthorizationPolicy`, the
//! authentications and `HTTPLocalRateLimitPolicy` (`policy.ferry.io/v1alpha1`, or
//! `policy.linkerd.io`), resolved per pod port and served to proxies as Linkerd's
//! `InboundServerPolicies` and Ferry's extension of it (docs/authorization.md).
//!
//! - [`resources`]: the documents, typed; [`validate`]: what serde cannot check.
//! - [`resolve`]: the policy of one pod port: its Server (or the default policy), its
//!   authorizations, routes and rate limit — [`resolved`], plain data.
//! - [`inbound`]: that policy as `io.linkerd.proxy.inbound.Server` (and Ferry's `Server`
//!   with JWT requirements), and the gRPC services that stream it.
//! - [`api`]: `GET /api/v1/authz`, the policy with allow/deny counts (`ferry authz`);
//!   [`listing`]: `GET /api/v1/policy/objects`, the documents and pods (`ferry check --local`).
//! - [`jwks`]: JWK Sets named by `jwksURI`, fetched and refreshed.
//! - [`kubernetes`]: the resources as the API server stores them, read from the routes'
//!   watches.
//!
//! The documents travel with the routes: the same files in local mode (`--routes`), the
//! same [`crate::routes::RouteSet`] and watch channel, so a proxy's stream is woken by the
//! mechanism that wakes `OutboundPolicies`.

pub mod api;
pub mod cidr;
pub mod inbound;
pub mod jwks;
pub mod kubernetes;
pub mod listing;
pub mod resolve;
pub mod resolved;
pub mod resources;
pub mod validate;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cidr::Cidr;

/// What a port admits when no `Server` selects it, or what a `Server`'s `accessPolicy`
/// adds after its authorizations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Every client.
    #[default]
    AllUnauthenticated,
    /// Every meshed client.
    AllAuthenticated,
    /// Every client in the cluster networks.
    ClusterUnauthenticated,
    /// Every meshed client in the cluster networks.
    ClusterAuthenticated,
    /// No client.
    Deny,
    /// Every client, each one marked as one that would have been denied.
    Audit,
}

impl DefaultPolicy {
    /// The names, as annotations and flags spell them.
    pub const NAMES: [&'static str; 6] = ferry_api::k8s::DEFAULT_INBOUND_POLICIES;

    /// The name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no default policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a default inbound policy: expected one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit")]
pub struct DefaultPolicyError(pub String);

impl FromStr for DefaultPolicy {
    type Err = DefaultPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use DefaultPolicy::*;
        let all = [
            AllUnauthenticated,
            AllAuthenticated,
            ClusterUnauthenticated,
            ClusterAuthenticated,
            Deny,
            Audit,
        ];
        all.into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| DefaultPolicyError(s.to_string()))
    }
}

/// Linkerd's default cluster networks.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";
/// How often a `jwksURI` is fetched again.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// The cluster-wide settings of inbound policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundConfig {
    /// The cluster's default policy (`--default-inbound-policy`).
    pub default_policy: DefaultPolicy,
    /// What `cluster-*` admits (`--cluster-networks`; loopback added in local mode).
    pub cluster_networks: Vec<Cidr>,
    /// How often each `jwksURI` is fetched again.
    pub jwks_refresh: Duration,
    /// CA certificates trusted for `https` `jwksURI`s beside the platform's roots
    /// (`--jwks-ca-file`, read at start).
    pub jwks_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            default_policy: DefaultPolicy::default(),
            cluster_networks: cidr::parse_list(DEFAULT_CLUSTER_NETWORKS).unwrap_or_default(),
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            jwks_ca: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
