//! The discovery seam: where the control plane learns what runs in the cluster.
//!
//! A backend keeps a [`ClusterState`] up to date and publishes each new one through a
//! `tokio::sync::watch` channel; readers clone the receiver and always see the latest
//! state. Two backends implement it: [`file::FileDiscovery`] (the local workloads file)
//! and, later, Kubernetes, which will publish the same state built from watches of
//! Services, EndpointSlices and Pods. Nothing above this module knows which one runs.
//!
//! How a Kubernetes backend fills the model (TODO(#8)):
//! - `Namespace` → [`ClusterState::namespaces`];
//! - `Pod` → an [`crate::model::Instance`]: owner resolved through its ReplicaSet to the
//!   Deployment (or the StatefulSet, DaemonSet, Job...), `spec.serviceAccountName`, and
//!   `meshed` when it carries a Ferry proxy;
//! - `Service` + its ready `EndpointSlice` endpoints → a [`crate::model::Service`] whose
//!   ports list `podIP:targetPort` endpoints, each naming its pod from `targetRef`;
//! - the cluster and trust domains from flags.
//!
//! It would keep its own `ClusterState`, apply watch events to it, and publish a new
//! `Arc` after each batch, as the file backend does after each edit.

pub mod file;

use std::sync::Arc;

use tokio::sync::watch;

use crate::model::ClusterState;

/// A source of cluster state.
pub trait Discovery: Clone + Send + Sync + 'static {
    /// Returns a receiver holding the latest state and notified on every change.
    ///
    /// The sender lives as long as the backend; a closed channel means discovery stopped,
    /// and readers keep serving the last state they saw.
    fn watch(&self) -> watch::Receiver<Arc<ClusterState>>;
}

/// A backend whose state changes only when told to: tests, and tools that compute a
/// state themselves.
#[derive(Clone, Debug)]
pub struct StaticDiscovery {
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
}

impl StaticDiscovery {
    /// Starts with `state`.
    pub fn new(state: ClusterState) -> Self {
        let (tx, _) = watch::channel(Arc::new(state));
        Self { tx: Arc::new(tx) }
    }

    /// Replaces the state, notifying readers if it differs.
    pub fn set(&self, state: ClusterState) {
        self.tx.send_if_modified(|current| {
            if **current == state {
                return false;
            }
            *current = Arc::new(state);
            true
        });
    }
}

impl Discovery for StaticDiscovery {
    fn watch(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.tx.subscribe()
    }
}
