//! HTTP/2 (h2c, prior knowledge) through a proxy pair: multiplexing over one upstream
//! connection per hop, and trailers carried end to end.

use bytes::Bytes;
use ferry_testkit::{client, metric, server::TestServer};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use crate::Pair;

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
