//! [`InboundPolicy`] as Linkerd's `io.linkerd.proxy.inbound.Server` and as Ferry's
//! (`ferry_api::policy::inbound::Server`, with JWT requirements), and the gRPC services
//! that stream it on the control plane's gRPC port: Linkerd's `InboundServerPolicies`
//! (`GetPort`, `WatchPort`) and Ferry's `WatchPort`. Streams are
//! [`crate::routes::watching`]'s, the mechanism `OutboundPolicies` uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::grpc_route as gr;
use linkerd2_proxy_api::inbound as pb;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::{
    InboundServerPolicies, InboundServerPoliciesServer,
};
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::outbound::http_route::filter::Kind as OutboundFilter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::jwks::{Jwks, Keys};
use super::resolve::{
    self, Authentication, Authorization, InboundPolicy, InboundRoute, Meta, PortTarget, Protocol,
};
use super::InboundConfig;
use crate::model::{ClusterState, ObjectRef};
use crate::routes::gateway::FilterType;
use crate::routes::outbound::{grpc_match, http_filter, http_match, request_headers};
use crate::routes::watching::{self, Sources, Stream};
use crate::routes::{RouteSet, Routes};
use ferry_api::policy::inbound as ext;

/// How long the proxy waits for a client to speak first before treating a connection as
/// opaque (Linkerd's default).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod and port a `PortSpec` names: `workload` is `<namespace>:<pod>` or Linkerd's
/// JSON (`{"ns": "…", "pod": "…"}`).
pub fn port_target(spec: &pb::PortSpec) -> Result<PortTarget, Status> {
    let w = spec.workload.trim();
    let (ns, pod) = if w.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(w)
            .map_err(|e| Status::invalid_argument(format!("workload {w:?}: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        (field("ns"), field("pod"))
    } else {
        let (ns, pod) = w.split_once(':').unwrap_or_default();
        (ns.to_string(), pod.to_string())
    };
    if ns.is_empty() || pod.is_empty() {
        return Err(Status::invalid_argument(format!(
            "workload {w:?}: expected <namespace>:<pod> or {{\"ns\":…,\"pod\":…}}"
        )));
    }
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("port {} is not a port", spec.port)))?;
    Ok(PortTarget {
        pod: ObjectRef::new(ns, pod),
        port,
    })
}

fn metadata(m: &Meta) -> meta::Metadata {
    let kind = if m.is_default() {
        meta::metadata::Kind::Default(m.name.clone())
    } else {
        meta::metadata::Kind::Resource(meta::Resource {
            group: m.group.clone(),
            kind: m.kind.clone(),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            section: String::new(),
            port: 0,
        })
    };
    meta::Metadata { kind: Some(kind) }
}

/// `group`, `kind`, `name` labels, which Linkerd's proxies put on metrics.
fn labels(m: &Meta) -> HashMap<String, String> {
    HashMap::from([
        ("group".to_string(), m.group.clone()),
        ("kind".to_string(), m.kind.clone()),
        ("name".to_string(), m.name.clone()),
    ])
}

fn authz(a: &Authorization) -> pb::Authz {
    use pb::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    use pb::authn::{Permit, PermitMeshTls, PermitUnauthenticated};
    let permit = match &a.authentication {
        Authentication::Unauthenticated => Permit::Unauthenticated(PermitUnauthenticated {}),
        Authentication::MeshTls {
            identities,
            suffixes,
        } => Permit::MeshTls(PermitMeshTls {
            clients: Some(Clients::Identities(PermitClientIdentities {
                identities: identities
                    .iter()
                    .map(|name| pb::Identity { name: name.clone() })
                    .collect(),
                suffixes: suffixes
                    .iter()
                    .map(|s| pb::IdentitySuffix {
                        parts: if s.is_empty() {
                            Vec::new()
                        } else {
                            s.split('.').map(str::to_string).collect()
                        },
                    })
                    .collect(),
            })),
        }),
    };
    pb::Authz {
        networks: a
            .networks
            .iter()
            .map(|n| pb::Network {
                net: Some(n.net.to_proto()),
                except: n.except.iter().map(|e| e.to_proto()).collect(),
            })
            .collect(),
        authentication: Some(pb::Authn {
            permit: Some(permit),
        }),
        labels: labels(&a.meta),
        metadata: Some(metadata(&a.meta)),
    }
}

fn http_filters(r: &resolve::InboundRule) -> Vec<pb::http_route::Filter> {
    use pb::http_route::filter::Kind;
    r.filters
        .iter()
        .filter_map(http_filter)
        .filter_map(|k| match k {
            OutboundFilter::RequestHeaderModifier(m) => Some(Kind::RequestHeaderModifier(m)),
            OutboundFilter::Redirect(r) => Some(Kind::Redirect(r)),
            _ => None,
        })
        .map(|kind| pb::http_route::Filter { kind: Some(kind) })
        .collect()
}

fn http_route(r: &InboundRoute) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: Some(metadata(&r.meta)),
        hosts: Vec::new(),
        authorizations: r.authorizations.iter().map(authz).collect(),
        rules: r
            .rules
            .iter()
            .map(|rule| pb::http_route::Rule {
                matches: rule.http_matches.iter().map(http_match).collect(),
                filters: http_filters(rule),
            })
            .collect(),
    }
}

fn grpc_route(r: &InboundRoute) -> pb::GrpcRoute {
    use pb::grpc_route::filter::Kind;
    pb::GrpcRoute {
        metadata: Some(metadata(&r.meta)),
        hosts: Vec::new(),
        authorizations: r.authorizations.iter().map(authz).collect(),
        rules: r
            .rules
            .iter()
            .map(|rule| pb::grpc_route::Rule {
                matches: rule
                    .grpc_matches
                    .iter()
                    .map(grpc_match)
                    .collect::<Vec<gr::GrpcRouteMatch>>(),
                filters: rule
                    .filters
                    .iter()
                    .filter(|f| f.kind == FilterType::RequestHeaderModifier)
                    .filter_map(|f| f.request_header_modifier.as_ref())
                    .map(|m| pb::grpc_route::Filter {
                        kind: Some(Kind::RequestHeaderModifier(request_headers(m))),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn rate_limit(p: &InboundPolicy) -> Option<pb::HttpLocalRateLimit> {
    use pb::http_local_rate_limit::{r#override::ClientIdentities, Limit, Override};
    let l = p.rate_limit.as_ref()?;
    let limit = |rps: u32| Limit {
        requests_per_second: rps,
    };
    Some(pb::HttpLocalRateLimit {
        metadata: Some(metadata(&l.meta)),
        total: l.total.map(limit),
        identity: l.identity.map(limit),
        overrides: l
            .overrides
            .iter()
            .map(|(rps, ids)| Override {
                limit: Some(limit(*rps)),
                clients: Some(ClientIdentities {
                    identities: ids
                        .iter()
                        .map(|name| pb::Identity { name: name.clone() })
                        .collect(),
                }),
            })
            .collect(),
    })
}

/// An [`InboundPolicy`] as Linkerd's message.
pub fn translate(p: &InboundPolicy) -> pb::Server {
    use pb::proxy_protocol::{Detect, Grpc, Http1, Http2, Kind, Opaque, Tls};
    let http_routes = || p.routes.iter().map(http_route).collect::<Vec<_>>();
    let kind = match p.protocol {
        Protocol::Detect => Kind::Detect(Detect {
            timeout: prost_types::Duration::try_from(DETECT_TIMEOUT).ok(),
            http_routes: http_routes(),
            http_local_rate_limit: rate_limit(p),
        }),
        Protocol::Http1 => Kind::Http1(Http1 {
            routes: http_routes(),
            local_rate_limit: rate_limit(p),
        }),
        Protocol::Http2 => Kind::Http2(Http2 {
            routes: http_routes(),
            local_rate_limit: rate_limit(p),
        }),
        Protocol::Grpc => Kind::Grpc(Grpc {
            routes: p.routes.iter().map(grpc_route).collect(),
        }),
        Protocol::Opaque => Kind::Opaque(Opaque {}),
        Protocol::Tls => Kind::Tls(Tls {}),
    };
    pb::Server {
        protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations: p.authorizations.iter().map(authz).collect(),
        labels: labels(&p.server),
    }
}

fn extensions(route: u32, list: &[Authorization], out: &mut Vec<ext::AuthzExtension>) {
    for (i, a) in list.iter().enumerate() {
        if a.jwt.is_empty() {
            continue;
        }
        out.push(ext::AuthzExtension {
            route,
            authz: u32::try_from(i).unwrap_or(u32::MAX),
            jwt: a
                .jwt
                .iter()
                .map(|j| ext::Jwt {
                    name: j.name.clone(),
                    issuer: j.issuer.clone(),
                    audiences: j.audiences.clone(),
                    jwks: j.jwks.clone(),
                    required_claims: j
                        .required_claims
                        .iter()
                        .map(|(name, values)| ext::Claim {
                            name: name.clone(),
                            values: values.clone(),
                        })
                        .collect(),
                    from_header: j.header.clone(),
                })
                .collect(),
        });
    }
}

/// [`translate`] with Ferry's extensions: the JWT requirements of authorizations.
pub fn translate_ferry(p: &InboundPolicy) -> ext::Server {
    let mut server = ext::Server::from(translate(p));
    let mut out = Vec::new();
    extensions(0, &p.authorizations, &mut out);
    if p.protocol.has_routes() {
        for (i, r) in p.routes.iter().enumerate() {
            let route = u32::try_from(i + 1).unwrap_or(u32::MAX);
            extensions(route, &r.authorizations, &mut out);
        }
    }
    server.authz_extensions = out;
    server
}

/// Linkerd's `InboundServerPolicies` over discovery and the policy documents.
#[derive(Clone, Debug)]
pub struct InboundService {
    states: watch::Receiver<Arc<ClusterState>>,
    _source: Routes,
    routes: watch::Receiver<Arc<RouteSet>>,
    jwks: Jwks,
    config: Arc<InboundConfig>,
    drain: CancellationToken,
}

impl InboundService {
    /// Serves the policies of `routes`' documents for the pods of `states`, fetching the
    /// JWK Sets they name.
    pub fn new(
        states: watch::Receiver<Arc<ClusterState>>,
        routes: &Routes,
        config: InboundConfig,
        drain: CancellationToken,
    ) -> Self {
        let jwks = Jwks::spawn(routes.watch(), config.jwks_refresh, &config.jwks_ca);
        Self {
            states,
            _source: routes.clone(),
            routes: routes.watch(),
            jwks,
            config: Arc::new(config),
            drain,
        }
    }

    /// The tonic server.
    pub fn into_server(self) -> InboundServerPoliciesServer<Self> {
        InboundServerPoliciesServer::new(self)
    }

    fn unknown(target: &PortTarget) -> Status {
        Status::not_found(format!("no pod {} is known", target.pod))
    }

    /// The policy of `spec`'s port now.
    pub fn current(&self, spec: &pb::PortSpec) -> Result<InboundPolicy, Status> {
        let target = port_target(spec)?;
        let state = self.states.borrow().clone();
        let routes = self.routes.borrow().clone();
        let keys: Arc<Keys> = self.jwks.watch().borrow().clone();
        resolve::compile(&state, &routes, &self.config, &keys, &target)
            .ok_or_else(|| Self::unknown(&target))
    }

    fn stream<M: Clone + PartialEq + Send + 'static>(
        &self,
        spec: &pb::PortSpec,
        render: fn(&InboundPolicy) -> M,
    ) -> Result<Stream<M>, Status> {
        let target = port_target(spec)?;
        let sources = Sources {
            states: self.states.clone(),
            routes: self.routes.clone(),
            keys: Some(self.jwks.watch()),
            drain: self.drain.clone(),
        };
        let config = self.config.clone();
        let missing = Self::unknown(&target);
        watching::stream(
            sources,
            Box::new(move |state, routes, keys| {
                resolve::compile(state, routes, &config, keys, &target).map(|p| render(&p))
            }),
            move || missing,
        )
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for InboundService {
    async fn get_port(&self, req: Request<pb::PortSpec>) -> Result<Response<pb::Server>, Status> {
        self.current(req.get_ref())
            .map(|p| Response::new(translate(&p)))
    }

    type WatchPortStream = Stream<pb::Server>;

    async fn watch_port(
        &self,
        req: Request<pb::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        self.stream(req.get_ref(), translate).map(Response::new)
    }
}

/// Ferry's `InboundServerPolicies/WatchPort` ([`ext::WATCH_PORT`]) beside Linkerd's.
pub type FerryInboundServer = watching::ExtensionServer<InboundService>;

impl watching::ExtensionWatch for InboundService {
    type Spec = pb::PortSpec;
    type Message = ext::Server;
    const SERVICE: &'static str = ext::SERVICE;
    const METHOD: &'static str = ext::WATCH_PORT;

    fn watch(&self, spec: &pb::PortSpec) -> Result<Stream<ext::Server>, Status> {
        self.stream(spec, translate_ferry)
    }
}
