//! HTTP/1.1 through a proxy pair: keep-alive, streaming bodies both ways, upgrades, header
//! hygiene, and the metrics both proxies record.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use bytes::Bytes;
use ferry_testkit::{
    client, metric,
    server::{full, Body, TestServer},
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Pair;

/// A server that answers `/status/N` with N, echoes request headers as `x-seen-*`, and
/// reports the body size it read.
async fn app() -> TestServer {
    TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        let mut seen = Vec::new();
        for (k, v) in req.headers() {
            seen.push(format!("{k}={}", v.to_str().unwrap_or("?")));
        }
        let status = path
            .strip_prefix("/status/")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let len = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        Response::builder()
            .status(status)
            .header("x-seen", seen.join(";"))
            .header("x-body-len", len)
            .body(full(format!("hello from {path}")))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn requests_flow_and_both_proxies_count_them() {
    let app = app().await;
    let pair = Pair::to(app.addr).await;

    let http = client::http1();
    for i in 0..5 {
        let req = Request::get(pair.url(&format!("/hello/{i}")))
            .body(Default::default())
            .unwrap();
        let rsp = client::send(&http, req).await.unwrap();
        assert_eq!(rsp.status, StatusCode::OK);
        assert_eq!(rsp.text(), format!("hello from /hello/{i}"));
        assert!(!rsp.headers.contains_key("l5d-proxy-error"));
    }
    let failing = client::send(
        &http,
        Request::get(pair.url("/status/503"))
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(failing.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !failing.headers.contains_key("l5d-proxy-error"),
        "application errors are not labelled"
    );

    let b_inbound = pair.b.inbound.to_string();
    let a = pair
        .a
        .wait_metric(
            "response_total",
            &[("direction", "outbound"), ("classification", "success")],
            5.0,
        )
        .await;
    let out = [
        ("direction", "outbound"),
        ("authority", b_inbound.as_str()),
        ("target_addr", b_inbound.as_str()),
    ];
    assert_eq!(metric(&a, "request_total", &out), Some(6.0));
    assert_eq!(
        metric(
            &a,
            "response_total",
            &[
                ("direction", "outbound"),
                ("status_code", "503"),
                ("classification", "failure")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &a,
            "response_latency_ms_count",
            &[("direction", "outbound"), ("status_code", "200")]
        ),
        Some(5.0)
    );
    // One client connection, kept alive, and one pooled connection to B.
    assert_eq!(
        metric(
            &a,
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "src")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &a,
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "dst")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &a,
            "tcp_detect_total",
            &[("direction", "outbound"), ("protocol", "http/1")]
        ),
        Some(1.0)
    );

    let b = pair
        .b
        .wait_metric(
            "response_total",
            &[("direction", "inbound"), ("classification", "success")],
            5.0,
        )
        .await;
    let app_addr = app.addr.to_string();
    let host = pair.a.upstreams[0].to_string();
    let inb = [
        ("direction", "inbound"),
        ("authority", host.as_str()),
        ("target_addr", app_addr.as_str()),
    ];
    assert_eq!(metric(&b, "request_total", &inb), Some(6.0));
    assert_eq!(
        metric(
            &b,
            "tcp_open_connections",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &b,
            "tcp_read_bytes_total",
            &[("direction", "inbound"), ("peer", "src")]
        )
        .unwrap()
            > 100.0
    );
}

#[tokio::test]
async fn chunked_bodies_stream_both_ways() {
    // The app answers with a chunked body it produces slowly, after reading the whole request.
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let chunked = req
            .headers()
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
        >(4);
        tokio::spawn(async move {
            for i in 0..10 {
                let _ = tx
                    .send(Ok(http_body::Frame::data(Bytes::from(format!(
                        "chunk{i};"
                    )))))
                    .await;
            }
        });
        let body: Body = BodyExt::boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        Response::builder()
            .header("x-request-len", len)
            .header("x-request-te", chunked.unwrap_or_default())
            .body(body)
            .unwrap()
    })
    .await;
    let pair = Pair::to(app.addr).await;

    let mut sock = tokio::net::TcpStream::connect(pair.a.upstreams[0])
        .await
        .unwrap();
    sock.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut rsp = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            rsp.extend_from_slice(&buf[..n]);
            if n == 0 || rsp.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&rsp);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("x-request-len: 11\r\n"), "{text}");
    assert!(
        text.contains("x-request-te: chunked\r\n"),
        "chunked upload stays chunked: {text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{text}"
    );
    for i in 0..10 {
        assert!(text.contains(&format!("chunk{i};")), "{text}");
    }
}

#[tokio::test]
async fn large_bodies_stream_without_buffering() {
    let app = app().await;
    let pair = Pair::to(app.addr).await;
    // 16 MiB sent in 64 KiB chunks; the app reports what it read.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let rsp = client::upload_stream(
        &pair.url("/upload"),
        chunk,
        256,
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(
        rsp.headers["x-body-len"],
        (16 * 1024 * 1024).to_string().as_str()
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let app = app().await;
    let pair = Pair::to(app.addr).await;
    let req = Request::get(pair.url("/h"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-app", "kept")
        .body(Default::default())
        .unwrap();
    let rsp = client::send(&client::http1(), req).await.unwrap();
    let seen = rsp.headers["x-seen"].to_str().unwrap().to_string();
    assert!(seen.contains("x-app=kept"), "{seen}");
    for gone in ["x-hop=", "keep-alive=", "proxy-connection="] {
        assert!(!seen.contains(gone), "{gone} was forwarded: {seen}");
    }
}

#[tokio::test]
async fn websocket_style_upgrades_pass_through() {
    // The app accepts any upgrade and then echoes bytes, upper-cased.
    let app = TestServer::http(|mut req: Request<hyper::body::Incoming>| async move {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap()
    })
    .await;
    let pair = Pair::to(app.addr).await;

    let mut sock = tokio::net::TcpStream::connect(pair.a.upstreams[0])
        .await
        .unwrap();
    sock.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sock.read_exact(&mut byte),
        )
        .await
        .unwrap()
        .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    sock.write_all(b"ping through the mesh").await.unwrap();
    let mut echoed = [0u8; 21];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sock.read_exact(&mut echoed),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&echoed, b"PING THROUGH THE MESH");
}

#[tokio::test]
async fn many_requests_reuse_pooled_connections() {
    let app = app().await;
    let pair = Pair::to(app.addr).await;
    let http = client::http1();
    let served = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        let rsp = client::send(
            &http,
            Request::get(pair.url("/"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(rsp.status, StatusCode::OK);
        served.fetch_add(1, Ordering::Relaxed);
    }
    let b = pair
        .b
        .wait_metric("request_total", &[("direction", "inbound")], 50.0)
        .await;
    assert_eq!(served.load(Ordering::Relaxed), 50);
    assert_eq!(
        metric(
            &b,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "dst")]
        ),
        Some(1.0)
    );
}
