//! The tap server: `io.linkerd.proxy.tap.Tap/Observe` on `--tap-listen`. Each call
//! registers a tap with [`Taps`] and streams its events until the limit is reached, the
//! caller goes away, or the proxy shuts down; then the tap is removed and requests stop
//! doing tap work.
//!
//! Who may tap ([`Access`]): when the proxy has an identity, every connection must be mTLS
//! with a client certificate chaining to the trust anchors (else the handshake is refused),
//! and only the authorised identities (`--tap-authorized-identity`, by default the control
//! plane's) may call `Observe`; any other gets `PERMISSION_DENIED`. Without identity the
//! server is plaintext, and by default bound to loopback (docs/tap.md). Header values are
//! redacted unless the call carries [`UNREDACTED_METADATA`] and the caller may have them:
//! an authorised identity, or a plaintext caller of a loopback-only server. Refusals are
//! counted in `proxy_tap_refused_total`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use linkerd2_proxy_api::tap::{
    tap_server::{Tap, TapServer},
    ObserveRequest, TapEvent,
};
use tokio::{io::AsyncReadExt, net::TcpListener};
use tokio_stream::Stream;
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};
use tower_service::Service as _;

use super::{EventRx, HeaderValues, Refusal, SubscribeError, Subscription, Taps};
use crate::identity::Identity;
use crate::io::Rewind;

pub use ferry_api::tap::UNREDACTED_METADATA;

/// How long a tap client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may tap this proxy and how they prove it.
#[derive(Clone)]
pub struct Access {
    /// With an identity, callers must present a client certificate (mTLS); without, the
    /// server is plaintext.
    pub identity: Option<Arc<Identity>>,
    /// The identities that may tap (mTLS only).
    pub authorized: Arc<[String]>,
    /// Whether plaintext callers may ask for unredacted header values: only when the
    /// server listens on loopback alone.
    pub plaintext_unredacted: bool,
}

impl Access {
    /// Plaintext, unredacted values allowed (tests on loopback).
    pub fn plaintext() -> Self {
        Self {
            identity: None,
            authorized: Arc::from([]),
            plaintext_unredacted: true,
        }
    }
}

/// Who is calling, as one connection established it.
#[derive(Clone, Debug)]
enum Caller {
    /// Plaintext (no identity on this proxy); whether it may have unredacted values.
    Plaintext { unredacted: bool },
    /// mTLS from an authorised identity.
    Authorized,
    /// mTLS from an identity that may not tap (`None`: its certificate names none).
    Unauthorized(Option<Arc<str>>),
}

/// How often an idle tap connection is pinged, so a vanished tapper is noticed.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long a new connection has to send the HTTP/2 client preface before it is closed:
/// hyper's server waits for it without a limit, so a client trickling it (slowloris) would
/// hold the connection for ever.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// The HTTP/2 client preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
/// The pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `Tap/Observe` on `listener` until `shutdown` completes; open taps end then.
///
/// Connections are served by hyper's HTTP/2 server directly rather than tonic's transport
/// server: that stack (its router, layers and HTTP/1 side) was only used here and is code
/// every proxy would carry resident (docs/proxy.md, "Memory").
pub async fn serve(
    listener: TcpListener,
    taps: Arc<Taps>,
    access: Access,
    shutdown: impl Future<Output = ()>,
) {
    let drain = CancellationToken::new();
    let authorized = access.authorized.clone();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "tap server: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Events are small frames that must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let drain = drain.clone();
        let (taps, access, authorized) = (taps.clone(), access.clone(), authorized.clone());
        connections.spawn(async move {
            let Some(identity) = &access.identity else {
                let caller = Caller::Plaintext {
                    unredacted: access.plaintext_unredacted,
                };
                serve_conn(stream, taps, caller, authorized, drain).await;
                return;
            };
            let peer = stream.peer_addr().ok();
            let handshake = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                identity.tls().accept_own(stream),
            )
            .await;
            let (tls, id) = match handshake {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(error)) => {
                    taps.refused(Refusal::Handshake);
                    tracing::info!(?peer, %error, "tap caller refused: the TLS handshake failed (a client certificate from the mesh's trust anchors is required)");
                    return;
                }
                Err(_) => {
                    taps.refused(Refusal::Handshake);
                    tracing::info!(?peer, "tap caller refused: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                    return;
                }
            };
            let caller = match &id {
                Some(id) if authorized.iter().any(|a| a == &**id) => Caller::Authorized,
                _ => Caller::Unauthorized(id),
            };
            serve_conn(tls, taps, caller, authorized, drain).await;
        });
    }
    drain.cancel();
    connections.close();
    connections.wait().await;
}

/// Serves HTTP/2 `Tap` on one accepted connection, for `caller`.
async fn serve_conn<IO>(
    io: IO,
    taps: Arc<Taps>,
    caller: Caller,
    authorized: Arc<[String]>,
    drain: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // hyper waits for the HTTP/2 preface without a limit: a caller trickling it (after
    // the TLS handshake, which has its own limit) would hold the connection for good.
    let mut io = io;
    let mut preface = [0u8; PREFACE_LEN];
    tokio::select! {
        () = drain.cancelled() => return,
        read = tokio::time::timeout(PREFACE_TIMEOUT, io.read_exact(&mut preface)) => {
            if !matches!(read, Ok(Ok(_))) {
                tracing::debug!("tap server: no HTTP/2 preface in time; closed");
                return;
            }
        }
    }
    let io = Rewind::new(Bytes::copy_from_slice(&preface), io);
    let service = TapServer::new(TapService {
        taps,
        caller,
        authorized,
        drain: drain.clone(),
    });
    let svc = hyper::service::service_fn(move |req| service.clone().call(req));
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .serve_connection(TokioIo::new(io), svc);
    crate::http::until_drained(conn, &drain, |c| c.graceful_shutdown(), "tap").await;
}

/// `Tap` over a proxy's registry, for one connection's caller.
pub struct TapService {
    taps: Arc<Taps>,
    caller: Caller,
    authorized: Arc<[String]>,
    drain: CancellationToken,
}

#[tonic::async_trait]
impl Tap for TapService {
    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: tonic::Request<ObserveRequest>,
    ) -> Result<tonic::Response<ObserveStream>, tonic::Status> {
        let unredacted = match &self.caller {
            Caller::Unauthorized(id) => {
                self.taps.refused(Refusal::Unauthorized);
                let who = id.as_deref().unwrap_or("a certificate without a DNS name");
                let message = format!(
                    "{who} may not tap this proxy: only {} may (--tap-authorized-identity)",
                    self.authorized.join(", ")
                );
                tracing::info!(
                    caller = who,
                    "tap caller refused: not an authorised identity"
                );
                return Err(tonic::Status::permission_denied(message));
            }
            Caller::Authorized => true,
            Caller::Plaintext { unredacted } => *unredacted,
        };
        let asks = request
            .metadata()
            .get(UNREDACTED_METADATA)
            .is_some_and(|v| v == "true");
        let values = match (asks, unredacted) {
            (true, true) => HeaderValues::Unredacted,
            (true, false) => {
                return Err(tonic::Status::permission_denied(
                    "unredacted header values are only for an authorised mTLS caller or a loopback-only tap server",
                ))
            }
            (false, _) => HeaderValues::Redacted,
        };
        let req = request.into_inner();
        let (subscription, rx) = self.taps.subscribe(&req, values).map_err(|e| match e {
            SubscribeError::Match(e) => tonic::Status::invalid_argument(e.to_string()),
            e @ (SubscribeError::TooMany { .. } | SubscribeError::Disabled) => {
                tracing::info!("tap refused: {e}");
                tonic::Status::resource_exhausted(e.to_string())
            }
        })?;
        Ok(tonic::Response::new(ObserveStream {
            rx,
            stop: Box::pin(self.drain.clone().cancelled_owned()),
            _subscription: subscription,
        }))
    }
}

/// One tap's events; dropping it (the caller went away) ends the tap.
pub struct ObserveStream {
    rx: EventRx,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    _subscription: Subscription,
}

impl Stream for ObserveStream {
    type Item = Result<TapEvent, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx)
    }
}
