//! `/api/v1/automations`: register (the HMAC key is in this answer only), list, get,
//! pause, resume, delete, and an automation's execution logs, newest first.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use morpheus_workflows::automations::model::{Automation, AutomationConfig};
use morpheus_workflows::automations::store::AutomationError;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

impl From<AutomationError> for ApiError {
    fn from(error: AutomationError) -> Self {
        match error {
            AutomationError::Invalid(invalid) => ApiError::invalid(invalid.0),
            AutomationError::Unknown(_) => ApiError::not_found(error.to_string()),
            AutomationError::Engine(engine) => engine.into(),
            AutomationError::Keys(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable", message)
            }
        }
    }
}

/// An automation as the API shows it: never its keys.
fn view(automation: &Automation) -> Value {
    automation.summary()
}

/// Registers an automation: `{source, destination {baseURL}, verifyPayload,
/// relayerCount, policy {allowedTargets, maxValue}}`. The answer holds its id, the
/// executor and relayer addresses and the HMAC key (shown once).
#[utoipa::path(post, path = "/api/v1/automations", tag = "automations",
    request_body(content = Object, description = "The automation's configuration"),
    responses((status = 201, description = "Registered: id, executorAddress, hmacKey, relayerAddress"),
              (status = 400, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let config: AutomationConfig =
        serde_json::from_value(body).map_err(|error| ApiError::invalid(error.to_string()))?;
    let registered = state.automations.register(config).await?;
    let body = serde_json::to_value(registered).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        )
    })?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Every automation, newest first.
#[utoipa::path(get, path = "/api/v1/automations", tag = "automations",
    responses((status = 200, description = "The automations")))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let all = state.automations.list().await?;
    Ok(Json(Value::Array(all.iter().map(view).collect())))
}

/// One automation.
#[utoipa::path(get, path = "/api/v1/automations/{id}", tag = "automations",
    params(("id" = String, Path, description = "Automation id")),
    responses((status = 200, description = "The automation"), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(view(&state.automations.get(&id).await?)))
}

/// Stops triggering it.
#[utoipa::path(post, path = "/api/v1/automations/{id}/pause", tag = "automations",
    params(("id" = String, Path, description = "Automation id")),
    responses((status = 200, description = "Paused"), (status = 404, body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(view(&state.automations.set_paused(&id, true).await?)))
}

/// Triggers it again from its next tick.
#[utoipa::path(post, path = "/api/v1/automations/{id}/resume", tag = "automations",
    params(("id" = String, Path, description = "Automation id")),
    responses((status = 200, description = "Resumed"), (status = 404, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(view(&state.automations.set_paused(&id, false).await?)))
}

/// Deregisters its trigger, destroys its relayer keys and deletes it (its logs stay).
#[utoipa::path(delete, path = "/api/v1/automations/{id}", tag = "automations",
    params(("id" = String, Path, description = "Automation id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.automations.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging of the logs.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Skip this many of the newest (default 0).
    pub offset: Option<u64>,
    /// At most this many (default 20, at most 1000).
    pub limit: Option<u64>,
}

/// Its execution log records, newest first: the request, the executor's answer and
/// the post-execution state in `metadata`, `message`, `createdAt`, `outputTxHash`.
#[utoipa::path(get, path = "/api/v1/automations/{id}/logs", tag = "automations",
    params(("id" = String, Path, description = "Automation id"), LogsQuery),
    responses((status = 200, description = "Log records"), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit: {limit} is outside 1..=1000"
        )));
    }
    state.automations.get(&id).await?;
    let records = state
        .automations
        .logs(&id, query.offset.unwrap_or(0), limit)
        .await?;
    Ok(Json(Value::Array(records)))
}
