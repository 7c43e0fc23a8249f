//! The resolved inbound policy of one pod port, as plain data: what [`super::resolve`]
//! makes of the documents and discovery, what [`super::inbound`] renders as Linkerd's and
//! Ferry's messages, and what `GET /api/v1/policy/inbound` shows as JSON.

use serde::Serialize;

use super::cidr::Cidr;
use super::resources::Document;
use crate::routes::gateway::{GrpcRouteMatch, HttpRouteMatch, RouteFilter};

/// What a policy object is, for metadata, labels and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Meta {
    /// The API group (empty for defaults).
    pub group: String,
    /// `Server`, `AuthorizationPolicy`, `HTTPRoute`, ... or `default`.
    pub kind: String,
    /// The namespace (empty for defaults).
    pub namespace: String,
    /// The name (a default policy's name for defaults).
    pub name: String,
}

impl Meta {
    pub(super) fn of<S>(d: &Document<S>) -> Self {
        Meta {
            group: d
                .api_version
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            kind: d.kind.clone(),
            namespace: d.namespace().to_string(),
            name: d.name().to_string(),
        }
    }

    pub(super) fn default(name: &str) -> Self {
        Meta {
            group: String::new(),
            kind: "default".to_string(),
            namespace: String::new(),
            name: name.to_string(),
        }
    }

    /// Whether this names a default rather than a resource.
    pub fn is_default(&self) -> bool {
        self.kind == "default"
    }
}

/// How the proxy reads the port's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// Detect HTTP, else opaque.
    #[serde(rename = "unknown")]
    Detect,
    /// HTTP/1.
    #[serde(rename = "HTTP/1")]
    Http1,
    /// HTTP/2.
    #[serde(rename = "HTTP/2")]
    Http2,
    /// gRPC.
    #[serde(rename = "gRPC")]
    Grpc,
    /// Opaque TCP.
    #[serde(rename = "opaque")]
    Opaque,
    /// TLS the application terminates.
    #[serde(rename = "TLS")]
    Tls,
}

impl Protocol {
    pub(super) fn parse(s: Option<&str>) -> Self {
        match s.unwrap_or("unknown") {
            "HTTP/1" => Protocol::Http1,
            "HTTP/2" => Protocol::Http2,
            "gRPC" => Protocol::Grpc,
            "opaque" => Protocol::Opaque,
            "TLS" => Protocol::Tls,
            _ => Protocol::Detect,
        }
    }

    /// Whether requests (and so routes) exist: HTTP or gRPC.
    pub fn has_routes(self) -> bool {
        !matches!(self, Protocol::Opaque | Protocol::Tls)
    }
}

/// Who a client must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Authentication {
    /// Anyone, meshed or not.
    Unauthenticated,
    /// A meshed client with one of these identities, or an identity ending in one of the
    /// suffixes (`""`: any identity).
    MeshTls {
        /// Exact identities.
        identities: Vec<String>,
        /// Identity suffixes, without the leading dot.
        suffixes: Vec<String>,
    },
}

/// A client network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientNetwork {
    /// The network.
    pub net: Cidr,
    /// Its parts not admitted.
    pub except: Vec<Cidr>,
}

/// A JWT a request must carry (a `JWTAuthentication`, keys resolved).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtRequirement {
    /// `namespace/name`.
    pub name: String,
    /// The `iss`.
    pub issuer: String,
    /// Accepted audiences (any when empty).
    pub audiences: Vec<String>,
    /// The JWK Set, as JSON (empty until a `jwksURI` has been fetched: nothing verifies).
    #[serde(skip)]
    pub jwks: String,
    /// Required claims and their accepted values.
    pub required_claims: Vec<(String, Vec<String>)>,
    /// The header (empty: `Authorization: Bearer`).
    pub header: String,
}

/// One authorization: who may call, from where, with which tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Authorization {
    /// The `AuthorizationPolicy`, or the default policy.
    pub meta: Meta,
    /// The client's address must be in one of these.
    pub networks: Vec<ClientNetwork>,
    /// The client's identity.
    pub authentication: Authentication,
    /// Every token the request must carry.
    pub jwt: Vec<JwtRequirement>,
}

/// A rule of an inbound route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InboundRule {
    /// HTTP matches (HTTP routes).
    pub http_matches: Vec<HttpRouteMatch>,
    /// gRPC matches (gRPC routes).
    pub grpc_matches: Vec<GrpcRouteMatch>,
    /// Filters (header modifiers, redirects).
    pub filters: Vec<RouteFilter>,
}

/// An inbound route of the server, with its authorizations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InboundRoute {
    /// The `HTTPRoute` / `GRPCRoute`, or `default`.
    pub meta: Meta,
    /// Its rules.
    pub rules: Vec<InboundRule>,
    /// Its authorizations, then the server-wide ones, then the access policy's.
    pub authorizations: Vec<Authorization>,
}

/// A rate limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// The `HTTPLocalRateLimitPolicy`.
    pub meta: Meta,
    /// All requests together, per second.
    pub total: Option<u32>,
    /// Each identity's, per second.
    pub identity: Option<u32>,
    /// Other rates for some identities.
    pub overrides: Vec<(u32, Vec<String>)>,
}

/// The policy of one pod port.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundPolicy {
    /// The `Server`, or the default policy.
    pub server: Meta,
    /// How traffic is read.
    pub protocol: Protocol,
    /// Server-wide authorizations, the access policy's last.
    pub authorizations: Vec<Authorization>,
    /// HTTP routes (or gRPC routes for `gRPC`), each with its authorizations.
    pub routes: Vec<InboundRoute>,
    /// The rate limit.
    pub rate_limit: Option<RateLimit>,
}
