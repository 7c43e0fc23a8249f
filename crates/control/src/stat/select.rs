//! Resources as the metrics see them: which labels name a resource of each kind on the
//! sending side (the scraped proxy's target labels) and on the receiving side (the
//! `dst_*` labels of outbound metrics), and what discovery knows of them — whether they
//! exist, and how many of their instances are meshed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ferry_api::destination::{
    workload_label, LABEL_NAMESPACE, LABEL_POD, LABEL_SERVICE, METRIC_LABEL_PREFIX,
};
use ferry_api::resource::Resource;
use ferry_api::stat::Meshed;

use super::StatError;
use crate::metrics::{Labels, Matcher};
use crate::model::{ClusterState, Instance, ObjectRef};

/// Resources of one kind, in one namespace or all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The canonical kind (`deployment`).
    pub kind: String,
    /// One resource, or every resource of the kind.
    pub name: Option<String>,
    /// The namespace, `None` for all (ignored for namespaces).
    pub namespace: Option<String>,
}

impl Selection {
    /// A selection from a parsed resource.
    pub fn new(resource: Resource, namespace: Option<String>) -> Self {
        Self {
            kind: resource.kind,
            name: resource.name,
            namespace,
        }
    }

    /// `deployment/web` (or `deployment`).
    pub fn display(&self) -> String {
        match &self.name {
            Some(name) => format!("{}/{name}", self.kind),
            None => self.kind.clone(),
        }
    }
}

/// The labels naming a resource of `kind` on the side that sent the traffic: the
/// scraped proxy's target labels. A service sends nothing, so it has none.
pub fn src_labels(kind: &str) -> Result<Vec<String>, StatError> {
    Ok(match kind {
        "namespace" => vec![LABEL_NAMESPACE.into()],
        "pod" => vec![LABEL_NAMESPACE.into(), LABEL_POD.into()],
        "service" => return Err(StatError::ServiceNotASource),
        kind => vec![LABEL_NAMESPACE.into(), workload_label(kind).into()],
    })
}

/// The labels naming a resource of `kind` on the receiving side: outbound `dst_*` labels.
pub fn dst_labels(kind: &str) -> Vec<String> {
    let key = match kind {
        "namespace" => return vec![format!("{METRIC_LABEL_PREFIX}{LABEL_NAMESPACE}")],
        "pod" => LABEL_POD,
        "service" => LABEL_SERVICE,
        kind => workload_label(kind),
    };
    vec![
        format!("{METRIC_LABEL_PREFIX}{LABEL_NAMESPACE}"),
        format!("{METRIC_LABEL_PREFIX}{key}"),
    ]
}

/// Matchers restricting `labels` (as [`src_labels`] or [`dst_labels`] made them) to the
/// selection: its namespace and name.
pub fn matchers(labels: &[String], selection: &Selection) -> Vec<Matcher> {
    let mut out = Vec::new();
    if selection.kind == "namespace" {
        if let Some(name) = &selection.name {
            out.push(Matcher::eq(&labels[0], name));
        }
        return out;
    }
    if let Some(ns) = &selection.namespace {
        out.push(Matcher::eq(&labels[0], ns));
    }
    if let Some(name) = &selection.name {
        out.push(Matcher::eq(&labels[1], name));
    }
    out
}

/// The `(namespace, name)` a group of `labels` (keyed as `keys`) names, if complete.
pub fn row_of(labels: &Labels, keys: &[String]) -> Option<(String, String)> {
    let ns = labels.get(&keys[0])?.clone();
    let name = match keys.get(1) {
        Some(key) => labels.get(key)?.clone(),
        None => ns.clone(),
    };
    Some((ns, name))
}

/// Every resource of the selection discovery knows, with its meshed count; an error
/// when the selection names one resource discovery does not know.
pub fn resources(
    state: &ClusterState,
    selection: &Selection,
) -> Result<BTreeMap<(String, String), Meshed>, StatError> {
    let in_ns = |ns: &str| selection.namespace.as_deref().is_none_or(|want| want == ns);
    let named = |name: &str| selection.name.as_deref().is_none_or(|want| want == name);
    let mut out: BTreeMap<(String, String), Meshed> = BTreeMap::new();
    match selection.kind.as_str() {
        "namespace" => {
            for ns in state.namespaces.iter().filter(|ns| named(ns)) {
                let m = meshed(state.instances.iter().filter(|(at, _)| at.namespace == *ns));
                out.insert((ns.clone(), ns.clone()), m);
            }
        }
        "pod" => {
            for (at, instance) in state.instances.iter() {
                if in_ns(&at.namespace) && named(&at.name) {
                    let m = meshed(std::iter::once((at, instance)));
                    out.insert((at.namespace.clone(), at.name.clone()), m);
                }
            }
        }
        "service" => {
            for (at, service) in state.services.iter() {
                if !(in_ns(&at.namespace) && named(&at.name)) {
                    continue;
                }
                let pods: std::collections::BTreeSet<&String> = service
                    .ports
                    .values()
                    .flat_map(|p| p.endpoints.values())
                    .filter_map(|e| e.instance.as_ref())
                    .collect();
                let m = meshed(
                    state
                        .instances
                        .iter()
                        .filter(|(i, _)| i.namespace == at.namespace && pods.contains(&i.name)),
                );
                out.insert((at.namespace.clone(), at.name.clone()), m);
            }
        }
        kind => {
            for (at, workload) in state.workloads.iter() {
                if workload.kind != kind || !in_ns(&at.namespace) || !named(&at.name) {
                    continue;
                }
                let m = meshed(state.instances.iter().filter(|(i, instance)| {
                    i.namespace == at.namespace
                        && instance
                            .owner
                            .as_ref()
                            .is_some_and(|o| o.kind == kind && o.name == at.name)
                }));
                out.insert((at.namespace.clone(), at.name.clone()), m);
            }
        }
    }
    if out.is_empty() {
        if let Some(name) = &selection.name {
            return Err(StatError::NotFound {
                resource: format!("{}/{name}", selection.kind),
                namespace: match selection.kind.as_str() {
                    "namespace" => None,
                    _ => selection.namespace.clone(),
                },
            });
        }
    }
    Ok(out)
}

fn meshed<'a>(instances: impl Iterator<Item = (&'a ObjectRef, &'a Instance)>) -> Meshed {
    let mut m = Meshed::default();
    for (_, instance) in instances {
        m.total += 1;
        m.ready += u32::from(instance.meshed);
    }
    m
}

/// The resources of `kind` an endpoint address belongs to, as `(namespace, name)`:
/// how outbound TCP metrics, labelled only with `target_addr`, are attributed.
pub fn owners_of_addr(state: &ClusterState, addr: SocketAddr, kind: &str) -> Vec<(String, String)> {
    if kind == "service" {
        return state
            .services
            .iter()
            .filter(|(_, s)| s.ports.values().any(|p| p.endpoints.contains_key(&addr)))
            .map(|(at, _)| (at.namespace.clone(), at.name.clone()))
            .collect();
    }
    let Some((at, instance)) = state.instance_at(addr) else {
        return Vec::new();
    };
    match kind {
        "namespace" => vec![(at.namespace.clone(), at.namespace.clone())],
        "pod" => vec![(at.namespace.clone(), at.name.clone())],
        kind => instance
            .owner
            .iter()
            .filter(|o| o.kind == kind)
            .map(|o| (at.namespace.clone(), o.name.clone()))
            .collect(),
    }
}

/// The identity of a resource's instances (the first one's service account), for edges.
pub fn identity_of(
    state: &ClusterState,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let (_, instance) = state.instances.iter().find(|(at, instance)| {
        at.namespace == namespace
            && match kind {
                "namespace" => true,
                "pod" => at.name == name,
                kind => instance
                    .owner
                    .as_ref()
                    .is_some_and(|o| o.kind == kind && o.name == name),
            }
    })?;
    instance.meshed.then(|| {
        ferry_api::identity::dns_name(&instance.service_account, namespace, &state.trust_domain)
    })
}
