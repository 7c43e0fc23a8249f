//! The traces routes of the public API: `GET /api/v1/traces` lists kept traces with
//! filters, `GET /api/v1/traces/{id}` shows one with its spans.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::control_api::ApiError;
use ferry_api::trace::{
    TraceList, TraceQuery, DEFAULT_LIMIT, MAX_LIMIT, STATUS_ERROR, STATUS_OK, TRACES_PATH,
    TRACE_PATH,
};

use super::store::{parse_trace_id, Filter, TraceStore};

/// The traces routes over `store`.
pub fn router(store: TraceStore) -> Router {
    Router::new()
        .route(TRACES_PATH, get(list))
        .route(TRACE_PATH, get(one))
        .with_state(store)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ApiError { error: message })).into_response()
}

/// A list query as a filter and a limit, or what is wrong with it.
pub fn parse_query(query: &TraceQuery) -> Result<(Filter, usize), String> {
    let error = match query.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(STATUS_ERROR) => Some(true),
        Some(STATUS_OK) => Some(false),
        Some(other) => {
            return Err(format!(
                "status {other:?} must be {STATUS_OK:?} or {STATUS_ERROR:?}"
            ))
        }
    };
    let min_duration = match query.min_duration.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => Some(
            humantime::parse_duration(d)
                .map_err(|e| format!("minDuration {d:?} is not a duration like 250ms: {e}"))?,
        ),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(format!("limit {limit} must be between 1 and {MAX_LIMIT}"));
    }
    let workload = query
        .workload
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_string);
    Ok((
        Filter {
            workload,
            error,
            min_duration,
        },
        limit,
    ))
}

async fn list(
    State(store): State<TraceStore>,
    query: Result<Query<TraceQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid query: {}", rejection.body_text()),
            )
        }
    };
    let (filter, limit) = match parse_query(&query) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let traces = store.list(&filter, limit);
    Json(TraceList {
        traces,
        kept: store.len(),
        stats: store.counters().snapshot(),
    })
    .into_response()
}

async fn one(State(store): State<TraceStore>, Path(id): Path<String>) -> Response {
    let Some(trace_id) = parse_trace_id(&id.to_ascii_lowercase()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("trace id {id:?} must be 32 hex digits"),
        );
    };
    match store.get(&trace_id) {
        Some(trace) => Json(trace).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no trace {id} is kept (the store keeps the most recent traces only)"),
        ),
    }
}
