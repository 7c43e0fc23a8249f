//! Serving an accepted HTTP connection: HTTP/2 ([`crate::h2_server`]), or HTTP/1 — on the
//! fast path, and past it with hyper, with hardened limits set explicitly (see
//! `docs/proxy.md`) — shutting it down gracefully when the drain starts.

use std::{future::Future, pin::Pin};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::{forward::HttpService, listener::Side, metrics::Protocol};

/// Most header fields an HTTP/1 request may carry; more is answered with 431.
pub const MAX_HEADERS: usize = 100;
/// Largest HTTP/1 request head (request line and headers), in bytes; more is answered with 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Serves `io` as `protocol` until the client closes or the drain finishes it. HTTP/1
/// starts on the fast path ([`crate::h1`]), which hands unusual connections back to
/// [`serve_h1`].
pub async fn serve<I>(protocol: Protocol, io: I, svc: HttpService, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http2 => crate::h2_server::serve(io, svc, side).await,
        _ => crate::h1::serve(io, svc, side).await,
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
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = drain.cancelled() => {
            graceful(conn.as_mut());
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "{what} connection ended with an error");
    }
}
