//! HTTP/2 (h2c, prior knowledge) through a proxy pair: multiplexing over one upstream
//! connection per hop, and trailers carried end to end. With a raw `h2` client: what the
//! proxy's HTTP/2 server does on drain, on a client's reset, and at its limits.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use ferry_testkit::{client, metric, server::TestServer, wait_until};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::{sync::mpsc, task::JoinHandle, time::timeout};

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

const WAIT: Duration = Duration::from_secs(5);

/// A raw HTTP/2 connection to `addr`, driven by a task of its own (which ends with it).
async fn raw_h2(addr: SocketAddr) -> (h2::client::SendRequest<Bytes>, JoinHandle<()>) {
    let io = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(io).await.unwrap();
    (send, tokio::spawn(async move { drop(conn.await) }))
}

fn raw_get(addr: SocketAddr, path: &str) -> Request<()> {
    Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

/// An app that holds `/slow` until `release` is notified (saying when it has it), and
/// answers every other path at once; it records the paths it saw.
struct Holding {
    app: TestServer,
    release: Arc<tokio::sync::Notify>,
    entered: mpsc::Receiver<()>,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn holding_app() -> Holding {
    let release = Arc::new(tokio::sync::Notify::new());
    let (entered_tx, entered) = mpsc::channel(4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = TestServer::http({
        let (release, seen) = (release.clone(), seen.clone());
        move |req: Request<hyper::body::Incoming>| {
            let (release, seen, entered_tx) = (release.clone(), seen.clone(), entered_tx.clone());
            async move {
                let path = req.uri().path().to_string();
                seen.lock().unwrap().push(path.clone());
                if path == "/slow" {
                    let _ = entered_tx.send(()).await;
                    release.notified().await;
                    return Response::new(ferry_testkit::server::full("finished"));
                }
                Response::new(ferry_testkit::server::full("quick"))
            }
        }
    })
    .await;
    Holding {
        app,
        release,
        entered,
        seen,
    }
}

/// Whether a new stream on `h2` goes unanswered: refused, reset, or no answer in a second.
async fn new_stream_refused(h2: &h2::client::SendRequest<Bytes>, addr: SocketAddr) -> bool {
    let Ok(mut h2) = h2.clone().ready().await else {
        return true;
    };
    let Ok((rsp, _)) = h2.send_request(raw_get(addr, "/late"), true) else {
        return true;
    };
    !matches!(timeout(Duration::from_secs(1), rsp).await, Ok(Ok(_)))
}

/// On drain the proxy sends its HTTP/2 clients `GOAWAY`: a stream opened before is still
/// answered, new ones are not, and the connection closes once the open ones are done.
#[tokio::test]
async fn h2c_drain_answers_open_streams_and_refuses_new_ones() {
    let mut app = holding_app().await;
    let mut proxy = Proxy::inbound_to(app.app.addr).await;
    let addr = proxy.inbound;
    let (mut h2, conn) = raw_h2(addr).await;
    let (slow, _) = h2.send_request(raw_get(addr, "/slow"), true).unwrap();
    timeout(WAIT, app.entered.recv())
        .await
        .expect("the request reached the app");

    let stopped = proxy.shutdown();
    let refused = wait_until(WAIT, "a new stream refused after GOAWAY", || {
        let h2 = h2.clone();
        async move { new_stream_refused(&h2, addr).await.then_some(()) }
    })
    .await;
    assert!(refused.is_ok(), "{refused:?}");

    app.release.notify_one();
    let rsp = timeout(WAIT, slow)
        .await
        .expect("the open stream is answered")
        .expect("the open stream is answered, not reset");
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = timeout(WAIT, rsp.into_body().data())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(body, "finished");
    timeout(WAIT, conn)
        .await
        .expect("the client connection closes")
        .unwrap();
    timeout(WAIT, stopped)
        .await
        .expect("the drain finishes")
        .unwrap();
}

/// A client that resets its stream cancels the request upstream: the app's handler is
/// dropped rather than left to answer nobody.
#[tokio::test]
async fn h2c_client_reset_cancels_the_upstream_request() {
    let (dropped_tx, mut dropped) = mpsc::channel::<()>(1);
    let (entered_tx, mut entered) = mpsc::channel::<()>(1);
    /// Says when the handler holding it is dropped.
    struct Guard(mpsc::Sender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.try_send(());
        }
    }
    let app = TestServer::http(move |_req: Request<hyper::body::Incoming>| {
        let guard = Guard(dropped_tx.clone());
        let entered_tx = entered_tx.clone();
        async move {
            let _guard = guard;
            let _ = entered_tx.send(()).await;
            std::future::pending::<()>().await;
            Response::new(ferry_testkit::server::full("never"))
        }
    })
    .await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let (h2, _conn) = raw_h2(proxy.inbound).await;
    let mut h2 = h2.ready().await.unwrap();
    let (rsp, _) = h2
        .send_request(raw_get(proxy.inbound, "/hang"), true)
        .unwrap();
    timeout(WAIT, entered.recv())
        .await
        .expect("the request reached the app");
    // Dropping the last handle on an open stream resets it (CANCEL).
    drop(rsp);
    timeout(WAIT, dropped.recv())
        .await
        .expect("the app's handler is dropped after the client's reset");
}

/// The server's limits: 256 concurrent streams advertised, and header lists up to 32 KiB
/// forwarded, larger ones answered with 431 by the proxy and never forwarded.
#[tokio::test]
async fn h2c_limits_are_advertised_and_enforced() {
    let app = holding_app().await;
    let proxy = Proxy::inbound_to(app.app.addr).await;
    let addr = proxy.inbound;
    let (h2, _conn) = raw_h2(addr).await;
    let mut h2 = h2.ready().await.unwrap();
    // The server's SETTINGS arrive with its first frames.
    let (rsp, _) = h2.send_request(raw_get(addr, "/first"), true).unwrap();
    assert_eq!(
        timeout(WAIT, rsp).await.unwrap().unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(h2.current_max_send_streams(), 256);

    let with_header = |path: &str, kib: usize| {
        let mut req = raw_get(addr, path);
        let value = HeaderValue::from_str(&"a".repeat(kib * 1024)).unwrap();
        req.headers_mut().insert("x-big", value);
        req
    };
    // 24 KiB is over the usual 16 KiB default and within the proxy's limit: the proxy
    // forwards it (the app's own server, at its default, may then refuse it).
    let (rsp, _) = h2.send_request(with_header("/large", 24), true).unwrap();
    timeout(WAIT, rsp).await.unwrap().unwrap();
    let inbound = [("direction", "inbound")];
    proxy.wait_metric("request_total", &inbound, 2.0).await;
    // 40 KiB is over it: the proxy answers, and forwards nothing.
    let (rsp, _) = h2
        .send_request(with_header("/too-large", 40), true)
        .unwrap();
    let rsp = timeout(WAIT, rsp).await.unwrap().unwrap();
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let (rsp, _) = h2.send_request(raw_get(addr, "/last"), true).unwrap();
    timeout(WAIT, rsp).await.unwrap().unwrap();
    // Three requests reached the proxy's routing, not four: /too-large was refused before.
    proxy.wait_metric("request_total", &inbound, 3.0).await;
    assert!(!app.seen.lock().unwrap().contains(&"/too-large".to_string()));
}

/// A client's HTTP/2 connection that brings no new request for `--http2-idle-timeout` gets
/// GOAWAY and is closed, while a stream already open on it (a slow response) goes on to its
/// end (issue #20).
#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_open_streams_finish() {
    use http_body::Frame;
    use tokio_stream::StreamExt;
    let app = TestServer::http(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() != "/slow" {
            return Response::new(ferry_testkit::server::full("ok"));
        }
        // Ten chunks, 100 ms apart: a stream that outlives the idle timeout.
        let chunks = tokio_stream::iter(0..10).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(format!(
                "{i}"
            ))))
        });
        Response::new(http_body_util::StreamBody::new(chunks).boxed())
    })
    .await;
    let mut config = ferry_proxy::Config::for_tests(app.addr);
    config.timeouts.http2_idle = Some(Duration::from_millis(300));
    let proxy = Proxy::start(config).await;

    let tcp = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let (h2c, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let send = |path: &str, h2c: h2::client::SendRequest<Bytes>| {
        let uri = format!("http://{}{path}", proxy.inbound);
        async move {
            let mut h2c = h2c.ready().await.unwrap();
            let req = Request::get(uri).body(()).unwrap();
            let rsp = h2c.send_request(req, true).unwrap().0.await.unwrap();
            let mut body = rsp.into_body();
            let mut got = Vec::new();
            while let Some(data) = body.data().await {
                let data = data.unwrap();
                body.flow_control().release_capacity(data.len()).unwrap();
                got.extend_from_slice(&data);
            }
            (h2c, String::from_utf8(got).unwrap())
        }
    };
    let (h2c, quick) = send("/", h2c).await;
    assert_eq!(quick, "ok");
    let started = std::time::Instant::now();
    let (h2c, slow) = send("/slow", h2c).await;
    assert_eq!(slow, "0123456789", "the open stream goes on to its end");
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(h2c);
    let ended = timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed by the proxy");
    assert!(ended.unwrap().is_ok(), "closed cleanly (GOAWAY)");
}
