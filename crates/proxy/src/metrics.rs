//! The proxy's Prometheus metrics: label sets are resolved once per connection or route,
//! so recording a request costs a few atomic adds and one short, uncontended lock.
//! Rendering to text happens only when `/metrics` is scraped ([`text`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

use ferry_api::{metrics as names, ProxyErrorReason};

pub mod authz;
mod text;

mod authority;
mod bounds;

pub use authority::{authority_label, INVALID};
pub use bounds::Limits;
use bounds::{checked, Family};

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
    /// mTLS from a client with this verified identity (inbound: `client_id`).
    Client(Arc<str>),
    /// mTLS to a server with this verified identity (outbound: `server_id`).
    Server(Arc<str>),
}

impl Tls {
    /// Plaintext from a client that offered no TLS.
    pub const NO_TLS_FROM_REMOTE: Tls = Tls::NoIdentity("no_tls_from_remote");
    /// Plaintext because discovery gave no identity for the destination.
    pub const NOT_PROVIDED_BY_DISCOVERY: Tls = Tls::NoIdentity("not_provided_by_service_discovery");

    /// The label of connections to a peer: mTLS when it has an identity to verify.
    pub fn for_peer(peer: Option<&crate::connect::PeerIdentity>) -> Tls {
        match peer {
            Some(p) => Tls::Server(p.server_id.clone()),
            None => Tls::NOT_PROVIDED_BY_DISCOVERY,
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
    /// By label set. A handful of label sets per series (the statuses it sees) make a
    /// scan of a short list cheaper than hashing the labels on every response.
    responses: Mutex<Vec<(ResponseLabels, ResponseStats)>>,
}

impl HttpMetrics {
    /// Counts a request received.
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// Counts a response completed, with the latency to its headers.
    pub fn response(&self, labels: ResponseLabels, latency: Duration) {
        let mut responses = lock(&self.responses);
        let i = match responses.iter().position(|(l, _)| *l == labels) {
            Some(i) => i,
            None => {
                responses.push((labels, ResponseStats::default()));
                responses.len() - 1
            }
        };
        let stats = &mut responses[i].1;
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

/// Labels of the route families: the Service a route is attached to, and the route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteLabels {
    /// `outbound_grpc_route_*` rather than `outbound_http_route_*`.
    pub grpc: bool,
    /// The parent Service (`parent_*`).
    pub parent: crate::policy::ObjectLabels,
    /// The route (`route_*`).
    pub route: crate::policy::ObjectLabels,
}

/// The counters of one route: responses as the caller saw them (after retries), and the
/// retries themselves.
#[derive(Default)]
pub struct RouteMetrics {
    /// Responses by status, with their latency (from the request to the response head).
    pub responses: HttpMetrics,
    /// Retries sent.
    pub retries: AtomicU64,
    /// Requests that succeeded on a retry.
    pub retry_successes: AtomicU64,
    /// Requests that still failed when they had used all their retries.
    pub retry_limit_exceeded: AtomicU64,
    /// Retries not sent because the retry budget was spent.
    pub retry_overflow: AtomicU64,
    /// Mirror copies sent.
    pub mirrors: AtomicU64,
    /// Mirror copies not sent: too many in flight, or a body too large to copy.
    pub mirror_dropped: AtomicU64,
}

impl RouteMetrics {
    /// Counts one of the counters.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
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
    limits: Limits,
    http: Mutex<Family<HttpLabels, HttpMetrics>>,
    tcp: Mutex<Family<TcpLabels, TcpMetrics>>,
    routes: Mutex<Family<RouteLabels, RouteMetrics>>,
    errors: Mutex<HashMap<(Direction, ErrorKind, ProxyErrorReason), u64>>,
    authz: Mutex<HashMap<(authz::AuthzEvent, authz::AuthzLabels), Arc<AtomicU64>>>,
    detect: [[AtomicU64; Protocol::ALL.len()]; 2],
    started: SystemTime,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves plain counters, which are still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// A registry bounded by `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            http: Mutex::default(),
            tcp: Mutex::default(),
            routes: Mutex::default(),
            errors: Mutex::default(),
            authz: Mutex::default(),
            detect: Default::default(),
            started: SystemTime::now(),
        }
    }

    /// The HTTP counters for a label set; callers keep the handle for later requests. An
    /// authority or target that is not a valid `host[:port]` is labelled `invalid`; past
    /// the series cap the handle counts nothing visible.
    pub fn http(&self, mut labels: HttpLabels) -> Arc<HttpMetrics> {
        labels.authority = checked(labels.authority);
        labels.target_addr = checked(labels.target_addr);
        let direction = labels.direction;
        lock(&self.http).get_or_insert(labels, direction, self.limits.max_series)
    }

    /// The TCP counters for a label set; callers keep the handle for the connection's life.
    pub fn tcp(&self, mut labels: TcpLabels) -> Arc<TcpMetrics> {
        labels.target_addr = checked(labels.target_addr);
        let direction = labels.direction;
        lock(&self.tcp).get_or_insert(labels, direction, self.limits.max_series)
    }

    /// The counters of a route (outbound), capped like the other families.
    pub fn route(&self, labels: RouteLabels) -> Arc<RouteMetrics> {
        lock(&self.routes).get_or_insert(labels, Direction::Outbound, self.limits.max_series)
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
            dst: Arc::from([("deployment".to_string(), "web-\"v1.2\"".to_string())]),
        }
    }

    #[test]
    fn renders_counts_buckets_and_escapes() {
        let r = Registry::default();
        let m = r.http(labels("web"));
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
        let base = r#"direction="inbound",authority="web",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",dst_deployment="web-\"v1.2\"""#;
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
    fn series_are_capped_per_direction_and_counted() {
        let r = Registry::new(Limits {
            max_series: 8,
            ..Limits::default()
        });
        for i in 0..20 {
            r.http(labels(&format!("host-{i}.example:80"))).request();
        }
        let mut outbound = labels("kept.example");
        outbound.direction = Direction::Outbound;
        r.http(outbound).request();
        assert_eq!(lock(&r.http).map.len(), 9, "8 inbound, then 1 outbound");
        let text = r.encode();
        assert!(text.contains("authority=\"host-7.example:80\""), "{text}");
        assert!(!text.contains("host-8.example"), "{text}");
        assert!(text.contains("authority=\"kept.example\""), "{text}");
        assert!(
            text.contains(
                "proxy_metrics_series_dropped_total{family=\"http\",direction=\"inbound\"} 12\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn invalid_authorities_share_one_series() {
        let r = Registry::default();
        let long = "a".repeat(20 * 1024);
        for bad in [long.as_str(), "a b", "x:99999", "a..b", "\"quote"] {
            r.http(labels(bad)).request();
        }
        r.http(labels("")).request();
        assert_eq!(lock(&r.http).map.len(), 2, "invalid and empty");
        let text = r.encode();
        assert!(text.contains("authority=\"invalid\""), "{text}");
        assert!(text.len() < 16 * 1024, "{}", text.len());
    }

    #[test]
    fn rendering_stops_at_the_size_cap() {
        let r = Registry::new(Limits {
            max_series: 10_000,
            max_render_bytes: 64 * 1024,
        });
        for i in 0..2000 {
            r.http(labels(&format!("host-{i}.example"))).request();
        }
        let text = r.encode();
        assert!(text.len() < 80 * 1024, "{}", text.len());
        assert!(
            text.contains("proxy_metrics_render_skipped_series "),
            "{text}"
        );
        assert!(text.ends_with('\n'));
        assert!(text.contains("process_start_time_seconds"));
    }
}
