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
    let metrics = registry.route(RouteLabels {
        grpc: policy.grpc,
        parent: policy.parent.clone(),
        route: route.labels.clone(),
    });
    let mut request_headers = Vec::new();
    let mut response_headers = Vec::new();
    let mut apply = |filters: &[Filter]| -> Result<(), Decision> {
        for f in filters {
            match f {
                Filter::Abort { .. } => {
                    if let Some(error) = f.aborts() {
                        return Err(Decision::Fail(error, Some(metrics.clone())));
                    }
                }
                Filter::Redirect(r) => {
                    let prefix = policy::matched_prefix(rule, req);
                    let location = r.location(authority, req.path(), req.query(), prefix);
                    return Err(Decision::Redirect(r.status(), location, metrics.clone()));
                }
                Filter::RequestHeaders(m) => request_headers.push(m.clone()),
                Filter::ResponseHeaders(m) => response_headers.push(m.clone()),
            }
        }
        Ok(())
    };
    if let Err(d) = apply(&rule.filters) {
        return d;
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
        return d;
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
    let plan = Plan {
        route: index(&policy.routes, route),
        rule: index(&route.rules, rule),
        backend: index(&rule.backends, backend),
        policy: policy.clone(),
        request_headers,
        response_headers,
        metrics,
        start,
        retries: 0,
    };
    plan.rule().budget.deposit();
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

    /// Whether the request or response headers change: the fast path leaves those to the
    /// general path.
    pub fn changes_headers(&self) -> bool {
        !self.request_headers.is_empty() || !self.response_headers.is_empty()
    }

    /// The retry policy, if any.
    pub fn retry(&self) -> Option<&Retry> {
        self.rule().retry.as_ref()
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
        match timeout {
            Timeout::Request(t) => ProxyError::new(
                ProxyErrorReason::RequestTimeout,
                format!("the route's request timeout of {t:?} ran out"),
            ),
            Timeout::Backend(t) => ProxyError::new(
                ProxyErrorReason::BackendRequestTimeout,
                format!(
                    "{}: no response head within the route's backend request timeout of {t:?}",
                    self.backend().labels.name
                ),
            ),
        }
    }

    /// After a try answered `status` (`grpc_status` from its head) or failed (`None`):
    /// whether to send the request again. `replayable` says whether its body can be sent
    /// again. Counts the route's retry metrics.
    pub fn after_try(
        &mut self,
        answer: Option<(u16, Option<u16>)>,
        replayable: bool,
    ) -> TryOutcome {
        let Some(retry) = self.rule().retry.clone() else {
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
        let limit_left = self
            .rule()
            .request_timeout
            .is_none_or(|t| Instant::now() < self.start + t);
        if !limit_left {
            return TryOutcome::Done;
        }
        if !self.rule().budget.withdraw() {
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

/// The gRPC status in a response head (a trailers-only answer).
pub fn head_grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}
