//! The embedded metrics backend: every series a scrape returned, in a bounded ring buffer
//! of `(time, value)` points, and PromQL-like evaluation of [`Query`]s over them.
//!
//! Memory is bounded twice: a point older than the retention (16 minutes: the
//! dashboard's 15-minute charts plus one window) is dropped on the next append, and a
//! buffer never holds more than retention ÷ scrape interval points (plus slack). A series
//! that stops being scraped (its proxy went away) is removed once all its points expired.
//! And the number of series is capped, per target and overall ([`SeriesLimits`]): a proxy
//! that exports a flood of label sets (or a hostile one) cannot grow the control plane
//! without bound, nor crowd out the others beyond its own share.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::expfmt::Sample;
use super::math::{histogram_quantile, rate};
use super::{unix_ms, Labels, Matrix, MetricsBackend, MetricsError, Query, Vector};
use ferry_api::stat::BACKEND_EMBEDDED;

/// How long points are kept: 15 minutes of charts plus the longest default window.
pub const RETENTION: Duration = Duration::from_secs(16 * 60);

/// How many series the store holds at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Series one target's scrape may have (a proxy exports a few hundred; its own caps
    /// allow 1,024 label sets per family and direction).
    pub per_target: usize,
    /// Series in all (each up to retention ÷ interval points: about 2 KB at the defaults).
    pub total: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            per_target: 10_000,
            total: 250_000,
        }
    }
}

/// Every series' points, oldest first.
type Series = HashMap<SeriesKey, VecDeque<(i64, f64)>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    name: String,
    labels: Labels,
}

/// The embedded store; clones share it.
#[derive(Clone)]
pub struct Store {
    series: Arc<RwLock<Series>>,
    interval: Duration,
    retention: Duration,
    limits: SeriesLimits,
    /// Samples not stored because a limit was reached: in all, and at the last round's end.
    dropped: Arc<(AtomicU64, AtomicU64)>,
    rounds: Arc<watch::Sender<u64>>,
}

impl Store {
    /// An empty store for proxies scraped every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self::with_retention(interval, RETENTION)
    }

    /// An empty store keeping points for `retention` (tests keep less).
    pub fn with_retention(interval: Duration, retention: Duration) -> Self {
        let (rounds, _) = watch::channel(0);
        Self {
            series: Arc::default(),
            interval,
            retention,
            limits: SeriesLimits::default(),
            dropped: Arc::default(),
            rounds: Arc::new(rounds),
        }
    }

    /// The same store with other series limits.
    pub fn with_limits(mut self, limits: SeriesLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Samples not stored so far because a series limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.0.load(Ordering::Relaxed)
    }

    fn max_points(&self) -> usize {
        let interval = self.interval.as_millis().max(1);
        (self.retention.as_millis() / interval) as usize + 8
    }

    /// Appends one scrape of a target: every sample gets the target's labels (which win
    /// over a sample's own label of the same name, as Prometheus' target labels do).
    /// Past [`SeriesLimits::per_target`] samples, the rest of the scrape is left out; a
    /// new series past [`SeriesLimits::total`] is not created.
    pub fn ingest(&self, target: &Labels, at: SystemTime, mut samples: Vec<Sample>) {
        let at = unix_ms(at);
        let oldest = at - self.retention.as_millis() as i64;
        let max = self.max_points();
        let mut dropped = samples.len().saturating_sub(self.limits.per_target);
        samples.truncate(self.limits.per_target);
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        for sample in samples {
            let mut labels = sample.labels;
            for (k, v) in target {
                labels.insert(k.clone(), v.clone());
            }
            let key = SeriesKey {
                name: sample.name,
                labels,
            };
            if series.len() >= self.limits.total && !series.contains_key(&key) {
                dropped += 1;
                continue;
            }
            let points = series.entry(key).or_default();
            if points.back().is_some_and(|&(t, _)| t >= at) {
                continue;
            }
            points.push_back((at, sample.value));
            while points.len() > max || points.front().is_some_and(|&(t, _)| t < oldest) {
                points.pop_front();
            }
            points.make_contiguous();
        }
        drop(series);
        if dropped > 0 {
            self.dropped.0.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// Drops expired points and empty series; then tells stream readers a round of
    /// scrapes is in.
    pub fn end_round(&self, now: SystemTime) {
        let oldest = unix_ms(now) - self.retention.as_millis() as i64;
        {
            let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
            series.retain(|_, points| {
                while points.front().is_some_and(|&(t, _)| t < oldest) {
                    points.pop_front();
                }
                points.make_contiguous();
                !points.is_empty()
            });
        }
        let (total, reported) = (&self.dropped.0, &self.dropped.1);
        let now_dropped = total.load(Ordering::Relaxed);
        let before = reported.swap(now_dropped, Ordering::Relaxed);
        if now_dropped > before {
            let limits = self.limits;
            tracing::warn!(
                samples = now_dropped - before,
                per_target = limits.per_target,
                total = limits.total,
                "metrics series limit reached: samples left out this round"
            );
        }
        self.rounds.send_modify(|n| *n += 1);
    }

    /// A receiver notified after every round of scrapes.
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    /// How many series are held (for logs and tests).
    pub fn series_count(&self) -> usize {
        self.series.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Evaluates `query` at `at_ms` over `window_ms`.
    pub fn eval(&self, query: &Query, window_ms: i64, at_ms: i64) -> Vector {
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        self.eval_selected(&select(&series, query), query, window_ms, at_ms)
    }

    /// Evaluates `query` over the series [`select`] picked for it (once per range query,
    /// not once per step).
    fn eval_selected(
        &self,
        selected: &[Selected<'_>],
        query: &Query,
        window_ms: i64,
        at_ms: i64,
    ) -> Vector {
        let by = query.by();
        match query {
            Query::Rate { .. } => {
                let mut groups: HashMap<Labels, f64> = HashMap::new();
                for (key, points) in selected {
                    if let Some(r) = rate(in_window(points, at_ms, window_ms), at_ms, window_ms) {
                        *groups.entry(group(&key.labels, by)).or_default() += r;
                    }
                }
                groups.into_iter().collect()
            }
            Query::Gauge { .. } => {
                let lookback = (self.interval.as_millis() as i64 * 3).max(5_000);
                let mut groups: HashMap<Labels, f64> = HashMap::new();
                for (key, points) in selected {
                    if let Some(&(_, v)) = in_window(points, at_ms, lookback).last() {
                        *groups.entry(group(&key.labels, by)).or_default() += v;
                    }
                }
                groups.into_iter().collect()
            }
            Query::Quantile { q, .. } => {
                let mut groups: HashMap<Labels, HashMap<&str, f64>> = HashMap::new();
                for (key, points) in selected {
                    let Some(le) = key.labels.get("le") else {
                        continue;
                    };
                    if let Some(r) = rate(in_window(points, at_ms, window_ms), at_ms, window_ms) {
                        let by_le = groups.entry(group(&key.labels, by)).or_default();
                        *by_le.entry(le.as_str()).or_default() += r;
                    }
                }
                groups
                    .into_iter()
                    .filter_map(|(labels, by_le)| {
                        let buckets: Vec<(f64, f64)> = by_le
                            .into_iter()
                            .filter_map(|(le, v)| Some((parse_le(le)?, v)))
                            .collect();
                        Some((labels, histogram_quantile(*q, &buckets)?))
                    })
                    .collect()
            }
        }
    }
}

type Selected<'a> = (&'a SeriesKey, &'a VecDeque<(i64, f64)>);

/// The series a query reads: its metric (`_bucket` for quantiles), matching every matcher.
fn select<'a>(series: &'a Series, query: &Query) -> Vec<Selected<'a>> {
    let (name, matchers) = match query {
        Query::Rate {
            metric, matchers, ..
        }
        | Query::Gauge {
            metric, matchers, ..
        } => (metric.to_string(), matchers),
        Query::Quantile {
            metric, matchers, ..
        } => (format!("{metric}_bucket"), matchers),
    };
    series
        .iter()
        .filter(|(key, _)| key.name == name && matchers.iter().all(|m| m.matches(&key.labels)))
        .collect()
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        le => le.parse().ok(),
    }
}

/// The points in `[at - window, at]`. Buffers are kept contiguous by every writer, so
/// the first slice is the whole buffer.
fn in_window(points: &VecDeque<(i64, f64)>, at_ms: i64, window_ms: i64) -> &[(i64, f64)] {
    let (slice, _) = points.as_slices();
    let from = slice.partition_point(|&(t, _)| t < at_ms - window_ms);
    let to = slice.partition_point(|&(t, _)| t <= at_ms);
    &slice[from..to]
}

fn group(labels: &Labels, by: &[String]) -> Labels {
    by.iter()
        .filter_map(|k| Some((k.clone(), labels.get(k)?.clone())))
        .collect()
}

impl MetricsBackend for Store {
    fn name(&self) -> &'static str {
        BACKEND_EMBEDDED
    }

    fn scrape_interval(&self) -> Duration {
        self.interval
    }

    async fn query(
        &self,
        query: &Query,
        window: Duration,
        at: SystemTime,
    ) -> Result<Vector, MetricsError> {
        Ok(self.eval(query, window.as_millis() as i64, unix_ms(at)))
    }

    async fn query_range(
        &self,
        query: &Query,
        window: Duration,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Matrix, MetricsError> {
        let (start, end) = (unix_ms(start), unix_ms(end));
        let step = (step.as_millis() as i64).max(1);
        let mut out: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
        let series = self.series.read().unwrap_or_else(|e| e.into_inner());
        let selected = select(&series, query);
        let mut t = start;
        while t <= end {
            for (labels, v) in self.eval_selected(&selected, query, window.as_millis() as i64, t) {
                out.entry(labels).or_default().push((t, v));
            }
            t += step;
        }
        Ok(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Matcher;

    fn scrape(store: &Store, at: SystemTime, pod: &str, value: f64) {
        let target: Labels = [("pod".to_string(), pod.to_string())].into();
        let text = format!("request_total{{direction=\"inbound\"}} {value}\n");
        store.ingest(&target, at, super::super::expfmt::parse(&text).unwrap());
    }

    #[test]
    fn rates_survive_a_proxy_restart_and_memory_stays_bounded() {
        let store = Store::with_retention(Duration::from_secs(1), Duration::from_secs(30));
        let t0 = SystemTime::now() - Duration::from_secs(100);
        // 100 s of 5/s, with a restart (counter back to 0) at 85 s.
        for s in 0..=100u64 {
            let v = if s < 85 { 5 * s } else { 5 * (s - 85) } as f64;
            scrape(&store, t0 + Duration::from_secs(s), "a", v);
        }
        let at = t0 + Duration::from_secs(100);
        store.end_round(at);
        let query = Query::Rate {
            metric: "request_total",
            matchers: vec![Matcher::eq("direction", "inbound")],
            by: vec!["pod".into()],
        };
        let (at_ms, window) = (unix_ms(at), 20_000);
        let v = store.eval(&query, window, at_ms - 5_000);
        assert_eq!(v.len(), 1);
        assert!((v[0].1 - 5.0).abs() < 0.3, "across the reset: {v:?}");
        assert_eq!(v[0].0["pod"], "a");
        // Only the retention is kept: nothing before at - 30 s.
        assert!(store.eval(&query, window, at_ms - 60_000).is_empty());
        let series = store.series.read().unwrap();
        assert!(series.values().all(|p| p.len() <= 31), "bounded");
    }

    #[test]
    fn series_are_capped_per_target_and_in_all() {
        let limits = SeriesLimits {
            per_target: 3,
            total: 5,
        };
        let store = Store::new(Duration::from_secs(1)).with_limits(limits);
        let target = |pod: &str| -> Labels { [("pod".to_string(), pod.to_string())].into() };
        let scrape = |n: usize| {
            let text: String = (0..n).map(|i| format!("flood{{i=\"{i}\"}} 1\n")).collect();
            super::super::expfmt::parse(&text).unwrap()
        };
        let now = SystemTime::now();
        // A flooding target keeps its first three series; the rest of its scrape is left out.
        store.ingest(&target("a"), now, scrape(10));
        assert_eq!((store.series_count(), store.dropped()), (3, 7));
        // The next target fills what is left of the total and no more.
        store.ingest(&target("b"), now, scrape(3));
        assert_eq!((store.series_count(), store.dropped()), (5, 8));
        // Series already held keep getting points at the cap.
        store.ingest(&target("a"), now + Duration::from_secs(1), scrape(3));
        assert_eq!((store.series_count(), store.dropped()), (5, 8));
        let series = store.series.read().unwrap();
        let a0 = series
            .iter()
            .find(|(k, _)| k.labels["pod"] == "a" && k.labels["i"] == "0")
            .unwrap();
        assert_eq!(a0.1.len(), 2);
    }

    #[test]
    fn gauges_go_stale_and_groups_sum() {
        let store = Store::new(Duration::from_secs(1));
        let now = SystemTime::now();
        let target = |pod: &str| -> Labels {
            [
                ("pod".to_string(), pod.to_string()),
                ("deployment".to_string(), "web".to_string()),
            ]
            .into()
        };
        let gauge = |v| {
            super::super::expfmt::parse(&format!("tcp_open_connections{{peer=\"src\"}} {v}\n"))
                .unwrap()
        };
        store.ingest(&target("a"), now, gauge(2));
        store.ingest(&target("b"), now, gauge(3));
        store.ingest(&target("c"), now - Duration::from_secs(60), gauge(100));
        let query = Query::Gauge {
            metric: "tcp_open_connections",
            matchers: vec![],
            by: vec!["deployment".into()],
        };
        let v = store.eval(&query, 60_000, unix_ms(now));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1, 5.0, "c's sample is a minute old: stale");
    }
}
