//! [`ScheduleStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use super::events::notify;
use super::runs::status_of;
use super::PostgresWorld;
use super::SCHEDULE_CHANNEL;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::RunRecord;
use crate::schedule::{
    validate_spec, FirePlan, FiredRun, ScheduleColumns, ScheduleRecord, ScheduleSpec,
};
use crate::store::rows::{run_from_row, schedule_from_row};
use crate::store::schedules::{self, ScheduleTx};
use crate::store::ScheduleStore;

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds a schedule definition to `$1`–`$11` (name … next_fire_at) and the heartbeat URL
/// to `$12`, the column order both schedule writes use.
fn bind_schedule<'q>(
    query: PgQuery<'q>,
    columns: &'q ScheduleColumns,
    next_fire_at: DateTime<Utc>,
) -> PgQuery<'q> {
    query
        .bind(&columns.name)
        .bind(&columns.workflow)
        .bind(&columns.input)
        .bind(&columns.cron_expr)
        .bind(&columns.timezone)
        .bind(columns.every_ms)
        .bind(&columns.overlap)
        .bind(&columns.catch_up)
        .bind(&columns.queue)
        .bind(columns.priority)
        .bind(next_fire_at)
        .bind(&columns.heartbeat_url)
}

impl PostgresWorld {
    /// Tells every scheduler (`LISTEN` on [`SCHEDULE_CHANNEL`]) that a schedule may fire
    /// sooner than it thought. Best effort: a lost notification only delays the schedule
    /// to the schedulers' fallback pass.
    async fn notify_schedulers(&self) {
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(SCHEDULE_CHANNEL)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%error, "could not notify the schedulers of a schedule change");
        }
    }
}

#[async_trait]
impl ScheduleStore for PostgresWorld {
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
                 overlap, catch_up, queue, priority, next_fire_at, heartbeat_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (name) DO NOTHING",
            ),
            &columns,
            next_fire_at,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(EngineError::ScheduleExists(spec.name.clone()));
        }
        self.notify_schedulers().await;
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
                 every_ms, overlap, catch_up, queue, priority, next_fire_at, heartbeat_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (name) DO UPDATE SET workflow = excluded.workflow,
                 input = excluded.input, cron_expr = excluded.cron_expr,
                 timezone = excluded.timezone, every_ms = excluded.every_ms,
                 overlap = excluded.overlap, catch_up = excluded.catch_up,
                 queue = excluded.queue, priority = excluded.priority,
                 heartbeat_url = excluded.heartbeat_url,
                 next_fire_at = excluded.next_fire_at, queued_tick = NULL, updated_at = now()
             WHERE (s.workflow, s.input, s.cron_expr, s.timezone, s.every_ms, s.overlap,
                    s.catch_up, s.queue, s.priority, s.heartbeat_url)
                 IS DISTINCT FROM (excluded.workflow, excluded.input, excluded.cron_expr,
                    excluded.timezone, excluded.every_ms, excluded.overlap, excluded.catch_up,
                    excluded.queue, excluded.priority, excluded.heartbeat_url)",
            ),
            &columns,
            next_fire_at,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed > 0 {
            self.notify_schedulers().await;
        }
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
        if !paused {
            self.notify_schedulers().await;
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
        let mut tx = self.pool.begin().await?;
        let fired = schedules::fire_due_schedules(&mut *tx, now, workflows).await?;
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
}

#[async_trait]
impl ScheduleTx for PgConnection {
    async fn due_schedules(
        &mut self,
        now: DateTime<Utc>,
        workflows: &[String],
    ) -> EngineResult<Vec<ScheduleRecord>> {
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
        .bind(workflows)
        .fetch_all(&mut *self)
        .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn run_status(&mut self, run_id: RunId) -> EngineResult<Option<String>> {
        status_of(self, run_id).await
    }

    async fn insert_tick_run(
        &mut self,
        spec: &ScheduleSpec,
        workflow_version: u32,
        key: &str,
        metadata: &Value,
        new_id: RunId,
    ) -> EngineResult<RunId> {
        sqlx::query(
            "INSERT INTO workflow_runs (id, workflow, workflow_version, input,
                 idempotency_key, queue, priority, metadata, status, wake_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', now())
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(new_id.0)
        .bind(&spec.workflow)
        .bind(workflow_version as i32)
        .bind(&spec.input)
        .bind(key)
        .bind(&spec.queue)
        .bind(spec.priority)
        .bind(metadata)
        .execute(&mut *self)
        .await?;
        let run_id: Uuid =
            sqlx::query_scalar("SELECT id FROM workflow_runs WHERE idempotency_key = $1")
                .bind(key)
                .fetch_one(&mut *self)
                .await?;
        Ok(RunId(run_id))
    }

    async fn advance(
        &mut self,
        name: &str,
        plan: &FirePlan,
        last: Option<(DateTime<Utc>, RunId)>,
    ) -> EngineResult<()> {
        sqlx::query(
            "UPDATE workflow_schedules SET next_fire_at = $2, queued_tick = $3,
                 last_fire_at = COALESCE($4, last_fire_at),
                 last_run_id = COALESCE($5, last_run_id), updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(plan.next_fire_at)
        .bind(plan.queued_tick)
        .bind(last.map(|(tick, _)| tick))
        .bind(last.map(|(_, run_id)| run_id.0))
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
