//! Rollouts on Kubernetes: `Rollout` resources (`ferry.io/v1alpha1`) watched with a
//! reflector store, each read and validated one by one (an invalid one is not run, and its
//! status says why), and each rollout's state kept in its resource's `status` (merge patches
//! of the status subresource), so that a restarted control plane resumes from it; its
//! transitions are published as Events regarding it ([`super::events`]); its Deployment
//! backends are fronted by Services the Lease holder applies ([`super::fronting_kube`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::rollout::{Rollout, RolloutStatus};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_stream::StreamExt;

use super::events::Publisher;
use super::spec::{self, RolloutDef};
use super::state::StateStore;
use super::{start, Clock, Lead, Running};
use crate::metrics::MetricsBackend;

/// The watched resource.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            ferry_api::rollout::GROUP,
            ferry_api::rollout::VERSION,
            ferry_api::rollout::KIND,
        ),
        "rollouts",
    )
}

type Key = (String, String);

/// The resources' status: read from the watch, written with merge patches.
#[derive(Clone)]
pub struct KubeState {
    client: Client,
    /// The last status each resource carried, as watched.
    saved: Arc<Mutex<BTreeMap<Key, RolloutStatus>>>,
    /// Bumped whenever `saved` changes.
    changed: Arc<watch::Sender<u64>>,
}

impl KubeState {
    /// Notified whenever a watched status changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The status the resource carried when last seen.
    pub fn load(&self, namespace: &str, name: &str) -> Option<RolloutStatus> {
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        saved.get(&(namespace.into(), name.into())).cloned()
    }

    /// Writes `status` (and a `Progressing` condition) to the resource's status.
    pub async fn save(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource());
        let patch = json!({"status": status_patch(status)});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::debug!(%namespace, %name, "rollout status written"),
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "cannot write a rollout's status")
            }
        }
    }
}

/// The status as a merge patch: absent optional fields are written as `null` (a merge patch
/// keeps what it does not name), with a `Progressing` condition for `kubectl wait`.
pub fn status_patch(status: &RolloutStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    for key in ["pausedMs", "analyzedMs"] {
        if value.get(key).is_none() {
            value[key] = Value::Null;
        }
    }
    let at = time::OffsetDateTime::from_unix_timestamp(status.transition_ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    value["conditions"] = json!([{
        "type": "Progressing",
        "status": if status.phase.is_final() { "False" } else { "True" },
        "reason": status.phase.as_str(),
        "message": status.reason,
        "lastTransitionTime": at,
    }]);
    value
}

/// Watches rollouts through `client`, waits for the first complete list (so that routes are
/// ready, from the saved status, before anything is served), then runs the controller —
/// advancing rollouts, and publishing their transitions as Events, only while this replica
/// holds the `lease` (when given; the Events name its holder identity as the instance).
pub async fn spawn<B: MetricsBackend + Clone>(
    client: Client,
    backend: B,
    clock: Clock,
    coalesce: Duration,
    lease: Option<super::lease::LeaseConfig>,
) -> Running {
    let ar = resource();
    let changed = Arc::new(Notify::new());
    let failed = Arc::new(Notify::new());
    let (store, watch_task) = reflect(&client, &ar, &changed, &failed);
    let state = KubeState {
        client: client.clone(),
        saved: Arc::default(),
        changed: Arc::new(watch::channel(0).0),
    };
    tracing::info!("waiting for the first list of rollouts");
    // A missing CRD fails the list: the rest of the control plane does not wait for it, and
    // rollouts start once the CRD appears (the watch retries).
    let listed = tokio::select! {
        ready = store.wait_until_ready() => ready.is_ok(),
        () = failed.notified() => false,
        () = tokio::time::sleep(Duration::from_secs(10)) => false,
    };
    if !listed {
        tracing::warn!("rollouts could not be listed (is the ferry.io Rollout CRD installed?); going on without them for now");
    }
    let reader_client = client.clone();
    let instance = lease
        .as_ref()
        .map_or_else(super::lease::own_identity, |l| l.identity.clone());
    let (events, events_task) = Publisher::spawn(client.clone(), store.clone(), instance);
    let mut reader = Reader {
        client,
        state: state.clone(),
        invalid: BTreeMap::new(),
    };
    let defs = reader.read(&store).await;
    tracing::info!(
        rollouts = defs.len(),
        "loaded rollouts from the Kubernetes API"
    );
    let (defs_tx, defs_rx) = watch::channel(Arc::new(defs));
    let fronting_defs = defs_rx.clone();
    let fronting_store = store.clone();
    let publisher = tokio::spawn(async move {
        loop {
            changed.notified().await;
            tokio::time::sleep(coalesce).await;
            let defs = reader.read(&store).await;
            defs_tx.send_if_modified(|current| {
                let differs = **current != defs;
                if differs {
                    *current = Arc::new(defs);
                }
                differs
            });
        }
    });
    let mut tasks = vec![watch_task, publisher, events_task];
    let leader = lease.map(|config| {
        let (leader, task) = super::lease::spawn(reader_client.clone(), config);
        tasks.push(task);
        leader
    });
    // Deployment backends: their Services, applied by the Lease holder.
    tasks.push(tokio::spawn(super::fronting_kube::run(
        reader_client,
        fronting_store,
        fronting_defs,
        leader.clone(),
    )));
    let lead = Lead {
        leader,
        events: Some(events),
    };
    start(
        defs_rx,
        StateStore::Kube(state),
        backend,
        clock,
        lead,
        tasks,
    )
    .await
}

fn reflect(
    client: &Client,
    ar: &ApiResource,
    changed: &Arc<Notify>,
    failed: &Arc<Notify>,
) -> (Store<DynamicObject>, tokio::task::JoinHandle<()>) {
    let failed = failed.clone();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let changed = changed.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    failed.notify_one();
                    tracing::warn!(
                        %error,
                        "Kubernetes watch of rollouts failed; retrying (is the ferry.io Rollout CRD installed?)"
                    )
                }
            }
        }
    });
    (reader, task)
}

/// Reads the store into definitions, noting each one's status and reporting invalid ones.
struct Reader {
    client: Client,
    state: KubeState,
    /// Why each invalid resource was refused, as last written (written again only when it
    /// changes).
    invalid: BTreeMap<Key, String>,
}

impl Reader {
    async fn read(&mut self, store: &Store<DynamicObject>) -> Vec<RolloutDef> {
        let mut objects = store.state();
        objects.sort_by_key(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()));
        let ar = resource();
        let mut defs = Vec::new();
        let mut saved = BTreeMap::new();
        let mut invalid = BTreeMap::new();
        for object in objects {
            let ns = object.metadata.namespace.clone().unwrap_or_default();
            let name = object.metadata.name.clone().unwrap_or_default();
            let key = (ns.clone(), name.clone());
            if let Some(status) = object
                .data
                .get("status")
                .and_then(|s| serde_json::from_value::<RolloutStatus>(s.clone()).ok())
            {
                saved.insert(key.clone(), status);
            }
            let mut value = serde_json::to_value(object.as_ref()).unwrap_or_default();
            value["apiVersion"] = json!(ar.api_version);
            value["kind"] = json!(ar.kind);
            let read = serde_json::from_value::<Rollout>(value)
                .map_err(|e| e.to_string())
                .and_then(spec::from_rollout);
            match read {
                Ok(def) => defs.push(def),
                Err(why) => {
                    if self.invalid.get(&key) != Some(&why) {
                        tracing::warn!(namespace = %ns, %name, reason = %why, "a Rollout is not valid; not running it");
                        self.refuse(&ns, &name, &why).await;
                    }
                    invalid.insert(key, why);
                }
            }
        }
        self.invalid = invalid;
        let differs = {
            let mut current = self.state.saved.lock().unwrap_or_else(|e| e.into_inner());
            let differs = *current != saved;
            *current = saved;
            differs
        };
        if differs {
            self.state.changed.send_modify(|n| *n += 1);
        }
        defs
    }

    async fn refuse(&self, namespace: &str, name: &str, why: &str) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource());
        let patch = json!({"status": {"conditions": [{
            "type": "Progressing", "status": "False", "reason": "Invalid", "message": why,
        }]}});
        if let Err(error) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(%namespace, %name, %error, "cannot write a rollout's status");
        }
    }
}
