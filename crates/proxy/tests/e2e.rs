//! The proxy binary end to end, as a user runs it: two `ferry-proxy` processes in front of a
//! real server, flags as documented, addresses read from the JSON logs.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use ferry_testkit::{
    client, metric,
    process::ProxyProc,
    server::{full, TestServer},
    wait_until,
};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

#[path = "e2e/abuse.rs"]
mod abuse;
#[path = "e2e/tracing.rs"]
mod tracing;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-proxy");
const WAIT: Duration = Duration::from_secs(10);

/// Starts the binary with `extra` flags, every listener on an ephemeral loopback port.
async fn proxy(extra: &[&str]) -> ProxyProc {
    let mut args = vec!["--shutdown-grace-period", "10s"];
    args.extend_from_slice(extra);
    ProxyProc::spawn(BIN, &args).await.unwrap()
}

/// A's one upstream listener.
fn upstream_of(a: &ProxyProc) -> SocketAddr {
    *a.addrs
        .iter()
        .find(|(k, _)| k.starts_with("upstream"))
        .expect("an upstream listener")
        .1
}

/// B forwards to `app`; A's upstream listener targets B's inbound.
async fn pair(app: SocketAddr) -> (ProxyProc, ProxyProc) {
    let app = app.to_string();
    let b = proxy(&["--inbound-forward", &app]).await;
    let upstream = format!("127.0.0.1:0={}", b.inbound());
    let a = proxy(&["--upstream", &upstream]).await;
    (a, b)
}

async fn scrape(admin: SocketAddr) -> String {
    client::get(&format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_request_crosses_two_proxies_is_counted_and_a_dead_server_gets_a_labelled_error() {
    let app = TestServer::http(|_req| async { Response::new(full("pong")) }).await;
    let (mut a, mut b) = pair(app.addr).await;
    let url = format!("http://{}/ping", upstream_of(&a));

    for _ in 0..3 {
        let rsp = client::get(&url).await.unwrap();
        assert_eq!((rsp.status, rsp.text().as_str()), (StatusCode::OK, "pong"));
    }
    let up = upstream_of(&a).to_string();
    let b_in = b.inbound().to_string();
    let app_addr = app.addr.to_string();
    let want = [
        ("direction", "outbound"),
        ("authority", b_in.as_str()),
        ("status_code", "200"),
        ("classification", "success"),
    ];
    // A response is counted when its body has ended at the proxy, which may be just after
    // the client has read it.
    let admin = a.admin();
    let counted = wait_until(
        Duration::from_secs(10),
        "3 responses counted",
        move || async move {
            let a_metrics = scrape(admin).await;
            let n = metric(&a_metrics, "response_total", &want);
            (n >= Some(3.0)).then_some((n, a_metrics))
        },
    )
    .await
    .unwrap();
    assert_eq!(counted.0, Some(3.0), "{}", counted.1);
    let b_metrics = scrape(b.admin()).await;
    let want = [
        ("direction", "inbound"),
        ("authority", up.as_str()),
        ("target_addr", app_addr.as_str()),
    ];
    assert_eq!(
        metric(&b_metrics, "request_total", &want),
        Some(3.0),
        "{b_metrics}"
    );

    drop(app);
    let rsp = client::get(&url).await.unwrap();
    assert_eq!(rsp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(rsp.headers["l5d-proxy-error"], "connect-refused");
    assert_eq!(rsp.headers["ferry-proxy-error"], "connect-refused");
    assert!(
        a.proc.is_running() && b.proc.is_running(),
        "the proxies survive a dead application"
    );
    let b_metrics = scrape(b.admin()).await;
    assert_eq!(
        metric(
            &b_metrics,
            "inbound_http_errors_total",
            &[("error", "connect-refused")]
        ),
        Some(1.0)
    );

    let state: serde_json::Value = serde_json::from_str(
        &client::get(&format!("http://{}/state", a.admin()))
            .await
            .unwrap()
            .text(),
    )
    .unwrap();
    assert!(
        state["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["kind"] == "upstream" && l["target"] == b_in.as_str()),
        "{state}"
    );
    assert_eq!(
        client::get(&format!("http://{}/ready", a.admin()))
            .await
            .unwrap()
            .text(),
        "ready\n"
    );
    assert_eq!(
        client::get(&format!("http://{}/live", a.admin()))
            .await
            .unwrap()
            .text(),
        "live\n"
    );
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let app = TestServer::http(|_req| async { Response::new(full("ok")) }).await;
    let (a, b) = pair(app.addr).await;
    let url = format!("http://{}/", upstream_of(&a));
    client::get(&url).await.unwrap();
    drop(app);
    client::get(&url).await.unwrap();
    for admin in [a.admin(), b.admin()] {
        let text = scrape(admin).await;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is needed (Debian package prometheus; .ci/setup installs it)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Exit 1 is a format error. Exit 3 is lint advice only; the one piece of advice we
        // accept is about `response_latency_ms`, whose name Linkerd's dashboards rely on.
        let known_lint = "response_latency_ms metric names should not contain abbreviated units";
        let only_known_lint = out.status.code() == Some(3)
            && report
                .lines()
                .all(|l| l.trim().is_empty() || l.trim() == known_lint);
        assert!(
            out.status.success() || only_known_lint,
            "promtool rejected /metrics ({:?}): {report}\n{text}",
            out.status.code()
        );
    }
}

#[tokio::test]
async fn a_100_mb_upload_streams_without_growing_memory() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n += data.len();
            }
        }
        Response::new(full(n.to_string()))
    })
    .await;
    let (a, b) = pair(app.addr).await;
    let before = (
        rss_kib(a.proc.pid(), "VmRSS:"),
        rss_kib(b.proc.pid(), "VmRSS:"),
    );

    let url = format!("http://{}/upload", upstream_of(&a));
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let rsp = client::upload_stream(&url, chunk, 100, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.text(), (100 * 1024 * 1024).to_string());

    // Peak resident memory over the whole upload, against what each proxy held before it.
    for (who, pid, before) in [("A", a.proc.pid(), before.0), ("B", b.proc.pid(), before.1)] {
        let peak = rss_kib(pid, "VmHWM:");
        let grew = peak.saturating_sub(before);
        eprintln!("proxy {who}: rss before {before} KiB, peak {peak} KiB");
        assert!(
            grew < 16 * 1024,
            "proxy {who} grew by {grew} KiB for a 100 MiB upload"
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let app = TestServer::http(move |_req| {
        let entered_tx = entered_tx.clone();
        async move {
            let _ = entered_tx.send(()).await;
            tokio::time::sleep(Duration::from_millis(800)).await;
            Response::new(full("finished"))
        }
    })
    .await;
    let b = proxy(&["--inbound-forward", &app.addr.to_string()]).await;
    let mut b = b;
    let url = format!("http://{}/slow", b.inbound());
    let in_flight = tokio::spawn(async move { client::get(&url).await });
    tokio::time::timeout(WAIT, entered.recv())
        .await
        .expect("request reached the app");

    let pid = b.proc.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    b.proc.wait_for_log("draining", WAIT).await.unwrap();
    // New connections are refused once draining has begun.
    let refused = ferry_testkit::wait_until(WAIT, "the inbound listener to close", || async {
        tokio::net::TcpStream::connect(b.inbound())
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(refused.is_ok(), "{refused:?}");

    let rsp = in_flight.await.unwrap().unwrap();
    assert_eq!(
        (rsp.status, rsp.text().as_str()),
        (StatusCode::OK, "finished")
    );
    let status = b.proc.terminate_wait(WAIT).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// A keep-alive HTTP/1.1 connection idle between requests (on the fast path) is closed as
/// soon as the drain begins, not when its header-read timeout (10 s) would end it.
#[tokio::test]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestServer::http(|_req: Request<hyper::body::Incoming>| async {
        Response::new(full("hello"))
    })
    .await;
    let b = proxy(&["--inbound-forward", &app.addr.to_string()]).await;
    let mut conn = tokio::net::TcpStream::connect(b.inbound()).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"hello") {
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("the response within the wait")
            .unwrap();
        assert!(n > 0, "closed before the response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Idle past the idle trim (1 s), so the connection waits with its buffers given back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pid = b.proc.pid().to_string();
    let started = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
        .await
        .expect("the idle connection closed within 3 s of SIGTERM");
    assert_eq!(
        n.unwrap_or(0),
        0,
        "nothing more is sent, the connection just closes"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut b = b;
    let status = b.proc.terminate_wait(WAIT).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// The worker threads of tokio's multi-threaded scheduler (named `tokio-rt-worker`).
fn runtime_workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "tokio-rt-worker")
        .count()
}

#[tokio::test]
async fn cores_picks_the_scheduler_and_bad_values_are_refused() {
    let app = TestServer::http(|_req: Request<hyper::body::Incoming>| async {
        Response::new(full("hello"))
    })
    .await;
    let target = app.addr.to_string();
    // One core: everything on the main thread, no worker threads; two: two workers.
    for (cores, workers) in [("1", 0), ("2", 2)] {
        let p = proxy(&["--inbound-forward", &target, "--cores", cores]).await;
        let rsp = client::get(&format!("http://{}/", p.inbound()))
            .await
            .unwrap();
        assert_eq!(rsp.status, StatusCode::OK, "--cores {cores}");
        assert_eq!(runtime_workers(p.proc.pid()), workers, "--cores {cores}");
    }
    let out = std::process::Command::new(BIN)
        .args(["--cores", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cores"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue #20: HTTP/2 clients that open many streams for large responses and then stop
/// reading (their socket, and so every stream's window) hold a bounded amount of the
/// proxy's memory, and do not stall a well-behaved client whose streams share the proxy's
/// one upstream HTTP/2 connection with theirs: the starved streams are reset. Two such
/// clients, as one alone cannot hold the upstream connection's whole window.
#[tokio::test]
async fn http2_clients_that_stop_reading_hold_bounded_memory_and_stall_nobody() {
    const STREAMS: usize = 200;
    const BODY: usize = 512 * 1024;
    let big = Bytes::from(vec![b'x'; BODY]);
    let app = TestServer::http(move |_req| {
        let big = big.clone();
        async move { Response::new(full(big)) }
    })
    .await;
    let app_addr = app.addr.to_string();
    let b = proxy(&[
        "--inbound-forward",
        &app_addr,
        "--stalled-stream-timeout",
        "1s",
    ])
    .await;
    let url = format!("http://{}/big", b.inbound());
    let get = || {
        Request::get(&url)
            .version(http::Version::HTTP_2)
            .body(Default::default())
            .unwrap()
    };
    // The well-behaved client's first request opens the upstream connection.
    let good = client::h2c();
    assert_eq!(client::send(&good, get()).await.unwrap().body.len(), BODY);
    let before = rss_kib(b.proc.pid(), "VmRSS:");

    let first = stalled_h2_client(b.inbound(), &url, STREAMS).await;
    // Let the proxy fill what it will for that client: its memory stops growing.
    let mut last = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(b.proc.pid(), "VmRSS:");
        if now == last {
            break;
        }
        last = now;
    }
    let one = rss_kib(b.proc.pid(), "VmHWM:").saturating_sub(before);
    eprintln!("proxy: one stalling client grew it by {one} KiB");
    assert!(
        one < 32 * 1024,
        "a client stalling {STREAMS} streams of {BODY} B grew the proxy by {one} KiB"
    );
    let second = stalled_h2_client(b.inbound(), &url, STREAMS).await;

    // The well-behaved client keeps being answered, whole, while the others hold on.
    for i in 0..5 {
        let started = std::time::Instant::now();
        let rsp = client::send(&good, get())
            .await
            .unwrap_or_else(|e| panic!("well-behaved request {i} failed while clients stall: {e}"));
        assert_eq!(rsp.body.len(), BODY, "request {i}");
        eprintln!("well-behaved request {i}: {:?}", started.elapsed());
    }

    let peak = rss_kib(b.proc.pid(), "VmHWM:");
    let grew = peak.saturating_sub(before);
    eprintln!("proxy: rss before {before} KiB, peak {peak} KiB");
    assert!(
        grew < 64 * 1024,
        "two clients stalling {STREAMS} streams of {BODY} B each grew the proxy by {grew} KiB"
    );
    drop((first, second));
}

/// An HTTP/2 client with huge windows that sends `streams` GETs for `url`, reads every
/// response head, then never reads again (its connection is no longer polled). Returned
/// to be held.
async fn stalled_h2_client(addr: SocketAddr, url: &str, streams: usize) -> Box<dyn std::any::Any> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (h2c, conn) = h2::client::Builder::new()
        .initial_window_size(16 * 1024 * 1024)
        .initial_connection_window_size(1 << 30)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let mut conn = Box::pin(conn);
    let heads = async {
        let mut h2c = h2c;
        let mut pending = Vec::new();
        for _ in 0..streams {
            h2c = h2c.ready().await?;
            let req = http::Request::get(url).body(()).unwrap();
            pending.push(h2c.send_request(req, true)?.0);
        }
        let mut bodies = Vec::new();
        for rsp in pending {
            bodies.push(rsp.await?.into_body());
        }
        Ok::<_, h2::Error>((h2c, bodies))
    };
    let held = tokio::time::timeout(WAIT, async {
        tokio::select! {
            heads = heads => heads.unwrap(),
            ended = conn.as_mut() => panic!("stalling connection ended: {ended:?}"),
        }
    })
    .await
    .expect("every response head within 10 s");
    Box::new((held, conn))
}
