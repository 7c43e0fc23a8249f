//! The proxy's Prometheus metrics: label sets are resolved once per connection or route,
//! so recording a request costs a few atomic adds and one short, uncontended lock.
//! Rendering to text happens only when `/metrics` is scraped (see [`encode`](Registry::encode)).

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ferry_api::{metrics as names, ProxyErrorReason};

/// Label sets past this many per family fold into one `authority="overflow"` series, so a
/// client sending random `Host` headers cannot grow the proxy's memory without bound.
const MAX_SERIES: usize = 2048;
const OVERFLOW: &str = "overflow";

/// Which side of the proxy traffic is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic for the proxy's own application.
    Inbound,
    /// Traffic the application sends out.
    Outbound,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which end of a TCP connection the proxy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The proxy accepted the connection.
    Src,
    /// The proxy opened the connection.
    Dst,
}

/// The TLS status of a connection, as labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tls {
    /// Plaintext; the reason names why there is no identity.
    NoIdentity(&'static str),
}

impl Tls {
    /// Plaintext from a client that offered no TLS.
    pub const NO_TLS_FROM_REMOTE: Tls = Tls::NoIdentity("no_tls_from_remote");
    /// Plaintext because discovery gave no identity for the destination.
    pub const NOT_PROVIDED_BY_DISCOVERY: Tls = Tls::NoIdentity("not_provided_by_service_discovery");

    fn write_labels(&self, out: &mut String) {
        match self {
            Self::NoIdentity(reason) => {
                label(out, names::LABEL_TLS, "no_identity");
                label(out, names::LABEL_NO_TLS_REASON, reason);
            }
        }
    }
}

/// The protocol detection decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (gRPC included).
    Http2,
    /// A TLS client hello (forwarded opaquely for now).
    Tls,
    /// Anything else, including server-speaks-first protocols and opaque ports.
    Opaque,
}

impl Protocol {
    const ALL: [Protocol; 4] = [Self::Http1, Self::Http2, Self::Tls, Self::Opaque];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http/1",
            Self::Http2 => "http/2",
            Self::Tls => "tls",
            Self::Opaque => "opaque",
        }
    }
}

/// Labels of the HTTP families.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpLabels {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The request authority (inbound, generic outbound) or the upstream's target name.
    pub authority: Arc<str>,
    /// The address the proxy forwards to.
    pub target_addr: Arc<str>,
    /// TLS status of the connection.
    pub tls: Tls,
    /// Labels of the destination endpoint from discovery, written as `dst_<key>`.
    pub dst: Arc<[(String, String)]>,
}

/// Labels of the TCP families.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    /// Inbound or outbound.
    pub direction: Direction,
    /// Whether the proxy accepted or opened the connection.
    pub peer: Peer,
    /// The address the connection is for.
    pub target_addr: Arc<str>,
    /// TLS status of the connection.
    pub tls: Tls,
}

/// How a response ended, as labels of `response_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseLabels {
    /// The HTTP status code.
    pub status: u16,
    /// The gRPC status, for gRPC responses that carried one.
    pub grpc_status: Option<u16>,
    /// Set when the proxy made the response or the stream broke at the connection level.
    pub error: Option<ProxyErrorReason>,
    /// `classification="success"` or `"failure"`.
    pub success: bool,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; names::LATENCY_BUCKETS_MS.len()],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = names::LATENCY_BUCKETS_MS
            .iter()
            .position(|&ms| us <= ms * 1000)
        {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

#[derive(Default)]
struct ResponseStats {
    count: u64,
    latency: Histogram,
}

/// The HTTP counters of one label set.
#[derive(Default)]
pub struct HttpMetrics {
    requests: AtomicU64,
    responses: Mutex<HashMap<ResponseLabels, ResponseStats>>,
}

impl HttpMetrics {
    /// Counts a request received.
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// Counts a response completed, with the latency to its headers.
    pub fn response(&self, labels: ResponseLabels, latency: Duration) {
        let mut responses = lock(&self.responses);
        let stats = responses.entry(labels).or_default();
        stats.count += 1;
        stats.latency.record(latency);
    }
}

/// The TCP counters of one label set. `tcp_open_connections` is derived from them.
#[derive(Default)]
pub struct TcpMetrics {
    opened: AtomicU64,
    closed: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
}

impl TcpMetrics {
    /// Counts a connection opened.
    pub fn open(&self) {
        self.opened.fetch_add(1, Relaxed);
    }
    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Relaxed)
    }
    /// Counts a connection closed.
    pub fn close(&self) {
        self.closed.fetch_add(1, Relaxed);
    }
    /// Counts bytes read from the connection.
    pub fn read(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Relaxed);
    }
    /// Counts bytes written to the connection.
    pub fn write(&self, n: usize) {
        self.write_bytes.fetch_add(n as u64, Relaxed);
    }

    /// `(bytes read, opened, closed)`, for tests.
    #[cfg(test)]
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.read_bytes.load(Relaxed),
            self.opened.load(Relaxed),
            self.closed.load(Relaxed),
        )
    }
}

/// Whether an error happened on an HTTP request or a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An HTTP request the proxy answered itself.
    Http,
    /// A TCP connection the proxy could not forward.
    Tcp,
}

/// Every metric of one proxy.
pub struct Registry {
    http: Mutex<HashMap<HttpLabels, Arc<HttpMetrics>>>,
    tcp: Mutex<HashMap<TcpLabels, Arc<TcpMetrics>>>,
    errors: Mutex<HashMap<(Direction, ErrorKind, ProxyErrorReason), u64>>,
    detect: [[AtomicU64; Protocol::ALL.len()]; 2],
    started: SystemTime,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            http: Mutex::default(),
            tcp: Mutex::default(),
            errors: Mutex::default(),
            detect: Default::default(),
            started: SystemTime::now(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves plain counters, which are still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn get_or_insert<K: Clone + Eq + std::hash::Hash, V: Default>(
    map: &Mutex<HashMap<K, Arc<V>>>,
    key: K,
    overflow: impl FnOnce(K) -> K,
) -> Arc<V> {
    let mut map = lock(map);
    if let Some(v) = map.get(&key) {
        return v.clone();
    }
    let key = if map.len() >= MAX_SERIES {
        overflow(key)
    } else {
        key
    };
    map.entry(key).or_default().clone()
}

impl Registry {
    /// The HTTP counters for a label set; callers keep the handle for later requests.
    pub fn http(&self, labels: HttpLabels) -> Arc<HttpMetrics> {
        get_or_insert(&self.http, labels, |mut l| {
            l.authority = OVERFLOW.into();
            l.target_addr = OVERFLOW.into();
            l
        })
    }

    /// The TCP counters for a label set; callers keep the handle for the connection's life.
    pub fn tcp(&self, labels: TcpLabels) -> Arc<TcpMetrics> {
        get_or_insert(&self.tcp, labels, |mut l| {
            l.target_addr = OVERFLOW.into();
            l
        })
    }

    /// Counts an error the proxy made (it answered a request, or dropped a connection).
    pub fn error(&self, direction: Direction, kind: ErrorKind, reason: ProxyErrorReason) {
        *lock(&self.errors)
            .entry((direction, kind, reason))
            .or_default() += 1;
    }

    /// Counts a connection's detected protocol.
    pub fn detected(&self, direction: Direction, protocol: Protocol) {
        self.detect[direction.index()][protocol as usize].fetch_add(1, Relaxed);
    }

    /// Renders every family in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.encode_http(&mut out);
        self.encode_tcp(&mut out);
        self.encode_errors(&mut out);
        self.encode_detect(&mut out);
        header(
            &mut out,
            names::PROXY_BUILD_INFO,
            "gauge",
            "Proxy build information.",
        );
        let _ = writeln!(
            out,
            "{}{{version=\"{}\"}} 1",
            names::PROXY_BUILD_INFO,
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            names::PROCESS_START_TIME_SECONDS,
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {}",
            names::PROCESS_START_TIME_SECONDS,
            started.as_secs()
        );
        out
    }

    fn encode_http(&self, out: &mut String) {
        // Copy the handles out so scraping never holds the map lock while formatting.
        let series: Vec<(HttpLabels, Arc<HttpMetrics>)> = lock(&self.http)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let base = |out: &mut String, l: &HttpLabels| {
            label(out, names::LABEL_DIRECTION, l.direction.as_str());
            label(out, names::LABEL_AUTHORITY, &l.authority);
            label(out, names::LABEL_TARGET_ADDR, &l.target_addr);
            l.tls.write_labels(out);
            for (k, v) in l.dst.iter() {
                dst_label(out, k, v);
            }
        };

        header(
            out,
            names::REQUEST_TOTAL,
            "counter",
            "Total count of HTTP requests.",
        );
        for (labels, m) in &series {
            sample(out, names::REQUEST_TOTAL, m.requests.load(Relaxed), |o| {
                base(o, labels)
            });
        }

        header(
            out,
            names::RESPONSE_TOTAL,
            "counter",
            "Total count of HTTP responses.",
        );
        let mut latencies: Vec<(&HttpLabels, u16, Histogram)> = Vec::new();
        for (labels, m) in &series {
            let mut by_status: HashMap<u16, Histogram> = HashMap::new();
            for (r, stats) in lock(&m.responses).iter() {
                sample(out, names::RESPONSE_TOTAL, stats.count, |o| {
                    base(o, labels);
                    label(o, names::LABEL_STATUS_CODE, itoa(r.status).as_str());
                    let class = if r.success { "success" } else { "failure" };
                    label(o, names::LABEL_CLASSIFICATION, class);
                    if let Some(g) = r.grpc_status {
                        label(o, names::LABEL_GRPC_STATUS, itoa(g).as_str());
                    }
                    if let Some(e) = r.error {
                        label(o, names::LABEL_ERROR, e.as_str());
                    }
                });
                by_status.entry(r.status).or_default().merge(&stats.latency);
            }
            latencies.extend(by_status.into_iter().map(|(s, h)| (labels, s, h)));
        }

        header(
            out,
            names::RESPONSE_LATENCY_MS,
            "histogram",
            "Elapsed times between a request's headers being received and its response's headers being sent, in milliseconds.",
        );
        for (labels, status, h) in &latencies {
            let with = |o: &mut String| {
                base(o, labels);
                label(o, names::LABEL_STATUS_CODE, itoa(*status).as_str());
            };
            let mut cumulative = 0;
            let bucket = format!("{}_bucket", names::RESPONSE_LATENCY_MS);
            for (ms, n) in names::LATENCY_BUCKETS_MS.iter().zip(h.buckets) {
                cumulative += n;
                sample(out, &bucket, cumulative, |o| {
                    with(o);
                    label(o, "le", itoa(*ms).as_str());
                });
            }
            sample(out, &bucket, h.count, |o| {
                with(o);
                label(o, "le", "+Inf");
            });
            let sum = format!("{}_sum", names::RESPONSE_LATENCY_MS);
            let ms = h.sum_us as f64 / 1000.0;
            write_sample(out, &sum, &ms.to_string(), with);
            sample(
                out,
                &format!("{}_count", names::RESPONSE_LATENCY_MS),
                h.count,
                with,
            );
        }
    }

    fn encode_tcp(&self, out: &mut String) {
        let series: Vec<(TcpLabels, Arc<TcpMetrics>)> = lock(&self.tcp)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&TcpMetrics) -> u64,
        );
        let families: [Family; 5] = [
            (
                names::TCP_OPEN_TOTAL,
                "counter",
                "Total count of opened TCP connections.",
                |m| m.opened.load(Relaxed),
            ),
            (
                names::TCP_CLOSE_TOTAL,
                "counter",
                "Total count of closed TCP connections.",
                |m| m.closed.load(Relaxed),
            ),
            (
                names::TCP_OPEN_CONNECTIONS,
                "gauge",
                "Number of currently open TCP connections.",
                |m| {
                    // Read `closed` first: a connection that opens and closes in between is
                    // then counted as open, never as a negative gauge.
                    let closed = m.closed.load(Relaxed);
                    m.opened.load(Relaxed).saturating_sub(closed)
                },
            ),
            (
                names::TCP_READ_BYTES_TOTAL,
                "counter",
                "Total count of bytes read from peers.",
                |m| m.read_bytes.load(Relaxed),
            ),
            (
                names::TCP_WRITE_BYTES_TOTAL,
                "counter",
                "Total count of bytes written to peers.",
                |m| m.write_bytes.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            header(out, name, kind, help);
            for (l, m) in &series {
                sample(out, name, value(m), |o| {
                    label(o, names::LABEL_DIRECTION, l.direction.as_str());
                    label(
                        o,
                        names::LABEL_PEER,
                        if l.peer == Peer::Src { "src" } else { "dst" },
                    );
                    label(o, names::LABEL_TARGET_ADDR, &l.target_addr);
                    l.tls.write_labels(o);
                });
            }
        }
    }

    fn encode_errors(&self, out: &mut String) {
        let errors = lock(&self.errors).clone();
        let families = [
            (
                names::INBOUND_HTTP_ERRORS_TOTAL,
                Direction::Inbound,
                ErrorKind::Http,
            ),
            (
                names::OUTBOUND_HTTP_ERRORS_TOTAL,
                Direction::Outbound,
                ErrorKind::Http,
            ),
            (
                names::INBOUND_TCP_ERRORS_TOTAL,
                Direction::Inbound,
                ErrorKind::Tcp,
            ),
            (
                names::OUTBOUND_TCP_ERRORS_TOTAL,
                Direction::Outbound,
                ErrorKind::Tcp,
            ),
        ];
        for (name, direction, kind) in families {
            header(
                out,
                name,
                "counter",
                "Total count of errors the proxy handled itself, by reason.",
            );
            for reason in ProxyErrorReason::ALL {
                if let Some(n) = errors.get(&(direction, kind, reason)) {
                    sample(out, name, *n, |o| {
                        label(o, names::LABEL_ERROR, reason.as_str())
                    });
                }
            }
        }
    }

    fn encode_detect(&self, out: &mut String) {
        header(
            out,
            names::TCP_DETECT_TOTAL,
            "counter",
            "Total count of connections by detected protocol.",
        );
        for direction in [Direction::Inbound, Direction::Outbound] {
            for protocol in Protocol::ALL {
                let n = self.detect[direction.index()][protocol as usize].load(Relaxed);
                sample(out, names::TCP_DETECT_TOTAL, n, |o| {
                    label(o, names::LABEL_DIRECTION, direction.as_str());
                    label(o, names::LABEL_PROTOCOL, protocol.as_str());
                });
            }
        }
    }
}

fn itoa(n: impl Into<u64>) -> String {
    n.into().to_string()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, value: u64, labels: impl FnOnce(&mut String)) {
    write_sample(out, name, itoa(value).as_str(), labels);
}

fn write_sample(out: &mut String, name: &str, value: &str, labels: impl FnOnce(&mut String)) {
    out.push_str(name);
    out.push('{');
    let start = out.len();
    labels(out);
    if out.len() > start {
        out.pop(); // the trailing comma
    }
    out.push_str("} ");
    out.push_str(value);
    out.push('\n');
}

/// Appends `dst_<key>="value",`, with characters a label name cannot hold replaced by `_`.
fn dst_label(out: &mut String, key: &str, value: &str) {
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    label(
        out,
        &format!("{}{name}", ferry_api::destination::METRIC_LABEL_PREFIX),
        value,
    );
}

/// Appends `name="value",` with the value escaped as the text format requires.
fn label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\",");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(authority: &str) -> HttpLabels {
        HttpLabels {
            direction: Direction::Inbound,
            authority: authority.into(),
            target_addr: "127.0.0.1:8080".into(),
            tls: Tls::NO_TLS_FROM_REMOTE,
            dst: Arc::from([("deployment".to_string(), "web-v1.2".to_string())]),
        }
    }

    #[test]
    fn renders_counts_buckets_and_escapes() {
        let r = Registry::default();
        let m = r.http(labels("we\"b"));
        m.request();
        m.request();
        let ok = ResponseLabels {
            status: 200,
            grpc_status: None,
            error: None,
            success: true,
        };
        m.response(ok, Duration::from_micros(1500));
        m.response(ok, Duration::from_millis(7));
        let text = r.encode();
        let base = r#"direction="inbound",authority="we\"b",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",dst_deployment="web-v1.2""#;
        assert!(
            text.contains(&format!("request_total{{{base}}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "response_total{{{base},status_code=\"200\",classification=\"success\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"1\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"2\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"10\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_bucket{{{base},status_code=\"200\",le=\"+Inf\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "response_latency_ms_sum{{{base},status_code=\"200\"}} 8.5\n"
        )));
    }

    #[test]
    fn open_connections_gauge_follows_open_and_close() {
        let r = Registry::default();
        let t = r.tcp(TcpLabels {
            direction: Direction::Outbound,
            peer: Peer::Dst,
            target_addr: "10.0.0.1:80".into(),
            tls: Tls::NOT_PROVIDED_BY_DISCOVERY,
        });
        t.open();
        t.open();
        t.close();
        t.read(10);
        t.write(3);
        let text = r.encode();
        assert!(text.contains("tcp_open_connections{direction=\"outbound\",peer=\"dst\",target_addr=\"10.0.0.1:80\",tls=\"no_identity\",no_tls_reason=\"not_provided_by_service_discovery\"} 1\n"), "{text}");
        assert!(text.contains("tcp_read_bytes_total{direction=\"outbound\",peer=\"dst\",target_addr=\"10.0.0.1:80\",tls=\"no_identity\",no_tls_reason=\"not_provided_by_service_discovery\"} 10\n"));
    }

    #[test]
    fn series_are_capped() {
        let r = Registry::default();
        for i in 0..MAX_SERIES + 10 {
            r.http(labels(&format!("host-{i}"))).request();
        }
        assert_eq!(lock(&r.http).len(), MAX_SERIES + 1);
        assert!(r.encode().contains("authority=\"overflow\""));
    }
}
