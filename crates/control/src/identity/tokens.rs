//! Who a `Certify` caller is: the [`TokenValidator`] seam, and its local implementation,
//! per-service-account tokens the control plane writes into a directory.
//!
//! A local token reads `ferry-local-v1:<namespace>:<service account>:<64 hex digits>`. It
//! names its owner so the validator can find the one file to compare against (in constant
//! time), and so deleting that file revokes it at once. On Kubernetes a TokenReview
//! validator implements the same trait ([`super::tokenreview`]).
//!
//! Tokens expire: a token is valid for its lifetime ([`DEFAULT_TOKEN_LIFETIME`], or
//! `--identity-token-lifetime`) from when it was written (the file's modification time).
//! The control plane rewrites a token once it is half its lifetime old; the token it
//! replaces is kept beside it (`.<service account>.previous`) and stays valid until its own
//! expiry, so a proxy that read the file just before the rewrite still certifies. Proxies
//! read the file at every renewal, so they pick up the new token by themselves.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// The token was issued, but its lifetime is over.
    #[error("the identity token of service account {account} expired at {at} (local tokens last {lifetime}; the control plane rewrites the token file before then: read it again)",
        at = humantime::format_rfc3339_seconds(*.expired),
        lifetime = humantime::format_duration(*.lifetime))]
    Expired {
        /// The service account.
        account: ObjectRef,
        /// When it expired.
        expired: SystemTime,
        /// How long tokens last.
        lifetime: Duration,
    },
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

/// How long a local token is valid unless configured: as long as the certificates it buys
/// (24 h by default), so a leaked token is worth no more than a leaked certificate, while a
/// rewrite at half-life leaves readers 12 h to notice it.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The wall clock tokens are issued and checked against (a fake one in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Tokens kept as files `<dir>/<namespace>/<service account>`, one per service account.
#[derive(Clone)]
pub struct LocalTokens {
    dir: PathBuf,
    lifetime: Duration,
    clock: Clock,
}

impl std::fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTokens")
            .field("dir", &self.dir)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
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
    /// Keeps tokens under `dir`, valid for [`DEFAULT_TOKEN_LIFETIME`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            lifetime: DEFAULT_TOKEN_LIFETIME,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Tokens valid for `lifetime` from when they are written.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Issues and checks tokens against `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How long tokens are valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The file keeping the token `account` had before its last rewrite.
    fn previous_path(&self, account: &ObjectRef) -> PathBuf {
        self.dir
            .join(&account.namespace)
            .join(format!(".{}.previous", account.name))
    }

    /// When the token in `path` was written.
    fn issued_at(path: &Path) -> io::Result<SystemTime> {
        std::fs::metadata(path)?.modified()
    }

    /// How long after it was written a token in `path` is now (zero if written "later").
    fn age(&self, path: &Path) -> io::Result<Duration> {
        let issued = Self::issued_at(path)?;
        Ok((self.clock)().duration_since(issued).unwrap_or_default())
    }

    /// Returns the file holding the token of `account`, which a proxy reads with
    /// `--identity-token-file`.
    pub fn path(&self, account: &ObjectRef) -> PathBuf {
        self.dir.join(&account.namespace).join(&account.name)
    }

    /// Makes sure `account` has a token that is less than half its lifetime old, writing
    /// one if it has none and rewriting it (keeping the old one as the previous token)
    /// once it is older; returns its file.
    pub fn ensure(&self, account: &ObjectRef) -> io::Result<PathBuf> {
        let path = self.path(account);
        let rotating = match self.age(&path) {
            Ok(age) if age < self.lifetime / 2 => return Ok(path),
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
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
        // Issued now by the token clock: the file's time is when its lifetime began.
        std::fs::File::options()
            .write(true)
            .open(&tmp)?
            .set_modified((self.clock)())?;
        if rotating {
            // The old token is kept (it stays valid until it expires), then the new one
            // replaces it: each step a rename, so a reader always finds a whole file.
            let kept = parent.join(format!(".{}.{}.previous.tmp", account.name, &hex[..16]));
            std::fs::hard_link(&path, &kept)?;
            std::fs::rename(&kept, self.previous_path(account))?;
            std::fs::rename(&tmp, &path)?;
            tracing::info!(account = %account, path = %path.display(), "rotated identity token");
            return Ok(path);
        }
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

    /// How often [`LocalTokens::follow`] looks for tokens to rewrite: a tenth of their
    /// lifetime, between 1 s and 10 min.
    pub fn rotation_check_interval(&self) -> Duration {
        (self.lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }

    /// Issues tokens for every state `states` publishes until it closes, and rewrites them
    /// as they age.
    pub async fn follow(self, mut states: watch::Receiver<Arc<ClusterState>>) {
        let mut check = tokio::time::interval(self.rotation_check_interval());
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
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
            tokio::select! {
                changed = states.changed() => if changed.is_err() {
                    return;
                },
                _ = check.tick() => {}
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
        let path = if constant_time_eq(&issued_secret, secret) {
            self.path(&account)
        } else {
            // The token before the last rewrite is still valid until it expires.
            let previous = self.previous_path(&account);
            let kept = tokio::fs::read(&previous).await.unwrap_or_default();
            let kept_secret = parse(&kept).map(|(_, s)| s.to_vec()).unwrap_or_default();
            if kept_secret.is_empty() || !constant_time_eq(&kept_secret, secret) {
                return Err(TokenError::Mismatch(account));
            }
            previous
        };
        let issued_at = match Self::issued_at(&path) {
            Ok(at) => at,
            Err(source) => return Err(TokenError::Read { account, source }),
        };
        let expired = issued_at + self.lifetime;
        if (self.clock)() >= expired {
            return Err(TokenError::Expired {
                account,
                expired,
                lifetime: self.lifetime,
            });
        }
        Ok(account)
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

    /// A token clock that follows tokio's (paused) time.
    fn paused_clock() -> Clock {
        let start = tokio::time::Instant::now();
        let base = SystemTime::now();
        Arc::new(move || base + start.elapsed())
    }

    fn state_with(account: &ObjectRef) -> ClusterState {
        let instance = crate::model::Instance {
            owner: None,
            service_account: account.name.clone(),
            meshed: true,
            addr: None,
            admin_addr: None,
            tap_addr: None,
            inbound: Default::default(),
        };
        let instances = [(ObjectRef::new(&account.namespace, "web-0"), instance)];
        ClusterState {
            instances: instances.into_iter().collect(),
            ..ClusterState::default()
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_and_are_rewritten_at_half_life() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = LocalTokens::new(dir.path())
            .with_lifetime(HOUR)
            .with_clock(paused_clock());
        let web = ObjectRef::new("emojivoto", "web");
        let read = || std::fs::read(tokens.path(&web)).unwrap();

        let path = tokens.ensure(&web).unwrap();
        let first = read();
        assert_eq!(tokens.validate(&first).await.unwrap(), web);
        // Younger than half its lifetime: kept as is.
        tokio::time::advance(HOUR / 2 - Duration::from_secs(1)).await;
        assert_eq!(tokens.ensure(&web).unwrap(), path);
        assert_eq!(read(), first);
        // Past half-life: rewritten; the old token stays valid until it expires.
        tokio::time::advance(Duration::from_secs(2)).await;
        tokens.ensure(&web).unwrap();
        let second = read();
        assert_ne!(second, first);
        assert_eq!(tokens.validate(&first).await.unwrap(), web);
        assert_eq!(tokens.validate(&second).await.unwrap(), web);
        // An hour after it was written, the first is refused, saying so.
        tokio::time::advance(HOUR / 2).await;
        let error = tokens.validate(&first).await.unwrap_err();
        assert!(matches!(error, TokenError::Expired { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("emojivoto/web")
                && message.contains("expired at")
                && message.contains("1h"),
            "{message}"
        );
        assert_eq!(tokens.validate(&second).await.unwrap(), web);
        // A control plane that stopped rewriting: the current token expires too.
        tokio::time::advance(HOUR).await;
        let error = tokens.validate(&second).await.unwrap_err();
        assert!(matches!(error, TokenError::Expired { .. }), "{error:?}");
        // A token never issued is still a mismatch, not an expiry.
        let forged = format!("{LOCAL_TOKEN_PREFIX}:emojivoto:web:{}", "b".repeat(64));
        let error = tokens.validate(forged.as_bytes()).await.unwrap_err();
        assert!(matches!(error, TokenError::Mismatch(_)), "{error:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn following_discovery_keeps_a_reader_certifying_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = LocalTokens::new(dir.path())
            .with_lifetime(HOUR)
            .with_clock(paused_clock());
        let web = ObjectRef::new("emojivoto", "web");
        let (_tx, states) = watch::channel(Arc::new(state_with(&web)));
        let follow = tokio::spawn(tokens.clone().follow(states));
        ferry_testkit::wait_until(Duration::from_secs(5), "the first token", || async {
            tokens.path(&web).exists().then_some(())
        })
        .await
        .unwrap();
        // A reader that, like a proxy, reads the file whenever it renews: every 10 minutes
        // for five lifetimes, the token it read last time and the one it reads now are
        // both accepted, and it sees the token change.
        let fresh = HOUR / 2 + tokens.rotation_check_interval();
        let mut held = tokio::fs::read(tokens.path(&web)).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            tokio::time::advance(HOUR / 6).await;
            ferry_testkit::wait_until(
                Duration::from_secs(5),
                "the token to be rewritten",
                || async { (tokens.age(&tokens.path(&web)).ok()? < fresh).then_some(()) },
            )
            .await
            .unwrap();
            assert_eq!(tokens.validate(&held).await.unwrap(), web);
            held = tokio::fs::read(tokens.path(&web)).await.unwrap();
            assert_eq!(tokens.validate(&held).await.unwrap(), web);
            seen.insert(held.clone());
        }
        assert!(seen.len() >= 8, "only {} distinct tokens", seen.len());
        follow.abort();
    }
}
