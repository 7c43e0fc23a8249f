//! The identity CA's certificate profiles (feature `ca`): what a Ferry trust anchor and
//! issuer look like, and how a fresh pair is generated (ECDSA P-256, as Linkerd's).
//!
//! `ferry install` and `ferry-control` (on first start) both generate through here, so
//! the two cannot drift. Reading and writing the PEM files is left to each caller.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

/// How long a generated trust anchor is valid.
pub const TRUST_ANCHOR_VALIDITY: Duration = Duration::days(3650);
/// How long a generated issuer is valid.
pub const ISSUER_VALIDITY: Duration = Duration::days(365);
/// How far a generated CA certificate's `not_before` is backdated, for clocks that lag
/// the machine that generated it.
pub const CA_BACKDATE: Duration = Duration::minutes(5);

/// A freshly generated trust anchor and the issuer it signed, as PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedCa {
    /// PEM certificate of the trust anchor (self-signed root).
    pub trust_anchor_pem: String,
    /// PEM certificate of the issuer (intermediate, path length 0).
    pub issuer_cert_pem: String,
    /// PEM PKCS#8 private key of the issuer.
    pub issuer_key_pem: String,
}

/// Returns the trust anchor's common name: `root.<trust domain>`.
pub fn trust_anchor_name(trust_domain: &str) -> String {
    format!("root.{trust_domain}")
}

/// Returns the issuer's common name: `identity.<control namespace>.<trust domain>`.
pub fn issuer_name(namespace: &str, trust_domain: &str) -> String {
    format!("identity.{namespace}.{trust_domain}")
}

/// Returns the parameters of a CA certificate named `cn`, valid from slightly before `now`
/// for `validity`; `path_len` `None` is unconstrained (a root).
pub fn ca_params(
    cn: &str,
    now: OffsetDateTime,
    validity: Duration,
    path_len: Option<u8>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CA_BACKDATE;
    params.not_after = now + validity;
    params
}

/// Generates an ECDSA P-256 key pair.
pub fn p256() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
}

/// Generates a trust anchor (`root.<trust domain>`, 10 years) and an issuer
/// (`identity.<namespace>.<trust domain>`, 1 year, path length 0) it signs.
pub fn generate(
    namespace: &str,
    trust_domain: &str,
    now: OffsetDateTime,
) -> Result<GeneratedCa, rcgen::Error> {
    let root_params = ca_params(
        &trust_anchor_name(trust_domain),
        now,
        TRUST_ANCHOR_VALIDITY,
        None,
    );
    let root = CertifiedIssuer::self_signed(root_params, p256()?)?;
    let issuer_key = p256()?;
    let issuer_params = ca_params(
        &issuer_name(namespace, trust_domain),
        now,
        ISSUER_VALIDITY,
        Some(0),
    );
    let issuer_cert = issuer_params.signed_by(&issuer_key, &root)?;
    Ok(GeneratedCa {
        trust_anchor_pem: root.pem(),
        issuer_cert_pem: issuer_cert.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_is_pem_with_a_usable_key() {
        let ca = generate("ferry", "example.org", OffsetDateTime::now_utc()).unwrap();
        assert!(ca
            .trust_anchor_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca
            .issuer_cert_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(ca.trust_anchor_pem, ca.issuer_cert_pem);
        KeyPair::from_pem(&ca.issuer_key_pem).unwrap();
        assert_eq!(
            issuer_name("ferry", "example.org"),
            "identity.ferry.example.org"
        );
    }
}
