//! The injector tests' harness: a serving certificate from a throwaway CA, a client that
//! POSTs as the API server does (HTTPS, checked against that CA), and the recorded reviews.

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::fixture::within;

/// The name the certificate carries, as `ferry install` generates it.
pub const SERVER_NAME: &str = "ferry-proxy-injector.ferry.svc";

/// Bound on one webhook exchange.
const LIMIT: Duration = Duration::from_secs(10);

/// The recorded AdmissionReviews (`shared/k8s/admission`).
pub fn admission_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s/admission")
}

/// One recorded review, parsed.
pub fn recorded(name: &str) -> Value {
    let text = std::fs::read(admission_dir().join(name)).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// A serving certificate and key in a temporary directory, and the CA that signed them.
pub struct ServingPair {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_der: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl ServingPair {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![SERVER_NAME.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, leaf.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Self {
            cert_file,
            key_file,
            ca_der: ca_cert.der().to_vec(),
            _dir: dir,
        }
    }
}

/// A TLS connection to the webhook at `addr`, checked against the pair's CA.
pub async fn connect(
    addr: SocketAddr,
    pair: &ServingPair,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = connector(pair, vec![b"http/1.1".to_vec()]);
    let connecting = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect(SERVER_NAME.try_into().unwrap(), tcp)
            .await
            .expect("TLS handshake")
    };
    within(LIMIT, "TLS connect", connecting).await
}

/// Whether a TLS handshake with `addr` succeeds when trusting only `ca_der`.
pub async fn handshake_with_ca(addr: SocketAddr, ca_der: Vec<u8>) -> std::io::Result<()> {
    let connector = connector_for(ca_der, vec![b"http/1.1".to_vec()]);
    let tcp = TcpStream::connect(addr).await?;
    within(
        LIMIT,
        "TLS handshake",
        connector.connect(SERVER_NAME.try_into().unwrap(), tcp),
    )
    .await
    .map(drop)
}

fn connector(pair: &ServingPair, alpn: Vec<Vec<u8>>) -> tokio_rustls::TlsConnector {
    connector_for(pair.ca_der.clone(), alpn)
}

fn connector_for(ca_der: Vec<u8>, alpn: Vec<Vec<u8>>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// POSTs `body` to `addr` over HTTPS as the API server does; the status and the parsed
/// answer (`null` when it is not JSON).
pub async fn post(
    addr: SocketAddr,
    pair: &ServingPair,
    path: &str,
    body: Vec<u8>,
) -> (http::StatusCode, Value) {
    // The API server offers h2 first; the webhook must settle on HTTP/1.1.
    let connector = connector(pair, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(SERVER_NAME.try_into().unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .header("host", format!("{SERVER_NAME}:443"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let rsp = sender.send_request(req).await.unwrap();
        let status = rsp.status();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    let (status, body) = within(LIMIT, "webhook exchange", exchange).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Applies an answer's JSON patch to `object`, failing unless it applies cleanly.
pub fn apply(response: &Value, object: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("the patch is base64 text"),
        )
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies cleanly");
    object
}
