//! The traces half of the public API and the span contract: the routes that list and show
//! the traces the control plane keeps (`docs/tracing.md`), their JSON bodies, and the
//! attribute names proxies put on the spans they export over OTLP.
//!
//! Times are Unix microseconds and durations microseconds: nanoseconds since the epoch do
//! not fit the 53 bits a JSON number keeps exactly in a browser.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET` [`TraceQuery`]: the most recent kept traces, newest first; answers [`TraceList`].
pub const TRACES_PATH: &str = "/api/v1/traces";
/// `GET /api/v1/traces/{id}`: one kept trace with all its spans; answers [`Trace`]. The id is
/// 32 hex digits.
pub const TRACE_PATH: &str = "/api/v1/traces/{id}";

/// How many traces a list answers when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// [`Trace::summary`]`.status` and [`Span::status`] of a failed trace or span.
pub const STATUS_ERROR: &str = "error";
/// `status` of a trace none of whose spans failed, and of a span marked OK.
pub const STATUS_OK: &str = "ok";
/// [`Span::status`] of a span that set no status (OpenTelemetry's `UNSET`).
pub const STATUS_UNSET: &str = "unset";

/// Query parameters of [`TRACES_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceQuery {
    /// Only traces with a span of this workload: its name (`web`) or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Only traces with ([`STATUS_ERROR`]) or without ([`STATUS_OK`]) a failed span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only traces at least this long, a duration like `250ms` or `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
    /// At most this many traces (1 to [`MAX_LIMIT`]; default [`DEFAULT_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The body of [`TRACES_PATH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceList {
    /// The traces that match, newest first.
    pub traces: Vec<TraceSummary>,
    /// How many traces the store keeps now, matching or not.
    pub kept: usize,
    /// What the receiver has taken in and let go of since the control plane started.
    pub stats: TraceStats,
}

/// Counters of the trace receiver, the store and the forwarder since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceStats {
    /// Whether the OTLP receiver listens (`--trace-listen`).
    pub receiving: bool,
    /// Spans received in OTLP export requests.
    pub spans_received: u64,
    /// Spans refused: a malformed trace or span id (the exporter is told, as OTLP's partial
    /// success).
    pub spans_rejected: u64,
    /// Spans not kept: over the per-trace span limit, or larger than the whole store.
    pub spans_not_kept: u64,
    /// Traces evicted to make room (count or bytes) or for age.
    pub traces_evicted: u64,
    /// Spans sent on to `--trace-collector`.
    pub spans_forwarded: u64,
    /// Spans the forwarder dropped: its queue was full, or the collector failed or was too
    /// slow to answer.
    pub spans_forward_dropped: u64,
}

/// One trace, summarised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The root span's name (the earliest span without a parent in the trace).
    pub root_name: String,
    /// The root span's `service.name`.
    pub root_service: String,
    /// The root span's workload (`namespace/name`) when its exporter named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_workload: Option<String>,
    /// When the earliest span started, Unix microseconds.
    pub start_unix_micros: u64,
    /// From the earliest start to the latest end, microseconds.
    pub duration_micros: u64,
    /// Spans kept of the trace.
    pub span_count: usize,
    /// Spans with an error status.
    pub error_count: usize,
    /// [`STATUS_ERROR`] when a span failed, else [`STATUS_OK`].
    pub status: String,
    /// The workloads (`namespace/name`) with a span in the trace, sorted.
    pub workloads: Vec<String>,
}

/// The body of [`TRACE_PATH`]: a trace and its spans, parents before their children
/// (depth first, siblings by start time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The summary, as listed.
    pub summary: TraceSummary,
    /// Every kept span.
    pub spans: Vec<Span>,
}

/// One span as kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; none for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// How deep in the tree: 0 for roots (and spans whose parent was not received).
    pub depth: usize,
    /// The span's name.
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// The exporter's `service.name`.
    pub service: String,
    /// The exporter's workload (`namespace/name`), when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Start, Unix microseconds.
    pub start_unix_micros: u64,
    /// From the trace's start to this span's, microseconds.
    pub offset_micros: u64,
    /// The span's duration, microseconds.
    pub duration_micros: u64,
    /// [`STATUS_OK`], [`STATUS_ERROR`] or [`STATUS_UNSET`].
    pub status: String,
    /// The status description, when the span failed with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// The span's attributes, rendered as text (long values cut).
    pub attributes: BTreeMap<String, String>,
}

/// Attribute names of the span contract (`docs/tracing.md`): OpenTelemetry semantic
/// conventions and the mesh's own.
pub mod attr {
    /// Resource: the workload's name, e.g. `web` (OpenTelemetry `service.name`).
    pub const SERVICE_NAME: &str = "service.name";
    /// Resource: the workload's namespace.
    pub const SERVICE_NAMESPACE: &str = "service.namespace";
    /// Resource: the Kubernetes namespace.
    pub const K8S_NAMESPACE: &str = "k8s.namespace.name";
    /// Resource: the pod (instance) name.
    pub const K8S_POD: &str = "k8s.pod.name";
    /// Resource: the mesh workload, `namespace/name`, the key traces are filtered by.
    pub const FERRY_WORKLOAD: &str = "ferry.workload";
    /// Resource: the version of the proxy that exported the span.
    pub const FERRY_PROXY_VERSION: &str = "ferry.proxy.version";
    /// Span: the workload (`namespace/name`) that sent the request.
    pub const SOURCE_WORKLOAD: &str = "ferry.source.workload";
    /// Span: the workload (`namespace/name`) the request was sent to.
    pub const DESTINATION_WORKLOAD: &str = "ferry.destination.workload";
    /// Span: the client's mTLS identity, when it had one.
    pub const SOURCE_IDENTITY: &str = "ferry.source.identity";
    /// Span: the server's mTLS identity, when it had one.
    pub const DESTINATION_IDENTITY: &str = "ferry.destination.identity";
    /// Span: the route (HTTPRoute/GRPCRoute `namespace/name`) that matched.
    pub const ROUTE: &str = "ferry.route";
    /// The matched route rule's path (exact, prefix or regular expression), as
    /// OpenTelemetry's `http.route`.
    pub const HTTP_ROUTE: &str = "http.route";
    /// Span: `inbound` or `outbound`.
    pub const DIRECTION: &str = "ferry.direction";
    /// Span (client): the attempt number, 1 for the first try.
    pub const RETRY_ATTEMPT: &str = "ferry.retry.attempt";
    /// Span (client): the endpoint `ip:port` the balancer chose.
    pub const ENDPOINT: &str = "ferry.endpoint";
    /// Span: why the proxy, not the application, answered (a [`crate::ProxyErrorReason`]).
    pub const ERROR_REASON: &str = "ferry.error.reason";
}
