//! Certificates `ferry install` needs: the identity trust anchor and issuer (generated with
//! ECDSA P-256, or read from the user's files) and the injector webhook's serving chain.

use std::path::Path;

use ferry_api::ca::{self, ca_params};
use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use ferry_api::ca::ISSUER_VALIDITY;

/// Errors making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen could not generate or sign a certificate.
    #[error("generating the {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// A user-supplied file could not be read.
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A user-supplied file does not hold what it should.
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// The identity CA material: the trust anchors every proxy verifies against, and the
/// issuer the control plane signs workload certificates with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityMaterial {
    /// PEM, one or more certificates.
    pub trust_anchors_pem: String,
    /// PEM certificate of the issuer, signed by a trust anchor.
    pub issuer_cert_pem: String,
    /// PEM private key of the issuer.
    pub issuer_key_pem: String,
}

/// The webhook's serving certificate and the CA the apiserver verifies it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTls {
    /// PEM certificate of the CA; goes into the webhook's `caBundle`.
    pub ca_pem: String,
    /// PEM serving certificate.
    pub cert_pem: String,
    /// PEM serving key.
    pub key_pem: String,
}

fn generate_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> IdentityError {
    move |source| IdentityError::Generate { what, source }
}

fn p256(what: &'static str) -> Result<KeyPair, IdentityError> {
    ca::p256().map_err(generate_err(what))
}

/// Generates a trust anchor (`root.<trust domain>`) and an issuer
/// (`identity.<namespace>.<trust domain>`) it signs; the profiles are
/// [`ferry_api::ca`]'s, shared with the control plane's first start.
pub fn generate(
    namespace: &str,
    trust_domain: &str,
    now: OffsetDateTime,
) -> Result<IdentityMaterial, IdentityError> {
    let ca = ca::generate(namespace, trust_domain, now).map_err(generate_err("identity CA"))?;
    Ok(IdentityMaterial {
        trust_anchors_pem: ca.trust_anchor_pem,
        issuer_cert_pem: ca.issuer_cert_pem,
        issuer_key_pem: ca.issuer_key_pem,
    })
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn require_certificate(path: &Path, pem: &str) -> Result<(), IdentityError> {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(IdentityError::Invalid {
            path: path.display().to_string(),
            problem: "no PEM certificate found".to_string(),
        })
    }
}

/// Reads user-supplied identity material, checking each file holds what its flag promises.
pub fn from_files(
    trust_anchors: &Path,
    issuer_cert: &Path,
    issuer_key: &Path,
) -> Result<IdentityMaterial, IdentityError> {
    let trust_anchors_pem = read(trust_anchors)?;
    require_certificate(trust_anchors, &trust_anchors_pem)?;
    let issuer_cert_pem = read(issuer_cert)?;
    require_certificate(issuer_cert, &issuer_cert_pem)?;
    let issuer_key_pem = read(issuer_key)?;
    KeyPair::from_pem(&issuer_key_pem).map_err(|e| IdentityError::Invalid {
        path: issuer_key.display().to_string(),
        problem: format!("not a usable private key: {e}"),
    })?;
    Ok(IdentityMaterial {
        trust_anchors_pem,
        issuer_cert_pem,
        issuer_key_pem,
    })
}

/// Generates a CA and a serving certificate for the webhook's Service DNS names.
pub fn generate_webhook(
    dns_names: Vec<String>,
    now: OffsetDateTime,
) -> Result<WebhookTls, IdentityError> {
    let ca_params = ca_params("ferry-proxy-injector-ca", now, ISSUER_VALIDITY, Some(0));
    let ca = CertifiedIssuer::self_signed(ca_params, p256("webhook CA key")?)
        .map_err(generate_err("webhook CA"))?;
    let cn = dns_names.first().cloned().unwrap_or_default();
    let mut params =
        CertificateParams::new(dns_names).map_err(generate_err("webhook certificate"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + ISSUER_VALIDITY;
    let key = p256("webhook key")?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(generate_err("webhook certificate"))?;
    Ok(WebhookTls {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
