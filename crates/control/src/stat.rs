//! Linkerd's `stat` and `edges` over a [`MetricsBackend`]: which series answer which
//! question, and how their answers become rows. Shared by both backends.
//!
//! - Without `from`/`to`, a resource's row is the **inbound** traffic of its proxies
//!   (`direction="inbound"`, grouped by the target labels naming it). A service has no
//!   proxies of its own, so its row is the **outbound** traffic every caller sends to it
//!   (`dst_service`), as in Linkerd.
//! - `to=RES`: the outbound traffic of each listed resource's proxies whose `dst_*`
//!   labels name `RES` — one row per caller.
//! - `from=RES`: the outbound traffic of `RES`'s proxies, one row per destination.
//!
//! Success rate and RPS come from `response_total` (completed responses, by
//! `classification`), latencies from `response_latency_ms` buckets, TCP connections and
//! bytes from the `tcp_*` families (inbound: `peer="src"`; outbound: `peer="dst"`,
//! attributed to a destination through discovery, since `target_addr` is its only label).

pub mod edges;
pub mod history;
pub mod routes;
pub mod select;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ferry_api::metrics as names;
use ferry_api::resource::Resource;
use ferry_api::stat::{
    Latency, Meshed, StatAnswer, StatQuery, StatRow, DEFAULT_WINDOW, MAX_WINDOW_SECONDS,
    MIN_WINDOW_SECONDS,
};

use crate::metrics::{unix_ms, Labels, Matcher, MetricsBackend, MetricsError, Query, Vector};
use crate::model::ClusterState;
use select::{dst_labels, matchers, resources, row_of, src_labels, Selection};

/// The namespace used when none is given, as kubectl does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a stat question has no answer.
#[derive(Debug, thiserror::Error)]
pub enum StatError {
    /// The kind or resource string did not parse.
    #[error("{0}")]
    Resource(String),
    /// A named resource that discovery does not know.
    #[error("{resource} not found{}", namespace.as_ref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default())]
    NotFound {
        /// `deployment/web`.
        resource: String,
        /// Where it was looked for.
        namespace: Option<String>,
    },
    /// The window did not parse or is out of range.
    #[error("invalid window {0:?}: expected a duration from 15s to 15m, like 1m or 30s")]
    Window(String),
    /// A service was asked for as a sender.
    #[error("a service sends no traffic of its own: use it with --to, or stat svc without --from")]
    ServiceNotASource,
    /// Both `from` and `to` were given.
    #[error("--from and --to cannot be combined")]
    FromAndTo,
    /// The metrics backend failed.
    #[error(transparent)]
    Backend(#[from] MetricsError),
}

impl StatError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::Backend(_) => 502,
            _ => 400,
        }
    }
}

/// A validated stat question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRequest {
    /// The resources rows are about.
    pub rows: Selection,
    /// Only traffic sent by this resource.
    pub from: Option<Selection>,
    /// Only traffic sent to this resource.
    pub to: Option<Selection>,
    /// The rate window.
    pub window: Duration,
    /// The window as asked (`1m`).
    pub window_text: String,
}

/// Parses a resource (`deploy/web` or `deploy`) into an API error on failure.
pub fn parse_resource(s: &str) -> Result<Resource, StatError> {
    Resource::parse(s).map_err(|e| StatError::Resource(e.to_string()))
}

/// Parses a window (`1m`, `30s`) into a duration from 15s to 15m.
pub fn parse_window(text: Option<&str>) -> Result<(Duration, String), StatError> {
    let text = text.filter(|t| !t.is_empty()).unwrap_or(DEFAULT_WINDOW);
    let window =
        humantime::parse_duration(text).map_err(|_| StatError::Window(text.to_string()))?;
    let range = Duration::from_secs(MIN_WINDOW_SECONDS)..=Duration::from_secs(MAX_WINDOW_SECONDS);
    if !range.contains(&window) {
        return Err(StatError::Window(text.to_string()));
    }
    Ok((window, text.to_string()))
}

impl StatRequest {
    /// Validates the API's query parameters.
    pub fn from_query(q: &StatQuery) -> Result<Self, StatError> {
        let mut kind = parse_resource(&q.kind)?;
        if let Some(name) = q.name.as_ref().filter(|n| !n.is_empty()) {
            kind.name = Some(name.clone());
        }
        let namespace = (!q.all_namespaces).then(|| {
            q.namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.into())
        });
        let other =
            |res: &Option<String>, ns: &Option<String>| -> Result<Option<Selection>, StatError> {
                let Some(res) = res.as_ref().filter(|r| !r.is_empty()) else {
                    return Ok(None);
                };
                let resource = parse_resource(res)?;
                let ns = ns
                    .clone()
                    .filter(|n| !n.is_empty())
                    .or_else(|| namespace.clone())
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
                Ok(Some(Selection::new(resource, Some(ns))))
            };
        let from = other(&q.from, &q.from_namespace)?;
        let to = other(&q.to, &q.to_namespace)?;
        if from.is_some() && to.is_some() {
            return Err(StatError::FromAndTo);
        }
        let (window, window_text) = parse_window(q.window.as_deref())?;
        Ok(Self {
            rows: Selection::new(kind, namespace),
            from,
            to,
            window,
            window_text,
        })
    }
}

/// Which series answer a request, and how their groups map to rows.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Matchers of `response_total` and the latency histogram.
    pub http: Vec<Matcher>,
    /// The labels naming a row.
    pub by: Vec<String>,
    /// How TCP families are read.
    tcp: TcpPlan,
    /// Whether resources without traffic get a row (only without `from`/`to`).
    list_all: bool,
}

#[derive(Clone, Debug)]
enum TcpPlan {
    /// Inbound `peer="src"` series, grouped like HTTP.
    Inbound(Vec<Matcher>),
    /// Outbound `peer="dst"` series of these senders, attributed to destinations of
    /// `dst` through their `target_addr`; the row is the sender (`src` keys) or the
    /// destination.
    Outbound {
        senders: Vec<Matcher>,
        src_keys: Option<Vec<String>>,
        dst: Selection,
    },
}

pub(crate) fn plan(req: &StatRequest) -> Result<Plan, StatError> {
    let outbound = Matcher::eq(names::LABEL_DIRECTION, "outbound");
    let plan = match (&req.from, &req.to) {
        (Some(_), Some(_)) => return Err(StatError::FromAndTo),
        (None, None) if req.rows.kind == "service" => {
            let by = dst_labels("service");
            let mut http = vec![outbound];
            http.extend(matchers(&by, &req.rows));
            Plan {
                http,
                by,
                tcp: TcpPlan::Outbound {
                    senders: Vec::new(),
                    src_keys: None,
                    dst: req.rows.clone(),
                },
                list_all: true,
            }
        }
        (None, None) => {
            let by = src_labels(&req.rows.kind)?;
            let own = matchers(&by, &req.rows);
            let mut http = vec![Matcher::eq(names::LABEL_DIRECTION, "inbound")];
            http.extend(own.clone());
            let mut tcp = vec![
                Matcher::eq(names::LABEL_DIRECTION, "inbound"),
                Matcher::eq(names::LABEL_PEER, "src"),
            ];
            tcp.extend(own);
            Plan {
                http,
                by,
                tcp: TcpPlan::Inbound(tcp),
                list_all: true,
            }
        }
        (None, Some(to)) => {
            let by = src_labels(&req.rows.kind)?;
            let senders = matchers(&by, &req.rows);
            let mut http = vec![outbound];
            http.extend(senders.clone());
            http.extend(matchers(&dst_labels(&to.kind), to));
            Plan {
                http,
                tcp: TcpPlan::Outbound {
                    senders,
                    src_keys: Some(by.clone()),
                    dst: to.clone(),
                },
                by,
                list_all: false,
            }
        }
        (Some(from), None) => {
            let senders = matchers(&src_labels(&from.kind)?, from);
            let by = dst_labels(&req.rows.kind);
            let mut http = vec![outbound];
            http.extend(senders.clone());
            http.extend(matchers(&by, &req.rows));
            Plan {
                http,
                by,
                tcp: TcpPlan::Outbound {
                    senders,
                    src_keys: None,
                    dst: req.rows.clone(),
                },
                list_all: false,
            }
        }
    };
    Ok(plan)
}

/// The queries of a plan's HTTP golden metrics: responses by classification, then p50,
/// p95, p99.
pub(crate) fn http_queries(plan: &Plan) -> [Query; 4] {
    let mut by_class = plan.by.clone();
    by_class.push(names::LABEL_CLASSIFICATION.into());
    let quantile = |q| Query::Quantile {
        q,
        metric: names::RESPONSE_LATENCY_MS,
        matchers: plan.http.clone(),
        by: plan.by.clone(),
    };
    [
        Query::Rate {
            metric: names::RESPONSE_TOTAL,
            matchers: plan.http.clone(),
            by: by_class,
        },
        quantile(0.5),
        quantile(0.95),
        quantile(0.99),
    ]
}

type Key = (String, String);

#[derive(Default)]
struct Acc {
    success: f64,
    total: f64,
    seen: bool,
    latency: Latency,
    tcp: Option<f64>,
    read: Option<f64>,
    write: Option<f64>,
}

/// Answers a stat request from `backend`, with discovery's `state` for meshed counts.
pub async fn stat<B: MetricsBackend>(
    backend: &B,
    state: &ClusterState,
    req: &StatRequest,
) -> Result<StatAnswer, StatError> {
    let known = resources(state, &req.rows)?;
    for other in req.from.iter().chain(&req.to) {
        resources(state, other)?;
    }
    let plan = plan(req)?;
    let at = SystemTime::now();
    let w = req.window;
    let [responses, p50, p95, p99] = http_queries(&plan);
    let (responses, p50, p95, p99) = tokio::try_join!(
        backend.query(&responses, w, at),
        backend.query(&p50, w, at),
        backend.query(&p95, w, at),
        backend.query(&p99, w, at),
    )?;
    let mut rows: BTreeMap<Key, Acc> = BTreeMap::new();
    for (labels, v) in responses {
        let Some(key) = row_of(&labels, &plan.by) else {
            continue;
        };
        let acc = rows.entry(key).or_default();
        acc.seen = true;
        acc.total += v;
        if labels.get(names::LABEL_CLASSIFICATION).map(String::as_str) == Some("success") {
            acc.success += v;
        }
    }
    for (vector, set) in [(p50, 0), (p95, 1), (p99, 2)] {
        for (labels, v) in vector {
            let Some(key) = row_of(&labels, &plan.by) else {
                continue;
            };
            let acc = rows.entry(key).or_default();
            let slot = match set {
                0 => &mut acc.latency.p50,
                1 => &mut acc.latency.p95,
                _ => &mut acc.latency.p99,
            };
            *slot = Some(v);
        }
    }
    tcp(backend, state, &plan, w, at, &mut rows).await?;
    let mut out = Vec::new();
    let keys: Vec<Key> = if plan.list_all {
        known
            .keys()
            .chain(rows.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    } else {
        rows.keys().cloned().collect()
    };
    let window_secs = w.as_secs_f64();
    for key in keys {
        let acc = rows.remove(&key).unwrap_or_default();
        let meshed = known
            .get(&key)
            .copied()
            .or_else(|| {
                resources(
                    state,
                    &Selection {
                        kind: req.rows.kind.clone(),
                        name: Some(key.1.clone()),
                        namespace: Some(key.0.clone()),
                    },
                )
                .ok()
                .and_then(|m| m.into_values().next())
            })
            .unwrap_or(Meshed::default());
        let rps = acc.seen.then_some(acc.total);
        out.push(StatRow {
            namespace: key.0,
            name: key.1,
            kind: req.rows.kind.clone(),
            meshed,
            success: (acc.total > 0.0).then(|| acc.success / acc.total),
            rps,
            requests: rps.map(|r| r * window_secs),
            latency_ms: acc.latency,
            tcp_connections: acc.tcp,
            read_bytes_per_sec: acc.read,
            write_bytes_per_sec: acc.write,
        });
    }
    Ok(StatAnswer {
        rows: out,
        window: req.window_text.clone(),
        window_seconds: w.as_secs(),
        backend: backend.name().to_string(),
        timestamp_ms: unix_ms(at) as u64,
    })
}

async fn tcp<B: MetricsBackend>(
    backend: &B,
    state: &ClusterState,
    plan: &Plan,
    w: Duration,
    at: SystemTime,
    rows: &mut BTreeMap<Key, Acc>,
) -> Result<(), StatError> {
    let (matchers, by) = match &plan.tcp {
        TcpPlan::Inbound(m) => (m.clone(), plan.by.clone()),
        TcpPlan::Outbound {
            senders, src_keys, ..
        } => {
            let mut m = vec![
                Matcher::eq(names::LABEL_DIRECTION, "outbound"),
                Matcher::eq(names::LABEL_PEER, "dst"),
            ];
            m.extend(senders.iter().cloned());
            let mut by = src_keys.clone().unwrap_or_default();
            by.push(names::LABEL_TARGET_ADDR.into());
            (m, by)
        }
    };
    let gauge = Query::Gauge {
        metric: names::TCP_OPEN_CONNECTIONS,
        matchers: matchers.clone(),
        by: by.clone(),
    };
    let rate = |metric| Query::Rate {
        metric,
        matchers: matchers.clone(),
        by: by.clone(),
    };
    let (read, write) = (
        rate(names::TCP_READ_BYTES_TOTAL),
        rate(names::TCP_WRITE_BYTES_TOTAL),
    );
    let (open, read, write) = tokio::try_join!(
        backend.query(&gauge, w, at),
        backend.query(&read, w, at),
        backend.query(&write, w, at),
    )?;
    let attribute = |vector: Vector| -> Vec<(Key, f64)> {
        vector
            .into_iter()
            .flat_map(|(labels, v)| {
                tcp_rows(state, plan, &labels)
                    .into_iter()
                    .map(move |k| (k, v))
            })
            .collect()
    };
    for (key, v) in attribute(open) {
        *rows.entry(key).or_default().tcp.get_or_insert(0.0) += v;
    }
    for (key, v) in attribute(read) {
        *rows.entry(key).or_default().read.get_or_insert(0.0) += v;
    }
    for (key, v) in attribute(write) {
        *rows.entry(key).or_default().write.get_or_insert(0.0) += v;
    }
    Ok(())
}

/// The rows one TCP group counts towards.
fn tcp_rows(state: &ClusterState, plan: &Plan, labels: &Labels) -> Vec<Key> {
    match &plan.tcp {
        TcpPlan::Inbound(_) => row_of(labels, &plan.by).into_iter().collect(),
        TcpPlan::Outbound { src_keys, dst, .. } => {
            let Some(addr) = labels
                .get(names::LABEL_TARGET_ADDR)
                .and_then(|a| a.parse::<SocketAddr>().ok())
            else {
                return Vec::new();
            };
            let owners: Vec<Key> = select::owners_of_addr(state, addr, &dst.kind)
                .into_iter()
                .filter(|(ns, name)| {
                    (dst.kind == "namespace" || dst.namespace.as_ref().is_none_or(|n| n == ns))
                        && dst.name.as_ref().is_none_or(|n| n == name)
                })
                .collect();
            match src_keys {
                Some(keys) if !owners.is_empty() => row_of(labels, keys).into_iter().collect(),
                Some(_) => Vec::new(),
                None => owners,
            }
        }
    }
}
