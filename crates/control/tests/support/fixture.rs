//! Shared by the integration tests: a workloads file in a temporary directory, the issue's
//! `echo` example, and bounded waits.

#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long anything that should be prompt may take.
pub const PROMPT: Duration = Duration::from_secs(1);

/// A workloads file declaring service `echo` (namespace `default`, port 8080) backed by
/// workload `echo` with one instance per `(name, port)` at `127.0.0.1:port`.
pub fn echo(instances: &[(&str, u16)]) -> String {
    let mut text = String::from(
        "workloads:\n  - name: echo\n    kind: deployment\n    serviceAccount: echo\n    instances:\n",
    );
    if instances.is_empty() {
        text = text.replace("    instances:\n", "    instances: []\n");
    }
    for (name, port) in instances {
        text.push_str(&format!(
            "      - name: {name}\n        addr: 127.0.0.1:{port}\n"
        ));
    }
    text.push_str("services:\n  - name: echo\n    namespace: default\n    port: 8080\n    workloads: [echo]\n");
    text
}

/// A workloads file in its own temporary directory, removed on drop.
pub struct WorkloadsFile {
    dir: PathBuf,
    path: PathBuf,
}

impl WorkloadsFile {
    /// Creates the file with `text`.
    pub fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferry-control-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let file = Self {
            path: dir.join("workloads.yaml"),
            dir,
        };
        file.write(text);
        file
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the file in place, as an editor without atomic saves would.
    pub fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("writing the workloads file");
    }
}

impl Drop for WorkloadsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}
