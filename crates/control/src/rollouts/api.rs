//! `/api/v1/rollouts`: every rollout, one rollout, and users' actions on one
//! (`POST …/{namespace}/{name}/{action}` with a JSON body, so that a cross-site form cannot
//! send one: a browser asks first before it sends JSON elsewhere).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_api::control_api::ApiError;
use ferry_api::rollout::{Action, RolloutList, ROLLOUTS_PATH};

use super::{CommandError, Rollouts};

/// The rollouts routes.
pub fn router(rollouts: Rollouts) -> Router {
    Router::new()
        .route(ROLLOUTS_PATH, get(list))
        .route(&format!("{ROLLOUTS_PATH}/{{namespace}}/{{name}}"), get(one))
        .route(
            &format!("{ROLLOUTS_PATH}/{{namespace}}/{{name}}/{{action}}"),
            post(act),
        )
        .with_state(rollouts)
}

fn error(status: StatusCode, error: String) -> Response {
    (status, Json(ApiError { error })).into_response()
}

async fn list(State(rollouts): State<Rollouts>) -> Json<RolloutList> {
    Json(RolloutList {
        rollouts: rollouts.list().as_ref().clone(),
    })
}

async fn one(
    State(rollouts): State<Rollouts>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match rollouts
        .list()
        .iter()
        .find(|r| r.namespace == namespace && r.name == name)
    {
        Some(view) => Json(view.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            CommandError::NotFound(namespace, name).to_string(),
        ),
    }
}

async fn act(
    State(rollouts): State<Rollouts>,
    Path((namespace, name, action)): Path<(String, String, String)>,
    // Required (and ignored): see the module's note.
    Json(_body): Json<serde_json::Value>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        let known: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?}: one of {}", known.join(", ")),
        );
    };
    match rollouts.act(&namespace, &name, action).await {
        Ok(view) => Json(view).into_response(),
        Err(e @ CommandError::NotFound(..)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ CommandError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ (CommandError::Stopped | CommandError::NotLeader)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}
