//! The cluster as discovery sees it: namespaces, workloads, their instances and the
//! services they back. Plain data, no IO.
//!
//! Every discovery backend (the workloads file today, Kubernetes later) produces a
//! [`ClusterState`]; everything above discovery reads only this. A service lists its
//! endpoints explicitly per port, the way Kubernetes' EndpointSlices do, so a backend that
//! selects by labels or names resolves the selection itself. The big maps are persistent
//! ([`imbl::OrdMap`]): a new state shares every unchanged entry's tree nodes with the one
//! before, so building, comparing and diffing it ([`imbl::OrdMap::diff`] skips shared
//! nodes) costs what changed, and holding an old state next to a new one costs only the
//! difference.

use ferry_api::destination::DEFAULT_CLUSTER_DOMAIN;
use ferry_api::identity::DEFAULT_TRUST_DOMAIN;
pub use imbl::OrdMap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// A namespaced object's coordinates: `(namespace, name)`, ordered namespace first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The namespace.
    pub namespace: String,
    /// The object's name within its namespace.
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference from a namespace and a name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything discovery knows at one moment. Cheap to compare, so unchanged reloads are
/// not fanned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterState {
    /// Suffix of service names: `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Suffix of identity names: `...identity.ferry.<trust_domain>`.
    pub trust_domain: String,
    /// Every namespace known, including those with nothing in them yet.
    pub namespaces: BTreeSet<String>,
    /// Workloads (deployments, statefulsets, ...) by namespace and name.
    pub workloads: OrdMap<ObjectRef, Workload>,
    /// Instances (pods) by namespace and name.
    pub instances: OrdMap<ObjectRef, Instance>,
    /// Services by namespace and name.
    pub services: OrdMap<ObjectRef, Service>,
    /// The instance that currently owns each pod IP (Kubernetes: running, not deleted
    /// pods only), so an address reused by a new pod names the new one. Empty for the
    /// workloads file, whose addresses are found through services.
    pub instance_ips: OrdMap<IpAddr, ObjectRef>,
    /// Each namespace's `default-inbound-policy` annotation, when it has one (unparsed).
    pub namespace_defaults: BTreeMap<String, String>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            namespaces: BTreeSet::new(),
            workloads: OrdMap::new(),
            instances: OrdMap::new(),
            services: OrdMap::new(),
            instance_ips: OrdMap::new(),
            namespace_defaults: BTreeMap::new(),
        }
    }
}

/// A workload: the owner of a set of identical instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Lowercase kind, as a kubectl user writes it: `deployment`, `statefulset`, ...
    pub kind: String,
    /// Labels of the workload's instances, for selectors and display.
    pub labels: BTreeMap<String, String>,
}

/// One running copy of a workload (a pod), reachable at one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The owning workload, by name in the instance's namespace, when it has one.
    pub owner: Option<Owner>,
    /// The service account the instance runs as; its identity derives from it.
    pub service_account: String,
    /// Whether a Ferry proxy fronts the instance, so that it has a mesh identity.
    pub meshed: bool,
    /// Where the instance's proxy accepts inbound traffic, when discovery knows it apart
    /// from any service (the workloads file): what a Service synthesized for a workload
    /// (a rollout's Deployment backend) selects. Kubernetes: none (EndpointSlices say).
    pub addr: Option<SocketAddr>,
    /// The instance proxy's admin listener (`/metrics`, `/state`), when the file names it:
    /// where the control plane scrapes metrics and reads diagnostics.
    pub admin_addr: Option<SocketAddr>,
    /// The instance proxy's tap listener (`tap.Tap/Observe`), when the file names it.
    pub tap_addr: Option<SocketAddr>,
    /// What inbound policy reads of the instance (docs/authorization.md).
    pub inbound: InboundMeta,
}

/// What inbound policy reads of an instance besides its workload's labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundMeta {
    /// Its `default-inbound-policy` annotation (Ferry's, else Linkerd's), unparsed.
    pub default_policy: Option<String>,
    /// Its named container ports, which a `Server` may name.
    pub ports: BTreeMap<String, u16>,
}

/// The workload that owns an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The workload's kind (`deployment`, ...).
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

/// A service: a stable name in front of the endpoints of one or more workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// The service's ports, by port number.
    pub ports: BTreeMap<u16, ServicePort>,
    /// The virtual IPs (Kubernetes ClusterIPs) traffic to the service is addressed to;
    /// empty for headless services and the workloads file.
    pub cluster_ips: BTreeSet<IpAddr>,
    /// Linkerd's policy annotations of the Service (`retry.linkerd.io/*`,
    /// `timeout.linkerd.io/*`, `balancer.linkerd.io/*`; [`crate::routes`] reads them); the
    /// Service's other annotations are not kept.
    pub policy_annotations: BTreeMap<String, String>,
}

/// One port of a service and the endpoints that currently serve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port on the instance the traffic is meant for (informational in local mode,
    /// where the instance's proxy forwards to its application itself).
    pub target_port: u16,
    /// The ready endpoints, by the address a client connects to.
    pub endpoints: BTreeMap<SocketAddr, EndpointRef>,
}

/// An endpoint of a service port, pointing back at the instance behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRef {
    /// The instance (pod) name in the service's namespace, when the address is one.
    pub instance: Option<String>,
}

impl ClusterState {
    /// Returns the instance listening at `addr`, if any, with its coordinates.
    pub fn instance_at(&self, addr: SocketAddr) -> Option<(&ObjectRef, &Instance)> {
        if let Some(key) = self.instance_ips.get(&addr.ip()) {
            return self.instances.get_key_value(key);
        }
        // Linear, but only IP lookups use it; name lookups go through services.
        self.services.iter().find_map(|(svc, service)| {
            service.ports.values().find_map(|port| {
                let name = port.endpoints.get(&addr)?.instance.as_ref()?;
                self.instances
                    .get_key_value(&ObjectRef::new(&svc.namespace, name))
            })
        })
    }

    /// Returns the service whose cluster IP is `ip`, if any.
    pub fn service_at(&self, ip: IpAddr) -> Option<(&ObjectRef, &Service)> {
        // Linear like `instance_at`; transparent lookups are one per address and stream.
        self.services
            .iter()
            .find(|(_, service)| service.cluster_ips.contains(&ip))
    }

    /// Returns the service's fully qualified DNS name: `<svc>.<ns>.svc.<cluster-domain>`.
    pub fn fully_qualified_name(&self, service: &ObjectRef) -> String {
        format!(
            "{}.{}.svc.{}",
            service.name, service.namespace, self.cluster_domain
        )
    }
}
