//! Dev-only helpers for Ferry's tests: real servers on `127.0.0.1:0`, real processes that
//! are killed when dropped, and waits that always have a deadline.
//!
//! # Layout
//! - [`server`]: in-process HTTP/1 + h2c servers with handlers, stopped on drop.
//! - [`process`]: spawn a binary, read its bound addresses from its logs, kill it on drop.
//! - [`browser`]: a headless Chromium driven over WebDriver, for the dashboard's tests.
//! - [`kube_api`], [`kube_world`], [`kube_kinds`]: a fake Kubernetes API server serving recorded objects.
//! - [`client`]: a small HTTP client (HTTP/1 or h2c) for tests.
//! - [`otlp`]: an OTLP/gRPC trace collector that records what proxies export.
//! - [`netns`]: network namespaces, commands in them as other users, a tiny app (root only).
//! - [`wait_until`]: poll a condition until it holds or a deadline passes.

pub mod browser;
pub mod client;
pub mod kube_api;
pub mod kube_kinds;
pub mod kube_world;
pub mod netns;
pub mod otlp;
pub mod process;
pub mod server;

use std::{future::Future, time::Duration};

/// Polls `check` every 20 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Finds the value of the Prometheus sample `name{labels…}` whose labels include every
/// `key="value"` pair in `want`. `None` when no sample matches.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let labels = labels.strip_suffix('}')?;
            let all = want
                .iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            if all {
                value.parse().ok()
            } else {
                None
            }
        })
}

/// Sums every sample of `name` whose labels include every pair in `want`.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, "}"));
            let ok = n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            if ok {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}
