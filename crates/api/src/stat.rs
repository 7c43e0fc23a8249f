//! The metrics half of the public API: golden metrics per resource (`stat`), who talks to
//! whom (`edges`), their recent history and a live stream, and the Prometheus service
//! discovery that lets a real Prometheus scrape the same proxies. `docs/metrics-api.md`
//! explains the semantics; `docs/openapi.yaml` lists the routes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET` [`StatQuery`]: one row of golden metrics per resource; answers [`StatAnswer`].
pub const STAT_PATH: &str = "/api/v1/stat";
/// `GET` [`StatQuery`] as Server-Sent Events: a `stat` event carrying a [`StatAnswer`] after
/// every scrape (embedded backend) or every scrape interval (Prometheus backend).
pub const STAT_STREAM_PATH: &str = "/api/v1/stat/stream";
/// `GET` [`HistoryQuery`]: one resource's golden metrics over the last minutes, one point
/// per step; answers [`StatHistory`].
pub const STAT_HISTORY_PATH: &str = "/api/v1/stat/history";
/// `GET` [`EdgesQuery`]: which resources talk to which, and whether with mTLS; answers
/// [`EdgesAnswer`].
pub const EDGES_PATH: &str = "/api/v1/edges";
/// `GET`: every proxy admin address to scrape, in Prometheus' `http_sd_configs` format;
/// answers a list of [`PrometheusTargetGroup`].
pub const PROMETHEUS_TARGETS_PATH: &str = "/api/v1/prometheus/targets";

/// The window used when none is asked for (Linkerd's `-t 1m`).
pub const DEFAULT_WINDOW: &str = "1m";
/// The shortest window accepted: a rate needs at least two scrapes in it.
pub const MIN_WINDOW_SECONDS: u64 = 15;
/// The longest window accepted: what the embedded store keeps.
pub const MAX_WINDOW_SECONDS: u64 = 15 * 60;

/// The `backend` of an answer computed from the control plane's own scrapes.
pub const BACKEND_EMBEDDED: &str = "embedded";
/// The `backend` of an answer computed by PromQL queries to `--prometheus-url`.
pub const BACKEND_PROMETHEUS: &str = "prometheus";

/// Query parameters of [`STAT_PATH`] and [`STAT_STREAM_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatQuery {
    /// The resource kind: `deploy`, `deployment`, `po`, `svc`, `ns`, ... (kubectl names).
    pub kind: String,
    /// One resource's name; all of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The namespace of the resources (default `default`); ignored for `ns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_namespaces: bool,
    /// Only traffic sent by this resource (`deploy/web`), measured on its outbound side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The namespace of `from` (default: `namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_namespace: Option<String>,
    /// Only traffic sent to this resource (`deploy/emoji`), measured on the callers' side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The namespace of `to` (default: `namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_namespace: Option<String>,
    /// The rate window, a duration like `1m` or `30s` (15s to 15m; default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// The body of [`STAT_PATH`] (and each event of [`STAT_STREAM_PATH`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatAnswer {
    /// One row per resource, sorted by namespace then name.
    pub rows: Vec<StatRow>,
    /// The window as asked (`1m`).
    pub window: String,
    /// The window in seconds.
    pub window_seconds: u64,
    /// [`BACKEND_EMBEDDED`] or [`BACKEND_PROMETHEUS`].
    pub backend: String,
    /// When the answer was computed, Unix milliseconds.
    pub timestamp_ms: u64,
}

/// One resource's golden metrics over the window. `None` (JSON `null`) means no traffic:
/// the CLI prints `-`, never 0 %.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatRow {
    /// The resource's namespace (its own name for `ns` rows).
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    /// The canonical kind: `deployment`, `pod`, `service`, `namespace`, ...
    pub kind: String,
    /// How many of its instances run a Ferry proxy.
    pub meshed: Meshed,
    /// Successful responses / all responses, 0.0 to 1.0.
    pub success: Option<f64>,
    /// Requests per second.
    pub rps: Option<f64>,
    /// Requests completed in the window (rate × window, so extrapolated like PromQL's
    /// `increase`).
    pub requests: Option<f64>,
    /// Response latency percentiles, milliseconds.
    pub latency_ms: Latency,
    /// TCP connections open now.
    pub tcp_connections: Option<f64>,
    /// Bytes per second read from peers.
    pub read_bytes_per_sec: Option<f64>,
    /// Bytes per second written to peers.
    pub write_bytes_per_sec: Option<f64>,
}

/// Linkerd's MESHED column: `ready/total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meshed {
    /// Instances that run a Ferry proxy.
    pub ready: u32,
    /// All instances.
    pub total: u32,
}

/// Latency percentiles in milliseconds, as `histogram_quantile` over the latency buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// The median.
    pub p50: Option<f64>,
    /// The 95th percentile.
    pub p95: Option<f64>,
    /// The 99th percentile.
    pub p99: Option<f64>,
}

/// Query parameters of [`STAT_HISTORY_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// The resource: `deploy/web` (or `ns/emojivoto`, `po/web-0`, `svc/emoji`).
    pub resource: String,
    /// Its namespace (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only traffic from this resource to `resource` (measured on the sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only traffic from `resource` to this one (measured on `resource`'s proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The rate window of each point (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// How far back (default and at most 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// The distance between points (default: the scrape interval; at least 1s, and
    /// widened so there are at most 900 points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// The body of [`STAT_HISTORY_PATH`]: oldest point first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatHistory {
    /// The canonical kind of the resource.
    pub kind: String,
    /// The resource's namespace.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    /// The rate window of each point, seconds.
    pub window_seconds: u64,
    /// The distance between points, seconds.
    pub step_seconds: u64,
    /// [`BACKEND_EMBEDDED`] or [`BACKEND_PROMETHEUS`].
    pub backend: String,
    /// The points.
    pub points: Vec<HistoryPoint>,
}

/// One point of a [`StatHistory`]: the golden metrics over the window ending at `timestampMs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    /// The end of the window, Unix milliseconds.
    pub timestamp_ms: u64,
    /// As [`StatRow::success`].
    pub success: Option<f64>,
    /// As [`StatRow::rps`].
    pub rps: Option<f64>,
    /// As [`StatRow::latency_ms`].
    pub latency_ms: Latency,
}

/// Query parameters of [`EDGES_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgesQuery {
    /// The resource kind edges are drawn between (`deploy`, `po`, ...).
    pub kind: String,
    /// Only edges with a source or destination in this namespace (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_namespaces: bool,
    /// The window traffic is looked for in (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// The body of [`EDGES_PATH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgesAnswer {
    /// One edge per (source, destination, identities), sorted.
    pub edges: Vec<Edge>,
    /// The window, seconds.
    pub window_seconds: u64,
    /// [`BACKEND_EMBEDDED`] or [`BACKEND_PROMETHEUS`].
    pub backend: String,
}

/// Traffic from one resource to another seen in the window, from the sender's outbound
/// metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    /// The canonical kind of both ends.
    pub kind: String,
    /// The sending resource.
    pub src: String,
    /// Its namespace.
    pub src_namespace: String,
    /// The receiving resource.
    pub dst: String,
    /// Its namespace.
    pub dst_namespace: String,
    /// Whether the traffic was mTLS (`tls="true"`).
    pub secured: bool,
    /// The sender's identity, when the receiver saw one (`client_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The receiver's identity as the sender verified it (`server_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Why it was not mTLS (`no_tls_reason`), when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_tls_reason: Option<String>,
    /// Requests per second on the edge.
    pub rps: f64,
}

/// One group of Prometheus' HTTP service discovery: targets sharing labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrometheusTargetGroup {
    /// `host:port` of proxy admin servers.
    pub targets: Vec<String>,
    /// Labels attached to every sample scraped from them: `namespace`, `pod`,
    /// `<workload kind>` (e.g. `deployment`), `serviceaccount`.
    pub labels: BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `GET`: per-route golden metrics of the routes a resource's proxies apply (`ferry routes`),
/// with [`StatQuery`]'s parameters: `kind`/`name`/`namespace` the sender (`deploy/web`),
/// `to` a Service whose routes alone are shown, `window`. Answers [`RoutesAnswer`].
pub const ROUTES_PATH: &str = "/api/v1/routes";

/// The body of [`ROUTES_PATH`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutesAnswer {
    /// One row per route, sorted by Service then route.
    pub rows: Vec<RouteRow>,
    /// The window as asked (`1m`).
    pub window: String,
    /// [`BACKEND_EMBEDDED`] or [`BACKEND_PROMETHEUS`].
    pub backend: String,
}

/// One route's figures over the window, from the sender's proxies. Effective: what the
/// callers saw (one per request, after retries). Actual: what the backends saw (every try).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    /// The Service the route is attached to: `namespace/name:port`.
    pub service: String,
    /// The route: `HTTPRoute/namespace/name`, or `default` for a Service without routes.
    pub route: String,
    /// Effective success rate, 0.0 to 1.0.
    pub success: Option<f64>,
    /// Effective requests per second.
    pub rps: Option<f64>,
    /// Effective latency percentiles (to the response head), milliseconds.
    pub latency_ms: Latency,
    /// Retries per second.
    pub retries_per_sec: Option<f64>,
    /// Actual success rate: successful tries over all tries (a retry follows a failed try).
    pub actual_success: Option<f64>,
    /// Actual tries per second (requests plus retries).
    pub actual_rps: Option<f64>,
}
