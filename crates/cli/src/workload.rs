//! Finds the pod templates inside untyped Kubernetes documents: which kinds carry pods,
//! where their template lives, and how a resource is named in messages.

use serde_yaml_ng::{Mapping, Value};

/// The kinds whose objects carry a pod template at `spec.template`.
const TEMPLATED_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
];

/// Where a document's pods are described.
pub enum PodSite<'a> {
    /// The pod-like mapping (a `Pod`, or a workload's template) holding `metadata` and `spec`.
    Pod(&'a mut Value),
    /// The document is a workload kind but has no pod template to work on.
    Missing,
    /// The document does not describe pods (a Service, a ConfigMap, ...).
    NotWorkload,
}

/// Returns the document's kind, or an empty string.
pub fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// Whether a document is a list of other documents (`List`, `DeploymentList`, ...).
pub fn is_list(doc: &Value) -> bool {
    kind(doc).ends_with("List") && doc.get("items").is_some_and(Value::is_sequence)
}

/// The kind of a typed list's items (`DeploymentList` → `Deployment`), which the
/// apiserver leaves out of each item.
pub fn item_kind(list: &Value) -> Option<String> {
    let kind = kind(list).strip_suffix("List")?;
    (!kind.is_empty()).then(|| kind.to_string())
}

/// A resource as kubectl names it in messages: `deployment "web"`.
pub fn display_name(doc: &Value, kind: &str) -> String {
    let kind = if kind.is_empty() {
        "document".to_string()
    } else {
        kind.to_lowercase()
    };
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .or_else(|| {
            meta.and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
        })
        .unwrap_or("");
    format!("{kind} \"{name}\"")
}

/// Finds the pod-like mapping of a document of the given kind.
pub fn pod_site<'a>(doc: &'a mut Value, kind: &str) -> PodSite<'a> {
    let site = if kind == "Pod" {
        Some(doc)
    } else if TEMPLATED_KINDS.contains(&kind) {
        doc.get_mut("spec").and_then(|s| s.get_mut("template"))
    } else if kind == "CronJob" {
        doc.get_mut("spec")
            .and_then(|s| s.get_mut("jobTemplate"))
            .and_then(|j| j.get_mut("spec"))
            .and_then(|s| s.get_mut("template"))
    } else {
        return PodSite::NotWorkload;
    };
    match site {
        Some(pod) if pod.get("spec").is_some_and(Value::is_mapping) => PodSite::Pod(pod),
        _ => PodSite::Missing,
    }
}

/// Reads an annotation from a mapping's `metadata.annotations`.
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()
}

/// Returns `map[key]` as a mapping, creating an empty one (at the end) when absent.
///
/// Fails when the key holds something else, which a valid object never does.
pub fn child_mapping<'a>(map: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    if !map.contains_key(key) {
        map.insert(key.into(), Value::Mapping(Mapping::new()));
    }
    map.get_mut(key)?.as_mapping_mut()
}
