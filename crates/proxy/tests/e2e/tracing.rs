//! Distributed tracing end to end (docs/tracing.md): two proxy processes around a real app,
//! exporting to an OTLP collector built on the published protobufs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_testkit::{
    client, metric,
    otlp::{hex, Collector, Received},
    server::{full, TestServer},
    wait_until,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use super::{proxy, scrape, upstream_of, WAIT};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

/// An app that answers with the context headers it received, one `name=value` a line.
async fn echo_context_app() -> TestServer {
    TestServer::http(|req| async move {
        let mut out = String::new();
        for name in [
            "traceparent",
            "tracestate",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
        ] {
            if let Some(v) = req.headers().get(name) {
                out.push_str(&format!("{name}={}\n", v.to_str().unwrap()));
            }
        }
        Response::new(full(out))
    })
    .await
}

fn seen(body: &str, name: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> client::Reply {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = client::send(
        &client::http1(),
        req.body(Full::<Bytes>::default()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
    rsp
}

/// The two spans (A's client span, B's server span) of trace `trace`, once both came.
async fn hop(collector: &Collector, trace: &str) -> (Received, Received) {
    wait_until(WAIT, "both proxies' spans of the trace", || async {
        let spans: Vec<Received> = collector
            .received()
            .into_iter()
            .filter(|s| hex(&s.span.trace_id) == trace)
            .collect();
        let client = spans.iter().find(|s| s.span.kind == CLIENT)?.clone();
        let server = spans.iter().find(|s| s.span.kind == SERVER)?.clone();
        Some((client, server))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn both_proxies_of_a_hop_continue_w3c_and_b3_contexts_and_unsampled_requests_emit_nothing() {
    let collector = Collector::default();
    let (otlp, _serving) = collector.serve().await;
    let otlp = otlp.to_string();
    let app = echo_context_app().await;
    let b = proxy(&[
        "--inbound-forward",
        &app.addr.to_string(),
        "--trace-collector",
        &otlp,
        "--pod-namespace",
        "emojivoto",
        "--pod-name",
        "voting-5d8c7b6f4-x2x9q",
    ])
    .await;
    let upstream = format!("127.0.0.1:0={}", b.inbound());
    let a = proxy(&[
        "--upstream",
        &upstream,
        "--trace-collector",
        &format!("http://{otlp}"),
        "--trace-resource-attributes",
        "service.name=web,team=ui",
        "--pod-namespace",
        "emojivoto",
    ])
    .await;
    let url = format!("http://{}/api/vote?choice=x", upstream_of(&a));

    // Unsampled and context-free requests first: they must leave no span and no header.
    let unsampled = format!("00-{TID}-{APP_SPAN}-00");
    let rsp = get_with(&url, &[("traceparent", &unsampled)]).await;
    assert_eq!(
        seen(&rsp.text(), "traceparent").as_deref(),
        Some(&*unsampled)
    );
    let rsp = get_with(&url, &[("b3", &format!("{TID}-{APP_SPAN}-0"))]).await;
    assert_eq!(seen(&rsp.text(), "b3"), Some(format!("{TID}-{APP_SPAN}-0")));
    let rsp = get_with(&url, &[]).await;
    assert_eq!(rsp.text(), "", "no context is added at sampling 0");

    // W3C, sampled: A's client span is the app's child, B's server span A's, the app B's.
    let rsp = get_with(
        &url,
        &[
            ("traceparent", &format!("00-{TID}-{APP_SPAN}-01")),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await;
    let (c, s) = hop(&collector, TID).await;
    assert_eq!(hex(&c.span.parent_span_id), APP_SPAN);
    assert_eq!(hex(&s.span.parent_span_id), hex(&c.span.span_id));
    let body = rsp.text();
    assert_eq!(
        seen(&body, "traceparent"),
        Some(format!("00-{TID}-{}-01", hex(&s.span.span_id))),
        "{body}"
    );
    assert_eq!(seen(&body, "tracestate").as_deref(), Some("vendor=opaque"));
    assert_eq!(c.span.trace_state, "vendor=opaque");
    assert_eq!(s.span.name, "GET");
    assert_eq!(c.span.name, format!("GET {}", b.inbound()));
    for (span, direction) in [(&c, "outbound"), (&s, "inbound")] {
        assert_eq!(span.attr("ferry.direction").as_deref(), Some(direction));
        assert_eq!(span.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(span.attr("url.path").as_deref(), Some("/api/vote"));
        assert_eq!(
            span.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert!(span.span.status.as_ref().is_none_or(|s| s.code == 0));
        assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    }
    assert_eq!(
        c.attr("ferry.source.workload").as_deref(),
        Some("emojivoto/web")
    );
    assert_eq!(c.attr("ferry.endpoint"), Some(b.inbound().to_string()));
    assert_eq!(
        s.attr("ferry.destination.workload").as_deref(),
        Some("emojivoto/voting")
    );
    assert_eq!(c.resource_attr("service.name").as_deref(), Some("web"));
    assert_eq!(c.resource_attr("team").as_deref(), Some("ui"));
    assert_eq!(
        c.resource_attr("ferry.workload").as_deref(),
        Some("emojivoto/web")
    );
    assert_eq!(
        s.resource_attr("ferry.workload").as_deref(),
        Some("emojivoto/voting")
    );
    assert_eq!(
        s.resource_attr("k8s.pod.name").as_deref(),
        Some("voting-5d8c7b6f4-x2x9q")
    );
    assert_eq!(
        collector.spans(),
        2,
        "the unsampled requests emitted nothing: {:?}",
        collector.received()
    );

    // B3 single header, 64-bit trace id: the same trace continues, written back as B3.
    let b3_trace = "a3ce929d0e0e4736";
    let rsp = get_with(&url, &[("b3", &format!("{b3_trace}-{APP_SPAN}-1"))]).await;
    let (c, s) = hop(&collector, &format!("{:0>32}", b3_trace)).await;
    assert_eq!(hex(&c.span.parent_span_id), APP_SPAN);
    assert_eq!(hex(&s.span.parent_span_id), hex(&c.span.span_id));
    let b3 = seen(&rsp.text(), "b3").unwrap();
    assert!(
        b3.starts_with(&format!("{b3_trace}-{}-1", hex(&s.span.span_id))),
        "{b3}"
    );
    assert_eq!(
        seen(&rsp.text(), "traceparent"),
        None,
        "only the formats that came"
    );

    // B3 multi headers.
    let multi = "11111111111111112222222222222222";
    let rsp = get_with(
        &url,
        &[
            ("x-b3-traceid", multi),
            ("x-b3-spanid", APP_SPAN),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let (c, s) = hop(&collector, multi).await;
    assert_eq!(hex(&c.span.parent_span_id), APP_SPAN);
    assert_eq!(hex(&s.span.parent_span_id), hex(&c.span.span_id));
    let body = rsp.text();
    assert_eq!(
        seen(&body, "x-b3-spanid"),
        Some(hex(&s.span.span_id)),
        "{body}"
    );
    assert_eq!(seen(&body, "x-b3-parentspanid"), Some(hex(&c.span.span_id)));

    let metrics = scrape(a.admin()).await;
    let exported = wait_until(WAIT, "A's export counter", || async {
        let m = scrape(a.admin()).await;
        metric(&m, "proxy_trace_spans_exported_total", &[]).filter(|n| *n >= 3.0)
    })
    .await
    .unwrap();
    assert_eq!(exported, 3.0, "{metrics}");
}

#[tokio::test]
async fn a_dead_collector_costs_traffic_nothing_and_its_drops_are_counted() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let app = TestServer::http(|_req| async { Response::new(full("pong")) }).await;
    let b = proxy(&[
        "--inbound-forward",
        &app.addr.to_string(),
        "--trace-collector",
        &dead_addr,
    ])
    .await;
    let upstream = format!("127.0.0.1:0={}", b.inbound());
    let a = proxy(&[
        "--upstream",
        &upstream,
        "--trace-collector",
        &dead_addr,
        "--trace-sampling",
        "1",
    ])
    .await;
    let url = format!("http://{}/ping", upstream_of(&a));
    let client = client::http1();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let t = Instant::now();
        let req = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
        let rsp = client::send(&client, req).await.unwrap();
        assert_eq!(rsp.status, StatusCode::OK);
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    // Sampling 1 at A: every request is traced (a new W3C trace), and B continues it.
    assert!(
        slowest < Duration::from_millis(500),
        "a dead collector delayed a request: slowest {slowest:?}"
    );
    eprintln!("200 traced requests with a dead collector: {took:?}, slowest {slowest:?}");
    for proxy in [&a, &b] {
        let dropped = wait_until(WAIT, "dropped spans counted", || async {
            let m = scrape(proxy.admin()).await;
            metric(
                &m,
                "proxy_trace_spans_dropped_total",
                &[("reason", "export_failed")],
            )
            .filter(|n| *n >= 200.0)
        })
        .await
        .unwrap();
        assert_eq!(dropped, 200.0);
        let m = scrape(proxy.admin()).await;
        assert_eq!(
            metric(&m, "proxy_trace_spans_exported_total", &[]),
            Some(0.0),
            "{m}"
        );
    }
}

#[tokio::test]
async fn bad_trace_flags_are_refused_with_the_reason() {
    for (flag, value, want) in [
        ("--trace-sampling", "1.5", "not a rate"),
        ("--trace-collector", "no port", "trace collector"),
        ("--trace-resource-attributes", "novalue", "not KEY=VALUE"),
    ] {
        let out = std::process::Command::new(super::BIN)
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{flag} {value}: {err}");
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_nothing_and_a_full_queue_drops_spans() {
    // It takes the export requests and holds them past the proxy's 5 s export timeout.
    let collector = Collector::slow(Duration::from_secs(60));
    let (otlp, _serving) = collector.serve().await;
    let app = TestServer::http(|_req| async { Response::new(full("pong")) }).await;
    let a = proxy(&[
        "--inbound-forward",
        &app.addr.to_string(),
        "--trace-collector",
        &otlp.to_string(),
        "--trace-sampling",
        "1",
    ])
    .await;
    let url = format!("http://{}/ping", a.inbound());
    // More spans than the queue (2048) and the batch in flight (512) hold together.
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let client = client::http1();
            let mut slowest = Duration::ZERO;
            for _ in 0..400 {
                let t = Instant::now();
                let req = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                let rsp = client::send(&client, req).await.unwrap();
                assert_eq!(rsp.status, StatusCode::OK);
                slowest = slowest.max(t.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for w in workers {
        slowest = slowest.max(w.await.unwrap());
    }
    eprintln!(
        "3200 traced requests, collector never answering: {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a stuck collector delayed a request: slowest {slowest:?}"
    );
    let m = scrape(a.admin()).await;
    let full = metric(
        &m,
        "proxy_trace_spans_dropped_total",
        &[("reason", "queue_full")],
    );
    assert!(full.is_some_and(|n| n >= 3200.0 - 2048.0 - 512.0), "{m}");
    // The batch the collector holds times out and is counted as failed.
    wait_until(WAIT, "the held batch counted as failed", || async {
        let m = scrape(a.admin()).await;
        metric(
            &m,
            "proxy_trace_spans_dropped_total",
            &[("reason", "export_failed")],
        )
        .filter(|n| *n >= 1.0)
    })
    .await
    .unwrap();
}
