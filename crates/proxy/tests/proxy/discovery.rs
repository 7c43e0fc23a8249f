//! The proxy as a destination client, against a scripted destination server: the stream's
//! adds, removes and no-endpoints drive routing, a dead endpoint is backed off and bodiless
//! requests that could not be sent are retried elsewhere.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use ferry_proxy::Config;
use ferry_testkit::{
    client,
    server::{full, TestServer},
    wait_until,
};
use http::{Response, StatusCode};
use linkerd2_proxy_api::{destination as dst, http_route as hr, meta, net::TcpAddress, outbound};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::Status;

use crate::Proxy;

type Updates = Pin<Box<dyn Stream<Item = Result<dst::Update, Status>> + Send>>;
type Profiles = Pin<Box<dyn Stream<Item = Result<dst::DestinationProfile, Status>> + Send>>;

/// Hands each `Get` stream to the test, which then writes its updates.
struct Scripted {
    streams: mpsc::Sender<(String, mpsc::Sender<Result<dst::Update, Status>>)>,
}

#[tonic::async_trait]
impl dst::destination_server::Destination for Scripted {
    type GetStream = Updates;
    type GetProfileStream = Profiles;

    async fn get(
        &self,
        req: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Updates>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let _ = self.streams.send((req.into_inner().path, tx)).await;
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Profiles>, Status> {
        Err(Status::invalid_argument("no profiles"))
    }
}

pub async fn scripted_destination() -> (
    SocketAddr,
    mpsc::Receiver<(String, mpsc::Sender<Result<dst::Update, Status>>)>,
) {
    scripted_control_plane(None).await
}

/// [`scripted_destination`], serving Linkerd's `OutboundPolicies` too when given.
async fn scripted_control_plane(
    policies: Option<LinkerdPolicies>,
) -> (
    SocketAddr,
    mpsc::Receiver<(String, mpsc::Sender<Result<dst::Update, Status>>)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams, rx) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(dst::destination_server::DestinationServer::new(Scripted {
                streams,
            }))
            .add_optional_service(
                policies.map(outbound::outbound_policies_server::OutboundPoliciesServer::new),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

type Policies = Pin<Box<dyn Stream<Item = Result<outbound::OutboundPolicy, Status>> + Send>>;

/// Linkerd's `OutboundPolicies` alone, as a Linkerd control plane serves it (no Ferry
/// extension): every `Watch` gets `policy`, then stays open.
struct LinkerdPolicies {
    policy: outbound::OutboundPolicy,
    watched: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl outbound::outbound_policies_server::OutboundPolicies for LinkerdPolicies {
    type WatchStream = Policies;

    async fn get(
        &self,
        _: tonic::Request<outbound::TrafficSpec>,
    ) -> Result<tonic::Response<outbound::OutboundPolicy>, Status> {
        Ok(tonic::Response::new(self.policy.clone()))
    }

    async fn watch(
        &self,
        _: tonic::Request<outbound::TrafficSpec>,
    ) -> Result<tonic::Response<Policies>, Status> {
        use tokio_stream::StreamExt as _;
        self.watched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = tokio_stream::once(Ok(self.policy.clone()));
        Ok(tonic::Response::new(Box::pin(
            first.chain(tokio_stream::pending()),
        )))
    }
}

fn add(addrs: &[SocketAddr]) -> Result<dst::Update, Status> {
    Ok(dst::Update {
        update: Some(dst::update::Update::Add(dst::WeightedAddrSet {
            addrs: addrs
                .iter()
                .map(|a| dst::WeightedAddr {
                    addr: Some(TcpAddress::from(*a)),
                    weight: 10_000,
                    metric_labels: [("pod".to_string(), format!("pod-{}", a.port()))].into(),
                    ..Default::default()
                })
                .collect(),
            metric_labels: [("service".to_string(), "echo".to_string())].into(),
        })),
    })
}

fn remove(addrs: &[SocketAddr]) -> Result<dst::Update, Status> {
    Ok(dst::Update {
        update: Some(dst::update::Update::Remove(dst::AddrSet {
            addrs: addrs.iter().map(|a| TcpAddress::from(*a)).collect(),
        })),
    })
}

fn no_endpoints(exists: bool) -> Result<dst::Update, Status> {
    Ok(dst::Update {
        update: Some(dst::update::Update::NoEndpoints(dst::NoEndpoints {
            exists,
        })),
    })
}

async fn named(name: &'static str) -> TestServer {
    TestServer::http(move |_req| async move { Response::new(full(name)) }).await
}

#[tokio::test]
async fn the_stream_drives_routing_and_dead_endpoints_are_skipped() {
    let (destination, mut streams) = scripted_destination().await;
    let (one, two) = (named("one").await, named("two").await);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.upstreams = vec!["127.0.0.1:0=echo.default:8080".parse().unwrap()];
    let proxy = Proxy::start(config).await;
    let url = proxy.upstream_url("/");

    // The first request opens the stream; the proxy waits for its first answer.
    let first = tokio::spawn({
        let url = url.clone();
        async move { client::get(&url).await }
    });
    let (path, updates) = tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, "echo.default:8080");
    updates.send(add(&[one.addr])).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().text(), "one");

    // An add: both endpoints serve.
    updates.send(add(&[two.addr])).await.unwrap();
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    wait_until(Duration::from_secs(5), "both endpoints to serve", || {
        let (url, seen) = (url.clone(), seen.clone());
        async move {
            let body = client::get(&url).await.unwrap().text();
            let mut seen = seen.lock().await;
            seen.insert(body);
            (seen.len() == 2).then_some(())
        }
    })
    .await
    .unwrap();

    // A remove: only `two` is left.
    updates.send(remove(&[one.addr])).await.unwrap();
    wait_until(Duration::from_secs(5), "`one` to leave", || {
        let url = url.clone();
        async move {
            for _ in 0..10 {
                if client::get(&url).await.unwrap().text() == "one" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
    .unwrap();

    // A dead endpoint joins: GETs that cannot reach it are retried on `two`, none fails,
    // and the dead one is backed off.
    updates.send(add(&[dead])).await.unwrap();
    let state_url = format!("http://{}/state", proxy.admin);
    wait_until(
        Duration::from_secs(5),
        "the dead endpoint to be known",
        || {
            let state_url = state_url.clone();
            async move {
                let state = client::get(&state_url).await.unwrap().text();
                state.contains(&dead.to_string()).then_some(())
            }
        },
    )
    .await
    .unwrap();
    for _ in 0..30 {
        let rsp = client::get(&url).await.unwrap();
        assert_eq!((rsp.status, rsp.text().as_str()), (StatusCode::OK, "two"));
    }
    let state: serde_json::Value = serde_json::from_str(
        &client::get(&format!("http://{}/state", proxy.admin))
            .await
            .unwrap()
            .text(),
    )
    .unwrap();
    let endpoints = state["destinations"][0]["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    let dead_state = endpoints
        .iter()
        .find(|e| e["addr"] == dead.to_string().as_str())
        .unwrap();
    assert!(
        dead_state["consecutive_failures"].as_u64().unwrap() >= 1,
        "{state}"
    );

    // The service loses its endpoints, then the name itself.
    updates.send(no_endpoints(true)).await.unwrap();
    let rsp = wait_until(Duration::from_secs(5), "no-endpoints", || {
        let url = url.clone();
        async move {
            let rsp = client::get(&url).await.unwrap();
            (rsp.status == StatusCode::SERVICE_UNAVAILABLE).then_some(rsp)
        }
    })
    .await
    .unwrap();
    assert_eq!(rsp.headers["l5d-proxy-error"], "no-endpoints");
    updates.send(no_endpoints(false)).await.unwrap();
    let rsp = wait_until(Duration::from_secs(5), "no-route", || {
        let url = url.clone();
        async move {
            let rsp = client::get(&url).await.unwrap();
            (rsp.headers
                .get("l5d-proxy-error")
                .is_some_and(|v| v == "no-route"))
            .then_some(rsp)
        }
    })
    .await
    .unwrap();
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);

    // The stream breaks: the proxy reconnects, and the new stream's first message is the
    // whole state.
    drop(updates);
    let (_, updates) = tokio::time::timeout(Duration::from_secs(10), streams.recv())
        .await
        .unwrap()
        .unwrap();
    updates.send(add(&[one.addr])).await.unwrap();
    let rsp = wait_until(Duration::from_secs(5), "`one` after the reconnect", || {
        let url = url.clone();
        async move {
            let rsp = client::get(&url).await.unwrap();
            (rsp.status == StatusCode::OK).then_some(rsp)
        }
    })
    .await
    .unwrap();
    assert_eq!(rsp.text(), "one");
}

/// Every name asked for opens a `Get` stream; once no connection holds a name and nobody
/// asked for it during `--destination-idle-timeout`, its stream is closed (issue #20).
#[tokio::test]
async fn idle_names_release_their_streams() {
    const NAMES: usize = 16;
    let (destination, mut streams) = scripted_destination().await;
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.timeouts.destination_idle = Duration::from_secs(2);
    let proxy = Proxy::start(config).await;
    let url = format!("http://{}/", proxy.outbound);

    let mut open = Vec::new();
    for i in 0..NAMES {
        let host = format!("svc-{i}.default:80");
        let req = http::Request::get(&url)
            .header(http::header::HOST, &host)
            .body(Default::default())
            .unwrap();
        let rsp = tokio::spawn(async move { client::send(&client::http1(), req).await });
        let (path, updates) = tokio::time::timeout(Duration::from_secs(5), streams.recv())
            .await
            .expect("a Get stream per name")
            .unwrap();
        assert_eq!(path, host);
        updates.send(no_endpoints(false)).await.unwrap();
        let rsp = rsp.await.unwrap().unwrap();
        assert_eq!(rsp.headers["l5d-proxy-error"], "no-route");
        open.push(updates);
    }
    assert!(
        open.iter().all(|u| !u.is_closed()),
        "streams stay open while their names are in use"
    );

    let closed = wait_until(Duration::from_secs(10), "every Get stream closed", || {
        let all = open.iter().all(|u| u.is_closed());
        async move { all.then_some(()) }
    })
    .await;
    if let Err(e) = closed {
        let n = open.iter().filter(|u| !u.is_closed()).count();
        panic!("{e}: {n} of {NAMES} streams still open");
    }

    // A name asked for again opens a new stream.
    let req = http::Request::get(&url)
        .header(http::header::HOST, "svc-0.default:80")
        .body(Default::default())
        .unwrap();
    let rsp = tokio::spawn(async move { client::send(&client::http1(), req).await });
    let (path, updates) = tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path, "svc-0.default:80");
    updates.send(no_endpoints(false)).await.unwrap();
    assert_eq!(
        rsp.await.unwrap().unwrap().headers["l5d-proxy-error"],
        "no-route"
    );
}

/// Against a control plane that serves only Linkerd's `OutboundPolicies` (Ferry's `Watch`
/// answers `Unimplemented`), the proxy takes its routes from Linkerd's `Watch`: here a
/// route whose fault filter fails every request with 418.
#[tokio::test]
async fn routes_come_from_linkerds_watch_when_the_control_plane_has_no_ferry_extension() {
    let fault = outbound::http_route::Filter {
        kind: Some(outbound::http_route::filter::Kind::FailureInjector(
            hr::HttpFailureInjector {
                status: 418,
                message: "from Linkerd's Watch".into(),
                ratio: None,
            },
        )),
    };
    let watched = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let policies = LinkerdPolicies {
        policy: linkerd_policy(outbound::http_route::Rule {
            filters: vec![fault],
            ..Default::default()
        }),
        watched: watched.clone(),
    };
    let (destination, _streams) = scripted_control_plane(Some(policies)).await;
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.upstreams = vec!["127.0.0.1:0=echo.default:8080".parse().unwrap()];
    let proxy = Proxy::start(config).await;

    let rsp = client::get(&proxy.upstream_url("/")).await.unwrap();
    assert_eq!(rsp.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(rsp.headers["ferry-proxy-error"], "fault-injected");
    assert_eq!(watched.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Linkerd's policy message with one HTTP/1 route of one rule.
fn linkerd_policy(rule: outbound::http_route::Rule) -> outbound::OutboundPolicy {
    let route = outbound::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                name: "the-route".into(),
                namespace: "default".into(),
                ..Default::default()
            })),
        }),
        hosts: Vec::new(),
        rules: vec![rule],
    };
    let http = |routes: Vec<outbound::HttpRoute>| outbound::proxy_protocol::Detect {
        timeout: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        opaque: None,
        http1: Some(outbound::proxy_protocol::Http1 {
            routes: routes.clone(),
            failure_accrual: None,
        }),
        http2: Some(outbound::proxy_protocol::Http2 {
            routes,
            failure_accrual: None,
        }),
    };
    outbound::OutboundPolicy {
        protocol: Some(outbound::ProxyProtocol {
            kind: Some(outbound::proxy_protocol::Kind::Detect(http(vec![route]))),
        }),
        metadata: None,
    }
}

/// A request whose body had not all gone upstream when the failed answer came is not
/// retried (there is nothing whole to send again); a whole one is, with its body intact.
#[tokio::test]
async fn a_request_is_retried_only_when_its_whole_body_went() {
    use http_body::Frame;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    // Answers 500 at once, the body unread; `x-flaky` requests are read, answered 500 the
    // first time, then with their body.
    let calls = Arc::new(AtomicUsize::new(0));
    let app = TestServer::http({
        let calls = calls.clone();
        move |req: http::Request<hyper::body::Incoming>| {
            let n = calls.fetch_add(1, Relaxed);
            async move {
                if req.headers().contains_key("x-flaky") {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    if n > 0 {
                        return Response::new(full(body));
                    }
                }
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(full("failed"))
                    .unwrap()
            }
        }
    })
    .await;
    let backend = balanced("echo.default:8080");
    let retry = outbound::http_route::Retry {
        max_retries: 3,
        max_request_bytes: 64 * 1024,
        conditions: Some(outbound::http_route::retry::Conditions {
            status_ranges: vec![outbound::http_route::retry::conditions::StatusRange {
                start: 500,
                end: 599,
            }],
        }),
        timeout: None,
        backoff: None,
    };
    let rule = outbound::http_route::Rule {
        backends: Some(outbound::http_route::Distribution {
            kind: Some(outbound::http_route::distribution::Kind::FirstAvailable(
                outbound::http_route::distribution::FirstAvailable {
                    backends: vec![outbound::http_route::RouteBackend {
                        backend: Some(backend),
                        ..Default::default()
                    }],
                },
            )),
        }),
        retry: Some(retry),
        ..Default::default()
    };
    let policies = LinkerdPolicies {
        policy: linkerd_policy(rule),
        watched: Arc::default(),
    };
    let (destination, mut streams) = scripted_control_plane(Some(policies)).await;
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.upstreams = vec!["127.0.0.1:0=echo.default:8080".parse().unwrap()];
    let proxy = Proxy::start(config).await;
    let url = proxy.upstream_url("/upload");
    let endpoints = tokio::spawn(async move {
        let (_, updates) = streams.recv().await.unwrap();
        updates.send(add(&[app.addr])).await.unwrap();
        (updates, app)
    });

    // A whole body: retried, and the second try reads it intact.
    let req = http::Request::post(&url)
        .version(http::Version::HTTP_2)
        .header("x-flaky", "1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"all of it",
        )))
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), client::h2c().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"all of it");
    assert_eq!(calls.swap(0, Relaxed), 2);

    // A body still coming when the 500 arrives: answered as is, sent once.
    let (tx, rx) = mpsc::channel::<Result<Frame<bytes::Bytes>, std::convert::Infallible>>(4);
    tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"first part;"))))
        .await
        .unwrap();
    let body = http_body_util::StreamBody::new(ReceiverStream::new(rx));
    let req = http::Request::post(&url)
        .version(http::Version::HTTP_2)
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    drop(tx);
    assert_eq!(calls.load(Relaxed), 1, "not retried");
    drop(endpoints);
}

/// A route backend balanced over discovery's endpoints for `path`.
fn balanced(path: &str) -> outbound::Backend {
    outbound::Backend {
        metadata: None,
        queue: Some(outbound::Queue {
            capacity: 100,
            failfast_timeout: Some(prost_types::Duration {
                seconds: 3,
                nanos: 0,
            }),
        }),
        kind: Some(outbound::backend::Kind::Balancer(
            outbound::backend::BalanceP2c {
                discovery: Some(outbound::backend::EndpointDiscovery {
                    kind: Some(outbound::backend::endpoint_discovery::Kind::Dst(
                        outbound::backend::endpoint_discovery::DestinationGet { path: path.into() },
                    )),
                }),
                load: None,
            },
        )),
    }
}

/// A gRPC error sent as a head and then trailers (no status in the head, as most servers
/// send one) is retried on its status like a trailers-only answer: when the trailers come
/// with the head (the proxy reads them without waiting) and when they come later (it
/// waits for them).
#[tokio::test]
async fn grpc_statuses_in_trailers_after_the_head_are_retried() {
    use http_body::Frame;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    // The first call: 200, then trailers with UNAVAILABLE (14) at once; the second: the
    // same 300 ms after the head; the third: a message and OK.
    let calls = Arc::new(AtomicUsize::new(0));
    let app = TestServer::http({
        let calls = calls.clone();
        move |req: http::Request<hyper::body::Incoming>| {
            let n = calls.fetch_add(1, Relaxed);
            async move {
                // A unary call's server reads the request message first.
                req.into_body().collect().await.unwrap();
                let mut trailers = http::HeaderMap::new();
                let frames = if n < 2 {
                    trailers.insert("grpc-status", "14".parse().unwrap());
                    vec![Frame::trailers(trailers)]
                } else {
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let message = bytes::Bytes::from_static(b"\0\0\0\0\x02hi");
                    vec![Frame::data(message), Frame::trailers(trailers)]
                };
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                tokio::spawn(async move {
                    if n == 1 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    for frame in frames {
                        let _ = tx.send(Ok(frame)).await;
                    }
                });
                let frames = tokio_stream::wrappers::ReceiverStream::new(rx);
                Response::builder()
                    .header("content-type", "application/grpc")
                    .body(http_body_util::StreamBody::new(frames).boxed())
                    .unwrap()
            }
        }
    })
    .await;
    let rule = outbound::grpc_route::Rule {
        backends: Some(outbound::grpc_route::Distribution {
            kind: Some(outbound::grpc_route::distribution::Kind::FirstAvailable(
                outbound::grpc_route::distribution::FirstAvailable {
                    backends: vec![outbound::grpc_route::RouteBackend {
                        backend: Some(balanced("echo.default:8080")),
                        ..Default::default()
                    }],
                },
            )),
        }),
        retry: Some(outbound::grpc_route::Retry {
            max_retries: 2,
            max_request_bytes: 64 * 1024,
            conditions: Some(outbound::grpc_route::retry::Conditions {
                unavailable: true,
                ..Default::default()
            }),
            timeout: None,
            backoff: None,
        }),
        ..Default::default()
    };
    let route = outbound::GrpcRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "GRPCRoute".into(),
                name: "retry-unavailable".into(),
                namespace: "default".into(),
                ..Default::default()
            })),
        }),
        hosts: Vec::new(),
        rules: vec![rule],
    };
    let policies = LinkerdPolicies {
        policy: outbound::OutboundPolicy {
            protocol: Some(outbound::ProxyProtocol {
                kind: Some(outbound::proxy_protocol::Kind::Grpc(
                    outbound::proxy_protocol::Grpc {
                        routes: vec![route],
                        failure_accrual: None,
                    },
                )),
            }),
            metadata: None,
        },
        watched: Arc::default(),
    };
    let (destination, mut streams) = scripted_control_plane(Some(policies)).await;
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.upstreams = vec!["127.0.0.1:0=echo.default:8080".parse().unwrap()];
    let proxy = Proxy::start(config).await;
    let endpoints = tokio::spawn(async move {
        let (_, updates) = streams.recv().await.unwrap();
        updates.send(add(&[app.addr])).await.unwrap();
        (updates, app)
    });

    let call = http::Request::post(proxy.upstream_url("/greet.Greeter/Hello"))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\x02yo",
        )))
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), client::h2c().request(call))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), rsp.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = body.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0", "{trailers:?}");
    assert_eq!(&body.to_bytes()[..], b"\0\0\0\0\x02hi");
    assert_eq!(
        calls.load(Relaxed),
        3,
        "both UNAVAILABLE answers were retried"
    );
    drop(endpoints);
}
