//! `ferry stat` and `ferry edges` end to end: a control plane scraping real proxies
//! (web and bot calling emoji, web calling voting), known traffic, and the real CLI's
//! numbers — then the same questions answered by a real Prometheus that found the
//! proxies through the control plane's HTTP service discovery, agreeing with the
//! embedded store.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use ferry_api::stat::{StatHistory, StatRow};
use ferry_testkit::{
    client,
    process::{bin, ControlProc, Proc, ProxyProc},
    server::{full, TestServer},
    wait_until,
};
use http::{Response, StatusCode};

const WAIT: Duration = Duration::from_secs(20);
/// emoji's answer time: its p50 must land in the 30–40 ms bucket.
const EMOJI_DELAY: Duration = Duration::from_millis(35);
/// Requests per second the test sends on each edge.
const WEB_TO_EMOJI: f64 = 10.0;
const WEB_TO_VOTING: f64 = 4.0;
const BOT_TO_EMOJI: f64 = 5.0;

/// The mesh: two apps behind proxies, two client proxies, one control plane.
struct Mesh {
    _apps: Vec<TestServer>,
    proxies: Vec<(&'static str, ProxyProc)>,
    control: Proc,
    api: String,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Mesh {
    fn proxy(&self, name: &str) -> &ProxyProc {
        &self.proxies.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

async fn proxy(args: &[&str]) -> ProxyProc {
    ProxyProc::spawn(bin("ferry-proxy"), args).await.unwrap()
}

/// The workloads file: every proxy as the single instance of its deployment.
fn workloads(proxies: &[(&'static str, ProxyProc)]) -> String {
    let mut yaml = String::from("workloads:\n");
    for (name, p) in proxies {
        yaml.push_str(&format!(
            "  - name: {name}\n    serviceAccount: {name}\n    instances:\n      - {{ name: {name}-0, addr: \"{}\", adminAddr: \"{}\" }}\n",
            p.inbound(),
            p.admin()
        ));
    }
    yaml.push_str("services:\n");
    for svc in ["emoji", "voting"] {
        yaml.push_str(&format!(
            "  - {{ name: {svc}, port: 8080, workloads: [{svc}] }}\n"
        ));
    }
    yaml
}

async fn control(file: &Path, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let mut args = vec!["--scrape-interval", "1s"];
    args.extend_from_slice(extra);
    let cp = ControlProc::spawn(file, &args).await.unwrap();
    (cp.proc, cp.grpc, cp.api)
}

async fn start() -> Mesh {
    let served = Arc::new(AtomicU64::new(0));
    let emoji = TestServer::http(|_req| async {
        tokio::time::sleep(EMOJI_DELAY).await;
        Response::new(full("emoji"))
    })
    .await;
    // voting fails every other request.
    let voting = TestServer::http(move |_req| {
        let n = served.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut rsp = Response::new(full("voting"));
            if n % 2 == 1 {
                *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            rsp
        }
    })
    .await;
    let mut proxies = vec![
        (
            "emoji",
            proxy(&["--inbound-forward", &emoji.addr.to_string()]).await,
        ),
        (
            "voting",
            proxy(&["--inbound-forward", &voting.addr.to_string()]).await,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workloads.yaml");
    std::fs::write(&file, workloads(&proxies)).unwrap();
    let (control, grpc, api) = control(&file, &[]).await;
    let grpc = grpc.to_string();
    let web = proxy(&[
        "--upstream",
        "127.0.0.1:0=emoji.default:8080",
        "--upstream",
        "127.0.0.1:0=voting.default:8080",
        "--destination-addr",
        &grpc,
    ])
    .await;
    let bot = proxy(&[
        "--upstream",
        "127.0.0.1:0=emoji.default:8080",
        "--destination-addr",
        &grpc,
    ])
    .await;
    proxies.push(("web", web));
    proxies.push(("bot", bot));
    // The clients join the file live; the control plane scrapes them from then on.
    std::fs::write(&file, workloads(&proxies)).unwrap();
    let api = format!("http://{api}");
    let targets = format!("{api}/api/v1/prometheus/targets");
    wait_until(
        WAIT,
        "the control plane to list four scrape targets",
        || async {
            let body = client::get(&targets).await.ok()?.text();
            let groups: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
            (groups.len() == 4).then_some(())
        },
    )
    .await
    .unwrap();
    Mesh {
        _apps: vec![emoji, voting],
        proxies,
        control,
        api,
        file,
        _dir: dir,
    }
}

/// Sends GETs to `url` at `rps` until dropped; counts answers.
struct Load {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn load(url: String, rps: f64, sent: Arc<AtomicU64>) -> Load {
    let task = tokio::spawn(async move {
        let http = client::http1();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
            // Each request on its own task, so emoji's delay does not lower the rate.
            tokio::spawn(async move {
                let req = http::Request::get(url).body(Default::default()).unwrap();
                if client::send(&http, req).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    Load { task }
}

/// Runs the `ferry` CLI (bounded) and returns (success, stdout, stderr).
async fn ferry(args: &[&str]) -> (bool, String, String) {
    let run = tokio::process::Command::new(bin("ferry"))
        .args(args)
        .env_remove("FERRY_API_ADDR")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run)
        .await
        .expect("ferry finished")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `ferry stat ARGS -o json --api-addr API` as rows.
async fn stat(api: &str, args: &[&str]) -> Vec<StatRow> {
    let mut all = vec!["stat"];
    all.extend_from_slice(args);
    all.extend(["-o", "json", "--api-addr", api]);
    let (ok, out, err) = ferry(&all).await;
    assert!(ok, "ferry {all:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn row<'a>(rows: &'a [StatRow], name: &str) -> &'a StatRow {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}: {rows:#?}"))
}

fn within(got: Option<f64>, want: f64, tolerance: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= want * tolerance)
}

/// Every number the stat tables depend on, for one backend.
async fn check_numbers(api: &str, backend: &str) -> Vec<(String, Vec<StatRow>)> {
    let window = ["-t", "15s"];
    let inbound = stat(api, &[&["deploy"][..], &window].concat()).await;
    let emoji = row(&inbound, "emoji");
    let want = WEB_TO_EMOJI + BOT_TO_EMOJI;
    assert!(
        within(emoji.rps, want, 0.25),
        "{backend}: emoji rps {emoji:?}"
    );
    assert_eq!(emoji.success, Some(1.0), "{backend}: {emoji:?}");
    let p50 = emoji.latency_ms.p50.unwrap_or_default();
    assert!(
        (30.0..=50.0).contains(&p50),
        "{backend}: emoji p50 {p50} for a 35 ms delay"
    );
    assert_eq!((emoji.meshed.ready, emoji.meshed.total), (1, 1));
    assert!(
        emoji.tcp_connections.is_some_and(|c| c >= 1.0),
        "{backend}: {emoji:?}"
    );
    let voting = row(&inbound, "voting");
    assert!(
        within(voting.rps, WEB_TO_VOTING, 0.25),
        "{backend}: {voting:?}"
    );
    assert!(within(voting.success, 0.5, 0.1), "{backend}: {voting:?}");
    let web = row(&inbound, "web");
    assert_eq!(
        (web.rps, web.success),
        (None, None),
        "{backend}: web serves nothing"
    );

    let from_web = stat(
        api,
        &[&["deploy", "--from", "deploy/web"][..], &window].concat(),
    )
    .await;
    let names: Vec<&str> = from_web.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["emoji", "voting"], "{backend}");
    assert!(
        within(row(&from_web, "emoji").rps, WEB_TO_EMOJI, 0.25),
        "{backend}: {from_web:?}"
    );
    assert!(
        within(row(&from_web, "voting").success, 0.5, 0.1),
        "{backend}: {from_web:?}"
    );

    let to_emoji = stat(
        api,
        &[&["deploy", "--to", "deploy/emoji"][..], &window].concat(),
    )
    .await;
    let names: Vec<&str> = to_emoji.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["bot", "web"], "{backend}: one row per caller");
    assert!(
        within(row(&to_emoji, "bot").rps, BOT_TO_EMOJI, 0.25),
        "{backend}: {to_emoji:?}"
    );
    assert!(
        within(row(&to_emoji, "web").rps, WEB_TO_EMOJI, 0.25),
        "{backend}: {to_emoji:?}"
    );
    assert_eq!(row(&to_emoji, "web").success, Some(1.0));
    vec![
        ("inbound".to_string(), inbound),
        ("from web".to_string(), from_web),
        ("to emoji".to_string(), to_emoji),
    ]
}

// Two workers: the load keeps its rate while the test waits on the CLI and Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_matches_known_traffic_on_both_backends() {
    let mesh = start().await;
    let web = mesh.proxy("web");
    let bot = mesh.proxy("bot");
    let sent = [(); 3].map(|_| Arc::new(AtomicU64::new(0)));
    let _loads = [
        load(
            format!("http://{}/", web.upstream("emoji.default:8080")),
            WEB_TO_EMOJI,
            sent[0].clone(),
        ),
        load(
            format!("http://{}/", web.upstream("voting.default:8080")),
            WEB_TO_VOTING,
            sent[1].clone(),
        ),
        load(
            format!("http://{}/", bot.upstream("emoji.default:8080")),
            BOT_TO_EMOJI,
            sent[2].clone(),
        ),
    ];

    // A real Prometheus, finding the proxies through a second control plane's HTTP SD and
    // answering that control plane's stat queries; it scrapes while the embedded store does.
    let prometheus = Prometheus::start(&mesh.api).await;
    let (_prom_control, _, prom_api) =
        control(&mesh.file, &["--prometheus-url", &prometheus.url]).await;
    let prom_api = format!("http://{prom_api}");
    prometheus.wait_for_targets(4).await;
    let all_scraped = std::time::SystemTime::now();

    // A full window of steady traffic, plus scrape slack.
    tokio::time::sleep(Duration::from_secs(22)).await;
    let counts = sent.each_ref().map(|s| s.load(Ordering::Relaxed));
    eprintln!(
        "answered so far: web→emoji {}, web→voting {}, bot→emoji {}",
        counts[0], counts[1], counts[2]
    );
    assert!(
        counts.iter().all(|&n| n > 40),
        "the load is running: {counts:?}"
    );

    let embedded = check_numbers(&mesh.api, "embedded").await;
    let promql = check_numbers(&prom_api, "prometheus").await;
    for ((what, a), (_, b)) in embedded.iter().zip(&promql) {
        for ra in a {
            let rb = row(b, &ra.name);
            let pairs = [
                ("rps", ra.rps, rb.rps),
                ("success", ra.success, rb.success),
                ("p50", ra.latency_ms.p50, rb.latency_ms.p50),
            ];
            eprintln!("{what} {}: embedded vs prometheus {pairs:?}", ra.name);
            for (field, x, y) in pairs {
                let agree = match (x, y) {
                    (Some(x), Some(y)) => {
                        // Latencies of a few ms can move a bucket between scrapes.
                        let slack = if field == "p50" { 2.0 } else { 1e-9 };
                        (x - y).abs() <= x.abs().max(y.abs()) * 0.2 + slack
                    }
                    (x, y) => x == y,
                };
                assert!(
                    agree,
                    "{what} {}: {field} embedded {x:?} vs prometheus {y:?}",
                    ra.name
                );
            }
        }
    }

    // The dashboard's charts: both backends put points at the same instants and agree on
    // every point whose window Prometheus saw whole (16 s: the window and a scrape after
    // every target was up).
    let history = |api: String| async move {
        let url =
            format!("{api}/api/v1/stat/history?resource=deploy/emoji&window=15s&range=1m&step=1s");
        let body = client::get(&url).await.unwrap().text();
        serde_json::from_str::<StatHistory>(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    let (a, b) = (
        history(mesh.api.clone()).await,
        history(prom_api.clone()).await,
    );
    let newest = a.points.last().unwrap().timestamp_ms;
    let whole = all_scraped
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 16_000;
    let recent: Vec<_> = a
        .points
        .iter()
        .filter(|p| p.timestamp_ms >= whole && p.timestamp_ms + 2_000 <= newest)
        .map(|p| {
            let q = b.points.iter().find(|q| q.timestamp_ms == p.timestamp_ms);
            (p, q.expect("the same instants"))
        })
        .collect();
    assert!(recent.len() >= 2, "{a:?}");
    for (p, q) in recent {
        let want = WEB_TO_EMOJI + BOT_TO_EMOJI;
        assert!(within(p.rps, want, 0.25), "embedded history {p:?}");
        assert!(within(q.rps, want, 0.25), "prometheus history {q:?}");
        assert_eq!((p.success, q.success), (Some(1.0), Some(1.0)));
    }

    // The same numbers as tables.
    let (ok, out, err) = ferry(&["stat", "deploy", "-t", "15s", "--api-addr", &mesh.api]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let columns = [
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ];
    assert_eq!(header, columns, "{out}");
    assert!(lines[0].starts_with("NAME     MESHED   SUCCESS"), "{out}");
    let emoji_line = lines.iter().find(|l| l.starts_with("emoji ")).unwrap();
    let cells: Vec<&str> = emoji_line.split_whitespace().collect();
    assert_eq!(cells[1..3], ["1/1", "100.00%"], "{out}");
    assert!(
        cells[3].ends_with("rps") && cells[4].ends_with("ms"),
        "{out}"
    );
    let web_line = lines.iter().find(|l| l.starts_with("web ")).unwrap();
    assert_eq!(
        web_line.split_whitespace().collect::<Vec<_>>()[2..],
        ["-"; 6],
        "{out}"
    );
    let (ok, out, _) = ferry(&["stat", "deploy", "-o", "wide", "--api-addr", &mesh.api]).await;
    assert!(
        ok && out
            .lines()
            .next()
            .unwrap()
            .ends_with("READ_BYTES/SEC   WRITE_BYTES/SEC"),
        "{out}"
    );

    // Edges, from both backends.
    for api in [&mesh.api, &prom_api] {
        let (ok, out, err) = ferry(&["edges", "deploy", "-o", "json", "--api-addr", api]).await;
        assert!(ok, "{err}");
        let edges: Vec<ferry_api::stat::Edge> = serde_json::from_str(&out).unwrap();
        let pairs: Vec<(&str, &str)> = edges
            .iter()
            .map(|e| (e.src.as_str(), e.dst.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("bot", "emoji"), ("web", "emoji"), ("web", "voting")],
            "{api}"
        );
        let (ok, out, _) = ferry(&["edges", "deploy", "--api-addr", api]).await;
        assert!(
            ok && out.starts_with("SRC   DST      SRC_NS    DST_NS    SECURED"),
            "{out}"
        );
    }

    // Errors: one line, non-zero exit.
    let cases: [(&[&str], &str); 5] = [
        (
            &["stat", "deploy/nope", "--api-addr", &mesh.api],
            "deployment/nope not found in namespace default",
        ),
        (
            &[
                "stat",
                "deploy",
                "--to",
                "deploy/nope",
                "--api-addr",
                &mesh.api,
            ],
            "deployment/nope not found",
        ),
        (
            &["stat", "bogus", "--api-addr", &mesh.api],
            "unknown resource kind \"bogus\"",
        ),
        (
            &["stat", "deploy", "-t", "5s", "--api-addr", &mesh.api],
            "invalid window \"5s\"",
        ),
        (
            &["stat", "deploy", "--api-addr", "http://127.0.0.1:1"],
            "cannot reach the control plane at http://127.0.0.1:1",
        ),
    ];
    for (args, message) in cases {
        let (ok, out, err) = ferry(args).await;
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    let (ok, _, err) = ferry(&["stat", "deploy", "--output", "yaml"]).await;
    assert!(!ok && err.contains("invalid value 'yaml'"), "{err}");
    drop(mesh.control);
}

/// A Prometheus process on a free loopback port, scraping every second what the control
/// plane's HTTP SD lists; its data directory is removed on drop.
struct Prometheus {
    _proc: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(control_api: &str) -> Self {
        let port = {
            // Prometheus cannot report a port it picked itself: take a free one.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ferry-proxies\n    http_sd_configs:\n      - url: {control_api}/api/v1/prometheus/targets\n        refresh_interval: 1s\n"
            ),
        )
        .unwrap();
        let which = std::process::Command::new("sh")
            .args(["-c", "command -v prometheus"])
            .output()
            .unwrap();
        assert!(
            which.status.success(),
            "the prometheus binary is missing: run .ci/setup (Debian package `prometheus`)"
        );
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn("prometheus", &args, &[]).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        let up = wait_until(WAIT, "prometheus to be ready", || async {
            let r = client::get(&ready).await.ok()?;
            (r.status == StatusCode::OK).then_some(())
        })
        .await;
        if let Err(e) = up {
            panic!("{e}; prometheus logged:\n{}", proc.logs().join("\n"));
        }
        Self {
            _proc: proc,
            url,
            _dir: dir,
        }
    }

    async fn wait_for_targets(&self, n: usize) {
        let targets = format!("{}/api/v1/targets?state=active", self.url);
        let up = wait_until(WAIT, "prometheus to scrape every proxy", || async {
            let body = client::get(&targets).await.ok()?.text();
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let active = v["data"]["activeTargets"].as_array()?;
            let healthy = active.iter().filter(|t| t["health"] == "up").count();
            (healthy >= n).then_some(())
        })
        .await;
        if let Err(e) = up {
            let body = client::get(&targets)
                .await
                .map(|r| r.text())
                .unwrap_or_default();
            panic!("{e}: {body}");
        }
    }
}
