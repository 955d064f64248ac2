//! [`ScheduleStore`] on Postgres.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Postgres;
use uuid::Uuid;

use super::events::notify;
use super::rows::{decode_status, run_from_row, schedule_from_row};
use super::runs::status_of;
use super::PostgresWorld;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{RunRecord, RunStatus};
use crate::schedule::{
    plan_fires, tick_idempotency_key, validate_spec, FiredRun, ScheduleColumns, ScheduleRecord,
    ScheduleSpec,
};
use crate::store::ScheduleStore;

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
}
