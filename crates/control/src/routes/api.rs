//! `GET /api/v1/policy?authority=…`: the policy `OutboundPolicies` serves for a Service
//! port, as JSON ([`ServicePolicy`]) — what `ferry diagnostics policy` prints.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::control_api::{ApiError, POLICY_PATH};
use linkerd2_proxy_api::outbound as pb;
use serde::Deserialize;

use super::policy::{self, ServicePolicy};
use super::{outbound, Routes};
use crate::discovery::Discovery;

#[derive(Clone)]
struct Ctx<D> {
    discovery: D,
    routes: Routes,
}

/// The route, over `discovery` and `routes`.
pub fn router<D: Discovery>(discovery: D, routes: Routes) -> Router {
    Router::new()
        .route(POLICY_PATH, get(policy_of::<D>))
        .with_state(Ctx { discovery, routes })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyQuery {
    authority: Option<String>,
    /// The caller's namespace, which selects consumer routes.
    caller_namespace: Option<String>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ApiError { error: message })).into_response()
}

async fn policy_of<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    Query(query): Query<PolicyQuery>,
) -> Response {
    let Some(authority) = query.authority.filter(|a| !a.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing query parameter `authority` (e.g. web.emojivoto:8080)".to_string(),
        );
    };
    let state = ctx.discovery.watch().borrow().clone();
    let routes = ctx.routes.watch().borrow().clone();
    let spec = pb::TrafficSpec {
        source_workload: query
            .caller_namespace
            .map(|ns| format!("{ns}:"))
            .unwrap_or_default(),
        target: Some(pb::traffic_spec::Target::Authority(authority.clone())),
    };
    let target = match outbound::target(&state, &spec) {
        Ok(target) => target,
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return error(StatusCode::BAD_REQUEST, status.message().to_string())
        }
        Err(status) => return error(StatusCode::NOT_FOUND, status.message().to_string()),
    };
    match policy::compile(&state, &routes, &target) {
        Some(policy) => Json::<ServicePolicy>(policy).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("service {} has no port {}", target.service, target.port),
        ),
    }
}
