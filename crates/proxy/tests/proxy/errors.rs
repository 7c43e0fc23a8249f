//! Errors the proxy makes: each is a proper response carrying `l5d-proxy-error` and
//! `ferry-proxy-error`, counted apart from application failures; bad framing never reaches
//! the application.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ferry_proxy::Config;
use ferry_testkit::{
    client, metric,
    server::{full, TestServer},
};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Pair, Proxy};

fn assert_labelled(rsp: &client::Reply, status: StatusCode, reason: &str) {
    assert_eq!(rsp.status, status, "{}", rsp.text());
    assert_eq!(rsp.headers["l5d-proxy-error"], reason);
    assert_eq!(rsp.headers["ferry-proxy-error"], reason);
    assert!(
        rsp.text().starts_with(&format!("ferry-proxy: {reason}: ")),
        "{}",
        rsp.text()
    );
}

/// A server recording every request line and header block it receives.
async fn recording_app() -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = TestServer::http(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let mut line = format!("{} {}", req.method(), req.uri().path());
            for (k, v) in req.headers() {
                line.push_str(&format!(" {k}={}", v.to_str().unwrap_or("?")));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            line.push_str(&format!(" body={:?}", String::from_utf8_lossy(&body)));
            log.lock().unwrap().push(line);
            Response::new(full("ok"))
        }
    })
    .await;
    (app, seen)
}

#[tokio::test]
async fn a_dead_application_gets_a_labelled_502_and_the_proxies_keep_running() {
    let (app, _) = recording_app().await;
    let app_addr = app.addr;
    let pair = Pair::to(app_addr).await;
    assert_eq!(
        client::get(&pair.url("/")).await.unwrap().status,
        StatusCode::OK
    );
    drop(app);

    let rsp = client::get(&pair.url("/")).await.unwrap();
    assert_labelled(&rsp, StatusCode::BAD_GATEWAY, "connect-refused");
    let b = pair
        .b
        .wait_metric(
            "inbound_http_errors_total",
            &[("error", "connect-refused")],
            1.0,
        )
        .await;
    assert_eq!(
        metric(
            &b,
            "response_total",
            &[
                ("direction", "inbound"),
                ("status_code", "502"),
                ("error", "connect-refused")
            ]
        ),
        Some(1.0)
    );
    // A forwarded B's answer as is: for A it is the peer's response, not an error of its own.
    let a = pair
        .a
        .wait_metric(
            "response_total",
            &[("direction", "outbound"), ("status_code", "502")],
            1.0,
        )
        .await;
    assert_eq!(metric(&a, "outbound_http_errors_total", &[]), None);

    // The application comes back on the same port: traffic flows again.
    let listener = tokio::net::TcpListener::bind(app_addr).await.unwrap();
    let _app = TestServer::http_on_listener(listener, |_req| async { Response::new(full("back")) });
    let rsp = client::get(&pair.url("/")).await.unwrap();
    assert_eq!(rsp.text(), "back");
}

#[tokio::test]
async fn a_dead_peer_proxy_is_reported_by_the_client_proxy_and_grpc_callers_get_a_status() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let a = Proxy::upstreams(&[&dead]).await;
    let rsp = client::get(&a.upstream_url("/")).await.unwrap();
    assert_labelled(&rsp, StatusCode::BAD_GATEWAY, "connect-refused");

    let req = Request::post(a.upstream_url("/emojivoto.v1.EmojiService/ListAll"))
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::default())
        .unwrap();
    let rsp = client::send(&client::h2c(), req).await.unwrap();
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.headers["grpc-status"], "14", "UNAVAILABLE");
    assert_eq!(rsp.headers["l5d-proxy-error"], "connect-refused");
    assert!(rsp.headers["grpc-message"]
        .to_str()
        .unwrap()
        .contains(&dead));
    let m = a
        .wait_metric(
            "outbound_http_errors_total",
            &[("error", "connect-refused")],
            2.0,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                ("grpc_status", "14"),
                ("classification", "failure"),
                ("error", "connect-refused")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_connect_that_hangs_times_out_with_504() {
    // A listener whose accept queue is full: further SYNs are dropped, connects hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.timeouts.connect = Duration::from_millis(300);
    config.upstreams = vec![format!("127.0.0.1:0={addr}").parse().unwrap()];
    let a = Proxy::start(config).await;
    let rsp = client::get(&a.upstream_url("/")).await.unwrap();
    assert_labelled(&rsp, StatusCode::GATEWAY_TIMEOUT, "connect-timeout");
    drop(listener);
}

#[tokio::test]
async fn generic_outbound_without_a_destination_is_no_route_and_self_loops_are_refused() {
    let (app, seen) = recording_app().await;
    let proxy = Proxy::inbound_to(app.addr).await;

    // Routed by authority: reaches the app.
    let rsp = client::get(&format!("http://{}/by-host", proxy.outbound)).await;
    // The request's Host is the outbound listener itself: a loop, refused.
    assert_labelled(&rsp.unwrap(), StatusCode::LOOP_DETECTED, "loop-detected");
    let req = Request::get(format!("http://{}/by-host", proxy.outbound))
        .header("host", app.addr.to_string())
        .body(Full::default())
        .unwrap();
    let rsp = client::send(&client::http1(), req).await.unwrap();
    assert_eq!(rsp.text(), "ok");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("GET /by-host")));

    // HTTP/1.0 without a Host and no original destination: nowhere to go.
    let raw = raw_exchange(proxy.outbound, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        raw.starts_with("HTTP/1.0 503") || raw.starts_with("HTTP/1.1 503"),
        "{raw}"
    );
    assert!(raw.contains("l5d-proxy-error: no-route"), "{raw}");
    let m = proxy
        .wait_metric("outbound_http_errors_total", &[("error", "no-route")], 1.0)
        .await;
    assert_eq!(
        metric(
            &m,
            "outbound_http_errors_total",
            &[("error", "loop-detected")]
        ),
        Some(1.0)
    );
}

/// Writes `request` on a fresh connection and reads until the proxy closes it, which it
/// must do within 5 s.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "the proxy kept the connection open after: {text}"
    );
    text
}

#[tokio::test]
async fn smuggling_attempts_never_reach_the_application() {
    let (app, seen) = recording_app().await;
    let proxy = Proxy::inbound_to(app.addr).await;

    // CL.TE: a front end honouring Content-Length would see one request; a back end honouring
    // Transfer-Encoding would see a second, smuggled one.
    let cl_te = b"POST /first HTTP/1.1\r\nHost: app\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n";
    let raw = raw_exchange(proxy.inbound, cl_te).await;
    // Conflicting framing closes the connection after one response.
    assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{raw}");
    // Differing Content-Length values, and a Transfer-Encoding that does not end in chunked.
    for bad in [
        &b"POST /dup HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        &b"POST /te HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\n\r\nxxxx"[..],
        &b"POST /te2 HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"[..],
    ] {
        let raw = raw_exchange(proxy.inbound, bad).await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
        // The proxy says it refused the request, and why.
        assert!(raw.contains("l5d-proxy-error: malformed-request"), "{raw}");
        assert!(raw.contains("connection: close"), "{raw}");
    }
    // HTTP/1.1 without Host is malformed.
    let raw = raw_exchange(proxy.inbound, b"GET /nohost HTTP/1.1\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("l5d-proxy-error: malformed-request"), "{raw}");

    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|l| l.contains("smuggled")
            || l.contains("/dup")
            || l.contains("/te")
            || l.contains("/nohost")),
        "{seen:?}"
    );
    // The one request that got through was framed by Transfer-Encoding alone.
    let first: Vec<_> = seen
        .iter()
        .filter(|l| l.starts_with("POST /first"))
        .collect();
    assert_eq!(first.len(), 1, "{seen:?}");
    assert!(!first[0].contains("content-length="), "{seen:?}");
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let (app, seen) = recording_app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut many = String::from("GET /many HTTP/1.1\r\nHost: app\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let raw = raw_exchange(proxy.inbound, many.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 431"), "{raw}");
    assert!(raw.contains("l5d-proxy-error: headers-too-large"), "{raw}");
    let huge = format!(
        "GET /huge HTTP/1.1\r\nHost: app\r\nx-big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let raw = raw_exchange(proxy.inbound, huge.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 431"), "{raw}");
    assert!(raw.contains("l5d-proxy-error: headers-too-large"), "{raw}");
    // A header that is not a header, after a valid request line.
    let raw = raw_exchange(
        proxy.inbound,
        b"GET / HTTP/1.1\r\nHost: app\r\nBad Header: x\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("l5d-proxy-error: malformed-request"), "{raw}");
    assert!(seen.lock().unwrap().is_empty());
    let m = proxy
        .wait_metric(
            "inbound_http_errors_total",
            &[("error", "headers-too-large")],
            2.0,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[("status_code", "431"), ("error", "headers-too-large")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn an_upstream_that_hangs_up_or_speaks_nonsense_is_labelled() {
    // Reads the request, then closes without answering.
    let hangs_up = TestServer::tcp(|mut sock| async move {
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
    })
    .await;
    let proxy = Proxy::inbound_to(hangs_up.addr).await;
    let rsp = client::get(&format!("http://{}/", proxy.inbound))
        .await
        .unwrap();
    assert_labelled(&rsp, StatusCode::BAD_GATEWAY, "upstream-reset");

    // Answers with something that is not HTTP.
    let nonsense = TestServer::tcp(|mut sock| async move {
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
        let _ = sock.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    })
    .await;
    let proxy = Proxy::inbound_to(nonsense.addr).await;
    let rsp = client::get(&format!("http://{}/", proxy.inbound))
        .await
        .unwrap();
    assert_labelled(&rsp, StatusCode::BAD_GATEWAY, "upstream-protocol");
    let m = proxy
        .wait_metric(
            "inbound_http_errors_total",
            &[("error", "upstream-protocol")],
            1.0,
        )
        .await;
    assert_eq!(
        metric(
            &m,
            "response_total",
            &[
                ("status_code", "502"),
                ("classification", "failure"),
                ("error", "upstream-protocol")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn state_lists_listeners_and_open_connections() {
    let (app, _) = recording_app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut held = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf))
        .await
        .unwrap();
    let url = format!("http://{}/state", proxy.admin);
    let state: serde_json::Value =
        serde_json::from_str(&client::get(&url).await.unwrap().text()).unwrap();
    let inbound = proxy.inbound.to_string();
    let conns = state["connections"].as_array().unwrap();
    let held_entry = conns
        .iter()
        .find(|c| c["listener"] == "inbound" && c["local"] == inbound.as_str())
        .unwrap_or_else(|| panic!("held connection missing: {state}"));
    assert_eq!(held_entry["protocol"], "http/1");
    assert_eq!(held_entry["target"], app.addr.to_string().as_str());
    let kinds: Vec<_> = state["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["inbound", "outbound", "admin", "tap"]);
    assert_eq!(state["draining"], false);
    assert_eq!(
        state["backends"]["inbound"][0]["target"],
        app.addr.to_string().as_str()
    );
}

/// An app answering GETs on keep-alive connections; a POST it reads and never answers.
/// Each connection's end is announced, so a test sees the upstream request aborted.
async fn silent_post_app() -> (TestServer, Arc<tokio::sync::Notify>) {
    let closed = Arc::new(tokio::sync::Notify::new());
    let c = closed.clone();
    let app = TestServer::tcp(move |mut sock| {
        let closed = c.clone();
        async move {
            let mut seen = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let get = seen.starts_with(b"GET ");
                    seen.drain(..end + 4);
                    if get {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if sock.write_all(ok).await.is_err() {
                            break;
                        }
                        continue;
                    }
                }
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
            closed.notify_one();
        }
    })
    .await;
    (app, closed)
}

/// Issue #20: a client's malformed chunked body is the client's error: `400
/// malformed-request`, the upstream request aborted, counted as such — never `502
/// upstream-reset`. Both HTTP/1 paths: a connection whose first request is chunked goes
/// straight to the general path; one that starts on the fast path hands over mid-way.
#[tokio::test]
async fn a_malformed_request_body_is_the_clients_error() {
    let (app, closed) = silent_post_app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let bodies: [&[u8]; 2] = [
        // A chunk size that overflows 64 bits.
        b"5\r\nhello\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nxx\r\n0\r\n\r\n",
        // Chunk framing with a bare LF.
        b"5\r\nhello\r\n5\nworld\r\n0\r\n\r\n",
    ];
    let mut expected = 0.0;
    for body in bodies {
        for fast_first in [false, true] {
            let mut request = Vec::new();
            if fast_first {
                request.extend_from_slice(b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n");
            }
            request.extend_from_slice(
                b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            request.extend_from_slice(body);
            let raw = raw_exchange(proxy.inbound, &request).await;
            let answers: Vec<&str> = raw.split("HTTP/1.1 ").skip(1).collect();
            let last = answers.last().copied().unwrap_or_default();
            assert_eq!(answers.len(), 1 + usize::from(fast_first), "{raw}");
            assert!(last.starts_with("400"), "{raw}");
            assert!(last.contains("l5d-proxy-error: malformed-request"), "{raw}");
            assert!(last.contains("connection: close"), "{raw}");
            // The upstream connection carrying the request was closed, not left waiting.
            tokio::time::timeout(Duration::from_secs(5), closed.notified())
                .await
                .expect("the upstream request is aborted");
            expected += 1.0;
        }
    }
    let text = proxy
        .wait_metric(
            "inbound_http_errors_total",
            &[("error", "malformed-request")],
            expected,
        )
        .await;
    assert_eq!(
        ferry_testkit::metric_sum(
            &text,
            "inbound_http_errors_total",
            &[("error", "upstream-reset")]
        ),
        0.0,
        "{text}"
    );
    assert_eq!(
        ferry_testkit::metric_sum(
            &text,
            "response_total",
            &[("error", "malformed-request"), ("status_code", "400")]
        ),
        expected,
        "{text}"
    );
}

/// Issue #20's metrics-cardinality flood: hundreds of requests with distinct 20 KB `Host`
/// headers, then hundreds with distinct valid ones. The long ones share one `invalid`
/// series, the valid ones stop at the series cap (counted as dropped), `/metrics` stays
/// small, and a well-behaved client's series stay intact and keep counting.
#[tokio::test]
async fn a_host_header_flood_keeps_metrics_bounded() {
    let app = TestServer::http(|_req| async { Response::new(full("ok")) }).await;
    let mut config = Config::for_tests(app.addr);
    config.metrics.max_series = 16;
    let proxy = Proxy::start(config).await;
    let sock = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
            .await
            .unwrap();
    let _conn = tokio::spawn(conn);
    let mut request = |host: String| {
        let req = Request::get("/")
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let sent = send.send_request(req);
        async move {
            let rsp = tokio::time::timeout(Duration::from_secs(5), sent)
                .await
                .expect("answered within 5 s")
                .unwrap();
            assert_eq!(rsp.status(), StatusCode::OK);
            rsp.into_body().collect().await.unwrap();
        }
    };
    for _ in 0..5 {
        request("web.example:80".into()).await;
    }
    for i in 0..300 {
        request(format!("h{i}-{}", "x".repeat(20 * 1024))).await;
    }
    for i in 0..300 {
        request(format!("h{i}.flood.example")).await;
    }
    for _ in 0..5 {
        request("web.example:80".into()).await;
    }
    let text = proxy.metrics().await;
    assert!(text.len() < 256 * 1024, "/metrics is {} bytes", text.len());
    let web = [("direction", "inbound"), ("authority", "web.example:80")];
    assert_eq!(metric(&text, "request_total", &web), Some(10.0), "{text}");
    let invalid = [("direction", "inbound"), ("authority", "invalid")];
    assert_eq!(
        metric(&text, "request_total", &invalid),
        Some(300.0),
        "{text}"
    );
    let dropped = ferry_testkit::metric_sum(
        &text,
        "proxy_metrics_series_dropped_total",
        &[("family", "http"), ("direction", "inbound")],
    );
    assert!(dropped >= 300.0 - 16.0, "{dropped}\n{text}");
    assert_eq!(
        ferry_testkit::metric_sum(&text, "proxy_metrics_render_skipped_series", &[]),
        0.0
    );
    assert!(
        !text.contains(&"x".repeat(300)),
        "a raw host reached a label"
    );
}

/// An upstream that takes the request and never starts its answer is cut off after
/// `--response-head-timeout` with 504 `response-head-timeout` (issue #20), on the HTTP/1
/// fast path, the HTTP/2 path and for gRPC callers; a quick answer on the same
/// connection afterwards is untouched.
#[tokio::test]
async fn an_upstream_that_never_answers_times_out_with_a_labelled_504() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            std::future::pending::<()>().await;
        }
        Response::new(full("quick"))
    })
    .await;
    let mut config = Config::for_tests(app.addr);
    config.timeouts.response_head = Some(Duration::from_millis(300));
    let proxy = Proxy::start(config).await;
    let slow = format!("http://{}/slow", proxy.inbound);
    let quick = format!("http://{}/quick", proxy.inbound);

    let h1 = client::http1();
    let started = std::time::Instant::now();
    let req = Request::get(&slow).body(Full::default()).unwrap();
    let rsp = client::send(&h1, req).await.unwrap();
    assert_labelled(&rsp, StatusCode::GATEWAY_TIMEOUT, "response-head-timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let req = Request::get(&quick).body(Full::default()).unwrap();
    assert_eq!(client::send(&h1, req).await.unwrap().text(), "quick");

    let h2 = client::h2c();
    let req = Request::get(&slow)
        .version(Version::HTTP_2)
        .body(Full::default())
        .unwrap();
    let rsp = client::send(&h2, req).await.unwrap();
    assert_labelled(&rsp, StatusCode::GATEWAY_TIMEOUT, "response-head-timeout");
    let req = Request::get(&quick)
        .version(Version::HTTP_2)
        .body(Full::default())
        .unwrap();
    assert_eq!(client::send(&h2, req).await.unwrap().text(), "quick");

    let req = Request::post(&slow)
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(Full::default())
        .unwrap();
    let rsp = client::send(&h2, req).await.unwrap();
    assert_eq!(rsp.status, StatusCode::OK);
    assert_eq!(rsp.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(rsp.headers["l5d-proxy-error"], "response-head-timeout");

    // A gRPC call that asks for a longer deadline gets it.
    let req = Request::post(&slow)
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "1S")
        .body(Full::default())
        .unwrap();
    let started = std::time::Instant::now();
    let rsp = client::send(&h2, req).await.unwrap();
    assert_eq!(rsp.headers["l5d-proxy-error"], "response-head-timeout");
    assert!(started.elapsed() >= Duration::from_secs(1));

    proxy
        .wait_metric(
            "inbound_http_errors_total",
            &[("error", "response-head-timeout")],
            4.0,
        )
        .await;
}

/// A client that sends a request and then reads nothing of a large answer has its
/// connection closed after `--client-write-timeout`, counted as
/// `inbound_tcp_errors_total{error="client-write-timeout"}` (issue #20).
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
    let big = bytes::Bytes::from(vec![b'x'; 64 * 1024 * 1024]);
    let app = TestServer::http(move |_req| {
        let big = big.clone();
        async move { Response::new(full(big)) }
    })
    .await;
    let mut config = Config::for_tests(app.addr);
    config.timeouts.client_write = Some(Duration::from_millis(300));
    let proxy = Proxy::start(config).await;

    let mut client = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .unwrap();
    proxy
        .wait_metric(
            "inbound_tcp_errors_total",
            &[("error", "client-write-timeout")],
            1.0,
        )
        .await;
    // The connection is closed: what the kernel held for the client ends well short of
    // the whole body.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("the connection ends");
    assert!(
        read.is_err() || got.len() < 64 * 1024 * 1024,
        "{} bytes",
        got.len()
    );
}

/// An upstream that sends its response head and the start of its body, then nothing more,
/// is cut off after `--body-idle-timeout`: the client's response ends early (HTTP/1: the
/// connection is closed; HTTP/2: the stream is reset) and it is counted as
/// `body-idle-timeout`, on the fast path and the general one (issue #20).
#[tokio::test]
async fn a_response_body_that_goes_quiet_is_cut_off() {
    use http_body::Frame;
    use tokio_stream::StreamExt;
    let app = TestServer::http(|_req| async {
        let frames = tokio_stream::iter([Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            Frame::data(bytes::Bytes::from_static(b"first part;")),
        )])
        .chain(tokio_stream::pending());
        Response::builder()
            .header("content-length", "1000")
            .body(http_body_util::StreamBody::new(frames).boxed())
            .unwrap()
    })
    .await;
    let mut config = Config::for_tests(app.addr);
    config.timeouts.body_idle = Some(Duration::from_millis(300));
    let proxy = Proxy::start(config).await;
    let url = format!("http://{}/quiet", proxy.inbound);

    for version in [Version::HTTP_11, Version::HTTP_2] {
        let client = if version == Version::HTTP_2 {
            client::h2c()
        } else {
            client::http1()
        };
        let req = Request::get(&url)
            .version(version)
            .body(Full::default())
            .unwrap();
        let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
            .await
            .expect("the head comes")
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = tokio::time::timeout(Duration::from_secs(5), rsp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{version:?}: the body is cut off, not left hanging"));
        assert!(body.is_err(), "{version:?}: the body ends in an error");
    }
    proxy
        .wait_metric(
            "response_total",
            &[("direction", "inbound"), ("error", "body-idle-timeout")],
            2.0,
        )
        .await;
}
