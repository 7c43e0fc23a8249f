//! The proxy's workload identity: a private key made in-process, a certificate for it from
//! the control plane's identity service (`Identity/Certify`), renewed at about 70 % of its
//! lifetime, and what `/state` and `/ready` say about it.
//!
//! The key never leaves the process. Each renewal makes a new key, reads the token file again
//! (so a rotated token is picked up), checks the returned chain against the trust anchors and
//! that it names us and our key, then swaps the certificate into the [`CertSlot`] every TLS
//! config resolves from. Handshakes in progress keep the certificate they started with;
//! established connections are untouched. A failed renewal is retried with backoff while the
//! old certificate stays in use. How the certificate is used on the wire is [`crate::tls`]'s.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use ferry_api::cause::error_chain;
use ferry_api::metrics as metric_names;
use linkerd2_proxy_api::identity::{identity_client::IdentityClient, CertifyRequest};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime},
    sign::CertifiedKey,
    RootCertStore,
};
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::{config::Authority, tls::TlsConfigs};

/// Backoff between failed certificate requests: doubles from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));
/// The share of a certificate's lifetime after which it is renewed.
const RENEW_AT: f64 = 0.7;
/// The shortest wait between renewals, however short the lifetime.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(500);
/// How long one `Certify` call may take.
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the proxy gets its identity, from the flags.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The identity service (`--identity-addr`, else the destination address).
    pub addr: Authority,
    /// The token proving who the proxy is (`--identity-token-file`), read on each request.
    pub token_file: PathBuf,
    /// PEM trust anchors (`--identity-trust-anchors`).
    pub trust_anchors: PathBuf,
    /// The DNS-like identity to ask for (from service account, namespace and trust domain).
    pub name: String,
    /// The identity the control plane's gRPC server must prove over TLS
    /// (`--control-plane-identity`); `None` speaks plaintext gRPC (in-process tests only).
    pub control_plane: Option<String>,
}

/// Identity could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The trust anchors file could not be read.
    #[error("reading trust anchors {path}")]
    ReadAnchors {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The trust anchors file holds no usable certificate.
    #[error("trust anchors {path}: {reason}")]
    BadAnchors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The identity service address is not a valid URI.
    #[error("identity address {0} is invalid")]
    Addr(String),
}

/// A certificate request failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The token file could not be read.
    #[error("reading token file {path}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Making the key or CSR failed.
    #[error("generating the key and CSR: {0}")]
    Csr(String),
    /// The identity service refused or could not be reached.
    #[error("identity service refused the certificate request ({code:?}): {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The service's message.
        message: String,
    },
    /// `Certify` took longer than its timeout.
    #[error("identity service did not answer within {0:?}")]
    Timeout(Duration),
    /// The issued certificate is not acceptable.
    #[error("issued certificate rejected: {0}")]
    Invalid(String),
}

/// The certificate the proxy presents now, shared by the TLS configs' resolvers.
#[derive(Default)]
pub struct CertSlot(RwLock<Option<Arc<CertifiedKey>>>);

impl CertSlot {
    /// The current certificate and key, if any has been issued.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }
}

/// One trust anchor as `/state` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AnchorState {
    /// The anchor's subject.
    pub subject: String,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256: String,
}

/// The current certificate as `/state` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CertState {
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Seconds until `not_after` (negative once expired).
    pub expires_in_seconds: i64,
    /// The SANs, as `DNS:...` and `URI:...`.
    pub sans: Vec<String>,
    #[serde(skip)]
    not_after_time: SystemTime,
}

/// The last certificate request's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RenewalState {
    /// When it finished (RFC 3339).
    pub at: String,
    /// `ok` or `error`.
    pub result: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The identity section of `/state`.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityState {
    /// The proxy's DNS-like identity.
    pub name: String,
    /// Whether a valid certificate is in use.
    pub ready: bool,
    /// The trust anchors peers are verified against.
    pub trust_anchors: Vec<AnchorState>,
    /// The certificate in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertState>,
    /// Certificates issued since start.
    pub certificates_issued: u64,
    /// The last request's outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_renewal: Option<RenewalState>,
}

#[derive(Default)]
struct Status {
    cert: Option<CertState>,
    issued: u64,
    last: Option<RenewalState>,
}

/// The proxy's identity: its name, trust anchors, current certificate and TLS configs.
pub struct Identity {
    name: String,
    config: IdentityConfig,
    roots: Arc<RootCertStore>,
    anchors: Vec<AnchorState>,
    slot: Arc<CertSlot>,
    tls: TlsConfigs,
    status: Mutex<Status>,
    ready: watch::Sender<bool>,
}

impl Identity {
    /// Loads the trust anchors and builds the TLS configs; no certificate yet.
    pub fn new(config: IdentityConfig) -> Result<Arc<Self>, IdentityError> {
        let (roots, anchors) = load_anchors(&config.trust_anchors)?;
        let roots = Arc::new(roots);
        let slot = Arc::new(CertSlot::default());
        let tls = TlsConfigs::new(roots.clone(), slot.clone()).map_err(|e| {
            IdentityError::BadAnchors {
                path: config.trust_anchors.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Arc::new(Self {
            name: config.name.clone(),
            config,
            roots,
            anchors,
            slot,
            tls,
            status: Mutex::default(),
            ready: watch::channel(false).0,
        }))
    }

    /// The proxy's DNS-like identity.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sni` names a mesh identity of this trust domain (ours or another proxy's):
    /// such TLS is for the proxy, not for the application.
    pub fn is_mesh_name(&self, sni: &str) -> bool {
        let suffix = self
            .name
            .find(".serviceaccount.identity.")
            .map_or("", |i| &self.name[i..]);
        sni == self.name
            || (!suffix.is_empty() && sni.ends_with(suffix) && sni.len() > suffix.len())
    }

    /// How to reach the control plane's gRPC server: TLS verified against the trust anchors
    /// and `--control-plane-identity`, or plaintext when none is configured.
    pub fn control_plane_tls(&self) -> Option<crate::tls::ControlTls> {
        let name = self.config.control_plane.clone()?;
        Some(crate::tls::ControlTls::new(self.roots.clone(), name))
    }

    /// The TLS configs built over this identity's certificate slot.
    pub fn tls(&self) -> &TlsConfigs {
        &self.tls
    }

    /// Whether a certificate has been issued and has not expired.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
            && self
                .lock()
                .cert
                .as_ref()
                .is_some_and(|c| c.not_after_time > SystemTime::now())
    }

    /// What `/state` shows.
    pub fn state(&self) -> IdentityState {
        let status = self.lock();
        let mut cert = status.cert.clone();
        if let Some(c) = &mut cert {
            c.expires_in_seconds = seconds_until(c.not_after_time);
        }
        IdentityState {
            name: self.name.clone(),
            ready: *self.ready.borrow() && cert.as_ref().is_some_and(|c| c.expires_in_seconds > 0),
            trust_anchors: self.anchors.clone(),
            certificate: cert,
            certificates_issued: status.issued,
            last_renewal: status.last.clone(),
        }
    }

    /// Renders the identity's metrics: certificate expiry, renewals and handshake failures.
    pub fn encode_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (expiry, issued) = {
            let status = self.lock();
            let expiry = status.cert.as_ref().map(|c| {
                c.not_after_time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
            });
            (expiry, status.issued)
        };
        let name = metric_names::IDENTITY_CERT_EXPIRATION_TIMESTAMP_SECONDS;
        let _ = writeln!(
            out,
            "# HELP {name} When the current certificate expires (Unix seconds)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        if let Some(expiry) = expiry {
            let _ = writeln!(out, "{name} {expiry}");
        }
        let name = metric_names::IDENTITY_CERT_REFRESH_TOTAL;
        let _ = writeln!(
            out,
            "# HELP {name} Certificates issued to this proxy since start."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {issued}");
        self.tls.encode(out);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests certificates until the task is dropped: the first at once, then each at
    /// about 70 % of the current one's lifetime; failures back off and are retried.
    pub async fn run(self: Arc<Self>) {
        let channel = match Endpoint::from_shared(format!("http://{}", self.config.addr)) {
            Ok(e) => {
                let e = e.connect_timeout(Duration::from_secs(3));
                match self.control_plane_tls() {
                    // The first Certify happens before we have a certificate: the server is
                    // authenticated by TLS, we are by the token.
                    Some(tls) => {
                        e.connect_with_connector_lazy(tls.connector(self.config.addr.clone()))
                    }
                    None => e.connect_lazy(),
                }
            }
            Err(_) => {
                tracing::error!(addr = %self.config.addr, "invalid identity address");
                return;
            }
        };
        let mut client = IdentityClient::new(channel);
        let mut backoff = BACKOFF.0;
        loop {
            let wait = match self.renew(&mut client).await {
                Ok(next) => {
                    backoff = BACKOFF.0;
                    next
                }
                Err(error) => {
                    let was_ready = self.is_ready();
                    tracing::error!(identity = %self.name, %error, retry_in = ?backoff, "certificate request failed{}",
                        if was_ready { "; the current certificate stays in use" } else { "; not ready until one is issued" });
                    self.lock().last = Some(RenewalState {
                        at: now_rfc3339(),
                        result: "error",
                        error: Some(error_chain(&error)),
                    });
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One certificate request; returns how long to wait before the next.
    async fn renew(&self, client: &mut IdentityClient<Channel>) -> Result<Duration, RenewError> {
        let token = std::fs::read(&self.config.token_file).map_err(|source| RenewError::Token {
            path: self.config.token_file.clone(),
            source,
        })?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| RenewError::Csr(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![self.name.clone()])
            .map_err(|e| RenewError::Csr(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.name.clone());
        let csr = params
            .serialize_request(&key)
            .map_err(|e| RenewError::Csr(e.to_string()))?;
        let req = CertifyRequest {
            identity: self.name.clone(),
            token: trim_ascii(&token).to_vec(),
            certificate_signing_request: csr.der().to_vec(),
        };
        let rsp = tokio::time::timeout(CERTIFY_TIMEOUT, client.certify(req))
            .await
            .map_err(|_| RenewError::Timeout(CERTIFY_TIMEOUT))?
            .map_err(|s| RenewError::Refused {
                code: s.code(),
                message: s.message().to_string(),
            })?
            .into_inner();

        let mut chain = vec![CertificateDer::from(rsp.leaf_certificate)];
        chain.extend(
            rsp.intermediate_certificates
                .into_iter()
                .map(CertificateDer::from),
        );
        let cert =
            self.check_issued(&chain, &rcgen::PublicKeyData::subject_public_key_info(&key))?;
        let signing = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        ))
        .map_err(|e| RenewError::Csr(e.to_string()))?;
        self.slot.set(Arc::new(CertifiedKey::new(chain, signing)));
        // 70 % of the validity left from now: the CA backdates `not_before` for clock skew,
        // so the certificate's nominal lifetime would renew far too early.
        let next = cert
            .not_after_time
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .mul_f64(RENEW_AT)
            .max(MIN_RENEW_INTERVAL);
        tracing::info!(identity = %self.name, serial = %cert.serial, not_after = %cert.not_after, renew_in = ?next, "certificate issued");
        {
            let mut status = self.lock();
            status.cert = Some(cert);
            status.issued += 1;
            status.last = Some(RenewalState {
                at: now_rfc3339(),
                result: "ok",
                error: None,
            });
        }
        self.ready.send_replace(true);
        Ok(next)
    }

    /// Checks an issued chain: it verifies against the anchors now, names us, holds our key.
    fn check_issued(
        &self,
        chain: &[CertificateDer<'static>],
        public_key: &[u8],
    ) -> Result<CertState, RenewError> {
        let invalid = |m: String| RenewError::Invalid(m);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| invalid(e.to_string()))?;
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| invalid(format!("does not verify against the trust anchors: {e}")))?;
        let leaf = crate::tls::cert::Cert::parse(&chain[0])
            .map_err(|e| invalid(format!("leaf does not parse: {e}")))?;
        if leaf.spki != public_key {
            return Err(invalid(
                "leaf is not for the key this proxy generated".into(),
            ));
        }
        let sans = leaf.sans();
        if !sans.iter().any(|s| s == &format!("DNS:{}", self.name)) {
            return Err(invalid(format!(
                "leaf names {sans:?}, not DNS:{}",
                self.name
            )));
        }
        let not_before = to_system_time(leaf.not_before);
        let not_after = to_system_time(leaf.not_after);
        Ok(CertState {
            serial: leaf.serial_hex(),
            not_before: humantime::format_rfc3339_seconds(not_before).to_string(),
            not_after: humantime::format_rfc3339_seconds(not_after).to_string(),
            expires_in_seconds: seconds_until(not_after),
            sans,
            not_after_time: not_after,
        })
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn to_system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

fn seconds_until(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Reads PEM trust anchors (a file, or the PEM itself) into a root store, with their
/// fingerprints for `/state`.
fn load_anchors(path: &PathBuf) -> Result<(RootCertStore, Vec<AnchorState>), IdentityError> {
    let bad = |reason: String| IdentityError::BadAnchors {
        path: if path.to_str().is_some_and(|s| s.contains("-----BEGIN")) {
            PathBuf::from("(inline PEM)")
        } else {
            path.clone()
        },
        reason,
    };
    // Kubernetes injection passes the PEM itself in the environment (as Linkerd does).
    let inline = path
        .to_str()
        .filter(|s| s.trim_start().starts_with("-----BEGIN"));
    let pem = match inline {
        Some(pem) => pem.as_bytes().to_vec(),
        None => std::fs::read(path).map_err(|source| IdentityError::ReadAnchors {
            path: path.clone(),
            source,
        })?,
    };
    let mut roots = RootCertStore::empty();
    let mut anchors = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| bad(format!("invalid PEM: {e}")))?;
        let cert = crate::tls::cert::Cert::parse(&der)
            .map_err(|e| bad(format!("a certificate does not parse: {e}")))?;
        anchors.push(AnchorState {
            subject: cert.subject(),
            sha256: sha256_hex(&der),
        });
        roots
            .add(der)
            .map_err(|e| bad(format!("not a usable trust anchor: {e}")))?;
    }
    if anchors.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok((roots, anchors))
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_names_are_those_of_the_trust_domain() {
        let dir = tempfile::tempdir().unwrap();
        let anchors = dir.path().join("anchors.pem");
        let ca = rcgen::CertificateParams::new(vec!["root.cluster.local".to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(&anchors, ca.pem()).unwrap();
        // The PEM itself works as well as a path to it (Kubernetes injection passes PEM).
        let (_, inline) = load_anchors(&PathBuf::from(ca.pem())).unwrap();
        assert_eq!(inline.len(), 1);
        let identity = Identity::new(IdentityConfig {
            addr: "127.0.0.1:1".parse().unwrap(),
            token_file: dir.path().join("token"),
            trust_anchors: anchors,
            name: ferry_api::identity::dns_name("web", "emojivoto", "cluster.local"),
            control_plane: None,
        })
        .unwrap();
        assert!(identity.is_mesh_name("web.emojivoto.serviceaccount.identity.ferry.cluster.local"));
        assert!(identity.is_mesh_name("db.prod.serviceaccount.identity.ferry.cluster.local"));
        assert!(!identity.is_mesh_name(".serviceaccount.identity.ferry.cluster.local"));
        assert!(!identity.is_mesh_name("web.emojivoto.serviceaccount.identity.ferry.example.org"));
        assert!(!identity.is_mesh_name("www.example.org"));
        assert!(!identity.is_ready());
        let state = identity.state();
        assert_eq!(state.trust_anchors.len(), 1);
        assert_eq!(state.trust_anchors[0].sha256.len(), 64);
    }

    #[test]
    fn trims_token_whitespace() {
        assert_eq!(trim_ascii(b"  tok\n"), b"tok");
        assert_eq!(trim_ascii(b"\n"), b"");
    }

    #[test]
    fn refuses_a_file_without_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchors.pem");
        std::fs::write(&path, "not pem").unwrap();
        let err = load_anchors(&path).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
