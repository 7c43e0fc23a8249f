//! What the proxy's two HTTP/2 sides (clients' connections, [`crate::h2_server`], and the
//! upstream's, [`crate::h2_upstream`]) share: bodies both ways — [`H2Body`] passes on a
//! body received on a stream, [`pipe_body`] sends any body into a stream as flow control
//! allows — and the [`Keepalive`] ping.

use std::{
    fmt::Display,
    future::{poll_fn, Future},
    pin::{pin, Pin},
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::{header, HeaderMap};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How often an HTTP/2 connection is pinged, and how long a ping may go unanswered.
pub const KEEPALIVE: Duration = Duration::from_secs(20);

/// A connection's keep-alive: a ping every [`KEEPALIVE`], and the verdict that the peer is
/// gone when one goes unanswered that long. A timer per connection, not work per frame.
pub struct Keepalive {
    pings: Option<h2::PingPong>,
    timer: Pin<Box<Sleep>>,
    ping_out: bool,
}

impl Keepalive {
    /// Keeps alive the connection whose pings are `pings` (`Connection::ping_pong`).
    pub fn new(pings: Option<h2::PingPong>) -> Self {
        Self {
            pings,
            timer: Box::pin(tokio::time::sleep(KEEPALIVE)),
            ping_out: false,
        }
    }

    /// Ready when the peer left a ping unanswered for [`KEEPALIVE`]: the connection should
    /// be closed. `wanted` is asked when a ping is due; a connection on its way out may
    /// need none.
    pub fn poll_dead(&mut self, cx: &mut Context<'_>, wanted: impl Fn() -> bool) -> Poll<()> {
        loop {
            if self.ping_out {
                if let Some(pings) = self.pings.as_mut() {
                    match pings.poll_pong(cx) {
                        Poll::Ready(Ok(_)) => {
                            self.ping_out = false;
                            self.timer.as_mut().reset(Instant::now() + KEEPALIVE);
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                }
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.ping_out {
                return Poll::Ready(());
            }
            if wanted() {
                if let Some(pings) = self.pings.as_mut() {
                    self.ping_out = pings.send_ping(h2::Ping::opaque()).is_ok();
                }
            }
            self.timer.as_mut().reset(Instant::now() + KEEPALIVE);
        }
    }
}

/// Sends `body` into `stream` as the peer's flow control allows. A body that fails ends
/// the stream with a reset of `on_error`; a stream the peer resets (or whose connection
/// failed) stops the sending and drops the body.
pub async fn pipe_body<B>(body: B, mut stream: h2::SendStream<Bytes>, on_error: h2::Reason)
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
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
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "body failed; resetting its http/2 stream");
                stream.send_reset(on_error);
                return;
            }
            // The peer reset the stream (or the connection failed): nothing more to send.
            Err(_) => return,
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                }
                return;
            }
        };
        let eos = body.is_end_stream();
        if data.is_empty() && eos {
            let _ = stream.send_data(Bytes::new(), true);
            return;
        }
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let room = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(room)) => room,
                _ => return,
            };
            let chunk = data.split_to(room.min(data.len()));
            if stream
                .send_data(chunk, eos && !data.has_remaining())
                .is_err()
            {
                return;
            }
        }
        if eos {
            return;
        }
    }
}

/// A body received on an HTTP/2 stream: its data, then its trailers. Received data is
/// given back to the flow-control window as it is passed on.
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
    /// What is left of the `content-length`, when the message gave one.
    length: Option<u64>,
}

impl H2Body {
    /// The body of a message with `headers`, arriving on `recv`.
    pub fn new(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Self {
            recv,
            data_done: false,
            length,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
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
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            _ if self.recv.is_end_stream() => SizeHint::with_exact(0),
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
