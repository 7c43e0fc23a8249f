//! Where traffic goes: one address, or a service name balanced across the endpoints the
//! control plane reports. [`Upstreams`] decides which, once per target, for a side.
//!
//! A connection redirected to an address (a ClusterIP, a pod IP, anything outside) is looked
//! up too, once per connection ([`Upstreams::by_orig_dst`]): with endpoints it is balanced
//! like a name, with nothing known it goes to the address as is.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::net::TcpStream;

use crate::{
    backend::{Backend, Backends},
    balance::{Balancer, EndpointFactory},
    config::Authority,
    discover::Resolver,
    errors::ProxyError,
};

/// How many endpoints one connection or bodiless request tries before giving up.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How long a connection redirected to an address waits for the control plane's first
/// answer about it before going to the address as is. A healthy control plane answers in
/// a few milliseconds (an in-memory lookup, plus one HTTP/2 connect for the proxy's first
/// stream); the wait only matters when it is absent or overloaded, and then each address
/// pays it once (see [`AddrLookup`]). Short next to the 1 s connect timeout, long enough
/// that a meshed peer is rarely reached in plaintext because of a slow answer.
pub const ORIG_DST_DISCOVERY_WAIT: Duration = Duration::from_millis(200);

/// A target of the proxy's traffic.
#[derive(Clone)]
pub enum Upstream {
    /// One address (or a name resolved by the system resolver at connect time).
    Addr(Arc<Backend>),
    /// A service name, balanced across its endpoints.
    Balanced(Arc<Balancer>),
}

impl Upstream {
    /// The target as text: the `target_addr` of accepted connections.
    pub fn label(&self) -> Arc<str> {
        match self {
            Self::Addr(b) => b.target_label.clone(),
            Self::Balanced(b) => b.name().to_string().into(),
        }
    }

    /// The target's port, which decides whether detection is skipped.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(b) => b.target().port,
            Self::Balanced(b) => b.name().port,
        }
    }

    /// Opens a TCP connection to the target, trying other endpoints of a balanced service
    /// when one refuses. Returns the stream and the backend it belongs to (for counting).
    pub async fn connect(&self) -> Result<(TcpStream, Arc<Backend>), ProxyError> {
        match self {
            Self::Addr(b) => match b.connector().connect_raw().await {
                Ok((s, _)) => Ok((s, b.clone())),
                Err(e) => Err(ProxyError::from_connect(&e)),
            },
            Self::Balanced(balancer) => {
                let mut endpoint = balancer.pick().await?;
                let mut attempt = 1;
                loop {
                    match endpoint.backend.connector().connect_raw().await {
                        Ok((s, _)) => return Ok((s, endpoint.backend.clone())),
                        Err(e) => {
                            balancer.connect_failed(&endpoint);
                            match balancer.pick_other(&endpoint) {
                                Some(next) if attempt < MAX_CONNECT_ATTEMPTS => endpoint = next,
                                _ => return Err(ProxyError::from_connect(&e)),
                            }
                            attempt += 1;
                        }
                    }
                }
            }
        }
    }
}

/// The upstreams of one side: backends by address, balancers by service name.
pub struct Upstreams {
    /// Backends by address.
    pub backends: Arc<Backends>,
    /// Discovery, when the proxy has a control plane.
    pub resolver: Option<Arc<Resolver>>,
    factory: EndpointFactory,
    balancers: Mutex<HashMap<Authority, Arc<Balancer>>>,
    /// Addresses looked up for redirected connections. TODO(#20): like names, they are
    /// never evicted; idle eviction of destinations will bound both.
    addrs: Mutex<HashMap<SocketAddr, Arc<AddrLookup>>>,
}

/// One address's lookup: its balancer, fed by the address's one `Get` stream.
struct AddrLookup {
    balancer: Arc<Balancer>,
    /// Set once a connection waited [`ORIG_DST_DISCOVERY_WAIT`] and heard nothing: while
    /// the control plane stays silent about the address, later connections do not wait.
    waited_in_vain: AtomicBool,
}

impl Upstreams {
    /// Upstreams built with `factory`, resolving names with `resolver` when given.
    pub fn new(
        backends: Arc<Backends>,
        resolver: Option<Arc<Resolver>>,
        factory: EndpointFactory,
    ) -> Self {
        Self {
            backends,
            resolver,
            factory,
            balancers: Mutex::default(),
            addrs: Mutex::default(),
        }
    }

    /// The upstream for an outbound connection redirected to `addr`. With a control plane,
    /// the address is looked up (one shared stream per address): when discovery has
    /// endpoints for it (a ClusterIP's, or a known pod's own, with its identity), they are
    /// balanced; when it has none, or has not answered within
    /// [`ORIG_DST_DISCOVERY_WAIT`], the connection goes to `addr` as is. An answer that
    /// arrives later serves the next connection.
    pub async fn by_orig_dst(&self, addr: SocketAddr) -> Upstream {
        let target = Authority::from(addr);
        let Some(resolver) = &self.resolver else {
            return Upstream::Addr(self.backends.get(&target));
        };
        let lookup = {
            let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
            addrs
                .entry(addr)
                .or_insert_with(|| {
                    Arc::new(AddrLookup {
                        balancer: Balancer::new(
                            target.clone(),
                            resolver.resolve(&target),
                            self.factory.clone(),
                        ),
                        waited_in_vain: AtomicBool::new(false),
                    })
                })
                .clone()
        };
        let wait = if lookup.waited_in_vain.load(Relaxed) {
            Duration::ZERO
        } else {
            ORIG_DST_DISCOVERY_WAIT
        };
        match lookup.balancer.has_endpoints(wait).await {
            Some(true) => Upstream::Balanced(lookup.balancer.clone()),
            Some(false) => Upstream::Addr(self.backends.get(&target)),
            None => {
                if !wait.is_zero() {
                    tracing::debug!(%addr, ?wait, "no answer from the control plane; forwarding as is");
                    lookup.waited_in_vain.store(true, Relaxed);
                }
                Upstream::Addr(self.backends.get(&target))
            }
        }
    }

    /// The upstream for `target`: an address goes straight there; a name is balanced over
    /// discovery's endpoints when there is a control plane, else resolved by the system.
    pub fn get(&self, target: &Authority) -> Upstream {
        let (Some(resolver), None) = (&self.resolver, target.socket_addr()) else {
            return Upstream::Addr(self.backends.get(target));
        };
        let mut balancers = self.balancers.lock().unwrap_or_else(|e| e.into_inner());
        let balancer = balancers.entry(target.clone()).or_insert_with(|| {
            Balancer::new(
                target.clone(),
                resolver.resolve(target),
                self.factory.clone(),
            )
        });
        Upstream::Balanced(balancer.clone())
    }

    /// The balancers, of names and of looked-up addresses, for `/state`.
    pub fn balancers(&self) -> Vec<Arc<Balancer>> {
        let mut out: Vec<_> = self
            .balancers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        out.extend(
            self.addrs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|l| l.balancer.clone()),
        );
        out.sort_by_key(|b| b.name().to_string());
        out
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::metrics::{Direction, Tls};

    /// Upstreams whose control plane never answers (nothing listens at its address).
    fn silent_control_plane() -> Upstreams {
        let timeouts = crate::Config::for_tests("127.0.0.1:9".parse().unwrap()).timeouts;
        let registry: Arc<crate::metrics::Registry> = Arc::default();
        let factory = EndpointFactory {
            direction: Direction::Outbound,
            tls: Tls::NOT_PROVIDED_BY_DISCOVERY,
            identity: None,
            timeouts,
            registry: registry.clone(),
        };
        let backends = Arc::new(Backends::new(Direction::Outbound, timeouts, registry));
        let resolver = Resolver::new(
            &"127.0.0.1:9".parse().unwrap(),
            String::new(),
            timeouts.connect,
            None,
        )
        .unwrap();
        Upstreams::new(backends, Some(Arc::new(resolver)), factory)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_control_plane_delays_each_address_once() {
        let upstreams = silent_control_plane();
        let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();

        let start = Instant::now();
        let first = upstreams.by_orig_dst(addr).await;
        assert_eq!(start.elapsed(), ORIG_DST_DISCOVERY_WAIT);
        assert!(matches!(first, Upstream::Addr(_)), "forwarded as is");

        let start = Instant::now();
        let second = upstreams.by_orig_dst(addr).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "no second wait");
        assert!(matches!(second, Upstream::Addr(_)));

        // Another address has its own lookup, and its own one wait.
        let start = Instant::now();
        upstreams.by_orig_dst("127.0.0.1:8".parse().unwrap()).await;
        assert_eq!(start.elapsed(), ORIG_DST_DISCOVERY_WAIT);
        assert_eq!(upstreams.balancers().len(), 2, "one lookup per address");
    }

    #[tokio::test]
    async fn without_a_control_plane_addresses_are_not_looked_up() {
        let mut upstreams = silent_control_plane();
        upstreams.resolver = None;
        let start = Instant::now();
        let up = upstreams.by_orig_dst("127.0.0.1:7".parse().unwrap()).await;
        assert!(start.elapsed() < ORIG_DST_DISCOVERY_WAIT);
        assert!(matches!(up, Upstream::Addr(_)));
        assert!(upstreams.balancers().is_empty());
    }
}
