//! The one HTTP/2 connection to a backend. Every HTTP/2 request for the backend, from every
//! client connection, is a stream on it: the connection's sender is kept here and used
//! directly, so a request costs no pool checkout. A connection that closed is replaced on
//! the next request (requests that arrive meanwhile wait for that one connect and share its
//! failure); one that carried no request for an idle timeout is let go, and closes once its
//! streams are done.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::http2::{Builder, SendRequest},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::{
    backend::{ReqBody, SendError},
    connect::{ConnectError, Connector},
};

/// How often an upstream HTTP/2 connection with streams open is pinged, and how long a ping
/// may go unanswered.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// How many connections one request may try when each closes before taking it.
const MAX_SEND_ATTEMPTS: usize = 3;

/// The HTTP/2 connection to one backend, opened on first use.
pub struct H2Upstream {
    connector: Connector,
    builder: Builder<TokioExecutor>,
    idle: Duration,
    shared: Arc<Shared>,
}

/// What the connection's idle check shares with the requests.
#[derive(Default)]
struct Shared {
    /// The open connection's sender, with the number of the attempt that opened it.
    live: Mutex<Option<(u64, SendRequest<ReqBody>)>>,
    /// Held while connecting; the last failed attempt's number and error.
    connecting: tokio::sync::Mutex<Option<(u64, ConnectError)>>,
    /// Connect attempts finished so far.
    attempts: AtomicU64,
    /// Set by requests, cleared by the idle check.
    used: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<(u64, SendRequest<ReqBody>)>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets connection `id` if it is still the live one; returns whether it was.
    fn forget(&self, id: u64) -> bool {
        let mut live = self.lock();
        if live.as_ref().is_some_and(|(n, _)| *n == id) {
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
    /// Connections are opened with `connector`; one unused for `idle` is closed.
    pub fn new(connector: Connector, idle: Duration) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_while_idle(false);
        Self {
            connector,
            builder,
            idle,
            shared: Arc::default(),
        }
    }

    /// Sends `req` as a stream on the backend's connection, opening one when there is none.
    /// A request the connection closed before taking is sent again on a new one.
    pub async fn send(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, SendError> {
        if !self.shared.used.load(Ordering::Relaxed) {
            self.shared.used.store(true, Ordering::Relaxed);
        }
        for _ in 0..MAX_SEND_ATTEMPTS {
            match self.start(req) {
                Ok((id, sending)) => match sending.await {
                    Ok(rsp) => return Ok(rsp),
                    Err(mut e) => match e.take_message() {
                        // The connection closed before taking the request: nothing was sent.
                        Some(back) => {
                            tracing::debug!(error = %e.error(), "http/2 upstream connection closed; sending on a new one");
                            self.shared.forget(id);
                            req = back;
                        }
                        None => return Err(SendError::H2(e.into_error())),
                    },
                },
                Err(back) => {
                    req = back;
                    // Rare, and large: kept out of the per-request future.
                    Box::pin(self.connect()).await?;
                }
            }
        }
        Err(SendError::Closed)
    }

    /// Hands `req` to the live connection, or gives it back when there is none.
    #[allow(clippy::result_large_err)]
    fn start(
        &self,
        req: Request<ReqBody>,
    ) -> Result<
        (
            u64,
            impl Future<
                Output = Result<
                    Response<Incoming>,
                    hyper::client::conn::TrySendError<Request<ReqBody>>,
                >,
            >,
        ),
        Request<ReqBody>,
    > {
        let mut live = self.shared.lock();
        match live.as_mut() {
            Some((id, sender)) if !sender.is_closed() => Ok((*id, sender.try_send_request(req))),
            _ => Err(req),
        }
    }

    /// Opens the connection unless another request did meanwhile. Requests that waited for
    /// an attempt that failed get its error rather than trying again in turn.
    async fn connect(&self) -> Result<(), SendError> {
        let seen = self.shared.attempts.load(Ordering::Acquire);
        let mut last_failure = self.shared.connecting.lock().await;
        if self
            .shared
            .lock()
            .as_ref()
            .is_some_and(|(_, s)| !s.is_closed())
        {
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
                let old = self.shared.lock().replace((id, sender));
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
    async fn open(&self, id: u64) -> Result<SendRequest<ReqBody>, SendError> {
        let io = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, conn) = self
            .builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::H2)?;
        tracing::debug!(target = %self.connector.target(), "http/2 upstream connection open");
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "http/2 upstream connection ended with an error");
            }
        });
        tokio::spawn(idle_check(Arc::downgrade(&self.shared), id, self.idle));
        Ok(sender)
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
        if !shared.lock().as_ref().is_some_and(|(n, _)| *n == id) {
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
