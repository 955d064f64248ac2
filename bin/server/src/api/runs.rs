//! `/api/v1/runs`: list (filters and a keyset cursor), get (steps with attempts,
//! timings, errors and next attempts), start (with `Idempotency-Key`), cancel, resume,
//! fork from a step, and re-run with the same input.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use morpheus_engine::{RunFilter, RunId, RunRecord, RunStatus, StepRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::parse_run_id;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// Most runs one page returns.
const MAX_PAGE: u64 = 500;

/// A run as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// Run id (UUID v7, so ids sort by creation).
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// `pending`, `running`, `sleeping`, `retrying`, `waiting`, `completed`, `failed` or
    /// `cancelled`.
    pub status: String,
    /// Queue.
    pub queue: String,
    /// Priority (higher first).
    pub priority: i32,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The input, cut to 200 characters of JSON.
    pub input_preview: String,
    /// The run that started it, for a child run.
    pub parent_run_id: Option<String>,
    /// The idempotency key it was started with.
    pub idempotency_key: Option<String>,
    /// When it becomes claimable again (sleeping, retrying, waiting with a timeout).
    pub wake_at: Option<DateTime<Utc>>,
    /// The event it waits for.
    pub wait_event_key: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<&RunRecord> for RunSummary {
    fn from(run: &RunRecord) -> Self {
        let input = run.input.to_string();
        let input_preview = match input.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input,
        };
        Self {
            id: run.id.to_string(),
            workflow: run.workflow.clone(),
            status: run.status.as_str().to_owned(),
            queue: run.queue.clone(),
            priority: run.priority,
            error: run.error.clone(),
            input_preview,
            parent_run_id: run.parent_run_id.map(|id| id.to_string()),
            idempotency_key: run.idempotency_key.clone(),
            wake_at: run.wake_at,
            wait_event_key: run.wait_event_key.clone(),
            created_at: run.created_at,
            updated_at: run.updated_at,
            completed_at: run.completed_at,
        }
    }
}

/// One page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// Its key (unique in the run).
    pub key: String,
    /// Its position in the run.
    pub seq: i64,
    /// `completed`, `retrying`, `waiting` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// The executor that ran it.
    pub executor: Option<String>,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// When the next attempt is due (retrying).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// First attempt started.
    pub started_at: DateTime<Utc>,
    /// Completed (or failed for good).
    pub completed_at: Option<DateTime<Utc>>,
    /// From start to completion, in milliseconds.
    pub duration_ms: Option<i64>,
}

impl From<&StepRecord> for StepView {
    fn from(step: &StepRecord) -> Self {
        Self {
            key: step.step_key.clone(),
            seq: step.seq,
            status: step.status.as_str().to_owned(),
            attempts: step.attempts,
            executor: step.executor.clone(),
            output: step.output.clone(),
            error: step.error.clone(),
            next_attempt_at: step.next_attempt_at,
            started_at: step.started_at,
            completed_at: step.completed_at,
            duration_ms: step
                .completed_at
                .map(|done| (done - step.started_at).num_milliseconds()),
        }
    }
}

/// A run with everything about it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Its full input.
    pub input: Value,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Operator metadata.
    pub metadata: Value,
    /// The worker holding its lease, while running.
    pub lease_owner: Option<String>,
    /// Its steps, in order.
    pub steps: Vec<StepView>,
}

/// Filters of `GET /api/v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only runs created at or after (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only runs created before (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<u64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

pub(crate) fn encode_cursor(run: &RunRecord) -> String {
    format!("{}_{}", run.created_at.timestamp_micros(), run.id)
}

pub(crate) fn decode_cursor(text: &str) -> ApiResult<(DateTime<Utc>, RunId)> {
    let invalid = || {
        ApiError::invalid(format!(
            "invalid cursor '{text}': pass a page's next_cursor"
        ))
    };
    let (micros, id) = text.split_once('_').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    Ok((at, id.parse().map_err(|_| invalid())?))
}

/// Parses a status filter.
pub(crate) fn parse_status(text: &str) -> ApiResult<RunStatus> {
    text.parse::<RunStatus>().map_err(|_| {
        ApiError::invalid(format!(
            "unknown status '{text}': use pending, running, sleeping, retrying, waiting, completed, failed or cancelled"
        ))
    })
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", params(ListQuery), tag = "runs",
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<RunPage>> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1..={MAX_PAGE}")));
    }
    let filter = RunFilter {
        status: query.status.as_deref().map(parse_status).transpose()?,
        workflow: query.workflow,
        queue: query.queue,
        created_after: query.created_after,
        created_before: query.created_before,
        older_than: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: Some(limit + 1),
    };
    let mut runs = state.engine.world().list_runs(&filter).await?;
    let next_cursor = if runs.len() as u64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(RunPage {
        runs: runs.iter().map(RunSummary::from).collect(),
        next_cursor,
    }))
}

/// Reads one run and its steps, as a 404 when there is none.
pub(crate) async fn load_detail(state: &AppState, id: RunId) -> ApiResult<RunDetail> {
    let world = state.engine.world();
    let run = world
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run with id {id}")))?;
    let steps = world.load_journal(id).await?;
    Ok(RunDetail {
        run: RunSummary::from(&run),
        input: run.input.clone(),
        output: run.output.clone(),
        metadata: run.metadata.clone(),
        lease_owner: run.lease_owner.clone(),
        steps: steps.iter().map(StepView::from).collect(),
    })
}

/// One run with its steps.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    Ok(Json(load_detail(&state, parse_run_id(&id)?).await?))
}

/// `POST /api/v1/runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Workflow name.
    pub workflow: String,
    /// Its input (validated by the workflow before anything is written).
    #[serde(default)]
    pub input: Value,
    /// Queue (default `default`).
    pub queue: Option<String>,
    /// Priority (higher first; default 0).
    pub priority: Option<i32>,
}

/// What a start did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    /// The run (the earlier one when the idempotency key was used before).
    pub run_id: String,
    /// Whether this request created it.
    pub created: bool,
}

/// Starts a run. With an `Idempotency-Key` header, starting twice returns the first run
/// (200) and creates nothing.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", request_body = StartRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same run")),
    responses((status = 201, body = Started), (status = 200, body = Started),
        (status = 400, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let Json(request) = body?;
    let key = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?
                .trim();
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::invalid(
                    "Idempotency-Key must be 1 to 200 characters",
                ));
            }
            Some(key.to_owned())
        }
        None => None,
    };
    let mut new_run = state
        .engine
        .prepare(&request.workflow, request.input, key)?;
    if let Some(queue) = request.queue {
        if queue.trim().is_empty() {
            return Err(ApiError::invalid("queue must not be empty"));
        }
        new_run = new_run.queue(queue);
    }
    if let Some(priority) = request.priority {
        new_run = new_run.priority(priority);
    }
    let started = state.engine.start_prepared(new_run).await?;
    let status = if started.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Started {
            run_id: started.run_id.to_string(),
            created: started.created,
        }),
    ))
}

/// Cancels a run that has not ended.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let id = parse_run_id(&id)?;
    state.engine.cancel(id).await?;
    Ok(Json(load_detail(&state, id).await?))
}

/// Resumes a failed or cancelled run (completed steps are kept).
#[utoipa::path(post, path = "/api/v1/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let id = parse_run_id(&id)?;
    state.engine.resume(id).await?;
    Ok(Json(load_detail(&state, id).await?))
}

/// `POST /api/v1/runs/{id}/fork`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// The first step to run again; the steps before it are kept.
    pub from_step: String,
}

/// Starts a new run of the same workflow and input keeping the steps before `from_step`.
#[utoipa::path(post, path = "/api/v1/runs/{id}/fork", tag = "runs", request_body = ForkRequest,
    params(("id" = String, Path, description = "Run id")),
    responses((status = 201, body = Started), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ForkRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let id = parse_run_id(&id)?;
    let Json(request) = body?;
    let forked = state
        .engine
        .world()
        .fork_run(id, &request.from_step)
        .await?;
    state.engine.wake_signal().notify_one();
    Ok((
        StatusCode::CREATED,
        Json(Started {
            run_id: forked.to_string(),
            created: true,
        }),
    ))
}

/// Starts a new run of the same workflow, input, queue and priority.
#[utoipa::path(post, path = "/api/v1/runs/{id}/rerun", tag = "runs",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 201, body = Started), (status = 404, body = ErrorBody)))]
pub async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Started>)> {
    let id = parse_run_id(&id)?;
    let run = state
        .engine
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run with id {id}")))?;
    let new_run = state
        .engine
        .prepare(&run.workflow, run.input.clone(), None)?
        .queue(run.queue.clone())
        .priority(run.priority);
    let started = state.engine.start_prepared(new_run).await?;
    Ok((
        StatusCode::CREATED,
        Json(Started {
            run_id: started.run_id.to_string(),
            created: true,
        }),
    ))
}
