//! Byte streams the proxy wraps around sockets: [`Counted`] counts bytes and the
//! connection's life into TCP metrics; [`Rewind`] replays bytes read during detection.
//! [`tune`] sets the options every socket the proxy accepts or opens gets.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// Idle time before TCP keep-alive probes start on a proxied connection.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(20);
/// Time between unanswered TCP keep-alive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the kernel closes the connection.
pub const TCP_KEEPALIVE_PROBES: u32 = 4;

/// Readies a proxied connection's socket, accepted or opened: no Nagle delay (latency
/// matters more than packet count for request/response traffic), and TCP keep-alive, so
/// that a peer that vanished without closing (a host gone, a partition) is noticed within
/// about 40 s of silence, whatever the protocol, at no cost per byte.
pub fn tune(sock: &TcpStream) {
    let _ = sock.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_PROBES);
    if let Err(error) = socket2::SockRef::from(sock).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "could not set tcp keep-alive");
    }
}

use crate::metrics::{Direction, ErrorKind, Registry, TcpMetrics};
use ferry_api::ProxyErrorReason;
use std::future::Future;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A deadline kept on one timer that is made once and moved later lazily: setting a later
/// deadline only records it, and when the timer fires before the deadline it is moved to
/// it then. A connection that sets a deadline per request (or per read) re-registers its
/// timer about once per limit period instead of once per request. Setting an earlier
/// deadline moves the timer at once.
#[derive(Default)]
pub struct Deadline {
    at: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: Armed,
}

impl Deadline {
    /// Expires at `at` (replacing any earlier setting).
    pub fn set(&mut self, at: Instant) {
        self.at = Some(at);
        match &mut self.timer {
            // Due no later: it fires, and is moved on to `at` then.
            Some(timer) if timer.deadline() <= at => {}
            Some(timer) => {
                timer.as_mut().reset(at);
                self.armed.clear();
            }
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Ready once the deadline has passed; pending while none is set.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(at), Some(timer)) = (self.at, self.timer.as_mut()) else {
            return Poll::Pending;
        };
        // A timer still in the wheel with this task's waker wakes it when it fires.
        if self.armed.holds(cx) && !timer.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                self.armed.arm(cx);
                return Poll::Pending;
            }
            self.armed.clear();
            if timer.deadline() >= at {
                return Poll::Ready(());
            }
            // Fired for an earlier setting: on to this one.
            timer.as_mut().reset(at);
        }
    }

    /// Resolves once the deadline has passed; never while none is set.
    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }
}

/// A drain watched through many waits of one connection. The wait is registered once, on a
/// child token of the connection's own, and kept: a wait made anew per request would lock
/// the shared token's waiter list (shared by every connection) to join it and again to
/// leave it, every time.
#[derive(Default)]
pub struct DrainWatch {
    wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    armed: Armed,
}

impl DrainWatch {
    /// Resolves once `drain` (the same token at every call) is cancelled.
    pub async fn cancelled(&mut self, drain: &CancellationToken) {
        std::future::poll_fn(|cx| {
            // The child is cancelled only with `drain`, whose flag is set first.
            if self.armed.holds(cx) && !drain.is_cancelled() {
                return Poll::Pending;
            }
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(drain.child_token().cancelled_owned()));
            let polled = wait.as_mut().poll(cx);
            match polled {
                Poll::Pending => self.armed.arm(cx),
                Poll::Ready(()) => self.armed.clear(),
            }
            polled
        })
        .await
    }
}

/// The waker a kept wait (a timer, a notification) was last registered with. Polling the
/// wait again with a waker that wakes the same task only registers it again (for a timer,
/// through the runtime's timer state; for a notification, under its lock), so a poll from
/// that task can be answered from a cheap look at whether the wait is over.
#[derive(Default)]
struct Armed(Option<std::task::Waker>);

impl Armed {
    /// Whether the wait is registered to wake the task `cx` polls for.
    fn holds(&self, cx: &Context<'_>) -> bool {
        self.0.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
    }

    /// Records that the wait was just registered with `cx`'s waker.
    fn arm(&mut self, cx: &Context<'_>) {
        if !self.holds(cx) {
            self.0 = Some(cx.waker().clone());
        }
    }

    /// The wait has to be registered again (it was reset, or it is over).
    fn clear(&mut self) {
        self.0 = None;
    }
}

/// `fut`'s output, unless `deadline` passes first (`None`). A future that is ready when
/// first polled arms no timer: a wait that is usually none (a pick of a live endpoint, a
/// connection's free stream) costs nothing in the common case.
pub async fn unless_late<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let Some(deadline) = deadline else {
        return Some(fut.await);
    };
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Some(out);
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

/// How long something has waited without progress, against a limit: the clock starts at
/// the first poll that could not proceed and stops at the next that did. Nothing happens
/// per poll that proceeds; the timer ([`Deadline`]) is made once, at the first wait.
pub struct Stall {
    limit: Duration,
    deadline: Deadline,
    waiting: bool,
}

impl Stall {
    /// A stall limited to `limit`.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            deadline: Deadline::default(),
            waiting: false,
        }
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Progress was made: the clock stops.
    pub fn progressed(&mut self) {
        self.waiting = false;
    }

    /// A poll could not proceed: starts the clock if it is not running; `true` once it has
    /// run out (`cx` is woken then).
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            self.waiting = true;
            self.deadline.set(Instant::now() + self.limit);
        }
        self.deadline.poll_expired(cx).is_ready()
    }
}

/// The client-write timeout of an accepted connection: a write (or flush) that cannot make
/// progress for `limit` fails with `TimedOut`, which ends the connection (a [`Stall`]).
pub struct WriteLimit {
    stall: Stall,
    registry: Arc<Registry>,
    direction: Direction,
}

impl WriteLimit {
    /// A limit counted, when it bites, in `registry` under `direction`.
    pub fn new(limit: Duration, registry: Arc<Registry>, direction: Direction) -> Self {
        Self {
            stall: Stall::new(limit),
            registry,
            direction,
        }
    }

    /// After a write that could not proceed: fails once the limit has run out.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.stall.expired(cx) {
            return Poll::Pending;
        }
        tracing::debug!(limit = ?self.stall.limit, "client took nothing it was sent; closing its connection");
        self.registry.error(
            self.direction,
            ErrorKind::Tcp,
            ProxyErrorReason::ClientWriteTimeout,
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client took nothing for {:?}", self.stall.limit),
        )))
    }
}

/// Passes `polled` on, watching it with `limit` when there is one.
pub(crate) fn limited<R>(
    limit: &mut Option<WriteLimit>,
    cx: &mut Context<'_>,
    polled: Poll<io::Result<R>>,
) -> Poll<io::Result<R>> {
    match (limit, polled) {
        (Some(l), Poll::Pending) => l.pending(cx),
        (Some(l), ready) => {
            l.stall.progressed();
            ready
        }
        (None, polled) => polled,
    }
}

pin_project_lite::pin_project! {
    /// A stream whose reads and writes are counted; opening and dropping it counts the
    /// connection as opened and closed. An accepted connection may also have a
    /// [`WriteLimit`].
    pub struct Counted<T> {
        #[pin]
        inner: T,
        metrics: Arc<TcpMetrics>,
        limit: Option<WriteLimit>,
    }

    impl<T> PinnedDrop for Counted<T> {
        fn drop(this: Pin<&mut Self>) {
            this.metrics.close();
        }
    }
}

impl<T> Counted<T> {
    /// Wraps `inner`, counting it as a newly opened connection.
    pub fn new(inner: T, metrics: Arc<TcpMetrics>) -> Self {
        metrics.open();
        Self {
            inner,
            metrics,
            limit: None,
        }
    }

    /// With a client-write timeout (see [`WriteLimit`]).
    pub fn with_write_limit(mut self, limit: Option<WriteLimit>) -> Self {
        self.limit = limit;
        self
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The parts zero-copy forwarding ([`crate::splice`]) works with: the socket, its
    /// counters and its client-write timeout.
    pub(crate) fn parts(&mut self) -> (&mut T, &TcpMetrics, &mut Option<WriteLimit>) {
        (&mut self.inner, &self.metrics, &mut self.limit)
    }

    /// Moves the connection to another label set (e.g. once a TLS handshake has told who
    /// the peer is): counted closed under the old labels and open under the new ones.
    pub fn relabel(&mut self, metrics: Arc<TcpMetrics>) {
        metrics.open();
        let old = std::mem::replace(&mut self.metrics, metrics);
        old.close();
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let ready = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = ready {
            this.metrics.read(buf.filled().len() - before);
        }
        ready
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        let ready = limited(this.limit, cx, polled);
        if let Poll::Ready(Ok(n)) = ready {
            this.metrics.write(n);
        }
        ready
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        let ready = limited(this.limit, cx, polled);
        if let Poll::Ready(Ok(n)) = ready {
            this.metrics.write(n);
        }
        ready
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        limited(this.limit, cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A stream that first yields `prefix` (bytes already read from `inner`), then reads on.
    pub struct Rewind<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Rewind<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Whether every byte of the prefix has been replayed.
    pub fn replayed(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The bytes still to replay, and the wrapped stream.
    pub fn parts(&mut self) -> (&mut Bytes, &mut T) {
        (&mut self.prefix, &mut self.inner)
    }
}

impl<T: AsyncRead> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whether `deadline` has expired, polled once.
    fn expired_now(deadline: &mut Deadline) -> bool {
        let waker = std::task::Waker::noop();
        deadline
            .poll_expired(&mut Context::from_waker(waker))
            .is_ready()
    }

    /// A later deadline leaves the timer where it was and is honoured when it fires; an
    /// earlier one moves it at once; none set never expires.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_expires_then_not_before() {
        let start = Instant::now();
        let mut deadline = Deadline::default();
        assert!(!expired_now(&mut deadline), "no deadline set");
        deadline.set(start + Duration::from_secs(10));
        let timer_at = |d: &Deadline| d.timer.as_ref().unwrap().deadline();
        // Per request: later and later deadlines, the timer untouched.
        deadline.set(start + Duration::from_secs(20));
        assert_eq!(timer_at(&deadline), start + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(
            !expired_now(&mut deadline),
            "fired for the first setting only"
        );
        assert_eq!(timer_at(&deadline), start + Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(expired_now(&mut deadline));
        // An earlier deadline than the timer's moves it.
        deadline.set(start + Duration::from_secs(60));
        deadline.set(start + Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(expired_now(&mut deadline));
        // And `expired` resolves at the deadline, not at the timer's earlier instant.
        deadline.set(start + Duration::from_secs(40));
        deadline.set(start + Duration::from_secs(45));
        deadline.expired().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(45));
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, std::task::Waker) {
        let count = Arc::new(Count(Default::default()));
        (count.clone(), count.into())
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A kept wait polled again by the task it is registered for is not registered again,
    /// and still wakes that task; polled by another task, it wakes that one instead.
    #[tokio::test(start_paused = true)]
    async fn kept_waits_wake_the_task_that_polled_them_last() {
        let ((a, wa), (b, wb)) = (counting(), counting());
        let mut deadline = Deadline::default();
        deadline.set(Instant::now() + Duration::from_secs(10));
        for waker in [&wa, &wa, &wb] {
            let polled = deadline.poll_expired(&mut Context::from_waker(waker));
            assert!(polled.is_pending());
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            (wakes(&a), wakes(&b)),
            (0, 1),
            "the last task to poll is woken"
        );
        assert!(deadline
            .poll_expired(&mut Context::from_waker(&wb))
            .is_ready());

        let drain = CancellationToken::new();
        let mut watch = DrainWatch::default();
        let mut wait = Box::pin(async {
            for _ in 0..3 {
                watch.cancelled(&drain).await;
            }
        });
        let ((c, wc), (d, wd)) = (counting(), counting());
        for waker in [&wc, &wc, &wd] {
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending());
        }
        drain.cancel();
        assert_eq!(
            (wakes(&c), wakes(&d)),
            (0, 1),
            "the last task to poll is woken"
        );
        assert!(wait.as_mut().poll(&mut Context::from_waker(&wd)).is_ready());
    }

    #[tokio::test]
    async fn rewind_replays_then_reads_and_counts() {
        let (a, mut b) = tokio::io::duplex(64);
        let metrics = Arc::new(TcpMetrics::default());
        let mut io = Rewind::new(
            Bytes::from_static(b"GET "),
            Counted::new(a, metrics.clone()),
        );
        b.write_all(b"/ HTTP/1.1").await.unwrap();
        drop(b);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1");
        assert_eq!(
            metrics.snapshot(),
            (10, 1, 0),
            "only bytes from the socket are counted"
        );
        drop(io);
        assert_eq!(
            metrics.snapshot(),
            (10, 1, 1),
            "dropping the stream counts a close"
        );
    }
}
