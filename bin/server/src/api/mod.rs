//! The routes: `/api/v1` (runs, logs, events, schedules, queues), the directory-deploy
//! API under `/api/agents/:id/deployments`, and the OpenAPI document generated from the
//! handlers' annotations (so it cannot drift from what the server does).

use axum::routing::{get, post, put};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::AppState;

pub mod automations;
pub mod deployments;
pub mod events;
pub mod logs;
pub mod queues;
pub mod runs;
pub mod schedules;

/// The OpenAPI 3.1 description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Morpheus API",
        description = "A durable workflow engine: runs, logs, live events, schedules, queues and directory deploys. Errors are `{\"error\": {\"code\", \"message\"}}`. Send `Authorization: Bearer <token>` when tokens are configured.",
    ),
    paths(
        runs::list,
        runs::get_one,
        runs::start,
        runs::cancel,
        runs::resume,
        runs::fork,
        runs::rerun,
        logs::list,
        events::send,
        events::stream,
        schedules::list,
        schedules::add,
        schedules::get_one,
        schedules::delete,
        schedules::pause,
        schedules::resume,
        schedules::runs,
        queues::list,
        queues::set_limit,
        deployments::get_spec,
        deployments::put_spec,
        deployments::list,
        deployments::start,
        deployments::stop,
        deployments::logs,
        deployments::snapshots,
        deployments::redeploy,
        automations::add,
        automations::list,
        automations::get_one,
        automations::pause,
        automations::resume,
        automations::delete,
        automations::logs,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail))
)]
pub struct ApiDoc;

/// Routes behind the auth layer.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs", get(runs::list).post(runs::start))
        .route("/api/v1/runs/{id}", get(runs::get_one))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/resume", post(runs::resume))
        .route("/api/v1/runs/{id}/fork", post(runs::fork))
        .route("/api/v1/runs/{id}/rerun", post(runs::rerun))
        .route("/api/v1/runs/{id}/logs", get(logs::list))
        .route("/api/v1/events", get(events::stream).post(events::send))
        .route(
            "/api/v1/schedules",
            get(schedules::list).post(schedules::add),
        )
        .route(
            "/api/v1/schedules/{name}",
            get(schedules::get_one).delete(schedules::delete),
        )
        .route("/api/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/api/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/api/v1/schedules/{name}/runs", get(schedules::runs))
        .route(
            "/api/v1/automations",
            get(automations::list).post(automations::add),
        )
        .route(
            "/api/v1/automations/{id}",
            get(automations::get_one).delete(automations::delete),
        )
        .route("/api/v1/automations/{id}/pause", post(automations::pause))
        .route("/api/v1/automations/{id}/resume", post(automations::resume))
        .route("/api/v1/automations/{id}/logs", get(automations::logs))
        .route("/api/v1/queues", get(queues::list))
        .route("/api/v1/queues/{name}", put(queues::set_limit))
        .route(
            "/api/agents/{id}/deployments/spec",
            get(deployments::get_spec).put(deployments::put_spec),
        )
        .route("/api/agents/{id}/deployments", get(deployments::list))
        .route(
            "/api/agents/{id}/deployments/start",
            post(deployments::start),
        )
        .route(
            "/api/agents/{id}/deployments/snapshots",
            get(deployments::snapshots),
        )
        .route(
            "/api/agents/{id}/deployments/snapshots/{snapshot_id}/redeploy",
            post(deployments::redeploy),
        )
        .route(
            "/api/agents/{id}/deployments/{run_id}/stop",
            post(deployments::stop),
        )
        .route(
            "/api/agents/{id}/deployments/{run_id}/logs",
            get(deployments::logs),
        )
        .fallback(not_found)
}

/// Routes anyone may read: the OpenAPI document and a liveness probe.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/health", get(health))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::not_found(format!("no route {}", uri.path()))
}

/// Parses a run id from a path, as a 400 when it is not one.
pub(crate) fn parse_run_id(text: &str) -> crate::ApiResult<morpheus_engine::RunId> {
    text.parse()
        .map_err(|error: morpheus_engine::InvalidRunId| crate::ApiError::invalid(error.to_string()))
}
