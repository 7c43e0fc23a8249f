//! Opaque TCP through a proxy pair: bytes both ways, half-close, servers that speak first,
//! and opaque ports that skip detection; TCP keep-alive on the proxy's sockets.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use ferry_proxy::Config;
use ferry_testkit::{metric, server::TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Pair, Proxy};

/// Sends `bytes` on `sock` and reads as many back (an echo), within 5 s.
async fn echoed(sock: &mut tokio::net::TcpStream, bytes: &[u8]) -> Vec<u8> {
    sock.write_all(bytes).await.unwrap();
    let mut echo = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut echo))
        .await
        .expect("echo stalled")
        .unwrap();
    echo
}

/// An app that sends `greeting` first (when not empty), then echoes what it reads until the
/// peer closes.
async fn echo_app(greeting: &'static [u8]) -> TestServer {
    TestServer::tcp(move |mut sock| async move {
        if sock.write_all(greeting).await.is_err() {
            return;
        }
        let mut buf = [0u8; 64];
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Reads everything until the peer closes, then answers with how much it read.
async fn count_then_reply() -> TestServer {
    TestServer::tcp(|mut sock| async move {
        let mut all = Vec::new();
        let _ = sock.read_to_end(&mut all).await;
        let _ = sock
            .write_all(format!("read {} bytes", all.len()).as_bytes())
            .await;
    })
    .await
}

#[tokio::test]
async fn opaque_bytes_flow_with_half_close() {
    let app = count_then_reply().await;
    let pair = Pair::to(app.addr).await;
    let mut sock = tokio::net::TcpStream::connect(pair.a.upstreams[0])
        .await
        .unwrap();
    // Binary bytes: not HTTP, not TLS.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    sock.write_all(&payload).await.unwrap();
    sock.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "read 100000 bytes");

    let b = pair
        .b
        .wait_metric(
            "tcp_close_total",
            &[("direction", "inbound"), ("peer", "src")],
            1.0,
        )
        .await;
    assert_eq!(
        metric(
            &b,
            "tcp_detect_total",
            &[("direction", "inbound"), ("protocol", "opaque")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &b,
            "tcp_read_bytes_total",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        Some(100_000.0)
    );
    assert_eq!(
        metric(
            &b,
            "tcp_write_bytes_total",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        Some(17.0)
    );
    assert_eq!(
        metric(&b, "request_total", &[]),
        None,
        "opaque traffic is not counted as requests"
    );
}

#[tokio::test]
async fn servers_that_speak_first_are_not_stalled() {
    // Like MySQL or SMTP: a greeting before the client says anything, then an echo.
    let app = echo_app(b"220 ferry.test ESMTP ready\r\n").await;
    let pair = Pair::to(app.addr).await;
    let started = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(pair.a.upstreams[0])
        .await
        .unwrap();
    let mut greeting = [0u8; 28];
    tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut greeting))
        .await
        .expect("greeting stalled")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(&greeting, b"220 ferry.test ESMTP ready\r\n");
    // Detection gives up on a silent client only after 10 s; the greeting must not wait for it.
    assert!(waited < Duration::from_secs(2), "greeting took {waited:?}");
    assert_eq!(echoed(&mut sock, b"EHLO me\r\n").await, b"EHLO me\r\n");
    let a = pair.a.metrics().await;
    assert_eq!(
        metric(
            &a,
            "tcp_detect_total",
            &[("direction", "outbound"), ("protocol", "opaque")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn opaque_ports_skip_detection() {
    let app = count_then_reply().await;
    let mut config = Config::for_tests(app.addr);
    config.opaque_ports = vec![app.addr.port()];
    let proxy = Proxy::start(config).await;
    let mut sock = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    // HTTP bytes, yet forwarded as opaque: the port says so.
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    sock.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "read 27 bytes");
    let m = proxy.metrics().await;
    assert_eq!(
        metric(
            &m,
            "tcp_detect_total",
            &[("direction", "inbound"), ("protocol", "opaque")]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "request_total", &[]), None);
}

/// The kernel's view of an IPv4 socket connected to `remote` (and bound to `local`, when
/// given): its pending timer's kind (`2` is keep-alive) and the clock ticks (1/100 s)
/// until it fires.
fn socket_timer(local: Option<SocketAddr>, remote: SocketAddr) -> Option<(u32, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("the tests listen on 127.0.0.1"),
    };
    let (local, remote) = (local.map(hex), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_matches = local.as_deref().is_none_or(|l| f.get(1) == Some(&l));
            if !local_matches || f.get(2) != Some(&remote.as_str()) {
                return None;
            }
            let (kind, when) = f.get(5)?.split_once(':')?;
            Some((kind.parse().ok()?, u64::from_str_radix(when, 16).ok()?))
        })
}

/// Every connection the proxy accepts or opens has TCP keep-alive after 20 s of silence,
/// so that a peer that vanished without closing is noticed, even on an opaque connection
/// that would otherwise wait forever.
#[tokio::test]
async fn accepted_and_opened_sockets_have_tcp_keepalive() {
    let app = echo_app(b"").await;
    let proxy = Proxy::upstreams(&[&app.addr.to_string()]).await;
    let mut sock = tokio::net::TcpStream::connect(proxy.upstreams[0])
        .await
        .unwrap();
    assert_eq!(
        echoed(&mut sock, b"\x00\x01 opaque").await,
        b"\x00\x01 opaque"
    );
    let client = sock.local_addr().unwrap();
    // The proxy's side of the client's connection, and the one connection to the app (the
    // proxy's): both idle now, so their pending timer is keep-alive's.
    for (what, local, remote) in [
        ("accepted", Some(proxy.upstreams[0]), client),
        ("opened", None, app.addr),
    ] {
        let found = ferry_testkit::wait_until(Duration::from_secs(5), what, || async {
            socket_timer(local, remote).filter(|(kind, _)| *kind == 2)
        })
        .await;
        let (_, when) = found.unwrap_or_else(|e| panic!("{what} socket: {e}"));
        assert!(
            when <= 20 * 100,
            "{what} socket: keep-alive in {when} ticks, past 20 s"
        );
    }
}
