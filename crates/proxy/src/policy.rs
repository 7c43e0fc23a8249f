//! Outbound policy: the routes the control plane sends for a service (Linkerd's
//! `io.linkerd.proxy.outbound.OutboundPolicies`, built from Gateway API `HTTPRoute` and
//! `GRPCRoute` documents; docs/routes.md), compiled once per update for the request path.
//!
//! One `Watch` stream per service name (or looked-up address) feeds a [`PolicyState`]
//! through the same machinery as discovery ([`crate::discover::Streams`]). A policy that
//! only sends every request to the service itself is published as [`PolicyState::None`],
//! so such services cost the request path nothing. The rest is chosen per request by
//! [`Policy::select`] and carried out by [`crate::route`].

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use http::{HeaderName, HeaderValue, Method, StatusCode};
use linkerd2_proxy_api::{
    grpc_route as gr, http_route as hr, http_types, meta,
    outbound::{self as pb, outbound_policies_client::OutboundPoliciesClient},
};
use regex::Regex;
use tokio::{sync::watch, time::Instant};
use tonic::transport::Channel;

use crate::{
    config::Authority,
    discover::{Feed, Streams},
    errors::ProxyError,
    upstream::Upstream,
};
use ferry_api::{policy as ext, ProxyErrorReason};

/// Linkerd's retry budget defaults: retries may add this share of the requests...
pub const BUDGET_RATIO: f64 = 0.2;
/// ... plus this many per second ...
pub const BUDGET_MIN_PER_SEC: u32 = 10;
/// ... counted over this window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// A retried request's body is kept up to this many bytes when the route does not say.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The current policy of one service.
#[derive(Clone, Debug)]
pub enum PolicyState {
    /// The control plane has not answered yet.
    Pending,
    /// No routes to apply: every request goes to the service itself, as without policy
    /// (the control plane knows no policy for it, or its policy is the default route).
    None,
    /// Routes to choose from per request.
    Routes(Arc<Policy>),
}

/// Compiles a policy message for a name; the upstreams make the backends' balancers.
pub type Compile =
    Arc<dyn Fn(&Authority, &ext::OutboundPolicy) -> Result<Option<Policy>, String> + Send + Sync>;

/// `OutboundPolicies.Watch`, one stream per name.
#[derive(Clone)]
pub struct PolicyFeed {
    channel: Channel,
    client: OutboundPoliciesClient<Channel>,
    workload: String,
    compile: Compile,
}

/// Outbound policies by name.
pub type Policies = Streams<PolicyFeed>;

impl Policies {
    /// Policies from the control plane on `channel`, asked for as `workload` (the context
    /// token: the control plane reads the caller's namespace from it).
    pub fn new(channel: Channel, workload: String, compile: Compile) -> Self {
        Self::with_feed(PolicyFeed {
            client: OutboundPoliciesClient::new(channel.clone()),
            channel,
            workload,
            compile,
        })
    }
}

impl Feed for PolicyFeed {
    type Value = PolicyState;

    fn pending() -> PolicyState {
        PolicyState::Pending
    }

    fn describe(value: &PolicyState) -> &'static str {
        match value {
            PolicyState::Pending => "pending",
            PolicyState::None => "none",
            PolicyState::Routes(_) => "routes",
        }
    }

    async fn stream(
        &mut self,
        name: &Authority,
        tx: &watch::Sender<PolicyState>,
        opened: impl FnOnce() + Send,
    ) -> Result<(), tonic::Status> {
        let target = match name.socket_addr() {
            Some(addr) => pb::traffic_spec::Target::Addr(addr.into()),
            None => pb::traffic_spec::Target::Authority(name.to_string()),
        };
        let spec = pb::TrafficSpec {
            source_workload: self.workload.clone(),
            target: Some(target),
        };
        let mut updates = match self.watch(spec).await {
            Ok(updates) => updates,
            Err(status) => {
                // Not a service the control plane knows (or a control plane without
                // policies): requests go to the name itself. Asked again after a backoff.
                if matches!(
                    status.code(),
                    tonic::Code::NotFound
                        | tonic::Code::Unimplemented
                        | tonic::Code::InvalidArgument
                ) {
                    tx.send_replace(PolicyState::None);
                }
                return Err(status);
            }
        };
        opened();
        while let Some(policy) = tokio_stream::StreamExt::next(&mut updates)
            .await
            .transpose()?
        {
            match (self.compile)(name, &policy) {
                Ok(Some(p)) => {
                    tracing::debug!(%name, routes = p.routes.len(), "outbound policy");
                    tx.send_replace(PolicyState::Routes(Arc::new(p)));
                }
                Ok(None) => {
                    tx.send_replace(PolicyState::None);
                }
                // The last good policy stays.
                Err(error) => tracing::warn!(%name, %error, "invalid outbound policy ignored"),
            }
        }
        Ok(())
    }
}

impl PolicyFeed {
    /// Ferry's `Watch` (with the rules' extensions), or Linkerd's when the control plane
    /// does not serve Ferry's.
    async fn watch(
        &mut self,
        spec: pb::TrafficSpec,
    ) -> Result<crate::discover::Answers<ext::OutboundPolicy>, tonic::Status> {
        let mut client = self.client.clone();
        crate::discover::ferry_or_linkerd(&self.channel, ext::WATCH, spec, |spec| async move {
            client.watch(spec).await
        })
        .await
    }
}

/// A Kubernetes object reference as metric labels: `{prefix}_group`, `_kind`,
/// `_namespace`, `_name` (and `_port` when set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectLabels {
    /// API group (`core` for Services).
    pub group: Arc<str>,
    /// Kind.
    pub kind: Arc<str>,
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// Port, for Services.
    pub port: u16,
}

impl ObjectLabels {
    pub(crate) fn from_meta(m: Option<&meta::Metadata>) -> Self {
        match m.and_then(|m| m.kind.as_ref()) {
            Some(meta::metadata::Kind::Resource(r)) => Self {
                group: r.group.as_str().into(),
                kind: r.kind.as_str().into(),
                namespace: r.namespace.as_str().into(),
                name: r.name.as_str().into(),
                port: u16::try_from(r.port).unwrap_or(0),
            },
            Some(meta::metadata::Kind::Default(name)) => Self {
                group: "".into(),
                kind: "default".into(),
                namespace: "".into(),
                name: name.as_str().into(),
                port: 0,
            },
            None => Self::default(),
        }
    }
}

/// The compiled policy of one service port.
pub struct Policy {
    /// The Service the policy is for.
    pub parent: ObjectLabels,
    /// gRPC routes (the port is served as gRPC) or HTTP ones.
    pub grpc: bool,
    /// Routes, in the order the control plane sent them (oldest first).
    pub routes: Vec<Route>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("parent", &self.parent)
            .field("grpc", &self.grpc)
            .field("routes", &self.routes.len())
            .finish()
    }
}

/// One route: its rules and its metrics.
pub struct Route {
    /// What the route is (`HTTPRoute`, `GRPCRoute`, or a default).
    pub labels: ObjectLabels,
    /// Its rules.
    pub rules: Vec<Rule>,
    /// Its counters, looked up in the registry by the first request (not by every one).
    pub metrics: std::sync::OnceLock<Arc<crate::metrics::RouteMetrics>>,
}

/// One rule: when it applies, what it does, where requests go.
pub struct Rule {
    matches: Vec<Match>,
    /// Filters applied to every request of the rule, in order.
    pub filters: Vec<Filter>,
    /// Weighted backends; requests are spread by weight.
    pub backends: Vec<RouteBackend>,
    total_weight: u64,
    /// `timeouts.request`: the whole exchange, retries included, up to the response head.
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`: each try, up to its response head.
    pub backend_timeout: Option<Duration>,
    /// Retries, if the rule has any.
    pub retry: Option<Retry>,
    /// What retries may draw on.
    pub budget: Arc<Budget>,
    /// A copy of a share of requests to another backend (Ferry's extension).
    pub mirror: Option<RouteMirror>,
    /// A delay before a share of requests (an `HTTPFault`'s; Ferry's extension).
    pub delay: Option<(Duration, f64)>,
    /// A change of host and path (`URLRewrite`; Ferry's extension).
    pub rewrite: Option<Rewrite>,
}

/// A rule's `RequestMirror`.
pub struct RouteMirror {
    /// Where copies go.
    pub upstream: Upstream,
    /// The share of requests copied, 0 to 1.
    pub ratio: f64,
    /// The mirror Service, for logs.
    pub labels: ObjectLabels,
}

/// A rule's `URLRewrite`.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// The new host, if any.
    pub hostname: Option<String>,
    /// The new path: the whole of it, or what replaces the matched prefix.
    path: Option<PathModifier>,
}

impl Rewrite {
    /// The rewritten path (and query) for `path`, matched by `prefix` when the rule
    /// matched by a prefix.
    pub fn path(&self, path: &str, query: Option<&str>, prefix: Option<&str>) -> Option<String> {
        let new = match self.path.as_ref()? {
            PathModifier::Full(p) => p.clone(),
            PathModifier::Prefix(p) => replace_prefix(path, p, prefix),
        };
        Some(match query {
            Some(q) => format!("{new}?{q}"),
            None => new,
        })
    }
}

/// `path` with its matched `prefix` replaced by `with` (Gateway API `ReplacePrefixMatch`).
fn replace_prefix(path: &str, with: &str, prefix: Option<&str>) -> String {
    let rest = prefix
        .map(|m| m.trim_end_matches('/'))
        .and_then(|m| path.strip_prefix(m))
        .unwrap_or(path);
    let with = with.trim_end_matches('/');
    match (with.is_empty(), rest.is_empty()) {
        (true, true) => "/".to_string(),
        (true, false) => rest.to_string(),
        (false, _) => format!("{with}{rest}"),
    }
}

fn extend(rule: &mut Rule, x: &ext::RuleExtension, backends: &dyn Backends) -> Result<(), String> {
    if let Some(m) = &x.mirror {
        if let Some(upstream) = backends.backend(&m.path) {
            rule.mirror = Some(RouteMirror {
                upstream,
                ratio: if m.denominator == 0 {
                    0.0
                } else {
                    f64::from(m.numerator) / f64::from(m.denominator)
                },
                labels: ObjectLabels::from_meta(m.metadata.as_ref()),
            });
        }
    }
    if let Some(d) = &x.delay {
        if let Some(fixed) = duration(d.fixed.as_ref()) {
            rule.delay = Some((fixed, f64::from(d.percent.min(100)) / 100.0));
        }
    }
    if let Some(r) = &x.rewrite {
        rule.rewrite = Some(Rewrite {
            hostname: (!r.hostname.is_empty()).then(|| r.hostname.clone()),
            path: match (&r.full_path, &r.prefix) {
                (Some(f), _) => Some(PathModifier::Full(f.clone())),
                (None, Some(p)) => Some(PathModifier::Prefix(p.clone())),
                (None, None) => None,
            },
        });
    }
    Ok(())
}

/// A backend of a rule.
pub struct RouteBackend {
    /// Its weight.
    pub weight: u32,
    /// Where its requests go; `None` when it does not resolve (its filters then fail them).
    pub upstream: Option<Upstream>,
    /// The backend Service, for metrics.
    pub labels: ObjectLabels,
    /// Filters for requests sent to this backend.
    pub filters: Vec<Filter>,
}

/// What a rule may do to a request.
pub enum Filter {
    /// Fail a share of requests with this error (an `HTTPFault`'s abort, or a backend
    /// that does not resolve).
    Abort {
        /// The error, with its statuses.
        error: ProxyError,
        /// The share of requests, 0 to 1.
        ratio: f64,
    },
    /// Change the request's headers.
    RequestHeaders(HeaderModifier),
    /// Change the response's headers.
    ResponseHeaders(HeaderModifier),
    /// Answer with a redirect.
    Redirect(Redirect),
}

impl Clone for Filter {
    fn clone(&self) -> Self {
        match self {
            Self::Abort { error, ratio } => Self::Abort {
                error: ProxyError {
                    reason: error.reason,
                    detail: error.detail.clone(),
                    statuses: error.statuses,
                },
                ratio: *ratio,
            },
            Self::RequestHeaders(m) => Self::RequestHeaders(m.clone()),
            Self::ResponseHeaders(m) => Self::ResponseHeaders(m.clone()),
            Self::Redirect(r) => Self::Redirect(r.clone()),
        }
    }
}

/// Header additions, replacements and removals.
#[derive(Clone, Default)]
pub struct HeaderModifier {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A `RequestRedirect` filter.
#[derive(Clone)]
pub struct Redirect {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<PathModifier>,
    status: StatusCode,
}

#[derive(Clone, Debug)]
enum PathModifier {
    Full(String),
    Prefix(String),
}

/// A rule's retry policy.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Retries per request at most.
    pub max_retries: u32,
    /// Request bodies up to this size are kept for retries; larger ones are not retried.
    pub max_request_bytes: usize,
    /// HTTP statuses that are retried (inclusive ranges).
    pub statuses: Vec<(u16, u16)>,
    /// gRPC statuses that are retried.
    pub grpc: Vec<u16>,
    /// Each try's timeout (its response head).
    pub timeout: Option<Duration>,
    /// Backoff between tries: first, most, and jitter ratio.
    pub backoff: Option<(Duration, Duration, f64)>,
}

impl Retry {
    /// Whether a response with `status` (and `grpc_status` in its head) is retried.
    pub fn retries(&self, status: u16, grpc_status: Option<u16>) -> bool {
        match grpc_status {
            Some(g) => self.grpc.contains(&g),
            None => self
                .statuses
                .iter()
                .any(|&(a, b)| (a..=b).contains(&status)),
        }
    }

    /// How long to wait before retry number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let Some((first, most, jitter)) = self.backoff else {
            return Duration::ZERO;
        };
        let base = first
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(most);
        let jitter = base.mul_f64(jitter.clamp(0.0, 1.0) * fastrand::f64());
        base + jitter
    }
}

/// A retry budget (Linkerd's): over the last [`BUDGET_WINDOW`], retries may number
/// `BUDGET_MIN_PER_SEC` per second plus `BUDGET_RATIO` of the requests, so retries never
/// multiply the load on a failing backend.
///
/// Every request of a rule counts here, from every connection and thread, so counting
/// takes no lock: each second of the window has a slot in a ring (by its second since the
/// budget was made) holding that second and its count in one word, bumped with one
/// compare-and-swap. A slot still holding a second the window has left is started afresh.
pub struct Budget {
    ratio: f64,
    min_per_sec: u32,
    /// When the budget was made: slots are whole seconds since.
    epoch: Instant,
    /// Requests per second of the window, as `second << 32 | count`.
    requests: Box<[AtomicU64]>,
    /// Retries likewise.
    retries: Box<[AtomicU64]>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(BUDGET_RATIO, BUDGET_MIN_PER_SEC, BUDGET_WINDOW)
    }
}

impl Budget {
    /// A budget allowing `min_per_sec` retries a second plus `ratio` of the requests over
    /// `window` (whole seconds).
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> Self {
        // One slot more than the window's seconds: the slot a new second takes never
        // holds a second still inside the window.
        let slots = || {
            (0..=window.as_secs().max(1))
                .map(|_| AtomicU64::new(0))
                .collect()
        };
        Self {
            ratio,
            min_per_sec,
            epoch: Instant::now(),
            requests: slots(),
            retries: slots(),
        }
    }

    /// The window's length in seconds.
    fn window(&self) -> u64 {
        self.requests.len() as u64 - 1
    }

    /// `now`'s second, counted from the budget's making.
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() & u64::from(u32::MAX)
    }

    /// Counts one at second `sec` in `ring`.
    fn bump(ring: &[AtomicU64], sec: u64) {
        let slot = &ring[(sec % ring.len() as u64) as usize];
        let _ = slot.fetch_update(Relaxed, Relaxed, |word| {
            Some(match word >> 32 == sec {
                true => word + 1,
                false => sec << 32 | 1,
            })
        });
    }

    /// The counts of `ring` over the window ending at second `sec`.
    fn sum(&self, ring: &[AtomicU64], sec: u64) -> u64 {
        ring.iter()
            .map(|slot| slot.load(Relaxed))
            .filter(|word| (word >> 32) <= sec && (word >> 32) + self.window() > sec)
            .map(|word| word & u64::from(u32::MAX))
            .sum()
    }

    /// Counts a request (not a retry) that arrived at `now` (the request's own clock
    /// reading, so counting it reads no clock).
    pub fn deposit(&self, now: Instant) {
        Self::bump(&self.requests, self.second(now));
    }

    /// Takes one retry from the budget, if it has one. Retries taken at the same moment
    /// on several threads may each see the last one left.
    pub fn withdraw(&self) -> bool {
        let sec = self.second(Instant::now());
        let reserve = f64::from(self.min_per_sec) * self.window() as f64;
        let allowed = reserve + self.ratio * self.sum(&self.requests, sec) as f64;
        if self.sum(&self.retries, sec) as f64 + 1.0 > allowed {
            return false;
        }
        Self::bump(&self.retries, sec);
        true
    }
}

/// A request as routes see it: the fast path's raw head and hyper's parsed one both are.
pub trait RequestView {
    /// The method.
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// The query, without `?`.
    fn query(&self) -> Option<&str>;
    /// Whether any value of header `name` satisfies `f`.
    fn any_header(&self, name: &HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

impl<B> RequestView for http::Request<B> {
    fn method(&self) -> &str {
        self.method().as_str()
    }
    fn path(&self) -> &str {
        self.uri().path()
    }
    fn query(&self) -> Option<&str> {
        self.uri().query()
    }
    fn any_header(&self, name: &HeaderName, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.headers().get_all(name).iter().any(|v| f(v.as_bytes()))
    }
}

pub(crate) enum StrMatch {
    Exact(Vec<u8>),
    Regex(Regex),
}

impl StrMatch {
    fn is_match(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(e) => e == value,
            Self::Regex(r) => std::str::from_utf8(value).is_ok_and(|v| full_match(r, v)),
        }
    }
}

/// Gateway API regular expressions match the whole value.
fn full_match(r: &Regex, v: &str) -> bool {
    r.find(v)
        .is_some_and(|m| m.start() == 0 && m.end() == v.len())
}

pub(crate) enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex, usize),
}

pub(crate) enum Match {
    Http {
        path: Option<PathMatch>,
        headers: Vec<(HeaderName, StrMatch)>,
        query: Vec<(String, StrMatch)>,
        method: Option<Method>,
    },
    Grpc {
        service: Option<String>,
        method: Option<String>,
        headers: Vec<(HeaderName, StrMatch)>,
    },
}

/// How specific a match is: the larger wins (Gateway API precedence; regular expressions
/// rank between exact paths and prefixes, longer first, as Linkerd's proxy ranks them).
pub(crate) type Rank = (u8, usize, bool, usize, usize);

impl Match {
    pub(crate) fn rank(&self) -> Rank {
        match self {
            Self::Http {
                path,
                headers,
                query,
                method,
            } => {
                let (kind, len) = match path {
                    Some(PathMatch::Exact(p)) => (3, p.len()),
                    Some(PathMatch::Regex(_, len)) => (2, *len),
                    Some(PathMatch::Prefix(p)) => (1, p.len()),
                    None => (1, 1),
                };
                (kind, len, method.is_some(), headers.len(), query.len())
            }
            Self::Grpc {
                service,
                method,
                headers,
            } => (
                1,
                service.as_ref().map_or(0, String::len),
                method.is_some(),
                method.as_ref().map_or(0, String::len),
                headers.len(),
            ),
        }
    }

    pub(crate) fn is_match(&self, req: &dyn RequestView) -> bool {
        let headers_match = |headers: &[(HeaderName, StrMatch)]| {
            headers
                .iter()
                .all(|(name, m)| req.any_header(name, &mut |v| m.is_match(v)))
        };
        match self {
            Self::Http {
                path,
                headers,
                query,
                method,
            } => {
                if method.as_ref().is_some_and(|m| m.as_str() != req.method()) {
                    return false;
                }
                let p = req.path();
                let path_ok = match path {
                    None => true,
                    Some(PathMatch::Exact(e)) => p == e,
                    Some(PathMatch::Prefix(pre)) => prefix_matches(p, pre),
                    Some(PathMatch::Regex(r, _)) => full_match(r, p),
                };
                path_ok
                    && headers_match(headers)
                    && query.iter().all(|(name, m)| {
                        req.query().is_some_and(|q| {
                            q.split('&')
                                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                                .find(|(k, _)| k == name)
                                .is_some_and(|(_, v)| m.is_match(v.as_bytes()))
                        })
                    })
            }
            Self::Grpc {
                service,
                method,
                headers,
            } => {
                // `/package.Service/Method`
                let mut parts = req.path().trim_start_matches('/').splitn(2, '/');
                let (svc, m) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                service.as_ref().is_none_or(|s| s == svc)
                    && method.as_ref().is_none_or(|x| x == m)
                    && headers_match(headers)
            }
        }
    }
}

/// Gateway API `PathPrefix`: matches whole path segments (`/api` matches `/api` and
/// `/api/x`, not `/apix`); a trailing `/` in the prefix is ignored.
fn prefix_matches(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Policy {
    /// The route and rule for a request: the most specific matching rule of all routes,
    /// ties going to the earlier route, then the earlier rule. `None`: nothing matches.
    pub fn select(&self, req: &dyn RequestView) -> Option<(&Route, &Rule)> {
        let mut best: Option<(Rank, &Route, &Rule)> = None;
        for route in &self.routes {
            for rule in &route.rules {
                let rank = if rule.matches.is_empty() {
                    // A rule without matches matches everything, as a `/` prefix.
                    Some((1, 1, false, 0, 0))
                } else {
                    rule.matches
                        .iter()
                        .filter(|m| m.is_match(req))
                        .map(Match::rank)
                        .max()
                };
                if let Some(rank) = rank {
                    if best.as_ref().is_none_or(|(b, _, _)| rank > *b) {
                        best = Some((rank, route, rule));
                    }
                }
            }
        }
        best.map(|(_, route, rule)| (route, rule))
    }
}

impl Rule {
    /// Picks a backend by weight (`None`: the rule has none, or all weigh nothing).
    pub fn pick_backend(&self) -> Option<&RouteBackend> {
        if self.total_weight == 0 {
            return None;
        }
        if self.backends.len() == 1 {
            return self.backends.first();
        }
        let mut n = fastrand::u64(..self.total_weight);
        for b in &self.backends {
            let w = u64::from(b.weight);
            if n < w {
                return Some(b);
            }
            n -= w;
        }
        self.backends.last()
    }
}

impl Filter {
    /// Whether an `Abort` fires for this request (by its ratio).
    pub fn aborts(&self) -> Option<ProxyError> {
        match self {
            Self::Abort { error, ratio } if *ratio >= 1.0 || fastrand::f64() < *ratio => {
                Some(ProxyError {
                    reason: error.reason,
                    detail: error.detail.clone(),
                    statuses: error.statuses,
                })
            }
            _ => None,
        }
    }
}

impl Redirect {
    /// The `Location` for a request to `authority` with `path` and `query`.
    pub fn location(
        &self,
        authority: &str,
        path: &str,
        query: Option<&str>,
        matched_prefix: Option<&str>,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()),
            _ => (authority, None),
        };
        let host = self.host.as_deref().unwrap_or(host);
        let port = self
            .port
            .or(port)
            .filter(|p| !((scheme == "http" && *p == 80) || (scheme == "https" && *p == 443)));
        let path = match &self.path {
            None => path.to_string(),
            Some(PathModifier::Full(p)) => p.clone(),
            Some(PathModifier::Prefix(p)) => replace_prefix(path, p, matched_prefix),
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(port) = port {
            out.push_str(&format!(":{port}"));
        }
        out.push_str(if path.is_empty() { "/" } else { &path });
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// The redirect's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// The path of this rule's match that `req` matched (exact, prefix or regular expression):
/// the route's path, as tracing's `http.route` names it.
pub fn matched_path<'a>(rule: &'a Rule, req: &dyn RequestView) -> Option<&'a str> {
    rule.matches.iter().find_map(|m| match m {
        Match::Http {
            path: Some(path), ..
        } if m.is_match(req) => Some(match path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p.as_str(),
            PathMatch::Regex(r, _) => r.as_str(),
        }),
        _ => None,
    })
}

/// Whether this rule's prefix match for `req` (if it matched by prefix) is `Some(prefix)`,
/// for redirects that replace a prefix.
pub fn matched_prefix<'a>(rule: &'a Rule, req: &dyn RequestView) -> Option<&'a str> {
    rule.matches.iter().find_map(|m| match m {
        Match::Http {
            path: Some(PathMatch::Prefix(p)),
            ..
        } if m.is_match(req) => Some(p.as_str()),
        _ => None,
    })
}

// ---- compiling Linkerd's messages ----

fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero())
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(name).map_err(|_| format!("invalid header name {name:?}"))
}

fn str_match_regex(r: &str) -> Result<Regex, String> {
    Regex::new(r).map_err(|e| format!("invalid regular expression {r:?}: {e}"))
}

fn header_matches(list: &[hr::HeaderMatch]) -> Result<Vec<(HeaderName, StrMatch)>, String> {
    list.iter()
        .map(|h| {
            let m = match &h.value {
                Some(hr::header_match::Value::Exact(v)) => StrMatch::Exact(v.clone()),
                Some(hr::header_match::Value::Regex(r)) => StrMatch::Regex(str_match_regex(r)?),
                None => return Err(format!("header match {:?} without a value", h.name)),
            };
            Ok((header_name(&h.name)?, m))
        })
        .collect()
}

pub(crate) fn http_match(m: &hr::HttpRouteMatch) -> Result<Match, String> {
    let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => None,
        Some(hr::path_match::Kind::Exact(p)) => Some(PathMatch::Exact(p.clone())),
        Some(hr::path_match::Kind::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
        Some(hr::path_match::Kind::Regex(r)) => {
            Some(PathMatch::Regex(str_match_regex(r)?, r.len()))
        }
    };
    let query = m
        .query_params
        .iter()
        .map(|q| {
            let v = match &q.value {
                Some(hr::query_param_match::Value::Exact(v)) => {
                    StrMatch::Exact(v.clone().into_bytes())
                }
                Some(hr::query_param_match::Value::Regex(r)) => {
                    StrMatch::Regex(str_match_regex(r)?)
                }
                None => return Err(format!("query match {:?} without a value", q.name)),
            };
            Ok((q.name.clone(), v))
        })
        .collect::<Result<_, String>>()?;
    let method = m
        .method
        .as_ref()
        .map(|m| match &m.r#type {
            Some(http_types::http_method::Type::Registered(r)) => {
                use http_types::http_method::Registered as R;
                Ok(match R::try_from(*r).unwrap_or(R::Get) {
                    R::Get => Method::GET,
                    R::Post => Method::POST,
                    R::Put => Method::PUT,
                    R::Delete => Method::DELETE,
                    R::Patch => Method::PATCH,
                    R::Options => Method::OPTIONS,
                    R::Connect => Method::CONNECT,
                    R::Head => Method::HEAD,
                    R::Trace => Method::TRACE,
                })
            }
            Some(http_types::http_method::Type::Unregistered(u)) => {
                Method::from_bytes(u.as_bytes()).map_err(|_| format!("invalid method {u:?}"))
            }
            None => Err("method match without a method".to_string()),
        })
        .transpose()?;
    Ok(Match::Http {
        path,
        headers: header_matches(&m.headers)?,
        query,
        method,
    })
}

pub(crate) fn grpc_match(m: &gr::GrpcRouteMatch) -> Result<Match, String> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(Match::Grpc {
        service: m.rpc.as_ref().and_then(|r| nonempty(&r.service)),
        method: m.rpc.as_ref().and_then(|r| nonempty(&r.method)),
        headers: header_matches(&m.headers)?,
    })
}

fn headers(h: Option<&http_types::Headers>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    h.map(|h| h.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|h| {
            Ok((
                header_name(&h.name)?,
                HeaderValue::from_bytes(&h.value)
                    .map_err(|_| format!("invalid value for header {:?}", h.name))?,
            ))
        })
        .collect()
}

fn modifier(
    add: Option<&http_types::Headers>,
    set: Option<&http_types::Headers>,
    remove: &[String],
) -> Result<HeaderModifier, String> {
    Ok(HeaderModifier {
        add: headers(add)?,
        set: headers(set)?,
        remove: remove
            .iter()
            .map(|n| header_name(n))
            .collect::<Result<_, _>>()?,
    })
}

fn ratio(r: Option<&hr::Ratio>) -> f64 {
    match r {
        None => 1.0,
        Some(r) if r.denominator == 0 => 0.0,
        Some(r) => f64::from(r.numerator) / f64::from(r.denominator),
    }
}

fn abort(status: StatusCode, grpc: u16, message: &str, ratio: f64) -> Filter {
    Filter::Abort {
        error: ProxyError::new(ProxyErrorReason::FaultInjected, message)
            .with_statuses(status, grpc),
        ratio,
    }
}

fn http_filter(f: &pb::http_route::Filter) -> Result<Option<Filter>, String> {
    use pb::http_route::filter::Kind;
    Ok(match &f.kind {
        None => None,
        Some(Kind::FailureInjector(fi)) => {
            let status = u16::try_from(fi.status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| format!("invalid fault status {}", fi.status))?;
            Some(abort(status, 2, &fi.message, ratio(fi.ratio.as_ref())))
        }
        Some(Kind::RequestHeaderModifier(m)) => Some(Filter::RequestHeaders(modifier(
            m.add.as_ref(),
            m.set.as_ref(),
            &m.remove,
        )?)),
        Some(Kind::ResponseHeaderModifier(m)) => Some(Filter::ResponseHeaders(modifier(
            m.add.as_ref(),
            m.set.as_ref(),
            &m.remove,
        )?)),
        Some(Kind::Redirect(r)) => Some(Filter::Redirect(Redirect {
            scheme: r.scheme.as_ref().and_then(|s| match &s.r#type {
                Some(http_types::scheme::Type::Registered(x)) => {
                    use http_types::scheme::Registered as S;
                    Some(match S::try_from(*x).unwrap_or(S::Http) {
                        S::Http => "http".to_string(),
                        S::Https => "https".to_string(),
                    })
                }
                Some(http_types::scheme::Type::Unregistered(u)) => Some(u.clone()),
                None => None,
            }),
            host: (!r.host.is_empty()).then(|| r.host.clone()),
            port: u16::try_from(r.port).ok().filter(|p| *p != 0),
            path: r.path.as_ref().and_then(|p| match &p.replace {
                Some(hr::path_modifier::Replace::Full(f)) => Some(PathModifier::Full(f.clone())),
                Some(hr::path_modifier::Replace::Prefix(p)) => {
                    Some(PathModifier::Prefix(p.clone()))
                }
                None => None,
            }),
            status: u16::try_from(r.status)
                .ok()
                .filter(|s| *s != 0)
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::FOUND),
        })),
    })
}

fn grpc_filter(f: &pb::grpc_route::Filter) -> Result<Option<Filter>, String> {
    use pb::grpc_route::filter::Kind;
    Ok(match &f.kind {
        None => None,
        Some(Kind::FailureInjector(fi)) => Some(abort(
            StatusCode::OK,
            u16::try_from(fi.code).unwrap_or(2),
            &fi.message,
            ratio(fi.ratio.as_ref()),
        )),
        Some(Kind::RequestHeaderModifier(m)) => Some(Filter::RequestHeaders(modifier(
            m.add.as_ref(),
            m.set.as_ref(),
            &m.remove,
        )?)),
    })
}

fn backoff(b: Option<&pb::ExponentialBackoff>) -> Option<(Duration, Duration, f64)> {
    let b = b?;
    let min = duration(b.min_backoff.as_ref())?;
    let max = duration(b.max_backoff.as_ref()).unwrap_or(min).max(min);
    Some((min, max, b.jitter_ratio.into()))
}

fn max_bytes(n: u32) -> usize {
    if n == 0 {
        DEFAULT_MAX_REQUEST_BYTES
    } else {
        n as usize
    }
}

/// The backend's Service name and port as a discovery path, when it is balanced.
fn backend_path(b: &pb::Backend) -> Option<&str> {
    match &b.kind {
        Some(pb::backend::Kind::Balancer(p2c)) => match p2c.discovery.as_ref()?.kind.as_ref()? {
            pb::backend::endpoint_discovery::Kind::Dst(d) => Some(d.path.as_str()),
        },
        _ => None,
    }
}

/// What a compiled policy needs from the proxy: an upstream for a backend's discovery
/// path (`None` when the path is not a valid authority).
pub trait Backends {
    /// The upstream for `path`.
    fn backend(&self, path: &str) -> Option<Upstream>;
}

struct RawRule<'a, F> {
    matches: Result<Vec<Match>, String>,
    filters: &'a [F],
    timeouts: Option<&'a hr::Timeouts>,
    retry: Option<Retry>,
    backends: Vec<(u32, Option<&'a pb::Backend>, &'a [F])>,
}

fn rule<F>(
    raw: RawRule<'_, F>,
    filter: impl Fn(&F) -> Result<Option<Filter>, String>,
    backends: &dyn Backends,
) -> Result<Rule, String> {
    let filters = |list: &[F]| -> Result<Vec<Filter>, String> {
        Ok(list
            .iter()
            .map(&filter)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect())
    };
    let mut out = Vec::new();
    for (weight, backend, fs) in raw.backends {
        let upstream = backend
            .and_then(backend_path)
            .and_then(|p| backends.backend(p));
        out.push(RouteBackend {
            weight,
            upstream,
            labels: ObjectLabels::from_meta(backend.and_then(|b| b.metadata.as_ref())),
            filters: filters(fs)?,
        });
    }
    let total_weight = out.iter().map(|b| u64::from(b.weight)).sum();
    Ok(Rule {
        matches: raw.matches?,
        filters: filters(raw.filters)?,
        backends: out,
        total_weight,
        request_timeout: raw.timeouts.and_then(|t| duration(t.request.as_ref())),
        backend_timeout: raw.timeouts.and_then(|t| duration(t.response.as_ref())),
        retry: raw.retry,
        budget: Arc::default(),
        mirror: None,
        delay: None,
        rewrite: None,
    })
}

/// Compiles `policy` for `name`: `Ok(None)` when it is nothing but the default route to the
/// service itself (requests then take the plain path).
pub fn compile(
    policy: &ext::OutboundPolicy,
    backends: &dyn Backends,
) -> Result<Option<Policy>, String> {
    use pb::proxy_protocol::Kind;
    let parent = ObjectLabels::from_meta(policy.metadata.as_ref());
    let kind = policy
        .protocol
        .as_ref()
        .and_then(|p| p.kind.as_ref())
        .ok_or("policy without a protocol")?;
    let (grpc, routes) = match kind {
        Kind::Detect(d) => (
            false,
            http_routes(d.http1.as_ref().map(|h| h.routes.as_slice()))?,
        ),
        Kind::Http1(h) => (false, http_routes(Some(&h.routes))?),
        Kind::Http2(h) => (false, http_routes(Some(&h.routes))?),
        Kind::Grpc(g) => (true, grpc_routes(&g.routes)?),
        Kind::Opaque(_) | Kind::Tls(_) => return Ok(None),
    };
    if policy.rule_extensions.is_empty() && is_default(&parent, &routes) {
        return Ok(None);
    }
    let mut routes: Vec<Route> = routes
        .into_iter()
        .map(|r| {
            Ok(Route {
                metrics: std::sync::OnceLock::new(),
                labels: r.labels,
                rules: r
                    .rules
                    .into_iter()
                    .map(|raw| match raw {
                        AnyRule::Http(raw) => rule(raw, http_filter, backends),
                        AnyRule::Grpc(raw) => rule(raw, grpc_filter, backends),
                    })
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    for x in &policy.rule_extensions {
        let rule = routes
            .get_mut(x.route as usize)
            .and_then(|r| r.rules.get_mut(x.rule as usize))
            .ok_or_else(|| {
                format!(
                    "extension for route {} rule {}: no such rule",
                    x.route, x.rule
                )
            })?;
        extend(rule, x, backends)?;
    }
    Ok(Some(Policy {
        parent,
        grpc,
        routes,
    }))
}

enum AnyRule<'a> {
    Http(RawRule<'a, pb::http_route::Filter>),
    Grpc(RawRule<'a, pb::grpc_route::Filter>),
}

struct RawRoute<'a> {
    labels: ObjectLabels,
    rules: Vec<AnyRule<'a>>,
}

/// A rule's backends as `(weight, backend, filters)`, from either route kind's
/// `Distribution` (`D` its `Kind`): the first of `FirstAvailable`, every weighted one of
/// `RandomAvailable`.
macro_rules! rule_backends {
    ($dist:expr, $kind:ident) => {
        match $dist.and_then(|d| d.kind.as_ref()) {
            Some($kind::FirstAvailable(f)) => f
                .backends
                .iter()
                .take(1)
                .map(|b| (1, b.backend.as_ref(), b.filters.as_slice()))
                .collect(),
            Some($kind::RandomAvailable(r)) => r
                .backends
                .iter()
                .filter_map(|w| {
                    let b = w.backend.as_ref()?;
                    Some((w.weight, b.backend.as_ref(), b.filters.as_slice()))
                })
                .collect(),
            Some($kind::Empty(_)) | None => Vec::new(),
        }
    };
}

fn http_routes(routes: Option<&[pb::HttpRoute]>) -> Result<Vec<RawRoute<'_>>, String> {
    use pb::http_route::distribution::Kind as D;
    Ok(routes
        .unwrap_or_default()
        .iter()
        .map(|r| RawRoute {
            labels: ObjectLabels::from_meta(r.metadata.as_ref()),
            rules: r
                .rules
                .iter()
                .map(|rule| {
                    let backends = rule_backends!(rule.backends.as_ref(), D);
                    AnyRule::Http(RawRule {
                        matches: rule.matches.iter().map(http_match).collect(),
                        filters: &rule.filters,
                        timeouts: rule.timeouts.as_ref(),
                        retry: rule.retry.as_ref().map(|r| Retry {
                            max_retries: r.max_retries,
                            max_request_bytes: max_bytes(r.max_request_bytes),
                            statuses: r
                                .conditions
                                .as_ref()
                                .map(|c| {
                                    c.status_ranges
                                        .iter()
                                        .map(|s| {
                                            let clamp =
                                                |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                                            (clamp(s.start), clamp(s.end))
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                            grpc: Vec::new(),
                            timeout: duration(r.timeout.as_ref()),
                            backoff: backoff(r.backoff.as_ref()),
                        }),
                        backends,
                    })
                })
                .collect(),
        })
        .collect())
}

fn grpc_routes(routes: &[pb::GrpcRoute]) -> Result<Vec<RawRoute<'_>>, String> {
    use pb::grpc_route::distribution::Kind as D;
    Ok(routes
        .iter()
        .map(|r| RawRoute {
            labels: ObjectLabels::from_meta(r.metadata.as_ref()),
            rules: r
                .rules
                .iter()
                .map(|rule| {
                    let backends = rule_backends!(rule.backends.as_ref(), D);
                    AnyRule::Grpc(RawRule {
                        matches: rule.matches.iter().map(grpc_match).collect(),
                        filters: &rule.filters,
                        timeouts: rule.timeouts.as_ref(),
                        retry: rule.retry.as_ref().map(|r| {
                            let c = r.conditions.unwrap_or_default();
                            let grpc = [
                                (c.cancelled, 1),
                                (c.deadine_exceeded, 4),
                                (c.resource_exhausted, 8),
                                (c.internal, 13),
                                (c.unavailable, 14),
                            ]
                            .into_iter()
                            .filter_map(|(on, code)| on.then_some(code))
                            .collect();
                            Retry {
                                max_retries: r.max_retries,
                                max_request_bytes: max_bytes(r.max_request_bytes),
                                statuses: Vec::new(),
                                grpc,
                                timeout: duration(r.timeout.as_ref()),
                                backoff: backoff(r.backoff.as_ref()),
                            }
                        }),
                        backends,
                    })
                })
                .collect(),
        })
        .collect())
}

/// Whether `routes` is only the default: one route of kind `default`, one rule without
/// matches (or a `/` prefix), filters, timeouts or retries, sending to the parent itself.
fn is_default(parent: &ObjectLabels, routes: &[RawRoute<'_>]) -> bool {
    let [route] = routes else { return false };
    let [AnyRule::Http(rule)] = route.rules.as_slice() else {
        return false;
    };
    let only_root = rule.matches.as_ref().is_ok_and(|ms| {
        ms.iter().all(|m| match m {
            Match::Http {
                path,
                headers,
                query,
                method: None,
            } if headers.is_empty() && query.is_empty() => match path {
                None => true,
                Some(PathMatch::Prefix(p)) => p == "/" || p.is_empty(),
                _ => false,
            },
            _ => false,
        })
    });
    let [(_, Some(backend), backend_filters)] = rule.backends.as_slice() else {
        return false;
    };
    let to_parent = ObjectLabels::from_meta(backend.metadata.as_ref()) == *parent;
    &*route.labels.kind == "default"
        && only_root
        && rule.filters.is_empty()
        && backend_filters.is_empty()
        && rule
            .timeouts
            .is_none_or(|t| t.request.is_none() && t.response.is_none())
        && rule.retry.is_none()
        && to_parent
}

/// The failure accrual (circuit breaking) `policy` asks for its backends' endpoints.
pub fn accrual(policy: &ext::OutboundPolicy) -> Option<crate::balance::Accrual> {
    use pb::proxy_protocol::Kind;
    let fa = match policy.protocol.as_ref()?.kind.as_ref()? {
        Kind::Detect(d) => d.http1.as_ref()?.failure_accrual.as_ref(),
        Kind::Http1(h) => h.failure_accrual.as_ref(),
        Kind::Http2(h) => h.failure_accrual.as_ref(),
        Kind::Grpc(g) => g.failure_accrual.as_ref(),
        Kind::Opaque(_) | Kind::Tls(_) => None,
    }?;
    let pb::failure_accrual::Kind::ConsecutiveFailures(c) = fa.kind.as_ref()? else {
        return None;
    };
    let (min, max, jitter) = backoff(c.backoff.as_ref()).unwrap_or((
        Duration::from_secs(1),
        Duration::from_secs(60),
        0.5,
    ));
    Some(crate::balance::Accrual {
        max_failures: c.max_failures,
        min_penalty: min,
        max_penalty: max,
        jitter,
    })
}

/// A request whose rule matched no route.
pub fn no_route(parent: &ObjectLabels) -> ProxyError {
    ProxyError::new(
        ProxyErrorReason::NoRoute,
        format!(
            "no route of {}/{}:{} matches the request",
            parent.namespace, parent.name, parent.port
        ),
    )
    .with_statuses(StatusCode::NOT_FOUND, 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req(http::Request<()>);

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Req {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Req(b.body(()).unwrap())
    }

    struct NoBackends;
    impl Backends for NoBackends {
        fn backend(&self, _: &str) -> Option<Upstream> {
            None
        }
    }

    fn route(name: &str, rules: Vec<pb::http_route::Rule>) -> pb::HttpRoute {
        pb::HttpRoute {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                    group: "gateway.networking.k8s.io".into(),
                    kind: "HTTPRoute".into(),
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                })),
            }),
            hosts: Vec::new(),
            rules,
        }
    }

    fn rule(matches: Vec<hr::HttpRouteMatch>) -> pb::http_route::Rule {
        pb::http_route::Rule {
            matches,
            ..Default::default()
        }
    }

    fn path(kind: hr::path_match::Kind) -> hr::HttpRouteMatch {
        hr::HttpRouteMatch {
            path: Some(hr::PathMatch { kind: Some(kind) }),
            ..Default::default()
        }
    }

    fn policy(routes: Vec<pb::HttpRoute>) -> Policy {
        let p = pb::OutboundPolicy {
            protocol: Some(pb::ProxyProtocol {
                kind: Some(pb::proxy_protocol::Kind::Http1(pb::proxy_protocol::Http1 {
                    routes,
                    failure_accrual: None,
                })),
            }),
            metadata: None,
        };
        compile(&p.clone().into(), &NoBackends).unwrap().unwrap()
    }

    /// Which route and rule (by index) a request selects.
    fn selected(p: &Policy, r: &Req) -> Option<(String, usize)> {
        let (route, rule) = p.select(&r.0)?;
        let i = route
            .rules
            .iter()
            .position(|x| std::ptr::eq(x, rule))
            .unwrap();
        Some((route.labels.name.to_string(), i))
    }

    #[test]
    fn the_most_specific_match_wins_then_the_earlier_route() {
        use hr::path_match::Kind;
        let header = |name: &str, v: &str| hr::HeaderMatch {
            name: name.into(),
            value: Some(hr::header_match::Value::Exact(v.as_bytes().to_vec())),
        };
        let p = policy(vec![
            route(
                "a",
                vec![
                    rule(vec![path(Kind::Prefix("/".into()))]),
                    rule(vec![path(Kind::Prefix("/api".into()))]),
                    rule(vec![hr::HttpRouteMatch {
                        headers: vec![header("x-canary", "yes")],
                        ..path(Kind::Prefix("/api".into()))
                    }]),
                ],
            ),
            route(
                "b",
                vec![
                    rule(vec![path(Kind::Exact("/api/login".into()))]),
                    rule(vec![path(Kind::Regex("/api/v[0-9]+/.*".into()))]),
                    // Same as route a's second rule: route a came first and keeps it.
                    rule(vec![path(Kind::Prefix("/api".into()))]),
                    rule(vec![hr::HttpRouteMatch {
                        method: Some(http_types::HttpMethod::from(Method::POST)),
                        ..path(Kind::Prefix("/api".into()))
                    }]),
                ],
            ),
        ]);
        let cases = [
            (req("GET", "/", &[]), ("a", 0)),
            (req("GET", "/apix", &[]), ("a", 0)),
            (req("GET", "/api", &[]), ("a", 1)),
            (req("GET", "/api/x", &[]), ("a", 1)),
            (req("GET", "/api/x", &[("x-canary", "yes")]), ("a", 2)),
            (req("POST", "/api/x", &[("x-canary", "yes")]), ("b", 3)),
            (req("GET", "/api/login", &[("x-canary", "yes")]), ("b", 0)),
            (req("GET", "/api/v2/x", &[]), ("b", 1)),
            (req("GET", "/api/v2", &[]), ("a", 1)),
        ];
        for (r, (route, rule)) in cases {
            assert_eq!(
                selected(&p, &r),
                Some((route.to_string(), rule)),
                "{} {}",
                r.0.method(),
                r.0.uri()
            );
        }
    }

    #[test]
    fn queries_regexes_and_no_match() {
        use hr::path_match::Kind;
        let p = policy(vec![route(
            "q",
            vec![rule(vec![hr::HttpRouteMatch {
                query_params: vec![hr::QueryParamMatch {
                    name: "v".into(),
                    value: Some(hr::query_param_match::Value::Regex("[0-9]+".into())),
                }],
                headers: vec![hr::HeaderMatch {
                    name: "x-user".into(),
                    value: Some(hr::header_match::Value::Regex(".*@example\\.com".into())),
                }],
                ..path(Kind::Exact("/q".into()))
            }])],
        )]);
        let user = [("x-user", "ann@example.com")];
        assert!(selected(&p, &req("GET", "/q?a=1&v=12", &user)).is_some());
        assert!(
            selected(&p, &req("GET", "/q?v=12x", &user)).is_none(),
            "whole value"
        );
        assert!(selected(&p, &req("GET", "/q?v=1", &[("x-user", "ann@example.org")])).is_none());
        assert!(selected(&p, &req("GET", "/q", &user)).is_none());
        let e = no_route(&p.parent);
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_default_route_alone_needs_no_routing() {
        let default = pb::HttpRoute {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default("http".into())),
            }),
            hosts: Vec::new(),
            rules: vec![pb::http_route::Rule {
                matches: vec![path(hr::path_match::Kind::Prefix("/".into()))],
                backends: Some(pb::http_route::Distribution {
                    kind: Some(pb::http_route::distribution::Kind::FirstAvailable(
                        pb::http_route::distribution::FirstAvailable {
                            backends: vec![pb::http_route::RouteBackend {
                                backend: Some(pb::Backend::default()),
                                ..Default::default()
                            }],
                        },
                    )),
                }),
                ..Default::default()
            }],
        };
        let p = pb::OutboundPolicy {
            protocol: Some(pb::ProxyProtocol {
                kind: Some(pb::proxy_protocol::Kind::Http1(pb::proxy_protocol::Http1 {
                    routes: vec![default.clone()],
                    failure_accrual: None,
                })),
            }),
            metadata: None,
        };
        assert!(compile(&p.clone().into(), &NoBackends).unwrap().is_none());
        let mut with_timeout = default;
        with_timeout.rules[0].timeouts = Some(hr::Timeouts {
            request: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        });
        let p = pb::OutboundPolicy {
            protocol: Some(pb::ProxyProtocol {
                kind: Some(pb::proxy_protocol::Kind::Http1(pb::proxy_protocol::Http1 {
                    routes: vec![with_timeout],
                    failure_accrual: None,
                })),
            }),
            metadata: None,
        };
        assert!(compile(&p.clone().into(), &NoBackends).unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_its_reserve_plus_a_share_of_requests_per_window() {
        let budget = Budget::default();
        // The reserve: 10 a second over the 10 s window.
        let mut granted = 0;
        while budget.withdraw() {
            granted += 1;
            assert!(granted <= 100);
        }
        assert_eq!(granted, 100);
        // 50 requests earn 10 more.
        for _ in 0..50 {
            budget.deposit(Instant::now());
        }
        let more = (0..20).filter(|_| budget.withdraw()).count();
        assert_eq!(more, 10);
        // Once the window has passed, the old retries no longer count.
        tokio::time::advance(BUDGET_WINDOW + Duration::from_secs(1)).await;
        let again = (0..200).filter(|_| budget.withdraw()).count();
        assert_eq!(again, 100);
    }

    /// Requests and retries leave the window second by second, and counts from many
    /// threads at once are all kept.
    #[tokio::test(start_paused = true)]
    async fn the_budget_window_slides_and_counts_every_thread() {
        let budget = Budget::default();
        let deposit = |n| (0..n).for_each(|_| budget.deposit(Instant::now()));
        let drain = |budget: &Budget| {
            std::iter::from_fn(|| budget.withdraw().then_some(()))
                .take(10_000)
                .count()
        };
        deposit(50);
        tokio::time::advance(Duration::from_secs(9)).await;
        deposit(50);
        assert_eq!(drain(&budget), 100 + 20);
        // The first 50 requests leave; the 120 retries of second 9 are still in.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(drain(&budget), 0);
        // Second 9 leaves too.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(drain(&budget), 100);

        let budget = Arc::new(Budget::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                let now = Instant::now();
                std::thread::spawn(move || (0..10_000).for_each(|_| budget.deposit(now)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(drain(&budget), 100 + 8_000);
    }

    #[test]
    fn retries_back_off_exponentially_within_bounds() {
        let r = Retry {
            max_retries: 3,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            statuses: vec![(500, 504)],
            grpc: vec![],
            timeout: None,
            backoff: Some((Duration::from_millis(25), Duration::from_millis(100), 0.0)),
        };
        assert!(r.retries(503, None) && !r.retries(404, None) && !r.retries(200, Some(14)));
        let waits: Vec<_> = (1..=4).map(|n| r.backoff(n).as_millis()).collect();
        assert_eq!(waits, [25, 50, 100, 100]);
    }
}
