//! Explicit limits on the control plane's two servers (docs/security.md, "Limits"): what
//! one client, or many, may hold of the public API and of the gRPC port. Each has a default
//! here and a `ferry-control` flag ([`crate::config::Args`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of both servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The public API's.
    pub api: ApiLimits,
    /// The gRPC server's.
    pub grpc: GrpcLimits,
}

/// Limits of the public HTTP/JSON API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// How long a client has to send a whole request head (slowloris).
    pub header_read_timeout: Duration,
    /// The largest request body accepted (every route is a `GET`; bodies are refused
    /// beyond this with 413).
    pub max_body_bytes: usize,
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Server-Sent Event streams open at once (tap and stat streams, the dashboard's).
    pub max_sse_clients: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_connections: 256,
            max_sse_clients: 64,
        }
    }
}

/// Limits of the gRPC server (`Destination`, `Identity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// HTTP/2 streams one connection may have open at once (a proxy holds one `Get` or
    /// `GetProfile` stream per destination it talks to).
    pub max_concurrent_streams: u32,
    /// Streams a client may reset before the server has answered them, before the
    /// connection is closed (HTTP/2 rapid reset, CVE-2023-44487).
    pub max_pending_resets: usize,
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// The largest gRPC message decoded (a `Certify` CSR or a `GetDestination` is far
    /// smaller).
    pub max_message_bytes: usize,
    /// How often idle connections are pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 1024,
            max_pending_resets: 20,
            max_connections: 10_000,
            max_message_bytes: 64 * 1024,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Accepts connections from `listener` while fewer than `permits` allows are open: each
/// accepted stream holds a permit until it is dropped.
pub struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    /// At most `max` connections of `listener` open at once.
    pub fn new(listener: TcpListener, max: usize) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Waits for a free place, then for a connection. Errors that concern one connection
    /// only (reset before accept, out of file descriptors) are logged and waited out, so
    /// the server keeps accepting.
    pub async fn accept(&self) -> Limited {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    return Limited {
                        stream,
                        _permit: permit,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    // EMFILE and friends: give other connections time to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The accepted connections as a stream, for tonic's `serve_with_incoming`; the
    /// accepting task ends when the stream is dropped. Nagle is off: destination updates
    /// are small frames that must not wait for a delayed ACK.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<Limited>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    conn = self.accept() => conn,
                    () = tx.closed() => return,
                };
                if let Err(error) = conn.stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot disable Nagle on a connection");
                }
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A connection that holds its place under a [`LimitedListener`]'s limit until dropped.
pub struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Limited {
    /// The connection.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
