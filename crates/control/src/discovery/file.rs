//! The workloads-file backend: loads the file, then polls it and publishes every valid
//! edit. An edit that does not parse is logged and ignored, so the last good state stays.
//!
//! Polling (rather than inotify) works the same for in-place writes, editors that rename
//! over the file, bind mounts and Kubernetes ConfigMap symlink swaps; the file is small.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::Discovery;
use crate::model::ClusterState;
use crate::workloads_file::{self, WorkloadsFileError};

/// How often the file is checked when not configured.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long a changed file must stay unchanged before it is read as final, so that a
/// half-written file is not taken for a (smaller) valid one.
const SETTLE: Duration = Duration::from_millis(25);

/// Why the workloads file could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum FileDiscoveryError {
    /// The file could not be read.
    #[error("reading workloads file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid workloads file.
    #[error("loading workloads file {path}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: WorkloadsFileError,
    },
}

/// Discovery from a local workloads file, kept current by a polling task.
///
/// The task stops once every clone of this handle is dropped; receivers then keep the
/// last state.
#[derive(Clone, Debug)]
pub struct FileDiscovery {
    tx: Arc<watch::Sender<Arc<ClusterState>>>,
}

impl FileDiscovery {
    /// Loads `path` and spawns the task that re-reads it every `interval`.
    ///
    /// Fails if the file cannot be read or is invalid now; later bad edits only log.
    pub async fn spawn(path: PathBuf, interval: Duration) -> Result<Self, FileDiscoveryError> {
        let text = read(&path).await?;
        let state = workloads_file::parse(&text).map_err(|source| FileDiscoveryError::Invalid {
            path: path.clone(),
            source,
        })?;
        log_loaded(&path, &state);
        let (tx, _) = watch::channel(Arc::new(state));
        let tx = Arc::new(tx);
        let poller = Poller {
            path,
            last: Some(text),
            unreadable: false,
        };
        tokio::spawn(poller.run(Arc::downgrade(&tx), interval));
        Ok(Self { tx })
    }
}

impl Discovery for FileDiscovery {
    fn watch(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.tx.subscribe()
    }
}

struct Poller {
    path: PathBuf,
    /// The text last seen, valid or not, so each edit is parsed and reported once.
    last: Option<String>,
    /// Whether the file was unreadable at the last check, so that is reported once.
    unreadable: bool,
}

impl Poller {
    async fn run(mut self, tx: Weak<watch::Sender<Arc<ClusterState>>>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(tx) = tx.upgrade() else {
                tracing::debug!(path = %self.path.display(), "workloads file watch stopped");
                return;
            };
            if let Some(state) = self.check().await {
                tx.send_if_modified(|current| {
                    let changed = **current != state;
                    if changed {
                        *current = Arc::new(state);
                    }
                    changed
                });
            }
        }
    }

    /// Returns the new state when the file changed to something valid.
    async fn check(&mut self) -> Option<ClusterState> {
        let text = match read(&self.path).await {
            Ok(text) => text,
            Err(error) => {
                if !self.unreadable {
                    tracing::warn!(error = %chain(&error), "workloads file unreadable; keeping the last good state");
                }
                self.unreadable = true;
                self.last = None;
                return None;
            }
        };
        self.unreadable = false;
        if self.last.as_deref() == Some(text.as_str()) {
            return None;
        }
        // Changed: wait for the writer to finish, then read again.
        tokio::time::sleep(SETTLE).await;
        if read(&self.path).await.ok().as_deref() != Some(text.as_str()) {
            return None;
        }
        self.last = Some(text);
        let text = self.last.as_deref().unwrap_or_default();
        match workloads_file::parse(text) {
            Ok(state) => {
                log_loaded(&self.path, &state);
                Some(state)
            }
            Err(error) => {
                tracing::error!(
                    path = %self.path.display(),
                    error = %chain(&error),
                    "rejected workloads file edit; keeping the last good state"
                );
                None
            }
        }
    }
}

async fn read(path: &Path) -> Result<String, FileDiscoveryError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| FileDiscoveryError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn log_loaded(path: &Path, state: &ClusterState) {
    let endpoints: usize = state
        .services
        .values()
        .flat_map(|s| s.ports.values())
        .map(|p| p.endpoints.len())
        .sum();
    tracing::info!(
        path = %path.display(),
        namespaces = state.namespaces.len(),
        workloads = state.workloads.len(),
        instances = state.instances.len(),
        services = state.services.len(),
        endpoints,
        "loaded workloads file"
    );
}

/// Renders an error with its causes: `loading x: invalid y: at line 3 ...`.
pub(crate) fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
