//! Inbound authorization against a scripted control plane serving Ferry's
//! `InboundServerPolicies/WatchPort`: who is admitted by identity (real mTLS from other
//! proxies), by network, by route and by JWT; policy changes, a control plane that goes
//! away, refused TCP, rate limits and audit mode.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use base64::Engine as _;
use ferry_api::policy::inbound as ext;
use ferry_proxy::{authz::feed::DefaultPolicy, orig_dst::OrigDst, Config};
use ferry_testkit::{
    client,
    server::{full, TestServer},
    wait_until,
};
use http::{Request, Response};
use http_body_util::Full;
use linkerd2_proxy_api::{http_route as hr, http_types, inbound as pb, meta, net};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tonic::Status;

use crate::{
    discovery::scripted_destination,
    orig_dst::add,
    test_ca::{identity_of, TestCa},
    Proxy,
};

type Policies = mpsc::Sender<Result<ext::Server, Status>>;

/// Ferry's `WatchPort`, by hand (it has no generated server): each stream is handed to the
/// test with the `PortSpec` it asked for, and the test writes its `Server` messages.
#[derive(Clone)]
struct ScriptedPolicies {
    streams: mpsc::Sender<(pb::PortSpec, Policies)>,
}

impl tonic::server::NamedService for ScriptedPolicies {
    const NAME: &'static str = ext::SERVICE;
}

struct WatchPort(mpsc::Sender<(pb::PortSpec, Policies)>);

type ServerStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ext::Server, Status>> + Send>>;

impl tonic::server::ServerStreamingService<pb::PortSpec> for WatchPort {
    type Response = ext::Server;
    type ResponseStream = ServerStream;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<ServerStream>, Status>> + Send>,
    >;

    fn call(&mut self, req: tonic::Request<pb::PortSpec>) -> Self::Future {
        let streams = self.0.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(16);
            let _ = streams.send((req.into_inner(), tx)).await;
            let stream: ServerStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(tonic::Response::new(stream))
        })
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for ScriptedPolicies {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let streams = self.streams.clone();
        Box::pin(async move {
            if req.uri().path() != ext::WATCH_PORT {
                return Ok(Status::unimplemented("not here").into_http());
            }
            let codec = tonic_prost::ProstCodec::<ext::Server, pb::PortSpec>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.server_streaming(WatchPort(streams), req).await)
        })
    }
}

/// A scripted policy server on loopback; the task serving it, to kill it.
async fn scripted_policies() -> (
    SocketAddr,
    mpsc::Receiver<(pb::PortSpec, Policies)>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams, rx) = mpsc::channel(4);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ScriptedPolicies { streams })
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, rx, task)
}

async fn next_stream(
    streams: &mut mpsc::Receiver<(pb::PortSpec, Policies)>,
) -> (pb::PortSpec, Policies) {
    tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .expect("the proxy opens a WatchPort stream")
        .unwrap()
}

// ---- policies ----

fn resource(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.ferry.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        })),
    })
}

fn net(cidr: &str) -> pb::Network {
    let (ip, len) = cidr.split_once('/').unwrap();
    pb::Network {
        net: Some(net::IpNetwork {
            ip: Some(ip.parse::<std::net::IpAddr>().unwrap().into()),
            prefix_len: len.parse().unwrap(),
        }),
        except: Vec::new(),
    }
}

fn anyone(name: &str) -> pb::Authz {
    pb::Authz {
        networks: vec![net("0.0.0.0/0")],
        authentication: Some(pb::Authn {
            permit: Some(pb::authn::Permit::Unauthenticated(
                pb::authn::PermitUnauthenticated {},
            )),
        }),
        labels: HashMap::new(),
        metadata: resource("AuthorizationPolicy", name),
    }
}

fn identities(name: &str, ids: &[&str]) -> pb::Authz {
    pb::Authz {
        authentication: Some(pb::Authn {
            permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
                clients: Some(pb::authn::permit_mesh_tls::Clients::Identities(
                    pb::authn::permit_mesh_tls::PermitClientIdentities {
                        identities: ids
                            .iter()
                            .map(|i| pb::Identity {
                                name: i.to_string(),
                            })
                            .collect(),
                        suffixes: Vec::new(),
                    },
                )),
            })),
        }),
        ..anyone(name)
    }
}

fn server(protocol: pb::proxy_protocol::Kind, authzs: Vec<pb::Authz>) -> ext::Server {
    ext::Server {
        protocol: Some(pb::ProxyProtocol {
            kind: Some(protocol),
        }),
        authorizations: authzs,
        labels: HashMap::from([
            ("kind".to_string(), "server".to_string()),
            ("name".to_string(), "web-http".to_string()),
        ]),
        ..Default::default()
    }
}

fn detect() -> pb::proxy_protocol::Kind {
    pb::proxy_protocol::Kind::Detect(pb::proxy_protocol::Detect::default())
}

fn http1(routes: Vec<pb::HttpRoute>, limit: Option<u32>) -> pb::proxy_protocol::Kind {
    pb::proxy_protocol::Kind::Http1(pb::proxy_protocol::Http1 {
        routes,
        local_rate_limit: limit.map(|rps| pb::HttpLocalRateLimit {
            metadata: resource("HTTPLocalRateLimitPolicy", "web-limit"),
            total: Some(pb::http_local_rate_limit::Limit {
                requests_per_second: rps,
            }),
            ..Default::default()
        }),
    })
}

fn route(name: &str, method: &str, prefix: &str, authzs: Vec<pb::Authz>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: resource("HTTPRoute", name),
        authorizations: authzs,
        rules: vec![pb::http_route::Rule {
            matches: vec![hr::HttpRouteMatch {
                path: Some(hr::PathMatch {
                    kind: Some(hr::path_match::Kind::Prefix(prefix.into())),
                }),
                method: Some(http_types::HttpMethod {
                    r#type: Some(http_types::http_method::Type::Unregistered(method.into())),
                }),
                ..Default::default()
            }],
            filters: Vec::new(),
        }],
        ..Default::default()
    }
}

// ---- JWTs ----

struct SigningKey {
    pair: EcdsaKeyPair,
    kid: &'static str,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl SigningKey {
    fn new(kid: &'static str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { pair, kid }
    }

    fn jwk(&self) -> serde_json::Value {
        let p = self.pair.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    /// A token for `aud: web` from the test issuer, expiring `exp_in` seconds from now
    /// (negative: already expired).
    fn token(&self, exp_in: i64) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": "https://issuer.test", "aud": "web", "sub": "alice",
            "exp": unix_now().saturating_add_signed(exp_in),
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn jwt_required(keys: &[&SigningKey]) -> ext::Jwt {
    ext::Jwt {
        name: "default/issuer".into(),
        issuer: "https://issuer.test".into(),
        audiences: vec!["web".into()],
        jwks: serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
            .to_string(),
        ..Default::default()
    }
}

// ---- clients ----

/// An HTTP/1.1 exchange on `sock`, read up to the end of the response (by length).
async fn exchange(sock: &mut tokio::net::TcpStream, head: &str) -> (u16, String) {
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), sock.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = text[9..12].parse().unwrap();
                return (status, text);
            }
        }
    }
}

/// A request over HTTP/1.1, which the fast path carries.
async fn request(
    proxy: &Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> client::Reply {
    request_on(&client::http1(), proxy, method, path, headers).await
}

/// A request with `client` (h2c: the general path).
async fn request_on(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<bytes::Bytes>,
    >,
    proxy: &Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> client::Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.inbound));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(client, req.body(Full::new(bytes::Bytes::new())).unwrap())
        .await
        .unwrap()
}

fn reason(r: &client::Reply) -> String {
    r.headers
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn app() -> TestServer {
    TestServer::http(|_req| async { Response::new(full("app")) }).await
}

/// A proxy in front of `app` served policies by `policies`, with `default`.
async fn guarded(app: SocketAddr, policies: SocketAddr, default: DefaultPolicy) -> Proxy {
    let mut config = Config::for_tests(app);
    config.destination_addr = Some(policies.into());
    config.default_inbound_policy = default;
    Proxy::start(config).await
}

#[tokio::test]
async fn routes_networks_jwts_and_a_silent_control_plane() {
    let app = app().await;
    let (cp, mut streams, cp_task) = scripted_policies().await;
    let proxy = guarded(app.addr, cp, DefaultPolicy::Deny).await;

    // Until the policy comes, the default (deny) decides, after a short wait at most.
    let started = Instant::now();
    let first = request(&proxy, "GET", "/votes", &[]).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (first.status.as_u16(), reason(&first).as_str()),
        (403, "unauthorized")
    );
    let (spec, tx) = next_stream(&mut streams).await;
    assert_eq!(spec.port, u32::from(app.addr.port()));
    assert_eq!(spec.workload, "default:");

    let (old, new) = (SigningKey::new("old"), SigningKey::new("new"));
    let policy = |keys: &[&SigningKey]| {
        let mut s = server(
            http1(
                vec![
                    route("votes-read", "GET", "/votes", vec![anyone("everyone")]),
                    route("votes-write", "POST", "/votes", vec![]),
                    route("private", "GET", "/private", vec![anyone("token-holders")]),
                    route("office", "GET", "/office", {
                        let mut a = anyone("office");
                        a.networks = vec![net("127.0.0.2/32")];
                        vec![a]
                    }),
                ],
                None,
            ),
            vec![],
        );
        s.authz_extensions = vec![ext::AuthzExtension {
            route: 3,
            authz: 0,
            jwt: vec![jwt_required(keys)],
        }];
        s
    };
    tx.send(Ok(policy(&[&old, &new]))).await.unwrap();
    wait_until(Duration::from_secs(1), "the policy applies", || async {
        (request(&proxy, "GET", "/votes", &[]).await.status == 200).then_some(())
    })
    .await
    .unwrap();

    let post = request(&proxy, "POST", "/votes", &[]).await;
    assert_eq!(
        (post.status.as_u16(), reason(&post).as_str()),
        (403, "unauthorized")
    );
    assert!(post.text().contains("route votes-write"), "{}", post.text());
    let lost = request(&proxy, "GET", "/nowhere", &[]).await;
    assert_eq!(
        (lost.status.as_u16(), reason(&lost).as_str()),
        (404, "no-route")
    );
    let grpc = request(
        &proxy,
        "POST",
        "/votes",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(grpc.status.as_u16(), 200);
    assert_eq!(grpc.headers["grpc-status"], "7");

    // JWTs: valid, expired, signed by a stranger with a known kid, missing.
    let bearer = |t: String| format!("Bearer {t}");
    let ok = request(
        &proxy,
        "GET",
        "/private",
        &[("authorization", &bearer(old.token(300)))],
    )
    .await;
    assert_eq!(ok.status.as_u16(), 200);
    let expired = request(
        &proxy,
        "GET",
        "/private",
        &[("authorization", &bearer(old.token(-300)))],
    )
    .await;
    assert_eq!(reason(&expired), "unauthorized-jwt-expired");
    let forged_token = bearer(SigningKey::new("old").token(300));
    let forged = request(
        &proxy,
        "GET",
        "/private",
        &[("authorization", &forged_token)],
    )
    .await;
    assert_eq!(reason(&forged), "unauthorized-jwt-bad-signature");
    let missing = request(&proxy, "GET", "/private", &[]).await;
    assert_eq!(reason(&missing), "unauthorized-jwt-missing");
    // The general path (h2c here) decides alike.
    let h2c = client::h2c();
    for (token, want) in [
        (
            Some(forged_token.as_str()),
            "unauthorized-jwt-bad-signature",
        ),
        (None, "unauthorized-jwt-missing"),
    ] {
        let headers: Vec<_> = token.map(|t| ("authorization", t)).into_iter().collect();
        let r = request_on(&h2c, &proxy, "GET", "/private", &headers).await;
        assert_eq!((r.status.as_u16(), reason(&r).as_str()), (403, want));
    }
    // The old key rotated out: its tokens fail within a second.
    tx.send(Ok(policy(&[&new]))).await.unwrap();
    let token = bearer(old.token(300));
    wait_until(
        Duration::from_secs(1),
        "the rotated key set applies",
        || async {
            let r = request(&proxy, "GET", "/private", &[("authorization", &token)]).await;
            (reason(&r) == "unauthorized-jwt-unknown-key").then_some(())
        },
    )
    .await
    .unwrap();
    let ok = request(
        &proxy,
        "GET",
        "/private",
        &[("authorization", &bearer(new.token(300)))],
    )
    .await;
    assert_eq!(ok.status.as_u16(), 200);

    // A network authorization: 127.0.0.2 is in, 127.0.0.1 is not.
    let head = "GET /office HTTP/1.1\r\nhost: web\r\n\r\n";
    let mut from_1 = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    assert_eq!(exchange(&mut from_1, head).await.0, 403);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut from_2 = sock.connect(proxy.inbound).await.unwrap();
    assert_eq!(exchange(&mut from_2, head).await.0, 200);

    let text = proxy
        .wait_metric(
            "inbound_http_authz_deny_total",
            &[("route_name", "votes-write"), ("srv_name", "web-http")],
            2.0,
        )
        .await;
    assert_eq!(
        ferry_testkit::metric_sum(
            &text,
            "inbound_http_route_not_found_total",
            &[("srv_kind", "server")]
        ),
        1.0
    );
    assert!(
        ferry_testkit::metric_sum(
            &text,
            "inbound_http_authz_allow_total",
            &[("authz_name", "token-holders"), ("route_kind", "HTTPRoute")]
        ) >= 2.0,
        "{text}"
    );
    assert_eq!(
        ferry_testkit::metric_sum(
            &text,
            "inbound_http_errors_total",
            &[("error", "unauthorized-jwt-expired")]
        ),
        1.0
    );

    // The control plane goes away: the last policy stays in force.
    cp_task.abort();
    drop(tx);
    let state_url = format!("http://{}/state", proxy.admin);
    wait_until(
        Duration::from_secs(5),
        "the stream is seen lost",
        || async {
            let state: serde_json::Value =
                serde_json::from_str(&client::get(&state_url).await.ok()?.text()).ok()?;
            let port = &state["inbound_policies"][0];
            (port["stream"]["connected"] == false && port["state"] == "server").then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(request(&proxy, "GET", "/votes", &[]).await.status, 200);
    assert_eq!(request(&proxy, "POST", "/votes", &[]).await.status, 403);
}

#[tokio::test]
async fn local_rate_limit_answers_429_past_the_rate() {
    let app = app().await;
    let (cp, mut streams, _cp) = scripted_policies().await;
    let proxy = guarded(app.addr, cp, DefaultPolicy::AllUnauthenticated).await;
    let (_, tx) = next_stream(&mut streams).await;
    tx.send(Ok(server(
        http1(Vec::new(), Some(5)),
        vec![anyone("everyone")],
    )))
    .await
    .unwrap();
    // Until the policy applies, nothing is limited; then 5 a second (a full bucket first).
    wait_until(Duration::from_secs(1), "the limit applies", || async {
        let r = request(&proxy, "GET", "/", &[]).await;
        (r.status == 429).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let mut ok = 0;
    let mut limited = None;
    for _ in 0..20 {
        let r = request(&proxy, "GET", "/", &[]).await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => limited = Some(r),
            s => panic!("status {s}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 5.0 + 5.0 * elapsed;
    assert!(
        ok >= 5 && f64::from(ok) <= allowed + 1.0,
        "{ok} of 20 in {elapsed:.2}s"
    );
    let limited = limited.expect("some requests are limited");
    assert_eq!(reason(&limited), "rate-limited");
    assert_eq!(limited.headers["ferry-proxy-error"], "rate-limited");
    let text = proxy.metrics().await;
    assert!(
        ferry_testkit::metric_sum(
            &text,
            "inbound_http_local_ratelimit_total",
            &[("srv_name", "web-http")]
        ) >= f64::from(20 - ok),
        "{text}"
    );
}

#[tokio::test]
async fn refused_tcp_never_reaches_the_app_and_audit_admits_and_counts() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    let app = TestServer::tcp(move |mut sock| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 64];
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    })
    .await;
    // A silent client the policy refuses: the proxy does not connect ahead to the app
    // (as it would for a server-speaks-first protocol), and closes it once it speaks.
    let mut config = Config::for_tests(app.addr);
    config.default_inbound_policy = DefaultPolicy::Deny;
    let proxy = Proxy::start(config).await;
    let before = accepted.load(Ordering::SeqCst);
    let mut sock = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = sock.write_all(b"\x00\x01 not http").await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "the app saw nothing"
    );

    for (default, admitted) in [(DefaultPolicy::Deny, false), (DefaultPolicy::Audit, true)] {
        let mut config = Config::for_tests(app.addr);
        config.opaque_ports = vec![app.addr.port()];
        config.default_inbound_policy = default;
        let proxy = Proxy::start(config).await;
        let before = accepted.load(Ordering::SeqCst);
        let mut sock = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
        let _ = sock.write_all(b"hello").await;
        let mut buf = [0u8; 5];
        let read = tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut buf)).await;
        if admitted {
            assert_eq!(&buf, b"hello", "{default:?}");
            let text = proxy
                .wait_metric(
                    "inbound_tcp_authz_allow_total",
                    &[
                        ("authz_kind", "default"),
                        ("authz_name", "audit"),
                        ("srv_name", "audit"),
                    ],
                    1.0,
                )
                .await;
            assert!(text.contains("srv_kind=\"default\""), "{text}");
        } else {
            assert!(matches!(read, Ok(Err(_))), "closed: {read:?}");
            proxy
                .wait_metric("inbound_tcp_authz_deny_total", &[("srv_name", "deny")], 1.0)
                .await;
            proxy
                .wait_metric(
                    "inbound_tcp_errors_total",
                    &[("error", "unauthorized")],
                    1.0,
                )
                .await;
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                before,
                "the app saw nothing"
            );
        }
    }
}

/// A meshed client: a proxy with identity `sa` whose outbound connections to `peer` go
/// over mTLS (discovery names the peer's identity).
async fn meshed_client(ca: &TestCa, sa: &str, peer: SocketAddr) -> Proxy {
    let (destination, mut streams) = scripted_destination().await;
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.outbound_orig_dst = OrigDst::Fixed(peer);
    config.identity = Some(ca.identity(sa));
    let proxy = Proxy::start(config).await;
    ready(&proxy).await;
    // A first request makes the proxy look the peer up; its own fate is not the point.
    let url = format!("http://{}/", proxy.outbound);
    tokio::spawn(async move {
        let _ = client::get(&url).await;
    });
    // Answer the outbound lookup of the peer's address with its identity.
    let (_, updates) = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (path, tx) = streams.recv().await.unwrap();
            if path == peer.to_string() {
                return (path, tx);
            }
        }
    })
    .await
    .expect("the client looks the peer up");
    updates
        .send(add(&[(peer, "web-0", Some(&identity_of("web")))]))
        .await
        .unwrap();
    // Keep the stream open for the proxy's life.
    tokio::spawn(async move {
        updates.closed().await;
    });
    proxy
}

async fn ready(proxy: &Proxy) {
    let url = format!("http://{}/ready", proxy.admin);
    wait_until(Duration::from_secs(10), "a certificate", || {
        let url = url.clone();
        async move { (client::get(&url).await.ok()?.status == 200).then_some(()) }
    })
    .await
    .unwrap();
}

async fn get_via(client_proxy: &Proxy) -> client::Reply {
    client::get(&format!("http://{}/", client_proxy.outbound))
        .await
        .unwrap()
}

#[tokio::test]
async fn identities_over_mtls_and_a_policy_change_within_a_second() {
    let ca = TestCa::start().await;
    let app = app().await;
    let (cp, mut streams, _cp) = scripted_policies().await;
    let mut config = Config::for_tests(app.addr);
    config.destination_addr = Some(cp.into());
    config.identity = Some(ca.identity("web"));
    config.default_inbound_policy = DefaultPolicy::Deny;
    let web = Proxy::start(config).await;
    ready(&web).await;
    let (a, b) = (identity_of("client-a"), identity_of("client-b"));
    let (_, tx) = next_stream(&mut streams).await;
    tx.send(Ok(server(detect(), vec![identities("ab", &[&a, &b])])))
        .await
        .unwrap();
    let state_url = format!("http://{}/state", web.admin);
    wait_until(Duration::from_secs(2), "the policy arrives", || async {
        let state: serde_json::Value =
            serde_json::from_str(&client::get(&state_url).await.ok()?.text()).ok()?;
        (state["inbound_policies"][0]["state"] == "server").then_some(())
    })
    .await
    .unwrap();

    let client_a = meshed_client(&ca, "client-a", web.inbound).await;
    let client_b = meshed_client(&ca, "client-b", web.inbound).await;
    let client_c = meshed_client(&ca, "client-c", web.inbound).await;
    assert_eq!(get_via(&client_a).await.status, 200);
    assert_eq!(get_via(&client_b).await.status, 200);
    let denied = get_via(&client_c).await;
    assert_eq!(
        (denied.status.as_u16(), reason(&denied).as_str()),
        (403, "unauthorized")
    );
    web.wait_metric(
        "inbound_tcp_authz_allow_total",
        &[("authz_name", "ab")],
        2.0,
    )
    .await;

    // Only b now: a's connection is closed, b's keeps working, all within a second.
    tx.send(Ok(server(detect(), vec![identities("b", &[&b])])))
        .await
        .unwrap();
    let changed = Instant::now();
    wait_until(Duration::from_secs(1), "a is refused", || async {
        (get_via(&client_a).await.status == 403).then_some(())
    })
    .await
    .unwrap();
    assert!(changed.elapsed() < Duration::from_secs(1));
    web.wait_metric(
        "inbound_tcp_authz_terminate_total",
        &[("srv_name", "web-http")],
        1.0,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get_via(&client_b).await.status, 200);
    }
    let text = web.metrics().await;
    let opened = |id: &str| {
        ferry_testkit::metric_sum(
            &text,
            "tcp_open_total",
            &[("direction", "inbound"), ("client_id", id)],
        )
    };
    assert_eq!(opened(&b), 1.0, "b's connection was kept\n{text}");
    assert!(opened(&a) >= 2.0, "a reconnected\n{text}");
}

/// Linkerd's `InboundServerPolicies` only (a Linkerd-compatible control plane).
struct LinkerdPolicies(ext::Server);

#[tonic::async_trait]
impl pb::inbound_server_policies_server::InboundServerPolicies for LinkerdPolicies {
    type WatchPortStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Server, Status>> + Send>>;

    async fn get_port(
        &self,
        _: tonic::Request<pb::PortSpec>,
    ) -> Result<tonic::Response<pb::Server>, Status> {
        Err(Status::unimplemented("watch instead"))
    }

    async fn watch_port(
        &self,
        _: tonic::Request<pb::PortSpec>,
    ) -> Result<tonic::Response<Self::WatchPortStream>, Status> {
        let s = self.0.clone();
        let server = pb::Server {
            protocol: s.protocol,
            server_ips: s.server_ips,
            authorizations: s.authorizations,
            labels: s.labels,
        };
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::iter([Ok(server)]),
            tokio_stream::pending(),
        );
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[tokio::test]
async fn linkerds_watch_port_serves_when_ferrys_is_not() {
    let app = app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp = listener.local_addr().unwrap();
    let policy = server(
        http1(
            vec![route("read", "GET", "/", vec![anyone("everyone")])],
            None,
        ),
        vec![],
    );
    let _cp = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                pb::inbound_server_policies_server::InboundServerPoliciesServer::new(
                    LinkerdPolicies(policy),
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let proxy = guarded(app.addr, cp, DefaultPolicy::Deny).await;
    wait_until(
        Duration::from_secs(2),
        "Linkerd's policy applies",
        || async { (request(&proxy, "GET", "/", &[]).await.status == 200).then_some(()) },
    )
    .await
    .unwrap();
    let post = request(&proxy, "POST", "/", &[]).await;
    assert_eq!(
        (post.status.as_u16(), reason(&post).as_str()),
        (404, "no-route")
    );
}

#[tokio::test]
async fn servers_decided_per_connection_and_per_request_keep_the_fast_path() {
    let app = app().await;
    let (cp, mut streams, _cp) = scripted_policies().await;
    let proxy = guarded(app.addr, cp, DefaultPolicy::Deny).await;
    let (_, tx) = next_stream(&mut streams).await;
    tx.send(Ok(server(detect(), vec![anyone("everyone")])))
        .await
        .unwrap();
    let stats = || async {
        let url = format!("http://{}/state", proxy.admin);
        let state: serde_json::Value =
            serde_json::from_str(&client::get(&url).await.unwrap().text()).unwrap();
        state["http1"].clone()
    };
    wait_until(Duration::from_secs(1), "the policy applies", || async {
        (request(&proxy, "GET", "/", &[]).await.status == 200).then_some(())
    })
    .await
    .unwrap();
    let before = stats().await;
    for _ in 0..3 {
        assert_eq!(request(&proxy, "GET", "/", &[]).await.status, 200);
    }
    let after = stats().await;
    assert_eq!(
        after["fast_path_requests"].as_u64().unwrap(),
        before["fast_path_requests"].as_u64().unwrap() + 3,
        "{after}"
    );
    assert!(
        after["general_path_connections"]["authorization"].is_null(),
        "{after}"
    );

    // A route makes the server decide per request: the fast path decides it, on the raw
    // head, with the same policy step as the general path.
    tx.send(Ok(server(
        http1(
            vec![route("all", "GET", "/", vec![anyone("everyone")])],
            None,
        ),
        vec![],
    )))
    .await
    .unwrap();
    wait_until(Duration::from_secs(1), "the route applies", || async {
        (request(&proxy, "POST", "/", &[]).await.status == 404).then_some(())
    })
    .await
    .unwrap();
    let before = stats().await;
    assert_eq!(request(&proxy, "GET", "/", &[]).await.status, 200);
    assert_eq!(request(&proxy, "POST", "/", &[]).await.status, 404);
    let after = stats().await;
    assert_eq!(
        after["fast_path_requests"].as_u64().unwrap(),
        before["fast_path_requests"].as_u64().unwrap() + 2,
        "{after}"
    );
    assert_eq!(
        after["general_path_connections"], before["general_path_connections"],
        "{after}"
    );
}
