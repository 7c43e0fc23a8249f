//! Load balancing over a service's endpoints: power of two choices over peak-EWMA latency
//! weighted by requests in flight, with failing endpoints backed off.
//!
//! The endpoint set comes from [`crate::discover`]; a balancer turns each new resolution
//! into a snapshot, keeping the pools and latency estimates of endpoints that stay.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    ops::ControlFlow,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use ferry_api::ProxyErrorReason;
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    backend::Backend,
    config::{Authority, Timeouts},
    connect::PeerIdentity,
    discover::{EndpointMeta, Resolution},
    errors::ProxyError,
    metrics::{Direction, HttpLabels, HttpMetrics, Registry, Tls},
    policy::{Policy, PolicyState},
    route,
    upstream::MAX_CONNECT_ATTEMPTS,
};

/// The latency an endpoint is assumed to have before it has answered (Linkerd's default).
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Latencies below this are treated as equal: differences under a millisecond are noise to
/// a balancer, so between such endpoints the requests in flight decide, and ties are random.
const RTT_FLOOR: Duration = Duration::from_millis(1);
/// How fast the latency estimate forgets: the time constant of its exponential decay.
const DECAY: Duration = Duration::from_secs(10);
/// Backoff of an endpoint that failed to connect: doubles per consecutive failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(10));
/// How long a request waits for discovery's first answer before failing.
pub const FAILFAST: Duration = Duration::from_secs(3);

/// Peak-EWMA: a latency estimate that jumps up to any slower observation at once and decays
/// toward faster ones (and toward zero while idle, so idle endpoints get tried again).
#[derive(Debug)]
struct PeakEwma {
    nanos: f64,
    stamp: Instant,
    /// Whether any response has been observed. An endpoint nobody has measured is tried
    /// once before estimates are compared, so a new endpoint is not starved by the default
    /// estimate being far above the measured latency of its peers.
    observed: bool,
}

impl PeakEwma {
    fn decayed(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
        self.nanos * (-elapsed / DECAY.as_secs_f64()).exp()
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        // The first measurement replaces the default outright: there is no history to keep.
        self.nanos = if rtt > self.nanos || !self.observed {
            rtt
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
            let w = (-elapsed / DECAY.as_secs_f64()).exp();
            self.nanos * w + rtt * (1.0 - w)
        };
        self.stamp = now;
        self.observed = true;
    }
}

/// One endpoint of a balanced service.
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Labels and identity from discovery.
    pub meta: EndpointMeta,
    /// Its connection pools.
    pub backend: Arc<Backend>,
    /// Its HTTP metrics (the service's name as `authority`, its labels as `dst_*`).
    pub metrics: Arc<HttpMetrics>,
    ewma: Mutex<PeakEwma>,
    in_flight: AtomicU32,
    failures: AtomicU32,
    /// Backed off until this many milliseconds after the balancer's epoch.
    backoff_until_ms: AtomicU64,
    /// Failure accrual: failed responses in a row, and how many times in a row the
    /// endpoint has been ejected for them (the penalty doubles with each).
    failed_responses: AtomicU32,
    ejections: AtomicU32,
}

/// Marks a request dispatched to an endpoint; dropping it without [`InFlight::done`] counts
/// nothing toward latency (the request failed or was cancelled).
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
    /// Connections the endpoint's pool had opened at dispatch: a request that waited for a
    /// new connection measures the handshake, not the endpoint, and is not observed.
    opened: u64,
}

impl InFlight {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The response headers arrived: feeds the latency estimate.
    pub fn done(self) {
        self.endpoint.failures.store(0, Relaxed);
        if self.endpoint.backend.connector().opened() != self.opened {
            return;
        }
        let now = Instant::now();
        tracing::trace!(addr = %self.endpoint.addr, rtt = ?(now - self.started), "endpoint latency");
        self.endpoint.lock_ewma().observe(now - self.started, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Endpoint {
    fn lock_ewma(&self) -> std::sync::MutexGuard<'_, PeakEwma> {
        self.ewma.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight.load(Relaxed);
        let ewma = self.lock_ewma();
        if !ewma.observed && in_flight == 0 {
            return 0.0;
        }
        let floor = RTT_FLOOR.as_nanos() as f64;
        ewma.decayed(now).max(floor) * f64::from(in_flight + 1)
    }

    /// Starts a request on this endpoint.
    pub fn dispatch(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight {
            endpoint: self.clone(),
            started: Instant::now(),
            opened: self.backend.connector().opened(),
        }
    }
}

struct Snapshot {
    resolution: Resolution,
    endpoints: Vec<Arc<Endpoint>>,
}

/// A try that an endpoint did not answer (see [`Tries::record`]).
pub struct SendFailed {
    /// What went wrong.
    pub error: ProxyError,
    /// The connection could not be opened, so nothing was sent: another endpoint may be tried.
    pub connect: bool,
}

/// One HTTP request's tries on a balanced service: send it to [`Tries::endpoint`], then
/// [`Tries::record`] the outcome. When connecting failed (nothing was sent) and the request
/// is retryable, the endpoint is backed off and another one is picked, up to
/// [`MAX_CONNECT_ATTEMPTS`] in all. The request is counted once, on the endpoint that
/// answered it or failed last.
pub struct Tries<'a> {
    balancer: &'a Balancer,
    retryable: bool,
    attempt: usize,
    endpoint: Arc<Endpoint>,
    in_flight: Option<InFlight>,
}

impl Tries<'_> {
    /// The endpoint to send to now; after the last try, the one that answered or failed last.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Records a try's outcome: `Break` with the request's result, or `Continue` to send
    /// it again to the next [`Tries::endpoint`].
    pub fn record<T: Answered>(
        &mut self,
        result: Result<T, SendFailed>,
    ) -> ControlFlow<Result<T, ProxyError>> {
        let in_flight = self.in_flight.take();
        let error = match result {
            Ok(answer) => {
                if let Some(f) = in_flight {
                    f.done();
                }
                self.balancer.accrue(&self.endpoint, answer.failed());
                self.endpoint.metrics.request();
                return ControlFlow::Break(Ok(answer));
            }
            Err(failed) if !failed.connect => {
                self.balancer.accrue(&self.endpoint, true);
                self.endpoint.metrics.request();
                return ControlFlow::Break(Err(failed.error));
            }
            Err(failed) => failed.error,
        };
        self.balancer.connect_failed(&self.endpoint);
        drop(in_flight);
        match self.balancer.pick_other(&self.endpoint) {
            Some(next) if self.retryable && self.attempt < MAX_CONNECT_ATTEMPTS => {
                tracing::debug!(from = %self.endpoint.addr, to = %next.addr, %error, "retrying on another endpoint");
                self.in_flight = Some(next.dispatch());
                self.endpoint = next;
                self.attempt += 1;
                ControlFlow::Continue(())
            }
            _ => {
                self.endpoint.metrics.request();
                ControlFlow::Break(Err(error))
            }
        }
    }
}

/// An answer as failure accrual sees it.
pub trait Answered {
    /// Whether it counts as a failure of the endpoint (a 5xx).
    fn failed(&self) -> bool;
}

impl<B> Answered for http::Response<B> {
    fn failed(&self) -> bool {
        self.status().is_server_error()
    }
}

/// Circuit breaking by consecutive failures (Linkerd's `ConsecutiveFailures` failure
/// accrual): after `max_failures` failed responses in a row an endpoint is ejected for a
/// penalty that starts at `min_penalty` and doubles with each ejection in a row, up to
/// `max_penalty`, with `jitter` of it added at random. Once the penalty is over the
/// endpoint is tried again: a success brings it back (and resets the penalty), a failure
/// ejects it again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accrual {
    /// Failed responses in a row that eject an endpoint.
    pub max_failures: u32,
    /// The first penalty.
    pub min_penalty: Duration,
    /// The longest penalty.
    pub max_penalty: Duration,
    /// Share of the penalty added at random, 0 to 1.
    pub jitter: f64,
}

/// Balances one service name across its endpoints.
pub struct Balancer {
    /// Failure accrual, when the service's policy asks for it.
    accrual: Mutex<Option<Accrual>>,
    name: Authority,
    /// `name` as text, made once: every request's target label.
    label: Arc<str>,
    epoch: Instant,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The name's outbound policy, when the control plane serves policies.
    policy: Option<Routing>,
}

/// A name's outbound policy as the request path reads it.
struct Routing {
    rx: watch::Receiver<PolicyState>,
    /// Set once a request waited [`POLICY_WAIT`] and heard nothing: while the control
    /// plane stays silent about the name, later requests do not wait.
    waited_in_vain: std::sync::atomic::AtomicBool,
}

/// How long a request waits for the control plane's first policy answer about its service
/// before going to the service as is (as [`crate::upstream::ORIG_DST_DISCOVERY_WAIT`]).
pub const POLICY_WAIT: Duration = Duration::from_millis(200);

/// An endpoint as `/state` shows it.
#[derive(Serialize)]
pub struct EndpointState {
    addr: SocketAddr,
    #[serde(flatten)]
    meta: EndpointMeta,
    in_flight: u32,
    ewma_ms: f64,
    consecutive_failures: u32,
    backoff_remaining_ms: u64,
}

/// How a balancer builds endpoints.
#[derive(Clone)]
pub struct EndpointFactory {
    /// Side of the proxy.
    pub direction: Direction,
    /// TLS label of its connections when the endpoint is not meshed.
    pub tls: Tls,
    /// This proxy's identity: with it, endpoints that have one are reached over mTLS.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Timeouts for its pools.
    pub timeouts: Timeouts,
    /// Where metrics go.
    pub registry: Arc<Registry>,
    /// The endpoints' connection pools, shared by every service of the side.
    pub pools: Arc<SharedPools>,
}

/// The endpoints' backends (their connection pools), one per address and expected identity
/// for all the services of a side: a pod behind several services (a split's backends, a
/// rollout's fronting Service beside the main one) is reached over one set of
/// connections, whose writes the HTTP/2 connection batches together.
#[derive(Default)]
pub struct SharedPools {
    map: Mutex<HashMap<PoolKey, Weak<Backend>>>,
}

/// An endpoint's address and expected identity.
type PoolKey = (SocketAddr, Option<String>);

impl SharedPools {
    /// The live backend for `addr` and `identity`, or the one `make` makes.
    fn get_or_make(
        &self,
        addr: SocketAddr,
        identity: &Option<String>,
        make: impl FnOnce() -> Backend,
    ) -> Arc<Backend> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = (addr, identity.clone());
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        // Backends no endpoint holds any more are gone: forget them (on a miss only).
        map.retain(|_, b| b.strong_count() > 0);
        let made = Arc::new(make());
        map.insert(key, Arc::downgrade(&made));
        made
    }
}

impl EndpointFactory {
    fn build(
        &self,
        name: &Authority,
        addr: SocketAddr,
        meta: EndpointMeta,
        reuse: Option<&Endpoint>,
    ) -> Arc<Endpoint> {
        let dst: Arc<[(String, String)]> = meta
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let peer = match (&self.identity, &meta.identity) {
            (Some(local), Some(id)) => Some(PeerIdentity {
                local: local.clone(),
                server_id: id.as_str().into(),
            }),
            _ => None,
        };
        let tls = match &peer {
            Some(_) => Tls::for_peer(peer.as_ref()),
            None => self.tls.clone(),
        };
        // Pools are per address and expected identity: a new identity gets new connections.
        let backend = match reuse {
            Some(old) if old.meta.identity == meta.identity => old.backend.clone(),
            _ => self.pools.get_or_make(addr, &meta.identity, || {
                Backend::new(
                    Authority::from(addr),
                    &self.timeouts,
                    self.direction,
                    &self.registry,
                    peer,
                )
            }),
        };
        let metrics = self.registry.http(HttpLabels {
            direction: self.direction,
            authority: name.to_string().into(),
            target_addr: backend.target_label.clone(),
            tls,
            dst,
        });
        let ewma = reuse.map_or(
            PeakEwma {
                nanos: DEFAULT_RTT.as_nanos() as f64,
                stamp: Instant::now(),
                observed: false,
            },
            |old| {
                let e = old.lock_ewma();
                PeakEwma {
                    nanos: e.nanos,
                    stamp: e.stamp,
                    observed: e.observed,
                }
            },
        );
        Arc::new(Endpoint {
            addr,
            meta,
            backend,
            metrics,
            ewma: Mutex::new(ewma),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(reuse.map_or(0, |o| o.failures.load(Relaxed))),
            backoff_until_ms: AtomicU64::new(reuse.map_or(0, |o| o.backoff_until_ms.load(Relaxed))),
            failed_responses: AtomicU32::new(reuse.map_or(0, |o| o.failed_responses.load(Relaxed))),
            ejections: AtomicU32::new(reuse.map_or(0, |o| o.ejections.load(Relaxed))),
        })
    }
}

impl Balancer {
    /// A balancer for `name`, following `resolution`.
    pub fn new(
        name: Authority,
        mut resolution: watch::Receiver<Resolution>,
        factory: EndpointFactory,
        policy: Option<watch::Receiver<PolicyState>>,
    ) -> Arc<Self> {
        let first = Arc::new(Snapshot {
            resolution: Resolution::Pending,
            endpoints: Vec::new(),
        });
        let (tx, rx) = watch::channel(first);
        let task_name = name.clone();
        tokio::spawn(async move {
            loop {
                let res = resolution.borrow_and_update().clone();
                let prev = tx.borrow().clone();
                let endpoints = match &res {
                    Resolution::Endpoints(set) => {
                        rebuild(&factory, &task_name, set, &prev.endpoints)
                    }
                    _ => Vec::new(),
                };
                tx.send_replace(Arc::new(Snapshot {
                    resolution: res,
                    endpoints,
                }));
                tokio::select! {
                    changed = resolution.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Arc::new(Self {
            accrual: Mutex::new(None),
            label: name.to_string().into(),
            name,
            epoch: Instant::now(),
            snapshot: rx,
            policy: policy.map(|rx| Routing {
                rx,
                waited_in_vain: Default::default(),
            }),
        })
    }

    /// The routes to choose from for a request, if the service has any; waits up to
    /// [`POLICY_WAIT`] for the control plane's first answer (once per name while it stays
    /// silent). `None`: the request goes to the service itself.
    pub fn policy(&self) -> impl std::future::Future<Output = Option<Arc<Policy>>> + Send + '_ {
        let known = self.known_policy();
        // The wait is rare and its future large: boxed, so the usual answer costs a request
        // a small future and no allocation.
        async move {
            match known {
                Some(policy) => policy,
                None => Box::pin(self.wait_for_policy()).await,
            }
        }
    }

    /// [`Balancer::policy`] as known now; `None` while the control plane's first answer is
    /// still to be waited for.
    fn known_policy(&self) -> Option<Option<Arc<Policy>>> {
        let Some(routing) = self.policy.as_ref() else {
            return Some(None);
        };
        match &*routing.rx.borrow() {
            PolicyState::Routes(p) => Some(Some(p.clone())),
            PolicyState::None => Some(None),
            PolicyState::Pending => routing.waited_in_vain.load(Relaxed).then_some(None),
        }
    }

    /// Waits up to [`POLICY_WAIT`] for the control plane's first answer; a silence marks
    /// the name so later requests do not wait again.
    async fn wait_for_policy(&self) -> Option<Arc<Policy>> {
        let routing = self.policy.as_ref()?;
        let mut rx = routing.rx.clone();
        let answered = tokio::time::timeout(
            POLICY_WAIT,
            rx.wait_for(|s| !matches!(s, PolicyState::Pending)),
        )
        .await;
        match answered {
            Ok(Ok(state)) => match &*state {
                PolicyState::Routes(p) => Some(p.clone()),
                _ => None,
            },
            _ => {
                tracing::debug!(name = %self.name, "no policy answer from the control plane; sending to the service as is");
                routing.waited_in_vain.store(true, Relaxed);
                None
            }
        }
    }

    /// The service name.
    pub fn name(&self) -> &Authority {
        &self.name
    }

    /// The service name as text (`name:port`).
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// Picks an endpoint, waiting up to [`FAILFAST`] for discovery's first answer.
    pub async fn pick(&self) -> Result<Arc<Endpoint>, ProxyError> {
        self.pick_within(None).await
    }

    /// [`Balancer::pick`], with a route's timeout (from [`route::Plan::try_limit`]) also
    /// ending the wait for discovery's first answer, failing as that timeout does. Only
    /// a wait reads the clock.
    async fn pick_within(
        &self,
        route: Option<(tokio::time::Instant, route::Timeout)>,
    ) -> Result<Arc<Endpoint>, ProxyError> {
        let mut snap = self.snapshot.borrow().clone();
        if snap.resolution == Resolution::Pending {
            let mut rx = self.snapshot.clone();
            let failfast = tokio::time::Instant::now() + FAILFAST;
            let (until, route) = match route {
                Some((at, which)) if at < failfast => (at, Some(which)),
                _ => (failfast, None),
            };
            let waited = tokio::time::timeout_at(
                until,
                rx.wait_for(|s| s.resolution != Resolution::Pending),
            )
            .await;
            let answered = waited.ok().and_then(Result::ok).map(|s| s.clone());
            match (answered, route) {
                (Some(s), _) => snap = s,
                (None, Some(which)) => return Err(which.error(&self.label)),
                (None, None) => {
                    return Err(ProxyError::new(
                        ProxyErrorReason::NoEndpoints,
                        format!(
                            "no answer from the control plane about {} within {FAILFAST:?}",
                            self.name
                        ),
                    ))
                }
            }
        }
        match &snap.resolution {
            Resolution::NoEndpoints { exists: false } => Err(ProxyError::new(
                ProxyErrorReason::NoRoute,
                format!("the control plane knows no service {}", self.name),
            )),
            Resolution::NoEndpoints { exists: true } | Resolution::Pending => Err(ProxyError::new(
                ProxyErrorReason::NoEndpoints,
                format!("service {} has no endpoints", self.name),
            )),
            Resolution::Endpoints(_) => Ok(self.p2c(&snap.endpoints, None)),
        }
    }

    /// Whether discovery has reported endpoints, waiting up to `wait` for its first answer:
    /// `None` when it still has not answered.
    pub async fn has_endpoints(&self, wait: Duration) -> Option<bool> {
        let mut rx = self.snapshot.clone();
        let answered =
            tokio::time::timeout(wait, rx.wait_for(|s| s.resolution != Resolution::Pending)).await;
        match answered {
            Ok(Ok(snap)) => Some(!snap.endpoints.is_empty()),
            _ => None,
        }
    }

    /// Picks an endpoint other than `avoid` when there is one.
    pub fn pick_other(&self, avoid: &Endpoint) -> Option<Arc<Endpoint>> {
        let snap = self.snapshot.borrow().clone();
        (snap.endpoints.len() > 1).then(|| self.p2c(&snap.endpoints, Some(avoid.addr)))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn p2c(&self, all: &[Arc<Endpoint>], avoid: Option<SocketAddr>) -> Arc<Endpoint> {
        let now_ms = self.now_ms();
        let usable = |e: &&Arc<Endpoint>| {
            Some(e.addr) != avoid && e.backoff_until_ms.load(Relaxed) <= now_ms
        };
        let ready: Vec<&Arc<Endpoint>> = all.iter().filter(usable).collect();
        // With every endpoint backed off, trying one beats refusing the request.
        let pool: Vec<&Arc<Endpoint>> = if ready.is_empty() {
            all.iter().collect()
        } else {
            ready
        };
        if pool.len() == 1 {
            return pool[0].clone();
        }
        let i = fastrand::usize(..pool.len());
        let mut j = fastrand::usize(..pool.len() - 1);
        if j >= i {
            j += 1;
        }
        let now = Instant::now();
        let (a, b) = (pool[i], pool[j]);
        let (cost_a, cost_b) = (a.cost(now), b.cost(now));
        // The cheaper of the two wins in proportion to how much cheaper it is: a clear
        // difference (a slowed endpoint) decides almost always, while noise between equal
        // endpoints cannot pin all traffic to one of them, as a strict comparison would.
        let total = cost_a + cost_b;
        let a_wins = if total <= 0.0 {
            fastrand::bool()
        } else {
            fastrand::f64() * total >= cost_a
        };
        if a_wins {
            a.clone()
        } else {
            b.clone()
        }
    }

    /// Records that connecting to `endpoint` failed: it is avoided for a backoff that grows
    /// with each consecutive failure.
    pub fn connect_failed(&self, endpoint: &Endpoint) {
        let n = endpoint.failures.fetch_add(1, Relaxed).min(16);
        let backoff = (BACKOFF.0 * 2u32.saturating_pow(n)).min(BACKOFF.1);
        let until = self.now_ms() + u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        endpoint.backoff_until_ms.store(until, Relaxed);
        tracing::debug!(name = %self.name, addr = %endpoint.addr, ?backoff, "endpoint backed off");
    }

    /// Sets (or clears) failure accrual for this service's endpoints.
    pub fn set_accrual(&self, accrual: Option<Accrual>) {
        *self.accrual.lock().unwrap_or_else(|e| e.into_inner()) = accrual;
    }

    /// Records an endpoint's answer for failure accrual.
    pub fn accrue(&self, endpoint: &Endpoint, failed: bool) {
        if !failed {
            if endpoint.failed_responses.load(Relaxed) != 0 {
                endpoint.failed_responses.store(0, Relaxed);
                endpoint.ejections.store(0, Relaxed);
            }
            return;
        }
        let Some(accrual) = *self.accrual.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        let failures = endpoint.failed_responses.fetch_add(1, Relaxed) + 1;
        if failures < accrual.max_failures.max(1) {
            return;
        }
        let n = endpoint.ejections.fetch_add(1, Relaxed).min(16);
        let base = accrual
            .min_penalty
            .saturating_mul(2u32.saturating_pow(n))
            .min(accrual.max_penalty.max(accrual.min_penalty));
        let penalty = base + base.mul_f64(accrual.jitter.clamp(0.0, 1.0) * fastrand::f64());
        let until = self.now_ms() + u64::try_from(penalty.as_millis()).unwrap_or(u64::MAX);
        endpoint.backoff_until_ms.store(until, Relaxed);
        tracing::debug!(name = %self.name, addr = %endpoint.addr, failures, ?penalty, "endpoint ejected after failed responses");
    }

    /// Starts sending one HTTP request: picks its first endpoint by P2C. See [`Tries`].
    /// `route`: the try's route timeout, which also bounds a wait for discovery.
    pub async fn tries(
        &self,
        retryable: bool,
        route: Option<(tokio::time::Instant, route::Timeout)>,
    ) -> Result<Tries<'_>, ProxyError> {
        let endpoint = self.pick_within(route).await?;
        Ok(Tries {
            balancer: self,
            retryable,
            attempt: 1,
            in_flight: Some(endpoint.dispatch()),
            endpoint,
        })
    }

    /// The endpoints and their balancer state, for `/state`.
    pub fn state(&self) -> Vec<EndpointState> {
        let snap = self.snapshot.borrow().clone();
        let now = Instant::now();
        let now_ms = self.now_ms();
        snap.endpoints
            .iter()
            .map(|e| EndpointState {
                addr: e.addr,
                meta: e.meta.clone(),
                in_flight: e.in_flight.load(Relaxed),
                ewma_ms: (e.lock_ewma().decayed(now) / 1e6 * 1000.0).round() / 1000.0,
                consecutive_failures: e.failures.load(Relaxed),
                backoff_remaining_ms: e.backoff_until_ms.load(Relaxed).saturating_sub(now_ms),
            })
            .collect()
    }
}

fn rebuild(
    factory: &EndpointFactory,
    name: &Authority,
    set: &BTreeMap<SocketAddr, EndpointMeta>,
    prev: &[Arc<Endpoint>],
) -> Vec<Arc<Endpoint>> {
    set.iter()
        .map(|(addr, meta)| {
            let old = prev.iter().find(|e| e.addr == *addr);
            match old {
                Some(old) if old.meta == *meta => old.clone(),
                old => factory.build(name, *addr, meta.clone(), old.map(|o| &**o)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factory() -> EndpointFactory {
        EndpointFactory {
            direction: Direction::Outbound,
            tls: Tls::NOT_PROVIDED_BY_DISCOVERY,
            identity: None,
            timeouts: crate::Config::for_tests("127.0.0.1:9".parse().unwrap()).timeouts,
            registry: Arc::default(),
            pools: Arc::default(),
        }
    }

    fn set(addrs: &[&str]) -> Resolution {
        Resolution::Endpoints(Arc::new(
            addrs
                .iter()
                .map(|a| {
                    let meta = EndpointMeta {
                        labels: [("pod".to_string(), a.to_string())].into(),
                        identity: None,
                    };
                    (a.parse().unwrap(), meta)
                })
                .collect(),
        ))
    }

    async fn balancer(res: Resolution) -> (Arc<Balancer>, watch::Sender<Resolution>) {
        let (tx, rx) = watch::channel(res);
        let b = Balancer::new("echo.default:8080".parse().unwrap(), rx, factory(), None);
        let mut snap = b.snapshot.clone();
        snap.wait_for(|s| s.resolution != Resolution::Pending)
            .await
            .unwrap();
        (b, tx)
    }

    /// Services that reach the same address with the same identity share its backend (one
    /// set of connections); another identity gets its own, and a backend no endpoint
    /// holds any more is let go.
    #[tokio::test]
    async fn services_reaching_one_address_share_its_connections() {
        let factory = factory();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let meta = |identity: Option<&str>| EndpointMeta {
            labels: Default::default(),
            identity: identity.map(str::to_string),
        };
        let web = factory.build(&"web.default:80".parse().unwrap(), addr, meta(None), None);
        let canary = factory.build(
            &"canary.default:80".parse().unwrap(),
            addr,
            meta(None),
            None,
        );
        assert!(Arc::ptr_eq(&web.backend, &canary.backend));
        let meshed = factory.build(
            &"web.default:80".parse().unwrap(),
            addr,
            meta(Some(
                "web.default.serviceaccount.identity.ferry.cluster.local",
            )),
            None,
        );
        assert!(!Arc::ptr_eq(&web.backend, &meshed.backend));
        let other = factory.build(
            &"web.default:80".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            meta(None),
            None,
        );
        assert!(!Arc::ptr_eq(&web.backend, &other.backend));
        let shared = Arc::downgrade(&web.backend);
        drop((web, canary));
        assert!(shared.upgrade().is_none(), "no endpoint holds it: let go");
    }

    /// A request waits [`POLICY_WAIT`] for the first policy answer, once per silent name;
    /// an answer within it ends the wait at once.
    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_the_first_policy_answer_once_and_within_a_bound() {
        use tokio::time::Instant;
        let policy_balancer = |state| {
            let (tx, rx) = watch::channel(state);
            let (_res_tx, res_rx) = watch::channel(set(&["127.0.0.1:1"]));
            let b = Balancer::new(
                "echo.default:8080".parse().unwrap(),
                res_rx,
                factory(),
                Some(rx),
            );
            (b, tx)
        };

        let (silent, _tx) = policy_balancer(PolicyState::Pending);
        let start = Instant::now();
        assert!(silent.policy().await.is_none());
        assert_eq!(
            start.elapsed(),
            POLICY_WAIT,
            "the first request waits the bound"
        );
        let again = Instant::now();
        assert!(silent.policy().await.is_none());
        assert_eq!(again.elapsed(), Duration::ZERO, "later ones do not wait");

        let (answered, tx) = policy_balancer(PolicyState::Pending);
        let start = Instant::now();
        let waiting = tokio::spawn(async move { answered.policy().await.is_none() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(PolicyState::None);
        assert!(waiting.await.unwrap());
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "the answer ends the wait"
        );
    }

    #[tokio::test]
    async fn failed_responses_in_a_row_eject_an_endpoint_for_a_growing_penalty() {
        let (b, _tx) = balancer(set(&["127.0.0.1:1", "127.0.0.1:2"])).await;
        let snap = b.snapshot.borrow().clone();
        let bad = &snap.endpoints[0];
        let penalty = |b: &Balancer| {
            bad.backoff_until_ms
                .load(Relaxed)
                .saturating_sub(b.now_ms())
        };
        // Without accrual, failures eject nothing.
        for _ in 0..10 {
            b.accrue(bad, true);
        }
        assert_eq!(penalty(&b), 0);
        bad.failed_responses.store(0, Relaxed);

        b.set_accrual(Some(Accrual {
            max_failures: 3,
            min_penalty: Duration::from_secs(10),
            max_penalty: Duration::from_secs(25),
            jitter: 0.0,
        }));
        b.accrue(bad, true);
        b.accrue(bad, true);
        b.accrue(bad, false);
        b.accrue(bad, true);
        b.accrue(bad, true);
        assert_eq!(
            penalty(&b),
            0,
            "a success in between starts the count again"
        );
        b.accrue(bad, true);
        let first = penalty(&b);
        assert!((9_900..=10_000).contains(&first), "{first}");
        for _ in 0..200 {
            assert_eq!(b.p2c(&snap.endpoints, None).addr.port(), 2, "ejected");
        }
        // Tried again after the penalty and failing: ejected for twice as long, then the
        // most; a success brings it back with the count and the penalty reset.
        b.accrue(bad, true);
        assert!((19_900..=20_000).contains(&penalty(&b)));
        b.accrue(bad, true);
        assert!((24_900..=25_000).contains(&penalty(&b)));
        b.accrue(bad, false);
        assert_eq!(bad.ejections.load(Relaxed), 0);
        assert_eq!(bad.failed_responses.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn prefers_the_faster_endpoint() {
        let (b, _tx) = balancer(set(&["127.0.0.1:1", "127.0.0.1:2"])).await;
        let snap = b.snapshot.borrow().clone();
        let (fast, slow) = (&snap.endpoints[0], &snap.endpoints[1]);
        let now = Instant::now();
        fast.lock_ewma().observe(Duration::from_millis(1), now);
        slow.lock_ewma().observe(Duration::from_millis(200), now);
        let picks = (0..1000)
            .filter(|_| b.p2c(&snap.endpoints, None).addr == fast.addr)
            .count();
        // 1 ms against 200 ms: the faster one wins about 200 times in 201.
        assert!(picks > 970, "{picks}");
    }

    #[tokio::test]
    async fn tries_unmeasured_endpoints_before_comparing() {
        let (b, _tx) = balancer(set(&["127.0.0.1:1", "127.0.0.1:2"])).await;
        let snap = b.snapshot.borrow().clone();
        snap.endpoints[0].dispatch().done();
        // The other endpoint has never answered: it is tried next, whatever the estimates.
        assert_eq!(b.p2c(&snap.endpoints, None).addr.port(), 2);
    }

    #[tokio::test]
    async fn spreads_over_equal_endpoints_and_skips_backed_off_ones() {
        let (b, _tx) = balancer(set(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])).await;
        let snap = b.snapshot.borrow().clone();
        let now = Instant::now();
        for e in &snap.endpoints {
            e.lock_ewma().observe(Duration::from_millis(5), now);
        }
        let mut counts = BTreeMap::new();
        for _ in 0..3000 {
            *counts
                .entry(b.p2c(&snap.endpoints, None).addr.port())
                .or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n > 700), "{counts:?}");

        b.connect_failed(&snap.endpoints[0]);
        for _ in 0..500 {
            assert_ne!(
                b.p2c(&snap.endpoints, None).addr.port(),
                1,
                "a backed-off endpoint is skipped"
            );
        }
        assert_eq!(b.pick_other(&snap.endpoints[1]).unwrap().addr.port(), 3);
    }

    /// While discovery has not answered, a request waits up to [`FAILFAST`], or its route's
    /// timeout when that ends first, and then fails as that timeout does.
    #[tokio::test(start_paused = true)]
    async fn a_route_timeout_ends_the_wait_for_discovery() {
        use tokio::time::Instant;
        let (_tx, rx) = watch::channel(Resolution::Pending);
        let b = Balancer::new("echo.default:8080".parse().unwrap(), rx, factory(), None);
        let limit = Duration::from_millis(300);
        let start = Instant::now();
        let route = Some((start + limit, route::Timeout::Backend(limit)));
        let failed = b.tries(false, route).await.err().unwrap();
        assert_eq!(failed.reason, ProxyErrorReason::BackendRequestTimeout);
        assert_eq!(start.elapsed(), limit);
        // A route timeout longer than the fail-fast bound leaves that bound in charge.
        let start = Instant::now();
        let late = Some((start + 2 * FAILFAST, route::Timeout::Request(2 * FAILFAST)));
        let failed = b.tries(false, late).await.err().unwrap();
        assert_eq!(failed.reason, ProxyErrorReason::NoEndpoints);
        assert_eq!(start.elapsed(), FAILFAST);
    }

    #[tokio::test]
    async fn follows_resolution_changes_and_keeps_endpoint_state() {
        let (b, tx) = balancer(set(&["127.0.0.1:1", "127.0.0.1:2"])).await;
        let first = b.snapshot.borrow().clone();
        first.endpoints[1]
            .lock_ewma()
            .observe(Duration::from_millis(500), Instant::now());
        tx.send_replace(set(&["127.0.0.1:2", "127.0.0.1:3"]));
        let mut rx = b.snapshot.clone();
        let snap = rx
            .wait_for(|s| s.endpoints.iter().any(|e| e.addr.port() == 3))
            .await
            .unwrap()
            .clone();
        let ports: Vec<u16> = snap.endpoints.iter().map(|e| e.addr.port()).collect();
        assert_eq!(ports, [2, 3]);
        assert!(
            Arc::ptr_eq(&snap.endpoints[0], &first.endpoints[1]),
            "a staying endpoint keeps its state"
        );

        tx.send_replace(Resolution::NoEndpoints { exists: false });
        rx.wait_for(|s| s.endpoints.is_empty()).await.unwrap();
        assert_eq!(
            b.pick().await.err().unwrap().reason,
            ProxyErrorReason::NoRoute
        );
        tx.send_replace(Resolution::NoEndpoints { exists: true });
        rx.wait_for(|s| s.resolution == Resolution::NoEndpoints { exists: true })
            .await
            .unwrap();
        assert_eq!(
            b.pick().await.err().unwrap().reason,
            ProxyErrorReason::NoEndpoints
        );
    }
}
