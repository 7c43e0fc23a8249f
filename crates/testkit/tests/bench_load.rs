//! `ferry-bench-load`, the benchmark harness's own generator: at a fixed rate it must send
//! every scheduled request, evenly spaced in time (not in bursts, which is what made h2load's
//! `--rps` unfit for latency), over HTTP/1.1, h2c, gRPC and TCP alike, and count non-2xx
//! answers and gRPC failures as errors. Also `ferry-bench-control`, the control plane's scale
//! benchmark, run at a small scale.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_testkit::{
    process::bin,
    server::{full, TestServer},
};
use http::{HeaderMap, Response};
use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Arrivals = Arc<Mutex<Vec<Instant>>>;

/// Runs the generator to its end (bounded) and returns its JSON summary.
async fn run_load(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(bin("ferry-bench-load"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "ferry-bench-load {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(stdout.trim())?)
}

/// One second of `rate` requests per second over `connections` to `server`, with `extra`
/// flags.
async fn paced_for_a_second(
    server: &TestServer,
    proto: &str,
    connections: u32,
    rate: u32,
    extra: &[&str],
) -> serde_json::Value {
    let (addr, connections, rate) = (
        server.addr.to_string(),
        connections.to_string(),
        rate.to_string(),
    );
    let mut args = vec![
        addr.as_str(),
        "--proto",
        proto,
        "--connections",
        &connections,
        "--seconds",
        "1",
        "--rate",
        &rate,
    ];
    args.extend_from_slice(extra);
    run_load(&args).await.unwrap()
}

async fn http_server(status: u16, arrivals: Arrivals) -> TestServer {
    TestServer::http(move |_req| {
        arrivals.lock().unwrap().push(Instant::now());
        async move {
            Response::builder()
                .status(status)
                .body(full("hello"))
                .unwrap()
        }
    })
    .await
}

/// Answers every call as a unary gRPC server would, ending with `grpc-status: <status>`.
async fn grpc_server(status: &'static str, arrivals: Arrivals) -> TestServer {
    TestServer::http(move |req| {
        arrivals.lock().unwrap().push(Instant::now());
        let is_grpc = req.headers().get("content-type").map(|v| v.as_bytes())
            == Some(b"application/grpc".as_slice());
        async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let body = Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]))
                .with_trailers(async move { Some(Ok(trailers)) })
                .map_err(|never| match never {})
                .boxed();
            Response::builder()
                .status(if is_grpc { 200 } else { 415 })
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap()
        }
    })
    .await
}

async fn echo_server(arrivals: Arrivals) -> TestServer {
    TestServer::tcp(move |mut sock| {
        let arrivals = arrivals.clone();
        async move {
            let mut buf = [0u8; 64];
            while sock.read_exact(&mut buf).await.is_ok() {
                arrivals.lock().unwrap().push(Instant::now());
                if sock.write_all(&buf).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// 1,000 RPS over 8 connections for 1 s: all 1,000 slots are sent and answered, and the
/// server sees them one at a time. Bursts of one request per connection (h2load's pattern)
/// would put the median gap near zero; even spacing puts it near 1 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_sends_every_request_evenly_spaced() {
    for proto in ["http1", "h2c", "grpc", "tcp"] {
        let arrivals = Arrivals::default();
        let server = match proto {
            "tcp" => echo_server(arrivals.clone()).await,
            "grpc" => grpc_server("0", arrivals.clone()).await,
            _ => http_server(200, arrivals.clone()).await,
        };
        let summary = paced_for_a_second(&server, proto, 8, 1000, &[]).await;
        assert_eq!(summary["requests"], 1000, "{proto}: {summary}");
        assert_eq!(summary["errors"], 0, "{proto}: {summary}");
        assert!(
            summary["p50_us"].as_u64().unwrap() > 0,
            "{proto}: {summary}"
        );
        // One full second of requests: the typical second's p99 is that second's.
        let p99_1s = summary["p99_1s_us"].as_u64().expect("p99_1s_us");
        assert!(
            p99_1s > 0 && p99_1s <= summary["max_us"].as_u64().unwrap(),
            "{proto}: {summary}"
        );

        let mut seen = arrivals.lock().unwrap().clone();
        seen.sort();
        // Each connection carries one unrecorded request before the clock starts.
        assert_eq!(
            seen.len(),
            8 + 1000,
            "{proto}: the server saw every request"
        );
        let seen = &seen[8..];
        let mut gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        assert!(
            median >= Duration::from_micros(300),
            "{proto}: requests arrive in bursts, median gap {median:?} (nominal 1 ms)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_answers_and_failed_calls_are_errors_not_latencies() {
    for (proto, server) in [
        ("http1", http_server(503, Arrivals::default()).await),
        ("grpc", grpc_server("13", Arrivals::default()).await),
    ] {
        let summary = paced_for_a_second(&server, proto, 2, 100, &[]).await;
        assert_eq!(summary["requests"], 0, "{proto}: {summary}");
        assert_eq!(summary["errors"], 100, "{proto}: {summary}");
    }
}

#[tokio::test]
async fn http_at_full_speed_is_refused_with_a_reason() {
    let out = tokio::process::Command::new(bin("ferry-bench-load"))
        .args(["127.0.0.1:9", "--proto", "http1", "--seconds", "1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give --rate"), "{err}");
}

/// `--pooling` adds every recorded latency as `[microseconds, requests]` pairs, ascending,
/// which the harness pools across runs: they add up to the summary's requests and give back
/// its percentiles. It also lists each whole second's p99 (one second here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_data_hold_every_recorded_request() {
    let server = echo_server(Arrivals::default()).await;
    let summary = paced_for_a_second(&server, "tcp", 2, 200, &["--pooling"]).await;
    let pairs: Vec<(u64, u64)> = summary["histogram"]
        .as_array()
        .expect("a histogram")
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
        .collect();
    assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "{pairs:?}");
    let total: u64 = pairs.iter().map(|p| p.1).sum();
    assert_eq!(total, 200, "{summary}");
    let rank = |n: u64| {
        let mut seen = 0;
        pairs.iter().find(|p| {
            seen += p.1;
            seen >= n
        })
    };
    assert_eq!(summary["p50_us"], rank(100).unwrap().0, "{summary}");
    assert_eq!(summary["p99_us"], rank(198).unwrap().0, "{summary}");
    assert_eq!(summary["max_us"], pairs.last().unwrap().0, "{summary}");
    assert_eq!(
        summary["p99_seconds_us"],
        serde_json::json!([summary["p99_1s_us"]]),
        "{summary}"
    );
    // Without the flag, the summary stays one short line.
    let plain = paced_for_a_second(&server, "tcp", 2, 100, &[]).await;
    assert!(plain.get("histogram").is_none(), "{plain}");
    assert!(plain.get("p99_seconds_us").is_none(), "{plain}");
}

/// `--log-file` writes every answered request as `start_us<TAB>latency_us`, in order of
/// start, and agrees with the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_file_has_every_request_in_order_of_start() {
    let server = echo_server(Arrivals::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let summary = paced_for_a_second(
        &server,
        "tcp",
        2,
        100,
        &["--log-file", log.to_str().unwrap()],
    )
    .await;
    let rows: Vec<(u64, u64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            let (start, latency) = line.split_once('\t').expect("two fields");
            (start.parse().unwrap(), latency.parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 100, "{summary}");
    assert_eq!(summary["requests"], 100, "{summary}");
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "in order of start"
    );
    // Slots are 10 ms apart from 0: the last starts near 990 ms into the run.
    assert!(rows[99].0 >= 900_000, "{:?}", rows[99]);
    let max = rows.iter().map(|r| r.1).max().unwrap();
    assert_eq!(summary["max_us"], max, "{summary}");
}

/// `ferry-bench-control` at a small scale: the harness builds a synthetic cluster the real
/// control plane accepts (600 pods: more than one page of the watchers' paged lists), every
/// stream sees every EndpointSlice change, churn replaces pods, and the report carries each
/// figure the scale goals are judged on.
#[tokio::test]
async fn the_control_plane_benchmark_runs_at_a_small_scale() {
    let args = [
        "--pods",
        "600",
        "--services",
        "12",
        "--endpoints-per-service",
        "3",
        "--streams",
        "40",
        "--changes",
        "4",
        "--churn-secs",
        "2",
        "--churn-rate",
        "10",
    ];
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin("ferry-bench-control"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ferry-bench-control ran over 60 s")
    .expect("spawning ferry-bench-control");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry-bench-control failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(report["services"], 12, "{report}");
    assert_eq!(report["streams"], 40, "{report}");
    assert_eq!(report["change_ms"]["changes"], 4, "{report}");
    assert_eq!(report["change_ms"]["missed"], 0, "{report}");
    assert!(
        report["change_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["churn"]["pods_replaced"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["rss_synced_mb"].as_f64().unwrap() > 1.0, "{report}");
    assert!(
        report["churn"]["rss_after_mb"].as_f64().unwrap() > 1.0,
        "{report}"
    );
}
