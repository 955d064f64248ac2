//! [`ScheduleStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Connection;

use super::rows::{parse_opt_ts, parse_run_id};
use super::{SqliteWorld, WriteTx};
use crate::batch::format_ts;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::RunRecord;
use crate::schedule::{
    validate_spec, FirePlan, FiredRun, ScheduleColumns, ScheduleRecord, ScheduleSpec,
};
use crate::store::rows::{run_from_row, schedule_from_row};
use crate::store::schedules::{self, ScheduleTx};
use crate::store::ScheduleStore;

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds a schedule definition to `?1`–`?11` (name … next_fire_at), the write time to
/// `?12` and the heartbeat URL to `?13`, the column order both schedule writes use. Differs from Postgres in encoding
/// only: JSON and times as TEXT, integers as 64-bit.
fn bind_schedule<'q>(
    query: SqliteQuery<'q>,
    columns: &'q ScheduleColumns,
    next_fire_at: DateTime<Utc>,
    now: &'q str,
) -> SqliteQuery<'q> {
    query
        .bind(&columns.name)
        .bind(&columns.workflow)
        .bind(columns.input.to_string())
        .bind(&columns.cron_expr)
        .bind(&columns.timezone)
        .bind(columns.every_ms)
        .bind(&columns.overlap)
        .bind(&columns.catch_up)
        .bind(&columns.queue)
        .bind(columns.priority as i64)
        .bind(format_ts(next_fire_at))
        .bind(now)
        .bind(&columns.heartbeat_url)
}

#[async_trait]
impl ScheduleStore for SqliteWorld {
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
                 overlap, catch_up, queue, priority, next_fire_at, created_at, updated_at,
                 heartbeat_url)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)
             ON CONFLICT (name) DO NOTHING",
            ),
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
                 overlap, catch_up, queue, priority, next_fire_at, created_at, updated_at,
                 heartbeat_url)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)
             ON CONFLICT (name) DO UPDATE SET workflow = excluded.workflow,
                 input = excluded.input, cron_expr = excluded.cron_expr,
                 timezone = excluded.timezone, every_ms = excluded.every_ms,
                 overlap = excluded.overlap, catch_up = excluded.catch_up,
                 queue = excluded.queue, priority = excluded.priority,
                 heartbeat_url = excluded.heartbeat_url,
                 next_fire_at = excluded.next_fire_at, queued_tick = NULL,
                 updated_at = excluded.updated_at
             WHERE workflow IS NOT excluded.workflow OR input IS NOT excluded.input
                OR cron_expr IS NOT excluded.cron_expr OR timezone IS NOT excluded.timezone
                OR every_ms IS NOT excluded.every_ms OR overlap IS NOT excluded.overlap
                OR catch_up IS NOT excluded.catch_up OR queue IS NOT excluded.queue
                OR priority IS NOT excluded.priority
                OR heartbeat_url IS NOT excluded.heartbeat_url",
            ),
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
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let fired =
            schedules::fire_due_schedules(&mut WriteTx::new(&mut tx, &now_text), now, workflows)
                .await?;
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
}

#[async_trait]
impl ScheduleTx for WriteTx<'_> {
    /// Differs from Postgres by locking nothing: this transaction is the only writer, so
    /// no other scheduler fires these schedules meanwhile.
    async fn due_schedules(
        &mut self,
        now: DateTime<Utc>,
        workflows: &[String],
    ) -> EngineResult<Vec<ScheduleRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_schedules
             WHERE NOT paused AND (next_fire_at <= ?1 OR queued_tick IS NOT NULL)
               AND workflow IN (SELECT value FROM json_each(?2))
             ORDER BY next_fire_at LIMIT 100",
        )
        .bind(format_ts(now))
        .bind(serde_json::to_string(workflows)?)
        .fetch_all(&mut *self.conn)
        .await?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn run_status(&mut self, run_id: RunId) -> EngineResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = ?1")
                .bind(run_id.to_string())
                .fetch_optional(&mut *self.conn)
                .await?,
        )
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
                 idempotency_key, queue, priority, metadata, status, wake_at, created_at,
                 updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?9, ?9)
             ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(new_id.to_string())
        .bind(&spec.workflow)
        .bind(workflow_version as i64)
        .bind(spec.input.to_string())
        .bind(key)
        .bind(&spec.queue)
        .bind(spec.priority as i64)
        .bind(metadata.to_string())
        .bind(self.now)
        .execute(&mut *self.conn)
        .await?;
        let run_id: String =
            sqlx::query_scalar("SELECT id FROM workflow_runs WHERE idempotency_key = ?1")
                .bind(key)
                .fetch_one(&mut *self.conn)
                .await?;
        parse_run_id(&run_id)
    }

    async fn advance(
        &mut self,
        name: &str,
        plan: &FirePlan,
        last: Option<(DateTime<Utc>, RunId)>,
    ) -> EngineResult<()> {
        sqlx::query(
            "UPDATE workflow_schedules SET next_fire_at = ?2, queued_tick = ?3,
                 last_fire_at = COALESCE(?4, last_fire_at),
                 last_run_id = COALESCE(?5, last_run_id), updated_at = ?6
             WHERE name = ?1",
        )
        .bind(name)
        .bind(format_ts(plan.next_fire_at))
        .bind(plan.queued_tick.map(format_ts))
        .bind(last.map(|(tick, _)| format_ts(tick)))
        .bind(last.map(|(_, run_id)| run_id.to_string()))
        .bind(self.now)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}
