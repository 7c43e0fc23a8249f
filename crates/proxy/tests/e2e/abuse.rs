//! The abuse suite: a real HTTP/2 client library (Python's `h2`, driven by `h2_abuse.py`)
//! attacks a `ferry-proxy` process in front of a real server, while a well-behaved client
//! keeps sending requests through the same listener. Each attack asserts that it failed the
//! way docs/security.md says, that the proxy's RSS (from /proc/<pid>/status) stayed within
//! [`RSS_GROWTH_KIB`] of its level before the attack, and that every well-behaved request
//! during the attack was answered.
//!
//! `.ci/setup` installs the `h2` package; without it these tests skip, saying so, unless
//! `FERRY_REQUIRE_ATTACK_TOOLS` is set (CI sets it), when they fail.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_testkit::{client, process::ProxyProc, server::TestServer};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use serde_json::Value;

use super::{proxy, rss_kib};

/// How much the proxy's resident set may grow under any one attack (debug build).
const RSS_GROWTH_KIB: u64 = 48 * 1024;
/// The longest any attack script may run (its own loops stop at 30 s).
const ATTACK_LIMIT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/h2_abuse.py")
}

/// Whether Python's `h2` is there; panics without it when CI requires it.
fn attack_tools() -> bool {
    let mut probe = std::process::Command::new("python3");
    probe.args(["-c", "import h2, hpack, hyperframe"]);
    ferry_testkit::process::attack_tool(&mut probe, "python3 with the h2 package")
}

/// A backend that counts the requests that reached it.
struct Backend {
    server: TestServer,
    seen: Arc<AtomicUsize>,
}

async fn backend() -> Backend {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let server = TestServer::http(move |_req| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Response::new(ferry_testkit::server::full("ok")) }
    })
    .await;
    Backend { server, seen }
}

/// A proxy whose inbound side forwards to `app`, with short timeouts so slow clients are
/// cut off within the test's time.
async fn proxy_to(app: SocketAddr) -> ProxyProc {
    let app = app.to_string();
    proxy(&[
        "--inbound-forward",
        &app,
        "--header-read-timeout",
        "2s",
        "--detect-timeout",
        "2s",
    ])
    .await
}

struct Report {
    /// The script's JSON summary.
    result: Value,
    /// Peak RSS during the attack minus RSS before it, KiB.
    growth_kib: u64,
    /// Well-behaved requests answered during the attack.
    served: usize,
}

/// Runs `attack` against `target` while a well-behaved client sends `good` requests to
/// `good_url` (HTTP/1 and h2c in turn) and the proxy's RSS is sampled.
async fn under_attack(
    proxy: &ProxyProc,
    attack: &str,
    target: SocketAddr,
    count: usize,
    good_url: &str,
    versions: &[Version],
) -> Report {
    let pid = proxy.proc.pid();
    let before = rss_kib(pid, "VmRSS:");
    let mut child = tokio::process::Command::new("python3")
        .arg(script())
        .args([attack, &target.to_string(), &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read_out = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (out, err);
        let (mut o, mut e) = (String::new(), String::new());
        let _ = tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e));
        (o, e)
    });
    let (h1, h2) = (client::http1(), client::h2c());
    let started = Instant::now();
    let (mut peak, mut served, mut turn) = (before, 0, 0usize);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < ATTACK_LIMIT,
            "{attack}: the attack script did not finish"
        );
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        let version = versions[turn % versions.len()];
        let c = if version == Version::HTTP_2 { &h2 } else { &h1 };
        turn += 1;
        let req = Request::get(good_url)
            .version(version)
            .body(Full::<Bytes>::default())
            .unwrap();
        let reply = client::send(c, req).await;
        match reply {
            Ok(r) if r.status == StatusCode::OK => served += 1,
            other => panic!(
                "{attack}: a well-behaved {version:?} request failed during the attack: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    peak = peak.max(rss_kib(pid, "VmRSS:"));
    let (stdout, stderr) = read_out.await.unwrap();
    assert!(status.success(), "{attack}: the script failed: {stderr}");
    let result: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{attack}: {e}: {stdout:?}"));
    let growth_kib = peak.saturating_sub(before);
    eprintln!("{attack}: {result} | RSS {before} KiB before, peak +{growth_kib} KiB | {served} well-behaved requests served");
    assert!(
        growth_kib <= RSS_GROWTH_KIB,
        "{attack}: the proxy grew by {growth_kib} KiB (bound {RSS_GROWTH_KIB} KiB): {result}"
    );
    assert!(
        served > 0,
        "{attack}: no well-behaved request went through during the attack"
    );
    Report {
        result,
        growth_kib,
        served,
    }
}

const BOTH: &[Version] = &[Version::HTTP_11, Version::HTTP_2];

/// The GOAWAY code, or `None` when the server sent none.
fn goaway(r: &Value) -> Option<u64> {
    r["goaway"].as_u64()
}

#[tokio::test]
async fn h2_floods_are_cut_off_while_other_clients_are_served() {
    if !attack_tools() {
        return;
    }
    let app = backend().await;
    let p = proxy_to(app.server.addr).await;
    let url = format!("http://{}/good", p.inbound());

    // Rapid reset: the pending-reset limit (32) ends the connection with a GOAWAY long
    // before the 50,000 streams the attacker wanted.
    let r = under_attack(&p, "rapid-reset", p.inbound(), 50_000, &url, BOTH).await;
    let sent = r.result["sent"].as_u64().unwrap();
    assert!(
        goaway(&r.result).is_some() || r.result["closed"] == true,
        "{}",
        r.result
    );
    assert!(sent < 50_000, "rapid reset ran to completion: {}", r.result);

    // CONTINUATION flood: the header list limit (32 KiB) closes the connection after a few
    // frames, not after the 1,000 × 8 KB the attacker sent.
    let r = under_attack(&p, "continuation-flood", p.inbound(), 1_000, &url, BOTH).await;
    let frames = r.result["frames"].as_u64().unwrap();
    assert!(
        goaway(&r.result).is_some() || r.result["closed"] == true,
        "{}",
        r.result
    );
    assert!(
        frames < 1_000,
        "the flood was read to the end: {}",
        r.result
    );

    // SETTINGS and PING floods without reading the answers: memory stays bounded (the
    // assertion inside `under_attack`), whatever the server does with the connection.
    for attack in ["settings-flood", "ping-flood"] {
        under_attack(&p, attack, p.inbound(), 200_000, &url, BOTH).await;
    }

    // A header list over the limit (40 × 1 KB against 32 KiB): answered 431 by the proxy.
    let seen = app.seen.load(Ordering::Relaxed);
    let r = under_attack(&p, "oversized-headers", p.inbound(), 40, &url, BOTH).await;
    assert!(r.result["statuses"].get("431").is_some(), "{}", r.result);
    assert!(r.result["statuses"].get("200").is_none(), "{}", r.result);
    assert_eq!(app.seen.load(Ordering::Relaxed) - seen, r.served);

    // Far over it (200 × 1 KB): the connection is cut, nothing forwarded.
    let seen = app.seen.load(Ordering::Relaxed);
    let r = under_attack(&p, "oversized-headers", p.inbound(), 200, &url, BOTH).await;
    let statuses = &r.result["statuses"];
    assert!(
        statuses.get("200").is_none(),
        "an oversized header list was answered by the app: {}",
        r.result
    );
    assert!(
        statuses.get("431").is_some()
            || r.result["resets"].as_u64() > Some(0)
            || goaway(&r.result).is_some()
            || r.result["closed"] == true,
        "{}",
        r.result
    );
    // Only the well-behaved requests reached the app.
    assert_eq!(app.seen.load(Ordering::Relaxed) - seen, r.served);
    let _ = r.growth_kib;
}

/// Series cap and `/metrics` size cap for the cardinality flood, below the defaults (1024,
/// 8 MiB) so a short flood reaches both.
const MAX_SERIES: usize = 256;
const MAX_RENDER_BYTES: usize = 512 * 1024;

#[tokio::test]
async fn a_flood_of_distinct_authorities_stays_within_the_metrics_caps() {
    if !attack_tools() {
        return;
    }
    let app = backend().await;
    let app_addr = app.server.addr.to_string();
    let (series, render) = (MAX_SERIES.to_string(), MAX_RENDER_BYTES.to_string());
    let p = proxy(&[
        "--inbound-forward",
        &app_addr,
        "--metrics-max-series",
        &series,
        "--metrics-max-render-bytes",
        &render,
    ])
    .await;
    let url = format!("http://{}/good", p.inbound());
    // 600 distinct :authority values, one in ten of them 20 KB long.
    let r = under_attack(&p, "cardinality", p.inbound(), 600, &url, BOTH).await;
    assert_eq!(r.result["sent"], 600, "{}", r.result);
    assert_eq!(r.result["stalled"], false, "{}", r.result);
    let text = client::get(&format!("http://{}/metrics", p.admin()))
        .await
        .unwrap()
        .text();
    eprintln!("/metrics after the flood: {} bytes", text.len());
    // The cap is checked before each series, which is never cut in half, and the fixed
    // families (TLS, bounds, process) follow: at most one histogram series (~6 KB) and
    // those over it.
    assert!(
        text.len() <= MAX_RENDER_BYTES + 16 * 1024,
        "/metrics is {} bytes (cap {MAX_RENDER_BYTES} + 16 KiB)",
        text.len()
    );
    let skipped = ferry_testkit::metric_sum(&text, "proxy_metrics_render_skipped_series", &[]);
    assert!(skipped > 0.0, "the render cap was not reached");
    let authorities: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("request_total{") && l.contains("direction=\"inbound\""))
        .filter_map(|l| l.split("authority=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        authorities.len() <= MAX_SERIES,
        "{} inbound authorities exported (cap {MAX_SERIES})",
        authorities.len()
    );
    assert!(
        !authorities.iter().any(|a| a.len() > 253),
        "an authority over 253 bytes was exported"
    );
    let dropped = ferry_testkit::metric_sum(
        &text,
        "proxy_metrics_series_dropped_total",
        &[("direction", "inbound")],
    );
    assert!(dropped > 0.0, "600 authorities but no series dropped");
}

#[tokio::test]
async fn slowloris_is_cut_off_on_every_http_port() {
    if !attack_tools() {
        return;
    }
    let app = backend().await;
    let p = proxy_to(app.server.addr).await;
    let url = format!("http://{}/good", p.inbound());
    let ready = format!("http://{}/ready", p.admin());
    let outbound = p.addrs["outbound"];
    // 50 connections per port that never finish their request. The inbound and outbound
    // listeners cut them at the header read timeout (2 s here), the admin server at its
    // fixed 10 s, the tap server at its HTTP/2 handshake timeout.
    let (inbound, outbound, admin, tap) = tokio::join!(
        under_attack(&p, "slowloris-http1", p.inbound(), 50, &url, BOTH),
        under_attack(&p, "slowloris-http1", outbound, 50, &url, BOTH),
        under_attack(
            &p,
            "slowloris-http1",
            p.admin(),
            50,
            &ready,
            &[Version::HTTP_11]
        ),
        under_attack(&p, "slowloris-h2", p.tap(), 50, &url, BOTH),
    );
    for (port, r, bound) in [
        ("inbound", inbound, 2 + 3),
        ("outbound", outbound, 2 + 3),
        ("admin", admin, 10 + 3),
        ("tap", tap, 10 + 3),
    ] {
        assert_eq!(
            r.result["still_open"], 0,
            "{port}: slow connections held open: {}",
            r.result
        );
        let last = r.result["last_closed_after"].as_f64().unwrap();
        assert!(
            last <= f64::from(bound),
            "{port}: the last slow connection lasted {last} s (bound {bound} s)"
        );
    }
}
