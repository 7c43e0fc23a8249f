//! Local mode: route documents in a file, or in every `*.yaml` / `*.yml` file of a
//! directory (`--routes PATH`), polled for edits the way the workloads file is.
//!
//! At start an invalid document is fatal. Later, an edit that leaves any document invalid
//! is logged with its file, line and field, and the last good set stays in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::{parse, DocumentErrors, RouteSet, Routes};

/// How long a changed text must stay unchanged before it is read as final.
const SETTLE: Duration = Duration::from_millis(25);

/// Why the routes could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// A file or the directory could not be read.
    #[error("reading routes {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A document is invalid.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each error, with its line and field.
        source: DocumentErrors,
    },
}

/// The texts of `path`: the file itself, or the directory's YAML files by name.
pub(crate) async fn read_all(path: &Path) -> Result<Vec<(PathBuf, String)>, RoutesFileError> {
    let read_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RoutesFileError::Read { path: p, source }
    };
    let meta = tokio::fs::metadata(path).await.map_err(read_err(path))?;
    if !meta.is_dir() {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(read_err(path))?;
        return Ok(vec![(path.to_path_buf(), text)]);
    }
    let mut files = Vec::new();
    let mut dir = tokio::fs::read_dir(path).await.map_err(read_err(path))?;
    while let Some(entry) = dir.next_entry().await.map_err(read_err(path))? {
        let p = entry.path();
        let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
        // Kubernetes ConfigMap mounts keep data in `..data/`; the links are what we list.
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if yaml && !hidden {
            files.push(p);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let text = tokio::fs::read_to_string(&p).await.map_err(read_err(&p))?;
        out.push((p, text));
    }
    Ok(out)
}

/// Parses every text; the first invalid file fails the whole set.
pub fn parse_all(texts: &[(PathBuf, String)]) -> Result<RouteSet, RoutesFileError> {
    let mut set = RouteSet::default();
    for (path, text) in texts {
        let parsed = parse(text).map_err(|source| RoutesFileError::Invalid {
            path: path.clone(),
            source,
        })?;
        set.extend(parsed);
    }
    Ok(set)
}

/// Loads `path` and spawns the task that re-reads it every `interval`; the task stops once
/// every clone of the returned handle is dropped.
pub async fn spawn(path: PathBuf, interval: Duration) -> Result<Routes, RoutesFileError> {
    let texts = read_all(&path).await?;
    let set = parse_all(&texts)?;
    log_loaded(&path, &set);
    let routes = Routes::new(set);
    let weak = std::sync::Arc::downgrade(&routes.tx);
    tokio::spawn(async move {
        let mut last = Some(texts);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut unreadable = false;
        loop {
            ticks.tick().await;
            let Some(tx) = weak.upgrade() else { return };
            let texts = match read_all(&path).await {
                Ok(texts) => texts,
                Err(error) => {
                    if !unreadable {
                        tracing::warn!(error = %crate::discovery::file::chain(&error), "routes unreadable; keeping the last good set");
                    }
                    unreadable = true;
                    last = None;
                    continue;
                }
            };
            unreadable = false;
            if last.as_ref() == Some(&texts) {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            if read_all(&path).await.ok().as_ref() != Some(&texts) {
                continue;
            }
            match parse_all(&texts) {
                Ok(set) => {
                    log_loaded(&path, &set);
                    tx.send_if_modified(|current| {
                        let changed = **current != set;
                        if changed {
                            *current = std::sync::Arc::new(set);
                        }
                        changed
                    });
                }
                Err(error) => tracing::error!(
                    error = %crate::discovery::file::chain(&error),
                    "rejected routes edit; keeping the last good set"
                ),
            }
            last = Some(texts);
        }
    });
    Ok(routes)
}

fn log_loaded(path: &Path, set: &RouteSet) {
    tracing::info!(
        path = %path.display(),
        http_routes = set.http.len(),
        grpc_routes = set.grpc.len(),
        http_faults = set.faults.len(),
        "loaded routes"
    );
}
