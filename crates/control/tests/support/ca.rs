//! The identity tests' harness: a control plane with the CA on 127.0.0.1:0, CSRs made
//! as a proxy makes them, and `openssl` to check what comes back.

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::fixture::within;
use ferry_api::identity::dns_name;
use ferry_control::discovery::StaticDiscovery;
use ferry_control::identity::material::CaSource;
use ferry_control::identity::{Identity, IdentityConfig};
use ferry_control::model::ObjectRef;
use linkerd2_proxy_api::identity as pb;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TRUST_DOMAIN: &str = "example.org";

/// Bound on each gRPC or HTTP exchange; generous, as the machine may be busy.
pub const LIMIT: Duration = Duration::from_secs(10);

pub const WORKLOADS: &str = r#"
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
pub struct ControlPlane {
    pub grpc: SocketAddr,
    pub api: SocketAddr,
    pub identity: Identity,
    /// The discovery the control plane serves from; tests publish edits through it.
    pub discovery: StaticDiscovery,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    pub async fn start(config: IdentityConfig) -> Self {
        let state = ferry_control::workloads_file::parse(WORKLOADS).unwrap();
        let identity = Identity::load(&config, &state.trust_domain).expect("identity CA loads");
        // Tokens exist before the first request, as they do when `serve` starts.
        identity.tokens().ensure_all(&state).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, api_addr) = (grpc.local_addr().unwrap(), api.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = identity.clone();
        let discovery = StaticDiscovery::new(state);
        let serving = discovery.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            ferry_control::serve_with_identity(
                grpc,
                api,
                serving,
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
            discovery,
            stop: Some(stop),
            task,
        }
    }

    pub fn token(&self, namespace: &str, service_account: &str) -> Vec<u8> {
        let path = self
            .identity
            .tokens()
            .path(&ObjectRef::new(namespace, service_account));
        std::fs::read(path).expect("token file written")
    }

    pub async fn certify(
        &self,
        req: pb::CertifyRequest,
    ) -> Result<pb::CertifyResponse, tonic::Status> {
        let endpoint = format!("http://{}", self.grpc);
        let mut client = within(LIMIT, "connect", IdentityClient::connect(endpoint))
            .await
            .expect("connects");
        within(LIMIT, "Certify", client.certify(req))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn stop(mut self) {
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

pub fn web() -> String {
    dns_name("web", "emojivoto", TRUST_DOMAIN)
}

/// A CSR as a proxy makes it: fresh P-256 key, exactly the given DNS SANs.
pub fn csr(sans: &[&str]) -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let der = params.serialize_request(&key).unwrap().der().to_vec();
    (key, der)
}

pub fn request(identity: &str, token: Vec<u8>, csr: Vec<u8>) -> pb::CertifyRequest {
    pb::CertifyRequest {
        identity: identity.to_string(),
        token,
        certificate_signing_request: csr,
    }
}

pub fn pem(der: &[u8]) -> String {
    let pem = openssl(&["x509", "-inform", "DER"], Some(der));
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    pem
}

/// Runs `openssl` (bounded by its own quick exit; these commands never wait on input
/// beyond `stdin`) and returns stdout and stderr together.
pub fn openssl(args: &[&str], stdin: Option<&[u8]>) -> String {
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
pub fn openssl_verify(
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

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

pub fn first_cert_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .contents
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub async fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> T {
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

pub fn write_files(dir: &Path, anchors: &str, cert: &str, key: &str) -> CaSource {
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
