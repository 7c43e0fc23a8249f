//! The mesh end to end, with real processes: `ferry-control` serving a workloads file, a
//! `ferry-proxy` in front of each instance, and a client proxy resolving the service through
//! the control plane — balancing, live edits, and the control plane going away.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use ferry_testkit::{
    client,
    process::{bin, ControlProc, Proc, ProxyProc},
    server::{full, TestServer},
    wait_until,
};
use http::{Response, StatusCode};

const WAIT: Duration = Duration::from_secs(15);

#[path = "mesh/rollouts.rs"]
mod rollouts;

/// An app answering with its name, slowed down while `slow` is set.
async fn app(name: &'static str, slow: Arc<AtomicBool>) -> TestServer {
    TestServer::http(move |_req| {
        let slow = slow.clone();
        async move {
            if slow.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Response::new(full(name))
        }
    })
    .await
}

async fn proxy(args: &[&str]) -> ProxyProc {
    ProxyProc::spawn(bin("ferry-proxy"), args).await.unwrap()
}

async fn control(file: &Path, grpc: &str) -> (Proc, SocketAddr, SocketAddr) {
    let cp = ControlProc::spawn(file, &["--grpc-listen", grpc])
        .await
        .unwrap();
    (cp.proc, cp.grpc, cp.api)
}

/// Writes the workloads file and the routes file into `dir` and starts a control plane
/// serving both (with `extra` flags); returns it and the workloads file's path.
async fn control_with_routes(
    dir: &Path,
    workloads: &str,
    routes: &str,
    extra: &[&str],
) -> (ControlProc, std::path::PathBuf) {
    let file = dir.join("workloads.yaml");
    std::fs::write(&file, workloads).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(&path, routes).unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut args = vec!["--routes", path.as_str()];
    args.extend_from_slice(extra);
    (ControlProc::spawn(&file, &args).await.unwrap(), file)
}

/// Runs the `ferry` CLI to completion (bounded) and returns (success, stdout, stderr).
async fn ferry(args: &[&str]) -> (bool, String, String) {
    let run = tokio::process::Command::new(bin("ferry"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("ferry finished")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn workloads(instances: &[(&str, SocketAddr)]) -> String {
    let mut yaml = String::from("workloads:\n  - name: echo\n    namespace: default\n    serviceAccount: echo\n    instances:\n");
    for (name, addr) in instances {
        yaml.push_str(&format!("      - {{ name: {name}, addr: \"{addr}\" }}\n"));
    }
    yaml.push_str("services:\n  - name: echo\n    namespace: default\n    port: 8080\n    workloads: [echo]\n");
    yaml
}

/// Sends `n` GETs through `url`, `concurrency` at a time; counts answers by body, and
/// returns the failures' descriptions.
async fn send(url: &str, n: usize, concurrency: usize) -> (HashMap<String, usize>, Vec<String>) {
    let mut counts = HashMap::new();
    let mut failures = Vec::new();
    let http = client::http1();
    let mut sent = 0;
    while sent < n {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..concurrency.min(n - sent) {
            let (http, url) = (http.clone(), url.to_string());
            batch.spawn(async move {
                let req = http::Request::get(url).body(Default::default()).unwrap();
                client::send(&http, req).await
            });
            sent += 1;
        }
        while let Some(result) = batch.join_next().await {
            match result.unwrap() {
                Ok(r) if r.status == StatusCode::OK => *counts.entry(r.text()).or_insert(0) += 1,
                Ok(r) => failures.push(format!(
                    "{} {:?} {}",
                    r.status,
                    r.headers.get("l5d-proxy-error"),
                    r.text()
                )),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    (counts, failures)
}

#[tokio::test]
async fn a_service_is_balanced_follows_edits_and_survives_the_control_plane() {
    let (slow_a, slow_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (app_a, app_b) = (
        app("echo-a", slow_a.clone()).await,
        app("echo-b", slow_b).await,
    );
    let pa = proxy(&["--inbound-forward", &app_a.addr.to_string()]).await;
    let pb = proxy(&["--inbound-forward", &app_b.addr.to_string()]).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(
        &file,
        workloads(&[("echo-a", pa.inbound()), ("echo-b", pb.inbound())]),
    )
    .unwrap();
    let (mut cp, grpc, api) = control(&file, "127.0.0.1:0").await;

    // What the control plane tells proxies, as the CLI shows it.
    let api_url = format!("http://{api}");
    let (ok, out, err) = ferry(&[
        "diagnostics",
        "endpoints",
        "echo.default:8080",
        "--api-addr",
        &api_url,
    ])
    .await;
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("NAMESPACE"), "{out}");
    for (pod, addr) in [("echo-a", pa.inbound()), ("echo-b", pb.inbound())] {
        let row = rows
            .iter()
            .find(|r| r.contains(pod))
            .unwrap_or_else(|| panic!("{pod} missing: {out}"));
        assert!(
            row.contains(&addr.port().to_string()) && row.contains("echo.default"),
            "{row}"
        );
    }
    let (ok, _, err) = ferry(&[
        "dg",
        "endpoints",
        "nope.default:8080",
        "--api-addr",
        &api_url,
    ])
    .await;
    assert!(
        !ok && err.contains("knows no service nope.default:8080"),
        "{err}"
    );

    let client_proxy = proxy(&[
        "--upstream",
        "127.0.0.1:0=echo.default:8080",
        "--destination-addr",
        &grpc.to_string(),
    ])
    .await;
    let url = format!("http://{}/", client_proxy.upstream("echo.default:8080"));

    // 200 requests, one at a time: all succeed, both instances get a fair share.
    let (counts, failures) = send(&url, 200, 1).await;
    assert!(failures.is_empty(), "{failures:?}");
    let (na, nb) = (
        counts.get("echo-a").copied().unwrap_or(0),
        counts.get("echo-b").copied().unwrap_or(0),
    );
    eprintln!("200 sequential requests: echo-a {na}, echo-b {nb}");
    assert!(na >= 40 && nb >= 40, "unfair split: {counts:?}");

    // The client proxy's metrics carry the endpoints' labels.
    let metrics = client::get(&format!("http://{}/metrics", client_proxy.admin()))
        .await
        .unwrap()
        .text();
    let want = [
        ("direction", "outbound"),
        ("authority", "echo.default:8080"),
        ("dst_pod", "echo-a"),
        ("dst_deployment", "echo"),
    ];
    assert_eq!(
        ferry_testkit::metric(&metrics, "request_total", &want),
        Some(na as f64),
        "{metrics}"
    );

    // Slow one instance down: with requests in parallel, the faster one takes most of them.
    slow_a.store(true, Ordering::Relaxed);
    let (counts, failures) = send(&url, 100, 4).await;
    slow_a.store(false, Ordering::Relaxed);
    assert!(failures.is_empty(), "{failures:?}");
    eprintln!("100 requests with echo-a slowed by 200 ms: {counts:?}");
    // About half each when equal (above); a clear majority for the faster one here.
    assert!(
        counts.get("echo-b").copied().unwrap_or(0) >= 70,
        "the faster endpoint should win: {counts:?}"
    );

    // Remove echo-a from the file: within 2 s the proxy drops it, and requests sent all
    // along the way never fail.
    let state_url = format!("http://{}/state", client_proxy.admin());
    let endpoints = |state_url: String| async move {
        let state = client::get(&state_url).await.unwrap().text();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        state["destinations"][0]["endpoints"]
            .as_array()
            .map_or(0, Vec::len)
    };
    std::fs::write(&file, workloads(&[("echo-b", pb.inbound())])).unwrap();
    let edited = tokio::time::Instant::now();
    let moved = wait_until(Duration::from_secs(2), "the proxy to drop echo-a", || {
        let (url, state_url) = (url.clone(), state_url.clone());
        async move {
            let (_, failures) = send(&url, 8, 4).await;
            assert!(
                failures.is_empty(),
                "failed while the edit landed: {failures:?}"
            );
            (endpoints(state_url).await == 1).then_some(())
        }
    })
    .await;
    assert!(moved.is_ok(), "{moved:?}");
    eprintln!(
        "echo-a left the proxy's endpoints {:?} after the edit",
        edited.elapsed()
    );
    let (counts, failures) = send(&url, 50, 4).await;
    assert!(
        failures.is_empty() && counts.get("echo-b") == Some(&50),
        "{counts:?} {failures:?}"
    );

    // echo-a comes back: it gets traffic within a second.
    let both = workloads(&[("echo-a", pa.inbound()), ("echo-b", pb.inbound())]);
    std::fs::write(&file, &both).unwrap();
    let added = wait_until(
        Duration::from_secs(1),
        "echo-a to get traffic after the add",
        || {
            let url = url.clone();
            async move {
                let (counts, failures) = send(&url, 4, 2).await;
                assert!(failures.is_empty(), "{failures:?}");
                counts.contains_key("echo-a").then_some(())
            }
        },
    )
    .await;
    assert!(added.is_ok(), "{added:?}");

    // The control plane dies: proxies keep routing with what they knew.
    cp.terminate(WAIT).await.unwrap();
    let (counts, failures) = send(&url, 100, 4).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts.values().sum::<usize>(), 100);
    assert!(
        counts.contains_key("echo-a") && counts.contains_key("echo-b"),
        "{counts:?}"
    );
    let state = client::get(&state_url).await.unwrap().text();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let dst = &state["destinations"][0];
    assert_eq!(dst["name"], "echo.default:8080", "{state}");
    assert_eq!(dst["stream"]["connected"], false, "{state}");
    assert_eq!(dst["endpoints"].as_array().unwrap().len(), 2, "{state}");

    // It comes back on the same address, now with only echo-b: the proxy resubscribes and
    // takes the new stream's first message as the whole state, so echo-a gets nothing.
    std::fs::write(&file, workloads(&[("echo-b", pb.inbound())])).unwrap();
    let (_cp, _, _) = control(&file, &grpc.to_string()).await;
    let resubscribed = wait_until(WAIT, "the proxy to resubscribe", || {
        let state_url = state_url.clone();
        async move {
            let state = client::get(&state_url).await.unwrap().text();
            let state: serde_json::Value = serde_json::from_str(&state).unwrap();
            let dst = &state["destinations"][0];
            (dst["stream"]["connected"] == true && dst["endpoints"].as_array().unwrap().len() == 1)
                .then_some(())
        }
    })
    .await;
    assert!(
        resubscribed.is_ok(),
        "{resubscribed:?}\n{}",
        client_proxy.proc.logs().join("\n")
    );
    let (counts, failures) = send(&url, 20, 4).await;
    assert!(
        failures.is_empty() && counts.get("echo-b") == Some(&20),
        "{counts:?} {failures:?}"
    );
}

#[tokio::test]
async fn unknown_names_fail_fast_and_a_missing_control_plane_is_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(&file, workloads(&[])).unwrap();
    let (_cp, grpc, _) = control(&file, "127.0.0.1:0").await;
    let p = proxy(&[
        "--upstream",
        "127.0.0.1:0=nope.default:8080",
        "--upstream",
        "127.0.0.1:0=echo.default:8080",
        "--destination-addr",
        &grpc.to_string(),
    ])
    .await;
    let (echo, nope) = (
        p.upstream("echo.default:8080"),
        p.upstream("nope.default:8080"),
    );

    let started = tokio::time::Instant::now();
    let rsp = client::get(&format!("http://{nope}/")).await.unwrap();
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers["l5d-proxy-error"], "no-route");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "unknown names fail fast: {:?}",
        started.elapsed()
    );

    let rsp = client::get(&format!("http://{echo}/")).await.unwrap();
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers["l5d-proxy-error"], "no-endpoints");

    // No control plane at all: the CLI says so in one line and fails; the proxy's request
    // waits a bounded time, then says why.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = proxy(&[
        "--upstream",
        "127.0.0.1:0=echo.default:8080",
        "--destination-addr",
        &dead.to_string(),
    ])
    .await;
    let upstream = d.upstream("echo.default:8080");
    let dead_api = format!("http://{dead}");
    let (ok, _, err) = ferry(&[
        "diagnostics",
        "endpoints",
        "echo.default:8080",
        "--api-addr",
        &dead_api,
    ])
    .await;
    assert!(!ok, "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(
        err.contains("cannot reach the control plane") && err.contains(&dead_api),
        "{err}"
    );
    let rsp = client::get(&format!("http://{upstream}/")).await.unwrap();
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.headers["l5d-proxy-error"], "no-endpoints");
    assert!(
        rsp.text().contains("no answer from the control plane"),
        "{}",
        rsp.text()
    );
}

/// `ferry diagnostics policy` prints what `OutboundPolicies` serves for a Service port:
/// the routes file's split, fault, timeouts and retries, and a default route elsewhere.
#[tokio::test]
async fn diagnostics_policy_prints_the_routes_the_control_plane_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, _) = control_with_routes(dir.path(), "workloads:\n  - name: web\n    instances: [{name: web-0, addr: \"127.0.0.1:17301\"}]\n  - name: canary\n    instances: [{name: canary-0, addr: \"127.0.0.1:17302\"}]\nservices:\n  - {name: web, port: 8080, workloads: [web]}\n  - {name: canary, port: 8080, workloads: [canary]}\n", "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: \"yes\"}]}]
    filters: [{type: ExtensionRef, extensionRef: {group: policy.ferry.io, kind: HTTPFault, name: flaky}}]
    backendRefs: [{name: canary, port: 8080}]
  - backendRefs: [{name: web, port: 8080, weight: 90}, {name: canary, port: 8080, weight: 10}]
    timeouts: {request: 5s, backendRequest: 2s}
    retry: {codes: [503], attempts: 3}
---
apiVersion: policy.ferry.io/v1alpha1
kind: HTTPFault
metadata: {name: flaky}
spec: {abort: {httpStatus: 503, percent: 25}}
", &[]).await;
    let api_url = format!("http://{}", cp.api);

    let (ok, out, err) = ferry(&[
        "diagnostics",
        "policy",
        "svc/web:8080",
        "--api-addr",
        &api_url,
    ])
    .await;
    assert!(ok, "{err}");
    for expected in [
        "Service default/web port 8080 (web.default.svc.cluster.local:8080), protocol http",
        "HTTPRoute default/web-split",
        "match     path PathPrefix /api, header x-canary = yes",
        "fault     abort 503 for 25% (HTTPFault default/flaky)",
        "backend   canary.default:8080 weight 1",
        "backend   web.default:8080 weight 90",
        "backend   canary.default:8080 weight 10",
        "timeouts  request 5s, backendRequest 2s",
        "retry     up to 3 on 503",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    let (ok, out, err) = ferry(&[
        "diagnostics",
        "policy",
        "canary.default.svc.cluster.local:8080",
        "-o",
        "json",
        "--api-addr",
        &api_url,
    ])
    .await;
    assert!(ok, "{err}");
    let policy: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(policy["routes"][0]["kind"], "default");
    assert_eq!(
        policy["routes"][0]["rules"][0]["backends"][0]["name"],
        "canary"
    );

    let (ok, _, err) = ferry(&[
        "diagnostics",
        "policy",
        "svc/nope:8080",
        "--api-addr",
        &api_url,
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");
}

/// A backend answering with its name; `fail_every` makes the calls whose number modulo 10
/// is below it answer 503, and `/slow` waits 2 s. It echoes request bodies, and counts
/// calls.
async fn routed_app(name: &'static str, fail_below: u64, calls: Arc<AtomicU64>) -> TestServer {
    TestServer::http(move |req| {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_string();
            if path == "/slow" || name == "mirror-slow" {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if n % 10 < fail_below {
                let mut rsp = Response::new(full("failing"));
                *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return rsp;
            }
            let mut rsp = if body.is_empty() {
                Response::new(full(name))
            } else {
                Response::new(full(body))
            };
            if let Ok(v) = http::HeaderValue::from_str(&path) {
                rsp.headers_mut().insert("x-path", v);
            }
            rsp
        }
    })
    .await
}

/// Routes steer traffic through a real client proxy (issue #21), on the HTTP/1.1 fast
/// path and, over h2c, the general path: header matches, a 90/10 split, fault aborts,
/// backend timeouts, retries of a flaky backend (POST bodies intact), and the retry
/// budget bounding the extra load on a backend that always fails.
#[tokio::test]
async fn routes_split_match_fault_time_out_and_retry_within_the_budget() {
    let calls: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::default()).collect();
    let web = routed_app("web", 0, calls[0].clone()).await;
    let canary = routed_app("canary", 0, calls[1].clone()).await;
    let flaky = routed_app("flaky", 3, calls[2].clone()).await;
    let down = routed_app("down", 10, calls[3].clone()).await;
    let mirror_calls = Arc::new(AtomicU64::new(0));
    let mirror_slow = routed_app("mirror-slow", 0, mirror_calls.clone()).await;
    let dead_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Two endpoints of one service, one failing until told otherwise.
    let (cb_good, cb_bad_calls, cb_bad_fails) = (
        routed_app("cb-good", 0, Arc::default()).await,
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(true)),
    );
    let cb_bad = {
        let (calls, fails) = (cb_bad_calls.clone(), cb_bad_fails.clone());
        TestServer::http(move |_req| {
            calls.fetch_add(1, Ordering::SeqCst);
            let failing = fails.load(Ordering::SeqCst);
            async move {
                let mut rsp = Response::new(full("cb-bad"));
                if failing {
                    *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                rsp
            }
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    let mut yaml = String::from("workloads:\n");
    for (name, app) in [
        ("web", &web),
        ("canary", &canary),
        ("flaky", &flaky),
        ("down", &down),
    ] {
        yaml.push_str(&format!(
            "  - name: {name}\n    instances: [{{name: {name}-0, addr: \"{}\"}}]\n",
            app.addr
        ));
    }
    yaml.push_str(&format!(
        "  - name: cb\n    instances: [{{name: cb-0, addr: \"{}\"}}, {{name: cb-1, addr: \"{}\"}}]\n",
        cb_good.addr, cb_bad.addr
    ));
    yaml.push_str(&format!(
        "  - name: mirror-slow\n    instances: [{{name: ms-0, addr: \"{}\"}}]\n  - name: mirror-dead\n    instances: [{{name: md-0, addr: \"{dead_addr}\"}}]\n",
        mirror_slow.addr
    ));
    let mut services = String::from("services:\n");
    for name in [
        "web",
        "canary",
        "flaky",
        "down",
        "cb",
        "mirror-slow",
        "mirror-dead",
    ] {
        services.push_str(&format!(
            "  - {{name: {name}, port: 8080, workloads: [{name}]}}\n"
        ));
    }
    let (cp, _) = control_with_routes(
        dir.path(),
        &format!("{yaml}{services}"),
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-routes}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-canary, value: \"yes\"}]}]
    backendRefs: [{name: canary, port: 8080}]
  - matches: [{path: {type: Exact, value: /teapot}}]
    filters: [{type: ExtensionRef, extensionRef: {group: policy.ferry.io, kind: HTTPFault, name: teapot}}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {backendRequest: 300ms}
  - matches: [{path: {type: PathPrefix, value: /mirror-dead}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: mirror-dead, port: 8080}, percent: 25}}]
  - matches: [{path: {type: PathPrefix, value: /mirror-slow}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: mirror-slow, port: 8080}, percent: 25}}]
  - matches: [{path: {type: PathPrefix, value: /delayed}}]
    filters: [{type: ExtensionRef, extensionRef: {group: policy.ferry.io, kind: HTTPFault, name: slowdown}}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
  - backendRefs: [{name: web, port: 8080, weight: 90}, {name: canary, port: 8080, weight: 10}]
---
apiVersion: policy.ferry.io/v1alpha1
kind: HTTPFault
metadata: {name: teapot}
spec: {abort: {httpStatus: 418, percent: 100}}
---
apiVersion: policy.ferry.io/v1alpha1
kind: HTTPFault
metadata: {name: slowdown}
spec: {delay: {fixedDelay: 300ms, percent: 100}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky-retries}
spec:
  parentRefs: [{group: \"\", kind: Service, name: flaky, port: 8080}]
  rules:
  - retry: {codes: [503], attempts: 3}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: down-retries}
spec:
  parentRefs: [{group: \"\", kind: Service, name: down, port: 8080}]
  rules:
  - retry: {codes: [503], attempts: 3}
---
apiVersion: v1
kind: Service
metadata:
  name: cb
  annotations:
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"3\"
    balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 1s
    balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 2s
    balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: \"0\"
",
        &["--scrape-interval", "1s"],
    )
    .await;
    let grpc = cp.grpc.to_string();
    let client_proxy = proxy(&[
        "--upstream",
        "127.0.0.1:0=web.default:8080",
        "--upstream",
        "127.0.0.1:0=flaky.default:8080",
        "--upstream",
        "127.0.0.1:0=down.default:8080",
        "--upstream",
        "127.0.0.1:0=cb.default:8080",
        "--destination-addr",
        &grpc,
        // Upstream HTTP/2 streams are then checked every 200 ms: often enough for the
        // 300 ms backend timeout below, which the check (not a timer) then keeps.
        "--response-head-timeout",
        "2s",
    ])
    .await;
    // The client joins the file, so the control plane scrapes its route metrics.
    yaml.push_str(&format!(
        "  - name: client\n    instances: [{{name: client-0, addr: \"127.0.0.1:9\", adminAddr: \"{}\"}}]\n",
        client_proxy.admin()
    ));
    std::fs::write(&file, format!("{yaml}{services}")).unwrap();
    let web_url = format!("http://{}", client_proxy.upstream("web.default:8080"));
    let (h1, h2) = (client::http1(), client::h2c());
    let get = |version: http::Version, path: &str, header: Option<(&str, &str)>| {
        let mut req = http::Request::get(format!("{web_url}{path}")).version(version);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let client = if version == http::Version::HTTP_2 {
            &h2
        } else {
            &h1
        };
        client::send(client, req.body(Default::default()).unwrap())
    };

    for client in [http::Version::HTTP_11, http::Version::HTTP_2] {
        // A header match sends every request to the canary.
        for _ in 0..20 {
            let r = get(client, "/", Some(("x-canary", "yes"))).await.unwrap();
            assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "canary"));
        }
        // A fault aborts, labelled as the proxy's.
        let r = get(client, "/teapot", None).await.unwrap();
        assert_eq!(r.status.as_u16(), 418, "{}", r.text());
        assert_eq!(r.headers["l5d-proxy-error"], "fault-injected");
        // The backend timeout answers 504 long before the backend would.
        let started = std::time::Instant::now();
        let r = get(client, "/slow", None).await.unwrap();
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
        assert_eq!(r.headers["l5d-proxy-error"], "backend-request-timeout");
        assert!(
            r.text().contains("backend request timeout of 300ms"),
            "{}",
            r.text()
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1500));
        // A fault's delay holds the request back.
        let started = std::time::Instant::now();
        let r = get(client, "/delayed", None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A rewrite replaces the matched prefix (on the general path, for both).
        let r = get(client, "/old/x?q=1", None).await.unwrap();
        assert_eq!(r.headers["x-path"], "/new/x", "{client:?}");
    }

    // Mirroring 25 %: to a dead mirror, then to one that takes 2 s to answer; the primary's
    // latency does not move, and the slow mirror gets about a quarter of the requests.
    for path in ["/mirror-dead", "/mirror-slow"] {
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let version = if i % 2 == 0 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_2
            };
            let started = std::time::Instant::now();
            let r = get(version, path, None).await.unwrap();
            assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "web"));
            slowest = slowest.max(started.elapsed());
        }
        eprintln!("{path}: slowest primary of 200: {slowest:?}");
        assert!(slowest < Duration::from_millis(500), "{path}: {slowest:?}");
    }
    let mirrored = wait_until(WAIT, "mirror copies arrive", || {
        let n = mirror_calls.load(Ordering::SeqCst);
        async move { (n >= 25).then_some(n) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mirrored = mirror_calls.load(Ordering::SeqCst).max(mirrored);
    eprintln!("mirror: {mirrored} of 200");
    assert!((25..=80).contains(&mirrored), "{mirrored} of 200 mirrored");

    // A 90/10 split over 10,000 requests (fast path and general path alike).
    let mut canaries = 0;
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let client = if i % 2 == 0 { h1.clone() } else { h2.clone() };
        let url = format!("{web_url}/split");
        batch.spawn(async move {
            let mut req = http::Request::get(url);
            if i % 2 == 1 {
                req = req.version(http::Version::HTTP_2);
            }
            client::send(&client, req.body(Default::default()).unwrap()).await
        });
        if batch.len() >= 32 || i == 9_999 {
            while let Some(r) = batch.join_next().await {
                let r = r.unwrap().unwrap();
                assert_eq!(r.status, StatusCode::OK);
                canaries += usize::from(r.text() == "canary");
            }
        }
    }
    eprintln!("split: {canaries} of 10000 to the canary");
    assert!((700..=1300).contains(&canaries), "{canaries} of 10000");

    // A flaky backend (30 % 503) is retried: every caller succeeds, POST bodies intact.
    let flaky_url = format!("http://{}", client_proxy.upstream("flaky.default:8080"));
    for i in 0..200 {
        let (client, version) = if i % 2 == 0 {
            (&h1, http::Version::HTTP_11)
        } else {
            (&h2, http::Version::HTTP_2)
        };
        let body = format!("{i:05}").repeat(2000);
        let req = http::Request::post(&flaky_url)
            .version(version)
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let r = client::send(client, req).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert!(r.body == body.as_bytes(), "request {i}: body changed");
    }
    let flaky_calls = calls[2].load(Ordering::SeqCst);
    eprintln!("flaky: 200 requests, {flaky_calls} calls");
    assert!(flaky_calls > 200, "retries happened");

    // `ferry routes` shows the retried route: effective (every caller succeeded) and actual
    // (every try, so the retries show).
    let api = format!("http://{}", cp.api);
    let row = wait_until(WAIT, "ferry routes to show the flaky route", || {
        let api = api.clone();
        async move {
            let (ok, out, _) = ferry(&[
                "routes",
                "deploy/client",
                "--to",
                "svc/flaky",
                "-o",
                "json",
                "--api-addr",
                &api,
            ])
            .await;
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let row = rows
                .into_iter()
                .find(|r| r["route"] == "HTTPRoute/default/flaky-retries")?;
            (row["retriesPerSec"].as_f64()? > 0.0).then_some(row)
        }
    })
    .await
    .unwrap();
    assert_eq!(row["service"], "default/flaky:8080", "{row}");
    assert_eq!(row["success"].as_f64(), Some(1.0), "{row}");
    let (rps, actual) = (
        row["rps"].as_f64().unwrap(),
        row["actualRps"].as_f64().unwrap(),
    );
    assert!(actual > rps, "{row}");
    assert!(row["actualSuccess"].as_f64().unwrap() < 0.9, "{row}");
    let (ok, table, err) =
        ferry(&["routes", "deploy/client", "-o", "wide", "--api-addr", &api]).await;
    assert!(ok, "{err}");
    eprintln!("{table}");
    assert!(
        table.starts_with("ROUTE") && table.contains("HTTPRoute/default/web-routes"),
        "{table}"
    );

    // A backend that always fails gets no more than the budget's retries: 10/s over the
    // 10 s window plus 20 % of the requests.
    let down_url = format!("http://{}", client_proxy.upstream("down.default:8080"));
    for _ in 0..500 {
        let r = client::get(&down_url).await.unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let down_calls = calls[3].load(Ordering::SeqCst);
    eprintln!("down: 500 requests, {down_calls} calls");
    assert!(
        (600..=500 + 100 + 100 + 10).contains(&down_calls),
        "{down_calls} calls for 500 requests"
    );

    // Circuit breaking: the failing endpoint is ejected after 3 failures in a row, so of
    // 100 requests it sees a few (the first ones, and probes after each penalty)...
    let cb_url = format!("http://{}", client_proxy.upstream("cb.default:8080"));
    let mut cb_failures = 0;
    for _ in 0..100 {
        let r = client::get(&cb_url).await.unwrap();
        if r.status != StatusCode::OK && cb_failures == 0 {
            eprintln!("first failure: {} {}", r.status, r.text());
        }
        cb_failures += usize::from(r.status != StatusCode::OK);
    }
    let bad_calls = cb_bad_calls.load(Ordering::SeqCst);
    eprintln!("circuit breaking: 100 requests, {cb_failures} failed, {bad_calls} reached the bad endpoint");
    assert!(
        bad_calls <= 12,
        "{bad_calls} requests reached the ejected endpoint"
    );
    // ... and once it recovers, it is brought back after its penalty.
    cb_bad_fails.store(false, Ordering::SeqCst);
    wait_until(WAIT, "the recovered endpoint is used again", || {
        let url = cb_url.clone();
        async move {
            let r = client::get(&url).await.ok()?;
            (r.text() == "cb-bad").then_some(())
        }
    })
    .await
    .unwrap();

    // The route families.
    let metrics = client::get(&format!("http://{}/metrics", client_proxy.admin()))
        .await
        .unwrap()
        .text();
    let overflow = ferry_testkit::metric(
        &metrics,
        "outbound_http_route_retry_overflow_total",
        &[("parent_name", "down"), ("route_name", "down-retries")],
    );
    assert!(overflow.is_some_and(|v| v > 0.0), "{metrics}");
    let teapots = ferry_testkit::metric(
        &metrics,
        "outbound_http_route_request_statuses_total",
        &[
            ("route_name", "web-routes"),
            ("http_status", "418"),
            ("error", "fault-injected"),
        ],
    );
    assert_eq!(teapots, Some(2.0), "{metrics}");
    drop(cp);
}

/// A route's retry is traced as one `CLIENT` span per attempt (docs/tracing.md): both
/// children of the caller's span, the first failed with the backend's 503, and the
/// backend sees the second attempt's span as its parent.
#[tokio::test]
async fn each_retry_attempt_of_a_traced_request_is_its_own_client_span() {
    use ferry_testkit::otlp::{hex, Collector};
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let app = {
        let (calls, seen) = (calls.clone(), seen.clone());
        TestServer::http(move |req| {
            let (calls, seen) = (calls.clone(), seen.clone());
            async move {
                let parent = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(parent);
                let mut rsp = Response::new(full("ok"));
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                rsp
            }
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let (cp, _) = control_with_routes(
        dir.path(),
        &format!(
            "workloads:\n  - name: flaky\n    instances: [{{name: flaky-0, addr: \"{}\"}}]\n\
             services:\n  - {{name: flaky, port: 8080, workloads: [flaky]}}\n",
            app.addr
        ),
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky-retries}
spec:
  parentRefs: [{group: \"\", kind: Service, name: flaky, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    retry: {codes: [503], attempts: 3}
",
        &[],
    )
    .await;
    let collector = Collector::default();
    let (otlp, _serving) = collector.serve().await;
    let client_proxy = proxy(&[
        "--upstream",
        "127.0.0.1:0=flaky.default:8080",
        "--destination-addr",
        &cp.grpc.to_string(),
        "--trace-collector",
        &otlp.to_string(),
    ])
    .await;
    let url = format!(
        "http://{}/api/vote",
        client_proxy.upstream("flaky.default:8080")
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    // The route may come a moment after the proxy is ready: until it does, a 503 is not
    // retried. Wait for a routed answer with an untraced request first.
    wait_until(WAIT, "the route to retry the 503", || async {
        calls.store(0, Ordering::SeqCst);
        let r = client::get(&url).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();
    calls.store(0, Ordering::SeqCst);
    seen.lock().unwrap().clear();
    let req = http::Request::get(&url)
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .body(Default::default())
        .unwrap();
    let r = client::send(&client::http1(), req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let attempts = wait_until(WAIT, "two client spans", || async {
        let mut spans: Vec<_> = collector
            .received()
            .into_iter()
            .filter(|s| hex(&s.span.trace_id) == trace)
            .collect();
        spans.sort_by_key(|s| s.attr("ferry.retry.attempt"));
        (spans.len() == 2).then_some(spans)
    })
    .await
    .unwrap();
    let (first, second) = (&attempts[0], &attempts[1]);
    for (span, attempt) in [(first, "1"), (second, "2")] {
        assert_eq!(hex(&span.span.parent_span_id), caller);
        assert_eq!(span.attr("ferry.retry.attempt").as_deref(), Some(attempt));
        assert_eq!(
            span.attr("ferry.route").as_deref(),
            Some("default/flaky-retries")
        );
        assert_eq!(span.attr("http.route").as_deref(), Some("/api"));
        assert_eq!(span.attr("ferry.endpoint"), Some(app.addr.to_string()));
        assert_eq!(
            span.attr("ferry.destination.workload").as_deref(),
            Some("default/flaky")
        );
    }
    assert_ne!(first.span.span_id, second.span.span_id);
    assert_eq!(
        first.attr("http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        first.span.status.as_ref().unwrap().code,
        2,
        "the first attempt failed"
    );
    assert_eq!(
        second.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(second.span.start_time_unix_nano >= first.span.end_time_unix_nano);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            format!("00-{trace}-{}-01", hex(&first.span.span_id)),
            format!("00-{trace}-{}-01", hex(&second.span.span_id)),
        ]
    );
}
