//! The Helm chart `charts/ferry` and `ferry install` agree, proved without a helm binary:
//!
//! 1. the checked-in chart is exactly what `ferry::chart::generate` makes from the typed
//!    objects today (regenerate with `FERRY_UPDATE_GOLDEN=1`);
//! 2. rendering the checked-in templates with `values.yaml` (and with `ha: true`) gives the
//!    same objects as `ferry install` with the same certificates.
//!
//! Rendering uses a small interpreter of the Go-template subset the generator emits; it
//! refuses any other construct, so a hand edit outside that subset fails here instead of
//! being silently misread.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;

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

/// Looks up `.Values.a.b` in the values tree.
fn lookup<'a>(values: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(values, |v, k| {
        v.get(k).unwrap_or_else(|| panic!("no value {path}"))
    })
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Renders one template with the subset: `{{ .Values.x }}`, `| toJson`, `| b64enc`,
/// `if .Values.x` / `else` / `end`, and `{{-` trimming.
fn render(template: &str, values: &Value) -> String {
    let mut out = String::new();
    // One frame per open `if`: whether its current branch emits.
    let mut stack: Vec<bool> = Vec::new();
    let emitting = |stack: &[bool]| stack.iter().all(|on| *on);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let literal = &rest[..start];
        if emitting(&stack) {
            out.push_str(literal);
        }
        let end = rest[start..].find("}}").expect("unclosed action") + start;
        let mut action = &rest[start + 2..end];
        rest = &rest[end + 2..];
        if let Some(a) = action.strip_prefix('-') {
            action = a;
            if emitting(&stack) {
                let trimmed = out.trim_end().len();
                out.truncate(trimmed);
            }
        }
        assert!(
            !action.ends_with('-'),
            "`-}}` is not in the subset: {action}"
        );
        let action = action.trim();
        let words: Vec<&str> = action.split_whitespace().collect();
        match words.as_slice() {
            ["if", cond] => {
                let path = cond.strip_prefix(".Values.").expect("if on a value");
                let on = lookup(values, path).as_bool().expect("if on a boolean");
                stack.push(on);
            }
            ["else"] => {
                let top = stack.last_mut().expect("else without if");
                *top = !*top;
            }
            ["end"] => {
                stack.pop().expect("end without if");
            }
            [value] | [value, "|", _] => {
                let path = value
                    .strip_prefix(".Values.")
                    .unwrap_or_else(|| panic!("unsupported action {action}"));
                let text = scalar_text(lookup(values, path));
                let rendered = match words.get(2) {
                    None => text,
                    Some(&"toJson") => serde_json::to_string(&text).unwrap(),
                    Some(&"b64enc") => base64::engine::general_purpose::STANDARD.encode(text),
                    Some(other) => panic!("unsupported function {other}"),
                };
                if emitting(&stack) {
                    out.push_str(&rendered);
                }
            }
            _ => panic!("unsupported action {{{{{action}}}}}"),
        }
    }
    assert!(stack.is_empty(), "unclosed if");
    out.push_str(rest);
    out
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn render_chart(values: &Value) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut all = Vec::new();
    for path in names {
        let rendered = render(&std::fs::read_to_string(&path).unwrap(), values);
        all.extend(docs(&rendered));
    }
    all
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
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        install: ferry::install::InstallArgs,
    }
    let mut args = vec!["install"];
    if ha {
        args.push("--ha");
    }
    let cli = Cli::try_parse_from(args).unwrap();
    ferry::install::InstallConfig::from_args(&cli.install).unwrap()
}

fn install_docs(cfg: &ferry::install::InstallConfig) -> Vec<Value> {
    docs(&ferry::yaml::write_stream(
        &ferry::install::render(cfg).unwrap(),
    ))
}

#[test]
fn chart_with_default_values_renders_what_install_prints() {
    let cfg = install_config(false);
    let chart = render_chart(&values_with_certs(&cfg, false));
    let install = install_docs(&cfg);
    assert_eq!(chart.len(), install.len());
    for (c, i) in chart.iter().zip(&install) {
        assert_eq!(
            c, i,
            "chart and install differ for {:?} {:?}",
            i["kind"], i["metadata"]["name"]
        );
    }
}

#[test]
fn chart_with_ha_renders_what_install_ha_prints() {
    let cfg = install_config(true);
    let chart = render_chart(&values_with_certs(&cfg, true));
    let install = install_docs(&cfg);
    assert_eq!(chart, install);
    assert!(chart.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
}

#[test]
fn renderer_refuses_constructs_outside_the_subset() {
    let values: Value = serde_yaml_ng::from_str("a: x\nha: true\n").unwrap();
    assert_eq!(
        render("k: {{ .Values.a | toJson }}\n", &values),
        "k: \"x\"\n"
    );
    assert_eq!(
        render(
            "x\n{{- if .Values.ha }}\ny\n{{- else }}\nz\n{{- end }}\n",
            &values
        ),
        "x\ny\n"
    );
    for bad in [
        "{{ include \"x\" . }}",
        "{{ .Values.a | quote }}",
        "{{ range .Values.a }}",
    ] {
        let result = std::panic::catch_unwind(|| render(bad, &values));
        assert!(result.is_err(), "{bad} must be refused");
    }
}
