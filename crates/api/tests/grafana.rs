//! The Grafana dashboards in `grafana/dashboards/` are written against the proxy's metrics:
//! every metric a PromQL query names is one of ferry-api's metric constants (histograms with
//! their `_bucket`/`_sum`/`_count` series), and every label it matches or groups by is one the
//! proxy or the Prometheus service discovery puts on the series. A renamed metric fails here
//! instead of leaving a blank panel.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "sum",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "avg",
    "max",
    "min",
    "count",
    "time",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "topk",
    "bottomk",
    "clamp_min",
    "clamp_max",
    "label_values",
    "vector",
];

/// Labels the Prometheus service discovery (`/api/v1/prometheus/targets`) adds to every
/// series, plus the histogram's `le` and `proxy_build_info`'s `version`.
const SD_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "deployment",
    "serviceaccount",
    "le",
    "version",
];

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The metric names ferry-api defines (`pub const X: &str = "...";`, labels excluded).
fn known_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let src = include_str!("../src/metrics.rs");
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    for line in src.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = \"") else {
            continue;
        };
        let value = value.trim_end_matches("\";").to_string();
        if name.starts_with("LABEL_") {
            labels.insert(value);
        } else {
            metrics.insert(value);
        }
    }
    (metrics, labels)
}

/// Every PromQL expression of a dashboard: panel targets and query variables.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// Splits PromQL into (metric-ish identifiers, label names), skipping strings, range
/// durations and `$variables`.
fn parse(expr: &str) -> (Vec<String>, Vec<String>) {
    let (mut names, mut labels) = (Vec::new(), Vec::new());
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Inside `{...}` or `by (...)`: identifiers are labels.
    let mut in_braces = false;
    let mut grouping = 0usize;
    let mut last_word = String::new();
    // `label_values(selector, label)`: after its comma, the identifier is a label.
    let mut label_values = false;
    let mut after_comma = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if in_braces || grouping > 0 || after_comma {
                labels.push(word.clone());
            } else if !KEYWORDS.contains(&word.as_str()) {
                names.push(word.clone());
            }
            last_word = word;
            continue;
        }
        match c {
            '(' if last_word == "label_values" => label_values = true,
            ',' if label_values && !in_braces => after_comma = true,
            ')' if label_values => (label_values, after_comma) = (false, false),
            '{' => in_braces = true,
            '}' => in_braces = false,
            '(' if grouping > 0 || matches!(last_word.as_str(), "by" | "without") => grouping += 1,
            ')' if grouping > 0 => grouping -= 1,
            _ => {}
        }
        if !c.is_whitespace() {
            last_word.clear();
        }
        i += 1;
    }
    (names, labels)
}

#[test]
fn every_promql_metric_and_label_is_the_proxys() {
    let (metrics, known_labels) = known_metrics();
    assert!(metrics.contains("response_total"), "{metrics:?}");
    let dashboards = dashboards();
    assert!(dashboards.len() >= 4, "expected the four Ferry dashboards");
    let mut used = BTreeSet::new();
    for (file, dash) in &dashboards {
        assert!(
            dash["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("ferry-")),
            "{file}: uid"
        );
        assert!(
            dash["panels"].as_array().is_some_and(|p| !p.is_empty()),
            "{file}: panels"
        );
        let mut all = Vec::new();
        exprs(dash, &mut all);
        assert!(!all.is_empty(), "{file} has no queries");
        for expr in &all {
            let (names, labels) = parse(expr);
            for name in names {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| metrics.contains(*b))
                    .unwrap_or(&name);
                assert!(
                    metrics.contains(base),
                    "{file}: {name:?} in `{expr}` is not a metric ferry-api defines ({metrics:?})"
                );
                used.insert(base.to_string());
            }
            for label in labels {
                let ok = known_labels.contains(&label)
                    || SD_LABELS.contains(&label.as_str())
                    || label.starts_with("dst_");
                assert!(
                    ok,
                    "{file}: label {label:?} in `{expr}` is not one the proxy exports"
                );
            }
        }
    }
    // The golden metrics are all there.
    for m in [
        "request_total",
        "response_total",
        "response_latency_ms",
        "tcp_open_connections",
    ] {
        assert!(used.contains(m), "no dashboard uses {m}");
    }
}

#[test]
fn the_parser_finds_names_and_labels() {
    let (names, labels) = parse(
        r#"histogram_quantile(0.95, sum(rate(response_latency_ms_bucket{direction="inbound", namespace="$namespace"}[1m])) by (le, deployment))"#,
    );
    assert_eq!(names, ["response_latency_ms_bucket"]);
    assert_eq!(labels, ["direction", "namespace", "le", "deployment"]);
    let (names, labels) =
        parse(r#"label_values(request_total{namespace="$namespace"}, deployment)"#);
    assert_eq!(
        (names, labels),
        (
            vec!["request_total".to_string()],
            vec!["namespace".to_string(), "deployment".to_string()]
        )
    );
}
