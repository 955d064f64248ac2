//! [`RunStore`] on Postgres: starting, reading, cancelling, resuming, forking and pruning
//! runs, and their leases. Claims are in `claim.rs`, group commits in `apply.rs`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::events::notify;
use super::PostgresWorld;
use crate::batch::child_finished_event_key;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::{
    ClaimedRun, Fence, NewRun, PruneReport, RunFilter, RunRecord, StartedRun, StepRecord, WriteOp,
    WriteOutcome,
};
use crate::store::events::notify_parents;
use crate::store::rows::{moved_run_from_row, run_from_row, step_from_row, workflow_keys};
use crate::store::runs::{delete_finished_batch, prune_finished, Prune, PruneTx};
use crate::store::{ClaimRequest, RunStore};

/// The status of a run, inside a transaction.
pub(super) async fn status_of(
    conn: &mut PgConnection,
    run_id: RunId,
) -> EngineResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT status FROM workflow_runs WHERE id = $1")
            .bind(run_id.0)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

#[async_trait]
impl RunStore for PostgresWorld {
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
        self.claim(request).await
    }

    async fn load_journal(&self, run_id: RunId) -> EngineResult<Vec<StepRecord>> {
        let rows = sqlx::query("SELECT * FROM workflow_steps WHERE run_id = $1 ORDER BY seq")
            .bind(run_id.0)
            .fetch_all(&self.pool)
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
        let ids: Vec<Uuid> = leases.iter().map(|fence| fence.run_id.0).collect();
        let epochs: Vec<i64> = leases.iter().map(|fence| fence.epoch).collect();
        let renewed: Vec<Uuid> = sqlx::query_scalar(
            // Rows are locked in id order, as a group commit locks them: an UPDATE alone
            // locks in scan order, and a renewal racing a batch over the same runs (a
            // thawed worker's, say) could then deadlock with it and fail the batch.
            "WITH held AS (
                 SELECT id FROM workflow_runs
                 WHERE status = 'running'
                   AND (id, lease_epoch) IN (SELECT * FROM unnest($1::uuid[], $2::bigint[]))
                 ORDER BY id FOR UPDATE
             )
             UPDATE workflow_runs r SET lease_expires_at = now() + make_interval(secs => $3)
             FROM held WHERE r.id = held.id
             RETURNING r.id",
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
            // Locked in id order, as everywhere runs are locked in bulk (see renew_leases).
            "WITH held AS (
                 SELECT id FROM workflow_runs WHERE lease_owner = $1 AND status = 'running'
                 ORDER BY id FOR UPDATE
             )
             UPDATE workflow_runs r SET status = 'pending', wake_at = now(), lease_owner = NULL,
                 lease_expires_at = NULL, updated_at = now()
             FROM held WHERE r.id = held.id",
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

    async fn cancel_run(&self, run_id: RunId) -> EngineResult<()> {
        let mut tx = self.pool.begin().await?;
        let cancelled = sqlx::query(
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
                let moved = moved_run_from_row(&row)?;
                notify_parents(&mut *tx, &[moved]).await?;
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
        let (cursor_at, cursor_id) = filter.older_than.map(|(at, id)| (at, id.0)).unzip();
        let rows = sqlx::query(
            "SELECT * FROM workflow_runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
               AND ($3::text IS NULL OR queue = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4)
               AND ($5::timestamptz IS NULL OR created_at < $5)
               AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
             ORDER BY created_at DESC, id DESC LIMIT $8",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .bind(&filter.queue)
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(cursor_at)
        .bind(cursor_id)
        .bind(filter.limit.unwrap_or(50) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn count_runs(&self, filter: &RunFilter) -> EngineResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
               AND ($3::text IS NULL OR queue = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4)
               AND ($5::timestamptz IS NULL OR created_at < $5)",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.workflow)
        .bind(&filter.queue)
        .bind(filter.created_after)
        .bind(filter.created_before)
        .fetch_one(&self.pool)
        .await?;
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
impl Prune for PostgresWorld {
    async fn count_prunable(&self, cutoff: DateTime<Utc>) -> EngineResult<PruneReport> {
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
        let mut tx = self.pool.begin().await?;
        let batch = delete_finished_batch(&mut *tx, cutoff, batch_size).await?;
        tx.commit().await?;
        Ok(batch)
    }
}

fn uuids(runs: &[RunId]) -> Vec<Uuid> {
    runs.iter().map(|run| run.0).collect()
}

#[async_trait]
impl PruneTx for PgConnection {
    async fn finished_runs(
        &mut self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> EngineResult<Vec<RunId>> {
        // SKIP LOCKED: a run some transaction is still touching waits for the next pass.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM workflow_runs
             WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < $1
             ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(cutoff)
        .bind(limit as i64)
        .fetch_all(&mut *self)
        .await?;
        Ok(ids.into_iter().map(RunId).collect())
    }

    async fn delete_logs(&mut self, runs: &[RunId]) -> EngineResult<u64> {
        Ok(
            sqlx::query("DELETE FROM workflow_logs WHERE run_id = ANY($1)")
                .bind(uuids(runs))
                .execute(&mut *self)
                .await?
                .rows_affected(),
        )
    }

    async fn delete_steps(&mut self, runs: &[RunId]) -> EngineResult<u64> {
        Ok(
            sqlx::query("DELETE FROM workflow_steps WHERE run_id = ANY($1)")
                .bind(uuids(runs))
                .execute(&mut *self)
                .await?
                .rows_affected(),
        )
    }

    async fn delete_events(&mut self, keys: &[String]) -> EngineResult<()> {
        sqlx::query("DELETE FROM workflow_events WHERE key = ANY($1)")
            .bind(keys)
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    /// Differs from SQLite by not re-checking the status: the runs' rows are locked
    /// since `finished_runs` chose them.
    async fn delete_runs(&mut self, runs: &[RunId]) -> EngineResult<u64> {
        Ok(sqlx::query("DELETE FROM workflow_runs WHERE id = ANY($1)")
            .bind(uuids(runs))
            .execute(&mut *self)
            .await?
            .rows_affected())
    }
}
