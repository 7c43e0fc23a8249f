//! Ferry's sidecar proxy: accepts the application's inbound and outbound traffic, detects
//! HTTP/1, HTTP/2 (gRPC) or opaque TCP, forwards it, and records Linkerd-compatible
//! metrics. Errors it makes itself are labelled (see [`errors`]).
//!
//! # Layout
//! - [`config`]: flags and the validated [`Config`].
//! - [`listener`]: listeners, the per-side context, the accept loop.
//! - [`serve`]: one connection: detection (with the server-speaks-first race), then dispatch.
//! - [`detect`]: protocol detection on the first bytes.
//! - [`http`], [`forward`], [`body`]: serving HTTP, forwarding requests, counting responses.
//! - [`tcp`]: opaque forwarding. [`connect`], [`backend`]: upstream connections and pools.
//! - [`upstream`], [`discover`], [`balance`]: where traffic goes; service discovery from
//!   the control plane (of names, and of redirected connections' original destinations);
//!   P2C/peak-EWMA balancing across endpoints.
//! - [`authz`]: inbound authorization: policies per port from the control plane, decided
//!   per connection or per request (JWTs, rate limits).
//! - [`errors`]: proxy-made responses. [`metrics`]: counters and the text format.
//! - [`admin`], [`state`]: the admin server and what `/state` reports.
//! - [`identity`], [`tls`], [`inbound_tls`]: the workload certificate and its renewal, mTLS
//!   configs and handshakes, and the inbound checks (terminate, pass on, refuse).
//! - [`trace`]: W3C/B3 propagation, spans of sampled requests, OTLP export.
//! - [`tap`]: live request events for `tap.Tap/Observe`, free while nobody taps.
//! - [`io`], [`orig_dst`]: byte-stream wrappers and `SO_ORIGINAL_DST`.
//! - [`init`]: the `ferry-proxy init` step that installs the iptables redirect rules.

pub mod admin;
pub mod authz;
pub mod backend;
pub mod balance;
pub mod body;
pub mod config;
pub mod connect;
pub mod detect;
pub mod discover;
pub mod errors;
pub mod forward;
pub mod h1;
pub mod h2_upstream;
pub mod head_copy;
pub mod http;
pub mod identity;
pub mod inbound_tls;
pub mod init;
pub mod io;
pub mod listener;
pub mod metrics;
pub mod orig_dst;
pub mod policy;
pub mod route;
pub mod serve;
pub mod splice;
pub mod state;
pub mod tap;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod upstream;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

pub use config::Config;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin::{Admin, LogControl},
    backend::Backends,
    balance::EndpointFactory,
    config::{Authority, UpstreamSpec},
    discover::Resolver,
    identity::Identity,
    listener::{ListenerKind, Side},
    metrics::{Direction, Registry, Tls},
    orig_dst::OrigDst,
    state::{Connections, ListenerState, ProxyState},
    upstream::Upstreams,
};

/// A listener address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding the {name} listener on {addr}")]
pub struct BindError {
    /// Which listener.
    pub name: String,
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The proxy's listeners, bound.
pub struct Listeners {
    inbound: TcpListener,
    outbound: TcpListener,
    admin: TcpListener,
    tap: TcpListener,
    upstreams: Vec<(UpstreamSpec, TcpListener)>,
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
        name: name.to_string(),
        addr,
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| BindError {
        name: name.to_string(),
        addr,
        source,
    })?;
    tracing::info!(listener = name, addr = %bound, "listener bound");
    Ok(listener)
}

impl Listeners {
    /// Binds every listener `config` names, logging each bound address.
    pub async fn bind(config: &Config) -> Result<Self, BindError> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            upstreams.push((
                u.clone(),
                bind(&format!("upstream {}", u.target), u.local).await?,
            ));
        }
        Ok(Self {
            inbound: bind("inbound", config.inbound_listen).await?,
            outbound: bind("outbound", config.outbound_listen).await?,
            admin: bind("admin", config.admin_listen).await?,
            tap: bind("tap", config.tap_listen).await?,
            upstreams,
        })
    }

    /// The inbound listener's address.
    pub fn inbound_addr(&self) -> SocketAddr {
        self.inbound
            .local_addr()
            .expect("bound listener has an address")
    }
    /// The generic outbound listener's address.
    pub fn outbound_addr(&self) -> SocketAddr {
        self.outbound
            .local_addr()
            .expect("bound listener has an address")
    }
    /// The admin server's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }
    /// The tap server's address.
    pub fn tap_addr(&self) -> SocketAddr {
        self.tap
            .local_addr()
            .expect("bound listener has an address")
    }
    /// The upstream listeners' addresses, in flag order.
    pub fn upstream_addrs(&self) -> Vec<SocketAddr> {
        self.upstreams
            .iter()
            .map(|(_, l)| l.local_addr().expect("bound listener has an address"))
            .collect()
    }
}

/// Runs the proxy on `listeners` until `shutdown` completes, then drains: stops accepting,
/// lets in-flight requests and connections finish within the grace period, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    log: Option<Arc<dyn LogControl>>,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::new(config.metrics));
    let taps = Arc::new(
        tap::Taps::new(&config.pod_namespace, &config.pod_name).with_max(config.tap_max_concurrent),
    );
    let h1_stats = Arc::new(h1::Stats::default());
    let connections = Arc::new(Connections::default());
    let trace_stop = CancellationToken::new();
    let tracer = config.trace.as_ref().map(|t| {
        let (tracer, exporter) = trace::Tracer::new(
            t,
            &config.pod_namespace,
            &config.pod_name,
            trace_stop.clone(),
        );
        tracing::info!(collector = %t.collector, sampling = t.sampling, "tracing on");
        (tracer, tokio::spawn(exporter))
    });
    let (tracer, export_task) = match tracer {
        Some((t, task)) => (Some(t), Some(task)),
        None => (None, None),
    };
    let tracker = TaskTracker::new();
    let drain = CancellationToken::new();

    let mut listener_states = vec![
        ListenerState {
            kind: "inbound",
            addr: listeners.inbound_addr(),
            target: Some(config.inbound_forward.to_string()),
        },
        ListenerState {
            kind: "outbound",
            addr: listeners.outbound_addr(),
            target: None,
        },
        ListenerState {
            kind: "admin",
            addr: listeners.admin_addr(),
            target: None,
        },
        ListenerState {
            kind: "tap",
            addr: listeners.tap_addr(),
            target: None,
        },
    ];
    for (u, l) in &listeners.upstreams {
        listener_states.push(ListenerState {
            kind: "upstream",
            addr: l.local_addr().expect("bound listener has an address"),
            target: Some(u.target.to_string()),
        });
    }
    let own_listeners: Arc<[SocketAddr]> = listener_states.iter().map(|l| l.addr).collect();

    if let Some(reason) = config.identity_off_reason {
        tracing::warn!(
            reason,
            "identity is off: mTLS needs both the token file and the trust anchors"
        );
    }
    let (identity, identity_error) = match &config.identity {
        None => (None, None),
        Some(c) => match Identity::new(c.clone()) {
            Ok(identity) => (Some(identity), None),
            Err(error) => {
                tracing::error!(%error, "identity cannot start; the proxy stays not ready");
                (None, Some(error.to_string()))
            }
        },
    };
    let identity_task = identity.clone().map(|i| tokio::spawn(i.run()));
    let token = ferry_api::destination::context_token(&config.pod_namespace, "", &config.pod_name);
    let channel = match &config.destination_addr {
        None => None,
        Some(addr) => {
            let tls = identity.as_ref().and_then(|i| i.control_plane_tls());
            match discover::channel(addr, config.timeouts.connect, tls) {
                Ok(c) => Some(c),
                Err(error) => {
                    tracing::error!(%addr, %error, "invalid destination address; names resolve by DNS");
                    None
                }
            }
        }
    };
    let resolver = channel
        .clone()
        .map(|c| Arc::new(Resolver::new(c, token.clone())));
    let inbound_authz = inbound_policies(&config, channel.clone());
    if let Some(p) = &inbound_authz {
        // The application's own port is watched from the start, so its policy is there
        // before the first connection; other (redirected) ports on first use.
        p.port(config.inbound_forward.port());
    }
    let side = |direction: Direction, tls: Tls, resolver: Option<Arc<Resolver>>| {
        let factory = EndpointFactory {
            direction,
            tls: Tls::NOT_PROVIDED_BY_DISCOVERY,
            identity: identity.clone(),
            timeouts: config.timeouts,
            registry: registry.clone(),
            pools: Arc::default(),
        };
        let backends = Arc::new(Backends::new(direction, config.timeouts, registry.clone()));
        Arc::new(Side {
            direction,
            registry: registry.clone(),
            tls,
            upstreams: {
                let upstreams = Arc::new(Upstreams::new(backends, resolver, factory));
                Upstreams::spawn_eviction(&upstreams);
                upstreams
            },
            timeouts: config.timeouts,
            opaque_ports: config.opaque_ports.clone().into(),
            own_listeners: own_listeners.clone(),
            connections: connections.clone(),
            tracker: tracker.clone(),
            drain: drain.clone(),
            identity: identity.clone(),
            require_identity: direction == Direction::Inbound && config.inbound_require_identity,
            inbound_authz: match direction {
                Direction::Inbound => inbound_authz.clone(),
                Direction::Outbound => None,
            },
            taps: taps.clone(),
            h1: h1_stats.clone(),
            orig_dst: match direction {
                Direction::Outbound => config.outbound_orig_dst,
                Direction::Inbound => OrigDst::Socket,
            },
            inbound_forward_loopback: direction == Direction::Inbound
                && config.inbound_forward_loopback,
            trace: tracer.clone(),
        })
    };
    let inbound = side(Direction::Inbound, Tls::NO_TLS_FROM_REMOTE, None);
    let outbound = side(
        Direction::Outbound,
        Tls::NO_TLS_FROM_REMOTE,
        resolver.clone(),
    );
    if let Some(channel) = channel {
        Upstreams::enable_policies(&outbound.upstreams, channel, token);
    }

    let state = Arc::new(ProxyState {
        listeners: listener_states,
        connections,
        draining: Default::default(),
        upstreams: vec![
            ("inbound", inbound.upstreams.clone()),
            ("outbound", outbound.upstreams.clone()),
        ],
        resolver,
        inbound_policies: inbound_authz.clone(),
        started: Instant::now(),
        identity: identity.clone(),
        identity_error,
        taps: taps.clone(),
        h1: h1_stats,
        trace: tracer.clone(),
    });
    let admin_stop = CancellationToken::new();
    let admin = Arc::new(Admin {
        registry: registry.clone(),
        state: state.clone(),
        log,
    });
    let tap_loopback = listeners.tap_addr().ip().is_loopback();
    if identity.is_none() && !tap_loopback {
        tracing::warn!(addr = %listeners.tap_addr(), "the tap server is plaintext without identity: anyone who reaches this address can tap (header values stay redacted)");
    }
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        admin,
        admin_stop.clone().cancelled_owned(),
    ));

    let tap_access = tap::server::Access {
        identity: identity.clone(),
        authorized: config.tap_authorized.clone().into(),
        plaintext_unredacted: tap_loopback,
    };
    let tap_task = tokio::spawn(tap::server::serve(
        listeners.tap,
        taps,
        tap_access,
        admin_stop.clone().cancelled_owned(),
    ));

    let forward = inbound
        .upstreams
        .get(&Authority::from(config.inbound_forward));
    let mut accept_loops = vec![
        tokio::spawn(listener::accept_loop(
            listeners.inbound,
            ListenerKind::Inbound { forward },
            inbound,
        )),
        tokio::spawn(listener::accept_loop(
            listeners.outbound,
            ListenerKind::Outbound,
            outbound.clone(),
        )),
    ];
    for (u, l) in listeners.upstreams {
        let kind = ListenerKind::Upstream {
            upstream: outbound.upstreams.get(&u.target),
            authority: u.target.to_string().into(),
        };
        accept_loops.push(tokio::spawn(listener::accept_loop(
            l,
            kind,
            outbound.clone(),
        )));
    }

    shutdown.await;
    tracing::info!(grace_period = ?config.shutdown_grace_period, "draining");
    state.draining.store(true, Ordering::Relaxed);
    drain.cancel();
    for a in accept_loops {
        let _ = a.await;
    }
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace_period, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "grace period over; closing remaining connections"
        );
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    if let Some(task) = identity_task {
        task.abort();
    }
    let _ = tap_task.await;
    if let Some(task) = export_task {
        // Spans of the drained requests get a last export, bounded by the export timeout.
        trace_stop.cancel();
        if tokio::time::timeout(trace::EXPORT_TIMEOUT, task)
            .await
            .is_err()
        {
            tracing::debug!("the last trace export did not finish in time");
        }
    }
    tracing::info!("stopped");
}

/// The inbound side's authorization policies: from the control plane on `channel` when
/// there is one, with the configured default until it answers; `None` when nothing would
/// ever be refused (no control plane, default `all-unauthenticated`).
fn inbound_policies(
    config: &Config,
    channel: Option<tonic::transport::Channel>,
) -> Option<Arc<authz::feed::InboundPolicies>> {
    let default = config
        .default_inbound_policy
        .server(&config.cluster_networks);
    let default = match authz::compile(&default) {
        Ok(p) => p,
        Err(error) => {
            tracing::error!(%error, "default inbound policy does not compile; every client is admitted");
            return None;
        }
    };
    let workload = format!("{}:{}", config.pod_namespace, config.pod_name);
    let policies = authz::feed::InboundPolicies::new(default, channel.map(|c| (c, workload)));
    if policies.is_open() {
        return None;
    }
    tracing::info!(
        default = config.default_inbound_policy.name(),
        "inbound authorization on"
    );
    Some(Arc::new(policies))
}
