//! The SQLite adapter: the embedded default. One writer connection (every write goes
//! through it, inside `BEGIN IMMEDIATE`), a small pool of readers, WAL mode and
//! `synchronous = FULL` so a commit is on disk before anyone is told it happened.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use crate::batch::{child_finished_event_key, child_finished_payload, format_ts, BatchPlan};
use crate::documents::{check_key, Document, DocumentQuery, DEFAULT_DOCUMENT_LIMIT};
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{
    BudgetReservation, ClaimedRun, Fence, LogLevel, LogQuery, LogRecord, NewRun, PruneReport,
    QueueInfo, RunFilter, RunRecord, RunStatus, StartedRun, StepRecord, WriteOp, WriteOutcome,
};
use crate::schedule::{
    plan_fires, spec_from_columns, tick_idempotency_key, validate_spec, FiredRun, ScheduleColumns,
    ScheduleRecord, ScheduleSpec,
};
use crate::world::{Backend, ClaimRequest, World};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// SQLite-backed [`World`].
pub struct SqliteWorld {
    writer: Mutex<SqliteConnection>,
    readers: SqlitePool,
    options: SqliteConnectOptions,
}

impl SqliteWorld {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`), checks that
    /// its schema is not newer than this binary, and applies pending migrations.
    pub async fn connect(url: &str) -> EngineResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .statement_cache_capacity(256);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|error| {
                    EngineError::Database(sqlx::Error::Configuration(
                        format!("cannot create directory {}: {error}", parent.display()).into(),
                    ))
                })?;
            }
        }
        // Processes opening one fresh file at once contend while it is initialised:
        // SQLite answers SQLITE_BUSY without waiting while another connection switches
        // the file to WAL or builds its WAL index, and the loser of the race to apply
        // the first migration fails ("table already exists") once the winner commits.
        // Both pass with a short wait; trying again then finds the migration recorded.
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match Self::open(&options).await {
                Ok(world) => return Ok(world),
                Err(error) if attempt < 10 && is_startup_contention(&error) => {
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn open(options: &SqliteConnectOptions) -> EngineResult<Self> {
        let mut writer = SqliteConnection::connect_with(options).await?;
        check_schema_not_newer(&mut writer).await?;
        MIGRATOR.run_direct(&mut writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
            options: options.clone(),
        })
    }

    /// The single writer connection. Every write transaction ends before the lock is
    /// released, so a connection still "in a transaction" here is one whose rollback
    /// failed (SQLite rolls back by itself on SQLITE_FULL, and the driver's ROLLBACK then
    /// errors): it is replaced by a fresh connection instead of failing forever.
    async fn writer(&self) -> EngineResult<tokio::sync::MutexGuard<'_, SqliteConnection>> {
        let mut writer = self.writer.lock().await;
        if writer.is_in_transaction() {
            tracing::warn!(
                "sqlite writer connection was left inside a failed transaction; reopening it"
            );
            *writer = SqliteConnection::connect_with(&self.options).await?;
        }
        Ok(writer)
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds a schedule definition to `?1`–`?11` (name … next_fire_at) and the write time to
/// `?12`, the column order both schedule writes use.
fn bind_schedule<'q>(
    query: SqliteQuery<'q>,
    spec: &'q ScheduleSpec,
    columns: &'q ScheduleColumns,
    next_fire_at: DateTime<Utc>,
    now: &'q str,
) -> SqliteQuery<'q> {
    query
        .bind(&spec.name)
        .bind(&spec.workflow)
        .bind(spec.input.to_string())
        .bind(&columns.cron_expr)
        .bind(&columns.timezone)
        .bind(columns.every_ms)
        .bind(columns.overlap)
        .bind(columns.catch_up)
        .bind(&spec.queue)
        .bind(spec.priority as i64)
        .bind(format_ts(next_fire_at))
        .bind(now)
}

/// Errors that a concurrent opener of the same fresh file causes, and that pass.
fn is_startup_contention(error: &EngineError) -> bool {
    let busy = |error: &sqlx::Error| match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    };
    match error {
        EngineError::Database(error) => busy(error),
        EngineError::Migrate(
            sqlx::migrate::MigrateError::Execute(error)
            | sqlx::migrate::MigrateError::ExecuteMigration(error, _),
        ) => matches!(error, sqlx::Error::Database(_)),
        _ => false,
    }
}

async fn check_schema_not_newer(connection: &mut SqliteConnection) -> EngineResult<()> {
    let table_exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    if table_exists.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *connection)
        .await?;
    let supported = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    match found {
        Some(found) if found > supported => Err(EngineError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

fn parse_ts(text: &str) -> EngineResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|ts| ts.with_timezone(&Utc))
        .map_err(|error| {
            EngineError::Database(sqlx::Error::Decode(
                format!("bad timestamp '{text}': {error}").into(),
            ))
        })
}

fn parse_opt_ts(text: Option<String>) -> EngineResult<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

fn parse_json(text: Option<String>) -> EngineResult<Option<Value>> {
    Ok(text.as_deref().map(serde_json::from_str).transpose()?)
}

fn parse_run_id(text: &str) -> EngineResult<RunId> {
    RunId::from_str(text).map_err(|error| EngineError::Database(sqlx::Error::Decode(error.into())))
}

fn decode_status(text: &str) -> EngineResult<RunStatus> {
    RunStatus::from_str(text)
        .map_err(|error| EngineError::Database(sqlx::Error::Decode(error.into())))
}

/// Ids of up to `limit` due runs of one queue in one of `statuses`, by priority and due
/// time (`keys`: the registered `workflow@version`s as a JSON array).
async fn due_ids_in_queue(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    now_text: &str,
    keys: &str,
    queue: &str,
    statuses: &[&str],
    limit: i64,
) -> EngineResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM workflow_runs
         WHERE status IN (SELECT value FROM json_each(?5)) AND wake_at <= ?1
           AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?2))
           AND queue = ?4
         ORDER BY priority DESC, wake_at, id LIMIT ?3",
    )
    .bind(now_text)
    .bind(keys)
    .bind(limit)
    .bind(queue)
    .bind(serde_json::to_string(statuses)?)
    .fetch_all(&mut **tx)
    .await?)
}

fn run_from_row(row: &SqliteRow) -> EngineResult<RunRecord> {
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

fn schedule_from_row(row: &SqliteRow) -> EngineResult<ScheduleRecord> {
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

fn step_from_row(row: &SqliteRow) -> EngineResult<StepRecord> {
    let run_id: String = row.try_get("run_id")?;
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: parse_run_id(&run_id)?,
        step_key: row.try_get("step_key")?,
        seq: row.try_get("seq")?,
        status: status.parse().map_err(|error: crate::error::UnknownName| {
            EngineError::Database(sqlx::Error::Decode(error.into()))
        })?,
        output: parse_json(row.try_get("output")?)?,
        error: row.try_get("error")?,
        attempts: row.try_get::<i64, _>("attempts")? as i32,
        next_attempt_at: parse_opt_ts(row.try_get("next_attempt_at")?)?,
        executor: row.try_get("executor")?,
        started_at: parse_ts(&row.try_get::<String, _>("started_at")?)?,
        completed_at: parse_opt_ts(row.try_get("completed_at")?)?,
    })
}

fn log_from_row(row: &SqliteRow) -> EngineResult<LogRecord> {
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

fn document_from_row(row: &SqliteRow) -> EngineResult<Document> {
    Ok(Document {
        collection: row.try_get("collection")?,
        key: row.try_get("key")?,
        body: parse_json(row.try_get("body")?)?.unwrap_or(Value::Null),
        version: row.try_get("version")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_ts(&row.try_get::<String, _>("updated_at")?)?,
    })
}

fn workflow_keys(workflows: &[(String, u32)]) -> String {
    let keys: Vec<String> = workflows
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect();
    serde_json::to_string(&keys).expect("strings serialize")
}

/// Quotes text as one FTS5 phrase.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Ends a run's lease and, if it is a child, tells its parent (shared by finishing and
/// cancelling). Runs inside the writer's transaction.
async fn notify_parents(
    tx: &mut SqliteConnection,
    finished: &[FinishedRow],
    now: &str,
) -> EngineResult<()> {
    for (id, parent, status, output, error) in finished {
        if parent.is_none() {
            continue;
        }
        let key = child_finished_event_key(parse_run_id(id)?);
        let output = parse_json(output.clone())?;
        let payload = child_finished_payload(status, output.as_ref(), error.as_deref());
        deliver_event(tx, &key, &payload, now).await?;
    }
    Ok(())
}

async fn deliver_event(
    tx: &mut SqliteConnection,
    key: &str,
    payload: &Value,
    now: &str,
) -> EngineResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO workflow_events (key, payload, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE workflow_runs SET status = 'pending', wake_at = ?2, wait_event_key = NULL, updated_at = ?2
         WHERE status = 'waiting' AND wait_event_key = ?1",
    )
    .bind(key)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(inserted)
}

type FinishedRow = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

#[async_trait]
impl World for SqliteWorld {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn start_run(&self, run: NewRun) -> EngineResult<StartedRun> {
        let now = format_ts(Utc::now());
        let id = RunId::new();
        let mut writer = self.writer().await?;
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO workflow_runs (id, workflow, workflow_version, input, idempotency_key,
                 parent_run_id, queue, priority, metadata, status, wake_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10, ?10)
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(id.to_string())
        .bind(&run.workflow)
        .bind(run.workflow_version as i64)
        .bind(run.input.to_string())
        .bind(&run.idempotency_key)
        .bind(run.parent_run_id.map(|p| p.to_string()))
        .bind(&run.queue)
        .bind(run.priority as i64)
        .bind(run.metadata.to_string())
        .bind(&now)
        .fetch_optional(&mut *writer)
        .await?;
        if inserted.is_some() {
            return Ok(StartedRun {
                run_id: id,
                created: true,
            });
        }
        let existing: String =
            sqlx::query_scalar("SELECT id FROM workflow_runs WHERE idempotency_key = ?1")
                .bind(&run.idempotency_key)
                .fetch_one(&mut *writer)
                .await?;
        Ok(StartedRun {
            run_id: parse_run_id(&existing)?,
            created: false,
        })
    }

    async fn claim_runs(&self, request: &ClaimRequest) -> EngineResult<Vec<ClaimedRun>> {
        let now = Utc::now();
        let now_text = format_ts(now);
        let expires = format_ts(now + request.lease_ttl);
        let keys = workflow_keys(&request.workflows);
        let queues = request
            .queues
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let limited: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, concurrency_limit FROM workflow_queues
             WHERE concurrency_limit IS NOT NULL
               AND (?1 IS NULL OR name IN (SELECT value FROM json_each(?1)))
             ORDER BY name",
        )
        .bind(&queues)
        .fetch_all(&mut *tx)
        .await?;
        let limited_names =
            serde_json::to_string(&limited.iter().map(|(name, _)| name).collect::<Vec<_>>())?;
        // Stranded runs (expired leases) first: they have waited longest, and taking one
        // over does not change how many of its queue are running.
        let mut ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM workflow_runs
             WHERE status = 'running' AND lease_expires_at < ?1
               AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?2))
               AND (?4 IS NULL OR queue IN (SELECT value FROM json_each(?4)))
             ORDER BY lease_expires_at LIMIT ?3",
        )
        .bind(&now_text)
        .bind(&keys)
        .bind(request.limit as i64)
        .bind(&queues)
        .fetch_all(&mut *tx)
        .await?;
        let mut remaining = request.limit as i64 - ids.len() as i64;
        if remaining > 0 {
            let ready: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM workflow_runs
                 WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting') AND wake_at <= ?1
                   AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?2))
                   AND (?4 IS NULL OR queue IN (SELECT value FROM json_each(?4)))
                   AND queue NOT IN (SELECT value FROM json_each(?5))
                 ORDER BY priority DESC, wake_at, id LIMIT ?3",
            )
            .bind(&now_text)
            .bind(&keys)
            .bind(remaining)
            .bind(&queues)
            .bind(&limited_names)
            .fetch_all(&mut *tx)
            .await?;
            remaining -= ready.len() as i64;
            ids.extend(ready);
        }
        // Limited queues: this transaction is the only writer, so counting and claiming
        // here cannot overshoot a limit. A run parked for a step retry keeps its slot
        // (see `World::set_queue_limit`): it is claimed again first, whatever the count.
        for (queue, limit) in &limited {
            if remaining <= 0 {
                break;
            }
            let retries_due =
                due_ids_in_queue(&mut tx, &now_text, &keys, queue, &["retrying"], remaining)
                    .await?;
            remaining -= retries_due.len() as i64;
            ids.extend(retries_due);
            let holding: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM workflow_runs
                 WHERE status IN ('running', 'retrying') AND queue = ?1",
            )
            .bind(queue)
            .fetch_one(&mut *tx)
            .await?;
            let take = (limit - holding).min(remaining);
            if take <= 0 {
                continue;
            }
            let ready = due_ids_in_queue(
                &mut tx,
                &now_text,
                &keys,
                queue,
                &["pending", "sleeping", "waiting"],
                take,
            )
            .await?;
            remaining -= ready.len() as i64;
            ids.extend(ready);
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE workflow_runs
             SET status = 'running', lease_owner = ?1, lease_epoch = lease_epoch + 1,
                 lease_expires_at = ?2, wait_event_key = NULL, updated_at = ?3
             WHERE id IN (SELECT value FROM json_each(?4))
             RETURNING *",
        )
        .bind(&request.owner)
        .bind(&expires)
        .bind(&now_text)
        .bind(serde_json::to_string(&ids)?)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| run_from_row(row).map(|run| ClaimedRun { run }))
            .collect()
    }

    async fn load_journal(&self, run_id: RunId) -> EngineResult<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM workflow_steps WHERE run_id = ?1 ORDER BY seq")
            .bind(run_id.to_string())
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
        let now = Utc::now();
        let now_text = format_ts(now);
        let fenced: Vec<String> = BatchPlan::fenced_runs(&ops)
            .iter()
            .map(|id| id.to_string())
            .collect();
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let held_rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, lease_epoch FROM workflow_runs
             WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'running'",
        )
        .bind(serde_json::to_string(&fenced)?)
        .fetch_all(&mut *tx)
        .await?;
        let mut held = HashMap::new();
        for (id, epoch) in held_rows {
            held.insert(parse_run_id(&id)?, epoch);
        }
        let mut plan = BatchPlan::new(ops, &held, now);

        for chunk in 0..plan.step_chunks.len() {
            let rows = serde_json::to_string(&plan.step_chunks[chunk])?;
            let applied: Vec<(String, String)> = sqlx::query_as(
                "INSERT INTO workflow_steps (run_id, step_key, seq, status, output, error, attempts,
                     next_attempt_at, executor, started_at, completed_at)
                 SELECT value ->> '$.run_id', value ->> '$.step_key', value ->> '$.seq',
                        value ->> '$.status', value -> '$.output', value ->> '$.error',
                        value ->> '$.attempts', value ->> '$.next_attempt_at',
                        value ->> '$.executor', value ->> '$.started_at', value ->> '$.completed_at'
                 FROM json_each(?1) WHERE true
                 ON CONFLICT (run_id, step_key) DO UPDATE SET
                     status = excluded.status, output = excluded.output, error = excluded.error,
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                     executor = excluded.executor, completed_at = excluded.completed_at
                 WHERE workflow_steps.status <> 'completed'
                 RETURNING run_id, step_key",
            )
            .bind(rows)
            .fetch_all(&mut *tx)
            .await?;
            let mut applied_keys = HashSet::new();
            for (run_id, step_key) in applied {
                applied_keys.insert((parse_run_id(&run_id)?, step_key));
            }
            plan.mark_unapplied_steps(chunk, &applied_keys);
        }

        if !plan.transitions.is_empty() {
            let arrived: HashSet<String> = if plan.event_keys.is_empty() {
                HashSet::new()
            } else {
                sqlx::query_scalar(
                    "SELECT key FROM workflow_events WHERE key IN (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::to_string(&plan.event_keys)?)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
            };
            for row in &mut plan.transitions {
                if row
                    .wait_event_key
                    .as_ref()
                    .is_some_and(|key| arrived.contains(key))
                {
                    // The event came before the park: wake at once, nothing to wait for.
                    row.status = RunStatus::Pending.as_str();
                    row.wake_at = Some(now_text.clone());
                    row.wait_event_key = None;
                }
            }
            let finished: Vec<FinishedRow> = sqlx::query_as(
                "UPDATE workflow_runs SET
                     status = t.value ->> '$.status',
                     wake_at = t.value ->> '$.wake_at',
                     wait_event_key = t.value ->> '$.wait_event_key',
                     output = CASE WHEN t.value ->> '$.output' IS NULL THEN NULL ELSE t.value -> '$.output' END,
                     error = t.value ->> '$.error',
                     completed_at = t.value ->> '$.completed_at',
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = ?2
                 FROM json_each(?1) AS t
                 WHERE workflow_runs.id = t.value ->> '$.id'
                 RETURNING id, parent_run_id, status, output, error",
            )
            .bind(serde_json::to_string(&plan.transitions)?)
            .bind(&now_text)
            .fetch_all(&mut *tx)
            .await?;
            let finished: Vec<FinishedRow> = finished
                .into_iter()
                .filter(|row| decode_status(&row.2).is_ok_and(RunStatus::is_terminal))
                .collect();
            notify_parents(&mut tx, &finished, &now_text).await?;
        }

        if !plan.logs.is_empty() {
            sqlx::query(
                "INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, fields, ts)
                 SELECT value ->> '$.run_id', value ->> '$.step_key', value ->> '$.attempt',
                        value ->> '$.level', value ->> '$.message',
                        CASE WHEN value ->> '$.fields' IS NULL THEN NULL ELSE value -> '$.fields' END,
                        value ->> '$.ts'
                 FROM json_each(?1)",
            )
            .bind(serde_json::to_string(&plan.logs)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }

    async fn renew_leases(
        &self,
        leases: &[Fence],
        lease_ttl: Duration,
    ) -> EngineResult<Vec<RunId>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let expires = format_ts(Utc::now() + lease_ttl);
        let leases: Vec<Value> = leases
            .iter()
            .map(|fence| serde_json::json!({"id": fence.run_id, "epoch": fence.epoch}))
            .collect();
        let mut writer = self.writer().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE workflow_runs SET lease_expires_at = ?2
             WHERE status = 'running' AND (id, lease_epoch) IN
                 (SELECT value ->> '$.id', value ->> '$.epoch' FROM json_each(?1))
             RETURNING id",
        )
        .bind(serde_json::to_string(&leases)?)
        .bind(expires)
        .fetch_all(&mut *writer)
        .await?;
        ids.iter().map(|id| parse_run_id(id)).collect()
    }

    async fn release_leases(&self, owner: &str) -> EngineResult<u64> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let released = sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', wake_at = ?2, lease_owner = NULL,
                 lease_expires_at = NULL, updated_at = ?2
             WHERE lease_owner = ?1 AND status = 'running'",
        )
        .bind(owner)
        .bind(now)
        .execute(&mut *writer)
        .await?
        .rows_affected();
        Ok(released)
    }

    async fn next_due_at(
        &self,
        workflows: &[(String, u32)],
    ) -> EngineResult<Option<DateTime<Utc>>> {
        let keys = workflow_keys(workflows);
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(due) FROM (
                 SELECT MIN(wake_at) AS due FROM workflow_runs
                 WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting') AND wake_at IS NOT NULL
                   AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?1))
                 UNION ALL
                 SELECT MIN(lease_expires_at) FROM workflow_runs
                 WHERE status = 'running'
                   AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?1)))",
        )
        .bind(keys)
        .fetch_one(&self.readers)
        .await?;
        parse_opt_ts(next)
    }

    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = deliver_event(&mut tx, key, &payload, &now).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>> {
        let payload: Option<String> =
            sqlx::query_scalar("SELECT payload FROM workflow_events WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.readers)
                .await?;
        parse_json(payload)
    }

    async fn cancel_run(&self, run_id: RunId) -> EngineResult<()> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let cancelled: Option<FinishedRow> = sqlx::query_as(
            "UPDATE workflow_runs SET status = 'cancelled', error = 'cancelled by operator',
                 completed_at = ?2, updated_at = ?2, lease_owner = NULL, lease_expires_at = NULL,
                 wait_event_key = NULL
             WHERE id = ?1 AND status NOT IN ('completed', 'failed', 'cancelled')
             RETURNING id, parent_run_id, status, output, error",
        )
        .bind(run_id.to_string())
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await?;
        match cancelled {
            Some(row) => {
                notify_parents(&mut tx, &[row], &now).await?;
                tx.commit().await?;
                Ok(())
            }
            None => {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = ?1")
                        .bind(run_id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                match status {
                    None => Err(EngineError::RunNotFound(run_id)),
                    Some(status) => Err(EngineError::InvalidState {
                        run: run_id,
                        status,
                        reason: "only a run that has not ended can be cancelled".into(),
                    }),
                }
            }
        }
    }

    async fn resume_run(&self, run_id: RunId) -> EngineResult<()> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let resumed = sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', wake_at = ?2, error = NULL, output = NULL,
                 completed_at = NULL, updated_at = ?2
             WHERE id = ?1 AND status IN ('failed', 'cancelled')",
        )
        .bind(run_id.to_string())
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if resumed == 0 {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = ?1")
                    .bind(run_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Err(match status {
                None => EngineError::RunNotFound(run_id),
                Some(status) => EngineError::InvalidState {
                    run: run_id,
                    status,
                    reason: "only a failed or cancelled run can be resumed".into(),
                },
            });
        }
        // Failed steps run again from their first attempt; completed ones are kept.
        sqlx::query("DELETE FROM workflow_steps WHERE run_id = ?1 AND status <> 'completed'")
            .bind(run_id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM workflow_events WHERE key = ?1")
            .bind(child_finished_event_key(run_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fork_run(&self, run_id: RunId, from_step: &str) -> EngineResult<RunId> {
        let now = format_ts(Utc::now());
        let new_id = RunId::new();
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM workflow_runs WHERE id = ?1")
            .bind(run_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            tx.rollback().await?;
            return Err(EngineError::RunNotFound(run_id));
        }
        let from_seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM workflow_steps WHERE run_id = ?1 AND step_key = ?2",
        )
        .bind(run_id.to_string())
        .bind(from_step)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(from_seq) = from_seq else {
            tx.rollback().await?;
            return Err(EngineError::InvalidState {
                run: run_id,
                status: "unchanged".into(),
                reason: format!("it has no step '{from_step}' to fork from"),
            });
        };
        sqlx::query(
            "INSERT INTO workflow_runs (id, workflow, workflow_version, input, queue, priority,
                 metadata, status, wake_at, created_at, updated_at)
             SELECT ?2, workflow, workflow_version, input, queue, priority,
                    json_set(metadata, '$.forked_from', ?1, '$.forked_from_step', ?3),
                    'pending', ?4, ?4, ?4
             FROM workflow_runs WHERE id = ?1",
        )
        .bind(run_id.to_string())
        .bind(new_id.to_string())
        .bind(from_step)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workflow_steps (run_id, step_key, seq, status, output, error, attempts,
                 next_attempt_at, executor, started_at, completed_at)
             SELECT ?2, step_key, seq, status, output, error, attempts, next_attempt_at, executor,
                    started_at, completed_at
             FROM workflow_steps WHERE run_id = ?1 AND seq < ?3 AND status = 'completed'",
        )
        .bind(run_id.to_string())
        .bind(new_id.to_string())
        .bind(from_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new_id)
    }

    async fn get_run(&self, run_id: RunId) -> EngineResult<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM workflow_runs WHERE id = ?1")
            .bind(run_id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> EngineResult<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)
             ORDER BY created_at DESC, id DESC LIMIT ?3",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .bind(filter.limit.unwrap_or(50) as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn prune_finished(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
        dry_run: bool,
    ) -> EngineResult<PruneReport> {
        let cutoff = format_ts(cutoff);
        let mut report = PruneReport::default();
        if dry_run {
            let (runs, steps, logs): (i64, i64, i64) = sqlx::query_as(
                "WITH doomed AS (SELECT id FROM workflow_runs
                     WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < ?1)
                 SELECT (SELECT COUNT(*) FROM doomed),
                        (SELECT COUNT(*) FROM workflow_steps WHERE run_id IN (SELECT id FROM doomed)),
                        (SELECT COUNT(*) FROM workflow_logs WHERE run_id IN (SELECT id FROM doomed))",
            )
            .bind(&cutoff)
            .fetch_one(&self.readers)
            .await?;
            report.runs = runs as u64;
            report.steps = steps as u64;
            report.logs = logs as u64;
            return Ok(report);
        }
        loop {
            // One short write transaction per batch; the writer lock is released between
            // batches so checkpoints and claims keep flowing.
            let mut writer = self.writer().await?;
            let batch_started = std::time::Instant::now();
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM workflow_runs
                 WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < ?1
                 ORDER BY completed_at LIMIT ?2",
            )
            .bind(&cutoff)
            .bind(batch_size as i64)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                tx.commit().await?;
                return Ok(report);
            }
            let ids_json = serde_json::to_string(&ids)?;
            let event_keys: Vec<String> = ids
                .iter()
                .map(|id| parse_run_id(id).map(child_finished_event_key))
                .collect::<EngineResult<_>>()?;
            report.logs += sqlx::query(
                "DELETE FROM workflow_logs WHERE run_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids_json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            report.steps += sqlx::query(
                "DELETE FROM workflow_steps WHERE run_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&ids_json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM workflow_events WHERE key IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(&event_keys)?)
            .execute(&mut *tx)
            .await?;
            report.runs += sqlx::query(
                "DELETE FROM workflow_runs WHERE id IN (SELECT value FROM json_each(?1))
                   AND status IN ('completed', 'failed', 'cancelled')",
            )
            .bind(&ids_json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            report.batches += 1;
            drop(writer);
            // Retention is never urgent: give the single writer to everyone else for as
            // long as the batch held it, so live work keeps at least half of it.
            tokio::time::sleep(batch_started.elapsed()).await;
        }
    }

    async fn set_queue_limit(&self, queue: &str, limit: Option<u32>) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        sqlx::query(
            "INSERT INTO workflow_queues (name, concurrency_limit, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit,
                 updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(limit.map(i64::from))
        .bind(format_ts(Utc::now()))
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    async fn list_queues(&self) -> EngineResult<Vec<QueueInfo>> {
        let rows: Vec<(String, Option<i64>, i64, i64, i64)> = sqlx::query_as(
            "WITH names AS (
                 SELECT name FROM workflow_queues
                 UNION SELECT DISTINCT queue FROM workflow_runs
                 WHERE status NOT IN ('completed', 'failed', 'cancelled'))
             SELECT names.name, q.concurrency_limit,
                    (SELECT COUNT(*) FROM workflow_runs r WHERE r.queue = names.name AND r.status = 'running'),
                    (SELECT COUNT(*) FROM workflow_runs r WHERE r.queue = names.name
                        AND r.status = 'retrying'),
                    (SELECT COUNT(*) FROM workflow_runs r WHERE r.queue = names.name
                        AND r.status IN ('pending', 'sleeping', 'waiting'))
             FROM names LEFT JOIN workflow_queues q ON q.name = names.name
             ORDER BY names.name",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, limit, running, retrying, queued)| QueueInfo {
                name,
                concurrency_limit: limit.map(|l| l as u32),
                running: running as u64,
                retrying: retrying as u64,
                queued: queued as u64,
            })
            .collect())
    }

    async fn seed_finished_runs(
        &self,
        workflow: &str,
        count: u64,
        completed_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        let at = format_ts(completed_at);
        let mut left = count;
        while left > 0 {
            let chunk = left.min(50_000);
            let mut writer = self.writer().await?;
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("DROP TABLE IF EXISTS temp.seed_ids")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "CREATE TEMP TABLE seed_ids AS
                 WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1),
                 h AS (SELECT lower(hex(randomblob(16))) AS hex FROM n)
                 SELECT substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-4' || substr(hex, 14, 3)
                        || '-a' || substr(hex, 18, 3) || '-' || substr(hex, 21, 12) AS id
                 FROM h",
            )
            .bind(chunk as i64)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO workflow_runs (id, workflow, input, output, status, created_at,
                     updated_at, completed_at)
                 SELECT id, ?1, '{}', '0', 'completed', ?2, ?2, ?2 FROM temp.seed_ids",
            )
            .bind(workflow)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO workflow_steps (run_id, step_key, seq, status, output, attempts,
                     started_at, completed_at)
                 SELECT id, 'seed', 0, 'completed', '0', 1, ?1, ?1 FROM temp.seed_ids",
            )
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, ts)
                 SELECT id, 'seed', 1, 3, 'seeded history', ?1 FROM temp.seed_ids",
            )
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DROP TABLE temp.seed_ids")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            left -= chunk;
        }
        // Fold the bulk load into the main file now, so the measurement that follows does
        // not pay for checkpointing it.
        let mut writer = self.writer().await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *writer)
            .await?;
        Ok(())
    }

    async fn add_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        validate_spec(spec).map_err(EngineError::InvalidSchedule)?;
        let columns = ScheduleColumns::of(spec);
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let inserted = bind_schedule(
            sqlx::query(
            "INSERT INTO workflow_schedules (name, workflow, input, cron_expr, timezone, every_ms,
                 overlap, catch_up, queue, priority, next_fire_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT (name) DO NOTHING",
            ),
            spec,
            &columns,
            next_fire_at,
            &now,
        )
        .execute(&mut *writer)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(EngineError::ScheduleExists(spec.name.clone()));
        }
        Ok(())
    }

    async fn sync_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<bool> {
        validate_spec(spec).map_err(EngineError::InvalidSchedule)?;
        let columns = ScheduleColumns::of(spec);
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        // One statement, so processes syncing the same file at once cannot race.
        let changed = bind_schedule(
            sqlx::query(
            "INSERT INTO workflow_schedules (name, workflow, input, cron_expr, timezone, every_ms,
                 overlap, catch_up, queue, priority, next_fire_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT (name) DO UPDATE SET workflow = excluded.workflow,
                 input = excluded.input, cron_expr = excluded.cron_expr,
                 timezone = excluded.timezone, every_ms = excluded.every_ms,
                 overlap = excluded.overlap, catch_up = excluded.catch_up,
                 queue = excluded.queue, priority = excluded.priority,
                 next_fire_at = excluded.next_fire_at, queued_tick = NULL,
                 updated_at = excluded.updated_at
             WHERE workflow IS NOT excluded.workflow OR input IS NOT excluded.input
                OR cron_expr IS NOT excluded.cron_expr OR timezone IS NOT excluded.timezone
                OR every_ms IS NOT excluded.every_ms OR overlap IS NOT excluded.overlap
                OR catch_up IS NOT excluded.catch_up OR queue IS NOT excluded.queue
                OR priority IS NOT excluded.priority",
            ),
            spec,
            &columns,
            next_fire_at,
            &now,
        )
        .execute(&mut *writer)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        let changed = sqlx::query(
            "UPDATE workflow_schedules SET paused = ?2, queued_tick = NULL,
                 next_fire_at = CASE WHEN ?2 THEN next_fire_at ELSE ?3 END, updated_at = ?4
             WHERE name = ?1",
        )
        .bind(name)
        .bind(paused)
        .bind(format_ts(next_fire_at))
        .bind(format_ts(Utc::now()))
        .execute(&mut *writer)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(EngineError::ScheduleNotFound(name.to_owned()));
        }
        Ok(())
    }

    async fn delete_schedule(&self, name: &str) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        let deleted = sqlx::query("DELETE FROM workflow_schedules WHERE name = ?1")
            .bind(name)
            .execute(&mut *writer)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(EngineError::ScheduleNotFound(name.to_owned()));
        }
        Ok(())
    }

    async fn get_schedule(&self, name: &str) -> EngineResult<Option<ScheduleRecord>> {
        let row = sqlx::query("SELECT * FROM workflow_schedules WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn list_schedules(&self) -> EngineResult<Vec<ScheduleRecord>> {
        let rows = sqlx::query("SELECT * FROM workflow_schedules ORDER BY name")
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn fire_due_schedules(
        &self,
        now: DateTime<Utc>,
        workflows: &[(String, u32)],
    ) -> EngineResult<Vec<FiredRun>> {
        let now_text = format_ts(now);
        let versions: HashMap<&str, u32> = workflows
            .iter()
            .map(|(name, version)| (name.as_str(), *version))
            .collect();
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT * FROM workflow_schedules
             WHERE NOT paused AND (next_fire_at <= ?1 OR queued_tick IS NOT NULL)
             ORDER BY next_fire_at LIMIT 100",
        )
        .bind(&now_text)
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = Vec::new();
        for row in &rows {
            let schedule = schedule_from_row(row)?;
            let Some(version) = versions.get(schedule.spec.workflow.as_str()) else {
                continue; // Another process may know this workflow.
            };
            let previous_running = match schedule.last_run_id {
                Some(run_id) => {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = ?1")
                            .bind(run_id.to_string())
                            .fetch_optional(&mut *tx)
                            .await?;
                    status.is_some_and(|s| !decode_status(&s).is_ok_and(RunStatus::is_terminal))
                }
                None => false,
            };
            let plan = plan_fires(
                &schedule.spec,
                schedule.next_fire_at,
                schedule.queued_tick,
                previous_running,
                now,
            );
            let mut last = None;
            for tick in &plan.fire {
                let key = tick_idempotency_key(&schedule.spec.name, *tick);
                let metadata = serde_json::json!({"schedule": schedule.spec.name, "tick": tick});
                let new_id = RunId::new();
                sqlx::query(
                    "INSERT INTO workflow_runs (id, workflow, workflow_version, input,
                         idempotency_key, queue, priority, metadata, status, wake_at, created_at,
                         updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?9, ?9)
                     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                )
                .bind(new_id.to_string())
                .bind(&schedule.spec.workflow)
                .bind(*version as i64)
                .bind(schedule.spec.input.to_string())
                .bind(&key)
                .bind(&schedule.spec.queue)
                .bind(schedule.spec.priority as i64)
                .bind(metadata.to_string())
                .bind(&now_text)
                .execute(&mut *tx)
                .await?;
                let run_id: String =
                    sqlx::query_scalar("SELECT id FROM workflow_runs WHERE idempotency_key = ?1")
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                let run_id = parse_run_id(&run_id)?;
                fired.push(FiredRun {
                    schedule: schedule.spec.name.clone(),
                    tick: *tick,
                    run_id,
                });
                last = Some((*tick, run_id));
            }
            sqlx::query(
                "UPDATE workflow_schedules SET next_fire_at = ?2, queued_tick = ?3,
                     last_fire_at = COALESCE(?4, last_fire_at),
                     last_run_id = COALESCE(?5, last_run_id), updated_at = ?6
                 WHERE name = ?1",
            )
            .bind(&schedule.spec.name)
            .bind(format_ts(plan.next_fire_at))
            .bind(plan.queued_tick.map(format_ts))
            .bind(last.map(|(tick, _)| format_ts(tick)))
            .bind(last.map(|(_, run_id)| run_id.to_string()))
            .bind(&now_text)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(fired)
    }

    async fn next_schedule_due(&self) -> EngineResult<Option<DateTime<Utc>>> {
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN queued_tick IS NOT NULL THEN ?1 ELSE next_fire_at END)
             FROM workflow_schedules WHERE NOT paused",
        )
        .bind(format_ts(Utc::now()))
        .fetch_one(&self.readers)
        .await?;
        parse_opt_ts(next)
    }

    async fn schedule_runs(&self, name: &str, limit: u64) -> EngineResult<Vec<RunRecord>> {
        let prefix = format!("schedule:{name}:");
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs WHERE substr(idempotency_key, 1, length(?1)) = ?1
             ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(&prefix)
        .bind(limit as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_runs(&self, filter: &RunFilter) -> EngineResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .fetch_one(&self.readers)
        .await?;
        Ok(count as u64)
    }

    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_logs
             WHERE (?1 IS NULL OR run_id = ?1)
               AND (?2 IS NULL OR step_key = ?2)
               AND (?3 IS NULL OR level >= ?3)
               AND (?4 IS NULL OR ts >= ?4)
               AND (?5 IS NULL OR ts < ?5)
               AND (?6 IS NULL OR id IN (SELECT rowid FROM workflow_logs_fts WHERE workflow_logs_fts MATCH ?6))
               AND (?7 IS NULL OR id > ?7)
             ORDER BY id LIMIT ?8 OFFSET ?9",
        )
        .bind(query.run_id.map(|id| id.to_string()))
        .bind(&query.step_key)
        .bind(query.min_level.map(|l| l.as_i16() as i64))
        .bind(query.since.map(format_ts))
        .bind(query.until.map(format_ts))
        .bind(query.text.as_deref().map(fts_phrase))
        .bind(query.after_id)
        .bind(query.limit.unwrap_or(1000) as i64)
        .bind(query.offset as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(log_from_row).collect()
    }

    async fn reserve_budget(
        &self,
        budget: &str,
        reservation_key: &str,
        amount: i64,
        limit: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<BudgetReservation> {
        if amount <= 0 {
            return Err(EngineError::InvalidState {
                run: run_id.unwrap_or_default(),
                status: "unchanged".into(),
                reason: format!("budget reservation amount must be positive, got {amount}"),
            });
        }
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT amount FROM workflow_budget_reservations
             WHERE budget = ?1 AND reservation_key = ?2",
        )
        .bind(budget)
        .bind(reservation_key)
        .fetch_optional(&mut *tx)
        .await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0) FROM workflow_budget_reservations WHERE budget = ?1",
        )
        .bind(budget)
        .fetch_one(&mut *tx)
        .await?;
        if existing.is_some() {
            tx.commit().await?;
            return Ok(BudgetReservation {
                granted: true,
                used,
            });
        }
        if used.saturating_add(amount) > limit {
            tx.commit().await?;
            return Ok(BudgetReservation {
                granted: false,
                used,
            });
        }
        sqlx::query(
            "INSERT INTO workflow_budget_reservations (budget, reservation_key, amount, run_id,
                 created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(budget)
        .bind(reservation_key)
        .bind(amount)
        .bind(run_id.map(|id| id.to_string()))
        .bind(format_ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BudgetReservation {
            granted: true,
            used: used + amount,
        })
    }

    async fn release_budget(&self, budget: &str, reservation_key: &str) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        sqlx::query(
            "DELETE FROM workflow_budget_reservations WHERE budget = ?1 AND reservation_key = ?2",
        )
        .bind(budget)
        .bind(reservation_key)
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    async fn budget_used(&self, budget: &str) -> EngineResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0) FROM workflow_budget_reservations WHERE budget = ?1",
        )
        .bind(budget)
        .fetch_one(&self.readers)
        .await?)
    }

    async fn put_document(
        &self,
        collection: &str,
        key: &str,
        body: &Value,
        expected_version: Option<i64>,
    ) -> EngineResult<Document> {
        check_key(collection, key)?;
        let now = format_ts(Utc::now());
        let mut writer = self.writer.lock().await;
        let written = match expected_version {
            None => {
                sqlx::query(
                    "INSERT INTO workflow_documents (collection, key, body, version, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 1, ?4, ?4)
                     ON CONFLICT (collection, key) DO NOTHING
                     RETURNING *",
                )
                .bind(collection)
                .bind(key)
                .bind(body.to_string())
                .bind(&now)
                .fetch_optional(&mut *writer)
                .await?
            }
            Some(expected) => {
                sqlx::query(
                    "UPDATE workflow_documents SET body = ?3, version = version + 1, updated_at = ?5
                     WHERE collection = ?1 AND key = ?2 AND version = ?4
                     RETURNING *",
                )
                .bind(collection)
                .bind(key)
                .bind(body.to_string())
                .bind(expected)
                .bind(&now)
                .fetch_optional(&mut *writer)
                .await?
            }
        };
        match written {
            Some(row) => document_from_row(&row),
            None => {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM workflow_documents WHERE collection = ?1 AND key = ?2",
                )
                .bind(collection)
                .bind(key)
                .fetch_optional(&mut *writer)
                .await?;
                Err(EngineError::DocumentConflict {
                    collection: collection.to_owned(),
                    key: key.to_owned(),
                    expected: expected_version,
                    found,
                })
            }
        }
    }

    async fn get_document(&self, collection: &str, key: &str) -> EngineResult<Option<Document>> {
        let row =
            sqlx::query("SELECT * FROM workflow_documents WHERE collection = ?1 AND key = ?2")
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.readers)
                .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn list_documents(&self, query: &DocumentQuery) -> EngineResult<Vec<Document>> {
        query.validate()?;
        // The field name is a validated identifier, so it can be spliced into the path.
        let (path, value) = match &query.field_equals {
            Some((field, value)) => (Some(format!("$.\"{field}\"")), Some(value.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM workflow_documents
             WHERE collection = ?1
               AND (?2 IS NULL OR (json_type(body, ?2) = 'text' AND json_extract(body, ?2) = ?3))
             ORDER BY created_at DESC, key DESC LIMIT ?4",
        )
        .bind(&query.collection)
        .bind(path)
        .bind(value)
        .bind(query.limit.unwrap_or(DEFAULT_DOCUMENT_LIMIT) as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    async fn delete_document(
        &self,
        collection: &str,
        key: &str,
        expected_version: Option<i64>,
    ) -> EngineResult<bool> {
        check_key(collection, key)?;
        let mut writer = self.writer.lock().await;
        let deleted = sqlx::query(
            "DELETE FROM workflow_documents
             WHERE collection = ?1 AND key = ?2 AND (?3 IS NULL OR version = ?3)",
        )
        .bind(collection)
        .bind(key)
        .bind(expected_version)
        .execute(&mut *writer)
        .await?
        .rows_affected();
        if deleted == 0 {
            if let Some(expected) = expected_version {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM workflow_documents WHERE collection = ?1 AND key = ?2",
                )
                .bind(collection)
                .bind(key)
                .fetch_optional(&mut *writer)
                .await?;
                if found.is_some() {
                    return Err(EngineError::DocumentConflict {
                        collection: collection.to_owned(),
                        key: key.to_owned(),
                        expected: Some(expected),
                        found,
                    });
                }
            }
        }
        Ok(deleted > 0)
    }
}
