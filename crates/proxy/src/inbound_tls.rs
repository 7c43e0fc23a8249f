//! The inbound side's identity checks, between detection and serving: terminate mTLS from
//! meshed peers (TLS whose SNI is a mesh identity, see [`crate::tls`]), pass other traffic
//! on, or refuse it when `--inbound-require-identity` is set.
//!
//! After termination the decrypted stream goes through the same protocol detection as a
//! plaintext connection (`serve.rs`), with the client's identity as its `client_id` label.

use std::{convert::Infallible, sync::Arc};

use bytes::{Bytes, BytesMut};
use ferry_api::{ProxyErrorReason, TlsFailure};
use http::Request;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::server::TlsStream;

use crate::{
    errors::ProxyError,
    identity::Identity,
    io::{Counted, Rewind},
    listener::Side,
    metrics::{Direction, ErrorKind, Peer, Protocol, TcpLabels, Tls},
    tls::peek_sni,
};

/// A terminated mTLS connection from a meshed client.
pub type Terminated = TlsStream<Rewind<Counted<TcpStream>>>;

/// What to do with an inbound connection.
pub enum Checked {
    /// Serve it as it is (plaintext, or TLS meant for the application), as before identity.
    Plain(Counted<TcpStream>),
    /// Refuse it: it is not mTLS and the proxy requires an identity.
    Refuse(Counted<TcpStream>),
    /// mTLS terminated: serve the decrypted stream on the side given, whose TLS label names
    /// the client.
    Terminated(Box<Terminated>, Arc<Side>),
    /// The connection failed (handshake error, closed); nothing more to do.
    Done,
}

/// Decides what an inbound connection is, terminating mTLS meant for this proxy.
/// `buf` holds the bytes detection read; on termination they are consumed.
pub async fn check(
    identity: &Identity,
    side: &Arc<Side>,
    protocol: Protocol,
    mut io: Counted<TcpStream>,
    buf: &mut BytesMut,
    target_label: Arc<str>,
) -> Checked {
    if protocol == Protocol::Tls {
        let deadline = Instant::now() + side.timeouts.detect;
        let sni = match peek_sni(&mut io, buf, deadline).await {
            Ok(sni) => sni,
            Err(error) => {
                tracing::debug!(%error, "connection failed reading the client hello");
                return Checked::Done;
            }
        };
        if sni.as_deref().is_some_and(|s| identity.is_mesh_name(s)) {
            let io = Rewind::new(std::mem::take(buf).freeze(), io);
            // A client that stalls mid-handshake is given the detection timeout, no more.
            let accepted = tokio::time::timeout_at(deadline, identity.tls().accept(io)).await;
            let Ok(accepted) = accepted else {
                identity.tls().count(Direction::Inbound, TlsFailure::Other);
                tracing::debug!("inbound tls handshake timed out");
                return Checked::Done;
            };
            return match accepted {
                Ok((mut tls, client_id)) => {
                    tracing::debug!(%client_id, "mtls accepted");
                    let label = Tls::Client(client_id);
                    let metrics = side.registry.tcp(TcpLabels {
                        direction: Direction::Inbound,
                        peer: Peer::Src,
                        target_addr: target_label,
                        tls: label.clone(),
                    });
                    tls.get_mut().0.get_mut().relabel(metrics);
                    let mut meshed = Side::clone(side);
                    meshed.tls = label;
                    Checked::Terminated(Box::new(tls), Arc::new(meshed))
                }
                Err(e) => {
                    if e.failure == TlsFailure::Other {
                        tracing::debug!(error = %e.source, "inbound tls handshake failed");
                    } else {
                        tracing::warn!(reason = %e.failure, error = %e.source, "inbound tls handshake refused");
                    }
                    Checked::Done
                }
            };
        }
    }
    if side.require_identity {
        Checked::Refuse(io)
    } else {
        Checked::Plain(io)
    }
}

/// Refuses a connection without a client identity: HTTP requests get a proxy-made 403
/// (`l5d-proxy-error: identity-required`), anything else is closed.
pub async fn refuse<I>(protocol: Protocol, io: I, side: &Side)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let registry = side.registry.clone();
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let registry = registry.clone();
                async move {
                    registry.error(
                        Direction::Inbound,
                        ErrorKind::Http,
                        ProxyErrorReason::IdentityRequired,
                    );
                    let grpc = req
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    let err = ProxyError::new(
                        ProxyErrorReason::IdentityRequired,
                        "this proxy accepts only mTLS from meshed clients (--inbound-require-identity)",
                    );
                    let (rsp, _, _) = err.to_response(grpc);
                    Ok::<_, Infallible>(rsp.map(Full::<Bytes>::new))
                }
            });
            let io = TokioIo::new(io);
            let result = if protocol == Protocol::Http2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(io, svc)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(side.timeouts.header_read)
                    .serve_connection(io, svc)
                    .await
            };
            if let Err(error) = result {
                tracing::debug!(%error, "refused connection ended");
            }
        }
        Protocol::Tls | Protocol::Opaque => {
            side.registry.error(
                Direction::Inbound,
                ErrorKind::Tcp,
                ProxyErrorReason::IdentityRequired,
            );
            tracing::debug!("plaintext connection refused: identity required");
        }
    }
}
