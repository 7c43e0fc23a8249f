//! The control plane's own mesh identity: a certificate its CA issues to itself for
//! `ferry-control.<namespace>.serviceaccount.identity.ferry.<trust-domain>`
//! ([`ferry_api::identity::control_plane_name`]), renewed at 70 % of its validity and
//! whenever the CA changes (a reloaded issuer). No token and no network are involved: the
//! key is made in-process and the CSR goes straight to the CA.
//!
//! The tap relay presents it to proxies' tap servers, which authorise taps by this name
//! (docs/tap.md).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, RwLock,
};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{
    pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use rustls::{client::ResolvesClientCert, sign::CertifiedKey, RootCertStore, SignatureScheme};
use tokio::sync::watch;

use super::ca::Ca;

/// The share of a certificate's validity after which it is renewed (as proxies do).
pub const RENEW_AT: f64 = 0.7;
/// Backoff after a failed issuance (the issuer expired or its key is unusable).
const RETRY: Duration = Duration::from_secs(10);

/// The control plane could not issue itself a certificate.
#[derive(Debug, thiserror::Error)]
#[error("issuing the control plane's own certificate: {0}")]
pub struct OwnCertError(String);

/// The control plane's identity and its current certificate.
pub struct OwnIdentity {
    name: String,
    service_account: &'static str,
    namespace: String,
    trust_domain: String,
    lifetime: Duration,
    ca: watch::Receiver<Arc<Ca>>,
    current: RwLock<(Arc<CertifiedKey>, Arc<RootCertStore>, SystemTime)>,
    issued: AtomicU64,
}

impl std::fmt::Debug for OwnIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl OwnIdentity {
    /// Issues the first certificate from the current CA at once.
    pub fn new(
        ca: watch::Receiver<Arc<Ca>>,
        namespace: &str,
        trust_domain: &str,
        lifetime: Duration,
    ) -> Result<Arc<Self>, OwnCertError> {
        let service_account = ferry_api::k8s::CONTROL_NAME;
        let name = ferry_api::identity::dns_name(service_account, namespace, trust_domain);
        let first = issue(
            &ca.borrow(),
            &name,
            service_account,
            namespace,
            trust_domain,
            lifetime,
        )?;
        let own = Self {
            name,
            service_account,
            namespace: namespace.to_string(),
            trust_domain: trust_domain.to_string(),
            lifetime,
            ca,
            current: RwLock::new(first),
            issued: AtomicU64::new(1),
        };
        tracing::info!(identity = %own.name, "control plane certificate issued");
        Ok(Arc::new(own))
    }

    /// The control plane's identity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Certificates issued to itself since start.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// The current certificate chain and key.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.lock().0.clone()
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.lock().2
    }

    fn lock(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, (Arc<CertifiedKey>, Arc<RootCertStore>, SystemTime)> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a new certificate from the current CA; returns how long until the next.
    pub fn renew(&self) -> Result<Duration, OwnCertError> {
        let next = issue(
            &self.ca.borrow(),
            &self.name,
            self.service_account,
            &self.namespace,
            &self.trust_domain,
            self.lifetime,
        )?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.issued.fetch_add(1, Ordering::Relaxed);
        tracing::info!(identity = %self.name, "control plane certificate renewed");
        Ok(self.renew_in())
    }

    /// 70 % of the current certificate's remaining validity.
    fn renew_in(&self) -> Duration {
        self.not_after()
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .mul_f64(RENEW_AT)
            .max(Duration::from_millis(500))
    }

    /// Renews before expiry, and at once when the CA changes, for as long as the future
    /// runs.
    pub async fn run(self: Arc<Self>) {
        let mut ca = self.ca.clone();
        let mut wait = self.renew_in();
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = ca.changed() => if changed.is_err() { return },
            }
            wait = match self.renew() {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(%error, retry_in = ?RETRY, "control plane certificate not renewed; the current one stays in use");
                    RETRY
                }
            };
        }
    }

    /// A TLS 1.3 client config presenting the current certificate and verifying servers
    /// against the current trust anchors (by the identity name the caller connects to).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let (key, roots) = {
            let current = self.lock();
            (current.0.clone(), current.1.clone())
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(Fixed(key)));
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// Presents the control plane's current certificate as a server.
#[derive(Debug)]
struct Current(Arc<OwnIdentity>);

impl rustls::server::ResolvesServerCert for Current {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl OwnIdentity {
    /// The gRPC server's TLS config: the current certificate at each handshake (renewals
    /// apply to new connections), no client certificate asked (a proxy's first `Certify`
    /// comes before it has one; its token authenticates it), HTTP/2 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, OwnCertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OwnCertError(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Current(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// How long a gRPC client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection to the gRPC server.
/// It holds its place under the gRPC connection limit until dropped.
pub struct TlsConn(tokio_rustls::server::TlsStream<crate::limits::Limited>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` and completes their TLS handshakes concurrently (each
/// within [`HANDSHAKE_TIMEOUT`]); yields those that succeed. Plaintext clients fail the
/// handshake and are closed. The accept task ends when the stream is dropped.
pub fn tls_incoming(
    listener: crate::limits::LimitedListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let _ = tcp.stream().set_nodelay(true);
            let peer = tcp.stream().peer_addr().ok();
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(error)) => {
                        tracing::info!(?peer, %error, "gRPC client refused: TLS handshake failed (the gRPC port speaks TLS when identity is on)");
                    }
                    Err(_) => {
                        tracing::info!(
                            ?peer,
                            "gRPC client refused: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                        )
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Presents one certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Dials `addr` over mTLS as the control plane, requiring the server to be `server_id`.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    server_id: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = ServerName::try_from(server_id.to_string()).map_err(|_| {
        std::io::Error::other(format!("{server_id:?} is not a valid identity name"))
    })?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn issue(
    ca: &Ca,
    name: &str,
    service_account: &str,
    namespace: &str,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<(Arc<CertifiedKey>, Arc<RootCertStore>, SystemTime), OwnCertError> {
    let err = |e: &dyn std::fmt::Display| OwnCertError(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e))?;
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| err(&e))?;
    let csr = params.serialize_request(&key).map_err(|e| err(&e))?;
    let issued = ca
        .issue(
            csr.der(),
            service_account,
            namespace,
            trust_domain,
            lifetime,
            SystemTime::now(),
        )
        .map_err(|e| err(&e))?;
    let mut chain = vec![CertificateDer::from(issued.leaf_der)];
    chain.extend(
        issued
            .intermediates_der
            .into_iter()
            .map(CertificateDer::from),
    );
    let signing = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(key.serialize_der()),
    ))
    .map_err(|e| err(&e))?;
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca.trust_anchors_pem().as_bytes()) {
        roots.add(der.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    Ok((
        Arc::new(CertifiedKey::new(chain, signing)),
        Arc::new(roots),
        issued.valid_until,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (tempfile::TempDir, watch::Sender<Arc<Ca>>) {
        let dir = tempfile::tempdir().unwrap();
        let source = super::super::material::CaSource::Generated {
            dir: dir.path().to_path_buf(),
        };
        let ca = super::super::material::load(&source, "cluster.local").unwrap();
        (dir, watch::Sender::new(Arc::new(ca)))
    }

    fn leaf_sans(own: &OwnIdentity) -> (Vec<u8>, String) {
        let key = own.certified_key();
        let der = key.cert[0].to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n}"))
            .collect::<Vec<_>>()
            .join(",");
        (cert.raw_serial().to_vec(), sans)
    }

    #[test]
    fn the_control_plane_names_itself_like_a_workload() {
        let (_dir, ca) = ca();
        let own = OwnIdentity::new(
            ca.subscribe(),
            "ferry",
            "cluster.local",
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(
            own.name(),
            "ferry-control.ferry.serviceaccount.identity.ferry.cluster.local"
        );
        let (_, sans) = leaf_sans(&own);
        assert!(
            sans.contains("ferry-control.ferry.serviceaccount.identity.ferry.cluster.local"),
            "{sans}"
        );
        assert!(
            sans.contains("spiffe://cluster.local/ns/ferry/sa/ferry-control"),
            "{sans}"
        );
        assert!(own.client_config().is_ok());
    }

    /// On paused time: nothing before 70 % of the validity, a new certificate after it.
    #[tokio::test(start_paused = true)]
    async fn renews_at_seventy_percent_of_its_validity() {
        let (_dir, ca) = ca();
        let own = OwnIdentity::new(
            ca.subscribe(),
            "ferry",
            "cluster.local",
            Duration::from_secs(3600),
        )
        .unwrap();
        let (first, _) = leaf_sans(&own);
        let task = tokio::spawn(own.clone().run());
        // The CA backdates `not_before`; the renewal is 70 % of what is left from now.
        tokio::time::sleep(Duration::from_secs(60 * 41)).await;
        assert_eq!(own.issued(), 1, "too early to renew");
        tokio::time::sleep(Duration::from_secs(60 * 2)).await;
        assert_eq!(own.issued(), 2, "renewed at 70 %");
        let (second, _) = leaf_sans(&own);
        assert_ne!(first, second, "a new certificate");
        // A changed CA (a reloaded issuer) renews at once.
        ca.send_modify(|_| {});
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(own.issued(), 3);
        task.abort();
    }
}
