//! The identity CA over real gRPC on 127.0.0.1:0: a client builds its CSR the way a proxy
//! does (ECDSA P-256, one DNS SAN), presents its local token, and the chain it gets back
//! is checked by `openssl verify` and by x509-parser.

#[path = "support/fixture.rs"]
mod fixture;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ferry_api::control_api::IdentityInfo;
use ferry_api::identity::{dns_name, spiffe_uri};
use ferry_control::discovery::StaticDiscovery;
use ferry_control::identity::material::{CaSource, MaterialError};
use ferry_control::identity::{Identity, IdentityConfig};
use ferry_control::model::ObjectRef;
use fixture::within;
use linkerd2_proxy_api::identity as pb;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const TRUST_DOMAIN: &str = "example.org";

/// Bound on each gRPC or HTTP exchange; generous, as the machine may be busy.
const LIMIT: Duration = Duration::from_secs(10);

const WORKLOADS: &str = r#"
trustDomain: example.org
workloads:
  - name: web
    namespace: emojivoto
    serviceAccount: web
    instances: [{name: web-0, addr: "127.0.0.1:17201"}]
  - name: voting
    namespace: emojivoto
    serviceAccount: voting
    instances: [{name: voting-0, addr: "127.0.0.1:17202"}]
"#;

/// A control plane with the identity CA, serving until dropped.
struct ControlPlane {
    grpc: SocketAddr,
    api: SocketAddr,
    identity: Identity,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    async fn start(config: IdentityConfig) -> Self {
        let state = ferry_control::workloads_file::parse(WORKLOADS).unwrap();
        let identity = Identity::load(&config, &state.trust_domain).expect("identity CA loads");
        // Tokens exist before the first request, as they do when `serve` starts.
        identity.tokens().ensure_all(&state).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, api_addr) = (grpc.local_addr().unwrap(), api.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = identity.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let discovery = StaticDiscovery::new(state);
            ferry_control::serve_with_identity(
                grpc,
                api,
                discovery,
                Some(served),
                Duration::from_millis(200),
                shutdown,
            )
            .await
            .expect("serving");
        });
        Self {
            grpc: grpc_addr,
            api: api_addr,
            identity,
            stop: Some(stop),
            task,
        }
    }

    fn token(&self, namespace: &str, service_account: &str) -> Vec<u8> {
        let path = self
            .identity
            .tokens()
            .path(&ObjectRef::new(namespace, service_account));
        std::fs::read(path).expect("token file written")
    }

    async fn certify(&self, req: pb::CertifyRequest) -> Result<pb::CertifyResponse, tonic::Status> {
        let endpoint = format!("http://{}", self.grpc);
        let mut client = within(LIMIT, "connect", IdentityClient::connect(endpoint))
            .await
            .expect("connects");
        within(LIMIT, "Certify", client.certify(req))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within(LIMIT, "shutdown", &mut self.task)
            .await
            .expect("serve task");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn web() -> String {
    dns_name("web", "emojivoto", TRUST_DOMAIN)
}

/// A CSR as a proxy makes it: fresh P-256 key, exactly the given DNS SANs.
fn csr(sans: &[&str]) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

fn request(identity: &str, token: Vec<u8>, csr: Vec<u8>) -> pb::CertifyRequest {
    pb::CertifyRequest {
        identity: identity.to_string(),
        token,
        certificate_signing_request: csr,
    }
}

fn pem(der: &[u8]) -> String {
    let pem = openssl(&["x509", "-inform", "DER"], Some(der));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    pem
}

/// Runs `openssl` (bounded by its own quick exit; these commands never wait on input
/// beyond `stdin`) and returns stdout and stderr together.
fn openssl(args: &[&str], stdin: Option<&[u8]>) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes the chain as files and asks `openssl verify` about it.
fn openssl_verify(
    dir: &Path,
    anchors_pem: &str,
    resp: &pb::CertifyResponse,
    extra: &[&str],
) -> String {
    let anchors = dir.join("anchors.pem");
    let chain = dir.join("chain.pem");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&anchors, anchors_pem).unwrap();
    let intermediates: String = resp
        .intermediate_certificates
        .iter()
        .map(|d| pem(d))
        .collect();
    std::fs::write(&chain, intermediates).unwrap();
    std::fs::write(&leaf, pem(&resp.leaf_certificate)).unwrap();
    let (anchors, chain, leaf) = (path(&anchors), path(&chain), path(&leaf));
    let mut args = vec!["verify", "-CAfile", &anchors, "-untrusted", &chain];
    args.extend_from_slice(extra);
    args.push(&leaf);
    openssl(&args, None)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn first_cert_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .contents
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn issues_a_leaf_that_chains_to_the_trust_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path().join("identity"))).await;
    let (key, der) = csr(&[&web()]);
    let resp = cp
        .certify(request(&web(), cp.token("emojivoto", "web"), der))
        .await
        .expect("certificate issued");

    // Rust: the chain, the names, the key, the usages and the lifetime.
    let anchors_pem = cp.identity.ca().trust_anchors_pem().to_string();
    let anchor_der = first_cert_der(&anchors_pem);
    let (_, anchor) = X509Certificate::from_der(&anchor_der).unwrap();
    assert_eq!(resp.intermediate_certificates.len(), 1);
    let (_, issuer) = X509Certificate::from_der(&resp.intermediate_certificates[0]).unwrap();
    let (_, leaf) = X509Certificate::from_der(&resp.leaf_certificate).unwrap();
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("leaf signed by the issuer");
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("issuer signed by the anchor");
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            format!("DNS:{}", web()),
            format!("URI:{}", spiffe_uri("web", "emojivoto", TRUST_DOMAIN)),
        ]
    );
    assert_eq!(
        sans[1], "URI:spiffe://example.org/ns/emojivoto/sa/web",
        "the SPIFFE shape of the issue"
    );
    assert!(!leaf.is_ca());
    let usage = leaf.key_usage().unwrap().expect("key usage").value;
    assert!(usage.digital_signature());
    assert!(!usage.key_cert_sign() && !usage.key_encipherment());
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("extended key usage")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let validity = leaf.validity();
    let now = unix_now();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    assert!(
        (now - 25..=now - 15).contains(&not_before),
        "backdated ~20s: {not_before} vs {now}"
    );
    assert!(
        (now + 86_400 - 5..=now + 86_400 + 1).contains(&not_after),
        "24h: {not_after} vs {now}"
    );
    assert_eq!(resp.valid_until.unwrap().seconds, not_after);
    for ext in leaf.extensions() {
        assert!(!matches!(
            ext.parsed_extension(),
            ParsedExtension::UnsupportedExtension { .. }
        ));
    }

    // OpenSSL: the same chain verifies to the anchor, for both TLS roles.
    for purpose in ["sslserver", "sslclient"] {
        let out = openssl_verify(dir.path(), &anchors_pem, &resp, &["-purpose", purpose]);
        assert!(out.trim_end().ends_with("leaf.pem: OK"), "{purpose}: {out}");
    }
    // ...and not to some other anchor.
    let other = ferry_api::ca::generate("ferry", TRUST_DOMAIN, time::OffsetDateTime::now_utc())
        .unwrap()
        .trust_anchor_pem;
    let out = openssl_verify(dir.path(), &other, &resp, &[]);
    assert!(!out.contains("leaf.pem: OK"), "{out}");

    // The public API tells the same anchor, with a fingerprint OpenSSL agrees with.
    let info: IdentityInfo = get_json(cp.api, "/api/v1/identity").await;
    assert_eq!(info.trust_anchors_pem, anchors_pem);
    assert_eq!(info.trust_domain, TRUST_DOMAIN);
    assert_eq!(info.certificate_lifetime_seconds, 86_400);
    let fingerprint = openssl(
        &["x509", "-noout", "-fingerprint", "-sha256"],
        Some(anchors_pem.as_bytes()),
    );
    let fingerprint = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(info.trust_anchors[0].sha256, fingerprint);
    assert!(
        info.issuer.subject.contains("identity.ferry.example.org"),
        "{:?}",
        info.issuer
    );
    cp.stop().await;
}

async fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> T {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: ferry\r\nconnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = within(LIMIT, "GET", exchange).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn refuses_a_token_that_does_not_match_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path())).await;
    let voting = dns_name("voting", "emojivoto", TRUST_DOMAIN);

    // web's token, asking for voting's name (with a CSR for voting's name).
    let (_, der) = csr(&[&voting]);
    let status = cp
        .certify(request(&voting, cp.token("emojivoto", "web"), der.clone()))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("identity \"{voting}\" does not match the token"))
            && status
                .message()
                .contains("service account web in namespace emojivoto"),
        "{}",
        status.message()
    );

    // A token with the right shape but the wrong secret.
    let mut forged = cp.token("emojivoto", "voting");
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let status = cp
        .certify(request(&voting, forged, der.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("does not match the one issued"),
        "{}",
        status.message()
    );

    // A token for an account that was never issued one, and no token at all.
    let unknown = format!("ferry-local-v1:emojivoto:nobody:{}", "0".repeat(64));
    let status = cp
        .certify(request(&voting, unknown.into_bytes(), der.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("no identity token is issued for service account emojivoto/nobody"),
        "{}",
        status.message()
    );
    let status = cp
        .certify(request(&voting, Vec::new(), der))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    cp.stop().await;
}

#[tokio::test]
async fn refuses_csrs_that_are_malformed_unsigned_or_misnamed() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(IdentityConfig::in_dir(dir.path())).await;
    let token = cp.token("emojivoto", "web");
    let refuse = |csr: Vec<u8>| {
        let req = request(&web(), token.clone(), csr);
        let cp = &cp;
        async move {
            let status = cp.certify(req).await.expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            status.message().to_string()
        }
    };

    let message = refuse(b"not a csr".to_vec()).await;
    assert!(message.contains("not a DER-encoded PKCS#10"), "{message}");

    let (_, mut tampered) = csr(&[&web()]);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let message = refuse(tampered).await;
    assert!(message.contains("signature does not verify"), "{message}");

    let (_, two) = csr(&[&web(), "evil.example.org"]);
    let message = refuse(two).await;
    assert!(message.contains("exactly one SAN"), "{message}");
    assert!(message.contains("DNS:evil.example.org"), "{message}");

    let voting = dns_name("voting", "emojivoto", TRUST_DOMAIN);
    let (_, misnamed) = csr(&[&voting]);
    let message = refuse(misnamed).await;
    assert!(message.contains(&format!("[DNS:{voting}]")), "{message}");

    let (_, none) = csr(&[]);
    let message = refuse(none).await;
    assert!(message.contains("it has []"), "{message}");

    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let p384 = CertificateParams::new(vec![web()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let message = refuse(p384.der().to_vec()).await;
    assert!(message.contains("ECDSA P-256"), "{message}");
    cp.stop().await;
}

fn write_files(dir: &Path, anchors: &str, cert: &str, key: &str) -> CaSource {
    let files = CaSource::Files {
        trust_anchors: dir.join("ca.crt"),
        issuer_cert: dir.join("tls.crt"),
        issuer_key: dir.join("tls.key"),
    };
    if let CaSource::Files {
        trust_anchors,
        issuer_cert,
        issuer_key,
    } = &files
    {
        std::fs::write(trust_anchors, anchors).unwrap();
        std::fs::write(issuer_cert, cert).unwrap();
        std::fs::write(issuer_key, key).unwrap();
    }
    files
}

#[tokio::test]
async fn issues_from_user_supplied_files_and_refuses_inconsistent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mine = ferry_api::ca::generate("elsewhere", TRUST_DOMAIN, now).unwrap();
    let files = write_files(
        dir.path(),
        &mine.trust_anchor_pem,
        &mine.issuer_cert_pem,
        &mine.issuer_key_pem,
    );
    let config = IdentityConfig {
        ca: files,
        tokens_dir: dir.path().join("tokens"),
        cert_lifetime: Duration::from_secs(3600),
    };
    let cp = ControlPlane::start(config).await;
    assert_eq!(cp.identity.ca().trust_anchors_pem(), mine.trust_anchor_pem);
    let (_, der) = csr(&[&web()]);
    let resp = cp
        .certify(request(&web(), cp.token("emojivoto", "web"), der))
        .await
        .unwrap();
    assert_eq!(
        resp.intermediate_certificates[0],
        first_cert_der(&mine.issuer_cert_pem)
    );
    let out = openssl_verify(dir.path(), &mine.trust_anchor_pem, &resp, &[]);
    assert!(out.trim_end().ends_with("leaf.pem: OK"), "{out}");
    cp.stop().await;

    // Another pair's key, and another pair's anchor: both refused with the reason.
    let other = ferry_api::ca::generate("other", TRUST_DOMAIN, now).unwrap();
    let load = |files: CaSource| {
        let config = IdentityConfig {
            ca: files,
            tokens_dir: dir.path().join("tokens"),
            cert_lifetime: Duration::from_secs(60),
        };
        let error = Identity::load(&config, TRUST_DOMAIN).expect_err("refused");
        assert!(matches!(error, MaterialError::Invalid { .. }), "{error:?}");
        format!("{:#}", anyhow::Error::from(error))
    };
    let wrong_key = load(write_files(
        dir.path(),
        &mine.trust_anchor_pem,
        &mine.issuer_cert_pem,
        &other.issuer_key_pem,
    ));
    assert!(
        wrong_key.contains("issuer key does not match"),
        "{wrong_key}"
    );
    let wrong_anchor = load(write_files(
        dir.path(),
        &other.trust_anchor_pem,
        &mine.issuer_cert_pem,
        &mine.issuer_key_pem,
    ));
    assert!(
        wrong_anchor.contains("not signed by any of the trust anchors"),
        "{wrong_anchor}"
    );
    let not_pem = load(write_files(
        dir.path(),
        "hello",
        &mine.issuer_cert_pem,
        &mine.issuer_key_pem,
    ));
    assert!(
        not_pem.contains("trust anchors: no PEM certificate found"),
        "{not_pem}"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_generated_anchor_and_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = IdentityConfig::in_dir(dir.path());
    let first = ControlPlane::start(config.clone()).await;
    let anchors = first.identity.ca().trust_anchors_pem().to_string();
    let token = first.token("emojivoto", "web");
    first.stop().await;

    let second = ControlPlane::start(config).await;
    assert_eq!(second.identity.ca().trust_anchors_pem(), anchors);
    assert_eq!(second.token("emojivoto", "web"), token);
    let (_, der) = csr(&[&web()]);
    let resp = second.certify(request(&web(), token, der)).await.unwrap();
    let out = openssl_verify(dir.path(), &anchors, &resp, &[]);
    assert!(out.trim_end().ends_with("leaf.pem: OK"), "{out}");
    second.stop().await;
}

#[tokio::test]
async fn a_short_lifetime_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = IdentityConfig {
        cert_lifetime: Duration::from_secs(3),
        ..IdentityConfig::in_dir(dir.path())
    };
    let cp = ControlPlane::start(config).await;
    let (_, der) = csr(&[&web()]);
    let before = unix_now();
    let resp = cp
        .certify(request(&web(), cp.token("emojivoto", "web"), der))
        .await
        .unwrap();
    let after = unix_now();
    let (_, leaf) = X509Certificate::from_der(&resp.leaf_certificate).unwrap();
    let not_after = leaf.validity().not_after.timestamp();
    assert!(
        (before + 3..=after + 3).contains(&not_after),
        "{before}..{after} +3s vs {not_after}"
    );
    assert_eq!(resp.valid_until.unwrap().seconds, not_after);

    // OpenSSL agrees it is good now and expired a second past not_after, without waiting.
    let anchors = cp.identity.ca().trust_anchors_pem().to_string();
    let at = |t: i64| t.to_string();
    let now = openssl_verify(
        dir.path(),
        &anchors,
        &resp,
        &["-attime", &at(not_after - 1)],
    );
    assert!(now.trim_end().ends_with("leaf.pem: OK"), "{now}");
    let later = openssl_verify(
        dir.path(),
        &anchors,
        &resp,
        &["-attime", &at(not_after + 1)],
    );
    assert!(later.contains("certificate has expired"), "{later}");
    cp.stop().await;
}
