//! The local workloads file: its YAML format and its translation into a [`ClusterState`].
//!
//! Parsing is pure (text in, state or error out) so it is tested without files; watching
//! the file lives in [`crate::discovery::file`]. `docs/workloads-file.md` documents the
//! format for users.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use ferry_api::destination::DEFAULT_CLUSTER_DOMAIN;
use ferry_api::identity::DEFAULT_TRUST_DOMAIN;
use serde::Deserialize;

use crate::model::{ClusterState, EndpointRef, Instance, ObjectRef, Owner, ServicePort};

/// The namespace of workloads and services that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The kind of workloads that name none.
pub const DEFAULT_KIND: &str = "deployment";
/// The service account of workloads that name none (as in Kubernetes).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Why a workloads file was rejected. The previous good state stays in force.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsFileError {
    /// The text is not YAML of the expected shape (the message has line and column).
    #[error("invalid workloads file")]
    Syntax(#[source] serde_yaml_ng::Error),
    /// A name that ends up in DNS or identity names has characters those cannot hold.
    #[error("invalid {what} name {name:?}: use lowercase letters, digits, '-' (and '.' for workloads and instances)")]
    InvalidName {
        /// What was named (`namespace`, `service`, ...).
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// Two workloads share a namespace and a name.
    #[error("workload {0} is declared twice")]
    DuplicateWorkload(ObjectRef),
    /// Two instances share a namespace and a name.
    #[error("instance {0} is declared twice")]
    DuplicateInstance(ObjectRef),
    /// Two instances claim the same address.
    #[error("instances {first} and {second} both listen on {addr}")]
    DuplicateAddr {
        /// The shared address.
        addr: SocketAddr,
        /// The instance declared first (`namespace/name`).
        first: String,
        /// The instance declared second (`namespace/name`).
        second: String,
    },
    /// A service declares the same port twice.
    #[error("service {service} declares port {port} twice")]
    DuplicatePort {
        /// The service.
        service: ObjectRef,
        /// The repeated port.
        port: u16,
    },
    /// A port is 0.
    #[error("service {0} has port 0")]
    ZeroPort(ObjectRef),
    /// A service names a backing workload that is not declared in its namespace.
    #[error("service {service} is backed by workload {workload:?}, which is not declared in namespace {namespace}", namespace = service.namespace)]
    UnknownWorkload {
        /// The service.
        service: ObjectRef,
        /// The missing workload's name.
        workload: String,
    },
}

/// The file's top level, as written by users.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileSpec {
    cluster_domain: Option<String>,
    trust_domain: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    workloads: Vec<WorkloadSpec>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WorkloadSpec {
    name: String,
    namespace: Option<String>,
    kind: Option<String>,
    service_account: Option<String>,
    #[serde(default = "yes")]
    meshed: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Read: `config.ferry.io/default-inbound-policy` (or Linkerd's).
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Named ports of its instances, which a `Server` may name.
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    #[serde(default)]
    instances: Vec<InstanceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstanceSpec {
    name: String,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tap_addr: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    namespace: Option<String>,
    port: u16,
    target_port: Option<u16>,
    #[serde(default)]
    workloads: Vec<String>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// Parses the text of a workloads file into the state it declares.
pub fn parse(text: &str) -> Result<ClusterState, WorkloadsFileError> {
    // An empty file is an empty cluster, not a syntax error.
    let spec: FileSpec = if text.trim().is_empty() {
        FileSpec::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(WorkloadsFileError::Syntax)?
    };
    build(spec)
}

fn build(spec: FileSpec) -> Result<ClusterState, WorkloadsFileError> {
    let mut state = ClusterState {
        cluster_domain: domain(spec.cluster_domain, DEFAULT_CLUSTER_DOMAIN),
        trust_domain: domain(spec.trust_domain, DEFAULT_TRUST_DOMAIN),
        ..ClusterState::default()
    };
    for ns in spec.namespaces {
        state.namespaces.insert(dns_label("namespace", ns)?);
    }
    // Instances per workload, kept to resolve services below.
    let mut members: HashMap<ObjectRef, Vec<(String, SocketAddr)>> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, ObjectRef> = HashMap::new();
    for w in spec.workloads {
        let namespace = namespace(w.namespace)?;
        let workload = ObjectRef::new(&namespace, dns_subdomain("workload", w.name)?);
        let kind = w.kind.unwrap_or_else(|| DEFAULT_KIND.to_string());
        let kind = dns_label("kind", kind.to_ascii_lowercase())?;
        let service_account = w
            .service_account
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
        let service_account = dns_subdomain("serviceAccount", service_account)?;
        let model = crate::model::Workload {
            kind: kind.clone(),
            labels: w.labels,
        };
        if state.workloads.insert(workload.clone(), model).is_some() {
            return Err(WorkloadsFileError::DuplicateWorkload(workload));
        }
        state.namespaces.insert(namespace.clone());
        let list = members.entry(workload.clone()).or_default();
        for i in w.instances {
            let instance = ObjectRef::new(&namespace, dns_subdomain("instance", i.name)?);
            if let Some(first) = addrs.insert(i.addr, instance.clone()) {
                return Err(WorkloadsFileError::DuplicateAddr {
                    addr: i.addr,
                    first: first.to_string(),
                    second: instance.to_string(),
                });
            }
            let model = Instance {
                owner: Some(Owner {
                    kind: kind.clone(),
                    name: workload.name.clone(),
                }),
                service_account: service_account.clone(),
                meshed: w.meshed,
                addr: Some(i.addr),
                admin_addr: i.admin_addr,
                tap_addr: i.tap_addr,
                inbound: crate::model::InboundMeta {
                    default_policy: crate::authz::resolve::annotated_policy(Some(&w.annotations)),
                    ports: w.ports.clone(),
                },
            };
            if state.instances.insert(instance.clone(), model).is_some() {
                return Err(WorkloadsFileError::DuplicateInstance(instance));
            }
            list.push((instance.name, i.addr));
        }
    }
    for s in spec.services {
        let service = ObjectRef::new(namespace(s.namespace)?, dns_label("service", s.name)?);
        if s.port == 0 || s.target_port == Some(0) {
            return Err(WorkloadsFileError::ZeroPort(service));
        }
        let mut backing: BTreeSet<&ObjectRef> = BTreeSet::new();
        for name in &s.workloads {
            let key = ObjectRef::new(&service.namespace, name);
            let Some((key, _)) = state.workloads.get_key_value(&key) else {
                return Err(WorkloadsFileError::UnknownWorkload {
                    service,
                    workload: name.clone(),
                });
            };
            backing.insert(key);
        }
        if !s.selector.is_empty() {
            backing.extend(state.workloads.iter().filter_map(|(key, w)| {
                let selected = key.namespace == service.namespace
                    && s.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v));
                selected.then_some(key)
            }));
        }
        let endpoints = backing
            .into_iter()
            .flat_map(|w| members.get(w).into_iter().flatten())
            .map(|(name, addr)| {
                let endpoint = EndpointRef {
                    instance: Some(name.clone()),
                };
                (*addr, endpoint)
            })
            .collect();
        let port = ServicePort {
            target_port: s.target_port.unwrap_or(s.port),
            endpoints,
        };
        state.namespaces.insert(service.namespace.clone());
        let entry = state.services.entry(service.clone()).or_default();
        if entry.ports.insert(s.port, port).is_some() {
            return Err(WorkloadsFileError::DuplicatePort {
                service,
                port: s.port,
            });
        }
    }
    Ok(state)
}

fn domain(value: Option<String>, default: &str) -> String {
    match value {
        Some(d) if !d.trim().is_empty() => d.trim().trim_end_matches('.').to_ascii_lowercase(),
        _ => default.to_string(),
    }
}

fn namespace(value: Option<String>) -> Result<String, WorkloadsFileError> {
    dns_label(
        "namespace",
        value.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
    )
}

/// Accepts an RFC 1123 label: what may sit between two dots of a service name.
fn dns_label(what: &'static str, name: String) -> Result<String, WorkloadsFileError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(name)
    } else {
        Err(WorkloadsFileError::InvalidName { what, name })
    }
}

/// Accepts an RFC 1123 subdomain: dot-separated labels, as Kubernetes object names.
fn dns_subdomain(what: &'static str, name: String) -> Result<String, WorkloadsFileError> {
    let ok = name.len() <= 253
        && name
            .split('.')
            .all(|label| dns_label(what, label.to_string()).is_ok());
    if ok {
        Ok(name)
    } else {
        Err(WorkloadsFileError::InvalidName { what, name })
    }
}

#[cfg(test)]
mod tests;
