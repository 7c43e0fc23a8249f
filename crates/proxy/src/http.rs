//! Serving an accepted HTTP connection: HTTP/2, and HTTP/1 past the fast path, with hyper,
//! with hardened limits set explicitly (see `docs/proxy.md`), and shutting it down
//! gracefully when the drain starts.

use std::{future::Future, pin::Pin};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::{forward::HttpService, io::DrainWatch, listener::Side, metrics::Protocol};

/// Most header fields an HTTP/1 request may carry; more is answered with 431.
pub const MAX_HEADERS: usize = 100;
/// Largest HTTP/1 request head (request line and headers), in bytes; more is answered with 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Largest HTTP/2 header list, in bytes (also bounds CONTINUATION floods).
pub const MAX_HEADER_LIST_BYTES: u32 = 32 * 1024;
/// Most concurrent streams an HTTP/2 client may open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Most streams a client may reset before the server sees them (rapid reset, CVE-2023-44487).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 32;
/// Most streams the server may reset for protocol errors before closing the connection.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
/// Response data an HTTP/2 client's stream may have queued in the proxy, waiting for the
/// client's connection to take it (hyper's default is 400 KiB: with 256 streams a client
/// that stops reading its socket held ~100 MB of the proxy's memory). At most
/// `MAX_CONCURRENT_STREAMS` × this per connection: 8 MiB.
pub const MAX_SEND_BUF_BYTES: usize = 32 * 1024;

/// `grpc-status`, parsed once.
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The gRPC status in a response head (a trailers-only answer) or in trailers.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// Whether a method is idempotent (RFC 9110 §9.2.2): sending its request twice has the
/// effect of sending it once, so a request the upstream may have seen can be sent again.
pub fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// The one rule for sending a request again after its upstream connection failed before
/// any of the answer came: when the request was not fully written, or the connection was
/// known dead before writing, the upstream cannot have acted on it; otherwise only an
/// idempotent request may be repeated. A POST the upstream read and then dropped the
/// connection on is never duplicated.
pub fn may_resend(idempotent: bool, fully_written: bool, known_dead: bool) -> bool {
    idempotent || !fully_written || known_dead
}

/// Serves `io` as `protocol` until the client closes or the drain finishes it. HTTP/1
/// starts on the fast path ([`crate::h1`]), which hands unusual connections back to
/// [`serve_h1`].
pub async fn serve<I>(protocol: Protocol, io: I, svc: HttpService, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http2 => serve_h2(io, svc, side).await,
        _ => crate::h1::serve(io, svc, side).await,
    }
}

async fn serve_h2<I>(io: I, svc: HttpService, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counter = svc.clone();
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buf_size(MAX_SEND_BUF_BYTES)
        .serve_connection(TokioIo::new(io), svc);
    let Some(idle) = side.timeouts.http2_idle else {
        return until_drained(conn, &side.drain, |c| c.graceful_shutdown(), "http/2").await;
    };
    // A connection that brought no new request for `idle` gets GOAWAY: streams already
    // open go on to their end (a long gRPC stream is not cut), then it closes. Idleness
    // ends the connection as a drain does, so one token stands for both, watched by a task
    // of its own: per request, one counter increment, and nothing more for the
    // connection's task to poll than without the timeout.
    let stop = side.drain.child_token();
    tokio::spawn(watch_idle(counter, idle, stop.clone()));
    until_drained(conn, &stop, |c| c.graceful_shutdown(), "http/2").await;
    // Ends the watch.
    stop.cancel();
}

/// Cancels `stop` when `svc`'s connection brings no request for `idle`; ends when `stop`
/// is cancelled otherwise (the connection ended, or the drain began).
async fn watch_idle(svc: HttpService, idle: std::time::Duration, stop: CancellationToken) {
    let mut seen = svc.requests();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(idle) => {}
        }
        let now = svc.requests();
        if now == seen {
            tracing::debug!(?idle, "http/2 connection idle; sending GOAWAY");
            stop.cancel();
            return;
        }
        seen = now;
    }
}

/// Serves `io` as HTTP/1 with hyper: the general path, for everything the fast path does
/// not take.
pub async fn serve_h1<I>(io: I, svc: HttpService, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(side.timeouts.header_read)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    until_drained(conn, &side.drain, |c| c.graceful_shutdown(), "http/1").await;
}

/// Drives a hyper server connection to its end; once `drain` is cancelled, asks it (with
/// `graceful`, the connection type's own graceful shutdown) to finish what it has and close.
pub async fn until_drained<C>(
    conn: C,
    drain: &CancellationToken,
    graceful: impl FnOnce(Pin<&mut C>),
    what: &str,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    // Watched through every wake of the connection: a kept wait is cheap to look at.
    let mut watch = DrainWatch::default();
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = watch.cancelled(drain) => {
            graceful(conn.as_mut());
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "{what} connection ended with an error");
    }
}

#[cfg(test)]
mod resend_tests {
    use super::*;

    #[test]
    fn only_idempotent_or_unsent_requests_go_out_again() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(m.as_bytes()), "{m}");
            assert!(may_resend(true, true, false), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "FOO"] {
            assert!(!is_idempotent(m.as_bytes()), "{m}");
        }
        assert!(
            !may_resend(false, true, false),
            "a written POST is never duplicated"
        );
        assert!(
            may_resend(false, false, false),
            "a POST not fully written may go again"
        );
        assert!(
            may_resend(false, true, true),
            "a connection dead before writing"
        );
    }
}
