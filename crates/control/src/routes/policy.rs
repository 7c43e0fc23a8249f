//! The routes that apply to one Service port, resolved against discovery: what a proxy
//! sending to that port is told. [`super::outbound`] turns it into Linkerd's messages;
//! `ferry diagnostics policy` prints it as JSON.
//!
//! Which routes apply: those whose `parentRefs` name the Service (`group: ""`,
//! `kind: Service`) and either no port or this one. Routes in the Service's namespace
//! (producer routes) apply to every caller; a route in another namespace (a consumer
//! route) applies only to callers in that namespace, and when a caller has any, they
//! replace the producer routes (GAMMA). When `GRPCRoute`s apply, they are served and
//! `HTTPRoute`s are not; with no route at all the port gets a default route to the
//! Service itself.
//!
//! Effective retry and timeout settings come from the rule's `retry` / `timeouts` fields,
//! else from Linkerd's annotations on the route, else on the Service (`retry.linkerd.io/http`,
//! `…/grpc`, `…/limit`, `…/timeout`, `timeout.linkerd.io/request`, `…/response`, `…/idle`);
//! the default route takes the Service's. Failure accrual comes from the Service's
//! `balancer.linkerd.io/failure-accrual` annotations.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::gateway::*;
use super::order;
use super::validate::{parse_duration, FieldError};
use super::RouteSet;
use crate::model::{ClusterState, ObjectRef};

/// Most request body bytes buffered so that a request can be retried (issue #21: 64 KiB).
pub const MAX_RETRY_BODY: u32 = 64 * 1024;
/// gRPC codes retried when a route asks for retries without naming any (Linkerd's).
pub const DEFAULT_GRPC_RETRY: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The port a policy is for, and who asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The Service.
    pub service: ObjectRef,
    /// The Service port.
    pub port: u16,
    /// The caller's namespace, when known (selects consumer routes).
    pub caller_namespace: Option<String>,
}

/// What proxies are told about one Service port.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePolicy {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port.
    pub port: u16,
    /// `<name>.<ns>.svc.<domain>:<port>`.
    pub authority: String,
    /// `http` (protocol detection, HTTP routes) or `grpc` (gRPC routes).
    pub protocol: &'static str,
    /// The routes, oldest first (then by namespace/name); the default route when none.
    pub routes: Vec<PolicyRoute>,
    /// Per-endpoint circuit breaking, from the Service's
    /// `balancer.linkerd.io/failure-accrual` annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_accrual: Option<FailureAccrual>,
}

/// Consecutive-failures accrual: an endpoint failing `max_failures` times in a row is
/// ejected, and probed again after a backoff from `min_penalty` to `max_penalty`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureAccrual {
    /// Consecutive failures that eject an endpoint.
    pub max_failures: u32,
    /// The first ejection's length.
    #[serde(with = "duration_text")]
    pub min_penalty: Duration,
    /// The longest ejection.
    #[serde(with = "duration_text")]
    pub max_penalty: Duration,
    /// Random spread of each penalty, as a ratio of it.
    pub jitter_ratio: f32,
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// Linkerd's defaults for consecutive-failures accrual.
pub const DEFAULT_MAX_FAILURES: u32 = 7;
/// See [`DEFAULT_MAX_FAILURES`].
pub const DEFAULT_MIN_PENALTY: Duration = Duration::from_secs(1);
/// See [`DEFAULT_MAX_FAILURES`].
pub const DEFAULT_MAX_PENALTY: Duration = Duration::from_secs(60);
/// See [`DEFAULT_MAX_FAILURES`].
pub const DEFAULT_JITTER_RATIO: f32 = 0.5;

/// `balancer.linkerd.io/failure-accrual: consecutive` and its
/// `failure-accrual-consecutive-{max-failures,min-penalty,max-penalty,jitter-ratio}`.
pub fn failure_accrual(annotations: &BTreeMap<String, String>) -> Option<FailureAccrual> {
    const PREFIX: &str = "balancer.linkerd.io/failure-accrual";
    if annotations.get(PREFIX).map(|v| v.trim()) != Some("consecutive") {
        return None;
    }
    let get = |k: &str| annotations.get(&format!("{PREFIX}-consecutive-{k}"));
    Some(FailureAccrual {
        max_failures: get("max-failures")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_FAILURES),
        min_penalty: get("min-penalty")
            .and_then(|v| annotation_duration(v))
            .unwrap_or(DEFAULT_MIN_PENALTY),
        max_penalty: get("max-penalty")
            .and_then(|v| annotation_duration(v))
            .unwrap_or(DEFAULT_MAX_PENALTY),
        jitter_ratio: get("jitter-ratio")
            .and_then(|v| v.trim().parse().ok())
            .filter(|r: &f32| (0.0..=100.0).contains(r))
            .unwrap_or(DEFAULT_JITTER_RATIO),
    })
}

/// One route as served.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRoute {
    /// `HTTPRoute`, `GRPCRoute`, or `default`.
    pub kind: &'static str,
    /// The route's namespace (the Service's for the default route).
    pub namespace: String,
    /// The route's name (`default` for the default route).
    pub name: String,
    /// Rules, in the route's order.
    pub rules: Vec<PolicyRule>,
}

/// One rule as served.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// HTTP matches (HTTPRoute and default routes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_matches: Vec<HttpRouteMatch>,
    /// gRPC matches (GRPCRoute; empty matches every call).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grpc_matches: Vec<GrpcRouteMatch>,
    /// Header modifiers, redirects and rewrites, as written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
    /// Injected faults (`HTTPFault`s the rule's `ExtensionRef` filters name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// A copy of requests to another backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Where requests go.
    pub backends: Vec<PolicyBackend>,
    /// Timeouts.
    #[serde(skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    /// Retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// A resolved backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBackend {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port.
    pub port: u16,
    /// Relative share of requests.
    pub weight: u32,
    /// The destination authority its endpoints are resolved from, when it resolves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Why it does not resolve (requests to it fail with 500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Filters for requests sent to this backend only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
}

/// An injected fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// The `HTTPFault`'s `namespace/name`.
    pub source: String,
    /// HTTP status answered instead of the backend's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// gRPC status answered instead of the backend's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u16>,
    /// Share of requests aborted, 0-100.
    pub abort_percent: u32,
    /// Delay before forwarding.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub delay: Option<Duration>,
    /// Share of requests delayed, 0-100.
    pub delay_percent: u32,
}

/// A mirrored share of requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Where copies go.
    pub backend: PolicyBackend,
    /// Copies per `denominator` requests.
    pub numerator: u32,
    /// See `numerator`.
    pub denominator: u32,
}

/// Effective timeouts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// The whole request as the caller sees it, retries included.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub request: Option<Duration>,
    /// One attempt to a backend (Linkerd: `response`).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub backend_request: Option<Duration>,
    /// A request or response body idle this long fails.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// Whether no timeout is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Effective retries.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Most retries of one request.
    pub max_retries: u32,
    /// HTTP statuses retried, as inclusive ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_statuses: Vec<(u16, u16)>,
    /// gRPC statuses retried (Linkerd's names: `unavailable`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grpc_statuses: Vec<String>,
    /// The first wait between attempts.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub backoff: Option<Duration>,
    /// Timeout of each attempt.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Most body bytes buffered for a retry.
    pub max_request_bytes: u32,
}

mod opt_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Why a Service backend of a route in `route_ns` does not resolve: the `ResolvedRefs`
/// reason (`RefNotPermitted`, `BackendNotFound`) and a message; `None` when it does.
pub fn unresolved(
    state: &ClusterState,
    route_ns: &str,
    ns: &str,
    name: &str,
    port: Option<i64>,
) -> Option<(&'static str, String)> {
    let svc = ObjectRef::new(ns, name);
    if ns != route_ns {
        return Some((
            "RefNotPermitted",
            format!("backend {svc} is in another namespace than the route (ReferenceGrant is not supported)"),
        ));
    }
    let port16 = port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    match state.services.get(&svc) {
        None => Some(("BackendNotFound", format!("service {svc} not found"))),
        Some(s) if !s.ports.contains_key(&port16) => Some((
            "BackendNotFound",
            format!("service {svc} has no port {port16}"),
        )),
        Some(_) => None,
    }
}

/// The first backend of `rules` (backendRefs, then mirrors) that does not resolve, as a
/// `ResolvedRefs` reason and message.
pub fn first_unresolved<'a>(
    state: &ClusterState,
    route_ns: &str,
    rules: impl Iterator<Item = (&'a [BackendRef], &'a [RouteFilter])>,
) -> Option<(&'static str, String)> {
    for (backends, filters) in rules {
        for b in backends {
            let ns = b.namespace.as_deref().unwrap_or(route_ns);
            if !b.is_service() {
                return Some((
                    "InvalidKind",
                    format!("backend kind {}.{} is not supported", b.kind, b.group),
                ));
            }
            if let Some(problem) = unresolved(state, route_ns, ns, &b.name, b.port) {
                return Some(problem);
            }
        }
        for m in filters.iter().filter_map(|f| f.request_mirror.as_ref()) {
            let b = &m.backend_ref;
            let ns = b.namespace.as_deref().unwrap_or(route_ns);
            if let Some(problem) = unresolved(state, route_ns, ns, &b.name, b.port) {
                return Some(problem);
            }
        }
    }
    None
}

/// Whether `parent` names the target's Service and port, from a route in `route_ns`.
fn attaches(parent: &ParentRef, route_ns: &str, target: &Target) -> bool {
    parent.is_service()
        && parent.name == target.service.name
        && parent.namespace.as_deref().unwrap_or(route_ns) == target.service.namespace
        && parent.port.is_none_or(|p| p == i64::from(target.port))
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .unwrap_or(super::DEFAULT_NAMESPACE)
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The routes of one kind that apply to `target`: consumer routes of the caller's
/// namespace if any, else producer routes; oldest first.
fn applicable<'a, R>(
    routes: &'a [R],
    target: &Target,
    meta: impl Fn(&R) -> &ObjectMeta,
    parents: impl Fn(&R) -> &[ParentRef],
) -> Vec<&'a R> {
    let attached: Vec<&R> = routes
        .iter()
        .filter(|r| {
            let ns = namespace(meta(r));
            parents(r).iter().any(|p| attaches(p, ns, target))
        })
        .collect();
    let consumer: Vec<&R> = attached
        .iter()
        .copied()
        .filter(|r| {
            let ns = namespace(meta(r));
            ns != target.service.namespace && Some(ns) == target.caller_namespace.as_deref()
        })
        .collect();
    let mut chosen = if consumer.is_empty() {
        attached
            .into_iter()
            .filter(|r| namespace(meta(r)) == target.service.namespace)
            .collect()
    } else {
        consumer
    };
    chosen.sort_by(|a, b| order::route_order(meta(a), meta(b)));
    chosen
}

/// The policy for `target`, or `None` when the Service or port is unknown.
pub fn compile(state: &ClusterState, routes: &RouteSet, target: &Target) -> Option<ServicePolicy> {
    let service = state.services.get(&target.service)?;
    service.ports.get(&target.port)?;
    let authority = format!(
        "{}:{}",
        state.fully_qualified_name(&target.service),
        target.port
    );
    let grpc = applicable(
        &routes.grpc,
        target,
        |r| &r.metadata,
        |r| &r.spec.parent_refs,
    );
    let http = applicable(
        &routes.http,
        target,
        |r| &r.metadata,
        |r| &r.spec.parent_refs,
    );
    let cx = Context {
        state,
        routes,
        target,
    };
    let (protocol, routes) = if !grpc.is_empty() {
        ("grpc", grpc.into_iter().map(|r| cx.grpc_route(r)).collect())
    } else if !http.is_empty() {
        ("http", http.into_iter().map(|r| cx.http_route(r)).collect())
    } else {
        ("http", vec![cx.default_route()])
    };
    Some(ServicePolicy {
        namespace: target.service.namespace.clone(),
        name: target.service.name.clone(),
        port: target.port,
        authority,
        protocol,
        routes,
        failure_accrual: cx
            .routes
            .services
            .get(&target.service)
            .and_then(failure_accrual),
    })
}

struct Context<'a> {
    state: &'a ClusterState,
    routes: &'a RouteSet,
    target: &'a Target,
}

impl Context<'_> {
    /// The Service's Linkerd annotations, overridden key by key by the route's.
    fn notes(&self, route: Option<&ObjectMeta>) -> Annotations {
        let mut merged = self
            .routes
            .services
            .get(&self.target.service)
            .cloned()
            .unwrap_or_default();
        if let Some(a) = route.and_then(|m| m.annotations.as_ref()) {
            merged.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Annotations::read(&merged)
    }

    fn parent_backend(&self) -> PolicyBackend {
        self.backend(
            &self.target.service.namespace,
            &self.target.service.name,
            Some(i64::from(self.target.port)),
            1,
            &self.target.service.namespace,
        )
    }

    /// Every request to the Service itself, with the Service's Linkerd annotations.
    fn default_route(&self) -> PolicyRoute {
        let notes = self.notes(None);
        PolicyRoute {
            kind: "default",
            namespace: self.target.service.namespace.clone(),
            name: "default".to_string(),
            rules: vec![PolicyRule {
                http_matches: vec![HttpRouteMatch::default()],
                backends: vec![self.parent_backend()],
                timeouts: Timeouts {
                    request: notes.request_timeout.filter(|d| !d.is_zero()),
                    backend_request: notes.response_timeout,
                    idle: notes.idle_timeout,
                },
                retry: notes.http_retry(),
                ..PolicyRule::default()
            }],
        }
    }

    fn backend(
        &self,
        ns: &str,
        name: &str,
        port: Option<i64>,
        weight: i64,
        route_ns: &str,
    ) -> PolicyBackend {
        let port16 = port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
        let svc = ObjectRef::new(ns, name);
        let error = unresolved(self.state, route_ns, ns, name, port)
            .map(|(reason, message)| format!("{message} ({reason})"));
        PolicyBackend {
            namespace: ns.to_string(),
            name: name.to_string(),
            port: port16,
            weight: u32::try_from(weight).unwrap_or(0),
            authority: error
                .is_none()
                .then(|| format!("{}:{port16}", self.state.fully_qualified_name(&svc))),
            error,
            filters: Vec::new(),
        }
    }

    fn backends(&self, refs: &[BackendRef], route_ns: &str) -> Vec<PolicyBackend> {
        if refs.is_empty() {
            // No backendRefs: the parent Service itself, as Linkerd does for mesh routes.
            return vec![self.parent_backend()];
        }
        refs.iter()
            .map(|b| {
                let ns = b.namespace.as_deref().unwrap_or(route_ns);
                let mut backend = if b.is_service() {
                    self.backend(ns, &b.name, b.port, b.weight, route_ns)
                } else {
                    PolicyBackend {
                        namespace: ns.to_string(),
                        name: b.name.clone(),
                        port: 0,
                        weight: u32::try_from(b.weight).unwrap_or(0),
                        authority: None,
                        error: Some(format!(
                            "backend kind {}.{} is not supported (InvalidKind)",
                            b.kind, b.group
                        )),
                        filters: Vec::new(),
                    }
                };
                backend.filters = b
                    .filters
                    .iter()
                    .filter(|f| f.kind != FilterType::ExtensionRef)
                    .cloned()
                    .collect();
                backend
            })
            .collect()
    }

    /// Splits filters into those served as written, faults and the mirror.
    fn filters(
        &self,
        list: &[RouteFilter],
        route_ns: &str,
    ) -> (Vec<RouteFilter>, Vec<Fault>, Option<Mirror>) {
        let mut plain = Vec::new();
        let mut faults = Vec::new();
        let mut mirror = None;
        for f in list {
            match f.kind {
                FilterType::ExtensionRef => {
                    if let Some(e) = &f.extension_ref {
                        faults.push(self.fault(e, route_ns));
                    }
                }
                FilterType::RequestMirror => {
                    if let Some(m) = &f.request_mirror {
                        let b = &m.backend_ref;
                        let ns = b.namespace.as_deref().unwrap_or(route_ns);
                        let backend = self.backend(ns, &b.name, b.port, 1, route_ns);
                        let (numerator, denominator) = match (m.percent, m.fraction) {
                            (Some(p), _) => (p, 100),
                            (None, Some(f)) => (f.numerator, f.denominator),
                            (None, None) => (100, 100),
                        };
                        mirror = Some(Mirror {
                            backend,
                            numerator: u32::try_from(numerator).unwrap_or(0),
                            denominator: u32::try_from(denominator).unwrap_or(100),
                        });
                    }
                }
                _ => plain.push(f.clone()),
            }
        }
        (plain, faults, mirror)
    }

    /// An `HTTPFault` by reference; one that does not resolve fails every request (500),
    /// as the Gateway API requires of unresolved custom filters.
    fn fault(&self, e: &LocalObjectReference, route_ns: &str) -> Fault {
        let source = format!("{route_ns}/{}", e.name);
        let found = (e.group == POLICY_GROUP && e.kind == HTTP_FAULT_KIND)
            .then(|| {
                self.routes
                    .faults
                    .iter()
                    .find(|f| namespace(&f.metadata) == route_ns && name(&f.metadata) == e.name)
            })
            .flatten();
        let Some(fault) = found else {
            return Fault {
                source,
                http_status: Some(500),
                grpc_status: None,
                abort_percent: 100,
                delay: None,
                delay_percent: 0,
            };
        };
        let spec = &fault.spec;
        let abort = spec.abort.as_ref();
        let delay = spec.delay.as_ref();
        Fault {
            source,
            http_status: abort
                .and_then(|a| a.http_status)
                .and_then(|s| u16::try_from(s).ok()),
            grpc_status: abort
                .and_then(|a| a.grpc_status)
                .and_then(|s| u16::try_from(s).ok()),
            abort_percent: abort.map_or(0, |a| u32::try_from(a.percent).unwrap_or(0)),
            delay: delay.and_then(|d| parse_duration(&d.fixed_delay)),
            delay_percent: delay.map_or(0, |d| u32::try_from(d.percent).unwrap_or(0)),
        }
    }

    fn http_route(&self, route: &HttpRoute) -> PolicyRoute {
        let ns = namespace(&route.metadata);
        let notes = self.notes(Some(&route.metadata));
        let rules = route
            .spec
            .rules
            .iter()
            .map(|rule| {
                let (filters, faults, mirror) = self.filters(&rule.filters, ns);
                let t = rule.timeouts.clone().unwrap_or_default();
                let timeouts = Timeouts {
                    request: t
                        .request
                        .as_deref()
                        .and_then(parse_duration)
                        .or(notes.request_timeout)
                        .filter(|d| !d.is_zero()),
                    backend_request: t
                        .backend_request
                        .as_deref()
                        .and_then(parse_duration)
                        .or(notes.response_timeout),
                    idle: notes.idle_timeout,
                };
                let retry = match &rule.retry {
                    Some(r) => Some(Retry {
                        max_retries: r.attempts.map_or(1, |a| u32::try_from(a).unwrap_or(1)),
                        http_statuses: if r.codes.is_empty() {
                            vec![(500, 599)]
                        } else {
                            r.codes
                                .iter()
                                .filter_map(|c| u16::try_from(*c).ok())
                                .map(|c| (c, c))
                                .collect()
                        },
                        grpc_statuses: Vec::new(),
                        backoff: r.backoff.as_deref().and_then(parse_duration),
                        timeout: notes.retry_timeout,
                        max_request_bytes: MAX_RETRY_BODY,
                    }),
                    None => notes.http_retry(),
                };
                PolicyRule {
                    http_matches: rule.matches.clone(),
                    grpc_matches: Vec::new(),
                    filters,
                    faults,
                    mirror,
                    backends: self.backends(&rule.backend_refs, ns),
                    timeouts,
                    retry,
                }
            })
            .collect();
        PolicyRoute {
            kind: "HTTPRoute",
            namespace: ns.to_string(),
            name: name(&route.metadata).to_string(),
            rules,
        }
    }

    fn grpc_route(&self, route: &GrpcRoute) -> PolicyRoute {
        let ns = namespace(&route.metadata);
        let notes = self.notes(Some(&route.metadata));
        let rules = route
            .spec
            .rules
            .iter()
            .map(|rule| {
                let (filters, faults, mirror) = self.filters(&rule.filters, ns);
                PolicyRule {
                    http_matches: Vec::new(),
                    grpc_matches: rule.matches.clone(),
                    filters,
                    faults,
                    mirror,
                    backends: self.backends(&rule.backend_refs, ns),
                    timeouts: Timeouts {
                        request: notes.request_timeout.filter(|d| !d.is_zero()),
                        backend_request: notes.response_timeout,
                        idle: notes.idle_timeout,
                    },
                    retry: notes.grpc_retry(),
                }
            })
            .collect();
        PolicyRoute {
            kind: "GRPCRoute",
            namespace: ns.to_string(),
            name: name(&route.metadata).to_string(),
            rules,
        }
    }
}

/// Linkerd's retry and timeout annotations: the Service's, each overridden by the route's.
#[derive(Debug, Default)]
struct Annotations {
    http: Option<Vec<(u16, u16)>>,
    grpc: Option<Vec<String>>,
    limit: Option<u32>,
    retry_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
}

impl Annotations {
    fn read(a: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| a.get(k).map(String::as_str);
        let duration = |k: &str| get(k).and_then(annotation_duration);
        Self {
            http: get("retry.linkerd.io/http").and_then(|v| parse_status_ranges(v).ok()),
            grpc: get("retry.linkerd.io/grpc").map(|v| {
                v.split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect()
            }),
            limit: get("retry.linkerd.io/limit").and_then(|v| v.trim().parse().ok()),
            retry_timeout: duration("retry.linkerd.io/timeout"),
            request_timeout: duration("timeout.linkerd.io/request"),
            response_timeout: duration("timeout.linkerd.io/response"),
            idle_timeout: duration("timeout.linkerd.io/idle"),
        }
    }

    fn asks_retry(&self) -> bool {
        self.http.is_some() || self.grpc.is_some() || self.limit.is_some()
    }

    fn http_retry(&self) -> Option<Retry> {
        self.asks_retry().then(|| Retry {
            max_retries: self.limit.unwrap_or(1),
            http_statuses: self.http.clone().unwrap_or_else(|| vec![(500, 599)]),
            grpc_statuses: Vec::new(),
            backoff: None,
            timeout: self.retry_timeout,
            max_request_bytes: MAX_RETRY_BODY,
        })
    }

    fn grpc_retry(&self) -> Option<Retry> {
        self.asks_retry().then(|| Retry {
            max_retries: self.limit.unwrap_or(1),
            http_statuses: Vec::new(),
            grpc_statuses: self
                .grpc
                .clone()
                .unwrap_or_else(|| DEFAULT_GRPC_RETRY.iter().map(ToString::to_string).collect()),
            backoff: None,
            timeout: self.retry_timeout,
            max_request_bytes: MAX_RETRY_BODY,
        })
    }
}

/// A duration in an annotation: Gateway API form (`1m30s`, `300ms`) or humantime's.
fn annotation_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    parse_duration(text).or_else(|| humantime::parse_duration(text).ok())
}

/// `retry.linkerd.io/http`: comma-separated `5xx`, `429`, `500-504`.
pub fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let bad = || format!("invalid status range {s:?}");
            if let Some(class) = s.strip_suffix("xx") {
                let c: u16 = class.parse().map_err(|_| bad())?;
                if !(1..=5).contains(&c) {
                    return Err(bad());
                }
                return Ok((c * 100, c * 100 + 99));
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let a: u16 = a.trim().parse().map_err(|_| bad())?;
            let b: u16 = b.trim().parse().map_err(|_| bad())?;
            if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
                return Err(bad());
            }
            Ok((a, b))
        })
        .collect()
}

/// What Ferry does not implement in an otherwise valid route: CORS and ExternalAuth
/// filters, `sessionPersistence`, `ExtensionRef`s to other kinds than `HTTPFault`, and
/// regular expressions the proxy cannot compile. A route with any is not accepted.
pub fn unsupported_http(route: &HttpRoute) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        if rule.session_persistence.is_some() {
            out.push(unsupported(
                &format!("{f}.sessionPersistence"),
                "sessionPersistence is not supported by Ferry",
            ));
        }
        filters_unsupported(&mut out, &format!("{f}.filters"), &rule.filters);
        for (j, b) in rule.backend_refs.iter().enumerate() {
            filters_unsupported(
                &mut out,
                &format!("{f}.backendRefs[{j}].filters"),
                &b.filters,
            );
        }
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if m.path.kind == PathMatchType::RegularExpression {
                regex_ok(&mut out, &format!("{mf}.path.value"), &m.path.value);
            }
            for (k, h) in m.headers.iter().enumerate() {
                if h.kind == StringMatchType::RegularExpression {
                    regex_ok(&mut out, &format!("{mf}.headers[{k}].value"), &h.value);
                }
            }
            for (k, q) in m.query_params.iter().enumerate() {
                if q.kind == StringMatchType::RegularExpression {
                    regex_ok(&mut out, &format!("{mf}.queryParams[{k}].value"), &q.value);
                }
            }
        }
    }
    out
}

/// [`unsupported_http`] for a `GRPCRoute`.
pub fn unsupported_grpc(route: &GrpcRoute) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        if rule.session_persistence.is_some() {
            out.push(unsupported(
                &format!("{f}.sessionPersistence"),
                "sessionPersistence is not supported by Ferry",
            ));
        }
        filters_unsupported(&mut out, &format!("{f}.filters"), &rule.filters);
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(method) = &m.method {
                if method.kind == StringMatchType::RegularExpression {
                    for (what, v) in [("service", &method.service), ("method", &method.method)] {
                        if let Some(v) = v {
                            regex_ok(&mut out, &format!("{mf}.method.{what}"), v);
                        }
                    }
                }
            }
            for (k, h) in m.headers.iter().enumerate() {
                if h.kind == StringMatchType::RegularExpression {
                    regex_ok(&mut out, &format!("{mf}.headers[{k}].value"), &h.value);
                }
            }
        }
    }
    out
}

fn unsupported(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: format!("Unsupported value: {message}"),
    }
}

fn filters_unsupported(out: &mut Vec<FieldError>, field: &str, filters: &[RouteFilter]) {
    for (i, f) in filters.iter().enumerate() {
        let ff = format!("{field}[{i}]");
        match f.kind {
            FilterType::CORS | FilterType::ExternalAuth => out.push(unsupported(
                &format!("{ff}.type"),
                &format!("the {} filter is not supported by Ferry", f.kind.as_str()),
            )),
            FilterType::ExtensionRef => {
                if let Some(e) = &f.extension_ref {
                    if e.group != POLICY_GROUP || e.kind != HTTP_FAULT_KIND {
                        out.push(unsupported(
                            &format!("{ff}.extensionRef"),
                            &format!("Ferry knows extension filters of kind {HTTP_FAULT_KIND}.{POLICY_GROUP} only, not {}.{}", e.kind, e.group),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

fn regex_ok(out: &mut Vec<FieldError>, field: &str, pattern: &str) {
    if let Err(e) = regex::Regex::new(pattern) {
        out.push(FieldError {
            field: field.to_string(),
            message: format!("Invalid value: {pattern:?}: not a regular expression: {e}"),
        });
    }
}

#[cfg(test)]
mod tests;
