//! The Services fronting rollouts' Deployment backends on Kubernetes: the Lease holder
//! reads each Deployment's `spec.selector.matchLabels` and server-side applies the Service
//! ([`fronting::FIELD_MANAGER`], owned by the Rollout, so that it is garbage-collected with
//! it), then says how it went in the Rollout's `status.backends`. Discovery watches the
//! Service like any other; the generated route names it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::fronting::{self, Fronting, FIELD_MANAGER, ROLLOUT_LABEL};
use super::kubernetes::resource;
use super::spec::RolloutDef;

/// How often the Services are applied again without a change of the rollouts: a
/// Deployment created (or whose selector changed) after its rollout is picked up.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Why a Deployment backend's Service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FrontingError {
    /// The Deployment does not exist.
    #[error("deployment {namespace}/{name} not found")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Deployment selects its pods with `matchExpressions`, which a Service cannot.
    #[error("deployment {namespace}/{name} selects its pods with spec.selector.matchExpressions; a Service selects by labels only (use matchLabels)")]
    MatchExpressions {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Deployment has no `matchLabels`.
    #[error("deployment {namespace}/{name} has no spec.selector.matchLabels")]
    NoLabels {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Deployment or the rollout's Service could not be read.
    #[error("reading {what}")]
    Read {
        /// What was read (`deployment ns/name`).
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The Service could not be applied.
    #[error("applying service {namespace}/{name}")]
    Apply {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
}

/// The Service fronting `f`'s Deployment: its pods (the Deployment's `matchLabels`), the
/// backend's port mapped to the rollout's Service port's `targetPort` (or the same
/// number without one), owned by the Rollout `owner_uid`.
pub fn service(
    f: &Fronting,
    deployment: &Deployment,
    target: Option<&Service>,
    owner_uid: &str,
) -> Result<Value, FrontingError> {
    let selector = deployment.spec.as_ref().map(|s| &s.selector);
    let expressions = selector.and_then(|s| s.match_expressions.as_ref());
    if expressions.is_some_and(|e| !e.is_empty()) {
        return Err(FrontingError::MatchExpressions {
            namespace: f.namespace.clone(),
            name: f.deployment.clone(),
        });
    }
    let labels = selector
        .and_then(|s| s.match_labels.clone())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| FrontingError::NoLabels {
            namespace: f.namespace.clone(),
            name: f.deployment.clone(),
        })?;
    let target_port = target
        .and_then(|s| s.spec.as_ref()?.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == i32::from(f.target.1)));
    let mut port = json!({
        "port": f.port,
        "protocol": "TCP",
        "targetPort": container_port(
            deployment,
            target_port.and_then(|p| p.target_port.clone()),
            target_port.and_then(|p| p.name.as_deref()),
            f.port,
        ),
    });
    if let Some(name) = target_port.and_then(|p| p.name.clone()) {
        port["name"] = json!(name);
    }
    if let Some(protocol) = target_port.and_then(|p| p.app_protocol.clone()) {
        port["appProtocol"] = json!(protocol);
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f.service,
            "namespace": f.namespace,
            "labels": {ROLLOUT_LABEL: f.rollout, "app.kubernetes.io/managed-by": FIELD_MANAGER},
            "ownerReferences": [{
                "apiVersion": ferry_api::rollout::API_VERSION,
                "kind": ferry_api::rollout::KIND,
                "name": f.rollout,
                "uid": owner_uid,
                "controller": true,
            }],
        },
        "spec": {"selector": labels, "ports": [port]},
    }))
}

/// The Deployment's container port the rollout's Service port maps to: a named
/// `targetPort` as it is (each pod resolves it); a number the Deployment's containers
/// listen on; else the container port named like the Service port (versions may listen on
/// different numbers); else its only container port; else the number (`port` without a
/// `targetPort`).
fn container_port(
    deployment: &Deployment,
    target: Option<IntOrString>,
    name: Option<&str>,
    port: u16,
) -> Value {
    let number = match target {
        Some(IntOrString::String(name)) => return json!(name),
        Some(IntOrString::Int(n)) => n,
        None => i32::from(port),
    };
    let ports: Vec<_> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .into_iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    if ports.iter().any(|p| p.container_port == number) {
        return json!(number);
    }
    if let Some(named) = ports
        .iter()
        .find(|p| name.is_some() && p.name.as_deref() == name)
    {
        return json!(named.container_port);
    }
    match ports.as_slice() {
        [only] => json!(only.container_port),
        _ => json!(number),
    }
}

/// Reads `f`'s Deployment (and the rollout's Service, for its `targetPort`) and applies
/// the Service fronting it.
pub async fn apply(client: &Client, f: &Fronting, owner_uid: &str) -> Result<(), FrontingError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &f.namespace);
    let deployment = deployments
        .get_opt(&f.deployment)
        .await
        .map_err(|source| FrontingError::Read {
            what: format!("deployment {}/{}", f.namespace, f.deployment),
            source,
        })?
        .ok_or_else(|| FrontingError::NotFound {
            namespace: f.namespace.clone(),
            name: f.deployment.clone(),
        })?;
    let services: Api<Service> = Api::namespaced(client.clone(), &f.namespace);
    let target = services
        .get_opt(&f.target.0)
        .await
        .map_err(|source| FrontingError::Read {
            what: format!("service {}/{}", f.namespace, f.target.0),
            source,
        })?;
    let body = service(f, &deployment, target.as_ref(), owner_uid)?;
    services
        .patch(
            &f.service,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| FrontingError::Apply {
            namespace: f.namespace.clone(),
            name: f.service.clone(),
            source,
        })?;
    Ok(())
}

/// Applies the Services the rollouts want whenever they change, this replica becomes the
/// Lease holder (`leader`; none: always), and every [`RESYNC`]; writes how it went to each
/// Rollout's `status.backends` when that changes. A follower writes nothing.
pub async fn run(
    client: Client,
    rollouts: Store<DynamicObject>,
    mut defs: watch::Receiver<Arc<Vec<RolloutDef>>>,
    mut leader: Option<watch::Receiver<bool>>,
) {
    let mut reported: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: the loop applies once at the start already.
    resync.tick().await;
    loop {
        let leading = leader.as_ref().is_none_or(|l| *l.borrow());
        // Seen either way: a follower waits for the next change, not this one again.
        let wanted = fronting::wanted(&defs.borrow_and_update());
        if leading {
            reconcile(&client, &rollouts, &wanted, &mut reported).await;
        } else {
            // Whoever holds the Lease next writes every status again.
            reported.clear();
        }
        let leader_changed = async {
            match &mut leader {
                Some(l) => l.changed().await,
                None => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            r = defs.changed() => r.is_err(),
            r = leader_changed => r.is_err(),
            _ = resync.tick() => false,
        };
        if stopped {
            return;
        }
    }
}

async fn reconcile(
    client: &Client,
    rollouts: &Store<DynamicObject>,
    wanted: &[Fronting],
    reported: &mut BTreeMap<(String, String), Value>,
) {
    let mut by_rollout: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for f in wanted {
        let key = (f.namespace.clone(), f.rollout.clone());
        let at = ObjectRef::<DynamicObject>::new_with(&f.rollout, resource()).within(&f.namespace);
        let Some(uid) = rollouts.get(&at).and_then(|r| r.metadata.uid.clone()) else {
            continue;
        };
        let result = apply(client, f, &uid).await;
        let (ok, message) = match &result {
            Ok(()) => (
                true,
                format!("service {} fronts deployment {}", f.service, f.deployment),
            ),
            Err(e) => (false, ferry_api::cause::error_chain(e)),
        };
        by_rollout.entry(key).or_default().push(json!({
            "role": f.role, "deployment": f.deployment, "service": f.service,
            "ok": ok, "message": message,
        }));
    }
    // Rollouts whose Deployment backends went away: their report goes too.
    for key in reported.keys() {
        by_rollout.entry(key.clone()).or_default();
    }
    for ((namespace, name), backends) in by_rollout {
        let value = match backends.is_empty() {
            true => Value::Null,
            false => Value::Array(backends),
        };
        let key = (namespace.clone(), name.clone());
        if reported.get(&key).unwrap_or(&Value::Null) == &value {
            continue;
        }
        for failed in value
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["ok"] == false)
        {
            tracing::warn!(%namespace, rollout = %name, reason = %failed["message"], "cannot front a rollout's Deployment backend with a Service");
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource());
        let patch = json!({"status": {"backends": value}});
        let written = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Err(error) = &written {
            tracing::warn!(%namespace, %name, %error, "cannot write a rollout's status");
        }
        // Nothing to report (the Rollout may be gone): not tried again.
        if value.is_null() {
            reported.remove(&key);
        } else if written.is_ok() {
            reported.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fronting() -> Fronting {
        Fronting {
            namespace: "emojivoto".into(),
            rollout: "voting".into(),
            role: "canary",
            deployment: "voting-v2".into(),
            service: "voting-v2-ferry".into(),
            port: 8080,
            target: ("voting-svc".into(), 8080),
        }
    }

    fn deployment(selector: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "voting-v2", "namespace": "emojivoto"},
            "spec": {"selector": selector, "template": {}},
        }))
        .unwrap()
    }

    #[test]
    fn the_service_selects_the_deployments_labels_on_the_target_port() {
        let target: Service = serde_json::from_value(json!({
            "metadata": {"name": "voting-svc"},
            "spec": {"ports": [{"name": "grpc", "port": 8080, "targetPort": "grpc-port", "appProtocol": "kubernetes.io/h2c"}]},
        }))
        .unwrap();
        let d = deployment(json!({"matchLabels": {"app": "voting", "version": "v2"}}));
        let svc = service(&fronting(), &d, Some(&target), "uid-1").unwrap();
        assert_eq!(
            svc["spec"]["selector"],
            json!({"app": "voting", "version": "v2"})
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "grpc", "port": 8080, "protocol": "TCP", "targetPort": "grpc-port", "appProtocol": "kubernetes.io/h2c"}])
        );
        assert_eq!(svc["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        // Without the rollout's Service: the same number.
        let svc = service(&fronting(), &d, None, "uid-1").unwrap();
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    }

    #[test]
    fn a_version_listening_elsewhere_is_found_by_its_port_name() {
        let target: Service = serde_json::from_value(json!({
            "metadata": {"name": "voting-svc"},
            "spec": {"ports": [{"name": "grpc", "port": 8080, "targetPort": 8081}]},
        }))
        .unwrap();
        let mut d = deployment(json!({"matchLabels": {"app": "voting", "version": "v2"}}));
        let containers = |ports: Value| {
            serde_json::from_value(
                json!({"spec": {"containers": [{"name": "voting", "ports": ports}]}}),
            )
            .unwrap()
        };
        let port_of = |d: &Deployment| {
            service(&fronting(), d, Some(&target), "uid").unwrap()["spec"]["ports"][0]["targetPort"]
                .clone()
        };
        d.spec.as_mut().unwrap().template = containers(
            json!([{"name": "prom", "containerPort": 8801}, {"name": "grpc", "containerPort": 8083}]),
        );
        assert_eq!(port_of(&d), 8083);
        d.spec.as_mut().unwrap().template = containers(
            json!([{"name": "prom", "containerPort": 8801}, {"name": "grpc", "containerPort": 8081}]),
        );
        assert_eq!(port_of(&d), 8081);
        d.spec.as_mut().unwrap().template = containers(json!([{"containerPort": 9000}]));
        assert_eq!(port_of(&d), 9000);
        d.spec.as_mut().unwrap().template =
            containers(json!([{"containerPort": 9000}, {"containerPort": 9001}]));
        assert_eq!(port_of(&d), 8081);
    }

    #[test]
    fn a_selector_a_service_cannot_express_is_refused_by_name() {
        let d = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["voting"]}]}),
        );
        let e = service(&fronting(), &d, None, "uid").unwrap_err();
        assert_eq!(e.to_string(), "deployment emojivoto/voting-v2 selects its pods with spec.selector.matchExpressions; a Service selects by labels only (use matchLabels)");
        let e = service(&fronting(), &deployment(json!({})), None, "uid").unwrap_err();
        assert_eq!(
            e.to_string(),
            "deployment emojivoto/voting-v2 has no spec.selector.matchLabels"
        );
    }
}
