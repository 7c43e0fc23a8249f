//! Traces end to end: spans exported over OTLP (a real tonic client, the published
//! protobufs) to `ferry-control`'s receiver, then read back by `ferry trace` (list, filters,
//! JSON, the waterfall) and by the dashboard's Traces page and trace waterfall in Chromium.

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_testkit::{
    browser::Browser,
    otlp::kv,
    process::{bin, ControlProc},
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

use crate::{shot, WAIT};

/// One vote's trace as the proxies would report it: bot → web → voting, the call to
/// voting failing when `fail`. Trace ids are `n` repeated.
fn vote(n: u8, fail: bool) -> Vec<ExportTraceServiceRequest> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let start = now - u64::from(n) * 1_000_000_000;
    let ms = |m: u64| start + m * 1_000_000;
    let span =
        |id: u8, parent: u8, name: &str, kind: SpanKind, from: u64, to: u64, error: bool| Span {
            trace_id: vec![n; 16],
            span_id: vec![n, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                vec![n, 0, 0, 0, 0, 0, 0, parent]
            },
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: ms(from),
            end_time_unix_nano: ms(to),
            attributes: vec![
                kv("http.request.method", "POST"),
                kv("ferry.retry.attempt", "1"),
            ],
            status: Some(Status {
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                } as i32,
                message: if error {
                    "proxy: 503 from voting".to_string()
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        };
    let from = |workload: &str, spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", workload),
                    kv("k8s.namespace.name", "emojivoto"),
                    kv("ferry.workload", &format!("emojivoto/{workload}")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let slow = if fail { 0 } else { 200 };
    vec![
        from(
            "web",
            vec![
                span(1, 0, "POST /api/vote", SpanKind::Server, 0, 60 + slow, fail),
                span(
                    2,
                    1,
                    "POST voting-svc.emojivoto:8080",
                    SpanKind::Client,
                    10,
                    50 + slow,
                    fail,
                ),
            ],
        ),
        from(
            "voting",
            vec![span(
                3,
                2,
                "POST /emojivoto.v1.VotingService/VoteDoughnut",
                SpanKind::Server,
                12,
                48 + slow,
                fail,
            )],
        ),
    ]
}

async fn ferry(args: &[&str]) -> String {
    let out = tokio::process::Command::new(bin("ferry"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ferry {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn ferry_trace_and_the_dashboard_show_exported_traces() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(&file, "namespaces: [emojivoto]\n").unwrap();
    let control = ControlProc::spawn(&file, &[]).await.unwrap();
    let receiver = control.trace.expect("the trace receiver listens");
    let channel = tonic::transport::Channel::from_shared(format!("http://{receiver}"))
        .unwrap()
        .connect_lazy();
    let mut otlp = TraceServiceClient::new(channel);
    // Four votes: two fine but slow (n = 1, 3), two failed (n = 2, 4).
    for n in 1..=4u8 {
        for export in vote(n, n % 2 == 0) {
            otlp.export(export).await.unwrap();
        }
    }
    let api = format!("http://{}", control.api);

    // `ferry trace`: newest first, and the filters.
    let list = ferry(&["trace", "--api-addr", &api]).await;
    let ids: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let hex = |n: u8| format!("{n:02x}").repeat(16);
    assert_eq!(ids, [hex(1), hex(2), hex(3), hex(4)], "{list}");
    assert!(
        list.contains("emojivoto/web") && list.contains("POST /api/vote"),
        "{list}"
    );
    let errors = ferry(&["trace", "--errors", "--api-addr", &api]).await;
    assert_eq!(
        errors.lines().count(),
        3,
        "two failed traces and the header: {errors}"
    );
    assert!(errors.contains("error (3)"), "{errors}");
    let json = ferry(&[
        "trace",
        "--min-duration",
        "200ms",
        "-o",
        "json",
        "--api-addr",
        &api,
    ])
    .await;
    let slow: serde_json::Value = serde_json::from_str(&json).unwrap();
    let slow: Vec<&str> = slow
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceId"].as_str().unwrap())
        .collect();
    assert_eq!(slow, [hex(1), hex(3)], "{json}");
    let waterfall = ferry(&["trace", &hex(2), "--api-addr", &api]).await;
    eprintln!("{waterfall}");
    let lines: Vec<&str> = waterfall.lines().collect();
    assert!(
        lines[0].starts_with(&format!("Trace {} · 60.0ms · 3 spans · error", hex(2))),
        "{waterfall}"
    );
    assert!(lines[2].starts_with("POST /api/vote"), "{waterfall}");
    assert!(lines[3].starts_with("  POST voting-svc"), "{waterfall}");
    assert!(
        lines[4].starts_with("    POST /emojivoto.v1.VotingService/VoteDoughnut"),
        "{waterfall}"
    );
    assert!(
        lines[4].contains("voting") && lines[4].contains("error: proxy: 503 from voting"),
        "{waterfall}"
    );

    // The dashboard: the Traces page lists them, filters, and opens a waterfall.
    let browser = Browser::start(1366, 900).await.unwrap();
    browser.goto(&format!("{api}/#/traces")).await.unwrap();
    let rows = browser
        .wait_for(
            "the Traces page to list four traces, two failed",
            r#"const rows = [...document.querySelectorAll('#traces tr[data-trace]')];
               const bad = rows.filter((r) => r.classList.contains('row-bad'));
               return rows.length === 4 && bad.length === 2 ? rows.map((r) => r.dataset.trace) : null;"#,
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(rows[0], hex(1), "newest first: {rows}");
    shot(&browser, "8-traces").await;
    browser
        .goto(&format!("{api}/#/traces?status=error&workload=voting"))
        .await
        .unwrap();
    browser
        .wait_for(
            "the failed traces only",
            r#"const rows = [...document.querySelectorAll('#traces tr[data-trace]')];
               return rows.length === 2 && rows.every((r) => r.classList.contains('row-bad'));"#,
            WAIT,
        )
        .await
        .unwrap();
    let link = browser
        .find(&format!("#traces tr[data-trace='{}'] a", hex(2)))
        .await
        .unwrap();
    browser.click(&link).await.unwrap();
    let spans = browser
        .wait_for(
            "the waterfall: three spans nested, the failing hop in red",
            r#"const rows = [...document.querySelectorAll('#waterfall .wf-row[data-span]')];
               if (rows.length !== 3) return null;
               return rows.map((r) => [r.dataset.depth, r.classList.contains('wf-error'),
                 r.querySelector('.wf-bar').style.left, r.querySelector('.wf-bar').style.width]);"#,
            WAIT,
        )
        .await
        .unwrap();
    let spans = spans.as_array().unwrap();
    let depths: Vec<&str> = spans.iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(depths, ["0", "1", "2"], "{spans:?}");
    assert!(spans.iter().all(|s| s[1] == true), "{spans:?}");
    // The client span starts 10 of 60 ms in and lasts 40: its bar is placed accordingly.
    let pct = |v: &serde_json::Value| {
        v.as_str()
            .unwrap()
            .trim_end_matches('%')
            .parse::<f64>()
            .unwrap()
    };
    assert!((pct(&spans[1][2]) - 100.0 / 6.0).abs() < 0.1, "{spans:?}");
    assert!((pct(&spans[1][3]) - 200.0 / 3.0).abs() < 0.1, "{spans:?}");
    // A click shows a span's attributes and error.
    let row = browser
        .find("#waterfall .wf-row[data-depth='2']")
        .await
        .unwrap();
    browser.click(&row).await.unwrap();
    browser
        .wait_for(
            "the span's details",
            r#"const d = [...document.querySelectorAll('.wf-detail')].find((d) => !d.hidden);
               return d && d.textContent.includes('ferry.retry.attempt') && d.textContent.includes('503 from voting');"#,
            WAIT,
        )
        .await
        .unwrap();
    shot(&browser, "9-trace-waterfall").await;
    // An id the store does not keep says so.
    browser
        .goto(&format!("{api}/#/trace/{}", "ab".repeat(16)))
        .await
        .unwrap();
    browser
        .wait_for(
            "the trace page to say it is not kept",
            "const e = document.querySelector('#trace-error'); return e && e.textContent.includes('no trace');",
            WAIT,
        )
        .await
        .unwrap();
}
