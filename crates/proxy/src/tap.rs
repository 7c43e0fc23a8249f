//! Tap: live request events for whoever calls `tap.Tap/Observe` (see [`server`]).
//!
//! While nobody taps, a request costs one relaxed atomic load ([`Taps::is_active`]) and
//! nothing else. While a tap is active, each request is captured ([`Taps::capture`]),
//! matched against every tap once its destination is known ([`Tapped::dispatch`]), and a
//! matching request sends `RequestInit`, `ResponseInit` and `ResponseEnd` to that tap's
//! bounded channel. A tapper that does not keep up loses events (counted in `/state`);
//! traffic never waits for it.
//!
//! Connection facts (client address, TLS and the peer's identity) come from the
//! [`ConnMeta`] the connection was served with; the mTLS side fills `tls` when it
//! terminates TLS.
//!
//! Header values are redacted ([`REDACTED`]) unless their name is on [`HEADER_ALLOW_LIST`]
//! or the tap was started unredacted (which the server allows only to an authorised
//! caller, see [`server`]). At most [`Taps::max`] taps run at once; more are refused.
//!
//! A response a proxy made itself (a policy denial, a 502/503/504, a rate limit: errors.rs)
//! carries `l5d-proxy-error`; every tap gets that one header in `ResponseInit`, even a tap
//! that did not ask for headers, so it can tell such a response from the application's.

pub mod matcher;
pub mod server;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock, RwLock,
    },
    task::Poll,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use linkerd2_proxy_api::{
    http_types,
    tap::{self as pb, tap_event},
};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Direction;
use matcher::{Input, Matcher};

/// Events a tap may have waiting before new ones are dropped.
pub const EVENT_BUFFER: usize = 1024;
/// Concurrent taps per proxy unless configured (`--tap-max-concurrent`).
pub const DEFAULT_MAX_TAPS: usize = 8;
/// What a redacted header value reads as.
pub const REDACTED: &str = "[redacted]";
/// Headers whose values a tap shows without being asked for unredacted values: they
/// describe the protocol and the content, never a credential or a session. Everything else
/// (`authorization`, `cookie`, `set-cookie`, `x-api-key`, custom headers) is [`REDACTED`].
pub const HEADER_ALLOW_LIST: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "grpc-encoding",
    "grpc-status",
    "host",
    "l5d-proxy-error",
    "server",
    "te",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
];
/// `tls` label of a plaintext connection accepted from a client.
pub const NO_TLS_FROM_REMOTE: &str = "no_tls_from_remote";
/// `tls` label of a plaintext request to an endpoint (mTLS ones say `true`).
pub const NO_TLS_TO_ENDPOINT: &str = "not_provided_by_service_discovery";
/// HTTP/2 `CANCEL`: what a response that stopped being read reports.
const RESET_CANCEL: u32 = 8;
/// HTTP/2 `INTERNAL_ERROR`: what a response body that failed part-way reports.
const RESET_INTERNAL: u32 = 2;

type EventTx = mpsc::Sender<Result<pb::TapEvent, tonic::Status>>;
/// The receiving end of one tap.
pub type EventRx = mpsc::Receiver<Result<pb::TapEvent, tonic::Status>>;
type Labels = BTreeMap<String, String>;

/// What the proxy knows about an accepted connection, for tap events.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    /// TLS the proxy terminated, when it did; `None` is plaintext.
    pub tls: Option<PeerTls>,
}

/// A connection's TLS as the tap shows it.
#[derive(Clone, Debug, Default)]
pub struct PeerTls {
    /// The client's mTLS identity, when it presented one.
    pub client_id: Option<Arc<str>>,
}

impl ConnMeta {
    /// A plaintext connection from `peer`, accepted on `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            peer,
            local,
            tls: None,
        }
    }
}

/// The tap state of one HTTP connection: its metadata and, once tapped, its stream ids.
pub struct ConnTap {
    meta: ConnMeta,
    base: OnceLock<u32>,
    streams: AtomicU64,
}

impl ConnTap {
    /// The connection.
    pub fn meta(&self) -> &ConnMeta {
        &self.meta
    }

    /// For a connection described by `meta`.
    pub fn new(meta: ConnMeta) -> Self {
        Self {
            meta,
            base: OnceLock::new(),
            streams: AtomicU64::new(0),
        }
    }
}

/// Counters shared by the registry and its sessions.
#[derive(Default)]
struct Stats {
    /// Requests that did any tap work.
    tapped: AtomicU64,
    /// Events dropped because a tapper was slow.
    dropped: AtomicU64,
    /// Tap callers refused, by [`Refusal`].
    refused: [AtomicU64; Refusal::ALL.len()],
}

/// Why a tap caller was refused: the `reason` label of `proxy_tap_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The TLS handshake failed: no client certificate, or one that does not chain to the
    /// trust anchors (or plaintext to a tap server that requires mTLS).
    Handshake,
    /// A valid client certificate of an identity that may not tap.
    Unauthorized,
    /// The concurrent taps cap was reached (`RESOURCE_EXHAUSTED`).
    TooManyTaps,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 3] = [Self::Handshake, Self::Unauthorized, Self::TooManyTaps];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "tls_handshake",
            Self::Unauthorized => "unauthorized",
            Self::TooManyTaps => "too_many_taps",
        }
    }
}

/// A tap could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The match is invalid.
    #[error(transparent)]
    Match(#[from] matcher::MatchError),
    /// Tapping is off (`--tap-max-concurrent 0`).
    #[error("tapping is disabled on this proxy (--tap-max-concurrent 0)")]
    Disabled,
    /// As many taps as allowed are running.
    #[error("this proxy already runs {max} taps, its limit (--tap-max-concurrent); try again when one ends")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Which header values a tap gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderValues {
    /// Values of headers off [`HEADER_ALLOW_LIST`] read [`REDACTED`].
    Redacted,
    /// Every value as sent.
    Unredacted,
}

/// Every active tap of one proxy.
pub struct Taps {
    /// How many sessions are active: the one thing the hot path reads.
    active: AtomicUsize,
    sessions: RwLock<Vec<Arc<Session>>>,
    stats: Arc<Stats>,
    next_base: AtomicU32,
    next_session: AtomicU64,
    /// This proxy's own labels (`namespace`, `pod`): the source of outbound events and the
    /// destination of inbound ones.
    own: Labels,
    /// Most taps at once.
    max: usize,
}

/// What `/state` shows of the taps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TapState {
    /// Taps now active.
    pub active: usize,
    /// Requests that did tap work since start.
    pub tapped_requests: u64,
    /// Events dropped for slow tappers since start.
    pub dropped_events: u64,
    /// Most taps at once (`--tap-max-concurrent`).
    pub max_concurrent: usize,
}

/// One `Observe` call.
struct Session {
    id: u64,
    matcher: Matcher,
    /// Requests still to match before the tap is complete; `None` for no limit.
    remaining: Option<AtomicU32>,
    /// Whether the tap asked for headers, and which values it gets.
    headers: Option<HeaderValues>,
    tx: EventTx,
    stats: Arc<Stats>,
}

impl Session {
    /// Claims one request against the limit: `Some(last)` when it may be shown.
    fn claim(&self) -> Option<bool> {
        let Some(remaining) = &self.remaining else {
            return Some(false);
        };
        let before = remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        Some(before == 1)
    }

    fn send(&self, event: pb::TapEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Ok(event)) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Removes its session from the registry when the `Observe` stream is dropped.
pub struct Subscription {
    taps: Arc<Taps>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.taps.remove(self.id);
    }
}

impl Taps {
    /// A registry for the proxy of pod `pod` in `namespace` (either may be empty).
    pub fn new(namespace: &str, pod: &str) -> Self {
        let mut own = Labels::new();
        for (k, v) in [("namespace", namespace), ("pod", pod)] {
            if !v.is_empty() {
                own.insert(k.to_string(), v.to_string());
            }
        }
        Self {
            active: AtomicUsize::new(0),
            sessions: RwLock::new(Vec::new()),
            stats: Arc::default(),
            next_base: AtomicU32::new(0),
            next_session: AtomicU64::new(0),
            own,
            max: DEFAULT_MAX_TAPS,
        }
    }

    /// Allows at most `max` taps at once.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Most taps at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts a refused tap caller.
    pub fn refused(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.stats.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders `proxy_tap_refused_total` and `proxy_tap_active` in the Prometheus text format.
    pub fn encode_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let name = ferry_api::metrics::PROXY_TAP_REFUSED_TOTAL;
        let _ = writeln!(out, "# HELP {name} Tap callers refused, by reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (i, r) in Refusal::ALL.iter().enumerate() {
            let n = self.stats.refused[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", r.as_str());
        }
        let name = ferry_api::metrics::PROXY_TAP_ACTIVE;
        let _ = writeln!(out, "# HELP {name} Taps running now.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.active.load(Ordering::Relaxed));
    }

    /// Whether any tap is active: the hot path's only question while nobody taps.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }

    /// Counters for `/state`.
    pub fn state(&self) -> TapState {
        TapState {
            active: self.active.load(Ordering::Relaxed),
            tapped_requests: self.stats.tapped.load(Ordering::Relaxed),
            dropped_events: self.stats.dropped.load(Ordering::Relaxed),
            max_concurrent: self.max,
        }
    }

    /// Starts a tap: its events arrive on the receiver until the limit is reached or the
    /// subscription is dropped. Header values, when asked for, are as `values` says.
    pub fn subscribe(
        self: &Arc<Self>,
        req: &pb::ObserveRequest,
        values: HeaderValues,
    ) -> Result<(Subscription, EventRx), SubscribeError> {
        let matcher = Matcher::compile(req.r#match.as_ref())?;
        let headers = req
            .extract
            .as_ref()
            .is_some_and(|e| e.extract.is_some())
            .then_some(values);
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            id,
            matcher,
            remaining: (req.limit > 0).then(|| AtomicU32::new(req.limit)),
            headers,
            tx,
            stats: self.stats.clone(),
        });
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= self.max {
            drop(sessions);
            self.refused(Refusal::TooManyTaps);
            if self.max == 0 {
                return Err(SubscribeError::Disabled);
            }
            return Err(SubscribeError::TooMany { max: self.max });
        }
        sessions.push(session);
        self.active.store(sessions.len(), Ordering::Relaxed);
        drop(sessions);
        tracing::debug!(tap = id, limit = req.limit, "tap started");
        let sub = Subscription {
            taps: self.clone(),
            id,
        };
        Ok((sub, rx))
    }

    fn remove(&self, id: u64) {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let before = sessions.len();
        sessions.retain(|s| s.id != id);
        self.active.store(sessions.len(), Ordering::Relaxed);
        if sessions.len() != before {
            tracing::debug!(tap = id, "tap ended");
        }
    }

    /// Captures a request for the active taps (call only when [`Taps::is_active`]).
    /// `authority` is the request's authority as the proxy routes it.
    #[cold]
    pub fn capture<B>(
        self: &Arc<Self>,
        conn: &ConnTap,
        direction: Direction,
        req: &Request<B>,
        authority: Option<&str>,
    ) -> Option<Tapped> {
        let sessions = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if sessions.is_empty() {
            return None;
        }
        self.stats.tapped.fetch_add(1, Ordering::Relaxed);
        let base = *conn
            .base
            .get_or_init(|| self.next_base.fetch_add(1, Ordering::Relaxed));
        let stream = conn.streams.fetch_add(1, Ordering::Relaxed);
        let headers = sessions
            .iter()
            .any(|s| s.headers.is_some())
            .then(|| req.headers().clone());
        Some(Tapped {
            taps: self.clone(),
            sessions,
            direction,
            conn: conn.meta.clone(),
            id: tap_event::http::StreamId { base, stream },
            method: req.method().clone(),
            scheme: req.uri().scheme_str().unwrap_or("http").to_string(),
            authority: authority.unwrap_or_default().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            headers,
            start: Instant::now(),
            matched: None,
        })
    }
}

/// A captured request, matched against the taps once its destination is known.
pub struct Tapped {
    taps: Arc<Taps>,
    sessions: Vec<Arc<Session>>,
    direction: Direction,
    conn: ConnMeta,
    id: tap_event::http::StreamId,
    method: http::Method,
    scheme: String,
    authority: String,
    path: String,
    headers: Option<HeaderMap>,
    start: Instant,
    matched: Option<Matched>,
}

/// The taps a request matched and the event fields they all share.
struct Matched {
    sessions: Vec<Arc<Session>>,
    template: pb::TapEvent,
}

/// Where a request went: the endpoint (outbound) or the application (inbound).
pub struct Destination<'a> {
    /// Its address (unspecified when the proxy never got that far).
    pub addr: SocketAddr,
    /// Its labels from discovery (outbound); inbound uses the proxy's own.
    pub labels: Option<&'a Labels>,
    /// The identity the endpoint must prove over mTLS, when the connection is mTLS.
    pub server_id: Option<&'a str>,
}

/// Matches `tap` (when any) against the taps, now that its destination is known.
#[inline]
pub fn dispatch<'a>(tap: &mut Option<Tapped>, destination: impl FnOnce() -> Destination<'a>) {
    if let Some(t) = tap.as_mut() {
        t.dispatch(destination());
    }
}

impl Tapped {
    /// Matches the request against every tap, once, and sends `RequestInit` to those it
    /// matches.
    pub fn dispatch(&mut self, dst: Destination<'_>) {
        if self.matched.is_some() {
            return;
        }
        let inbound = self.direction == Direction::Inbound;
        let mut dst_labels = match (inbound, dst.labels) {
            (true, _) => self.taps.own.clone(),
            (false, Some(l)) => l.clone(),
            (false, None) => Labels::new(),
        };
        let input = Input {
            source: self.conn.peer,
            destination: dst.addr,
            destination_labels: &dst_labels,
            scheme: &self.scheme,
            method: &self.method,
            authority: &self.authority,
            path: &self.path,
        };
        let mut sessions = Vec::new();
        for s in &self.sessions {
            if !s.matcher.matches(&input) {
                continue;
            }
            match s.claim() {
                None => {}
                Some(last) => {
                    if last {
                        self.taps.remove(s.id);
                    }
                    sessions.push(s.clone());
                }
            }
        }
        self.sessions = Vec::new();
        if sessions.is_empty() {
            self.matched = Some(Matched {
                sessions,
                template: pb::TapEvent::default(),
            });
            return;
        }
        let mut src_labels = if inbound {
            Labels::new()
        } else {
            self.taps.own.clone()
        };
        // Linkerd puts the hop's TLS on the side the proxy did not run on.
        if inbound {
            let tls = match &self.conn.tls {
                Some(t) => {
                    if let Some(id) = &t.client_id {
                        src_labels.insert("client_id".into(), id.to_string());
                    }
                    "true"
                }
                None => NO_TLS_FROM_REMOTE,
            };
            src_labels.insert("tls".into(), tls.into());
        } else {
            let tls = match dst.server_id {
                Some(id) => {
                    dst_labels.insert("server_id".into(), id.to_string());
                    "true"
                }
                None => NO_TLS_TO_ENDPOINT,
            };
            dst_labels.insert("tls".into(), tls.into());
        }
        let template = pb::TapEvent {
            source: Some(self.conn.peer.into()),
            source_meta: Some(tap_event::EndpointMeta {
                labels: src_labels.into_iter().collect(),
            }),
            destination: Some(dst.addr.into()),
            destination_meta: Some(tap_event::EndpointMeta {
                labels: dst_labels.into_iter().collect(),
            }),
            route_meta: None,
            proxy_direction: if inbound {
                tap_event::ProxyDirection::Inbound
            } else {
                tap_event::ProxyDirection::Outbound
            } as i32,
            event: None,
        };
        let init = tap_event::http::Event::RequestInit(tap_event::http::RequestInit {
            id: Some(self.id),
            method: Some(self.method.clone().into()),
            scheme: Some(self.scheme.as_str().into()),
            authority: self.authority.clone(),
            path: self.path.clone(),
            headers: None,
        });
        let matched = Matched { sessions, template };
        matched.send(init, self.headers.as_ref(), |e, h| {
            if let tap_event::http::Event::RequestInit(r) = e {
                r.headers = Some(h);
            }
        });
        self.matched = Some(matched);
    }

    /// Sends `ResponseInit` for `rsp` and returns what follows its body to `ResponseEnd`;
    /// `None` when no tap matched.
    pub fn respond<B>(mut self, rsp: &Response<B>) -> Option<ResponseTap> {
        if self.matched.is_none() {
            // The proxy answered before choosing a destination (no route, bad request).
            self.dispatch(Destination {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                labels: None,
                server_id: None,
            });
        }
        let matched = self.matched.take()?;
        if matched.sessions.is_empty() {
            return None;
        }
        let latency = self.start.elapsed();
        let init = tap_event::http::Event::ResponseInit(tap_event::http::ResponseInit {
            id: Some(self.id),
            since_request_init: Some(duration(latency)),
            http_status: rsp.status().as_u16().into(),
            headers: None,
        });
        let wants_headers = matched.sessions.iter().any(|s| s.headers.is_some());
        let marked = proxy_error(rsp.headers());
        matched.send_marked(
            init,
            wants_headers.then_some(rsp.headers()),
            marked.as_ref(),
            |e, h| {
                if let tap_event::http::Event::ResponseInit(r) = e {
                    r.headers = Some(h);
                }
            },
        );
        Some(ResponseTap {
            grpc_status: grpc_status(rsp.headers()),
            matched,
            id: self.id,
            request_start: self.start,
            response_start: Instant::now(),
            bytes: 0,
            trailers: None,
            done: false,
        })
    }
}

impl Matched {
    /// Sends `event` to every matched tap; those that asked for headers get `headers`
    /// set into it by `set`.
    fn send(
        &self,
        event: tap_event::http::Event,
        headers: Option<&HeaderMap>,
        set: impl Fn(&mut tap_event::http::Event, http_types::Headers),
    ) {
        self.send_marked(event, headers, None, set);
    }

    /// [`Matched::send`], where taps that did not ask for headers get `marked` (when any)
    /// instead of none: the one header that says a proxy made the response.
    fn send_marked(
        &self,
        event: tap_event::http::Event,
        headers: Option<&HeaderMap>,
        marked: Option<&HeaderMap>,
        set: impl Fn(&mut tap_event::http::Event, http_types::Headers),
    ) {
        // Each variant is built once, and only when a tap wants it.
        let variant = |headers: Option<&HeaderMap>, values| {
            headers.map(|h| {
                let mut e = event.clone();
                set(&mut e, to_headers(h, values));
                e
            })
        };
        let (mut redacted, mut unredacted, mut bare) = (None, None, None);
        for s in &self.sessions {
            let e = match s.headers {
                Some(HeaderValues::Redacted) => redacted
                    .get_or_insert_with(|| variant(headers, HeaderValues::Redacted))
                    .clone()
                    .unwrap_or_else(|| event.clone()),
                Some(HeaderValues::Unredacted) => unredacted
                    .get_or_insert_with(|| variant(headers, HeaderValues::Unredacted))
                    .clone()
                    .unwrap_or_else(|| event.clone()),
                // Redacted rules hold here too; the marker is on the allow-list anyway.
                None => bare
                    .get_or_insert_with(|| variant(marked, HeaderValues::Redacted))
                    .clone()
                    .unwrap_or_else(|| event.clone()),
            };
            let mut ev = self.template.clone();
            ev.event = Some(pb::tap_event::Event::Http(pb::tap_event::Http {
                event: Some(e),
            }));
            s.send(ev);
        }
    }
}

/// Follows a tapped response's body to its end and sends `ResponseEnd`.
pub struct ResponseTap {
    matched: Matched,
    id: tap_event::http::StreamId,
    request_start: Instant,
    response_start: Instant,
    bytes: u64,
    grpc_status: Option<u32>,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl ResponseTap {
    /// Follows one poll of the response body; `ended` says whether the body is now over.
    pub fn observe<E>(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, E>>>, ended: bool) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref() {
                    self.trailers(trailers);
                    self.end();
                } else if ended {
                    self.end();
                }
            }
            Poll::Ready(Some(Err(_))) => self.failed(),
            Poll::Ready(None) => self.end(),
            Poll::Pending => {}
        }
    }

    /// Reads `grpc-status` from the trailers.
    fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(s) = grpc_status(trailers) {
            self.grpc_status = Some(s);
        }
        self.trailers = Some(trailers.clone());
    }

    /// The body ended normally.
    pub fn end(&mut self) {
        let eos = self.grpc_status.map(pb::Eos::from_grpc_status);
        self.finish(eos);
    }

    /// The body failed part-way.
    fn failed(&mut self) {
        self.finish(Some(reset(RESET_INTERNAL)));
    }

    fn finish(&mut self, eos: Option<pb::Eos>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let end = tap_event::http::Event::ResponseEnd(tap_event::http::ResponseEnd {
            id: Some(self.id),
            since_request_init: Some(duration(self.request_start.elapsed())),
            since_response_init: Some(duration(self.response_start.elapsed())),
            response_bytes: self.bytes,
            eos,
            trailers: None,
        });
        let trailers = self.trailers.take();
        self.matched.send(end, trailers.as_ref(), |e, h| {
            if let tap_event::http::Event::ResponseEnd(r) = e {
                r.trailers = Some(h);
            }
        });
    }
}

impl Drop for ResponseTap {
    fn drop(&mut self) {
        // Dropped unfinished: the client stopped reading (or went away).
        self.finish(Some(reset(RESET_CANCEL)));
    }
}

fn reset(code: u32) -> pb::Eos {
    pb::Eos {
        end: Some(pb::eos::End::ResetErrorCode(code)),
    }
}

/// The `l5d-proxy-error` header alone, when `headers` carry it: the mark of a response a
/// proxy made itself (errors.rs), this one or, for an outbound request, the destination's.
/// Every tap gets it in `ResponseInit`, whether it asked for headers or not, so a tapper
/// tells a policy denial from the application's own 403 without seeing any other header.
fn proxy_error(headers: &HeaderMap) -> Option<HeaderMap> {
    let value = headers.get(ferry_api::headers::L5D_PROXY_ERROR)?;
    let mut only = HeaderMap::with_capacity(1);
    only.insert(ferry_api::headers::L5D_PROXY_ERROR, value.clone());
    Some(only)
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    crate::http::grpc_status(headers).map(u32::from)
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn to_headers(h: &HeaderMap, values: HeaderValues) -> http_types::Headers {
    http_types::Headers {
        headers: h
            .iter()
            .map(|(k, v)| http_types::headers::Header {
                name: k.as_str().to_string(),
                value: match values {
                    HeaderValues::Unredacted => v.as_bytes().to_vec(),
                    HeaderValues::Redacted if is_allowed(k.as_str()) => v.as_bytes().to_vec(),
                    HeaderValues::Redacted => REDACTED.as_bytes().to_vec(),
                },
            })
            .collect(),
    }
}

/// Whether a header's value is shown to redacted taps (names are lowercase in a `HeaderMap`).
pub fn is_allowed(name: &str) -> bool {
    HEADER_ALLOW_LIST.contains(&name)
}

#[cfg(test)]
mod tests;
