//! Ferry's extension of Linkerd's outbound policy (docs/routes.md, "Ferry's extension").
//!
//! Linkerd's `OutboundPolicy` message cannot carry a route rule's `RequestMirror`,
//! `URLRewrite` or an `HTTPFault`'s delay. The control plane serves
//! [`WATCH`]: the same message — fields 1 and 2 are Linkerd's, byte for byte — plus field
//! 1000, the rules' extensions, which a Linkerd decoder would skip as unknown. Ferry's proxy
//! asks there first, and falls back to Linkerd's `OutboundPolicies/Watch` (no extensions)
//! when a control plane does not serve it.

use linkerd2_proxy_api::{meta, outbound};

pub mod inbound;

/// The gRPC service.
pub const SERVICE: &str = "ferry.proxy.outbound.OutboundPolicies";
/// Its one method: a stream of [`OutboundPolicy`] for a `TrafficSpec`.
pub const WATCH: &str = "/ferry.proxy.outbound.OutboundPolicies/Watch";

/// Linkerd's `io.linkerd.proxy.outbound.OutboundPolicy`, with Ferry's rule extensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboundPolicy {
    /// Linkerd's field 1.
    #[prost(message, optional, tag = "1")]
    pub protocol: Option<outbound::ProxyProtocol>,
    /// Linkerd's field 2.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<meta::Metadata>,
    /// What Linkerd's message cannot say about some rules.
    #[prost(message, repeated, tag = "1000")]
    pub rule_extensions: Vec<RuleExtension>,
}

impl From<outbound::OutboundPolicy> for OutboundPolicy {
    fn from(p: outbound::OutboundPolicy) -> Self {
        Self {
            protocol: p.protocol,
            metadata: p.metadata,
            rule_extensions: Vec::new(),
        }
    }
}

/// The extensions of one rule: the `rule`-th rule of the `route`-th route (of the HTTP or
/// gRPC routes the protocol carries; indexes from 0, in message order).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuleExtension {
    /// The route's index.
    #[prost(uint32, tag = "1")]
    pub route: u32,
    /// The rule's index within the route.
    #[prost(uint32, tag = "2")]
    pub rule: u32,
    /// A copy of a share of requests to another Service.
    #[prost(message, optional, tag = "3")]
    pub mirror: Option<Mirror>,
    /// A delay before a share of requests is sent.
    #[prost(message, optional, tag = "4")]
    pub delay: Option<Delay>,
    /// A change of host and path before requests are sent.
    #[prost(message, optional, tag = "5")]
    pub rewrite: Option<Rewrite>,
}

/// `RequestMirror`: copies of `numerator` in `denominator` requests go to `path` (a
/// `Destination.Get` path); their answers are discarded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mirror {
    /// The mirror Service's discovery path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// See `denominator`.
    #[prost(uint32, tag = "2")]
    pub numerator: u32,
    /// Copies per this many requests: `numerator`.
    #[prost(uint32, tag = "3")]
    pub denominator: u32,
    /// The mirror Service, for metrics and logs.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<meta::Metadata>,
}

/// An `HTTPFault`'s delay.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delay {
    /// How long.
    #[prost(message, optional, tag = "1")]
    pub fixed: Option<prost_types::Duration>,
    /// The share of requests delayed, 0-100.
    #[prost(uint32, tag = "2")]
    pub percent: u32,
}

/// `URLRewrite`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rewrite {
    /// The new host (the `Host`/`:authority`), if any.
    #[prost(string, tag = "1")]
    pub hostname: String,
    /// `ReplaceFullPath`: the whole new path.
    #[prost(string, optional, tag = "2")]
    pub full_path: Option<String>,
    /// `ReplacePrefixMatch`: what replaces the matched prefix.
    #[prost(string, optional, tag = "3")]
    pub prefix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn linkerd_decoders_read_the_same_policy_and_skip_the_extensions() {
        let ferry = OutboundPolicy {
            protocol: Some(outbound::ProxyProtocol {
                kind: Some(outbound::proxy_protocol::Kind::Opaque(
                    outbound::proxy_protocol::Opaque { routes: Vec::new() },
                )),
            }),
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default("x".into())),
            }),
            rule_extensions: vec![RuleExtension {
                route: 1,
                rule: 2,
                delay: Some(Delay {
                    fixed: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    percent: 50,
                }),
                ..Default::default()
            }],
        };
        let bytes = ferry.encode_to_vec();
        let linkerd = outbound::OutboundPolicy::decode(bytes.as_slice()).unwrap();
        assert_eq!(linkerd.protocol, ferry.protocol);
        assert_eq!(linkerd.metadata, ferry.metadata);
        assert_eq!(OutboundPolicy::decode(bytes.as_slice()).unwrap(), ferry);
        assert_eq!(
            OutboundPolicy::from(linkerd.clone()).encode_to_vec(),
            linkerd.encode_to_vec()
        );
    }
}
