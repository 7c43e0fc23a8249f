//! Bulk bytes (issue #25): large bodies and long opaque streams arrive byte-exact through
//! every path — spliced (sized HTTP/1 bodies of 32 KiB and more, opaque streams between
//! plaintext sockets) or copied (chunked, small, HTTP/2), one hop or two — while the reader
//! at either end stops midway and resumes; the counters see every spliced byte; a peer that
//! closes mid-body ends the other side cleanly, with the right error label.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use ferry_testkit::{
    client, metric, metric_sum,
    server::{full, TestServer},
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};

use crate::{Pair, Proxy};

const WAIT: Duration = Duration::from_secs(10);
/// How long a reader stops midway: long enough for every buffer on the way to fill.
const PAUSE: Duration = Duration::from_millis(300);
const BIG: usize = (1 << 20) + 17;

/// `n` bytes that differ from any shift of themselves (a misplaced or lost byte shows).
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a of `bytes`.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads one HTTP/1 head from `sock` (bytes past it stay in `buf`); `None` at the end.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 16 * 1024];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads exactly `n` body bytes (some may be in `buf` already), stopping for [`PAUSE`]
/// once `pause_at` of them have come, when given.
async fn read_body(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
    pause_at: Option<usize>,
) -> Vec<u8> {
    let mut body = std::mem::take(buf);
    let mut paused = pause_at.is_none();
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < n {
        if !paused && body.len() >= pause_at.unwrap_or(0) {
            paused = true;
            tokio::time::sleep(PAUSE).await;
        }
        let want = (n - body.len()).min(chunk.len());
        let got = tokio::time::timeout(WAIT, sock.read(&mut chunk[..want]))
            .await
            .expect("body stalled")
            .unwrap();
        assert!(
            got > 0,
            "connection closed after {} of {n} body bytes",
            body.len()
        );
        body.extend_from_slice(&chunk[..got]);
    }
    *buf = body.split_off(n);
    body
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The upstream of the HTTP/1 tests. `GET /sized/N` answers N pattern bytes with a
/// `content-length`, `GET /chunked/N` the same in 10,000-byte chunks. `GET /cut/N` promises
/// N bytes, sends a third, and closes. `closed` is told when writing a body failed (the
/// reader went away).
async fn bulk_app(closed: Arc<Notify>) -> TestServer {
    TestServer::tcp(move |mut sock| {
        let closed = closed.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_head(&mut sock, &mut buf).await {
                let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                let (kind, n) = target[1..].split_once('/').unwrap_or(("", "0"));
                let n: usize = n.parse().unwrap_or(0);
                let body = pattern(n as u64, n);
                let written = match kind {
                    "sized" => {
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                        async {
                            sock.write_all(head.as_bytes()).await?;
                            sock.write_all(&body).await
                        }
                        .await
                    }
                    "chunked" => {
                        let mut out =
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                        for c in body.chunks(10_000) {
                            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                            out.extend_from_slice(c);
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"0\r\n\r\n");
                        sock.write_all(&out).await
                    }
                    _ => {
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&body[..n / 3]).await;
                        return;
                    }
                };
                if written.is_err() {
                    closed.notify_one();
                    return;
                }
            }
        }
    })
    .await
}

/// Reads a chunked body (without extensions or trailers, as hyper sends them).
async fn read_chunked(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let mut chunk = [0u8; 16 * 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed in a chunked body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap().trim(), 16)
            .unwrap();
        buf.drain(..line_end + 2);
        let chunk = read_body(sock, buf, size + 2, None).await;
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// One GET on `sock`: its body, read with a stop a third of the way (chunked bodies are
/// decoded).
async fn get(sock: &mut TcpStream, buf: &mut Vec<u8>, path: &str) -> Vec<u8> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n");
    sock.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(WAIT, read_head(sock, buf))
        .await
        .expect("head stalled")
        .expect("closed before the head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    match header(&head, "content-length") {
        Some(len) => {
            let len: usize = len.parse().unwrap();
            read_body(sock, buf, len, Some(len / 3)).await
        }
        None => {
            tokio::time::sleep(PAUSE).await;
            read_chunked(sock, buf).await
        }
    }
}

/// Sized (spliced when large, copied when small) and chunked responses, one hop and two,
/// two requests per connection (the upstream connection is reused after a spliced body),
/// the client stopping midway: every byte arrives, in order, and the counters saw them.
#[tokio::test]
async fn http1_responses_arrive_byte_exact_spliced_or_copied() {
    let app = bulk_app(Arc::new(Notify::new())).await;
    let single = Proxy::inbound_to(app.addr).await;
    let pair = Pair::to(app.addr).await;
    let mut expected_down = 0usize;
    for entry in [single.inbound, pair.a.upstreams[0]] {
        let mut sock = TcpStream::connect(entry).await.unwrap();
        let mut buf = Vec::new();
        for (kind, n) in [
            ("sized", BIG),
            ("sized", BIG),
            ("sized", 40_000),
            ("sized", 100),
            ("chunked", BIG),
        ] {
            let body = get(&mut sock, &mut buf, &format!("/{kind}/{n}")).await;
            assert_eq!(body.len(), n, "{kind}/{n} via {entry}");
            assert!(
                body == pattern(n as u64, n),
                "{kind}/{n} via {entry}: bytes differ"
            );
            if entry == single.inbound && kind == "sized" {
                expected_down += n;
            }
        }
    }
    // The single hop's counters include every spliced body byte sent to the client.
    let text = single.metrics().await;
    let written = metric_sum(
        &text,
        "tcp_write_bytes_total",
        &[("direction", "inbound"), ("peer", "src")],
    );
    assert!(
        written >= expected_down as f64,
        "{written} < {expected_down}\n{text}"
    );
    let read = metric_sum(
        &text,
        "tcp_read_bytes_total",
        &[("direction", "inbound"), ("peer", "dst")],
    );
    assert!(
        read >= expected_down as f64,
        "{read} < {expected_down}\n{text}"
    );
}

/// The hyper app of the HTTP/2 tests (it speaks HTTP/1.1 and h2c, as the client does):
/// `GET /sized/N` and `GET /chunked/N` (a streamed body of unknown length) answer N pattern
/// bytes; a `POST` body is read, stopping for [`PAUSE`] a third of the way, and answered
/// with its length and FNV hash.
async fn hyper_app() -> TestServer {
    TestServer::http(|req| async move {
        let path = req.uri().path().to_owned();
        let (kind, n) = path[1..].split_once('/').unwrap_or(("", "0"));
        let n: usize = n.parse().unwrap_or(0);
        if req.method() == http::Method::POST {
            let mut body = req.into_body();
            let mut got = Vec::new();
            let mut paused = false;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    got.extend_from_slice(&data);
                }
                if !paused && got.len() > BIG / 3 {
                    paused = true;
                    tokio::time::sleep(PAUSE).await;
                }
            }
            return http::Response::new(full(format!("{} {:x}", got.len(), fnv(&got))));
        }
        let bytes = pattern(n as u64, n);
        if kind == "sized" {
            return http::Response::new(full(bytes));
        }
        let frames: Vec<Result<_, Box<dyn std::error::Error + Send + Sync>>> = bytes
            .chunks(10_000)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        http::Response::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)).boxed())
    })
    .await
}

/// Large responses to an HTTP/2 client, sized and streamed, read with a stop midway:
/// byte-exact.
#[tokio::test]
async fn http2_responses_arrive_byte_exact() {
    let app = hyper_app().await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let h2 = client::h2c();
    for (kind, n) in [("sized", BIG), ("chunked", BIG)] {
        let uri = format!("http://{}/{kind}/{n}", proxy.inbound);
        let rsp = tokio::time::timeout(WAIT, h2.get(uri.parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let mut body = rsp.into_body();
        let mut got = Vec::new();
        let mut paused = false;
        while let Some(frame) = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("body stalled")
        {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
            }
            if !paused && got.len() > n / 3 {
                paused = true;
                tokio::time::sleep(PAUSE).await;
            }
        }
        assert!(
            got == pattern(n as u64, n),
            "{kind}: {} bytes, or bytes differ",
            got.len()
        );
    }
}

/// 1 MiB uploads, sized and chunked, over HTTP/1.1 and HTTP/2, one hop and two, to an app
/// that stops reading a third of the way: it gets every byte.
#[tokio::test]
async fn uploads_arrive_byte_exact() {
    let app = hyper_app().await;
    let single = Proxy::inbound_to(app.addr).await;
    let pair = Pair::to(app.addr).await;
    let body = Bytes::from(pattern(7, BIG));
    let want = format!("{} {:x}", BIG, fnv(&body));
    for entry in [single.inbound, pair.a.upstreams[0]] {
        for h2 in [false, true] {
            for chunked in [false, true] {
                let uri = format!("http://{entry}/upload/0");
                let rsp = if chunked {
                    // A body of unknown length: chunked on HTTP/1.1.
                    let chunks: Vec<Result<_, std::io::Error>> = body
                        .chunks(100_000)
                        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                        .collect();
                    let stream = http_body_util::StreamBody::new(tokio_stream::iter(chunks));
                    let req = Request::post(&uri).body(stream.boxed()).unwrap();
                    send_any(req, h2).await
                } else {
                    let req = Request::post(&uri)
                        .body(
                            Full::new(body.clone())
                                .map_err(|never| match never {})
                                .boxed(),
                        )
                        .unwrap();
                    send_any(req, h2).await
                };
                assert_eq!(rsp, want, "via {entry}, h2 {h2}, chunked {chunked}");
            }
        }
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Sends `req` on a new HTTP/1.1 or h2c client; the answer's body as text.
async fn send_any(req: Request<AnyBody>, h2: bool) -> String {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let rsp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("upload stalled")
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// An upstream that closes 1/3 into a sized 1 MiB body: the client's connection ends (no
/// hang, no more bytes than were sent) and the response is counted `upstream-reset`.
#[tokio::test]
async fn an_upstream_closing_mid_body_ends_the_client_with_upstream_reset() {
    let app = bulk_app(Arc::new(Notify::new())).await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let mut sock = TcpStream::connect(proxy.inbound).await.unwrap();
    sock.write_all(format!("GET /cut/{BIG} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut all))
        .await
        .expect("the client's connection was left open")
        .unwrap();
    let body_start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &all[body_start..];
    assert_eq!(
        body.len(),
        BIG / 3,
        "the bytes sent before the cut, and no more"
    );
    assert!(body == &pattern(BIG as u64, BIG)[..BIG / 3]);
    proxy
        .wait_metric(
            "response_total",
            &[("error", "upstream-reset"), ("classification", "failure")],
            1.0,
        )
        .await;
}

/// A client that reads part of a large body and closes: the proxy closes its upstream
/// connection (the app's writes fail) rather than reading on, and counts a failure.
#[tokio::test]
async fn a_client_closing_mid_body_closes_the_upstream() {
    let closed = Arc::new(Notify::new());
    let app = bulk_app(closed.clone()).await;
    let proxy = Proxy::inbound_to(app.addr).await;
    let n = 32 << 20;
    let mut sock = TcpStream::connect(proxy.inbound).await.unwrap();
    sock.write_all(format!("GET /sized/{n} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    read_head(&mut sock, &mut buf).await.unwrap();
    read_body(&mut sock, &mut buf, 200_000, None).await;
    drop(sock);
    tokio::time::timeout(WAIT, closed.notified())
        .await
        .expect("the app's upstream connection was not closed");
    proxy
        .wait_metric("response_total", &[("classification", "failure")], 1.0)
        .await;
}

/// Opaque streams through two plaintext hops (spliced): 8 MiB each way at once, the app
/// echoing and stopping midway, the client stopping midway too; then half-close passes
/// on. Every byte arrives, and B's counters saw them all.
#[tokio::test]
async fn opaque_streams_are_byte_exact_both_ways() {
    let app = TestServer::tcp(|mut sock| async move {
        let mut buf = vec![0u8; 100_000];
        let mut seen = 0usize;
        let mut paused = false;
        loop {
            let n = match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if sock.write_all(&buf[..n]).await.is_err() {
                return;
            }
            seen += n;
            if !paused && seen > 3 << 20 {
                paused = true;
                tokio::time::sleep(PAUSE).await;
            }
        }
        let _ = sock.write_all(b"bye").await;
    })
    .await;
    let pair = Pair::to(app.addr).await;
    let sock = TcpStream::connect(pair.a.upstreams[0]).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let n = 8 << 20;
    let sent = pattern(3, n);
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr.shutdown().await.unwrap();
            wr
        })
    };
    let mut got = Vec::with_capacity(n + 3);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut paused = false;
    loop {
        let r = tokio::time::timeout(WAIT, rd.read(&mut chunk))
            .await
            .expect("stream stalled")
            .unwrap();
        if r == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..r]);
        if !paused && got.len() > n / 2 {
            paused = true;
            tokio::time::sleep(PAUSE).await;
        }
    }
    let _wr = writer.await.unwrap();
    assert_eq!(got.len(), n + 3);
    assert!(got[..n] == sent[..], "echoed bytes differ");
    assert_eq!(
        &got[n..],
        b"bye",
        "the half-close reached the app, its answer came back"
    );
    let text = pair
        .b
        .wait_metric(
            "tcp_close_total",
            &[("direction", "inbound"), ("peer", "src")],
            1.0,
        )
        .await;
    for name in ["tcp_read_bytes_total", "tcp_write_bytes_total"] {
        let src = metric(&text, name, &[("direction", "inbound"), ("peer", "src")]);
        assert_eq!(
            src,
            Some(
                n as f64
                    + if name == "tcp_read_bytes_total" {
                        0.0
                    } else {
                        3.0
                    }
            ),
            "{name}\n{text}"
        );
    }
}
