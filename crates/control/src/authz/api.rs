//! `GET /api/v1/authz?resource=deploy/voting` (`ferry authz`): each server of a workload's
//! pods, each of its routes and each authorization of the route, from the policy in force,
//! with the requests and connections each allowed and denied in the window, from the
//! proxies' `inbound_{http,tcp}_authz_{allow,deny}_total` (docs/authorization.md).
//!
//! Rows the metrics show but the configuration no longer has (a deleted policy, denials,
//! which name no authorization) follow the configured ones. Kinds are compared
//! case-insensitively, so that `server` and `Server` name the same thing.
//!
//! Beside it: `GET /api/v1/policy/inbound` (one pod port's policy) and
//! `GET /api/v1/policy/objects` ([`super::listing`]).

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::authz::{
    AuthzAnswer, AuthzQuery, AuthzRow, PolicyRef, AUTHZ_PATH, INBOUND_POLICY_PATH,
    POLICY_OBJECTS_PATH,
};
use ferry_api::control_api::ApiError;
use ferry_api::metrics as names;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::jwks::Keys;
use super::resolve::{self, InboundPolicy, Meta, PortTarget};
use super::InboundConfig;
use crate::discovery::Discovery;
use crate::metrics::{Backend, Labels, Matcher, MetricsBackend, Query as MetricsQuery};
use crate::model::{ClusterState, ObjectRef};
use crate::routes::{RouteSet, Routes};
use crate::stat::select::{matchers, src_labels, Selection};
use crate::stat::{parse_resource, parse_window, StatError};

/// The labels a row is keyed by, in order: server, route, authorization.
const KEYS: [&str; 6] = [
    names::LABEL_SRV_KIND,
    names::LABEL_SRV_NAME,
    names::LABEL_ROUTE_KIND,
    names::LABEL_ROUTE_NAME,
    names::LABEL_AUTHZ_KIND,
    names::LABEL_AUTHZ_NAME,
];

#[derive(Clone)]
struct Ctx<D> {
    discovery: D,
    routes: Routes,
    backend: Backend,
    config: InboundConfig,
}

/// The routes, over `discovery`, the policy documents of `routes` and `backend`'s metrics:
/// the authz table, a pod port's inbound policy, and the documents themselves.
pub fn router<D: Discovery>(
    discovery: D,
    routes: Routes,
    backend: Backend,
    config: InboundConfig,
) -> Router {
    Router::new()
        .route(AUTHZ_PATH, get(authz::<D>))
        .route(INBOUND_POLICY_PATH, get(inbound_policy::<D>))
        .route(POLICY_OBJECTS_PATH, get(policy_objects::<D>))
        .with_state(Ctx {
            discovery,
            routes,
            backend,
            config,
        })
}

async fn authz<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<AuthzQuery>, QueryRejection>,
) -> Response {
    let error = |status: u16, message: String| {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ApiError { error: message })).into_response()
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(r) => return error(400, format!("invalid query: {}", r.body_text())),
    };
    let state = ctx.discovery.watch().borrow().clone();
    let routes = ctx.routes.watch().borrow().clone();
    match answer(&ctx.backend, &state, &routes, &ctx.config, &query).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

#[derive(Debug, serde::Deserialize)]
struct InboundQuery {
    workload: String,
    port: u32,
}

/// The policy `InboundServerPolicies` serves for a pod port, before translation.
async fn inbound_policy<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<InboundQuery>, QueryRejection>,
) -> Response {
    let error = |status: StatusCode, message: String| {
        (status, Json(ApiError { error: message })).into_response()
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(r) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid query: {}", r.body_text()),
            )
        }
    };
    let spec = linkerd2_proxy_api::inbound::PortSpec {
        workload: query.workload,
        port: query.port,
    };
    let target = match super::inbound::port_target(&spec) {
        Ok(t) => t,
        Err(status) => return error(StatusCode::BAD_REQUEST, status.message().to_string()),
    };
    let state = ctx.discovery.watch().borrow().clone();
    let routes = ctx.routes.watch().borrow().clone();
    match resolve::compile(&state, &routes, &ctx.config, &Keys::new(), &target) {
        Some(p) => Json(p).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no pod {} is known", target.pod),
        ),
    }
}

/// The documents and pods, for `ferry check --local` ([`super::listing`]).
async fn policy_objects<D: Discovery>(State(ctx): State<Ctx<D>>) -> Response {
    let state = ctx.discovery.watch().borrow().clone();
    let routes = ctx.routes.watch().borrow().clone();
    Json(super::listing::list(&state, &routes)).into_response()
}

fn policy_ref(m: &Meta) -> PolicyRef {
    PolicyRef {
        kind: m.kind.clone(),
        name: m.name.clone(),
    }
}

/// The key of a row, kinds lowercased.
fn key(server: &PolicyRef, route: &PolicyRef, authz: &PolicyRef) -> [String; 6] {
    [
        server.kind.to_ascii_lowercase(),
        server.name.clone(),
        route.kind.to_ascii_lowercase(),
        route.name.clone(),
        authz.kind.to_ascii_lowercase(),
        authz.name.clone(),
    ]
}

/// The configured rows of one pod port's policy.
fn rows_of(p: &InboundPolicy, out: &mut Vec<AuthzRow>) {
    let server = policy_ref(&p.server);
    let row = |route: PolicyRef, authorization: PolicyRef| AuthzRow {
        server: server.clone(),
        route,
        authorization,
        allowed: 0,
        denied: 0,
    };
    if p.routes.is_empty() {
        for a in &p.authorizations {
            out.push(row(PolicyRef::default(), policy_ref(&a.meta)));
        }
    }
    for r in &p.routes {
        for a in &r.authorizations {
            out.push(row(policy_ref(&r.meta), policy_ref(&a.meta)));
        }
    }
}

/// The answer for `q`.
pub async fn answer<B: MetricsBackend>(
    backend: &B,
    state: &ClusterState,
    set: &RouteSet,
    cfg: &InboundConfig,
    q: &AuthzQuery,
) -> Result<AuthzAnswer, StatError> {
    let resource = parse_resource(&q.resource)?;
    let Some(name) = resource.name.clone() else {
        return Err(StatError::Resource(format!(
            "{:?}: name one resource, like deploy/voting",
            q.resource
        )));
    };
    let namespace = q.namespace.clone().unwrap_or_else(|| "default".to_string());
    let (window, window_text) = parse_window(q.window.as_deref())?;
    let display = format!("{}/{name}", resource.kind);
    let pods: Vec<ObjectRef> = state
        .instances
        .iter()
        .filter(|(at, i)| {
            at.namespace == namespace
                && match resource.kind.as_str() {
                    "pod" => at.name == name,
                    kind => i
                        .owner
                        .as_ref()
                        .is_some_and(|o| o.kind == kind && o.name == name),
                }
        })
        .map(|(at, _)| at.clone())
        .collect();
    let exists = !pods.is_empty()
        || state
            .workloads
            .get(&ObjectRef::new(&namespace, &name))
            .is_some_and(|w| w.kind == resource.kind);
    if !exists {
        return Err(StatError::NotFound {
            resource: display,
            namespace: Some(namespace),
        });
    }
    // Per pod: each Server selecting it (at its port), and the default policy.
    let keys = Keys::new();
    let mut rows = Vec::new();
    for pod in &pods {
        let instance = &state.instances[pod];
        let mut ports: Vec<u16> = set
            .authz
            .servers
            .iter()
            .filter(|s| s.namespace() == pod.namespace)
            .filter_map(|s| match &s.spec.port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(n) => instance.inbound.ports.get(n).copied(),
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        // Port 0 stands for every port no Server selects: the default policy.
        ports.push(0);
        for port in ports {
            let target = PortTarget {
                pod: pod.clone(),
                port,
            };
            if port != 0 && resolve::servers_for(state, set, &target).is_empty() {
                continue;
            }
            if let Some(p) = resolve::compile(state, set, cfg, &keys, &target) {
                rows_of(&p, &mut rows);
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    rows.retain(|r| seen.insert(key(&r.server, &r.route, &r.authorization)));

    // The counts: allowed and denied, per key, over the window.
    let selection = Selection {
        kind: resource.kind.clone(),
        name: Some(name),
        namespace: Some(namespace.clone()),
    };
    let filter: Vec<Matcher> = matchers(&src_labels(&resource.kind)?, &selection);
    let by: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let at = SystemTime::now();
    // Per key: allowed, denied, and the labels as the proxies wrote them.
    let mut counts: BTreeMap<[String; 6], (f64, f64, Labels)> = BTreeMap::new();
    for (metric, allowed) in [
        (names::INBOUND_HTTP_AUTHZ_ALLOW_TOTAL, true),
        (names::INBOUND_HTTP_AUTHZ_DENY_TOTAL, false),
        (names::INBOUND_TCP_AUTHZ_ALLOW_TOTAL, true),
        (names::INBOUND_TCP_AUTHZ_DENY_TOTAL, false),
    ] {
        let q = MetricsQuery::Rate {
            metric,
            matchers: filter.clone(),
            by: by.clone(),
        };
        for (labels, rate) in backend.query(&q, window, at).await? {
            let count = rate * window.as_secs_f64();
            let entry = counts
                .entry(label_key(&labels))
                .or_insert_with(|| (0.0, 0.0, labels.clone()));
            if allowed {
                entry.0 += count;
            } else {
                entry.1 += count;
            }
        }
    }
    for row in &mut rows {
        if let Some((a, d, _)) = counts.remove(&key(&row.server, &row.route, &row.authorization)) {
            row.allowed = a.round() as u64;
            row.denied = d.round() as u64;
        }
    }
    for (a, d, labels) in counts.into_values() {
        let r = |kind: &str, name: &str| PolicyRef {
            kind: labels.get(kind).cloned().unwrap_or_default(),
            name: labels.get(name).cloned().unwrap_or_default(),
        };
        rows.push(AuthzRow {
            server: r(KEYS[0], KEYS[1]),
            route: r(KEYS[2], KEYS[3]),
            authorization: r(KEYS[4], KEYS[5]),
            allowed: a.round() as u64,
            denied: d.round() as u64,
        });
    }
    Ok(AuthzAnswer {
        resource: display,
        namespace,
        window: window_text,
        rows,
    })
}

fn label_key(labels: &Labels) -> [String; 6] {
    KEYS.map(|k| {
        let v = labels.get(k).cloned().unwrap_or_default();
        if k.ends_with("_kind") {
            v.to_ascii_lowercase()
        } else {
            v
        }
    })
}
