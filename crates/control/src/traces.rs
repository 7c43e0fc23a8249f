//! Traces (`docs/tracing.md`): an OTLP/gRPC receiver ([`receiver`]) that keeps the most
//! recent traces in memory ([`store`]) and may forward them to a real collector as well
//! ([`forward`]); [`api`] lists and shows them on the public API.

pub mod api;
pub mod forward;
pub mod receiver;
pub mod store;

use std::net::SocketAddr;

use forward::{ForwardConfig, Forwarder};
use store::{StoreLimits, TraceStore};

/// Limits of the OTLP receiver's listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// The largest export request decoded (OpenTelemetry collectors default to 4 MiB).
    pub max_message_bytes: usize,
    /// Export requests decoded at once, over all connections; more wait their turn.
    pub max_concurrent_exports: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_exports: 8,
            max_concurrent_streams: 16,
            max_connections: 1024,
        }
    }
}

/// What the control plane does with traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// Where the OTLP receiver listens; off without it.
    pub listen: Option<SocketAddr>,
    /// The receiver's limits.
    pub limits: ReceiverLimits,
    /// Whether received spans are kept in memory (off: forwarded only).
    pub keep: bool,
    /// The store's limits.
    pub store: StoreLimits,
    /// A collector spans are forwarded to as well.
    pub forward: Option<ForwardConfig>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            listen: None,
            limits: ReceiverLimits::default(),
            keep: true,
            store: StoreLimits::default(),
            forward: None,
        }
    }
}

/// Starts the forwarder when one is configured; returns the receiver to serve and the
/// forwarding task (aborted by the caller at shutdown).
pub fn receiver(
    config: &TraceConfig,
    store: &TraceStore,
) -> Result<(receiver::Receiver, Option<tokio::task::JoinHandle<()>>), tonic::transport::Error> {
    let (forwarder, task) = match &config.forward {
        Some(forward) => {
            let (forwarder, task) = Forwarder::spawn(forward, store.counters().clone())?;
            (Some(forwarder), Some(task))
        }
        None => (None, None),
    };
    let receiver = receiver::Receiver::new(store.clone(), config.keep, forwarder);
    Ok((receiver, task))
}
