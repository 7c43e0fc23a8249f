//! The webhook's serving certificate, re-read from its files so that a renewed Secret
//! (cert-manager, or a re-run `ferry install`) is served without a restart. A renewed pair
//! that does not load is logged and the previous one kept, as the identity CA does.

use ferry_api::cause::error_chain;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::time::MissedTickBehavior;

use super::InjectorError;

/// How often the certificate files are re-read unless configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The certificate and key the webhook serves, from two PEM files.
#[derive(Debug)]
pub struct ServingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The files' bytes it was loaded from; a different set is tried again.
    seen: (Vec<u8>, Vec<u8>),
    key: Arc<CertifiedKey>,
}

impl ServingCert {
    /// Loads the pair, failing when it is unreadable or the key does not match.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, InjectorError> {
        let seen = read(cert_file, key_file)?;
        let key = certified(&seen, cert_file, key_file, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: RwLock::new(Loaded { seen, key }),
        })
    }

    /// Re-reads the files; returns whether a new pair is now served. A changed pair that does
    /// not load is an error, and the previous pair stays.
    pub fn reload(&self) -> Result<bool, InjectorError> {
        let seen = read(&self.cert_file, &self.key_file)?;
        if self.current.read().expect("not poisoned").seen == seen {
            return Ok(false);
        }
        let key = certified(&seen, &self.cert_file, &self.key_file, &self.provider);
        let mut current = self.current.write().expect("not poisoned");
        match key {
            Ok(key) => {
                *current = Loaded { seen, key };
                Ok(true)
            }
            Err(error) => {
                // Remembered, so the same bad pair is reported once, not on every poll.
                current.seen = seen;
                Err(error)
            }
        }
    }

    /// Re-reads the files every `interval`, forever (callers abort it).
    pub async fn follow(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    cert = %self.cert_file.display(),
                    "injector: serving certificate reloaded"
                ),
                Ok(false) => {}
                Err(error) => tracing::error!(
                    error = %error_chain(&error),
                    "injector: serving certificate files changed but do not load; keeping the previous pair"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").key.clone())
    }
}

fn read(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), InjectorError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|e| InjectorError::Pem {
            what,
            path: path.to_path_buf(),
            source: rustls::pki_types::pem::Error::Io(e),
        })
    };
    Ok((read("certificate", cert_file)?, read("key", key_file)?))
}

fn certified(
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, InjectorError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .and_then(|certs| {
            if certs.is_empty() {
                Err(rustls::pki_types::pem::Error::NoItemsFound)
            } else {
                Ok(certs)
            }
        })
        .map_err(|source| InjectorError::Pem {
            what: "certificate",
            path: cert_file.to_path_buf(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| InjectorError::Pem {
        what: "key",
        path: key_file.to_path_buf(),
        source,
    })?;
    CertifiedKey::from_der(certs, key, provider)
        .map(Arc::new)
        .map_err(InjectorError::Tls)
}
