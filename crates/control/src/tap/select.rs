//! Which proxies a tap asks, and what it asks them: a [`TapQuery`] resolved against the
//! discovery model into the tapped instances and one `ObserveRequest.Match`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use ferry_api::resource::Resource;
use ferry_api::tap::TapQuery;
use linkerd2_proxy_api::http_types::{http_method, HttpMethod};
use linkerd2_proxy_api::tap::observe_request::r#match::{self as m, http as mh, tcp};
use linkerd2_proxy_api::tap::observe_request::Match;

use crate::model::{ClusterState, Instance, ObjectRef};

/// The namespace a query means when it names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a tap cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A query parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The resource exists but none of its instances can be tapped.
    #[error("{0}")]
    NotTappable(String),
}

/// One proxy to tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The instance (pod).
    pub instance: ObjectRef,
    /// Its proxy's tap server.
    pub tap_addr: SocketAddr,
    /// Its resource labels: `namespace`, `pod`, `serviceaccount`, the owner's kind.
    pub labels: Vec<(String, String)>,
    /// The identity its proxy must prove over mTLS (from its service account).
    pub identity: String,
}

/// Resolves `resource` in `namespace` to its instances, in name order.
pub fn instances<'a>(
    state: &'a ClusterState,
    resource: &Resource,
    namespace: &str,
) -> Result<Vec<(&'a ObjectRef, &'a Instance)>, SelectError> {
    let in_ns = |ns: &str| -> Vec<(&'a ObjectRef, &'a Instance)> {
        state
            .instances
            .iter()
            .filter(|(key, _)| key.namespace == ns)
            .collect()
    };
    let not_found =
        || SelectError::NotFound(format!("{} not found in namespace {namespace}", resource));
    let found: Vec<_> = match (resource.kind.as_str(), &resource.name) {
        ("namespace", Some(ns)) => {
            if !state.namespaces.contains(ns) {
                return Err(SelectError::NotFound(format!("namespace {ns} not found")));
            }
            in_ns(ns)
        }
        ("namespace", None) => state.instances.iter().collect(),
        ("pod", Some(name)) => {
            let key = ObjectRef::new(namespace, name.as_str());
            let (k, i) = state.instances.get_key_value(&key).ok_or_else(not_found)?;
            vec![(k, i)]
        }
        ("pod", None) => in_ns(namespace),
        ("service", name) => {
            let mut pods = BTreeSet::new();
            let services: Vec<_> = state
                .services
                .iter()
                .filter(|(key, _)| {
                    key.namespace == namespace && name.as_ref().is_none_or(|n| &key.name == n)
                })
                .collect();
            if name.is_some() && services.is_empty() {
                return Err(not_found());
            }
            for (_, svc) in services {
                for port in svc.ports.values() {
                    pods.extend(port.endpoints.values().filter_map(|e| e.instance.clone()));
                }
            }
            in_ns(namespace)
                .into_iter()
                .filter(|(key, _)| pods.contains(&key.name))
                .collect()
        }
        (kind, name) => {
            if let Some(name) = name {
                let key = ObjectRef::new(namespace, name.as_str());
                if state.workloads.get(&key).is_none_or(|w| w.kind != kind) {
                    return Err(not_found());
                }
            }
            in_ns(namespace)
                .into_iter()
                .filter(|(_, i)| {
                    i.owner.as_ref().is_some_and(|o| {
                        o.kind == kind && name.as_ref().is_none_or(|n| &o.name == n)
                    })
                })
                .collect()
        }
    };
    Ok(found)
}

/// The proxies to tap for `query`: every instance of its resource with a tap address.
pub fn targets(state: &ClusterState, query: &TapQuery) -> Result<Vec<Target>, SelectError> {
    let resource = parse(&query.resource, "resource")?;
    let namespace = query.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let found = instances(state, &resource, namespace)?;
    let targets: Vec<Target> = found
        .iter()
        .filter_map(|(key, instance)| {
            Some(Target {
                instance: (*key).clone(),
                tap_addr: instance.tap_addr.filter(|_| instance.meshed)?,
                labels: labels_of(key, instance),
                identity: ferry_api::identity::dns_name(
                    &instance.service_account,
                    &key.namespace,
                    &state.trust_domain,
                ),
            })
        })
        .collect();
    if targets.is_empty() {
        let why = if found.is_empty() {
            "it has no instances".to_string()
        } else {
            format!(
                "none of its {} instance(s) is meshed with a tap address (tapAddr in the workloads file)",
                found.len()
            )
        };
        return Err(SelectError::NotTappable(format!(
            "cannot tap {resource} in namespace {namespace}: {why}"
        )));
    }
    Ok(targets)
}

/// The labels of an instance, as a destination would carry them.
pub fn labels_of(key: &ObjectRef, instance: &Instance) -> Vec<(String, String)> {
    let mut labels = vec![
        ("namespace".to_string(), key.namespace.clone()),
        ("pod".to_string(), key.name.clone()),
        (
            "serviceaccount".to_string(),
            instance.service_account.clone(),
        ),
    ];
    if let Some(owner) = &instance.owner {
        labels.push((
            ferry_api::destination::workload_label(&owner.kind).to_string(),
            owner.name.clone(),
        ));
    }
    labels
}

/// The match every tapped proxy gets for `query`.
pub fn observe_match(state: &ClusterState, query: &TapQuery) -> Result<Option<Match>, SelectError> {
    let mut all = Vec::new();
    if let Some(to) = &query.to {
        let resource = parse(to, "to")?;
        let namespace = query
            .to_namespace
            .as_deref()
            .or(query.namespace.as_deref())
            .unwrap_or(DEFAULT_NAMESPACE);
        let addrs = addresses(state, &resource, namespace)?;
        if addrs.is_empty() {
            return Err(SelectError::NotTappable(format!(
                "{resource} in namespace {namespace} has no endpoints to match requests to"
            )));
        }
        all.push(any(addrs.into_iter().map(to_addr).collect()));
    }
    if let Some(path) = query.path.as_deref().filter(|p| !p.is_empty()) {
        all.push(http(mh::Match::Path(prefix(path))));
    }
    if let Some(authority) = query.authority.as_deref().filter(|a| !a.is_empty()) {
        all.push(http(mh::Match::Authority(mh::StringMatch {
            r#match: Some(mh::string_match::Match::Exact(authority.to_string())),
        })));
    }
    if let Some(method) = query.method.as_deref().filter(|m| !m.is_empty()) {
        let upper = method.to_ascii_uppercase();
        let r#type = match http_method::Registered::from_str_name(&upper) {
            Some(r) => http_method::Type::Registered(r as i32),
            None => http_method::Type::Unregistered(upper),
        };
        all.push(http(mh::Match::Method(HttpMethod {
            r#type: Some(r#type),
        })));
    }
    Ok(match all.len() {
        0 => None,
        1 => all.pop(),
        _ => Some(Match {
            r#match: Some(m::Match::All(m::Seq { matches: all })),
        }),
    })
}

/// The addresses requests to `resource` are sent to: its service endpoints.
fn addresses(
    state: &ClusterState,
    resource: &Resource,
    namespace: &str,
) -> Result<BTreeSet<SocketAddr>, SelectError> {
    let pods: BTreeSet<ObjectRef> = instances(state, resource, namespace)?
        .into_iter()
        .map(|(k, _)| k.clone())
        .collect();
    let mut addrs = BTreeSet::new();
    for (svc, service) in state.services.iter() {
        let whole = resource.kind == "service"
            && svc.namespace == namespace
            && resource.name.as_ref().is_none_or(|n| &svc.name == n);
        for port in service.ports.values() {
            for (addr, endpoint) in &port.endpoints {
                let pod = endpoint
                    .instance
                    .as_ref()
                    .map(|name| ObjectRef::new(svc.namespace.as_str(), name.as_str()));
                if whole || pod.is_some_and(|p| pods.contains(&p)) {
                    addrs.insert(*addr);
                }
            }
        }
    }
    Ok(addrs)
}

fn parse(s: &str, what: &str) -> Result<Resource, SelectError> {
    if s.trim().is_empty() {
        return Err(SelectError::BadRequest(format!(
            "missing query parameter `{what}` (e.g. deploy/web)"
        )));
    }
    Resource::parse(s).map_err(|e| SelectError::BadRequest(e.to_string()))
}

fn http(inner: mh::Match) -> Match {
    Match {
        r#match: Some(m::Match::Http(m::Http {
            r#match: Some(inner),
        })),
    }
}

fn prefix(p: &str) -> mh::StringMatch {
    mh::StringMatch {
        r#match: Some(mh::string_match::Match::Prefix(p.to_string())),
    }
}

fn any(matches: Vec<Match>) -> Match {
    Match {
        r#match: Some(m::Match::Any(m::Seq { matches })),
    }
}

fn to_addr(addr: SocketAddr) -> Match {
    let dst = |inner: tcp::Match| Match {
        r#match: Some(m::Match::Destination(m::Tcp {
            r#match: Some(inner),
        })),
    };
    let ip: IpAddr = addr.ip();
    let mask = if ip.is_ipv4() { 32 } else { 128 };
    Match {
        r#match: Some(m::Match::All(m::Seq {
            matches: vec![
                dst(tcp::Match::Netmask(tcp::Netmask {
                    ip: Some(ip.into()),
                    mask,
                })),
                dst(tcp::Match::Ports(tcp::PortRange {
                    min: addr.port().into(),
                    max: addr.port().into(),
                })),
            ],
        })),
    }
}
