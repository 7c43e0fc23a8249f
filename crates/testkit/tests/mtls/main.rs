//! Identity and mutual TLS end to end, with real processes: `ferry-control` with an identity
//! CA, a server proxy in front of an app and a client proxy resolving it through the control
//! plane. Covers issuance, `/state`, metrics labels, `openssl s_client` against the inbound
//! port, rotation under load, and each refusal (token, trust anchor, name, plaintext).

mod authz;
mod cluster;
mod cluster_net;
mod fixture;

use std::time::Duration;

use ferry_testkit::{client, process::ProxyProc, wait_until};
use fixture::*;
use http::StatusCode;

#[tokio::test]
async fn meshed_traffic_is_mutual_tls_with_identities_in_metrics_and_state() {
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    let server = server_proxy(&mesh, "echo", &app, &[]).await;
    mesh.set_echo(server.inbound()).await;
    let client = client_proxy(&mesh, mesh.grpc, &[]).await;
    ready(&server).await;
    ready(&client).await;
    first_ok(&client).await;
    for _ in 0..5 {
        let r = client::get(&echo_url(&client)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "echo");
    }

    // HTTP/2 (prior knowledge) and opaque TCP cross the same mTLS hop.
    let r = client::get_version(&echo_url(&client), http::Version::HTTP_2)
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "echo"));
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(client.upstream("echo.default:8080"))
            .await
            .unwrap();
        // Not HTTP: forwarded as bytes, decrypted by the server proxy, and answered by the
        // app's HTTP server with a 400.
        tcp.write_all(b"\x00\x01 not http\r\n\r\n").await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }

    // The server proxy saw mTLS from the client's identity; the client verified the server.
    let inbound = admin(&server, "/metrics").await;
    let n = ferry_testkit::metric_sum(
        &inbound,
        "request_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", &id("client")),
        ],
    );
    assert!(n >= 6.0, "{inbound}");
    assert!(
        ferry_testkit::metric_sum(
            &inbound,
            "tcp_open_total",
            &[
                ("peer", "src"),
                ("tls", "true"),
                ("client_id", &id("client"))
            ]
        ) >= 1.0,
        "{inbound}"
    );
    let outbound = admin(&client, "/metrics").await;
    assert!(
        ferry_testkit::metric_sum(
            &outbound,
            "request_total",
            &[
                ("direction", "outbound"),
                ("tls", "true"),
                ("server_id", &id("echo"))
            ],
        ) >= 6.0,
        "{outbound}"
    );

    // Identity metrics, and the whole text is valid Prometheus.
    let expiry = ferry_testkit::metric(&inbound, "identity_cert_expiration_timestamp_seconds", &[])
        .unwrap_or_else(|| panic!("{inbound}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 3000.0 && expiry < now + 3700.0, "{expiry}");
    assert_eq!(
        ferry_testkit::metric(&inbound, "identity_cert_refresh_total", &[]),
        Some(1.0)
    );
    promtool_accepts(&inbound).await;

    // /state: name, certificate, anchor fingerprint, last renewal.
    let s = state(&server).await;
    let identity = &s["identity"];
    assert_eq!(identity["name"], id("echo"), "{s}");
    assert_eq!(identity["ready"], true);
    assert_eq!(identity["last_renewal"]["result"], "ok");
    assert!(
        identity["certificate"]["expires_in_seconds"]
            .as_i64()
            .unwrap()
            > 3000
    );
    let sans = identity["certificate"]["sans"].to_string();
    assert!(
        sans.contains("URI:spiffe://cluster.local/ns/default/sa/echo"),
        "{sans}"
    );
    let anchor_pem = std::fs::read(mesh.anchors()).unwrap();
    let (ok, fp) = openssl(&["x509", "-noout", "-fingerprint", "-sha256"], &anchor_pem).await;
    assert!(ok, "{fp}");
    let fp = fp
        .split('=')
        .nth(1)
        .unwrap()
        .trim()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(identity["trust_anchors"][0]["sha256"], fp.as_str(), "{s}");

    // Plaintext is still accepted (permissive by default).
    let r = client::get(&format!("http://{}/", server.inbound()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn openssl_sees_the_chain_to_the_anchor_and_completes_mtls_with_a_client_leaf() {
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    let server = server_proxy(&mesh, "echo", &app, &[]).await;
    ready(&server).await;

    // openssl s_client, naming the server's identity as a meshed client does: the chain
    // goes to the trust anchor and the leaf carries the SPIFFE ID. Without a client
    // certificate the proxy then refuses the connection, and counts it.
    let connect = server.inbound().to_string();
    let sni = id("echo");
    let (_, out) = openssl(
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            &sni,
            "-showcerts",
            "-tls1_3",
        ],
        b"",
    )
    .await;
    let chain = pem_blocks(&out);
    assert_eq!(chain.len(), 2, "leaf and issuer: {out}");
    let dir = mesh.dir.path();
    std::fs::write(dir.join("leaf.pem"), &chain[0]).unwrap();
    std::fs::write(dir.join("issuer.pem"), &chain[1]).unwrap();
    let (ok, verified) = openssl(
        &[
            "verify",
            "-CAfile",
            mesh.anchors().to_str().unwrap(),
            "-untrusted",
            dir.join("issuer.pem").to_str().unwrap(),
            dir.join("leaf.pem").to_str().unwrap(),
        ],
        b"",
    )
    .await;
    assert!(ok && verified.contains("OK"), "{verified}");
    let (ok, text) = openssl(&["x509", "-noout", "-text"], chain[0].as_bytes()).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/default/sa/echo")
            && text.contains(&format!("DNS:{sni}")),
        "{text}"
    );
    wait_until(WAIT, "no_client_cert counted", || async {
        let m = admin(&server, "/metrics").await;
        (ferry_testkit::metric(
            &m,
            "inbound_tls_handshake_errors_total",
            &[("reason", "no_client_cert")],
        ) >= Some(1.0))
        .then_some(())
    })
    .await
    .unwrap();

    // With a client certificate the handshake completes: a leaf for `tester`, signed here
    // with the local CA's issuer key, gets its request through, labelled with its identity.
    let ca = mesh.dir.path().join("identity/ca");
    let p = |name: &str| dir.join(name).display().to_string();
    let ext = format!(
        "subjectAltName=DNS:{},URI:spiffe://cluster.local/ns/default/sa/tester\n\
         extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
        id("tester")
    );
    std::fs::write(dir.join("ext.cnf"), ext).unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("tester.key"),
        ],
        &[
            "req",
            "-new",
            "-key",
            &p("tester.key"),
            "-subj",
            "/CN=tester",
            "-out",
            &p("tester.csr"),
        ],
        &[
            "x509",
            "-req",
            "-in",
            &p("tester.csr"),
            "-days",
            "1",
            "-set_serial",
            "7",
            "-CA",
            &ca.join("issuer.crt").display().to_string(),
            "-CAkey",
            &ca.join("issuer.key").display().to_string(),
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("tester.crt"),
        ],
    ];
    for step in steps {
        let (ok, out) = openssl(step, b"").await;
        assert!(ok, "openssl {step:?}: {out}");
    }
    let (_, out) = openssl(
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            &sni,
            "-tls1_3",
            "-quiet",
            "-cert",
            &p("tester.crt"),
            "-key",
            &p("tester.key"),
            "-cert_chain",
            &p("issuer.pem"),
        ],
        b"GET / HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.contains("HTTP/1.1 200") && out.contains("\r\n\r\necho"),
        "{out}"
    );
    let m = admin(&server, "/metrics").await;
    assert!(
        ferry_testkit::metric_sum(
            &m,
            "request_total",
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_id", &id("tester"))
            ]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_token_for_another_account_is_refused_and_the_proxy_stays_not_ready() {
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    // Asks for the `echo` identity with the `client` token.
    let mut args = vec!["--inbound-forward".to_string(), app.addr.to_string()];
    args.extend(mesh.identity_args("echo"));
    let token = args
        .iter()
        .position(|a| a == "--identity-token-file")
        .unwrap()
        + 1;
    args[token] = mesh.token("client").display().to_string();
    let p = proxy(&args).await;
    p.proc
        .wait_for_log("does not match the token", WAIT)
        .await
        .unwrap();
    let r = client::get(&format!("http://{}/ready", p.admin()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("no valid certificate"), "{}", r.text());
    let s = state(&p).await;
    assert_eq!(s["identity"]["ready"], false, "{s}");
    assert_eq!(s["identity"]["last_renewal"]["result"], "error");
    let error = s["identity"]["last_renewal"]["error"].as_str().unwrap();
    assert!(error.contains("PermissionDenied"), "{error}");
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    // A 6 s lifetime renews about every 4 s: 14 s of traffic spans at least 3 rotations.
    let mesh = Mesh::start("6s").await;
    let app = app().await;
    let server = server_proxy(&mesh, "echo", &app, &[]).await;
    mesh.set_echo(server.inbound()).await;
    let client = client_proxy(&mesh, mesh.grpc, &["--idle-timeout", "200ms"]).await;
    ready(&server).await;
    ready(&client).await;
    first_ok(&client).await;
    let serial = |s: serde_json::Value| s["identity"]["certificate"]["serial"].clone();
    let first = serial(state(&server).await);
    let issued = |s: &serde_json::Value| s["identity"]["certificates_issued"].as_u64().unwrap();
    let before = issued(&state(&server).await);

    let handshakes = |m: &str| {
        ferry_testkit::metric_sum(
            m,
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src"), ("tls", "true")],
        )
    };
    let handshakes_before = handshakes(&admin(&server, "/metrics").await);

    // A steady sequential stream on kept-alive connections, plus a burst of 4 concurrent
    // requests every 400 ms: the client proxy's 200 ms idle timeout closes the burst's extra
    // connections in between, so new handshakes keep meeting freshly rotated certificates.
    let http = client::http1();
    let url = echo_url(&client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(14);
    let mut last_burst = tokio::time::Instant::now();
    let (mut ok, mut failures) = (0, Vec::new());
    while tokio::time::Instant::now() < deadline {
        let width = if last_burst.elapsed() > Duration::from_millis(400) {
            last_burst = tokio::time::Instant::now();
            4
        } else {
            1
        };
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..width {
            let req = http::Request::get(&url).body(Default::default()).unwrap();
            let http = http.clone();
            batch.spawn(async move { client::send(&http, req).await });
        }
        while let Some(result) = batch.join_next().await {
            match result.unwrap() {
                Ok(r) if r.status == StatusCode::OK => ok += 1,
                Ok(r) => failures.push(format!(
                    "{} {:?}",
                    r.status,
                    r.headers.get("l5d-proxy-error")
                )),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    let after = state(&server).await;
    let new_handshakes = handshakes(&admin(&server, "/metrics").await) - handshakes_before;
    eprintln!("{new_handshakes} new mTLS connections during the run");
    assert!(new_handshakes >= 10.0, "{new_handshakes}");
    eprintln!(
        "{ok} requests, {} failures, {} certificates issued during the run",
        failures.len(),
        issued(&after) - before
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok > 100, "{ok}");
    // About one renewal per 4.2 s (70 % of 6 s): at least 3, and no renewal storm.
    assert!((3..=6).contains(&(issued(&after) - before)), "{after}");
    assert_ne!(serial(after), first);
    let client_state = state(&client).await;
    assert!(issued(&client_state) >= 4, "{client_state}");
}

#[tokio::test]
async fn a_proxy_with_another_trust_anchor_is_refused_on_both_sides() {
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    let server = server_proxy(&mesh, "echo", &app, &[]).await;
    mesh.set_echo(server.inbound()).await;
    ready(&server).await;

    // Another control plane, another CA, that sends its client to the same server. (The
    // first mesh's destination service would not do: its TLS does not verify against the
    // stranger's anchors.)
    let stranger_ca = Mesh::start("1h").await;
    stranger_ca.set_echo(server.inbound()).await;
    let stranger = client_proxy(&stranger_ca, stranger_ca.grpc, &[]).await;
    ready(&stranger).await;
    let r = handshake_refusal(&echo_url(&stranger)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.headers["l5d-proxy-error"], "tls-handshake-unknown-ca");
    assert!(
        r.text().contains("invalid peer certificate"),
        "{}",
        r.text()
    );
    let m = assert_outbound_handshake_error(&stranger, "unknown_ca").await;
    assert!(
        ferry_testkit::metric_sum(
            &m,
            "outbound_http_errors_total",
            &[("error", "tls-handshake-unknown-ca")]
        ) >= 1.0,
        "{m}"
    );
    // The server side heard the refusal and counts it too.
    wait_inbound_handshake_error(&server, "unknown_ca").await;
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_as_a_name_mismatch() {
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    // Discovery says the endpoint is `echo`; the proxy there is certified as `client`.
    let server = server_proxy(&mesh, "client", &app, &[]).await;
    mesh.set_echo(server.inbound()).await;
    let client = client_proxy(&mesh, mesh.grpc, &[]).await;
    ready(&server).await;
    ready(&client).await;
    let r = handshake_refusal(&echo_url(&client)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        r.headers["l5d-proxy-error"],
        "tls-handshake-name-mismatch",
        "{}",
        r.text()
    );
    assert_outbound_handshake_error(&client, "name_mismatch").await;
    // The server heard the client refuse its certificate (a bad_certificate alert).
    wait_inbound_handshake_error(&server, "name_mismatch").await;
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    // The server proxy is certified for 2 s by a control plane that then goes away.
    let short = Mesh::start("2s").await;
    let app = app().await;
    let server = server_proxy(&short, "echo", &app, &[]).await;
    ready(&server).await;
    let Mesh { cp, dir, .. } = short;
    drop(cp);

    // A second control plane on the same CA (same directory) serves discovery and the client.
    let mesh = Mesh::restart_on(dir, "1h").await;
    mesh.set_echo(server.inbound()).await;
    let client = client_proxy(&mesh, mesh.grpc, &[]).await;
    ready(&client).await;
    wait_until(WAIT, "the server certificate to expire", || async {
        let s = state(&server).await;
        (s["identity"]["certificate"]["expires_in_seconds"].as_i64()? < 0).then_some(())
    })
    .await
    .unwrap();
    let r = client::get(&echo_url(&client)).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.headers["l5d-proxy-error"], "tls-handshake-expired");
    let m = admin(&server, "/metrics").await;
    assert!(
        ferry_testkit::metric(
            &m,
            "inbound_tls_handshake_errors_total",
            &[("reason", "expired")]
        ) >= Some(1.0),
        "{m}"
    );
    let r = client::get(&format!("http://{}/ready", server.admin()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
}

#[tokio::test]
async fn inbound_require_identity_refuses_plaintext_and_accepts_the_mesh() {
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    let server = server_proxy(&mesh, "echo", &app, &["--inbound-require-identity"]).await;
    mesh.set_echo(server.inbound()).await;
    let client = client_proxy(&mesh, mesh.grpc, &[]).await;
    ready(&server).await;
    ready(&client).await;
    first_ok(&client).await;

    let r = client::get(&format!("http://{}/", server.inbound()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.headers["l5d-proxy-error"], "identity-required");
    let m = admin(&server, "/metrics").await;
    assert!(
        ferry_testkit::metric_sum(
            &m,
            "inbound_http_errors_total",
            &[("error", "identity-required")]
        ) >= 1.0,
        "{m}"
    );
    // Opaque plaintext is closed without a byte.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.inbound())
        .await
        .unwrap();
    tcp.write_all(b"\x00\x01hello\r\n").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// The first proxy-made `tls-handshake-*` answer from `url`: until discovery has the
/// server's address, the placeholder endpoint refuses with another reason.
async fn handshake_refusal(url: &str) -> client::Reply {
    wait_until(WAIT, "a proxy-made answer", || async move {
        let r = client::get(url).await.ok()?;
        let reason = r.headers.get("l5d-proxy-error")?.to_str().ok()?;
        reason.starts_with("tls-handshake").then_some(r)
    })
    .await
    .unwrap()
}

/// Asserts `client` counted a refused outbound handshake for `reason`; returns its metrics.
async fn assert_outbound_handshake_error(client: &ProxyProc, reason: &str) -> String {
    let m = admin(client, "/metrics").await;
    assert!(
        ferry_testkit::metric(
            &m,
            "outbound_tls_handshake_errors_total",
            &[("reason", reason)]
        ) >= Some(1.0),
        "{m}"
    );
    m
}

/// Waits until `server` has counted a refused inbound handshake for `reason` (it hears of
/// the refusal from the client's alert, a moment after the client's answer).
async fn wait_inbound_handshake_error(server: &ProxyProc, reason: &str) {
    wait_until(WAIT, "the inbound handshake error counted", || async {
        let m = admin(server, "/metrics").await;
        (ferry_testkit::metric(
            &m,
            "inbound_tls_handshake_errors_total",
            &[("reason", reason)],
        ) >= Some(1.0))
        .then_some(())
    })
    .await
    .unwrap();
}

/// With identity, the proxy ↔ control plane gRPC is TLS verified against the trust anchors
/// and the control plane's identity: the default name works; a proxy expecting another
/// control-plane identity refuses the server (its token is never sent) and stays not ready;
/// a plaintext gRPC client gets no answer from the control plane.
#[tokio::test]
async fn the_control_planes_grpc_is_tls_verified_by_identity() {
    use linkerd2_proxy_api::identity::{identity_client::IdentityClient, CertifyRequest};
    let mesh = Mesh::start("1h").await;
    let app = app().await;
    let good = server_proxy(&mesh, "echo", &app, &[]).await;
    ready(&good).await;

    let other = "ferry-control.elsewhere.serviceaccount.identity.ferry.cluster.local";
    let wrong = server_proxy(&mesh, "echo", &app, &["--control-plane-identity", other]).await;
    let error = wait_until(WAIT, "a failed certificate request", || async {
        let s = state(&wrong).await;
        s["identity"]["last_renewal"]["error"]
            .as_str()
            .map(str::to_owned)
    })
    .await
    .unwrap();
    assert!(error.contains(other), "{error}");
    assert!(error.contains("not valid for name"), "{error}");
    assert_eq!(state(&wrong).await["identity"]["ready"], false);

    let plaintext = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.grpc))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        IdentityClient::new(channel)
            .certify(CertifyRequest::default())
            .await
    };
    let answer = tokio::time::timeout(WAIT, plaintext)
        .await
        .expect("bounded");
    let status = answer.expect_err("plaintext gRPC is not served");
    assert_ne!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}
