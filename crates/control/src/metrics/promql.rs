//! The Prometheus backend: each [`Query`] rendered as PromQL and sent to
//! `/api/v1/query` (or `/api/v1/query_range`) of the Prometheus at `--prometheus-url`,
//! which scrapes the proxies it finds through the control plane's HTTP SD route.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::fetch::{self, HttpClient};

use super::{unix_ms, Labels, Matcher, Matrix, MetricsBackend, MetricsError, Query, Vector};
use ferry_api::stat::BACKEND_PROMETHEUS;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read from Prometheus.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// A Prometheus HTTP API client.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    interval: Duration,
    client: HttpClient,
}

impl Prometheus {
    /// A client of the Prometheus at `base` (`http://host:9090`), which scrapes proxies
    /// every `interval`.
    pub fn new(base: &str, interval: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            interval,
            client: fetch::client(),
        }
    }

    async fn get(&self, path_and_query: String, promql: &str) -> Result<Data, MetricsError> {
        let failed = |reason: String| MetricsError::Prometheus {
            url: self.base.clone(),
            reason,
        };
        let uri: http::Uri = format!("{}{path_and_query}", self.base)
            .parse()
            .map_err(|e| failed(format!("invalid URL: {e}")))?;
        let (status, body) = fetch::get(&self.client, uri, MAX_ANSWER, TIMEOUT)
            .await
            .map_err(failed)?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| MetricsError::PrometheusAnswer {
                url: self.base.clone(),
                query: promql.to_string(),
                reason: format!("HTTP {status}: {e}"),
            })?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(MetricsError::PrometheusAnswer {
                url: self.base.clone(),
                query: promql.to_string(),
                reason: format!(
                    "HTTP {status}: {}",
                    answer.error.unwrap_or_else(|| "no data".into())
                ),
            }),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: Labels,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn value(v: &str) -> Option<f64> {
    let v: f64 = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

/// Renders `query` as PromQL with rates over `window`.
pub fn promql(query: &Query, window: Duration) -> String {
    let range = format!("[{}s]", window.as_secs().max(1));
    match query {
        Query::Rate {
            metric,
            matchers,
            by,
        } => format!(
            "sum by ({}) (rate({metric}{}{range}))",
            by.join(","),
            selector(matchers)
        ),
        Query::Gauge {
            metric,
            matchers,
            by,
        } => format!("sum by ({}) ({metric}{})", by.join(","), selector(matchers)),
        Query::Quantile {
            q,
            metric,
            matchers,
            by,
        } => {
            let mut by_le = vec!["le".to_string()];
            by_le.extend(by.iter().cloned());
            format!(
                "histogram_quantile({q}, sum by ({}) (rate({metric}_bucket{}{range})))",
                by_le.join(","),
                selector(matchers)
            )
        }
    }
}

fn selector(matchers: &[Matcher]) -> String {
    let mut out = String::from("{");
    for (i, m) in matchers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}=\"", m.name);
        for c in m.value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// `query=...&time=...`, encoded as Prometheus' form parser reads it.
fn query_string(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn seconds(t: SystemTime) -> String {
    format!("{:.3}", unix_ms(t) as f64 / 1000.0)
}

impl MetricsBackend for Prometheus {
    fn name(&self) -> &'static str {
        BACKEND_PROMETHEUS
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
        let q = promql(query, window);
        let path = format!(
            "/api/v1/query?{}",
            query_string(&[("query", q.as_str()), ("time", &seconds(at))])
        );
        let data = self.get(path, &q).await?;
        Ok(data
            .result
            .into_iter()
            .filter_map(|s| Some((s.metric, value(&s.value?.1)?)))
            .collect())
    }

    async fn query_range(
        &self,
        query: &Query,
        window: Duration,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Matrix, MetricsError> {
        let q = promql(query, window);
        let step = step.as_secs_f64().max(0.001).to_string();
        let path = format!(
            "/api/v1/query_range?{}",
            query_string(&[
                ("query", q.as_str()),
                ("start", &seconds(start)),
                ("end", &seconds(end)),
                ("step", &step),
            ])
        );
        let data = self.get(path, &q).await?;
        Ok(data
            .result
            .into_iter()
            .map(|s| {
                let points = s
                    .values
                    .iter()
                    .filter_map(|(t, v)| Some(((t * 1000.0).round() as i64, value(v)?)))
                    .collect();
                (s.metric, points)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_promql() {
        let rate = Query::Rate {
            metric: "response_total",
            matchers: vec![
                Matcher::eq("direction", "inbound"),
                Matcher::eq("namespace", "a\"b"),
            ],
            by: vec!["namespace".into(), "deployment".into()],
        };
        assert_eq!(
            promql(&rate, Duration::from_secs(60)),
            r#"sum by (namespace,deployment) (rate(response_total{direction="inbound",namespace="a\"b"}[60s]))"#
        );
        let q = Query::Quantile {
            q: 0.95,
            metric: "response_latency_ms",
            matchers: vec![],
            by: vec!["pod".into()],
        };
        assert_eq!(
            promql(&q, Duration::from_secs(30)),
            "histogram_quantile(0.95, sum by (le,pod) (rate(response_latency_ms_bucket{}[30s])))"
        );
        let g = Query::Gauge {
            metric: "tcp_open_connections",
            matchers: vec![Matcher::eq("peer", "src")],
            by: vec![],
        };
        assert_eq!(
            promql(&g, Duration::from_secs(30)),
            r#"sum by () (tcp_open_connections{peer="src"})"#
        );
        assert_eq!(
            query_string(&[("query", "a b{c=\"d\"}"), ("time", "1.5")]),
            "query=a+b%7Bc%3D%22d%22%7D&time=1.5"
        );
        assert_eq!(value("NaN"), None);
        assert_eq!(value("1.5"), Some(1.5));
    }
}
