//! The embedded scraper: every interval, fetch `/metrics` from every proxy discovery
//! knows an admin address for, concurrently, and append the samples to the [`Store`]
//! with the target's labels. A proxy that does not answer within the interval is logged
//! (once per failure streak) and skipped; its series simply get no new points.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use super::expfmt;
use super::store::Store;
use super::targets::{targets, Target};
use crate::model::ClusterState;

/// The default `--scrape-interval`.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(10);
/// The largest `/metrics` body read (a proxy's is a few tens of KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Scrapes every target of `states` into `store` every `store.scrape_interval()` until
/// the task is dropped.
pub async fn run(store: Store, states: watch::Receiver<Arc<ClusterState>>) {
    use super::MetricsBackend as _;
    let interval = store.scrape_interval();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: HashSet<SocketAddr> = HashSet::new();
    loop {
        ticker.tick().await;
        let state = states.borrow().clone();
        let now = SystemTime::now();
        let mut round = tokio::task::JoinSet::new();
        for target in targets(&state) {
            let client = client.clone();
            round.spawn(async move {
                let result = tokio::time::timeout(interval, scrape(&client, &target)).await;
                let result =
                    result.unwrap_or_else(|_| Err(format!("no answer within {interval:?}")));
                (target, result)
            });
        }
        while let Some(joined) = round.join_next().await {
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

async fn scrape(client: &HttpClient, target: &Target) -> Result<Vec<expfmt::Sample>, String> {
    let uri: http::Uri = format!("http://{}/metrics", target.admin_addr)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let rsp = client.get(uri).await.map_err(|e| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        reason
    })?;
    if !rsp.status().is_success() {
        return Err(format!("/metrics answered {}", rsp.status()));
    }
    let body = http_body_util::Limited::new(rsp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|e| format!("/metrics is not UTF-8: {e}"))?;
    expfmt::parse(text).map_err(|e| format!("/metrics: {e}"))
}
