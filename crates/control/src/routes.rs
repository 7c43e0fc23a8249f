//! Routes as data: Gateway API `HTTPRoute` / `GRPCRoute` attached to Services (GAMMA) and
//! Ferry's `HTTPFault`, validated as the v1.6.1 CRDs would, and served to proxies as
//! Linkerd's `OutboundPolicies` (docs/routes.md).
//!
//! - [`gateway`]: the documents, as typed serde structs with the CRDs' defaults.
//! - [`validate`]: the CRDs' OpenAPI schema and CEL rules, by hand.
//! - [`order`]: rule precedence, as the Gateway API specifies it.
//! - [`policy`]: the routes that apply to one Service port, resolved against discovery.
//! - [`outbound`]: that policy as `io.linkerd.proxy.outbound` messages, and the gRPC
//!   service that serves them (`Get`, `Watch`).
//! - [`watching`]: one policy stream over the shared watch channels (outbound and
//!   inbound policies alike).
//! - [`api`]: `GET /api/v1/policy`, the same policy as JSON for `ferry diagnostics policy`.
//! - [`kubernetes`]: on Kubernetes: the routes watched, their status written back.
//! - [`file`]: local mode: the documents in a file or directory, polled for edits.
//!
//! Parsing here is pure: text in, a [`RouteSet`] or an error naming the line and field out.

pub mod api;
pub mod file;
pub mod gateway;
pub mod kubernetes;
pub mod order;
pub mod outbound;
pub mod policy;
pub mod validate;
pub mod watching;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::watch;

use gateway::{GrpcRoute, HttpFault, HttpRoute};

use crate::model::ObjectRef;

/// Whether an annotation is one of Linkerd's that routes read.
pub fn is_policy_annotation(key: &str) -> bool {
    [
        "retry.linkerd.io/",
        "timeout.linkerd.io/",
        "balancer.linkerd.io/",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// The namespace of local documents that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Every valid route document known at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteSet {
    /// `HTTPRoute`s, namespaces filled in.
    pub http: Vec<HttpRoute>,
    /// `GRPCRoute`s, namespaces filled in.
    pub grpc: Vec<GrpcRoute>,
    /// `HTTPFault`s, namespaces filled in.
    pub faults: Vec<HttpFault>,
    /// Linkerd's annotations of Services (`retry.linkerd.io/*`, `timeout.linkerd.io/*`,
    /// `balancer.linkerd.io/*`), by Service; Services without any are absent.
    pub services: BTreeMap<ObjectRef, BTreeMap<String, String>>,
    /// Authorization documents (`Server`, `AuthorizationPolicy`, ...), [`crate::authz`].
    pub authz: crate::authz::resources::PolicySet,
}

impl RouteSet {
    /// Adds `other`'s documents.
    pub fn extend(&mut self, other: RouteSet) {
        self.http.extend(other.http);
        self.grpc.extend(other.grpc);
        self.faults.extend(other.faults);
        self.services.extend(other.services);
        self.authz.extend(other.authz);
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.http.len()
            + self.grpc.len()
            + self.faults.len()
            + self.services.len()
            + self.authz.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the current [`RouteSet`] is published: a watch channel, as discovery publishes
/// cluster states. Without a source the set stays empty (every Service gets its default
/// route).
#[derive(Clone, Debug)]
pub struct Routes {
    tx: Arc<watch::Sender<Arc<RouteSet>>>,
    /// The Kubernetes watches feeding `tx`, stopped with the last clone.
    _tasks: Option<Arc<kubernetes::AbortTasks>>,
    /// The set this one adds an overlay to, kept alive (its source stops with it).
    _base: Option<Arc<Routes>>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new(RouteSet::default())
    }
}

impl Routes {
    /// Starts with `set`.
    pub fn new(set: RouteSet) -> Self {
        let (tx, _) = watch::channel(Arc::new(set));
        Self {
            tx: Arc::new(tx),
            _tasks: None,
            _base: None,
        }
    }

    /// The latest set, notified on every change.
    pub fn watch(&self) -> watch::Receiver<Arc<RouteSet>> {
        self.tx.subscribe()
    }

    /// This set plus the documents of `overlay` (generated routes: rollouts'), kept up to
    /// date as either changes. The merged set is ready before this returns.
    pub fn with_overlay(self, mut overlay: watch::Receiver<Arc<RouteSet>>) -> Routes {
        let mut base = self.watch();
        let merge = |base: &RouteSet, overlay: &RouteSet| {
            let mut set = base.clone();
            set.extend(overlay.clone());
            set
        };
        let first = merge(&base.borrow_and_update(), &overlay.borrow_and_update());
        let mut merged = Routes::new(first);
        merged._base = Some(Arc::new(self));
        let weak = Arc::downgrade(&merged.tx);
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    r = base.changed() => r,
                    r = overlay.changed() => r,
                };
                let Some(tx) = weak.upgrade() else { return };
                if changed.is_err() {
                    return;
                }
                let set = merge(&base.borrow_and_update(), &overlay.borrow_and_update());
                tx.send_if_modified(|current| {
                    let differs = **current != set;
                    if differs {
                        *current = Arc::new(set);
                    }
                    differs
                });
            }
        });
        merged
    }

    /// Replaces the set, notifying readers if it differs.
    pub fn set(&self, set: RouteSet) -> bool {
        self.tx.send_if_modified(|current| {
            if **current == set {
                return false;
            }
            *current = Arc::new(set);
            true
        })
    }
}

/// Why a routes document was rejected: where, which field, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
pub struct DocumentError {
    /// 1-based line in the text (the field's line when it could be found, else the
    /// closest enclosing one's).
    pub line: usize,
    /// The field (`spec.rules[0].matches[0].path`), or empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Every error of a text, in document order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct DocumentErrors(pub Vec<DocumentError>);

/// Parses and validates a YAML stream of route documents (`---`-separated). Documents
/// without a namespace get [`DEFAULT_NAMESPACE`]. Any invalid document fails the whole
/// text, so that a half-applied edit never takes effect.
pub fn parse(text: &str) -> Result<RouteSet, DocumentErrors> {
    let mut set = RouteSet::default();
    let mut errors = Vec::new();
    for (start, doc) in split_documents(text) {
        match parse_document(doc) {
            Ok(Some(parsed)) => set.extend(parsed),
            Ok(None) => {}
            Err(mut e) => {
                for error in &mut e {
                    error.line += start;
                }
                errors.extend(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(DocumentErrors(errors))
    }
}

/// Splits a YAML stream at `---` lines: `(lines before the document, its text)`.
pub(crate) fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_line = 0;
    let mut start_byte = 0;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            docs.push((start_line, &text[start_byte..offset]));
            start_line = n + 1;
            start_byte = offset + line.len();
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs
}

pub(crate) fn syntax_error(error: &serde_yaml_ng::Error) -> DocumentError {
    let line = error.location().map_or(1, |l| l.line());
    let mut message = error.to_string();
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    // serde_yaml_ng puts the field path first: `spec.rules[0]: unknown field ...`.
    let (field, message) = match message.split_once(": ") {
        Some((field, rest)) if !field.contains(' ') => (field.to_string(), rest.to_string()),
        _ => (String::new(), message),
    };
    DocumentError {
        line,
        field,
        message,
    }
}

fn typed<T: DeserializeOwned>(doc: &str) -> Result<T, Vec<DocumentError>> {
    serde_yaml_ng::from_str(doc).map_err(|e| vec![syntax_error(&e)])
}

fn invalid(doc: &str, errors: validate::Invalid) -> Vec<DocumentError> {
    errors
        .0
        .into_iter()
        .map(|e| DocumentError {
            line: locate(doc, &e.field),
            field: e.field,
            message: e.message,
        })
        .collect()
}

fn supported(doc: &str, errors: Vec<validate::FieldError>) -> Result<(), Vec<DocumentError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(doc, validate::Invalid(errors)))
    }
}

/// One document: `None` when it is empty (comments only).
/// Whether the routes loader reads documents of `kind` (whatever their version): the
/// rollouts loader, which reads the same files, skips them.
pub fn reads_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Service" | "Namespace" | "HTTPRoute" | "GRPCRoute" | gateway::HTTP_FAULT_KIND
    ) || crate::authz::resources::KINDS.contains(&kind)
}

fn parse_document(doc: &str) -> Result<Option<RouteSet>, Vec<DocumentError>> {
    let value: serde_yaml_ng::Value = typed(doc)?;
    if value.is_null() {
        return Ok(None);
    }
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    let mut set = RouteSet::default();
    match kind {
        // Services may sit beside their routes: the workloads file declares their endpoints,
        // and their Linkerd annotations (retries, timeouts, failure accrual) are read here.
        "Service" if api_version == "v1" => {
            let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
                serde_yaml_ng::from_value(value.get("metadata").cloned().unwrap_or_default())
                    .map_err(|e| vec![syntax_error(&e)])?;
            let annotations: BTreeMap<String, String> = meta
                .annotations
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| is_policy_annotation(k))
                .collect();
            if let (Some(name), false) = (meta.name, annotations.is_empty()) {
                let ns = meta
                    .namespace
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                set.services.insert(ObjectRef::new(ns, name), annotations);
            }
        }
        "HTTPRoute" => {
            let mut route: HttpRoute = typed(doc)?;
            validate::http_route(&route).map_err(|e| invalid(doc, e))?;
            supported(doc, policy::unsupported_http(&route))?;
            default_namespace(&mut route.metadata);
            set.http.push(route);
        }
        "GRPCRoute" => {
            let mut route: GrpcRoute = typed(doc)?;
            validate::grpc_route(&route).map_err(|e| invalid(doc, e))?;
            supported(doc, policy::unsupported_grpc(&route))?;
            default_namespace(&mut route.metadata);
            set.grpc.push(route);
        }
        // Rollouts may sit beside the routes they move: `--rollouts` reads them.
        ferry_api::rollout::KIND if api_version == ferry_api::rollout::API_VERSION => {
            return Ok(None)
        }
        gateway::HTTP_FAULT_KIND => {
            let mut fault: HttpFault = typed(doc)?;
            validate::http_fault(&fault).map_err(|e| invalid(doc, e))?;
            default_namespace(&mut fault.metadata);
            set.faults.push(fault);
        }
        // A Namespace's default inbound policy (local mode; Kubernetes has the objects).
        "Namespace" if api_version == "v1" => {
            let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
                serde_yaml_ng::from_value(value.get("metadata").cloned().unwrap_or_default())
                    .map_err(|e| vec![syntax_error(&e)])?;
            if let (Some(name), Some(policy)) = (
                meta.name.clone(),
                crate::authz::resolve::annotated_policy(meta.annotations.as_ref()),
            ) {
                policy
                    .parse::<crate::authz::DefaultPolicy>()
                    .map_err(|e| {
                        let field = "metadata.annotations";
                        vec![DocumentError {
                            line: locate(doc, field),
                            field: field.to_string(),
                            message: format!("Invalid value: {e}"),
                        }]
                    })?;
                set.authz.namespace_defaults.insert(name, policy);
            }
        }
        kind if crate::authz::resources::KINDS.contains(&kind) => {
            set.authz = parse_authz(kind, doc)?;
        }
        other => {
            return Err(vec![DocumentError {
                line: locate(doc, "kind"),
                field: "kind".to_string(),
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"HTTPRoute\", \"GRPCRoute\", \"HTTPFault\", \"Server\", \"AuthorizationPolicy\", \"MeshTLSAuthentication\", \"NetworkAuthentication\", \"JWTAuthentication\", \"HTTPLocalRateLimitPolicy\" (and v1 \"Service\", \"Namespace\" and ferry.io \"Rollout\", ignored)"
                ),
            }])
        }
    }
    Ok(Some(set))
}

/// An authorization document ([`crate::authz::resources`]).
fn parse_authz(
    kind: &str,
    doc: &str,
) -> Result<crate::authz::resources::PolicySet, Vec<DocumentError>> {
    use crate::authz::{resources as r, validate as check};
    fn one<S: DeserializeOwned>(
        doc: &str,
        check: fn(&r::Document<S>) -> Result<(), Vec<validate::FieldError>>,
    ) -> Result<r::Document<S>, Vec<DocumentError>> {
        let mut d: r::Document<S> = typed(doc)?;
        check(&d).map_err(|e| invalid(doc, validate::Invalid(e)))?;
        default_namespace(&mut d.metadata);
        Ok(d)
    }
    let mut set = r::PolicySet::default();
    match kind {
        r::SERVER => set.servers.push(one(doc, check::server)?),
        r::AUTHORIZATION_POLICY => set
            .authorization_policies
            .push(one(doc, check::authorization_policy)?),
        r::MESH_TLS_AUTHENTICATION => set.mesh_tls.push(one(doc, check::mesh_tls)?),
        r::NETWORK_AUTHENTICATION => set.networks.push(one(doc, check::network)?),
        r::JWT_AUTHENTICATION => set.jwt.push(one(doc, check::jwt)?),
        _ => set.rate_limits.push(one(doc, check::rate_limit)?),
    }
    Ok(set)
}

fn default_namespace(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
}

/// One step of a field path.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(field: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Step::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// A line's indentation, and the column its key starts at (after any `- `).
fn columns(line: &str) -> Option<(usize, usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let mut key_col = indent;
    let mut text = trimmed;
    while let Some(rest) = text.strip_prefix("- ") {
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        key_col += 2 + spaces;
        text = &rest[spaces..];
    }
    Some((indent, key_col, text))
}

/// The 1-based line of `field` in a block-style YAML document; for a field inside flow
/// style (`{...}`, `[...]`), the line of the closest enclosing field found.
pub fn locate(doc: &str, field: &str) -> usize {
    let lines: Vec<&str> = doc.lines().collect();
    let (mut lo, mut hi) = (0, lines.len());
    let mut found = 0;
    let mut at_item_line = None;
    for step in steps(field) {
        match step {
            Step::Key(key) => {
                // The mapping's column: that of its first key.
                let first = match at_item_line {
                    Some(l) => columns(lines[l]).map(|(_, c, _)| c),
                    None => (lo..hi).find_map(|l| columns(lines[l]).map(|(_, c, _)| c)),
                };
                let Some(col) = first else { break };
                let hit = (lo..hi).find(|&l| {
                    columns(lines[l]).is_some_and(|(_, c, text)| {
                        c == col && text.strip_prefix(key).is_some_and(|r| r.starts_with(':'))
                    })
                });
                let Some(l) = hit else { break };
                found = l;
                let end = ((l + 1)..hi)
                    .find(|&n| {
                        columns(lines[n]).is_some_and(|(indent, _, _)| {
                            let item = lines[n].trim_start().starts_with('-');
                            indent < col || (indent == col && !item)
                        })
                    })
                    .unwrap_or(hi);
                lo = l + 1;
                hi = end;
                at_item_line = None;
            }
            Step::Index(i) => {
                let Some(item_indent) = (lo..hi).find_map(|l| {
                    columns(lines[l])
                        .filter(|_| lines[l].trim_start().starts_with('-'))
                        .map(|(indent, _, _)| indent)
                }) else {
                    break;
                };
                let items: Vec<usize> = (lo..hi)
                    .filter(|&l| {
                        columns(lines[l]).is_some() && {
                            let t = lines[l].trim_start_matches(' ');
                            lines[l].len() - t.len() == item_indent && t.starts_with('-')
                        }
                    })
                    .collect();
                let Some(&l) = items.get(i) else { break };
                found = l;
                hi = items.get(i + 1).copied().unwrap_or(hi);
                lo = l;
                at_item_line = Some(l);
            }
        }
    }
    found + 1
}

#[cfg(test)]
mod tests;
