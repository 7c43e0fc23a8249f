//! Answers a [`Lookup`] from a [`ClusterState`]: which service it names, and the endpoints
//! with the labels and identity a proxy needs. Pure functions, no IO.
//!
//! The destination service and the public API both answer from here, so
//! `ferry diagnostics endpoints` shows exactly what a proxy receives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ferry_api::destination::{
    workload_label, DEFAULT_ENDPOINT_WEIGHT, LABEL_NAMESPACE, LABEL_POD, LABEL_SERVICE,
    LABEL_SERVICE_ACCOUNT,
};
use ferry_api::identity;

use crate::authority::Lookup;
use crate::model::{ClusterState, Instance, ObjectRef, Service};

/// Labels as sent on the wire: sorted, so answers compare and print stably.
pub type Labels = BTreeMap<String, String>;

/// The answer to a lookup at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Nothing by that name exists (`no_endpoints{exists: false}`).
    NotFound,
    /// The name exists; its endpoints may be empty.
    Found(EndpointSet),
}

/// The endpoints of an existing destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// The service, when the lookup named one.
    pub service: Option<ObjectRef>,
    /// `<svc>.<ns>.svc.<cluster-domain>`, when the lookup named a service.
    pub fully_qualified_name: Option<String>,
    /// Labels every endpoint shares (`namespace`, `service`).
    pub labels: Labels,
    /// The endpoints by address.
    pub endpoints: BTreeMap<SocketAddr, Endpoint>,
}

/// One endpoint as a proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The instance (pod) behind the address, when known.
    pub instance: Option<ObjectRef>,
    /// The balancer weight.
    pub weight: u32,
    /// Per-endpoint labels: `pod`, `serviceaccount` and the owner's kind (`deployment`).
    pub labels: EndpointLabels,
    /// The DNS-like identity the peer proxy presents, when it is meshed.
    pub identity: Option<String>,
}

/// Resolves `lookup` against `state`.
pub fn resolve(state: &ClusterState, lookup: &Lookup) -> Resolution {
    match lookup {
        Lookup::Unknown => Resolution::NotFound,
        Lookup::Addr(addr) => Resolution::Found(resolve_addr(state, *addr)),
        Lookup::Service {
            namespace,
            name,
            port,
            instance: only,
        } => {
            let key = ObjectRef::new(namespace.as_str(), name.as_str());
            let Some(service) = state.services.get(&key) else {
                return Resolution::NotFound;
            };
            let mut set = service_set(state, &key, service, *port, only.as_deref());
            // An instance's own name exists only while it backs the service.
            if let Some(instance) = only {
                if set.endpoints.is_empty() {
                    return Resolution::NotFound;
                }
                let fqn = format!("{instance}.{}", state.fully_qualified_name(&key));
                set.fully_qualified_name = Some(fqn);
            }
            Resolution::Found(set)
        }
    }
}

/// The endpoints of one port of a service (of one instance of it when `only` is given).
fn service_set(
    state: &ClusterState,
    key: &ObjectRef,
    service: &Service,
    port: u16,
    only: Option<&str>,
) -> EndpointSet {
    let mut set = EndpointSet {
        fully_qualified_name: Some(state.fully_qualified_name(key)),
        labels: service_labels(key),
        service: Some(key.clone()),
        endpoints: BTreeMap::new(),
    };
    // A port the service does not expose has no endpoints, but the name exists.
    if let Some(port) = service.ports.get(&port) {
        for (addr, endpoint) in &port.endpoints {
            if only.is_some() && endpoint.instance.as_deref() != only {
                continue;
            }
            let instance = endpoint.instance.as_ref().and_then(|name| {
                let key = ObjectRef::new(key.namespace.as_str(), name.as_str());
                state.instances.get_key_value(&key)
            });
            set.endpoints.insert(*addr, endpoint_of(state, instance));
        }
    }
    set
}

/// Resolves an address: a service's cluster IP answers with that service port's
/// endpoints (the proxy balances them, as for the service's name); otherwise the instance
/// there when known, else the bare address (the destination is outside the mesh, which
/// Linkerd answers the same way).
fn resolve_addr(state: &ClusterState, addr: SocketAddr) -> EndpointSet {
    if let Some((key, service)) = state.service_at(addr.ip()) {
        return service_set(state, key, service, addr.port(), None);
    }
    let endpoint = endpoint_of(state, state.instance_at(addr));
    EndpointSet {
        endpoints: BTreeMap::from([(addr, endpoint)]),
        ..EndpointSet::default()
    }
}

fn service_labels(service: &ObjectRef) -> Labels {
    Labels::from([
        (LABEL_NAMESPACE.to_string(), service.namespace.clone()),
        (LABEL_SERVICE.to_string(), service.name.clone()),
    ])
}

fn endpoint_of(state: &ClusterState, instance: Option<(&ObjectRef, &Instance)>) -> Endpoint {
    let mut endpoint = Endpoint {
        instance: None,
        weight: DEFAULT_ENDPOINT_WEIGHT,
        labels: EndpointLabels::default(),
        identity: None,
    };
    let Some((key, instance)) = instance else {
        return endpoint;
    };
    endpoint.instance = Some(key.clone());
    let mut labels = Vec::with_capacity(3);
    labels.push((LABEL_POD.to_string(), key.name.clone()));
    labels.push((
        LABEL_SERVICE_ACCOUNT.to_string(),
        instance.service_account.clone(),
    ));
    if let Some(owner) = &instance.owner {
        let label = workload_label(&owner.kind).to_string();
        labels.push((label, owner.name.clone()));
    }
    endpoint.labels = EndpointLabels::from_pairs(labels);
    if instance.meshed {
        endpoint.identity = Some(identity::dns_name(
            &instance.service_account,
            &key.namespace,
            &state.trust_domain,
        ));
    }
    endpoint
}

/// An endpoint's labels, sorted by key: a handful of pairs in one allocation. A
/// `BTreeMap` allocates a whole node (over 500 bytes) for three pairs, and every shared
/// answer holds one per endpoint: 10 MB at 20,000 endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointLabels(Vec<(String, String)>);

impl EndpointLabels {
    /// Labels from pairs in any order; of two pairs with one key, the later wins.
    pub fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        // Stable, so equal keys keep their order and the last one can be kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Self(out)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        let at = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&self.0[at].1)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The pairs, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Index<&str> for EndpointLabels {
    type Output = String;

    /// The value of `key`; panics when it is not set, as a map does.
    fn index(&self, key: &str) -> &String {
        self.get(key)
            .unwrap_or_else(|| panic!("no label {key:?} in {self:?}"))
    }
}

impl IntoIterator for EndpointLabels {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(String, String)> for EndpointLabels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self::from_pairs(pairs.into_iter().collect())
    }
}

impl PartialEq<Labels> for EndpointLabels {
    fn eq(&self, other: &Labels) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// What a subscriber has been told so far; turns each new [`Resolution`] into the
/// updates that bring it up to date, following `destination.proto`'s rules.
#[derive(Clone, Debug, Default)]
pub struct Subscriber {
    /// What it was told last, shared with every other stream told the same.
    told: Option<Arc<Resolution>>,
}

/// One message to a subscriber, before translation to protobuf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// New or changed endpoints, with the labels they all share.
    Add {
        /// Labels of the whole set.
        labels: Labels,
        /// The endpoints to add or replace.
        endpoints: BTreeMap<SocketAddr, Endpoint>,
    },
    /// Endpoints that went away.
    Remove(Vec<SocketAddr>),
    /// There are no endpoints; `exists` tells whether the name exists at all.
    NoEndpoints {
        /// `false` when the name does not exist.
        exists: bool,
    },
}

impl Subscriber {
    /// Returns the changes that move the subscriber from what it was told to `next`.
    ///
    /// The first call always yields exactly one message (a subscriber must not keep stale
    /// state past it), and `no_endpoints` is only sent when there are none.
    pub fn advance(&mut self, next: impl Into<Arc<Resolution>>) -> Vec<Change> {
        let next = next.into();
        let changes = match (self.told.as_deref(), next.as_ref()) {
            (Some(prev), next) if prev == next => Vec::new(),
            (_, Resolution::NotFound) => vec![Change::NoEndpoints { exists: false }],
            (Some(Resolution::Found(prev)), Resolution::Found(next)) => diff(prev, next),
            (_, Resolution::Found(next)) if next.endpoints.is_empty() => {
                vec![Change::NoEndpoints { exists: true }]
            }
            (_, Resolution::Found(next)) => vec![add(next, next.endpoints.clone())],
        };
        self.told = Some(next);
        changes
    }
}

fn diff(prev: &EndpointSet, next: &EndpointSet) -> Vec<Change> {
    if next.endpoints.is_empty() {
        return if prev.endpoints.is_empty() {
            Vec::new()
        } else {
            vec![Change::NoEndpoints { exists: true }]
        };
    }
    // Set-wide labels changed (another service behind the same name): resend everything.
    let relabelled = prev.labels != next.labels;
    let removed: Vec<SocketAddr> = prev
        .endpoints
        .keys()
        .filter(|addr| !next.endpoints.contains_key(addr))
        .copied()
        .collect();
    let added: BTreeMap<SocketAddr, Endpoint> = next
        .endpoints
        .iter()
        .filter(|(addr, ep)| relabelled || prev.endpoints.get(addr) != Some(ep))
        .map(|(addr, ep)| (*addr, ep.clone()))
        .collect();
    // Adds go first: a client that applies each message at once never sees an empty set
    // while one set of instances replaces another.
    let mut changes = Vec::new();
    if !added.is_empty() {
        changes.push(add(next, added));
    }
    if !removed.is_empty() {
        changes.push(Change::Remove(removed));
    }
    changes
}

fn add(set: &EndpointSet, endpoints: BTreeMap<SocketAddr, Endpoint>) -> Change {
    Change::Add {
        labels: set.labels.clone(),
        endpoints,
    }
}

#[cfg(test)]
mod tests;
