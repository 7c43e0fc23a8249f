//! A backend is one upstream target with its pooled HTTP clients: HTTP/1 connections are
//! kept alive and reused, HTTP/2 requests are multiplexed over one connection
//! ([`crate::h2_upstream`]). The HTTP/1.1 fast path ([`crate::h1`]) keeps its own idle
//! connections here too.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    config::{Authority, Timeouts},
    connect::{ConnectError, Connector, PeerIdentity},
    h2_upstream::{H2Body, H2Upstream},
    metrics::{Direction, Registry},
    route::{self, Limit},
    tls::ClientStream,
};

/// Most idle fast-path connections kept per backend; more are closed when returned.
const MAX_IDLE_H1: usize = 512;

/// Backends past this many (distinct authorities on the generic outbound listener) are
/// dropped together, so that random authorities cannot grow memory without bound.
const MAX_BACKENDS: usize = 1024;

/// The body of a forwarded request: the client's, or a kept copy (or none) when the request
/// is sent again.
pub type ReqBody = Either<crate::body::ClientBody, crate::body::Replayed>;

/// The body of an upstream's response: from hyper's HTTP/1 client, or from the backend's
/// HTTP/2 connection.
pub type UpstreamBody = Either<Incoming, H2Body>;

/// Why a request could not be exchanged with a backend.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: nothing was sent.
    #[error(transparent)]
    Connect(ConnectError),
    /// The HTTP/1 client failed.
    #[error(transparent)]
    Pool(hyper_util::client::legacy::Error),
    /// The HTTP/2 exchange failed.
    #[error(transparent)]
    H2(h2::Error),
    /// HTTP/2 connections kept closing before they took the request.
    #[error("the http/2 connection closed before the request was sent")]
    Closed,
    /// The upstream had the whole request and sent no response head within this.
    #[error("no response head within {0:?}")]
    ResponseHeadTimeout(Duration),
    /// No response head came before this route timeout ran out.
    #[error("no response head before the route's {0:?} ran out")]
    RouteTimeout(crate::route::Timeout),
}

impl SendError {
    /// Whether connecting failed, so that nothing was sent and another endpoint may be tried.
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Pool(e) => e.is_connect(),
            Self::H2(_) | Self::Closed | Self::ResponseHeadTimeout(_) | Self::RouteTimeout(_) => {
                false
            }
        }
    }

    /// Whether the HTTP/1 upstream closed the connection after the request was written and
    /// before any of the answer came: a case [`crate::http::may_resend`] decides.
    pub fn is_closed_before_answer(&self) -> bool {
        let Self::Pool(e) = self else { return false };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                return h.is_incomplete_message();
            }
            source = s.source();
        }
        false
    }
}

/// One upstream target and its connection pools.
pub struct Backend {
    /// The target, as text: the `target_addr` label.
    pub target_label: Arc<str>,
    /// The target's socket address (see [`Backend::target_addr`]), worked out once: a
    /// traced or tapped request names it.
    target_addr: std::net::SocketAddr,
    connector: Connector,
    h1: Client<Connector, ReqBody>,
    h2: H2Upstream,
    /// The fast path's idle connections, the most recently used last.
    idle_h1: Mutex<Vec<(ClientStream, tokio::time::Instant)>>,
    idle_timeout: Duration,
    /// See [`Timeouts::response_head`].
    response_head: Option<Duration>,
}

impl Backend {
    /// A backend for `target`; with `tls`, its connections are mTLS to that identity.
    pub fn new(
        target: Authority,
        timeouts: &Timeouts,
        direction: Direction,
        registry: &Registry,
        tls: Option<PeerIdentity>,
    ) -> Self {
        let connector = Connector::new(target, timeouts.connect, direction, registry, tls);
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(timeouts.idle)
            // The request's own Host header is forwarded as it came, never synthesised.
            .set_host(false);
        let target = connector.target();
        let target_addr = target.socket_addr().unwrap_or_else(|| {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), target.port)
        });
        Self {
            target_label: target.to_string().into(),
            target_addr,
            h1: h1.build(connector.clone()),
            h2: H2Upstream::new(
                connector.clone(),
                timeouts.idle,
                timeouts.stalled_stream,
                timeouts.response_head,
            ),
            connector,
            idle_h1: Mutex::default(),
            idle_timeout: timeouts.idle,
            response_head: timeouts.response_head,
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(ClientStream, tokio::time::Instant)>> {
        self.idle_h1.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle fast-path connection, if one has been idle for less than
    /// the idle timeout; older ones are closed.
    pub fn checkout_h1(&self) -> Option<ClientStream> {
        let now = tokio::time::Instant::now();
        let mut idle = self.lock_idle();
        let fresh = idle.partition_point(|(_, since)| now - *since >= self.idle_timeout);
        let stale: Vec<_> = idle.drain(..fresh).collect();
        let conn = idle.pop().map(|(c, _)| c);
        drop(idle);
        drop(stale);
        conn
    }

    /// Returns a fast-path connection that can carry another request.
    pub fn checkin_h1(&self, conn: ClientStream) {
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE_H1 {
            idle.push((conn, tokio::time::Instant::now()));
        }
    }

    /// The target's address.
    pub fn target(&self) -> &Authority {
        self.connector.target()
    }

    /// The target's socket address (the port on loopback for a named target).
    pub fn target_addr(&self) -> std::net::SocketAddr {
        self.target_addr
    }

    /// The connector, for opaque TCP to the same target.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Sends `req` and waits for the response head. The upstream hop speaks what the client
    /// spoke: HTTP/2 as a stream on the backend's one connection, HTTP/1 on a pooled one.
    ///
    /// `whole` and `grpc` are what the caller found when it looked at the request once:
    /// whether its body has all come, and whether it is a gRPC call. With a response-head
    /// timeout, a whole request gets no more than that for the head (a gRPC call that asks
    /// for a longer deadline gets it); one whose body is still streaming is not limited,
    /// since the upstream may rightly answer only after it. `route`: a route's timeout
    /// (from [`route::Plan::try_limit`]), which limits every request; the nearer limit
    /// applies, and fails the request as [`Limit::ran_out`] says.
    pub async fn send(
        &self,
        req: Request<ReqBody>,
        whole: bool,
        grpc: bool,
        route: Option<(Instant, route::Timeout)>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let head = self.response_head.filter(|_| whole).map(|limit| {
            if grpc {
                grpc_timeout(req.headers()).map_or(limit, |t| t.max(limit))
            } else {
                limit
            }
        });
        let limit = Limit::of(route, head);
        if req.version() == Version::HTTP_2 {
            // The connection's task keeps the deadline: no timer per request.
            return Ok(self.h2.send(req, whole, limit).await?.map(Either::Right));
        }
        match limit {
            Some(limit) => tokio::time::timeout_at(limit.deadline_from_now(), self.send_h1(req))
                .await
                .unwrap_or_else(|_| Err(limit.ran_out())),
            None => self.send_h1(req).await,
        }
    }

    /// Sends an HTTP/1 request on a pooled connection.
    async fn send_h1(&self, req: Request<ReqBody>) -> Result<Response<UpstreamBody>, SendError> {
        let rsp = self.h1.request(req).await.map_err(SendError::Pool)?;
        Ok(rsp.map(Either::Left))
    }
}

/// Backends by target, shared by the connections of one listener.
pub struct Backends {
    direction: Direction,
    timeouts: Timeouts,
    registry: Arc<Registry>,
    map: Mutex<HashMap<Authority, Arc<Backend>>>,
}

/// One backend as `/state` shows it.
#[derive(Serialize)]
pub struct BackendState {
    /// The target.
    pub target: String,
}

impl Backends {
    /// An empty set.
    pub fn new(direction: Direction, timeouts: Timeouts, registry: Arc<Registry>) -> Self {
        Self {
            direction,
            timeouts,
            registry,
            map: Mutex::default(),
        }
    }

    /// The backend for `target`, created on first use.
    pub fn get(&self, target: &Authority) -> Arc<Backend> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(target) {
            return b.clone();
        }
        if map.len() >= MAX_BACKENDS {
            map.clear();
        }
        let backend = Arc::new(Backend::new(
            target.clone(),
            &self.timeouts,
            self.direction,
            &self.registry,
            None,
        ));
        map.insert(target.clone(), backend.clone());
        backend
    }

    /// The backends known now.
    pub fn state(&self) -> Vec<BackendState> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = map
            .keys()
            .map(|t| BackendState {
                target: t.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

/// A gRPC request's `grpc-timeout` (1 to 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod grpc_timeout_tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_bad_ones_are_ignored() {
        let parse = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("90S"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10s", "1.5S", "-1S", "10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
