//! Authorization of one accepted inbound connection: decided once when the server needs
//! no requests, watched for policy changes that revoke it; otherwise handed to the HTTP
//! path to decide each request ([`RequestAuthz`]). Every decision is counted here.

use std::{net::IpAddr, sync::Arc};

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

/// Who the connection is from and where it goes, for decisions and their labels.
#[derive(Clone)]
pub struct Peer {
    /// The client's address.
    pub ip: IpAddr,
    /// Its mTLS identity.
    pub identity: Option<Arc<str>>,
    /// The connection's target, for `target_addr`.
    pub target: Arc<str>,
    /// Where the counts go.
    pub registry: Arc<Registry>,
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
        self.registry.authz(
            event,
            AuthzLabels {
                server: policy.server.clone(),
                route,
                authz: allowed.map(|a| a.authz.clone()),
                target_addr: self.target.clone(),
            },
        );
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
    pub async fn revoked(mut self) {
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
