//! A trust anchor and an identity service that signs proxies' certificate requests with it,
//! so in-process proxies get real workload certificates and talk mTLS.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use ferry_proxy::identity::IdentityConfig;
use linkerd2_proxy_api::identity as id;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
};
use tonic::{Request, Response, Status};

/// A running test CA: its anchors and token on disk, its identity service on loopback.
pub struct TestCa {
    /// The identity service.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The identity of service account `sa` in `default`.
pub fn identity_of(sa: &str) -> String {
    ferry_api::identity::dns_name(sa, "default", "cluster.local")
}

impl TestCa {
    /// A new self-signed trust anchor and the identity service issuing leaves under it.
    pub async fn start() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("anchors.pem"), root.pem()).unwrap();
        std::fs::write(dir.path().join("token"), "test-token").unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Signer {
            root: Arc::new(root),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(id::identity_server::IdentityServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self { addr, dir }
    }

    /// A proxy's identity configuration for service account `sa`.
    pub fn identity(&self, sa: &str) -> IdentityConfig {
        IdentityConfig {
            addr: self.addr.into(),
            token_file: self.dir.path().join("token"),
            trust_anchors: self.anchors(),
            name: identity_of(sa),
            // The test CA serves plaintext gRPC.
            control_plane: None,
        }
    }

    fn anchors(&self) -> PathBuf {
        self.dir.path().join("anchors.pem")
    }
}

struct Signer {
    root: Arc<CertifiedIssuer<'static, KeyPair>>,
}

/// The P-256 public key of a certificate request, for rcgen to sign.
struct RequestedKey(Vec<u8>);

impl rcgen::PublicKeyData for RequestedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl RequestedKey {
    /// Finds the uncompressed P-256 point in a CSR: the one BIT STRING of 66 bytes whose
    /// content starts with 0x04 (the signature is a BIT STRING holding a SEQUENCE, 0x30).
    /// Enough for the proxy's own requests, without an X.509 parser in the tests.
    fn from_csr(csr: &[u8]) -> Option<Self> {
        let at = csr.windows(4).position(|w| w == [0x03, 0x42, 0x00, 0x04])?;
        let point = csr.get(at + 3..at + 3 + 65)?;
        Some(Self(point.to_vec()))
    }
}

#[tonic::async_trait]
impl id::identity_server::Identity for Signer {
    async fn certify(
        &self,
        req: Request<id::CertifyRequest>,
    ) -> Result<Response<id::CertifyResponse>, Status> {
        let req = req.into_inner();
        let key = RequestedKey::from_csr(&req.certificate_signing_request)
            .ok_or_else(|| Status::invalid_argument("no P-256 key in the request"))?;
        let mut params = CertificateParams::new(vec![req.identity.clone()])
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        params.subject_alt_names = vec![SanType::DnsName(
            req.identity
                .clone()
                .try_into()
                .map_err(|_| Status::invalid_argument("identity"))?,
        )];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = params
            .signed_by(&key, &self.root)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(id::CertifyResponse {
            leaf_certificate: leaf.der().to_vec(),
            intermediate_certificates: Vec::new(),
            valid_until: None,
        }))
    }
}
