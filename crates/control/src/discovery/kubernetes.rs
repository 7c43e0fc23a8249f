//! The Kubernetes backend: `kube` watchers feed reflector stores for Namespaces,
//! Services, EndpointSlices, Pods, ReplicaSets and Jobs; a publisher task rebuilds the
//! [`ClusterState`] from the stores ([`super::kube_build`]) and publishes it.
//!
//! - **Nothing before the first full sync**: the state is published only once every
//!   store has finished its initial list ([`KubeDiscovery::synced`]).
//! - **Object by object**: each watch notes which objects its events named; the
//!   publisher reads just those from the stores and updates the pods' part (Pods,
//!   ReplicaSets, Jobs) or the services' part (Services, EndpointSlices) with them, so a
//!   pod event costs that pod and an EndpointSlice event its one Service, never the
//!   10,000 pods or the 2,000 Services ([`kube_build::PodsPart::update`]). The parts'
//!   maps are persistent: a new state shares all but the changed entries with the last
//!   one, so under churn the process never holds two whole copies of the cluster. A
//!   (re-)list brings the part to the complete new list in the same way
//!   ([`kube_build::PodsPart::resync`]).
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

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
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

use super::kube_build::{
    self, Changed, Domains, PodChanges, PodsPart, ServiceChanges, ServicesPart, Snapshot,
};
use super::kube_objects::{PodSummary, Trim};
use super::Discovery;
use crate::model::{ClusterState, ObjectRef};

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

/// How often each part of the state was updated and how many objects that took, so a
/// test (and whoever profiles) can tell that an EndpointSlice change costs one Service
/// and not the 10,000 pods.
#[derive(Debug, Default)]
struct Rebuilds {
    pods: AtomicU64,
    services: AtomicU64,
    pods_applied: AtomicU64,
    services_built: AtomicU64,
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
        let pending = Pendings::default();
        let p = &pending;
        let stores = Stores {
            namespaces: start(&client, &changed, None, &mut reflect),
            services: start(&client, &changed, Some(&p.services), &mut reflect),
            endpoint_slices: start(&client, &changed, Some(&p.endpoint_slices), &mut reflect),
            pods: start(&client, &changed, Some(&p.pods), &mut reflect),
            replica_sets: start(&client, &changed, Some(&p.replica_sets), &mut reflect),
            jobs: start(&client, &changed, Some(&p.jobs), &mut reflect),
        };
        let published = Arc::new(AtomicU64::new(0));
        let rebuilds = Arc::new(Rebuilds::default());
        let publisher = Publisher {
            published: published.clone(),
            rebuilds: rebuilds.clone(),
            stores,
            changed,
            pending,
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

    /// How many times the pods' part and the services' part of the state were updated.
    pub fn rebuilds(&self) -> (u64, u64) {
        let r = &self.rebuilds;
        (
            r.pods.load(Ordering::Relaxed),
            r.services.load(Ordering::Relaxed),
        )
    }

    /// How many pods were applied to the state, and how many Services were built, so far:
    /// a change costs the objects it touched.
    pub fn applied(&self) -> (u64, u64) {
        let r = &self.rebuilds;
        (
            r.pods_applied.load(Ordering::Relaxed),
            r.services_built.load(Ordering::Relaxed),
        )
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

/// The objects of one kind that events named since the publisher last looked.
#[derive(Debug)]
struct Pending {
    /// Namespace and name of each object an event added, changed or deleted.
    keys: HashSet<ObjectRef>,
    /// The whole list was read (first sync, re-list): every object counts.
    relist: bool,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            keys: HashSet::new(),
            relist: true,
        }
    }
}

/// What each watch (but the Namespaces') has seen change.
#[derive(Default)]
struct Pendings {
    services: Arc<Mutex<Pending>>,
    endpoint_slices: Arc<Mutex<Pending>>,
    pods: Arc<Mutex<Pending>>,
    replica_sets: Arc<Mutex<Pending>>,
    jobs: Arc<Mutex<Pending>>,
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // Nothing panics while holding the lock; a poisoned one still holds valid keys.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Notes the object an event names, or that a list completed.
fn note<K: Resource>(pending: &Mutex<Pending>, event: &watcher::Event<K>) {
    match event {
        watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
            let meta = object.meta();
            if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
                lock(pending).keys.insert(ObjectRef::new(namespace, name));
            }
        }
        // The reflector swaps the new list in at `InitDone`; until then nothing changed.
        watcher::Event::InitDone => lock(pending).relist = true,
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
}

/// What changed of one kind since the last look.
enum Taken<K> {
    /// The list was read again: compare everything.
    Relist,
    /// These objects, as the store holds them now (`None`: deleted).
    Objects(Changed<K>),
}

fn take<K>(pending: &Mutex<Pending>, store: &Store<K>) -> Taken<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let keys = {
        let mut pending = lock(pending);
        if std::mem::take(&mut pending.relist) {
            pending.keys.clear();
            return Taken::Relist;
        }
        std::mem::take(&mut pending.keys)
    };
    let objects = keys.into_iter().map(|key| {
        let at = reflector::ObjectRef::new(&key.name).within(&key.namespace);
        let object = store.get(&at);
        (key, object)
    });
    Taken::Objects(objects.collect())
}

/// Starts a reflector for `K` across all namespaces; every event is noted in `pending`
/// (when given) and wakes the publisher.
fn start<K>(
    client: &Client,
    changed: &Arc<Notify>,
    pending: Option<&Arc<Mutex<Pending>>>,
    spawn: &mut impl FnMut(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Trim + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let pending = pending.cloned();
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
                Ok(event) => {
                    if let Some(pending) = &pending {
                        note(pending, &event);
                    }
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
    pending: Pendings,
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
        let mut pods = PodsPart::default();
        let mut services = ServicesPart::default();
        loop {
            self.update_pods(&mut pods);
            self.update_services(&mut services);
            let namespaces = self.stores.namespaces.state();
            let state = kube_build::assemble(&self.domains, &namespaces, &pods, &services);
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

    /// Applies the Pods, ReplicaSets and Jobs that changed (all of them after a list).
    fn update_pods(&self, part: &mut PodsPart) {
        let (p, s) = (&self.pending, &self.stores);
        let taken = (
            take(&p.pods, &s.pods),
            take(&p.replica_sets, &s.replica_sets),
            take(&p.jobs, &s.jobs),
        );
        let applied = match taken {
            (Taken::Objects(pods), Taken::Objects(replica_sets), Taken::Objects(jobs)) => {
                if pods.is_empty() && replica_sets.is_empty() && jobs.is_empty() {
                    return;
                }
                part.update(PodChanges {
                    pods,
                    replica_sets,
                    jobs,
                })
            }
            // A list was read again: the stores hold what the keys named, and the rest.
            _ => part.resync(&s.snapshot(true, false)),
        };
        self.rebuilds.pods.fetch_add(1, Ordering::Relaxed);
        let applied = applied as u64;
        self.rebuilds
            .pods_applied
            .fetch_add(applied, Ordering::Relaxed);
    }

    /// Applies the Services and EndpointSlices that changed (all of them after a list).
    fn update_services(&self, part: &mut ServicesPart) {
        let (p, s) = (&self.pending, &self.stores);
        let taken = (
            take(&p.services, &s.services),
            take(&p.endpoint_slices, &s.endpoint_slices),
        );
        let built = match taken {
            (Taken::Objects(services), Taken::Objects(endpoint_slices)) => {
                if services.is_empty() && endpoint_slices.is_empty() {
                    return;
                }
                part.update(ServiceChanges {
                    services,
                    endpoint_slices,
                })
            }
            _ => part.resync(&s.snapshot(false, true)),
        };
        self.rebuilds.services.fetch_add(1, Ordering::Relaxed);
        let built = built as u64;
        self.rebuilds
            .services_built
            .fetch_add(built, Ordering::Relaxed);
    }
}
