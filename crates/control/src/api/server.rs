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

/// Whether `path` answers with an endless event stream (tap, the stat stream).
fn is_stream(path: &str) -> bool {
    path == ferry_api::tap::TAP_PATH || path == ferry_api::stat::STAT_STREAM_PATH
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
        max_sse: limits.max_sse_clients,
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
    max_sse: usize,
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
    if !is_stream(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(sse) = streams.sse.clone().try_acquire_owned() else {
        return busy(format!(
            "too many event streams open ({} of --api-max-sse-clients); close one or try again later",
            streams.max_sse
        ));
    };
    let response = next.run(req).await;
    // The places are held for as long as the stream's body lives.
    let (parts, body) = response.into_parts();
    let stream = tokio_stream::StreamExt::map(body.into_data_stream(), move |chunk| {
        let _held = &sse;
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
    async fn event_streams_are_capped_and_plain_routes_are_not() {
        let limits = ApiLimits {
            max_sse_clients: 2,
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
        // A tap and a stat stream take the two places (the relay caps taps on its own,
        // `--tap-max-concurrent`)...
        let first = call(&app, tap).await;
        assert_eq!(first.status(), StatusCode::OK);
        let stream = call(&app, stat).await;
        assert_eq!(stream.status(), StatusCode::OK);
        // ...so a third stream of either kind waits for one to end.
        for path in [tap, stat] {
            let over = call(&app, path).await;
            assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(over.headers()[header::RETRY_AFTER], "5");
            assert!(message(over).await.contains("--api-max-sse-clients"));
        }
        // Plain routes are not counted.
        assert_eq!(call(&app, "/plain").await.status(), StatusCode::OK);
        // Dropping a stream frees its place.
        drop(first);
        assert_eq!(call(&app, tap).await.status(), StatusCode::OK);
    }
}
