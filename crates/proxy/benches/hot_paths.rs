//! Micro-benchmarks of the proxy's per-request hot spots: protocol detection, hop-by-hop
//! header handling, the HTTP/1.1 fast path's head parsing and body framing, the balancer's
//! pick, metrics recording and the tap hook. Run with `cargo bench -p ferry-proxy`; CI only
//! compiles them (clippy `--all-targets`). The end-to-end numbers come from `bench/run.py`.

use std::{sync::Arc, time::Duration};

use divan::{black_box, Bencher};
use ferry_proxy::{
    detect::classify,
    forward::strip_hop_by_hop,
    metrics::{Direction, HttpLabels, Registry, ResponseLabels, Tls},
};
use http::{HeaderMap, HeaderValue};

fn main() {
    divan::main();
}

mod detect {
    use super::*;

    const HTTP1: &[u8] = b"GET /api/v1/emojis/list HTTP/1.1\r\nHost: emoji.emojivoto:8080\r\nUser-Agent: wrk\r\n\r\n";
    const HTTP2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    const TLS: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    const OPAQUE: &[u8] = &[0u8; 64];
    /// A request line cut before its end: the case where detection must wait for more.
    const PARTIAL: &[u8] = b"POST /emojivoto.v1.VotingService/VoteDoughnut HTTP/1.";

    fn first_bytes(kind: &str) -> &'static [u8] {
        match kind {
            "http1" => HTTP1,
            "http2" => HTTP2,
            "tls" => TLS,
            "opaque" => OPAQUE,
            _ => PARTIAL,
        }
    }

    #[divan::bench(args = ["http1", "http2", "tls", "opaque", "partial"])]
    fn classify_first_bytes(kind: &str) -> Option<ferry_proxy::metrics::Protocol> {
        classify(black_box(first_bytes(kind)))
    }
}

mod headers {
    use super::*;

    /// What a typical keep-alive client sends: no `Connection` header.
    fn plain() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("emoji.emojivoto:8080"));
        h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("content-length", HeaderValue::from_static("42"));
        h.insert(
            "x-request-id",
            HeaderValue::from_static("6f1c2e0a-5b1d-4f6e-9a43-7d2b8c9e0f11"),
        );
        h
    }

    /// A client naming headers in `Connection`, which all have to go.
    fn with_connection() -> HeaderMap {
        let mut h = plain();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h
    }

    #[divan::bench]
    fn strip_plain(b: Bencher) {
        b.with_inputs(plain)
            .bench_local_refs(|h| strip_hop_by_hop(h, false));
    }

    #[divan::bench]
    fn strip_with_connection(b: Bencher) {
        b.with_inputs(with_connection)
            .bench_local_refs(|h| strip_hop_by_hop(h, false));
    }
}

/// The HTTP/1.1 fast path's per-request work on heads and bodies.
mod h1 {
    use super::*;
    use ferry_proxy::h1::{chunked::Chunked, head};

    const REQUEST: &[u8] = b"GET /api/list HTTP/1.1\r\nHost: web-svc.emojivoto:8080\r\n\
        User-Agent: curl/8.5.0\r\nAccept: */*\r\n\
        X-Request-Id: 6f1c2e0a-5b1d-4f6e-9a43-7d2b8c9e0f11\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Content-Length: 42\r\nDate: Sat, 21 Nov 2026 22:00:00 GMT\r\n\r\n";

    /// Once per request: parse the request head, check it, write the head to forward.
    #[divan::bench]
    fn parse_and_rewrite_request(b: Bencher) {
        let mut out = Vec::with_capacity(1024);
        b.bench_local(|| head::parse_request(black_box(REQUEST), &mut out));
    }

    /// Once per response: parse the response head and write the client's head.
    #[divan::bench]
    fn parse_and_rewrite_response(b: Bencher) {
        let mut out = Vec::with_capacity(1024);
        b.bench_local(|| head::parse_response(black_box(RESPONSE), false, false, &mut out));
    }

    /// Tracking the end of a 4 KiB chunked body in 64 chunks, byte for byte as it passes.
    #[divan::bench]
    fn chunked_end_of_4k(b: Bencher) {
        let mut body = Vec::new();
        for _ in 0..64 {
            body.extend_from_slice(b"40\r\n");
            body.extend_from_slice(&[b'x'; 64]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        b.bench_local(|| {
            let mut c = Chunked::default();
            c.advance(black_box(&body))
        });
    }
}

/// The balancer's per-request pick (P2C over peak-EWMA costs) among three endpoints.
mod balance {
    use super::*;
    use ferry_proxy::{
        balance::{Balancer, EndpointFactory},
        config::{Authority, Timeouts},
        discover::{EndpointMeta, Resolution},
    };

    #[divan::bench]
    fn pick_of_three(b: Bencher) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let endpoints = (1..=3)
            .map(|i| {
                let addr: std::net::SocketAddr = format!("127.0.0.{i}:8080").parse().unwrap();
                let meta = EndpointMeta {
                    labels: Default::default(),
                    identity: None,
                };
                (addr, meta)
            })
            .collect();
        let (_tx, rx) = tokio::sync::watch::channel(Resolution::Endpoints(Arc::new(endpoints)));
        let factory = EndpointFactory {
            direction: Direction::Outbound,
            tls: Tls::NO_TLS_FROM_REMOTE,
            identity: None,
            timeouts: Timeouts {
                detect: Duration::from_secs(1),
                ..Timeouts::default()
            },
            registry: Arc::new(Registry::default()),
            pools: Arc::default(),
        };
        let name: Authority = "web-svc.emojivoto:8080".parse().unwrap();
        let balancer = rt.block_on(async {
            let balancer = Balancer::new(name, rx, factory, None);
            // The balancer builds its endpoints on its own task: wait for them.
            while balancer.pick().await.is_err() {
                tokio::task::yield_now().await;
            }
            balancer
        });
        b.bench_local(|| rt.block_on(balancer.pick()));
    }
}

mod metrics {
    use super::*;

    fn labels() -> HttpLabels {
        HttpLabels {
            direction: Direction::Inbound,
            authority: "emoji.emojivoto:8080".into(),
            target_addr: "127.0.0.1:8080".into(),
            tls: Tls::NO_TLS_FROM_REMOTE,
            dst: std::sync::Arc::from([]),
        }
    }

    const OK: ResponseLabels = ResponseLabels {
        status: 200,
        grpc_status: None,
        error: None,
        success: true,
    };

    /// Once per connection (or per new authority on it): the label-set lookup.
    #[divan::bench]
    fn registry_lookup(b: Bencher) {
        let registry = Registry::default();
        let _warm = registry.http(labels());
        b.with_inputs(labels)
            .bench_local_values(|l| registry.http(l));
    }

    /// Once per request: the request counter and the response counter and histogram.
    #[divan::bench]
    fn record_request_and_response(b: Bencher) {
        let registry = Registry::default();
        let metrics = registry.http(labels());
        b.bench_local(|| {
            metrics.request();
            metrics.response(black_box(OK), black_box(Duration::from_micros(180)));
        });
    }

    /// The same from both cores at once: how the per-response lock behaves contended.
    #[divan::bench(threads = [1, 2])]
    fn record_response_threads(b: Bencher) {
        static REGISTRY: std::sync::OnceLock<(Registry, Arc<ferry_proxy::metrics::HttpMetrics>)> =
            std::sync::OnceLock::new();
        let (_, metrics) = REGISTRY.get_or_init(|| {
            let r = Registry::default();
            let m = r.http(labels());
            (r, m)
        });
        b.bench(|| metrics.response(black_box(OK), black_box(Duration::from_micros(180))));
    }
}

/// The tap hook on the request path: what a request pays while nobody taps (one relaxed
/// load), and what it pays while a tap is active but does not match it (capture, match).
mod tap {
    use super::*;
    use ferry_proxy::tap::{ConnMeta, ConnTap, Destination, Taps};
    use linkerd2_proxy_api::tap::{
        observe_request::{r#match as m, Match},
        ObserveRequest,
    };

    fn request() -> http::Request<()> {
        http::Request::get("/api/vote?choice=:doughnut:")
            .header("host", "voting.emojivoto:8080")
            .body(())
            .unwrap()
    }

    fn conn() -> ConnTap {
        ConnTap::new(ConnMeta::new(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:4143".parse().unwrap(),
        ))
    }

    /// The harness alone (the same inputs, no hook): subtract it from `idle_hook`.
    #[divan::bench]
    fn baseline(b: Bencher) {
        let taps = Arc::new(Taps::new("emojivoto", "voting-0"));
        b.bench_local(|| {
            black_box(black_box(&taps));
        });
    }

    /// Nobody taps: the whole per-request cost of the tap.
    #[divan::bench]
    fn idle_hook(b: Bencher) {
        let taps = Arc::new(Taps::new("emojivoto", "voting-0"));
        let conn = conn();
        let req = request();
        // Returns whether the request was captured, not the capture itself: divan keeps
        // outputs to drop later, and storing a large `Option` would dominate the timing.
        b.bench_local(|| {
            let taps = black_box(&taps);
            taps.is_active()
                && taps
                    .capture(
                        &conn,
                        Direction::Inbound,
                        &req,
                        Some("voting.emojivoto:8080"),
                    )
                    .is_some()
        });
    }

    /// A tap is active (on another path): capture the request and match it, no event sent.
    #[divan::bench]
    fn active_no_match(b: Bencher) {
        let taps = Arc::new(Taps::new("emojivoto", "voting-0"));
        let only = Match {
            r#match: Some(m::Match::Http(m::Http {
                r#match: Some(m::http::Match::Path(m::http::StringMatch {
                    r#match: Some(m::http::string_match::Match::Prefix("/other".into())),
                })),
            })),
        };
        let (_sub, _rx) = taps
            .subscribe(
                &ObserveRequest {
                    limit: 0,
                    r#match: Some(only),
                    extract: None,
                },
                ferry_proxy::tap::HeaderValues::Redacted,
            )
            .unwrap();
        let conn = conn();
        let req = request();
        let app = "127.0.0.1:8080".parse().unwrap();
        b.bench_local(|| {
            let mut tapped = black_box(&taps).capture(
                &conn,
                Direction::Inbound,
                &req,
                Some("voting.emojivoto:8080"),
            );
            ferry_proxy::tap::dispatch(&mut tapped, || Destination {
                addr: app,
                labels: None,
                server_id: None,
            });
            tapped
        });
    }
}
