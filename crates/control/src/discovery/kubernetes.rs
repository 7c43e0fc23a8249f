//! The Kubernetes backend: `kube` watchers feed reflector stores for Namespaces,
//! Services, EndpointSlices, Pods, ReplicaSets and Jobs; a publisher task rebuilds the
//! [`ClusterState`] from the stores ([`super::kube_build`]) and publishes it.
//!
//! - **Nothing before the first full sync**: the state is published only once every
//!   store has finished its initial list ([`KubeDiscovery::synced`]).
//! - **In parts**: pods (with ReplicaSets and Jobs) and services (with EndpointSlices)
//!   are built separately and rebuilt only when their own objects changed; the state
//!   shares the untouched part's maps, so an endpoint turning ready does not rebuild
//!   10,000 pods ([`kube_build::assemble`]).
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
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tokio_stream::StreamExt;

use super::kube_build::{self, Domains, PodsPart, ServicesPart, Snapshot};
use super::kube_objects::{PodSummary, Trim};
use super::Discovery;
use crate::model::ClusterState;

/// The shortest time between two published states while events keep arriving.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(75);

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
    rebuilds: Arc<Rebuilds>,
    _tasks: Arc<Tasks>,
}

/// How often each part of the state was built, so a test (and whoever profiles) can tell
/// that an EndpointSlice change costs the services' part and not the 10,000 pods.
#[derive(Debug, Default)]
struct Rebuilds {
    pods: AtomicU64,
    services: AtomicU64,
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
    pods: Store<PodSummary>,
    replica_sets: Store<ReplicaSet>,
    jobs: Store<Job>,
}

impl Stores {
    /// The stores' objects: namespaces always, the others when their part is rebuilt.
    fn snapshot(&self, pods: bool, services: bool) -> Snapshot {
        let mut snapshot = Snapshot {
            namespaces: self.namespaces.state(),
            ..Snapshot::default()
        };
        if pods {
            snapshot.pods = self.pods.state();
            snapshot.replica_sets = self.replica_sets.state();
            snapshot.jobs = self.jobs.state();
        }
        if services {
            snapshot.services = self.services.state();
            snapshot.endpoint_slices = self.endpoint_slices.state();
        }
        snapshot
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
        let generations = Generations::default();
        let (pods, services, namespaces) =
            (&generations.pods, &generations.services, &Arc::default());
        let stores = Stores {
            namespaces: start(&client, &changed, namespaces, &mut reflect),
            services: start(&client, &changed, services, &mut reflect),
            endpoint_slices: start(&client, &changed, services, &mut reflect),
            pods: start(&client, &changed, pods, &mut reflect),
            replica_sets: start(&client, &changed, pods, &mut reflect),
            jobs: start(&client, &changed, pods, &mut reflect),
        };
        let published = Arc::new(AtomicU64::new(0));
        let rebuilds = Arc::new(Rebuilds::default());
        let publisher = Publisher {
            published: published.clone(),
            rebuilds: rebuilds.clone(),
            stores,
            changed,
            generations,
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
            rebuilds,
            _tasks: Arc::new(Tasks(tasks)),
        }
    }

    /// How many distinct states have been published so far (to check coalescing).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Returns once the first complete state has been published.
    /// How many times the pods' part and the services' part of the state were built.
    pub fn rebuilds(&self) -> (u64, u64) {
        let r = &self.rebuilds;
        (
            r.pods.load(Ordering::Relaxed),
            r.services.load(Ordering::Relaxed),
        )
    }

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

/// Counts events per part of the state, so the publisher rebuilds only the parts whose
/// objects changed.
#[derive(Default)]
struct Generations {
    /// Pods, ReplicaSets, Jobs.
    pods: Arc<AtomicU64>,
    /// Services, EndpointSlices.
    services: Arc<AtomicU64>,
}

/// Starts a reflector for `K` across all namespaces; every event counts in `generation`
/// and wakes the publisher.
fn start<K>(
    client: &Client,
    changed: &Arc<Notify>,
    generation: &Arc<AtomicU64>,
    spawn: &mut impl FnMut(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Trim + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let generation = generation.clone();
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        // Keep only what the state is built from: the stores stay small at any scale.
        .modify(Trim::trim)
        .reflect(writer);
    spawn(Box::pin(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    generation.fetch_add(1, Ordering::Release);
                    changed.notify_one();
                }
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
    generations: Generations,
    tx: Weak<watch::Sender<Arc<ClusterState>>>,
    domains: Domains,
    coalesce: Duration,
    synced: watch::Sender<bool>,
    published: Arc<AtomicU64>,
    rebuilds: Arc<Rebuilds>,
}

impl Publisher {
    async fn run(self) {
        self.stores.ready().await;
        // Each part as last built, and the generation it was built at.
        let mut pods: (Option<u64>, PodsPart) = Default::default();
        let mut services: (Option<u64>, ServicesPart) = Default::default();
        loop {
            // Generations first: an event after this is in the stores read below, or
            // makes the next round build again.
            let pods_gen = Some(self.generations.pods.load(Ordering::Acquire));
            let services_gen = Some(self.generations.services.load(Ordering::Acquire));
            let snapshot = self
                .stores
                .snapshot(pods.0 != pods_gen, services.0 != services_gen);
            if pods.0 != pods_gen {
                pods = (pods_gen, kube_build::pods_part(&snapshot));
                self.rebuilds.pods.fetch_add(1, Ordering::Relaxed);
            }
            if services.0 != services_gen {
                services = (services_gen, kube_build::services_part(&snapshot));
                self.rebuilds.services.fetch_add(1, Ordering::Relaxed);
            }
            let state =
                kube_build::assemble(&self.domains, &snapshot.namespaces, &pods.1, &services.1);
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
