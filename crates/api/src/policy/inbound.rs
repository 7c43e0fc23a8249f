//! Ferry's extension of Linkerd's inbound server policy (docs/authorization.md, "The policy
//! stream").
//!
//! Linkerd's `Server` message can require mTLS identities and client networks, but not an
//! end-user token. The control plane serves [`WATCH_PORT`]: the same message — fields 1 to 4
//! are Linkerd's, byte for byte — plus field 1000, the JWT requirements of some
//! authorizations, which a Linkerd decoder skips as unknown. Ferry's proxy asks there first
//! and falls back to Linkerd's `InboundServerPolicies/WatchPort` when a control plane does
//! not serve it (then no authorization requires a JWT).
//!
//! Audit mode needs no extension: the control plane ends an audited server's authorizations
//! with one that admits every client, whose metadata is `Default("audit")` ([`AUDIT`]); a
//! request admitted only by it is one that would have been denied.

use std::collections::HashMap;

use linkerd2_proxy_api::{inbound, net};

/// The gRPC service.
pub const SERVICE: &str = "ferry.proxy.inbound.InboundServerPolicies";
/// Its one method: a stream of [`Server`] for a Linkerd `PortSpec`.
pub const WATCH_PORT: &str = "/ferry.proxy.inbound.InboundServerPolicies/WatchPort";
/// The default-metadata name of the authorization that admits, and marks, what an audited
/// server would deny.
pub const AUDIT: &str = "audit";

/// Linkerd's `io.linkerd.proxy.inbound.Server`, with Ferry's authorization extensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Server {
    /// Linkerd's field 1.
    #[prost(message, optional, tag = "1")]
    pub protocol: Option<inbound::ProxyProtocol>,
    /// Linkerd's field 2.
    #[prost(message, repeated, tag = "2")]
    pub server_ips: Vec<net::IpAddress>,
    /// Linkerd's field 3: the server-wide authorizations.
    #[prost(message, repeated, tag = "3")]
    pub authorizations: Vec<inbound::Authz>,
    /// Linkerd's field 4.
    #[prost(map = "string, string", tag = "4")]
    pub labels: HashMap<String, String>,
    /// What Linkerd's message cannot say about some authorizations.
    #[prost(message, repeated, tag = "1000")]
    pub authz_extensions: Vec<AuthzExtension>,
}

impl From<inbound::Server> for Server {
    fn from(s: inbound::Server) -> Self {
        Self {
            protocol: s.protocol,
            server_ips: s.server_ips,
            authorizations: s.authorizations,
            labels: s.labels,
            authz_extensions: Vec::new(),
        }
    }
}

/// The extension of one authorization. `route` 0 names the server-wide `authorizations`;
/// `route` n ≥ 1 names the (n−1)-th of the HTTP or gRPC routes the protocol carries (in
/// message order). `authz` indexes that list's authorizations from 0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthzExtension {
    /// The route, as above.
    #[prost(uint32, tag = "1")]
    pub route: u32,
    /// The authorization's index.
    #[prost(uint32, tag = "2")]
    pub authz: u32,
    /// Tokens the request must carry, all of them, besides the authorization's own
    /// networks and authentication.
    #[prost(message, repeated, tag = "3")]
    pub jwt: Vec<Jwt>,
}

/// A `JWTAuthentication`: the request carries a valid token from this issuer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Jwt {
    /// The resource's `namespace/name`, for metrics and logs.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The `iss` the token must have.
    #[prost(string, tag = "2")]
    pub issuer: String,
    /// The token's `aud` must contain one of these (any, if empty).
    #[prost(string, repeated, tag = "3")]
    pub audiences: Vec<String>,
    /// The issuer's keys: a JWK Set document (RFC 7517), as JSON. The control plane
    /// fetches and refreshes a `jwksURI` itself and sends the keys it holds.
    #[prost(string, tag = "4")]
    pub jwks: String,
    /// Claims the token must carry, each with one of the listed values.
    #[prost(message, repeated, tag = "5")]
    pub required_claims: Vec<Claim>,
    /// The request header the token is read from (`Authorization: Bearer <token>` when
    /// empty).
    #[prost(string, tag = "6")]
    pub from_header: String,
}

/// A required claim: the claim `name` (a string, or an array of strings) has one of `values`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Claim {
    /// The claim's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The accepted values.
    #[prost(string, repeated, tag = "2")]
    pub values: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn linkerd_decoders_read_the_same_server_and_skip_the_extensions() {
        let ferry = Server {
            protocol: Some(inbound::ProxyProtocol {
                kind: Some(inbound::proxy_protocol::Kind::Opaque(
                    inbound::proxy_protocol::Opaque {},
                )),
            }),
            authorizations: vec![inbound::Authz {
                authentication: Some(inbound::Authn {
                    permit: Some(inbound::authn::Permit::Unauthenticated(
                        inbound::authn::PermitUnauthenticated {},
                    )),
                }),
                ..Default::default()
            }],
            labels: HashMap::from([("name".into(), "voting".into())]),
            authz_extensions: vec![AuthzExtension {
                route: 1,
                authz: 0,
                jwt: vec![Jwt {
                    issuer: "https://issuer.example".into(),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        let bytes = ferry.encode_to_vec();
        let linkerd = inbound::Server::decode(bytes.as_slice()).unwrap();
        assert_eq!(linkerd.protocol, ferry.protocol);
        assert_eq!(linkerd.authorizations, ferry.authorizations);
        assert_eq!(linkerd.labels, ferry.labels);
        assert_eq!(Server::decode(bytes.as_slice()).unwrap(), ferry);
        assert_eq!(
            Server::from(linkerd.clone()).encode_to_vec(),
            linkerd.encode_to_vec()
        );
    }
}
