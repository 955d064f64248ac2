//! Row decoding: Postgres stores ids as UUID, times as TIMESTAMPTZ and JSON as JSONB, so
//! the driver decodes them; integers come in their column's width.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::documents::Document;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{LogLevel, LogRecord, RunRecord, RunStatus, StepRecord};
use crate::schedule::{spec_from_columns, ScheduleRecord};

pub(super) fn decode_status(text: &str) -> EngineResult<RunStatus> {
    text.parse()
        .map_err(|error: String| EngineError::Database(sqlx::Error::Decode(error.into())))
}

pub(super) fn run_from_row(row: &PgRow) -> EngineResult<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: RunId(row.try_get("id")?),
        workflow: row.try_get("workflow")?,
        workflow_version: row.try_get::<i32, _>("workflow_version")? as u32,
        input: row.try_get("input")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        status: decode_status(&status)?,
        idempotency_key: row.try_get("idempotency_key")?,
        parent_run_id: row.try_get::<Option<Uuid>, _>("parent_run_id")?.map(RunId),
        queue: row.try_get("queue")?,
        priority: row.try_get("priority")?,
        wake_at: row.try_get("wake_at")?,
        wait_event_key: row.try_get("wait_event_key")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_epoch: row.try_get("lease_epoch")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        metadata: row.try_get("metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

pub(super) fn schedule_from_row(row: &PgRow) -> EngineResult<ScheduleRecord> {
    let overlap: String = row.try_get("overlap")?;
    let catch_up: String = row.try_get("catch_up")?;
    let spec = spec_from_columns(
        row.try_get("name")?,
        row.try_get("workflow")?,
        row.try_get("input")?,
        row.try_get("cron_expr")?,
        row.try_get("timezone")?,
        row.try_get("every_ms")?,
        &overlap,
        &catch_up,
        row.try_get("queue")?,
        row.try_get("priority")?,
    )
    .map_err(|error| EngineError::Database(sqlx::Error::Decode(error.into())))?;
    Ok(ScheduleRecord {
        spec,
        paused: row.try_get("paused")?,
        next_fire_at: row.try_get("next_fire_at")?,
        last_fire_at: row.try_get("last_fire_at")?,
        last_run_id: row.try_get::<Option<Uuid>, _>("last_run_id")?.map(RunId),
        queued_tick: row.try_get("queued_tick")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn step_from_row(row: &PgRow) -> EngineResult<StepRecord> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: RunId(row.try_get("run_id")?),
        step_key: row.try_get("step_key")?,
        seq: row.try_get::<i32, _>("seq")? as i64,
        status: status
            .parse()
            .map_err(|error: String| EngineError::Database(sqlx::Error::Decode(error.into())))?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        executor: row.try_get("executor")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

pub(super) fn log_from_row(row: &PgRow) -> EngineResult<LogRecord> {
    Ok(LogRecord {
        id: row.try_get("id")?,
        run_id: RunId(row.try_get("run_id")?),
        step_key: row.try_get("step_key")?,
        attempt: row.try_get("attempt")?,
        level: LogLevel::from_i16(row.try_get("level")?),
        message: row.try_get("message")?,
        fields: row.try_get("fields")?,
        ts: row.try_get("ts")?,
    })
}

pub(super) fn document_from_row(row: &PgRow) -> EngineResult<Document> {
    Ok(Document {
        collection: row.try_get("collection")?,
        key: row.try_get("key")?,
        body: row.try_get("body")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn workflow_keys(workflows: &[(String, u32)]) -> Vec<String> {
    workflows
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect()
}

pub(super) type FinishedRow = (Uuid, Option<Uuid>, String, Option<Value>, Option<String>);
