//! Issuer rotation without a restart: the CA's three files are re-read every interval and a
//! changed, valid set replaces the CA that signs the next certificate.
//!
//! On Kubernetes the files are the mounted Secret `ferry-identity-issuer` and ConfigMap
//! `ferry-identity-trust-roots`, which the kubelet updates by swapping a `..data` symlink;
//! polling sees that the same way it sees an in-place write (as `discovery::file` does for
//! the workloads file). A changed set that does not make a valid CA (a corrupt key, an issuer
//! the anchors do not sign, or the moment between the Secret's and the ConfigMap's updates) is
//! logged once and the old CA kept; it is tried again as soon as any file changes again.
//! Certificates already issued stay valid: proxies renew against the new issuer.

use ferry_api::cause::error_chain;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::ca::Ca;
use super::material::CaSource;

/// How often the files are re-read unless configured. The kubelet itself takes up to a
/// minute to project a changed Secret, so seconds here are not what users wait for.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What one check of the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are as last seen.
    Unchanged,
    /// The files changed and now make a valid CA, which replaced the old one.
    Replaced,
    /// The files changed but do not make a valid CA (or cannot be read); the old CA stays.
    Rejected(String),
}

/// Follows the files of one CA source, remembering what it last saw.
pub struct Reloader {
    files: [PathBuf; 3],
    last: Option<[Vec<u8>; 3]>,
    ca: Arc<watch::Sender<Arc<Ca>>>,
}

impl Reloader {
    /// Starts from the files' current contents, which are what the running CA was loaded from.
    pub fn new(source: &CaSource, ca: Arc<watch::Sender<Arc<Ca>>>) -> Self {
        let files = source.files();
        let last = read_all(&files).ok();
        Self { files, last, ca }
    }

    /// Reads the files once; replaces the CA when they changed into a valid set.
    pub fn check(&mut self) -> Reload {
        let contents = match read_all(&self.files) {
            Ok(contents) => contents,
            // Mid-swap, a file can be briefly missing: the next tick sees the new set.
            Err(error) => return Reload::Rejected(error),
        };
        if self.last.as_ref() == Some(&contents) {
            return Reload::Unchanged;
        }
        let text = |i: usize| String::from_utf8_lossy(&contents[i]).into_owned();
        let result = Ca::from_pem(&text(0), &text(1), &text(2));
        self.last = Some(contents);
        match result {
            Ok(ca) => {
                tracing::info!(
                    trust_anchor = %ca.trust_anchors()[0].subject,
                    issuer = %ca.issuer().subject,
                    issuer_expires = %humantime::format_rfc3339_seconds(ca.issuer().not_after),
                    "identity CA reloaded"
                );
                self.ca.send_replace(Arc::new(ca));
                Reload::Replaced
            }
            Err(error) => {
                let why = error_chain(&error);
                tracing::error!(
                    error = %why,
                    files = ?self.files,
                    "identity CA files changed into an invalid set; keeping the previous issuer"
                );
                Reload::Rejected(why)
            }
        }
    }
}

fn read_all(files: &[PathBuf; 3]) -> Result<[Vec<u8>; 3], String> {
    // Three small files, a few times a minute: blocking reads do not hold the runtime up.
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    Ok([read(&files[0])?, read(&files[1])?, read(&files[2])?])
}

/// Checks the files every `interval`, forever (callers abort it).
pub async fn follow(
    source: CaSource,
    trust_domain: String,
    ca: Arc<watch::Sender<Arc<Ca>>>,
    interval: Duration,
) {
    let mut reloader = Reloader::new(&source, ca);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Reload::Rejected(why) = reloader.check() {
            tracing::debug!(%trust_domain, %why, "identity CA files not reloaded");
        }
    }
}
