//! Routes from the Kubernetes API: reflector stores of `HTTPRoute`, `GRPCRoute` (Gateway API
//! v1), `HTTPFault` and the authorization resources (`policy.ferry.io/v1alpha1` and
//! Linkerd's `policy.linkerd.io`, [`crate::authz::kubernetes`]), as discovery watches
//! Services; a
//! publisher task turns the stores into a [`RouteSet`] (coalesced) and writes each route's
//! status back.
//!
//! Objects are watched untyped (`DynamicObject`) and read one by one, so that one the
//! control plane cannot read (a field of a newer CRD, a bad value) marks that route not
//! accepted instead of failing the watch. Status: for every `parentRef` to a Service, a
//! `status.parents[]` entry of controller `ferry.io/mesh-controller` with `Accepted` and
//! `ResolvedRefs` (reasons `Accepted` / `NoMatchingParent` / `UnsupportedValue`, and
//! `ResolvedRefs` / `BackendNotFound` / `RefNotPermitted` / `InvalidKind`), written as a
//! merge patch of the status subresource that keeps other controllers' entries, and only
//! when what it says changed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_stream::StreamExt;

use super::gateway::{GrpcRoute, HttpFault, HttpRoute, ParentRef};
use super::{policy, validate, RouteSet, Routes};
use crate::model::{ClusterState, ObjectRef};

/// The controller name written in route status.
pub const CONTROLLER_NAME: &str = "ferry.io/mesh-controller";

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The watched resources. Services' Linkerd annotations come from discovery's watch of
/// Services (the cluster state keeps them), not a second one.
fn resources() -> [ApiResource; 3] {
    [
        resource(
            super::gateway::GATEWAY_GROUP,
            "v1",
            "HTTPRoute",
            "httproutes",
        ),
        resource(
            super::gateway::GATEWAY_GROUP,
            "v1",
            "GRPCRoute",
            "grpcroutes",
        ),
        resource(
            super::gateway::POLICY_GROUP,
            super::gateway::POLICY_VERSION,
            super::gateway::HTTP_FAULT_KIND,
            "httpfaults",
        ),
    ]
}

/// Watches routes through `client`; the tasks stop when the returned handle's last clone
/// (and the [`Routes`] it publishes to) is dropped.
pub fn spawn(
    client: Client,
    states: watch::Receiver<Arc<ClusterState>>,
    coalesce: Duration,
) -> Routes {
    let routes = Routes::default();
    let changed = Arc::new(Notify::new());
    let [http, grpc, faults] = resources();
    let mut tasks = Vec::new();
    let stores = [&http, &grpc, &faults].map(|ar| {
        let (store, task) = reflect(&client, ar, false, &changed);
        tasks.push(task);
        store
    });
    let policy = crate::authz::kubernetes::resources()
        .into_iter()
        .map(|ar| {
            let optional = crate::authz::kubernetes::optional(&ar);
            let (store, task) = reflect(&client, &ar, optional, &changed);
            tasks.push(task);
            (ar, store)
        })
        .collect();
    let publisher = Publisher {
        client,
        stores,
        policy,
        resources: [http, grpc, faults],
        changed,
        states,
        routes: Arc::downgrade(&routes.tx),
        coalesce,
    };
    tasks.push(tokio::spawn(publisher.run()));
    // The watches stop when the last clone of the routes is dropped.
    Routes {
        tx: routes.tx,
        _tasks: Some(Arc::new(AbortTasks(tasks))),
        _base: None,
    }
}

/// Background tasks aborted on drop.
pub struct AbortTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl std::fmt::Debug for AbortTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortTasks").finish_non_exhaustive()
    }
}

/// Whether a watch failed because the API server does not serve the resource: its CRD is
/// not installed.
fn not_served(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// Reflects `ar` into a store, waking `changed` on every event. The watch retries with
/// backoff; each failure is a warning, except that an `optional` resource whose CRD is
/// not installed is said once, at `info`, and then watched for quietly (the retries see
/// the CRD when it is installed).
fn reflect(
    client: &Client,
    ar: &ApiResource,
    optional: bool,
    changed: &Arc<Notify>,
) -> (Store<DynamicObject>, tokio::task::JoinHandle<()>) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let resource = format!("{}/{}", ar.api_version, ar.plural);
    let changed = changed.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut missing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if std::mem::take(&mut missing) {
                        tracing::info!(%resource, "now served; watching it");
                    }
                    changed.notify_one();
                }
                Err(error) if optional && not_served(&error) => {
                    if !std::mem::replace(&mut missing, true) {
                        tracing::info!(
                            %resource,
                            "not served (its CRD is not installed); watching for it"
                        );
                    }
                }
                Err(error) => tracing::warn!(
                    %resource,
                    %error,
                    "Kubernetes watch of routes failed; retrying (is the CRD installed?)"
                ),
            }
        }
    });
    (reader, task)
}

struct Publisher {
    client: Client,
    stores: [Store<DynamicObject>; 3],
    /// The authorization resources' stores ([`crate::authz::kubernetes`]).
    policy: Vec<(ApiResource, Store<DynamicObject>)>,
    resources: [ApiResource; 3],
    changed: Arc<Notify>,
    states: watch::Receiver<Arc<ClusterState>>,
    routes: std::sync::Weak<watch::Sender<Arc<RouteSet>>>,
    coalesce: Duration,
}

/// One stored route, read.
struct Read<T> {
    object: Arc<DynamicObject>,
    /// The typed route, when it could be read, validated and is supported.
    route: Result<T, String>,
}

/// Reads an object as `T`, its `apiVersion`/`kind` filled in from the watched resource.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    object: &DynamicObject,
    ar: &ApiResource,
) -> Result<T, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    value["apiVersion"] = json!(ar.api_version);
    value["kind"] = json!(ar.kind);
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Objects in `namespace/name` order, so each pass reads (and writes status) in a stable
/// order.
fn by_name(mut objects: Vec<Arc<DynamicObject>>) -> Vec<Arc<DynamicObject>> {
    objects.sort_by(|a, b| {
        let key = |o: &DynamicObject| (o.metadata.namespace.clone(), o.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    objects
}

fn checked<T>(
    route: Result<T, String>,
    check: impl Fn(&T) -> Vec<validate::FieldError>,
) -> Result<T, String> {
    let route = route?;
    let errors = check(&route);
    if errors.is_empty() {
        Ok(route)
    } else {
        Err(validate::Invalid(errors).to_string())
    }
}

impl Publisher {
    async fn run(mut self) {
        loop {
            let state = self.states.borrow_and_update().clone();
            let [http_ar, grpc_ar, fault_ar] = &self.resources;
            let http: Vec<Read<HttpRoute>> = by_name(self.stores[0].state())
                .into_iter()
                .map(|object| {
                    let route = checked(read::<HttpRoute>(&object, http_ar), |r| {
                        let mut e = validate::http_route(r)
                            .err()
                            .map(|i| i.0)
                            .unwrap_or_default();
                        e.extend(policy::unsupported_http(r));
                        e
                    });
                    Read { object, route }
                })
                .collect();
            let grpc: Vec<Read<GrpcRoute>> = by_name(self.stores[1].state())
                .into_iter()
                .map(|object| {
                    let route = checked(read::<GrpcRoute>(&object, grpc_ar), |r| {
                        let mut e = validate::grpc_route(r)
                            .err()
                            .map(|i| i.0)
                            .unwrap_or_default();
                        e.extend(policy::unsupported_grpc(r));
                        e
                    });
                    Read { object, route }
                })
                .collect();
            let faults: Vec<HttpFault> = self.stores[2]
                .state()
                .into_iter()
                .filter_map(|object| match read::<HttpFault>(&object, fault_ar) {
                    Ok(f) if validate::http_fault(&f).is_ok() => Some(f),
                    Ok(_) | Err(_) => {
                        tracing::warn!(fault = ?object.metadata.name, "ignoring an invalid HTTPFault");
                        None
                    }
                })
                .collect();
            let services = state
                .services
                .iter()
                .filter(|(_, svc)| !svc.policy_annotations.is_empty())
                .map(|(key, svc)| (key.clone(), svc.policy_annotations.clone()))
                .collect();
            let mut set = RouteSet {
                http: http.iter().filter_map(|r| r.route.clone().ok()).collect(),
                grpc: grpc.iter().filter_map(|r| r.route.clone().ok()).collect(),
                faults,
                services,
                authz: crate::authz::kubernetes::policy_set(&self.policy),
            };
            // Store order is arbitrary; keep the set stable so unchanged reads do not fan out.
            set.http
                .sort_by(|a, b| super::order::route_order(&a.metadata, &b.metadata));
            set.grpc
                .sort_by(|a, b| super::order::route_order(&a.metadata, &b.metadata));
            set.faults
                .sort_by(|a, b| super::order::route_order(&a.metadata, &b.metadata));
            let Some(tx) = self.routes.upgrade() else {
                return;
            };
            tx.send_if_modified(|current| {
                let changed = **current != set;
                if changed {
                    *current = Arc::new(set);
                }
                changed
            });
            drop(tx);
            for r in &http {
                let backends = |route: &HttpRoute| {
                    policy::first_unresolved(
                        &state,
                        route.metadata.namespace.as_deref().unwrap_or_default(),
                        route
                            .spec
                            .rules
                            .iter()
                            .map(|rule| (&rule.backend_refs[..], &rule.filters[..])),
                    )
                };
                let problem = r.route.as_ref().map(backends);
                self.write_status(http_ar, &r.object, &state, problem.as_ref())
                    .await;
            }
            for r in &grpc {
                let backends = |route: &GrpcRoute| {
                    policy::first_unresolved(
                        &state,
                        route.metadata.namespace.as_deref().unwrap_or_default(),
                        route
                            .spec
                            .rules
                            .iter()
                            .map(|rule| (&rule.backend_refs[..], &rule.filters[..])),
                    )
                };
                let problem = r.route.as_ref().map(backends);
                self.write_status(grpc_ar, &r.object, &state, problem.as_ref())
                    .await;
            }
            // Not held while waiting: under pod churn discovery publishes a new state every
            // few milliseconds, and each one kept alive here is a whole copy of the cluster.
            drop(state);
            tokio::time::sleep(self.coalesce).await;
            tokio::select! {
                () = self.changed.notified() => {}
                changed = self.states.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Writes `object`'s status for its Service parents when it differs from what is there.
    /// `problem` is the route's first unresolved backend, or why it is not accepted.
    async fn write_status(
        &self,
        ar: &ApiResource,
        object: &DynamicObject,
        state: &ClusterState,
        problem: Result<&Option<(&'static str, String)>, &&String>,
    ) {
        let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
            return;
        };
        let parents: Vec<ParentRef> = object
            .data
            .get("spec")
            .and_then(|s| s.get("parentRefs"))
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default();
        let generation = object.metadata.generation.unwrap_or(0);
        let existing: Vec<Value> = object
            .data
            .get("status")
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ours: Vec<Value> = parents
            .iter()
            .filter(|p| p.is_service())
            .map(|p| {
                let conditions = conditions(p, ns, state, problem, generation);
                let previous = existing.iter().find(|e| {
                    e["controllerName"] == CONTROLLER_NAME && same_parent(&e["parentRef"], p)
                });
                parent_status(p, conditions, previous)
            })
            .collect();
        if ours.is_empty() {
            return;
        }
        let mine = |e: &&Value| e["controllerName"] == CONTROLLER_NAME;
        let before: Vec<&Value> = existing.iter().filter(mine).collect();
        if before.len() == ours.len() && before.iter().zip(&ours).all(|(a, b)| **a == *b) {
            return;
        }
        let mut parents: Vec<Value> = existing.iter().filter(|e| !mine(e)).cloned().collect();
        parents.extend(ours);
        let patch = json!({"status": {"parents": parents}});
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::debug!(kind = %ar.kind, %ns, %name, "route status written"),
            Err(error) => {
                tracing::warn!(kind = %ar.kind, %ns, %name, %error, "cannot write route status")
            }
        }
    }
}

fn same_parent(written: &Value, p: &ParentRef) -> bool {
    serde_json::from_value::<ParentRef>(written.clone()).is_ok_and(|w| w == *p)
}

/// `(type, status, reason, message)` of a route's conditions for parent `p`.
fn conditions(
    p: &ParentRef,
    route_ns: &str,
    state: &ClusterState,
    problem: Result<&Option<(&'static str, String)>, &&String>,
    generation: i64,
) -> Vec<(&'static str, bool, &'static str, String, i64)> {
    let svc = ObjectRef::new(p.namespace.as_deref().unwrap_or(route_ns), &p.name);
    let parent = state.services.get(&svc);
    let accepted = match (&problem, parent) {
        (Err(why), _) => (false, "UnsupportedValue", why.to_string()),
        (_, None) => (
            false,
            "NoMatchingParent",
            format!("service {svc} not found"),
        ),
        (_, Some(s)) => match p.port.and_then(|port| u16::try_from(port).ok()) {
            Some(port) if !s.ports.contains_key(&port) => (
                false,
                "NoMatchingParent",
                format!("service {svc} has no port {port}"),
            ),
            _ => (true, "Accepted", String::new()),
        },
    };
    let resolved = match problem {
        Ok(Some((reason, message))) => (false, *reason, message.clone()),
        // A route that cannot be read has no references to speak of.
        Err(_) => (
            false,
            "UnsupportedValue",
            "the route is not accepted".to_string(),
        ),
        Ok(None) => (true, "ResolvedRefs", String::new()),
    };
    vec![
        ("Accepted", accepted.0, accepted.1, accepted.2, generation),
        (
            "ResolvedRefs",
            resolved.0,
            resolved.1,
            resolved.2,
            generation,
        ),
    ]
}

/// One `status.parents[]` entry; a condition that did not change keeps its
/// `lastTransitionTime`.
fn parent_status(
    p: &ParentRef,
    conditions: Vec<(&'static str, bool, &'static str, String, i64)>,
    previous: Option<&Value>,
) -> Value {
    let now =
        serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null);
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|(kind, ok, reason, message, generation)| {
            let status = if ok { "True" } else { "False" };
            let before = previous
                .and_then(|prev| prev["conditions"].as_array())
                .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
            let mut condition = json!({
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now,
            });
            if let Some(before) = before {
                if before["status"] == status {
                    condition["lastTransitionTime"] = before["lastTransitionTime"].clone();
                }
            }
            condition
        })
        .collect();
    json!({
        "parentRef": p,
        "controllerName": CONTROLLER_NAME,
        "conditions": conditions,
    })
}
