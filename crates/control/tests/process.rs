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
