//! The https half of [`super`]: a client for `http` and `https` URLs that trusts the
//! platform's root certificates and extra CAs (`--jwks-ca-file`), on rustls with the ring
//! provider; and what a failed handshake says about the certificate (not trusted, name
//! mismatch, expired), so that a log line tells an operator what to fix.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, RootCertStore};

use super::CONNECT_TIMEOUT;

/// A pooled HTTP/1 client for bodiless requests to `http` and `https` URLs.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why a CA file cannot be trusted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        reason: String,
    },
    /// A PEM block or a certificate in it does not parse.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What does not parse.
        reason: String,
    },
    /// The file holds no `CERTIFICATE` block.
    #[error("{path}: no PEM certificate found")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the PEM certificates of `path` (a CA bundle), each checked to be usable as a
/// trust anchor.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let text = std::fs::read(path).map_err(|e| CaFileError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| CaFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CaFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut check = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| invalid(format!("certificate {}: {e}", i + 1)))?;
    }
    Ok(certs)
}

/// The platform's trusted roots plus `extra`. A platform store that cannot be read is
/// logged, not fatal: `extra` may be all that is needed.
fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "cannot read some of the platform's trusted certificates");
    }
    let (_, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(
            ignored,
            "platform certificates that are no trust anchors ignored"
        );
    }
    // Checked by `read_ca_file` when the configuration was read.
    roots.add_parsable_certificates(extra.iter().cloned());
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates (none on this platform, no --jwks-ca-file): https jwksURIs will fail"
        );
    }
    roots
}

/// Returns a new [`HttpsClient`] trusting the platform's roots and `extra` (TLS 1.2 and
/// 1.3, ALPN `http/1.1`).
pub fn client(extra: &[CertificateDer<'static>]) -> Result<HttpsClient, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(extra))
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // The TLS connector takes `https` URLs through this one.
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// What went wrong with TLS, when `error` (or one of its causes) is a TLS error: the
/// certificate's problem (not trusted, name mismatch, expired, ...) or the handshake's.
pub fn describe(error: &(dyn Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(reason(tls));
        }
        // tokio-rustls wraps its errors in an io::Error, and hyper-rustls that in another;
        // an io::Error's `source` skips the error it wraps, so unwrap it instead.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn reason(error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(cert) = error else {
        return format!("TLS handshake failed: {error}");
    };
    match cert {
        CertificateError::UnknownIssuer => "certificate not trusted: its issuer is neither among the platform's roots nor in --jwks-ca-file".to_string(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("certificate name mismatch: {cert}")
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => cert.to_string(),
        other => format!("certificate refused: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_problems_are_named() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        // As hyper-rustls hands it over: tokio-rustls' io::Error inside another.
        let unknown = std::io::Error::other(io(CertificateError::UnknownIssuer.into()));
        assert!(describe(&unknown)
            .unwrap()
            .starts_with("certificate not trusted"));
        let name = io(CertificateError::NotValidForName.into());
        assert!(describe(&name)
            .unwrap()
            .starts_with("certificate name mismatch"));
        let alert = io(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert!(describe(&alert)
            .unwrap()
            .starts_with("TLS handshake failed"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), None, "not a TLS error");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            read_ca_file(&missing),
            Err(CaFileError::Read { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM\n").unwrap();
        assert_eq!(
            read_ca_file(&empty).unwrap_err().to_string(),
            format!("{}: no PEM certificate found", empty.display())
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read_ca_file(&garbage).unwrap_err().to_string();
        assert!(e.contains("certificate 1"), "{e}");
    }
}
