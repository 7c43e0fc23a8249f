//! Mutual TLS between proxies: the TLS 1.3 configs (built once, resolving the current
//! certificate from the identity's [`CertSlot`] on each handshake), the inbound accept and
//! outbound connect, and the classification of handshake failures into a [`TlsFailure`].
//!
//! Inbound, a connection is terminated only when its ClientHello's SNI is a mesh identity
//! (`*.serviceaccount.identity.ferry.<trust-domain>`, what a meshed client sends): this
//! proxy's own, or another one, which the client will then refuse as a name mismatch. Any
//! other TLS is the application's own and passes through as opaque bytes. A client that names us must present a certificate chaining to
//! the trust anchors. Outbound, the expected identity of the endpoint is the SNI and the
//! name the server's certificate must carry.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::BytesMut;
use ferry_api::{metrics as names, TlsFailure};
use rustls::{
    client::ResolvesClientCert,
    pki_types::ServerName,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::{identity::CertSlot, io::Counted, metrics::Direction};

pub mod cert;
mod verify;

/// A TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[error("tls handshake failed ({failure})")]
pub struct HandshakeError {
    /// Why, as a label.
    pub failure: TlsFailure,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Resolves the current certificate for both server and client handshakes.
#[derive(Debug)]
struct Resolver(Arc<CertSlot>);

impl std::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertSlot")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.get()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.get()
    }
    fn has_certs(&self) -> bool {
        self.0.get().is_some()
    }
}

/// Handshake failures by side and reason.
#[derive(Default)]
struct HandshakeErrors([[AtomicU64; TlsFailure::ALL.len()]; 2]);

/// The proxy's TLS configs and handshake counters.
pub struct TlsConfigs {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    slot: Arc<CertSlot>,
    errors: HandshakeErrors,
}

/// The mesh's TLS 1.3 suites in Linkerd's order: AES-128-GCM (fewer AES rounds per byte
/// than the AES-256-GCM ring's default puts first), AES-256-GCM, ChaCha20-Poly1305.
fn mesh_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

impl TlsConfigs {
    /// Configs trusting `roots`, presenting whatever `slot` holds at each handshake.
    pub fn new(roots: Arc<RootCertStore>, slot: Arc<CertSlot>) -> Result<Self, rustls::Error> {
        let provider = mesh_provider();
        let resolver = Arc::new(Resolver(slot.clone()));
        let general =
            |e: rustls::server::VerifierBuilderError| rustls::Error::General(e.to_string());
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(general)?;
        let servers =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(general)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verify::Client(clients)))
            .with_cert_resolver(resolver.clone());
        // Every connection verifies the peer's current certificate: no resumption.
        server.send_tls13_tickets = 0;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::Server(servers)))
            .with_client_cert_resolver(resolver);
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            slot,
            errors: HandshakeErrors::default(),
        })
    }

    /// Terminates a meshed client's TLS; returns the stream and the client's identity.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(server::TlsStream<IO>, Arc<str>), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self
            .acceptor
            .accept(io)
            .await
            .map_err(|e| self.failed(Direction::Inbound, e))?;
        let id = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| dns_identity(c))
            .unwrap_or_default();
        Ok((stream, id.into()))
    }

    /// Terminates TLS on one of the proxy's own servers (tap): the mesh's server config
    /// (a client certificate chaining to the trust anchors is required), with failures left
    /// to the caller to count. Returns the client's identity (its first DNS SAN), if any.
    pub async fn accept_own<IO>(
        &self,
        io: IO,
    ) -> Result<(server::TlsStream<IO>, Option<Arc<str>>), io::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.acceptor.accept(io).await?;
        let id = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| dns_identity(c))
            .map(Arc::from);
        Ok((stream, id))
    }

    /// Opens mTLS over `io` to a peer that must be `server_id`.
    pub async fn connect<IO>(
        &self,
        server_id: &str,
        io: IO,
    ) -> Result<client::TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let fail = |failure, msg: String| {
            self.count(Direction::Outbound, failure);
            HandshakeError {
                failure,
                source: io::Error::other(msg),
            }
        };
        if self.slot.get().is_none() {
            return Err(fail(
                TlsFailure::NoLocalIdentity,
                "this proxy has no certificate yet".into(),
            ));
        }
        let name = ServerName::try_from(server_id.to_string()).map_err(|_| {
            fail(
                TlsFailure::Other,
                format!("{server_id:?} is not a valid identity name"),
            )
        })?;
        self.connector
            .connect(name, io)
            .await
            .map_err(|e| self.failed(Direction::Outbound, e))
    }

    fn failed(&self, direction: Direction, source: io::Error) -> HandshakeError {
        let failure = classify(&source);
        self.count(direction, failure);
        HandshakeError { failure, source }
    }

    /// Counts a handshake failure.
    pub fn count(&self, direction: Direction, failure: TlsFailure) {
        let i = TlsFailure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or(0);
        self.errors.0[direction as usize][i].fetch_add(1, Relaxed);
    }

    /// Renders the handshake counters in the Prometheus text format.
    pub fn encode(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (direction, name) in [
            (
                Direction::Inbound,
                names::INBOUND_TLS_HANDSHAKE_ERRORS_TOTAL,
            ),
            (
                Direction::Outbound,
                names::OUTBOUND_TLS_HANDSHAKE_ERRORS_TOTAL,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} TLS handshakes that failed, by reason.");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (i, failure) in TlsFailure::ALL.iter().enumerate() {
                let n = self.errors.0[direction as usize][i].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "{name}{{{}=\"{failure}\"}} {n}", names::LABEL_REASON);
                }
            }
        }
    }
}

/// Classifies a handshake error from tokio-rustls.
pub fn classify(err: &io::Error) -> TlsFailure {
    let Some(e) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return TlsFailure::Other;
    };
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsFailure::UnknownCa
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            _ => TlsFailure::Other,
        },
        rustls::Error::NoCertificatesPresented => TlsFailure::NoClientCert,
        // The peer refused our certificate and said why.
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::UnknownCA => TlsFailure::UnknownCa,
            AlertDescription::CertificateExpired => TlsFailure::Expired,
            AlertDescription::CertificateRequired => TlsFailure::NoClientCert,
            // rustls sends bad_certificate for a name mismatch.
            AlertDescription::BadCertificate => TlsFailure::NameMismatch,
            _ => TlsFailure::Other,
        },
        _ => TlsFailure::Other,
    }
}

/// Reads until the buffered bytes hold a whole ClientHello, then returns its SNI (`None`
/// when it has none, or the bytes are not a ClientHello rustls understands).
pub async fn peek_sni<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    deadline: Instant,
) -> io::Result<Option<String>> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        let mut new = &buf[fed..];
        while !new.is_empty() {
            match acceptor.read_tls(&mut new) {
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
        fed = buf.len();
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Ok(accepted.client_hello().server_name().map(str::to_owned))
            }
            Ok(None) => {}
            Err(_) => return Ok(None),
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(None),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// The first DNS SAN of a DER certificate: the workload identity.
fn dns_identity(der: &[u8]) -> Option<String> {
    cert::Cert::parse(der)
        .ok()?
        .first_dns_name()
        .map(str::to_owned)
}

/// TLS to the control plane's gRPC server (identity and destination): its certificate must
/// chain to the trust anchors and name the control plane's identity. No client certificate:
/// the first `Certify` comes before the proxy has one, and the token authenticates it.
#[derive(Clone)]
pub struct ControlTls {
    config: Arc<ClientConfig>,
    name: Arc<str>,
}

impl ControlTls {
    /// Verifying against `roots` that the server is `name`.
    pub fn new(roots: Arc<RootCertStore>, name: String) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            config: Arc::new(config),
            name: name.into(),
        }
    }

    /// A tonic connector dialling `addr` over this TLS.
    pub fn connector(&self, addr: crate::config::Authority) -> ControlConnector {
        ControlConnector {
            tls: self.clone(),
            addr: addr.to_string().into(),
        }
    }
}

/// Dials the control plane over TLS for a tonic channel.
#[derive(Clone)]
pub struct ControlConnector {
    tls: ControlTls,
    addr: Arc<str>,
}

type ControlIo = hyper_util::rt::TokioIo<client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<http::Uri> for ControlConnector {
    type Response = ControlIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<ControlIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let name = ServerName::try_from(this.tls.name.to_string()).map_err(|_| {
                io::Error::other(format!("{:?} is not a valid identity name", this.tls.name))
            })?;
            let tcp = TcpStream::connect(&*this.addr).await?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(this.tls.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    io::Error::other(format!(
                        "TLS to the control plane at {} (expecting {}): {e}",
                        this.addr, this.tls.name
                    ))
                })?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// An upstream connection: plain, or mTLS to a meshed peer.
pub enum ClientStream {
    /// Plaintext.
    Plain(Counted<TcpStream>),
    /// mTLS.
    Tls(Box<client::TlsStream<Counted<TcpStream>>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_certificate_errors_and_alerts() {
        let io = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsFailure::UnknownCa,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                TlsFailure::NameMismatch,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                TlsFailure::Expired,
            ),
            (
                rustls::Error::NoCertificatesPresented,
                TlsFailure::NoClientCert,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                TlsFailure::UnknownCa,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                TlsFailure::NoClientCert,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(classify(&io(err)), want);
        }
        assert_eq!(classify(&io::Error::other("eof")), TlsFailure::Other);
    }

    /// A CA, and a slot holding a leaf for `name` under it.
    fn leaf(name: &str) -> (Arc<RootCertStore>, Arc<CertSlot>) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        let slot = Arc::new(CertSlot::default());
        slot.set(Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            signer,
        )));
        (Arc::new(roots), slot)
    }

    #[tokio::test]
    async fn meshed_proxies_agree_on_aes_128_gcm() {
        let name = "web.default.serviceaccount.identity.ferry.cluster.local";
        let (roots, slot) = leaf(name);
        let configs = TlsConfigs::new(roots, slot).unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, server) = tokio::join!(configs.connect(name, a), configs.accept(b));
        let (client, (server, peer)) = (client.unwrap(), server.unwrap());
        assert_eq!(&*peer, name);
        for suite in [
            client.get_ref().1.negotiated_cipher_suite(),
            server.get_ref().1.negotiated_cipher_suite(),
        ] {
            assert_eq!(
                suite.map(|s| s.suite()),
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
            );
        }
    }
}
