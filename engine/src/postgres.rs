//! The PostgreSQL adapter: many workers on many hosts against one database. Claims use
//! `FOR UPDATE SKIP LOCKED`; fenced writes lock their runs' rows (in id order, so two
//! batches never deadlock) and check the lease epoch; wake-ups go out with `NOTIFY`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::batch::{child_finished_event_key, child_finished_payload, BatchPlan};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The channel workers `LISTEN` on; a notification means "a run may be claimable".
pub const WAKE_CHANNEL: &str = "morpheus_runs";

/// How long a session may sit idle inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

/// PostgreSQL-backed [`World`].
pub struct PostgresWorld {
    pool: PgPool,
}

impl PostgresWorld {
    /// Connects to `url`, checks that the schema is not newer than this binary, and
    /// applies pending migrations (under Postgres's advisory migration lock).
    pub async fn connect(url: &str, max_connections: u32) -> EngineResult<Self> {
        // A worker frozen (SIGSTOP, VM pause) inside a transaction would keep its run rows
        // locked, and a locked row cannot be claimed even after its lease expired: the
        // server ends such a session, releasing the locks. Engine transactions last
        // milliseconds, so the bound never hurts a live worker.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.options([(
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        )]);
        // One direct connection first: its error names the real cause (connection
        // refused, bad password, unknown database) instead of a pool timeout.
        PgConnection::connect_with(&options).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        check_schema_not_newer(&pool).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// A listener subscribed to [`WAKE_CHANNEL`], on its own connection.
    pub async fn wake_listener(&self) -> EngineResult<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(WAKE_CHANNEL).await?;
        Ok(listener)
    }

    /// The connection pool (for tests and tools that need raw SQL).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn check_schema_not_newer(pool: &PgPool) -> EngineResult<()> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if table.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?;
    let supported = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    match found {
        Some(found) if found > supported => Err(EngineError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

fn decode_status(text: &str) -> EngineResult<RunStatus> {
    text.parse().map_err(|error: crate::error::UnknownName| {
        EngineError::Database(sqlx::Error::Decode(error.into()))
    })
}

/// Claims up to `take` due runs of one queue in one of `statuses`, by priority and due
/// time (the caller holds the queue's row lock, so counting and claiming are atomic).
async fn claim_due_in_queue(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    request: &ClaimRequest,
    keys: &[String],
    queue: &str,
    statuses: &[&str],
    take: i64,
) -> EngineResult<Vec<PgRow>> {
    Ok(sqlx::query(
        "WITH ready AS (
             SELECT id FROM workflow_runs
             WHERE status = ANY($6) AND wake_at <= now() AND queue = $5
               AND workflow || '@' || workflow_version = ANY($3)
             ORDER BY priority DESC, wake_at, id LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE workflow_runs r
         SET status = 'running', lease_owner = $1, lease_epoch = r.lease_epoch + 1,
             lease_expires_at = now() + make_interval(secs => $4),
             wait_event_key = NULL, updated_at = now()
         FROM ready WHERE r.id = ready.id
         RETURNING r.*",
    )
    .bind(&request.owner)
    .bind(take)
    .bind(keys)
    .bind(request.lease_ttl.as_secs_f64())
    .bind(queue)
    .bind(statuses)
    .fetch_all(&mut **tx)
    .await?)
}

fn run_from_row(row: &PgRow) -> EngineResult<RunRecord> {
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

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds a schedule definition to `$1`–`$11` (name … next_fire_at), the column order both
/// schedule writes use.
fn bind_schedule<'q>(
    query: PgQuery<'q>,
    spec: &'q ScheduleSpec,
    columns: &'q ScheduleColumns,
    next_fire_at: DateTime<Utc>,
) -> PgQuery<'q> {
    query
        .bind(&spec.name)
        .bind(&spec.workflow)
        .bind(&spec.input)
        .bind(&columns.cron_expr)
        .bind(&columns.timezone)
        .bind(columns.every_ms)
        .bind(columns.overlap)
        .bind(columns.catch_up)
        .bind(&spec.queue)
        .bind(spec.priority)
        .bind(next_fire_at)
}

fn schedule_from_row(row: &PgRow) -> EngineResult<ScheduleRecord> {
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

fn step_from_row(row: &PgRow) -> EngineResult<StepRecord> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: RunId(row.try_get("run_id")?),
        step_key: row.try_get("step_key")?,
        seq: row.try_get::<i32, _>("seq")? as i64,
        status: status.parse().map_err(|error: crate::error::UnknownName| {
            EngineError::Database(sqlx::Error::Decode(error.into()))
        })?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        executor: row.try_get("executor")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

fn log_from_row(row: &PgRow) -> EngineResult<LogRecord> {
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

fn document_from_row(row: &PgRow) -> EngineResult<Document> {
    Ok(Document {
        collection: row.try_get("collection")?,
        key: row.try_get("key")?,
        body: row.try_get("body")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn workflow_keys(workflows: &[(String, u32)]) -> Vec<String> {
    workflows
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect()
}

/// Serializes event delivery and event parks for one key, so a delivery can never slip
/// between a waiter's "has it arrived?" check and its park.
async fn lock_event_key(tx: &mut Transaction<'_, Postgres>, key: &str) -> EngineResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('morpheus-event:' || $1))")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn deliver_event(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    payload: &Value,
) -> EngineResult<bool> {
    lock_event_key(tx, key).await?;
    let inserted = sqlx::query(
        "INSERT INTO workflow_events (key, payload) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(payload)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    let woken = sqlx::query(
        "UPDATE workflow_runs SET status = 'pending', wake_at = now(), wait_event_key = NULL,
             updated_at = now()
         WHERE status = 'waiting' AND wait_event_key = $1",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if woken > 0 {
        notify(tx).await?;
    }
    Ok(inserted)
}

async fn notify(tx: &mut Transaction<'_, Postgres>) -> EngineResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

type FinishedRow = (Uuid, Option<Uuid>, String, Option<Value>, Option<String>);

async fn notify_parents(
    tx: &mut Transaction<'_, Postgres>,
    finished: &[FinishedRow],
) -> EngineResult<()> {
    for (id, parent, status, output, error) in finished {
        if parent.is_none() {
            continue;
        }
        let key = child_finished_event_key(RunId(*id));
        let payload = child_finished_payload(status, output.as_ref(), error.as_deref());
        deliver_event(tx, &key, &payload).await?;
    }
    Ok(())
}

async fn status_of(
    tx: &mut Transaction<'_, Postgres>,
    run_id: RunId,
) -> EngineResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = $1")
            .bind(run_id.0)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

#[async_trait]
impl World for PostgresWorld {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn start_run(&self, run: NewRun) -> EngineResult<StartedRun> {
        let id = RunId::new();
        let mut tx = self.pool.begin().await?;
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO workflow_runs (id, workflow, workflow_version, input, idempotency_key,
                 parent_run_id, queue, priority, metadata, status, wake_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', now())
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(id.0)
        .bind(&run.workflow)
        .bind(run.workflow_version as i32)
        .bind(&run.input)
        .bind(&run.idempotency_key)
        .bind(run.parent_run_id.map(|p| p.0))
        .bind(&run.queue)
        .bind(run.priority)
        .bind(&run.metadata)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_some() {
            notify(&mut tx).await?;
            tx.commit().await?;
            return Ok(StartedRun {
                run_id: id,
                created: true,
            });
        }
        let existing: Uuid =
            sqlx::query_scalar("SELECT id FROM workflow_runs WHERE idempotency_key = $1")
                .bind(&run.idempotency_key)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(StartedRun {
            run_id: RunId(existing),
            created: false,
        })
    }

    async fn claim_runs(&self, request: &ClaimRequest) -> EngineResult<Vec<ClaimedRun>> {
        let keys = workflow_keys(&request.workflows);
        let mut tx = self.pool.begin().await?;
        let limited: Vec<(String, i32)> = sqlx::query_as(
            "SELECT name, concurrency_limit FROM workflow_queues
             WHERE concurrency_limit IS NOT NULL AND ($1::text[] IS NULL OR name = ANY($1))
             ORDER BY name",
        )
        .bind(&request.queues)
        .fetch_all(&mut *tx)
        .await?;
        let limited_names: Vec<String> = limited.iter().map(|(name, _)| name.clone()).collect();
        // One statement for the common case: stranded runs (expired leases) first, then
        // ready runs of unlimited queues by priority and due time, each locked with SKIP
        // LOCKED so concurrent claimers never wait on each other or take the same run.
        let mut rows = sqlx::query(
            "WITH expired AS (
                 SELECT id FROM workflow_runs
                 WHERE status = 'running' AND lease_expires_at < now()
                   AND workflow || '@' || workflow_version = ANY($3)
                   AND ($5::text[] IS NULL OR queue = ANY($5))
                 ORDER BY lease_expires_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), ready AS (
                 SELECT id FROM workflow_runs
                 WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting') AND wake_at <= now()
                   AND workflow || '@' || workflow_version = ANY($3)
                   AND ($5::text[] IS NULL OR queue = ANY($5))
                   AND NOT (queue = ANY($6))
                 ORDER BY priority DESC, wake_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), chosen AS (
                 SELECT id FROM expired UNION ALL SELECT id FROM ready LIMIT $2
             )
             UPDATE workflow_runs r
             SET status = 'running', lease_owner = $1, lease_epoch = r.lease_epoch + 1,
                 lease_expires_at = now() + make_interval(secs => $4), wait_event_key = NULL,
                 updated_at = now()
             FROM chosen WHERE r.id = chosen.id
             RETURNING r.*",
        )
        .bind(&request.owner)
        .bind(request.limit as i64)
        .bind(&keys)
        .bind(request.lease_ttl.as_secs_f64())
        .bind(&request.queues)
        .bind(&limited_names)
        .fetch_all(&mut *tx)
        .await?;
        let mut remaining = request.limit as i64 - rows.len() as i64;
        if !limited.is_empty() && remaining > 0 {
            // Limited queues: lock their rows (in name order) so claimers count and claim
            // one at a time; each count then sees every claim committed before it.
            sqlx::query(
                "SELECT name FROM workflow_queues WHERE name = ANY($1) ORDER BY name FOR UPDATE",
            )
            .bind(&limited_names)
            .execute(&mut *tx)
            .await?;
            // A run parked for a step retry keeps its slot (see `World::set_queue_limit`):
            // it is claimed again first, whatever the count.
            for (queue, limit) in &limited {
                if remaining <= 0 {
                    break;
                }
                let retries_due =
                    claim_due_in_queue(&mut tx, request, &keys, queue, &["retrying"], remaining)
                        .await?;
                remaining -= retries_due.len() as i64;
                rows.extend(retries_due);
                let holding: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM workflow_runs
                     WHERE status IN ('running', 'retrying') AND queue = $1",
                )
                .bind(queue)
                .fetch_one(&mut *tx)
                .await?;
                let take = (*limit as i64 - holding).min(remaining);
                if take <= 0 {
                    continue;
                }
                let claimed = claim_due_in_queue(
                    &mut tx,
                    request,
                    &keys,
                    queue,
                    &["pending", "sleeping", "waiting"],
                    take,
                )
                .await?;
                remaining -= claimed.len() as i64;
                rows.extend(claimed);
            }
        }
        tx.commit().await?;
        rows.iter()
            .map(|row| run_from_row(row).map(|run| ClaimedRun { run }))
            .collect()
    }

    async fn load_journal(&self, run_id: RunId) -> EngineResult<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM workflow_steps WHERE run_id = $1 ORDER BY seq")
            .bind(run_id.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
        let now = Utc::now();
        let fenced: Vec<Uuid> = BatchPlan::fenced_runs(&ops).iter().map(|id| id.0).collect();
        let mut tx = self.pool.begin().await?;
        // Lock the runs in id order: a claim, a cancel or another batch touching the same
        // run waits for this transaction, and two batches never deadlock.
        let held_rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT id, lease_epoch FROM workflow_runs
             WHERE id = ANY($1) AND status = 'running' ORDER BY id FOR UPDATE",
        )
        .bind(&fenced)
        .fetch_all(&mut *tx)
        .await?;
        let held: HashMap<RunId, i64> = held_rows
            .into_iter()
            .map(|(id, epoch)| (RunId(id), epoch))
            .collect();
        let mut plan = BatchPlan::new(ops, &held, now);

        for chunk in 0..plan.step_chunks.len() {
            let rows = serde_json::to_value(&plan.step_chunks[chunk])?;
            let applied: Vec<(Uuid, String)> = sqlx::query_as(
                "INSERT INTO workflow_steps AS s (run_id, step_key, seq, status, output, error,
                     attempts, next_attempt_at, executor, started_at, completed_at)
                 SELECT run_id, step_key, seq, status, output, error, attempts, next_attempt_at,
                        executor, started_at, completed_at
                 FROM jsonb_to_recordset($1) AS x(run_id uuid, step_key text, seq int,
                     status text, output jsonb, error text, attempts int,
                     next_attempt_at timestamptz, executor text, started_at timestamptz,
                     completed_at timestamptz)
                 ON CONFLICT (run_id, step_key) DO UPDATE SET
                     status = excluded.status, output = excluded.output, error = excluded.error,
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                     executor = excluded.executor, completed_at = excluded.completed_at
                 WHERE s.status <> 'completed'
                 RETURNING run_id, step_key",
            )
            .bind(rows)
            .fetch_all(&mut *tx)
            .await?;
            let applied_keys: HashSet<(RunId, String)> = applied
                .into_iter()
                .map(|(run_id, key)| (RunId(run_id), key))
                .collect();
            plan.mark_unapplied_steps(chunk, &applied_keys);
        }

        let mut wake_others = false;
        if !plan.transitions.is_empty() {
            let mut event_keys = plan.event_keys.clone();
            event_keys.sort();
            event_keys.dedup();
            for key in &event_keys {
                lock_event_key(&mut tx, key).await?;
            }
            let arrived: HashSet<String> = if event_keys.is_empty() {
                HashSet::new()
            } else {
                sqlx::query_scalar("SELECT key FROM workflow_events WHERE key = ANY($1)")
                    .bind(&event_keys)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect()
            };
            let now_text = crate::batch::format_ts(now);
            for row in &mut plan.transitions {
                if row
                    .wait_event_key
                    .as_ref()
                    .is_some_and(|key| arrived.contains(key))
                {
                    row.status = RunStatus::Pending.as_str();
                    row.wake_at = Some(now_text.clone());
                    row.wait_event_key = None;
                    wake_others = true;
                }
            }
            let finished: Vec<FinishedRow> = sqlx::query_as(
                "UPDATE workflow_runs r SET
                     status = t.status, wake_at = t.wake_at, wait_event_key = t.wait_event_key,
                     output = t.output, error = t.error, completed_at = t.completed_at,
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                 FROM jsonb_to_recordset($1) AS t(id uuid, status text, wake_at timestamptz,
                     wait_event_key text, output jsonb, error text, completed_at timestamptz)
                 WHERE r.id = t.id
                 RETURNING r.id, r.parent_run_id, r.status, r.output, r.error",
            )
            .bind(serde_json::to_value(&plan.transitions)?)
            .fetch_all(&mut *tx)
            .await?;
            let finished: Vec<FinishedRow> = finished
                .into_iter()
                .filter(|row| decode_status(&row.2).is_ok_and(RunStatus::is_terminal))
                .collect();
            notify_parents(&mut tx, &finished).await?;
        }

        if !plan.logs.is_empty() {
            sqlx::query(
                "INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, fields, ts)
                 SELECT run_id, step_key, attempt, level, message, fields, ts
                 FROM jsonb_to_recordset($1) AS x(run_id uuid, step_key text, attempt int,
                     level smallint, message text, fields jsonb, ts timestamptz)",
            )
            .bind(serde_json::to_value(&plan.logs)?)
            .execute(&mut *tx)
            .await?;
        }
        if wake_others {
            notify(&mut tx).await?;
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
        let ids: Vec<Uuid> = leases.iter().map(|fence| fence.run_id.0).collect();
        let epochs: Vec<i64> = leases.iter().map(|fence| fence.epoch).collect();
        let renewed: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE workflow_runs SET lease_expires_at = now() + make_interval(secs => $3)
             WHERE status = 'running'
               AND (id, lease_epoch) IN (SELECT * FROM unnest($1::uuid[], $2::bigint[]))
             RETURNING id",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(lease_ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(renewed.into_iter().map(RunId).collect())
    }

    async fn release_leases(&self, owner: &str) -> EngineResult<u64> {
        let mut tx = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', wake_at = now(), lease_owner = NULL,
                 lease_expires_at = NULL, updated_at = now()
             WHERE lease_owner = $1 AND status = 'running'",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released > 0 {
            notify(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn next_due_at(
        &self,
        workflows: &[(String, u32)],
    ) -> EngineResult<Option<DateTime<Utc>>> {
        let keys = workflow_keys(workflows);
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT LEAST(
                 (SELECT MIN(wake_at) FROM workflow_runs
                  WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting')
                    AND workflow || '@' || workflow_version = ANY($1)),
                 (SELECT MIN(lease_expires_at) FROM workflow_runs
                  WHERE status = 'running' AND workflow || '@' || workflow_version = ANY($1)))",
        )
        .bind(keys)
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = deliver_event(&mut tx, key, &payload).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>> {
        Ok(
            sqlx::query_scalar("SELECT payload FROM workflow_events WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn cancel_run(&self, run_id: RunId) -> EngineResult<()> {
        let mut tx = self.pool.begin().await?;
        let cancelled: Option<FinishedRow> = sqlx::query_as(
            "UPDATE workflow_runs SET status = 'cancelled', error = 'cancelled by operator',
                 completed_at = now(), updated_at = now(), lease_owner = NULL,
                 lease_expires_at = NULL, wait_event_key = NULL
             WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')
             RETURNING id, parent_run_id, status, output, error",
        )
        .bind(run_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        match cancelled {
            Some(row) => {
                notify_parents(&mut tx, &[row]).await?;
                tx.commit().await?;
                Ok(())
            }
            None => {
                let status = status_of(&mut tx, run_id).await?;
                tx.rollback().await?;
                Err(match status {
                    None => EngineError::RunNotFound(run_id),
                    Some(status) => EngineError::InvalidState {
                        run: run_id,
                        status,
                        reason: "only a run that has not ended can be cancelled".into(),
                    },
                })
            }
        }
    }

    async fn resume_run(&self, run_id: RunId) -> EngineResult<()> {
        let mut tx = self.pool.begin().await?;
        let resumed = sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', wake_at = now(), error = NULL,
                 output = NULL, completed_at = NULL, updated_at = now()
             WHERE id = $1 AND status IN ('failed', 'cancelled')",
        )
        .bind(run_id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if resumed == 0 {
            let status = status_of(&mut tx, run_id).await?;
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
        sqlx::query("DELETE FROM workflow_steps WHERE run_id = $1 AND status <> 'completed'")
            .bind(run_id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM workflow_events WHERE key = $1")
            .bind(child_finished_event_key(run_id))
            .execute(&mut *tx)
            .await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fork_run(&self, run_id: RunId, from_step: &str) -> EngineResult<RunId> {
        let new_id = RunId::new();
        let mut tx = self.pool.begin().await?;
        if status_of(&mut tx, run_id).await?.is_none() {
            tx.rollback().await?;
            return Err(EngineError::RunNotFound(run_id));
        }
        let from_seq: Option<i32> = sqlx::query_scalar(
            "SELECT seq FROM workflow_steps WHERE run_id = $1 AND step_key = $2",
        )
        .bind(run_id.0)
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
                 metadata, status, wake_at)
             SELECT $2, workflow, workflow_version, input, queue, priority,
                    metadata || jsonb_build_object('forked_from', $1::text, 'forked_from_step', $3::text),
                    'pending', now()
             FROM workflow_runs WHERE id = $1",
        )
        .bind(run_id.0)
        .bind(new_id.0)
        .bind(from_step)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workflow_steps (run_id, step_key, seq, status, output, error, attempts,
                 next_attempt_at, executor, started_at, completed_at)
             SELECT $2, step_key, seq, status, output, error, attempts, next_attempt_at, executor,
                    started_at, completed_at
             FROM workflow_steps WHERE run_id = $1 AND seq < $3 AND status = 'completed'",
        )
        .bind(run_id.0)
        .bind(new_id.0)
        .bind(from_seq)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(new_id)
    }

    async fn get_run(&self, run_id: RunId) -> EngineResult<Option<RunRecord>> {
        let row = sqlx::query("SELECT * FROM workflow_runs WHERE id = $1")
            .bind(run_id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> EngineResult<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .bind(filter.limit.unwrap_or(50) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn prune_finished(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
        dry_run: bool,
    ) -> EngineResult<PruneReport> {
        let mut report = PruneReport::default();
        if dry_run {
            let (runs, steps, logs): (i64, i64, i64) = sqlx::query_as(
                "WITH doomed AS (SELECT id FROM workflow_runs
                     WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < $1)
                 SELECT (SELECT COUNT(*) FROM doomed),
                        (SELECT COUNT(*) FROM workflow_steps WHERE run_id IN (SELECT id FROM doomed)),
                        (SELECT COUNT(*) FROM workflow_logs WHERE run_id IN (SELECT id FROM doomed))",
            )
            .bind(cutoff)
            .fetch_one(&self.pool)
            .await?;
            report.runs = runs as u64;
            report.steps = steps as u64;
            report.logs = logs as u64;
            return Ok(report);
        }
        loop {
            let mut tx = self.pool.begin().await?;
            // SKIP LOCKED: a run some transaction is still touching waits for the next pass.
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM workflow_runs
                 WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < $1
                 ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(cutoff)
            .bind(batch_size as i64)
            .fetch_all(&mut *tx)
            .await?;
            if ids.is_empty() {
                tx.commit().await?;
                return Ok(report);
            }
            let event_keys: Vec<String> = ids
                .iter()
                .map(|id| child_finished_event_key(RunId(*id)))
                .collect();
            report.logs += sqlx::query("DELETE FROM workflow_logs WHERE run_id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            report.steps += sqlx::query("DELETE FROM workflow_steps WHERE run_id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM workflow_events WHERE key = ANY($1)")
                .bind(&event_keys)
                .execute(&mut *tx)
                .await?;
            report.runs += sqlx::query("DELETE FROM workflow_runs WHERE id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            report.batches += 1;
        }
    }

    async fn set_queue_limit(&self, queue: &str, limit: Option<u32>) -> EngineResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workflow_queues (name, concurrency_limit) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit,
                 updated_at = now()",
        )
        .bind(queue)
        .bind(limit.map(|l| l as i32))
        .execute(&mut *tx)
        .await?;
        // A raised or removed limit may let waiting runs start.
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_queues(&self) -> EngineResult<Vec<QueueInfo>> {
        let rows: Vec<(String, Option<i32>, i64, i64, i64)> = sqlx::query_as(
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
        .fetch_all(&self.pool)
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
        let mut left = count;
        while left > 0 {
            let chunk = left.min(50_000);
            sqlx::query(
                "WITH runs AS (
                     INSERT INTO workflow_runs (id, workflow, input, output, status, created_at,
                         updated_at, completed_at)
                     SELECT gen_random_uuid(), $1, '{}', '0', 'completed', $3, $3, $3
                     FROM generate_series(1, $2)
                     RETURNING id
                 ), steps AS (
                     INSERT INTO workflow_steps (run_id, step_key, seq, status, output, attempts,
                         started_at, completed_at)
                     SELECT id, 'seed', 0, 'completed', '0', 1, $3, $3 FROM runs
                 )
                 INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, ts)
                 SELECT id, 'seed', 1, 3, 'seeded history', $3 FROM runs",
            )
            .bind(workflow)
            .bind(chunk as i64)
            .bind(completed_at)
            .execute(&self.pool)
            .await?;
            left -= chunk;
        }
        // Settle the bulk load (visibility map, statistics) now, so the measurement that
        // follows does not race autovacuum over it.
        sqlx::query("VACUUM ANALYZE workflow_runs, workflow_steps, workflow_logs")
            .execute(&self.pool)
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
        let inserted = bind_schedule(
            sqlx::query(
            "INSERT INTO workflow_schedules (name, workflow, input, cron_expr, timezone, every_ms,
                 overlap, catch_up, queue, priority, next_fire_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (name) DO NOTHING",
            ),
            spec,
            &columns,
            next_fire_at,
        )
        .execute(&self.pool)
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
        // One statement, so processes syncing the same file at once cannot race.
        let changed = bind_schedule(
            sqlx::query(
                "INSERT INTO workflow_schedules AS s (name, workflow, input, cron_expr, timezone,
                 every_ms, overlap, catch_up, queue, priority, next_fire_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (name) DO UPDATE SET workflow = excluded.workflow,
                 input = excluded.input, cron_expr = excluded.cron_expr,
                 timezone = excluded.timezone, every_ms = excluded.every_ms,
                 overlap = excluded.overlap, catch_up = excluded.catch_up,
                 queue = excluded.queue, priority = excluded.priority,
                 next_fire_at = excluded.next_fire_at, queued_tick = NULL, updated_at = now()
             WHERE (s.workflow, s.input, s.cron_expr, s.timezone, s.every_ms, s.overlap,
                    s.catch_up, s.queue, s.priority)
                 IS DISTINCT FROM (excluded.workflow, excluded.input, excluded.cron_expr,
                    excluded.timezone, excluded.every_ms, excluded.overlap, excluded.catch_up,
                    excluded.queue, excluded.priority)",
            ),
            spec,
            &columns,
            next_fire_at,
        )
        .execute(&self.pool)
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
        let changed = sqlx::query(
            "UPDATE workflow_schedules SET paused = $2, queued_tick = NULL,
                 next_fire_at = CASE WHEN $2 THEN next_fire_at ELSE $3 END, updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(paused)
        .bind(next_fire_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(EngineError::ScheduleNotFound(name.to_owned()));
        }
        Ok(())
    }

    async fn delete_schedule(&self, name: &str) -> EngineResult<()> {
        let deleted = sqlx::query("DELETE FROM workflow_schedules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(EngineError::ScheduleNotFound(name.to_owned()));
        }
        Ok(())
    }

    async fn get_schedule(&self, name: &str) -> EngineResult<Option<ScheduleRecord>> {
        let row = sqlx::query("SELECT * FROM workflow_schedules WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    async fn list_schedules(&self) -> EngineResult<Vec<ScheduleRecord>> {
        let rows = sqlx::query("SELECT * FROM workflow_schedules ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn fire_due_schedules(
        &self,
        now: DateTime<Utc>,
        workflows: &[(String, u32)],
    ) -> EngineResult<Vec<FiredRun>> {
        let versions: HashMap<&str, u32> = workflows
            .iter()
            .map(|(name, version)| (name.as_str(), *version))
            .collect();
        let names: Vec<String> = versions.keys().map(|name| (*name).to_owned()).collect();
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: each due schedule is handled by one scheduler at a time; the tick's
        // idempotency key is the backstop that makes a second start impossible anyway.
        let rows = sqlx::query(
            "SELECT * FROM workflow_schedules
             WHERE NOT paused AND (next_fire_at <= $1 OR queued_tick IS NOT NULL)
               AND workflow = ANY($2)
             ORDER BY next_fire_at LIMIT 100
             FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let mut fired = Vec::new();
        for row in &rows {
            let schedule = schedule_from_row(row)?;
            let Some(version) = versions.get(schedule.spec.workflow.as_str()) else {
                continue;
            };
            let previous_running = match schedule.last_run_id {
                Some(run_id) => status_of(&mut tx, run_id)
                    .await?
                    .is_some_and(|s| !decode_status(&s).is_ok_and(RunStatus::is_terminal)),
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
                sqlx::query(
                    "INSERT INTO workflow_runs (id, workflow, workflow_version, input,
                         idempotency_key, queue, priority, metadata, status, wake_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', now())
                     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                )
                .bind(RunId::new().0)
                .bind(&schedule.spec.workflow)
                .bind(*version as i32)
                .bind(&schedule.spec.input)
                .bind(&key)
                .bind(&schedule.spec.queue)
                .bind(schedule.spec.priority)
                .bind(&metadata)
                .execute(&mut *tx)
                .await?;
                let run_id: Uuid =
                    sqlx::query_scalar("SELECT id FROM workflow_runs WHERE idempotency_key = $1")
                        .bind(&key)
                        .fetch_one(&mut *tx)
                        .await?;
                fired.push(FiredRun {
                    schedule: schedule.spec.name.clone(),
                    tick: *tick,
                    run_id: RunId(run_id),
                });
                last = Some((*tick, run_id));
            }
            sqlx::query(
                "UPDATE workflow_schedules SET next_fire_at = $2, queued_tick = $3,
                     last_fire_at = COALESCE($4, last_fire_at),
                     last_run_id = COALESCE($5, last_run_id), updated_at = now()
                 WHERE name = $1",
            )
            .bind(&schedule.spec.name)
            .bind(plan.next_fire_at)
            .bind(plan.queued_tick)
            .bind(last.map(|(tick, _)| tick))
            .bind(last.map(|(_, run_id)| run_id))
            .execute(&mut *tx)
            .await?;
        }
        if !fired.is_empty() {
            notify(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(fired)
    }

    async fn next_schedule_due(&self) -> EngineResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(CASE WHEN queued_tick IS NOT NULL THEN now() ELSE next_fire_at END)
             FROM workflow_schedules WHERE NOT paused",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn schedule_runs(&self, name: &str, limit: u64) -> EngineResult<Vec<RunRecord>> {
        let prefix = format!("schedule:{name}:");
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs WHERE starts_with(idempotency_key, $1)
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(&prefix)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_runs(&self, filter: &RunFilter) -> EngineResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .fetch_one(&self.pool)
        .await?;
        Ok(count as u64)
    }

    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_logs
             WHERE ($1::uuid IS NULL OR run_id = $1)
               AND ($2::text IS NULL OR step_key = $2)
               AND ($3::smallint IS NULL OR level >= $3)
               AND ($4::timestamptz IS NULL OR ts >= $4)
               AND ($5::timestamptz IS NULL OR ts < $5)
               AND ($6::text IS NULL OR to_tsvector('simple', message) @@ phraseto_tsquery('simple', $6))
               AND ($7::bigint IS NULL OR id > $7)
             ORDER BY id LIMIT $8 OFFSET $9",
        )
        .bind(query.run_id.map(|id| id.0))
        .bind(&query.step_key)
        .bind(query.min_level.map(|l| l.as_i16()))
        .bind(query.since)
        .bind(query.until)
        .bind(&query.text)
        .bind(query.after_id)
        .bind(query.limit.unwrap_or(1000) as i64)
        .bind(query.offset as i64)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // Serializes reservations of one budget: the sum below then sees every
        // reservation committed before this one.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('morpheus-budget:' || $1))")
            .bind(budget)
            .execute(&mut *tx)
            .await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT amount FROM workflow_budget_reservations
             WHERE budget = $1 AND reservation_key = $2",
        )
        .bind(budget)
        .bind(reservation_key)
        .fetch_optional(&mut *tx)
        .await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM workflow_budget_reservations
             WHERE budget = $1",
        )
        .bind(budget)
        .fetch_one(&mut *tx)
        .await?;
        if existing.is_some() || used.saturating_add(amount) > limit {
            tx.commit().await?;
            return Ok(BudgetReservation {
                granted: existing.is_some(),
                used,
            });
        }
        sqlx::query(
            "INSERT INTO workflow_budget_reservations (budget, reservation_key, amount, run_id)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(budget)
        .bind(reservation_key)
        .bind(amount)
        .bind(run_id.map(|id| id.0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BudgetReservation {
            granted: true,
            used: used + amount,
        })
    }

    async fn release_budget(&self, budget: &str, reservation_key: &str) -> EngineResult<()> {
        sqlx::query(
            "DELETE FROM workflow_budget_reservations WHERE budget = $1 AND reservation_key = $2",
        )
        .bind(budget)
        .bind(reservation_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn budget_used(&self, budget: &str) -> EngineResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM workflow_budget_reservations
             WHERE budget = $1",
        )
        .bind(budget)
        .fetch_one(&self.pool)
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
        let written = match expected_version {
            None => {
                sqlx::query(
                    "INSERT INTO workflow_documents (collection, key, body, version)
                     VALUES ($1, $2, $3, 1)
                     ON CONFLICT (collection, key) DO NOTHING
                     RETURNING *",
                )
                .bind(collection)
                .bind(key)
                .bind(body)
                .fetch_optional(&self.pool)
                .await?
            }
            Some(expected) => sqlx::query(
                "UPDATE workflow_documents SET body = $3, version = version + 1, updated_at = now()
                     WHERE collection = $1 AND key = $2 AND version = $4
                     RETURNING *",
            )
            .bind(collection)
            .bind(key)
            .bind(body)
            .bind(expected)
            .fetch_optional(&self.pool)
            .await?,
        };
        match written {
            Some(row) => document_from_row(&row),
            None => {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM workflow_documents WHERE collection = $1 AND key = $2",
                )
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.pool)
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
            sqlx::query("SELECT * FROM workflow_documents WHERE collection = $1 AND key = $2")
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn list_documents(&self, query: &DocumentQuery) -> EngineResult<Vec<Document>> {
        query.validate()?;
        let (field, value) = match &query.field_equals {
            Some((field, value)) => (Some(field.as_str()), Some(value.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM workflow_documents
             WHERE collection = $1
               AND ($2::text IS NULL OR (jsonb_typeof(body -> $2) = 'string' AND body ->> $2 = $3))
             ORDER BY created_at DESC, key DESC LIMIT $4",
        )
        .bind(&query.collection)
        .bind(field)
        .bind(value)
        .bind(query.limit.unwrap_or(DEFAULT_DOCUMENT_LIMIT) as i64)
        .fetch_all(&self.pool)
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
        let deleted = sqlx::query(
            "DELETE FROM workflow_documents
             WHERE collection = $1 AND key = $2 AND ($3::bigint IS NULL OR version = $3)",
        )
        .bind(collection)
        .bind(key)
        .bind(expected_version)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if deleted == 0 {
            if let Some(expected) = expected_version {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM workflow_documents WHERE collection = $1 AND key = $2",
                )
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.pool)
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
