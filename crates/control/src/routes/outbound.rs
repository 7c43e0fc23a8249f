//! [`ServicePolicy`] as Linkerd's `io.linkerd.proxy.outbound.OutboundPolicy`, and the
//! `OutboundPolicies` gRPC service (`Get`, `Watch`) on the control plane's gRPC port.
//!
//! What Linkerd's messages cannot carry is left out of them (and shows in
//! `ferry diagnostics policy`): `RequestMirror`, `URLRewrite`, an `HTTPFault`'s delay,
//! and per-backend filters other than header modifiers. Ferry's proxy will need an
//! extension to read those (issue #21's proxy half).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::destination::WeightedAddr;
use linkerd2_proxy_api::grpc_route as gr;
use linkerd2_proxy_api::http_route as hr;
use linkerd2_proxy_api::http_types;
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::outbound as pb;
use linkerd2_proxy_api::outbound::outbound_policies_server::{
    OutboundPolicies, OutboundPoliciesServer,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::gateway::{
    FilterType, GrpcRouteMatch, HeaderModifier, HttpMethod, HttpRouteMatch, PathMatchType,
    RouteFilter, StringMatchType, GATEWAY_GROUP,
};
use super::policy::{self, PolicyBackend, PolicyRoute, PolicyRule, ServicePolicy, Target};
use super::{RouteSet, Routes};
use crate::authority::{ContextToken, Lookup};
use crate::model::{ClusterState, ObjectRef};
use ferry_api::policy as ext;

/// How long a proxy waits for a client to speak first before treating a connection as
/// opaque (Linkerd's default).
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued per backend while it has no endpoint ready.
pub const QUEUE_CAPACITY: u32 = 100;
/// How long a backend may stay unready before queued requests fail.
pub const FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
/// Peak-EWMA's starting round-trip estimate.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Peak-EWMA's decay.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or_default()
}

/// Which Service port a request asks about, and who asks.
pub fn target(state: &ClusterState, spec: &pb::TrafficSpec) -> Result<Target, Status> {
    let caller_namespace = caller_namespace(&spec.source_workload);
    let caller = ContextToken {
        ns: caller_namespace.clone(),
        ..ContextToken::default()
    };
    match &spec.target {
        Some(pb::traffic_spec::Target::Authority(authority)) => {
            match Lookup::parse(authority, &state.cluster_domain, &caller)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
            {
                Lookup::Service {
                    namespace,
                    name,
                    port,
                    instance: None,
                } => Ok(Target {
                    service: ObjectRef::new(namespace, name),
                    port,
                    caller_namespace,
                }),
                _ => Err(Status::not_found(format!("{authority:?} is not a service"))),
            }
        }
        Some(pb::traffic_spec::Target::Addr(addr)) => {
            let addr = SocketAddr::try_from(*addr)
                .map_err(|_| Status::invalid_argument("invalid target address"))?;
            let (service, _) = state.service_at(addr.ip()).ok_or_else(|| {
                Status::not_found(format!("no service has the address {}", addr.ip()))
            })?;
            Ok(Target {
                service: service.clone(),
                port: addr.port(),
                caller_namespace,
            })
        }
        None => Err(Status::invalid_argument("missing target")),
    }
}

/// The caller's namespace from `source_workload`: Linkerd proxies send `<ns>:<pod>` or a
/// JSON object with `ns`.
fn caller_namespace(source: &str) -> Option<String> {
    let source = source.trim();
    if source.starts_with('{') {
        return ContextToken::parse(source).ns;
    }
    source
        .split_once(':')
        .map(|(ns, _)| ns)
        .filter(|ns| !ns.is_empty())
        .map(str::to_string)
}

/// The policy message for `target`, or `None` when the Service or port is unknown.
pub fn policy(
    state: &ClusterState,
    routes: &RouteSet,
    target: &Target,
) -> Option<pb::OutboundPolicy> {
    policy::compile(state, routes, target).map(|p| translate(&p))
}

fn resource(group: &str, kind: &str, namespace: &str, name: &str, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            section: String::new(),
            port: u32::from(port),
        })),
    }
}

fn default_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.to_string())),
    }
}

/// A [`ServicePolicy`] as Linkerd's message.
pub fn translate(p: &ServicePolicy) -> pb::OutboundPolicy {
    let parent = PolicyBackend {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        port: p.port,
        weight: 1,
        authority: Some(p.authority.clone()),
        error: None,
        filters: Vec::new(),
    };
    let failure_accrual = p.failure_accrual.as_ref().map(accrual);
    let kind = if p.protocol == "grpc" {
        pb::proxy_protocol::Kind::Grpc(pb::proxy_protocol::Grpc {
            routes: p.routes.iter().map(grpc_route).collect(),
            failure_accrual,
        })
    } else {
        let routes: Vec<pb::HttpRoute> = p.routes.iter().map(http_route).collect();
        pb::proxy_protocol::Kind::Detect(pb::proxy_protocol::Detect {
            timeout: Some(duration(DETECT_TIMEOUT)),
            opaque: Some(pb::proxy_protocol::Opaque {
                routes: vec![opaque(&parent)],
            }),
            http1: Some(pb::proxy_protocol::Http1 {
                routes: routes.clone(),
                failure_accrual,
            }),
            http2: Some(pb::proxy_protocol::Http2 {
                routes,
                failure_accrual,
            }),
        })
    };
    pb::OutboundPolicy {
        protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        metadata: Some(resource("core", "Service", &p.namespace, &p.name, p.port)),
    }
}

fn accrual(f: &policy::FailureAccrual) -> pb::FailureAccrual {
    pb::FailureAccrual {
        ejection: None,
        kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(
            pb::failure_accrual::ConsecutiveFailures {
                max_failures: f.max_failures,
                backoff: Some(pb::ExponentialBackoff {
                    min_backoff: Some(duration(f.min_penalty)),
                    max_backoff: Some(duration(f.max_penalty)),
                    jitter_ratio: f.jitter_ratio,
                    respect_retry_after_hint: false,
                }),
            },
        )),
    }
}

fn backend(b: &PolicyBackend) -> pb::Backend {
    let kind = b.authority.as_ref().map(|authority| {
        pb::backend::Kind::Balancer(pb::backend::BalanceP2c {
            discovery: Some(pb::backend::EndpointDiscovery {
                kind: Some(pb::backend::endpoint_discovery::Kind::Dst(
                    pb::backend::endpoint_discovery::DestinationGet {
                        path: authority.clone(),
                    },
                )),
            }),
            load: Some(pb::backend::balance_p2c::Load::PeakEwma(
                pb::backend::balance_p2c::PeakEwma {
                    default_rtt: Some(duration(DEFAULT_RTT)),
                    decay: Some(duration(EWMA_DECAY)),
                },
            )),
        })
    });
    // A backend that does not resolve keeps a (never-used) kind so the message stays
    // well-formed; its route backend carries a failure filter instead.
    let kind = kind.or(Some(pb::backend::Kind::Forward(WeightedAddr::default())));
    pb::Backend {
        metadata: Some(resource("core", "Service", &b.namespace, &b.name, b.port)),
        queue: Some(pb::Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: Some(duration(FAILFAST_TIMEOUT)),
        }),
        kind,
    }
}

fn opaque(parent: &PolicyBackend) -> pb::OpaqueRoute {
    use pb::opaque_route::{distribution, Distribution, RouteBackend, Rule};
    pb::OpaqueRoute {
        metadata: Some(default_meta("opaq")),
        rules: vec![Rule {
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(backend(parent)),
                            filters: Vec::new(),
                        }],
                    },
                )),
            }),
            filters: Vec::new(),
        }],
    }
}

fn headers(list: &[super::gateway::HeaderValue]) -> Option<http_types::Headers> {
    (!list.is_empty()).then(|| http_types::Headers {
        headers: list
            .iter()
            .map(|h| http_types::headers::Header {
                name: h.name.clone(),
                value: h.value.clone().into_bytes(),
            })
            .collect(),
    })
}

pub(crate) fn request_headers(m: &HeaderModifier) -> hr::RequestHeaderModifier {
    hr::RequestHeaderModifier {
        add: headers(&m.add),
        set: headers(&m.set),
        remove: m.remove.clone(),
    }
}

fn response_headers(m: &HeaderModifier) -> hr::ResponseHeaderModifier {
    hr::ResponseHeaderModifier {
        add: headers(&m.add),
        set: headers(&m.set),
        remove: m.remove.clone(),
    }
}

fn header_match(h: &super::gateway::HeaderMatch) -> hr::HeaderMatch {
    hr::HeaderMatch {
        name: h.name.clone(),
        value: Some(match h.kind {
            StringMatchType::Exact => hr::header_match::Value::Exact(h.value.clone().into_bytes()),
            StringMatchType::RegularExpression => hr::header_match::Value::Regex(h.value.clone()),
        }),
    }
}

fn method(m: HttpMethod) -> http_types::HttpMethod {
    use http_types::http_method::{Registered, Type};
    let r = match m {
        HttpMethod::GET => Registered::Get,
        HttpMethod::HEAD => Registered::Head,
        HttpMethod::POST => Registered::Post,
        HttpMethod::PUT => Registered::Put,
        HttpMethod::DELETE => Registered::Delete,
        HttpMethod::CONNECT => Registered::Connect,
        HttpMethod::OPTIONS => Registered::Options,
        HttpMethod::TRACE => Registered::Trace,
        HttpMethod::PATCH => Registered::Patch,
    };
    http_types::HttpMethod {
        r#type: Some(Type::Registered(r.into())),
    }
}

pub(crate) fn http_match(m: &HttpRouteMatch) -> hr::HttpRouteMatch {
    let path = match m.path.kind {
        PathMatchType::Exact => hr::path_match::Kind::Exact(m.path.value.clone()),
        PathMatchType::PathPrefix => hr::path_match::Kind::Prefix(m.path.value.clone()),
        PathMatchType::RegularExpression => hr::path_match::Kind::Regex(m.path.value.clone()),
    };
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch { kind: Some(path) }),
        headers: m.headers.iter().map(header_match).collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| hr::QueryParamMatch {
                name: q.name.clone(),
                value: Some(match q.kind {
                    StringMatchType::Exact => hr::query_param_match::Value::Exact(q.value.clone()),
                    StringMatchType::RegularExpression => {
                        hr::query_param_match::Value::Regex(q.value.clone())
                    }
                }),
            })
            .collect(),
        method: m.method.map(method),
    }
}

pub(crate) fn grpc_match(m: &GrpcRouteMatch) -> gr::GrpcRouteMatch {
    gr::GrpcRouteMatch {
        rpc: m.method.as_ref().map(|method| gr::GrpcRpcMatch {
            service: method.service.clone().unwrap_or_default(),
            method: method.method.clone().unwrap_or_default(),
        }),
        headers: m.headers.iter().map(header_match).collect(),
    }
}

fn ratio(percent: u32) -> hr::Ratio {
    hr::Ratio {
        numerator: percent.min(100),
        denominator: 100,
    }
}

fn http_filters(rule: &PolicyRule) -> Vec<pb::http_route::Filter> {
    use pb::http_route::filter::Kind;
    let mut out = Vec::new();
    for fault in &rule.faults {
        if let (Some(status), true) = (fault.http_status, fault.abort_percent > 0) {
            out.push(Kind::FailureInjector(hr::HttpFailureInjector {
                status: u32::from(status),
                message: format!("injected fault (HTTPFault {})", fault.source),
                ratio: Some(ratio(fault.abort_percent)),
            }));
        }
    }
    for f in &rule.filters {
        if let Some(kind) = http_filter(f) {
            out.push(kind);
        }
    }
    out.into_iter()
        .map(|kind| pb::http_route::Filter { kind: Some(kind) })
        .collect()
}

pub(crate) fn http_filter(f: &RouteFilter) -> Option<pb::http_route::filter::Kind> {
    use pb::http_route::filter::Kind;
    match f.kind {
        FilterType::RequestHeaderModifier => f
            .request_header_modifier
            .as_ref()
            .map(|m| Kind::RequestHeaderModifier(request_headers(m))),
        FilterType::ResponseHeaderModifier => f
            .response_header_modifier
            .as_ref()
            .map(|m| Kind::ResponseHeaderModifier(response_headers(m))),
        FilterType::RequestRedirect => f.request_redirect.as_ref().map(|r| {
            Kind::Redirect(hr::RequestRedirect {
                scheme: r.scheme.as_deref().map(http_types::Scheme::from),
                host: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().and_then(|p| {
                    let replace = match p.kind.as_str() {
                        "ReplaceFullPath" => {
                            hr::path_modifier::Replace::Full(p.replace_full_path.clone()?)
                        }
                        _ => hr::path_modifier::Replace::Prefix(p.replace_prefix_match.clone()?),
                    };
                    Some(hr::PathModifier {
                        replace: Some(replace),
                    })
                }),
                port: r.port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                status: u32::try_from(r.status_code).unwrap_or(302),
            })
        }),
        _ => None,
    }
}

fn grpc_filters(rule: &PolicyRule) -> Vec<pb::grpc_route::Filter> {
    use pb::grpc_route::filter::Kind;
    let mut out = Vec::new();
    for fault in &rule.faults {
        if fault.abort_percent == 0 {
            continue;
        }
        // An HTTP status on a gRPC route: UNKNOWN (2), as gRPC maps unexpected statuses.
        let code = fault.grpc_status.map_or(2, u32::from);
        out.push(Kind::FailureInjector(gr::GrpcFailureInjector {
            code,
            message: format!("injected fault (HTTPFault {})", fault.source),
            ratio: Some(ratio(fault.abort_percent)),
        }));
    }
    for f in &rule.filters {
        if let (FilterType::RequestHeaderModifier, Some(m)) = (f.kind, &f.request_header_modifier) {
            out.push(Kind::RequestHeaderModifier(request_headers(m)));
        }
    }
    out.into_iter()
        .map(|kind| pb::grpc_route::Filter { kind: Some(kind) })
        .collect()
}

/// A backend that does not resolve answers 500 (gRPC: UNAVAILABLE), naming why.
fn unresolved_http(b: &PolicyBackend) -> Vec<pb::http_route::Filter> {
    b.error
        .as_ref()
        .map(|error| pb::http_route::Filter {
            kind: Some(pb::http_route::filter::Kind::FailureInjector(
                hr::HttpFailureInjector {
                    status: 500,
                    message: error.clone(),
                    ratio: Some(ratio(100)),
                },
            )),
        })
        .into_iter()
        .collect()
}

fn http_backends(rule: &PolicyRule, default: bool) -> pb::http_route::Distribution {
    use pb::http_route::{distribution, Distribution, RouteBackend, WeightedRouteBackend};
    let route_backend = |b: &PolicyBackend| {
        let mut filters = unresolved_http(b);
        filters.extend(
            b.filters
                .iter()
                .filter_map(http_filter)
                .map(|kind| pb::http_route::Filter { kind: Some(kind) }),
        );
        RouteBackend {
            backend: Some(backend(b)),
            filters,
            ..RouteBackend::default()
        }
    };
    let kind = if default {
        distribution::Kind::FirstAvailable(distribution::FirstAvailable {
            backends: rule.backends.iter().map(route_backend).collect(),
        })
    } else {
        distribution::Kind::RandomAvailable(distribution::RandomAvailable {
            backends: rule
                .backends
                .iter()
                .map(|b| WeightedRouteBackend {
                    backend: Some(route_backend(b)),
                    weight: b.weight,
                })
                .collect(),
        })
    };
    Distribution { kind: Some(kind) }
}

fn grpc_backends(rule: &PolicyRule) -> pb::grpc_route::Distribution {
    use pb::grpc_route::{distribution, Distribution, RouteBackend, WeightedRouteBackend};
    let route_backend = |b: &PolicyBackend| {
        let mut filters: Vec<pb::grpc_route::Filter> = b
            .error
            .as_ref()
            .map(|error| pb::grpc_route::Filter {
                kind: Some(pb::grpc_route::filter::Kind::FailureInjector(
                    gr::GrpcFailureInjector {
                        code: 14,
                        message: error.clone(),
                        ratio: Some(ratio(100)),
                    },
                )),
            })
            .into_iter()
            .collect();
        for f in &b.filters {
            if let (FilterType::RequestHeaderModifier, Some(m)) =
                (f.kind, &f.request_header_modifier)
            {
                filters.push(pb::grpc_route::Filter {
                    kind: Some(pb::grpc_route::filter::Kind::RequestHeaderModifier(
                        request_headers(m),
                    )),
                });
            }
        }
        RouteBackend {
            backend: Some(backend(b)),
            filters,
            ..RouteBackend::default()
        }
    };
    Distribution {
        kind: Some(distribution::Kind::RandomAvailable(
            distribution::RandomAvailable {
                backends: rule
                    .backends
                    .iter()
                    .map(|b| WeightedRouteBackend {
                        backend: Some(route_backend(b)),
                        weight: b.weight,
                    })
                    .collect(),
            },
        )),
    }
}

fn timeouts(rule: &PolicyRule) -> Option<hr::Timeouts> {
    let t = &rule.timeouts;
    (!t.is_empty()).then(|| hr::Timeouts {
        request: t.request.map(duration),
        response: t.backend_request.map(duration),
        idle: t.idle.map(duration),
    })
}

fn backoff(r: &policy::Retry) -> Option<pb::ExponentialBackoff> {
    r.backoff.map(|min| pb::ExponentialBackoff {
        min_backoff: Some(duration(min)),
        max_backoff: Some(duration(min.saturating_mul(10))),
        jitter_ratio: 0.0,
        respect_retry_after_hint: false,
    })
}

fn route_meta(r: &PolicyRoute) -> meta::Metadata {
    if r.kind == "default" {
        default_meta("http")
    } else {
        resource(GATEWAY_GROUP, r.kind, &r.namespace, &r.name, 0)
    }
}

fn http_route(r: &PolicyRoute) -> pb::HttpRoute {
    let default = r.kind == "default";
    pb::HttpRoute {
        metadata: Some(route_meta(r)),
        hosts: Vec::new(),
        rules: r
            .rules
            .iter()
            .map(|rule| pb::http_route::Rule {
                matches: rule.http_matches.iter().map(http_match).collect(),
                filters: http_filters(rule),
                backends: Some(http_backends(rule, default)),
                timeouts: timeouts(rule),
                retry: rule.retry.as_ref().map(|r| pb::http_route::Retry {
                    max_retries: r.max_retries,
                    max_request_bytes: r.max_request_bytes,
                    conditions: Some(pb::http_route::retry::Conditions {
                        status_ranges: r
                            .http_statuses
                            .iter()
                            .map(
                                |&(start, end)| pb::http_route::retry::conditions::StatusRange {
                                    start: u32::from(start),
                                    end: u32::from(end),
                                },
                            )
                            .collect(),
                    }),
                    timeout: r.timeout.map(duration),
                    backoff: backoff(r),
                }),
                ..Default::default()
            })
            .collect(),
    }
}

fn grpc_route(r: &PolicyRoute) -> pb::GrpcRoute {
    pb::GrpcRoute {
        metadata: Some(route_meta(r)),
        hosts: Vec::new(),
        rules: r
            .rules
            .iter()
            .map(|rule| pb::grpc_route::Rule {
                matches: rule.grpc_matches.iter().map(grpc_match).collect(),
                filters: grpc_filters(rule),
                backends: Some(grpc_backends(rule)),
                timeouts: timeouts(rule),
                retry: rule.retry.as_ref().map(|r| {
                    let has = |c: &str| r.grpc_statuses.iter().any(|s| s == c);
                    pb::grpc_route::Retry {
                        max_retries: r.max_retries,
                        max_request_bytes: r.max_request_bytes,
                        conditions: Some(pb::grpc_route::retry::Conditions {
                            cancelled: has("cancelled"),
                            deadine_exceeded: has("deadline-exceeded"),
                            resource_exhausted: has("resource-exhausted"),
                            internal: has("internal"),
                            unavailable: has("unavailable"),
                        }),
                        timeout: r.timeout.map(duration),
                        backoff: backoff(r),
                    }
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// The `OutboundPolicies` service over discovery and routes.
#[derive(Clone, Debug)]
pub struct OutboundService {
    states: watch::Receiver<Arc<ClusterState>>,
    /// Held so the routes channel stays open while the service runs.
    _source: Routes,
    routes: watch::Receiver<Arc<RouteSet>>,
    drain: CancellationToken,
}

impl OutboundService {
    /// Serves from `states` (discovery) and `routes`; streams end when `drain` is cancelled.
    pub fn new(
        states: watch::Receiver<Arc<ClusterState>>,
        routes: &Routes,
        drain: CancellationToken,
    ) -> Self {
        Self {
            states,
            _source: routes.clone(),
            routes: routes.watch(),
            drain,
        }
    }

    /// For a tonic router.
    pub fn into_server(self) -> OutboundPoliciesServer<Self> {
        OutboundPoliciesServer::new(self)
    }

    /// The answer now, from receivers marked as having seen it.
    fn answer(
        spec: &pb::TrafficSpec,
        states: &mut watch::Receiver<Arc<ClusterState>>,
        routes: &mut watch::Receiver<Arc<RouteSet>>,
    ) -> Result<(Target, pb::OutboundPolicy), Status> {
        let state = states.borrow_and_update().clone();
        let routes = routes.borrow_and_update().clone();
        let target = target(&state, spec)?;
        let policy = policy(&state, &routes, &target).ok_or_else(|| {
            Status::not_found(format!(
                "service {} has no port {}",
                target.service, target.port
            ))
        })?;
        Ok((target, policy))
    }
}

type Stream<M = pb::OutboundPolicy> = super::watching::Stream<M>;

impl OutboundService {
    /// The `Watch` stream for `req`: the policy as `render` makes it, again whenever it
    /// changes. A Service that disappears keeps its last policy until it returns.
    fn stream<M: Clone + PartialEq + Send + 'static>(
        &self,
        req: &pb::TrafficSpec,
        render: fn(&ServicePolicy) -> M,
    ) -> Result<Stream<M>, Status> {
        let (mut states, mut routes) = (self.states.clone(), self.routes.clone());
        let (target, _) = Self::answer(req, &mut states, &mut routes)?;
        let sources = super::watching::Sources {
            states,
            routes,
            keys: None,
            drain: self.drain.clone(),
        };
        super::watching::stream(
            sources,
            Box::new(move |state, routes, _| {
                policy::compile(state, routes, &target).map(|p| render(&p))
            }),
            || Status::not_found("service port vanished"),
        )
    }
}

#[tonic::async_trait]
impl OutboundPolicies for OutboundService {
    async fn get(
        &self,
        req: Request<pb::TrafficSpec>,
    ) -> Result<Response<pb::OutboundPolicy>, Status> {
        let (mut states, mut routes) = (self.states.clone(), self.routes.clone());
        let (_, policy) = Self::answer(req.get_ref(), &mut states, &mut routes)?;
        Ok(Response::new(policy))
    }

    type WatchStream = Stream;

    async fn watch(&self, req: Request<pb::TrafficSpec>) -> Result<Response<Stream>, Status> {
        self.stream(req.get_ref(), translate).map(Response::new)
    }
}

/// [`translate`] with Ferry's rule extensions (`ferry_api::policy`): mirrors, rewrites and
/// fault delays, which Linkerd's messages cannot carry.
pub fn translate_ferry(p: &ServicePolicy) -> ext::OutboundPolicy {
    let linkerd = translate(p);
    let mut rule_extensions = Vec::new();
    for (route, r) in p.routes.iter().enumerate() {
        for (rule, x) in r.rules.iter().enumerate() {
            let mirror = x.mirror.as_ref().and_then(|m| {
                Some(ext::Mirror {
                    path: m.backend.authority.clone()?,
                    numerator: m.numerator,
                    denominator: m.denominator,
                    metadata: Some(resource(
                        "core",
                        "Service",
                        &m.backend.namespace,
                        &m.backend.name,
                        m.backend.port,
                    )),
                })
            });
            let delay = x.faults.iter().find_map(|f| {
                let d = f.delay.filter(|_| f.delay_percent > 0)?;
                Some(ext::Delay {
                    fixed: Some(duration(d)),
                    percent: f.delay_percent.min(100),
                })
            });
            let rewrite = x.filters.iter().find_map(|f| {
                let u = f
                    .url_rewrite
                    .as_ref()
                    .filter(|_| f.kind == FilterType::URLRewrite)?;
                let path = u.path.as_ref();
                let full = path.filter(|p| p.kind == "ReplaceFullPath");
                let prefix = path.filter(|p| p.kind != "ReplaceFullPath");
                Some(ext::Rewrite {
                    hostname: u.hostname.clone().unwrap_or_default(),
                    full_path: full.and_then(|p| p.replace_full_path.clone()),
                    prefix: prefix.and_then(|p| p.replace_prefix_match.clone()),
                })
            });
            if mirror.is_some() || delay.is_some() || rewrite.is_some() {
                rule_extensions.push(ext::RuleExtension {
                    route: u32::try_from(route).unwrap_or(u32::MAX),
                    rule: u32::try_from(rule).unwrap_or(u32::MAX),
                    mirror,
                    delay,
                    rewrite,
                });
            }
        }
    }
    ext::OutboundPolicy {
        protocol: linkerd.protocol,
        metadata: linkerd.metadata,
        rule_extensions,
    }
}

/// Ferry's `OutboundPolicies/Watch` ([`ext::WATCH`]) beside Linkerd's, on the same port.
pub type FerryOutboundServer = super::watching::ExtensionServer<OutboundService>;

impl super::watching::ExtensionWatch for OutboundService {
    type Spec = pb::TrafficSpec;
    type Message = ext::OutboundPolicy;
    const SERVICE: &'static str = ext::SERVICE;
    const METHOD: &'static str = ext::WATCH;

    fn watch(&self, spec: &pb::TrafficSpec) -> Result<Stream<ext::OutboundPolicy>, Status> {
        self.stream(spec, translate_ferry)
    }
}
