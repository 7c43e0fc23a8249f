//! The embedded scraper: every interval, fetch `/metrics` from every proxy discovery
//! knows an admin address for, [`MAX_IN_FLIGHT`] at a time, and append the samples to the
//! [`Store`] with the target's labels. A proxy that does not answer within the interval (at
//! most [`MAX_SCRAPE_TIME`]) is logged
//! (once per failure streak) and skipped; its series simply get no new points.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::expfmt;
use super::store::Store;
use super::targets::{targets, Target};
use crate::fetch::{self, HttpClient};
use crate::model::ClusterState;

/// Most scrapes in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Longest one scrape may take.
pub const MAX_SCRAPE_TIME: Duration = Duration::from_secs(10);

/// The default `--scrape-interval`.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(10);
/// The largest `/metrics` body read (a proxy's is a few tens of KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Scrapes every target of `states` into `store` every `store.scrape_interval()` until
/// the task is dropped.
///
/// At most [`MAX_IN_FLIGHT`] proxies are scraped at once, each within the scrape interval
/// or [`MAX_SCRAPE_TIME`], whichever is shorter (Prometheus' default `scrape_timeout`).
pub async fn run(store: Store, states: watch::Receiver<Arc<ClusterState>>) {
    use super::MetricsBackend as _;
    let interval = store.scrape_interval();
    let client = fetch::client_without_pool();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: HashSet<SocketAddr> = HashSet::new();
    loop {
        ticker.tick().await;
        let state = states.borrow().clone();
        let now = SystemTime::now();
        // At most MAX_IN_FLIGHT scrapes at once: a mesh of 10,000 proxies is scraped in
        // waves, never with 10,000 connections and their buffers at the same time.
        let timeout = interval.min(MAX_SCRAPE_TIME);
        let mut round = tokio::task::JoinSet::new();
        let mut pending = targets(&state);
        loop {
            while round.len() < MAX_IN_FLIGHT {
                let Some(target) = pending.next() else { break };
                let client = client.clone();
                round.spawn(async move {
                    let result = scrape(&client, &target, timeout).await;
                    (target, result)
                });
            }
            let Some(joined) = round.join_next().await else {
                break;
            };
            let Ok((target, result)) = joined else {
                continue;
            };
            match result {
                Ok(samples) => {
                    if failing.remove(&target.admin_addr) {
                        tracing::info!(addr = %target.admin_addr, "scraping metrics again");
                    }
                    store.ingest(&target.labels, now, samples);
                }
                Err(reason) => {
                    if failing.insert(target.admin_addr) {
                        tracing::warn!(addr = %target.admin_addr, pod = ?target.labels.get("pod"), %reason, "cannot scrape a proxy's metrics");
                    }
                }
            }
        }
        store.end_round(SystemTime::now());
        tracing::trace!(series = store.series_count(), "scrape round done");
    }
}

async fn scrape(
    client: &HttpClient,
    target: &Target,
    timeout: Duration,
) -> Result<Vec<expfmt::Sample>, String> {
    let uri: http::Uri = format!("http://{}/metrics", target.admin_addr)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let (status, body) = fetch::get(client, uri, MAX_BODY, timeout).await?;
    if !status.is_success() {
        return Err(format!("/metrics answered {status}"));
    }
    let text = std::str::from_utf8(&body).map_err(|e| format!("/metrics is not UTF-8: {e}"))?;
    expfmt::parse(text).map_err(|e| format!("/metrics: {e}"))
}
