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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ferry_testkit::server::{full, TestServer};

    use super::*;
    use crate::model::{Instance, ObjectRef};

    /// Two waves of proxies, each holding its answer until `MAX_IN_FLIGHT` scrapes wait
    /// together (or 2 s pass): the scraper reaches `MAX_IN_FLIGHT` at once and never more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_at_most_max_in_flight_at_once() {
        let proxies = 2 * MAX_IN_FLIGHT;
        let (count, waiting) = watch::channel(0usize);
        let count = Arc::new(count);
        let (peak, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let server = {
            let (peak, served) = (peak.clone(), served.clone());
            TestServer::http(move |_req| {
                let (count, mut waiting) = (count.clone(), waiting.clone());
                let (peak, served) = (peak.clone(), served.clone());
                async move {
                    count.send_modify(|n| *n += 1);
                    peak.fetch_max(*count.borrow(), Ordering::SeqCst);
                    let wave = waiting.wait_for(|n| *n >= MAX_IN_FLIGHT);
                    let _ = tokio::time::timeout(Duration::from_secs(2), wave).await;
                    count.send_modify(|n| *n -= 1);
                    served.fetch_add(1, Ordering::SeqCst);
                    http::Response::new(full("# TYPE up gauge\nup 1\n"))
                }
            })
            .await
        };
        let instances: BTreeMap<_, _> = (0..proxies)
            .map(|i| {
                let instance = Instance {
                    owner: None,
                    service_account: "default".into(),
                    meshed: true,
                    addr: None,
                    admin_addr: Some(server.addr),
                    tap_addr: None,
                    inbound: Default::default(),
                };
                (ObjectRef::new("ns", format!("pod-{i}")), instance)
            })
            .collect();
        let state = ClusterState {
            instances: instances.into(),
            ..ClusterState::default()
        };
        let (_tx, states) = watch::channel(Arc::new(state));
        let scraper = tokio::spawn(run(Store::new(Duration::from_secs(60)), states));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while served.load(Ordering::SeqCst) < proxies {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the round did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        scraper.abort();
        assert_eq!(peak.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    }
}
