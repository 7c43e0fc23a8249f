//! The discovery seam: where the control plane learns what runs in the cluster.
//!
//! A backend keeps a [`ClusterState`] up to date and publishes each new one through a
//! `tokio::sync::watch` channel; readers clone the receiver and always see the latest
//! state. Two backends implement it: [`file::FileDiscovery`] (the local workloads file)
//! and [`kubernetes::KubeDiscovery`], which publishes the same state built from watches of
//! Services, EndpointSlices and Pods. Nothing above this module knows which one runs.
//!
//! - [`file`]: the workloads file, polled.
//! - [`kubernetes`]: watchers and reflector stores on the Kubernetes API, published
//!   coalesced; [`kube_build`] turns the stores' objects into a state (pure).

pub mod file;
pub mod kube_build;
pub mod kubernetes;

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

/// The backend `run` chose, as one type.
#[derive(Clone, Debug)]
pub enum AnyDiscovery {
    /// The workloads file.
    File(file::FileDiscovery),
    /// The Kubernetes API.
    Kubernetes(kubernetes::KubeDiscovery),
}

impl Discovery for AnyDiscovery {
    fn watch(&self) -> watch::Receiver<Arc<ClusterState>> {
        match self {
            Self::File(file) => file.watch(),
            Self::Kubernetes(kube) => kube.watch(),
        }
    }
}
