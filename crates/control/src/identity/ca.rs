//! The certificate authority: trust anchors and an issuer, checked once when loaded, and
//! the signing of workload certificates from CSRs.
//!
//! Where the PEM comes from (the user's files, or generated and kept in a directory) is
//! [`super::material`]'s business; who may ask for which name is [`super::service`]'s.

use std::time::{Duration, SystemTime};

use ferry_api::identity::{dns_name, spiffe_uri};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How far a leaf's `not_before` is backdated, so a peer whose clock lags ours still
/// accepts it (Linkerd's `identity.issuer.clockSkewAllowance`).
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(20);

/// Why identity material was refused when loading.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A PEM file holds no certificate, or a block that does not parse.
    #[error("{what}: {problem}")]
    Pem {
        /// Which input (`trust anchors`, `issuer certificate`).
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The issuer key is not a PEM private key rcgen can sign with.
    #[error("issuer key is not a usable private key")]
    Key(#[source] rcgen::Error),
    /// The issuer key does not belong to the issuer certificate.
    #[error("issuer key does not match the issuer certificate's public key")]
    KeyMismatch,
    /// The issuer certificate is not a CA (no `basicConstraints: CA:TRUE`).
    #[error("issuer certificate {subject} is not a CA certificate")]
    NotCa {
        /// The issuer's subject.
        subject: String,
    },
    /// The issuer chain does not lead to any trust anchor.
    #[error("issuer certificate {subject} is not signed by any of the trust anchors")]
    Untrusted {
        /// The subject of the certificate whose signer was not found.
        subject: String,
    },
    /// A certificate of the chain is outside its validity period.
    #[error("{what} {subject} is not valid now (valid until {not_after})")]
    Expired {
        /// Which certificate (`issuer certificate`, `trust anchor`).
        what: &'static str,
        /// Its subject.
        subject: String,
        /// Its `notAfter`, RFC 3339.
        not_after: String,
    },
}

/// Why a CSR was refused; each maps to gRPC `INVALID_ARGUMENT`.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The bytes are not a DER (or PEM) PKCS#10 request.
    #[error("certificate_signing_request is not a DER-encoded PKCS#10 request")]
    Parse,
    /// The request's self-signature does not verify with its own public key.
    #[error("certificate_signing_request signature does not verify")]
    Signature,
    /// The key is not ECDSA P-256.
    #[error("certificate_signing_request key must be ECDSA P-256")]
    KeyType,
    /// The SANs are not exactly one DNS name equal to the identity.
    #[error(
        "certificate_signing_request must carry exactly one SAN, DNS:{expected}; it has [{found}]"
    )]
    Sans {
        /// The identity asked for.
        expected: String,
        /// The SANs found, comma-separated.
        found: String,
    },
    /// rcgen could not sign (should not happen with a verified request).
    #[error("signing the certificate")]
    Sign(#[source] rcgen::Error),
}

/// A certificate issued for a workload.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// The issuer and any intermediates above it, DER, leaf-side first.
    pub intermediates_der: Vec<Vec<u8>>,
    /// The leaf's `notAfter`.
    pub valid_until: SystemTime,
}

/// A certificate's facts for display (`GET /api/v1/identity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject, e.g. `CN=root.cluster.local`.
    pub subject: String,
    /// Lowercase hex SHA-256 of the DER.
    pub sha256: String,
    /// `notAfter`.
    pub not_after: SystemTime,
}

/// The loaded, checked CA.
pub struct Ca {
    trust_anchors_pem: String,
    anchors: Vec<CertSummary>,
    issuer: Issuer<'static, KeyPair>,
    issuer_summary: CertSummary,
    /// The issuer first, then whatever sits between it and a trust anchor.
    chain_der: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuer's signing key stays out of logs.
        f.debug_struct("Ca")
            .field("anchors", &self.anchors)
            .field("issuer", &self.issuer_summary)
            .finish_non_exhaustive()
    }
}

fn pem_certs(what: &'static str, pem: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let invalid = |problem: String| CaError::Pem { what, problem };
    let mut ders = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| invalid(format!("invalid PEM: {e}")))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        X509Certificate::from_der(&block.contents)
            .map_err(|e| invalid(format!("invalid certificate: {e}")))?;
        ders.push(block.contents);
    }
    if ders.is_empty() {
        return Err(invalid("no PEM certificate found".to_string()));
    }
    Ok(ders)
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    // Every DER here was parsed by `pem_certs` already.
    X509Certificate::from_der(der)
        .expect("checked when loaded")
        .1
}

fn summary(der: &[u8]) -> CertSummary {
    let cert = parse(der);
    CertSummary {
        subject: cert.subject().to_string(),
        sha256: sha256_hex(der),
        not_after: unix(cert.validity().not_after.timestamp()),
    }
}

/// Returns the lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unix(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

fn check_valid(what: &'static str, cert: &X509Certificate<'_>) -> Result<(), CaError> {
    if cert.validity().is_valid() {
        return Ok(());
    }
    Err(CaError::Expired {
        what,
        subject: cert.subject().to_string(),
        not_after: humantime::format_rfc3339_seconds(unix(cert.validity().not_after.timestamp()))
            .to_string(),
    })
}

impl Ca {
    /// Loads and checks a CA: the issuer's key matches its certificate, the issuer is a CA,
    /// and its chain (the issuer file may carry intermediates after the issuer) ends at
    /// one of the trust anchors; every certificate is within its validity.
    pub fn from_pem(
        trust_anchors_pem: &str,
        issuer_cert_pem: &str,
        issuer_key_pem: &str,
    ) -> Result<Self, CaError> {
        let anchors = pem_certs("trust anchors", trust_anchors_pem)?;
        let chain = pem_certs("issuer certificate", issuer_cert_pem)?;
        let key = KeyPair::from_pem(issuer_key_pem).map_err(CaError::Key)?;
        let issuer = parse(&chain[0]);
        if issuer.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        if !issuer.is_ca() {
            return Err(CaError::NotCa {
                subject: issuer.subject().to_string(),
            });
        }
        for der in &chain {
            check_valid("issuer certificate", &parse(der))?;
        }
        for pair in chain.windows(2) {
            let (child, parent) = (parse(&pair[0]), parse(&pair[1]));
            if child.verify_signature(Some(parent.public_key())).is_err() {
                return Err(CaError::Untrusted {
                    subject: child.subject().to_string(),
                });
            }
        }
        let top = parse(chain.last().expect("at least one certificate"));
        let anchor = anchors.iter().map(|der| parse(der)).find(|anchor| {
            top.issuer() == anchor.subject()
                && top.verify_signature(Some(anchor.public_key())).is_ok()
        });
        match anchor {
            Some(anchor) => check_valid("trust anchor", &anchor)?,
            None => {
                return Err(CaError::Untrusted {
                    subject: top.subject().to_string(),
                })
            }
        }
        let issuer_summary = summary(&chain[0]);
        let issuer =
            Issuer::from_ca_cert_der(&chain[0].clone().into(), key).map_err(|e| CaError::Pem {
                what: "issuer certificate",
                problem: e.to_string(),
            })?;
        Ok(Self {
            trust_anchors_pem: trust_anchors_pem.to_string(),
            anchors: anchors.iter().map(|der| summary(der)).collect(),
            issuer,
            issuer_summary,
            chain_der: chain,
        })
    }

    /// Returns the trust anchors as given (PEM).
    pub fn trust_anchors_pem(&self) -> &str {
        &self.trust_anchors_pem
    }

    /// Returns the trust anchors' facts, in file order.
    pub fn trust_anchors(&self) -> &[CertSummary] {
        &self.anchors
    }

    /// Returns the issuer's facts.
    pub fn issuer(&self) -> &CertSummary {
        &self.issuer_summary
    }

    /// Signs a certificate for `service_account` in `namespace` from `csr` (DER, or PEM),
    /// valid from `now` minus [`CLOCK_SKEW_ALLOWANCE`] for `lifetime`, but never past the
    /// issuer's own expiry.
    pub fn issue(
        &self,
        csr: &[u8],
        service_account: &str,
        namespace: &str,
        trust_domain: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Issued, CsrError> {
        let dns = dns_name(service_account, namespace, trust_domain);
        let public_key = check_csr(csr, &dns)?;
        let now = OffsetDateTime::from(now);
        let not_after = (now + lifetime).min(OffsetDateTime::from(self.issuer_summary.not_after));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, dns.as_str());
        params.distinguished_name = dn;
        let uri = spiffe_uri(service_account, namespace, trust_domain);
        params.subject_alt_names = vec![
            SanType::DnsName(dns.try_into().map_err(CsrError::Sign)?),
            SanType::URI(uri.try_into().map_err(CsrError::Sign)?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = not_after;
        let request = CertificateSigningRequestParams { params, public_key };
        let leaf = request.signed_by(&self.issuer).map_err(CsrError::Sign)?;
        Ok(Issued {
            leaf_der: leaf.der().to_vec(),
            intermediates_der: self.chain_der.clone(),
            valid_until: not_after.into(),
        })
    }
}

/// A random positive 128-bit serial number.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    super::tokens::fill_random(&mut bytes);
    bytes[0] &= 0x7f;
    // A leading zero byte would be trimmed into a shorter serial; keep it 16 bytes.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Checks a CSR as Linkerd does (`checkCSR`): it parses, its signature verifies, its key is
/// ECDSA P-256, and its SANs are exactly one DNS name equal to `dns`; returns its key.
fn check_csr(csr: &[u8], dns: &str) -> Result<rcgen::PublicKey, CsrError> {
    let der = if csr.starts_with(b"-----BEGIN") {
        let block = Pem::iter_from_buffer(csr)
            .next()
            .and_then(Result::ok)
            .ok_or(CsrError::Parse)?;
        block.contents
    } else {
        csr.to_vec()
    };
    let (_, parsed) = X509CertificationRequest::from_der(&der).map_err(|_| CsrError::Parse)?;
    parsed.verify_signature().map_err(|_| CsrError::Signature)?;
    let spki = &parsed.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(CsrError::KeyType);
    }
    let mut sans = Vec::new();
    for ext in parsed.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            sans.extend(san.general_names.iter().map(|name| match name {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                other => format!("{other}"),
            }));
        }
    }
    if sans != [format!("DNS:{dns}")] {
        return Err(CsrError::Sans {
            expected: dns.to_string(),
            found: sans.join(", "),
        });
    }
    let request =
        CertificateSigningRequestParams::from_der(&der.into()).map_err(|_| CsrError::Parse)?;
    Ok(request.public_key)
}
