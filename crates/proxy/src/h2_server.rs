//! Serving a client's HTTP/2 connection with `h2` directly, with hardened limits set
//! explicitly (see `docs/proxy.md`).
//!
//! A connection's streams run inside the connection's own task, not a task each: when the
//! upstream's answers wake it, each stream's response is queued and the connection writes
//! them all in one go, with no task spawned, scheduled and freed per request.

use std::{
    future::{poll_fn, Future},
    pin::pin,
    task::Poll,
};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};
use http::{header, HeaderValue, Request};
use http_body::Body;
use http_body_util::Either;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    forward::{Conn, HttpService},
    h2_common::{pipe_body, H2Body, Keepalive},
    listener::Side,
};

/// Largest HTTP/2 header list, in bytes (also bounds CONTINUATION floods).
pub const MAX_HEADER_LIST_BYTES: u32 = 32 * 1024;
/// Most concurrent streams an HTTP/2 client may open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Most streams a client may reset before the server sees them (rapid reset, CVE-2023-44487).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 32;
/// Most streams the server may reset for protocol errors before closing the connection.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// Flow-control windows and the send buffer, per stream and per connection.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUF: usize = 400 * 1024;

/// Serves `io`, a client's HTTP/2 connection (its preface not yet read), until the client
/// closes it or the drain finishes it: on drain, the client is sent `GOAWAY`, and the
/// streams it already opened are answered.
pub async fn serve<I>(io: I, svc: HttpService, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_send_buffer_size(MAX_SEND_BUF)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        conn = handshake => match conn {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(%error, "http/2 handshake failed");
                return;
            }
        },
        () = side.drain.cancelled() => return,
    };
    let mut keepalive = Keepalive::new(conn.ping_pong());
    let mut drain = pin!(side.drain.cancelled());
    let mut draining = false;
    let conn_ref = svc.conn();
    let mut streams = FuturesUnordered::new();
    let ended = poll_fn(|cx| loop {
        // Streams first: the responses they queue go out with this round's write.
        while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
        if !draining && drain.as_mut().poll(cx).is_ready() {
            draining = true;
            conn.graceful_shutdown();
        }
        if keepalive.poll_dead(cx, || true).is_ready() {
            return Poll::Ready(Err("the client did not answer a ping".into()));
        }
        // Reads frames, writes what is queued, and hands over the next new stream.
        match conn.poll_accept(cx) {
            Poll::Ready(Some(Ok((req, respond)))) => {
                // Boxed where it is made: the future is large, and the set would move it
                // several times over.
                streams.push(Box::pin(stream(conn_ref, req, respond)));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.to_string())),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
    if let Err(error) = ended {
        tracing::debug!(%error, "http/2 connection ended with an error");
    }
}

/// Answers one stream: forwards the request, and sends the response back as the client's
/// flow control allows. A client that resets the stream cancels the request.
async fn stream(
    conn: &Conn,
    req: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (head, recv) = req.into_parts();
    let body = H2Body::new(recv, &head.headers);
    let req = Request::from_parts(head, Either::Right(body));
    let rsp = {
        // Scoped, so that the response's sending does not keep its room.
        let mut handle = pin!(conn.handle(req));
        poll_fn(|cx| {
            if let Poll::Ready(rsp) = handle.as_mut().poll(cx) {
                return Poll::Ready(Some(rsp));
            }
            match respond.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    };
    let Some(rsp) = rsp else {
        tracing::debug!("client reset the stream before its response");
        return;
    };
    let (mut head, body) = rsp.into_parts();
    let eos = body.is_end_stream();
    if !eos && !head.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = body.size_hint().exact() {
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    match respond.send_response(http::Response::from_parts(head, ()), eos) {
        Ok(send) if !eos => pipe_body(body, send, h2::Reason::INTERNAL_ERROR).await,
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(%error, "response not sendable over http/2; resetting the stream");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}
