//! Opening connections to upstreams: name resolution, the connect timeout, `TCP_NODELAY`,
//! TCP metrics, and errors that say which of those failed. [`Connector`] plugs the same
//! logic into the pooled HTTP client. A connector to a meshed endpoint also opens mTLS to it
//! (see [`crate::tls`]), so pools are per address and expected identity.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{client::legacy::connect::Connected, rt::TokioIo};
use tokio::net::TcpStream;

use ferry_api::TlsFailure;

use crate::{
    config::Authority,
    identity::Identity,
    io::Counted,
    metrics::{Direction, Peer, Registry, TcpLabels, TcpMetrics, Tls},
    tls::ClientStream,
};

/// What kind of failure a [`ConnectError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The name did not resolve to any address.
    Resolve,
    /// The peer refused the connection.
    Refused,
    /// The connect timeout passed.
    Timeout,
    /// Anything else (unreachable, reset, ...).
    Other,
    /// The mTLS handshake with the endpoint's proxy failed.
    Tls(TlsFailure),
}

/// A connection to `target` could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {target}{}", match kind {
    ConnectErrorKind::Resolve => " (name did not resolve)",
    ConnectErrorKind::Refused => " (refused)",
    ConnectErrorKind::Timeout => " (timed out)",
    ConnectErrorKind::Other => "",
    ConnectErrorKind::Tls(_) => " (tls handshake)",
})]
pub struct ConnectError {
    /// The target, as configured.
    pub target: String,
    /// What failed.
    pub kind: ConnectErrorKind,
    /// The underlying error, if any.
    #[source]
    pub source: Option<io::Error>,
}

impl ConnectError {
    /// The same failure again, for each request that waited on one connect attempt.
    pub fn duplicate(&self) -> Self {
        Self {
            target: self.target.clone(),
            kind: self.kind,
            source: self
                .source
                .as_ref()
                .map(|e| io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// The identity a meshed endpoint must prove, and ours to prove it to.
#[derive(Clone)]
pub struct PeerIdentity {
    /// This proxy's identity (certificate and TLS configs).
    pub local: Arc<Identity>,
    /// The identity the endpoint's certificate must name.
    pub server_id: Arc<str>,
}

/// Opens TCP connections to one target.
#[derive(Clone)]
pub struct Connector {
    target: Authority,
    timeout: Duration,
    /// Set for a meshed endpoint: connections are mTLS to this identity.
    tls: Option<PeerIdentity>,
    /// Resolved once: connections to the same target share one counter set.
    metrics: Arc<TcpMetrics>,
}

impl Connector {
    /// A connector to `target`, counting its connections as `direction`/`peer="dst"`;
    /// with `tls`, its connections are mTLS.
    pub fn new(
        target: Authority,
        timeout: Duration,
        direction: Direction,
        registry: &Registry,
        tls: Option<PeerIdentity>,
    ) -> Self {
        let metrics = registry.tcp(TcpLabels {
            direction,
            peer: Peer::Dst,
            target_addr: target.to_string().into(),
            tls: Tls::for_peer(tls.as_ref()),
        });
        Self {
            target,
            timeout,
            tls,
            metrics,
        }
    }

    /// The identity this connector's connections must reach, if meshed.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.tls.as_ref()
    }

    /// The target this connector opens connections to.
    pub fn target(&self) -> &Authority {
        &self.target
    }

    /// Opens a plain connection (not yet counted).
    pub async fn connect_raw(&self) -> Result<(TcpStream, SocketAddr), ConnectError> {
        let err = |kind, source| ConnectError {
            target: self.target.to_string(),
            kind,
            source,
        };
        let addrs: Vec<SocketAddr> = match self.target.socket_addr() {
            Some(addr) => vec![addr],
            None => {
                let lookup = tokio::net::lookup_host((&*self.target.host, self.target.port));
                match tokio::time::timeout(self.timeout, lookup).await {
                    Ok(Ok(addrs)) => addrs.collect(),
                    Ok(Err(e)) => return Err(err(ConnectErrorKind::Resolve, Some(e))),
                    Err(_) => return Err(err(ConnectErrorKind::Timeout, None)),
                }
            }
        };
        let Some(&addr) = addrs.first() else {
            return Err(err(ConnectErrorKind::Resolve, None));
        };
        match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                crate::io::tune(&stream);
                Ok((stream, addr))
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Err(err(ConnectErrorKind::Refused, Some(e)))
            }
            Ok(Err(e)) => Err(err(ConnectErrorKind::Other, Some(e))),
            Err(_) => Err(err(ConnectErrorKind::Timeout, None)),
        }
    }

    /// How many connections this connector has opened so far.
    pub fn opened(&self) -> u64 {
        self.metrics.opened()
    }

    /// Counts an already opened connection.
    pub fn count(&self, stream: TcpStream) -> Counted<TcpStream> {
        Counted::new(stream, self.metrics.clone())
    }

    /// Opens mTLS over a counted connection when the target is meshed.
    pub async fn secure(&self, io: Counted<TcpStream>) -> Result<ClientStream, ConnectError> {
        let Some(peer) = &self.tls else {
            return Ok(ClientStream::Plain(io));
        };
        let handshake = peer.local.tls().connect(&peer.server_id, io);
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(tls)) => Ok(ClientStream::Tls(Box::new(tls))),
            Ok(Err(e)) => {
                tracing::debug!(target = %self.target, server_id = %peer.server_id, error = %e.source, "outbound tls handshake failed");
                Err(ConnectError {
                    target: format!("{} as {}", self.target, peer.server_id),
                    kind: ConnectErrorKind::Tls(e.failure),
                    source: Some(e.source),
                })
            }
            Err(_) => Err(ConnectError {
                target: self.target.to_string(),
                kind: ConnectErrorKind::Timeout,
                source: None,
            }),
        }
    }

    /// Opens and counts a connection, with mTLS when the target is meshed.
    pub async fn connect(&self) -> Result<ClientStream, ConnectError> {
        let (stream, _) = self.connect_raw().await?;
        self.secure(self.count(stream)).await
    }
}

/// A pooled client's connection: the counted stream, adapted to hyper.
pub struct ClientIo(TokioIo<ClientStream>);

impl hyper_util::client::legacy::connect::Connection for ClientIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = ClientIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<ClientIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Ignores the URI: a connector belongs to one target, whatever authority a request names.
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(|io| ClientIo(TokioIo::new(io))) })
    }
}
