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

use linkerd2_proxy_api::tap::{
    tap_server::{Tap, TapServer},
    ObserveRequest, TapEvent,
};
use tokio::net::TcpListener;
use tokio_stream::{wrappers::TcpListenerStream, Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{EventRx, Subscription, Taps};

/// How often an idle tap connection is pinged, so a vanished tapper is noticed.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Serves `Tap/Observe` on `listener` until `shutdown` completes; open taps end then.
pub async fn serve(listener: TcpListener, taps: Arc<Taps>, shutdown: impl Future<Output = ()>) {
    let drain = CancellationToken::new();
    let service = TapService {
        taps,
        drain: drain.clone(),
    };
    let signal = async move {
        shutdown.await;
        drain.cancel();
    };
    // Events are small frames that must not wait for Nagle's algorithm.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .add_service(TapServer::new(service))
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "tap server failed");
    }
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
