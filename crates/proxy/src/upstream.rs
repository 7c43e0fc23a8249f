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

use tokio::{net::TcpStream, time::Instant};

use crate::{
    backend::{Backend, Backends},
    balance::{Balancer, EndpointFactory},
    config::Authority,
    discover::Resolver,
    errors::ProxyError,
    policy::{Compile, Policies},
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
            Self::Balanced(b) => b.label().clone(),
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

/// Most names, and most looked-up addresses, one side holds a balancer for. Past it the
/// least recently used one nobody holds is let go; when every one is held (by open
/// connections), the new one serves its connection without being kept.
pub const MAX_DESTINATIONS: usize = 1024;

/// The upstreams of one side: backends by address, balancers by service name.
pub struct Upstreams {
    /// Backends by address.
    pub backends: Arc<Backends>,
    /// Discovery, when the proxy has a control plane.
    pub resolver: Option<Arc<Resolver>>,
    factory: EndpointFactory,
    balancers: Mutex<Held<Authority, Arc<Balancer>>>,
    /// Addresses looked up for redirected connections.
    addrs: Mutex<Held<SocketAddr, Arc<AddrLookup>>>,
    /// A destination nobody has used for this long is let go (balancer, task, stream).
    idle: Duration,
    /// Outbound policies, when enabled ([`Upstreams::enable_policies`]).
    policies: std::sync::OnceLock<Policies>,
}

/// Whether something outside the cache still holds a destination.
trait InUse {
    fn in_use(&self) -> bool;
}

impl InUse for Arc<Balancer> {
    fn in_use(&self) -> bool {
        Arc::strong_count(self) > 1
    }
}

impl InUse for Arc<AddrLookup> {
    fn in_use(&self) -> bool {
        Arc::strong_count(self) > 1 || Arc::strong_count(&self.balancer) > 1
    }
}

/// Destinations kept for reuse: each with when it was last used (asked for, or found held
/// by a connection at a sweep). One that nobody holds and nobody asked for during `idle`
/// is dropped by [`Held::sweep`], which ends its balancer's task and its `Get` stream.
struct Held<K, V> {
    map: HashMap<K, (V, Instant)>,
}

impl<K, V> Default for Held<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: InUse + Clone> Held<K, V> {
    /// The destination for `key`, made with `make` when there is none. At
    /// [`MAX_DESTINATIONS`] the least recently used idle one makes room; with none idle the
    /// new one is returned without being kept.
    fn get_or(&mut self, key: &K, now: Instant, make: impl FnOnce() -> V) -> V {
        if let Some((v, used)) = self.map.get_mut(key) {
            *used = now;
            return v.clone();
        }
        let v = make();
        if self.map.len() >= MAX_DESTINATIONS {
            let oldest = self
                .map
                .iter()
                .filter(|(_, (v, _))| !v.in_use())
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.map.remove(&k);
                }
                None => return v,
            }
        }
        self.map.insert(key.clone(), (v.clone(), now));
        v
    }

    /// Drops what nobody held or asked for during `idle`; what is held counts as used now.
    fn sweep(&mut self, now: Instant, idle: Duration) {
        self.map.retain(|_, (v, used)| {
            if v.in_use() {
                *used = now;
                true
            } else {
                now.saturating_duration_since(*used) < idle
            }
        });
    }
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
        let idle = factory.timeouts.destination_idle;
        Self {
            backends,
            resolver,
            factory,
            balancers: Mutex::default(),
            addrs: Mutex::default(),
            idle,
            policies: std::sync::OnceLock::new(),
        }
    }

    /// Asks the control plane on `channel` for each name's outbound policy (routes), as
    /// `workload`. Only outbound upstreams with a resolver route.
    pub fn enable_policies(this: &Arc<Self>, channel: tonic::transport::Channel, workload: String) {
        if this.resolver.is_none() {
            return;
        }
        let weak = Arc::downgrade(this);
        let compile: Compile = Arc::new(move |name, policy| {
            let Some(upstreams) = weak.upgrade() else {
                return Err("the proxy is shutting down".to_string());
            };
            let compiled = crate::policy::compile(policy, &*upstreams);
            // Circuit breaking applies to the service's own endpoints and to its routes'
            // backends, with or without routes.
            let accrual = crate::policy::accrual(policy);
            if let Ok(Some(p)) = &compiled {
                tracing::debug!(%name, parent = %p.parent.name, "routes compiled");
            }
            let balancers =
                upstreams.accrual_balancers(name, compiled.as_ref().ok().and_then(Option::as_ref));
            for b in balancers {
                b.set_accrual(accrual);
            }
            compiled
        });
        let _ = this.policies.set(Policies::new(channel, workload, compile));
    }

    /// The balancers a policy for `name` puts its failure accrual on: the one serving
    /// `name` itself (a name's, or a looked-up address's) and those of its routes'
    /// backends.
    fn accrual_balancers(
        &self,
        name: &Authority,
        policy: Option<&crate::policy::Policy>,
    ) -> Vec<Arc<Balancer>> {
        let own = match name.socket_addr() {
            Some(addr) => lock(&self.addrs)
                .map
                .get(&addr)
                .map(|(lookup, _)| lookup.balancer.clone()),
            None => match self.get(name) {
                Upstream::Balanced(b) => Some(b),
                Upstream::Addr(_) => None,
            },
        };
        let backends = policy
            .into_iter()
            .flat_map(|p| &p.routes)
            .flat_map(|r| &r.rules)
            .flat_map(|r| &r.backends)
            .filter_map(|b| match &b.upstream {
                Some(Upstream::Balanced(b)) => Some(b.clone()),
                _ => None,
            });
        own.into_iter().chain(backends).collect()
    }

    /// The policy streams, for `/state`.
    pub fn policies(&self) -> Option<&Policies> {
        self.policies.get()
    }

    fn balancer(&self, target: &Authority, resolver: &Resolver) -> Arc<Balancer> {
        Balancer::new(
            target.clone(),
            resolver.resolve(target),
            self.factory.clone(),
            self.policies.get().map(|p| p.resolve(target)),
        )
    }

    /// Lets go of destinations nobody has used for [`Upstreams::idle`]: their balancers,
    /// balancer tasks and `Get` streams (see [`Held`]).
    pub fn sweep(&self) {
        let now = Instant::now();
        lock(&self.balancers).sweep(now, self.idle);
        lock(&self.addrs).sweep(now, self.idle);
    }

    /// How many destinations (names and looked-up addresses) are held now.
    pub fn held(&self) -> usize {
        lock(&self.balancers).map.len() + lock(&self.addrs).map.len()
    }

    /// Sweeps every half idle period while `this` lives (with a control plane only: without
    /// one nothing is held).
    pub fn spawn_eviction(this: &Arc<Self>) {
        if this.resolver.is_none() {
            return;
        }
        let weak = Arc::downgrade(this);
        let period = (this.idle / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.sweep();
            }
        });
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
        let lookup = lock(&self.addrs).get_or(&addr, Instant::now(), || {
            Arc::new(AddrLookup {
                balancer: self.balancer(&target, resolver),
                waited_in_vain: AtomicBool::new(false),
            })
        });
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
        let balancer = lock(&self.balancers)
            .get_or(target, Instant::now(), || self.balancer(target, resolver));
        Upstream::Balanced(balancer)
    }

    /// The balancers, of names and of looked-up addresses, for `/state`.
    pub fn balancers(&self) -> Vec<Arc<Balancer>> {
        let mut out: Vec<_> = lock(&self.balancers)
            .map
            .values()
            .map(|(b, _)| b.clone())
            .collect();
        out.extend(
            lock(&self.addrs)
                .map
                .values()
                .map(|(l, _)| l.balancer.clone()),
        );
        out.sort_by_key(|b| b.name().to_string());
        out
    }
}

impl crate::policy::Backends for Upstreams {
    fn backend(&self, path: &str) -> Option<Upstream> {
        let target: Authority = path.parse().ok()?;
        Some(self.get(&target))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
            pools: Arc::default(),
        };
        let backends = Arc::new(Backends::new(Direction::Outbound, timeouts, registry));
        let channel =
            crate::discover::channel(&"127.0.0.1:9".parse().unwrap(), timeouts.connect, None)
                .unwrap();
        let resolver = Resolver::new(channel, String::new());
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

    /// A policy's failure accrual reaches the balancer of a looked-up address, as it does
    /// a name's.
    #[tokio::test(start_paused = true)]
    async fn accrual_reaches_looked_up_addresses_and_names() {
        let upstreams = silent_control_plane();
        let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();
        assert!(upstreams
            .accrual_balancers(&Authority::from(addr), None)
            .is_empty());
        upstreams.by_orig_dst(addr).await;
        let looked_up = upstreams.accrual_balancers(&Authority::from(addr), None);
        assert_eq!(looked_up.len(), 1);
        assert_eq!(looked_up[0].name(), &Authority::from(addr));
        let name = "web.default:80".parse().unwrap();
        let named = upstreams.accrual_balancers(&name, None);
        assert_eq!(named[0].name(), &name);
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

    #[tokio::test(start_paused = true)]
    async fn idle_destinations_are_let_go_with_their_streams() {
        let upstreams = silent_control_plane();
        let idle = upstreams.idle;
        let resolver = upstreams.resolver.clone().unwrap();
        // One name held by a connection, one asked for once, one looked-up address.
        let held = upstreams.get(&"held.default:80".parse().unwrap());
        drop(upstreams.get(&"once.default:80".parse().unwrap()));
        upstreams.by_orig_dst("127.0.0.1:7".parse().unwrap()).await;
        assert_eq!(upstreams.held(), 3);
        assert_eq!(resolver.len(), 3, "one stream each");

        tokio::time::advance(idle - Duration::from_secs(1)).await;
        upstreams.sweep();
        assert_eq!(upstreams.held(), 3, "not idle long enough");
        // Asked for again: idle counts from now.
        drop(upstreams.get(&"once.default:80".parse().unwrap()));

        tokio::time::advance(Duration::from_secs(2)).await;
        upstreams.sweep();
        assert_eq!(upstreams.held(), 2, "the address is let go");
        wait_for(|| resolver.len() == 2).await;

        tokio::time::advance(idle).await;
        upstreams.sweep();
        assert_eq!(upstreams.held(), 1, "only the one a connection holds stays");
        wait_for(|| resolver.len() == 1).await;
        assert_eq!(resolver.state()[0].name, "held.default:80");

        // Once its connection is gone, it is idle from the last sweep that saw it held.
        drop(held);
        tokio::time::advance(idle / 2).await;
        upstreams.sweep();
        assert_eq!(upstreams.held(), 1);
        tokio::time::advance(idle / 2).await;
        upstreams.sweep();
        assert_eq!(upstreams.held(), 0);
        wait_for(|| resolver.is_empty()).await;

        // A name asked for after it was let go gets a new stream.
        let again = upstreams.get(&"held.default:80".parse().unwrap());
        assert_eq!(resolver.len(), 1);
        drop(again);
    }

    #[tokio::test(start_paused = true)]
    async fn the_eviction_task_sweeps_on_its_own() {
        let upstreams = Arc::new(silent_control_plane());
        Upstreams::spawn_eviction(&upstreams);
        drop(upstreams.get(&"once.default:80".parse().unwrap()));
        assert_eq!(upstreams.held(), 1);
        tokio::time::sleep(upstreams.idle * 2).await;
        assert_eq!(upstreams.held(), 0);
        wait_for(|| upstreams.resolver.as_ref().unwrap().is_empty()).await;
    }

    impl InUse for Arc<u32> {
        fn in_use(&self) -> bool {
            Arc::strong_count(self) > 1
        }
    }

    #[test]
    fn at_the_cap_the_least_recently_used_idle_one_makes_room() {
        let mut held: Held<u32, Arc<u32>> = Held::default();
        let start = Instant::now();
        let first = held.get_or(&0, start, || Arc::new(0));
        for k in 1..MAX_DESTINATIONS as u32 {
            held.get_or(&k, start + Duration::from_secs(u64::from(k)), || {
                Arc::new(k)
            });
        }
        assert_eq!(held.map.len(), MAX_DESTINATIONS);
        let late = start + Duration::from_secs(10_000);
        held.get_or(&5000, late, || Arc::new(5000));
        assert_eq!(held.map.len(), MAX_DESTINATIONS);
        assert!(held.map.contains_key(&0), "held by a connection: kept");
        assert!(
            !held.map.contains_key(&1),
            "the least recently used idle one went"
        );
        assert!(held.map.contains_key(&5000));

        // With every one held, a new one is served but not kept.
        let all: Vec<_> = held.map.values().map(|(v, _)| v.clone()).collect();
        let extra = held.get_or(&6000, late, || Arc::new(6000));
        assert_eq!(*extra, 6000);
        assert!(!held.map.contains_key(&6000));
        assert_eq!(held.map.len(), MAX_DESTINATIONS);
        drop((all, first));
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition not reached");
    }
}
