//! The identity CA: issues short-lived workload certificates over Linkerd's
//! `io.linkerd.proxy.identity.Identity/Certify`, to proxies that prove their service
//! account with a token. `docs/identity.md` documents it for users.
//!
//! - [`material`]: where the trust anchors and issuer come from (files, or generated).
//! - [`reload`]: re-reads those files, so a rotated issuer is used without a restart.
//! - [`ca`]: the loaded CA, its checks, and signing from CSRs.
//! - [`tokens`]: the [`tokens::TokenValidator`] seam and local per-service-account tokens.
//! - [`tokenreview`]: the Kubernetes validator (TokenReview API).
//! - [`service`]: the gRPC service.
//! - [`own`]: the control plane's own certificate, which it issues itself and renews.
//!
//! Proxy-side concerns (CSR generation, renewal, TLS) live in `ferry-proxy`.

pub mod ca;
pub mod material;
pub mod own;
pub mod reload;
pub mod service;
pub mod tokenreview;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::control_api::{CertificateInfo, IdentityInfo};
use tokio::sync::watch;

use crate::model::ObjectRef;
use ca::{Ca, CertSummary};
use material::{CaSource, MaterialError};
use service::IdentityService;
use tokenreview::TokenReviewer;
use tokens::{LocalTokens, TokenError, TokenValidator};

/// How long issued workload certificates are valid unless configured (Linkerd's default).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The directory under the identity directory that holds local tokens.
pub const TOKENS_DIR: &str = "tokens";

/// How the identity CA runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Where the trust anchors and issuer come from.
    pub ca: CaSource,
    /// The directory local tokens are written to and checked against.
    pub tokens_dir: PathBuf,
    /// How long issued certificates are valid.
    pub cert_lifetime: Duration,
    /// How long local tokens are valid (they are rewritten at half-life).
    pub token_lifetime: Duration,
}

impl IdentityConfig {
    /// Everything in `dir`: a CA generated on first start, tokens in `dir/tokens`, 24 h
    /// certificates.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            tokens_dir: dir.join(TOKENS_DIR),
            ca: CaSource::Generated { dir },
            cert_lifetime: DEFAULT_CERT_LIFETIME,
            token_lifetime: tokens::DEFAULT_TOKEN_LIFETIME,
        }
    }
}

/// How `Certify` callers prove their service account.
#[derive(Clone, Debug)]
pub enum Validator {
    /// Local tokens written by the control plane (the workloads file).
    Local(LocalTokens),
    /// Projected service-account tokens checked with the TokenReview API (Kubernetes).
    TokenReview(Box<TokenReviewer>),
}

impl TokenValidator for Validator {
    async fn validate(&self, token: &[u8]) -> Result<ObjectRef, TokenError> {
        match self {
            Self::Local(tokens) => tokens.validate(token).await,
            Self::TokenReview(reviewer) => reviewer.validate(token).await,
        }
    }
}

/// The running CA: loaded material, how tokens are validated, and the names it serves.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The current CA; [`reload`] replaces it when the files change.
    ca: Arc<watch::Sender<Arc<Ca>>>,
    source: CaSource,
    reload_interval: Duration,
    tokens: LocalTokens,
    reviewer: Option<TokenReviewer>,
    trust_domain: String,
    lifetime: Duration,
    /// The control plane's own namespace: part of its own identity name.
    namespace: String,
}

impl Identity {
    /// Loads (or generates) the CA of `config` for names in `trust_domain`.
    pub fn load(config: &IdentityConfig, trust_domain: &str) -> Result<Self, MaterialError> {
        let ca = material::load(&config.ca, trust_domain)?;
        tracing::info!(
            trust_anchor = %ca.trust_anchors()[0].subject,
            sha256 = %ca.trust_anchors()[0].sha256,
            issuer = %ca.issuer().subject,
            issuer_expires = %humantime::format_rfc3339_seconds(ca.issuer().not_after),
            "identity CA ready"
        );
        Ok(Self {
            ca: Arc::new(watch::Sender::new(Arc::new(ca))),
            source: config.ca.clone(),
            reload_interval: reload::DEFAULT_INTERVAL,
            tokens: LocalTokens::new(&config.tokens_dir).with_lifetime(config.token_lifetime),
            reviewer: None,
            trust_domain: trust_domain.to_string(),
            lifetime: config.cert_lifetime,
            namespace: ferry_api::k8s::CONTROL_NAMESPACE.to_string(),
        })
    }

    /// Names the control plane's own identity in `namespace` (default `ferry`).
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// Issues the control plane its own certificate (`ferry-control.<namespace>...`);
    /// [`own::OwnIdentity::run`] keeps it renewed.
    pub fn own(&self) -> Result<Arc<own::OwnIdentity>, own::OwnCertError> {
        own::OwnIdentity::new(
            self.ca.subscribe(),
            &self.namespace,
            &self.trust_domain,
            self.lifetime,
        )
    }

    /// Validates tokens with the TokenReview API instead of local tokens.
    pub fn with_token_review(mut self, reviewer: TokenReviewer) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// Whether callers present local tokens (which must then be written).
    pub fn uses_local_tokens(&self) -> bool {
        self.reviewer.is_none()
    }

    /// Returns the local tokens, to issue them as discovery finds service accounts.
    pub fn tokens(&self) -> &LocalTokens {
        &self.tokens
    }

    /// Returns the current CA.
    pub fn ca(&self) -> Arc<Ca> {
        self.ca.borrow().clone()
    }

    /// Follows the current CA (it changes when [`reload`] accepts new files).
    pub fn watch_ca(&self) -> watch::Receiver<Arc<Ca>> {
        self.ca.subscribe()
    }

    /// Sets how often [`Identity::follow_files`] re-reads the CA's files.
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Re-reads the CA's files every reload interval, for as long as the returned future
    /// runs (see [`reload`]).
    pub fn follow_files(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        reload::follow(
            self.source.clone(),
            self.trust_domain.clone(),
            self.ca.clone(),
            self.reload_interval,
        )
    }

    /// Returns the gRPC service.
    pub fn service(&self) -> IdentityService<Validator> {
        let validator = match &self.reviewer {
            Some(reviewer) => Validator::TokenReview(Box::new(reviewer.clone())),
            None => Validator::Local(self.tokens.clone()),
        };
        IdentityService::new(
            self.ca.subscribe(),
            validator,
            self.trust_domain.clone(),
            self.lifetime,
        )
    }

    /// Returns what `GET /api/v1/identity` answers.
    pub fn info(&self) -> IdentityInfo {
        let cert = |c: &CertSummary| CertificateInfo {
            subject: c.subject.clone(),
            sha256: c.sha256.clone(),
            not_after: humantime::format_rfc3339_seconds(c.not_after).to_string(),
        };
        let ca = self.ca();
        IdentityInfo {
            trust_domain: self.trust_domain.clone(),
            trust_anchors_pem: ca.trust_anchors_pem().to_string(),
            trust_anchors: ca.trust_anchors().iter().map(cert).collect(),
            issuer: cert(ca.issuer()),
            certificate_lifetime_seconds: self.lifetime.as_secs(),
        }
    }
}
