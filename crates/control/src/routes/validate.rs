//! Validation of route documents as a Kubernetes API server with the Gateway API v1.6.1
//! CRDs (experimental channel) installed would do it: the structural OpenAPI schema
//! (required fields, enums, lengths, patterns, ranges, item counts, list keys) and each
//! `x-kubernetes-validations` CEL rule of `HTTPRoute` and `GRPCRoute`, written out by hand
//! with the rule's own message. Errors name the field the way the API server does
//! (`spec.rules[0].matches[0].path`) and read like its causes.
//!
//! Required fields, enum values of typed fields and unknown fields are refused earlier, by
//! serde, when the document is read. What this module does not check: CORS and
//! ExternalAuth filter bodies and `sessionPersistence` (Ferry implements neither; their
//! presence is refused when a route is compiled, [`super::policy`]).

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use super::gateway::*;

/// One reason a document is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the API server names it: `spec.rules[0].backendRefs[1].weight`.
    pub field: String,
    /// What is wrong, as the API server words it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All of a document's errors, in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static GROUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static KIND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$").unwrap());
static DNS_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static HEADER_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$").unwrap());
static HEADER_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[!-~]+([\t ]?[!-~]+)*$").unwrap());
static PATH_CHARS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$").unwrap()
});
static GRPC_SERVICE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$").unwrap());
static GRPC_METHOD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z_0-9]*$").unwrap());

const PAT_DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const PAT_GROUP: &str = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const PAT_KIND: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
const PAT_DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const PAT_HOSTNAME: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const PAT_HEADER_NAME: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";
const PAT_HEADER_VALUE: &str = r"^[!-~]+([\t ]?[!-~]+)*$";
const PAT_DURATION: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// Collects errors under a moving field path.
struct V {
    errors: Vec<FieldError>,
}

impl V {
    fn new() -> Self {
        Self { errors: Vec::new() }
    }

    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A failed CEL rule: the API server reports the rule's message on the object.
    fn rule(&mut self, field: &str, ok: bool, message: &str) {
        if !ok {
            self.push(field, format!("Invalid value: {message}"));
        }
    }

    fn string(&mut self, field: &str, value: &str, min: usize, max: usize) {
        if value.len() < min {
            self.push(
                field,
                format!(
                    "Invalid value: {value:?}: {field} in body should be at least {min} chars long"
                ),
            );
        }
        if value.len() > max {
            self.push(field, format!("Too long: may not be more than {max} bytes"));
        }
    }

    fn pattern(&mut self, field: &str, value: &str, re: &Regex, pattern: &str) {
        if !re.is_match(value) {
            self.push(
                field,
                format!("Invalid value: {value:?}: {field} in body should match '{pattern}'"),
            );
        }
    }

    fn range(&mut self, field: &str, value: i64, min: Option<i64>, max: Option<i64>) {
        if let Some(min) = min {
            if value < min {
                self.push(
                    field,
                    format!("Invalid value: {value}: {field} in body should be greater than or equal to {min}"),
                );
            }
        }
        if let Some(max) = max {
            if value > max {
                self.push(
                    field,
                    format!("Invalid value: {value}: {field} in body should be less than or equal to {max}"),
                );
            }
        }
    }

    fn max_items(&mut self, field: &str, len: usize, max: usize) {
        if len > max {
            self.push(
                field,
                format!("Too many: {len}: must have at most {max} items"),
            );
        }
    }

    fn one_of(&mut self, field: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            self.push(
                field,
                format!(
                    "Unsupported value: {value:?}: supported values: {}",
                    list.join(", ")
                ),
            );
        }
    }

    /// `x-kubernetes-list-type: map` / `set`: no two items share a key.
    /// `keys` are the items' keys as the API server prints them.
    fn unique(&mut self, field: &str, keys: impl Iterator<Item = String>) {
        let mut seen = HashSet::new();
        for (i, key) in keys.enumerate() {
            if !seen.insert(key.clone()) {
                self.push(&format!("{field}[{i}]"), format!("Duplicate value: {key}"));
            }
        }
    }

    fn done(self) -> Result<(), Invalid> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.errors))
        }
    }
}

/// A list-map item's key as the API server prints it in a duplicate error.
fn map_key(name: &str) -> String {
    format!("map[string]interface {{}}{{\"name\":{name:?}}}")
}

/// Parses a Gateway API duration (GEP-2257): one to four `<1-5 digits><h|m|s|ms>` groups.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut groups = 0;
    let mut total = Duration::ZERO;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() || digits.len() > 5 {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        let unit = if text[i..].starts_with("ms") {
            i += 2;
            Duration::from_millis(1)
        } else {
            let unit = match bytes.get(i)? {
                b'h' => Duration::from_secs(3600),
                b'm' => Duration::from_secs(60),
                b's' => Duration::from_secs(1),
                _ => return None,
            };
            i += 1;
            unit
        };
        total += unit * u32::try_from(n).ok()?;
        groups += 1;
        if groups > 4 {
            return None;
        }
    }
    (groups > 0).then_some(total)
}

fn duration(v: &mut V, field: &str, value: &str) {
    if parse_duration(value).is_none() {
        v.push(
            field,
            format!("Invalid value: {value:?}: {field} in body should match '{PAT_DURATION}'"),
        );
    }
}

fn metadata(v: &mut V, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    match meta.name.as_deref() {
        None | Some("") => v.push(
            "metadata.name",
            "Required value: name or generateName is required",
        ),
        Some(name) if name.contains('/') || name.contains('%') || name == "." || name == ".." => v
            .push(
                "metadata.name",
                format!(
                "Invalid value: {name:?}: may not contain '/' or '%' and may not be '.' or '..'"
            ),
            ),
        Some(_) => {}
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if !DNS_LABEL.is_match(ns) || ns.len() > 63 {
            v.push(
                "metadata.namespace",
                format!("Invalid value: {ns:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
            );
        }
    }
}

fn parent_refs(v: &mut V, refs: &[ParentRef]) {
    let field = "spec.parentRefs";
    v.max_items(field, refs.len(), 32);
    for (i, p) in refs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        v.string(&format!("{f}.group"), &p.group, 0, 253);
        v.pattern(&format!("{f}.group"), &p.group, &GROUP, PAT_GROUP);
        v.string(&format!("{f}.kind"), &p.kind, 1, 63);
        v.pattern(&format!("{f}.kind"), &p.kind, &KIND, PAT_KIND);
        v.string(&format!("{f}.name"), &p.name, 1, 253);
        if let Some(ns) = &p.namespace {
            v.string(&format!("{f}.namespace"), ns, 1, 63);
            v.pattern(&format!("{f}.namespace"), ns, &DNS_LABEL, PAT_DNS_LABEL);
        }
        if let Some(port) = p.port {
            v.range(&format!("{f}.port"), port, Some(1), Some(65535));
        }
        if let Some(section) = &p.section_name {
            v.string(&format!("{f}.sectionName"), section, 1, 253);
            v.pattern(
                &format!("{f}.sectionName"),
                section,
                &DNS_SUBDOMAIN,
                PAT_DNS_SUBDOMAIN,
            );
        }
    }
    // The two CEL rules on the list: references to the same parent must all name a
    // section or port, or none; and no two may name the same one.
    let ns = |p: &ParentRef| p.namespace.clone().unwrap_or_default();
    let same_parent = |a: &ParentRef, b: &ParentRef| {
        a.group == b.group && a.kind == b.kind && a.name == b.name && ns(a) == ns(b)
    };
    let section = |p: &ParentRef| p.section_name.clone().unwrap_or_default();
    let port = |p: &ParentRef| p.port.unwrap_or(0);
    let consistent = refs.iter().all(|a| {
        refs.iter().all(|b| {
            !same_parent(a, b)
                || (section(a).is_empty() == section(b).is_empty()
                    && (port(a) == 0) == (port(b) == 0))
        })
    });
    v.rule(
        field,
        consistent,
        "sectionName or port must be specified when parentRefs includes 2 or more references to the same parent",
    );
    let unique = refs.iter().all(|a| {
        refs.iter()
            .filter(|b| same_parent(a, b) && section(a) == section(b) && port(a) == port(b))
            .count()
            == 1
    });
    v.rule(
        field,
        unique,
        "sectionName or port must be unique when parentRefs includes 2 or more references to the same parent",
    );
}

fn hostnames(v: &mut V, hostnames: &[String]) {
    v.max_items("spec.hostnames", hostnames.len(), 16);
    for (i, h) in hostnames.iter().enumerate() {
        let f = format!("spec.hostnames[{i}]");
        v.string(&f, h, 1, 253);
        v.pattern(&f, h, &HOSTNAME, PAT_HOSTNAME);
    }
}

fn rule_names<'a>(v: &mut V, names: impl Iterator<Item = Option<&'a String>>) {
    let names: Vec<Option<&String>> = names.collect();
    for (i, name) in names.iter().enumerate() {
        if let Some(name) = name {
            let f = format!("spec.rules[{i}].name");
            v.string(&f, name, 1, 253);
            v.pattern(&f, name, &DNS_SUBDOMAIN, PAT_DNS_SUBDOMAIN);
        }
    }
    let unique = names
        .iter()
        .flatten()
        .all(|a| names.iter().flatten().filter(|b| a == *b).count() == 1);
    v.rule(
        "spec.rules",
        unique,
        "Rule name must be unique within the route",
    );
}

fn header_name(v: &mut V, field: &str, name: &str) {
    v.string(field, name, 1, 256);
    v.pattern(field, name, &HEADER_NAME, PAT_HEADER_NAME);
}

fn header_matches(v: &mut V, field: &str, headers: &[HeaderMatch], value_pattern: bool) {
    v.max_items(field, headers.len(), 16);
    v.unique(field, headers.iter().map(|h| map_key(&h.name)));
    for (i, h) in headers.iter().enumerate() {
        let f = format!("{field}[{i}]");
        header_name(v, &format!("{f}.name"), &h.name);
        v.string(&format!("{f}.value"), &h.value, 1, 4096);
        if value_pattern {
            v.pattern(
                &format!("{f}.value"),
                &h.value,
                &HEADER_VALUE,
                PAT_HEADER_VALUE,
            );
        }
    }
}

fn path_match(v: &mut V, field: &str, path: &PathMatch) {
    v.string(&format!("{field}.value"), &path.value, 0, 1024);
    if path.kind == PathMatchType::RegularExpression {
        return;
    }
    let p = path.value.as_str();
    let rules: [(bool, &str); 11] = [
        (p.starts_with('/'), "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"),
        (!p.contains("//"), "must not contain '//' when type one of ['Exact', 'PathPrefix']"),
        (!p.contains("/./"), "must not contain '/./' when type one of ['Exact', 'PathPrefix']"),
        (!p.contains("/../"), "must not contain '/../' when type one of ['Exact', 'PathPrefix']"),
        (!p.contains("%2f"), "must not contain '%2f' when type one of ['Exact', 'PathPrefix']"),
        (!p.contains("%2F"), "must not contain '%2F' when type one of ['Exact', 'PathPrefix']"),
        (!p.contains('#'), "must not contain '#' when type one of ['Exact', 'PathPrefix']"),
        (!p.ends_with("/.."), "must not end with '/..' when type one of ['Exact', 'PathPrefix']"),
        (!p.ends_with("/."), "must not end with '/.' when type one of ['Exact', 'PathPrefix']"),
        (true, "type must be one of ['Exact', 'PathPrefix', 'RegularExpression']"),
        (PATH_CHARS.is_match(p), "must only contain valid characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']"),
    ];
    for (ok, message) in rules {
        v.rule(field, ok, message);
    }
}

fn http_matches(v: &mut V, field: &str, matches: &[HttpRouteMatch]) {
    v.max_items(field, matches.len(), 64);
    for (i, m) in matches.iter().enumerate() {
        let f = format!("{field}[{i}]");
        path_match(v, &format!("{f}.path"), &m.path);
        header_matches(v, &format!("{f}.headers"), &m.headers, true);
        let q = format!("{f}.queryParams");
        v.max_items(&q, m.query_params.len(), 16);
        v.unique(&q, m.query_params.iter().map(|h| map_key(&h.name)));
        for (j, p) in m.query_params.iter().enumerate() {
            header_name(v, &format!("{q}[{j}].name"), &p.name);
            v.string(&format!("{q}[{j}].value"), &p.value, 1, 1024);
        }
    }
}

fn grpc_matches(v: &mut V, field: &str, matches: &[GrpcRouteMatch]) {
    v.max_items(field, matches.len(), 64);
    for (i, m) in matches.iter().enumerate() {
        let f = format!("{field}[{i}]");
        header_matches(v, &format!("{f}.headers"), &m.headers, false);
        let Some(method) = &m.method else { continue };
        let f = format!("{f}.method");
        if let Some(s) = &method.service {
            v.string(&format!("{f}.service"), s, 0, 1024);
        }
        if let Some(s) = &method.method {
            v.string(&format!("{f}.method"), s, 0, 1024);
        }
        // `type` always has a value once defaulted, so the first rule always applies.
        v.rule(
            &f,
            method.service.is_some() || method.method.is_some(),
            "One or both of 'service' or 'method' must be specified",
        );
        let exact = method.kind == StringMatchType::Exact;
        if let (true, Some(s)) = (exact, &method.service) {
            v.rule(&f, GRPC_SERVICE.is_match(s), r"service must only contain valid characters (matching ^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$)");
        }
        if let (true, Some(s)) = (exact, &method.method) {
            v.rule(
                &f,
                GRPC_METHOD.is_match(s),
                "method must only contain valid characters (matching ^[A-Za-z_][A-Za-z_0-9]*$)",
            );
        }
    }
}

fn object_ref(
    v: &mut V,
    field: &str,
    group: &str,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    port: Option<i64>,
) {
    v.string(&format!("{field}.group"), group, 0, 253);
    v.pattern(&format!("{field}.group"), group, &GROUP, PAT_GROUP);
    v.string(&format!("{field}.kind"), kind, 1, 63);
    v.pattern(&format!("{field}.kind"), kind, &KIND, PAT_KIND);
    v.string(&format!("{field}.name"), name, 1, 253);
    if let Some(ns) = namespace {
        v.string(&format!("{field}.namespace"), ns, 1, 63);
        v.pattern(&format!("{field}.namespace"), ns, &DNS_LABEL, PAT_DNS_LABEL);
    }
    if let Some(port) = port {
        v.range(&format!("{field}.port"), port, Some(1), Some(65535));
    }
    v.rule(
        field,
        !(group.is_empty() && kind == "Service") || port.is_some(),
        "Must have port for Service reference",
    );
}

fn header_modifier(v: &mut V, field: &str, m: &HeaderModifier) {
    for (list, items) in [("set", &m.set), ("add", &m.add)] {
        let f = format!("{field}.{list}");
        v.max_items(&f, items.len(), 16);
        v.unique(&f, items.iter().map(|h| map_key(&h.name)));
        for (i, h) in items.iter().enumerate() {
            header_name(v, &format!("{f}[{i}].name"), &h.name);
            v.string(&format!("{f}[{i}].value"), &h.value, 1, 4096);
            v.pattern(
                &format!("{f}[{i}].value"),
                &h.value,
                &HEADER_VALUE,
                PAT_HEADER_VALUE,
            );
        }
    }
    let f = format!("{field}.remove");
    v.max_items(&f, m.remove.len(), 16);
    v.unique(&f, m.remove.iter().map(|r| format!("{r:?}")));
}

fn path_modifier(v: &mut V, field: &str, p: &PathModifier) {
    v.one_of(
        &format!("{field}.type"),
        &p.kind,
        &["ReplaceFullPath", "ReplacePrefixMatch"],
    );
    if let Some(s) = &p.replace_full_path {
        v.string(&format!("{field}.replaceFullPath"), s, 0, 1024);
    }
    if let Some(s) = &p.replace_prefix_match {
        v.string(&format!("{field}.replacePrefixMatch"), s, 0, 1024);
    }
    let full = p.kind == "ReplaceFullPath";
    let prefix = p.kind == "ReplacePrefixMatch";
    v.rule(
        field,
        !full || p.replace_full_path.is_some(),
        "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
    );
    v.rule(
        field,
        p.replace_full_path.is_none() || full,
        "type must be 'ReplaceFullPath' when replaceFullPath is set",
    );
    v.rule(
        field,
        !prefix || p.replace_prefix_match.is_some(),
        "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'",
    );
    v.rule(
        field,
        p.replace_prefix_match.is_none() || prefix,
        "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
    );
}

/// Which route kind a filter list belongs to: GRPCRoute allows fewer filter types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Grpc,
}

fn filter(v: &mut V, field: &str, f: &RouteFilter, kind: Kind) {
    let allowed: &[&str] = match kind {
        Kind::Http => &[
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "RequestMirror",
            "RequestRedirect",
            "URLRewrite",
            "ExtensionRef",
            "CORS",
            "ExternalAuth",
        ],
        Kind::Grpc => &[
            "ResponseHeaderModifier",
            "RequestHeaderModifier",
            "RequestMirror",
            "ExtensionRef",
        ],
    };
    v.one_of(&format!("{field}.type"), f.kind.as_str(), allowed);
    if kind == Kind::Grpc {
        for (set, name) in [
            (f.request_redirect.is_some(), "requestRedirect"),
            (f.url_rewrite.is_some(), "urlRewrite"),
            (f.cors.is_some(), "cors"),
            (f.external_auth.is_some(), "externalAuth"),
        ] {
            if set {
                v.push(&format!("{field}.{name}"), "Forbidden: unknown field");
            }
        }
    }
    let t = f.kind;
    let union: Vec<(bool, FilterType, &str)> = {
        let mut u = vec![
            (
                f.request_header_modifier.is_some(),
                FilterType::RequestHeaderModifier,
                "requestHeaderModifier",
            ),
            (
                f.response_header_modifier.is_some(),
                FilterType::ResponseHeaderModifier,
                "responseHeaderModifier",
            ),
            (
                f.request_mirror.is_some(),
                FilterType::RequestMirror,
                "requestMirror",
            ),
        ];
        if kind == Kind::Http {
            u.push((f.cors.is_some(), FilterType::CORS, "cors"));
            u.push((
                f.request_redirect.is_some(),
                FilterType::RequestRedirect,
                "requestRedirect",
            ));
            u.push((
                f.url_rewrite.is_some(),
                FilterType::URLRewrite,
                "urlRewrite",
            ));
        }
        u.push((
            f.extension_ref.is_some(),
            FilterType::ExtensionRef,
            "extensionRef",
        ));
        if kind == Kind::Http {
            u.push((
                f.external_auth.is_some(),
                FilterType::ExternalAuth,
                "externalAuth",
            ));
        }
        u
    };
    for (set, ty, name) in union {
        let tn = ty.as_str();
        v.rule(
            field,
            !(set && t != ty),
            &format!("filter.{name} must be nil if the filter.type is not {tn}"),
        );
        v.rule(
            field,
            set || t != ty,
            &format!("filter.{name} must be specified for {tn} filter.type"),
        );
    }
    if let Some(m) = &f.request_header_modifier {
        header_modifier(v, &format!("{field}.requestHeaderModifier"), m);
    }
    if let Some(m) = &f.response_header_modifier {
        header_modifier(v, &format!("{field}.responseHeaderModifier"), m);
    }
    if let Some(m) = &f.request_mirror {
        let mf = format!("{field}.requestMirror");
        let b = &m.backend_ref;
        object_ref(
            v,
            &format!("{mf}.backendRef"),
            &b.group,
            &b.kind,
            &b.name,
            b.namespace.as_deref(),
            b.port,
        );
        if let Some(p) = m.percent {
            v.range(&format!("{mf}.percent"), p, Some(0), Some(100));
        }
        if let Some(fr) = &m.fraction {
            v.range(
                &format!("{mf}.fraction.numerator"),
                fr.numerator,
                Some(0),
                None,
            );
            v.range(
                &format!("{mf}.fraction.denominator"),
                fr.denominator,
                Some(1),
                None,
            );
            v.rule(
                &format!("{mf}.fraction"),
                fr.numerator <= fr.denominator,
                "numerator must be less than or equal to denominator",
            );
        }
        v.rule(
            &mf,
            !(m.percent.is_some() && m.fraction.is_some()),
            "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
        );
    }
    if let Some(r) = &f.request_redirect {
        let rf = format!("{field}.requestRedirect");
        if let Some(s) = &r.scheme {
            v.one_of(&format!("{rf}.scheme"), s, &["http", "https"]);
        }
        if let Some(h) = &r.hostname {
            v.string(&format!("{rf}.hostname"), h, 1, 253);
            v.pattern(
                &format!("{rf}.hostname"),
                h,
                &DNS_SUBDOMAIN,
                PAT_DNS_SUBDOMAIN,
            );
        }
        if let Some(p) = &r.path {
            path_modifier(v, &format!("{rf}.path"), p);
        }
        if let Some(port) = r.port {
            v.range(&format!("{rf}.port"), port, Some(1), Some(65535));
        }
        if ![301, 302, 303, 307, 308].contains(&r.status_code) {
            v.push(
                &format!("{rf}.statusCode"),
                format!("Unsupported value: {}: supported values: \"301\", \"302\", \"303\", \"307\", \"308\"", r.status_code),
            );
        }
    }
    if let Some(r) = &f.url_rewrite {
        let rf = format!("{field}.urlRewrite");
        if let Some(h) = &r.hostname {
            v.string(&format!("{rf}.hostname"), h, 1, 253);
            v.pattern(
                &format!("{rf}.hostname"),
                h,
                &DNS_SUBDOMAIN,
                PAT_DNS_SUBDOMAIN,
            );
        }
        if let Some(p) = &r.path {
            path_modifier(v, &format!("{rf}.path"), p);
        }
    }
    if let Some(e) = &f.extension_ref {
        let ef = format!("{field}.extensionRef");
        v.string(&format!("{ef}.group"), &e.group, 0, 253);
        v.pattern(&format!("{ef}.group"), &e.group, &GROUP, PAT_GROUP);
        v.string(&format!("{ef}.kind"), &e.kind, 1, 63);
        v.pattern(&format!("{ef}.kind"), &e.kind, &KIND, PAT_KIND);
        v.string(&format!("{ef}.name"), &e.name, 1, 253);
    }
}

fn filters(v: &mut V, field: &str, list: &[RouteFilter], kind: Kind) {
    v.max_items(field, list.len(), 16);
    for (i, f) in list.iter().enumerate() {
        filter(v, &format!("{field}[{i}]"), f, kind);
    }
    let count = |t: FilterType| list.iter().filter(|f| f.kind == t).count();
    if kind == Kind::Http {
        v.rule(
            field,
            !(count(FilterType::RequestRedirect) > 0 && count(FilterType::URLRewrite) > 0),
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both",
        );
        v.rule(
            field,
            count(FilterType::CORS) <= 1,
            "CORS filter cannot be repeated",
        );
    }
    v.rule(
        field,
        count(FilterType::RequestHeaderModifier) <= 1,
        "RequestHeaderModifier filter cannot be repeated",
    );
    v.rule(
        field,
        count(FilterType::ResponseHeaderModifier) <= 1,
        "ResponseHeaderModifier filter cannot be repeated",
    );
    if kind == Kind::Http {
        v.rule(
            field,
            count(FilterType::RequestRedirect) <= 1,
            "RequestRedirect filter cannot be repeated",
        );
        v.rule(
            field,
            count(FilterType::URLRewrite) <= 1,
            "URLRewrite filter cannot be repeated",
        );
    }
}

fn backend_refs(v: &mut V, field: &str, refs: &[BackendRef], kind: Kind) {
    v.max_items(field, refs.len(), 16);
    for (i, b) in refs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        object_ref(
            v,
            &f,
            &b.group,
            &b.kind,
            &b.name,
            b.namespace.as_deref(),
            b.port,
        );
        v.range(&format!("{f}.weight"), b.weight, Some(0), Some(1_000_000));
        filters(v, &format!("{f}.filters"), &b.filters, kind);
    }
}

/// Whether exactly one filter in `list` replaces a prefix (`ReplacePrefixMatch` with a value).
fn replaces_prefix(list: &[RouteFilter], redirect: bool) -> bool {
    list.iter()
        .filter(|f| {
            let path = if redirect {
                f.request_redirect.as_ref().and_then(|r| r.path.as_ref())
            } else {
                f.url_rewrite.as_ref().and_then(|r| r.path.as_ref())
            };
            path.is_some_and(|p| p.kind == "ReplacePrefixMatch" && p.replace_prefix_match.is_some())
        })
        .count()
        == 1
}

fn one_prefix_match(rule: &HttpRouteRule) -> bool {
    rule.matches.len() == 1 && rule.matches[0].path.kind == PathMatchType::PathPrefix
}

fn http_rule(v: &mut V, field: &str, rule: &HttpRouteRule) {
    http_matches(v, &format!("{field}.matches"), &rule.matches);
    filters(v, &format!("{field}.filters"), &rule.filters, Kind::Http);
    backend_refs(
        v,
        &format!("{field}.backendRefs"),
        &rule.backend_refs,
        Kind::Http,
    );
    if let Some(t) = &rule.timeouts {
        let tf = format!("{field}.timeouts");
        if let Some(r) = &t.request {
            duration(v, &format!("{tf}.request"), r);
        }
        if let Some(b) = &t.backend_request {
            duration(v, &format!("{tf}.backendRequest"), b);
        }
        let request = t.request.as_deref().and_then(parse_duration);
        let backend = t.backend_request.as_deref().and_then(parse_duration);
        if let (Some(r), Some(b)) = (request, backend) {
            v.rule(
                &tf,
                r.is_zero() || b <= r,
                "backendRequest timeout cannot be longer than request timeout",
            );
        }
    }
    if let Some(r) = &rule.retry {
        let rf = format!("{field}.retry");
        for (i, code) in r.codes.iter().enumerate() {
            v.range(&format!("{rf}.codes[{i}]"), *code, Some(400), Some(599));
        }
        v.unique(&format!("{rf}.codes"), r.codes.iter().map(i64::to_string));
        if let Some(a) = r.attempts {
            v.range(&format!("{rf}.attempts"), a, Some(1), None);
        }
        if let Some(b) = &r.backoff {
            duration(v, &format!("{rf}.backoff"), b);
        }
    }
    let has_backends = !rule.backend_refs.is_empty();
    v.rule(
        field,
        !has_backends || rule.filters.iter().all(|f| f.request_redirect.is_none()),
        "RequestRedirect filter must not be used together with backendRefs",
    );
    v.rule(
        field,
        !replaces_prefix(&rule.filters, true) || one_prefix_match(rule),
        "When using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
    );
    v.rule(
        field,
        !replaces_prefix(&rule.filters, false) || one_prefix_match(rule),
        "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
    );
    let backends_with = |redirect: bool| {
        rule.backend_refs
            .iter()
            .filter(|b| replaces_prefix(&b.filters, redirect))
            .count()
            == 1
    };
    v.rule(
        field,
        !backends_with(true) || one_prefix_match(rule),
        "Within backendRefs, when using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
    );
    v.rule(
        field,
        !backends_with(false) || one_prefix_match(rule),
        "Within backendRefs, When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
    );
}

fn api_version(v: &mut V, value: &str, kind: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        v.push(
            "apiVersion",
            format!(
                "Unsupported value: {value:?}: {kind} is served as {}",
                allowed.join(", ")
            ),
        );
    }
}

/// Validates an `HTTPRoute` as the v1.6.1 CRD would.
pub fn http_route(route: &HttpRoute) -> Result<(), Invalid> {
    let mut v = V::new();
    api_version(
        &mut v,
        &route.api_version,
        "HTTPRoute",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
    );
    metadata(&mut v, &route.metadata);
    let spec = &route.spec;
    parent_refs(&mut v, &spec.parent_refs);
    hostnames(&mut v, &spec.hostnames);
    if let Some(u) = &spec.use_default_gateways {
        v.one_of("spec.useDefaultGateways", u, &["All", "None"]);
    }
    if spec.rules.is_empty() {
        v.push(
            "spec.rules",
            "Invalid value: 0: spec.rules in body should have at least 1 items",
        );
    }
    v.max_items("spec.rules", spec.rules.len(), 16);
    let total: usize = spec.rules.iter().take(16).map(|r| r.matches.len()).sum();
    v.rule(
        "spec.rules",
        total <= 128,
        "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128",
    );
    rule_names(&mut v, spec.rules.iter().map(|r| r.name.as_ref()));
    for (i, rule) in spec.rules.iter().enumerate() {
        http_rule(&mut v, &format!("spec.rules[{i}]"), rule);
    }
    v.done()
}

/// Validates a `GRPCRoute` as the v1.6.1 CRD would.
pub fn grpc_route(route: &GrpcRoute) -> Result<(), Invalid> {
    let mut v = V::new();
    api_version(
        &mut v,
        &route.api_version,
        "GRPCRoute",
        &["gateway.networking.k8s.io/v1"],
    );
    metadata(&mut v, &route.metadata);
    let spec = &route.spec;
    parent_refs(&mut v, &spec.parent_refs);
    hostnames(&mut v, &spec.hostnames);
    if let Some(u) = &spec.use_default_gateways {
        v.one_of("spec.useDefaultGateways", u, &["All", "None"]);
    }
    v.max_items("spec.rules", spec.rules.len(), 16);
    let total: usize = spec.rules.iter().take(16).map(|r| r.matches.len()).sum();
    v.rule(
        "spec.rules",
        total <= 128,
        "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128",
    );
    rule_names(&mut v, spec.rules.iter().map(|r| r.name.as_ref()));
    for (i, rule) in spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        grpc_matches(&mut v, &format!("{f}.matches"), &rule.matches);
        filters(&mut v, &format!("{f}.filters"), &rule.filters, Kind::Grpc);
        backend_refs(
            &mut v,
            &format!("{f}.backendRefs"),
            &rule.backend_refs,
            Kind::Grpc,
        );
    }
    v.done()
}

/// Validates Ferry's `HTTPFault` (its CRD: `charts/ferry/crds`, docs/routes.md).
pub fn http_fault(fault: &HttpFault) -> Result<(), Invalid> {
    let mut v = V::new();
    api_version(
        &mut v,
        &fault.api_version,
        HTTP_FAULT_KIND,
        &["policy.ferry.io/v1alpha1"],
    );
    metadata(&mut v, &fault.metadata);
    let spec = &fault.spec;
    v.rule(
        "spec",
        spec.abort.is_some() || spec.delay.is_some(),
        "at least one of abort and delay must be specified",
    );
    if let Some(a) = &spec.abort {
        if let Some(s) = a.http_status {
            v.range("spec.abort.httpStatus", s, Some(100), Some(599));
        }
        if let Some(s) = a.grpc_status {
            v.range("spec.abort.grpcStatus", s, Some(1), Some(16));
        }
        v.rule(
            "spec.abort",
            a.http_status.is_some() != a.grpc_status.is_some(),
            "exactly one of httpStatus and grpcStatus must be specified",
        );
        v.range("spec.abort.percent", a.percent, Some(0), Some(100));
    }
    if let Some(d) = &spec.delay {
        duration(&mut v, "spec.delay.fixedDelay", &d.fixed_delay);
        v.range("spec.delay.percent", d.percent, Some(0), Some(100));
    }
    v.done()
}

#[cfg(test)]
mod tests;
