//! The web dashboard, served on the public API port: one embedded page (`dashboard/` beside
//! `src/`, compiled into the binary, so it works with no internet and no build step), and
//! the routes it needs beyond the stat and tap APIs: the control plane's health in detail
//! (`/api/v1/overview`), each proxy's admin state (`/api/v1/proxies`) and the local checks
//! (`/api/v1/check`).
//!
//! The page reads the same public API as the CLI; it keeps no data of its own.

pub mod probe;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::check::{self, CheckLine, CheckReport};
use ferry_api::control_api::IdentityInfo;
use ferry_api::overview::{
    self, Component, NamespaceSummary, Overview, Proxies, ProxyInfo, WorkloadSummary,
};
use serde::Deserialize;

use crate::discovery::Discovery;
use crate::model::ClusterState;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const CHARTS_JS: &str = include_str!("../dashboard/charts.js");
const PAGES_JS: &str = include_str!("../dashboard/pages.js");
const DIAG_JS: &str = include_str!("../dashboard/diag.js");
const TRACES_JS: &str = include_str!("../dashboard/traces.js");
const ROLLOUTS_JS: &str = include_str!("../dashboard/rollouts.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");
const JS: &str = "text/javascript; charset=utf-8";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long one round of admin reads answers every dashboard request: many open pages, or
/// one page's several refreshes, cost one read per proxy, not one each.
const PROBE_CACHE: Duration = Duration::from_secs(1);

/// What the dashboard's routes read.
struct Ctx<D> {
    discovery: D,
    identity: crate::api::IdentitySource,
    started: Instant,
    /// The last round of admin reads, for the discovery state it was made from. Held
    /// across the round, so concurrent requests wait for one round instead of each
    /// starting their own.
    probed: tokio::sync::Mutex<Option<Probed>>,
}

struct Probed {
    at: Instant,
    state: Arc<ClusterState>,
    proxies: Arc<Vec<ProxyInfo>>,
}

impl<D: Discovery> Ctx<D> {
    /// Every proxy with its `/ready` and `/state`, read at most once per [`PROBE_CACHE`].
    async fn proxies(&self) -> (Arc<ClusterState>, Arc<Vec<ProxyInfo>>) {
        let state = self.discovery.watch().borrow().clone();
        let mut probed = self.probed.lock().await;
        if let Some(p) = probed.as_ref() {
            if p.at.elapsed() < PROBE_CACHE && Arc::ptr_eq(&p.state, &state) {
                return (state, p.proxies.clone());
            }
        }
        let proxies = Arc::new(probe::proxies(&state, None, true).await);
        *probed = Some(Probed {
            at: Instant::now(),
            state: state.clone(),
            proxies: proxies.clone(),
        });
        (state, proxies)
    }
}

/// The dashboard's page, assets and routes; merged into the public API's router.
pub fn router<D: Discovery>(discovery: D, identity: crate::api::IdentitySource) -> Router {
    let ctx = Arc::new(Ctx {
        discovery,
        identity,
        started: Instant::now(),
        probed: tokio::sync::Mutex::new(None),
    });
    let asset = |mime: &'static str, body: &'static str| {
        get(move || async move {
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        })
    };
    Router::new()
        .route(
            overview::DASHBOARD_PATH,
            asset("text/html; charset=utf-8", INDEX_HTML),
        )
        .route("/dashboard/app.js", asset(JS, APP_JS))
        .route("/dashboard/charts.js", asset(JS, CHARTS_JS))
        .route("/dashboard/pages.js", asset(JS, PAGES_JS))
        .route("/dashboard/diag.js", asset(JS, DIAG_JS))
        .route("/dashboard/traces.js", asset(JS, TRACES_JS))
        .route("/dashboard/rollouts.js", asset(JS, ROLLOUTS_JS))
        .route(
            "/dashboard/style.css",
            asset("text/css; charset=utf-8", STYLE_CSS),
        )
        .route(overview::OVERVIEW_PATH, get(overview_route::<D>))
        .route(overview::PROXIES_PATH, get(proxies_route::<D>))
        .route(check::CHECK_PATH, get(check_route::<D>))
        .with_state(ctx)
}

async fn overview_route<D: Discovery>(State(ctx): State<Arc<Ctx<D>>>) -> Json<Overview> {
    let (state, proxies) = ctx.proxies().await;
    let watched = proxies.iter().filter(|p| p.admin_addr.is_some());
    let proxies_known = watched.clone().count();
    let proxies_ready = watched.filter(|p| p.ready).count();
    Json(Overview {
        status: "ok".to_string(),
        version: VERSION.to_string(),
        uptime_seconds: ctx.started.elapsed().as_secs(),
        components: components(&state, ctx.identity.get().as_ref()),
        proxies_known,
        proxies_ready,
        namespaces: namespaces(&state),
        workloads: workloads(&state),
    })
}

fn components(state: &ClusterState, identity: Option<&IdentityInfo>) -> Vec<Component> {
    let up = |name: &str, detail: String| Component {
        name: name.to_string(),
        status: "up".to_string(),
        detail,
    };
    let identity = match identity {
        Some(info) => up(
            "identity",
            format!(
                "trust domain {}, issuer {} valid until {}",
                info.trust_domain, info.issuer.subject, info.issuer.not_after
            ),
        ),
        None => Component {
            name: "identity".to_string(),
            status: "off".to_string(),
            detail: "start ferry-control with --identity-dir for mTLS identities".to_string(),
        },
    };
    vec![
        up(
            "discovery",
            format!(
                "{} namespaces, {} workloads, {} instances, {} services",
                state.namespaces.len(),
                state.workloads.len(),
                state.instances.len(),
                state.services.len()
            ),
        ),
        up(
            "destination",
            "Destination.Get and GetProfile on the gRPC port".to_string(),
        ),
        identity,
        up("public-api", format!("version {VERSION}")),
        up("dashboard", "this page".to_string()),
    ]
}

/// Instances of each workload: (total, meshed).
fn instance_counts(
    state: &ClusterState,
) -> std::collections::BTreeMap<(String, String), (usize, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for (at, instance) in state.instances.iter() {
        if let Some(owner) = &instance.owner {
            let entry = counts
                .entry((at.namespace.clone(), owner.name.clone()))
                .or_insert((0, 0));
            entry.0 += 1;
            entry.1 += usize::from(instance.meshed);
        }
    }
    counts
}

fn workloads(state: &ClusterState) -> Vec<WorkloadSummary> {
    let counts = instance_counts(state);
    state
        .workloads
        .iter()
        .map(|(at, w)| {
            let (instances, meshed) = counts
                .get(&(at.namespace.clone(), at.name.clone()))
                .copied()
                .unwrap_or_default();
            WorkloadSummary {
                namespace: at.namespace.clone(),
                name: at.name.clone(),
                kind: w.kind.clone(),
                instances,
                meshed_instances: meshed,
            }
        })
        .collect()
}

fn namespaces(state: &ClusterState) -> Vec<NamespaceSummary> {
    let workloads = workloads(state);
    state
        .namespaces
        .iter()
        .map(|ns| {
            let mine = workloads.iter().filter(|w| &w.namespace == ns);
            NamespaceSummary {
                name: ns.clone(),
                workloads: mine.clone().count(),
                meshed: mine
                    .filter(|w| w.instances > 0 && w.meshed_instances == w.instances)
                    .count(),
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct ProxiesQuery {
    namespace: Option<String>,
}

async fn proxies_route<D: Discovery>(
    State(ctx): State<Arc<Ctx<D>>>,
    Query(query): Query<ProxiesQuery>,
) -> Json<Proxies> {
    let namespace = query.namespace.as_deref().filter(|ns| !ns.is_empty());
    let (_, proxies) = ctx.proxies().await;
    Json(Proxies {
        proxies: proxies
            .iter()
            .filter(|p| namespace.is_none_or(|ns| ns == p.namespace))
            .cloned()
            .collect(),
    })
}

/// Runs the local checks of `ferry check --local` on this control plane.
async fn check_route<D: Discovery>(State(ctx): State<Arc<Ctx<D>>>) -> impl IntoResponse {
    let (_, proxies) = ctx.proxies().await;
    let checks = vec![
        CheckLine::new(
            check::API_ANSWERS,
            check::judge_health(Some("ok"), Some(VERSION), ""),
        ),
        CheckLine::new(
            check::RUNS_THIS_VERSION,
            check::judge_version(Some(VERSION), VERSION, "the dashboard"),
        ),
        CheckLine::new(check::PROXIES_READY, check::judge_proxies_ready(&proxies)),
        CheckLine::new(
            check::PROXIES_VERSION,
            check::judge_proxies_version(&proxies, VERSION),
        ),
    ];
    Json(CheckReport {
        planned: check::LOCAL_CHECKS.len(),
        checks,
    })
}
