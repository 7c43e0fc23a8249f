//! The Helm chart `charts/ferry` and `ferry install` agree, proved with a real `helm` (v4,
//! installed by `.ci/setup`; `FERRY_HELM` overrides the binary):
//!
//! 1. the checked-in chart is exactly what `ferry::chart::generate` makes from the typed
//!    objects today (regenerate with `FERRY_UPDATE_GOLDEN=1`);
//! 2. `helm lint` passes, and `helm template` (identity values, with and without HA and a
//!    webhook certificate) renders objects that pass the same OpenAPI schema validation as
//!    `ferry install` (`support/schema.rs`) and equal `ferry install`'s objects, except the
//!    webhook certificate the chart generates itself, which is checked on its own;
//! 3. without the identity values `helm template` fails naming the missing value.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;

#[path = "support/schema.rs"]
mod schema;

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/ferry")
}

#[test]
fn checked_in_chart_is_generated_from_the_typed_objects() {
    let files = ferry::chart::generate().unwrap();
    let dir = chart_dir();
    if std::env::var_os("FERRY_UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(dir.join("templates"));
        for (path, content) in &files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }
    for (path, content) in &files {
        let on_disk = std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| {
            panic!("charts/ferry/{path}: {e} (regenerate with FERRY_UPDATE_GOLDEN=1)")
        });
        assert_eq!(&on_disk, content, "charts/ferry/{path} is stale");
    }
    let templates = std::fs::read_dir(dir.join("templates")).unwrap().count();
    let generated = files
        .iter()
        .filter(|(p, _)| p.starts_with("templates/"))
        .count();
    assert_eq!(
        templates, generated,
        "charts/ferry/templates has files the generator does not make"
    );
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `values.yaml` with the certificates a user would pass with `--set-file`.
fn values_with_certs(cfg: &ferry::install::InstallConfig, ha: bool) -> Value {
    let mut values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    values["identity"]["trustAnchorsPEM"] = cfg.identity.trust_anchors_pem.clone().into();
    values["identity"]["issuer"]["crtPEM"] = cfg.identity.issuer_cert_pem.clone().into();
    values["identity"]["issuer"]["keyPEM"] = cfg.identity.issuer_key_pem.clone().into();
    values["webhook"]["caPEM"] = cfg.webhook.ca_pem.clone().into();
    values["webhook"]["crtPEM"] = cfg.webhook.cert_pem.clone().into();
    values["webhook"]["keyPEM"] = cfg.webhook.key_pem.clone().into();
    if ha {
        values["ha"] = true.into();
    }
    values
}

fn install_config(ha: bool) -> ferry::install::InstallConfig {
    // Exactly the defaults `ferry install` parses its flags into.
    let mut args = vec!["install"];
    if ha {
        args.push("--ha");
    }
    install_config_from(&args)
}

/// What `ferry` parses `args` (starting with `install`) into.
fn install_config_from(args: &[&str]) -> ferry::install::InstallConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        install: ferry::install::InstallArgs,
    }
    let cli = Cli::try_parse_from(args).unwrap();
    ferry::install::InstallConfig::from_args(&cli.install).unwrap()
}

fn install_docs(cfg: &ferry::install::InstallConfig) -> Vec<Value> {
    docs(&ferry::yaml::write_stream(
        &ferry::install::render(cfg).unwrap(),
    ))
}

fn helm() -> Command {
    let bin = std::env::var_os("FERRY_HELM").unwrap_or_else(|| "helm".into());
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null());
    cmd
}

fn run_helm(args: &[&str], values: Option<&Value>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = helm();
    cmd.args(args).arg(chart_dir());
    // helm keeps its caches and config here instead of $HOME.
    for var in ["HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"] {
        cmd.env(var, dir.path());
    }
    if let Some(values) = values {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, serde_yaml_ng::to_string(values).unwrap()).unwrap();
        cmd.arg("-f").arg(&file);
    }
    cmd.output()
        .expect("running helm: install it with .ci/setup (or set FERRY_HELM)")
}

fn helm_template(values: Option<&Value>) -> Vec<Value> {
    let out = run_helm(&["template", "ferry"], values);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docs(std::str::from_utf8(&out.stdout).unwrap())
}

fn key(doc: &Value) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (text(&doc["kind"]), text(&doc["metadata"]["name"]))
}

/// Every rendered document passes the schema validation `ferry install`'s output passes.
fn validate(what: &str, docs: &[Value]) {
    let json: Vec<serde_json::Value> = docs
        .iter()
        .map(|d| serde_json::to_value(d).unwrap())
        .collect();
    schema::validate_all(what, &json);
}

/// The webhook material in rendered objects: (Secret tls.crt, tls.key, caBundle), decoded.
fn webhook_material(docs: &[Value]) -> (String, String, String) {
    let b64 = |v: &Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 text"))
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let secret = docs
        .iter()
        .find(|d| key(d) == ("Secret".into(), "ferry-proxy-injector-tls".into()))
        .expect("the injector's Secret");
    let webhook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("the MutatingWebhookConfiguration");
    (
        b64(&secret["data"]["tls.crt"]),
        b64(&secret["data"]["tls.key"]),
        b64(&webhook["webhooks"][0]["clientConfig"]["caBundle"]),
    )
}

/// Replaces the webhook material with markers, to compare the rest.
fn without_webhook_material(docs: &[Value]) -> Vec<Value> {
    let mut docs = docs.to_vec();
    for d in &mut docs {
        if key(d) == ("Secret".into(), "ferry-proxy-injector-tls".into()) {
            d["data"]["tls.crt"] = "crt".into();
            d["data"]["tls.key"] = "key".into();
        }
        if d["kind"] == "MutatingWebhookConfiguration" {
            // Every webhook (per namespace, per pod label) trusts the same generated CA.
            let hooks = d["webhooks"].as_sequence_mut().expect("webhooks");
            let first = hooks[0]["clientConfig"]["caBundle"].clone();
            for hook in hooks {
                assert_eq!(hook["clientConfig"]["caBundle"], first, "one caBundle");
                hook["clientConfig"]["caBundle"] = "ca".into();
            }
        }
    }
    docs.sort_by_key(key);
    docs
}

fn sorted(docs: &[Value]) -> Vec<Value> {
    let mut docs = docs.to_vec();
    docs.sort_by_key(key);
    docs
}

fn assert_same_objects(chart: &[Value], install: &[Value]) {
    let (chart, install) = (sorted(chart), sorted(install));
    let keys = |d: &[Value]| d.iter().map(key).collect::<Vec<_>>();
    assert_eq!(keys(&chart), keys(&install), "chart and install objects");
    for (c, i) in chart.iter().zip(&install) {
        assert_eq!(c, i, "chart and install differ for {:?}", key(i));
    }
}

/// Values with only the identity material (what a Helm user must supply).
fn identity_values(cfg: &ferry::install::InstallConfig, ha: bool) -> Value {
    let mut values = values_with_certs(cfg, ha);
    for field in ["caPEM", "crtPEM", "keyPEM"] {
        values["webhook"][field] = "".into();
    }
    values
}

/// The generated webhook certificate: signed by the generated CA, for the injector
/// Service's names, ECDSA P-256 like `ferry install`'s.
fn assert_generated_webhook_tls(docs: &[Value], namespace: &str) {
    use x509_parser::prelude::*;
    let (crt, key_pem, ca) = webhook_material(docs);
    assert!(key_pem.contains("EC PRIVATE KEY"), "{key_pem}");
    let (_, crt_pem) = parse_x509_pem(crt.as_bytes()).unwrap();
    let cert = crt_pem.parse_x509().unwrap();
    let (_, ca_pem) = parse_x509_pem(ca.as_bytes()).unwrap();
    let ca_cert = ca_pem.parse_x509().unwrap();
    assert!(ca_cert.is_ca());
    assert_eq!(cert.issuer(), ca_cert.subject());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.path().join("crt.pem"), &crt).unwrap();
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "ca.pem",
            "crt.pem",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl (installed by .ci/setup)");
    assert!(
        verify.status.success(),
        "the serving certificate is not signed by the caBundle's CA: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SANs")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    let svc = format!("ferry-proxy-injector.{namespace}.svc");
    assert_eq!(
        sans,
        [
            format!("DNSName({svc})"),
            format!("DNSName({svc}.cluster.local)")
        ]
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!((364..=366).contains(&days), "validity {days} days");
}

#[test]
fn helm_lint_passes_with_the_identity_values() {
    let cfg = install_config(false);
    for ha in [false, true] {
        let out = run_helm(&["lint", "--strict"], Some(&identity_values(&cfg, ha)));
        assert!(
            out.status.success(),
            "helm lint (ha {ha}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn helm_template_without_identity_fails_naming_the_value() {
    // Default values: whichever identity template helm renders first names its value.
    let out = run_helm(&["template", "ferry"], None);
    assert!(!out.status.success(), "rendered without identity material");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        ["trustAnchorsPEM", "issuer.crtPEM", "issuer.keyPEM"]
            .iter()
            .any(|v| stderr.contains(&format!("identity.{v} is required"))),
        "{stderr}"
    );
    // Each missing value alone is named.
    let cfg = install_config(false);
    let mut values = identity_values(&cfg, false);
    values["identity"]["trustAnchorsPEM"] = "".into();
    let out = run_helm(&["template", "ferry"], Some(&values));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("identity.trustAnchorsPEM is required"),
        "{stderr}"
    );
    let mut values = identity_values(&cfg, false);
    values["identity"]["issuer"]["keyPEM"] = "".into();
    let out = run_helm(&["template", "ferry"], Some(&values));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("identity.issuer.keyPEM is required"),
        "{stderr}"
    );
    // A webhook certificate without its key is refused too.
    let mut values = identity_values(&cfg, false);
    values["webhook"]["crtPEM"] = cfg.webhook.cert_pem.clone().into();
    let out = run_helm(&["template", "ferry"], Some(&values));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("webhook.keyPEM is required"), "{stderr}");
}

#[test]
fn helm_template_generates_the_webhook_certificate_and_matches_install() {
    for ha in [false, true] {
        let cfg = install_config(ha);
        let chart = helm_template(Some(&identity_values(&cfg, ha)));
        validate(&format!("helm template (ha {ha})"), &chart);
        assert_generated_webhook_tls(&chart, "ferry");
        let install = install_docs(&cfg);
        assert_same_objects(
            &without_webhook_material(&chart),
            &without_webhook_material(&install),
        );
        assert_eq!(chart.iter().any(|d| d["kind"] == "PodDisruptionBudget"), ha);
    }
}

#[test]
fn helm_template_generates_for_another_namespace() {
    let cfg = install_config(false);
    let mut values = identity_values(&cfg, false);
    values["namespace"] = "mesh".into();
    let chart = helm_template(Some(&values));
    validate("helm template (namespace mesh)", &chart);
    assert_generated_webhook_tls(&chart, "mesh");
    assert!(chart
        .iter()
        .filter(|d| d["kind"] != "Namespace" && !d["metadata"]["namespace"].is_null())
        .all(|d| d["metadata"]["namespace"] == "mesh"));
}

#[test]
fn helm_template_with_every_certificate_renders_what_install_prints() {
    for ha in [false, true] {
        let cfg = install_config(ha);
        let chart = helm_template(Some(&values_with_certs(&cfg, ha)));
        validate(
            &format!("helm template with certificates (ha {ha})"),
            &chart,
        );
        assert_same_objects(&chart, &install_docs(&cfg));
    }
}

#[test]
fn helm_template_takes_the_registry_and_tag_as_install_does() {
    let cfg = install_config_from(&[
        "install",
        "--registry",
        "localhost:5001/me",
        "--tag",
        "9.9.9",
    ]);
    let mut values = values_with_certs(&cfg, false);
    values["registry"] = "localhost:5001/me".into();
    values["version"] = "9.9.9".into();
    let chart = helm_template(Some(&values));
    assert_same_objects(&chart, &install_docs(&cfg));
    let text = serde_json::to_string(&chart).unwrap();
    assert!(
        text.contains("\"localhost:5001/me/ferry-control:9.9.9\""),
        "{text}"
    );
}
