//! Row decoding: SQLite stores ids, times and JSON as TEXT, so every mapper parses.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::documents::Document;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{LogLevel, LogRecord, RunRecord, RunStatus, StepRecord};
use crate::schedule::{spec_from_columns, ScheduleRecord};

pub(super) fn parse_ts(text: &str) -> EngineResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|ts| ts.with_timezone(&Utc))
        .map_err(|error| {
            EngineError::Database(sqlx::Error::Decode(
                format!("bad timestamp '{text}': {error}").into(),
            ))
        })
}

pub(super) fn parse_opt_ts(text: Option<String>) -> EngineResult<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

pub(super) fn parse_json(text: Option<String>) -> EngineResult<Option<Value>> {
    Ok(text.as_deref().map(serde_json::from_str).transpose()?)
}

pub(super) fn parse_run_id(text: &str) -> EngineResult<RunId> {
    RunId::from_str(text).map_err(|error| EngineError::Database(sqlx::Error::Decode(error.into())))
}

pub(super) fn decode_status(text: &str) -> EngineResult<RunStatus> {
    RunStatus::from_str(text)
        .map_err(|error| EngineError::Database(sqlx::Error::Decode(error.into())))
}

pub(super) fn run_from_row(row: &SqliteRow) -> EngineResult<RunRecord> {
    let id: String = row.try_get("id")?;
    let parent: Option<String> = row.try_get("parent_run_id")?;
    let status: String = row.try_get("status")?;
    let version: i64 = row.try_get("workflow_version")?;
    Ok(RunRecord {
        id: parse_run_id(&id)?,
        workflow: row.try_get("workflow")?,
        workflow_version: version as u32,
        input: parse_json(row.try_get("input")?)?.unwrap_or(Value::Null),
        output: parse_json(row.try_get("output")?)?,
        error: row.try_get("error")?,
        status: decode_status(&status)?,
        idempotency_key: row.try_get("idempotency_key")?,
        parent_run_id: parent.as_deref().map(parse_run_id).transpose()?,
        queue: row.try_get("queue")?,
        priority: row.try_get::<i64, _>("priority")? as i32,
        wake_at: parse_opt_ts(row.try_get("wake_at")?)?,
        wait_event_key: row.try_get("wait_event_key")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_epoch: row.try_get("lease_epoch")?,
        lease_expires_at: parse_opt_ts(row.try_get("lease_expires_at")?)?,
        metadata: parse_json(row.try_get("metadata")?)?.unwrap_or(Value::Null),
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_ts(&row.try_get::<String, _>("updated_at")?)?,
        completed_at: parse_opt_ts(row.try_get("completed_at")?)?,
    })
}

pub(super) fn schedule_from_row(row: &SqliteRow) -> EngineResult<ScheduleRecord> {
    let name: String = row.try_get("name")?;
    let overlap: String = row.try_get("overlap")?;
    let catch_up: String = row.try_get("catch_up")?;
    let spec = spec_from_columns(
        name,
        row.try_get("workflow")?,
        parse_json(row.try_get("input")?)?.unwrap_or(Value::Null),
        row.try_get("cron_expr")?,
        row.try_get("timezone")?,
        row.try_get("every_ms")?,
        &overlap,
        &catch_up,
        row.try_get("queue")?,
        row.try_get::<i64, _>("priority")? as i32,
    )
    .map_err(|error| EngineError::Database(sqlx::Error::Decode(error.into())))?;
    let last_run: Option<String> = row.try_get("last_run_id")?;
    Ok(ScheduleRecord {
        spec,
        paused: row.try_get("paused")?,
        next_fire_at: parse_ts(&row.try_get::<String, _>("next_fire_at")?)?,
        last_fire_at: parse_opt_ts(row.try_get("last_fire_at")?)?,
        last_run_id: last_run.as_deref().map(parse_run_id).transpose()?,
        queued_tick: parse_opt_ts(row.try_get("queued_tick")?)?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_ts(&row.try_get::<String, _>("updated_at")?)?,
    })
}

pub(super) fn step_from_row(row: &SqliteRow) -> EngineResult<StepRecord> {
    let run_id: String = row.try_get("run_id")?;
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: parse_run_id(&run_id)?,
        step_key: row.try_get("step_key")?,
        seq: row.try_get("seq")?,
        status: status
            .parse()
            .map_err(|error: String| EngineError::Database(sqlx::Error::Decode(error.into())))?,
        output: parse_json(row.try_get("output")?)?,
        error: row.try_get("error")?,
        attempts: row.try_get::<i64, _>("attempts")? as i32,
        next_attempt_at: parse_opt_ts(row.try_get("next_attempt_at")?)?,
        executor: row.try_get("executor")?,
        started_at: parse_ts(&row.try_get::<String, _>("started_at")?)?,
        completed_at: parse_opt_ts(row.try_get("completed_at")?)?,
    })
}

pub(super) fn log_from_row(row: &SqliteRow) -> EngineResult<LogRecord> {
    let run_id: String = row.try_get("run_id")?;
    Ok(LogRecord {
        id: row.try_get("id")?,
        run_id: parse_run_id(&run_id)?,
        step_key: row.try_get("step_key")?,
        attempt: row.try_get::<Option<i64>, _>("attempt")?.map(|a| a as i32),
        level: LogLevel::from_i16(row.try_get::<i64, _>("level")? as i16),
        message: row.try_get("message")?,
        fields: parse_json(row.try_get("fields")?)?,
        ts: parse_ts(&row.try_get::<String, _>("ts")?)?,
    })
}

pub(super) fn document_from_row(row: &SqliteRow) -> EngineResult<Document> {
    Ok(Document {
        collection: row.try_get("collection")?,
        key: row.try_get("key")?,
        body: parse_json(row.try_get("body")?)?.unwrap_or(Value::Null),
        version: row.try_get("version")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_ts(&row.try_get::<String, _>("updated_at")?)?,
    })
}

pub(super) fn workflow_keys(workflows: &[(String, u32)]) -> String {
    let keys: Vec<String> = workflows
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect();
    serde_json::to_string(&keys).expect("strings serialize")
}

pub(super) type FinishedRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);
