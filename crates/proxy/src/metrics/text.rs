//! The Prometheus text format (0.0.4) of a [`Registry`]: rendered on each scrape from
//! snapshots of the counters, never holding a map lock while formatting.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::UNIX_EPOCH,
};

use ferry_api::{metrics as names, ProxyErrorReason};

use super::{
    lock, Direction, ErrorKind, Histogram, HttpLabels, HttpMetrics, Peer, Protocol, Registry,
    RouteLabels, RouteMetrics, TcpLabels, TcpMetrics, Tls,
};

impl Tls {
    fn write_labels(&self, out: &mut String) {
        match self {
            Self::NoIdentity(reason) => {
                label(out, names::LABEL_TLS, "no_identity");
                label(out, names::LABEL_NO_TLS_REASON, reason);
            }
            Self::Client(id) => {
                label(out, names::LABEL_TLS, "true");
                label(out, names::LABEL_CLIENT_ID, id);
            }
            Self::Server(id) => {
                label(out, names::LABEL_TLS, "true");
                label(out, names::LABEL_SERVER_ID, id);
            }
        }
    }
}

impl Registry {
    /// Renders every family in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut skipped = 0u64;
        self.encode_http(&mut out, &mut skipped);
        self.encode_tcp(&mut out, &mut skipped);
        self.encode_routes(&mut out, &mut skipped);
        self.encode_errors(&mut out);
        self.encode_authz(&mut out);
        self.encode_detect(&mut out);
        self.encode_bounds(&mut out, skipped);
        header(
            &mut out,
            names::PROXY_BUILD_INFO,
            "gauge",
            "Proxy build information.",
        );
        let _ = writeln!(
            out,
            "{}{{version=\"{}\",git_sha=\"{}\"}} 1",
            names::PROXY_BUILD_INFO,
            ferry_api::version::VERSION,
            ferry_api::version::GIT_SHA
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

    /// Whether the rendered-size cap leaves room for another series; counts those it
    /// does not.
    fn room(&self, out: &str, skipped: &mut u64) -> bool {
        let room = out.len() < self.limits.max_render_bytes;
        if !room {
            *skipped += 1;
        }
        room
    }

    fn encode_bounds(&self, out: &mut String, skipped: u64) {
        header(
            out,
            names::PROXY_METRICS_SERIES_DROPPED_TOTAL,
            "counter",
            "Total count of label sets not created because their family's series cap was reached.",
        );
        let dropped = [
            ("http", lock(&self.http).dropped),
            ("tcp", lock(&self.tcp).dropped),
        ];
        for (family, counts) in dropped {
            for direction in [Direction::Inbound, Direction::Outbound] {
                sample(
                    out,
                    names::PROXY_METRICS_SERIES_DROPPED_TOTAL,
                    counts[direction.index()],
                    |o| {
                        label(o, names::LABEL_FAMILY, family);
                        label(o, names::LABEL_DIRECTION, direction.as_str());
                    },
                );
            }
        }
        header(
            out,
            names::PROXY_METRICS_RENDER_SKIPPED_SERIES,
            "gauge",
            "Series left out of this scrape because the rendered-size cap was reached.",
        );
        let _ = writeln!(
            out,
            "{} {skipped}",
            names::PROXY_METRICS_RENDER_SKIPPED_SERIES
        );
    }

    fn encode_http(&self, out: &mut String, skipped: &mut u64) {
        // Copy the handles out so scraping never holds the map lock while formatting.
        let series: Vec<(HttpLabels, Arc<HttpMetrics>)> = lock(&self.http)
            .map
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
            if !self.room(out, skipped) {
                continue;
            }
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
            if !self.room(out, skipped) {
                continue;
            }
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
            if !self.room(out, skipped) {
                continue;
            }
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

    /// Linkerd's Gateway API route families (`outbound_http_route_*`,
    /// `outbound_grpc_route_*`): statuses as the caller saw them, latency in seconds, and
    /// retries.
    fn encode_routes(&self, out: &mut String, skipped: &mut u64) {
        let series: Vec<(RouteLabels, Arc<RouteMetrics>)> = lock(&self.routes)
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if series.is_empty() {
            return;
        }
        let base = |out: &mut String, l: &RouteLabels| {
            for (prefix, o) in [("parent", &l.parent), ("route", &l.route)] {
                label(out, &format!("{prefix}_group"), &o.group);
                label(out, &format!("{prefix}_kind"), &o.kind);
                label(out, &format!("{prefix}_namespace"), &o.namespace);
                label(out, &format!("{prefix}_name"), &o.name);
                if prefix == "parent" {
                    label(out, "parent_port", itoa(o.port).as_str());
                }
            }
        };
        for grpc in [false, true] {
            let family = |suffix: &str| {
                let proto = if grpc { "grpc" } else { "http" };
                format!("outbound_{proto}_route_{suffix}")
            };
            let of_kind: Vec<_> = series.iter().filter(|(l, _)| l.grpc == grpc).collect();
            if of_kind.is_empty() {
                continue;
            }
            let name = family("request_statuses_total");
            header(
                out,
                &name,
                "counter",
                "Completed route requests, as the caller saw them (after retries).",
            );
            let mut durations = Vec::new();
            for (labels, m) in &of_kind {
                if !self.room(out, skipped) {
                    continue;
                }
                let mut all = Histogram::default();
                for (r, stats) in lock(&m.responses.responses).iter() {
                    sample(out, &name, stats.count, |o| {
                        base(o, labels);
                        label(o, "http_status", itoa(r.status).as_str());
                        label(
                            o,
                            "grpc_status",
                            &r.grpc_status.map(itoa).unwrap_or_default(),
                        );
                        label(o, "error", r.error.map_or("", |e| e.as_str()));
                    });
                    all.merge(&stats.latency);
                }
                durations.push((labels, all));
            }
            let name = family("request_duration_seconds");
            header(
                out,
                &name,
                "histogram",
                "Time from a route request's arrival to its response head.",
            );
            for (labels, h) in &durations {
                let mut cumulative = 0;
                for (ms, n) in names::LATENCY_BUCKETS_MS.iter().zip(h.buckets) {
                    cumulative += n;
                    sample(out, &format!("{name}_bucket"), cumulative, |o| {
                        base(o, labels);
                        label(o, "le", &(*ms as f64 / 1000.0).to_string());
                    });
                }
                sample(out, &format!("{name}_bucket"), h.count, |o| {
                    base(o, labels);
                    label(o, "le", "+Inf");
                });
                let secs = h.sum_us as f64 / 1e6;
                write_sample(out, &format!("{name}_sum"), &secs.to_string(), |o| {
                    base(o, labels)
                });
                sample(out, &format!("{name}_count"), h.count, |o| base(o, labels));
            }
            for (suffix, help, get) in [
                (
                    "retry_requests_total",
                    "Retries sent.",
                    (|m: &RouteMetrics| m.retries.load(Relaxed)) as fn(&RouteMetrics) -> u64,
                ),
                (
                    "retry_successes_total",
                    "Requests that succeeded on a retry.",
                    |m| m.retry_successes.load(Relaxed),
                ),
                (
                    "retry_limit_exceeded_total",
                    "Requests that failed after their last retry.",
                    |m| m.retry_limit_exceeded.load(Relaxed),
                ),
                (
                    "retry_overflow_total",
                    "Retries not sent because the retry budget was spent.",
                    |m| m.retry_overflow.load(Relaxed),
                ),
                (
                    "mirror_requests_total",
                    "Copies of requests sent to the route's mirror.",
                    |m| m.mirrors.load(Relaxed),
                ),
                (
                    "mirror_dropped_total",
                    "Mirror copies not sent (too many in flight, or a body too large to keep).",
                    |m| m.mirror_dropped.load(Relaxed),
                ),
            ] {
                let name = family(suffix);
                header(out, &name, "counter", help);
                for (labels, m) in &of_kind {
                    sample(out, &name, get(m), |o| base(o, labels));
                }
            }
        }
    }

    fn encode_tcp(&self, out: &mut String, skipped: &mut u64) {
        let series: Vec<(TcpLabels, Arc<TcpMetrics>)> = lock(&self.tcp)
            .map
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
                if !self.room(out, skipped) {
                    continue;
                }
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

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(super) fn sample(out: &mut String, name: &str, value: u64, labels: impl FnOnce(&mut String)) {
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
pub(super) fn label(out: &mut String, name: &str, value: &str) {
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
