//! The tap server over real listeners: a tonic client calls `Tap/Observe` on the proxy's
//! tap port while real requests cross it. Filters, limits, event fields, gRPC status, and
//! that a proxy nobody taps does no tap work at all.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use ferry_testkit::{client, server::TestServer};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use linkerd2_proxy_api::{
    http_types::HttpMethod,
    tap::{
        eos,
        observe_request::{
            r#match::{self as m, http as mh, tcp},
            Match,
        },
        tap_client::TapClient,
        tap_event::{self, http::Event},
        ObserveRequest, TapEvent,
    },
};
use tonic::Streaming;

use crate::Proxy;

const WAIT: Duration = Duration::from_secs(5);

/// An app that answers `/slow` after 60 ms, `/grpc` as a gRPC call failing with
/// `NOT_FOUND` in its trailers, and anything else at once; bodies are `hello`.
async fn app() -> TestServer {
    TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        match req.uri().path() {
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(60)).await;
                Response::builder()
                    .status(201)
                    .body(ferry_testkit::server::full("hello"))
                    .unwrap()
            }
            "/grpc" => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "5".parse().unwrap());
                let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> = vec![
                    Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                    Ok(Frame::trailers(trailers)),
                ];
                Response::builder()
                    .header("content-type", "application/grpc")
                    .body(StreamBody::new(tokio_stream::iter(frames)).boxed())
                    .unwrap()
            }
            _ => Response::new(ferry_testkit::server::full("hello")),
        }
    })
    .await
}

fn http_match(inner: mh::Match) -> Match {
    Match {
        r#match: Some(m::Match::Http(m::Http {
            r#match: Some(inner),
        })),
    }
}

pub(crate) fn path_prefix(p: &str) -> Match {
    http_match(mh::Match::Path(mh::StringMatch {
        r#match: Some(mh::string_match::Match::Prefix(p.into())),
    }))
}

pub(crate) async fn observe(
    proxy: &Proxy,
    r#match: Option<Match>,
    limit: u32,
) -> Streaming<TapEvent> {
    let mut client = TapClient::connect(format!("http://{}", proxy.tap))
        .await
        .expect("connect to the tap server");
    client
        .observe(ObserveRequest {
            limit,
            r#match,
            extract: None,
        })
        .await
        .expect("observe")
        .into_inner()
}

pub(crate) async fn next(stream: &mut Streaming<TapEvent>) -> TapEvent {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a tap event within 5 s")
        .expect("a healthy stream")
        .expect("the stream to go on")
}

pub(crate) fn http(e: &TapEvent) -> &Event {
    match &e.event {
        Some(tap_event::Event::Http(h)) => h.event.as_ref().expect("an http event"),
        None => panic!("event without http: {e:?}"),
    }
}

fn addr(a: &Option<linkerd2_proxy_api::net::TcpAddress>) -> SocketAddr {
    (*a).expect("an address")
        .try_into()
        .expect("a socket address")
}

fn labels(meta: &Option<tap_event::EndpointMeta>) -> HashMap<String, String> {
    meta.clone().unwrap_or_default().labels
}

async fn tap_state(proxy: &Proxy) -> serde_json::Value {
    let text = client::get(&format!("http://{}/state", proxy.admin))
        .await
        .expect("GET /state")
        .text();
    serde_json::from_str::<serde_json::Value>(&text).expect("state JSON")["tap"].clone()
}

pub(crate) async fn wait_active(proxy: &Proxy, active: u64) {
    ferry_testkit::wait_until(WAIT, "the tap count in /state", || async {
        (tap_state(proxy).await["active"] == active).then_some(())
    })
    .await
    .unwrap();
}

async fn get(url: &str) -> client::Reply {
    client::get(url).await.expect("request through the proxy")
}

#[tokio::test]
async fn matching_requests_show_request_response_and_end() {
    let app = app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut tap = observe(&proxy, Some(path_prefix("/slow")), 0).await;

    // Not matching: sent first, so a leak would be the first event seen.
    get(&format!("http://{}/fast", proxy.inbound)).await;
    let reply = get(&format!("http://{}/slow?x=1", proxy.inbound)).await;
    assert_eq!(reply.status, 201);

    let req = next(&mut tap).await;
    let Event::RequestInit(init) = http(&req) else {
        panic!("expected RequestInit, got {req:?}")
    };
    assert_eq!(init.path, "/slow?x=1");
    assert_eq!(init.authority, proxy.inbound.to_string());
    assert_eq!(
        init.method,
        Some(HttpMethod::from(http::Method::GET)),
        "{init:?}"
    );
    assert_eq!(
        req.proxy_direction,
        tap_event::ProxyDirection::Inbound as i32
    );
    assert_eq!(addr(&req.destination), app.addr);
    assert!(addr(&req.source).ip().is_loopback());
    assert_eq!(labels(&req.source_meta)["tls"], "no_tls_from_remote");
    let id = init.id.expect("a stream id");

    let rsp = next(&mut tap).await;
    let Event::ResponseInit(rsp_init) = http(&rsp) else {
        panic!("expected ResponseInit, got {rsp:?}")
    };
    assert_eq!(rsp_init.id, Some(id));
    assert_eq!(rsp_init.http_status, 201);
    let latency: Duration = rsp_init.since_request_init.unwrap().try_into().unwrap();
    assert!(latency >= Duration::from_millis(60), "{latency:?}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    let end = next(&mut tap).await;
    let Event::ResponseEnd(end) = http(&end) else {
        panic!("expected ResponseEnd, got {end:?}")
    };
    assert_eq!(end.id, Some(id));
    assert_eq!(end.response_bytes, 5);
    assert_eq!(end.eos, None, "a plain HTTP/1 end of stream");
    let total: Duration = end.since_request_init.unwrap().try_into().unwrap();
    assert!(total >= latency);
}

#[tokio::test]
async fn grpc_status_from_trailers_ends_the_event() {
    let app = app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut tap = observe(&proxy, None, 0).await;
    let reply = client::get_version(
        &format!("http://{}/grpc", proxy.inbound),
        http::Version::HTTP_2,
    )
    .await
    .unwrap();
    assert_eq!(reply.trailers.unwrap()["grpc-status"], "5");
    let _req = next(&mut tap).await;
    let _rsp = next(&mut tap).await;
    let end = next(&mut tap).await;
    let Event::ResponseEnd(end) = http(&end) else {
        panic!("expected ResponseEnd, got {end:?}")
    };
    assert_eq!(
        end.eos.as_ref().and_then(|e| e.end),
        Some(eos::End::GrpcStatusCode(5))
    );
    assert_eq!(end.response_bytes, 5);
}

#[tokio::test]
async fn limit_ends_the_tap_after_that_many_requests() {
    let app = app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut tap = observe(&proxy, None, 2).await;
    for _ in 0..3 {
        get(&format!("http://{}/", proxy.inbound)).await;
    }
    let mut kinds = Vec::new();
    while let Some(e) = tokio::time::timeout(WAIT, tap.message())
        .await
        .expect("the stream to end within 5 s")
        .unwrap()
    {
        kinds.push(match http(&e) {
            Event::RequestInit(_) => "req",
            Event::ResponseInit(_) => "rsp",
            Event::ResponseEnd(_) => "end",
        });
    }
    assert_eq!(kinds, ["req", "rsp", "end", "req", "rsp", "end"]);
    wait_active(&proxy, 0).await;
}

#[tokio::test]
async fn filters_on_method_addresses_and_negation() {
    let app = app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let post = http_match(mh::Match::Method(http::Method::POST.into()));
    let to_app = Match {
        r#match: Some(m::Match::All(m::Seq {
            matches: vec![
                Match {
                    r#match: Some(m::Match::Destination(m::Tcp {
                        r#match: Some(tcp::Match::Netmask(tcp::Netmask {
                            ip: Some(app.addr.ip().into()),
                            mask: 32,
                        })),
                    })),
                },
                Match {
                    r#match: Some(m::Match::Destination(m::Tcp {
                        r#match: Some(tcp::Match::Ports(tcp::PortRange {
                            min: app.addr.port().into(),
                            max: app.addr.port().into(),
                        })),
                    })),
                },
                Match {
                    r#match: Some(m::Match::Not(Box::new(path_prefix("/skip")))),
                },
            ],
        })),
    };
    let mut posts = observe(&proxy, Some(post), 0).await;
    let mut app_only = observe(&proxy, Some(to_app), 0).await;
    wait_active(&proxy, 2).await;

    get(&format!("http://{}/skip", proxy.inbound)).await;
    get(&format!("http://{}/shown", proxy.inbound)).await;
    let req = Request::post(format!("http://{}/posted", proxy.inbound))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    client::send(&client::http1(), req).await.unwrap();

    let first = next(&mut app_only).await;
    let Event::RequestInit(init) = http(&first) else {
        panic!("{first:?}")
    };
    assert_eq!(init.path, "/shown", "the negated path is skipped");
    let first = next(&mut posts).await;
    let Event::RequestInit(init) = http(&first) else {
        panic!("{first:?}")
    };
    assert_eq!(
        init.path, "/posted",
        "only the POST matches the method filter"
    );
}

#[tokio::test]
async fn outbound_events_name_the_upstream_as_destination() {
    let app = app().await;
    let proxy = Proxy::upstreams(&[&app.addr.to_string()]).await;
    let mut tap = observe(&proxy, None, 1).await;
    get(&proxy.upstream_url("/out")).await;
    let req = next(&mut tap).await;
    assert_eq!(
        req.proxy_direction,
        tap_event::ProxyDirection::Outbound as i32
    );
    assert_eq!(addr(&req.destination), app.addr);
    assert_eq!(
        labels(&req.destination_meta)["tls"],
        "not_provided_by_service_discovery"
    );
}

#[tokio::test]
async fn malformed_matches_are_refused() {
    let proxy = Proxy::inbound_to("127.0.0.1:9".parse().unwrap()).await;
    let mut client = TapClient::connect(format!("http://{}", proxy.tap))
        .await
        .unwrap();
    let err = client
        .observe(ObserveRequest {
            limit: 0,
            r#match: Some(Match { r#match: None }),
            extract: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert_eq!(tap_state(&proxy).await["active"], 0);
}

/// The hot path's promise: with nobody tapping, no request does tap work; a tap makes
/// requests do it; once the tap is gone, they stop again.
#[tokio::test]
async fn an_idle_proxy_does_no_tap_work() {
    let app = app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    for _ in 0..5 {
        get(&format!("http://{}/", proxy.inbound)).await;
    }
    assert_eq!(tap_state(&proxy).await["tapped_requests"], 0);

    let mut tap = observe(&proxy, None, 0).await;
    get(&format!("http://{}/", proxy.inbound)).await;
    let _ = next(&mut tap).await;
    assert_eq!(tap_state(&proxy).await["tapped_requests"], 1);

    drop(tap);
    wait_active(&proxy, 0).await;
    for _ in 0..5 {
        get(&format!("http://{}/", proxy.inbound)).await;
    }
    let state = tap_state(&proxy).await;
    assert_eq!(state["tapped_requests"], 1, "{state}");
    assert_eq!(state["dropped_events"], 0, "{state}");
}
