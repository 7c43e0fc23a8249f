//! `GET /api/v1/policy/objects`: the policy documents in force and the pods they may
//! select, shaped as the Kubernetes API lists them, so that `ferry check --local` judges
//! them with the rules it applies to a cluster (docs/authorization.md). Judging is the
//! CLI's; this module only lists.

use ferry_api::authz::PolicyObjectList;
use serde::Serialize;
use serde_json::{json, Value};

use super::resolve::pod_labels;
use super::resources::{
    AUTHORIZATION_POLICY, HTTP_LOCAL_RATE_LIMIT_POLICY, JWT_AUTHENTICATION,
    MESH_TLS_AUTHENTICATION, NETWORK_AUTHENTICATION, SERVER,
};
use crate::model::ClusterState;
use crate::routes::RouteSet;

/// The documents of `set` and the pods of `state`.
pub fn list(state: &ClusterState, set: &RouteSet) -> PolicyObjectList {
    let pods = state
        .instances
        .iter()
        .map(|(at, instance)| {
            let labels = pod_labels(state, at, instance).cloned().unwrap_or_default();
            json!({"metadata": {"namespace": at.namespace, "name": at.name, "labels": labels}})
        })
        .collect();
    let a = &set.authz;
    let mut out = PolicyObjectList {
        pods,
        ..PolicyObjectList::default()
    };
    let mut put = |kind: &str, items: Vec<Value>| {
        out.items.insert(kind.to_string(), items);
    };
    put(SERVER, items(&a.servers));
    put(AUTHORIZATION_POLICY, items(&a.authorization_policies));
    put(MESH_TLS_AUTHENTICATION, items(&a.mesh_tls));
    put(NETWORK_AUTHENTICATION, items(&a.networks));
    let mut jwt = items(&a.jwt);
    // Public keys, but large and of no use to a listing.
    for j in &mut jwt {
        if let Some(spec) = j["spec"].as_object_mut() {
            spec.remove("jwks");
        }
    }
    put(JWT_AUTHENTICATION, jwt);
    put(HTTP_LOCAL_RATE_LIMIT_POLICY, items(&a.rate_limits));
    put("HTTPRoute", items(&set.http));
    put("GRPCRoute", items(&set.grpc));
    out
}

fn items<T: Serialize>(docs: &[T]) -> Vec<Value> {
    docs.iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect()
}
