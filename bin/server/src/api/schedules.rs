//! `/api/v1/schedules`: list (with their next fire times), add, get, delete, pause,
//! resume, and the runs a schedule started.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use morpheus_engine::schedule::{validate_spec, InvalidSchedule};
use morpheus_engine::{CatchUp, Overlap, ScheduleRecord, ScheduleSpec, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::runs::RunSummary;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// How many upcoming fire times a schedule shows.
const UPCOMING: usize = 5;

/// A schedule with its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Unique name.
    pub name: String,
    /// Workflow it starts.
    pub workflow: String,
    /// The input of every run it starts.
    pub input: Value,
    /// A cron expression (when not an interval).
    pub cron: Option<String>,
    /// The cron expression's time zone.
    pub timezone: Option<String>,
    /// The interval in milliseconds (when not cron).
    pub every_ms: Option<u64>,
    /// `skip`, `queue_one` or `allow`.
    pub overlap: String,
    /// `skip_missed`, `run_once` or `run_all`.
    pub catch_up: String,
    /// Queue of its runs.
    pub queue: String,
    /// Priority of its runs.
    pub priority: i32,
    /// Pinged (GET) after each run completes, `<url>/fail` after one fails; cancelled
    /// runs are not pinged.
    pub heartbeat_url: Option<String>,
    /// Paused schedules do not fire.
    pub paused: bool,
    /// The next tick.
    pub next_fire_at: DateTime<Utc>,
    /// The ticks after it.
    pub upcoming: Vec<DateTime<Utc>>,
    /// The last tick that started a run.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The run that tick started.
    pub last_run_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&ScheduleRecord> for ScheduleView {
    fn from(record: &ScheduleRecord) -> Self {
        let spec = &record.spec;
        let (cron, timezone, every_ms) = match &spec.trigger {
            Trigger::Cron { expr, timezone } => (Some(expr.clone()), timezone.clone(), None),
            Trigger::Every { every_ms } => (None, None, Some(*every_ms)),
        };
        let mut upcoming = Vec::new();
        let mut at = record.next_fire_at;
        while upcoming.len() < UPCOMING {
            match spec.trigger.next_after(at) {
                Some(next) => {
                    upcoming.push(next);
                    at = next;
                }
                None => break,
            }
        }
        Self {
            name: spec.name.clone(),
            workflow: spec.workflow.clone(),
            input: spec.input.clone(),
            cron,
            timezone,
            every_ms,
            overlap: spec.overlap.as_str().to_owned(),
            catch_up: spec.catch_up.as_str().to_owned(),
            queue: spec.queue.clone(),
            priority: spec.priority,
            heartbeat_url: spec.heartbeat_url.clone(),
            paused: record.paused,
            next_fire_at: record.next_fire_at,
            upcoming,
            last_fire_at: record.last_fire_at,
            last_run_id: record.last_run_id.map(|id| id.to_string()),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// Every schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// By name.
    pub schedules: Vec<ScheduleView>,
}

/// Every schedule with its next fire times.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<ScheduleList>> {
    let schedules = state.engine.world().list_schedules().await?;
    Ok(Json(ScheduleList {
        schedules: schedules.iter().map(ScheduleView::from).collect(),
    }))
}

/// `POST /api/v1/schedules`: exactly one of `cron` and `every`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// Unique name.
    pub name: String,
    /// Workflow to start.
    pub workflow: String,
    /// Its input (validated by the workflow now).
    #[serde(default)]
    pub input: Value,
    /// A cron expression (5 fields, or 6–7 with seconds and year).
    pub cron: Option<String>,
    /// IANA time zone of the cron expression (default UTC).
    pub timezone: Option<String>,
    /// An interval (`30s`, `5m`, `1h`; at least 1 s).
    pub every: Option<String>,
    /// `skip` (default), `queue_one` or `allow`.
    pub overlap: Option<String>,
    /// `skip_missed` (default), `run_once` or `run_all`.
    pub catch_up: Option<String>,
    /// Queue of its runs (default `default`).
    pub queue: Option<String>,
    /// Priority of its runs (default 0).
    pub priority: Option<i32>,
    /// An http(s) URL pinged after each run completes, `<url>/fail` after one fails (the
    /// healthchecks.io / Cronitor convention); cancelled runs are not pinged.
    pub heartbeat_url: Option<String>,
}

fn invalid(name: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("schedule '{name}': {reason}"))
}

/// Adds a schedule (refused, with nothing stored, when anything is wrong).
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules", request_body = AddRequest,
    responses((status = 201, body = ScheduleView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    body: Result<Json<AddRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    let Json(request) = body?;
    let name = request.name.clone();
    let trigger = match (&request.cron, &request.every) {
        (Some(expr), None) => Trigger::cron(expr, request.timezone.as_deref()),
        (None, Some(every)) => humantime::parse_duration(every)
            .map_err(|_| {
                InvalidSchedule(format!("invalid interval '{every}' (use e.g. 30s, 5m, 1h)"))
            })
            .and_then(Trigger::every),
        _ => Err(InvalidSchedule(
            "give exactly one of cron and every".to_owned(),
        )),
    }
    .map_err(|reason| invalid(&name, reason))?;
    let overlap: Overlap = request
        .overlap
        .as_deref()
        .unwrap_or("skip")
        .parse()
        .map_err(|reason| invalid(&name, format!("overlap: {reason}")))?;
    let catch_up: CatchUp = request
        .catch_up
        .as_deref()
        .unwrap_or("skip_missed")
        .parse()
        .map_err(|reason| invalid(&name, format!("catch_up: {reason}")))?;
    state
        .engine
        .prepare(&request.workflow, request.input.clone(), None)?;
    let spec = ScheduleSpec {
        name: name.clone(),
        workflow: request.workflow,
        input: request.input,
        trigger,
        overlap,
        catch_up,
        queue: request.queue.unwrap_or_else(|| "default".to_owned()),
        priority: request.priority.unwrap_or(0),
        heartbeat_url: request.heartbeat_url,
    };
    validate_spec(&spec).map_err(|reason| invalid(&name, reason))?;
    let first = spec
        .trigger
        .next_after(Utc::now())
        .ok_or_else(|| invalid(&name, "its trigger never fires"))?;
    let world = state.engine.world();
    world.add_schedule(&spec, first).await?;
    let record = world
        .get_schedule(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule named '{name}'")))?;
    Ok((StatusCode::CREATED, Json(ScheduleView::from(&record))))
}

async fn load(state: &AppState, name: &str) -> ApiResult<ScheduleView> {
    let record = state
        .engine
        .world()
        .get_schedule(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule named '{name}'")))?;
    Ok(ScheduleView::from(&record))
}

/// One schedule.
#[utoipa::path(get, path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(load(&state, &name).await?))
}

/// Deletes a schedule (its runs stay).
#[utoipa::path(delete, path = "/api/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    load(&state, &name).await?;
    state.engine.world().delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops a schedule firing.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    set_paused(&state, &name, true).await
}

/// Fires a paused schedule again from its next tick.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    set_paused(&state, &name, false).await
}

async fn set_paused(state: &AppState, name: &str, paused: bool) -> ApiResult<Json<ScheduleView>> {
    let current = load(state, name).await?;
    // A resumed schedule fires from its next tick on; ticks during the pause are not
    // caught up (as `morpheus schedules resume`).
    let next = if paused {
        current.next_fire_at
    } else {
        let record = state.engine.world().get_schedule(name).await?;
        record
            .and_then(|record| record.spec.trigger.next_after(Utc::now()))
            .ok_or_else(|| invalid(name, "its trigger never fires"))?
    };
    state
        .engine
        .world()
        .set_schedule_paused(name, paused, next)
        .await?;
    Ok(Json(load(state, name).await?))
}

/// Parameters of a schedule's runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// At most this many (default 50, at most 500).
    pub limit: Option<u64>,
}

/// The runs a schedule started.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleRuns {
    /// Newest first.
    pub runs: Vec<RunSummary>,
}

/// The runs a schedule started, newest first.
#[utoipa::path(get, path = "/api/v1/schedules/{name}/runs", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name"), RunsQuery),
    responses((status = 200, body = ScheduleRuns), (status = 404, body = ErrorBody)))]
pub async fn runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult<Json<ScheduleRuns>> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::invalid("limit must be 1..=500"));
    }
    load(&state, &name).await?;
    let runs = state.engine.world().schedule_runs(&name, limit).await?;
    Ok(Json(ScheduleRuns {
        runs: runs.iter().map(RunSummary::from).collect(),
    }))
}
