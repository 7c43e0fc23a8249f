//! The response body the proxy sends back: the upstream's stream, untouched, or the proxy's
//! own error text. Either way it counts the response in `response_total` exactly once, when
//! it ends — for gRPC only the trailers say whether the call succeeded. The request body on
//! its way upstream ([`ClientBody`]) remembers when the client's bytes were malformed, so
//! the failure is blamed on the client, not the upstream.

use std::{
    error::Error as _,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use crate::{
    backend::UpstreamBody,
    metrics::{HttpMetrics, ResponseLabels, RouteMetrics},
    tap::ResponseTap,
};
use bytes::Bytes;
use ferry_api::ProxyErrorReason;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

/// What a response's classification needs, recorded when the body ends.
pub struct Recorder {
    metrics: Arc<HttpMetrics>,
    /// The route's counters too, when a route carried the request.
    route: Option<Arc<RouteMetrics>>,
    latency: Duration,
    status: u16,
    grpc: bool,
    grpc_status: Option<u16>,
    error: Option<ProxyErrorReason>,
    done: bool,
    /// The request's span, when it is traced: ended with the response.
    span: Option<Arc<crate::trace::Active>>,
}

impl Recorder {
    /// Starts recording a response with `status`, sent `latency` after the request arrived.
    /// `headers` may already carry `grpc-status` (a trailers-only gRPC response).
    pub fn new(
        metrics: Arc<HttpMetrics>,
        latency: Duration,
        status: u16,
        grpc: bool,
        headers: &HeaderMap,
    ) -> Self {
        Self {
            metrics,
            route: None,
            latency,
            status,
            grpc,
            grpc_status: grpc.then(|| crate::http::grpc_status(headers)).flatten(),
            error: None,
            done: false,
            span: None,
        }
    }

    /// Ends `span` with the response (now, if the response is already over).
    pub fn trace(&mut self, span: Arc<crate::trace::Active>) {
        if self.done {
            span.end(self.status, self.grpc_status, self.error, true);
        } else {
            self.span = Some(span);
        }
    }

    /// Records the response on its route's counters too.
    pub fn route(mut self, route: Option<Arc<RouteMetrics>>) -> Self {
        self.route = route;
        self
    }

    /// Marks the response as made by the proxy for `reason`.
    pub fn proxy_error(mut self, reason: ProxyErrorReason) -> Self {
        self.error = Some(reason);
        self
    }

    /// Records a response whose body was sent whole.
    pub fn end(mut self) {
        self.finish(true);
    }

    /// Records a response whose upstream failed part-way through the body.
    pub fn reset(self) {
        self.fail(ProxyErrorReason::UpstreamReset);
    }

    /// Records a response cut off part-way for `reason`.
    pub fn fail(mut self, reason: ProxyErrorReason) {
        self.error = Some(reason);
        self.finish(false);
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc {
            if let Some(s) = crate::http::grpc_status(trailers) {
                self.grpc_status = Some(s);
            }
        }
    }

    /// Records once. `ended` says whether the body reached its end (rather than being
    /// dropped or failing part-way).
    fn finish(&mut self, ended: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(span) = self.span.take() {
            span.end(self.status, self.grpc_status, self.error, ended);
        }
        let success = self.error.is_none()
            && ended
            && if self.grpc {
                self.grpc_status == Some(0)
            } else {
                self.status < 500
            };
        let labels = ResponseLabels {
            status: self.status,
            grpc_status: self.grpc_status,
            error: self.error,
            success,
        };
        self.metrics.response(labels, self.latency);
        if let Some(route) = &self.route {
            route.responses.response(labels, self.latency);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(false);
    }
}

pin_project_lite::pin_project! {
    /// A response body with its metrics recorder.
    pub struct ResponseBody {
        #[pin]
        inner: Either<UpstreamBody, Full<Bytes>>,
        recorder: Option<Recorder>,
        // Set only while a tap shows this response.
        tap: Option<ResponseTap>,
        // The body-idle timeout, when it applies.
        idle: Option<crate::io::Stall>,
    }
}

impl ResponseBody {
    /// The upstream's body.
    pub fn upstream(body: UpstreamBody, recorder: Recorder) -> Self {
        Self::with(Either::Left(body), Some(recorder))
    }

    /// A body the proxy wrote.
    pub fn proxy(bytes: Bytes, recorder: Option<Recorder>) -> Self {
        Self::with(Either::Right(Full::new(bytes)), recorder)
    }

    fn with(inner: Either<UpstreamBody, Full<Bytes>>, mut recorder: Option<Recorder>) -> Self {
        // A body that is already over may never be polled (HEAD, 204, 304).
        if inner.is_end_stream() {
            if let Some(r) = recorder.as_mut() {
                r.finish(true);
            }
        }
        Self {
            inner,
            recorder,
            tap: None,
            idle: None,
        }
    }

    /// Cuts the body off (`body-idle-timeout`) when the upstream brings nothing for
    /// `limit`. The clock runs only while the body waits for the upstream, not while the
    /// client is slow to take it.
    pub fn idle_limit(mut self, limit: Option<Duration>) -> Self {
        if !self.inner.is_end_stream() {
            self.idle = limit.map(crate::io::Stall::new);
        }
        self
    }

    /// Ends the request's span with this response (its recorder's status and error).
    pub fn traced(mut self, span: Arc<crate::trace::Active>) -> Self {
        if let Some(r) = self.recorder.as_mut() {
            r.trace(span);
        }
        self
    }

    /// Shows the body's end (bytes, gRPC status, reset) to the taps that saw its request.
    pub fn tapped(mut self, mut tap: ResponseTap) -> Self {
        if self.inner.is_end_stream() {
            tap.end();
        } else {
            self.tap = Some(tap);
        }
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if let Some(idle) = this.idle.as_mut() {
            if polled.is_ready() {
                idle.progressed();
            } else if idle.expired(cx) {
                let limit = idle.limit();
                tracing::debug!(?limit, "upstream response body idle; cutting it off");
                *this.idle = None;
                if let Some(r) = this.recorder.take() {
                    r.fail(ProxyErrorReason::BodyIdleTimeout);
                }
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("body-idle-timeout: the upstream sent nothing for {limit:?}"),
                );
                return Poll::Ready(Some(Err(error.into())));
            }
        }
        if let Some(r) = this.recorder.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = frame.trailers_ref() {
                        r.trailers(t);
                        r.finish(true);
                    } else if this.inner.is_end_stream() {
                        // A sized body ends with its last data frame; it is not polled again.
                        r.finish(true);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    r.error = Some(ProxyErrorReason::UpstreamReset);
                    r.finish(false);
                }
                Poll::Ready(None) => r.finish(true),
                Poll::Pending => {}
            }
        }
        if let Some(tap) = this.tap.as_mut() {
            tap.observe(&polled, this.inner.is_end_stream());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's request body on its way upstream. When the client's framing is malformed (a
/// chunk size that overflows, a bare LF in chunked framing, a body longer than its
/// `content-length`), hyper fails the body, the upstream request is aborted, and the flag
/// this body shares says the client was at fault.
pub struct ClientBody {
    inner: hyper::body::Incoming,
    /// `None` for a bodiless request, which has no framing to get wrong.
    malformed: Option<Arc<AtomicBool>>,
    /// Where the body is kept as it goes, for a retry, and up to how many bytes.
    keep: Option<(Arc<Mutex<Kept>>, usize)>,
}

impl ClientBody {
    /// Wraps `inner`; `malformed` is set if its framing turns out malformed.
    pub fn new(inner: hyper::body::Incoming, malformed: Option<Arc<AtomicBool>>) -> Self {
        Self {
            inner,
            malformed,
            keep: None,
        }
    }

    /// Keeps a copy of the body as it is sent, up to `limit` bytes, so that the request can
    /// be sent again ([`Kept::replay`]). It is complete once its last frame went, or a
    /// look at its end found it ended (a consumer sends no more of a body that says so).
    pub fn keep(mut self, limit: usize) -> (Self, Arc<Mutex<Kept>>) {
        let kept = Arc::new(Mutex::new(Kept::default()));
        self.keep = Some((kept.clone(), limit));
        (self, kept)
    }
}

/// A request body as far as it went upstream, kept for a retry.
#[derive(Default)]
pub struct Kept {
    /// The first chunk, kept without a list: most bodies within the limit come in one (a
    /// unary gRPC call's message).
    first: Option<Bytes>,
    /// The chunks after it.
    rest: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: usize,
    /// The whole body went.
    complete: bool,
    /// It was larger than the limit: not kept.
    over: bool,
}

impl Kept {
    /// Whether all of the body went, within the limit: whether [`Kept::replay`] has it.
    pub fn whole(&self) -> bool {
        self.complete && !self.over
    }

    /// The body again, when all of it went and it was within the limit.
    pub fn replay(&self) -> Option<Replayed> {
        self.whole().then(|| Replayed {
            chunks: self.first.iter().chain(&self.rest).cloned().collect(),
            trailers: self.trailers.clone(),
        })
    }
}

/// A kept request body, sent again (or no body at all).
#[derive(Default)]
pub struct Replayed {
    chunks: std::collections::VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Replayed {
    /// No body.
    pub fn empty() -> Self {
        Self::default()
    }
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// Whether a request body's error is the client's malformed framing (hyper's decoder says
/// `InvalidData`/`InvalidInput`) rather than the connection ending early.
pub fn is_malformed(error: &hyper::Error) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        source = e.source();
    }
    error.is_parse()
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) if is_malformed(e) => {
                if let Some(flag) = &self.malformed {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some((kept, limit)) = &self.keep {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(data) = frame.data_ref() {
                        kept.len += data.len();
                        if kept.len > *limit {
                            kept.over = true;
                            kept.first = None;
                            kept.rest = Vec::new();
                        } else if kept.first.is_none() {
                            kept.first = Some(data.clone());
                        } else {
                            kept.rest.push(data.clone());
                        }
                    } else if let Some(t) = frame.trailers_ref() {
                        kept.trailers = Some(t.clone());
                    }
                    if self.inner.is_end_stream() {
                        kept.complete = true;
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some((kept, _)) = &self.keep {
                    kept.lock().unwrap_or_else(|e| e.into_inner()).complete = true;
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if let (true, Some((kept, _))) = (end, &self.keep) {
            kept.lock().unwrap_or_else(|e| e.into_inner()).complete = true;
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
