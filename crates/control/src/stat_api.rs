//! The metrics routes of the public API (`docs/metrics-api.md`): stat, its live stream
//! and history, edges, and Prometheus HTTP service discovery. Each handler validates the
//! query, reads discovery's latest state and asks the configured [`Backend`].

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_api::control_api::ApiError;
use ferry_api::stat::{
    EdgesQuery, HistoryQuery, StatQuery, EDGES_PATH, PROMETHEUS_TARGETS_PATH, ROUTES_PATH,
    STAT_HISTORY_PATH, STAT_PATH, STAT_STREAM_PATH,
};
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery::Discovery;
use crate::metrics::{targets, Backend, MetricsBackend};
use crate::stat::{self, StatError, StatRequest};

#[derive(Clone)]
struct Ctx<D> {
    discovery: D,
    backend: Backend,
}

/// The metrics routes, answering from `backend` with `discovery`'s state.
pub fn router<D: Discovery>(discovery: D, backend: Backend) -> Router {
    Router::new()
        .route(STAT_PATH, get(stat_once::<D>))
        .route(STAT_STREAM_PATH, get(stat_stream::<D>))
        .route(STAT_HISTORY_PATH, get(history::<D>))
        .route(EDGES_PATH, get(edges::<D>))
        .route(ROUTES_PATH, get(routes::<D>))
        .route(PROMETHEUS_TARGETS_PATH, get(prometheus_targets::<D>))
        .with_state(Ctx { discovery, backend })
}

fn error(status: u16, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ApiError { error: message })).into_response()
}

fn answer<T: Serialize>(result: Result<T, StatError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => error(e.status(), e.to_string()),
    }
}

fn bad_query(rejection: QueryRejection) -> Response {
    error(400, format!("invalid query: {}", rejection.body_text()))
}

/// The stat question of a query, or the 400/404 answer saying what is wrong with it.
fn stat_request(
    query: Result<Query<StatQuery>, QueryRejection>,
) -> Result<StatRequest, Box<Response>> {
    let Query(query) = query.map_err(|r| Box::new(bad_query(r)))?;
    StatRequest::from_query(&query).map_err(|e| Box::new(error(e.status(), e.to_string())))
}

async fn stat_once<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<StatQuery>, QueryRejection>,
) -> Response {
    let req = match stat_request(query) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let state = ctx.discovery.watch().borrow().clone();
    answer(stat::stat(&ctx.backend, &state, &req).await)
}

async fn routes<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<StatQuery>, QueryRejection>,
) -> Response {
    let req = match stat_request(query) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let state = ctx.discovery.watch().borrow().clone();
    answer(stat::routes::routes(&ctx.backend, &state, &req).await)
}

/// A `stat` event after every scrape round (embedded) or every scrape interval
/// (Prometheus); an `error` event, and the end of the stream, when a stat fails.
async fn stat_stream<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<StatQuery>, QueryRejection>,
) -> Response {
    let req = match stat_request(query) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    // Fail before streaming when the question itself is wrong (unknown resource).
    let state = ctx.discovery.watch().borrow().clone();
    let first = match stat::stat(&ctx.backend, &state, &req).await {
        Ok(first) => first,
        Err(e) => return error(e.status(), e.to_string()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(4);
    tokio::spawn(async move {
        let event =
            |answer: &ferry_api::stat::StatAnswer| Event::default().event("stat").json_data(answer);
        let Ok(first) = event(&first) else { return };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        let mut rounds = match &ctx.backend {
            Backend::Embedded(store) => Some(store.rounds()),
            Backend::Prometheus(_) => None,
        };
        loop {
            let next = async {
                match rounds.as_mut() {
                    Some(r) => {
                        if r.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => tokio::time::sleep(ctx.backend.scrape_interval()).await,
                }
            };
            tokio::select! {
                () = next => {}
                () = tx.closed() => return,
            }
            let state = ctx.discovery.watch().borrow().clone();
            let sent = match stat::stat(&ctx.backend, &state, &req).await {
                Ok(answer) => match event(&answer) {
                    Ok(e) => tx.send(Ok(e)).await,
                    Err(_) => return,
                },
                Err(e) => {
                    let body = ApiError {
                        error: e.to_string(),
                    };
                    if let Ok(e) = Event::default().event("error").json_data(body) {
                        let _ = tx.send(Ok(e)).await;
                    }
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn history<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(r) => return bad_query(r),
    };
    let state = ctx.discovery.watch().borrow().clone();
    answer(stat::history::history(&ctx.backend, &state, &query).await)
}

async fn edges<D: Discovery>(
    State(ctx): State<Ctx<D>>,
    query: Result<Query<EdgesQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(r) => return bad_query(r),
    };
    let state = ctx.discovery.watch().borrow().clone();
    answer(stat::edges::edges(&ctx.backend, &state, &query).await)
}

async fn prometheus_targets<D: Discovery>(State(ctx): State<Ctx<D>>) -> Response {
    let state = ctx.discovery.watch().borrow().clone();
    Json(targets::prometheus_groups(&state)).into_response()
}
