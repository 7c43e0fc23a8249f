//! Builds a [`ClusterState`] from a snapshot of the Kubernetes objects discovery watches.
//! Pure: no IO, so every rule here is tested on recorded objects without a server.
//!
//! - A Pod is an [`Instance`] unless it has finished (`Succeeded`/`Failed`); its owner is
//!   resolved through `ownerReferences`: ReplicaSet → Deployment, Job → CronJob,
//!   StatefulSet and DaemonSet directly (a ReplicaSet or Job without an owner is the
//!   workload itself). It is meshed when it runs the proxy container (in `containers` or
//!   as a native sidecar in `initContainers`); a meshed pod's admin and tap servers are
//!   at its pod IP on the proxy's well-known ports.
//! - A Service's endpoints come from the EndpointSlices labelled
//!   `kubernetes.io/service-name`. Only **ready** endpoints are kept: a not-ready or
//!   terminating endpoint (even one still `serving`) gets no new traffic, which is what
//!   kube-proxy does for ready endpoints existing. A named target port resolves to the
//!   number the slice carries under that name.
//! - Each pod IP maps to the pod that currently holds it: finished pods are left out and,
//!   when two pods claim one IP, the one not being deleted, then the newest, wins.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferry_api::k8s::CONTAINER_PROXY;
use ferry_api::ports;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kube_objects::PodSummary;
use crate::model::{
    ClusterState, EndpointRef, Instance, ObjectRef, Owner, Service, ServicePort, Workload,
};

/// The label an EndpointSlice names its Service with.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label every ReplicaSet's pods carry, different per template: not a workload label.
const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The objects a state is built from, as the reflector stores hold them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Namespaces.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Services.
    pub services: Vec<Arc<KubeService>>,
    /// `discovery.k8s.io/v1` EndpointSlices.
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Pods.
    pub pods: Vec<Arc<PodSummary>>,
    /// ReplicaSets, to find a pod's Deployment.
    pub replica_sets: Vec<Arc<ReplicaSet>>,
    /// Jobs, to find a pod's CronJob.
    pub jobs: Vec<Arc<Job>>,
}

/// The names the state is built under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domains {
    /// `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// `...identity.ferry.<trust_domain>`.
    pub trust_domain: String,
}

/// Builds the state `snapshot` describes.
pub fn build(snapshot: &Snapshot, domains: &Domains) -> ClusterState {
    assemble(
        domains,
        &snapshot.namespaces,
        &pods_part(snapshot),
        &services_part(snapshot),
    )
}

/// What pods, ReplicaSets and Jobs make of a state: workloads, instances and who holds
/// each pod IP. Built again only when one of those changed.
#[derive(Clone, Debug, Default)]
pub struct PodsPart {
    state: ClusterState,
}

/// What Services and EndpointSlices make of a state. Built again only when one of those
/// changed: an endpoint that becomes ready costs the services, not the 10,000 pods.
#[derive(Clone, Debug, Default)]
pub struct ServicesPart {
    state: ClusterState,
}

/// Builds the pods' part from `snapshot.pods`, `.replica_sets` and `.jobs`.
pub fn pods_part(snapshot: &Snapshot) -> PodsPart {
    let mut state = ClusterState::default();
    let owners = Owners::new(snapshot);
    add_pods(&mut state, snapshot, &owners);
    PodsPart { state }
}

/// Builds the services' part from `snapshot.services` and `.endpoint_slices`.
pub fn services_part(snapshot: &Snapshot) -> ServicesPart {
    let mut state = ClusterState::default();
    add_services(&mut state, snapshot);
    ServicesPart { state }
}

/// The state of `namespaces` and the two parts, sharing the parts' maps.
pub fn assemble(
    domains: &Domains,
    namespaces: &[Arc<Namespace>],
    pods: &PodsPart,
    services: &ServicesPart,
) -> ClusterState {
    let mut names: BTreeSet<String> = namespaces
        .iter()
        .filter_map(|ns| ns.metadata.name.clone())
        .collect();
    names.extend(pods.state.namespaces.iter().cloned());
    names.extend(services.state.namespaces.iter().cloned());
    ClusterState {
        cluster_domain: domains.cluster_domain.clone(),
        trust_domain: domains.trust_domain.clone(),
        namespaces: names,
        workloads: pods.state.workloads.clone(),
        instances: pods.state.instances.clone(),
        instance_ips: pods.state.instance_ips.clone(),
        services: services.state.services.clone(),
    }
}

fn key_of(meta: &ObjectMeta) -> Option<ObjectRef> {
    Some(ObjectRef::new(meta.namespace.clone()?, meta.name.clone()?))
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let refs = meta.owner_references.as_deref()?;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
}

/// The owners of the owners: ReplicaSet → Deployment and Job → CronJob.
struct Owners {
    parents: HashMap<(&'static str, ObjectRef), Owner>,
}

impl Owners {
    fn new(snapshot: &Snapshot) -> Self {
        let mut parents = HashMap::new();
        let mut add = |kind: &'static str, meta: &ObjectMeta| {
            if let (Some(key), Some(owner)) = (key_of(meta), controller(meta)) {
                let parent = Owner {
                    kind: owner.kind.to_lowercase(),
                    name: owner.name.clone(),
                };
                parents.insert((kind, key), parent);
            }
        };
        for rs in &snapshot.replica_sets {
            add("replicaset", &rs.metadata);
        }
        for job in &snapshot.jobs {
            add("job", &job.metadata);
        }
        Self { parents }
    }

    /// The workload a pod belongs to: its controller, or that controller's owner.
    fn of(&self, pod: &ObjectMeta) -> Option<Owner> {
        let direct = controller(pod)?;
        let kind = direct.kind.to_lowercase();
        let namespace = pod.namespace.clone().unwrap_or_default();
        let key = ObjectRef::new(namespace, direct.name.clone());
        let grouped = match kind.as_str() {
            "replicaset" => self.parents.get(&("replicaset", key)),
            "job" => self.parents.get(&("job", key)),
            _ => None,
        };
        Some(grouped.cloned().unwrap_or(Owner {
            kind,
            name: direct.name.clone(),
        }))
    }
}

fn finished(pod: &PodSummary) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn pod_ip(pod: &PodSummary) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// Whether the pod runs Ferry's proxy, as a container or a native sidecar.
pub fn is_meshed(pod: &PodSummary) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let init = spec.init_containers.iter().flatten();
    spec.containers
        .iter()
        .chain(init)
        .any(|c| c.name == CONTAINER_PROXY)
}

fn add_pods(state: &mut ClusterState, snapshot: &Snapshot, owners: &Owners) {
    // Per IP: (being deleted, created at, pod) of the best claimant so far.
    let mut claims: BTreeMap<IpAddr, (bool, Option<String>, ObjectRef)> = BTreeMap::new();
    for pod in &snapshot.pods {
        let Some(key) = key_of(&pod.metadata) else {
            continue;
        };
        if finished(pod) {
            continue;
        }
        let ip = pod_ip(pod);
        let meshed = is_meshed(pod);
        let owner = owners.of(&pod.metadata);
        if let Some(owner) = &owner {
            let workload = ObjectRef::new(&key.namespace, &owner.name);
            let labels = pod.metadata.labels.as_ref();
            // The labels all its pods share, whatever order the stores list them in. Only
            // a workload's first pod copies its labels: under churn this runs for every pod
            // on every rebuild, and a copy per pod was most of the rebuild's allocations.
            match Arc::make_mut(&mut state.workloads).entry(workload) {
                Entry::Vacant(entry) => {
                    let mut labels = labels.cloned().unwrap_or_default();
                    labels.remove(LABEL_POD_TEMPLATE_HASH);
                    entry.insert(Workload {
                        kind: owner.kind.clone(),
                        labels,
                    });
                }
                Entry::Occupied(mut entry) => {
                    let shared = &mut entry.get_mut().labels;
                    shared.retain(|k, v| labels.and_then(|l| l.get(k)) == Some(v));
                }
            }
        }
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        let at = |port: u16| ip.filter(|_| meshed).map(|ip| SocketAddr::new(ip, port));
        Arc::make_mut(&mut state.instances).insert(
            key.clone(),
            Instance {
                owner,
                service_account,
                meshed,
                admin_addr: at(ports::PROXY_ADMIN),
                tap_addr: at(ports::PROXY_TAP),
            },
        );
        state.namespaces.insert(key.namespace.clone());
        if let Some(ip) = ip {
            let deleting = pod.metadata.deletion_timestamp.is_some();
            let created = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string());
            let better = match claims.get(&ip) {
                None => true,
                // Not deleting beats deleting; then the newer one wins.
                // Ties go to the first name, so the answer does not depend on order.
                Some((d, c, k)) => {
                    (!deleting, &created, std::cmp::Reverse(&key)) > (!*d, c, std::cmp::Reverse(k))
                }
            };
            if better {
                claims.insert(ip, (deleting, created, key));
            }
        }
    }
    state.instance_ips = Arc::new(claims.into_iter().map(|(ip, (_, _, k))| (ip, k)).collect());
}

fn add_services(state: &mut ClusterState, snapshot: &Snapshot) {
    let mut slices: HashMap<ObjectRef, Vec<&EndpointSlice>> = HashMap::new();
    for slice in &snapshot.endpoint_slices {
        let labels = slice.metadata.labels.as_ref();
        let (Some(ns), Some(svc)) = (
            slice.metadata.namespace.as_ref(),
            labels.and_then(|l| l.get(LABEL_SERVICE_NAME)),
        ) else {
            continue;
        };
        if matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            slices
                .entry(ObjectRef::new(ns, svc))
                .or_default()
                .push(slice);
        }
    }
    for svc in &snapshot.services {
        let Some(key) = key_of(&svc.metadata) else {
            continue;
        };
        let Some(spec) = &svc.spec else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let mut service = Service {
            policy_annotations: svc.metadata.annotations.clone().unwrap_or_default(),
            ..Service::default()
        };
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter());
        service.cluster_ips = ips
            .filter_map(|ip| ip.parse().ok())
            .collect::<BTreeSet<_>>();
        let backing = slices.get(&key).map(Vec::as_slice).unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let name = port.name.as_deref().unwrap_or_default();
            let (target_port, endpoints) = endpoints(backing, name);
            let target_port = target_port.unwrap_or(match &port.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).unwrap_or(number),
                _ => number,
            });
            let port = ServicePort {
                target_port,
                endpoints,
            };
            service.ports.insert(number, port);
        }
        state.namespaces.insert(key.namespace.clone());
        Arc::make_mut(&mut state.services).insert(key, service);
    }
}

/// The ready endpoints of the service port called `name` (`""` when unnamed), and the
/// target port number the slices resolved it to.
fn endpoints(
    slices: &[&EndpointSlice],
    name: &str,
) -> (Option<u16>, BTreeMap<SocketAddr, EndpointRef>) {
    let mut target = None;
    let mut out = BTreeMap::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == name
                && p.protocol.as_deref().is_none_or(|p| p == "TCP")
        });
        let Some(number) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        target.get_or_insert(number);
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            // `ready` unset means ready (the API's rule); terminating is never ready.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                && !conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready {
                continue;
            }
            let instance = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    let endpoint = EndpointRef {
                        instance: instance.clone(),
                    };
                    out.insert(SocketAddr::new(ip, number), endpoint);
                }
            }
        }
    }
    (target, out)
}
