//! The Kubernetes backend: `kube` watchers feed reflector stores for Namespaces,
//! Services, EndpointSlices, Pods, ReplicaSets and Jobs; a publisher task rebuilds the
//! [`ClusterState`] from the stores ([`super::kube_build`]) and publishes it.
//!
//! - **Nothing before the first full sync**: the state is published only once every
//!   store has finished its initial list ([`KubeDiscovery::synced`]).
//! - **Coalesced**: a burst of events (the initial list of 10,000 pods, churn) produces
//!   at most one new state per [`DEFAULT_COALESCE`]; an unchanged rebuild is not fanned
//!   out.
//! - **Resyncs keep what is known**: after an API-server restart or a watch `410 Gone`
//!   the watcher re-lists; the reflector swaps the new list in only once it is complete
//!   (`InitDone`), so a partial re-list is never published and known endpoints stay
//!   published in between. Watch errors are logged and retried with backoff.
//!
//! ServiceAccounts are not watched: a pod's `spec.serviceAccountName` is all the model
//! needs, and identity asks TokenReview about the token itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tokio_stream::StreamExt;

use super::kube_build::{self, Domains, Snapshot};
use super::Discovery;
use crate::model::ClusterState;

/// The shortest time between two published states while events keep arriving.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(75);

/// The annotation `kubectl apply` copies the whole object into; never read, so dropped.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Where the Kubernetes client's configuration comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeSource {
    /// A kubeconfig file; in-cluster (or `$KUBECONFIG`) configuration when unset.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig instead of its current one.
    pub context: Option<String>,
}

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    /// The kubeconfig file could not be read or used.
    #[error("loading kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither in-cluster configuration nor a kubeconfig was found.
    #[error("finding the Kubernetes API (in-cluster or $KUBECONFIG)")]
    Infer(#[from] kube::config::InferConfigError),
    /// The configuration did not make a client (TLS, proxy...).
    #[error("building the Kubernetes client")]
    Client(#[from] kube::Error),
}

/// Builds a client from `source`: the file and context when given, else
/// [`kube::Config::infer`] (in-cluster service account, or `$KUBECONFIG`).
pub async fn client(source: &KubeSource) -> Result<Client, KubeClientError> {
    let options = KubeConfigOptions {
        context: source.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&source.kubeconfig, &source.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
        (None, None) => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Discovery from the Kubernetes API; its tasks stop when every clone is dropped.
#[derive(Clone)]
pub struct KubeDiscovery {
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
    synced: watch::Receiver<bool>,
    published: Arc<AtomicU64>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for KubeDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDiscovery").finish_non_exhaustive()
    }
}

struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct Stores {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    jobs: Store<Job>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            namespaces: self.namespaces.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            pods: self.pods.state(),
            replica_sets: self.replica_sets.state(),
            jobs: self.jobs.state(),
        }
    }

    /// Returns once every store has completed its first list (or a writer is gone).
    async fn ready(&self) {
        let _ = tokio::join!(
            self.namespaces.wait_until_ready(),
            self.services.wait_until_ready(),
            self.endpoint_slices.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.replica_sets.wait_until_ready(),
            self.jobs.wait_until_ready(),
        );
    }
}

impl KubeDiscovery {
    /// Starts watching through `client`, cluster-wide, publishing states named after
    /// `domains` at most once per `coalesce`.
    pub fn spawn(client: Client, domains: Domains, coalesce: Duration) -> Self {
        let initial = ClusterState {
            cluster_domain: domains.cluster_domain.clone(),
            trust_domain: domains.trust_domain.clone(),
            ..ClusterState::default()
        };
        let (tx, _) = watch::channel(Arc::new(initial));
        let tx = Arc::new(tx);
        let (synced_tx, synced) = watch::channel(false);
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let mut reflect = |task| tasks.push(tokio::spawn(task));
        let stores = Stores {
            namespaces: start(&client, &changed, &mut reflect),
            services: start(&client, &changed, &mut reflect),
            endpoint_slices: start(&client, &changed, &mut reflect),
            pods: start(&client, &changed, &mut reflect),
            replica_sets: start(&client, &changed, &mut reflect),
            jobs: start(&client, &changed, &mut reflect),
        };
        let published = Arc::new(AtomicU64::new(0));
        let publisher = Publisher {
            published: published.clone(),
            stores,
            changed,
            tx: Arc::downgrade(&tx),
            domains,
            coalesce,
            synced: synced_tx,
        };
        tasks.push(tokio::spawn(publisher.run()));
        Self {
            tx,
            synced,
            published,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// How many distinct states have been published so far (to check coalescing).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Returns once the first complete state has been published.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }
}

impl Discovery for KubeDiscovery {
    fn watch(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.tx.subscribe()
    }
}

/// Starts a reflector for `K` across all namespaces; every event wakes the publisher.
fn start<K>(
    client: &Client,
    changed: &Arc<Notify>,
    spawn: &mut impl FnMut(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object: &mut K| {
            // Never read, and the bulk of many objects: keep the stores small.
            object.managed_fields_mut().clear();
            object.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer);
    spawn(Box::pin(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    tracing::warn!(%kind, %error, "Kubernetes watch failed; retrying (known objects stay served)")
                }
            }
        }
    }));
    reader
}

struct Publisher {
    stores: Stores,
    changed: Arc<Notify>,
    tx: Weak<watch::Sender<Arc<ClusterState>>>,
    domains: Domains,
    coalesce: Duration,
    synced: watch::Sender<bool>,
    published: Arc<AtomicU64>,
}

impl Publisher {
    async fn run(self) {
        self.stores.ready().await;
        loop {
            let state = kube_build::build(&self.stores.snapshot(), &self.domains);
            let Some(tx) = self.tx.upgrade() else {
                return;
            };
            if !*self.synced.borrow() {
                tracing::info!(
                    namespaces = state.namespaces.len(),
                    instances = state.instances.len(),
                    services = state.services.len(),
                    "Kubernetes discovery synced"
                );
            }
            let sent = tx.send_if_modified(|current| {
                let changed = **current != state;
                if changed {
                    *current = Arc::new(state);
                }
                changed
            });
            if sent {
                self.published.fetch_add(1, Ordering::Relaxed);
            }
            drop(tx);
            self.synced.send_replace(true);
            tokio::time::sleep(self.coalesce).await;
            self.changed.notified().await;
        }
    }
}
