//! The proxy-injector webhook `ferry install` registers: HTTPS on `--injector-listen` with
//! the certificate from the mounted Secret `ferry-proxy-injector-tls`, `POST /inject` with an
//! AdmissionReview v1. The decision and the patch are [`review`]'s, the certificate (re-read
//! when the Secret is renewed) [`serving`]'s; this module owns HTTP, the body limit and the
//! timeouts.
//!
//! A request that is too large or too slow still gets `200` with `allowed: true` and a
//! warning where it can be answered at all: the webhook never blocks a pod on its own error.

pub mod review;
pub mod serving;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_inject::ProxyConfig;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::identity::ca::Ca;
use review::Decision;
pub use serving::ServingCert;

/// The largest AdmissionReview accepted. The API server's own request limit is 3 MiB; a
/// review carries the object once more with its envelope.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long a client has to finish the TLS handshake, send the headers and the body. The
/// API server gives up on us after the registration's `timeoutSeconds` (10) anyway.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the webhook listens and what it injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectorConfig {
    /// The HTTPS listener's address.
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain (the Secret's `tls.crt`).
    pub cert_file: PathBuf,
    /// PEM private key (the Secret's `tls.key`).
    pub key_file: PathBuf,
    /// What injected pods get: the same settings `ferry inject` takes as flags.
    pub proxy: ProxyConfig,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    /// The certificate or key file could not be read or holds no usable PEM.
    #[error("reading the injector's TLS {what} from {}", path.display())]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse or read error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (a key that does not match the certificate, ...).
    #[error("building the injector's TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// Loads the serving pair from the PEM files, to serve and to [`ServingCert::follow`].
pub fn serving_cert(cert_file: &Path, key_file: &Path) -> Result<Arc<ServingCert>, InjectorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServingCert::load(cert_file, key_file, provider).map(Arc::new)
}

/// The server TLS configuration serving `cert` as it is now (TLS 1.2 and 1.3, ring, h1).
pub fn server_config(cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, InjectorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(InjectorError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server TLS configuration for the PEM files, read once.
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, InjectorError> {
    server_config(serving_cert(cert_file, key_file)?)
}

/// What injected proxies are configured with: fixed settings, and the trust anchors of the
/// identity CA as it is now (a rotated anchor reaches every pod created after it).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    proxy: Arc<ProxyConfig>,
    anchors: Option<watch::Receiver<Arc<Ca>>>,
    /// Discovery's states, for namespaces' default inbound policies.
    states: Option<watch::Receiver<Arc<crate::model::ClusterState>>>,
}

impl ProxySettings {
    /// `proxy` as given, its trust anchors replaced by the current CA's when `anchors` is given.
    pub fn new(proxy: ProxyConfig, anchors: Option<watch::Receiver<Arc<Ca>>>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            anchors,
            states: None,
        }
    }

    /// Reads namespaces' default inbound policies from `states` too.
    pub fn with_states(mut self, states: watch::Receiver<Arc<crate::model::ClusterState>>) -> Self {
        self.states = Some(states);
        self
    }

    /// The configuration for the pod being reviewed now.
    pub fn current(&self) -> ProxyConfig {
        let mut proxy = (*self.proxy).clone();
        if let Some(ca) = &self.anchors {
            proxy.trust_anchors_pem = Some(ca.borrow().trust_anchors_pem().to_string());
        }
        if let Some(states) = &self.states {
            proxy.namespace_inbound_policies = states
                .borrow()
                .namespace_defaults
                .iter()
                .filter(|(_, p)| p.parse::<crate::authz::DefaultPolicy>().is_ok())
                .map(|(ns, p)| (ns.clone(), p.clone()))
                .collect();
        }
        proxy
    }
}

impl From<ProxyConfig> for ProxySettings {
    fn from(proxy: ProxyConfig) -> Self {
        Self::new(proxy, None)
    }
}

/// How much a client may send and how long it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest body read; a larger one is answered allowed, with a warning.
    pub max_body: usize,
    /// The bound on the TLS handshake, on the request headers, and on the body.
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: MAX_BODY,
            read_timeout: READ_TIMEOUT,
        }
    }
}

/// Serves the webhook on `listener` with the default [`Limits`] until `shutdown`
/// completes; connections still open then are closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    proxy: impl Into<ProxySettings>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with_limits(listener, tls, proxy, Limits::default(), shutdown).await
}

/// [`serve`] with other limits (tests shorten the timeout).
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    proxy: impl Into<ProxySettings>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let proxy = proxy.into();
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving, without spinning.
                    tracing::warn!(%error, "injector: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let proxy = proxy.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(limits.read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "injector: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "injector: TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| handle(req, proxy.clone(), limits));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                result = conn => if let Err(error) = result {
                    tracing::debug!(%peer, %error, "injector: connection failed");
                },
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    proxy: ProxySettings,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() != ferry_api::k8s::INJECTOR_PATH {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    if req.method() != Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n"));
    }
    let body = Limited::new(req.into_body(), limits.max_body).collect();
    let answer = match tokio::time::timeout(limits.read_timeout, body).await {
        Ok(Ok(body)) => review::answer(&body.to_bytes(), &proxy.current()),
        Ok(Err(error)) => review::answer_unreadable(&format!("reading the request body: {error}")),
        Err(_) => review::answer_unreadable("the request body took too long"),
    };
    let uid = answer.review.response.uid.as_str();
    match &answer.decision {
        Decision::Failed(why) => {
            tracing::warn!(uid, %why, "injector: pod allowed uninjected")
        }
        decision => tracing::info!(uid, ?decision, "injector: reviewed"),
    }
    Ok(json(answer.review))
}

fn json(review: impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&review).unwrap_or_default();
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
