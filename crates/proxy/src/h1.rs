//! The HTTP/1.1 fast path. Most mesh traffic is keep-alive HTTP/1.1 with small request
//! bodies; for it, one task per client connection parses each request head, sends the
//! request on an idle upstream connection of the backend, and streams the response back,
//! rewriting only the hop-by-hop headers: no per-request task hand-offs, channels or
//! header maps. The first request it does not handle (upgrades, `Expect`, chunked or large
//! uploads, HTTP/1.0, absolute-form targets, malformed or oversized heads, gRPC) and any
//! request while a tap is active hands the connection, with the bytes already read, to the
//! general hyper path for the rest of its life. Routing, the inbound policy step, balancing,
//! metrics and error responses are the general path's own (`forward.rs`, `authz`), so both
//! paths count and answer alike.

pub mod chunked;
pub mod head;

use std::{collections::BTreeMap, ops::ControlFlow, sync::Mutex, time::Duration};

use bytes::{Buf, BytesMut};
use http::HeaderMap;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use ferry_api::ProxyErrorReason;

use self::chunked::Chunked;
use self::head::{Framing, Parsed, RequestHead, ResponseHead};
use crate::{
    backend::Backend,
    balance::SendFailed,
    body::Recorder,
    errors::ProxyError,
    forward::HttpService,
    http::{may_resend, MAX_HEAD_BYTES},
    io::{Counted, Deadline, DrainWatch, Rewind},
    listener::Side,
    metrics::{HttpMetrics, RouteMetrics},
    route::{self, Decision, Limit, Plan, TryOutcome},
    splice::{Pipe, SPLICE_MIN},
    tls::ClientStream,
    upstream::Upstream,
};

/// Reads ask for at least this much room.
const READ_SIZE: usize = 8 * 1024;
/// The most one read of a response body asks for.
const MAX_READ: usize = 64 * 1024;
/// Buffers a large request or response grew past this are given back between requests,
/// so an idle keep-alive connection holds little memory whatever it carried before.
const MAX_KEPT: usize = 4 * READ_SIZE;

/// A keep-alive connection idle this long gives back all of its buffers (a request after
/// that starts with a small read): 10,000 idle connections then hold no buffers at all.
const IDLE_TRIM: Duration = Duration::from_secs(1);

/// How many requests took the fast path, and why connections left it; for `/state`.
#[derive(Default)]
pub struct Stats {
    fast_requests: AtomicU64,
    general: Mutex<BTreeMap<&'static str, u64>>,
}

/// [`Stats`] as `/state` shows them.
#[derive(Serialize)]
pub struct StatsState {
    /// Requests forwarded by the fast path.
    pub fast_path_requests: u64,
    /// Connections handed to the general path, by reason.
    pub general_path_connections: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// A snapshot.
    pub fn state(&self) -> StatsState {
        StatsState {
            fast_path_requests: self.fast_requests.load(Relaxed),
            general_path_connections: self
                .general
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn general(&self, why: &'static str) {
        *self
            .general
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }
}

/// How serving a connection on the fast path ended.
enum End {
    /// The connection is over.
    Closed,
    /// The general path takes over, for this reason.
    General(&'static str),
}

impl crate::balance::Answered for Answer {
    fn failed(&self) -> bool {
        self.status >= 500
    }
}

/// An upstream's answer whose head has arrived.
struct Answer {
    up: ClientStream,
    status: u16,
    framing: Framing,
    /// The upstream connection cannot be reused.
    close: bool,
    /// Length of the response head at the start of the upstream buffer.
    head_len: usize,
}

/// Serves an HTTP/1 connection on the fast path, and on the general path once a request
/// needs it.
pub async fn serve<I>(io: I, svc: HttpService, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(READ_SIZE),
        ubuf: BytesMut::new(),
        req_out: Vec::new(),
        rsp_out: Vec::new(),
        host: String::new(),
        svc,
        timer: Deadline::default(),
        drain: DrainWatch::default(),
        route: None,
        pipe: None,
    };
    match conn.run(side).await {
        End::Closed => {}
        End::General(why) => {
            tracing::debug!(why, "http/1 connection continues on the general path");
            side.h1.general(why);
            let Conn { io, buf, svc, .. } = conn;
            crate::http::serve_h1(Rewind::new(buf.freeze(), io), svc, side).await;
        }
    }
}

struct Conn<I> {
    io: I,
    /// Bytes from the client not yet forwarded.
    buf: BytesMut,
    /// Bytes from the upstream.
    ubuf: BytesMut,
    /// The request to send: rewritten head and body.
    req_out: Vec<u8>,
    /// The response head (and first body bytes) to send.
    rsp_out: Vec<u8>,
    /// The request's authority, lowercased.
    host: String,
    svc: HttpService,
    /// The deadline of whichever wait is on (the header read, the idle trim, the response
    /// head, the body's idle time): one timer per connection, made at the first use and
    /// moved lazily (see [`Deadline`]), not made anew per request.
    timer: Deadline,
    /// The drain, watched while the connection is idle: registered once, not per request.
    drain: DrainWatch,
    /// The current request's route counters, when a route carries it.
    route: Option<Arc<RouteMetrics>>,
    /// The pipe large bodies are spliced through, made at the first and kept (empty, it
    /// holds no memory worth giving back).
    pipe: Option<Pipe>,
}

impl<I: AsyncRead + AsyncWrite + Unpin + 'static> Conn<I> {
    async fn run(&mut self, side: &Side) -> End {
        loop {
            let head = match self.read_request(side).await {
                Ok(head) => head,
                Err(end) => return end,
            };
            let close = head.close || side.drain.is_cancelled();
            let start = Instant::now();
            let planned = match self.plan(&head, side, start).await {
                Ok(planned) => planned,
                Err(why) => return End::General(why),
            };
            let keep = self.forward(&head, close, side, start, planned).await;
            self.route = None;
            self.trim();
            match keep {
                Ok(true) if !close => {}
                Ok(_) | Err(()) => {
                    let _ = self.io.shutdown().await;
                    return End::Closed;
                }
            }
        }
    }

    /// Gives back buffers a large request or response left behind.
    fn trim(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > MAX_KEPT {
            self.buf = BytesMut::new();
        }
        if self.ubuf.capacity() > MAX_KEPT {
            self.ubuf = BytesMut::new();
        }
        for out in [&mut self.req_out, &mut self.rsp_out] {
            if out.capacity() > MAX_KEPT {
                *out = Vec::new();
            }
        }
    }

    /// Gives back every buffer of an idle connection.
    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.ubuf = BytesMut::new();
        self.req_out = Vec::new();
        self.rsp_out = Vec::new();
    }

    /// Waits for a whole request (head and body) at the start of `buf`, within the header
    /// read timeout, which also bounds how long an idle connection is kept. The rewritten
    /// head and the body are left in `req_out`. A body still arriving when the timeout is
    /// up goes, with what came of it, to the general path, which streams bodies with no
    /// deadline: the fast path does not fail a slow upload that hyper would carry.
    async fn read_request(&mut self, side: &Side) -> Result<RequestHead, End> {
        let now = Instant::now();
        let (deadline, trim_at) = (now + side.timeouts.header_read, now + IDLE_TRIM);
        let mut trimmed = false;
        // A head already parsed (and rewritten into `req_out`) whose body is still coming.
        let mut pending: Option<RequestHead> = None;
        loop {
            if !self.buf.is_empty() {
                if side.taps.is_active() {
                    return Err(End::General("tap active"));
                }
                let parsed = match pending.take() {
                    Some(head) => Parsed::Done(head),
                    None => head::parse_request(&self.buf, &mut self.req_out),
                };
                match parsed {
                    Parsed::Done(head) => {
                        let total = head.len + body_len(&head);
                        if self.buf.len() >= total {
                            if let Some(tracer) = &side.trace {
                                if self.traced(tracer, &head) {
                                    return Err(End::General("traced"));
                                }
                            }
                            self.req_out.extend_from_slice(&self.buf[head.len..total]);
                            return Ok(head);
                        }
                        pending = Some(head);
                    }
                    Parsed::Partial if self.buf.len() < MAX_HEAD_BYTES => {}
                    Parsed::Partial => {
                        return Err(self.refuse(true, "request head over 32 KiB").await)
                    }
                    Parsed::Refused { too_large, why } => {
                        return Err(self.refuse(too_large, why).await)
                    }
                    Parsed::General(why) => return Err(End::General(why)),
                }
            }
            let idle = self.buf.is_empty();
            if !trimmed {
                self.buf.reserve(READ_SIZE);
            }
            // One timer: the read deadline, or before it the idle trim.
            let wake = match idle && !trimmed {
                true => trim_at.min(deadline),
                false => deadline,
            };
            self.timer.set(wake);
            tokio::select! {
                read = self.io.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return Err(End::Closed),
                    Ok(_) => {}
                },
                () = self.timer.expired() => {
                    if wake < deadline {
                        self.release();
                        trimmed = true;
                        continue;
                    }
                    return Err(match pending {
                        Some(_) => End::General("slow request body"),
                        None => End::Closed,
                    })
                }
                () = self.drain.cancelled(&side.drain), if idle => return Err(End::Closed),
            }
        }
    }

    /// Whether the request at the start of `buf` is traced: the fast path does not write
    /// spans, so a traced request (and its connection) goes to the general path, told to
    /// trace it when this path took the sampling decision.
    fn traced(&self, tracer: &crate::trace::Tracer, head: &RequestHead) -> bool {
        let decided = match head.trace {
            true => crate::trace::raw_head_sampled(&self.buf[..head.len]),
            false => None,
        };
        match decided {
            Some(sampled) => sampled,
            None if tracer.sample_new() => {
                self.svc.conn().trace_next();
                true
            }
            None => false,
        }
    }

    /// Answers a malformed or oversized request head with the proxy's own 400 or 431, and
    /// ends the connection: after a head it cannot read, nothing on it can be trusted.
    async fn refuse(&mut self, too_large: bool, why: &'static str) -> End {
        let reason = if too_large {
            ProxyErrorReason::HeadersTooLarge
        } else {
            ProxyErrorReason::MalformedRequest
        };
        let svc = self.svc.clone();
        let metrics = svc.conn().unrouted(None, "");
        let err = ProxyError::new(reason, why);
        let _ = self.fail(&svc, &metrics, err, Instant::now(), true).await;
        let _ = self.io.shutdown().await;
        End::Closed
    }

    /// Where the request at the start of `buf` goes: its upstream, or the route decision
    /// when its service has routes ([`crate::route`]), it cannot be routed or the inbound
    /// policy refuses it ([`crate::authz::conn::RequestAuthz`]); `Err` hands the
    /// connection to the general path, for a route that changes headers (which this path
    /// does not rewrite).
    async fn plan(
        &mut self,
        head: &RequestHead,
        side: &Side,
        start: Instant,
    ) -> Result<Planned, &'static str> {
        self.host.clear();
        let raw_host = std::str::from_utf8(&self.buf[head.host.clone()]).unwrap_or_default();
        self.host.push_str(raw_host);
        self.host.make_ascii_lowercase();
        let svc = self.svc.clone();
        // The inbound policy step, before routing, as on the general path.
        if let Some(authz) = svc.request_authz() {
            let view = head::RawRequest::parse(&self.buf[..head.len]).ok_or("unparsable head")?;
            if let Err(e) = authz.check(&view) {
                return Ok(Planned::Decided(Decision::Fail(e, None)));
            }
        }
        let (upstream, metrics) = match svc.conn().route(Some(&self.host)) {
            Ok(routed) => routed,
            Err(e) => return Ok(Planned::Decided(Decision::Fail(e, None))),
        };
        let policy = match &upstream {
            Upstream::Balanced(balancer) => balancer.policy().await,
            Upstream::Addr(_) => None,
        };
        let Some(policy) = policy else {
            return Ok(Planned::Upstream(upstream, metrics));
        };
        let view = head::RawRequest::parse(&self.buf[..head.len]).ok_or("unparsable head")?;
        let decision = route::decide(policy, &view, &self.host, &side.registry, start);
        if let Decision::Send(plan) = &decision {
            if plan.changes_headers() {
                return Err("route changes headers");
            }
        }
        Ok(Planned::Decided(decision))
    }

    /// Forwards the request at the start of `buf` and relays the answer. `Ok(keep)` says
    /// whether the client connection can carry another request; `Err` that it broke.
    async fn forward(
        &mut self,
        head: &RequestHead,
        close: bool,
        side: &Side,
        start: Instant,
        planned: Planned,
    ) -> Result<bool, ()> {
        side.h1.fast_requests.fetch_add(1, Relaxed);
        self.buf.advance(head.len + body_len(head));
        let svc = self.svc.clone();
        let conn = svc.conn();
        let (mut plan, upstream, metrics) = match planned {
            Planned::Upstream(upstream, metrics) => (None, upstream, metrics),
            Planned::Decided(Decision::Send(plan)) => {
                self.route = Some(plan.metrics.clone());
                let upstream = plan.upstream().clone();
                (Some(plan), upstream, None)
            }
            Planned::Decided(Decision::Fail(e, route)) => {
                self.route = route;
                let metrics = conn.unrouted(Some(&self.host), "");
                return self.fail(&svc, &metrics, e, start, close).await;
            }
            Planned::Decided(Decision::Redirect(status, location, route)) => {
                self.route = Some(route);
                let metrics = conn.unrouted(Some(&self.host), "");
                return self
                    .redirect(metrics, status, &location, start, close)
                    .await;
            }
        };
        if let Some(plan) = &plan {
            if let Some(to) = plan.mirror() {
                // The whole request is in `req_out`: its copy goes now, on its own.
                let (to, head, req) = (to.clone(), head.clone(), self.req_out.clone());
                route::spawn_mirror(&plan.metrics, send_copy(to, head, req));
            }
            if let Some(delay) = plan.delay {
                tokio::time::sleep(delay).await;
            }
        }
        let head_limit = side.timeouts.response_head;
        loop {
            let limit = match &plan {
                Some(plan) => Limit::of(plan.try_limit(), head_limit),
                None => head_limit.map(Limit::Head),
            };
            let (sent, backend, metrics) = match &upstream {
                Upstream::Addr(backend) => {
                    let metrics = metrics.clone().unwrap_or_else(|| {
                        conn.addr_metrics(backend, backend.target_label.clone())
                    });
                    metrics.request();
                    let sent = self
                        .send(backend, head, close, start, limit, plan.as_ref())
                        .await
                        .map_err(|HungUp| ())?;
                    (sent, backend.clone(), metrics)
                }
                Upstream::Balanced(balancer) => {
                    // The whole request is in `req_out`: any try can be repeated elsewhere.
                    let route = limit.and_then(Limit::route);
                    let mut tries = match balancer.tries(true, route).await {
                        Ok(tries) => tries,
                        Err(e) => {
                            let metrics = conn.unrouted(Some(&self.host), "");
                            return self.fail(&svc, &metrics, e, start, close).await;
                        }
                    };
                    let mut sent_at = start;
                    let result = loop {
                        let sent = self
                            .send(
                                &tries.endpoint().backend,
                                head,
                                close,
                                sent_at,
                                limit,
                                plan.as_ref(),
                            )
                            .await
                            .map_err(|HungUp| ())?;
                        if let ControlFlow::Break(result) = tries.record(sent) {
                            break result;
                        }
                        sent_at = Instant::now();
                    };
                    let endpoint = tries.endpoint().clone();
                    (
                        result.map_err(|error| SendFailed {
                            error,
                            connect: false,
                        }),
                        endpoint.backend.clone(),
                        endpoint.metrics.clone(),
                    )
                }
            };
            if let Some(p) = plan.as_mut() {
                let answer = sent.as_ref().ok().map(|a| (a.status, None));
                if let TryOutcome::Retry(backoff) = p.after_try(answer, true) {
                    tracing::debug!(route = p.route_name(), ?answer, ?backoff, "retrying");
                    // The answer's body is not wanted: its connection goes with it.
                    drop(sent);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
            return match sent {
                Ok(answer) => {
                    let idle = side.timeouts.body_idle;
                    self.relay(answer, &backend, metrics, start, idle).await
                }
                Err(SendFailed { error: e, .. }) => {
                    self.fail(&svc, &metrics, e, start, close).await
                }
            };
        }
    }

    /// Answers with a route's redirect.
    async fn redirect(
        &mut self,
        metrics: Arc<HttpMetrics>,
        status: http::StatusCode,
        location: &str,
        start: Instant,
        close: bool,
    ) -> Result<bool, ()> {
        let rsp = route::redirect_response(status, location);
        let recorder = Recorder::new(
            metrics,
            start.elapsed(),
            status.as_u16(),
            false,
            rsp.headers(),
        )
        .route(self.route.take());
        self.answer(&rsp, recorder, close).await
    }

    /// Sends `req_out` to `backend` and reads the response head into `ubuf`, watching the
    /// client meanwhile: `Err(HungUp)` when it closes its connection first. The request's
    /// upstream connection is then dropped, which tells the upstream too. No head within
    /// `limit` (the response-head timeout) of `sent_at` fails the request the same way,
    /// with `response-head-timeout`.
    async fn send(
        &mut self,
        backend: &Backend,
        head: &RequestHead,
        close: bool,
        sent_at: Instant,
        limit: Option<Limit>,
        plan: Option<&Plan>,
    ) -> Result<Result<Answer, SendFailed>, HungUp> {
        let Self {
            io,
            buf,
            ubuf,
            req_out,
            rsp_out,
            timer,
            ..
        } = self;
        let deadline = limit.map(|l| l.deadline(sent_at));
        if let Some(deadline) = deadline {
            timer.set(deadline);
        }
        tokio::select! {
            biased;
            sent = send_on(backend, head, close, req_out, ubuf, rsp_out) => Ok(sent),
            () = hung_up(io, buf) => {
                tracing::debug!(target = %backend.target_label, "client closed its connection while its request was in flight");
                Err(HungUp)
            }
            () = timer.expired(), if deadline.is_some() => Ok(Err(SendFailed {
                error: match (limit, plan) {
                    (Some(Limit::Route(_, which)), Some(plan)) => plan.timeout_error(which),
                    (Some(Limit::Head(limit)), _) => ProxyError::response_head_timeout(&backend.target_label, limit),
                    _ => ProxyError::response_head_timeout(&backend.target_label, Duration::ZERO),
                },
                connect: false,
            })),
        }
    }

    /// Streams the answer's body to the client, then pools the upstream connection when it
    /// can carry another request. A body that brings nothing for `idle` (the body-idle
    /// timeout) is cut off: the connection's one timer is reset per read, not made anew.
    async fn relay(
        &mut self,
        answer: Answer,
        backend: &Backend,
        metrics: Arc<HttpMetrics>,
        start: Instant,
        idle: Option<Duration>,
    ) -> Result<bool, ()> {
        let Answer {
            mut up,
            status,
            framing,
            close: up_close,
            head_len,
        } = answer;
        let recorder = Recorder::new(metrics, start.elapsed(), status, false, &HeaderMap::new())
            .route(self.route.take());
        let mut body = BodyEnd::new(framing);
        self.ubuf.advance(head_len);
        let n = body.advance(&self.ubuf).map_err(|_| ())?;
        self.rsp_out.extend_from_slice(&self.ubuf[..n]);
        let mut extra = self.ubuf.len() > n;
        write_out(&mut self.io, &self.rsp_out).await?;
        if let (BodyEnd::Length(left), ClientStream::Plain(plain)) = (&mut body, &mut up) {
            if *left >= SPLICE_MIN {
                if let Err(failed) = self.splice_body(plain, left, backend, idle).await {
                    // The upstream failed, or the client (dropping the recorder counts
                    // that, as on the copying path).
                    if let Some(reason) = failed {
                        recorder.fail(reason);
                    }
                    return Err(());
                }
            }
        }
        // Reads grow while they come back full (a large body being copied: chunked, or
        // to or from TLS), up to MAX_READ, so a large body takes fewer reads and writes;
        // `trim` gives the buffer back after the response.
        let mut read_size = READ_SIZE;
        while !body.is_done() {
            self.ubuf.clear();
            self.ubuf.reserve(read_size);
            let read = match idle {
                None => up.read_buf(&mut self.ubuf).await,
                Some(limit) => {
                    self.timer.set(Instant::now() + limit);
                    tokio::select! {
                        biased;
                        read = up.read_buf(&mut self.ubuf) => read,
                        () = self.timer.expired() => {
                            tracing::debug!(target = %backend.target_label, ?limit, "upstream response body idle; cutting it off");
                            recorder.fail(ProxyErrorReason::BodyIdleTimeout);
                            return Err(());
                        }
                    }
                }
            };
            match read {
                Ok(0) if framing == Framing::UntilClose => break,
                Ok(0) | Err(_) => {
                    recorder.reset();
                    return Err(());
                }
                Ok(_) => {}
            }
            if self.ubuf.len() >= read_size {
                read_size = (read_size * 2).min(MAX_READ);
            }
            let Ok(n) = body.advance(&self.ubuf) else {
                recorder.reset();
                return Err(());
            };
            extra |= self.ubuf.len() > n;
            write_out(&mut self.io, &self.ubuf[..n]).await?;
        }
        recorder.end();
        if !up_close && !extra {
            backend.checkin_h1(up);
        }
        Ok(framing != Framing::UntilClose)
    }

    /// Moves the `left` bytes of a sized response body from a plaintext upstream to a
    /// plaintext client with `splice(2)` (`splice.rs`); does nothing (the caller copies)
    /// when the client's side is not a plain socket or no pipe can be had. The body-idle
    /// timeout and the client-write timeout apply as on the copying path.
    async fn splice_body(
        &mut self,
        up: &mut Counted<tokio::net::TcpStream>,
        left: &mut u64,
        backend: &Backend,
        idle: Option<Duration>,
    ) -> Result<(), Option<ProxyErrorReason>> {
        let any: &mut dyn std::any::Any = &mut self.io;
        let Some(client) = any.downcast_mut::<Rewind<Counted<tokio::net::TcpStream>>>() else {
            return Ok(());
        };
        if !client.replayed() {
            return Ok(());
        }
        let pipe = match &mut self.pipe {
            Some(pipe) => pipe,
            None => match Pipe::new() {
                Ok(pipe) => self.pipe.insert(pipe),
                Err(error) => {
                    tracing::debug!(%error, "no pipe; copying the body");
                    return Ok(());
                }
            },
        };
        let (c_sock, c_metrics, c_limit) = client.parts().1.parts();
        let (u_sock, u_metrics, _) = up.parts();
        let (c_sock, u_sock) = (&*c_sock, &*u_sock);
        while *left > 0 {
            let max = usize::try_from(*left).unwrap_or(usize::MAX);
            let filled = match idle {
                None => pipe.fill(u_sock, u_metrics, max).await,
                Some(limit) => {
                    self.timer.set(Instant::now() + limit);
                    tokio::select! {
                        biased;
                        filled = pipe.fill(u_sock, u_metrics, max) => filled,
                        () = self.timer.expired() => {
                            tracing::debug!(target = %backend.target_label, ?limit, "upstream response body idle; cutting it off");
                            return Err(Some(ProxyErrorReason::BodyIdleTimeout));
                        }
                    }
                }
            };
            match filled {
                Ok(0) | Err(_) => {
                    self.pipe = None;
                    return Err(Some(ProxyErrorReason::UpstreamReset));
                }
                Ok(n) => *left -= n as u64,
            }
            if pipe.drain(c_sock, c_metrics, c_limit).await.is_err() {
                self.pipe = None;
                return Err(None);
            }
        }
        Ok(())
    }

    /// Answers with the proxy's own error response.
    async fn fail(
        &mut self,
        svc: &HttpService,
        metrics: &Arc<HttpMetrics>,
        err: ProxyError,
        start: Instant,
        close: bool,
    ) -> Result<bool, ()> {
        let (rsp, recorder) = svc.conn().fail_parts(metrics, err, false, start);
        let recorder = recorder.route(self.route.take());
        self.answer(&rsp, recorder, close).await
    }

    /// Writes a response the proxy made (an error, a redirect), then records it.
    async fn answer(
        &mut self,
        rsp: &http::Response<bytes::Bytes>,
        recorder: Recorder,
        close: bool,
    ) -> Result<bool, ()> {
        let out = &mut self.rsp_out;
        out.clear();
        let status = rsp.status();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in rsp.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n", rsp.body().len()).as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(rsp.body());
        write_out(&mut self.io, &self.rsp_out).await?;
        recorder.end();
        Ok(true)
    }
}

/// Sends `req_out` to `backend` and reads the response head into `ubuf` (the client's
/// rewritten head goes to `rsp_out`). A pooled connection that fails before any of the
/// answer came is replaced by a new one, once, when [`may_resend`] allows it.
async fn send_on(
    backend: &Backend,
    head: &RequestHead,
    close: bool,
    req_out: &[u8],
    ubuf: &mut BytesMut,
    rsp_out: &mut Vec<u8>,
) -> Result<Answer, SendFailed> {
    let target = &backend.target_label;
    let mut pooled = backend.checkout_h1();
    loop {
        let reused = pooled.is_some();
        let mut up = match pooled.take() {
            Some(up) => up,
            None => backend
                .connector()
                .connect()
                .await
                .map_err(|e| SendFailed {
                    error: ProxyError::from_connect(&e),
                    connect: true,
                })?,
        };
        // A request that cannot be repeated is not risked on a pooled connection the
        // upstream has already closed. Idempotent requests skip the check: they are
        // re-sent if need be, and the common case costs no syscall.
        if reused && !head.idempotent && known_dead(&up) {
            tracing::debug!(%target, "pooled connection was closed; not using it");
            pooled = backend.checkout_h1();
            continue;
        }
        ubuf.clear();
        let sent = async {
            up.write_all(req_out).await?;
            up.flush().await
        }
        .await;
        let fully_written = sent.is_ok();
        let result = match sent {
            Ok(()) => read_response_head(ubuf, rsp_out, &mut up, head, close).await,
            Err(e) => Err(Some(e)),
        };
        match result {
            Ok(Ok((status, framing, up_close, head_len))) => {
                return Ok(Answer {
                    up,
                    status,
                    framing,
                    close: up_close,
                    head_len,
                })
            }
            Ok(Err(why)) => {
                return Err(SendFailed {
                    error: ProxyError::new(
                        ProxyErrorReason::UpstreamProtocol,
                        format!("{target}: {why}"),
                    ),
                    connect: false,
                })
            }
            // A pooled connection failed before any of the answer came: perhaps an idle
            // connection the upstream had closed, perhaps the upstream read the request.
            Err(_)
                if reused
                    && ubuf.is_empty()
                    && may_resend(head.idempotent, fully_written, false) =>
            {
                tracing::debug!(%target, "pooled connection was closed; sending on a new one");
            }
            Err(e) => {
                let not_resent = if reused && ubuf.is_empty() {
                    " (not sent again: the method is not idempotent)"
                } else {
                    ""
                };
                let detail = match e {
                    Some(e) => format!("{target}: connection error: {e}{not_resent}"),
                    None => format!("{target}: connection closed before the response{not_resent}"),
                };
                return Err(SendFailed {
                    error: ProxyError::new(ProxyErrorReason::UpstreamReset, detail),
                    connect: false,
                });
            }
        }
    }
}

/// A mirror copy's exchange on the fast path: the request's bytes to an endpoint of `to`,
/// its answer's head read and the connection then dropped.
async fn send_copy(to: Upstream, head: RequestHead, req: Vec<u8>) {
    let Some(backend) = route::copy_backend(&to).await else {
        return;
    };
    let (mut ubuf, mut rsp_out) = (BytesMut::new(), Vec::new());
    if let Err(failed) = send_on(&backend, &head, true, &req, &mut ubuf, &mut rsp_out).await {
        tracing::debug!(target = %backend.target_label, error = %failed.error, "mirror copy failed");
    }
}

/// Whether a pooled upstream connection is already closed (or sent bytes nobody asked
/// for): a non-blocking peek that does not block says so. One syscall, paid only by
/// requests that could not be sent again otherwise.
fn known_dead(up: &ClientStream) -> bool {
    let tcp = match up {
        ClientStream::Plain(s) => s.get_ref(),
        ClientStream::Tls(s) => s.get_ref().0.get_ref(),
    };
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    !matches!(socket2::SockRef::from(tcp).peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Reads until a final response head is in `ubuf` (1xx heads are dropped) and writes the
/// client's head to `rsp_out`. The inner `Err` is a protocol error; the outer one the
/// connection failing (`None`: closed).
#[allow(clippy::type_complexity)]
async fn read_response_head(
    ubuf: &mut BytesMut,
    rsp_out: &mut Vec<u8>,
    up: &mut ClientStream,
    head: &RequestHead,
    close: bool,
) -> Result<Result<(u16, Framing, bool, usize), &'static str>, Option<std::io::Error>> {
    loop {
        if !ubuf.is_empty() {
            match head::parse_response(ubuf, head.head_method, close, rsp_out) {
                Err(bad) => return Ok(Err(bad.0)),
                Ok(Parsed::Done(ResponseHead::Final {
                    len,
                    status,
                    framing,
                    close,
                })) => return Ok(Ok((status, framing, close, len))),
                Ok(Parsed::Done(ResponseHead::Informational { len })) => {
                    ubuf.advance(len);
                    continue;
                }
                Ok(Parsed::Partial) if ubuf.len() >= MAX_HEAD_BYTES => {
                    return Ok(Err("response head too large"))
                }
                Ok(Parsed::Partial | Parsed::General(_) | Parsed::Refused { .. }) => {}
            }
        }
        ubuf.reserve(READ_SIZE);
        match up.read_buf(ubuf).await {
            Ok(0) => return Err(None),
            Ok(_) => {}
            Err(e) => return Err(Some(e)),
        }
    }
}

/// The client closed its connection while its request was in flight.
struct HungUp;

/// Where a request goes, decided once before it is forwarded ([`Conn::plan`]).
enum Planned {
    /// Straight to this upstream (with an address upstream's metrics).
    Upstream(Upstream, Option<Arc<HttpMetrics>>),
    /// As a route decided, or failed when it cannot be routed.
    Decided(Decision),
}

/// Resolves when the client closes its connection (or it fails) while its request is in
/// flight, as hyper's server notices a closed connection. Bytes the client sends meanwhile
/// (pipelined requests) are kept in `buf`; past what the fast path could ever buffer for one
/// request, reading stops until the answer is out.
async fn hung_up<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) {
    let limit = MAX_HEAD_BYTES + head::MAX_BUFFERED_BODY as usize;
    while buf.len() < limit {
        buf.reserve(READ_SIZE);
        match io.read_buf(buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

/// The body bytes of a request head, as the fast path takes only sized bodies.
fn body_len(head: &RequestHead) -> usize {
    match head.framing {
        Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
        _ => 0,
    }
}

async fn write_out<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> Result<(), ()> {
    io.write_all(bytes).await.map_err(|_| ())?;
    io.flush().await.map_err(|_| ())
}

/// Where a response body ends.
enum BodyEnd {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl BodyEnd {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Self::Length(0),
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(Chunked::default()),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Self::Length(left) => *left == 0,
            Self::Chunked(c) => c.is_done(),
            Self::UntilClose => false,
        }
    }

    /// How many of `input`'s bytes belong to the body.
    fn advance(&mut self, input: &[u8]) -> Result<usize, chunked::ChunkError> {
        match self {
            Self::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *left -= n as u64;
                Ok(n)
            }
            Self::Chunked(c) => c.advance(input),
            Self::UntilClose => Ok(input.len()),
        }
    }
}
