//! `GET /api/v1/runs/{id}/logs`: a run's log lines in emission order, by page
//! (`offset`/`limit`, as the Brahma orchestration API pages) or by keyset `cursor`, with
//! `level`, `step`, `q` (full-text phrase) and `since` filters.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use morpheus_engine::{LogLevel, LogQuery, LogRecord, RunId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::parse_run_id;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// Most lines one page returns.
const MAX_PAGE: u64 = 5000;

/// One log line.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLine {
    /// Monotonic id; pass the last one as `cursor` for the next page.
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// The step that wrote it (absent: the workflow body or the engine).
    pub step: Option<String>,
    /// The step attempt.
    pub attempt: Option<i32>,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
    /// Structured fields.
    pub fields: Option<Value>,
    /// When it was written.
    pub ts: DateTime<Utc>,
}

impl From<&LogRecord> for LogLine {
    fn from(log: &LogRecord) -> Self {
        Self {
            id: log.id,
            run_id: log.run_id.to_string(),
            step: log.step_key.clone(),
            attempt: log.attempt,
            level: log.level.as_str().to_owned(),
            message: log.message.clone(),
            fields: log.fields.clone(),
            ts: log.ts,
        }
    }
}

/// One page of lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// In emission order.
    pub logs: Vec<LogLine>,
    /// Pass as `cursor` to continue after the last line (absent when the page is empty).
    pub next_cursor: Option<String>,
}

/// Filters of a logs request.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Skip this many matching lines.
    pub offset: Option<u64>,
    /// At most this many (default 1000, at most 5000).
    pub limit: Option<u64>,
    /// Only lines after this id (a page's `next_cursor`).
    pub cursor: Option<String>,
    /// Only lines at or above this level.
    pub level: Option<String>,
    /// Only this step's lines.
    pub step: Option<String>,
    /// Only lines containing these words (phrase, case-insensitive).
    pub q: Option<String>,
    /// Only lines at or after this time: RFC 3339 or an age (`10m`, `2h`).
    pub since: Option<String>,
}

/// Reads a page of `run`'s lines matching `query`.
pub(crate) async fn read_page(
    state: &AppState,
    run: RunId,
    query: LogsQuery,
) -> ApiResult<LogPage> {
    let limit = query.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1..={MAX_PAGE}")));
    }
    let after_id = query
        .cursor
        .as_deref()
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::invalid(format!(
                    "invalid cursor '{text}': pass a page's next_cursor"
                ))
            })
        })
        .transpose()?;
    let min_level = query
        .level
        .as_deref()
        .map(|text| {
            text.parse::<LogLevel>()
                .map_err(|error| ApiError::invalid(error.to_string()))
        })
        .transpose()?;
    let since = query.since.as_deref().map(parse_since).transpose()?;
    let text = query.q.filter(|q| !q.trim().is_empty());
    if state.engine.get_run(run).await?.is_none() {
        return Err(ApiError::not_found(format!("no run with id {run}")));
    }
    let logs = state
        .engine
        .world()
        .query_logs(&LogQuery {
            run_id: Some(run),
            step_key: query.step,
            min_level,
            since,
            until: None,
            text,
            after_id,
            offset: query.offset.unwrap_or(0),
            limit: Some(limit),
        })
        .await?;
    Ok(LogPage {
        next_cursor: logs.last().map(|line| line.id.to_string()),
        logs: logs.iter().map(LogLine::from).collect(),
    })
}

/// `since`: RFC 3339, or an age before now.
pub(crate) fn parse_since(text: &str) -> ApiResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        ApiError::invalid(format!(
            "invalid since '{text}': use RFC 3339 (2026-11-23T10:00:00Z) or an age (10m, 2h)"
        ))
    })?;
    let age =
        chrono::Duration::from_std(age).map_err(|_| ApiError::invalid("since is too far back"))?;
    Ok(Utc::now() - age)
}

/// A run's log lines.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "logs", params(("id" = String, Path, description = "Run id"), LogsQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Json<LogPage>> {
    let Query(query) = query?;
    Ok(Json(read_page(&state, parse_run_id(&id)?, query).await?))
}
