//! `ferry tap` and `ferry top` end to end, with real processes: an `emoji` app behind its
//! proxy, a `voting` proxy whose upstream listener calls it, `ferry-control` relaying taps
//! to both proxies' tap ports (named in the workloads file), and the real `ferry` binary.

use std::{net::SocketAddr, path::Path, time::Duration};

use ferry_testkit::{
    client,
    process::{bin, ControlProc, Proc, ProxyProc},
    server::{full, TestServer},
    wait_until,
};
use http::Response;

const WAIT: Duration = Duration::from_secs(15);

/// The emoji app: `/api/bacon` fails with 500, everything else answers `ok`.
async fn app() -> TestServer {
    TestServer::http(|req| async move {
        if req.uri().path() == "/api/bacon" {
            return Response::builder()
                .status(500)
                .body(full("no bacon"))
                .unwrap();
        }
        Response::new(full("ok"))
    })
    .await
}

/// The mesh under test, every process killed on drop.
struct Mesh {
    _emoji_app: TestServer,
    _voting_app: TestServer,
    emoji: ProxyProc,
    voting: ProxyProc,
    _control: Proc,
    api: String,
    _dir: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Self {
        Self::start_with(&[], &[]).await
    }

    /// With extra flags for the control plane and the voting proxy.
    async fn start_with(control_extra: &[&str], voting_extra: &[&str]) -> Self {
        let emoji_app = app().await;
        let voting_app = app().await;
        let emoji = ProxyProc::spawn(
            bin("ferry-proxy"),
            &["--inbound-forward", &emoji_app.addr.to_string()],
        )
        .await
        .unwrap();
        let upstream = format!("127.0.0.1:0={}", emoji.inbound());
        let voting_addr = voting_app.addr.to_string();
        let mut voting_args = vec![
            "--inbound-forward",
            &voting_addr,
            "--upstream",
            &upstream,
            "--pod-namespace",
            "emojivoto",
            "--pod-name",
            "voting-0",
        ];
        voting_args.extend(voting_extra);
        let voting = ProxyProc::spawn(bin("ferry-proxy"), &voting_args)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("workloads.yaml");
        std::fs::write(&file, workloads(&emoji, &voting)).unwrap();
        let (control, api) = control(&file, control_extra).await;
        Self {
            _emoji_app: emoji_app,
            _voting_app: voting_app,
            emoji,
            voting,
            _control: control,
            api: format!("http://{api}"),
            _dir: dir,
        }
    }

    /// Sends a GET for `path` from the voting app's side (its upstream listener).
    async fn call_emoji(&self, path: &str) -> u16 {
        let url = format!(
            "http://{}{path}",
            self.voting.upstream(&self.emoji.inbound().to_string())
        );
        client::get(&url).await.unwrap().status.as_u16()
    }

    /// Sends a GET for `path` from the voting app's side carrying credentials.
    async fn call_emoji_with_secrets(&self, path: &str) -> u16 {
        let url = format!(
            "http://{}{path}",
            self.voting.upstream(&self.emoji.inbound().to_string())
        );
        let req = http::Request::get(url)
            .header("authorization", "Bearer s3cret-token")
            .header("cookie", "session=s3cret-cookie")
            .header("user-agent", "tap-test/1")
            .body(Default::default())
            .unwrap();
        client::send(&client::http1(), req)
            .await
            .unwrap()
            .status
            .as_u16()
    }

    /// `ferry ARGS… --api-addr <this control plane>`, kept running.
    fn spawn_ferry(&self, args: &[&str]) -> Proc {
        let mut all = args.to_vec();
        all.extend(["--api-addr", &self.api]);
        Proc::spawn(bin("ferry"), &all, &[]).unwrap()
    }
}

fn workloads(emoji: &ProxyProc, voting: &ProxyProc) -> String {
    format!(
        r#"namespaces: [emojivoto]
workloads:
  - name: emoji
    namespace: emojivoto
    serviceAccount: emoji
    instances:
      - {{ name: emoji-0, addr: "{}", adminAddr: "{}", tapAddr: "{}" }}
  - name: voting
    namespace: emojivoto
    serviceAccount: voting
    instances:
      - {{ name: voting-0, addr: "{}", adminAddr: "{}", tapAddr: "{}" }}
  - name: untapped
    namespace: emojivoto
    instances:
      - {{ name: untapped-0, addr: "127.0.0.1:9" }}
  - name: dead
    namespace: emojivoto
    instances:
      - {{ name: dead-0, addr: "127.0.0.1:11", tapAddr: "127.0.0.1:9" }}
services:
  - {{ name: emoji, namespace: emojivoto, port: 8080, workloads: [emoji] }}
  - {{ name: voting, namespace: emojivoto, port: 8080, workloads: [voting] }}
"#,
        emoji.inbound(),
        emoji.admin(),
        emoji.tap(),
        voting.inbound(),
        voting.admin(),
        voting.tap(),
    )
}

async fn control(file: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let cp = ControlProc::spawn(file, extra).await.unwrap();
    (cp.proc, cp.api)
}

/// Runs `ferry` to completion (bounded): (success, stdout, stderr).
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

/// The number of active taps a proxy reports in `/state`.
async fn active_taps(proxy: &ProxyProc) -> u64 {
    let text = client::get(&format!("http://{}/state", proxy.admin()))
        .await
        .unwrap()
        .text();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["tap"]["active"].as_u64().unwrap()
}

async fn wait_taps(proxy: &ProxyProc, n: u64) {
    wait_until(WAIT, &format!("{n} active tap(s)"), || async {
        (active_taps(proxy).await == n).then_some(())
    })
    .await
    .unwrap();
}

/// The JSON events a `ferry tap -o json` process printed so far.
fn json_events(p: &Proc) -> Vec<serde_json::Value> {
    p.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("type").is_some())
        .collect()
}

#[tokio::test]
async fn tap_shows_a_request_within_a_second_and_stops_when_it_ends() {
    let mesh = Mesh::start().await;
    let mut tap = mesh.spawn_ferry(&["tap", "deploy/voting", "-n", "emojivoto", "-o", "json"]);
    wait_taps(&mesh.voting, 1).await;
    assert_eq!(
        active_taps(&mesh.emoji).await,
        0,
        "only voting's proxy is tapped"
    );

    let sent = tokio::time::Instant::now();
    assert_eq!(mesh.call_emoji("/api/bacon").await, 500);
    let events = wait_until(
        Duration::from_secs(1),
        "req, rsp and end of the request",
        || async {
            let events = json_events(&tap);
            (events.len() >= 3).then_some(events)
        },
    )
    .await
    .unwrap();
    let seen = sent.elapsed();
    assert!(seen < Duration::from_secs(1), "{seen:?}");

    let (req, rsp, end) = (&events[0], &events[1], &events[2]);
    assert_eq!(req["type"], "req");
    assert_eq!(req["method"], "GET");
    assert_eq!(req["path"], "/api/bacon");
    assert_eq!(req["proxyDirection"], "outbound");
    assert_eq!(req["tappedPod"], "voting-0");
    assert_eq!(req["source"]["labels"]["deployment"], "voting");
    assert_eq!(req["destination"]["addr"], mesh.emoji.inbound().to_string());
    assert_eq!(req["destination"]["labels"]["deployment"], "emoji");
    assert_eq!(req["tls"], "not_provided_by_service_discovery");
    assert_eq!(rsp["type"], "rsp");
    assert_eq!(rsp["id"], req["id"]);
    assert_eq!(rsp["status"], 500);
    assert!(rsp["latencyMicros"].as_u64().unwrap() > 0);
    assert_eq!(end["type"], "end");
    assert_eq!(end["responseBytes"], 8, "{end}");

    // The tapper goes away: the proxy stops tapping.
    tap.terminate(WAIT).await.unwrap();
    wait_taps(&mesh.voting, 0).await;
}

#[tokio::test]
async fn tap_prints_linkerds_lines_and_filters_by_destination_and_path() {
    let mesh = Mesh::start().await;
    // Inbound on emoji: requests arrive from voting's proxy.
    let tap = mesh.spawn_ferry(&["tap", "deploy/emoji", "-n", "emojivoto", "--path", "/api/"]);
    // Outbound on voting, only to emoji.
    let to = mesh.spawn_ferry(&[
        "tap",
        "deploy/voting",
        "-n",
        "emojivoto",
        "--to",
        "deploy/emoji",
        "--method",
        "GET",
    ]);
    wait_taps(&mesh.emoji, 1).await;
    wait_taps(&mesh.voting, 1).await;
    assert_eq!(mesh.call_emoji("/skipped").await, 200);
    assert_eq!(mesh.call_emoji("/api/bacon").await, 500);

    let end = tap.wait_for_log("end id=", WAIT).await.unwrap();
    let lines: Vec<String> = tap.logs();
    let req = lines.iter().find(|l| l.starts_with("req ")).unwrap();
    let rsp = lines.iter().find(|l| l.starts_with("rsp ")).unwrap();
    let flow = "proxy=in  src=127.0.0.1:";
    assert!(req.starts_with("req id=0:"), "{req}");
    assert!(req.contains(flow), "{req}");
    // The authority is what the app asked its upstream listener for.
    let upstream = mesh.voting.upstream(&mesh.emoji.inbound().to_string());
    let head = format!("tls=no_tls_from_remote :method=GET :authority={upstream} :path=/api/bacon");
    assert!(req.ends_with(&head), "{req}");
    assert!(rsp.contains(" :status=500 latency="), "{rsp}");
    assert!(rsp.ends_with("µs"), "{rsp}");
    assert!(
        end.contains(" duration=") && end.ends_with(" response-length=8B"),
        "{end}"
    );
    assert!(!lines.iter().any(|l| l.contains("/skipped")), "{lines:?}");

    let out = to.wait_for_log("req id=", WAIT).await.unwrap();
    assert!(out.contains("proxy=out"), "{out}");
    assert!(
        out.contains(&format!("dst={}", mesh.emoji.inbound())),
        "{out}"
    );
}

#[tokio::test]
async fn max_rps_limits_the_requests_shown() {
    let mesh = Mesh::start().await;
    let tap = mesh.spawn_ferry(&[
        "tap",
        "deploy/voting",
        "-n",
        "emojivoto",
        "-o",
        "json",
        "--max-rps",
        "2",
    ]);
    wait_taps(&mesh.voting, 1).await;
    let start = tokio::time::Instant::now();
    for _ in 0..30 {
        mesh.call_emoji("/ok").await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Every request answered; give the shown ones time to arrive, then count them.
    wait_until(WAIT, "a shown request", || async {
        (!json_events(&tap).is_empty()).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = json_events(&tap)
        .iter()
        .filter(|e| e["type"] == "req")
        .count();
    let allowed = 2 + (elapsed * 2.0).ceil() as usize;
    assert!(
        shown >= 1 && shown <= allowed,
        "{shown} shown of 30 in {elapsed:.2}s"
    );
    assert!(shown < 30);
}

#[tokio::test]
async fn limit_ends_the_tap_by_itself() {
    let mesh = Mesh::start().await;
    let mut tap = mesh.spawn_ferry(&["tap", "deploy/voting", "-n", "emojivoto", "--limit", "1"]);
    wait_taps(&mesh.voting, 1).await;
    mesh.call_emoji("/one").await;
    mesh.call_emoji("/two").await;
    let status = tap.terminate_wait(WAIT).await.unwrap();
    assert!(status.success(), "{:?}", tap.logs());
    // The exit can be seen before the last line is read from the pipe.
    tap.wait_for_log("end id=", WAIT).await.unwrap();
    let logs = tap.logs();
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert!(logs[0].contains(":path=/one"), "{logs:?}");
    wait_taps(&mesh.voting, 0).await;
}

#[tokio::test]
async fn top_prints_a_table_of_requests() {
    let mesh = Mesh::start().await;
    let api = mesh.api.clone();
    let top = tokio::spawn(async move {
        ferry(&[
            "top",
            "deploy/voting",
            "-n",
            "emojivoto",
            "--duration",
            "3s",
            "--refresh",
            "500ms",
            "--api-addr",
            &api,
        ])
        .await
    });
    wait_taps(&mesh.voting, 1).await;
    for path in ["/api/bacon", "/api/bacon", "/api/bacon", "/api/list?x=1"] {
        mesh.call_emoji(path).await;
    }
    let (ok, out, err) = top.await.unwrap();
    assert!(ok, "{err}");
    // Not a terminal: one snapshot per refresh, the last one complete.
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    let lines: Vec<&str> = last.lines().collect();
    assert!(
        lines[0].starts_with("Source    Destination  Method  Path"),
        "{last}"
    );
    assert!(
        lines[0].ends_with("Count  Best  Worst  Last  Success Rate")
            || lines[0].contains("Success Rate")
    );
    assert!(
        lines[1].starts_with("voting-0  emoji-0      GET     /api/bacon  3"),
        "{last}"
    );
    assert!(lines[1].ends_with("0.00%"), "{last}");
    assert!(
        lines[2].starts_with("voting-0  emoji-0      GET     /api/list   1"),
        "{last}"
    );
    assert!(lines[2].ends_with("100.00%"), "{last}");
    wait_taps(&mesh.voting, 0).await;
}

#[tokio::test]
async fn errors_are_one_clear_line() {
    let mesh = Mesh::start().await;
    let api = mesh.api.as_str();
    let cases: [(&[&str], &str); 7] = [
        (
            &["tap", "deploy/nope", "-n", "emojivoto", "--api-addr", api],
            "deployment/nope not found in namespace emojivoto",
        ),
        (
            &["tap", "bogus/x", "--api-addr", api],
            "unknown resource kind \"bogus\"",
        ),
        (
            &[
                "tap",
                "deploy/untapped",
                "-n",
                "emojivoto",
                "--api-addr",
                api,
            ],
            "cannot tap deployment/untapped in namespace emojivoto",
        ),
        (
            &["top", "deploy/voting", "--max-rps=-1", "--api-addr", api],
            "invalid --max-rps",
        ),
        (
            &["tap", "deploy/voting", "--api-addr", "http://127.0.0.1:9"],
            "cannot reach the control plane at http://127.0.0.1:9",
        ),
        (
            &["tap", "deploy/dead", "-n", "emojivoto", "--api-addr", api],
            "tapping emojivoto/dead-0 at 127.0.0.1:9: ",
        ),
        (
            &["top", "deploy/dead", "-n", "emojivoto", "--api-addr", api],
            "tapping emojivoto/dead-0 at 127.0.0.1:9: ",
        ),
    ];
    for (args, want) in cases {
        let (ok, out, err) = ferry(args).await;
        assert!(!ok, "{args:?} succeeded: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (ok, _, err) = ferry(&["tap", "deploy/voting", "--bogus-flag"]).await;
    assert!(!ok);
    assert!(err.contains("--bogus-flag"), "{err}");
}

/// Two proxies with identity (echo in front of an app, client calling it over mTLS) and a
/// control plane with its CA, every process killed on drop.
struct MtlsMesh {
    _control: ControlProc,
    echo: ProxyProc,
    client_proxy: ProxyProc,
    _app: TestServer,
    api: String,
    grpc: String,
    /// The client proxy's upstream URL for `echo`.
    url: String,
    identity: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl MtlsMesh {
    async fn start(control_extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("workloads.yaml");
        let identity = dir.path().join("identity");
        let mtls_workloads = |echo: &str, client: &str| {
            format!(
                "workloads:
  - {{ name: echo, serviceAccount: echo, instances: [ {echo} ] }}
  - {{ name: client, serviceAccount: client, instances: [ {client} ] }}
services:
  - {{ name: echo, port: 8080, workloads: [echo] }}
"
            )
        };
        std::fs::write(
            &file,
            mtls_workloads(
                "{ name: echo-0, addr: \"127.0.0.1:9\" }",
                "{ name: client-0, addr: \"127.0.0.1:7\" }",
            ),
        )
        .unwrap();
        let mut extra = vec![
            "--workloads-poll-interval",
            "100ms",
            "--identity-dir",
            identity.to_str().unwrap(),
        ];
        extra.extend(control_extra);
        let control = ControlProc::spawn(&file, &extra).await.unwrap();
        let (grpc, api) = (control.grpc.to_string(), format!("http://{}", control.api));
        let token = |sa: &str| identity.join("tokens/default").join(sa);
        for sa in ["echo", "client"] {
            let path = token(sa);
            wait_until(WAIT, "identity tokens", || {
                let exists = path.exists();
                async move { exists.then_some(()) }
            })
            .await
            .unwrap();
        }
        let anchors = identity.join("ca/ca-bundle.crt");
        let identity_args = |sa: &str| {
            vec![
                "--identity-addr".to_string(),
                grpc.clone(),
                "--identity-token-file".into(),
                token(sa).display().to_string(),
                "--identity-trust-anchors".into(),
                anchors.display().to_string(),
                "--service-account".into(),
                sa.into(),
            ]
        };
        let spawn = |args: Vec<String>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ProxyProc::spawn(bin("ferry-proxy"), &args).await.unwrap()
        };
        let app = app().await;
        let mut echo_args = vec!["--inbound-forward".to_string(), app.addr.to_string()];
        echo_args.extend(identity_args("echo"));
        let echo = spawn(echo_args).await;
        let mut client_args = vec![
            "--upstream".to_string(),
            "127.0.0.1:0=echo.default:8080".into(),
            "--destination-addr".into(),
            grpc.clone(),
        ];
        client_args.extend(identity_args("client"));
        let client_proxy = spawn(client_args).await;
        std::fs::write(
            &file,
            mtls_workloads(
                &format!(
                    "{{ name: echo-0, addr: \"{}\", tapAddr: \"{}\" }}",
                    echo.inbound(),
                    echo.tap()
                ),
                &format!(
                    "{{ name: client-0, addr: \"{}\", tapAddr: \"{}\" }}",
                    client_proxy.inbound(),
                    client_proxy.tap()
                ),
            ),
        )
        .unwrap();
        let url = format!("http://{}/mtls", client_proxy.upstream("echo.default:8080"));
        wait_until(WAIT, "a request over mTLS", || {
            let url = url.clone();
            async move { (client::get(&url).await.ok()?.status == 200).then_some(()) }
        })
        .await
        .unwrap();
        Self {
            _control: control,
            echo,
            client_proxy,
            _app: app,
            api,
            grpc,
            url,
            identity,
            _dir: dir,
        }
    }
}

/// With identity on, the hop between the proxies is mTLS: inbound events name the client's
/// identity, outbound events the server's, and both say `tls: true`. The relay reaches
/// both proxies' tap servers over mTLS as the control plane.
#[tokio::test]
async fn tap_over_mtls_names_both_identities() {
    let mesh = MtlsMesh::start(&[]).await;
    let (echo, client_proxy, api, url) = (&mesh.echo, &mesh.client_proxy, &mesh.api, &mesh.url);
    let tap = |res: &str| {
        let args = ["tap", res, "-o", "json", "--limit", "1", "--api-addr", api];
        Proc::spawn(bin("ferry"), &args, &[]).unwrap()
    };
    let (server_side, client_side) = (tap("deploy/echo"), tap("deploy/client"));
    wait_taps(echo, 1).await;
    wait_taps(client_proxy, 1).await;
    assert_eq!(client::get(url).await.unwrap().status, 200);
    let first = |p: &Proc| {
        let p_events = json_events(p);
        async move { p_events.into_iter().find(|e| e["type"] == "req") }
    };
    let inbound = wait_until(WAIT, "the inbound event", || first(&server_side))
        .await
        .unwrap();
    assert_eq!(inbound["proxyDirection"], "inbound");
    assert_eq!(inbound["tls"], "true", "{inbound}");
    assert_eq!(
        inbound["clientId"],
        "client.default.serviceaccount.identity.ferry.cluster.local"
    );
    // The identity names the caller's workload, though its address is an ephemeral port.
    assert_eq!(
        inbound["source"]["labels"]["deployment"], "client",
        "{inbound}"
    );
    assert_eq!(inbound["source"]["labels"]["serviceaccount"], "client");
    let outbound = wait_until(WAIT, "the outbound event", || first(&client_side))
        .await
        .unwrap();
    assert_eq!(outbound["proxyDirection"], "outbound");
    assert_eq!(outbound["tls"], "true", "{outbound}");
    assert_eq!(
        outbound["serverId"],
        "echo.default.serviceaccount.identity.ferry.cluster.local"
    );
    assert_eq!(outbound["destination"]["labels"]["deployment"], "echo");
    drop(mesh);
}

/// The value of header `name` in a JSON tap event.
fn header(event: &serde_json::Value, name: &str) -> Option<String> {
    event["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
        .map(str::to_owned)
}

/// `Authorization` and `Cookie` of `req` are redacted, and no line `tap` printed holds the
/// secrets the requests carried (`s3cret…`).
fn assert_credentials_redacted(tap: &Proc, req: &serde_json::Value) {
    assert_eq!(
        header(req, "authorization").as_deref(),
        Some("[redacted]"),
        "{req}"
    );
    assert_eq!(
        header(req, "cookie").as_deref(),
        Some("[redacted]"),
        "{req}"
    );
    assert!(
        tap.logs().iter().all(|l| !l.contains("s3cret")),
        "{:?}",
        tap.logs()
    );
}

/// The first `req` event a `ferry tap -o json` printed, waited for.
async fn first_req(p: &Proc) -> serde_json::Value {
    wait_until(WAIT, "a req event", || {
        let e = json_events(p).into_iter().find(|e| e["type"] == "req");
        async move { e }
    })
    .await
    .unwrap()
}

/// Header values are redacted by default (through the real CLI → control plane → proxy
/// path), unredacted only when the control plane allows it; taps are capped per proxy
/// (`RESOURCE_EXHAUSTED`) and per control plane (429).
#[tokio::test]
async fn headers_are_redacted_unless_allowed_and_taps_are_capped() {
    let mesh = Mesh::start_with(
        &[
            "--tap-allow-unredacted-headers",
            "--tap-max-concurrent",
            "2",
        ],
        &["--tap-max-concurrent", "1"],
    )
    .await;
    let tap = mesh.spawn_ferry(&["tap", "deploy/voting", "-n", "emojivoto", "-o", "json"]);
    wait_taps(&mesh.voting, 1).await;

    // The proxy's cap: a second tap of voting is refused, with the reason.
    let (ok, out, err) = ferry(&[
        "tap",
        "deploy/voting",
        "-n",
        "emojivoto",
        "--api-addr",
        &mesh.api,
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(err.contains("ResourceExhausted"), "{err}");
    assert!(err.contains("already runs 1 taps"), "{err}");
    assert!(err.contains("--tap-max-concurrent"), "{err}");
    let metrics = client::get(&format!("http://{}/metrics", mesh.voting.admin()))
        .await
        .unwrap()
        .text();
    assert_eq!(
        ferry_testkit::metric(
            &metrics,
            "proxy_tap_refused_total",
            &[("reason", "too_many_taps")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // The control plane's cap: 2 relayed at once, the third is refused.
    let _emoji_tap = mesh.spawn_ferry(&["tap", "deploy/emoji", "-n", "emojivoto"]);
    wait_taps(&mesh.emoji, 1).await;
    let (ok, _, err) = ferry(&[
        "tap",
        "deploy/emoji",
        "-n",
        "emojivoto",
        "--api-addr",
        &mesh.api,
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("already relays 2 taps"), "{err}");

    // Redacted by default: the credentials never reach the tapper.
    assert_eq!(mesh.call_emoji_with_secrets("/secret").await, 200);
    let req = first_req(&tap).await;
    assert_eq!(
        header(&req, "user-agent").as_deref(),
        Some("tap-test/1"),
        "{req}"
    );
    assert_credentials_redacted(&tap, &req);
    drop(tap);
    wait_taps(&mesh.voting, 0).await;

    // Asked for and allowed: unredacted.
    let shown = mesh.spawn_ferry(&[
        "tap",
        "deploy/voting",
        "-n",
        "emojivoto",
        "-o",
        "json",
        "--show-headers",
    ]);
    wait_taps(&mesh.voting, 1).await;
    assert_eq!(mesh.call_emoji_with_secrets("/secret").await, 200);
    let req = first_req(&shown).await;
    assert_eq!(
        header(&req, "authorization").as_deref(),
        Some("Bearer s3cret-token"),
        "{req}"
    );
}

const ECHO_ID: &str = "echo.default.serviceaccount.identity.ferry.cluster.local";
const CLIENT_ID: &str = "client.default.serviceaccount.identity.ferry.cluster.local";
const CONTROL_ID: &str = "ferry-control.ferry.serviceaccount.identity.ferry.cluster.local";

/// A certificate for the `client` service account from the mesh's own CA, through
/// `Identity/Certify` with that account's token: a valid mesh identity that is not the
/// control plane's.
async fn certify_client(
    mesh: &MtlsMesh,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use linkerd2_proxy_api::identity::{identity_client::IdentityClient, CertifyRequest};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(vec![CLIENT_ID.to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let token = std::fs::read(mesh.identity.join("tokens/default/client")).unwrap();
    // The control plane's gRPC port speaks TLS with its own identity.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.grpc))
        .unwrap()
        .connect_with_connector(TlsDial(
            tls_client(mesh, None),
            mesh.grpc.parse().unwrap(),
            CONTROL_ID,
        ))
        .await
        .unwrap();
    let mut identity = IdentityClient::new(channel);
    let rsp = identity
        .certify(CertifyRequest {
            identity: CLIENT_ID.into(),
            token: String::from_utf8(token).unwrap().trim().as_bytes().to_vec(),
            certificate_signing_request: csr.der().to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut chain = vec![rsp.leaf_certificate.into()];
    chain.extend(rsp.intermediate_certificates.into_iter().map(Into::into));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (chain, key)
}

/// A TLS 1.3 client trusting the mesh's anchors, presenting `cert` when given.
fn tls_client(
    mesh: &MtlsMesh,
    cert: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(mesh.identity.join("ca/ca-bundle.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem) {
        roots.add(der.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    std::sync::Arc::new(match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Dials `addr` over TLS for tonic, requiring the server to be the given identity.
#[derive(Clone)]
struct TlsDial(
    std::sync::Arc<rustls::ClientConfig>,
    SocketAddr,
    &'static str,
);

impl tonic::codegen::Service<http::Uri> for TlsDial {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        let TlsDial(config, addr, name) = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Calls `Observe` on `addr` over TLS with `config` (plaintext when `None`): the status of
/// the call, `Ok` when the tap started.
async fn observe(
    config: Option<std::sync::Arc<rustls::ClientConfig>>,
    addr: SocketAddr,
) -> Result<(), tonic::Status> {
    use linkerd2_proxy_api::tap::{tap_client::TapClient, ObserveRequest};
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(WAIT);
    let channel = match config {
        Some(config) => {
            endpoint
                .connect_with_connector(TlsDial(config, addr, ECHO_ID))
                .await
        }
        None => endpoint.connect().await,
    }
    .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let mut tap = TapClient::new(channel);
    let call = tap.observe(ObserveRequest::default());
    tokio::time::timeout(WAIT, call)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer"))?
        .map(|_| ())
}

/// Only the control plane's identity may tap a proxy with identity: another valid mesh
/// identity gets `PERMISSION_DENIED` naming who may; a client without a certificate, or in
/// plaintext, does not get through the handshake. Each refusal is counted.
#[tokio::test]
async fn only_the_control_planes_identity_may_tap() {
    let mesh = MtlsMesh::start(&[]).await;
    let tap_addr = mesh.echo.tap();

    let other = tls_client(&mesh, Some(certify_client(&mesh).await));
    let denied = observe(Some(other), tap_addr).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains(CLIENT_ID), "{denied:?}");
    assert!(denied.message().contains("may not tap"), "{denied:?}");
    assert!(denied.message().contains(CONTROL_ID), "{denied:?}");

    let anonymous = observe(Some(tls_client(&mesh, None)), tap_addr)
        .await
        .unwrap_err();
    assert_ne!(
        anonymous.code(),
        tonic::Code::PermissionDenied,
        "{anonymous:?}"
    );
    let plaintext = observe(None, tap_addr).await.unwrap_err();
    assert_ne!(
        plaintext.code(),
        tonic::Code::PermissionDenied,
        "{plaintext:?}"
    );
    assert_eq!(active_taps(&mesh.echo).await, 0);

    let metrics = wait_until(WAIT, "the refusals counted", || async {
        let text = client::get(&format!("http://{}/metrics", mesh.echo.admin()))
            .await
            .ok()?
            .text();
        let n = |reason| {
            ferry_testkit::metric(&text, "proxy_tap_refused_total", &[("reason", reason)])
                .unwrap_or(0.0)
        };
        (n("unauthorized") == 1.0 && n("tls_handshake") >= 2.0).then_some(text)
    })
    .await
    .unwrap();
    assert!(metrics.contains("proxy_tap_active 0"), "{metrics}");

    // The control plane itself still taps, over mTLS, and never shows credentials unless
    // allowed: `--show-headers` is refused by default.
    let api = mesh.api.as_str();
    let (ok, _, err) = ferry(&["tap", "deploy/echo", "--show-headers", "--api-addr", api]).await;
    assert!(!ok);
    assert!(err.contains("--tap-allow-unredacted-headers"), "{err}");
    let tap = Proc::spawn(
        bin("ferry"),
        &["tap", "deploy/echo", "-o", "json", "--api-addr", api],
        &[],
    )
    .unwrap();
    wait_taps(&mesh.echo, 1).await;
    let req = http::Request::get(&mesh.url)
        .header("authorization", "Bearer s3cret-token")
        .header("cookie", "session=s3cret-cookie")
        .body(Default::default())
        .unwrap();
    assert_eq!(
        client::send(&client::http1(), req).await.unwrap().status,
        200
    );
    let req = first_req(&tap).await;
    assert_eq!(req["tls"], "true", "{req}");
    assert_credentials_redacted(&tap, &req);
}
