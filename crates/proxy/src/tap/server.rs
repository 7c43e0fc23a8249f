//! The tap server: `io.linkerd.proxy.tap.Tap/Observe` on `--tap-listen`. Each call
//! registers a tap with [`Taps`] and streams its events until the limit is reached, the
//! caller goes away, or the proxy shuts down; then the tap is removed and requests stop
//! doing tap work.
//!
//! Linkerd's tap server only accepts callers presenting the tap controller's mTLS
//! identity. Ferry's serves plaintext on the configured address: bind it to loopback (or
//! a pod address only the control plane can reach) until TODO(#4) mTLS on the tap port,
//! accepting only the control plane's identity.

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

use super::{EventRx, Subscription, Taps};
use crate::io::Rewind;

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
pub async fn serve(listener: TcpListener, taps: Arc<Taps>, shutdown: impl Future<Output = ()>) {
    let drain = CancellationToken::new();
    let service = TapServer::new(TapService {
        taps,
        drain: drain.clone(),
    });
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
        let service = service.clone();
        let svc = hyper::service::service_fn(move |req| service.clone().call(req));
        let drain = drain.clone();
        connections.spawn(async move {
            let mut stream = stream;
            let mut preface = [0u8; PREFACE_LEN];
            tokio::select! {
                () = drain.cancelled() => return,
                read = tokio::time::timeout(PREFACE_TIMEOUT, stream.read_exact(&mut preface)) => {
                    if !matches!(read, Ok(Ok(_))) {
                        tracing::debug!("tap server: no HTTP/2 preface in time; closed");
                        return;
                    }
                }
            }
            let stream = Rewind::new(Bytes::copy_from_slice(&preface), stream);
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE)
                .serve_connection(TokioIo::new(stream), svc);
            crate::http::until_drained(conn, &drain, |c| c.graceful_shutdown(), "tap").await;
        });
    }
    drain.cancel();
    connections.close();
    connections.wait().await;
}

/// `Tap` over a proxy's registry.
pub struct TapService {
    taps: Arc<Taps>,
    drain: CancellationToken,
}

#[tonic::async_trait]
impl Tap for TapService {
    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: tonic::Request<ObserveRequest>,
    ) -> Result<tonic::Response<ObserveStream>, tonic::Status> {
        let req = request.into_inner();
        let (subscription, rx) = self
            .taps
            .subscribe(&req)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
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
