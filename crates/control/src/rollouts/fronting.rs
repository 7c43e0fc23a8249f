//! Deployment backends: a rollout's `{kind: Deployment, name: D}` backend is the Service
//! `D-ferry` that fronts it, and the generated route names that Service as it would any
//! other. Which Services the rollouts want is [`wanted`] (pure); locally they are
//! synthesized from the workloads file's workloads into the discovered state ([`overlay`],
//! pure); on Kubernetes the Lease holder applies them ([`super::kubernetes`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::discovery::Discovery;
use crate::model::{ClusterState, EndpointRef, ObjectRef, Service, ServicePort};

use super::spec::RolloutDef;

/// The field manager of the Services the controller applies.
pub const FIELD_MANAGER: &str = "ferry-control";
/// The label naming the rollout a fronting Service belongs to.
pub const ROLLOUT_LABEL: &str = "rollouts.ferry.io/rollout";

/// A Service fronting a rollout's Deployment backend.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fronting {
    /// The rollout's (and the Deployment's, and the Service's) namespace.
    pub namespace: String,
    /// The rollout that wants it (its owner on Kubernetes).
    pub rollout: String,
    /// `stable` or `canary`: which backend, for the rollout's status.
    pub role: &'static str,
    /// The Deployment fronted.
    pub deployment: String,
    /// The fronting Service's name (`<deployment>-ferry`).
    pub service: String,
    /// The Service port traffic is routed to (the backend's port).
    pub port: u16,
    /// The rollout's Service and port, whose `targetPort` the fronting port maps to.
    pub target: (String, u16),
}

/// The Services fronting every Deployment backend of `defs`.
pub fn wanted(defs: &[RolloutDef]) -> Vec<Fronting> {
    let mut out = Vec::new();
    for def in defs {
        for (role, backend, port) in [
            ("stable", &def.spec.stable, def.stable_port),
            ("canary", &def.spec.canary, def.canary_port),
        ] {
            if let Some(deployment) = backend.deployment() {
                out.push(Fronting {
                    namespace: def.namespace.clone(),
                    rollout: def.name.clone(),
                    role,
                    deployment: deployment.to_string(),
                    service: backend.service_name(),
                    port,
                    target: (def.spec.service.name.clone(), def.port),
                });
            }
        }
    }
    out
}

/// `state` with a Service for each of `fronting`, its endpoints every instance of the
/// deployment workload of that name (the workloads file's `addr`). A Service the state
/// already has (the file declares one of that name) is left as it is.
pub fn overlay(state: &ClusterState, fronting: &[Fronting]) -> ClusterState {
    let mut out = state.clone();
    let mut made: BTreeMap<ObjectRef, Service> = BTreeMap::new();
    for f in fronting {
        let key = ObjectRef::new(&f.namespace, &f.service);
        if state.services.contains_key(&key) {
            continue;
        }
        let endpoints = state
            .instances
            .iter()
            .filter(|(at, instance)| {
                at.namespace == f.namespace
                    && instance
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.kind == "deployment" && o.name == f.deployment)
            })
            .filter_map(|(at, instance)| {
                let endpoint = EndpointRef {
                    instance: Some(at.name.clone()),
                };
                Some((instance.addr?, endpoint))
            })
            .collect();
        made.entry(key).or_default().ports.insert(
            f.port,
            ServicePort {
                target_port: f.port,
                endpoints,
            },
        );
    }
    for (key, service) in made {
        out.namespaces.insert(key.namespace.clone());
        out.services.insert(key, service);
    }
    out
}

/// A discovery backend whose state also has the Services fronting the rollouts' Deployment
/// backends ([`overlay`]): what the control plane serves in local mode, so that a
/// Deployment backend resolves, as a Service, through the same machinery as any other.
#[derive(Clone)]
pub struct FrontedDiscovery<D> {
    inner: D,
    /// The overlaid state; none: `inner`'s as it is (no local rollouts).
    merged: Option<Arc<watch::Sender<Arc<ClusterState>>>>,
    _task: Option<Arc<AbortOnDrop>>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<D: Discovery> FrontedDiscovery<D> {
    /// `inner` as it is.
    pub fn plain(inner: D) -> Self {
        Self {
            inner,
            merged: None,
            _task: None,
        }
    }

    /// `inner`, overlaid with the Services `defs` want, followed as either changes (until
    /// the last clone is dropped).
    pub fn spawn(inner: D, mut defs: watch::Receiver<Arc<Vec<RolloutDef>>>) -> Self {
        let mut states = inner.watch();
        let first = overlay(
            &states.borrow_and_update(),
            &wanted(&defs.borrow_and_update()),
        );
        let tx = Arc::new(watch::channel(Arc::new(first)).0);
        let merged = tx.clone();
        let task = tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    r = states.changed() => r,
                    r = defs.changed() => r,
                };
                if changed.is_err() {
                    return;
                }
                let state = overlay(
                    &states.borrow_and_update(),
                    &wanted(&defs.borrow_and_update()),
                );
                tx.send_if_modified(|current| {
                    let differs = **current != state;
                    if differs {
                        *current = Arc::new(state);
                    }
                    differs
                });
            }
        });
        Self {
            inner,
            merged: Some(merged),
            _task: Some(Arc::new(AbortOnDrop(task))),
        }
    }
}

impl<D: Discovery> Discovery for FrontedDiscovery<D> {
    fn watch(&self) -> watch::Receiver<Arc<ClusterState>> {
        match &self.merged {
            Some(merged) => merged.subscribe(),
            None => self.inner.watch(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollouts::spec;

    const ROLLOUT: &str = "\
apiVersion: ferry.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  service: {name: web, port: 8080}
  stable: {kind: Deployment, name: web-v1}
  canary: {kind: Deployment, name: web-v2, port: 9090}
  steps: [{weight: 10}]
";

    const WORKLOADS: &str = "\
workloads:
  - name: web-v1
    instances: [{name: v1-0, addr: '127.0.0.1:17101'}, {name: v1-1, addr: '127.0.0.1:17102'}]
  - name: web-v2
    instances: [{name: v2-0, addr: '127.0.0.1:17201'}]
  - name: web-v2
    namespace: other
    instances: [{name: v2-0, addr: '127.0.0.1:17301'}]
services:
  - {name: web, port: 8080, workloads: [web-v1]}
";

    #[test]
    fn deployment_backends_become_services_of_their_workloads_instances() {
        let defs = spec::parse(ROLLOUT).unwrap();
        let fronting = wanted(&defs);
        assert_eq!(
            fronting
                .iter()
                .map(|f| (f.role, f.service.as_str(), f.port))
                .collect::<Vec<_>>(),
            [
                ("stable", "web-v1-ferry", 8080),
                ("canary", "web-v2-ferry", 9090)
            ]
        );
        let state = crate::workloads_file::parse(WORKLOADS).unwrap();
        let fronted = overlay(&state, &fronting);
        let addrs = |name: &str, port: u16| -> Vec<String> {
            fronted.services[&ObjectRef::new("default", name)].ports[&port]
                .endpoints
                .keys()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            addrs("web-v1-ferry", 8080),
            ["127.0.0.1:17101", "127.0.0.1:17102"]
        );
        // Only the namespace's own workload.
        assert_eq!(addrs("web-v2-ferry", 9090), ["127.0.0.1:17201"]);
        assert_eq!(fronted.services.len(), 3);
        // A Service the file declares is its own.
        let declared = crate::workloads_file::parse(&format!(
            "{WORKLOADS}  - {{name: web-v1-ferry, port: 8080, workloads: [web-v2]}}\n"
        ))
        .unwrap();
        assert_eq!(
            overlay(&declared, &fronting).services[&ObjectRef::new("default", "web-v1-ferry")],
            declared.services[&ObjectRef::new("default", "web-v1-ferry")]
        );
    }

    #[test]
    fn service_backends_want_nothing() {
        let defs = spec::parse(&ROLLOUT.replace("kind: Deployment, ", "")).unwrap();
        assert!(wanted(&defs).is_empty());
    }
}
