//! Where traffic goes: one address, or a service name balanced across the endpoints the
//! control plane reports. [`Upstreams`] decides which, once per target, for a side.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
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

    /// The balancers, for `/state`.
    pub fn balancers(&self) -> Vec<Arc<Balancer>> {
        let mut out: Vec<_> = self
            .balancers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        out.sort_by_key(|b| b.name().to_string());
        out
    }
}
