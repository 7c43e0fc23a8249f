//! The HTTP proxy service: for each request, pick the backend, count the request, clean the
//! headers (RFC 9110 §7.6.1), forward it over the pooled client, and answer with the
//! upstream's response — or with a labelled [`ProxyError`] when forwarding failed.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    ops::ControlFlow,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll, Waker},
};

use ferry_api::ProxyErrorReason;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use http_body::Body as _;
use http_body_util::Either;

use crate::{
    backend::{Backend, ReqBody, UpstreamBody},
    balance::{Balancer, SendFailed},
    body::{ClientBody, Kept, Recorder, Replayed, ResponseBody},
    config::Authority,
    errors::ProxyError,
    head_copy::HeadCopy,
    http::{is_idempotent, may_resend},
    listener::Side,
    metrics::{ErrorKind, HttpLabels, HttpMetrics, RouteMetrics},
    policy::Policy,
    route::{self, Decision, TryOutcome},
    tap::{self, ConnMeta, ConnTap, Tapped},
    trace,
    upstream::Upstream,
};

/// Where a connection's requests go.
pub enum Dest {
    /// One upstream. `authority` fixes the metrics' `authority` label (upstream listeners,
    /// whose logical name is the target); `None` labels by each request's authority.
    Fixed {
        /// The upstream.
        upstream: Upstream,
        /// The fixed authority label, if any.
        authority: Option<Arc<str>>,
    },
    /// By the connection's original destination: the upstream was decided (looked up) when
    /// the connection was accepted; each request's authority labels its metrics.
    OrigDst {
        /// `SO_ORIGINAL_DST`: where the application was connecting.
        addr: SocketAddr,
        /// Where its requests go.
        upstream: Upstream,
    },
    /// By each request's authority (a connection that was not redirected).
    ByAuthority,
    /// Redirected inbound traffic for one of the proxy's own ports (this original
    /// destination): every request is refused `loop-detected`.
    Loop(SocketAddr),
}

/// A request authority, the upstream it resolved to, and for a single address the metrics
/// of that pair (a balanced service's metrics are per endpoint).
type Resolved = (Box<str>, Upstream, Option<Arc<HttpMetrics>>);

/// The service serving one accepted HTTP connection.
#[derive(Clone)]
pub struct HttpService(Arc<Conn>);

/// One connection's routing and error answers, shared with the HTTP/1.1 fast path.
pub struct Conn {
    side: Arc<Side>,
    dest: Dest,
    /// The last request's authority and what it resolved to: most connections send one
    /// authority, so this skips the lookups on every request after the first.
    last: Mutex<Option<Resolved>>,
    /// What tap events say about the connection, and its tap stream ids.
    tap: ConnTap,
    /// Requests so far (the HTTP/2 idle check compares it over time).
    requests: std::sync::atomic::AtomicU64,
    /// The next request is traced whatever the sampling rate (the fast path sampled it).
    trace_next: AtomicBool,
    /// Inbound: each request is authorized first, on either path. `None` for connections
    /// decided when accepted.
    authz: Option<Arc<crate::authz::conn::RequestAuthz>>,
}

impl HttpService {
    /// The service for one connection, described by `meta`.
    pub fn new(side: Arc<Side>, dest: Dest, meta: ConnMeta) -> Self {
        Self(Arc::new(Conn {
            side,
            dest,
            last: Mutex::new(None),
            tap: ConnTap::new(meta),
            requests: std::sync::atomic::AtomicU64::new(0),
            trace_next: AtomicBool::new(false),
            authz: None,
        }))
    }

    /// The same service authorizing each request with `authz`, if given. Call before the
    /// service is shared.
    pub fn authorized(mut self, authz: Option<Arc<crate::authz::conn::RequestAuthz>>) -> Self {
        if let Some(conn) = Arc::get_mut(&mut self.0) {
            conn.authz = authz;
        }
        self
    }

    /// The per-request authorization, when requests are decided one by one: both HTTP/1.1
    /// paths apply it before routing.
    pub fn request_authz(&self) -> Option<&crate::authz::conn::RequestAuthz> {
        self.0.authz.as_deref()
    }

    /// Requests this connection has sent through the general path so far.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// The connection's routing and error answers.
    pub fn conn(&self) -> &Conn {
        &self.0
    }
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        let conn = self.0.clone();
        Box::pin(async move { Ok(conn.handle(req).await) })
    }
}

/// A request ready to send, and what is needed to send it again without its body.
struct Outgoing {
    req: Request<ReqBody>,
    /// Method, URI, version and headers of a bodiless request, which can be retried on
    /// another endpoint when connecting fails (nothing was sent).
    /// Shared with a route's kept request (one copy of the head per request).
    retry: Option<Arc<HeadCopy>>,
    /// Those of a bodiless idempotent request, which [`may_resend`] allows to send again
    /// when the upstream closed the connection before answering.
    resend: Option<Arc<HeadCopy>>,
    /// Set when the client's body turned out malformed: the failure is the client's
    /// (`None`: the request had no body; a retry's is whole and kept).
    malformed: Option<Arc<AtomicBool>>,
    /// Whether the request's body had all come when it was looked at (once, here: with
    /// HTTP/2 each look takes the connection's lock).
    whole: bool,
    /// Whether it is a gRPC call.
    grpc: bool,
}

impl Outgoing {
    /// A request sent again whole (a route's retry): like a bodiless one, it may go to
    /// another endpoint when connecting fails.
    fn new_whole(req: Request<ReqBody>, retryable: bool, grpc: bool) -> Self {
        // `whole` is what the backend reads as "no body to stream": a kept body is sent.
        let bodiless = req.body().is_end_stream();
        let mut out = Self {
            req,
            retry: None,
            resend: None,
            malformed: None,
            whole: bodiless,
            grpc,
        };
        if retryable && bodiless {
            out.retry = Some(Arc::new(HeadCopy::of(&out.req)));
        }
        out
    }

    /// `retryable`: whether the upstream has other endpoints to retry on at all.
    fn new(req: Request<Incoming>, retryable: bool, grpc: bool) -> Self {
        let parts = || Arc::new(HeadCopy::of(&req));
        let bodiless = req.body().is_end_stream();
        let retry = (retryable && bodiless).then(parts);
        let idempotent = is_idempotent(req.method().as_str().as_bytes());
        let resend =
            (!retryable && bodiless && req.version() != Version::HTTP_2 && idempotent).then(parts);
        // Only a body can be malformed: a bodiless request allocates no flag.
        let malformed = (!bodiless).then(|| Arc::new(AtomicBool::new(false)));
        let flag = malformed.clone();
        Self {
            req: req.map(|body| Either::Left(ClientBody::new(body, flag))),
            retry,
            resend,
            malformed,
            whole: bodiless,
            grpc,
        }
    }
}

/// A request on a route: its plan, and what its tries share.
struct Routed {
    plan: route::Plan,
    /// The route backend's name, for the metrics of a try that reached no endpoint.
    target: Arc<str>,
    /// The request's span, when it is traced.
    span: Option<Arc<trace::Active>>,
    /// The request kept for retries and the mirror ([`KeptRequest`]).
    kept: Option<KeptRequest>,
    /// Where the copy goes, when the request has a body and is mirrored (a bodiless
    /// request's copy has gone already).
    mirror: Option<Upstream>,
}

impl Routed {
    /// Sends a bodiless request's mirror copy, and keeps the request as it goes when a
    /// retry or a mirror copy may need it again.
    fn keep(&mut self, out: &mut Outgoing, grpc: bool) {
        let plan = &self.plan;
        // The head is copied once, for the mirror and the retries both.
        let mut head = out.retry.clone();
        let mut mirror = plan.mirror().cloned();
        if let (Some(to), true) = (&mirror, out.whole) {
            let copy = head.get_or_insert_with(|| Arc::new(HeadCopy::of(&out.req)));
            match copy.parts() {
                Some(parts) => {
                    let copy = Request::from_parts(parts, Either::Right(Replayed::empty()));
                    route::spawn_mirror(&plan.metrics, route::send_copy(to.clone(), copy, grpc));
                }
                None => RouteMetrics::count(&plan.metrics.mirror_dropped),
            }
            mirror = None;
        }
        let keep = plan.retry().map(|r| r.max_request_bytes).or(mirror
            .as_ref()
            .map(|_| crate::policy::DEFAULT_MAX_REQUEST_BYTES));
        self.mirror = mirror;
        // A bodiless request keeps only its head: its body is empty and whole.
        self.kept = keep.map(|limit| {
            let parts = head.unwrap_or_else(|| Arc::new(HeadCopy::of(&out.req)));
            if out.whole {
                return (parts, None);
            }
            let Either::Left(body) =
                std::mem::replace(out.req.body_mut(), Either::Right(Replayed::empty()))
            else {
                unreachable!("a new request carries the client's body")
            };
            let (body, kept) = body.keep(limit);
            *out.req.body_mut() = Either::Left(body);
            (parts, Some(kept))
        });
    }

    /// After a try, without waiting: its result to answer with (`Break`), or (`Continue`)
    /// a retry, or a gRPC answer whose status must first be read from its trailers, for
    /// [`Routed::retry`]. `limit` was the try's route timeout.
    fn after_try(
        &mut self,
        sent: Sent,
        limit: Option<(Instant, route::Timeout)>,
        grpc: bool,
    ) -> ControlFlow<Sent, Retry> {
        let (mut result, metrics) = sent;
        if let (Err(e), Some((_, which))) = (&mut result, limit) {
            // Named after the route's backend, as the fast path names it.
            if e.reason == which.reason() {
                *e = self.plan.timeout_error(which);
            }
        }
        let mut answer = result.as_ref().ok().map(|r| {
            let grpc_status = grpc.then(|| crate::http::grpc_status(r.headers()));
            (r.status().as_u16(), grpc_status.flatten())
        });
        let replayable = self.kept.as_ref().is_some_and(|(_, kept)| {
            kept.as_ref()
                .is_none_or(|k| k.lock().unwrap_or_else(|e| e.into_inner()).whole())
        });
        // A gRPC answer with no status in its head may still be an error sent as a head
        // and trailers: its first frame is read before the retry policy looks. It has
        // usually come with the head; only when it has not does `retry` wait for it.
        let mut peek = false;
        if let (Ok(rsp), Some((_, grpc_status @ None)), true) = (
            &mut result,
            &mut answer,
            grpc && replayable && self.plan.retries_grpc(),
        ) {
            if let Either::Right(body) = rsp.body_mut() {
                // A look without a wait: `retry` polls again with the task's own waker.
                let mut look = Context::from_waker(Waker::noop());
                match body.poll_peek_trailers(&mut look) {
                    Poll::Ready(trailers) => {
                        *grpc_status = trailers.as_ref().and_then(crate::http::grpc_status)
                    }
                    Poll::Pending => peek = true,
                }
            }
        }
        let backoff = if peek {
            None
        } else {
            match self.plan.after_try(answer, replayable) {
                TryOutcome::Done => return ControlFlow::Break((result, metrics)),
                TryOutcome::Retry(backoff) => Some(backoff),
            }
        };
        ControlFlow::Continue(Retry {
            sent: (result, metrics),
            answer,
            backoff,
        })
    }

    /// The waits of [`Routed::after_try`]'s `Continue` (rare: the caller boxes them): the
    /// gRPC trailers to read (within the try's deadline) before the policy decides, then
    /// the retry's backoff. The result to answer with (`Break`), or the request to send
    /// again (`Continue`).
    async fn retry(
        &mut self,
        retry: Retry,
        limit: Option<(Instant, route::Timeout)>,
        grpc: bool,
        retryable: bool,
    ) -> ControlFlow<Sent, Outgoing> {
        let Retry {
            sent: (mut result, metrics),
            mut answer,
            backoff,
        } = retry;
        let backoff = match backoff {
            Some(backoff) => backoff,
            None => {
                if let (Ok(rsp), Some((_, grpc_status))) = (&mut result, &mut answer) {
                    if let Either::Right(body) = rsp.body_mut() {
                        let peek = std::future::poll_fn(|cx| body.poll_peek_trailers(cx));
                        let trailers = match limit {
                            Some((deadline, _)) => {
                                tokio::time::timeout_at(deadline, peek).await.ok().flatten()
                            }
                            None => peek.await,
                        };
                        *grpc_status = trailers.as_ref().and_then(crate::http::grpc_status);
                    }
                }
                // Only a replayable request's answer is peeked.
                match self.plan.after_try(answer, true) {
                    TryOutcome::Done => return ControlFlow::Break((result, metrics)),
                    TryOutcome::Retry(backoff) => backoff,
                }
            }
        };
        tracing::debug!(
            route = self.plan.route_name(),
            ?answer,
            ?backoff,
            "retrying"
        );
        // Only a whole kept request is retried; one whose head did not parse back is not.
        let Some(mut req) = replay(self.kept.as_ref()) else {
            return ControlFlow::Break((result, metrics));
        };
        trace::attempt_done(
            self.span.as_ref(),
            answer,
            result.as_ref().err().map(|e| e.reason),
        );
        drop(result);
        tokio::time::sleep(backoff).await;
        trace::next_attempt(self.span.as_ref(), &mut req);
        ControlFlow::Continue(Outgoing::new_whole(req, retryable, grpc))
    }
}

/// A try's result and the metrics it counted on.
type Sent = (Result<Response<UpstreamBody>, ProxyError>, Arc<HttpMetrics>);

/// A routed try that [`Routed::retry`] goes on with: its result, the answer's status (and
/// gRPC status), and the retry's backoff (`None`: the gRPC status is still to be read).
struct Retry {
    sent: Sent,
    answer: Option<(u16, Option<u16>)>,
    backoff: Option<std::time::Duration>,
}

impl Conn {
    /// Traces the next request this connection serves (the fast path sampled it before
    /// handing the connection over).
    pub fn trace_next(&self) {
        self.trace_next.store(true, Ordering::Relaxed);
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<ResponseBody> {
        // While tracing is off, this check is all it costs a request.
        let span = match &self.side.trace {
            None => None,
            Some(tracer) => {
                let force = self.trace_next.swap(false, Ordering::Relaxed);
                // An upstream listener's target names the destination, not the request's Host.
                let target = match &self.dest {
                    Dest::Fixed {
                        authority: Some(a), ..
                    } => Some(&**a),
                    _ => None,
                };
                let conn = self.tap.meta();
                trace::start(tracer, &mut req, self.side.direction, conn, target, force)
            }
        };
        // While nobody taps, this load is all the tap costs a request.
        let mut tap = None;
        if self.side.taps.is_active() {
            let authority = request_authority(&req);
            tap =
                self.side
                    .taps
                    .capture(&self.tap, self.side.direction, &req, authority.as_deref());
        }
        let mut rsp = self.forward(req, &mut tap).await;
        if let Some(span) = span {
            rsp = rsp.map(|body| body.traced(span));
        }
        match tap.and_then(|t| t.respond(&rsp)) {
            Some(shown) => rsp.map(|body| body.tapped(shown)),
            None => rsp,
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        tap: &mut Option<Tapped>,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let grpc = is_grpc(req.headers());
        let authority = request_authority(&req);
        let authority = authority.as_deref();
        if let Some(authz) = &self.authz {
            if let Err(e) = authz.check(&req) {
                return self.fail(&self.unrouted(authority, ""), e, grpc, start);
            }
        }
        let (upstream, mut metrics) = match self.route(authority) {
            Ok(route) => route,
            Err(e) => return self.fail(&self.unrouted(authority, ""), e, grpc, start),
        };
        // A service with routes: the route decides (a fault, a redirect or no matching
        // route answers here), and its plan goes with the request. Both kinds of request
        // then take the same steps and the same one send below, so neither's future
        // carries a second copy of the send's.
        let mut routed = None;
        if let Upstream::Balanced(balancer) = &upstream {
            if !wants_upgrade(&req) {
                if let Some(policy) = balancer.policy().await {
                    match self.plan_route(policy, &mut req, grpc, start, authority) {
                        Ok(r) => routed = Some(r),
                        Err(answer) => return *answer,
                    }
                }
            }
        }
        if routed.is_none() {
            if let Err(e) = prepare_request(&mut req, &upstream.label(), authority) {
                let metrics = match &metrics {
                    Some(m) => {
                        m.request();
                        m.clone()
                    }
                    None => self.unrouted(authority, &upstream.label()),
                };
                return self.fail(&metrics, e, grpc, start);
            }
        }
        let client_upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let retryable = matches!(
            routed.as_ref().map_or(&upstream, |r| r.plan.upstream()),
            Upstream::Balanced(_)
        );
        let mut out = Outgoing::new(req, retryable, grpc);
        let malformed = out.malformed.clone();
        // Only an exchange whose request has gone whole waits on the upstream alone; a
        // request body still streaming (uploads, bidirectional gRPC) may rightly leave the
        // response quiet.
        let body_idle = self.side.timeouts.body_idle.filter(|_| out.whole);
        if let Some(r) = &mut routed {
            r.keep(&mut out, grpc);
            if let Some(delay) = r.plan.delay {
                // Rare (a fault's delay): boxed, as every wait only routes have.
                Box::pin(tokio::time::sleep(delay)).await;
            }
        }
        let (result, metrics) = loop {
            let to = routed.as_ref().map_or(&upstream, |r| r.plan.upstream());
            // The backend keeps a route's timeouts (no timer per try where it can).
            let limit = routed.as_ref().and_then(|r| r.plan.try_limit());
            // An address upstream's metrics (a balanced service, routed or not, has none).
            // One await per kind of upstream (no future wrapping both), so the request is
            // moved into one less future on its way.
            let sent = match to {
                Upstream::Balanced(balancer) => self.send_balanced(balancer, out, tap, limit).await,
                Upstream::Addr(backend) => Ok(self
                    .send_addr(backend, out, metrics.take(), tap, limit)
                    .await),
            };
            let Some(r) = &mut routed else {
                match sent {
                    Ok(sent) => break sent,
                    Err(e) => return self.fail(&self.unrouted(authority, ""), e, grpc, start),
                }
            };
            let sent = match sent {
                Ok(sent) => sent,
                Err(e) => (Err(e), self.unrouted(authority, &r.target)),
            };
            let retry = match r.after_try(sent, limit, grpc) {
                ControlFlow::Break(done) => break done,
                ControlFlow::Continue(retry) => retry,
            };
            // Boxed, as every wait only routes have.
            match Box::pin(r.retry(retry, limit, grpc, retryable)).await {
                ControlFlow::Break(done) => break done,
                ControlFlow::Continue(again) => out = again,
            }
        };
        if let Some(r) = routed {
            return self.answer_routed(
                r,
                result,
                metrics,
                malformed.as_deref(),
                grpc,
                start,
                body_idle,
            );
        }
        let mut rsp = match result {
            Ok(rsp) => rsp,
            Err(e) => {
                return self.fail(&metrics, Self::blame(e, malformed.as_deref()), grpc, start)
            }
        };

        if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut rsp);
                self.side.tracker.spawn(async move {
                    let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade)
                    else {
                        tracing::debug!("upgrade abandoned by one side");
                        return;
                    };
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(%error, "upgraded connection ended");
                    }
                });
            }
        } else {
            strip_hop_by_hop(rsp.headers_mut(), false);
        }
        self.relay(rsp, metrics, grpc, start, body_idle, None)
    }

    /// The request's failure as the proxy answers it: blamed on the client when its body
    /// turned out malformed (the upstream request failed because the client's body did).
    fn blame(e: ProxyError, malformed: Option<&AtomicBool>) -> ProxyError {
        if !malformed.is_some_and(|m| m.load(Ordering::Relaxed)) {
            return e;
        }
        ProxyError::new(
            ProxyErrorReason::MalformedRequest,
            format!("malformed request body; upstream request aborted ({e})"),
        )
    }

    /// Streams an upstream's response to the client, counting it (on `route` too) when its
    /// body ends.
    fn relay(
        &self,
        rsp: Response<UpstreamBody>,
        metrics: Arc<HttpMetrics>,
        grpc: bool,
        start: Instant,
        body_idle: Option<std::time::Duration>,
        route: Option<Arc<RouteMetrics>>,
    ) -> Response<ResponseBody> {
        let status = rsp.status().as_u16();
        let recorder =
            Recorder::new(metrics, start.elapsed(), status, grpc, rsp.headers()).route(route);
        rsp.map(|body| ResponseBody::upstream(body, recorder).idle_limit(body_idle))
    }

    /// The route's plan for a request to a service with routes ([`crate::route`]): its
    /// rule's filters and weighted backend applied to `req`, made ready to send. `Err`: the
    /// answer when the route answers itself (no matching rule, a fault, a redirect) or the
    /// request cannot be sent (boxed: the answer is large and rare).
    fn plan_route(
        &self,
        policy: Arc<Policy>,
        req: &mut Request<Incoming>,
        grpc: bool,
        start: Instant,
        authority: Option<&str>,
    ) -> Result<Routed, Box<Response<ResponseBody>>> {
        let decided = route::decide(
            policy,
            &*req,
            authority.unwrap_or(""),
            &self.side.registry,
            start,
        );
        let plan = match decided {
            Decision::Send(plan) => plan,
            Decision::Fail(e, route) => {
                let metrics = self.unrouted(authority, "");
                return Err(Box::new(
                    self.fail_on_route(&metrics, e, grpc, start, route),
                ));
            }
            Decision::Redirect(status, location, route) => {
                let metrics = self.unrouted(authority, "");
                let rsp = route::redirect_response(status, &location);
                let recorder = Recorder::new(
                    metrics,
                    start.elapsed(),
                    status.as_u16(),
                    grpc,
                    rsp.headers(),
                )
                .route(Some(route));
                return Err(Box::new(
                    rsp.map(|body| ResponseBody::proxy(body, Some(recorder))),
                ));
            }
        };
        let span = trace::of(req.extensions());
        if let Some(span) = &span {
            let path = crate::policy::matched_path(plan.rule(), &*req);
            span.route(plan.route_labels(), path);
        }
        let target = plan.upstream().label();
        if let Err(e) = prepare_request(req, &target, authority) {
            let metrics = self.unrouted(authority, &target);
            let route = Some(plan.metrics.clone());
            return Err(Box::new(
                self.fail_on_route(&metrics, e, grpc, start, route),
            ));
        }
        plan.request_headers(req.headers_mut());
        if plan.rule().rewrite.is_some() {
            let matched = plan.matched_prefix(&*req);
            plan.rewrite(req, matched.as_deref());
        }
        Ok(Routed {
            plan,
            target,
            span,
            kept: None,
            mirror: None,
        })
    }

    /// A routed request's answer: its mirror copy sent (one with a body, once the body
    /// went), then the upstream's response with the route's header changes, or the
    /// failure, counted on the route too.
    #[allow(clippy::too_many_arguments)]
    fn answer_routed(
        &self,
        r: Routed,
        result: Result<Response<UpstreamBody>, ProxyError>,
        metrics: Arc<HttpMetrics>,
        malformed: Option<&AtomicBool>,
        grpc: bool,
        start: Instant,
        body_idle: Option<std::time::Duration>,
    ) -> Response<ResponseBody> {
        if let Some(to) = r.mirror {
            match replay(r.kept.as_ref()) {
                Some(copy) => {
                    route::spawn_mirror(&r.plan.metrics, route::send_copy(to, copy, grpc))
                }
                None => RouteMetrics::count(&r.plan.metrics.mirror_dropped),
            }
        }
        let route = Some(r.plan.metrics.clone());
        let mut rsp = match result {
            Ok(rsp) => rsp,
            Err(e) => {
                return self.fail_on_route(&metrics, Self::blame(e, malformed), grpc, start, route)
            }
        };
        strip_hop_by_hop(rsp.headers_mut(), false);
        r.plan.response_headers(rsp.headers_mut());
        self.relay(rsp, metrics, grpc, start, body_idle, route)
    }

    /// Sends `out` to an address upstream: the request's result and the metrics it counts
    /// on (`metrics`, when the caller has them already). `route`: the route's timeout for
    /// this try ([`route::Plan::try_limit`]).
    async fn send_addr(
        &self,
        backend: &Backend,
        out: Outgoing,
        metrics: Option<Arc<HttpMetrics>>,
        tap: &mut Option<Tapped>,
        route: Option<(Instant, route::Timeout)>,
    ) -> Sent {
        let metrics =
            metrics.unwrap_or_else(|| self.addr_metrics(backend, backend.target_label.clone()));
        metrics.request();
        tap::dispatch(tap, || tap::Destination {
            addr: backend.target_addr(),
            labels: None,
            server_id: backend.connector().peer_identity().map(|p| &*p.server_id),
        });
        trace::endpoint(
            out.req.extensions(),
            backend.target_addr(),
            None,
            backend.connector().peer_identity().map(|p| &*p.server_id),
        );
        let result = match backend.send(out.req, out.whole, out.grpc, route).await {
            // The general path's half of the one re-send rule; hyper's pool itself
            // re-sends only requests it had not started writing.
            Err(e)
                if e.is_closed_before_answer() && may_resend(out.resend.is_some(), true, false) =>
            {
                match out.resend.as_deref().and_then(HeadCopy::parts) {
                    Some(parts) => {
                        tracing::debug!(target = %backend.target_label, error = %e, "upstream closed before answering; sending the idempotent request again");
                        let req = Request::from_parts(parts, Either::Right(Replayed::empty()));
                        backend.send(req, true, out.grpc, route).await
                    }
                    None => Err(e),
                }
            }
            result => result,
        };
        (
            result.map_err(|e| ProxyError::from_send(&e, &backend.target_label)),
            metrics,
        )
    }

    /// The metrics of requests to an address upstream, labelled with `authority`.
    pub fn addr_metrics(&self, backend: &Backend, authority: Arc<str>) -> Arc<HttpMetrics> {
        self.side.registry.http(HttpLabels {
            direction: self.side.direction,
            authority,
            target_addr: backend.target_label.clone(),
            tls: self.side.tls.clone(),
            dst: Arc::from([]),
        })
    }

    /// Sends over a balanced service ([`crate::balance::Tries`]); a bodiless request whose connect failed is
    /// sent again, whole, to another endpoint.
    async fn send_balanced(
        &self,
        balancer: &Balancer,
        out: Outgoing,
        tap: &mut Option<Tapped>,
        route: Option<(Instant, route::Timeout)>,
    ) -> Result<Sent, ProxyError> {
        let Outgoing {
            mut req,
            retry,
            mut whole,
            grpc,
            ..
        } = out;
        let mut tries = balancer.tries(retry.is_some(), route).await?;
        let endpoint = tries.endpoint();
        tap::dispatch(tap, || tap::Destination {
            addr: endpoint.addr,
            labels: Some(&endpoint.meta.labels),
            server_id: endpoint
                .backend
                .connector()
                .peer_identity()
                .map(|p| &*p.server_id),
        });
        trace::endpoint(
            req.extensions(),
            endpoint.addr,
            Some(&endpoint.meta.labels),
            endpoint
                .backend
                .connector()
                .peer_identity()
                .map(|p| &*p.server_id),
        );
        loop {
            let backend = &tries.endpoint().backend;
            let sent = backend
                .send(req, whole, grpc, route)
                .await
                .map_err(|e| SendFailed {
                    connect: e.is_connect(),
                    error: ProxyError::from_send(&e, &backend.target_label),
                });
            match tries.record(sent) {
                ControlFlow::Break(result) => {
                    return Ok((result, tries.endpoint().metrics.clone()))
                }
                ControlFlow::Continue(()) => {
                    // Only a retryable request is tried again, so its head was copied.
                    let Some(parts) = retry.as_deref().and_then(HeadCopy::parts) else {
                        return Err(ProxyError::new(
                            ProxyErrorReason::ConnectFailed,
                            "connecting failed, and the request's head could not be read back to send it to another endpoint",
                        ));
                    };
                    req = Request::from_parts(parts, Either::Right(Replayed::empty()));
                    whole = true;
                }
            }
        }
    }

    /// Metrics for a request that reached no upstream (no route, no endpoints, malformed).
    pub fn unrouted(&self, authority: Option<&str>, target: &str) -> Arc<HttpMetrics> {
        let metrics = self.side.registry.http(HttpLabels {
            direction: self.side.direction,
            authority: authority.unwrap_or("").into(),
            target_addr: target.into(),
            tls: self.side.tls.clone(),
            dst: Arc::from([]),
        });
        metrics.request();
        metrics
    }

    /// Finds the upstream for a request with `authority`.
    pub fn route(
        &self,
        authority: Option<&str>,
    ) -> Result<(Upstream, Option<Arc<HttpMetrics>>), ProxyError> {
        let key = authority.unwrap_or("");
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((a, u, m)) = last.as_ref() {
                if &**a == key
                    || matches!(
                        self.dest,
                        Dest::Fixed {
                            authority: Some(_),
                            ..
                        }
                    )
                {
                    return Ok((u.clone(), m.clone()));
                }
            }
        }
        let (upstream, label) = match &self.dest {
            Dest::Loop(addr) => {
                return Err(ProxyError::new(
                    ProxyErrorReason::LoopDetected,
                    format!("{addr} is one of this proxy's own ports"),
                ))
            }
            Dest::Fixed {
                upstream,
                authority: fixed,
            } => (
                upstream.clone(),
                fixed.clone().unwrap_or_else(|| key.into()),
            ),
            Dest::OrigDst { addr, upstream } => {
                self.refuse_loop(&Authority::from(*addr))?;
                (upstream.clone(), key.into())
            }
            Dest::ByAuthority => {
                let target = parse_authority(authority)?;
                self.refuse_loop(&target)?;
                (self.side.upstreams.get(&target), key.into())
            }
        };
        let metrics = match &upstream {
            Upstream::Addr(backend) => Some(self.addr_metrics(backend, label)),
            Upstream::Balanced(_) => None,
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((key.into(), upstream.clone(), metrics.clone()));
        Ok((upstream, metrics))
    }

    /// Refuses a target that is one of the proxy's own listeners.
    fn refuse_loop(&self, target: &Authority) -> Result<(), ProxyError> {
        if target
            .socket_addr()
            .is_some_and(|a| self.side.is_own_listener(a))
        {
            return Err(ProxyError::new(
                ProxyErrorReason::LoopDetected,
                format!("{target} is this proxy's own listener"),
            ));
        }
        Ok(())
    }

    fn fail(
        &self,
        metrics: &Arc<HttpMetrics>,
        err: ProxyError,
        grpc: bool,
        start: Instant,
    ) -> Response<ResponseBody> {
        self.fail_on_route(metrics, err, grpc, start, None)
    }

    /// [`Conn::fail`], counted on the route too.
    fn fail_on_route(
        &self,
        metrics: &Arc<HttpMetrics>,
        err: ProxyError,
        grpc: bool,
        start: Instant,
        route: Option<Arc<RouteMetrics>>,
    ) -> Response<ResponseBody> {
        let close = err.reason == ProxyErrorReason::MalformedRequest;
        let (mut rsp, recorder) = self.fail_parts(metrics, err, grpc, start);
        let recorder = recorder.route(route);
        if close && !grpc {
            // After a malformed request the stream's framing cannot be trusted: end it.
            rsp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        rsp.map(|body| ResponseBody::proxy(body, Some(recorder)))
    }

    /// The proxy's own answer to a request that failed with `err`, counted as an error,
    /// and the recorder that counts the response once it is sent.
    pub fn fail_parts(
        &self,
        metrics: &Arc<HttpMetrics>,
        err: ProxyError,
        grpc: bool,
        start: Instant,
    ) -> (Response<bytes::Bytes>, Recorder) {
        tracing::debug!(direction = self.side.direction.as_str(), error = %err, "proxy error response");
        self.side
            .registry
            .error(self.side.direction, ErrorKind::Http, err.reason);
        let (rsp, status, _) = err.to_response(grpc);
        let recorder = Recorder::new(
            metrics.clone(),
            start.elapsed(),
            status,
            grpc,
            rsp.headers(),
        )
        .proxy_error(err.reason);
        (rsp, recorder)
    }
}

/// A request kept for retries and mirrors: its head, and its body as it goes (`None`: a
/// bodiless request's).
type KeptRequest = (Arc<HeadCopy>, Option<Arc<Mutex<Kept>>>);

/// A kept request, whole again, when all of its body went within the limit.
fn replay(kept: Option<&KeptRequest>) -> Option<Request<ReqBody>> {
    let (parts, kept) = kept?;
    let body = match kept {
        Some(kept) => kept.lock().unwrap_or_else(|e| e.into_inner()).replay()?,
        None => Replayed::empty(),
    };
    Some(Request::from_parts(parts.parts()?, Either::Right(body)))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The authority a request names: `:authority`/absolute-form first, else `Host`.
fn request_authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_ascii_lowercase());
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    Some(host.to_ascii_lowercase())
}

fn parse_authority(authority: Option<&str>) -> Result<Authority, ProxyError> {
    let Some(a) = authority.filter(|a| !a.is_empty()) else {
        return Err(ProxyError::new(
            ProxyErrorReason::NoRoute,
            "the request names no authority and the connection has no original destination",
        ));
    };
    let has_port = if a.starts_with('[') {
        !a.ends_with(']')
    } else {
        a.contains(':')
    };
    let with_port = if has_port {
        a.to_string()
    } else {
        format!("{a}:80")
    };
    with_port.parse().map_err(|_| {
        ProxyError::new(
            ProxyErrorReason::NoRoute,
            format!("authority {a:?} is not a routable host:port"),
        )
    })
}

fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Readies a request for the upstream hop: checks its framing, removes hop-by-hop headers
/// and gives the client the absolute URI it needs (the wire form stays origin-form).
fn prepare_request<B>(
    req: &mut Request<B>,
    target: &str,
    authority: Option<&str>,
) -> Result<(), ProxyError> {
    let malformed = |detail: &str| ProxyError::new(ProxyErrorReason::MalformedRequest, detail);
    if req.version() == Version::HTTP_11
        && !req.headers().contains_key(header::HOST)
        && req.uri().authority().is_none()
    {
        return Err(malformed("HTTP/1.1 request without a Host header"));
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(malformed("more than one Host header"));
    }
    let upgrade = wants_upgrade(req);
    strip_hop_by_hop(req.headers_mut(), upgrade);
    if req.version() != Version::HTTP_2 && req.uri().authority().is_none() {
        let authority = authority
            .map(str::to_owned)
            .unwrap_or_else(|| target.to_string());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| malformed(&format!("invalid request target: {e}")))?;
        *req.uri_mut() = uri;
    }
    Ok(())
}

/// Removes the headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// including those the `Connection` header names. For an upgrade, `Upgrade` and
/// `Connection: upgrade` are what carry it across, so they stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if !keep_upgrade && !has_hop_by_hop(headers) {
        return;
    }
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in &named {
        if keep_upgrade && name == "upgrade" {
            continue;
        }
        // Never let a client strip headers the message needs to be understood.
        if matches!(
            name.as_str(),
            "host" | "content-length" | "content-type" | "te"
        ) {
            continue;
        }
        headers.remove(name.as_str());
    }
    for name in ["keep-alive", "proxy-connection", "transfer-encoding"] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers.remove(header::TE);
    if te_trailers {
        // gRPC requires `te: trailers`, the one TE value HTTP/2 allows.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove(header::CONNECTION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// `Keep-Alive` and `Proxy-Connection`, which `http` has no constants for.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether [`strip_hop_by_hop`] has anything to do: most messages carry no hop-by-hop
/// header, or only gRPC's `te: trailers`, and one pass over the names says so.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        if name == header::TE {
            let mut te = headers.get_all(header::TE).iter();
            !(te.next().is_some_and(|v| v.as_bytes() == b"trailers") && te.next().is_none())
        } else {
            name == header::CONNECTION
                || name == header::TRANSFER_ENCODING
                || name == header::UPGRADE
                || name == KEEP_ALIVE
                || name == PROXY_CONNECTION
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret, close"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-app"]);

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("te"));

        // The quick check must not skip what the full pass removes.
        for (name, value) in [
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            h.insert("x-app", HeaderValue::from_static("kept"));
            strip_hop_by_hop(&mut h, false);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-app"], "{name} is removed");
        }
        let mut h = HeaderMap::new();
        h.append("te", HeaderValue::from_static("trailers"));
        h.append("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get_all("te").iter().count(), 1);
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("Trailers"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn parses_authorities_with_default_port() {
        assert_eq!(
            parse_authority(Some("web.local")).unwrap().to_string(),
            "web.local:80"
        );
        assert_eq!(
            parse_authority(Some("127.0.0.1:81")).unwrap().to_string(),
            "127.0.0.1:81"
        );
        assert_eq!(
            parse_authority(Some("[::1]:81")).unwrap().to_string(),
            "[::1]:81"
        );
        assert_eq!(
            parse_authority(Some("[::1]")).unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            parse_authority(None).unwrap_err().reason,
            ProxyErrorReason::NoRoute
        );
        assert_eq!(
            parse_authority(Some("a b")).unwrap_err().reason,
            ProxyErrorReason::NoRoute
        );
    }
}
