//! `Rollout` documents: parsed from YAML, validated into a [`RolloutDef`] the controller runs,
//! or refused with the line and field of each error (as route documents are).

use std::time::Duration;

use ferry_api::rollout::{self as api, Rollout, RolloutSpec, StepMatch};

use crate::routes::{self, locate, DocumentError, DocumentErrors, DEFAULT_NAMESPACE};

/// The analysis interval when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest analysis interval: a rate needs scrapes in its window.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Canary requests needed in a window before it is judged, when not given.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;

/// A validated rollout: what the controller runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutDef {
    /// Its namespace (that of every Service it names).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The spec as written (shown by the API).
    pub spec: RolloutSpec,
    /// The target Service's port.
    pub port: u16,
    /// The stable backend's port.
    pub stable_port: u16,
    /// The canary backend's port.
    pub canary_port: u16,
    /// The steps, parsed.
    pub steps: Vec<StepKind>,
    /// How steps are judged.
    pub analysis: Option<Thresholds>,
    /// A digest of what defines a run (service, backends, steps): another one starts a new
    /// run.
    pub revision: String,
}

/// One step, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// A share of all requests to the canary, for `bake`.
    Weight {
        /// Percent, 0-100.
        weight: u8,
        /// How long the step runs.
        bake: Duration,
    },
    /// The matching requests to the canary, for `bake`.
    Match {
        /// The rules.
        rules: StepMatch,
        /// How long the step runs.
        bake: Duration,
    },
    /// A manual gate.
    Pause,
    /// A gate a webhook opens by answering 200.
    Confirm {
        /// The `http://` URL asked.
        url: String,
    },
}

impl RolloutDef {
    /// The Service stable traffic goes to (a Deployment backend's fronting Service).
    pub fn stable_service(&self) -> String {
        self.spec.stable.service_name()
    }

    /// The Service canary traffic goes to (a Deployment backend's fronting Service).
    pub fn canary_service(&self) -> String {
        self.spec.canary.service_name()
    }
}

impl StepKind {
    /// The step's bake time (none for a gate).
    pub fn bake(&self) -> Option<Duration> {
        match self {
            Self::Weight { bake, .. } | Self::Match { bake, .. } => Some(*bake),
            Self::Pause | Self::Confirm { .. } => None,
        }
    }
}

/// The analysis, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// How often, and the window each analysis covers.
    pub interval: Duration,
    /// Canary requests needed to judge.
    pub min_requests: u64,
    /// Failed analyses that roll back.
    pub failure_limit: u32,
    /// The canary's success rate floor, percent.
    pub success_min: Option<f64>,
    /// Most points the canary's success rate may be below stable's.
    pub success_max_drop: Option<f64>,
    /// The canary's p99 ceiling, ms.
    pub p99_max_ms: Option<f64>,
    /// Most the canary's p99 may be as a multiple of stable's.
    pub p99_max_ratio: Option<f64>,
}

/// A field error before it is located.
struct FieldError {
    field: String,
    message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses and validates every `Rollout` of a YAML stream; route documents (and v1
/// Services) beside them are skipped, any other kind is an error. Any invalid document
/// fails the whole text.
pub fn parse(text: &str) -> Result<Vec<RolloutDef>, DocumentErrors> {
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for (start, doc) in routes::split_documents(text) {
        match parse_document(doc) {
            Ok(Some(def)) => defs.push(def),
            Ok(None) => {}
            Err(e) => errors.extend(e.into_iter().map(|mut e| {
                e.line += start;
                e
            })),
        }
    }
    for (i, def) in defs.iter().enumerate() {
        if defs[..i]
            .iter()
            .any(|d| d.namespace == def.namespace && d.name == def.name)
        {
            errors.push(DocumentError {
                line: 1,
                field: "metadata.name".into(),
                message: format!(
                    "Duplicate value: rollout {}/{} is defined twice",
                    def.namespace, def.name
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(defs)
    } else {
        Err(DocumentErrors(errors))
    }
}

fn parse_document(doc: &str) -> Result<Option<RolloutDef>, Vec<DocumentError>> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(doc).map_err(|e| vec![routes::syntax_error(&e)])?;
    if value.is_null() {
        return Ok(None);
    }
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    match kind {
        api::KIND => {}
        kind if routes::reads_kind(kind) => return Ok(None),
        other => {
            return Err(vec![DocumentError {
                line: locate(doc, "kind"),
                field: "kind".into(),
                message: format!("Unsupported value: {other:?}: supported values: \"Rollout\" (route, policy, Service and Namespace documents are skipped)"),
            }])
        }
    }
    let rollout: Rollout =
        serde_yaml_ng::from_str(doc).map_err(|e| vec![routes::syntax_error(&e)])?;
    validate(rollout).map(Some).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| DocumentError {
                line: locate(doc, &e.field),
                field: e.field,
                message: e.message,
            })
            .collect()
    })
}

/// Validates a `Rollout` read from the Kubernetes API: every error, as `field: message`.
pub fn from_rollout(rollout: Rollout) -> Result<RolloutDef, String> {
    validate(rollout).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn port(field: &str, port: i64, errors: &mut Vec<FieldError>) -> u16 {
    match u16::try_from(port) {
        Ok(p) if p > 0 => p,
        _ => {
            errors.push(err(
                field,
                format!("Invalid value: {port}: must be between 1 and 65535"),
            ));
            0
        }
    }
}

fn name(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        errors.push(err(
            field,
            format!("Invalid value: {value:?}: must be a DNS label (lowercase letters, digits and '-', at most 63)"),
        ));
    }
}

/// A backend names a Service (no `kind`, or `Service`) or a Deployment, whose fronting
/// Service (`<name>-ferry`) must still be a DNS label.
fn backend(field: &str, backend: &api::BackendRef, errors: &mut Vec<FieldError>) {
    match backend.kind.as_deref() {
        None | Some(api::SERVICE_KIND) => name(&format!("{field}.name"), &backend.name, errors),
        Some(api::DEPLOYMENT_KIND) => {
            name(&format!("{field}.name"), &backend.name, errors);
            let longest = 63 - api::FRONTING_SUFFIX.len();
            if backend.name.len() > longest {
                errors.push(err(
                    format!("{field}.name"),
                    format!(
                        "Invalid value: {:?}: a Deployment backend's name has at most {longest} characters (its Service is {:?})",
                        backend.name,
                        backend.service_name()
                    ),
                ));
            }
        }
        Some(other) => errors.push(err(
            format!("{field}.kind"),
            format!("Unsupported value: {other:?}: supported values: \"Service\", \"Deployment\""),
        )),
    }
}

fn duration(field: &str, text: &str, errors: &mut Vec<FieldError>) -> Duration {
    match humantime::parse_duration(text) {
        Ok(d) => d,
        Err(e) => {
            errors.push(err(
                field,
                format!("Invalid value: {text:?}: not a duration ({e}; e.g. 30s, 2m)"),
            ));
            Duration::ZERO
        }
    }
}

fn percent(field: &str, value: f64, errors: &mut Vec<FieldError>) {
    if !(0.0..=100.0).contains(&value) {
        errors.push(err(
            field,
            format!("Invalid value: {value}: must be between 0 and 100 (percent)"),
        ));
    }
}

fn positive(field: &str, value: f64, errors: &mut Vec<FieldError>) {
    if !(value.is_finite() && value > 0.0) {
        errors.push(err(
            field,
            format!("Invalid value: {value}: must be greater than 0"),
        ));
    }
}

fn validate(rollout: Rollout) -> Result<RolloutDef, Vec<FieldError>> {
    let mut errors = Vec::new();
    if rollout.api_version != api::API_VERSION {
        errors.push(err(
            "apiVersion",
            format!(
                "Unsupported value: {:?}: supported values: {:?}",
                rollout.api_version,
                api::API_VERSION
            ),
        ));
    }
    name("metadata.name", &rollout.metadata.name, &mut errors);
    let namespace = rollout
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let spec = &rollout.spec;
    name("spec.service.name", &spec.service.name, &mut errors);
    let target = port("spec.service.port", spec.service.port, &mut errors);
    backend("spec.stable", &spec.stable, &mut errors);
    backend("spec.canary", &spec.canary, &mut errors);
    let stable_port = spec
        .stable
        .port
        .map_or(target, |p| port("spec.stable.port", p, &mut errors));
    let canary_port = spec
        .canary
        .port
        .map_or(target, |p| port("spec.canary.port", p, &mut errors));
    if spec.stable.deployment().is_some() && spec.stable.deployment() == spec.canary.deployment() {
        errors.push(err(
            "spec.canary",
            "Invalid value: the canary must be another Deployment than stable",
        ));
    } else if spec.stable.service_name() == spec.canary.service_name() && stable_port == canary_port
    {
        errors.push(err(
            "spec.canary",
            "Invalid value: the canary must be another Service (or port) than stable",
        ));
    }
    if spec.steps.is_empty() {
        errors.push(err("spec.steps", "Required value: at least one step"));
    }
    let steps = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| step(&format!("spec.steps[{i}]"), s, &mut errors))
        .collect();
    let analysis = spec.analysis.as_ref().map(|a| thresholds(a, &mut errors));
    if let Some(hook) = &spec.webhook {
        if !hook.url.starts_with("http://") {
            errors.push(err(
                "spec.webhook.url",
                format!("Invalid value: {:?}: must be an http:// URL", hook.url),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let revision = revision(spec);
    Ok(RolloutDef {
        namespace,
        name: rollout.metadata.name,
        spec: rollout.spec,
        port: target,
        stable_port,
        canary_port,
        steps,
        analysis,
        revision,
    })
}

fn step(field: &str, s: &api::Step, errors: &mut Vec<FieldError>) -> StepKind {
    let given = [
        s.weight.is_some(),
        s.matches.is_some(),
        s.pause.is_some(),
        s.confirm.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        errors.push(err(
            field,
            "Invalid value: a step has exactly one of `weight`, `match`, `pause` and `confirm`",
        ));
        return StepKind::Pause;
    }
    let bake = match &s.bake {
        Some(text) => duration(&format!("{field}.bake"), text, errors),
        None => Duration::ZERO,
    };
    if let Some(weight) = s.weight {
        let weight = match u8::try_from(weight) {
            Ok(w) if w <= 100 => w,
            _ => {
                errors.push(err(
                    format!("{field}.weight"),
                    format!("Invalid value: {weight}: must be between 0 and 100 (percent)"),
                ));
                0
            }
        };
        return StepKind::Weight { weight, bake };
    }
    if s.bake.is_some() && s.pause.is_some() {
        errors.push(err(
            format!("{field}.bake"),
            "Forbidden: a pause step waits until promoted; it has no bake",
        ));
    }
    if let Some(hook) = &s.confirm {
        if s.bake.is_some() {
            errors.push(err(
                format!("{field}.bake"),
                "Forbidden: a confirm step waits for its webhook; it has no bake",
            ));
        }
        if !hook.url.starts_with("http://") {
            errors.push(err(
                format!("{field}.confirm.url"),
                format!("Invalid value: {:?}: must be an http:// URL", hook.url),
            ));
        }
        return StepKind::Confirm {
            url: hook.url.clone(),
        };
    }
    if let Some(rules) = &s.matches {
        let field = format!("{field}.match");
        if rules.headers.is_empty() && rules.cookies.is_empty() {
            errors.push(err(
                &field,
                "Required value: at least one of `headers` and `cookies`",
            ));
        }
        for (i, h) in rules.headers.iter().enumerate() {
            let f = format!("{field}.headers[{i}]");
            if h.name.is_empty() || !h.name.bytes().all(is_token) {
                errors.push(err(
                    format!("{f}.name"),
                    format!("Invalid value: {:?}: not an HTTP header name", h.name),
                ));
            }
            match h.match_type.as_str() {
                "Exact" | "Prefix" | "Suffix" => {}
                "RegularExpression" => {
                    if let Err(e) = regex::Regex::new(&h.value) {
                        errors.push(err(
                            format!("{f}.value"),
                            format!("Invalid value: {:?}: not a regular expression: {e}", h.value),
                        ));
                    }
                }
                other => errors.push(err(
                    format!("{f}.type"),
                    format!("Unsupported value: {other:?}: supported values: \"Exact\", \"Prefix\", \"Suffix\", \"RegularExpression\""),
                )),
            }
        }
        // Each becomes a header match, and a match names a header once.
        let mut seen: Vec<String> = Vec::new();
        for (i, h) in rules.headers.iter().enumerate() {
            let lower = h.name.to_ascii_lowercase();
            if seen.contains(&lower) || (lower == "cookie" && !rules.cookies.is_empty()) {
                errors.push(err(
                    format!("{field}.headers[{i}].name"),
                    format!(
                        "Duplicate value: {:?}: a header is matched once (cookies by `cookies`)",
                        h.name
                    ),
                ));
            }
            seen.push(lower);
        }
        if rules.cookies.len() > 1 {
            errors.push(err(
                format!("{field}.cookies"),
                "Too many: at most one cookie rule per step",
            ));
        }
        for (i, c) in rules.cookies.iter().enumerate() {
            let f = format!("{field}.cookies[{i}]");
            if c.name.is_empty() || !c.name.bytes().all(is_token) {
                errors.push(err(
                    format!("{f}.name"),
                    format!("Invalid value: {:?}: not a cookie name", c.name),
                ));
            }
            if c.value
                .bytes()
                .any(|b| b == b';' || b == b',' || b.is_ascii_whitespace())
            {
                errors.push(err(
                    format!("{f}.value"),
                    format!(
                        "Invalid value: {:?}: a cookie value has no ';', ',' or spaces",
                        c.value
                    ),
                ));
            }
        }
        return StepKind::Match {
            rules: rules.clone(),
            bake,
        };
    }
    StepKind::Pause
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn thresholds(a: &api::Analysis, errors: &mut Vec<FieldError>) -> Thresholds {
    let interval = match &a.interval {
        Some(text) => {
            let d = duration("spec.analysis.interval", text, errors);
            if d < MIN_INTERVAL && !d.is_zero() {
                errors.push(err(
                    "spec.analysis.interval",
                    format!("Invalid value: {text:?}: must be at least 1s"),
                ));
            }
            d
        }
        None => DEFAULT_INTERVAL,
    };
    let min_requests = match a.min_requests {
        Some(n) if n >= 1 => n as u64,
        Some(n) => {
            errors.push(err(
                "spec.analysis.minRequests",
                format!("Invalid value: {n}: must be at least 1"),
            ));
            0
        }
        None => DEFAULT_MIN_REQUESTS,
    };
    let failure_limit = match a.failure_limit {
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => n as u32,
        Some(n) => {
            errors.push(err(
                "spec.analysis.failureLimit",
                format!("Invalid value: {n}: must be at least 1"),
            ));
            0
        }
        None => 1,
    };
    let sr = a.success_rate.as_ref();
    let lat = a.latency_p99.as_ref();
    let t = Thresholds {
        interval,
        min_requests,
        failure_limit,
        success_min: sr.and_then(|s| s.min),
        success_max_drop: sr.and_then(|s| s.max_drop),
        p99_max_ms: lat.and_then(|l| l.max_ms),
        p99_max_ratio: lat.and_then(|l| l.max_ratio),
    };
    if let Some(v) = t.success_min {
        percent("spec.analysis.successRate.min", v, errors);
    }
    if let Some(v) = t.success_max_drop {
        percent("spec.analysis.successRate.maxDrop", v, errors);
    }
    if let Some(v) = t.p99_max_ms {
        positive("spec.analysis.latencyP99.maxMs", v, errors);
    }
    if let Some(v) = t.p99_max_ratio {
        positive("spec.analysis.latencyP99.maxRatio", v, errors);
    }
    let none = [
        t.success_min,
        t.success_max_drop,
        t.p99_max_ms,
        t.p99_max_ratio,
    ]
    .iter()
    .all(Option::is_none);
    if none {
        errors.push(err(
            "spec.analysis",
            "Required value: at least one threshold (successRate.min, successRate.maxDrop, latencyP99.maxMs, latencyP99.maxRatio)",
        ));
    }
    t
}

/// A digest of what defines a run: the Service, the backends and the steps.
fn revision(spec: &RolloutSpec) -> String {
    let defining = serde_json::json!([spec.service, spec.stable, spec.canary, spec.steps]);
    let digest = ring::digest::digest(&ring::digest::SHA256, defining.to_string().as_bytes());
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: ferry.io/v1alpha1
kind: Rollout
metadata: {name: voting, namespace: emojivoto}
spec:
  service: {name: voting-svc, port: 8080}
  stable: {name: voting-v1}
  canary: {name: voting-v2}
  steps:
  - weight: 10
    bake: 30s
  - match:
      headers: [{name: x-user-email, type: Suffix, value: '@example.com'}]
      cookies: [{name: beta, value: '1'}]
    bake: 1m
  - pause: {}
  analysis:
    interval: 10s
    minRequests: 50
    successRate: {min: 99, maxDrop: 2}
    latencyP99: {maxMs: 500, maxRatio: 1.5}
";

    #[test]
    fn a_good_rollout_is_read_with_its_defaults() {
        let defs = parse(GOOD).unwrap();
        let def = &defs[0];
        assert_eq!(
            (def.namespace.as_str(), def.name.as_str()),
            ("emojivoto", "voting")
        );
        assert_eq!(
            (def.port, def.stable_port, def.canary_port),
            (8080, 8080, 8080)
        );
        assert_eq!(
            def.steps[0],
            StepKind::Weight {
                weight: 10,
                bake: Duration::from_secs(30)
            }
        );
        assert!(matches!(def.steps[1], StepKind::Match { .. }));
        assert_eq!(def.steps[2], StepKind::Pause);
        let a = def.analysis.as_ref().unwrap();
        assert_eq!(a.interval, Duration::from_secs(10));
        assert_eq!((a.min_requests, a.failure_limit), (50, 1));
        assert_eq!(def.revision.len(), 12);
    }

    #[test]
    fn the_revision_follows_backends_and_steps_not_thresholds() {
        let base = parse(GOOD).unwrap()[0].revision.clone();
        let thresholds = parse(&GOOD.replace("maxDrop: 2", "maxDrop: 3")).unwrap();
        assert_eq!(thresholds[0].revision, base);
        let canary = parse(&GOOD.replace("voting-v2", "voting-v3")).unwrap();
        assert_ne!(canary[0].revision, base);
    }

    #[test]
    fn route_documents_beside_it_are_skipped_and_other_kinds_refused() {
        let text = format!("{GOOD}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: x}}\nspec: {{}}\n");
        assert_eq!(parse(&text).unwrap().len(), 1);
        let policy = format!("{GOOD}---\napiVersion: policy.ferry.io/v1alpha1\nkind: Server\nmetadata: {{name: x}}\nspec: {{}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n");
        assert_eq!(
            parse(&policy).unwrap().len(),
            1,
            "policy documents sit beside rollouts too"
        );
        let e = parse(&format!("{GOOD}---\napiVersion: v1\nkind: ConfigMap\n")).unwrap_err();
        assert_eq!(e.0[0].line, 23);
        assert_eq!(e.0[0].field, "kind");
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_fields_are_named_with_their_line() {
        assert_eq!(
            error_of(&GOOD.replace("weight: 10", "weight: 110")),
            "line 9: spec.steps[0].weight: Invalid value: 110: must be between 0 and 100 (percent)"
        );
        assert_eq!(
            error_of(&GOOD.replace("bake: 30s", "bake: soon")),
            "line 10: spec.steps[0].bake: Invalid value: \"soon\": not a duration (expected number at 0; e.g. 30s, 2m)"
        );
        assert_eq!(
            error_of(&GOOD.replace("type: Suffix", "type: Glob")),
            "line 12: spec.steps[1].match.headers[0].type: Unsupported value: \"Glob\": supported values: \"Exact\", \"Prefix\", \"Suffix\", \"RegularExpression\""
        );
        assert_eq!(
            error_of(&GOOD.replace("min: 99", "min: 120")),
            "line 19: spec.analysis.successRate.min: Invalid value: 120: must be between 0 and 100 (percent)"
        );
        assert_eq!(
            error_of(&GOOD.replace("minRequests: 50", "minRequests: 0")),
            "line 18: spec.analysis.minRequests: Invalid value: 0: must be at least 1"
        );
        assert_eq!(
            error_of(&GOOD.replace("port: 8080", "port: 0")),
            "line 5: spec.service.port: Invalid value: 0: must be between 1 and 65535"
        );
        assert_eq!(
            error_of(&GOOD.replace("voting-v2", "voting-v1")),
            "line 7: spec.canary: Invalid value: the canary must be another Service (or port) than stable"
        );
        assert_eq!(
            error_of(&GOOD.replace("  - pause: {}\n", "  - pause: {}\n    weight: 5\n")),
            "line 15: spec.steps[2]: Invalid value: a step has exactly one of `weight`, `match`, `pause` and `confirm`"
        );
        assert_eq!(
            error_of(&GOOD.replace("  - pause: {}\n", "  - pause: {}\n    bake: 1s\n")),
            "line 16: spec.steps[2].bake: Forbidden: a pause step waits until promoted; it has no bake"
        );
    }

    #[test]
    fn unknown_fields_and_missing_ones_are_refused() {
        assert_eq!(
            error_of(&GOOD.replace("    bake: 30s", "    bake: 30s\n    wait: 1s")),
            "line 11: spec.steps[0]: unknown field `wait`, expected one of `weight`, `match`, `pause`, `confirm`, `bake`"
        );
        let no_canary = GOOD.replace("  canary: {name: voting-v2}\n", "");
        assert!(
            error_of(&no_canary).contains("missing field `canary`"),
            "{}",
            error_of(&no_canary)
        );
        let no_thresholds = GOOD
            .replace("    successRate: {min: 99, maxDrop: 2}\n", "")
            .replace("    latencyP99: {maxMs: 500, maxRatio: 1.5}\n", "");
        assert_eq!(
            error_of(&no_thresholds),
            "line 16: spec.analysis: Required value: at least one threshold (successRate.min, successRate.maxDrop, latencyP99.maxMs, latencyP99.maxRatio)"
        );
    }

    #[test]
    fn a_confirm_step_names_an_http_webhook_and_has_no_bake() {
        let confirm = GOOD.replace(
            "  - pause: {}\n",
            "  - confirm: {url: 'http://bot:8080/ok'}\n",
        );
        assert_eq!(
            parse(&confirm).unwrap()[0].steps[2],
            StepKind::Confirm {
                url: "http://bot:8080/ok".into()
            }
        );
        assert_eq!(
            error_of(&confirm.replace("http://bot", "https://bot")),
            "line 15: spec.steps[2].confirm.url: Invalid value: \"https://bot:8080/ok\": must be an http:// URL"
        );
        assert_eq!(
            error_of(&confirm.replace("/ok'}\n", "/ok'}\n    bake: 1s\n")),
            "line 16: spec.steps[2].bake: Forbidden: a confirm step waits for its webhook; it has no bake"
        );
    }

    #[test]
    fn deployment_backends_are_fronted_by_their_own_services() {
        let text = GOOD
            .replace("{name: voting-v1}", "{kind: Deployment, name: voting-v1}")
            .replace("{name: voting-v2}", "{kind: Deployment, name: voting-v2}");
        let def = &parse(&text).unwrap()[0];
        assert_eq!(
            (def.stable_service().as_str(), def.canary_service().as_str()),
            ("voting-v1-ferry", "voting-v2-ferry")
        );
        assert_eq!(def.spec.canary.deployment(), Some("voting-v2"));
        assert_ne!(def.revision, parse(GOOD).unwrap()[0].revision);
        // A Service and a Deployment of the same name are different backends.
        let mixed = GOOD.replace("{name: voting-v2}", "{kind: Deployment, name: voting-v1}");
        assert_eq!(
            parse(&mixed).unwrap()[0].canary_service(),
            "voting-v1-ferry"
        );
        assert_eq!(
            error_of(&text.replace("name: voting-v2}", "name: voting-v1}")),
            "line 7: spec.canary: Invalid value: the canary must be another Deployment than stable"
        );
        assert_eq!(
            error_of(&GOOD.replace("{name: voting-v2}", "{kind: StatefulSet, name: voting-v2}")),
            "line 7: spec.canary.kind: Unsupported value: \"StatefulSet\": supported values: \"Service\", \"Deployment\""
        );
        let long = "v".repeat(60);
        assert!(error_of(&text.replace("voting-v2}", &format!("{long}}}")))
            .contains("a Deployment backend's name has at most 57 characters"));
        assert!(
            error_of(&GOOD.replace("{name: voting-v2}", "{deployment: voting-v2}"))
                .contains("unknown field `deployment`, expected one of `kind`, `name`, `port`")
        );
    }

    #[test]
    fn a_rollout_defined_twice_is_refused() {
        let text = format!("{GOOD}---\n{GOOD}");
        assert!(error_of(&text).contains("rollout emojivoto/voting is defined twice"));
    }
}
