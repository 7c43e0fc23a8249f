//! The inbound policy of one pod port, resolved against discovery: which `Server` selects
//! it (or which default policy applies), who may call it server-wide and per route, and
//! its rate limit. Pure: state in, [`InboundPolicy`] out; [`super::inbound`] renders it.
//!
//! When several Servers select the same pod port, the one with the most selector
//! requirements wins, then the oldest, then the first by name, then Ferry's group before
//! Linkerd's. A reference to a policy object (`targetRef`, `parentRefs`,
//! `requiredAuthenticationRefs`) resolves to the object of the group it names or, when that
//! group has none of that kind, namespace and name, to the other policy group's: the groups
//! are read alike, and an object of each with the same name are two objects. An `AuthorizationPolicy`
//! whose authentications cannot all be found admits no one (it is left out), as Linkerd's
//! controller does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::cidr::Cidr;
use super::jwks::Keys;
pub use super::resolved::*;
use super::resources::*;
use super::{DefaultPolicy, InboundConfig};
use crate::model::{ClusterState, Instance, ObjectRef};
use crate::routes::gateway::{GrpcRouteMatch, HttpRouteMatch, ParentRef, GATEWAY_GROUP};
use crate::routes::RouteSet;
use ferry_api::k8s::{
    ANNOTATION_DEFAULT_INBOUND_POLICY, ANNOTATION_LINKERD_DEFAULT_INBOUND_POLICY,
};

/// The default-inbound-policy annotation of an object: Ferry's, else Linkerd's.
pub fn annotated_policy(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    let a = annotations?;
    a.get(ANNOTATION_DEFAULT_INBOUND_POLICY)
        .or_else(|| a.get(ANNOTATION_LINKERD_DEFAULT_INBOUND_POLICY))
        .cloned()
}

/// The port a proxy asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortTarget {
    /// The pod.
    pub pod: ObjectRef,
    /// The port its application listens on.
    pub port: u16,
}

/// Whether `selector` picks an object labelled `labels`.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn requirements(s: &LabelSelector) -> usize {
    s.match_labels.as_ref().map_or(0, BTreeMap::len)
        + s.match_expressions.as_ref().map_or(0, Vec::len)
}

/// The labels of `pod`: its workload's.
pub fn pod_labels<'a>(
    state: &'a ClusterState,
    pod: &ObjectRef,
    instance: &Instance,
) -> Option<&'a BTreeMap<String, String>> {
    let owner = instance.owner.as_ref()?;
    state
        .workloads
        .get(&ObjectRef::new(&pod.namespace, &owner.name))
        .map(|w| &w.labels)
}

/// The Servers that select `target`, the winner first.
pub fn servers_for<'a>(
    state: &ClusterState,
    set: &'a RouteSet,
    target: &PortTarget,
) -> Vec<&'a Server> {
    let Some(instance) = state.instances.get(&target.pod) else {
        return Vec::new();
    };
    let empty = BTreeMap::new();
    let labels = pod_labels(state, &target.pod, instance).unwrap_or(&empty);
    let mut out: Vec<&Server> = set
        .authz
        .servers
        .iter()
        .filter(|s| s.namespace() == target.pod.namespace)
        .filter(|s| selects(&s.spec.pod_selector, labels))
        .filter(|s| match &s.spec.port {
            IntOrString::Int(p) => i64::from(*p) == i64::from(target.port),
            IntOrString::String(name) => instance.inbound.ports.get(name) == Some(&target.port),
        })
        .collect();
    out.sort_by(|a, b| {
        requirements(&b.spec.pod_selector)
            .cmp(&requirements(&a.spec.pod_selector))
            .then_with(|| {
                let t = |s: &Server| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
                // Objects with a time (on Kubernetes) before those without.
                match (t(a), t(b)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
            })
            .then_with(|| a.name().cmp(b.name()))
            .then_with(|| (a.group() != FERRY_GROUP).cmp(&(b.group() != FERRY_GROUP)))
    });
    out
}

/// The default policy of `target`'s pod: its annotation, its namespace's, the cluster's.
/// An annotation that names no policy is passed over (and logged).
pub fn default_policy(
    state: &ClusterState,
    set: &RouteSet,
    cfg: &InboundConfig,
    target: &PortTarget,
) -> DefaultPolicy {
    let pod = state
        .instances
        .get(&target.pod)
        .and_then(|i| i.inbound.default_policy.as_deref());
    let ns = &target.pod.namespace;
    let namespace = set
        .authz
        .namespace_defaults
        .get(ns)
        .or_else(|| state.namespace_defaults.get(ns))
        .map(String::as_str);
    for (scope, value) in [("pod", pod), ("namespace", namespace)] {
        if let Some(value) = value {
            match value.parse() {
                Ok(p) => return p,
                Err(error) => {
                    tracing::debug!(%error, scope, pod = %target.pod, "ignoring annotation")
                }
            }
        }
    }
    cfg.default_policy
}

/// The authorization a default policy adds: `None` for `deny`.
pub fn default_authorization(policy: DefaultPolicy, cfg: &InboundConfig) -> Option<Authorization> {
    let all = || {
        vec![
            ClientNetwork {
                net: Cidr::ALL_V4,
                except: Vec::new(),
            },
            ClientNetwork {
                net: Cidr::ALL_V6,
                except: Vec::new(),
            },
        ]
    };
    let cluster = || {
        cfg.cluster_networks
            .iter()
            .map(|n| ClientNetwork {
                net: *n,
                except: Vec::new(),
            })
            .collect()
    };
    let any_identity = || Authentication::MeshTls {
        identities: Vec::new(),
        suffixes: vec![String::new()],
    };
    let (networks, authentication) = match policy {
        DefaultPolicy::Deny => return None,
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
            (all(), Authentication::Unauthenticated)
        }
        DefaultPolicy::AllAuthenticated => (all(), any_identity()),
        DefaultPolicy::ClusterUnauthenticated => (cluster(), Authentication::Unauthenticated),
        DefaultPolicy::ClusterAuthenticated => (cluster(), any_identity()),
    };
    Some(Authorization {
        meta: Meta::default(policy.as_str()),
        networks,
        authentication,
        jwt: Vec::new(),
    })
}

/// The object a reference to `group`'s `name` in `ns` resolves to: that group's, else the
/// other policy group's.
fn find<'a, S>(
    list: &'a [Document<S>],
    group: &str,
    ns: &str,
    name: &str,
) -> Option<&'a Document<S>> {
    let named = |d: &&Document<S>| d.namespace() == ns && d.name() == name;
    list.iter()
        .filter(named)
        .find(|d| d.group() == group)
        .or_else(|| list.iter().find(named))
}

/// Whether a reference to `group`'s `name` (in `doc`'s namespace) resolves to `doc`, one of
/// `list`.
fn refers_to<S>(list: &[Document<S>], group: &str, name: &str, doc: &Document<S>) -> bool {
    is_policy_group(group)
        && name == doc.name()
        && (group == doc.group()
            || !list.iter().any(|d| {
                d.group() == group && d.namespace() == doc.namespace() && d.name() == name
            }))
}

/// Identities of a `MeshTLSAuthentication`: `(exact, suffixes)`.
fn mesh_identities(a: &MeshTlsAuthentication, trust_domain: &str) -> (Vec<String>, Vec<String>) {
    let (mut exact, mut suffixes) = (Vec::new(), Vec::new());
    for id in a.spec.identities.iter().flatten() {
        if id == "*" {
            suffixes.push(String::new());
        } else if let Some(suffix) = id.strip_prefix("*.") {
            suffixes.push(suffix.to_string());
        } else {
            exact.push(id.clone());
        }
    }
    for r in a.spec.identity_refs.iter().flatten() {
        let ns = r.namespace.as_deref().unwrap_or(a.namespace());
        match (r.kind.as_str(), r.name.as_str()) {
            ("Namespace", "*") => suffixes.push(String::new()),
            ("Namespace", name) => suffixes.push(namespace_suffix(name, trust_domain)),
            (_, name) => exact.push(ferry_api::identity::dns_name(name, ns, trust_domain)),
        }
    }
    (exact, suffixes)
}

/// The suffix every identity of namespace `ns` ends with.
fn namespace_suffix(ns: &str, trust_domain: &str) -> String {
    let any = ferry_api::identity::dns_name("x", ns, trust_domain);
    any.strip_prefix("x.").unwrap_or(&any).to_string()
}

/// A `JWTAuthentication` with its keys.
fn jwt_requirement(a: &JwtAuthentication, keys: &Keys) -> JwtRequirement {
    let s = &a.spec;
    let jwks = match (&s.jwks, &s.jwks_uri) {
        (Some(inline), _) => inline.to_string(),
        (None, Some(uri)) => keys.get(uri).cloned().unwrap_or_default(),
        (None, None) => String::new(),
    };
    JwtRequirement {
        name: format!("{}/{}", a.namespace(), a.name()),
        issuer: s.issuer.clone(),
        audiences: s.audiences.clone(),
        jwks,
        required_claims: s
            .required_claims
            .iter()
            .map(|c| (c.name.clone(), c.values.clone()))
            .collect(),
        header: s.header.clone().unwrap_or_default(),
    }
}

/// An `AuthorizationPolicy` as an authorization, or why it is not in force.
pub fn authorization(
    p: &AuthorizationPolicy,
    state: &ClusterState,
    set: &RouteSet,
    keys: &Keys,
) -> Result<Authorization, String> {
    let mut networks = Vec::new();
    let (mut exact, mut suffixes) = (Vec::new(), Vec::new());
    let mut identity_refs = 0;
    let mut jwt = Vec::new();
    for r in &p.spec.required_authentication_refs {
        let ns = r.namespace.as_deref().unwrap_or(p.namespace());
        let group = r.group.as_deref().unwrap_or_default();
        let missing = || format!("{} {ns}/{} not found", r.kind, r.name);
        match r.kind.as_str() {
            NETWORK_AUTHENTICATION => {
                let a = find(&set.authz.networks, group, ns, &r.name).ok_or_else(missing)?;
                for n in &a.spec.networks {
                    networks.push(ClientNetwork {
                        net: n.cidr.parse().map_err(|e| format!("{e}"))?,
                        except: n.except.iter().filter_map(|e| e.parse().ok()).collect(),
                    });
                }
            }
            MESH_TLS_AUTHENTICATION => {
                let a = find(&set.authz.mesh_tls, group, ns, &r.name).ok_or_else(missing)?;
                let (e, s) = mesh_identities(a, &state.trust_domain);
                exact.extend(e);
                suffixes.extend(s);
                identity_refs += 1;
            }
            JWT_AUTHENTICATION => {
                let a = find(&set.authz.jwt, group, ns, &r.name).ok_or_else(missing)?;
                jwt.push(jwt_requirement(a, keys));
            }
            _ => {
                exact.push(ferry_api::identity::dns_name(
                    &r.name,
                    ns,
                    &state.trust_domain,
                ));
                identity_refs += 1;
            }
        }
    }
    if networks.is_empty() {
        networks = vec![
            ClientNetwork {
                net: Cidr::ALL_V4,
                except: Vec::new(),
            },
            ClientNetwork {
                net: Cidr::ALL_V6,
                except: Vec::new(),
            },
        ];
    }
    let authentication = if identity_refs == 0 {
        Authentication::Unauthenticated
    } else {
        Authentication::MeshTls {
            identities: exact,
            suffixes,
        }
    };
    Ok(Authorization {
        meta: Meta::of(p),
        networks,
        authentication,
        jwt,
    })
}

/// Whether `parent` names `server` (one of `servers`), from a route in `route_ns`.
pub fn parents_server(
    parent: &ParentRef,
    route_ns: &str,
    server: &Server,
    servers: &[Server],
) -> bool {
    parent.kind == SERVER
        && parent.namespace.as_deref().unwrap_or(route_ns) == server.namespace()
        && refers_to(servers, &parent.group, &parent.name, server)
}

/// Whether `t` names `server` (one of `servers`).
fn targets_server(t: &TargetRef, server: &Server, servers: &[Server]) -> bool {
    t.kind == SERVER && refers_to(servers, &t.group, &t.name, server)
}

fn targets(p: &AuthorizationPolicy, kind: &str, groups: &[&str], name: &str) -> bool {
    let t = &p.spec.target_ref;
    t.kind == kind && groups.contains(&t.group.as_str()) && t.name == name
}

/// The authorizations of policies `pick` selects, in force ones only, by name.
fn authorizations_of(
    state: &ClusterState,
    set: &RouteSet,
    keys: &Keys,
    ns: &str,
    pick: impl Fn(&AuthorizationPolicy) -> bool,
) -> Vec<Authorization> {
    let mut list: Vec<&AuthorizationPolicy> = set
        .authz
        .authorization_policies
        .iter()
        .filter(|p| p.namespace() == ns && pick(p))
        .collect();
    list.sort_by(|a, b| a.name().cmp(b.name()));
    list.into_iter()
        .filter_map(|p| match authorization(p, state, set, keys) {
            Ok(a) => Some(a),
            Err(reason) => {
                tracing::debug!(policy = %format!("{}/{}", p.namespace(), p.name()), %reason, "authorization not in force");
                None
            }
        })
        .collect()
}

/// The policy of `target`, or `None` when the pod is unknown.
pub fn compile(
    state: &ClusterState,
    set: &RouteSet,
    cfg: &InboundConfig,
    keys: &Keys,
    target: &PortTarget,
) -> Option<InboundPolicy> {
    state.instances.get(&target.pod)?;
    let Some(server) = servers_for(state, set, target).into_iter().next() else {
        let policy = default_policy(state, set, cfg, target);
        let authorizations: Vec<Authorization> =
            default_authorization(policy, cfg).into_iter().collect();
        return Some(InboundPolicy {
            server: Meta::default(policy.as_str()),
            protocol: Protocol::Detect,
            routes: vec![default_route(false, authorizations.clone())],
            authorizations,
            rate_limit: None,
        });
    };
    let servers = &set.authz.servers[..];
    let ns = server.namespace();
    let protocol = Protocol::parse(server.spec.proxy_protocol.as_deref());
    let access = server
        .spec
        .access_policy
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(DefaultPolicy::Deny);
    let tail: Vec<Authorization> = default_authorization(access, cfg).into_iter().collect();
    let mut authorizations = authorizations_of(state, set, keys, ns, |p| {
        targets_server(&p.spec.target_ref, server, servers)
            || targets(p, "Namespace", &["", "core"], ns)
    });
    let mut routes = Vec::new();
    let route_authz = |kind: &str, groups: &[&str], name: &str| {
        let mut a = authorizations_of(state, set, keys, ns, |p| targets(p, kind, groups, name));
        a.extend(authorizations.iter().cloned());
        a.extend(tail.iter().cloned());
        a
    };
    if protocol == Protocol::Grpc {
        for r in set.grpc.iter().filter(|r| {
            let rns = r.metadata.namespace.as_deref().unwrap_or_default();
            r.spec
                .parent_refs
                .iter()
                .any(|p| parents_server(p, rns, server, servers))
        }) {
            let name = r.metadata.name.clone().unwrap_or_default();
            routes.push(InboundRoute {
                meta: route_meta(&r.api_version, "GRPCRoute", &r.metadata),
                rules: r
                    .spec
                    .rules
                    .iter()
                    .map(|rule| InboundRule {
                        http_matches: Vec::new(),
                        grpc_matches: if rule.matches.is_empty() {
                            vec![GrpcRouteMatch::default()]
                        } else {
                            rule.matches.clone()
                        },
                        filters: rule.filters.clone(),
                    })
                    .collect(),
                authorizations: route_authz("GRPCRoute", &[GATEWAY_GROUP], &name),
            });
        }
    } else if protocol.has_routes() {
        for r in set.http.iter().filter(|r| {
            let rns = r.metadata.namespace.as_deref().unwrap_or_default();
            r.spec
                .parent_refs
                .iter()
                .any(|p| parents_server(p, rns, server, servers))
        }) {
            let name = r.metadata.name.clone().unwrap_or_default();
            routes.push(InboundRoute {
                meta: route_meta(&r.api_version, "HTTPRoute", &r.metadata),
                rules: r
                    .spec
                    .rules
                    .iter()
                    .map(|rule| InboundRule {
                        http_matches: rule.matches.clone(),
                        grpc_matches: Vec::new(),
                        filters: rule.filters.clone(),
                    })
                    .collect(),
                authorizations: route_authz(
                    "HTTPRoute",
                    &[FERRY_GROUP, LINKERD_GROUP, GATEWAY_GROUP],
                    &name,
                ),
            });
        }
    }
    authorizations.extend(tail);
    if protocol.has_routes() && routes.is_empty() {
        routes.push(default_route(
            protocol == Protocol::Grpc,
            authorizations.clone(),
        ));
    }
    let rate_limit = set
        .authz
        .rate_limits
        .iter()
        .filter(|l| l.namespace() == ns)
        .filter(|l| targets_server(&l.spec.target_ref, server, servers))
        .min_by(|a, b| a.name().cmp(b.name()))
        .map(|l| rate_limit(l, &state.trust_domain));
    Some(InboundPolicy {
        server: Meta::of(server),
        protocol,
        authorizations,
        routes,
        rate_limit: rate_limit.filter(|_| protocol.has_routes() && protocol != Protocol::Grpc),
    })
}

fn route_meta(
    api_version: &str,
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Meta {
    Meta {
        group: api_version
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        kind: kind.to_string(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// The route of a server without routes: every request, the server's authorizations.
fn default_route(grpc: bool, authorizations: Vec<Authorization>) -> InboundRoute {
    InboundRoute {
        meta: Meta::default("default"),
        rules: vec![InboundRule {
            http_matches: if grpc {
                Vec::new()
            } else {
                vec![HttpRouteMatch::default()]
            },
            grpc_matches: if grpc {
                vec![GrpcRouteMatch::default()]
            } else {
                Vec::new()
            },
            filters: Vec::new(),
        }],
        authorizations,
    }
}

fn rate_limit(l: &HttpLocalRateLimitPolicy, trust_domain: &str) -> RateLimit {
    let rps = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    RateLimit {
        meta: Meta::of(l),
        total: l.spec.total.as_ref().map(|t| rps(t.requests_per_second)),
        identity: l.spec.identity.as_ref().map(|t| rps(t.requests_per_second)),
        overrides: l
            .spec
            .overrides
            .iter()
            .map(|o| {
                let ids = o
                    .client_refs
                    .iter()
                    .map(|r| {
                        let ns = r.namespace.as_deref().unwrap_or(l.namespace());
                        ferry_api::identity::dns_name(&r.name, ns, trust_domain)
                    })
                    .collect();
                (rps(o.requests_per_second), ids)
            })
            .collect(),
    }
}
