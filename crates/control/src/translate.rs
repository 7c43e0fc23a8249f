//! Translates the index's answers into `io.linkerd.proxy.destination` messages.
//!
//! What is deliberately left unset for now: `protocol_hint` (our proxies do not yet speak
//! Linkerd's HTTP/2 upgrade or opaque transport header, so a stock proxy must not be told
//! they do), `http2` client parameters, and profile routes and retry budgets.

use std::net::SocketAddr;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::tls_identity::{DnsLikeIdentity, Strategy};
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::net::TcpAddress;

use crate::index::{Change, Endpoint};
use crate::model::ObjectRef;

/// Translates one change into a `Get` update.
pub fn update(change: Change) -> pb::Update {
    use pb::update::Update as U;
    let update = match change {
        Change::Add { labels, endpoints } => U::Add(pb::WeightedAddrSet {
            addrs: endpoints
                .iter()
                .map(|(addr, ep)| weighted_addr(*addr, ep))
                .collect(),
            metric_labels: labels.into_iter().collect(),
        }),
        Change::Remove(addrs) => U::Remove(pb::AddrSet {
            addrs: addrs.into_iter().map(TcpAddress::from).collect(),
        }),
        Change::NoEndpoints { exists } => U::NoEndpoints(pb::NoEndpoints { exists }),
    };
    pb::Update {
        update: Some(update),
    }
}

/// Translates an endpoint: address, weight, labels, the peer's identity (also used as the
/// TLS server name, as Linkerd does) and a reference to its instance.
pub fn weighted_addr(addr: SocketAddr, endpoint: &Endpoint) -> pb::WeightedAddr {
    let tls_identity = endpoint.identity.as_ref().map(|name| {
        let name = DnsLikeIdentity { name: name.clone() };
        pb::TlsIdentity {
            strategy: Some(Strategy::DnsLikeIdentity(name.clone())),
            server_name: Some(name),
        }
    });
    pb::WeightedAddr {
        addr: Some(addr.into()),
        weight: endpoint.weight,
        metric_labels: endpoint
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tls_identity,
        resource_ref: endpoint
            .instance
            .as_ref()
            .map(|pod| resource("Pod", pod, 0)),
        ..pb::WeightedAddr::default()
    }
}

/// The profile of a service: its name and a reference to it; no routes yet.
pub fn service_profile(fqn: String, service: &ObjectRef, port: u16) -> pb::DestinationProfile {
    pb::DestinationProfile {
        fully_qualified_name: fqn,
        parent_ref: Some(resource("Service", service, port)),
        ..pb::DestinationProfile::default()
    }
}

/// The profile of an address: no name, and the endpoint to use directly.
pub fn endpoint_profile(addr: SocketAddr, endpoint: &Endpoint) -> pb::DestinationProfile {
    pb::DestinationProfile {
        endpoint: Some(weighted_addr(addr, endpoint)),
        ..pb::DestinationProfile::default()
    }
}

fn resource(kind: &str, object: &ObjectRef, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".to_string(),
            kind: kind.to_string(),
            name: object.name.clone(),
            namespace: object.namespace.clone(),
            section: String::new(),
            port: port.into(),
        })),
    }
}
