//! The destination API over real gRPC on 127.0.0.1:0, with a client that asks the way
//! linkerd2-proxy does: empty scheme, Linkerd-style path, JSON context token.

#[path = "support/fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferry_control::destination;
use ferry_control::discovery::file::FileDiscovery;
use fixture::{echo, within, WorkloadsFile, PROMPT};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::update::Update as U;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// How often the test control planes check the file: the production default.
const POLL: Duration = ferry_control::discovery::file::DEFAULT_POLL_INTERVAL;

/// A control plane serving destination on a local port until dropped or stopped.
struct ControlPlane {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    async fn start(file: &WorkloadsFile, addr: SocketAddr) -> Self {
        let discovery = FileDiscovery::spawn(file.path().to_path_buf(), POLL)
            .await
            .expect("workloads file loads");
        let listener = TcpListener::bind(addr).await.expect("binding gRPC");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            destination::serve(listener, discovery, shutdown)
                .await
                .expect("serving");
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Shuts down gracefully and waits (bounded) for the server to finish.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(Duration::from_secs(5), "graceful shutdown", &mut self.task)
            .await
            .expect("server task");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client(addr: SocketAddr) -> DestinationClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    DestinationClient::new(channel)
}

fn request(path: &str) -> pb::GetDestination {
    pb::GetDestination {
        scheme: String::new(),
        path: path.to_string(),
        context_token: ferry_api::destination::context_token("default", "node-1", "client-0"),
    }
}

async fn get(client: &mut DestinationClient<Channel>, path: &str) -> Streaming<pb::Update> {
    within(PROMPT, "Get to answer", client.get(request(path)))
        .await
        .expect("Get is accepted")
        .into_inner()
}

/// The next update, which must come promptly.
async fn next(stream: &mut Streaming<pb::Update>) -> U {
    within(PROMPT, "an update", stream.message())
        .await
        .expect("stream healthy")
        .expect("stream open")
        .update
        .expect("update set")
}

/// The ports of an `add`, sorted.
fn add_ports(update: &U) -> Vec<u16> {
    let U::Add(set) = update else {
        panic!("expected add, got {update:?}");
    };
    let mut ports: Vec<u16> = set.addrs.iter().map(|a| port(a.addr.as_ref())).collect();
    ports.sort();
    ports
}

fn port(addr: Option<&linkerd2_proxy_api::net::TcpAddress>) -> u16 {
    let addr = SocketAddr::try_from(*addr.expect("address set")).expect("valid address");
    addr.port()
}

#[tokio::test]
async fn first_update_is_the_full_set_with_labels_and_identity() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;
    let mut stream = get(&mut client, "echo.default.svc.cluster.local:8080").await;

    let update = next(&mut stream).await;
    assert_eq!(add_ports(&update), [17101, 17102]);
    let U::Add(set) = update else { unreachable!() };
    let set_labels: HashMap<&str, &str> = set
        .metric_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        set_labels,
        HashMap::from([("namespace", "default"), ("service", "echo")])
    );
    let ep = set
        .addrs
        .iter()
        .find(|a| port(a.addr.as_ref()) == 17101)
        .unwrap();
    assert_eq!(ep.weight, 10_000);
    assert_eq!(ep.metric_labels["pod"], "echo-0");
    assert_eq!(ep.metric_labels["deployment"], "echo");
    assert_eq!(ep.metric_labels["serviceaccount"], "echo");
    let identity = "echo.default.serviceaccount.identity.ferry.cluster.local";
    let tls = ep
        .tls_identity
        .as_ref()
        .expect("meshed endpoints carry an identity");
    assert_eq!(
        tls.strategy,
        Some(pb::tls_identity::Strategy::DnsLikeIdentity(
            pb::tls_identity::DnsLikeIdentity {
                name: identity.to_string()
            }
        ))
    );
    assert_eq!(
        tls.server_name.as_ref().map(|n| n.name.as_str()),
        Some(identity)
    );
    assert_eq!(ep.protocol_hint, None, "no protocol upgrades promised yet");
}

#[tokio::test]
async fn short_names_and_any_scheme_get_the_same_answer() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;
    // `echo:8080` resolves in the context token's namespace.
    for path in ["echo.default:8080", "echo.default.svc:8080", "echo:8080"] {
        let mut stream = get(&mut client, path).await;
        assert_eq!(
            add_ports(&next(&mut stream).await),
            [17101, 17102],
            "{path}"
        );
    }
    let mut req = request("echo.default:8080");
    req.scheme = "k8s".to_string();
    let mut stream = client.get(req).await.unwrap().into_inner();
    assert_eq!(add_ports(&next(&mut stream).await), [17101, 17102]);
}

#[tokio::test]
async fn edits_stream_live_adds_and_removes() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;
    let mut stream = get(&mut client, "echo.default:8080").await;
    assert_eq!(add_ports(&next(&mut stream).await), [17101, 17102]);

    let edited = Instant::now();
    file.write(&echo(&[
        ("echo-0", 17101),
        ("echo-1", 17102),
        ("echo-2", 17103),
    ]));
    assert_eq!(
        add_ports(&next(&mut stream).await),
        [17103],
        "only the new one"
    );
    assert!(edited.elapsed() < PROMPT, "add took {:?}", edited.elapsed());

    file.write(&echo(&[("echo-0", 17101), ("echo-2", 17103)]));
    match next(&mut stream).await {
        U::Remove(set) => {
            let ports: Vec<u16> = set.addrs.iter().map(|a| port(Some(a))).collect();
            assert_eq!(ports, [17102]);
        }
        other => panic!("expected remove, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_names_fail_fast_and_existence_is_tracked() {
    let file = WorkloadsFile::new(&echo(&[]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;

    for path in [
        "nope.default:8080",
        "example.com:80",
        "echo.default.svc.other.domain:8080",
    ] {
        let asked = Instant::now();
        let mut stream = get(&mut client, path).await;
        let update = next(&mut stream).await;
        assert_eq!(
            update,
            U::NoEndpoints(pb::NoEndpoints { exists: false }),
            "{path}"
        );
        assert!(asked.elapsed() < PROMPT, "{path} was slow");
    }

    // `echo` exists with no instances, then gains one, loses it, and goes away.
    let mut stream = get(&mut client, "echo.default:8080").await;
    let exists = |exists| U::NoEndpoints(pb::NoEndpoints { exists });
    assert_eq!(next(&mut stream).await, exists(true));
    file.write(&echo(&[("echo-0", 17101)]));
    assert_eq!(add_ports(&next(&mut stream).await), [17101]);
    file.write(&echo(&[]));
    assert_eq!(next(&mut stream).await, exists(true));
    file.write("workloads: []\n");
    assert_eq!(next(&mut stream).await, exists(false));
    // A subscriber to a missing name learns when it appears.
    file.write(&echo(&[("echo-0", 17101)]));
    assert_eq!(add_ports(&next(&mut stream).await), [17101]);
}

#[tokio::test]
async fn a_bad_edit_keeps_the_last_good_state() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;
    let mut stream = get(&mut client, "echo.default:8080").await;
    assert_eq!(add_ports(&next(&mut stream).await), [17101]);

    file.write("services: [ this is not yaml");
    // Several polls pass without a message, and a new subscriber still gets the old set.
    let quiet = tokio::time::timeout(POLL * 3, stream.message()).await;
    assert!(quiet.is_err(), "a bad edit must not be streamed: {quiet:?}");
    let mut late = get(&mut client, "echo.default:8080").await;
    assert_eq!(add_ports(&next(&mut late).await), [17101]);

    file.write(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    assert_eq!(add_ports(&next(&mut stream).await), [17102]);
}

#[tokio::test]
async fn malformed_paths_are_rejected() {
    let file = WorkloadsFile::new(&echo(&[]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;
    for path in ["", "echo.default:http", "echo..default:80"] {
        let status = client.get(request(path)).await.expect_err(path);
        assert_eq!(status.code(), Code::InvalidArgument, "{path}");
    }
}

#[tokio::test]
async fn profiles_name_known_services_and_reject_unknown_ones() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;

    let mut profiles = client
        .get_profile(request("echo.default:8080"))
        .await
        .unwrap()
        .into_inner();
    let profile = within(PROMPT, "a profile", profiles.message())
        .await
        .unwrap()
        .expect("a profile");
    assert_eq!(
        profile.fully_qualified_name,
        "echo.default.svc.cluster.local"
    );
    assert!(profile.routes.is_empty() && !profile.opaque_protocol);
    let parent = profile.parent_ref.and_then(|m| m.kind);
    let Some(linkerd2_proxy_api::meta::metadata::Kind::Resource(parent)) = parent else {
        panic!("expected a parent ref");
    };
    assert_eq!(
        (parent.kind.as_str(), parent.name.as_str()),
        ("Service", "echo")
    );
    assert_eq!((parent.namespace.as_str(), parent.port), ("default", 8080));

    let status = client
        .get_profile(request("nope.default:8080"))
        .await
        .expect_err("unknown services have no profile");
    assert_eq!(status.code(), Code::InvalidArgument);

    // An instance's address gets a profile that names it as the endpoint.
    let mut profiles = client
        .get_profile(request("127.0.0.1:17101"))
        .await
        .unwrap()
        .into_inner();
    let profile = within(PROMPT, "a profile", profiles.message())
        .await
        .unwrap()
        .expect("a profile");
    assert_eq!(profile.fully_qualified_name, "");
    let endpoint = profile.endpoint.expect("endpoint profile");
    assert_eq!(endpoint.metric_labels["pod"], "echo-0");
}

#[tokio::test]
async fn a_client_reconnecting_after_a_restart_gets_the_full_set() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let addr = cp.addr;
    let mut client = client(addr).await;
    let mut stream = get(&mut client, "echo.default:8080").await;
    assert_eq!(add_ports(&next(&mut stream).await), [17101, 17102]);

    // Shutdown ends open streams, so proxies notice and reconnect.
    cp.stop().await;
    let ended = within(PROMPT, "the stream to end", stream.message()).await;
    assert!(
        !matches!(ended, Ok(Some(_))),
        "stream kept going: {ended:?}"
    );

    // While the control plane is down the file changes; the new one serves it all.
    file.write(&echo(&[("echo-1", 17102), ("echo-2", 17103)]));
    let cp = ControlPlane::start(&file, addr).await;
    let mut stream = within(Duration::from_secs(5), "resubscribing", async {
        loop {
            match client.get(request("echo.default:8080")).await {
                Ok(rsp) => break rsp.into_inner(),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(add_ports(&next(&mut stream).await), [17102, 17103]);
    cp.stop().await;
}

#[tokio::test]
async fn one_edit_reaches_every_subscriber() {
    let file = WorkloadsFile::new(&echo(&[("echo-0", 17101)]));
    let cp = ControlPlane::start(&file, "127.0.0.1:0".parse().unwrap()).await;
    let mut client = client(cp.addr).await;
    // Many proxies' streams, multiplexed over one connection as one proxy's would be.
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut stream = get(&mut client, "echo.default:8080").await;
        assert_eq!(add_ports(&next(&mut stream).await), [17101]);
        streams.push(stream);
    }
    let edited = Instant::now();
    file.write(&echo(&[("echo-0", 17101), ("echo-1", 17102)]));
    for stream in &mut streams {
        assert_eq!(add_ports(&next(stream).await), [17102]);
    }
    assert!(
        edited.elapsed() < PROMPT,
        "fan-out took {:?}",
        edited.elapsed()
    );
}

#[tokio::test]
async fn shutdown_finishes_even_with_a_silent_client_connected() {
    let text = echo(&[("echo-0", 17101)]);
    let discovery = ferry_control::discovery::StaticDiscovery::new(
        ferry_control::workloads_file::parse(&text).unwrap(),
    );
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, api_addr) = (grpc.local_addr().unwrap(), api.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let grace = Duration::from_millis(200);
    let server = tokio::spawn(ferry_control::serve(grpc, api, discovery, grace, async {
        let _ = stopped.await;
    }));
    // Connected to both servers, saying nothing, never closing.
    let _silent = (
        tokio::net::TcpStream::connect(grpc_addr).await.unwrap(),
        tokio::net::TcpStream::connect(api_addr).await.unwrap(),
    );
    let mut client = client(grpc_addr).await;
    let mut stream = get(&mut client, "echo.default:8080").await;
    assert_eq!(add_ports(&next(&mut stream).await), [17101]);

    stop.send(()).unwrap();
    within(grace + PROMPT, "serve to return", server)
        .await
        .expect("serve task")
        .expect("clean shutdown");
}
