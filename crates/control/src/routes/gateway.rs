//! Gateway API v1.6 `HTTPRoute` and `GRPCRoute` (the fields a mesh uses, GAMMA: attached to
//! Services), and Ferry's `HTTPFault`, as typed serde structs.
//!
//! Field names, defaults and shapes follow the v1.6.1 CRDs (experimental channel, which adds
//! `retry` to the standard one). Defaults the API server would fill in are filled in here by
//! serde, so a document read from a file and the same document read back from a real API
//! server compare equal. Integers are `i64` so that an out-of-range value reaches
//! [`super::validate`] and is rejected with the schema's message rather than a parse error.
//! Unknown fields are refused (a real API server prunes them; `kubectl` refuses them under
//! strict field validation, its default), except in `metadata` and `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Ferry's policy group, home of [`HttpFault`].
pub const POLICY_GROUP: &str = "policy.ferry.io";
/// [`HttpFault`]'s version.
pub const POLICY_VERSION: &str = "v1alpha1";
/// `kind` of [`HttpFault`].
pub const HTTP_FAULT_KIND: &str = "HTTPFault";

/// An `HTTPRoute`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// `HTTPRoute`.
    pub kind: String,
    /// Name, namespace, creation time, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the route matches and where it sends traffic.
    pub spec: HttpRouteSpec,
    /// Written by controllers; read and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// A `GRPCRoute`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// `GRPCRoute`.
    pub kind: String,
    /// Name, namespace, creation time, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the route matches and where it sends traffic.
    pub spec: GrpcRouteSpec,
    /// Written by controllers; read and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `HTTPRoute.spec`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// The parents (GAMMA: Services) the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Host names (ignored for Service parents, as GAMMA says).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules, in order. Defaults to one rule matching every path.
    #[serde(default = "default_http_rules")]
    pub rules: Vec<HttpRouteRule>,
    /// Gateway-only; kept so that valid documents parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default_gateways: Option<String>,
}

/// `GRPCRoute.spec`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    /// The parents (GAMMA: Services) the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Host names (ignored for Service parents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules, in order (none: the route matches nothing of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GrpcRouteRule>,
    /// Gateway-only; kept so that valid documents parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default_gateways: Option<String>,
}

fn default_http_rules() -> Vec<HttpRouteRule> {
    vec![HttpRouteRule {
        matches: default_http_matches(),
        ..HttpRouteRule::default()
    }]
}

fn default_http_matches() -> Vec<HttpRouteMatch> {
    vec![HttpRouteMatch::default()]
}

/// A parent reference (`parentRefs[]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentRef {
    /// `""` for a Service (the default is the Gateway group).
    #[serde(default = "gateway_group")]
    pub group: String,
    /// `Service` for a mesh route (the default is `Gateway`).
    #[serde(default = "gateway_kind")]
    pub kind: String,
    /// The parent's name.
    pub name: String,
    /// The parent's namespace (the route's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port the route applies to (every port when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// A named section of the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

fn gateway_group() -> String {
    GATEWAY_GROUP.to_string()
}

fn gateway_kind() -> String {
    "Gateway".to_string()
}

impl ParentRef {
    /// Whether the parent is a core Service (GAMMA).
    pub fn is_service(&self) -> bool {
        (self.group.is_empty() || self.group == "core") && self.kind == "Service"
    }
}

/// `HTTPRoute.spec.rules[]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// The rule's name, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these matches selects the rule. Defaults to every path.
    #[serde(default = "default_http_matches")]
    pub matches: Vec<HttpRouteMatch>,
    /// Applied to every request the rule selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
    /// Where requests go, weighted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    /// `request` and `backendRequest` timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRouteRetry>,
    /// Session persistence: parsed for validity, not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// `GRPCRoute.spec.rules[]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    /// The rule's name, unique in the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one of these matches selects the rule; none matches every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    /// Applied to every call the rule selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
    /// Where calls go, weighted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
    /// Session persistence: parsed for validity, not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// `HTTPRoute.spec.rules[].matches[]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Defaults to the prefix `/`.
    #[serde(default = "default_path")]
    pub path: PathMatch,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

impl Default for HttpRouteMatch {
    fn default() -> Self {
        Self {
            path: default_path(),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

fn default_path() -> PathMatch {
    PathMatch {
        kind: PathMatchType::PathPrefix,
        value: "/".to_string(),
    }
}

/// A path match.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(rename = "type", default = "path_prefix")]
    pub kind: PathMatchType,
    /// The path, prefix or pattern (default `/`).
    #[serde(default = "slash")]
    pub value: String,
}

fn path_prefix() -> PathMatchType {
    PathMatchType::PathPrefix
}

fn slash() -> String {
    "/".to_string()
}

/// How a path is matched.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum PathMatchType {
    /// The whole path, byte for byte.
    Exact,
    /// Whole path segments: `/api` matches `/api` and `/api/x`, not `/apix`.
    PathPrefix,
    /// A regular expression over the whole path.
    RegularExpression,
}

/// How a header, query parameter or gRPC method is matched.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum StringMatchType {
    /// The whole value.
    #[default]
    Exact,
    /// A regular expression over the whole value.
    RegularExpression,
}

/// A header match.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub kind: StringMatchType,
    /// The header name (case-insensitive).
    pub name: String,
    /// The value or pattern.
    pub value: String,
}

/// A query parameter match (same shape as a header match; names are case-sensitive).
pub type QueryParamMatch = HeaderMatch;

/// Methods an `HTTPRoute` may match.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

/// `GRPCRoute.spec.rules[].matches[]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    /// The service and method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A gRPC method match.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub kind: StringMatchType,
    /// The fully qualified service (`emojivoto.v1.VotingService`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method (`VotePoop`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A filter (`filters[]`), in the CRD's union shape: `type` names which field is set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteFilter {
    /// Which filter this is.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// `RequestRedirect` (HTTPRoute only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// `URLRewrite` (HTTPRoute only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// `ExtensionRef`: Ferry knows [`HttpFault`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
    /// `CORS` (experimental; parsed, not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<serde_json::Value>,
    /// `ExternalAuth` (experimental; parsed, not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<serde_json::Value>,
}

/// Filter types across both route kinds; [`super::validate`] narrows them per kind.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    RequestRedirect,
    URLRewrite,
    ExtensionRef,
    CORS,
    ExternalAuth,
}

impl FilterType {
    /// The name as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestHeaderModifier => "RequestHeaderModifier",
            Self::ResponseHeaderModifier => "ResponseHeaderModifier",
            Self::RequestMirror => "RequestMirror",
            Self::RequestRedirect => "RequestRedirect",
            Self::URLRewrite => "URLRewrite",
            Self::ExtensionRef => "ExtensionRef",
            Self::CORS => "CORS",
            Self::ExternalAuth => "ExternalAuth",
        }
    }
}

/// Header additions, replacements and removals.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Replaces the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Appends a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Removes the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// `RequestMirror`: a copy of each request (or of `percent` / `fraction` of them) to
/// `backendRef`, whose answer is discarded.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: BackendObjectRef,
    /// Share of requests copied, 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    /// Share of requests copied, as a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// At least 0, at most `denominator`.
    pub numerator: i64,
    /// At least 1; default 100.
    #[serde(default = "hundred")]
    pub denominator: i64,
}

fn hundred() -> i64 {
    100
}

/// `RequestRedirect`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The new host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// The new port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default = "found")]
    pub status_code: i64,
}

fn found() -> i64 {
    302
}

/// `URLRewrite`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// The new host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A path replacement.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The whole new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// What replaces the matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// A reference to an object in the route's namespace (`extensionRef`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// The API group (required; may be empty).
    pub group: String,
    /// The kind.
    pub kind: String,
    /// The name.
    pub name: String,
}

/// A backend object reference (a mirror's target).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectRef {
    /// `""` (default) for a Service.
    #[serde(default)]
    pub group: String,
    /// `Service` (default).
    #[serde(default = "service_kind")]
    pub kind: String,
    /// The name.
    pub name: String,
    /// The namespace (the route's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The port (required for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

fn service_kind() -> String {
    "Service".to_string()
}

fn one() -> i64 {
    1
}

/// A weighted backend (`backendRefs[]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// `""` (default) for a Service.
    #[serde(default)]
    pub group: String,
    /// `Service` (default).
    #[serde(default = "service_kind")]
    pub kind: String,
    /// The name.
    pub name: String,
    /// The namespace (the route's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The port (required for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Share of requests, relative to the other backends (default 1; 0 sends none).
    #[serde(default = "one")]
    pub weight: i64,
    /// Applied only to requests sent to this backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
}

impl BackendRef {
    /// Whether the backend is a core Service.
    pub fn is_service(&self) -> bool {
        (self.group.is_empty() || self.group == "core") && self.kind == "Service"
    }
}

/// `timeouts`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// The whole request, retries included, as the caller sees it (`0s`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One attempt to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// `retry` (experimental channel).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRetry {
    /// Status codes (400-599) that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<i64>,
    /// Most retries of one request (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// The first wait between attempts (a Gateway API duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Ferry's fault injection, referenced from a route filter as
/// `{type: ExtensionRef, extensionRef: {group: policy.ferry.io, kind: HTTPFault, name}}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpFault {
    /// `policy.ferry.io/v1alpha1`.
    pub api_version: String,
    /// `HTTPFault`.
    pub kind: String,
    /// Name and namespace (the route's namespace).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to inject.
    pub spec: HttpFaultSpec,
}

/// `HTTPFault.spec`: at least one of `abort` and `delay`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultSpec {
    /// Answer instead of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    /// Wait before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
}

/// An injected answer: exactly one of `httpStatus` and `grpcStatus`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// The HTTP status answered (100-599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i64>,
    /// The gRPC status answered (1-16), as `grpc-status` with HTTP 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<i64>,
    /// Share of requests, 0-100 (default 100).
    #[serde(default = "hundred")]
    pub percent: i64,
}

/// An injected delay.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// How long (a Gateway API duration, e.g. `2s`, `150ms`).
    pub fixed_delay: String,
    /// Share of requests, 0-100 (default 100).
    #[serde(default = "hundred")]
    pub percent: i64,
}
