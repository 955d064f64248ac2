//! Rows to records, written once for both adapters. Each adapter implements [`ReadRow`]
//! for its row type: how one column of one SQL type is read in its dialect (SQLite keeps
//! ids, times and JSON as TEXT and every integer as a 64-bit INTEGER; Postgres has UUID,
//! TIMESTAMPTZ, JSONB and integers of the column's width). The mappers below then say
//! once which column becomes which field.

use std::fmt::Display;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::documents::Document;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{LogLevel, LogRecord, RunRecord, RunStatus, StepRecord};
use crate::schedule::{ScheduleColumns, ScheduleRecord};
use crate::store::feed::{FeedCursor, FeedEntry, FeedKind, FeedRun};
use crate::store::heartbeats::{HeartbeatClaim, HeartbeatPing};

/// Reads one column of a row by name, in the row's SQL dialect. Integer readers are
/// named for the column's SQL type and widen to `i64`.
pub(crate) trait ReadRow {
    /// A TEXT column.
    fn text(&self, column: &str) -> EngineResult<String>;
    /// A nullable TEXT column.
    fn opt_text(&self, column: &str) -> EngineResult<Option<String>>;
    /// A BOOLEAN column.
    fn boolean(&self, column: &str) -> EngineResult<bool>;
    /// A SMALLINT column.
    fn smallint(&self, column: &str) -> EngineResult<i64>;
    /// An INTEGER column.
    fn integer(&self, column: &str) -> EngineResult<i64>;
    /// A nullable INTEGER column.
    fn opt_integer(&self, column: &str) -> EngineResult<Option<i64>>;
    /// A BIGINT column.
    fn bigint(&self, column: &str) -> EngineResult<i64>;
    /// A nullable BIGINT column.
    fn opt_bigint(&self, column: &str) -> EngineResult<Option<i64>>;
    /// A run id column.
    fn run_id(&self, column: &str) -> EngineResult<RunId>;
    /// A nullable run id column.
    fn opt_run_id(&self, column: &str) -> EngineResult<Option<RunId>>;
    /// A timestamp column.
    fn timestamp(&self, column: &str) -> EngineResult<DateTime<Utc>>;
    /// A nullable timestamp column.
    fn opt_timestamp(&self, column: &str) -> EngineResult<Option<DateTime<Utc>>>;
    /// A JSON column (`None` for SQL NULL; JSON `null` is `Some(Value::Null)`).
    fn json(&self, column: &str) -> EngineResult<Option<Value>>;
}

/// A stored value this binary cannot decode.
pub(crate) fn decode_error(reason: impl Display) -> EngineError {
    EngineError::Database(sqlx::Error::Decode(reason.to_string().into()))
}

/// A stored run status.
pub(crate) fn decode_status(text: &str) -> EngineResult<RunStatus> {
    text.parse::<RunStatus>().map_err(decode_error)
}

/// The `workflow@version` keys runs are matched against when claiming.
pub(crate) fn workflow_keys(workflows: &[(String, u32)]) -> Vec<String> {
    workflows
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect()
}

/// A `workflow_runs` row.
pub(crate) fn run_from_row(row: &impl ReadRow) -> EngineResult<RunRecord> {
    Ok(RunRecord {
        id: row.run_id("id")?,
        workflow: row.text("workflow")?,
        workflow_version: row.integer("workflow_version")? as u32,
        input: row.json("input")?.unwrap_or(Value::Null),
        output: row.json("output")?,
        error: row.opt_text("error")?,
        status: decode_status(&row.text("status")?)?,
        idempotency_key: row.opt_text("idempotency_key")?,
        parent_run_id: row.opt_run_id("parent_run_id")?,
        queue: row.text("queue")?,
        priority: row.integer("priority")? as i32,
        wake_at: row.opt_timestamp("wake_at")?,
        wait_event_key: row.opt_text("wait_event_key")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_epoch: row.bigint("lease_epoch")?,
        lease_expires_at: row.opt_timestamp("lease_expires_at")?,
        metadata: row.json("metadata")?.unwrap_or(Value::Null),
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        completed_at: row.opt_timestamp("completed_at")?,
    })
}

/// A `workflow_steps` row.
pub(crate) fn step_from_row(row: &impl ReadRow) -> EngineResult<StepRecord> {
    Ok(StepRecord {
        run_id: row.run_id("run_id")?,
        step_key: row.text("step_key")?,
        seq: row.integer("seq")?,
        status: row.text("status")?.parse().map_err(decode_error)?,
        output: row.json("output")?,
        error: row.opt_text("error")?,
        attempts: row.integer("attempts")? as i32,
        next_attempt_at: row.opt_timestamp("next_attempt_at")?,
        executor: row.opt_text("executor")?,
        started_at: row.timestamp("started_at")?,
        completed_at: row.opt_timestamp("completed_at")?,
    })
}

/// A `workflow_logs` row.
pub(crate) fn log_from_row(row: &impl ReadRow) -> EngineResult<LogRecord> {
    Ok(LogRecord {
        id: row.bigint("id")?,
        run_id: row.run_id("run_id")?,
        step_key: row.opt_text("step_key")?,
        attempt: row.opt_integer("attempt")?.map(|attempt| attempt as i32),
        level: LogLevel::from_i16(row.smallint("level")? as i16),
        message: row.text("message")?,
        fields: row.json("fields")?,
        ts: row.timestamp("ts")?,
    })
}

/// A `workflow_schedules` row.
pub(crate) fn schedule_from_row(row: &impl ReadRow) -> EngineResult<ScheduleRecord> {
    let columns = ScheduleColumns {
        name: row.text("name")?,
        workflow: row.text("workflow")?,
        input: row.json("input")?.unwrap_or(Value::Null),
        cron_expr: row.opt_text("cron_expr")?,
        timezone: row.opt_text("timezone")?,
        every_ms: row.opt_bigint("every_ms")?,
        overlap: row.text("overlap")?,
        catch_up: row.text("catch_up")?,
        queue: row.text("queue")?,
        priority: row.integer("priority")? as i32,
        heartbeat_url: row.opt_text("heartbeat_url")?,
    };
    Ok(ScheduleRecord {
        spec: columns.into_spec().map_err(decode_error)?,
        paused: row.boolean("paused")?,
        next_fire_at: row.timestamp("next_fire_at")?,
        last_fire_at: row.opt_timestamp("last_fire_at")?,
        last_run_id: row.opt_run_id("last_run_id")?,
        queued_tick: row.opt_timestamp("queued_tick")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

/// A `heartbeat_pings` row.
pub(crate) fn heartbeat_ping_from_row(row: &impl ReadRow) -> EngineResult<HeartbeatPing> {
    Ok(HeartbeatPing {
        run_id: row.run_id("run_id")?,
        schedule: row.text("schedule")?,
        url: row.text("url")?,
        outcome: row.text("outcome")?.parse().map_err(decode_error)?,
        state: row.text("state")?.parse().map_err(decode_error)?,
        attempts: row.integer("attempts")? as u32,
        next_attempt_at: row.timestamp("next_attempt_at")?,
        last_error: row.opt_text("last_error")?,
        created_at: row.timestamp("created_at")?,
        finished_at: row.opt_timestamp("finished_at")?,
    })
}

/// A `heartbeat_pings` row just claimed under `token` (`run_id`, `schedule`, `url`,
/// `outcome`, `attempts`).
pub(crate) fn heartbeat_claim_from_row(
    row: &impl ReadRow,
    token: uuid::Uuid,
) -> EngineResult<HeartbeatClaim> {
    Ok(HeartbeatClaim {
        run_id: row.run_id("run_id")?,
        schedule: row.text("schedule")?,
        url: row.text("url")?,
        outcome: row.text("outcome")?.parse().map_err(decode_error)?,
        attempts: row.integer("attempts")? as u32,
        token,
    })
}

/// A `workflow_documents` row.
pub(crate) fn document_from_row(row: &impl ReadRow) -> EngineResult<Document> {
    Ok(Document {
        collection: row.text("collection")?,
        key: row.text("key")?,
        body: row.json("body")?.unwrap_or(Value::Null),
        version: row.bigint("version")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
    })
}

/// A run as the statement that moved it returned it (`RETURNING id, parent_run_id,
/// status, output, error`): what its parent is told when it ended.
pub(crate) fn moved_run_from_row(row: &impl ReadRow) -> EngineResult<MovedRun> {
    Ok(MovedRun {
        id: row.run_id("id")?,
        parent_run_id: row.opt_run_id("parent_run_id")?,
        status: row.text("status")?,
        output: row.json("output")?,
        error: row.opt_text("error")?,
    })
}

/// A run a statement just moved (parked, finished or cancelled).
#[derive(Debug)]
pub(crate) struct MovedRun {
    pub id: RunId,
    pub parent_run_id: Option<RunId>,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// A `workflow_feed` row joined with what it points at, as both adapters' `read_feed`
/// select it: the feed's own columns, then `run_*` (the run, if it still exists),
/// `log_*` (the log line) and `doc_body` (the document), each NULL when absent.
pub(crate) fn feed_entry_from_row(row: &impl ReadRow) -> EngineResult<FeedEntry> {
    let kind_text = row.text("kind")?;
    let kind = FeedKind::parse(&kind_text)
        .ok_or_else(|| decode_error(format!("unknown feed kind '{kind_text}'")))?;
    let run_id = row.opt_run_id("run_id")?;
    let run = match row.opt_text("run_status")? {
        Some(status) => Some(FeedRun {
            workflow: row.text("run_workflow")?,
            queue: row.text("run_queue")?,
            status: decode_status(&status)?,
            error: row.opt_text("run_error")?,
            parent_run_id: row.opt_run_id("run_parent")?,
            created_at: row.timestamp("run_created_at")?,
            updated_at: row.timestamp("run_updated_at")?,
        }),
        None => None,
    };
    let log = match (row.opt_bigint("log_id")?, run_id) {
        (Some(id), Some(run_id)) => Some(LogRecord {
            id,
            run_id,
            step_key: row.opt_text("log_step_key")?,
            attempt: row.opt_integer("log_attempt")?.map(|a| a as i32),
            level: LogLevel::from_i16(row.opt_integer("log_level")?.unwrap_or(3) as i16),
            message: row.opt_text("log_message")?.unwrap_or_default(),
            fields: row.json("log_fields")?,
            ts: row.timestamp("log_ts")?,
        }),
        _ => None,
    };
    Ok(FeedEntry {
        cursor: FeedCursor {
            txid: row.bigint("txid")? as u64,
            seq: row.bigint("seq")? as u64,
        },
        kind,
        at: row.timestamp("ts")?,
        run_id,
        status: row
            .opt_text("status")?
            .map(|status| decode_status(&status))
            .transpose()?,
        run,
        log,
        collection: row.opt_text("collection")?,
        document_key: row.opt_text("doc_key")?,
        document: row.json("doc_body")?,
    })
}
