//! HTTP/2 (h2c, prior knowledge) through a proxy pair: multiplexing over one upstream
//! connection per hop, and trailers carried end to end.

use bytes::Bytes;
use ferry_testkit::{client, metric, server::TestServer};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use crate::{Pair, Proxy};

async fn app() -> TestServer {
    TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let version = format!("{:?}", req.version());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        let body = Full::new(Bytes::from(version))
            .map_err(|e| match e {})
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        Response::builder()
            .header("x-app", "h2")
            .body(body)
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn h2c_streams_multiplex_and_keep_trailers() {
    let app = app().await;
    let pair = Pair::to(app.addr).await;
    let h2 = client::h2c();
    let mut calls = Vec::new();
    for i in 0..20 {
        let h2 = h2.clone();
        let url = pair.url(&format!("/stream/{i}"));
        calls.push(tokio::spawn(async move {
            let req = Request::get(url)
                .version(Version::HTTP_2)
                .body(Full::default())
                .unwrap();
            client::send(&h2, req).await.unwrap()
        }));
    }
    for call in calls {
        let rsp = call.await.unwrap();
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.text(), "HTTP/2.0", "the upstream hop speaks HTTP/2 too");
        assert_eq!(
            rsp.trailers.as_ref().expect("trailers")["x-checksum"],
            "abc123"
        );
    }
    let a = pair
        .a
        .wait_metric("response_total", &[("direction", "outbound")], 20.0)
        .await;
    assert_eq!(
        metric(
            &a,
            "tcp_detect_total",
            &[("direction", "outbound"), ("protocol", "http/2")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &a,
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "dst")]
        ),
        Some(1.0),
        "20 streams share one connection to the peer proxy"
    );
    let b = pair
        .b
        .wait_metric("response_total", &[("direction", "inbound")], 20.0)
        .await;
    assert_eq!(
        metric(
            &b,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "dst")]
        ),
        Some(1.0)
    );
}

/// A 3 MiB upload and its echo outgrow every default HTTP/2 window on both hops, so they
/// pass only when the proxy streams bodies by flow control (and gives the window back).
#[tokio::test]
async fn h2c_large_bodies_flow_both_ways() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(ferry_testkit::server::full(body))
    })
    .await;
    let pair = Pair::to(app.addr).await;
    let upload: Bytes = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let req = Request::post(pair.url("/echo"))
        .version(Version::HTTP_2)
        .body(Full::new(upload.clone()))
        .unwrap();
    let rsp = client::send(&client::h2c(), req).await.unwrap();
    assert_eq!(rsp.status, StatusCode::OK);
    assert!(rsp.body == upload, "the echo comes back whole and in order");
}

/// When the application's server goes away and comes back, the proxy opens one new
/// HTTP/2 connection to it and carries on.
#[tokio::test]
async fn h2c_upstream_connection_is_replaced_after_it_closes() {
    let app = app().await;
    let addr = app.addr;
    let proxy = Proxy::inbound_to(addr).await;
    let h2 = client::h2c();
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", proxy.inbound))
            .version(Version::HTTP_2)
            .body(Full::default())
            .unwrap()
    };
    let rsp = client::send(&h2, get("/before")).await.unwrap();
    assert_eq!(rsp.status, StatusCode::OK);
    drop(app);
    let dst = [("direction", "inbound"), ("peer", "dst")];
    proxy.wait_metric("tcp_close_total", &dst, 1.0).await;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _app =
        TestServer::http_on_listener(listener, |_req: Request<hyper::body::Incoming>| async {
            Response::new(ferry_testkit::server::full("again"))
        });
    let mut calls = Vec::new();
    for i in 0..10 {
        let (h2, req) = (h2.clone(), get(&format!("/after/{i}")));
        calls.push(tokio::spawn(async move { client::send(&h2, req).await }));
    }
    for call in calls {
        let rsp = call.await.unwrap().unwrap();
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.text(), "again");
    }
    let text = proxy
        .wait_metric("response_total", &[("direction", "inbound")], 11.0)
        .await;
    assert_eq!(
        metric(&text, "tcp_open_total", &dst),
        Some(2.0),
        "the 10 requests after the restart share one new connection"
    );
}
