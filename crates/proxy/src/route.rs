//! The one routing step under both HTTP paths (issue #21): for a request to a service with
//! routes, [`decide`] chooses the route and rule ([`crate::policy::Policy::select`]), runs
//! the rule's and the backend's filters (fault aborts, redirects, header changes) and picks
//! the weighted backend; the [`Plan`] it returns then says, try by try, how long the
//! request may take and whether a failed answer is retried (within the retry budget).
//!
//! The general path (`forward.rs`) carries out every plan. The HTTP/1.1 fast path
//! (`h1.rs`) carries out those that change no header ([`Plan::changes_headers`]), and
//! hands the rest to the general path, so both answer alike.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use crate::{
    errors::ProxyError,
    metrics::{Registry, RouteLabels, RouteMetrics},
    policy::{self, Filter, HeaderModifier, Policy, RequestView, Retry, RouteBackend, Rule},
    upstream::Upstream,
};
use ferry_api::ProxyErrorReason;

/// What to do with a request to a service with routes.
pub enum Decision {
    /// Answer with this error (no route matched, a fault fired, the backend is broken).
    Fail(ProxyError, Option<Arc<RouteMetrics>>),
    /// Answer with a redirect to this location.
    Redirect(StatusCode, String, Arc<RouteMetrics>),
    /// Send it as planned.
    Send(Plan),
}

/// How one request is sent: its route, rule and backend, and its tries so far.
pub struct Plan {
    policy: Arc<Policy>,
    route: usize,
    rule: usize,
    backend: usize,
    /// Header changes to the request, in order (the rule's, then the backend's).
    request_headers: Vec<HeaderModifier>,
    /// Header changes to the response.
    response_headers: Vec<HeaderModifier>,
    /// The route's counters.
    pub metrics: Arc<RouteMetrics>,
    /// When the request arrived.
    start: Instant,
    /// Retries sent so far.
    retries: u32,
    /// How long this request waits before it is sent (a fault's delay that fired).
    pub delay: Option<Duration>,
    /// Whether a copy of this request goes to the rule's mirror.
    pub mirrored: bool,
}

/// Chooses what happens to `req` under `policy`. `authority` is the request's, for
/// redirects.
pub fn decide(
    policy: Arc<Policy>,
    req: &dyn RequestView,
    authority: &str,
    registry: &Registry,
    start: Instant,
) -> Decision {
    let Some((route, rule)) = policy.select(req) else {
        return Decision::Fail(policy::no_route(&policy.parent), None);
    };
    let metrics = route
        .metrics
        .get_or_init(|| {
            registry.route(RouteLabels {
                grpc: policy.grpc,
                parent: policy.parent.clone(),
                route: route.labels.clone(),
            })
        })
        .clone();
    let mut request_headers = Vec::new();
    let mut response_headers = Vec::new();
    let mut apply = |filters: &[Filter]| -> Result<(), Box<Decision>> {
        for f in filters {
            match f {
                Filter::Abort { .. } => {
                    if let Some(error) = f.aborts() {
                        return Err(Box::new(Decision::Fail(error, Some(metrics.clone()))));
                    }
                }
                Filter::Redirect(r) => {
                    let prefix = policy::matched_prefix(rule, req);
                    let location = r.location(authority, req.path(), req.query(), prefix);
                    return Err(Box::new(Decision::Redirect(
                        r.status(),
                        location,
                        metrics.clone(),
                    )));
                }
                Filter::RequestHeaders(m) => request_headers.push(m.clone()),
                Filter::ResponseHeaders(m) => response_headers.push(m.clone()),
            }
        }
        Ok(())
    };
    if let Err(d) = apply(&rule.filters) {
        return *d;
    }
    let Some(backend) = rule.pick_backend() else {
        return Decision::Fail(
            ProxyError::new(
                ProxyErrorReason::FaultInjected,
                "the route's rule has no backend with a weight",
            )
            .with_statuses(StatusCode::INTERNAL_SERVER_ERROR, 14),
            Some(metrics),
        );
    };
    if let Err(d) = apply(&backend.filters) {
        return *d;
    }
    if backend.upstream.is_none() {
        return Decision::Fail(
            ProxyError::new(
                ProxyErrorReason::NoRoute,
                format!(
                    "the route's backend {} does not resolve",
                    backend.labels.name
                ),
            ),
            Some(metrics),
        );
    }
    let chance = |ratio: f64| ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio);
    let plan = Plan {
        route: index(&policy.routes, route),
        rule: index(&route.rules, rule),
        backend: index(&rule.backends, backend),
        request_headers,
        response_headers,
        metrics,
        start,
        retries: 0,
        delay: rule
            .delay
            .filter(|(_, ratio)| chance(*ratio))
            .map(|(d, _)| d),
        mirrored: rule.mirror.as_ref().is_some_and(|m| chance(m.ratio)),
        policy: policy.clone(),
    };
    plan.rule().budget.deposit(start);
    Decision::Send(plan)
}

/// Where `one` is in `all` (it was chosen from it).
fn index<T>(all: &[T], one: &T) -> usize {
    all.iter()
        .position(|x| std::ptr::eq(x, one))
        .expect("chosen from this list")
}

/// Which of a route's timeouts limits a try.
#[derive(Clone, Copy, Debug)]
pub enum Timeout {
    /// `timeouts.request`.
    Request(Duration),
    /// `timeouts.backendRequest` (or the retry's per-try timeout).
    Backend(Duration),
}

impl Timeout {
    /// How long the timeout is.
    pub fn duration(self) -> Duration {
        match self {
            Self::Request(t) | Self::Backend(t) => t,
        }
    }

    /// The reason of the errors it ends tries with.
    pub fn reason(self) -> ProxyErrorReason {
        match self {
            Self::Request(_) => ProxyErrorReason::RequestTimeout,
            Self::Backend(_) => ProxyErrorReason::BackendRequestTimeout,
        }
    }

    /// The error of a try to `backend` (the route's backend) that this timeout ended.
    pub fn error(self, backend: &str) -> ProxyError {
        let detail = match self {
            Self::Request(t) => format!("the route's request timeout of {t:?} ran out"),
            Self::Backend(t) => format!(
                "{backend}: no response head within the route's backend request timeout of {t:?}"
            ),
        };
        ProxyError::new(self.reason(), detail)
    }
}

/// What limits a try's wait for its response head: the proxy's response-head timeout or a
/// route's timeout, whichever ends first. Both HTTP paths and the backends keep it.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// The proxy's response-head timeout, from when the try was sent.
    Head(Duration),
    /// A route's timeout, at this instant.
    Route(Instant, Timeout),
}

impl Limit {
    /// The nearer of a route's limit (from [`Plan::try_limit`]) and the response-head
    /// timeout, for a try sent now.
    pub fn of(route: Option<(Instant, Timeout)>, head: Option<Duration>) -> Option<Self> {
        match (route, head) {
            // A route's timeout no longer than `head` ends first (its deadline was set
            // no later than now): no clock to read.
            (Some((at, which)), Some(h)) if which.duration() <= h || at <= Instant::now() + h => {
                Some(Self::Route(at, which))
            }
            (Some((at, which)), None) => Some(Self::Route(at, which)),
            (_, h) => h.map(Self::Head),
        }
    }

    /// The route's timeout, when that is the limit.
    pub fn route(self) -> Option<(Instant, Timeout)> {
        match self {
            Self::Route(at, which) => Some((at, which)),
            Self::Head(_) => None,
        }
    }

    /// When a try sent at `sent_at` runs out.
    pub fn deadline(self, sent_at: Instant) -> Instant {
        match self {
            Self::Head(d) => sent_at + d,
            Self::Route(at, _) => at,
        }
    }

    /// When a try sent now runs out (the clock is read only for the response-head
    /// timeout).
    pub fn deadline_from_now(self) -> Instant {
        match self {
            Self::Head(d) => Instant::now() + d,
            Self::Route(at, _) => at,
        }
    }

    /// How late after its deadline a periodic check may notice it: a tenth of the timeout.
    pub fn slack(self) -> Duration {
        match self {
            Self::Head(d) => d / 10,
            Self::Route(_, which) => which.duration() / 10,
        }
    }

    /// The failure of a try that ran out.
    pub fn ran_out(self) -> crate::backend::SendError {
        match self {
            Self::Head(d) => crate::backend::SendError::ResponseHeadTimeout(d),
            Self::Route(_, which) => crate::backend::SendError::RouteTimeout(which),
        }
    }
}

/// Why one try ended without an answer to give.
pub enum TryOutcome {
    /// Send the request again after this backoff.
    Retry(Duration),
    /// Give the caller what came.
    Done,
}

impl Plan {
    /// The chosen rule.
    pub fn rule(&self) -> &Rule {
        &self.policy.routes[self.route].rules[self.rule]
    }

    /// The chosen backend.
    pub fn backend(&self) -> &RouteBackend {
        &self.rule().backends[self.backend]
    }

    /// Where the request goes.
    pub fn upstream(&self) -> &Upstream {
        self.backend()
            .upstream
            .as_ref()
            .expect("decide() sends only to backends that resolve")
    }

    /// Whether the request's head (headers, host, path) or the response's headers change:
    /// the fast path leaves those to the general path.
    pub fn changes_headers(&self) -> bool {
        !self.request_headers.is_empty()
            || !self.response_headers.is_empty()
            || self.rule().rewrite.is_some()
    }

    /// Where this request's copy goes, when it is mirrored.
    pub fn mirror(&self) -> Option<&Upstream> {
        let m = self.rule().mirror.as_ref().filter(|_| self.mirrored)?;
        Some(&m.upstream)
    }

    /// Applies the rule's `URLRewrite` to `req` (its path, and its host and authority).
    /// `matched`: the rule's prefix the request matched, for `ReplacePrefixMatch`.
    pub fn rewrite<B>(&self, req: &mut http::Request<B>, matched: Option<&str>) {
        let Some(rw) = &self.rule().rewrite else {
            return;
        };
        let mut parts = req.uri().clone().into_parts();
        if let Some(path) = rw.path(req.uri().path(), req.uri().query(), matched) {
            if let Ok(pq) = http::uri::PathAndQuery::try_from(path) {
                parts.path_and_query = Some(pq);
            }
        }
        if let Some(host) = &rw.hostname {
            if let Ok(value) = http::HeaderValue::from_str(host) {
                req.headers_mut().insert(http::header::HOST, value);
            }
            if parts.authority.is_some() {
                if let Ok(a) = http::uri::Authority::try_from(host.as_str()) {
                    parts.authority = Some(a);
                }
            }
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }

    /// The prefix of the rule's match that `req` matched, if it matched by a prefix.
    pub fn matched_prefix(&self, req: &dyn RequestView) -> Option<String> {
        policy::matched_prefix(self.rule(), req).map(str::to_string)
    }

    /// The retry policy, if any.
    pub fn retry(&self) -> Option<&Retry> {
        self.rule().retry.as_ref()
    }

    /// Whether the rule retries on gRPC statuses: then an answer whose head has none is
    /// looked into for trailers that come before any message.
    pub fn retries_grpc(&self) -> bool {
        self.retry().is_some_and(|r| !r.grpc.is_empty())
    }

    /// Applies the request header changes.
    pub fn request_headers(&self, headers: &mut HeaderMap) {
        for m in &self.request_headers {
            m.apply(headers);
        }
    }

    /// Applies the response header changes.
    pub fn response_headers(&self, headers: &mut HeaderMap) {
        for m in &self.response_headers {
            m.apply(headers);
        }
    }

    /// When the next try must have its response head, and which timeout that is: the
    /// nearer of `timeouts.request` (counted from the request's arrival),
    /// `timeouts.backendRequest` and the retry's per-try timeout.
    pub fn try_limit(&self) -> Option<(Instant, Timeout)> {
        let rule = self.rule();
        let request = rule
            .request_timeout
            .map(|t| (self.start + t, Timeout::Request(t)));
        let per_try = rule
            .backend_timeout
            .into_iter()
            .chain(rule.retry.as_ref().and_then(|r| r.timeout))
            .min()
            .map(|t| (Instant::now() + t, Timeout::Backend(t)));
        match (request, per_try) {
            (Some(r), Some(p)) => Some(if p.0 < r.0 { p } else { r }),
            (r, p) => r.or(p),
        }
    }

    /// The error of a try whose `timeout` ran out.
    pub fn timeout_error(&self, timeout: Timeout) -> ProxyError {
        timeout.error(&self.backend().labels.name)
    }

    /// After a try answered `status` (`grpc_status` from its head) or failed (`None`):
    /// whether to send the request again. `replayable` says whether its body can be sent
    /// again. Counts the route's retry metrics.
    pub fn after_try(
        &mut self,
        answer: Option<(u16, Option<u16>)>,
        replayable: bool,
    ) -> TryOutcome {
        // A second handle on the policy, so the rule can be read while `self` changes.
        let policy = self.policy.clone();
        let rule = &policy.routes[self.route].rules[self.rule];
        let Some(retry) = &rule.retry else {
            return TryOutcome::Done;
        };
        let failed = match answer {
            Some((status, grpc)) => retry.retries(status, grpc),
            // A failed try (reset, refused) is retried like a 5xx the policy retries.
            None => retry.retries(503, None) || !retry.grpc.is_empty(),
        };
        if !failed {
            if self.retries > 0 {
                RouteMetrics::count(&self.metrics.retry_successes);
            }
            return TryOutcome::Done;
        }
        if !replayable {
            return TryOutcome::Done;
        }
        if self.retries >= retry.max_retries {
            RouteMetrics::count(&self.metrics.retry_limit_exceeded);
            return TryOutcome::Done;
        }
        let limit_left = rule
            .request_timeout
            .is_none_or(|t| Instant::now() < self.start + t);
        if !limit_left {
            return TryOutcome::Done;
        }
        if !rule.budget.withdraw() {
            RouteMetrics::count(&self.metrics.retry_overflow);
            return TryOutcome::Done;
        }
        self.retries += 1;
        RouteMetrics::count(&self.metrics.retries);
        TryOutcome::Retry(retry.backoff(self.retries))
    }

    /// The route's metrics labels, for logs.
    pub fn route_name(&self) -> &str {
        &self.policy.routes[self.route].labels.name
    }

    /// The matched route's namespace and name.
    pub fn route_labels(&self) -> &crate::policy::ObjectLabels {
        &self.policy.routes[self.route].labels
    }
}

/// Most mirror copies in flight per proxy; past it a copy is dropped (and counted), so a
/// slow mirror cannot pile up tasks and connections.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;
/// A mirror copy's answer is waited for at most this long.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Mirror copies in flight, up to a cap.
pub struct MirrorSlots {
    in_flight: std::sync::atomic::AtomicUsize,
    cap: usize,
}

/// The proxy's one set of mirror slots.
static MIRRORS: MirrorSlots = MirrorSlots::new(MAX_MIRRORS_IN_FLIGHT);

/// Runs `send` (a mirror copy's exchange, its answer discarded) in the background, within
/// [`MAX_MIRRORS_IN_FLIGHT`] and [`MIRROR_TIMEOUT`]: the primary request never waits for it.
pub fn spawn_mirror(
    metrics: &Arc<RouteMetrics>,
    send: impl std::future::Future<Output = ()> + Send + 'static,
) {
    MIRRORS.spawn(metrics, send);
}

impl MirrorSlots {
    /// Slots for `cap` copies.
    pub const fn new(cap: usize) -> Self {
        Self {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            cap,
        }
    }

    /// See [`spawn_mirror`]: a copy past the cap is dropped and counted.
    pub fn spawn(
        &'static self,
        metrics: &Arc<RouteMetrics>,
        send: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.fetch_add(1, Relaxed) >= self.cap {
            self.in_flight.fetch_sub(1, Relaxed);
            RouteMetrics::count(&metrics.mirror_dropped);
            return;
        }
        RouteMetrics::count(&metrics.mirrors);
        tokio::spawn(async move {
            if tokio::time::timeout(MIRROR_TIMEOUT, send).await.is_err() {
                tracing::debug!("mirror copy unanswered; abandoned");
            }
            self.in_flight.fetch_sub(1, Relaxed);
        });
    }
}

/// Where a mirror copy goes: the address, or an endpoint of the balanced service.
pub async fn copy_backend(upstream: &Upstream) -> Option<Arc<crate::backend::Backend>> {
    match upstream {
        Upstream::Addr(b) => Some(b.clone()),
        Upstream::Balanced(balancer) => match balancer.pick().await {
            Ok(endpoint) => Some(endpoint.backend.clone()),
            Err(error) => {
                tracing::debug!(%error, "mirror copy not sent");
                None
            }
        },
    }
}

/// A mirror copy's exchange on the general path: `req` to an endpoint of `upstream`, its
/// answer dropped unread.
pub async fn send_copy(
    upstream: Upstream,
    req: http::Request<crate::backend::ReqBody>,
    grpc: bool,
) {
    let Some(backend) = copy_backend(&upstream).await else {
        return;
    };
    let whole = http_body::Body::is_end_stream(req.body());
    if let Err(error) = backend.send(req, whole, grpc, None).await {
        tracing::debug!(target = %backend.target_label, %error, "mirror copy failed");
    }
}

/// A route's redirect, as both HTTP paths answer it.
pub fn redirect_response(status: StatusCode, location: &str) -> http::Response<bytes::Bytes> {
    let mut rsp = http::Response::new(bytes::Bytes::new());
    *rsp.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(location) {
        rsp.headers_mut().insert(http::header::LOCATION, value);
    }
    rsp
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    /// Copies past the cap are dropped and counted; a copy that never answers frees its slot
    /// after [`MIRROR_TIMEOUT`], and only then.
    #[tokio::test(start_paused = true)]
    async fn mirror_copies_are_capped_and_abandoned_after_their_timeout() {
        static SLOTS: MirrorSlots = MirrorSlots::new(MAX_MIRRORS_IN_FLIGHT);
        let metrics = Arc::new(RouteMetrics::default());
        for _ in 0..MAX_MIRRORS_IN_FLIGHT + 3 {
            SLOTS.spawn(&metrics, std::future::pending());
        }
        assert_eq!(metrics.mirrors.load(Relaxed), MAX_MIRRORS_IN_FLIGHT as u64);
        assert_eq!(metrics.mirror_dropped.load(Relaxed), 3);

        tokio::time::sleep(MIRROR_TIMEOUT - Duration::from_millis(1)).await;
        SLOTS.spawn(&metrics, std::future::pending());
        assert_eq!(
            metrics.mirror_dropped.load(Relaxed),
            4,
            "slots held until the timeout"
        );

        tokio::time::sleep(Duration::from_millis(2)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(SLOTS.in_flight.load(Relaxed), 0, "every copy abandoned");
        SLOTS.spawn(&metrics, async {});
        assert_eq!(
            metrics.mirrors.load(Relaxed),
            MAX_MIRRORS_IN_FLIGHT as u64 + 1
        );
    }
}
