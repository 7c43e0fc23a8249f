//! The authorization documents (`policy.ferry.io/v1alpha1`, or Linkerd's `policy.linkerd.io`
//! with the same field names) as typed serde structs: `Server`, `AuthorizationPolicy`,
//! `MeshTLSAuthentication`, `NetworkAuthentication`, `JWTAuthentication` and
//! `HTTPLocalRateLimitPolicy`. Unknown fields are refused, except in `metadata` and
//! `status`; [`super::validate`] checks what serde cannot.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// Ferry's policy group.
pub const FERRY_GROUP: &str = "policy.ferry.io";
/// Linkerd's policy group, read as Ferry's.
pub const LINKERD_GROUP: &str = "policy.linkerd.io";
/// The version of Ferry's documents.
pub const VERSION: &str = "v1alpha1";

/// `kind` of [`Server`].
pub const SERVER: &str = "Server";
/// `kind` of [`AuthorizationPolicy`].
pub const AUTHORIZATION_POLICY: &str = "AuthorizationPolicy";
/// `kind` of [`MeshTlsAuthentication`].
pub const MESH_TLS_AUTHENTICATION: &str = "MeshTLSAuthentication";
/// `kind` of [`NetworkAuthentication`].
pub const NETWORK_AUTHENTICATION: &str = "NetworkAuthentication";
/// `kind` of [`JwtAuthentication`].
pub const JWT_AUTHENTICATION: &str = "JWTAuthentication";
/// `kind` of [`HttpLocalRateLimitPolicy`].
pub const HTTP_LOCAL_RATE_LIMIT_POLICY: &str = "HTTPLocalRateLimitPolicy";

/// Every kind this module reads.
pub const KINDS: [&str; 6] = [
    SERVER,
    AUTHORIZATION_POLICY,
    MESH_TLS_AUTHENTICATION,
    NETWORK_AUTHENTICATION,
    JWT_AUTHENTICATION,
    HTTP_LOCAL_RATE_LIMIT_POLICY,
];

/// Whether `group` is one of the two policy groups.
pub fn is_policy_group(group: &str) -> bool {
    group == FERRY_GROUP || group == LINKERD_GROUP
}

/// A document: `apiVersion`, `kind`, `metadata`, `spec` (and an ignored `status`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Document<S> {
    /// `policy.ferry.io/v1alpha1`, or a `policy.linkerd.io` version.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Name, namespace, creation time.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The resource's content.
    pub spec: S,
    /// Written by controllers; read and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S> Document<S> {
    /// The namespace (filled in for local documents when read).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The API group: `policy.ferry.io` or `policy.linkerd.io`.
    pub fn group(&self) -> &str {
        self.api_version.split('/').next().unwrap_or_default()
    }
}

/// A `Server`.
pub type Server = Document<ServerSpec>;
/// An `AuthorizationPolicy`.
pub type AuthorizationPolicy = Document<AuthorizationPolicySpec>;
/// A `MeshTLSAuthentication`.
pub type MeshTlsAuthentication = Document<MeshTlsAuthenticationSpec>;
/// A `NetworkAuthentication`.
pub type NetworkAuthentication = Document<NetworkAuthenticationSpec>;
/// A `JWTAuthentication`.
pub type JwtAuthentication = Document<JwtAuthenticationSpec>;
/// An `HTTPLocalRateLimitPolicy`.
pub type HttpLocalRateLimitPolicy = Document<HttpLocalRateLimitPolicySpec>;

/// `Server.spec`: a port of the pods a selector picks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSpec {
    /// The pods, in the Server's namespace, by their labels.
    pub pod_selector: LabelSelector,
    /// The port, by number or by container port name.
    pub port: IntOrString,
    /// How the proxy reads the port's traffic: `unknown` (detect, the default), `HTTP/1`,
    /// `HTTP/2`, `gRPC`, `opaque` or `TLS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// What happens to traffic no authorization admits: a default policy's name
    /// (`deny`, the default, or `audit`, `all-unauthenticated`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<String>,
}

/// A reference to a policy's target (`targetRef`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// The target's API group (`policy.ferry.io`, `gateway.networking.k8s.io`, `""` for
    /// a Namespace).
    #[serde(default)]
    pub group: String,
    /// `Server`, `HTTPRoute`, `GRPCRoute` or `Namespace`.
    pub kind: String,
    /// The target's name.
    pub name: String,
    /// The target's namespace: must be the policy's own when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The Server, route or Namespace the policy admits clients to.
    pub target_ref: TargetRef,
    /// The authentications a client must pass: every JWT, one of the networks, one of
    /// the identities.
    #[serde(default)]
    pub required_authentication_refs: Vec<ObjectReference>,
}

/// A reference to another object (`requiredAuthenticationRefs[]`, `identityRefs[]`,
/// `clientRefs[]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// The object's API group (`""` for core objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The object's namespace (the referrer's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `MeshTLSAuthentication.spec`: mesh identities, by name or by reference.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTlsAuthenticationSpec {
    /// Identity names; `*` is any identity, `*.<suffix>` any identity ending so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Vec<String>>,
    /// ServiceAccounts (their identity) or Namespaces (every identity in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_refs: Option<Vec<ObjectReference>>,
}

/// `NetworkAuthentication.spec`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAuthenticationSpec {
    /// The client networks.
    pub networks: Vec<Network>,
}

/// A client network: a CIDR, less some others.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// `10.0.0.0/8`, `fd00::/8`, or an address alone.
    pub cidr: String,
    /// Parts of `cidr` that are not admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// `JWTAuthentication.spec` (Ferry's): a bearer token from an issuer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuthenticationSpec {
    /// The `iss` tokens must have.
    pub issuer: String,
    /// The token's `aud` must contain one of these (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The issuer's keys inline: a JWK Set (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Where the control plane fetches the issuer's JWK Set (and refreshes it).
    #[serde(default, rename = "jwksURI", skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Claims the token must carry, each with one of its values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<RequiredClaim>,
    /// The request header the token is read from (`Authorization: Bearer` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// A claim a token must carry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredClaim {
    /// The claim's name.
    pub name: String,
    /// Its accepted values.
    pub values: Vec<String>,
}

/// `HTTPLocalRateLimitPolicy.spec`: per-proxy request rates on a Server.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpLocalRateLimitPolicySpec {
    /// The Server.
    pub target_ref: TargetRef,
    /// The rate of all requests together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Limit>,
    /// The rate of each client identity's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Limit>,
    /// Other rates for some clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// A rate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    /// Requests per second.
    pub requests_per_second: i64,
}

/// A rate for some clients.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    /// Requests per second.
    pub requests_per_second: i64,
    /// The clients, as ServiceAccounts.
    pub client_refs: Vec<ObjectReference>,
}

/// Every valid authorization document known at one moment, namespaces filled in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySet {
    /// `Server`s.
    pub servers: Vec<Server>,
    /// `AuthorizationPolicy`s.
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// `MeshTLSAuthentication`s.
    pub mesh_tls: Vec<MeshTlsAuthentication>,
    /// `NetworkAuthentication`s.
    pub networks: Vec<NetworkAuthentication>,
    /// `JWTAuthentication`s.
    pub jwt: Vec<JwtAuthentication>,
    /// `HTTPLocalRateLimitPolicy`s.
    pub rate_limits: Vec<HttpLocalRateLimitPolicy>,
    /// Namespaces' `default-inbound-policy` annotations, from `v1` Namespace documents
    /// beside the policies (local mode).
    pub namespace_defaults: BTreeMap<String, String>,
}

impl PolicySet {
    /// Adds `other`'s documents.
    pub fn extend(&mut self, other: PolicySet) {
        self.servers.extend(other.servers);
        self.authorization_policies
            .extend(other.authorization_policies);
        self.mesh_tls.extend(other.mesh_tls);
        self.networks.extend(other.networks);
        self.jwt.extend(other.jwt);
        self.rate_limits.extend(other.rate_limits);
        self.namespace_defaults.extend(other.namespace_defaults);
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.servers.len()
            + self.authorization_policies.len()
            + self.mesh_tls.len()
            + self.networks.len()
            + self.jwt.len()
            + self.rate_limits.len()
            + self.namespace_defaults.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
