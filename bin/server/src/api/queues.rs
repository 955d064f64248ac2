//! `/api/v1/queues`: queues with their limits and load, and setting a limit.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use morpheus_engine::QueueInfo;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// A queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Most runs of it running at once across all workers (absent: no limit).
    pub concurrency_limit: Option<u32>,
    /// Running now.
    pub running: u64,
    /// Waiting to retry a step.
    pub retrying: u64,
    /// Ready or parked, waiting to be claimed.
    pub queued: u64,
}

impl From<&QueueInfo> for QueueView {
    fn from(queue: &QueueInfo) -> Self {
        Self {
            name: queue.name.clone(),
            concurrency_limit: queue.concurrency_limit,
            running: queue.running,
            retrying: queue.retrying,
            queued: queue.queued,
        }
    }
}

/// Every queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// By name.
    pub queues: Vec<QueueView>,
}

/// Queues with their limits and load.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<QueueList>> {
    let queues = state.engine.world().list_queues().await?;
    Ok(Json(QueueList {
        queues: queues.iter().map(QueueView::from).collect(),
    }))
}

/// `PUT /api/v1/queues/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// The new limit (at least 1), or null for none.
    pub concurrency_limit: Option<u32>,
}

/// Sets or removes a queue's concurrency limit.
#[utoipa::path(put, path = "/api/v1/queues/{name}", tag = "queues", request_body = LimitRequest,
    params(("name" = String, Path, description = "Queue name")),
    responses((status = 200, body = QueueView), (status = 400, body = ErrorBody)))]
pub async fn set_limit(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<LimitRequest>, JsonRejection>,
) -> ApiResult<Json<QueueView>> {
    let Json(request) = body?;
    if name.trim().is_empty() {
        return Err(ApiError::invalid("queue name must not be empty"));
    }
    if request.concurrency_limit == Some(0) {
        return Err(ApiError::invalid(
            "concurrency_limit must be at least 1 (or null for none)",
        ));
    }
    let world = state.engine.world();
    world
        .set_queue_limit(&name, request.concurrency_limit)
        .await?;
    let queues = world.list_queues().await?;
    let queue = queues
        .iter()
        .find(|queue| queue.name == name)
        .map(QueueView::from)
        .unwrap_or(QueueView {
            name,
            concurrency_limit: request.concurrency_limit,
            running: 0,
            retrying: 0,
            queued: 0,
        });
    Ok(Json(queue))
}
