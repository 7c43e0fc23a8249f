//! Builds a [`ClusterState`] from the Kubernetes objects discovery watches, and keeps it
//! up to date object by object. Pure: no IO, so every rule here is tested on recorded
//! objects without a server.
//!
//! - A Pod is an [`Instance`] unless it has finished (`Succeeded`/`Failed`); its owner is
//!   resolved through `ownerReferences`: ReplicaSet → Deployment, Job → CronJob,
//!   StatefulSet and DaemonSet directly (a ReplicaSet or Job without an owner is the
//!   workload itself). It is meshed when it runs the proxy container (in `containers` or
//!   as a native sidecar in `initContainers`); a meshed pod's admin and tap servers are
//!   at its pod IP on the proxy's well-known ports. A workload's labels are those all its
//!   instances share (never `pod-template-hash`); its kind is its instances' owner kind
//!   (the first in order, should two differ).
//! - A Service's endpoints come from the EndpointSlices labelled
//!   `kubernetes.io/service-name`. Only **ready** endpoints are kept: a not-ready or
//!   terminating endpoint (even one still `serving`) gets no new traffic, which is what
//!   kube-proxy does for ready endpoints existing. A named target port resolves to the
//!   number the slice carries under that name (the first slice by name that has it).
//! - Each pod IP maps to the pod that currently holds it: finished pods are left out and,
//!   when two pods claim one IP, the one not being deleted, then the newest, wins.
//!
//! **Incremental.** The state lives in two parts, [`PodsPart`] (Pods, ReplicaSets, Jobs)
//! and [`ServicesPart`] (Services, EndpointSlices). Each takes the objects that changed
//! ([`PodChanges`], [`ServiceChanges`]) and updates only what they touch: a pod costs its
//! instance, its workload and its IP; an EndpointSlice costs its Service. The part's maps
//! are persistent ([`imbl::OrdMap`]): an update copies the few tree nodes on its path and
//! shares the rest with every state already published, so two whole copies of 10,000 pods
//! are never alive at once, and comparing two states costs what differs. A part built from
//! scratch ([`PodsPart::resync`], [`build`]) goes through the same updates, so an
//! incremental part and a fresh one agree by construction (and a test checks it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferry_api::k8s::CONTAINER_PROXY;
use ferry_api::ports;
use imbl::OrdMap;
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

/// Objects of one kind that changed, by namespace and name: each with its current
/// version, or `None` once deleted.
pub type Changed<K> = Vec<(ObjectRef, Option<Arc<K>>)>;

/// What changed among the objects [`PodsPart`] is made of.
#[derive(Clone, Debug, Default)]
pub struct PodChanges {
    /// Pods.
    pub pods: Changed<PodSummary>,
    /// ReplicaSets.
    pub replica_sets: Changed<ReplicaSet>,
    /// Jobs.
    pub jobs: Changed<Job>,
}

/// What changed among the objects [`ServicesPart`] is made of.
#[derive(Clone, Debug, Default)]
pub struct ServiceChanges {
    /// Services.
    pub services: Changed<KubeService>,
    /// EndpointSlices.
    pub endpoint_slices: Changed<EndpointSlice>,
}

/// What pods, ReplicaSets and Jobs make of a state: workloads, instances and who holds
/// each pod IP, with what it takes to update them one pod at a time.
#[derive(Debug, Default)]
pub struct PodsPart {
    workloads: OrdMap<ObjectRef, Workload>,
    instances: OrdMap<ObjectRef, Instance>,
    instance_ips: OrdMap<IpAddr, ObjectRef>,
    /// Instances per namespace.
    namespaces: BTreeMap<String, usize>,
    /// Each pod as last applied: what to take back when it changes or goes.
    pods: HashMap<ObjectRef, Arc<PodSummary>>,
    /// The owners of ReplicaSets and Jobs (a Deployment, a CronJob).
    parents: HashMap<(&'static str, ObjectRef), Owner>,
    /// What each workload's instances add up to.
    members: HashMap<ObjectRef, Members>,
    /// The instances claiming each pod IP (one, but while an IP moves to a new pod).
    claims: HashMap<IpAddr, Vec<Arc<PodSummary>>>,
}

/// A workload's instances, counted: how many, of which owner kind, carrying which labels.
/// Sorted vectors, not maps: a workload has one kind and a few labels, and a map's node
/// is hundreds of bytes (1,000 workloads).
#[derive(Debug, Default)]
struct Members {
    count: usize,
    /// Owner kind → how many instances have it.
    kinds: Tally<String>,
    /// (label key, value) → how many instances carry it.
    labels: Tally<(String, String)>,
}

/// Counts per key, sorted by key.
#[derive(Debug)]
struct Tally<K>(Vec<(K, usize)>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord> Tally<K> {
    /// Counts `key` in (`add`) or out, dropping it at zero; `make` builds an absent key.
    fn count<Q: Ord + ?Sized>(&mut self, key: &Q, add: bool, make: impl FnOnce() -> K)
    where
        K: std::borrow::Borrow<Q>,
    {
        let at = self.0.binary_search_by(|(k, _)| k.borrow().cmp(key));
        match (at, add) {
            (Ok(i), true) => self.0[i].1 += 1,
            (Err(i), true) => self.0.insert(i, (make(), 1)),
            (Ok(i), false) => {
                self.0[i].1 -= 1;
                if self.0[i].1 == 0 {
                    self.0.remove(i);
                }
            }
            (Err(_), false) => {}
        }
    }
}

/// What Services and EndpointSlices make of a state, with what it takes to update them
/// one Service at a time: an endpoint that becomes ready costs its Service, not the
/// other 1,999 nor the 10,000 pods.
#[derive(Debug, Default)]
pub struct ServicesPart {
    services: OrdMap<ObjectRef, Service>,
    /// Services per namespace.
    namespaces: BTreeMap<String, usize>,
    /// Each Service object as last applied.
    objects: HashMap<ObjectRef, Arc<KubeService>>,
    /// Each EndpointSlice as last applied.
    slices: HashMap<ObjectRef, Arc<EndpointSlice>>,
    /// The EndpointSlices of each Service (in its namespace), by name, sorted.
    by_service: HashMap<ObjectRef, Vec<String>>,
}

/// Builds the pods' part from `snapshot.pods`, `.replica_sets` and `.jobs`.
pub fn pods_part(snapshot: &Snapshot) -> PodsPart {
    let mut part = PodsPart::default();
    part.resync(snapshot);
    part
}

/// Builds the services' part from `snapshot.services` and `.endpoint_slices`.
pub fn services_part(snapshot: &Snapshot) -> ServicesPart {
    let mut part = ServicesPart::default();
    part.resync(snapshot);
    part
}

/// The state of `namespaces` and the two parts, sharing the parts' maps.
/// What inbound policy reads of a pod: its default-policy annotation, its named ports.
fn inbound_meta(pod: &PodSummary) -> crate::model::InboundMeta {
    let ports = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| &c.ports)
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    crate::model::InboundMeta {
        default_policy: crate::authz::resolve::annotated_policy(pod.metadata.annotations.as_ref()),
        ports,
    }
}

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
    names.extend(pods.namespaces.keys().cloned());
    names.extend(services.namespaces.keys().cloned());
    let namespace_defaults = namespaces
        .iter()
        .filter_map(|ns| {
            let policy = crate::authz::resolve::annotated_policy(ns.metadata.annotations.as_ref())?;
            Some((ns.metadata.name.clone()?, policy))
        })
        .collect();
    ClusterState {
        namespace_defaults,
        cluster_domain: domains.cluster_domain.clone(),
        trust_domain: domains.trust_domain.clone(),
        namespaces: names,
        workloads: pods.workloads.clone(),
        instances: pods.instances.clone(),
        instance_ips: pods.instance_ips.clone(),
        services: services.services.clone(),
    }
}

/// The changes that turn `known` (keys of objects applied before) into `now`: every
/// object of `now`, and a deletion for each known key `now` lacks.
fn whole<K>(
    now: &[Arc<K>],
    meta: impl Fn(&K) -> &ObjectMeta,
    known: impl Iterator<Item = ObjectRef>,
) -> Changed<K> {
    let mut out: Changed<K> = now
        .iter()
        .filter_map(|object| Some((key_of(meta(object))?, Some(object.clone()))))
        .collect();
    let present: HashSet<&ObjectRef> = out.iter().map(|(key, _)| key).collect();
    let gone: Vec<ObjectRef> = known.filter(|key| !present.contains(key)).collect();
    out.extend(gone.into_iter().map(|key| (key, None)));
    out
}

/// Whether `new` is what was applied before (the same object, or an equal one).
fn same<K: PartialEq>(old: Option<&Arc<K>>, new: Option<&Arc<K>>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => Arc::ptr_eq(old, new) || old == new,
        (None, None) => true,
        _ => false,
    }
}

impl PodsPart {
    /// Brings the part to exactly `snapshot`'s pods, ReplicaSets and Jobs (after a
    /// re-list): what did not change keeps its place. Returns how many pods were applied.
    pub fn resync(&mut self, snapshot: &Snapshot) -> usize {
        let parents = |kind: &'static str| {
            self.parents
                .keys()
                .filter(move |(k, _)| *k == kind)
                .map(|(_, key)| key.clone())
        };
        let changes = PodChanges {
            pods: whole(&snapshot.pods, |p| &p.metadata, self.pods.keys().cloned()),
            replica_sets: whole(
                &snapshot.replica_sets,
                |r| &r.metadata,
                parents("replicaset"),
            ),
            jobs: whole(&snapshot.jobs, |j| &j.metadata, parents("job")),
        };
        self.update(changes)
    }

    /// Applies what changed; returns how many pods were applied (changed pods, and the
    /// pods of a ReplicaSet or Job whose own owner changed).
    pub fn update(&mut self, changes: PodChanges) -> usize {
        let mut moved = HashSet::new();
        let owners = changes
            .replica_sets
            .iter()
            .map(|(key, rs)| ("replicaset", key, rs.as_ref().map(|r| &r.metadata)))
            .chain(
                changes
                    .jobs
                    .iter()
                    .map(|(key, job)| ("job", key, job.as_ref().map(|j| &j.metadata))),
            );
        for (kind, key, meta) in owners {
            if self.set_parent(kind, key, meta) {
                moved.insert((kind, key.clone()));
            }
        }
        // The last version of each pod wins; the pods of a moved owner are applied anew.
        let mut pods: BTreeMap<ObjectRef, (Option<Arc<PodSummary>>, bool)> = changes
            .pods
            .into_iter()
            .map(|(key, pod)| (key, (pod, false)))
            .collect();
        if !moved.is_empty() {
            for (key, pod) in &self.pods {
                let direct = direct_owner(&pod.metadata);
                if direct.is_some_and(|d| moved.contains(&d)) {
                    pods.entry(key.clone())
                        .or_insert_with(|| (Some(pod.clone()), true))
                        .1 = true;
                }
            }
        }
        let mut workloads = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let mut applied = 0;
        for (key, (pod, force)) in pods {
            if !force && same(self.pods.get(&key), pod.as_ref()) {
                continue;
            }
            applied += 1;
            if let Some(old) = self.pods.remove(&key) {
                self.retract(&key, &old, &mut workloads, &mut ips);
            }
            if let Some(pod) = pod {
                self.add(&key, &pod, &mut workloads, &mut ips);
                self.pods.insert(key, pod);
            }
        }
        for workload in workloads {
            self.refresh_workload(workload);
        }
        for ip in ips {
            self.refresh_ip(ip);
        }
        applied
    }

    /// Records the owner of a ReplicaSet or Job; returns whether it changed.
    fn set_parent(
        &mut self,
        kind: &'static str,
        key: &ObjectRef,
        meta: Option<&ObjectMeta>,
    ) -> bool {
        let owner = meta.and_then(controller).map(|owner| Owner {
            kind: owner.kind.to_lowercase(),
            name: owner.name.clone(),
        });
        let slot = (kind, key.clone());
        if self.parents.get(&slot) == owner.as_ref() {
            return false;
        }
        match owner {
            Some(owner) => self.parents.insert(slot, owner),
            None => self.parents.remove(&slot),
        };
        true
    }

    /// The workload a pod belongs to: its controller, or that controller's owner.
    fn owner_of(&self, pod: &ObjectMeta) -> Option<Owner> {
        let direct = controller(pod)?;
        let kind = direct.kind.to_lowercase();
        let grouped = direct_owner(pod).and_then(|slot| self.parents.get(&slot));
        Some(grouped.cloned().unwrap_or(Owner {
            kind,
            name: direct.name.clone(),
        }))
    }

    /// Adds what `pod` makes: its instance, its share of its workload, its IP claim.
    fn add(
        &mut self,
        key: &ObjectRef,
        pod: &Arc<PodSummary>,
        workloads: &mut BTreeSet<ObjectRef>,
        ips: &mut BTreeSet<IpAddr>,
    ) {
        if finished(pod) {
            return;
        }
        let ip = pod_ip(pod);
        let meshed = is_meshed(pod);
        let owner = self.owner_of(&pod.metadata);
        if let Some(owner) = &owner {
            let workload = ObjectRef::new(&key.namespace, &owner.name);
            let members = self.members.entry(workload.clone()).or_default();
            members.count += 1;
            members
                .kinds
                .count(owner.kind.as_str(), true, || owner.kind.clone());
            for (k, v) in workload_labels(pod) {
                let pair = (k.clone(), v.clone());
                members.labels.count(&pair, true, || pair.clone());
            }
            workloads.insert(workload);
        }
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        let at = |port: u16| ip.filter(|_| meshed).map(|ip| SocketAddr::new(ip, port));
        let instance = Instance {
            owner,
            service_account,
            meshed,
            addr: None,
            admin_addr: at(ports::PROXY_ADMIN),
            tap_addr: at(ports::PROXY_TAP),
            inbound: inbound_meta(pod),
        };
        self.instances.insert(key.clone(), instance);
        count(&mut self.namespaces, &key.namespace, true);
        if let Some(ip) = ip {
            self.claims.entry(ip).or_default().push(pod.clone());
            ips.insert(ip);
        }
    }

    /// Takes back what [`Self::add`] made of `pod`.
    fn retract(
        &mut self,
        key: &ObjectRef,
        pod: &Arc<PodSummary>,
        workloads: &mut BTreeSet<ObjectRef>,
        ips: &mut BTreeSet<IpAddr>,
    ) {
        let Some(instance) = self.instances.remove(key) else {
            return;
        };
        count(&mut self.namespaces, &key.namespace, false);
        if let Some(owner) = &instance.owner {
            let workload = ObjectRef::new(&key.namespace, &owner.name);
            if let Some(members) = self.members.get_mut(&workload) {
                members.count -= 1;
                members.kinds.count(owner.kind.as_str(), false, String::new);
                for (k, v) in workload_labels(pod) {
                    let pair = (k.clone(), v.clone());
                    members.labels.count(&pair, false, || pair.clone());
                }
                if members.count == 0 {
                    self.members.remove(&workload);
                }
            }
            workloads.insert(workload);
        }
        if let Some(ip) = pod_ip(pod) {
            if let Some(claims) = self.claims.get_mut(&ip) {
                claims.retain(|claim| !Arc::ptr_eq(claim, pod));
                if claims.is_empty() {
                    self.claims.remove(&ip);
                }
            }
            ips.insert(ip);
        }
    }

    /// Sets a workload from its members' counts (removes it when it has none).
    fn refresh_workload(&mut self, key: ObjectRef) {
        let Some(members) = self.members.get(&key) else {
            self.workloads.remove(&key);
            return;
        };
        let kind = members.kinds.0.first().map(|(k, _)| k.clone());
        let kind = kind.unwrap_or_default();
        let labels = members
            .labels
            .0
            .iter()
            .filter(|(_, n)| *n == members.count)
            .map(|(pair, _)| pair.clone())
            .collect();
        let workload = Workload { kind, labels };
        if self.workloads.get(&key) != Some(&workload) {
            self.workloads.insert(key, workload);
        }
    }

    /// Sets who holds `ip`: not being deleted beats being deleted, then the newest wins,
    /// then the first name (so the answer does not depend on the order of events).
    fn refresh_ip(&mut self, ip: IpAddr) {
        let holder = match self.claims.get(&ip).map(Vec::as_slice) {
            None | Some([]) => None,
            Some([one]) => key_of(&one.metadata),
            Some(many) => many
                .iter()
                .filter_map(|pod| {
                    let key = key_of(&pod.metadata)?;
                    let deleting = pod.metadata.deletion_timestamp.is_some();
                    let created = pod
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string());
                    Some(((!deleting, created, std::cmp::Reverse(key.clone())), key))
                })
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, key)| key),
        };
        match holder {
            Some(key) if self.instance_ips.get(&ip) != Some(&key) => {
                self.instance_ips.insert(ip, key);
            }
            Some(_) => {}
            None => {
                self.instance_ips.remove(&ip);
            }
        }
    }
}

/// Counts `key` in or out of `counts`, dropping it at zero.
fn count(counts: &mut BTreeMap<String, usize>, key: &str, add: bool) {
    if add {
        match counts.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                counts.insert(key.to_string(), 1);
            }
        }
    } else if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// A pod's labels that may be its workload's: all but `pod-template-hash`.
fn workload_labels(pod: &PodSummary) -> impl Iterator<Item = (&String, &String)> {
    let labels = pod.metadata.labels.iter().flatten();
    labels.filter(|(k, _)| k.as_str() != LABEL_POD_TEMPLATE_HASH)
}

/// The ReplicaSet or Job that directly controls a pod, as [`PodsPart::parents`] keys it.
fn direct_owner(pod: &ObjectMeta) -> Option<(&'static str, ObjectRef)> {
    let direct = controller(pod)?;
    let kind = match direct.kind.to_lowercase().as_str() {
        "replicaset" => "replicaset",
        "job" => "job",
        _ => return None,
    };
    let namespace = pod.namespace.clone().unwrap_or_default();
    Some((kind, ObjectRef::new(namespace, direct.name.clone())))
}

impl ServicesPart {
    /// Brings the part to exactly `snapshot`'s Services and EndpointSlices (after a
    /// re-list): what did not change keeps its place. Returns how many Services were built.
    pub fn resync(&mut self, snapshot: &Snapshot) -> usize {
        let changes = ServiceChanges {
            services: whole(
                &snapshot.services,
                |s| &s.metadata,
                self.objects.keys().cloned(),
            ),
            endpoint_slices: whole(
                &snapshot.endpoint_slices,
                |s| &s.metadata,
                self.slices.keys().cloned(),
            ),
        };
        self.update(changes)
    }

    /// Applies what changed; returns how many Services were built again.
    pub fn update(&mut self, changes: ServiceChanges) -> usize {
        let mut dirty = BTreeSet::new();
        for (key, slice) in changes.endpoint_slices {
            if same(self.slices.get(&key), slice.as_ref()) {
                continue;
            }
            if let Some(old) = self.slices.remove(&key) {
                if let Some(service) = service_of_slice(&old) {
                    if let Some(slices) = self.by_service.get_mut(&service) {
                        if let Ok(at) = slices.binary_search(&key.name) {
                            slices.remove(at);
                        }
                        if slices.is_empty() {
                            self.by_service.remove(&service);
                        }
                    }
                    dirty.insert(service);
                }
            }
            if let Some(slice) = slice {
                if let Some(service) = service_of_slice(&slice) {
                    let slices = self.by_service.entry(service.clone()).or_default();
                    if let Err(at) = slices.binary_search(&key.name) {
                        slices.insert(at, key.name.clone());
                    }
                    dirty.insert(service);
                }
                self.slices.insert(key, slice);
            }
        }
        for (key, service) in changes.services {
            if same(self.objects.get(&key), service.as_ref()) {
                continue;
            }
            match service {
                Some(service) => self.objects.insert(key.clone(), service),
                None => self.objects.remove(&key),
            };
            dirty.insert(key);
        }
        let built = dirty.len();
        for key in dirty {
            self.refresh(key);
        }
        built
    }

    /// Builds one Service again from its object and its slices.
    fn refresh(&mut self, key: ObjectRef) {
        let slices: Vec<&EndpointSlice> = self
            .by_service
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|name| {
                let slice = ObjectRef::new(&key.namespace, name);
                self.slices.get(&slice).map(|slice| &**slice)
            })
            .collect();
        let built = self
            .objects
            .get(&key)
            .and_then(|object| service(object, &slices));
        match built {
            Some(service) => {
                match self.services.get(&key) {
                    Some(current) if *current == service => return,
                    Some(_) => {}
                    None => count(&mut self.namespaces, &key.namespace, true),
                }
                self.services.insert(key, service);
            }
            None => {
                if self.services.remove(&key).is_some() {
                    count(&mut self.namespaces, &key.namespace, false);
                }
            }
        }
    }
}

/// The Service an EndpointSlice belongs to, when it is one of an IP address type.
fn service_of_slice(slice: &EndpointSlice) -> Option<ObjectRef> {
    let labels = slice.metadata.labels.as_ref();
    let namespace = slice.metadata.namespace.as_ref()?;
    let name = labels.and_then(|l| l.get(LABEL_SERVICE_NAME))?;
    matches!(slice.address_type.as_str(), "IPv4" | "IPv6").then(|| ObjectRef::new(namespace, name))
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

/// The model of a Service backed by `slices`; `None` for what is not one (no spec, an
/// `ExternalName`).
fn service(svc: &KubeService, slices: &[&EndpointSlice]) -> Option<Service> {
    key_of(&svc.metadata)?;
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
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
    for port in spec.ports.iter().flatten() {
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let name = port.name.as_deref().unwrap_or_default();
        let (target_port, endpoints) = endpoints(slices, name);
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
    Some(service)
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
