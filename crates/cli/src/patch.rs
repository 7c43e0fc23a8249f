//! Adds the proxy to, and removes it from, untyped documents: the decisions (skip or not,
//! and why) and the edits to one pod template. Everything Ferry adds carries a name it
//! owns, so removing is exact and injecting twice equals injecting once.

use std::fmt;

use ferry_api::k8s as names;
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use crate::sidecar::{PodOverrides, ProxyConfig, VOLUME_INIT_RUN};
use crate::workload::{self, PodSite};

/// What happened to one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proxy was added (or refreshed).
    Injected,
    /// The proxy was removed.
    Uninjected,
    /// The resource was left as it was.
    Skipped(SkipReason),
}

/// Why a resource was left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its pods use the node's network; rules installed there would capture the node's traffic.
    HostNetwork,
    /// It, or its pod template, is annotated `ferry.io/inject: disabled`.
    Disabled,
    /// It does not describe pods.
    NotWorkload,
    /// It is a workload kind without a pod template.
    NoPodTemplate,
    /// (uninject) It carries no proxy.
    NotInjected,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::HostNetwork => "hostNetwork",
            SkipReason::Disabled => "annotated ferry.io/inject: disabled",
            SkipReason::NotWorkload => "not a workload",
            SkipReason::NoPodTemplate => "no pod template",
            SkipReason::NotInjected => "no proxy to remove",
        })
    }
}

/// One line of the report on stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The resource, as in `deployment "web"`.
    pub resource: String,
    /// What happened to it.
    pub outcome: Outcome,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Injected => write!(f, "{} injected", self.resource),
            Outcome::Uninjected => write!(f, "{} uninjected", self.resource),
            Outcome::Skipped(why) => write!(f, "{} skipped: {why}", self.resource),
        }
    }
}

/// Errors building the injected objects.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// A typed object could not be turned into a YAML value.
    #[error("serializing the injected {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A field that must be a mapping or list holds something else.
    #[error("{resource}: field {field} has an unexpected type")]
    Shape {
        resource: String,
        field: &'static str,
    },
}

/// Injects the proxy into a document (recursing into lists), appending one report per resource.
pub fn inject(doc: &mut Value, cfg: &ProxyConfig, out: &mut Vec<Report>) -> Result<(), PatchError> {
    inject_item(doc, None, cfg, out)
}

/// The document's own kind, or the one its list implies.
fn kind_of(doc: &Value, implied: Option<&str>) -> String {
    match (workload::kind(doc), implied) {
        ("", Some(kind)) => kind.to_string(),
        (kind, _) => kind.to_string(),
    }
}

fn inject_item(
    doc: &mut Value,
    implied: Option<&str>,
    cfg: &ProxyConfig,
    out: &mut Vec<Report>,
) -> Result<(), PatchError> {
    if workload::is_list(doc) {
        let item_kind = workload::item_kind(doc);
        for item in doc
            .get_mut("items")
            .and_then(Value::as_sequence_mut)
            .into_iter()
            .flatten()
        {
            inject_item(item, item_kind.as_deref(), cfg, out)?;
        }
        return Ok(());
    }
    let kind = kind_of(doc, implied);
    let resource = workload::display_name(doc, &kind);
    let disabled = workload::annotation(doc, names::ANNOTATION_INJECT) == Some("disabled");
    let outcome = match workload::pod_site(doc, &kind) {
        PodSite::NotWorkload => Outcome::Skipped(SkipReason::NotWorkload),
        PodSite::Missing => Outcome::Skipped(SkipReason::NoPodTemplate),
        PodSite::Pod(pod) => {
            let pod_value = Value::Mapping(pod.clone());
            if disabled
                || workload::annotation(&pod_value, names::ANNOTATION_INJECT) == Some("disabled")
            {
                Outcome::Skipped(SkipReason::Disabled)
            } else if host_network(&pod_value["spec"]) {
                Outcome::Skipped(SkipReason::HostNetwork)
            } else {
                remove_proxy(pod);
                add_proxy(pod, cfg, &resource)?;
                Outcome::Injected
            }
        }
    };
    out.push(Report { resource, outcome });
    Ok(())
}

/// Removes the proxy from a document (recursing into lists), appending one report per resource.
pub fn uninject(doc: &mut Value, out: &mut Vec<Report>) {
    uninject_item(doc, None, out);
}

fn uninject_item(doc: &mut Value, implied: Option<&str>, out: &mut Vec<Report>) {
    if workload::is_list(doc) {
        let item_kind = workload::item_kind(doc);
        for item in doc
            .get_mut("items")
            .and_then(Value::as_sequence_mut)
            .into_iter()
            .flatten()
        {
            uninject_item(item, item_kind.as_deref(), out);
        }
        return;
    }
    let kind = kind_of(doc, implied);
    let resource = workload::display_name(doc, &kind);
    let outcome = match workload::pod_site(doc, &kind) {
        PodSite::NotWorkload => Outcome::Skipped(SkipReason::NotWorkload),
        PodSite::Missing => Outcome::Skipped(SkipReason::NoPodTemplate),
        PodSite::Pod(pod) => {
            if remove_proxy(pod) {
                Outcome::Uninjected
            } else {
                Outcome::Skipped(SkipReason::NotInjected)
            }
        }
    };
    out.push(Report { resource, outcome });
}

fn to_value(what: &'static str, typed: &impl Serialize) -> Result<Value, PatchError> {
    serde_yaml_ng::to_value(typed).map_err(|source| PatchError::Serialize { what, source })
}

fn add_proxy(pod: &mut Mapping, cfg: &ProxyConfig, resource: &str) -> Result<(), PatchError> {
    let shape = |field| PatchError::Shape {
        resource: resource.to_string(),
        field,
    };
    let meta = workload::child_mapping(pod, "metadata").ok_or_else(|| shape("metadata"))?;
    let overrides = overrides(meta);
    let annotations = workload::child_mapping(meta, "annotations")
        .ok_or_else(|| shape("metadata.annotations"))?;
    annotations.insert(
        names::ANNOTATION_PROXY_VERSION.into(),
        cfg.version.clone().into(),
    );
    annotations.insert(
        names::ANNOTATION_CREATED_BY.into(),
        format!("ferry/cli {}", crate::sidecar::VERSION).into(),
    );
    let labels = workload::child_mapping(meta, "labels").ok_or_else(|| shape("metadata.labels"))?;
    labels.insert(
        names::LABEL_CONTROL_PLANE_NS.into(),
        cfg.control_namespace.clone().into(),
    );

    let init = to_value("init container", &cfg.init_container(&overrides))?;
    let proxy = to_value("proxy container", &cfg.proxy_container())?;
    let volumes = cfg
        .volumes()
        .iter()
        .map(|v| to_value("volume", v))
        .collect::<Result<Vec<_>, _>>()?;

    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| shape("spec"))?;
    let inits = workload::child_sequence(spec, "initContainers")
        .ok_or_else(|| shape("spec.initContainers"))?;
    inits.insert(0, init);
    if cfg.native_sidecar {
        // Right after the rules: the user's own init containers then run meshed.
        inits.insert(1, proxy);
    } else {
        workload::child_sequence(spec, "containers")
            .ok_or_else(|| shape("spec.containers"))?
            .push(proxy);
    }
    workload::child_sequence(spec, "volumes")
        .ok_or_else(|| shape("spec.volumes"))?
        .extend(volumes);
    Ok(())
}

fn overrides(meta: &Mapping) -> PodOverrides {
    let list = |key: &str| -> Vec<String> {
        meta.get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    PodOverrides {
        skip_inbound_ports: list(names::ANNOTATION_SKIP_INBOUND_PORTS),
        skip_outbound_ports: list(names::ANNOTATION_SKIP_OUTBOUND_PORTS),
        skip_subnets: list(names::ANNOTATION_SKIP_SUBNETS),
    }
}

/// Removes everything [`add_proxy`] adds; returns whether there was anything to remove.
fn remove_proxy(pod: &mut Mapping) -> bool {
    let mut removed = false;
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_mapping_mut) {
        for (field, owned) in [
            (
                "initContainers",
                &[names::CONTAINER_INIT, names::CONTAINER_PROXY][..],
            ),
            ("containers", &[names::CONTAINER_PROXY][..]),
            (
                "volumes",
                &[names::VOLUME_IDENTITY_TOKEN, VOLUME_INIT_RUN][..],
            ),
        ] {
            if let Some(items) = spec.get_mut(field).and_then(Value::as_sequence_mut) {
                let before = items.len();
                items.retain(|item| !workload::item_name(item).is_some_and(|n| owned.contains(&n)));
                removed |= items.len() != before;
            }
        }
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_mapping_mut) {
        for (field, keys) in [
            (
                "annotations",
                &[
                    names::ANNOTATION_PROXY_VERSION,
                    names::ANNOTATION_CREATED_BY,
                ][..],
            ),
            ("labels", &[names::LABEL_CONTROL_PLANE_NS][..]),
        ] {
            if let Some(map) = meta.get_mut(field).and_then(Value::as_mapping_mut) {
                for key in keys {
                    removed |= map.shift_remove(*key).is_some();
                }
            }
        }
    }
    if removed {
        prune(pod);
    }
    removed
}

/// Drops the containers, lists and maps that removing the proxy left empty: injection
/// created them, so the input did not have them.
fn prune(pod: &mut Mapping) {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_mapping_mut) {
        workload::prune_empty(spec, "initContainers");
        workload::prune_empty(spec, "volumes");
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_mapping_mut) {
        workload::prune_empty(meta, "annotations");
        workload::prune_empty(meta, "labels");
    }
    workload::prune_empty(pod, "metadata");
}

/// `hostNetwork: true`, also written the YAML 1.1 ways kubectl accepts (`yes`, `on`).
fn host_network(spec: &Value) -> bool {
    match spec.get("hostNetwork") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => ["y", "yes", "on", "true"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(s)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: &str) -> Value {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}\n  containers: [{{name: c, image: i}}]\n"
        ))
        .unwrap()
    }

    fn outcome(mut doc: Value) -> Outcome {
        let mut reports = Vec::new();
        inject(&mut doc, &ProxyConfig::default(), &mut reports).unwrap();
        assert_eq!(reports.len(), 1);
        reports.remove(0).outcome
    }

    #[test]
    fn host_network_is_recognised_in_every_spelling_kubectl_accepts() {
        for spelling in ["true", "yes", "On", "'y'"] {
            assert_eq!(
                outcome(pod(&format!("  hostNetwork: {spelling}"))),
                Outcome::Skipped(SkipReason::HostNetwork),
                "{spelling}"
            );
        }
        assert_eq!(outcome(pod("  hostNetwork: false")), Outcome::Injected);
    }

    #[test]
    fn reports_read_like_kubectl() {
        let report = Report {
            resource: "deployment \"web\"".into(),
            outcome: Outcome::Skipped(SkipReason::HostNetwork),
        };
        assert_eq!(
            report.to_string(),
            "deployment \"web\" skipped: hostNetwork"
        );
    }
}
