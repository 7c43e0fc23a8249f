//! Serving the public API within [`ApiLimits`]: HTTP/1.1 connections accepted under a cap,
//! each with a deadline for its request head (slowloris), bodies bounded, and streams
//! (Server-Sent Events) counted against their own caps.
//!
//! The API speaks HTTP/1.1 only: the CLI and browsers use it, and HTTP/2 in cleartext
//! would only add surface.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use ferry_api::control_api::ApiError;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{ApiLimits, LimitedListener};

/// The routes that answer with an endless event stream, and whether each is a tap.
fn stream_kind(path: &str) -> Option<bool> {
    if path == ferry_api::tap::TAP_PATH {
        Some(true)
    } else if path == ferry_api::stat::STAT_STREAM_PATH {
        Some(false)
    } else {
        None
    }
}

/// A JSON error answer (`{"error": ...}`).
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

/// Adds the body and stream limits of `limits` to `app`.
pub fn limit(app: Router, limits: &ApiLimits) -> Router {
    let streams = Arc::new(StreamPermits {
        sse: Arc::new(Semaphore::new(limits.max_sse_clients)),
        taps: Arc::new(Semaphore::new(limits.max_taps)),
        max_sse: limits.max_sse_clients,
        max_taps: limits.max_taps,
    });
    let max_body = limits.max_body_bytes;
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let streams = streams.clone();
            async move { bounded(req, next, max_body, &streams).await }
        },
    ))
}

struct StreamPermits {
    sse: Arc<Semaphore>,
    taps: Arc<Semaphore>,
    max_sse: usize,
    max_taps: usize,
}

async fn bounded(req: Request, next: Next, max_body: usize, streams: &StreamPermits) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max_body} bytes (--api-max-body-bytes)"),
        );
    }
    let req = req.map(|body| Body::new(http_body_util::Limited::new(body, max_body)));
    let Some(is_tap) = stream_kind(req.uri().path()) else {
        return next.run(req).await;
    };
    let Ok(sse) = streams.sse.clone().try_acquire_owned() else {
        return busy(format!(
            "too many event streams open ({} of --api-max-sse-clients); close one or try again later",
            streams.max_sse
        ));
    };
    let tap = if is_tap {
        match streams.taps.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return busy(format!(
                    "too many taps open ({} of --api-max-taps); close one or try again later",
                    streams.max_taps
                ))
            }
        }
    } else {
        None
    };
    let response = next.run(req).await;
    // The places are held for as long as the stream's body lives.
    let (parts, body) = response.into_parts();
    let stream = tokio_stream::StreamExt::map(body.into_data_stream(), move |chunk| {
        let _held = (&sse, &tap);
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

fn busy(message: String) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Serves `app` on `listener` within `limits`' connection and header-read limits (the
/// routes' own limits are [`limit`]'s) until `shutdown` completes; then asks open
/// connections to close after their current request and returns when they have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ApiLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let listener = LimitedListener::new(listener, limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let served = http.serve_connection(TokioIo::new(conn), service);
        let stop = stop.clone();
        connections.spawn(async move {
            let mut served = std::pin::pin!(served);
            let result = tokio::select! {
                result = served.as_mut() => result,
                () = stop.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "API connection ended with an error");
            }
            Ok::<(), Infallible>(())
        });
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The probe listener's routes: `/ready` and `/live`, and nothing else to reveal.
pub fn probes() -> Router {
    use axum::routing::get;
    Router::new()
        .route("/ready", get(|| async { "ready\n" }))
        .route("/live", get(|| async { "live\n" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt as _;

    /// An endless event stream, as the tap relay and the stat stream answer.
    async fn endless() -> Response {
        let stream = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                std::time::Duration::from_secs(1),
            )),
            |_| Ok::<_, Infallible>(bytes::Bytes::from_static(b": tick\n\n")),
        );
        Response::new(Body::from_stream(stream))
    }

    async fn call(app: &Router, path: &str) -> Response {
        let req = Request::get(path).body(Body::empty()).unwrap();
        app.clone().oneshot(req).await.unwrap()
    }

    async fn message(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn taps_and_event_streams_have_their_own_caps() {
        let limits = ApiLimits {
            max_sse_clients: 2,
            max_taps: 1,
            ..ApiLimits::default()
        };
        let app = limit(
            Router::new()
                .route(ferry_api::tap::TAP_PATH, get(endless))
                .route(ferry_api::stat::STAT_STREAM_PATH, get(endless))
                .route("/plain", get(|| async { "ok" })),
            &limits,
        );
        let tap = ferry_api::tap::TAP_PATH;
        let stat = ferry_api::stat::STAT_STREAM_PATH;
        // One tap holds the only tap place...
        let first = call(&app, tap).await;
        assert_eq!(first.status(), StatusCode::OK);
        let second = call(&app, tap).await;
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()[header::RETRY_AFTER], "5");
        assert!(message(second).await.contains("--api-max-taps"));
        // ...while another kind of stream still fits, up to the streams' cap.
        let stream = call(&app, stat).await;
        assert_eq!(stream.status(), StatusCode::OK);
        let over = call(&app, stat).await;
        assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(message(over).await.contains("--api-max-sse-clients"));
        // Plain routes are not counted.
        assert_eq!(call(&app, "/plain").await.status(), StatusCode::OK);
        // Dropping a stream frees its places.
        drop(first);
        assert_eq!(call(&app, tap).await.status(), StatusCode::OK);
    }
}
