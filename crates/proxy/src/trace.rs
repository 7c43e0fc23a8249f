//! Distributed tracing (docs/tracing.md, "The span contract for proxies"): the proxy
//! continues W3C (`traceparent`/`tracestate`) and B3 (single `b3` and multi `x-b3-*`)
//! contexts, reports each sampled request it handles as an OpenTelemetry span (`SERVER`
//! inbound, `CLIENT` outbound) and exports the spans over OTLP/gRPC in batches from a
//! bounded queue.
//!
//! Cost: with tracing off (no `--trace-collector`) a request pays one `Option` check. With
//! it on, a request that carries no context pays four header lookups and, when the
//! sampling rate is above zero, one random number; an unsampled request is left untouched
//! and emits nothing. A sampled request's span lives in an [`Active`] shared by the request
//! (its extensions, where the forwarding code adds what it learns: the route, the endpoint)
//! and the response's [`crate::body::Recorder`], which ends it when the body ends.
//!
//! Export never waits on the collector: a span is offered to the queue without waiting; a
//! full queue, a failed export or one slower than [`EXPORT_TIMEOUT`] drops spans, counted
//! in `proxy_trace_spans_dropped_total`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ferry_api::{trace::attr, ProxyErrorReason};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};
use tokio::sync::mpsc;

use crate::{config::Authority, metrics::Direction};

/// Spans waiting for export at most; more are dropped (`reason="queue_full"`).
pub const QUEUE_SPANS: usize = 2048;
/// Spans per export request at most.
pub const BATCH_SPANS: usize = 512;
/// How long a batch waits for more spans after its first before it is sent.
pub const BATCH_LINGER: Duration = Duration::from_millis(200);
/// How long the collector has to connect and take a batch; then the batch is dropped
/// (`reason="export_failed"`).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// The headers whose presence says a request carries a trace context.
const CONTEXT_HEADERS: [HeaderName; 4] = [TRACEPARENT, B3, B3_TRACE_ID, B3_SAMPLED];

/// The tracing flags, validated (see `Args::trace_collector`).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/gRPC collector.
    pub collector: Authority,
    /// The rate, 0.0–1.0, at which requests without a context are sampled.
    pub sampling: f64,
    /// Extra resource attributes (`k=v,k=v`), in order.
    pub resource: Vec<(String, String)>,
}

/// Why `--trace-*` flags were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceConfigError {
    /// `--trace-sampling` is not a number in 0.0–1.0.
    #[error("trace sampling {0:?} is not a rate from 0.0 to 1.0")]
    Sampling(String),
    /// A `--trace-resource-attributes` item is not `key=value`.
    #[error("trace resource attribute {0:?} is not KEY=VALUE")]
    Attribute(String),
}

/// Parses `--trace-sampling`.
pub fn parse_sampling(s: &str) -> Result<f64, TraceConfigError> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(TraceConfigError::Sampling(s.to_string())),
    }
}

/// Parses `--trace-resource-attributes` (`k=v,k=v`, as `OTEL_RESOURCE_ATTRIBUTES`; empty
/// items are skipped, values may be percent-encoded).
pub fn parse_resource(s: &str) -> Result<Vec<(String, String)>, TraceConfigError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(TraceConfigError::Attribute(item.to_string()));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(TraceConfigError::Attribute(item.to_string()));
        }
        out.push((k.to_string(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Which propagation format a context came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// A context read from a request's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    format: Format,
}

/// What the headers say about sampling.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// No usable context.
    None,
    /// A B3 header that says "do not sample" without ids (`b3: 0`).
    Deny,
    /// A context.
    Parent(Parent),
}

fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    (out != [0u8; N]).then_some(out)
}

/// A B3 trace id: 16 or 32 hex digits (a 64-bit id is the low half of the 128-bit one).
fn b3_trace_id(s: &[u8]) -> Option<[u8; 16]> {
    match s.len() {
        32 => hex_bytes::<16>(s),
        16 => {
            let low = hex_bytes::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// `traceparent: 00-<trace id>-<parent id>-<flags>`; later versions may add fields after
/// these four (W3C Trace Context §3.2.4), version `ff` is invalid.
fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let version = hex_bytes::<1>(&v[0..2]).map_or(0, |b| b[0]);
    if &v[0..2] == b"ff"
        || (version == 0 && &v[0..2] != b"00")
        || (&v[0..2] == b"00" && v.len() != 55)
    {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let flags = [hex_val(v[53])?, hex_val(v[54])?];
    Some(Parent {
        trace_id: hex_bytes(&v[3..35])?,
        span_id: hex_bytes(&v[36..52])?,
        sampled: flags[1] & 1 == 1,
        format: Format::W3c,
    })
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or just a sampling state.
fn parse_b3_single(v: &[u8]) -> Found {
    let mut parts = v.split(|&b| b == b'-');
    let first = parts.next().unwrap_or_default();
    let Some(span) = parts.next() else {
        return if first == b"0" {
            Found::Deny
        } else {
            Found::None
        };
    };
    let (Some(trace_id), Some(span_id)) = (b3_trace_id(first), hex_bytes::<8>(span)) else {
        return Found::None;
    };
    let sampled = match parts.next() {
        None => None,
        Some(b"1" | b"d") => Some(true),
        Some(b"0") => Some(false),
        Some(_) => return Found::None,
    };
    Found::Parent(Parent {
        trace_id,
        span_id,
        // A deferred decision is taken as "sampled": the caller traced enough to send ids.
        sampled: sampled.unwrap_or(true),
        format: Format::B3Single,
    })
}

fn parse_b3_multi(headers: &HeaderMap) -> Found {
    let get = |n: &HeaderName| headers.get(n).map(|v| v.as_bytes().trim_ascii());
    let debug = get(&B3_FLAGS) == Some(b"1");
    let sampled = match get(&B3_SAMPLED) {
        _ if debug => Some(true),
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => None,
    };
    let (Some(trace_id), Some(span_id)) = (
        get(&B3_TRACE_ID).and_then(b3_trace_id),
        get(&B3_SPAN_ID).and_then(hex_bytes::<8>),
    ) else {
        return if sampled == Some(false) {
            Found::Deny
        } else {
            Found::None
        };
    };
    Found::Parent(Parent {
        trace_id,
        span_id,
        sampled: sampled.unwrap_or(true),
        format: Format::B3Multi,
    })
}

/// Reads the context of `headers`: W3C first, then B3 single, then B3 multi.
fn extract(headers: &HeaderMap) -> Found {
    if let Some(v) = headers.get(TRACEPARENT) {
        if let Some(p) = parse_traceparent(v.as_bytes().trim_ascii()) {
            return Found::Parent(p);
        }
    }
    if let Some(v) = headers.get(B3) {
        match parse_b3_single(v.as_bytes().trim_ascii()) {
            Found::None => {}
            found => return found,
        }
    }
    if headers.contains_key(B3_TRACE_ID) || headers.contains_key(B3_SAMPLED) {
        return parse_b3_multi(headers);
    }
    Found::None
}

/// The sampling decision of a raw HTTP/1 request head that names a context header (the
/// fast path's flag): `Some(sampled)` when it carries a context or a "do not sample",
/// `None` when no usable one (the sampling rate decides).
pub fn raw_head_sampled(head: &[u8]) -> Option<bool> {
    let mut headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        if is_context_header(h.name)
            || (h.name.len() > 5 && h.name.as_bytes()[..5].eq_ignore_ascii_case(b"x-b3-"))
        {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                map.append(n, v);
            }
        }
    }
    match extract(&map) {
        Found::Parent(p) => Some(p.sampled),
        Found::Deny => Some(false),
        Found::None => None,
    }
}

/// Whether a header name is one the proxy reads a context from (the fast path's flag).
#[inline]
pub fn is_context_header(name: &str) -> bool {
    match name.len() {
        2 => name.eq_ignore_ascii_case("b3"),
        11 => name.eq_ignore_ascii_case("traceparent"),
        12 => {
            name.eq_ignore_ascii_case("x-b3-traceid") || name.eq_ignore_ascii_case("x-b3-sampled")
        }
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

/// `host:port` (or `[v6]:port`) as host and port; a missing or bad port is `None`.
fn split_authority(a: &str) -> (String, Option<i64>) {
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse::<u16>().ok()),
        _ => (a, None),
    };
    match port {
        Some(p) => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            Some(p.into()),
        ),
        None => (
            a.trim_start_matches('[').trim_end_matches(']').to_string(),
            None,
        ),
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The workload (`namespace/name`) a mesh identity names:
/// `<sa>.<namespace>.serviceaccount.identity.…` (service accounts name workloads in Ferry).
fn identity_workload(id: &str) -> Option<String> {
    let mut parts = id.split('.');
    let sa = parts.next()?;
    let ns = parts.next()?;
    (parts.next() == Some("serviceaccount")).then(|| format!("{ns}/{sa}"))
}

/// The workload (`namespace/name`) an endpoint's discovery labels name.
fn labels_workload(labels: &BTreeMap<String, String>) -> Option<String> {
    let ns = labels.get("namespace")?;
    [
        "deployment",
        "statefulset",
        "daemonset",
        "replicaset",
        "job",
        "cronjob",
        "pod",
    ]
    .iter()
    .find_map(|k| labels.get(*k))
    .map(|name| format!("{ns}/{name}"))
}

/// The workload name a pod name implies: `web-5d8c7b6f4-x2x9q` → `web` (Deployment),
/// `web-0` → `web` (StatefulSet); anything else is taken whole.
fn workload_from_pod(pod: &str) -> String {
    let segs: Vec<&str> = pod.split('-').collect();
    let alnum = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if segs.len() >= 3
        && segs[segs.len() - 1].len() == 5
        && alnum(segs[segs.len() - 1])
        && (6..=10).contains(&segs[segs.len() - 2].len())
        && alnum(segs[segs.len() - 2])
    {
        return segs[..segs.len() - 2].join("-");
    }
    if segs.len() >= 2 && segs[segs.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
        return segs[..segs.len() - 1].join("-");
    }
    pod.to_string()
}

/// Export counters.
#[derive(Default)]
struct Stats {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_export_failed: AtomicU64,
}

/// The proxy's tracer: sampling, span starts, the export queue and its counters.
pub struct Tracer {
    sampling: f64,
    queue: mpsc::Sender<Span>,
    stats: Arc<Stats>,
    /// This proxy's workload, `namespace/name`.
    workload: Arc<str>,
}

/// What the forwarding code tells a span about the connection.
pub struct ConnInfo<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's mTLS identity, when it had one.
    pub client_id: Option<&'a str>,
    /// The destination's name when the listener fixes it (an upstream listener's target):
    /// it names the span and `server.*` rather than the request's authority.
    pub target: Option<&'a str>,
}

impl Tracer {
    /// A tracer exporting to `config.collector`, and the task that exports (to spawn).
    pub fn new(
        config: &TraceConfig,
        pod_namespace: &str,
        pod_name: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> (
        Arc<Self>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let configured = |k: &str| {
            config
                .resource
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let name = configured(attr::SERVICE_NAME)
            .or_else(|| configured("k8s.deployment.name"))
            .unwrap_or_else(|| workload_from_pod(pod_name));
        let namespace =
            configured(attr::SERVICE_NAMESPACE).unwrap_or_else(|| pod_namespace.to_string());
        let workload: Arc<str> = format!("{namespace}/{name}").into();
        let mut resource = vec![
            kv(attr::SERVICE_NAME, &*name),
            kv(attr::SERVICE_NAMESPACE, &*namespace),
            kv(attr::K8S_NAMESPACE, &*namespace),
            kv(attr::FERRY_WORKLOAD, &*workload),
            kv(attr::FERRY_PROXY_VERSION, ferry_api::version::VERSION),
        ];
        if !pod_name.is_empty() {
            resource.push(kv(attr::K8S_POD, pod_name));
        }
        for (k, v) in &config.resource {
            resource.retain(|a| &a.key != k);
            resource.push(kv(k, v.clone()));
        }
        let (tx, rx) = mpsc::channel(QUEUE_SPANS);
        let stats = Arc::new(Stats::default());
        let exporter = export_loop(
            config.collector.clone(),
            Resource {
                attributes: resource,
                ..Default::default()
            },
            rx,
            stats.clone(),
            stop,
        );
        (
            Arc::new(Self {
                sampling: config.sampling,
                queue: tx,
                stats,
                workload,
            }),
            exporter,
        )
    }

    /// Whether a request without a context is sampled (the configured rate).
    #[inline]
    pub fn sample_new(&self) -> bool {
        self.sampling > 0.0 && (self.sampling >= 1.0 || fastrand::f64() < self.sampling)
    }

    /// Starts a span for `req` when it is sampled: its parent is the request's context (or
    /// none, with `force` or at the sampling rate), and the request goes on with the new
    /// span as its parent (the formats that came in; W3C for a new trace).
    pub fn start<B>(
        self: &Arc<Self>,
        req: &mut Request<B>,
        direction: Direction,
        conn: ConnInfo<'_>,
        force: bool,
    ) -> Option<Arc<Active>> {
        let headers = req.headers();
        // One pass over the names (a request has few), not a hashed lookup of each of the
        // four: most requests carry no context, and this is all tracing costs them.
        let has_context = headers.keys().any(|k| CONTEXT_HEADERS.contains(k));
        let found = if has_context {
            extract(headers)
        } else {
            Found::None
        };
        let parent = match found {
            Found::Parent(p) if p.sampled => Some(p),
            Found::Parent(_) | Found::Deny => return None,
            Found::None if force || self.sample_new() => None,
            Found::None => return None,
        };
        let span_id = loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                break id;
            }
        };
        let trace_id = match &parent {
            Some(p) => p.trace_id,
            None => loop {
                let id = fastrand::u128(..).to_be_bytes();
                if id != [0; 16] {
                    break id;
                }
            },
        };
        let trace_state = req
            .headers()
            .get(TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| parent.as_ref().is_some_and(|p| p.format == Format::W3c))
            .unwrap_or("")
            .to_string();
        inject(req.headers_mut(), &trace_id, &span_id, parent.as_ref());
        let mut span = self.request_span(req, direction, &conn);
        span.trace_id = trace_id.to_vec();
        span.span_id = span_id.to_vec();
        span.parent_span_id = parent.map(|p| p.span_id.to_vec()).unwrap_or_default();
        span.trace_state = trace_state;
        // Sampled; whether the parent is remote is known (it is, when there is one).
        span.flags = 0x100
            | if span.parent_span_id.is_empty() {
                0
            } else {
                0x200
            }
            | 1;
        Some(Arc::new(Active {
            span: Mutex::new(Some(span)),
            tracer: self.clone(),
        }))
    }

    /// The span's kind, name, start and request attributes.
    fn request_span<B>(&self, req: &Request<B>, direction: Direction, conn: &ConnInfo<'_>) -> Span {
        let method = req.method().as_str();
        let path = req.uri().path();
        let authority = conn
            .target
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or("")
            .to_ascii_lowercase();
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let mut attrs = Vec::with_capacity(20);
        attrs.push(kv("http.request.method", method));
        attrs.push(kv("url.path", path));
        attrs.push(kv("url.scheme", "http"));
        let (host, port) = split_authority(&authority);
        if !host.is_empty() {
            attrs.push(kv("server.address", host));
        }
        if let Some(p) = port {
            attrs.push(kv_int("server.port", p));
        }
        attrs.push(kv(
            "network.protocol.version",
            match req.version() {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        ));
        let rpc = grpc
            .then(|| path.strip_prefix('/'))
            .flatten()
            .and_then(|p| p.split_once('/'));
        if let Some((service, rpc_method)) = rpc {
            attrs.push(kv("rpc.system", "grpc"));
            attrs.push(kv("rpc.service", service));
            attrs.push(kv("rpc.method", rpc_method));
        }
        attrs.push(kv(
            attr::DIRECTION,
            match direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            },
        ));
        let (kind, name) = match direction {
            Direction::Inbound => {
                attrs.push(kv("client.address", conn.peer.ip().to_string()));
                attrs.push(kv("network.peer.address", conn.peer.ip().to_string()));
                attrs.push(kv_int("network.peer.port", conn.peer.port().into()));
                if let Some(id) = conn.client_id {
                    attrs.push(kv(attr::SOURCE_IDENTITY, id));
                    if let Some(w) = identity_workload(id) {
                        attrs.push(kv(attr::SOURCE_WORKLOAD, w));
                    }
                }
                attrs.push(kv(attr::DESTINATION_WORKLOAD, &*self.workload));
                let name = match rpc {
                    Some((s, m)) => format!("{s}/{m}"),
                    None => method.to_string(),
                };
                (SpanKind::Server, name)
            }
            Direction::Outbound => {
                attrs.push(kv(attr::SOURCE_WORKLOAD, &*self.workload));
                attrs.push(kv_int(attr::RETRY_ATTEMPT, 1));
                let name = match rpc {
                    Some((s, m)) => format!("{s}/{m}"),
                    None => format!("{method} {authority}"),
                };
                (SpanKind::Client, name)
            }
        };
        Span {
            name,
            kind: kind as i32,
            start_time_unix_nano: now_nanos(),
            attributes: attrs,
            ..Default::default()
        }
    }

    /// Offers a finished span to the export queue, never waiting.
    fn offer(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.stats.dropped_queue_full.fetch_add(1, Relaxed);
        }
    }

    /// Appends the export counters in the Prometheus text format.
    pub fn encode_metrics(&self, out: &mut String) {
        let name = ferry_api::metrics::PROXY_TRACE_SPANS_EXPORTED_TOTAL;
        let _ = writeln!(out, "# HELP {name} Spans the collector accepted.");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", self.stats.exported.load(Relaxed));
        let name = ferry_api::metrics::PROXY_TRACE_SPANS_DROPPED_TOTAL;
        let _ = writeln!(
            out,
            "# HELP {name} Spans dropped before the collector took them, by reason."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (reason, n) in [
            ("queue_full", &self.stats.dropped_queue_full),
            ("export_failed", &self.stats.dropped_export_failed),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.load(Relaxed));
        }
    }
}

/// Writes the proxy's span `span_id` into the request as the parent of the next hop: the
/// formats that came in (for the same trace), or a new `traceparent` for a new trace.
fn inject(
    headers: &mut HeaderMap,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    parent: Option<&Parent>,
) {
    let span_hex = hex(span_id);
    let set = |h: &mut HeaderMap, n: HeaderName, v: String| {
        if let Ok(v) = HeaderValue::try_from(v) {
            h.insert(n, v);
        }
    };
    let Some(parent) = parent else {
        set(
            headers,
            TRACEPARENT,
            format!("00-{}-{span_hex}-01", hex(trace_id)),
        );
        return;
    };
    // Every format that came in for this trace, so that apps reading either keep it.
    if let Some(Found::Parent(p)) = headers
        .get(TRACEPARENT)
        .map(|v| parse_traceparent(v.as_bytes().trim_ascii()).map_or(Found::None, Found::Parent))
    {
        if p.trace_id == *trace_id {
            let v = headers[TRACEPARENT].as_bytes();
            // Keep the version and the flags the caller sent (sampled is set).
            let version = String::from_utf8_lossy(&v[0..2]).into_owned();
            let flags = hex_val(v[53]).unwrap_or(0) << 4 | hex_val(v[54]).unwrap_or(0) | 1;
            let rest = String::from_utf8_lossy(&v[55..]).into_owned();
            set(
                headers,
                TRACEPARENT,
                format!("{version}-{}-{span_hex}-{flags:02x}{rest}", hex(trace_id)),
            );
        }
    }
    if let Some(v) = headers.get(B3) {
        let v = v.as_bytes().trim_ascii().to_vec();
        if let Found::Parent(p) = parse_b3_single(&v) {
            if p.trace_id == *trace_id {
                let mut parts = v.split(|&b| b == b'-');
                let trace_text =
                    String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let old_span =
                    String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let state = match parts.next() {
                    Some(b"d") => "d",
                    _ => "1",
                };
                set(
                    headers,
                    B3,
                    format!("{trace_text}-{span_hex}-{state}-{old_span}"),
                );
            }
        }
    }
    if headers.contains_key(B3_TRACE_ID) {
        if let Found::Parent(p) = parse_b3_multi(headers) {
            if p.trace_id == *trace_id {
                set(headers, B3_PARENT_SPAN_ID, hex(&p.span_id));
                set(headers, B3_SPAN_ID, span_hex.clone());
            }
        }
    }
    let _ = parent;
}

/// A sampled request's span while the request is in flight: in the request's extensions
/// (see [`endpoint`], [`route`]) and, once answered, in its response's recorder.
pub struct Active {
    span: Mutex<Option<Span>>,
    tracer: Arc<Tracer>,
}

impl Active {
    /// Records the route that matched, `namespace/name`.
    /// The route (and the path of its rule's match, `http.route`) the request took.
    pub fn route(&self, route: &crate::policy::ObjectLabels, path: Option<&str>) {
        self.with(|span| {
            span.attributes.push(kv(
                attr::ROUTE,
                format!("{}/{}", route.namespace, route.name),
            ));
            if let Some(path) = path {
                span.attributes.push(kv(attr::HTTP_ROUTE, path.to_string()));
            }
        });
    }

    fn with(&self, f: impl FnOnce(&mut Span)) {
        if let Some(span) = self.span.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f(span);
        }
    }

    /// Ends the span: the response's status, the proxy's error reason (if it made the
    /// answer or cut it off), and whether the body reached its end.
    pub fn end(
        &self,
        status: u16,
        grpc_status: Option<u16>,
        error: Option<ProxyErrorReason>,
        ended: bool,
    ) {
        let Some(mut span) = self.span.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        close(&mut span, Some(status), grpc_status, error, ended);
        self.tracer.offer(span);
    }
}

/// Sets a span's end, its response attributes and its status.
fn close(
    span: &mut Span,
    status: Option<u16>,
    grpc_status: Option<u16>,
    error: Option<ProxyErrorReason>,
    ended: bool,
) {
    span.end_time_unix_nano = now_nanos().max(span.start_time_unix_nano);
    if let Some(status) = status {
        span.attributes
            .push(kv_int("http.response.status_code", status.into()));
    }
    if let Some(g) = grpc_status {
        span.attributes
            .push(kv_int("rpc.grpc.status_code", g.into()));
    }
    let server = span.kind == SpanKind::Server as i32;
    let status = status.unwrap_or(0);
    let failed = match grpc_status {
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
        Some(g) if server => matches!(g, 2 | 4 | 12 | 13 | 14 | 15),
        Some(g) => g != 0,
        None if server => status >= 500,
        None => status >= 400,
    };
    let error = error.or((!ended).then_some(ProxyErrorReason::UpstreamReset));
    span.status = Some(match error {
        Some(reason) => {
            span.attributes
                .push(kv(attr::ERROR_REASON, reason.as_str()));
            span.attributes.push(kv("error.type", reason.as_str()));
            Status {
                code: StatusCode::Error as i32,
                message: reason.as_str().to_string(),
            }
        }
        None if failed => {
            let code = grpc_status.map_or(status, |g| g).to_string();
            span.attributes.push(kv("error.type", code.clone()));
            Status {
                code: StatusCode::Error as i32,
                message: match grpc_status {
                    Some(g) => format!("grpc-status {g}"),
                    None => format!("HTTP {status}"),
                },
            }
        }
        None => Status::default(),
    });
}

impl Drop for Active {
    fn drop(&mut self) {
        // A request dropped before it was answered (the client went away).
        if self.span.get_mut().map(|s| s.is_some()).unwrap_or(false) {
            self.end(499, None, None, false);
        }
    }
}

/// Tells the request's span (if it is sampled) the endpoint its request goes to: its
/// address, discovery labels (the destination workload) and verified identity.
#[inline]
pub fn endpoint(
    ext: &http::Extensions,
    addr: SocketAddr,
    labels: Option<&BTreeMap<String, String>>,
    server_id: Option<&str>,
) {
    let Some(active) = ext.get::<Arc<Active>>() else {
        return;
    };
    active.with(|span| {
        if span.kind == SpanKind::Server as i32 {
            // Inbound: the application is the endpoint, named by the span's resource.
            return;
        }
        span.attributes.retain(|a| !is_endpoint_attribute(&a.key));
        span.attributes.push(kv(attr::ENDPOINT, addr.to_string()));
        span.attributes
            .push(kv("network.peer.address", addr.ip().to_string()));
        span.attributes
            .push(kv_int("network.peer.port", addr.port().into()));
        if let Some(w) = labels.and_then(labels_workload) {
            span.attributes.push(kv(attr::DESTINATION_WORKLOAD, w));
        }
        if let Some(id) = server_id {
            span.attributes.push(kv(attr::DESTINATION_IDENTITY, id));
            if labels.is_none() {
                if let Some(w) = identity_workload(id) {
                    span.attributes.push(kv(attr::DESTINATION_WORKLOAD, w));
                }
            }
        }
    });
}

/// The attributes [`endpoint`] sets.
fn is_endpoint_attribute(key: &str) -> bool {
    matches!(
        key,
        attr::ENDPOINT
            | attr::DESTINATION_WORKLOAD
            | attr::DESTINATION_IDENTITY
            | "network.peer.address"
            | "network.peer.port"
    )
}

/// Starts the span of `req` if it is sampled ([`Tracer::start`]) and puts it in the
/// request's extensions, where [`endpoint`] and [`of`] find it.
pub fn start<B>(
    tracer: &Arc<Tracer>,
    req: &mut Request<B>,
    direction: Direction,
    conn: &crate::tap::ConnMeta,
    target: Option<&str>,
    force: bool,
) -> Option<Arc<Active>> {
    let info = ConnInfo {
        peer: conn.peer,
        client_id: conn.tls.as_ref().and_then(|t| t.client_id.as_deref()),
        target,
    };
    let span = tracer.start(req, direction, info, force)?;
    req.extensions_mut().insert(span.clone());
    Some(span)
}

/// The span of a traced request.
#[inline]
pub fn of(ext: &http::Extensions) -> Option<Arc<Active>> {
    ext.get::<Arc<Active>>().cloned()
}

/// A route is about to retry a traced request: the attempt's `CLIENT` span ends with its
/// answer (`status`, gRPC status) or the proxy's error, and the next attempt's span is
/// readied ([`next_attempt`] starts it).
pub fn attempt_done(
    span: Option<&Arc<Active>>,
    answer: Option<(u16, Option<u16>)>,
    error: Option<ProxyErrorReason>,
) {
    let Some(active) = span else {
        return;
    };
    let mut guard = active.span.lock().unwrap_or_else(|e| e.into_inner());
    let Some(current) = guard.as_mut() else {
        return;
    };
    let mut done = current.clone();
    close(
        &mut done,
        answer.map(|a| a.0),
        answer.and_then(|a| a.1),
        error,
        true,
    );
    // What the next attempt learns anew (its endpoint) is not carried over.
    current
        .attributes
        .retain(|a| !is_endpoint_attribute(&a.key));
    for a in current
        .attributes
        .iter_mut()
        .filter(|a| a.key == attr::RETRY_ATTEMPT)
    {
        if let Some(AnyValue {
            value: Some(any_value::Value::IntValue(n)),
        }) = a.value.as_mut()
        {
            *n += 1;
        }
    }
    drop(guard);
    active.tracer.offer(done);
}

/// Starts the next attempt's `CLIENT` span (a sibling of the last, with the same parent):
/// a new span id, written into `req`'s context headers in place of the last attempt's, so
/// the destination's `SERVER` span hangs under the attempt that reached it.
pub fn next_attempt<B>(span: Option<&Arc<Active>>, req: &mut Request<B>) {
    let Some(active) = span else {
        return;
    };
    {
        let mut guard = active.span.lock().unwrap_or_else(|e| e.into_inner());
        let Some(current) = guard.as_mut() else {
            return;
        };
        let new_id = loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] && id[..] != current.span_id[..] {
                break id;
            }
        };
        let (old_hex, new_hex) = (hex(&current.span_id), hex(&new_id));
        for name in [TRACEPARENT, B3, B3_SPAN_ID] {
            let Some(v) = req.headers().get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Ok(v) = HeaderValue::try_from(v.replace(&old_hex, &new_hex)) {
                req.headers_mut().insert(name, v);
            }
        }
        current.span_id = new_id.to_vec();
        current.start_time_unix_nano = now_nanos();
    }
    req.extensions_mut().insert(active.clone());
}

/// Sends batches from `rx` to `collector` until every sender is gone, or `stop`: then what
/// is queued goes in one last export.
async fn export_loop(
    collector: Authority,
    resource: Resource,
    mut rx: mpsc::Receiver<Span>,
    stats: Arc<Stats>,
    stop: tokio_util::sync::CancellationToken,
) {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{collector}")) {
        Ok(e) => e.connect_timeout(EXPORT_TIMEOUT).timeout(EXPORT_TIMEOUT),
        Err(error) => {
            tracing::error!(%collector, %error, "invalid trace collector address; spans are dropped");
            while let Some(_span) = rx.recv().await {
                stats.dropped_export_failed.fetch_add(1, Relaxed);
            }
            return;
        }
    };
    let mut client = TraceServiceClient::new(endpoint.connect_lazy());
    let scope = InstrumentationScope {
        name: "ferry-proxy".into(),
        version: ferry_api::version::VERSION.into(),
        ..Default::default()
    };
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH_SPANS);
    let mut last = false;
    loop {
        if !last {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH_SPANS) => if n == 0 { return },
                () = stop.cancelled() => last = true,
            }
        }
        if last {
            while batch.len() < BATCH_SPANS {
                match rx.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        } else {
            let linger = tokio::time::sleep(BATCH_LINGER);
            tokio::pin!(linger);
            while batch.len() < BATCH_SPANS {
                let room = BATCH_SPANS - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    () = &mut linger => break,
                    () = stop.cancelled() => { last = true; break }
                }
            }
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: std::mem::take(&mut batch),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let sent = tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await;
        match sent {
            Ok(Ok(_)) => {
                stats.exported.fetch_add(n, Relaxed);
                if std::mem::replace(&mut failing, false) {
                    tracing::info!(%collector, "the trace collector accepts spans again");
                }
            }
            Ok(Err(status)) => {
                stats.dropped_export_failed.fetch_add(n, Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%collector, error = %status, "trace export failed; spans are dropped until the collector takes them");
                }
            }
            Err(_) => {
                stats.dropped_export_failed.fetch_add(n, Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%collector, timeout = ?EXPORT_TIMEOUT, "trace export timed out; spans are dropped until the collector takes them");
                }
            }
        }
        batch.reserve(BATCH_SPANS);
    }
}

#[cfg(test)]
mod tests;
