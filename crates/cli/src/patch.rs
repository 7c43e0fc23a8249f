//! Adds the proxy to, and removes it from, untyped documents: the decisions (skip or not,
//! and why) and the edits to one pod template. Everything Ferry adds carries a name it
//! owns, so removing is exact and injecting twice equals injecting once.

use std::fmt;

use ferry_api::k8s as names;
use ferry_inject::pod::{self, PodError};
use serde_yaml_ng::Value;

pub use ferry_inject::SkipReason;

use crate::sidecar::ProxyConfig;
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
#[error("{resource}")]
pub struct PatchError {
    /// The resource, as in `deployment "web"`.
    resource: String,
    /// What went wrong in its pod template.
    #[source]
    source: PodError,
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
        PodSite::Pod(pod) => match pod::skip_reason(pod) {
            _ if disabled => Outcome::Skipped(SkipReason::Disabled),
            Some(why) => Outcome::Skipped(why),
            None => {
                pod::refresh(pod, cfg, &ferry_inject::created_by_cli()).map_err(|source| {
                    PatchError {
                        resource: resource.clone(),
                        source,
                    }
                })?;
                Outcome::Injected
            }
        },
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
            if pod::remove_proxy(pod) {
                Outcome::Uninjected
            } else {
                Outcome::Skipped(SkipReason::NotInjected)
            }
        }
    };
    out.push(Report { resource, outcome });
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
