//! The control plane's public HTTP/JSON API: paths and bodies, shared by the server, the
//! CLI and the dashboard. `docs/openapi.yaml` describes the same routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `GET`: liveness of the control plane; answers [`Health`].
pub const HEALTH_PATH: &str = "/api/v1/health";
/// `GET ?authority=<name:port>`: what `Destination.Get` answers; answers [`Endpoints`].
pub const ENDPOINTS_PATH: &str = "/api/v1/endpoints";
/// `GET ?authority=<name:port>[&callerNamespace=<ns>]`: the routes policy
/// `OutboundPolicies` serves for a Service port, as JSON (docs/routes.md).
pub const POLICY_PATH: &str = "/api/v1/policy";

/// The body of [`HEALTH_PATH`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok` when the control plane answers at all.
    pub status: String,
    /// The control plane's version.
    pub version: String,
    /// The git revision it was built from (absent from control planes before 0.1.0's images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
}

/// The body of [`ENDPOINTS_PATH`]: the current answer of `Destination.Get` for one
/// authority, as a snapshot rather than a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The authority as asked (`echo.default:8080`).
    pub authority: String,
    /// Whether the name is known: `false` is Get's `no_endpoints{exists: false}`.
    pub exists: bool,
    /// The service's fully qualified name (`echo.default.svc.cluster.local`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fully_qualified_name: Option<String>,
    /// Labels every endpoint of the set shares (`namespace`, `service`).
    #[serde(default)]
    pub metric_labels: BTreeMap<String, String>,
    /// The endpoints, sorted by address; empty when none are ready.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of [`Endpoints`], as a proxy would receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Where the proxy connects: the peer proxy's inbound listener.
    pub addr: SocketAddr,
    /// The balancer weight.
    pub weight: u32,
    /// Per-endpoint labels (`pod`, `serviceaccount`, the workload kind, ...).
    #[serde(default)]
    pub metric_labels: BTreeMap<String, String>,
    /// The identity the peer must present, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_identity: Option<String>,
}

/// The body of every 4xx/5xx answer of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// What went wrong, naming the value that failed.
    pub error: String,
}

/// `GET`: the identity CA's public side; answers [`IdentityInfo`] (404 when identity is off).
pub const IDENTITY_PATH: &str = "/api/v1/identity";

/// The body of [`IDENTITY_PATH`]: what a proxy must trust, and when the issuer runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityInfo {
    /// The trust domain workload names end in (`cluster.local`).
    pub trust_domain: String,
    /// The trust anchors, PEM, as proxies are given them.
    pub trust_anchors_pem: String,
    /// Each trust anchor, in PEM order.
    pub trust_anchors: Vec<CertificateInfo>,
    /// The issuer that signs workload certificates.
    pub issuer: CertificateInfo,
    /// How long an issued workload certificate is valid, in seconds.
    pub certificate_lifetime_seconds: u64,
}

/// One CA certificate of [`IdentityInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// The subject, e.g. `CN=root.cluster.local`.
    pub subject: String,
    /// Lowercase hex SHA-256 of the certificate's DER: the fingerprint to compare.
    pub sha256: String,
    /// `notAfter`, RFC 3339 UTC.
    pub not_after: String,
}
