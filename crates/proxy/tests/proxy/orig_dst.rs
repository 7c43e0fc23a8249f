//! Redirected outbound connections, looked up by their original destination through a
//! scripted destination server: a "ClusterIP" is balanced over its endpoints (opaque TCP
//! and HTTP alike), an address the server does not know goes out as is, connections to one
//! address share one `Get` stream, and a silent control plane delays them only briefly.
//!
//! No iptables here: the proxy's `outbound_orig_dst` stands in for `SO_ORIGINAL_DST`.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use ferry_proxy::{orig_dst::OrigDst, Config};
use ferry_testkit::{
    client, metric_sum,
    server::{full, TestServer},
    wait_until,
};
use http::{Request, Response};
use http_body_util::Full;
use linkerd2_proxy_api::{destination as dst, net::TcpAddress};
use tokio::{io::AsyncReadExt, sync::mpsc};
use tonic::Status;

use crate::{
    discovery::scripted_destination,
    test_ca::{identity_of, TestCa},
    Proxy,
};

type Streams = mpsc::Receiver<(String, mpsc::Sender<Result<dst::Update, Status>>)>;

/// An address where nothing listens: a "ClusterIP" that only discovery can make sense of.
fn cluster_ip() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An `add` of endpoints labelled `pod=<name>`, with an identity when given.
pub fn add(endpoints: &[(SocketAddr, &str, Option<&str>)]) -> Result<dst::Update, Status> {
    let addrs = endpoints
        .iter()
        .map(|(addr, pod, id)| dst::WeightedAddr {
            addr: Some(TcpAddress::from(*addr)),
            weight: 10_000,
            metric_labels: [("pod".to_string(), pod.to_string())].into(),
            tls_identity: id.map(|id| dst::TlsIdentity {
                strategy: Some(dst::tls_identity::Strategy::DnsLikeIdentity(
                    dst::tls_identity::DnsLikeIdentity { name: id.into() },
                )),
                server_name: Some(dst::tls_identity::DnsLikeIdentity { name: id.into() }),
            }),
            ..Default::default()
        })
        .collect();
    Ok(dst::Update {
        update: Some(dst::update::Update::Add(dst::WeightedAddrSet {
            addrs,
            metric_labels: [("service".to_string(), "web".to_string())].into(),
        })),
    })
}

fn unknown() -> Result<dst::Update, Status> {
    Ok(dst::Update {
        update: Some(dst::update::Update::NoEndpoints(dst::NoEndpoints {
            exists: false,
        })),
    })
}

/// A proxy whose outbound connections count as redirected to `orig`, resolving through
/// `destination`; `opaque` makes `orig`'s port skip detection.
async fn redirected_to(orig: SocketAddr, destination: SocketAddr, opaque: bool) -> Proxy {
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.outbound_orig_dst = OrigDst::Fixed(orig);
    if opaque {
        config.opaque_ports = vec![orig.port()];
    }
    Proxy::start(config).await
}

/// The proxy's `/state` document.
async fn state(proxy: &Proxy) -> serde_json::Value {
    let text = client::get(&format!("http://{}/state", proxy.admin))
        .await
        .unwrap()
        .text();
    serde_json::from_str(&text).unwrap()
}

/// Waits until `/state` shows `addr` as a destination in `want` state; returns the entry.
async fn wait_destination(proxy: &Proxy, addr: SocketAddr, want: &str) -> serde_json::Value {
    let addr = addr.to_string();
    wait_until(
        Duration::from_secs(5),
        "the address's discovery state",
        || {
            let addr = addr.clone();
            async move {
                let state = state(proxy).await;
                state["destinations"]
                    .as_array()?
                    .iter()
                    .find(|d| d["name"] == addr.as_str() && d["state"] == want)
                    .cloned()
            }
        },
    )
    .await
    .unwrap()
}

/// Opens the first connection, which opens the address's `Get` stream; returns the stream.
async fn first_stream(
    proxy: &Proxy,
    streams: &mut Streams,
) -> (String, mpsc::Sender<Result<dst::Update, Status>>) {
    // Its own fate is not the point: it may or may not see the answer within the wait.
    let outbound = proxy.outbound;
    tokio::spawn(async move {
        if let Ok(mut s) = tokio::net::TcpStream::connect(outbound).await {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut [0u8; 16])).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .expect("the proxy opens a Get stream")
        .unwrap()
}

/// A TCP server that says `name` and closes.
async fn says(name: &'static str) -> TestServer {
    TestServer::tcp(move |mut sock| async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut sock, name.as_bytes()).await;
    })
    .await
}

/// What one opaque connection through the proxy's outbound listener hears.
async fn hear(proxy: &Proxy) -> String {
    let mut sock = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let mut heard = String::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_string(&mut heard))
        .await
        .expect("the connection is answered")
        .unwrap();
    heard
}

async fn named(name: &'static str) -> TestServer {
    TestServer::http(move |_req| async move { Response::new(full(name)) }).await
}

#[tokio::test]
async fn opaque_tcp_to_a_cluster_ip_is_balanced_over_one_shared_stream() {
    let (destination, mut streams) = scripted_destination().await;
    let (one, two) = (says("one").await, says("two").await);
    let vip = cluster_ip();
    let proxy = redirected_to(vip, destination, true).await;

    let (path, updates) = first_stream(&proxy, &mut streams).await;
    assert_eq!(path, vip.to_string(), "the address is looked up as IP:port");
    updates
        .send(add(&[(one.addr, "one", None), (two.addr, "two", None)]))
        .await
        .unwrap();
    let entry = wait_destination(&proxy, vip, "endpoints").await;
    assert_eq!(entry["kind"], "address");
    assert_eq!(entry["endpoints"].as_array().unwrap().len(), 2, "{entry}");

    let mut heard = BTreeSet::new();
    for _ in 0..40 {
        heard.insert(hear(&proxy).await);
    }
    assert_eq!(
        heard,
        BTreeSet::from(["one".to_string(), "two".to_string()]),
        "connections are spread over both endpoints, none goes to the ClusterIP itself"
    );

    // Every one of those connections shared the first one's stream.
    assert!(
        streams.try_recv().is_err(),
        "a second Get stream was opened"
    );
    let entry = wait_destination(&proxy, vip, "endpoints").await;
    assert_eq!(entry["stream"]["streams_opened"], 1, "{entry}");
}

#[tokio::test]
async fn http_to_a_cluster_ip_is_balanced_per_request_with_endpoint_labels() {
    let (destination, mut streams) = scripted_destination().await;
    let (one, two) = (named("one").await, named("two").await);
    let vip = cluster_ip();
    let proxy = redirected_to(vip, destination, false).await;

    let (_, updates) = first_stream(&proxy, &mut streams).await;
    updates
        .send(add(&[
            (one.addr, "pod-one", None),
            (two.addr, "pod-two", None),
        ]))
        .await
        .unwrap();
    wait_destination(&proxy, vip, "endpoints").await;

    // One keep-alive connection; a Host that names no service.
    let http = client::http1();
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let req = Request::get(format!("http://{}/", proxy.outbound))
            .header("host", "shop.example")
            .body(Full::default())
            .unwrap();
        let rsp = client::send(&http, req).await.unwrap();
        assert_eq!(rsp.status, 200);
        seen.insert(rsp.text());
    }
    assert_eq!(seen, BTreeSet::from(["one".to_string(), "two".to_string()]));

    let metrics = proxy.metrics().await;
    for pod in ["pod-one", "pod-two"] {
        let n = metric_sum(
            &metrics,
            "request_total",
            &[
                ("direction", "outbound"),
                ("dst_pod", pod),
                ("dst_service", "web"),
            ],
        );
        assert!(n >= 1.0, "no requests labelled dst_pod={pod}:\n{metrics}");
    }
    assert!(
        streams.try_recv().is_err(),
        "a second Get stream was opened"
    );
}

#[tokio::test]
async fn an_address_the_control_plane_does_not_know_goes_out_as_is() {
    let (destination, mut streams) = scripted_destination().await;
    let direct = named("direct").await;
    let proxy = redirected_to(direct.addr, destination, false).await;

    let (_, updates) = first_stream(&proxy, &mut streams).await;
    updates.send(unknown()).await.unwrap();
    wait_destination(&proxy, direct.addr, "unknown-name").await;
    let url = format!("http://{}/", proxy.outbound);
    for _ in 0..3 {
        assert_eq!(client::get(&url).await.unwrap().text(), "direct");
    }

    // Linkerd's other answer for an address it knows nothing about: the address itself.
    updates.send(add(&[(direct.addr, "", None)])).await.unwrap();
    wait_destination(&proxy, direct.addr, "endpoints").await;
    assert_eq!(client::get(&url).await.unwrap().text(), "direct");
}

#[tokio::test]
async fn a_silent_control_plane_delays_the_first_connection_only_briefly() {
    let (destination, mut streams) = scripted_destination().await;
    let (direct, one) = (named("direct").await, named("one").await);
    let proxy = redirected_to(direct.addr, destination, false).await;
    let url = format!("http://{}/", proxy.outbound);

    // The stream opens, but no answer comes: the request goes to the address as is, after
    // the bounded wait (far less than the 3 s a name waits for its first answer).
    let started = Instant::now();
    let rsp = client::get(&url).await.unwrap();
    let took = started.elapsed();
    assert_eq!(rsp.text(), "direct");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let (_, updates) = tokio::time::timeout(Duration::from_secs(5), streams.recv())
        .await
        .unwrap()
        .unwrap();
    wait_destination(&proxy, direct.addr, "pending").await;

    // The answer arrives late: the next connections use it.
    updates.send(add(&[(one.addr, "one", None)])).await.unwrap();
    wait_until(Duration::from_secs(5), "the late answer to be used", || {
        let url = url.clone();
        async move { (client::get(&url).await.unwrap().text() == "one").then_some(()) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn with_the_control_plane_down_connections_go_out_as_is() {
    let dead = cluster_ip();
    let direct = says("direct").await;
    let proxy = redirected_to(direct.addr, dead, true).await;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(hear(&proxy).await, "direct");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    wait_destination(&proxy, direct.addr, "pending").await;
}

#[tokio::test]
async fn a_meshed_pod_ip_is_reached_over_mtls_with_its_identity() {
    let ca = TestCa::start().await;
    let app = named("web").await;
    // The peer: a meshed pod whose proxy accepts only mTLS from meshed clients.
    let mut config = Config::for_tests(app.addr);
    config.identity = Some(ca.identity("web"));
    config.inbound_require_identity = true;
    let peer = Proxy::start(config).await;
    // The "pod IP" the application dials; discovery names the pod and its identity.
    let pod_ip = peer.inbound;

    let (destination, mut streams) = scripted_destination().await;
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.outbound_orig_dst = OrigDst::Fixed(pod_ip);
    config.identity = Some(ca.identity("client"));
    let client_proxy = Proxy::start(config).await;
    for proxy in [&peer, &client_proxy] {
        let ready = format!("http://{}/ready", proxy.admin);
        wait_until(Duration::from_secs(10), "a certificate", || {
            let ready = ready.clone();
            async move { (client::get(&ready).await.ok()?.status == 200).then_some(()) }
        })
        .await
        .unwrap();
    }

    let (path, updates) = first_stream(&client_proxy, &mut streams).await;
    assert_eq!(path, pod_ip.to_string());
    let web = identity_of("web");
    updates
        .send(add(&[(pod_ip, "web-0", Some(&web))]))
        .await
        .unwrap();
    wait_destination(&client_proxy, pod_ip, "endpoints").await;

    let rsp = client::get(&format!("http://{}/", client_proxy.outbound))
        .await
        .unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.text().as_str()), (200, "web"));

    // Opaque TCP to the same pod IP (its port marked opaque here) is mTLS too: the peer
    // closes plaintext connections, so an answer means the TLS was there.
    let mut config = Config::for_tests("127.0.0.1:9".parse().unwrap());
    config.destination_addr = Some(destination.into());
    config.outbound_orig_dst = OrigDst::Fixed(pod_ip);
    config.opaque_ports = vec![pod_ip.port()];
    config.identity = Some(ca.identity("client"));
    let opaque_proxy = Proxy::start(config).await;
    let ready = format!("http://{}/ready", opaque_proxy.admin);
    wait_until(Duration::from_secs(10), "a certificate", || {
        let ready = ready.clone();
        async move { (client::get(&ready).await.ok()?.status == 200).then_some(()) }
    })
    .await
    .unwrap();
    let (_, opaque_updates) = first_stream(&opaque_proxy, &mut streams).await;
    opaque_updates
        .send(add(&[(pod_ip, "web-0", Some(&web))]))
        .await
        .unwrap();
    wait_destination(&opaque_proxy, pod_ip, "endpoints").await;
    let mut sock = tokio::net::TcpStream::connect(opaque_proxy.outbound)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut sock,
        b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_string(&mut answer))
        .await
        .expect("the opaque connection is answered")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("web"),
        "{answer}"
    );

    // The peer saw the client's verified identity; the client verified the peer's.
    let client_id = identity_of("client");
    peer.wait_metric(
        "request_total",
        &[("direction", "inbound"), ("client_id", &client_id)],
        2.0,
    )
    .await;
    client_proxy
        .wait_metric(
            "request_total",
            &[
                ("direction", "outbound"),
                ("server_id", &web),
                ("dst_pod", "web-0"),
            ],
            1.0,
        )
        .await;
}
