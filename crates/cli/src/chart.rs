//! Generates the Helm chart `charts/ferry` from the same typed objects `ferry install`
//! renders, so the two cannot drift apart.
//!
//! Each object is rendered twice from an [`InstallConfig`] whose strings are placeholders
//! (`@@namespace@@`, ...): once without and once with HA. Placeholders become
//! `{{ .Values.… }}` expressions; where the two renderings differ, the template holds both
//! under `{{- if .Values.ha }}`. The chart therefore uses only this subset of Go templates:
//! `{{ .Values.x }}`, `{{ .Values.x | toJson }}`, `{{ .Values.x | b64enc }}` and
//! `if .Values.ha` / `else` / `end`.

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

use crate::identity::{IdentityMaterial, WebhookTls};
use crate::install::{self, InstallConfig, RenderError};
use crate::sidecar::VERSION;
use crate::{emitter, workload};
use ferry_api::images;

/// Every chart value: its path under `.Values` and its default.
pub const VALUES: &[(&str, &str)] = &[
    ("namespace", ferry_api::k8s::CONTROL_NAMESPACE),
    ("registry", images::DEFAULT_REGISTRY),
    ("version", VERSION),
    ("trustDomain", "cluster.local"),
    ("identity.trustAnchorsPEM", ""),
    ("identity.issuer.crtPEM", ""),
    ("identity.issuer.keyPEM", ""),
    ("webhook.caPEM", ""),
    ("webhook.crtPEM", ""),
    ("webhook.keyPEM", ""),
];

/// Comment heading every generated file.
const HEADER: &str =
    "# Generated from the typed objects of `ferry install` (crates/cli/src/chart.rs).\n\
# Do not edit: regenerate with `FERRY_UPDATE_GOLDEN=1 cargo nextest run -p ferry --test chart`.\n";

fn placeholder(path: &str) -> String {
    format!("@@{path}@@")
}

fn placeholder_config(ha: bool) -> InstallConfig {
    InstallConfig {
        namespace: placeholder("namespace"),
        control_image: images::repository(&placeholder("registry"), images::CONTROL),
        proxy_image: images::repository(&placeholder("registry"), images::PROXY),
        version: placeholder("version"),
        trust_domain: placeholder("trustDomain"),
        ha,
        identity: IdentityMaterial {
            trust_anchors_pem: placeholder("identity.trustAnchorsPEM"),
            issuer_cert_pem: placeholder("identity.issuer.crtPEM"),
            issuer_key_pem: placeholder("identity.issuer.keyPEM"),
        },
        webhook: WebhookTls {
            ca_pem: placeholder("webhook.caPEM"),
            cert_pem: placeholder("webhook.crtPEM"),
            key_pem: placeholder("webhook.keyPEM"),
        },
    }
}

/// Turns placeholders in rendered YAML into template expressions.
fn templatize(yaml: &str) -> String {
    let mut out = yaml.to_string();
    for (path, _) in VALUES {
        let p = placeholder(path);
        let b64 = base64::engine::general_purpose::STANDARD.encode(p.as_bytes());
        out = out.replace(&b64, &format!("{{{{ .Values.{path} | b64enc }}}}"));
        out = out.replace(
            &format!("\"{p}\""),
            &format!("{{{{ .Values.{path} | toJson }}}}"),
        );
    }
    for (path, _) in VALUES {
        out = out.replace(&placeholder(path), &format!("{{{{ .Values.{path} }}}}"));
    }
    out
}

fn yaml(value: &Value) -> String {
    let mut out = String::new();
    emitter::document(value, &mut out);
    out
}

fn file_name(index: usize, doc: &Value) -> String {
    let name = doc["metadata"]["name"].as_str().unwrap_or("object");
    let name = name.replace(&placeholder("namespace"), "ns");
    format!(
        "templates/{index:02}-{}-{name}.yaml",
        workload::kind(doc).to_lowercase()
    )
}

/// The chart's files, as `(path under charts/ferry, content)`.
pub fn generate() -> Result<Vec<(String, String)>, RenderError> {
    let plain = install::render(&placeholder_config(false))?;
    let ha = install::render(&placeholder_config(true))?;
    let mut files = vec![
        ("Chart.yaml".to_string(), chart_yaml()),
        ("values.yaml".to_string(), values_yaml()),
    ];
    // HA renders a superset of the objects, in the same order: walk it.
    for (i, h) in ha.iter().enumerate() {
        let body = match plain.iter().find(|p| same_object(p, h)) {
            Some(p) if p == h => templatize(&yaml(p)),
            Some(p) => format!(
                "{{{{- if .Values.ha }}}}\n{}{{{{- else }}}}\n{}{{{{- end }}}}\n",
                templatize(&yaml(h)),
                templatize(&yaml(p))
            ),
            None => format!(
                "{{{{- if .Values.ha }}}}\n{}{{{{- end }}}}\n",
                templatize(&yaml(h))
            ),
        };
        files.push((file_name(i, h), format!("{HEADER}{body}")));
    }
    for (i, p) in plain
        .iter()
        .filter(|p| !ha.iter().any(|h| same_object(p, h)))
        .enumerate()
    {
        let body = format!(
            "{{{{- if .Values.ha }}}}\n{{{{- else }}}}\n{}{{{{- end }}}}\n",
            templatize(&yaml(p))
        );
        files.push((file_name(ha.len() + i, p), format!("{HEADER}{body}")));
    }
    Ok(files)
}

fn same_object(a: &Value, b: &Value) -> bool {
    a["kind"] == b["kind"] && a["metadata"]["name"] == b["metadata"]["name"]
}

fn chart_yaml() -> String {
    let mut map = Mapping::new();
    for (k, v) in [
        ("apiVersion", "v2"),
        ("name", "ferry"),
        (
            "description",
            "Ferry service mesh control plane: the same objects as `ferry install`.",
        ),
        ("type", "application"),
        ("version", VERSION),
        ("appVersion", VERSION),
    ] {
        map.insert(k.into(), v.into());
    }
    format!("{HEADER}{}", yaml(&Value::Mapping(map)))
}

/// `values.yaml`: every value at its default, plus `ha`.
pub fn values_yaml() -> String {
    let mut root = Mapping::new();
    for (path, default) in VALUES {
        let mut map = &mut root;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                map.insert(part.into(), (*default).into());
            } else {
                map = workload::child_mapping(map, part).expect("value paths nest mappings");
            }
        }
    }
    root.insert("ha".into(), false.into());
    let note =
        "# Certificates are required: `ferry install` generates them; with Helm, pass your own\n\
# (e.g. --set-file identity.trustAnchorsPEM=ca.crt ...), as Linkerd's chart asks.\n";
    format!("{HEADER}{note}{}", yaml(&Value::Mapping(root)))
}
