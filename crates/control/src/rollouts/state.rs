//! Where a rollout's state survives a restart: locally, one JSON file per rollout in the
//! state directory, replaced atomically on every change; on Kubernetes, the resource's
//! `status` ([`super::kubernetes::KubeState`]).

use std::path::{Path, PathBuf};

use ferry_api::rollout::RolloutStatus;

/// Where states are kept.
#[derive(Clone)]
pub enum StateStore {
    /// Files in a directory.
    Dir(StateDir),
    /// The resources' status on Kubernetes.
    Kube(super::kubernetes::KubeState),
}

impl StateStore {
    /// The saved state of a rollout, if any.
    pub async fn load(&self, namespace: &str, name: &str) -> Option<RolloutStatus> {
        match self {
            Self::Dir(d) => d.load(namespace, name).await,
            Self::Kube(k) => k.load(namespace, name),
        }
    }

    /// Notified when saved states changed outside this process (another replica wrote
    /// them); none for files.
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Self::Dir(_) => None,
            Self::Kube(k) => Some(k.changes()),
        }
    }

    /// Saves a rollout's state (failures are logged: the rollout goes on).
    pub async fn save(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        match self {
            Self::Dir(d) => d.save(namespace, name, status).await,
            Self::Kube(k) => k.save(namespace, name, status).await,
        }
    }
}

/// The state directory; none keeps state in memory only.
#[derive(Clone, Debug, Default)]
pub struct StateDir(pub Option<PathBuf>);

impl StateDir {
    fn file(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        self.0
            .as_ref()
            .map(|dir| dir.join(format!("{namespace}.{name}.json")))
    }

    /// The saved state of a rollout, if any. An unreadable or corrupt file is logged and
    /// treated as none (the rollout starts a new run rather than not run).
    pub async fn load(&self, namespace: &str, name: &str) -> Option<RolloutStatus> {
        let path = self.file(namespace, name)?;
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read a rollout's saved state; starting a new run");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(status) => Some(status),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "a rollout's saved state is not valid; starting a new run");
                None
            }
        }
    }

    /// Saves a rollout's state: written beside, then renamed over the old file, so a
    /// crash leaves the old state or the new one, never half of one.
    pub async fn save(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        let Some(path) = self.file(namespace, name) else {
            return;
        };
        if let Err(error) = write(&path, status).await {
            tracing::error!(path = %path.display(), %error, "cannot save a rollout's state");
        }
    }
}

async fn write(path: &Path, status: &RolloutStatus) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    tokio::fs::write(&tmp, body).await?;
    tokio::fs::rename(&tmp, path).await
}
