//! Where the CA's PEM comes from: three files the user supplies, or a pair generated on
//! first start and kept in the identity directory so a restart keeps the same trust anchor.

use std::io;
use std::path::{Path, PathBuf};

use ferry_api::k8s::CONTROL_NAMESPACE;
use time::OffsetDateTime;

use super::ca::{Ca, CaError};
use super::tokens::write_private;

/// The generated trust anchors, under the identity directory (the name the Kubernetes
/// trust-roots ConfigMap uses).
pub const GENERATED_TRUST_ANCHORS: &str = "ca/ca-bundle.crt";
/// The generated issuer certificate, under the identity directory.
pub const GENERATED_ISSUER_CERT: &str = "ca/issuer.crt";
/// The generated issuer key, under the identity directory (mode 0600).
pub const GENERATED_ISSUER_KEY: &str = "ca/issuer.key";

/// Where the trust anchors and the issuer come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// Files the user supplies (cert-manager, an offline root, `ferry install`).
    Files {
        /// PEM trust anchors.
        trust_anchors: PathBuf,
        /// PEM issuer certificate (then any intermediates up to an anchor).
        issuer_cert: PathBuf,
        /// PEM issuer private key.
        issuer_key: PathBuf,
    },
    /// Generated into `dir` on first start, read back from it afterwards.
    Generated {
        /// The identity directory.
        dir: PathBuf,
    },
}

impl CaSource {
    /// The trust anchors, issuer certificate and issuer key files, in that order.
    pub fn files(&self) -> [PathBuf; 3] {
        match self {
            CaSource::Files {
                trust_anchors,
                issuer_cert,
                issuer_key,
            } => [
                trust_anchors.clone(),
                issuer_cert.clone(),
                issuer_key.clone(),
            ],
            CaSource::Generated { dir } => [
                dir.join(GENERATED_TRUST_ANCHORS),
                dir.join(GENERATED_ISSUER_CERT),
                dir.join(GENERATED_ISSUER_KEY),
            ],
        }
    }
}

/// Why the CA could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A generated file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// rcgen could not generate the pair.
    #[error("generating the identity trust anchor and issuer")]
    Generate(#[source] rcgen::Error),
    /// The material does not make a usable CA.
    #[error("identity CA from {origin}")]
    Invalid {
        /// The files or directory it came from.
        origin: String,
        /// What is wrong with it.
        #[source]
        source: CaError,
    },
}

fn read(path: &Path) -> Result<String, MaterialError> {
    std::fs::read_to_string(path).map_err(|source| MaterialError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the CA from `source`, generating it first for a directory that has none
/// (names use `trust_domain`).
pub fn load(source: &CaSource, trust_domain: &str) -> Result<Ca, MaterialError> {
    let (anchors, issuer_cert, issuer_key, origin) = match source {
        CaSource::Files {
            trust_anchors,
            issuer_cert,
            issuer_key,
        } => (
            read(trust_anchors)?,
            read(issuer_cert)?,
            read(issuer_key)?,
            format!(
                "{}, {} and {}",
                trust_anchors.display(),
                issuer_cert.display(),
                issuer_key.display()
            ),
        ),
        CaSource::Generated { dir } => {
            let anchors = dir.join(GENERATED_TRUST_ANCHORS);
            if !anchors.exists() {
                generate(dir, trust_domain)?;
            } else {
                tracing::info!(dir = %dir.display(), "using the identity CA generated earlier");
            }
            (
                read(&anchors)?,
                read(&dir.join(GENERATED_ISSUER_CERT))?,
                read(&dir.join(GENERATED_ISSUER_KEY))?,
                dir.display().to_string(),
            )
        }
    };
    Ca::from_pem(&anchors, &issuer_cert, &issuer_key)
        .map_err(|source| MaterialError::Invalid { origin, source })
}

/// Generates a pair into `dir`. The trust anchors are written last: their presence is
/// what marks the directory as done, so a start interrupted halfway generates afresh.
fn generate(dir: &Path, trust_domain: &str) -> Result<(), MaterialError> {
    let ca = ferry_api::ca::generate(CONTROL_NAMESPACE, trust_domain, OffsetDateTime::now_utc())
        .map_err(MaterialError::Generate)?;
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        let parent = path.parent().expect("generated files sit in a directory");
        std::fs::create_dir_all(parent)
            .and_then(|()| write_private(&path, pem.as_bytes()))
            .map_err(|source| MaterialError::Write { path, source })
    };
    write(GENERATED_ISSUER_KEY, &ca.issuer_key_pem)?;
    write(GENERATED_ISSUER_CERT, &ca.issuer_cert_pem)?;
    write(GENERATED_TRUST_ANCHORS, &ca.trust_anchor_pem)?;
    tracing::info!(
        dir = %dir.display(),
        trust_domain,
        "generated an identity trust anchor and issuer"
    );
    Ok(())
}
