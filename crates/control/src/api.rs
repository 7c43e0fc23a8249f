//! The public HTTP/JSON API (`docs/openapi.yaml`): what the CLI and the dashboard use.
//!
//! For now: health, the endpoints `Destination.Get` would send for an authority (answered
//! from the same index as the gRPC service), and the identity CA's public side.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::control_api::{self, ApiError, Endpoints, Health, IdentityInfo};
use serde::Deserialize;
use tokio::net::TcpListener;

pub mod auth;
pub mod server;

use crate::authority::{ContextToken, Lookup};
use crate::discovery::Discovery;
use crate::index::{self, Resolution};

/// What `GET /api/v1/identity` and the dashboard show of the CA, read on every request so
/// that a reloaded issuer shows; none when the CA is off.
#[derive(Clone, Default)]
pub struct IdentitySource(Option<Arc<dyn Fn() -> IdentityInfo + Send + Sync>>);

impl IdentitySource {
    /// Reads the CA's public side from `read` on every request.
    pub fn new(read: impl Fn() -> IdentityInfo + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(read)))
    }

    /// The CA's public side now, when it runs.
    pub fn get(&self) -> Option<IdentityInfo> {
        self.0.as_ref().map(|read| read())
    }
}

impl From<Option<IdentityInfo>> for IdentitySource {
    fn from(info: Option<IdentityInfo>) -> Self {
        match info {
            Some(info) => Self::new(move || info.clone()),
            None => Self(None),
        }
    }
}

/// Serves the API on `listener` within `limits`, to callers `auth` lets in, until
/// `shutdown` completes; `identity` is
/// what `GET /api/v1/identity` answers (404 when the CA is off); `metrics` answers the
/// stat routes ([`crate::stat_api`]) and, with `routes` and `inbound`, the authz route
/// ([`crate::authz::api`]); `traces` the traces routes ([`crate::traces::api`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve<D: Discovery>(
    listener: TcpListener,
    discovery: D,
    identity: impl Into<IdentitySource>,
    metrics: crate::metrics::Backend,
    limits: &crate::limits::ApiLimits,
    auth: auth::ApiAuth,
    relay: crate::tap::Relay,
    traces: crate::traces::store::TraceStore,
    routes: crate::routes::Routes,
    inbound: crate::authz::InboundConfig,
    rollouts: crate::rollouts::Rollouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let authz =
        crate::authz::api::router(discovery.clone(), routes.clone(), metrics.clone(), inbound);
    let metrics = crate::stat_api::router(discovery.clone(), metrics);
    let policy = crate::routes::api::router(discovery.clone(), routes);
    let app = app_with_relay(discovery, identity, relay)
        .merge(metrics)
        .merge(crate::traces::api::router(traces))
        .merge(policy)
        .merge(authz)
        .merge(crate::rollouts::api::router(rollouts));
    // Callers are checked first, so that a refused one holds no stream's place.
    let app = auth::protect(server::limit(app, limits), auth);
    server::serve(listener, app, limits, shutdown).await
}

/// The API's routes without an identity CA, for serving or for driving in memory in tests.
pub fn app<D: Discovery>(discovery: D) -> Router {
    app_with_identity(discovery, None)
}

/// The API's routes; `identity` is the CA's public side when it runs.
pub fn app_with_identity<D: Discovery>(
    discovery: D,
    identity: impl Into<IdentitySource>,
) -> Router {
    app_with_relay(discovery, identity, crate::tap::Relay::default())
}

/// [`app_with_identity`], with the tap relay configured.
pub fn app_with_relay<D: Discovery>(
    discovery: D,
    identity: impl Into<IdentitySource>,
    relay: crate::tap::Relay,
) -> Router {
    let identity: IdentitySource = identity.into();
    let dashboard = crate::dashboard::router(discovery.clone(), identity.clone());
    Router::new()
        .route(control_api::HEALTH_PATH, get(health))
        .route(control_api::ENDPOINTS_PATH, get(endpoints::<D>))
        .merge(crate::tap::router(discovery.clone(), relay))
        .with_state(discovery)
        .route(
            control_api::IDENTITY_PATH,
            get(move || identity_info(identity.clone())),
        )
        .merge(dashboard)
}

async fn identity_info(identity: IdentitySource) -> Response {
    match identity.get() {
        Some(info) => Json(info).into_response(),
        None => {
            let body = ApiError {
                error: "identity is not enabled: start ferry-control with --identity-dir"
                    .to_string(),
            };
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: ferry_api::version::VERSION.to_string(),
        git_sha: Some(ferry_api::version::GIT_SHA.to_string()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointsQuery {
    authority: Option<String>,
    /// The caller context a proxy would send, to resolve one-label names.
    context_token: Option<String>,
}

async fn endpoints<D: Discovery>(
    State(discovery): State<D>,
    Query(query): Query<EndpointsQuery>,
) -> Response {
    let Some(authority) = query.authority.filter(|a| !a.trim().is_empty()) else {
        return bad_request("missing query parameter `authority` (e.g. echo.default:8080)");
    };
    let caller = ContextToken::parse(query.context_token.as_deref().unwrap_or_default());
    let state = discovery.watch().borrow().clone();
    let lookup = match Lookup::parse(&authority, &state.cluster_domain, &caller) {
        Ok(lookup) => lookup,
        Err(e) => return bad_request(&e.to_string()),
    };
    let body = match index::resolve(&state, &lookup) {
        Resolution::NotFound => Endpoints {
            authority,
            exists: false,
            fully_qualified_name: None,
            metric_labels: Default::default(),
            endpoints: Vec::new(),
        },
        Resolution::Found(set) => Endpoints {
            authority,
            exists: true,
            fully_qualified_name: set.fully_qualified_name,
            metric_labels: set.labels,
            endpoints: set
                .endpoints
                .into_iter()
                .map(|(addr, ep)| control_api::Endpoint {
                    addr,
                    weight: ep.weight,
                    metric_labels: ep.labels.into_iter().collect(),
                    tls_identity: ep.identity,
                })
                .collect(),
        },
    };
    Json(body).into_response()
}

fn bad_request(error: &str) -> Response {
    let body = ApiError {
        error: error.to_string(),
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}
