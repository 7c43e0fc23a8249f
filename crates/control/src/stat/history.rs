//! One resource's golden metrics over the last minutes, a point per step: the
//! dashboard's charts. The same plan as a stat row, asked as range queries.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_api::metrics as names;
use ferry_api::stat::{HistoryPoint, HistoryQuery, Latency, StatHistory, MAX_WINDOW_SECONDS};

use super::select::{resources, row_of, Selection};
use super::{
    http_queries, parse_resource, parse_window, plan, StatError, StatRequest, DEFAULT_NAMESPACE,
};
use crate::metrics::{unix_ms, MetricsBackend};
use crate::model::ClusterState;

/// The most points one history answer holds.
pub const MAX_POINTS: u64 = 900;

/// Answers a history request.
pub async fn history<B: MetricsBackend>(
    backend: &B,
    state: &ClusterState,
    q: &HistoryQuery,
) -> Result<StatHistory, StatError> {
    let resource = parse_resource(&q.resource)?;
    let Some(name) = resource.name.clone() else {
        return Err(StatError::Resource(format!(
            "history needs one resource, like deploy/web; got {:?}",
            q.resource
        )));
    };
    let namespace = q
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let other = |r: &Option<String>| -> Result<Option<Selection>, StatError> {
        match r.as_ref().filter(|r| !r.is_empty()) {
            Some(r) => Ok(Some(Selection::new(
                parse_resource(r)?,
                Some(namespace.clone()),
            ))),
            None => Ok(None),
        }
    };
    let (window, window_text) = parse_window(q.window.as_deref())?;
    let req = StatRequest {
        rows: Selection::new(resource.clone(), Some(namespace.clone())),
        from: other(&q.from)?,
        to: other(&q.to)?,
        window,
        window_text,
    };
    resources(state, &req.rows)?;
    for other in req.from.iter().chain(&req.to) {
        resources(state, other)?;
    }
    let range = match q.range.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => humantime::parse_duration(r)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1) && d.as_secs() <= MAX_WINDOW_SECONDS)
            .ok_or_else(|| {
                StatError::Resource(format!("invalid range {r:?}: expected 1s to 15m"))
            })?,
        None => Duration::from_secs(MAX_WINDOW_SECONDS),
    };
    let step = match q.step.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => humantime::parse_duration(s).map_err(|_| {
            StatError::Resource(format!("invalid step {s:?}: expected a duration like 10s"))
        })?,
        None => backend.scrape_interval(),
    };
    let step_secs = step
        .as_secs()
        .max(1)
        .max(range.as_secs().div_ceil(MAX_POINTS));
    let step = Duration::from_secs(step_secs);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // Points at multiples of the step: two answers within a step share their instants,
    // whichever backend computed them.
    let end = UNIX_EPOCH + Duration::from_secs(now / step_secs * step_secs);
    let start = end - Duration::from_secs(range.as_secs() / step_secs * step_secs);
    let plan = plan(&req)?;
    let [responses, p50, p95, p99] = http_queries(&plan);
    let (responses, p50, p95, p99) = tokio::try_join!(
        backend.query_range(&responses, window, start, end, step),
        backend.query_range(&p50, window, start, end, step),
        backend.query_range(&p95, window, start, end, step),
        backend.query_range(&p99, window, start, end, step),
    )?;
    let key = (namespace.clone(), name.clone());
    let mine = |labels: &crate::metrics::Labels| row_of(labels, &plan.by).as_ref() == Some(&key);
    let mut totals: HashMap<i64, (f64, f64)> = HashMap::new();
    for (labels, points) in responses.iter().filter(|(l, _)| mine(l)) {
        let success =
            labels.get(names::LABEL_CLASSIFICATION).map(String::as_str) == Some("success");
        for &(t, v) in points {
            let e = totals.entry(t).or_default();
            e.1 += v;
            if success {
                e.0 += v;
            }
        }
    }
    let quantile = |matrix: &crate::metrics::Matrix| -> HashMap<i64, f64> {
        matrix
            .iter()
            .filter(|(l, _)| mine(l))
            .flat_map(|(_, points)| points.iter().copied())
            .collect()
    };
    let (p50, p95, p99) = (quantile(&p50), quantile(&p95), quantile(&p99));
    let mut points = Vec::new();
    let mut t = unix_ms(start);
    while t <= unix_ms(end) {
        let total = totals.get(&t);
        points.push(HistoryPoint {
            timestamp_ms: t as u64,
            success: total
                .filter(|(_, all)| *all > 0.0)
                .map(|(ok, all)| ok / all),
            rps: total.map(|(_, all)| *all),
            latency_ms: Latency {
                p50: p50.get(&t).copied(),
                p95: p95.get(&t).copied(),
                p99: p99.get(&t).copied(),
            },
        });
        t += step_secs as i64 * 1000;
    }
    Ok(StatHistory {
        kind: resource.kind,
        namespace,
        name,
        window_seconds: window.as_secs(),
        step_seconds: step_secs,
        backend: backend.name().to_string(),
        points,
    })
}
