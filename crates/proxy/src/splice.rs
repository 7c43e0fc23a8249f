//! Zero-copy forwarding between two plaintext sockets: `splice(2)` from one socket into a
//! pipe and from the pipe into the other, so bulk bytes never enter user space (one
//! syscall per direction per pipe-full, no copies). Used past a size threshold only: for
//! opaque TCP once a read fills the copy buffer, for HTTP/1 response bodies of known
//! length of at least [`SPLICE_MIN`] bytes. Small messages keep the plain read/write path.
//!
//! Memory is bounded per stream by the pipe: bytes are taken from the source only when the
//! pipe is empty, so a slow reader holds at most one pipe-full ([`PIPE_SIZE`]) in the kernel
//! and nothing in the proxy. The counters see every byte (read on the source, written on the
//! destination), and a destination with a client-write timeout fails as a plain write does.

use std::{
    future::poll_fn,
    io,
    os::fd::OwnedFd,
    task::{ready, Context, Poll},
};

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::{
    io::{AsyncReadExt, Interest},
    net::{
        tcp::{ReadHalf, WriteHalf},
        TcpStream,
    },
};

use crate::{
    io::{limited, Counted, Rewind, WriteLimit},
    metrics::TcpMetrics,
};

/// HTTP/1 bodies with at least this many bytes still to come are spliced.
pub const SPLICE_MIN: u64 = 32 * 1024;
/// The read buffer of opaque streams before they turn out to be bulk: a read that fills it
/// switches the direction to splicing.
pub const COPY_BUF: usize = 8 * 1024;

/// A pipe between two sockets, and how many bytes it holds.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
    /// The pipe's capacity: the most one splice into it asks for.
    size: usize,
}

/// The capacity asked for a pipe: four times the kernel's default, so a bulk stream takes
/// a quarter of the wake-ups and splices. A pipe the kernel refuses to grow (the user's
/// pipe-buffer allowance, `/proc/sys/fs/pipe-user-pages-soft`, is spent) keeps its 64 KiB.
pub const PIPE_SIZE: usize = 256 * 1024;
/// The kernel's default pipe capacity.
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

impl Pipe {
    /// A new, empty, non-blocking pipe.
    pub fn new() -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let size = fcntl_setpipe_size(&write, PIPE_SIZE).unwrap_or(DEFAULT_PIPE_SIZE);
        Ok(Self {
            read,
            write,
            held: 0,
            size,
        })
    }

    /// Moves up to `max` bytes from `src` into the (empty) pipe, waiting until `src` has
    /// some; `Ok(0)` at its end. Cancel-safe: bytes taken are in the pipe.
    pub async fn fill(
        &mut self,
        src: &TcpStream,
        metrics: &TcpMetrics,
        max: usize,
    ) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx, src, metrics, max)).await
    }

    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        metrics: &TcpMetrics,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        // Only an empty pipe is filled: then `EAGAIN` can only mean the socket has nothing
        // (a part-full pipe may lack slots for the socket's fragments, and that must not
        // be taken for the socket's readiness), and at most one pipe-full is held.
        debug_assert_eq!(self.held, 0);
        let len = max.min(self.size);
        loop {
            ready!(src.poll_read_ready(cx))?;
            let moved = src.try_io(Interest::READABLE, || {
                splice(
                    src,
                    None,
                    &self.write,
                    None,
                    len,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match moved {
                Ok(n) => {
                    self.held += n;
                    metrics.read(n);
                    return Poll::Ready(Ok(n));
                }
                // Readiness was stale: `try_io` cleared it; wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves everything the pipe holds into `dst`, watched by its client-write timeout.
    pub async fn drain(
        &mut self,
        dst: &TcpStream,
        metrics: &TcpMetrics,
        limit: &mut Option<WriteLimit>,
    ) -> io::Result<()> {
        poll_fn(|cx| self.poll_drain(cx, dst, metrics, limit)).await
    }

    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        dst: &TcpStream,
        metrics: &TcpMetrics,
        limit: &mut Option<WriteLimit>,
    ) -> Poll<io::Result<()>> {
        while self.held > 0 {
            let polled = dst.poll_write_ready(cx);
            ready!(limited(limit, cx, polled))?;
            let moved = dst.try_io(Interest::WRITABLE, || {
                splice(
                    &self.read,
                    None,
                    dst,
                    None,
                    self.held,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match moved {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.held -= n;
                    metrics.write(n);
                }
                // The pipe holds bytes, so the socket is what was not ready.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes all of `bytes` to `dst` (no copy buffer involved), watched by its timeout.
async fn write_all(
    dst: &TcpStream,
    metrics: &TcpMetrics,
    limit: &mut Option<WriteLimit>,
    mut bytes: &[u8],
) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| loop {
            let polled = dst.poll_write_ready(cx);
            ready!(limited(limit, cx, polled))?;
            match dst.try_write(bytes) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        })
        .await?;
        metrics.write(n);
        bytes = &bytes[n..];
    }
    Ok(())
}

/// One direction of an opaque stream: `prefix` (bytes already read from `src`), then
/// `src` to its end, into `dst`, whose write half is then shut down. Bytes are copied
/// through a small buffer until a read fills it; from then on they are spliced.
async fn one_way(
    prefix: &[u8],
    src: (ReadHalf<'_>, &TcpMetrics),
    dst: (WriteHalf<'_>, &TcpMetrics),
    limit: &mut Option<WriteLimit>,
) -> io::Result<u64> {
    let (mut src_half, src_metrics) = src;
    let (dst_half, dst_metrics) = dst;
    let dst: &TcpStream = dst_half.as_ref();
    write_all(dst, dst_metrics, limit, prefix).await?;
    let mut total = prefix.len() as u64;
    let mut buf = vec![0; COPY_BUF];
    let mut pipe: Option<Pipe> = None;
    loop {
        match pipe.as_mut() {
            None => {
                // tokio's own read: a short read marks the socket drained, so the next
                // wait costs no `EAGAIN` read (small messages pay what they did before).
                let n = src_half.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                src_metrics.read(n);
                write_all(dst, dst_metrics, limit, &buf[..n]).await?;
                total += n as u64;
                if n == buf.len() {
                    // Bulk: splice from now on (or keep copying if no pipe can be had).
                    match Pipe::new() {
                        Ok(p) => {
                            pipe = Some(p);
                            buf = Vec::new();
                        }
                        Err(error) => tracing::debug!(%error, "no pipe; copying"),
                    }
                }
            }
            Some(p) => {
                let n = p.fill(src_half.as_ref(), src_metrics, usize::MAX).await?;
                if n == 0 {
                    break;
                }
                p.drain(dst, dst_metrics, limit).await?;
                total += n as u64;
            }
        }
    }
    // Half-close passed on; the other direction may still be running.
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
    Ok(total)
}

/// Forwards an accepted plaintext connection (`client`, with the bytes detection read) and
/// a plaintext upstream connection both ways until both directions have ended, or either
/// fails. Returns the bytes sent up and down.
pub async fn bidirectional(
    client: &mut Rewind<Counted<TcpStream>>,
    upstream: &mut Counted<TcpStream>,
) -> io::Result<(u64, u64)> {
    let (prefix, client) = client.parts();
    let prefix = std::mem::take(prefix);
    let (c_sock, c_metrics, c_limit) = client.parts();
    let (u_sock, u_metrics, u_limit) = upstream.parts();
    let (c_read, c_write) = c_sock.split();
    let (u_read, u_write) = u_sock.split();
    let up = one_way(&prefix, (c_read, c_metrics), (u_write, u_metrics), u_limit);
    let down = one_way(&[], (u_read, u_metrics), (c_write, c_metrics), c_limit);
    tokio::try_join!(up, down)
}
