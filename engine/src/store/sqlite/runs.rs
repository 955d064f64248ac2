//! [`RunStore`] on SQLite: starting, reading, cancelling, resuming, forking and pruning
//! runs, and their leases. Claims are in `claim.rs`, group commits in `apply.rs`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, QueryBuilder, Sqlite};

use super::rows::{parse_opt_ts, parse_run_id, workflow_keys_json};
use super::{SqliteWorld, WriteTx};
use crate::batch::{child_finished_event_key, format_ts};
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{
    ClaimedRun, Fence, NewRun, PruneReport, RunFilter, RunRecord, StartedRun, StepRecord, WriteOp,
    WriteOutcome,
};
use crate::store::events::notify_parents;
use crate::store::rows::{moved_run_from_row, run_from_row, step_from_row};
use crate::store::runs::{delete_finished_batch, prune_finished, Prune, PruneTx};
use crate::store::{ClaimRequest, RunStore};

#[async_trait]
impl RunStore for SqliteWorld {
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
        self.claim(request).await
    }

    async fn load_journal(&self, run_id: RunId) -> EngineResult<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM workflow_steps WHERE run_id = ?1 ORDER BY seq")
            .bind(run_id.to_string())
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(step_from_row).collect()
    }

    async fn apply(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
        self.apply_batch(ops).await
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
        let keys = workflow_keys_json(workflows);
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

    async fn cancel_run(&self, run_id: RunId) -> EngineResult<()> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let cancelled = sqlx::query(
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
                let moved = moved_run_from_row(&row)?;
                notify_parents(&mut WriteTx::new(&mut tx, &now), &[moved]).await?;
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
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT * FROM workflow_runs WHERE 1 = 1");
        push_run_filter(&mut sql, filter);
        if let Some((at, id)) = filter.older_than {
            sql.push(" AND (created_at, id) < (")
                .push_bind(format_ts(at))
                .push(", ")
                .push_bind(id.to_string())
                .push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(filter.limit.unwrap_or(50) as i64);
        let rows = sql.build().fetch_all(&self.readers).await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_runs(&self, filter: &RunFilter) -> EngineResult<u64> {
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM workflow_runs WHERE 1 = 1");
        push_run_filter(&mut sql, filter);
        let count: i64 = sql.build_query_scalar().fetch_one(&self.readers).await?;
        Ok(count as u64)
    }

    async fn prune_finished(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
        dry_run: bool,
    ) -> EngineResult<PruneReport> {
        prune_finished(self, cutoff, batch_size, dry_run).await
    }
}

#[async_trait]
impl Prune for SqliteWorld {
    async fn count_prunable(&self, cutoff: DateTime<Utc>) -> EngineResult<PruneReport> {
        let (runs, steps, logs): (i64, i64, i64) = sqlx::query_as(
            "WITH doomed AS (SELECT id FROM workflow_runs
                 WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < ?1)
             SELECT (SELECT COUNT(*) FROM doomed),
                    (SELECT COUNT(*) FROM workflow_steps WHERE run_id IN (SELECT id FROM doomed)),
                    (SELECT COUNT(*) FROM workflow_logs WHERE run_id IN (SELECT id FROM doomed))",
        )
        .bind(format_ts(cutoff))
        .fetch_one(&self.readers)
        .await?;
        Ok(PruneReport {
            runs: runs as u64,
            steps: steps as u64,
            logs: logs as u64,
            batches: 0,
        })
    }

    async fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> EngineResult<Option<PruneReport>> {
        // One short write transaction per batch; the writer lock is released between
        // batches so checkpoints and claims keep flowing.
        let mut writer = self.writer().await?;
        let batch_started = std::time::Instant::now();
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let now = format_ts(Utc::now());
        let batch =
            delete_finished_batch(&mut WriteTx::new(&mut tx, &now), cutoff, batch_size).await?;
        tx.commit().await?;
        drop(writer);
        if batch.is_some() {
            // Differs from Postgres because there is one writer: retention is never
            // urgent, so give it to everyone else for as long as the batch held it, and
            // live work keeps at least half of it.
            tokio::time::sleep(batch_started.elapsed()).await;
        }
        Ok(batch)
    }
}

#[async_trait]
impl PruneTx for WriteTx<'_> {
    async fn finished_runs(
        &mut self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> EngineResult<Vec<RunId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM workflow_runs
             WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < ?1
             ORDER BY completed_at LIMIT ?2",
        )
        .bind(format_ts(cutoff))
        .bind(limit as i64)
        .fetch_all(&mut *self.conn)
        .await?;
        ids.iter().map(|id| parse_run_id(id)).collect()
    }

    async fn delete_logs(&mut self, runs: &[RunId]) -> EngineResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM workflow_logs WHERE run_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(runs)?)
        .execute(&mut *self.conn)
        .await?
        .rows_affected())
    }

    async fn delete_steps(&mut self, runs: &[RunId]) -> EngineResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM workflow_steps WHERE run_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(runs)?)
        .execute(&mut *self.conn)
        .await?
        .rows_affected())
    }

    async fn delete_events(&mut self, keys: &[String]) -> EngineResult<()> {
        sqlx::query("DELETE FROM workflow_events WHERE key IN (SELECT value FROM json_each(?1))")
            .bind(serde_json::to_string(keys)?)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn delete_runs(&mut self, runs: &[RunId]) -> EngineResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM workflow_runs WHERE id IN (SELECT value FROM json_each(?1))
               AND status IN ('completed', 'failed', 'cancelled')",
        )
        .bind(serde_json::to_string(runs)?)
        .execute(&mut *self.conn)
        .await?
        .rows_affected())
    }
}

/// The filter's conditions, only those given: SQLite plans `(?1 IS NULL OR status = ?1)`
/// as a scan, which a deep page into a large history would pay for every page before it.
fn push_run_filter(sql: &mut QueryBuilder<'_, Sqlite>, filter: &RunFilter) {
    if let Some(status) = filter.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(workflow) = &filter.workflow {
        sql.push(" AND workflow = ").push_bind(workflow.clone());
    }
    if let Some(queue) = &filter.queue {
        sql.push(" AND queue = ").push_bind(queue.clone());
    }
    if let Some(after) = filter.created_after {
        sql.push(" AND created_at >= ").push_bind(format_ts(after));
    }
    if let Some(before) = filter.created_before {
        sql.push(" AND created_at < ").push_bind(format_ts(before));
    }
}
