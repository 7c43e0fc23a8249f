//! `GET /api/v1/routes` (`ferry routes`): per-route golden metrics from the route families
//! the sender's proxies export (docs/routes.md), effective (what callers saw) and actual
//! (every try).

use std::collections::BTreeMap;
use std::time::SystemTime;

use ferry_api::metrics as names;
use ferry_api::stat::{Latency, RouteRow, RoutesAnswer};

use super::select::{matchers, resources, src_labels};
use super::{StatError, StatRequest};
use crate::metrics::{Matcher, MetricsBackend, Query};
use crate::model::ClusterState;

/// The labels a route row is keyed by.
const ROUTE_KEYS: [&str; 6] = [
    "parent_namespace",
    "parent_name",
    "parent_port",
    "route_kind",
    "route_namespace",
    "route_name",
];

#[derive(Default)]
struct Acc {
    total: f64,
    success: f64,
    retries: f64,
    latency: Latency,
}

/// The routes of `req.rows` (the senders), optionally only those of the Service `req.to`.
pub async fn routes<B: MetricsBackend>(
    backend: &B,
    state: &ClusterState,
    req: &StatRequest,
) -> Result<RoutesAnswer, StatError> {
    resources(state, &req.rows)?;
    let mut filter = matchers(&src_labels(&req.rows.kind)?, &req.rows);
    if let Some(to) = &req.to {
        if to.kind != "service" {
            return Err(StatError::Resource(format!(
                "--to names the Service whose routes to show (svc/NAME), not a {}",
                to.kind
            )));
        }
        if let Some(name) = &to.name {
            filter.push(Matcher::eq("parent_name", name));
        }
        if let Some(ns) = &to.namespace {
            filter.push(Matcher::eq("parent_namespace", ns));
        }
    }
    let by: Vec<String> = ROUTE_KEYS.iter().map(|k| k.to_string()).collect();
    let mut by_status = by.clone();
    by_status.extend(["http_status", "grpc_status", "error"].map(String::from));
    let at = SystemTime::now();
    let w = req.window;
    let mut rows: BTreeMap<Vec<String>, Acc> = BTreeMap::new();
    let families = [
        (
            names::OUTBOUND_HTTP_ROUTE_REQUEST_STATUSES_TOTAL,
            names::OUTBOUND_HTTP_ROUTE_REQUEST_DURATION_SECONDS,
            names::OUTBOUND_HTTP_ROUTE_RETRY_REQUESTS_TOTAL,
        ),
        (
            names::OUTBOUND_GRPC_ROUTE_REQUEST_STATUSES_TOTAL,
            names::OUTBOUND_GRPC_ROUTE_REQUEST_DURATION_SECONDS,
            names::OUTBOUND_GRPC_ROUTE_RETRY_REQUESTS_TOTAL,
        ),
    ];
    for (statuses, duration, retries) in families {
        let rate = |metric, by: &Vec<String>| Query::Rate {
            metric,
            matchers: filter.clone(),
            by: by.clone(),
        };
        let quantile = |q| Query::Quantile {
            q,
            metric: duration,
            matchers: filter.clone(),
            by: by.clone(),
        };
        let queries = [
            rate(statuses, &by_status),
            rate(retries, &by),
            quantile(0.5),
            quantile(0.95),
            quantile(0.99),
        ];
        let (answered, retried, p50, p95, p99) = tokio::try_join!(
            backend.query(&queries[0], w, at),
            backend.query(&queries[1], w, at),
            backend.query(&queries[2], w, at),
            backend.query(&queries[3], w, at),
            backend.query(&queries[4], w, at),
        )?;
        let key = |labels: &crate::metrics::Labels| -> Vec<String> {
            ROUTE_KEYS
                .iter()
                .map(|k| labels.get(*k).cloned().unwrap_or_default())
                .collect()
        };
        for (labels, v) in answered {
            let acc = rows.entry(key(&labels)).or_default();
            acc.total += v;
            let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
            let ok = label("error").is_empty()
                && match label("grpc_status") {
                    "" => label("http_status").parse::<u16>().is_ok_and(|s| s < 500),
                    g => g == "0",
                };
            if ok {
                acc.success += v;
            }
        }
        for (labels, v) in retried {
            rows.entry(key(&labels)).or_default().retries += v;
        }
        for (vector, slot) in [(p50, 0), (p95, 1), (p99, 2)] {
            for (labels, v) in vector {
                let acc = rows.entry(key(&labels)).or_default();
                let ms = Some(v * 1000.0);
                match slot {
                    0 => acc.latency.p50 = ms,
                    1 => acc.latency.p95 = ms,
                    _ => acc.latency.p99 = ms,
                }
            }
        }
    }
    let rows = rows
        .into_iter()
        .map(|(k, acc)| {
            let tries = acc.total + acc.retries;
            RouteRow {
                service: format!("{}/{}:{}", k[0], k[1], k[2]),
                route: if k[3] == "default" || k[3].is_empty() {
                    "default".to_string()
                } else {
                    format!("{}/{}/{}", k[3], k[4], k[5])
                },
                success: (acc.total > 0.0).then(|| acc.success / acc.total),
                rps: Some(acc.total),
                latency_ms: acc.latency,
                retries_per_sec: Some(acc.retries),
                actual_success: (tries > 0.0).then(|| acc.success / tries),
                actual_rps: Some(tries),
            }
        })
        .collect();
    Ok(RoutesAnswer {
        rows,
        window: req.window_text.clone(),
        backend: backend.name().to_string(),
    })
}
