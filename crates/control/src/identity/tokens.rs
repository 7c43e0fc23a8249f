//! Who a `Certify` caller is: the [`TokenValidator`] seam, and its local implementation,
//! per-service-account tokens the control plane writes into a directory.
//!
//! A local token reads `ferry-local-v1:<namespace>:<service account>:<64 hex digits>`. It
//! names its owner so the validator can find the one file to compare against (in constant
//! time), and so deleting that file revokes it at once. On Kubernetes a TokenReview
//! validator implements the same trait ([`super::tokenreview`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::model::{ClusterState, ObjectRef};

/// The prefix of every local token, which also versions the format.
pub const LOCAL_TOKEN_PREFIX: &str = "ferry-local-v1";

/// Why a token does not prove an identity; maps to gRPC `UNAUTHENTICATED`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is empty.
    #[error("token is empty")]
    Empty,
    /// The token does not have the local format.
    #[error("token is not a ferry local identity token ({LOCAL_TOKEN_PREFIX}:<namespace>:<service account>:<secret>)")]
    Malformed,
    /// No token was issued for the service account it names, or it was revoked.
    #[error("no identity token is issued for service account {0}")]
    NotIssued(ObjectRef),
    /// The secret does not match the one issued.
    #[error("token for service account {0} does not match the one issued")]
    Mismatch(ObjectRef),
    /// The Kubernetes API server did not authenticate the token; its reason.
    #[error("the Kubernetes API refused the token: {0}")]
    Refused(String),
    /// The token was reviewed for another audience than Ferry's identity audience.
    #[error("the token is not for audience {expected:?} (reviewed for {got:?})")]
    Audience {
        /// The audience the control plane asked for.
        expected: String,
        /// The audiences the API server confirmed.
        got: Vec<String>,
    },
    /// The token authenticates a user that is not a service account.
    #[error("the token belongs to {0:?}, not to a service account")]
    NotServiceAccount(String),
    /// The TokenReview could not be made (API server unreachable, RBAC...).
    #[error("asking the Kubernetes API to review the token")]
    Review(#[source] kube::Error),
    /// The issued token could not be read.
    #[error("reading the issued token of {account}")]
    Read {
        /// The service account (`namespace/name`).
        account: ObjectRef,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Checks a caller's token and says which service account it belongs to.
pub trait TokenValidator: Send + Sync + 'static {
    /// Returns the service account (`namespace`, `name`) `token` proves.
    fn validate(&self, token: &[u8]) -> impl Future<Output = Result<ObjectRef, TokenError>> + Send;
}

/// Tokens kept as files `<dir>/<namespace>/<service account>`, one per service account.
#[derive(Clone, Debug)]
pub struct LocalTokens {
    dir: PathBuf,
}

/// Fills `bytes` from the operating system's CSPRNG.
pub fn fill_random(bytes: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(bytes)
        .expect("the operating system's random source works");
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

impl LocalTokens {
    /// Keeps tokens under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Returns the file holding the token of `account`, which a proxy reads with
    /// `--identity-token-file`.
    pub fn path(&self, account: &ObjectRef) -> PathBuf {
        self.dir.join(&account.namespace).join(&account.name)
    }

    /// Makes sure `account` has a token, creating one if it has none; returns its file.
    pub fn ensure(&self, account: &ObjectRef) -> io::Result<PathBuf> {
        let path = self.path(account);
        if path.exists() {
            return Ok(path);
        }
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!(
            "{LOCAL_TOKEN_PREFIX}:{}:{}:{hex}",
            account.namespace, account.name
        );
        let parent = path.parent().expect("a token file has a directory");
        create_private_dir(parent)?;
        // Written aside, then linked into place: linking never replaces a token another
        // writer put there first, so every reader sees the one token that won.
        let tmp = parent.join(format!(".{}.{}.tmp", account.name, &hex[..16]));
        write_private(&tmp, token.as_bytes())?;
        let linked = std::fs::hard_link(&tmp, &path);
        std::fs::remove_file(&tmp)?;
        match linked {
            Ok(()) => {
                tracing::info!(account = %account, path = %path.display(), "issued identity token");
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(path)
    }

    /// Gives every service account of a meshed instance in `state` a token.
    pub fn ensure_all(&self, state: &ClusterState) -> io::Result<()> {
        let accounts: std::collections::BTreeSet<ObjectRef> = state
            .instances
            .iter()
            .filter(|(_, i)| i.meshed)
            .map(|(at, i)| ObjectRef::new(&at.namespace, &i.service_account))
            .collect();
        for account in &accounts {
            self.ensure(account)?;
        }
        Ok(())
    }

    /// Issues tokens for every state `states` publishes until it closes.
    pub async fn follow(self, mut states: watch::Receiver<Arc<ClusterState>>) {
        loop {
            let state = states.borrow_and_update().clone();
            let tokens = self.clone();
            let result = tokio::task::spawn_blocking(move || tokens.ensure_all(&state)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, dir = %self.dir.display(), "cannot write identity tokens")
                }
                Err(error) => tracing::error!(%error, "identity token task failed"),
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    }
}

fn parse(token: &[u8]) -> Result<(ObjectRef, &[u8]), TokenError> {
    let text = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
    let text = text.trim();
    let mut parts = text.splitn(4, ':');
    let (Some(LOCAL_TOKEN_PREFIX), Some(ns), Some(sa), Some(secret)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    // The names become a path: only DNS names, which hold no `/` and no `..`.
    if !is_label(ns) || !is_subdomain(sa) || secret.len() != 64 {
        return Err(TokenError::Malformed);
    }
    Ok((ObjectRef::new(ns, sa), secret.as_bytes()))
}

/// Compares without stopping at the first difference, so timing does not leak the secret.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenValidator for LocalTokens {
    async fn validate(&self, token: &[u8]) -> Result<ObjectRef, TokenError> {
        if token.iter().all(u8::is_ascii_whitespace) {
            return Err(TokenError::Empty);
        }
        let (account, secret) = parse(token)?;
        let issued = match tokio::fs::read(self.path(&account)).await {
            Ok(issued) => issued,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TokenError::NotIssued(account))
            }
            Err(source) => return Err(TokenError::Read { account, source }),
        };
        let issued_secret = parse(&issued).map(|(_, s)| s.to_vec()).unwrap_or_default();
        if constant_time_eq(&issued_secret, secret) {
            Ok(account)
        } else {
            Err(TokenError::Mismatch(account))
        }
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `bytes` readable by the owner only, replacing `path` atomically so a reader never
/// sees half a file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_account_and_refuse_paths() {
        let ok = format!("{LOCAL_TOKEN_PREFIX}:emojivoto:web:{}", "a".repeat(64));
        assert_eq!(
            parse(ok.as_bytes()).unwrap().0,
            ObjectRef::new("emojivoto", "web")
        );
        for bad in [
            format!("{LOCAL_TOKEN_PREFIX}:..:web:{}", "a".repeat(64)),
            format!("{LOCAL_TOKEN_PREFIX}:ns:a/b:{}", "a".repeat(64)),
            format!("{LOCAL_TOKEN_PREFIX}:ns:web:short"),
            format!("other:ns:web:{}", "a".repeat(64)),
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(TokenError::Malformed)),
                "{bad}"
            );
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
