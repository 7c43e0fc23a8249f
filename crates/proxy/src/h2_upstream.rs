//! The one HTTP/2 connection to a backend. Every HTTP/2 request for the backend, from every
//! client connection, is a stream on it. The proxy speaks `h2` here directly: a request is
//! sent from the task that serves it and its response is read there, with no pool checkout,
//! no channel to a connection task and no task per request (a request body still arriving
//! when the request is sent is streamed by a task of its own).
//!
//! A connection that closed is replaced on the next request (requests that arrive meanwhile
//! wait for that one connect and share its failure). One that carried no request for an idle
//! timeout is let go and closes once its streams are done. The live connection is pinged
//! every [`KEEPALIVE`], and closed when a ping goes unanswered that long: a timer per
//! connection, not work per frame.
//!
//! Every client's streams share the connection's flow-control window, so a client that
//! stops reading its response would, by holding unread data, stall the others. The windows
//! are small (a stream holds at most [`STREAM_WINDOW`] unread), and the connection's task
//! resets a **starved stream**: one whose reader has taken nothing for about the stalled
//! stream timeout while the streams together hold half the connection's window or more
//! (issue #20). Its unread data is given back to the connection at once.
//!
//! The same check enforces the response-head timeout: a stream whose request went whole
//! and whose response head has not come by its deadline is reset, and its request fails
//! `response-head-timeout`. One registration per request in a list the connection's task
//! walks now and then, rather than a timer per request.

use std::{
    future::{poll_fn, Future},
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::{header, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::{
    backend::{ReqBody, SendError},
    connect::{ConnectError, Connector},
    io,
    route::Limit,
    tls::ClientStream,
};

/// How often the live upstream HTTP/2 connection is pinged, and how long a ping
/// may go unanswered.
pub const KEEPALIVE: Duration = Duration::from_secs(20);

/// How many connections one request may try when each turns out closed.
const MAX_SEND_ATTEMPTS: usize = 3;

/// A request body's last data frame up to this size is sent without reserving window first.
const SMALL_LAST_FRAME: usize = 16 * 1024;

/// How much of a response one stream may receive before its reader takes it: HTTP/2's
/// default window. Bounds the memory a reader that stops holds upstream (was hyper's 2 MiB:
/// 2.5 stalled streams starved a whole connection).
pub const STREAM_WINDOW: u32 = 64 * 1024;
/// What all streams of the connection may hold unread together: as much as the most
/// streams one client connection may open (256, `http::MAX_CONCURRENT_STREAMS`) can hold,
/// so that one client alone cannot starve the connection; several together are dealt with
/// by the starved-stream check.
pub const CONN_WINDOW: u32 = crate::http::MAX_CONCURRENT_STREAMS * STREAM_WINDOW;
/// Request body data one stream may queue beyond the upstream's window.
const MAX_SEND_BUF: usize = 64 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// The connection's task checks its streams at most this often.
const MIN_CHECK_EVERY: Duration = Duration::from_millis(10);

type Sender = h2::client::SendRequest<Bytes>;

/// The streams of one connection whose response body is being read, watched for
/// starvation by the connection's task. Slots are reused: no allocation per request once
/// the connection has seen its peak of concurrent streams.
struct Watched {
    slots: Vec<Option<WatchedStream>>,
    free: Vec<usize>,
    /// When the connection's task checks next.
    next_check: Instant,
    /// When the check next looks for starved streams: at its own pace, however often
    /// head deadlines make it run.
    starved_check: Instant,
}

struct WatchedStream {
    /// The response's flow control, once its head has come.
    flow: Option<h2::FlowControl>,
    /// To reset the stream; `None` while the request body is still being sent (the body's
    /// task holds it), in which case the stream is not reset by the check.
    send: Option<h2::SendStream<Bytes>>,
    /// Unread bytes at the previous check.
    seen: usize,
    /// While the response head has not come: when to give up on it, and how late the
    /// check may notice ([`Limit::slack`]).
    head_deadline: Option<(Instant, Duration)>,
    /// Set when the check reset the stream for its head deadline.
    timed_out: bool,
}

/// A stream's place among its connection's watched streams; leaving it (dropping this)
/// takes the stream out.
struct Slot {
    streams: Streams,
    index: usize,
}

impl Slot {
    /// The stream's slot, and whether the checks come in time for its head deadline
    /// ([`Watched::in_time`]).
    fn new(streams: Streams, stream: WatchedStream) -> (Self, bool) {
        let mut watched = lock_streams(&streams);
        let in_time = watched.in_time(&stream);
        let index = watched.insert(stream);
        drop(watched);
        (Self { streams, index }, in_time)
    }

    /// Runs `f` on the watched stream, under the list's lock.
    fn with<R>(&self, f: impl FnOnce(&mut WatchedStream) -> R) -> Option<R> {
        let mut streams = lock_streams(&self.streams);
        streams.slots.get_mut(self.index)?.as_mut().map(f)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let stream = lock_streams(&self.streams).remove(self.index);
        // Dropped outside the lock: it takes the connection's own.
        drop(stream);
    }
}

type Streams = Arc<Mutex<Watched>>;

fn lock_streams(streams: &Streams) -> MutexGuard<'_, Watched> {
    streams.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watched {
    fn new(next_check: Instant) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            next_check,
            starved_check: next_check,
        }
    }

    /// Whether the check comes in time for `stream`'s head deadline (or it has none). A
    /// shorter limit than the checks are spaced for is kept by the request's own timer
    /// until the next check, which spaces the following ones for it.
    fn in_time(&self, stream: &WatchedStream) -> bool {
        stream
            .head_deadline
            .is_none_or(|(at, slack)| at + slack >= self.next_check)
    }

    fn insert(&mut self, stream: WatchedStream) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(stream);
                i
            }
            None => {
                self.slots.push(Some(stream));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<WatchedStream> {
        let taken = self.slots.get_mut(i)?.take();
        if taken.is_some() {
            self.free.push(i);
        }
        taken
    }

    /// Resets the streams whose response head is overdue at `now`, and those whose
    /// readers took nothing since the previous check when the streams together hold half
    /// the connection's window or more; returns how many of each. The next check comes
    /// `every` from now, or sooner when a waiting head's deadline needs it
    /// ([`Watched::next_check`]).
    fn check(&mut self, now: Instant, every: Duration) -> (usize, usize) {
        let starve = now >= self.starved_check;
        if starve {
            self.starved_check = now + every;
        }
        let mut overdue = 0;
        let mut next = self.starved_check;
        for slot in self.slots.iter_mut().flatten() {
            let Some((at, slack)) = slot.head_deadline else {
                continue;
            };
            if at > now {
                next = next.min(at.max(now + MIN_CHECK_EVERY) + slack);
            } else if let Some(mut send) = slot.send.take() {
                send.send_reset(h2::Reason::CANCEL);
                slot.head_deadline = None;
                slot.timed_out = true;
                overdue += 1;
            }
        }
        self.next_check = next;
        if !starve {
            return (overdue, 0);
        }
        let held: usize = self
            .slots
            .iter()
            .flatten()
            .filter_map(|s| Some(s.flow.as_ref()?.used_capacity()))
            .sum();
        let needed = held >= CONN_WINDOW as usize / 2;
        let mut starved = 0;
        for slot in self.slots.iter_mut().flatten() {
            let Some(flow) = slot.flow.as_mut() else {
                continue;
            };
            let used = flow.used_capacity();
            if needed && used > 0 && used == slot.seen {
                if let Some(mut send) = slot.send.take() {
                    send.send_reset(h2::Reason::CANCEL);
                    // The unread data no longer counts against the connection's window.
                    let _ = flow.release_capacity(used);
                    starved += 1;
                }
            }
            slot.seen = used;
        }
        (overdue, starved)
    }
}

/// The HTTP/2 connection to one backend, opened on first use.
pub struct H2Upstream {
    connector: Connector,
    idle: Duration,
    /// How often the connection's task checks its streams.
    check_every: Duration,
    shared: Arc<Shared>,
}

/// What the connection's tasks share with the requests.
#[derive(Default)]
struct Shared {
    /// The open connection's sender, with the number of the attempt that opened it.
    live: Mutex<Option<(u64, Sender, Streams)>>,
    /// Held while connecting; the last failed attempt's number and error.
    connecting: tokio::sync::Mutex<Option<(u64, ConnectError)>>,
    /// Connect attempts finished so far.
    attempts: AtomicU64,
    /// Set by requests, cleared by the idle check.
    used: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<(u64, Sender, Streams)>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connection `id` is the live one.
    fn is_live(&self, id: u64) -> bool {
        self.lock().as_ref().is_some_and(|(n, _, _)| *n == id)
    }

    /// Forgets connection `id` if it is still the live one; returns whether it was.
    fn forget(&self, id: u64) -> bool {
        let mut live = self.lock();
        if live.as_ref().is_some_and(|(n, _, _)| *n == id) {
            let sender = live.take();
            drop(live);
            drop(sender);
            true
        } else {
            false
        }
    }
}

impl H2Upstream {
    /// Connections are opened with `connector`; one unused for `idle` is closed; a stream
    /// starved for about `stalled` is reset (see the module's notes). With a response-head
    /// timeout, streams are checked often enough that one is cut off within a tenth of it
    /// past its deadline.
    pub fn new(
        connector: Connector,
        idle: Duration,
        stalled: Duration,
        response_head: Option<Duration>,
    ) -> Self {
        let check_every = response_head
            .map_or(stalled / 2, |t| (t / 10).min(stalled / 2))
            .max(MIN_CHECK_EVERY);
        Self {
            connector,
            idle,
            check_every,
            shared: Arc::default(),
        }
    }

    /// Sends `req` as a stream on the backend's connection, opening one when there is none,
    /// and waits for the response head. `whole`: the request's body has all come (the
    /// caller looked once, so this need not). `limit` bounds the wait for the head (a
    /// route's timeout also the wait for a connection): the connection's task keeps it
    /// for a whole request, a timer of the request's own for one still sending its body.
    pub async fn send(
        &self,
        req: Request<ReqBody>,
        whole: bool,
        limit: Option<Limit>,
    ) -> Result<Response<H2Body>, SendError> {
        // A route's deadline also bounds getting a connection and a stream on it.
        let route_deadline = limit.and_then(Limit::route).map(|(at, _)| at);
        let late = || limit.map_or(SendError::Closed, Limit::ran_out);
        if !self.shared.used.load(Ordering::Relaxed) {
            self.shared.used.store(true, Ordering::Relaxed);
        }
        let mut sender = None;
        for _ in 0..MAX_SEND_ATTEMPTS {
            let current = self
                .shared
                .lock()
                .as_ref()
                .map(|(id, s, w)| (*id, s.clone(), w.clone()));
            let Some((id, mut s, w)) = current else {
                // Rare, and large: kept out of the per-request future.
                let connect = Box::pin(self.connect());
                io::unless_late(route_deadline, connect)
                    .await
                    .ok_or_else(late)??;
                continue;
            };
            let ready = io::unless_late(route_deadline, poll_fn(|cx| s.poll_ready(cx)));
            match ready.await.ok_or_else(late)? {
                Ok(()) => {
                    sender = Some((s, w));
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, "http/2 upstream connection closed; sending on a new one");
                    self.shared.forget(id);
                }
            }
        }
        let Some((mut sender, streams)) = sender else {
            return Err(SendError::Closed);
        };
        let (mut head, body) = req.into_parts();
        let is_connect = head.method == Method::CONNECT;
        let eos = whole && !is_connect;
        if eos && !matches!(head.method, Method::GET | Method::HEAD | Method::DELETE) && !is_connect
        {
            // As hyper did: an empty body with payload semantics says so.
            head.headers
                .entry(header::CONTENT_LENGTH)
                .or_insert(HeaderValue::from_static("0"));
        }
        let (response, stream) = sender
            .send_request(Request::from_parts(head, ()), eos)
            .map_err(SendError::H2)?;
        drop(sender);
        // A whole request is watched from now: for its head deadline, then its reader.
        let due = limit.map(|l| (l.deadline_from_now(), l));
        let sent_whole = if eos {
            Some(stream)
        } else {
            // A small body that has already arrived (a unary gRPC call's) goes out at once,
            // and the request is then as whole as a bodiless one; one still arriving is
            // streamed by a task of its own.
            let mut pipe = Box::pin(pipe_body(body, stream));
            match poll_fn(|cx| Poll::Ready(pipe.as_mut().poll(cx))).await {
                Poll::Ready(sent) => sent,
                Poll::Pending => {
                    tokio::spawn(pipe);
                    None
                }
            }
        };
        let mut own_timer = limit.is_some();
        let mut slot = sent_whole.map(|stream| {
            let stream = WatchedStream {
                flow: None,
                send: Some(stream),
                seen: 0,
                head_deadline: due.map(|(at, l)| (at, l.slack())),
                timed_out: false,
            };
            let (slot, in_time) = Slot::new(streams.clone(), stream);
            own_timer &= !in_time;
            slot
        });
        let response = match (due, own_timer) {
            (Some((at, l)), true) => tokio::time::timeout_at(at, response)
                .await
                .map_err(|_| l.ran_out())?,
            _ => response.await,
        };
        let (head, mut recv) = match response {
            Ok(rsp) => rsp.into_parts(),
            Err(e) => {
                let timed_out = slot.as_ref().and_then(|s| s.with(|w| w.timed_out));
                return Err(match (timed_out, limit) {
                    (Some(true), Some(limit)) => limit.ran_out(),
                    _ => SendError::H2(e),
                });
            }
        };
        let length = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        // A response still to come is watched for starvation until its body is dropped.
        let watch = if recv.is_end_stream() {
            None
        } else {
            let flow = recv.flow_control().clone();
            match slot.take() {
                Some(slot) => {
                    slot.with(|w| {
                        w.head_deadline = None;
                        w.flow = Some(flow);
                    });
                    Some(slot)
                }
                None => Some(
                    Slot::new(
                        streams,
                        WatchedStream {
                            flow: Some(flow),
                            send: None,
                            seen: 0,
                            head_deadline: None,
                            timed_out: false,
                        },
                    )
                    .0,
                ),
            }
        };
        Ok(Response::from_parts(head, H2Body::new(recv, length, watch)))
    }

    /// Opens the connection unless another request did meanwhile. Requests that waited for
    /// an attempt that failed get its error rather than trying again in turn.
    async fn connect(&self) -> Result<(), SendError> {
        let seen = self.shared.attempts.load(Ordering::Acquire);
        let mut last_failure = self.shared.connecting.lock().await;
        if self.shared.lock().is_some() {
            return Ok(());
        }
        if let Some((n, e)) = last_failure.as_ref() {
            if *n > seen {
                return Err(SendError::Connect(e.duplicate()));
            }
        }
        let id = self.shared.attempts.load(Ordering::Acquire) + 1;
        let opened = self.open(id).await;
        self.shared.attempts.store(id, Ordering::Release);
        match opened {
            Ok(sender) => {
                *last_failure = None;
                let old = self.shared.lock().replace(sender);
                drop(old);
                Ok(())
            }
            Err(SendError::Connect(e)) => {
                *last_failure = Some((id, e.duplicate()));
                Err(SendError::Connect(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens connection `id` and starts driving it and its idle check.
    async fn open(&self, id: u64) -> Result<(u64, Sender, Streams), SendError> {
        let io = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUF)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(SendError::H2)?;
        tracing::debug!(target = %self.connector.target(), "http/2 upstream connection open");
        let shared = Arc::downgrade(&self.shared);
        let streams = Arc::new(Mutex::new(Watched::new(Instant::now() + self.check_every)));
        tokio::spawn(drive(
            conn,
            shared.clone(),
            id,
            streams.clone(),
            self.check_every,
        ));
        tokio::spawn(idle_check(shared, id, self.idle));
        Ok((id, sender, streams))
    }
}

/// Drives connection `id` until it ends, pinging it while it is the live one, and checks
/// its streams (overdue heads, starved readers) every `check_every`.
async fn drive(
    mut conn: h2::client::Connection<ClientStream, Bytes>,
    shared: Weak<Shared>,
    id: u64,
    streams: Streams,
    check_every: Duration,
) {
    let mut pings = conn.ping_pong();
    let mut conn = pin!(Deferred {
        inner: conn,
        deferred: false,
    });
    // Kept timers, moved lazily: the connection's task wakes per request, and a kept
    // timer costs nothing to look at then (see [`io::Deadline`]).
    let mut timer = io::Deadline::default();
    timer.set(Instant::now() + KEEPALIVE);
    let mut ping_out = false;
    let mut check = io::Deadline::default();
    check.set(Instant::now() + check_every);
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "http/2 upstream connection ended with an error");
                }
                break;
            }
            pong = poll_fn(|cx| match pings.as_mut() {
                Some(p) => p.poll_pong(cx),
                None => Poll::Pending,
            }), if ping_out => {
                ping_out = false;
                if pong.is_err() {
                    break;
                }
                timer.set(Instant::now() + KEEPALIVE);
            }
            () = timer.expired() => {
                if ping_out {
                    tracing::debug!("http/2 upstream connection did not answer a ping; closing it");
                    break;
                }
                // A connection let go for idleness needs no keep-alive.
                if shared.upgrade().is_some_and(|s| s.is_live(id)) {
                    if let Some(p) = pings.as_mut() {
                        ping_out = p.send_ping(h2::Ping::opaque()).is_ok();
                    }
                }
                timer.set(Instant::now() + KEEPALIVE);
            }
            () = check.expired() => {
                let mut watched = lock_streams(&streams);
                let (overdue, starved) = watched.check(Instant::now(), check_every);
                let next = watched.next_check;
                drop(watched);
                if overdue > 0 {
                    tracing::debug!(overdue, "reset http/2 upstream streams whose response head is overdue");
                }
                if starved > 0 {
                    tracing::debug!(starved, "reset http/2 upstream streams whose readers stopped reading");
                }
                check.set(next);
            }
        }
    }
    if let Some(shared) = shared.upgrade() {
        shared.forget(id);
    }
}

pin_project_lite::pin_project! {
    /// A future polled one scheduling round after each wake: the connection first lets the
    /// other ready tasks run, so that the streams they open (requests woken by the same
    /// batch of client reads) go out in one write rather than one write each.
    struct Deferred<F> {
        #[pin]
        inner: F,
        deferred: bool,
    }
}

impl<F: Future> Future for Deferred<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !*this.deferred {
            // Woken while running, a task goes to the back of the run queue.
            *this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        *this.deferred = false;
        this.inner.poll(cx)
    }
}

/// Lets connection `id` go after an idle period without requests: dropping its sender ends
/// it once its open streams are done.
async fn idle_check(shared: Weak<Shared>, id: u64, idle: Duration) {
    loop {
        tokio::time::sleep(idle).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.is_live(id) {
            return;
        }
        if shared.used.swap(false, Ordering::Relaxed) {
            continue;
        }
        if shared.forget(id) {
            tracing::debug!("idle http/2 upstream connection closed");
        }
        return;
    }
}

/// Streams a request body into its stream as the upstream's flow control allows; a body
/// that fails, or a stream the upstream resets, ends the stream with a reset. Returns the
/// stream once all of the body went (to be watched as a whole request's), `None` if not.
async fn pipe_body(
    body: ReqBody,
    mut stream: h2::SendStream<Bytes>,
) -> Option<h2::SendStream<Bytes>> {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(reset) = stream.poll_reset(cx) {
                return Poll::Ready(Err(reset.err()));
            }
            body.as_mut().poll_frame(cx).map(Ok)
        })
        .await;
        let frame = match frame {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => {
                return stream
                    .send_data(Bytes::new(), true)
                    .is_ok()
                    .then_some(stream);
            }
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "request body failed; resetting the upstream stream");
                stream.send_reset(h2::Reason::CANCEL);
                return None;
            }
            // The upstream reset the stream (or the connection failed): nothing more to send.
            Err(_) => return None,
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                let trailers = frame.into_trailers().ok()?;
                return stream.send_trailers(trailers).is_ok().then_some(stream);
            }
        };
        let eos = body.is_end_stream();
        if eos && data.len() <= SMALL_LAST_FRAME {
            // No window to wait for: `h2` holds a small last frame until the upstream's
            // window allows, which is bounded, and a stream not yet open gets no window.
            return stream.send_data(data, true).is_ok().then_some(stream);
        }
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let room = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(room)) => room,
                _ => return None,
            };
            let chunk = data.split_to(room.min(data.len()));
            if stream
                .send_data(chunk, eos && !data.has_remaining())
                .is_err()
            {
                return None;
            }
        }
        if eos {
            return Some(stream);
        }
    }
}

/// An upstream HTTP/2 response body: its data, then its trailers. Received data is given
/// back to the flow-control window as it is passed on.
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
    /// What is left of the `content-length`, when the response gave one.
    length: Option<u64>,
    /// Its place among the connection's watched streams, held until the body is dropped.
    _watch: Option<Slot>,
    /// The first frame, read ahead by [`H2Body::peek_trailers`], given out first.
    peeked: Option<Result<Frame<Bytes>, h2::Error>>,
}

impl H2Body {
    fn new(recv: h2::RecvStream, length: Option<u64>, watch: Option<Slot>) -> Self {
        Self {
            recv,
            data_done: false,
            length,
            _watch: watch,
            peeked: None,
        }
    }

    /// The trailers, when they come before any data: a gRPC answer without a message (an
    /// error, as most servers send it: a head, then trailers with `grpc-status`). Reads one
    /// frame ahead and keeps it to be given out; `None` when data comes first or the body
    /// ends (or fails) without trailers.
    pub fn poll_peek_trailers(&mut self, cx: &mut Context<'_>) -> Poll<Option<http::HeaderMap>> {
        let trailers = |frame: &Result<Frame<Bytes>, h2::Error>| {
            frame.as_ref().ok().and_then(Frame::trailers_ref).cloned()
        };
        if let Some(frame) = &self.peeked {
            return Poll::Ready(trailers(frame));
        }
        let Some(frame) = ready!(Pin::new(&mut *self).poll_frame(cx)) else {
            return Poll::Ready(None);
        };
        let found = trailers(&frame);
        self.peeked = Some(frame);
        Poll::Ready(found)
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if let Some(frame) = self.peeked.take() {
            return Poll::Ready(Some(frame));
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.length = self.length.map(|n| n.saturating_sub(data.len() as u64));
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.peeked.is_none() && self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            _ if self.peeked.is_some() => SizeHint::default(),
            _ if self.recv.is_end_stream() => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(at: Instant, slack: Duration) -> WatchedStream {
        WatchedStream {
            flow: None,
            send: None,
            seen: 0,
            head_deadline: Some((at, slack)),
            timed_out: false,
        }
    }

    /// A head deadline nearer than the next check is the request's own to keep (its
    /// timer), and the check that sees it spaces the next one for it; the starved-stream
    /// look keeps its own pace meanwhile.
    #[test]
    fn checks_come_in_time_for_head_deadlines() {
        let every = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut w = Watched::new(t0 + every);
        let ms = Duration::from_millis;
        let short = waiting(t0 + ms(300), ms(30));
        assert!(!w.in_time(&short), "the next check, 1 s away, is too late");
        assert!(w.in_time(&waiting(t0 + ms(990), ms(99))));
        let short = w.insert(short);
        // A check before the starved-stream look is due: spaced for the short deadline.
        assert_eq!(w.check(t0 + ms(100), every), (0, 0));
        assert_eq!(w.next_check, t0 + ms(330));
        assert!(w.in_time(&waiting(t0 + ms(400), ms(40))));
        w.remove(short);
        // With no head waiting, the next check is the starved-stream look's, still at 1 s.
        w.check(t0 + ms(330), every);
        assert_eq!(w.next_check, t0 + every);
        // That look runs then, and sets the pace again from there.
        w.check(t0 + every, every);
        assert_eq!(w.next_check, t0 + 2 * every);
        // A deadline that has passed is not waited for; a close one is checked no more
        // often than every MIN_CHECK_EVERY.
        w.insert(waiting(t0 + every + ms(2), ms(1)));
        w.check(t0 + every + ms(1), every);
        assert_eq!(w.next_check, t0 + every + ms(1) + MIN_CHECK_EVERY + ms(1));
    }
}
