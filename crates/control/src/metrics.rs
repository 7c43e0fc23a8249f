//! Golden metrics from the proxies: where they come from and the few questions asked of
//! them.
//!
//! The stat logic above ([`crate::stat`]) asks a [`MetricsBackend`] a handful of
//! structured [`Query`]s — "sum by these labels of the per-second rate of this counter",
//! "a latency quantile", "the sum of this gauge" — and never sees where answers come from.
//! Two backends answer them:
//! - [`store::Store`], the embedded default: [`scrape`] fetches every proxy's `/metrics`
//!   ([`expfmt`] parses it) and the store keeps each series in a bounded ring buffer,
//!   evaluating queries the way PromQL would ([`math`]).
//! - [`promql::Prometheus`]: the same queries rendered as PromQL and sent to a real
//!   Prometheus that scrapes the proxies (found through [`targets`]' HTTP SD).
//!
//! Both attach the same target labels to every sample a proxy exports: `namespace`,
//! `pod`, the workload's kind label (`deployment=web`) and `serviceaccount`.

pub mod expfmt;
pub mod math;
pub mod promql;
pub mod scrape;
pub mod store;
pub mod targets;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// A label set: name → value. Absent and empty labels are the same thing, as in PromQL.
pub type Labels = BTreeMap<String, String>;

/// An instant answer: one value per group of the query's `by` labels.
pub type Vector = Vec<(Labels, f64)>;

/// A range answer: per group, `(Unix milliseconds, value)` points, oldest first.
pub type Matrix = Vec<(Labels, Vec<(i64, f64)>)>;

/// A label equality matcher; an empty value matches an absent label (PromQL's `l=""`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The value it must have.
    pub value: String,
}

impl Matcher {
    /// `name="value"`.
    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Whether `labels` satisfies the matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        labels.get(&self.name).map(String::as_str).unwrap_or("") == self.value
    }
}

/// What the stat logic asks a backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    /// `sum by (by) (rate(metric{matchers}[window]))`: per-second rate of a counter.
    Rate {
        /// The counter.
        metric: &'static str,
        /// Which series.
        matchers: Vec<Matcher>,
        /// The labels kept.
        by: Vec<String>,
    },
    /// `histogram_quantile(q, sum by (le, by) (rate(metric_bucket{matchers}[window])))`.
    Quantile {
        /// The quantile, 0 to 1.
        q: f64,
        /// The histogram's name (without `_bucket`).
        metric: &'static str,
        /// Which series.
        matchers: Vec<Matcher>,
        /// The labels kept (besides `le`).
        by: Vec<String>,
    },
    /// `sum by (by) (metric{matchers})`: a gauge's current value.
    Gauge {
        /// The gauge.
        metric: &'static str,
        /// Which series.
        matchers: Vec<Matcher>,
        /// The labels kept.
        by: Vec<String>,
    },
}

impl Query {
    /// The labels the answer is grouped by.
    pub fn by(&self) -> &[String] {
        match self {
            Self::Rate { by, .. } | Self::Quantile { by, .. } | Self::Gauge { by, .. } => by,
        }
    }
}

/// Why a backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Prometheus could not be reached or answered with an HTTP error.
    #[error("querying Prometheus at {url}: {reason}")]
    Prometheus {
        /// The Prometheus base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// Prometheus answered something other than the expected JSON.
    #[error("unexpected answer from Prometheus at {url} to {query}: {reason}")]
    PrometheusAnswer {
        /// The Prometheus base URL.
        url: String,
        /// The PromQL sent.
        query: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// A source of metrics that answers [`Query`]s; the embedded store and Prometheus.
pub trait MetricsBackend: Send + Sync + 'static {
    /// The backend's name in answers: `embedded` or `prometheus`.
    fn name(&self) -> &'static str;

    /// How often the proxies are scraped: the useful resolution of answers.
    fn scrape_interval(&self) -> Duration;

    /// Evaluates `query` with rates over `window` ending at `at`.
    fn query(
        &self,
        query: &Query,
        window: Duration,
        at: SystemTime,
    ) -> impl Future<Output = Result<Vector, MetricsError>> + Send;

    /// Evaluates `query` at every `step` from `start` to `end` (inclusive).
    fn query_range(
        &self,
        query: &Query,
        window: Duration,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> impl Future<Output = Result<Matrix, MetricsError>> + Send;
}

/// The backend chosen at start: one of the two, dispatched without boxing.
#[derive(Clone)]
pub enum Backend {
    /// The control plane's own scrapes.
    Embedded(store::Store),
    /// PromQL against `--prometheus-url` (boxed: its HTTP client is large).
    Prometheus(Box<promql::Prometheus>),
}

impl MetricsBackend for Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Embedded(b) => b.name(),
            Self::Prometheus(b) => b.name(),
        }
    }

    fn scrape_interval(&self) -> Duration {
        match self {
            Self::Embedded(b) => b.scrape_interval(),
            Self::Prometheus(b) => b.scrape_interval(),
        }
    }

    async fn query(
        &self,
        query: &Query,
        window: Duration,
        at: SystemTime,
    ) -> Result<Vector, MetricsError> {
        match self {
            Self::Embedded(b) => b.query(query, window, at).await,
            Self::Prometheus(b) => b.query(query, window, at).await,
        }
    }

    async fn query_range(
        &self,
        query: &Query,
        window: Duration,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Matrix, MetricsError> {
        match self {
            Self::Embedded(b) => b.query_range(query, window, start, end, step).await,
            Self::Prometheus(b) => b.query_range(query, window, start, end, step).await,
        }
    }
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where metrics come from: flags `--scrape-interval` and `--prometheus-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// How often proxies are scraped (by us, or by Prometheus: then only the resolution
    /// of live streams and charts).
    pub scrape_interval: Duration,
    /// Answer with PromQL from this Prometheus instead of scraping ourselves.
    pub prometheus_url: Option<String>,
    /// The embedded store's caps on series.
    pub series: store::SeriesLimits,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            scrape_interval: scrape::DEFAULT_SCRAPE_INTERVAL,
            prometheus_url: None,
            series: store::SeriesLimits::default(),
        }
    }
}

impl MetricsConfig {
    /// Builds the backend; for the embedded one, also the scraper task following
    /// `states` (aborted when the returned handle is dropped).
    pub fn start(
        &self,
        states: tokio::sync::watch::Receiver<std::sync::Arc<crate::model::ClusterState>>,
    ) -> (Backend, Option<tokio::task::JoinHandle<()>>) {
        match &self.prometheus_url {
            Some(url) => {
                tracing::info!(%url, "stat answers come from Prometheus");
                (
                    Backend::Prometheus(Box::new(promql::Prometheus::new(
                        url,
                        self.scrape_interval,
                    ))),
                    None,
                )
            }
            None => {
                let store = store::Store::new(self.scrape_interval).with_limits(self.series);
                let task = tokio::spawn(scrape::run(store.clone(), states));
                tracing::info!(interval = ?self.scrape_interval, "scraping proxies' metrics");
                (Backend::Embedded(store), Some(task))
            }
        }
    }
}
