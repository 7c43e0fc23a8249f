//! The HTTP/1.1 fast path (`h1.rs`) on the wire: every response framing it must find the
//! end of (so the upstream connection can be reused), pipelining, pooled connections the
//! upstream closed while idle, and handing a connection to the general path mid-way.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use ferry_testkit::{client, server::TestServer};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{body::Frame, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

use crate::Proxy;

const WAIT: Duration = Duration::from_secs(5);

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Reads one request head from `sock` into `buf`; returns its request line, or `None`
/// when the connection closed.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head.lines().next().map(str::to_owned);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream written byte by byte: each path answers with one framing. Counts the
/// connections it accepts.
async fn framings_app(accepted: Arc<AtomicUsize>) -> TestServer {
    TestServer::tcp(move |mut sock| {
        accepted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = Vec::new();
            while let Some(line) = read_head(&mut sock, &mut buf).await {
                let answer: &[u8] = match line.split(' ').nth(1).unwrap_or("") {
                    "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
                    "/early" => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                    "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n",
                    "/close" => {
                        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                        return;
                    }
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                };
                if sock.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// One HTTP/1.1 client connection to `addr`, and the task driving it.
async fn connection(addr: std::net::SocketAddr) -> (SendRequest<Body>, JoinHandle<()>) {
    let sock = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
        .await
        .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Sends `req` on `send`; returns the status, the body and the `connection` header.
async fn exchange(
    send: &mut SendRequest<Body>,
    req: Request<Body>,
) -> (StatusCode, String, String) {
    tokio::time::timeout(WAIT, async {
        send.ready().await.unwrap();
        let rsp = send.send_request(req).await.unwrap();
        let status = rsp.status();
        let connection = rsp
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            connection,
        )
    })
    .await
    .expect("an answer within 5 s")
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "app")
        .body(empty())
        .unwrap()
}

#[tokio::test]
async fn every_response_framing_crosses_one_pooled_upstream_connection() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let app = framings_app(accepted.clone()).await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let (mut send, conn) = connection(proxy.inbound).await;

    let (status, body, _) = exchange(&mut send, get("/chunked")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello world"));
    // The 103 is dropped, as hyper's client does; the final answer follows.
    let (status, body, _) = exchange(&mut send, get("/early")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let head = Request::head("/head")
        .header("host", "app")
        .body(empty())
        .unwrap();
    let (status, body, _) = exchange(&mut send, head).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let (status, body, _) = exchange(&mut send, get("/empty")).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    // Had the proxy misjudged any body's end, it could not have reused the connection.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // A body that runs until the upstream closes ends the client's connection too.
    let (status, body, connection_header) = exchange(&mut send, get("/close")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "until the end"));
    assert_eq!(connection_header, "close");
    tokio::time::timeout(WAIT, conn)
        .await
        .expect("the proxy closes the client connection")
        .unwrap();

    let state = state(&proxy).await;
    assert_eq!(state["http1"]["fast_path_requests"], 5, "{state}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        hyper::Response::new(ferry_testkit::server::full(format!("{path}:{len};")))
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut sock = TcpStream::connect(proxy.inbound).await.unwrap();
    sock.write_all(
        b"GET /one HTTP/1.1\r\nHost: app\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut out))
        .await
        .expect("the proxy closes after the request that asked it to")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let (one, two, three) = (
        text.find("/one:0;").expect("first answer"),
        text.find("/two:5;").expect("second answer"),
        text.find("/three:0;").expect("third answer"),
    );
    assert!(one < two && two < three, "{text}");
}

#[tokio::test]
async fn a_body_that_arrives_over_many_reads_is_forwarded_whole() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let all_x = body.iter().all(|&b| b == b'x');
        hyper::Response::new(ferry_testkit::server::full(format!(
            "{} {all_x}",
            body.len()
        )))
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let (mut send, _conn) = connection(proxy.inbound).await;
    // 60,000 bytes: under the fast path's 64 KiB, and several of its 8 KiB reads.
    let upload = Request::post("/upload")
        .header("host", "app")
        .body(
            Full::new(Bytes::from(vec![b'x'; 60_000]))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let (status, body, _) = exchange(&mut send, upload).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "60000 true"));
    let state = state(&proxy).await;
    assert_eq!(state["http1"]["fast_path_requests"], 1, "{state}");
}

/// A body that trickles in for longer than the header read timeout is not cut off: the
/// connection goes to the general path, which streams bodies with no deadline, and the
/// request arrives whole. (A head that slow is still refused.)
#[tokio::test]
async fn a_body_slower_than_the_header_timeout_is_carried_by_the_general_path() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        hyper::Response::new(ferry_testkit::server::full(body))
    })
    .await;
    let mut config = ferry_proxy::Config::for_tests(app.addr);
    config.timeouts.header_read = Duration::from_millis(300);
    let proxy = Proxy::start(config).await;
    let mut sock = TcpStream::connect(proxy.inbound).await.unwrap();
    sock.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    sock.write_all(b"world").await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    let answered = tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&out).ends_with("helloworld") {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(answered.is_ok(), "no answer: {text}");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("helloworld"), "{text}");
    let state = state(&proxy).await;
    assert_eq!(
        state["http1"]["general_path_connections"]["slow request body"], 1,
        "{state}"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced() {
    // Answers one request per connection, then closes without saying so, as a server whose
    // keep-alive timeout is shorter than the proxy's does.
    let closed = Arc::new(tokio::sync::Notify::new());
    let accepted = Arc::new(AtomicUsize::new(0));
    let (c, a) = (closed.clone(), accepted.clone());
    let app = TestServer::tcp(move |mut sock| {
        a.fetch_add(1, Ordering::SeqCst);
        let closed = c.clone();
        async move {
            let mut buf = Vec::new();
            if read_head(&mut sock, &mut buf).await.is_some() {
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
            drop(sock);
            closed.notify_one();
        }
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let (mut send, _conn) = connection(proxy.inbound).await;
    for i in 1..=4 {
        // A POST is not re-sent once written, so the proxy must see the close beforehand.
        let req = if i % 2 == 0 { post("/") } else { get("/") };
        let (status, body, _) = exchange(&mut send, req).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
        // The upstream has closed the pooled connection before the next request goes out.
        tokio::time::timeout(WAIT, closed.notified())
            .await
            .expect("the upstream closes");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

fn post(path: &str) -> Request<Body> {
    Request::post(path)
        .header("host", "app")
        .header("content-length", "0")
        .body(empty())
        .unwrap()
}

/// Issue #20: a request fully written to a reused upstream connection that then closes
/// without answering may have been acted on. A POST is not sent again (the upstream sees
/// it once, the client gets a labelled error); a GET is, on a new connection. The same rule
/// on both HTTP/1 paths: absolute-form targets take the connection to the general path.
#[tokio::test]
async fn a_request_the_upstream_read_is_sent_again_only_when_idempotent() {
    let cases = [("POST", false), ("GET", true)];
    for ((method, resent), base) in cases.into_iter().flat_map(|c| [(c, ""), (c, "http://app")]) {
        let path = |p: &str| format!("{base}{p}");
        let seen = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (seen.clone(), accepted.clone());
        // The first connection answers `/`, then reads `/once` and closes unanswered;
        // later connections answer everything.
        let app = TestServer::tcp(move |mut sock| {
            let first = a.fetch_add(1, Ordering::SeqCst) == 0;
            let seen = s.clone();
            async move {
                let mut buf = Vec::new();
                while let Some(line) = read_head(&mut sock, &mut buf).await {
                    if line.contains("/once") {
                        seen.fetch_add(1, Ordering::SeqCst);
                        if first {
                            return;
                        }
                    }
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if sock.write_all(ok).await.is_err() {
                        return;
                    }
                }
            }
        })
        .await;
        let proxy = Proxy::inbound_to(app.addr).await;
        let (mut send, _conn) = connection(proxy.inbound).await;
        let (status, _, _) = exchange(&mut send, get(&path("/"))).await;
        assert_eq!(status, StatusCode::OK);
        let req = Request::builder()
            .method(method)
            .uri(path("/once"))
            .header("host", "app")
            .header("content-length", "0")
            .body(empty())
            .unwrap();
        send.ready().await.unwrap();
        let rsp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let case = format!("{method} {base}/once");
        if resent {
            assert_eq!(rsp.status(), StatusCode::OK, "{case}");
            assert_eq!(seen.load(Ordering::SeqCst), 2, "{case} is sent again");
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "{case}");
        } else {
            assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY, "{case}");
            assert_eq!(rsp.headers()["l5d-proxy-error"], "upstream-reset");
            assert_eq!(seen.load(Ordering::SeqCst), 1, "{case} is not duplicated");
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "{case}");
        }
    }
}

/// A client that gives up while the upstream is still working: the proxy notices at once
/// (as hyper's server does) and closes the request's upstream connection, rather than
/// holding both until an answer nobody will read. Pipelined bytes are not mistaken for it.
#[tokio::test]
async fn a_client_hanging_up_mid_request_closes_the_upstream_connection() {
    // Reads a request and never answers; says when the proxy closes the connection.
    let (got_request, upstream_closed) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (g, c) = (got_request.clone(), upstream_closed.clone());
    let app = TestServer::tcp(move |mut sock| {
        let (got_request, closed) = (g.clone(), c.clone());
        async move {
            let mut buf = Vec::new();
            if read_head(&mut sock, &mut buf).await.is_some() {
                got_request.notify_one();
                let mut rest = [0u8; 64];
                while matches!(sock.read(&mut rest).await, Ok(n) if n > 0) {}
                closed.notify_one();
            }
        }
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut sock = TcpStream::connect(proxy.inbound).await.unwrap();
    // The second request is pipelined behind the first: read, kept, not a hang-up.
    sock.write_all(
        b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\nGET /next HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::timeout(WAIT, got_request.notified())
        .await
        .expect("the request reaches the upstream");
    let not_yet = tokio::time::timeout(Duration::from_millis(300), upstream_closed.notified());
    assert!(
        not_yet.await.is_err(),
        "the upstream connection stays open while the client waits"
    );
    drop(sock);
    tokio::time::timeout(WAIT, upstream_closed.notified())
        .await
        .expect("the proxy closes the upstream connection once the client has gone");
    let state = state(&proxy).await;
    assert_eq!(state["http1"]["fast_path_requests"], 1, "{state}");
}

#[tokio::test]
async fn a_connection_moves_to_the_general_path_when_a_request_needs_it() {
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        let len = req.into_body().collect().await.unwrap().to_bytes().len();
        hyper::Response::new(ferry_testkit::server::full(format!("read {len}")))
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let (mut send, _conn) = connection(proxy.inbound).await;
    let (status, body, _) = exchange(&mut send, get("/small")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "read 0"));

    // A streamed (chunked) upload on the same connection: the general path takes it, with
    // nothing lost of the bytes the fast path had already read.
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..4)
        .map(|_| Ok(Frame::data(Bytes::from_static(b"0123456789"))))
        .collect();
    let upload = Request::post("/upload")
        .header("host", "app")
        .body(StreamBody::new(tokio_stream::iter(chunks)).boxed())
        .unwrap();
    let (status, body, _) = exchange(&mut send, upload).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "read 40"));
    let (status, body, _) = exchange(&mut send, get("/after")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "read 0"));

    let state = state(&proxy).await;
    assert_eq!(state["http1"]["fast_path_requests"], 1, "{state}");
    assert_eq!(
        state["http1"]["general_path_connections"]["streamed or ambiguous body"], 1,
        "{state}"
    );
}

#[tokio::test]
async fn a_tap_started_mid_connection_sees_the_next_request() {
    let app = TestServer::http(|_req: Request<hyper::body::Incoming>| async move {
        hyper::Response::new(ferry_testkit::server::full("hello"))
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let (mut send, _conn) = connection(proxy.inbound).await;
    let (status, _, _) = exchange(&mut send, get("/before")).await;
    assert_eq!(status, StatusCode::OK);

    let mut tap = crate::tap::observe(&proxy, Some(crate::tap::path_prefix("/during")), 0).await;
    crate::tap::wait_active(&proxy, 1).await;
    let (status, _, _) = exchange(&mut send, get("/during")).await;
    assert_eq!(status, StatusCode::OK);
    let event = crate::tap::next(&mut tap).await;
    let linkerd2_proxy_api::tap::tap_event::http::Event::RequestInit(init) =
        crate::tap::http(&event)
    else {
        panic!("expected RequestInit, got {event:?}")
    };
    assert_eq!(init.path, "/during");
    let state = state(&proxy).await;
    assert_eq!(
        state["http1"]["general_path_connections"]["tap active"], 1,
        "{state}"
    );
}

async fn state(proxy: &Proxy) -> serde_json::Value {
    let text = client::get(&format!("http://{}/state", proxy.admin))
        .await
        .expect("GET /state")
        .text();
    serde_json::from_str(&text).expect("state JSON")
}
