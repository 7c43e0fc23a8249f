//! Listeners and the per-direction context their connections share: accept, register the
//! connection, and hand it to [`serve`](crate::serve) on a tracked task so drain can wait.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Timeouts,
    metrics::{Direction, Registry, Tls},
    state::Connections,
    tap::Taps,
    upstream::{Upstream, Upstreams},
};

/// What one side of the proxy (inbound or outbound) shares across its connections.
#[derive(Clone)]
pub struct Side {
    /// Inbound or outbound.
    pub direction: Direction,
    /// Where metrics go.
    pub registry: Arc<Registry>,
    /// TLS status label of accepted connections.
    pub tls: Tls,
    /// Upstreams by target, pooled across connections and listeners of this side.
    pub upstreams: Arc<Upstreams>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Target ports that skip detection.
    pub opaque_ports: Arc<[u16]>,
    /// Every address the proxy listens on, to refuse forwarding to itself.
    pub own_listeners: Arc<[SocketAddr]>,
    /// Open connections, for `/state`.
    pub connections: Arc<Connections>,
    /// Connections and tunnels in flight; drain waits for them.
    pub tracker: TaskTracker,
    /// Cancelled when the drain starts.
    pub drain: CancellationToken,
    /// This proxy's identity, when identity is on: inbound terminates mTLS with it.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Inbound only: refuse connections that are not mTLS from a meshed peer.
    pub require_identity: bool,
    /// Inbound only: authorization policies by port; `None` when nothing is ever refused
    /// (no control plane, and a default policy admitting every client).
    pub inbound_authz: Option<Arc<crate::authz::feed::InboundPolicies>>,
    /// Active taps, shared by both sides and the tap server.
    pub taps: Arc<Taps>,
    /// What the HTTP/1.1 fast path did, shared by both sides.
    pub h1: Arc<crate::h1::Stats>,
    /// How the outbound listener's connections learn their original destination (inbound
    /// always reads `SO_ORIGINAL_DST`).
    pub orig_dst: crate::orig_dst::OrigDst,
    /// Inbound only: redirected traffic goes to the original port on the forward address's
    /// host (loopback) rather than to the original destination (`--inbound-forward-loopback`).
    pub inbound_forward_loopback: bool,
    /// The tracer, when tracing is on (`--trace-collector`).
    pub trace: Option<Arc<crate::trace::Tracer>>,
}

impl Side {
    /// Whether a redirected inbound connection's original destination is one of the proxy's
    /// own ports. Its address is this pod's own (PREROUTING redirected it to us), so the port
    /// alone says it: `podIP:4140` must not reach the outbound listener (an open proxy
    /// carrying the pod's identity), nor `podIP:4191` the admin server.
    pub fn is_own_port(&self, port: u16) -> bool {
        self.own_listeners.iter().any(|l| l.port() == port)
    }

    /// Whether `addr` is one of the proxy's own listeners.
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        self.own_listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip() || (l.ip().is_unspecified() && addr.ip().is_loopback()))
        })
    }
}

/// What a listener does with its connections.
pub enum ListenerKind {
    /// Traffic for the application: forwarded to it (or, when redirected by iptables, to
    /// the original destination port on the application's address).
    Inbound {
        /// The application.
        forward: Upstream,
    },
    /// The application's traffic, routed by authority or original destination.
    Outbound,
    /// The application's traffic to one configured target.
    Upstream {
        /// The target.
        upstream: Upstream,
        /// The target's name: the `authority` label of its requests.
        authority: Arc<str>,
    },
}

impl ListenerKind {
    /// The kind's name in `/state` and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Inbound { .. } => "inbound",
            Self::Outbound => "outbound",
            Self::Upstream { .. } => "upstream",
        }
    }
}

/// Accepts connections until the drain starts, then drops the listener so that new
/// connections are refused.
pub async fn accept_loop(listener: TcpListener, kind: ListenerKind, side: Arc<Side>) {
    let kind = Arc::new(kind);
    loop {
        let accepted = tokio::select! {
            _ = side.drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((sock, peer)) => {
                crate::io::tune(&sock);
                let (side2, kind) = (side.clone(), kind.clone());
                side.tracker
                    .spawn(crate::serve::serve(side2, kind, sock, peer));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, listener = kind.name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(listener = kind.name(), "stopped accepting");
}
