//! Authorization of one accepted inbound connection: decided once when the server needs
//! no requests, watched for policy changes that revoke it; otherwise handed to the HTTP
//! path to decide each request ([`RequestAuthz`]). Every decision is counted here.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    task::{Context, Poll, Wake, Waker},
};

use super::{
    feed::{PortPolicy, PortState},
    Allowed, Client, Refused, ServerPolicy,
};
use crate::{
    errors::ProxyError,
    metrics::{
        authz::{AuthzEvent, AuthzLabels},
        Direction, ErrorKind, Registry,
    },
    policy::RequestView,
};

/// The counters a connection counted on so far, by event and labels: a connection's
/// requests mostly count on the same few, so they skip the registry's hashing of the
/// labels (most of an allowed request's cost before). At most [`COUNTED`] are kept.
type Counted = Vec<(AuthzEvent, AuthzLabels, Arc<AtomicU64>)>;
const COUNTED: usize = 4;

/// Who the connection is from and where it goes, for decisions and their labels.
pub struct Peer {
    /// The client's address.
    pub ip: IpAddr,
    /// Its mTLS identity.
    pub identity: Option<Arc<str>>,
    /// The connection's target, for `target_addr`.
    pub target: Arc<str>,
    /// Where the counts go.
    pub registry: Arc<Registry>,
    /// Handles on the counters counted on so far (empty: no allocation).
    pub counted: Mutex<Counted>,
}

impl Peer {
    fn client(&self) -> Client<'_> {
        Client {
            ip: self.ip,
            identity: self.identity.as_deref(),
        }
    }

    fn count(&self, event: AuthzEvent, policy: &ServerPolicy, allowed: Option<&Allowed>) {
        self.count_on(
            event,
            policy,
            allowed.and_then(|a| a.route.clone()),
            allowed,
        );
    }

    fn count_on(
        &self,
        event: AuthzEvent,
        policy: &ServerPolicy,
        route: Option<super::Named>,
        allowed: Option<&Allowed>,
    ) {
        let authz = allowed.map(|a| &a.authz);
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        let known = counted.iter().find(|(e, l, _)| {
            *e == event
                && l.server == policy.server
                && l.route == route
                && l.authz.as_ref() == authz
        });
        if let Some((_, _, n)) = known {
            n.fetch_add(1, Relaxed);
            return;
        }
        let labels = AuthzLabels {
            server: policy.server.clone(),
            route,
            authz: authz.cloned(),
            target_addr: self.target.clone(),
        };
        if let Some(n) = self.registry.authz_counter(event, labels.clone()) {
            n.fetch_add(1, Relaxed);
            if counted.len() < COUNTED {
                counted.push((event, labels, n));
            }
        }
    }
}

/// What to do with a connection.
pub enum ConnAuthz {
    /// Admitted; with a watch when a new policy may revoke it.
    Admitted(Option<Revocable>),
    /// Each request is decided (HTTP only).
    PerRequest(Arc<RequestAuthz>),
    /// Refused: closed before any byte reaches the application (TCP only).
    Refused,
}

/// Decides a connection on `port` that will be served as HTTP (`http`) or as bytes.
pub async fn decide(port: PortPolicy, peer: Peer, http: bool) -> ConnAuthz {
    let policy = port.first().await;
    if http && policy.per_request() {
        return ConnAuthz::PerRequest(Arc::new(RequestAuthz { port, peer }));
    }
    match policy.admit(peer.client()) {
        Ok(allowed) => {
            peer.count(AuthzEvent::TcpAllow, &policy, Some(&allowed));
            ConnAuthz::Admitted(port.changes().map(|rx| Revocable { rx, peer }))
        }
        // An HTTP client is answered 403 per request (and a new policy may admit it).
        Err(_) if http => ConnAuthz::PerRequest(Arc::new(RequestAuthz { port, peer })),
        Err(reason) => {
            peer.count(AuthzEvent::TcpDeny, &policy, None);
            peer.registry
                .error(Direction::Inbound, ErrorKind::Tcp, reason);
            tracing::debug!(server = %policy.server.name, %reason, "connection refused");
            ConnAuthz::Refused
        }
    }
}

/// An admitted connection that a policy change may revoke.
pub struct Revocable {
    rx: tokio::sync::watch::Receiver<PortState>,
    peer: Peer,
}

impl Revocable {
    /// Completes when a new policy no longer admits the connection per connection (it
    /// does not admit the client, or it needs to see requests); counts the termination.
    ///
    /// It waits beside the connection's own future, whose task wakes for every read and
    /// write: it is polled only when the policy stream woke it ([`WhenWoken`]), not at
    /// each of those wake-ups (which cost 2.7 % of a keep-alive request's instructions).
    pub fn revoked(self) -> impl Future<Output = ()> {
        WhenWoken::new(self.watch())
    }

    async fn watch(mut self) {
        while self.rx.changed().await.is_ok() {
            let PortState::Server(policy) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            if !policy.per_request() && policy.admit(self.peer.client()).is_ok() {
                continue;
            }
            self.peer.count(AuthzEvent::TcpTerminate, &policy, None);
            tracing::debug!(server = %policy.server.name, "the new policy no longer admits the connection; closing it");
            return;
        }
        // The stream's sender is gone (never while the port is watched): nothing revokes.
        std::future::pending::<()>().await
    }
}

/// The request-level decision of one connection's requests, always on the port's current
/// policy.
pub struct RequestAuthz {
    port: PortPolicy,
    peer: Peer,
}

impl RequestAuthz {
    /// `Err`: the proxy-made answer (403, 404 or 429), counted.
    /// Both HTTP/1.1 paths call it: the fast path with its raw head, the general path with
    /// hyper's request.
    pub fn check(&self, req: &dyn RequestView) -> Result<(), ProxyError> {
        let policy = self.port.current();
        // A header's first value, as `HeaderMap::get` gives it.
        let header = |name: &http::HeaderName| {
            let mut first = None;
            req.any_header(name, &mut |v| {
                first = Some(v.to_vec());
                true
            });
            first
        };
        match policy.check(self.peer.client(), req, &header) {
            Ok(allowed) => {
                self.peer
                    .count(AuthzEvent::HttpAllow, &policy, Some(&allowed));
                Ok(())
            }
            Err(refused) => {
                match &refused {
                    Refused::Denied(reason, route) => {
                        self.peer
                            .count_on(AuthzEvent::HttpDeny, &policy, route.clone(), None);
                        tracing::debug!(server = %policy.server.name, %reason, "request denied");
                    }
                    Refused::NoRoute => self.peer.count(AuthzEvent::RouteNotFound, &policy, None),
                    Refused::RateLimited(allowed) => {
                        self.peer
                            .count(AuthzEvent::HttpAllow, &policy, Some(allowed));
                        self.peer
                            .count(AuthzEvent::RateLimited, &policy, Some(allowed));
                    }
                }
                Err(policy.refusal(&refused))
            }
        }
    }
}

/// A future polled at first and then only after its own waker fired: beside a busy future
/// in one task, it costs a flag's check at the busy one's wake-ups.
struct WhenWoken<F> {
    fut: Pin<Box<F>>,
    flag: Arc<Woken>,
}

/// Whether the inner future was woken since its last poll, and the task to wake then.
struct Woken {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Relaxed);
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> WhenWoken<F> {
    fn new(fut: F) -> Self {
        Self {
            fut: Box::pin(fut),
            flag: Arc::new(Woken {
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.flag.woken.swap(false, Relaxed) {
            return Poll::Pending;
        }
        // The task to wake is kept fresh at each real poll (it is the same one in practice).
        {
            let mut task = self.flag.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let waker = Waker::from(self.flag.clone());
        self.fut.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_when_woken_future_is_polled_only_after_its_own_waker_fired() {
        let (tx, mut rx) = tokio::sync::watch::channel(0);
        let polls = AtomicU64::new(0);
        let mut changed = Box::pin(async move {
            while rx.changed().await.is_ok() {
                if *rx.borrow() == 2 {
                    return;
                }
            }
        });
        let inner = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Relaxed);
            changed.as_mut().poll(cx)
        });
        let mut gated = std::pin::pin!(WhenWoken::new(inner));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        // Wake-ups of the task that are not the inner future's do not poll it.
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Relaxed), 1);
        tx.send(1).unwrap();
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Relaxed), 2);
        tx.send(2).unwrap();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Relaxed), 3);
    }
}
