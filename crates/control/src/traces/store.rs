//! The in-memory trace store: the most recent traces, bounded by count, by bytes and by
//! age, the oldest evicted first. Spans are grouped by trace id as they arrive, from any
//! number of export requests (each proxy of a hop exports its own).
//!
//! "Oldest" is by first arrival: a trace keeps its place when more of its spans come in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::trace::{
    attr, Span, Trace, TraceStats, TraceSummary, STATUS_ERROR, STATUS_OK, STATUS_UNSET,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use tokio::time::Instant;

/// A trace id: 16 bytes.
pub type TraceId = [u8; 16];

/// What the store keeps at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Traces kept.
    pub max_traces: usize,
    /// Bytes of spans kept (estimated: strings plus a fixed overhead per span).
    pub max_bytes: usize,
    /// Spans kept of one trace; later ones are counted and left out.
    pub max_spans_per_trace: usize,
    /// How long a trace is kept after its last span arrived.
    pub max_age: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_traces: 1000,
            max_bytes: 64 * 1024 * 1024,
            max_spans_per_trace: 1000,
            max_age: Duration::from_secs(60 * 60),
        }
    }
}

/// Attributes kept of one span; the rest are left out.
pub const MAX_ATTRIBUTES: usize = 64;
/// Characters kept of one attribute value or span name.
pub const MAX_VALUE_CHARS: usize = 512;
/// What one span costs besides its strings (the struct, map nodes, the index).
const SPAN_OVERHEAD: usize = 256;

/// The counters behind [`TraceStats`], shared by the receiver, the store and the forwarder.
#[derive(Debug, Default)]
pub struct Counters {
    /// Whether the receiver listens.
    pub receiving: std::sync::atomic::AtomicBool,
    /// Spans received.
    pub spans_received: AtomicU64,
    /// Spans refused for malformed ids.
    pub spans_rejected: AtomicU64,
    /// Spans not kept.
    pub spans_not_kept: AtomicU64,
    /// Traces evicted.
    pub traces_evicted: AtomicU64,
    /// Spans forwarded.
    pub spans_forwarded: AtomicU64,
    /// Spans the forwarder dropped.
    pub spans_forward_dropped: AtomicU64,
}

impl Counters {
    /// The counters now.
    pub fn snapshot(&self) -> TraceStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TraceStats {
            receiving: self.receiving.load(Ordering::Relaxed),
            spans_received: get(&self.spans_received),
            spans_rejected: get(&self.spans_rejected),
            spans_not_kept: get(&self.spans_not_kept),
            traces_evicted: get(&self.traces_evicted),
            spans_forwarded: get(&self.spans_forwarded),
            spans_forward_dropped: get(&self.spans_forward_dropped),
        }
    }
}

/// One span as kept, before it is placed in its trace's tree.
#[derive(Clone, Debug)]
struct Kept {
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: String,
    kind: &'static str,
    service: Arc<str>,
    workload: Option<Arc<str>>,
    start_nanos: u64,
    end_nanos: u64,
    status: &'static str,
    status_message: Option<String>,
    attributes: BTreeMap<String, String>,
    bytes: usize,
}

#[derive(Debug)]
struct StoredTrace {
    /// Arrival order of the trace's first span.
    seq: u64,
    /// When its last span arrived.
    touched: Instant,
    spans: Vec<Kept>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<TraceId, StoredTrace>,
    /// Arrival order → trace, oldest first.
    order: BTreeMap<u64, TraceId>,
    next_seq: u64,
    bytes: usize,
}

/// What one export request came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans refused (malformed ids), which OTLP reports back as a partial success.
    pub rejected: u64,
    /// Why the first refused span was refused.
    pub error: Option<String>,
}

/// The store; clones share it.
#[derive(Clone, Debug)]
pub struct TraceStore {
    limits: Arc<StoreLimits>,
    inner: Arc<Mutex<Inner>>,
    counters: Arc<Counters>,
}

impl Default for TraceStore {
    fn default() -> Self {
        Self::new(StoreLimits::default())
    }
}

impl TraceStore {
    /// An empty store within `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits: Arc::new(limits),
            inner: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// The counters the receiver, this store and the forwarder share.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Validates and converts every span of `request`, then keeps them (`keep`) or only
    /// counts them. Malformed spans are refused, the rest still taken.
    pub fn receive(&self, request: &ExportTraceServiceRequest, keep: bool) -> Accepted {
        let mut accepted = Accepted::default();
        let mut batch: Vec<(TraceId, Kept)> = Vec::new();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let (service, workload) = exporter(resource);
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    self.counters.spans_received.fetch_add(1, Ordering::Relaxed);
                    match convert(span, &service, &workload) {
                        Ok(kept) => batch.push(kept),
                        Err(error) => {
                            accepted.rejected += 1;
                            accepted.error.get_or_insert(error);
                        }
                    }
                }
            }
        }
        self.counters
            .spans_rejected
            .fetch_add(accepted.rejected, Ordering::Relaxed);
        if keep && !batch.is_empty() {
            self.insert(batch, Instant::now());
        }
        accepted
    }

    fn insert(&self, batch: Vec<(TraceId, Kept)>, now: Instant) {
        let limits = &self.limits;
        let mut not_kept = 0;
        let mut evicted = 0;
        let mut inner = self.inner.lock().expect("trace store lock");
        evicted += inner.expire(now, limits.max_age);
        for (id, span) in batch {
            if span.bytes > limits.max_bytes {
                not_kept += 1;
                continue;
            }
            if !inner.traces.contains_key(&id) {
                // Room for one more trace.
                while inner.traces.len() >= limits.max_traces {
                    inner.evict_oldest();
                    evicted += 1;
                }
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.order.insert(seq, id);
                inner.traces.insert(
                    id,
                    StoredTrace {
                        seq,
                        touched: now,
                        spans: Vec::new(),
                        bytes: 0,
                    },
                );
            }
            let full = inner.traces[&id].spans.len() >= limits.max_spans_per_trace;
            if full {
                not_kept += 1;
                continue;
            }
            // Room for its bytes, never evicting the trace it joins.
            while inner.bytes + span.bytes > limits.max_bytes {
                let oldest = inner.order.values().find(|t| **t != id).copied();
                match oldest {
                    Some(oldest) => {
                        inner.remove(&oldest);
                        evicted += 1;
                    }
                    None => break,
                }
            }
            if inner.bytes + span.bytes > limits.max_bytes {
                not_kept += 1;
                continue;
            }
            inner.bytes += span.bytes;
            let trace = inner.traces.get_mut(&id).expect("inserted above");
            trace.bytes += span.bytes;
            trace.touched = now;
            trace.spans.push(span);
        }
        // A trace whose every span was left out holds no place.
        let empty: Vec<TraceId> = inner
            .traces
            .iter()
            .filter(|(_, t)| t.spans.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            inner.remove(&id);
        }
        drop(inner);
        self.counters
            .spans_not_kept
            .fetch_add(not_kept, Ordering::Relaxed);
        self.counters
            .traces_evicted
            .fetch_add(evicted, Ordering::Relaxed);
    }

    /// How many traces are kept, after dropping those past their age.
    pub fn len(&self) -> usize {
        let mut inner = self.inner.lock().expect("trace store lock");
        let evicted = inner.expire(Instant::now(), self.limits.max_age);
        self.counters
            .traces_evicted
            .fetch_add(evicted, Ordering::Relaxed);
        inner.traces.len()
    }

    /// Whether no trace is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes kept (estimated).
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("trace store lock").bytes
    }

    /// The traces that pass `filter`, newest first (by start), at most `limit`.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<TraceSummary> {
        let mut inner = self.inner.lock().expect("trace store lock");
        let evicted = inner.expire(Instant::now(), self.limits.max_age);
        let mut summaries: Vec<TraceSummary> = inner
            .traces
            .iter()
            .map(|(id, t)| summarise(id, &t.spans))
            .filter(|s| filter.matches(s))
            .collect();
        drop(inner);
        self.counters
            .traces_evicted
            .fetch_add(evicted, Ordering::Relaxed);
        summaries.sort_by(|a, b| {
            b.start_unix_micros
                .cmp(&a.start_unix_micros)
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        });
        summaries.truncate(limit);
        summaries
    }

    /// One trace with its spans in tree order.
    pub fn get(&self, id: &TraceId) -> Option<Trace> {
        let inner = self.inner.lock().expect("trace store lock");
        let trace = inner.traces.get(id)?;
        if trace.touched.elapsed() > self.limits.max_age {
            return None;
        }
        let spans = trace.spans.clone();
        drop(inner);
        let summary = summarise(id, &spans);
        let start = spans.iter().map(|s| s.start_nanos).min().unwrap_or(0);
        Some(Trace {
            summary,
            spans: tree_order(spans, start),
        })
    }
}

impl Inner {
    fn remove(&mut self, id: &TraceId) {
        if let Some(trace) = self.traces.remove(id) {
            self.order.remove(&trace.seq);
            self.bytes -= trace.bytes;
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_first() {
            if let Some(trace) = self.traces.remove(&id) {
                self.bytes -= trace.bytes;
            }
        }
    }

    /// Drops traces untouched for longer than `max_age`; returns how many.
    fn expire(&mut self, now: Instant, max_age: Duration) -> u64 {
        let old: Vec<TraceId> = self
            .traces
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.touched) > max_age)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.remove(id);
        }
        old.len() as u64
    }
}

/// A list query, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `name` or `namespace/name`.
    pub workload: Option<String>,
    /// Only failed (`Some(true)`) or only clean (`Some(false)`) traces.
    pub error: Option<bool>,
    /// Only traces at least this long.
    pub min_duration: Option<Duration>,
}

impl Filter {
    fn matches(&self, summary: &TraceSummary) -> bool {
        if let Some(error) = self.error {
            if (summary.error_count > 0) != error {
                return false;
            }
        }
        if let Some(min) = self.min_duration {
            if u128::from(summary.duration_micros) < min.as_micros() {
                return false;
            }
        }
        if let Some(wanted) = &self.workload {
            let found = summary
                .workloads
                .iter()
                .any(|w| w == wanted || w.rsplit_once('/').is_some_and(|(_, name)| name == wanted));
            if !found {
                return false;
            }
        }
        true
    }
}

/// Parses 32 hex digits into a trace id.
pub fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The exporter's `service.name` and workload (`ferry.workload`, else
/// `namespace/service.name` when a namespace is named).
fn exporter(resource: &[KeyValue]) -> (Arc<str>, Option<Arc<str>>) {
    let get = |key: &str| {
        resource
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(render)
            .filter(|v| !v.is_empty())
    };
    let service = get(attr::SERVICE_NAME).unwrap_or_else(|| "unknown_service".to_string());
    let namespace = get(attr::K8S_NAMESPACE).or_else(|| get(attr::SERVICE_NAMESPACE));
    let workload = get(attr::FERRY_WORKLOAD)
        .or_else(|| namespace.map(|ns| format!("{ns}/{service}")))
        .map(Arc::from);
    (Arc::from(service), workload)
}

fn convert(
    span: &opentelemetry_proto::tonic::trace::v1::Span,
    service: &Arc<str>,
    workload: &Option<Arc<str>>,
) -> Result<(TraceId, Kept), String> {
    let trace_id: TraceId = span
        .trace_id
        .as_slice()
        .try_into()
        .ok()
        .filter(|id| *id != [0; 16])
        .ok_or_else(|| {
            format!(
                "span {:?}: trace_id must be 16 bytes, not all zero (got {})",
                span.name,
                span.trace_id.len()
            )
        })?;
    let span_id: [u8; 8] = span
        .span_id
        .as_slice()
        .try_into()
        .ok()
        .filter(|id| *id != [0; 8])
        .ok_or_else(|| {
            format!(
                "span {:?}: span_id must be 8 bytes, not all zero (got {})",
                span.name,
                span.span_id.len()
            )
        })?;
    let parent = match span.parent_span_id.len() {
        0 => None,
        8 => Some(span.parent_span_id.as_slice().try_into().expect("8 bytes")),
        n => {
            return Err(format!(
                "span {:?}: parent_span_id must be empty or 8 bytes (got {n})",
                span.name
            ))
        }
    }
    .filter(|p| *p != [0; 8]);
    let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Internal => "internal",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Unspecified => "unspecified",
    };
    let (status, status_message) = match &span.status {
        Some(s) => match StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset) {
            StatusCode::Error => (
                STATUS_ERROR,
                Some(cut(&s.message)).filter(|m| !m.is_empty()),
            ),
            StatusCode::Ok => (STATUS_OK, None),
            StatusCode::Unset => (STATUS_UNSET, None),
        },
        None => (STATUS_UNSET, None),
    };
    let attributes: BTreeMap<String, String> = span
        .attributes
        .iter()
        .take(MAX_ATTRIBUTES)
        .map(|kv| {
            let value = kv.value.as_ref().map(render).unwrap_or_default();
            (cut(&kv.key), cut(&value))
        })
        .collect();
    let name = cut(&span.name);
    let bytes = SPAN_OVERHEAD
        + name.len()
        + status_message.as_ref().map_or(0, String::len)
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 48)
            .sum::<usize>();
    let kept = Kept {
        span_id,
        parent,
        name,
        kind,
        service: service.clone(),
        workload: workload.clone(),
        start_nanos: span.start_time_unix_nano,
        end_nanos: span.end_time_unix_nano.max(span.start_time_unix_nano),
        status,
        status_message,
        attributes,
        bytes,
    };
    Ok((trace_id, kept))
}

/// At most [`MAX_VALUE_CHARS`] characters of `s`.
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// An attribute value as text.
fn render(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        kv.value.as_ref().map(render).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        #[allow(unreachable_patterns)]
        Some(_) => String::new(),
    }
}

fn micros(nanos: u64) -> u64 {
    nanos / 1_000
}

/// The root: the earliest span whose parent is not in the trace.
fn root(spans: &[Kept]) -> Option<&Kept> {
    let ids: BTreeSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    let is_root = |s: &&Kept| s.parent.is_none_or(|p| !ids.contains(&p));
    let by_start = |s: &&Kept| (s.parent.is_some(), s.start_nanos);
    spans
        .iter()
        .filter(is_root)
        .min_by_key(by_start)
        .or_else(|| spans.iter().min_by_key(|s| s.start_nanos))
}

fn summarise(id: &TraceId, spans: &[Kept]) -> TraceSummary {
    let start = spans.iter().map(|s| s.start_nanos).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_nanos).max().unwrap_or(start);
    let errors = spans.iter().filter(|s| s.status == STATUS_ERROR).count();
    let root = root(spans);
    let workloads: BTreeSet<&str> = spans.iter().filter_map(|s| s.workload.as_deref()).collect();
    TraceSummary {
        trace_id: hex(id),
        root_name: root.map(|r| r.name.clone()).unwrap_or_default(),
        root_service: root.map(|r| r.service.to_string()).unwrap_or_default(),
        root_workload: root.and_then(|r| r.workload.as_deref().map(str::to_string)),
        start_unix_micros: micros(start),
        duration_micros: micros(end.saturating_sub(start)),
        span_count: spans.len(),
        error_count: errors,
        status: if errors > 0 { STATUS_ERROR } else { STATUS_OK }.to_string(),
        workloads: workloads.into_iter().map(str::to_string).collect(),
    }
}

/// Parents before children, depth first, siblings (and roots) by start time.
fn tree_order(mut spans: Vec<Kept>, trace_start: u64) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start_nanos, s.span_id));
    let ids: BTreeSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent.filter(|p| ids.contains(p) && *p != s.span_id) {
            Some(p) => children.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let s = &spans[i];
        if let Some(kids) = children.get(&s.span_id) {
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
        out.push(view(s, depth, trace_start));
    }
    // Spans in a parent cycle (no root reaches them) still show, at the top level.
    for (i, s) in spans.iter().enumerate() {
        if !seen[i] {
            out.push(view(s, 0, trace_start));
        }
    }
    out
}

fn view(s: &Kept, depth: usize, trace_start: u64) -> Span {
    Span {
        span_id: hex(&s.span_id),
        parent_span_id: s.parent.map(|p| hex(&p)),
        depth,
        name: s.name.clone(),
        kind: s.kind.to_string(),
        service: s.service.to_string(),
        workload: s.workload.as_deref().map(str::to_string),
        start_unix_micros: micros(s.start_nanos),
        offset_micros: micros(s.start_nanos.saturating_sub(trace_start)),
        duration_micros: micros(s.end_nanos - s.start_nanos),
        status: s.status.to_string(),
        status_message: s.status_message.clone(),
        attributes: s.attributes.clone(),
    }
}

#[cfg(test)]
mod tests;
