//! The `ferry-control` binary as a user runs it: flags, logs, both listeners, SIGTERM,
//! a restart that proxies resubscribe to, and the injector webhook as `ferry install` runs it.

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/webhook.rs"]
mod webhook;

use std::net::SocketAddr;
use std::time::Duration;

use ferry_testkit::{client, process::Proc};
use fixture::{echo, within, WorkloadsFile};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use tonic::transport::Channel;

/// How long the binary may take to start or stop.
const PROCESS: Duration = Duration::from_secs(10);

/// Starts `ferry-control` on `file` (killed on drop), logging JSON so its addresses can be read.
fn spawn(file: &WorkloadsFile, grpc: SocketAddr) -> Proc {
    let grpc = format!("--grpc-listen={grpc}");
    let path = file.path().to_str().expect("a UTF-8 path").to_string();
    let args = [
        grpc.as_str(),
        "--api-listen=127.0.0.1:0",
        "--trace-listen=127.0.0.1:0",
        "--discovery=file",
        "--workloads-file",
        path.as_str(),
        "--log-format=json",
        "--log=info",
    ];
    Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &[]).expect("spawning ferry-control")
}

/// `GET path` on the JSON API: the status and the decoded body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let reply = client::get(&format!("http://{addr}{path}"))
        .await
        .expect("an API response");
    (
        reply.status.as_u16(),
        serde_json::from_slice(&reply.body).expect("a JSON body"),
    )
}

fn request(path: &str) -> pb::GetDestination {
    pb::GetDestination {
        path: path.to_string(),
        context_token: ferry_api::destination::context_token("default", "n", "client-0"),
        ..Default::default()
    }
}

fn add_ports(update: Option<pb::Update>) -> Vec<u16> {
    match update.and_then(|u| u.update) {
        Some(pb::update::Update::Add(set)) => {
            let mut ports: Vec<u16> = set
                .addrs
                .iter()
                .map(|a| SocketAddr::try_from(a.addr.unwrap()).unwrap().port())
                .collect();
            ports.sort();
            ports
        }
        other => panic!("expected add, got {other:?}"),
    }
}

#[tokio::test]
async fn serves_logs_and_restarts_where_proxies_expect_it() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    let mut control = spawn(&file, "127.0.0.1:0".parse().unwrap());
    let bound = control.bound_addrs(2, PROCESS).await.unwrap();
    let (grpc, api) = (bound["grpc"], bound["api"]);

    let (status, health) = http_get(api, "/api/v1/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, endpoints) = http_get(api, "/api/v1/endpoints?authority=echo.default:8080").await;
    assert_eq!(status, 200);
    assert_eq!(endpoints["endpoints"].as_array().map(Vec::len), Some(2));

    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_lazy();
    let mut client = DestinationClient::new(channel);
    let mut stream = client
        .get(request("echo.default:8080"))
        .await
        .unwrap()
        .into_inner();
    let first = within(PROCESS, "the first update", stream.message())
        .await
        .unwrap();
    assert_eq!(add_ports(first), [17101, 17102]);

    // A bad edit is reported, not applied.
    file.write("workloads: [");
    let line = control
        .wait_for_log("rejected workloads file edit", PROCESS)
        .await
        .unwrap();
    assert!(line.contains("at line 2"), "the log says where: {line}");

    // SIGTERM ends open streams and exits cleanly.
    let status = control.terminate(PROCESS).await.unwrap();
    assert!(
        status.success(),
        "exit status {status}; logged:\n{}",
        control.logs().join("\n")
    );
    let ended = within(PROCESS, "the stream to end", stream.message()).await;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "stream kept going: {ended:?}"
    );

    // Restarted on the same port with an edited file, it serves resubscribers in full.
    file.write(&echo(&[("echo-1", 17102), ("echo-2", 17103)]));
    let control = spawn(&file, grpc);
    control.bound_addrs(2, PROCESS).await.unwrap();
    let mut stream = client
        .get(request("echo.default:8080"))
        .await
        .unwrap()
        .into_inner();
    let first = within(PROCESS, "the first update", stream.message())
        .await
        .unwrap();
    assert_eq!(add_ports(first), [17102, 17103]);
}

#[tokio::test]
async fn an_invalid_file_at_start_exits_with_the_reason() {
    let file = WorkloadsFile::new("services: [{name: s, port: 80, workloads: [ghost]}]");
    let mut control = spawn(&file, "127.0.0.1:0".parse().unwrap());
    let status = control.terminate_wait(PROCESS).await.unwrap();
    assert!(!status.success());
    let line = control
        .wait_for_log("backed by workload", PROCESS)
        .await
        .unwrap();
    assert!(line.contains("ghost") && line.contains("ERROR"), "{line}");
}

#[tokio::test]
async fn the_injector_runs_from_the_settings_install_passes() {
    let fake = ferry_testkit::kube_api::FakeKubeApi::emojivoto().await;
    let kubeconfig = fake.kubeconfig().display().to_string();
    let pair = webhook::ServingPair::new();
    let identity = tempfile::tempdir().unwrap();
    let cert = pair.cert_file.to_str().unwrap().to_string();
    let key = pair.key_file.to_str().unwrap().to_string();
    let id_dir = identity.path().to_str().unwrap().to_string();
    let args = [
        "--grpc-listen=127.0.0.1:0",
        "--api-listen=127.0.0.1:0",
        "--trace-listen=127.0.0.1:0",
        "--identity-dir",
        id_dir.as_str(),
        "--log-format=json",
    ];
    // As the Deployment `ferry install` renders sets them: environment, not flags.
    let envs = [
        (ferry_api::env::CONTROL_DISCOVERY, "kubernetes"),
        (ferry_api::env::CONTROL_KUBECONFIG, kubeconfig.as_str()),
        (ferry_api::env::CONTROL_INJECTOR_LISTEN, "127.0.0.1:0"),
        (
            ferry_api::env::CONTROL_INJECTOR_TLS_CERT_FILE,
            cert.as_str(),
        ),
        (ferry_api::env::CONTROL_INJECTOR_TLS_KEY_FILE, key.as_str()),
        (
            ferry_api::env::CONTROL_PROXY_IMAGE,
            "registry.example/ferry-proxy",
        ),
        (ferry_api::env::CONTROL_PROXY_VERSION, "v7"),
        (ferry_api::env::CONTROL_NAMESPACE, "mesh"),
        (ferry_api::env::CONTROL_TRUST_DOMAIN, "example.org"),
    ];
    let control = Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &envs)
        .expect("spawning ferry-control");
    let bound = control.bound_addrs(3, PROCESS).await.unwrap();

    let review = webhook::recorded("replicaset-pods/01-emoji-68947b65f4.request.json");
    let (status, answer) = webhook::post(
        bound["injector"],
        &pair,
        "/inject?timeout=10s",
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    let pod = webhook::apply(response, &review["request"]["object"]);
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["image"], "registry.example/ferry-proxy:v7");
    let env = |name: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
            .unwrap_or_else(|| panic!("{name} not set: {proxy}"))
    };
    assert_eq!(
        env(ferry_api::env::PROXY_DESTINATION_ADDR),
        "ferry-control.mesh.svc.cluster.local:8086"
    );
    assert_eq!(env(ferry_api::env::PROXY_TRUST_DOMAIN), "example.org");
    // The control plane's identity in its namespace: what the proxy's gRPC to it must
    // prove and the one identity allowed to tap; with identity the tap port is mTLS-only.
    let control_id = "ferry-control.mesh.serviceaccount.identity.ferry.example.org";
    assert_eq!(
        env(ferry_api::env::PROXY_CONTROL_PLANE_IDENTITY),
        control_id
    );
    assert_eq!(
        env(ferry_api::env::PROXY_TAP_AUTHORIZED_IDENTITY),
        control_id
    );
    assert_eq!(env(ferry_api::env::PROXY_TAP_LISTEN), "0.0.0.0:4190");
    // Injected proxies trust the control plane's own anchors.
    let anchors = std::fs::read_to_string(identity.path().join("ca/ca-bundle.crt")).unwrap();
    assert_eq!(
        env(ferry_api::env::PROXY_IDENTITY_TRUST_ANCHORS),
        anchors.as_str()
    );
}

#[tokio::test]
async fn runs_on_kubernetes_from_a_kubeconfig_with_tokenreview() {
    let fake = ferry_testkit::kube_api::FakeKubeApi::emojivoto().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!("--kubeconfig={}", fake.kubeconfig().display());
    let identity = format!("--identity-dir={}", dir.path().display());
    let args = [
        "--grpc-listen=127.0.0.1:0",
        "--api-listen=127.0.0.1:0",
        "--trace-listen=127.0.0.1:0",
        "--discovery=kubernetes",
        kubeconfig.as_str(),
        identity.as_str(),
        "--log-format=json",
        "--log=info",
    ];
    let control = Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &[])
        .expect("spawning ferry-control");
    let bound = control.bound_addrs(2, PROCESS).await.unwrap();
    let path = "/api/v1/endpoints?authority=web-svc.emojivoto.svc.cluster.local:80";
    let (status, endpoints) = http_get(bound["api"], path).await;
    assert_eq!(status, 200, "{endpoints}");
    assert_eq!(
        endpoints["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{endpoints}"
    );
    let (_, identity) = http_get(bound["api"], "/api/v1/identity").await;
    assert_eq!(
        identity["trustDomain"].as_str(),
        Some("cluster.local"),
        "{identity}"
    );
    // TokenReview mode writes no local tokens.
    assert!(!dir.path().join("tokens").exists());
    assert!(fake.requests("GET /api/v1/pods") >= 1);
}

/// Starts `ferry-control` on `file` with loopback listeners and `extra` flags; returns it
/// with its gRPC and API addresses.
async fn spawn_with(file: &WorkloadsFile, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let path = file.path().to_str().expect("a UTF-8 path").to_string();
    let mut args = vec![
        "--grpc-listen=127.0.0.1:0",
        "--api-listen=127.0.0.1:0",
        "--trace-listen=127.0.0.1:0",
        "--discovery=file",
        "--workloads-file",
        path.as_str(),
        "--log-format=json",
        "--log=info",
    ];
    args.extend_from_slice(extra);
    let control = Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &[])
        .expect("spawning ferry-control");
    let bound = control.bound_addrs(2, PROCESS).await.unwrap();
    let (grpc, api) = (bound["grpc"], bound["api"]);
    (control, grpc, api)
}

/// Sends `head` (a whole request head) on a new connection and reads until the server
/// closes or `limit` passes: what it answered.
async fn raw_exchange(addr: SocketAddr, head: impl AsRef<str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_ref().as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head and as much body as arrives within a moment (streams never end).
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17111)]));
    let (_control, _grpc, api) = spawn_with(&file, &["--api-header-read-timeout=1s"]).await;

    // A client that dribbles a header line every 100 ms never finishes its head.
    let mut slow = tokio::net::TcpStream::connect(api).await.unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let dribble = async {
        for i in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    // Meanwhile a well-behaved client is served.
    let served = async {
        let (status, health) = http_get(api, "/api/v1/health").await;
        assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    };
    tokio::join!(dribble, served);
    // The server hung up on the slow client: at most the timeout (plus scheduling) after
    // it started, well before the 6 s it kept dribbling.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), slow.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the slow connection was still open after {:?}",
        started.elapsed()
    );
    let answered = String::from_utf8_lossy(&rest);
    assert!(
        !answered.contains("200 OK"),
        "a head never finished was answered: {answered}"
    );
}

#[tokio::test]
async fn event_streams_and_bodies_are_capped_with_clear_answers() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17121)]));
    let (_control, _grpc, api) = spawn_with(
        &file,
        &["--api-max-sse-clients=1", "--api-max-body-bytes=1024"],
    )
    .await;
    let stream = format!(
        "GET {}?kind=deploy HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        ferry_api::stat::STAT_STREAM_PATH
    );
    // The first stream holds the only place...
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = tokio::net::TcpStream::connect(api).await.unwrap();
    first.write_all(stream.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = within(PROCESS, "the first stream's head", first.read(&mut buf))
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // ...so a second is refused, saying why.
    let second = raw_exchange(api, &stream).await;
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(second.contains("--api-max-sse-clients"), "{second}");
    assert!(
        second.contains("Retry-After") || second.contains("retry-after"),
        "{second}"
    );
    // Plain requests are not streams and still served.
    let (status, _) = http_get(api, "/api/v1/health").await;
    assert_eq!(status, 200);
    // Once the first stream is closed, its place is free again.
    drop(first);
    ferry_testkit::wait_until(PROCESS, "a stream's place to be freed", || async {
        let again = raw_exchange(api, &stream).await;
        again.starts_with("HTTP/1.1 200").then_some(())
    })
    .await
    .unwrap();
    // A body over the limit is refused before it is read.
    let big = raw_exchange(
        api,
        "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    )
    .await;
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    assert!(big.contains("--api-max-body-bytes"), "{big}");
}

#[tokio::test]
async fn api_connections_beyond_the_cap_wait_for_a_place() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17131)]));
    let (_control, _grpc, api) = spawn_with(&file, &["--api-max-connections=2"]).await;
    // Two idle connections hold both places.
    let idle_a = tokio::net::TcpStream::connect(api).await.unwrap();
    let _idle_b = tokio::net::TcpStream::connect(api).await.unwrap();
    let health = "GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // A third is not served while both are held...
    let third = raw_exchange(api, health).await;
    assert!(third.is_empty(), "served beyond the cap: {third}");
    // ...and is once one of them closes.
    drop(idle_a);
    ferry_testkit::wait_until(PROCESS, "a connection's place to be freed", || async {
        let again = raw_exchange(api, health).await;
        again.starts_with("HTTP/1.1 200").then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_token_file_makes_every_route_require_the_bearer_token() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17141)]));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("state/api-token");
    let flag = format!("--api-token-file={}", token_file.display());
    let (_control, _grpc, api) = spawn_with(&file, &[flag.as_str()]).await;
    // Generated on first start, readable by the owner only.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let ask = |credential: Option<String>| {
        let header = credential
            .map(|c| format!("Authorization: {c}\r\n"))
            .unwrap_or_default();
        raw_exchange(
            api,
            format!("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"),
        )
    };
    let none = ask(None).await;
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(
        none.to_lowercase().contains("www-authenticate: bearer"),
        "{none}"
    );
    assert!(none.contains("Authorization: Bearer"), "{none}");
    let wrong = ask(Some(format!("Bearer {}", "0".repeat(64)))).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(
        wrong.contains("not this control plane's API token"),
        "{wrong}"
    );
    let basic = ask(Some("Basic YTpi".to_string())).await;
    assert!(basic.starts_with("HTTP/1.1 401"), "{basic}");
    let right = ask(Some(format!("Bearer {token}"))).await;
    assert!(right.starts_with("HTTP/1.1 200"), "{right}");
    // The traces routes are read routes like the others.
    for path in [
        "/api/v1/traces",
        "/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736",
    ] {
        let get = |header: String| {
            raw_exchange(
                api,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n"),
            )
        };
        let refused = get(String::new()).await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
        let let_in = get(format!("Authorization: Bearer {token}\r\n")).await;
        assert!(!let_in.starts_with("HTTP/1.1 401"), "{path}: {let_in}");
    }

    // The CLI sends the token of --api-token-file.
    let cli = |with_token: bool| {
        let mut cmd = std::process::Command::new(ferry_testkit::process::bin("ferry"));
        cmd.args(["version", "--api-addr", &format!("http://{api}")]);
        if with_token {
            cmd.args(["--api-token-file", token_file.to_str().unwrap()]);
        }
        cmd.output().unwrap()
    };
    let said = |out: std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let refused = said(cli(false));
    assert!(refused.contains("401"), "{refused}");
    let allowed = said(cli(true));
    assert!(
        allowed.contains("Server version: ") && !allowed.contains("unavailable"),
        "{allowed}"
    );
}

#[tokio::test]
async fn grpc_streams_per_connection_and_message_sizes_are_capped() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17151)]));
    let (_control, grpc, _api) = spawn_with(
        &file,
        &[
            "--grpc-max-concurrent-streams=2",
            "--grpc-max-message-bytes=1024",
        ],
    )
    .await;
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DestinationClient::new(channel);
    // Two streams on one connection fill it...
    let mut first = client
        .get(request("echo.default:8080"))
        .await
        .unwrap()
        .into_inner();
    let mut second = client
        .get(request("echo.default:8080"))
        .await
        .unwrap()
        .into_inner();
    for stream in [&mut first, &mut second] {
        let update = within(PROCESS, "an update", stream.message()).await;
        assert_eq!(add_ports(update.unwrap()), [17151]);
    }
    // ...so a third waits for a place (the server advertised the limit)...
    let mut waiting = client.clone();
    let third = tokio::spawn(async move { waiting.get(request("echo.default:8080")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third stream was opened beyond the cap"
    );
    // ...and gets one when a stream ends.
    drop(first);
    let mut third = within(PROCESS, "the third stream", third)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let update = within(PROCESS, "an update", third.message()).await;
    assert_eq!(add_ports(update.unwrap()), [17151]);

    // A request message over the limit is refused with the reason.
    let huge = pb::GetDestination {
        path: format!("{}.default.svc.cluster.local:8080", "a".repeat(2000)),
        ..request("x")
    };
    drop(second);
    let refused = within(PROCESS, "the oversized request", client.get(huge))
        .await
        .expect_err("an oversized message is refused");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{refused:?}"
    );
    assert!(refused.message().contains("too large"), "{refused:?}");
}

/// One HTTP/2 frame: `kind`, `flags`, `stream`, `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A connection preface, then `n` streams each opened (a `Get` request head) and reset
/// (`CANCEL`) straight away, all in one write: the server reads every reset before it could
/// accept the streams, as in the HTTP/2 rapid reset attack.
fn rapid_resets(authority: &str, n: u32) -> Vec<u8> {
    // HPACK, without Huffman: indexed `:method: POST` (3) and `:scheme: http` (6), then
    // literals without indexing for `:path` (name 4), `:authority` (name 1), content-type.
    let literal = |name_index: u8, value: &str| {
        let mut out = vec![name_index, u8::try_from(value.len()).unwrap()];
        out.extend_from_slice(value.as_bytes());
        out
    };
    let mut head = vec![0x83, 0x86];
    head.extend(literal(4, "/io.linkerd.proxy.destination.Destination/Get"));
    head.extend(literal(1, authority));
    head.extend([0x00, 12]);
    head.extend_from_slice(b"content-type");
    head.push(16);
    head.extend_from_slice(b"application/grpc");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    for i in 0..n {
        let stream = 2 * i + 1;
        out.extend(frame(0x1, 0x4, stream, &head));
        out.extend(frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    out
}

/// Sends `n` rapid resets on a new connection and reads frames until the server closes it
/// or it has been quiet a while: the GOAWAY's error code, if one came.
async fn goaway_after_rapid_resets(grpc: SocketAddr, n: u32) -> Option<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(grpc).await.unwrap();
    conn.write_all(&rapid_resets(&grpc.to_string(), n))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Frames read so far: a GOAWAY (type 7) carries its error code after the last
        // stream id.
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = usize::from(buf[at]) << 16
                | usize::from(buf[at + 1]) << 8
                | usize::from(buf[at + 2]);
            if buf.len() < at + 9 + len {
                break;
            }
            if buf[at + 3] == 0x7 && len >= 8 {
                let code = &buf[at + 9 + 4..at + 9 + 8];
                return Some(u32::from_be_bytes(code.try_into().unwrap()));
            }
            at += 9 + len;
        }
        match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(read)) => buf.extend_from_slice(&chunk[..read]),
        }
    }
}

#[tokio::test]
async fn grpc_rapid_resets_end_the_connection_and_others_are_served() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17161)]));
    let (_control, grpc, _api) = spawn_with(&file, &["--grpc-max-pending-resets=100"]).await;
    // Within the configured limit (above hyper's default of 20), resets are tolerated...
    assert_eq!(goaway_after_rapid_resets(grpc, 50).await, None);
    // ...past it, the server tells the client to calm down (ENHANCE_YOUR_CALM, 0xb).
    assert_eq!(goaway_after_rapid_resets(grpc, 500).await, Some(0xb));
    // A well-behaved proxy is still served.
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_lazy();
    let mut client = DestinationClient::new(channel);
    let mut stream = client
        .get(request("echo.default:8080"))
        .await
        .unwrap()
        .into_inner();
    let update = within(PROCESS, "an update", stream.message()).await;
    assert_eq!(add_ports(update.unwrap()), [17161]);
}

// ---- Traces: the OTLP receiver, the store behind /api/v1/traces, forwarding ----

mod traces {
    use std::time::{Duration, Instant};

    use ferry_testkit::otlp::{kv, Collector};
    use ferry_testkit::process::Proc;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
    };
    use tonic::transport::Channel;

    use super::{echo, http_get, WorkloadsFile, PROCESS};

    /// Starts `ferry-control` with its trace receiver on an ephemeral port and `extra` flags;
    /// returns it with its API and receiver addresses.
    async fn control(
        extra: &[&str],
    ) -> (
        Proc,
        std::net::SocketAddr,
        std::net::SocketAddr,
        WorkloadsFile,
    ) {
        let file = WorkloadsFile::new(&echo(&[("echo-0", 17111)]));
        let path = file.path().to_str().unwrap().to_string();
        let mut args = vec![
            "--grpc-listen=127.0.0.1:0",
            "--api-listen=127.0.0.1:0",
            "--trace-listen=127.0.0.1:0",
            "--workloads-file",
            path.as_str(),
            "--log-format=json",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &[])
            .expect("spawning ferry-control");
        let bound = proc.bound_addrs(3, PROCESS).await.unwrap();
        let (api, trace) = (bound["api"], bound["trace"]);
        (proc, api, trace, file)
    }

    fn client(addr: std::net::SocketAddr) -> TraceServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        TraceServiceClient::new(channel)
    }

    const TRACE: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const TRACE_HEX: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn span(
        trace: [u8; 16],
        id: u8,
        parent: Option<u8>,
        kind: SpanKind,
        start_ms: u64,
        ms: u64,
        error: bool,
    ) -> Span {
        let base = 1_765_000_000_000_000_000u64;
        Span {
            trace_id: trace.to_vec(),
            span_id: vec![0xa0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: parent
                .map(|p| vec![0xa0, 0, 0, 0, 0, 0, 0, p])
                .unwrap_or_default(),
            name: format!("GET /api/vote-{id}"),
            kind: kind as i32,
            start_time_unix_nano: base + start_ms * 1_000_000,
            end_time_unix_nano: base + (start_ms + ms) * 1_000_000,
            attributes: vec![
                kv("http.request.method", "GET"),
                kv("ferry.direction", "outbound"),
            ],
            status: Some(Status {
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                } as i32,
                message: if error {
                    "503 from voting".to_string()
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        }
    }

    /// An export from `workload`'s proxy in `emojivoto`.
    fn export(workload: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
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
        }
    }

    /// Ten spans of a trace of their own, numbered `n`.
    fn ten_spans(n: u8) -> ExportTraceServiceRequest {
        let mut trace = TRACE;
        trace[0] = n;
        let spans = (1..=10)
            .map(|i| span(trace, i, None, SpanKind::Server, 0, 1, false))
            .collect();
        export("web", spans)
    }

    #[tokio::test]
    async fn exported_spans_are_kept_listed_and_shown_as_one_trace() {
        let (_control, api, trace, _file) = control(&["--trace-max-message-bytes=65536"]).await;
        let mut otlp = client(trace);
        // Both proxies of the hop web → voting export their side; the server side failed.
        let client_side = export(
            "web",
            vec![
                span(TRACE, 1, None, SpanKind::Server, 0, 120, false),
                span(TRACE, 2, Some(1), SpanKind::Client, 10, 100, true),
            ],
        );
        let server_side = export(
            "voting",
            vec![span(TRACE, 3, Some(2), SpanKind::Server, 12, 95, true)],
        );
        let answer = otlp.export(client_side).await.unwrap().into_inner();
        assert_eq!(answer.partial_success, None);
        otlp.export(server_side).await.unwrap();
        // A malformed span is refused, and the exporter is told which.
        let mut bad = span(TRACE, 4, None, SpanKind::Server, 0, 1, false);
        bad.trace_id = vec![1, 2, 3];
        let answer = otlp
            .export(export("emoji", vec![bad]))
            .await
            .unwrap()
            .into_inner();
        let partial = answer.partial_success.expect("a partial success");
        assert_eq!(partial.rejected_spans, 1);
        assert!(
            partial.error_message.contains("trace_id must be 16 bytes"),
            "{partial:?}"
        );
        // Larger than --trace-max-message-bytes: refused whole, with a gRPC status.
        let mut huge = span(TRACE, 5, None, SpanKind::Server, 0, 1, false);
        huge.attributes = vec![kv("big", &"x".repeat(70_000))];
        let refused = otlp.export(export("emoji", vec![huge])).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");

        let (status, list) = http_get(api, "/api/v1/traces").await;
        assert_eq!(status, 200, "{list}");
        let traces = list["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 1, "{list}");
        let summary = &traces[0];
        assert_eq!(summary["traceId"], TRACE_HEX);
        assert_eq!(summary["spanCount"], 3);
        assert_eq!(summary["status"], "error");
        assert_eq!(summary["rootService"], "web");
        assert_eq!(summary["rootWorkload"], "emojivoto/web");
        assert_eq!(summary["durationMicros"], 120_000);
        assert_eq!(
            summary["workloads"],
            serde_json::json!(["emojivoto/voting", "emojivoto/web"])
        );
        assert_eq!(list["stats"]["receiving"], true);
        assert_eq!(list["stats"]["spansReceived"], 4);
        assert_eq!(list["stats"]["spansRejected"], 1);

        for (query, found) in [
            ("?status=error", 1),
            ("?status=ok", 0),
            ("?workload=voting", 1),
            ("?workload=emojivoto/web", 1),
            ("?workload=emoji", 0),
            ("?minDuration=100ms", 1),
            ("?minDuration=1s", 0),
            ("?limit=1", 1),
        ] {
            let (status, list) = http_get(api, &format!("/api/v1/traces{query}")).await;
            assert_eq!(status, 200, "{query}: {list}");
            assert_eq!(
                list["traces"].as_array().unwrap().len(),
                found,
                "{query}: {list}"
            );
        }
        for (query, says) in [
            ("?status=maybe", "status \"maybe\""),
            ("?minDuration=soon", "minDuration \"soon\""),
            ("?limit=0", "limit 0"),
            ("?limit=many", "invalid query"),
        ] {
            let (status, body) = http_get(api, &format!("/api/v1/traces{query}")).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains(says),
                "{query}: {body}"
            );
        }

        let (status, trace) = http_get(api, &format!("/api/v1/traces/{TRACE_HEX}")).await;
        assert_eq!(status, 200, "{trace}");
        let spans: Vec<(&str, u64, &str, &str)> = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["service"].as_str().unwrap(),
                    s["depth"].as_u64().unwrap(),
                    s["kind"].as_str().unwrap(),
                    s["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                ("web", 0, "server", "unset"),
                ("web", 1, "client", "error"),
                ("voting", 2, "server", "error")
            ]
        );
        assert_eq!(trace["spans"][2]["parentSpanId"], "a000000000000002");
        assert_eq!(trace["spans"][2]["offsetMicros"], 12_000);
        assert_eq!(trace["spans"][2]["statusMessage"], "503 from voting");
        assert_eq!(
            trace["spans"][1]["attributes"]["ferry.direction"],
            "outbound"
        );

        let (status, body) = http_get(api, "/api/v1/traces/nothex").await;
        assert_eq!(status, 400, "{body}");
        let (status, body) =
            http_get(api, &format!("/api/v1/traces/{}", "0".repeat(31) + "1")).await;
        assert_eq!(status, 404, "{body}");
    }

    async fn stats(api: std::net::SocketAddr) -> serde_json::Value {
        let (status, list) = http_get(api, "/api/v1/traces").await;
        assert_eq!(status, 200, "{list}");
        list
    }

    #[tokio::test]
    async fn spans_are_forwarded_to_a_collector_in_batches_and_kept_as_well() {
        let collector = Collector::default();
        let (addr, _stop) = collector.serve().await;
        let target = format!("--trace-collector=http://{addr}");
        let (_control, api, trace, _file) = control(&[&target]).await;
        let mut otlp = client(trace);
        for n in 1..=5 {
            otlp.export(ten_spans(n)).await.unwrap();
        }
        ferry_testkit::wait_until(PROCESS, "the collector to get 50 spans", || async {
            (collector.spans() == 50).then_some(())
        })
        .await
        .unwrap();
        // Batched: fewer exports than were received (the forwarder waits 500ms to fill one).
        let exports = collector.requests().len();
        assert!(exports < 5, "{exports} exports for 5 received");
        let list = ferry_testkit::wait_until(PROCESS, "spansForwarded to say 50", || async {
            let list = stats(api).await;
            (list["stats"]["spansForwarded"] == 50).then_some(list)
        })
        .await
        .unwrap();
        assert_eq!(list["stats"]["spansForwardDropped"], 0);
        assert_eq!(list["kept"], 5);
        // The forwarded spans are what was received, resource and all.
        let got = collector.requests();
        let resource = got[0].resource_spans[0].resource.as_ref().unwrap();
        assert!(resource
            .attributes
            .contains(&kv("ferry.workload", "emojivoto/web")));
    }

    /// Exports 20 requests of 10 spans and returns the slowest export's time.
    async fn export_many(trace: std::net::SocketAddr) -> Duration {
        let mut otlp = client(trace);
        otlp.export(ten_spans(0)).await.unwrap(); // connects
        let mut slowest = Duration::ZERO;
        for n in 1..=19 {
            let t = Instant::now();
            otlp.export(ten_spans(n)).await.unwrap();
            slowest = slowest.max(t.elapsed());
        }
        slowest
    }

    #[tokio::test]
    async fn a_dead_or_hanging_collector_costs_the_receiver_nothing_and_drops_are_counted() {
        // Dead: nothing listens there any more.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        // Hanging: answers after far longer than the forwarder waits.
        let (hanging_addr, _stop) = Collector::slow(Duration::from_secs(60)).serve().await;
        for (what, addr) in [("dead", dead_addr), ("hanging", hanging_addr)] {
            let target = format!("--trace-collector={addr}");
            let (_control, api, trace, _file) = control(&[
                &target,
                "--trace-no-store",
                "--trace-collector-queue-spans=50",
                "--trace-collector-timeout=2s",
            ])
            .await;
            let slowest = export_many(trace).await;
            // Far below the 2 s the forwarder gives the collector: nobody waits for it.
            eprintln!("{what} collector: slowest of 19 exports took {slowest:?}");
            assert!(
                slowest < Duration::from_secs(1),
                "{what}: an export took {slowest:?}"
            );
            let list =
                ferry_testkit::wait_until(PROCESS, "every span counted as dropped", || async {
                    let list = stats(api).await;
                    (list["stats"]["spansForwardDropped"] == 200).then_some(list)
                })
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(list["stats"]["spansForwarded"], 0, "{what}: {list}");
            assert_eq!(list["stats"]["spansReceived"], 200, "{what}: {list}");
            // --trace-no-store: forwarded only.
            assert_eq!(list["kept"], 0, "{what}: {list}");
        }
    }

    #[tokio::test]
    async fn bad_trace_flags_exit_with_the_reason() {
        for (flags, says) in [
            (
                &["--trace-no-store"][..],
                "--trace-no-store keeps no traces",
            ),
            (
                &["--trace-collector=https://collector:4317"][..],
                "TLS is not supported",
            ),
            (&["--trace-collector=collector"][..], "must be host:port"),
            (&["--trace-listen=nowhere"][..], "neither an address"),
            (
                &["--trace-store-max-traces=0"][..],
                "--trace-store-max-traces must be at least 1",
            ),
        ] {
            let file = WorkloadsFile::new(&echo(&[("echo-0", 17112)]));
            let path = file.path().to_str().unwrap().to_string();
            let mut args = vec![
                "--workloads-file",
                path.as_str(),
                "--api-listen=127.0.0.1:0",
                "--log-format=json",
            ];
            args.extend_from_slice(flags);
            let mut control = Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &[]).unwrap();
            let status = control.terminate_wait(PROCESS).await.unwrap();
            assert_eq!(status.code(), Some(2), "{flags:?}");
            let logs = control.logs().join("\n");
            assert!(logs.contains(says), "{flags:?} logged:\n{logs}");
        }
    }
}
/// `web` (two instances) and `web-canary` (one), both on 8080 in `default`.
const WEB: &str = "\
workloads:
  - name: web
    instances:
      - {name: web-0, addr: 127.0.0.1:17201}
      - {name: web-1, addr: 127.0.0.1:17202}
  - name: web-canary
    instances:
      - {name: web-canary-0, addr: 127.0.0.1:17203}
services:
  - {name: web, port: 8080, workloads: [web]}
  - {name: web-canary, port: 8080, workloads: [web-canary]}
";

/// A 90/10 split of `web` with a header match, a timeout, retries and a fault.
const SPLIT: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web-split
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: web, port: 8080}
  rules:
  - matches:
    - headers: [{name: x-canary, value: \"yes\"}]
    backendRefs:
    - {name: web-canary, port: 8080}
    filters:
    - type: ExtensionRef
      extensionRef: {group: policy.ferry.io, kind: HTTPFault, name: flaky}
  - backendRefs:
    - {name: web, port: 8080, weight: 90}
    - {name: web-canary, port: 8080, weight: 10}
    timeouts: {request: 5s, backendRequest: 2s}
    retry: {codes: [503], attempts: 3, backoff: 50ms}
---
apiVersion: policy.ferry.io/v1alpha1
kind: HTTPFault
metadata:
  name: flaky
spec:
  abort: {httpStatus: 503, percent: 25}
---
apiVersion: v1
kind: Service
metadata:
  name: web-canary
  annotations:
    timeout.linkerd.io/request: 3s
    balancer.linkerd.io/failure-accrual: consecutive
";

const GRPC_ROUTE: &str = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: web-grpc
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: web, port: 8080}
  rules:
  - matches: [{method: {service: pkg.Web, method: Get}}]
    backendRefs: [{name: web-canary, port: 8080}]
";

mod policies {
    use linkerd2_proxy_api::http_route as hr;
    use linkerd2_proxy_api::meta::metadata::Kind as Meta;
    use linkerd2_proxy_api::outbound as pb;
    use linkerd2_proxy_api::outbound::proxy_protocol::Kind;

    pub fn spec(authority: &str) -> pb::TrafficSpec {
        pb::TrafficSpec {
            source_workload: "default:client-0".to_string(),
            target: Some(pb::traffic_spec::Target::Authority(authority.to_string())),
        }
    }

    /// The HTTP/1 routes of a detect policy.
    pub fn http_routes(policy: &pb::OutboundPolicy) -> &[pb::HttpRoute] {
        match policy.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
            Some(Kind::Detect(d)) => &d.http1.as_ref().expect("http1").routes,
            other => panic!("expected detect, got {other:?}"),
        }
    }

    pub fn route_name(meta: Option<&linkerd2_proxy_api::meta::Metadata>) -> String {
        match meta.and_then(|m| m.kind.as_ref()) {
            Some(Meta::Default(name)) => format!("default:{name}"),
            Some(Meta::Resource(r)) => format!("{}/{}", r.kind, r.name),
            None => "none".to_string(),
        }
    }

    /// `(destination path, weight)` of a rule's backends.
    pub fn weights(rule: &pb::http_route::Rule) -> Vec<(String, u32)> {
        use pb::http_route::distribution::Kind as D;
        let dst = |b: &pb::http_route::RouteBackend| match b
            .backend
            .as_ref()
            .and_then(|b| b.kind.as_ref())
        {
            Some(pb::backend::Kind::Balancer(p2c)) => {
                match p2c.discovery.as_ref().and_then(|d| d.kind.as_ref()) {
                    Some(pb::backend::endpoint_discovery::Kind::Dst(d)) => d.path.clone(),
                    None => String::new(),
                }
            }
            other => panic!("expected a balancer, got {other:?}"),
        };
        match rule.backends.as_ref().and_then(|b| b.kind.as_ref()) {
            Some(D::RandomAvailable(r)) => r
                .backends
                .iter()
                .map(|w| (dst(w.backend.as_ref().unwrap()), w.weight))
                .collect(),
            Some(D::FirstAvailable(f)) => f.backends.iter().map(|b| (dst(b), 1)).collect(),
            other => panic!("unexpected distribution {other:?}"),
        }
    }

    pub fn header_exact(m: &hr::HttpRouteMatch) -> (String, Vec<u8>) {
        let h = &m.headers[0];
        match &h.value {
            Some(hr::header_match::Value::Exact(v)) => (h.name.clone(), v.clone()),
            other => panic!("expected exact, got {other:?}"),
        }
    }

    /// The consecutive-failures limit of a detect policy's HTTP/1 routes, if any.
    pub fn failure_accrual(policy: &pb::OutboundPolicy) -> Option<u32> {
        let Some(Kind::Detect(d)) = policy.protocol.as_ref().and_then(|p| p.kind.as_ref()) else {
            return None;
        };
        match d.http1.as_ref()?.failure_accrual.as_ref()?.kind.as_ref()? {
            pb::failure_accrual::Kind::ConsecutiveFailures(c) => Some(c.max_failures),
            pb::failure_accrual::Kind::Unified(_) => None,
        }
    }

    pub fn is_grpc(policy: &pb::OutboundPolicy) -> bool {
        matches!(
            policy.protocol.as_ref().and_then(|p| p.kind.as_ref()),
            Some(Kind::Grpc(_))
        )
    }
}

#[tokio::test]
async fn outbound_policies_serve_the_routes_file_and_follow_its_edits() {
    use linkerd2_proxy_api::http_route as hr;
    use linkerd2_proxy_api::outbound::http_route::filter::Kind as F;
    use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
    use policies::*;

    let file = WorkloadsFile::new(WEB);
    let routes = file.path().with_file_name("routes.yaml");
    std::fs::write(&routes, SPLIT).unwrap();
    let routes_arg = routes.to_str().unwrap().to_string();
    let (control, grpc, api) = spawn_with(&file, &["--routes", routes_arg.as_str()]).await;
    control
        .wait_for_log("loaded routes", PROCESS)
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_lazy();
    let mut client = OutboundPoliciesClient::new(channel);
    let web = "web.default.svc.cluster.local:8080";

    // Get: the route, its rules in order, each as written.
    let policy = within(PROCESS, "Get", client.get(spec(web)))
        .await
        .expect("a policy")
        .into_inner();
    let routes_sent = http_routes(&policy);
    assert_eq!(routes_sent.len(), 1);
    assert_eq!(
        route_name(routes_sent[0].metadata.as_ref()),
        "HTTPRoute/web-split"
    );
    let rules = &routes_sent[0].rules;
    assert_eq!(
        header_exact(&rules[0].matches[0]),
        ("x-canary".to_string(), b"yes".to_vec())
    );
    let canary = "web-canary.default.svc.cluster.local:8080".to_string();
    assert_eq!(weights(&rules[0]), [(canary.clone(), 1)]);
    match rules[0].filters[0].kind.as_ref() {
        Some(F::FailureInjector(f)) => {
            assert_eq!(f.status, 503);
            assert_eq!(
                f.ratio,
                Some(hr::Ratio {
                    numerator: 25,
                    denominator: 100
                })
            );
        }
        other => panic!("expected the HTTPFault's abort, got {other:?}"),
    }
    assert_eq!(
        weights(&rules[1]),
        [(web.to_string(), 90), (canary.clone(), 10)]
    );
    let timeouts = rules[1].timeouts.expect("timeouts");
    assert_eq!(timeouts.request.map(|d| d.seconds), Some(5));
    assert_eq!(timeouts.response.map(|d| d.seconds), Some(2));
    let retry = rules[1].retry.clone().expect("retry");
    assert_eq!(retry.max_retries, 3);
    assert_eq!(retry.max_request_bytes, 64 * 1024);
    let ranges = retry.conditions.unwrap().status_ranges;
    assert_eq!((ranges[0].start, ranges[0].end), (503, 503));

    // A Service without routes: the default route to itself.
    let policy = within(PROCESS, "Get", client.get(spec(&canary)))
        .await
        .expect("a policy")
        .into_inner();
    let default = http_routes(&policy);
    assert_eq!(route_name(default[0].metadata.as_ref()), "default:http");
    assert_eq!(weights(&default[0].rules[0]), [(canary.clone(), 1)]);
    // With the Service's annotations: its timeout, and failure accrual (Linkerd's defaults).
    let request = default[0].rules[0].timeouts.and_then(|t| t.request);
    assert_eq!(request.map(|d| d.seconds), Some(3));
    assert_eq!(failure_accrual(&policy), Some(7));
    // Unknown services and ports are NotFound; garbage is InvalidArgument.
    let status = client
        .get(spec("nope.default.svc.cluster.local:8080"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = client
        .get(spec("web.default.svc.cluster.local:9"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = client.get(spec("web.default:http")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // The same policy as JSON on the public API.
    let (status, body) = http_get(api, "/api/v1/policy?authority=web.default:8080").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["routes"][0]["name"], "web-split");
    assert_eq!(body["routes"][0]["rules"][1]["backends"][0]["weight"], 90);
    assert_eq!(
        body["routes"][0]["rules"][0]["faults"][0]["httpStatus"],
        503
    );

    // Watch: the current policy, then one message per effective edit.
    let mut stream = within(PROCESS, "Watch", client.watch(spec(web)))
        .await
        .expect("a stream")
        .into_inner();
    let first = within(PROCESS, "the first policy", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(weights(&http_routes(&first)[0].rules[1])[1].1, 10);

    // An invalid edit is refused with file, line and field; the last good set stays.
    std::fs::write(&routes, SPLIT.replace("weight: 10", "weight: -1")).unwrap();
    let line = control
        .wait_for_log("rejected routes edit", PROCESS)
        .await
        .unwrap();
    assert!(
        line.contains("routes.yaml")
            && line.contains("line 18")
            && line.contains("spec.rules[1].backendRefs[1].weight"),
        "{line}"
    );
    let (_, body) = http_get(api, "/api/v1/policy?authority=web.default:8080").await;
    assert_eq!(body["routes"][0]["rules"][1]["backends"][1]["weight"], 10);

    // 90/10 → 50/50: the stream's next message has the new weights (and the invalid
    // edit before it sent nothing).
    std::fs::write(
        &routes,
        SPLIT
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    )
    .unwrap();
    let next = within(PROCESS, "the edited policy", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        weights(&http_routes(&next)[0].rules[1]),
        [(web.to_string(), 50), (canary.clone(), 50)]
    );

    // A GRPCRoute on the same Service: gRPC routes take over.
    std::fs::write(&routes, format!("{SPLIT}{GRPC_ROUTE}")).unwrap();
    let next = within(PROCESS, "the gRPC policy", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(is_grpc(&next), "{next:?}");

    // Discovery changes move the policy too: without web-canary, its backend fails.
    file.write(&WEB.replace(
        "  - {name: web-canary, port: 8080, workloads: [web-canary]}\n",
        "",
    ));
    let next = within(PROCESS, "the policy without web-canary", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        format!("{next:?}").contains("service default/web-canary not found"),
        "{next:?}"
    );
}

#[tokio::test]
async fn an_invalid_routes_file_at_start_exits_naming_file_line_and_field() {
    let file = WorkloadsFile::new(WEB);
    let routes = file.path().with_file_name("routes.yaml");
    std::fs::write(&routes, SPLIT.replace("value: \"yes\"", "value: \"\"")).unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let routes_arg = routes.to_str().unwrap().to_string();
    let args = [
        "--grpc-listen=127.0.0.1:0",
        "--api-listen=127.0.0.1:0",
        "--workloads-file",
        path.as_str(),
        "--routes",
        routes_arg.as_str(),
        "--log-format=json",
    ];
    let mut control = Proc::spawn(env!("CARGO_BIN_EXE_ferry-control"), &args, &[]).unwrap();
    let status = control.terminate_wait(PROCESS).await.unwrap();
    assert!(!status.success());
    let line = control
        .wait_for_log("loading routes", PROCESS)
        .await
        .unwrap();
    assert!(
        line.contains("routes.yaml")
            && line.contains("line 10")
            && line.contains("spec.rules[0].matches[0].headers[0].value"),
        "{line}"
    );
}

/// Workloads whose pods a policy `Server` selects by label and port name.
const LABELLED: &str = "\
workloads:
  - name: web
    serviceAccount: web
    labels: {app: web}
    ports: {http: 8080}
    instances:
      - {name: web-0, addr: 127.0.0.1:17201}
  - name: web-canary
    instances:
      - {name: web-canary-0, addr: 127.0.0.1:17203}
";

/// A Server on web's `http` port whose one authorization needs a token from an issuer
/// whose keys are at `JWKS_URI`.
const AUTHZ: &str = "\
apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: {name: web-http}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-token}
spec:
  targetRef: {group: policy.ferry.io, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.ferry.io, kind: JWTAuthentication, name: issuer}
---
apiVersion: policy.ferry.io/v1alpha1
kind: JWTAuthentication
metadata: {name: issuer}
spec:
  issuer: https://issuer.test
  jwksURI: JWKS_URI
";

mod inbound {
    use ferry_api::policy::inbound as ext;
    use linkerd2_proxy_api::inbound as pb;
    use linkerd2_proxy_api::meta::metadata::Kind;
    use tonic::transport::Channel;

    pub fn spec(pod: &str, port: u32) -> pb::PortSpec {
        pb::PortSpec {
            workload: pod.to_string(),
            port,
        }
    }

    /// A `WatchPort` stream at `path`, decoded as Ferry's message (which a Linkerd
    /// message is too, without extensions).
    pub async fn watch(
        channel: Channel,
        path: &'static str,
        spec: pb::PortSpec,
    ) -> tonic::Streaming<ext::Server> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let codec = tonic_prost::ProstCodec::<pb::PortSpec, ext::Server>::default();
        grpc.server_streaming(
            tonic::Request::new(spec),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .expect("a stream")
        .into_inner()
    }

    /// `kind:name` of each authorization's metadata.
    pub fn authz_names(list: &[pb::Authz]) -> Vec<String> {
        list.iter()
            .map(|a| match a.metadata.as_ref().and_then(|m| m.kind.clone()) {
                Some(Kind::Resource(r)) => format!("{}:{}", r.kind, r.name),
                Some(Kind::Default(name)) => format!("default:{name}"),
                None => "none".to_string(),
            })
            .collect()
    }

    /// The JWK Sets the extensions carry.
    pub fn jwks(server: &ext::Server) -> Vec<String> {
        server
            .authz_extensions
            .iter()
            .flat_map(|x| x.jwt.iter().map(|j| j.jwks.clone()))
            .collect()
    }
}

#[tokio::test]
async fn inbound_policies_serve_the_policy_files_and_follow_edits_pods_and_key_rotation() {
    use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    const LINKERD: &str = "/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort";
    const FERRY: &str = ferry_api::policy::inbound::WATCH_PORT;

    // The issuer's keys, served over real HTTP and rotated below.
    let keys = Arc::new(Mutex::new(r#"{"keys":[{"kid":"one"}]}"#.to_string()));
    let served = keys.clone();
    let issuer = ferry_testkit::server::TestServer::http(move |_req| {
        let body = served.lock().unwrap().clone();
        async move { http::Response::new(ferry_testkit::server::full(body)) }
    })
    .await;
    let file = WorkloadsFile::new(LABELLED);
    let routes = file.path().with_file_name("policy.yaml");
    let policy = AUTHZ.replace("JWKS_URI", &format!("http://{}/keys", issuer.addr));
    std::fs::write(&routes, &policy).unwrap();
    let routes_arg = routes.to_str().unwrap().to_string();
    let (control, grpc, _api) = spawn_with(
        &file,
        &[
            "--routes",
            routes_arg.as_str(),
            "--jwks-refresh-interval=200ms",
            "--default-inbound-policy=cluster-authenticated",
        ],
    )
    .await;
    control
        .wait_for_log("loaded routes", PROCESS)
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_lazy();

    // GetPort: the Server that selects web-0's `http` port, its authorization.
    let mut linkerd = InboundServerPoliciesClient::new(channel.clone());
    let server = within(
        PROCESS,
        "GetPort",
        linkerd.get_port(inbound::spec("default:web-0", 8080)),
    )
    .await
    .expect("a policy")
    .into_inner();
    assert_eq!(server.labels["name"], "web-http");
    assert_eq!(
        inbound::authz_names(&server.authorizations),
        ["AuthorizationPolicy:web-token"]
    );
    // A port no Server selects gets the cluster's default (the flag), Linkerd's JSON form too.
    let json = r#"{"ns":"default","pod":"web-canary-0"}"#;
    let default = within(
        PROCESS,
        "GetPort",
        linkerd.get_port(inbound::spec(json, 8080)),
    )
    .await
    .expect("a policy")
    .into_inner();
    assert_eq!(
        inbound::authz_names(&default.authorizations),
        ["default:cluster-authenticated"]
    );
    let status = linkerd
        .get_port(inbound::spec("default:nope", 8080))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Linkerd's WatchPort carries no extension; Ferry's carries the JWT requirement, with the
    // keys once the control plane has fetched them.
    let mut plain = inbound::watch(
        channel.clone(),
        LINKERD,
        inbound::spec("default:web-0", 8080),
    )
    .await;
    let first = within(PROCESS, "Linkerd's first", plain.message())
        .await
        .unwrap()
        .unwrap();
    assert!(first.authz_extensions.is_empty(), "{first:?}");
    let mut ferry =
        inbound::watch(channel.clone(), FERRY, inbound::spec("default:web-0", 8080)).await;
    let mut latest = within(PROCESS, "Ferry's first", ferry.message())
        .await
        .unwrap()
        .unwrap();
    while !inbound::jwks(&latest).iter().all(|k| k.contains("one")) {
        latest = within(PROCESS, "the fetched keys", ferry.message())
            .await
            .unwrap()
            .unwrap();
    }
    // Server-wide (route 0) and on the default route (route 1).
    let at: Vec<(u32, u32)> = latest
        .authz_extensions
        .iter()
        .map(|x| (x.route, x.authz))
        .collect();
    assert_eq!(at, [(0, 0), (1, 0)]);
    assert_eq!(
        latest.authz_extensions[0].jwt[0].issuer,
        "https://issuer.test"
    );

    // Rotation: the refreshed keys reach the stream.
    *keys.lock().unwrap() = r#"{"keys":[{"kid":"two"}]}"#.to_string();
    let rotated = within(PROCESS, "the rotated keys", ferry.message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        inbound::jwks(&rotated).iter().all(|k| k.contains("two")),
        "{rotated:?}"
    );

    // An edit reaches both streams within a second: audit after the authorization.
    let edited = Instant::now();
    std::fs::write(
        &routes,
        policy.replace(
            "proxyProtocol: HTTP/1",
            "proxyProtocol: HTTP/1\n  accessPolicy: audit",
        ),
    )
    .unwrap();
    let next = within(PROCESS, "the audited policy", plain.message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        edited.elapsed() < Duration::from_secs(1),
        "{:?}",
        edited.elapsed()
    );
    assert_eq!(
        inbound::authz_names(&next.authorizations),
        ["AuthorizationPolicy:web-token", "default:audit"]
    );
    let next = within(PROCESS, "Ferry's audited policy", ferry.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.authorizations.len(), 2);

    // An invalid edit is refused with file, line and field; the streams keep the last policy.
    std::fs::write(&routes, policy.replace("port: http", "port: 70000")).unwrap();
    let line = control
        .wait_for_log("rejected routes edit", PROCESS)
        .await
        .unwrap();
    assert!(
        line.contains("policy.yaml") && line.contains("line 6") && line.contains("spec.port"),
        "{line}"
    );

    // Discovery moves it too: web's pods lose the label, the cluster default applies.
    file.write(&LABELLED.replace("labels: {app: web}", "labels: {app: other}"));
    let next = within(PROCESS, "the default policy", plain.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        inbound::authz_names(&next.authorizations),
        ["default:cluster-authenticated"]
    );
    drop(issuer);
}
