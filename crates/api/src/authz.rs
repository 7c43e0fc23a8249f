//! `GET /api/v1/authz` (`ferry authz`): the servers, routes and authorizations of a
//! workload's inbound side, with what each allowed and denied; and
//! `GET /api/v1/policy/objects` (`ferry check --local`): the policy documents and pods the
//! control plane holds (docs/authorization.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The path.
pub const AUTHZ_PATH: &str = "/api/v1/authz";
/// `GET ?workload=<ns>:<pod>&port=N`: the inbound policy the control plane serves for a
/// pod port, as JSON (`ferry diagnostics policy po/NAME:PORT`).
pub const INBOUND_POLICY_PATH: &str = "/api/v1/policy/inbound";
/// `GET`: the policy documents the control plane holds and its pods, shaped as the
/// Kubernetes API lists them, answering [`PolicyObjectList`] (`ferry check --local`).
pub const POLICY_OBJECTS_PATH: &str = "/api/v1/policy/objects";

/// Query parameters of [`AUTHZ_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzQuery {
    /// The workload or pod: `deploy/voting`, `po/voting-0` (kubectl names).
    pub resource: String,
    /// Its namespace (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The window counts are taken over, like `1m` (15s to 15m; default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// A policy object as rows name it: a resource (`Server`, `AuthorizationPolicy`,
/// `HTTPRoute`, ...) or a default (`kind: default`, `name: all-unauthenticated`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRef {
    /// `Server`, `AuthorizationPolicy`, `HTTPRoute`, `GRPCRoute`, or `default`.
    pub kind: String,
    /// The name (for defaults, the default policy's or route's name). Empty in a denial
    /// no authorization matched.
    pub name: String,
}

/// One row: a route of a server and one of its authorizations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzRow {
    /// The server: a `Server`, or the default policy.
    pub server: PolicyRef,
    /// The route (`kind` empty for TCP servers, which have none).
    pub route: PolicyRef,
    /// The authorization; empty for requests and connections nothing admitted.
    pub authorization: PolicyRef,
    /// Requests and connections it allowed in the window.
    pub allowed: u64,
    /// Requests and connections denied in the window (on rows without an authorization).
    pub denied: u64,
}

/// The answer of [`AUTHZ_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzAnswer {
    /// The resource, as `deployment/voting`.
    pub resource: String,
    /// Its namespace.
    pub namespace: String,
    /// The window the counts are over, as asked (`1m`).
    pub window: String,
    /// The rows: configured ones first (server, route, authorization order), then any
    /// the metrics show that the configuration does not (older policies, denials).
    pub rows: Vec<AuthzRow>,
}

/// The answer of [`POLICY_OBJECTS_PATH`]: what `ferry check` reads from the Kubernetes API
/// on a cluster, so that one set of rules judges both (docs/authorization.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyObjectList {
    /// Every pod discovery knows, as `{"metadata": {"namespace", "name", "labels"}}`; the
    /// labels are the ones a `Server`'s `podSelector` is matched against.
    pub pods: Vec<serde_json::Value>,
    /// The valid policy documents by kind (`Server`, `AuthorizationPolicy`,
    /// `MeshTLSAuthentication`, `NetworkAuthentication`, `JWTAuthentication`,
    /// `HTTPLocalRateLimitPolicy`, `HTTPRoute`, `GRPCRoute`), each with `apiVersion`,
    /// `kind`, `metadata` (namespace filled in) and `spec`; inline JWK Sets left out. Every
    /// kind is present, with no items when there are none.
    pub items: BTreeMap<String, Vec<serde_json::Value>>,
}
