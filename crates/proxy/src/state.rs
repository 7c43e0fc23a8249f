//! What the proxy is doing right now, for `/state`: its listeners, open connections and
//! known backends. Connections register on accept and leave on drop.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use serde::Serialize;

use crate::{
    backend::BackendState,
    balance::{Balancer, EndpointState},
    discover::{NameState, Resolver},
    identity::{Identity, IdentityState},
    metrics::Protocol,
    tap::{TapState, Taps},
    upstream::Upstreams,
};

/// One listener as `/state` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ListenerState {
    /// `inbound`, `outbound`, `upstream` or `admin`.
    pub kind: &'static str,
    /// The bound address.
    pub addr: SocketAddr,
    /// Where its traffic goes, when fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

struct ConnEntry {
    listener: &'static str,
    local: SocketAddr,
    peer: SocketAddr,
    target: Option<Arc<str>>,
    protocol: Option<Protocol>,
    opened: Instant,
}

/// The open connections of one proxy.
#[derive(Default)]
pub struct Connections {
    next: AtomicU64,
    map: Mutex<HashMap<u64, ConnEntry>>,
}

/// Keeps a connection listed until dropped.
pub struct ConnGuard {
    id: u64,
    conns: Arc<Connections>,
}

impl Connections {
    /// Lists a newly accepted connection.
    pub fn register(
        self: &Arc<Self>,
        listener: &'static str,
        local: SocketAddr,
        peer: SocketAddr,
        target: Option<Arc<str>>,
    ) -> ConnGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = ConnEntry {
            listener,
            local,
            peer,
            target,
            protocol: None,
            opened: Instant::now(),
        };
        self.lock().insert(id, entry);
        ConnGuard {
            id,
            conns: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ConnEntry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConnGuard {
    /// Records what detection decided.
    pub fn set_protocol(&self, protocol: Protocol) {
        if let Some(e) = self.conns.lock().get_mut(&self.id) {
            e.protocol = Some(protocol);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
    }
}

/// One open connection as `/state` shows it.
#[derive(Serialize)]
struct ConnState {
    id: u64,
    listener: &'static str,
    local: SocketAddr,
    peer: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    protocol: Option<&'static str>,
    age_ms: u128,
}

/// Everything `/state` reports.
pub struct ProxyState {
    /// The listeners, as bound.
    pub listeners: Vec<ListenerState>,
    /// Open connections.
    pub connections: Arc<Connections>,
    /// Set once `SIGTERM` (or the shutdown future) starts the drain.
    pub draining: AtomicBool,
    /// Upstreams of each direction.
    pub upstreams: Vec<(&'static str, Arc<Upstreams>)>,
    /// Discovery, when there is a control plane.
    pub resolver: Option<Arc<Resolver>>,
    /// Inbound authorization policies, when on.
    pub inbound_policies: Option<Arc<crate::authz::feed::InboundPolicies>>,
    /// When the proxy started.
    pub started: Instant,
    /// The proxy's identity, when identity is on.
    pub identity: Option<Arc<Identity>>,
    /// Why identity is on but could not be set up (the proxy stays not ready).
    pub identity_error: Option<String>,
    /// Active taps.
    pub taps: Arc<Taps>,
    /// What the HTTP/1.1 fast path did.
    pub h1: Arc<crate::h1::Stats>,
    /// The tracer, when tracing is on (its export counters are metrics).
    pub trace: Option<Arc<crate::trace::Tracer>>,
}

impl ProxyState {
    /// Why the proxy is not ready, if it is not: draining, or identity on without a
    /// certificate yet.
    pub fn not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("draining".into());
        }
        if let Some(e) = &self.identity_error {
            return Some(format!("identity: {e}"));
        }
        match &self.identity {
            Some(id) if !id.is_ready() => Some(format!(
                "identity: no valid certificate for {} yet (see /state)",
                id.name()
            )),
            _ => None,
        }
    }
}

/// The `/state` document.
#[derive(Serialize)]
struct StateDoc {
    version: &'static str,
    git_sha: &'static str,
    uptime_seconds: u64,
    draining: bool,
    listeners: Vec<ListenerState>,
    connections: Vec<ConnState>,
    backends: HashMap<&'static str, Vec<BackendState>>,
    destinations: Vec<DestinationState>,
    /// Inbound ports' policy streams (`name` is `0.0.0.0:<port>`; `state` is `pending` or
    /// `server`).
    inbound_policies: Vec<NameState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<IdentityState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_error: Option<String>,
    tap: TapState,
    http1: crate::h1::StatsState,
}

/// A service name, or a looked-up original destination, as `/state` shows it.
#[derive(Serialize)]
struct DestinationState {
    #[serde(flatten)]
    discovery: NameState,
    endpoints: Vec<EndpointState>,
}

impl ProxyState {
    fn destinations(&self) -> Vec<DestinationState> {
        let Some(resolver) = &self.resolver else {
            return Vec::new();
        };
        let balancers: HashMap<String, Arc<Balancer>> = self
            .upstreams
            .iter()
            .flat_map(|(_, u)| u.balancers())
            .map(|b| (b.name().to_string(), b))
            .collect();
        resolver
            .state()
            .into_iter()
            .map(|discovery| DestinationState {
                endpoints: balancers
                    .get(&discovery.name)
                    .map(|b| b.state())
                    .unwrap_or_default(),
                discovery,
            })
            .collect()
    }

    /// Renders the `/state` document.
    pub fn to_json(&self) -> String {
        let mut connections: Vec<ConnState> = self
            .connections
            .lock()
            .iter()
            .map(|(&id, e)| ConnState {
                id,
                listener: e.listener,
                local: e.local,
                peer: e.peer,
                target: e.target.as_deref().map(str::to_owned),
                protocol: e.protocol.map(Protocol::as_str),
                age_ms: e.opened.elapsed().as_millis(),
            })
            .collect();
        connections.sort_by_key(|c| c.id);
        let doc = StateDoc {
            version: ferry_api::version::VERSION,
            git_sha: ferry_api::version::GIT_SHA,
            uptime_seconds: self.started.elapsed().as_secs(),
            draining: self.draining.load(Ordering::Relaxed),
            listeners: self.listeners.clone(),
            connections,
            backends: self
                .upstreams
                .iter()
                .map(|(d, u)| (*d, u.backends.state()))
                .collect(),
            destinations: self.destinations(),
            inbound_policies: self
                .inbound_policies
                .as_ref()
                .map(|p| p.state())
                .unwrap_or_default(),
            identity: self.identity.as_ref().map(|i| i.state()),
            identity_error: self.identity_error.clone(),
            tap: self.taps.state(),
            http1: self.h1.state(),
        };
        serde_json::to_string_pretty(&doc).expect("state serializes")
    }
}
