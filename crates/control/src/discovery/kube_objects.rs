//! What the reflector stores keep of each object: only what [`super::kube_build`] reads.
//! At 10,000 pods this is most of the control plane's memory, so:
//!
//! - **Pods** are read as [`PodSummary`], straight from the API's JSON (unknown fields are
//!   skipped while parsing): names, labels, owners, timestamps, container names, the
//!   service account, phase and IP. A `k8s_openapi` `Pod` takes kilobytes even with its
//!   spec emptied (every optional field of every container is there), and a full one is
//!   tens of kilobytes.
//! - Every kind is trimmed by [`Trim`] as it arrives: annotations (but Services'
//!   Linkerd policy annotations) and `managedFields` (often most of an object: `kubectl
//!   apply` copies the whole object into an annotation) are never read, nor are uids,
//!   resource versions (the watcher has read them before the trim) and owner references'
//!   uids, nor the specs of ReplicaSets and Jobs (a whole pod template each; only their
//!   owners matter); of a Service's spec only its type, cluster IPs and ports are kept, of
//!   an EndpointSlice's endpoints their addresses, conditions and pod (node, zone, hints
//!   and the pod's uid go). With 20,000 endpoints and 10,000 pods these are megabytes.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::Deserialize;

/// A Pod as discovery keeps it; watched and listed as `v1` Pods.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct PodSummary {
    /// The pod's metadata, trimmed like every object's.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Container names and the service account.
    pub spec: Option<PodSummarySpec>,
    /// Phase and IP.
    pub status: Option<PodSummaryStatus>,
}

/// The part of a pod's spec discovery reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodSummarySpec {
    /// The containers, by name.
    #[serde(default)]
    pub containers: Vec<ContainerName>,
    /// The init containers (native sidecars among them), by name.
    pub init_containers: Option<Vec<ContainerName>>,
    /// `spec.serviceAccountName`.
    pub service_account_name: Option<String>,
}

/// A container, by name only.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ContainerName {
    /// `name`.
    pub name: String,
    /// Its named ports, which a policy `Server` may name.
    #[serde(default)]
    pub ports: Vec<ContainerPortName>,
}

/// A container port, by name and number.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortName {
    /// `name`.
    pub name: Option<String>,
    /// `containerPort`.
    pub container_port: i32,
}

/// The part of a pod's status discovery reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodSummaryStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: Option<String>,
    /// `status.podIP`.
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
}

/// The same API resource as `v1` Pod: the watchers ask for pods and parse them as this.
impl Resource for PodSummary {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Drops, as an object arrives, every field discovery does not read.
pub trait Trim {
    /// Drops what is never read.
    fn trim(&mut self);
}

/// Metadata kept: name, namespace, labels, owners (kind, name, controller), timestamps.
fn trim_meta(meta: &mut ObjectMeta) {
    meta.annotations = None;
    meta.managed_fields = None;
    meta.finalizers = None;
    meta.uid = None;
    meta.resource_version = None;
    meta.generate_name = None;
    meta.generation = None;
    meta.self_link = None;
    for owner in meta.owner_references.iter_mut().flatten() {
        owner.api_version = String::new();
        owner.uid = String::new();
        owner.block_owner_deletion = None;
    }
}

/// Trims `meta`, keeping the default-inbound-policy annotations (docs/authorization.md).
fn trim_keeping_inbound_policy(meta: &mut ObjectMeta) {
    let mut annotations = meta.annotations.take().unwrap_or_default();
    annotations.retain(|k, _| {
        k == ferry_api::k8s::ANNOTATION_DEFAULT_INBOUND_POLICY
            || k == ferry_api::k8s::ANNOTATION_LINKERD_DEFAULT_INBOUND_POLICY
    });
    trim_meta(meta);
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
}

impl Trim for PodSummary {
    fn trim(&mut self) {
        trim_keeping_inbound_policy(&mut self.metadata);
    }
}

impl Trim for Namespace {
    fn trim(&mut self) {
        trim_keeping_inbound_policy(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

impl Trim for Service {
    fn trim(&mut self) {
        // Of the annotations, Linkerd's policy ones are read (routes: retries, timeouts,
        // failure accrual): kept here, so that no second watch of Services is needed.
        let mut annotations = self.metadata.annotations.take().unwrap_or_default();
        annotations.retain(|k, _| crate::routes::is_policy_annotation(k));
        trim_meta(&mut self.metadata);
        self.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        self.status = None;
        self.spec = self.spec.take().map(|spec| ServiceSpec {
            type_: spec.type_,
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips,
            ports: spec.ports,
            ..ServiceSpec::default()
        });
    }
}

impl Trim for EndpointSlice {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        for endpoint in self.endpoints.iter_mut().flatten() {
            endpoint.deprecated_topology = None;
            endpoint.hints = None;
            endpoint.hostname = None;
            endpoint.node_name = None;
            endpoint.zone = None;
            if let Some(pod) = &mut endpoint.target_ref {
                pod.api_version = None;
                pod.field_path = None;
                pod.namespace = None;
                pod.resource_version = None;
                pod.uid = None;
            }
        }
    }
}

impl Trim for ReplicaSet {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

impl Trim for Job {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}
