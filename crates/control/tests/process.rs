//! The `ferry-control` binary as a user runs it: flags, logs, both listeners, SIGTERM,
//! and a restart that proxies resubscribe to.

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixture::{echo, within, WorkloadsFile};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// How long the binary may take to start or stop.
const PROCESS: Duration = Duration::from_secs(10);

/// A running `ferry-control`, killed on drop, with its log lines collected.
struct ControlProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl ControlProcess {
    fn spawn(file: &WorkloadsFile, grpc: SocketAddr) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry-control"))
            .arg(format!("--grpc-listen={grpc}"))
            .arg("--api-listen=127.0.0.1:0")
            .arg("--workloads-file")
            .arg(file.path())
            .args(["--log-format=json", "--log=info"])
            .env_remove(ferry_api::env::CONTROL_DISCOVERY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning ferry-control");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, logs }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits for a log line containing `needle`.
    async fn wait_for_log(&self, needle: &str) -> String {
        let found = tokio::time::timeout(PROCESS, async {
            loop {
                let hit = self
                    .logs
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned();
                match hit {
                    Some(line) => return line,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no log line with {needle:?}; logged:\n{}", self.logs()))
    }

    /// The addresses of the `grpc` and `api` listeners, from their `listener bound` lines.
    async fn bound(&self) -> HashMap<String, SocketAddr> {
        self.wait_for_log("\"listener\":\"api\"").await;
        self.wait_for_log("\"listener\":\"grpc\"").await;
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "listener bound")
            .filter_map(|v| {
                let name = v["listener"].as_str()?.to_string();
                Some((name, v["addr"].as_str()?.parse().ok()?))
            })
            .collect()
    }

    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(kill.success());
        within(PROCESS, "ferry-control to exit", self.child.wait())
            .await
            .expect("exit status")
    }
}

/// A minimal HTTP/1.0 GET, enough for the JSON API.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the API");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within(
        PROCESS,
        "an API response",
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, serde_json::from_str(body).expect("a JSON body"))
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
    let mut control = ControlProcess::spawn(&file, "127.0.0.1:0".parse().unwrap());
    let bound = control.bound().await;
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
    let line = control.wait_for_log("rejected workloads file edit").await;
    assert!(line.contains("at line 2"), "the log says where: {line}");

    // SIGTERM ends open streams and exits cleanly.
    let status = control.terminate().await;
    assert!(
        status.success(),
        "exit status {status}; logged:\n{}",
        control.logs()
    );
    let ended = within(PROCESS, "the stream to end", stream.message()).await;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "stream kept going: {ended:?}"
    );

    // Restarted on the same port with an edited file, it serves resubscribers in full.
    file.write(&echo(&[("echo-1", 17102), ("echo-2", 17103)]));
    let control = ControlProcess::spawn(&file, grpc);
    control.bound().await;
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
    let mut control = ControlProcess::spawn(&file, "127.0.0.1:0".parse().unwrap());
    let status = within(PROCESS, "ferry-control to exit", control.child.wait())
        .await
        .unwrap();
    assert!(!status.success());
    let line = control.wait_for_log("backed by workload").await;
    assert!(line.contains("ghost") && line.contains("ERROR"), "{line}");
}
