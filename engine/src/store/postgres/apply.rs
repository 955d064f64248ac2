//! Group commit on Postgres: one batch of fenced writes in one transaction that locks its
//! runs' rows in id order.
//!
//! Two paths. The one-statement path is the common case in three round trips (`BEGIN`,
//! one statement, `COMMIT`): one `WITH` whose parts lock the held runs in id order,
//! upsert the steps, append the log lines and move the finishing or parking runs (each
//! joined to the held runs), and answer which leases held, which steps it wrote and
//! which runs it moved. Writes whose lease was lost or whose step was completed before
//! are simply not applied, as the checked path would decide. It stays a transaction
//! rather than one autocommitted statement so that the locks are held, and visible to
//! `pg_locks`, exactly as on the checked path. What it leaves to the checked path, one
//! statement per kind of write with rows passed as JSONB: batches that park on events
//! (whose arrival must be looked up under a lock), that write one step twice, and those
//! that end a child run (its parent must hear of it); the last are found only after the
//! statement ran, which is then rolled back, so a batch is always one commit.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use uuid::Uuid;

use super::events::{lock_event_key, notify};
use super::PostgresWorld;
use crate::batch::{child_finished_event_key, BatchPlan};
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::{RunStatus, WriteOp, WriteOutcome};
use crate::store::events::notify_parents;
use crate::store::rows::moved_run_from_row;

impl PostgresWorld {
    /// [`crate::store::RunStore::apply`].
    pub(super) async fn apply_batch(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
        match self.apply_in_one_statement(&ops).await? {
            Some(outcomes) => Ok(outcomes),
            None => self.apply_checked(ops).await,
        }
    }

    /// The one-statement path (see the module comment): `None`, with nothing written,
    /// when the batch needs the checked path; otherwise each write's outcome, committed.
    async fn apply_in_one_statement(
        &self,
        ops: &[WriteOp],
    ) -> EngineResult<Option<Vec<WriteOutcome>>> {
        let now = Utc::now();
        let mut assumed: HashMap<RunId, i64> = HashMap::new();
        for op in ops {
            let fence = op.fence();
            if *assumed.entry(fence.run_id).or_insert(fence.epoch) != fence.epoch {
                return Ok(None);
            }
        }
        let plan = BatchPlan::new(ops, &assumed, now);
        if !plan.event_keys.is_empty() || plan.step_chunks.len() > 1 {
            return Ok(None);
        }
        let steps = plan.step_chunks.first().map(Vec::as_slice).unwrap_or(&[]);
        let (fence_ids, fence_epochs): (Vec<Uuid>, Vec<i64>) =
            assumed.iter().map(|(id, epoch)| (id.0, *epoch)).unzip();
        let mut tx = self.pool.begin().await?;
        let row: (Vec<Uuid>, Vec<Uuid>, Vec<String>, Vec<Uuid>) = sqlx::query_as(
            "WITH held AS (
                 SELECT r.id FROM workflow_runs r
                 JOIN unnest($1::uuid[], $2::bigint[]) AS f(id, epoch)
                   ON r.id = f.id AND r.lease_epoch = f.epoch
                 WHERE r.status = 'running'
                 ORDER BY r.id FOR UPDATE OF r
             ), steps AS (
                 INSERT INTO workflow_steps AS s (run_id, step_key, seq, status, output, error,
                     attempts, next_attempt_at, executor, started_at, completed_at)
                 SELECT x.run_id, x.step_key, x.seq, x.status, x.output, x.error, x.attempts,
                        x.next_attempt_at, x.executor, x.started_at, x.completed_at
                 FROM jsonb_to_recordset($3) AS x(run_id uuid, step_key text, seq int,
                     status text, output jsonb, error text, attempts int,
                     next_attempt_at timestamptz, executor text, started_at timestamptz,
                     completed_at timestamptz)
                 JOIN held h ON h.id = x.run_id
                 ON CONFLICT (run_id, step_key) DO UPDATE SET
                     status = excluded.status, output = excluded.output, error = excluded.error,
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                     executor = excluded.executor, completed_at = excluded.completed_at
                 WHERE s.status <> 'completed'
                 RETURNING s.run_id, s.step_key
             ), logs AS (
                 INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, fields, ts)
                 SELECT x.run_id, x.step_key, x.attempt, x.level, x.message, x.fields, x.ts
                 FROM jsonb_to_recordset($4) AS x(run_id uuid, step_key text, attempt int,
                     level smallint, message text, fields jsonb, ts timestamptz)
                 JOIN held h ON h.id = x.run_id
                 RETURNING 1
             ), moved AS (
                 UPDATE workflow_runs r SET
                     status = t.status, wake_at = t.wake_at, wait_event_key = t.wait_event_key,
                     output = t.output, error = t.error, completed_at = t.completed_at,
                     lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                 FROM jsonb_to_recordset($5) AS t(id uuid, status text, wake_at timestamptz,
                     wait_event_key text, output jsonb, error text, completed_at timestamptz)
                 JOIN held h ON h.id = t.id
                 WHERE r.id = t.id AND r.parent_run_id IS NULL
                 RETURNING r.id
             )
             SELECT ARRAY(SELECT id FROM held),
                    ARRAY(SELECT run_id FROM steps),
                    ARRAY(SELECT step_key FROM steps),
                    ARRAY(SELECT id FROM moved)
             FROM (SELECT count(*) FROM logs) AS appended",
        )
        .bind(&fence_ids)
        .bind(&fence_epochs)
        .bind(serde_json::to_value(steps)?)
        .bind(serde_json::to_value(&plan.logs)?)
        .bind(serde_json::to_value(&plan.transitions)?)
        .fetch_one(&mut *tx)
        .await?;
        let (held_ids, step_runs, step_keys, moved_ids) = row;
        let held: HashSet<RunId> = held_ids.into_iter().map(RunId).collect();
        let applied: HashSet<(RunId, String)> =
            step_runs.into_iter().map(RunId).zip(step_keys).collect();
        let moved: HashSet<RunId> = moved_ids.into_iter().map(RunId).collect();
        let mut outcomes = plan.outcomes;
        for (index, op) in ops.iter().enumerate() {
            let run_id = op.fence().run_id;
            if !held.contains(&run_id) {
                outcomes[index] = WriteOutcome::LeaseLost;
                continue;
            }
            match op {
                WriteOp::CompleteStep { step_key, .. }
                | WriteOp::FailStepAttempt { step_key, .. }
                | WriteOp::BeginWait { step_key, .. } => {
                    if !applied.contains(&(run_id, step_key.clone())) {
                        outcomes[index] = WriteOutcome::AlreadyCompleted;
                    }
                }
                WriteOp::Park { .. } | WriteOp::Finish { .. } => {
                    if !moved.contains(&run_id) {
                        // A held child run: its parent must hear of its end, which the
                        // checked path does. Nothing of this batch is kept.
                        tx.rollback().await?;
                        return Ok(None);
                    }
                }
                WriteOp::Log { .. } => {}
            }
        }
        tx.commit().await?;
        Ok(Some(outcomes))
    }

    /// The checked path (see the module comment).
    async fn apply_checked(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
        let now = Utc::now();
        let fenced: Vec<Uuid> = BatchPlan::fenced_runs(&ops).iter().map(|id| id.0).collect();
        let mut tx = self.pool.begin().await?;
        // Lock the runs in id order: a claim, a cancel or another batch touching the same
        // run waits for this transaction, and two batches never deadlock.
        let held_rows: Vec<(Uuid, i64, bool)> = sqlx::query_as(
            "SELECT id, lease_epoch, parent_run_id IS NOT NULL FROM workflow_runs
             WHERE id = ANY($1) AND status = 'running' ORDER BY id FOR UPDATE",
        )
        .bind(&fenced)
        .fetch_all(&mut *tx)
        .await?;
        let children: HashSet<RunId> = held_rows
            .iter()
            .filter(|(_, _, has_parent)| *has_parent)
            .map(|(id, _, _)| RunId(*id))
            .collect();
        let held: HashMap<RunId, i64> = held_rows
            .into_iter()
            .map(|(id, epoch, _)| (RunId(id), epoch))
            .collect();
        let mut plan = BatchPlan::new(&ops, &held, now);

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
            // Every event key this batch will lock, in one sorted pass: those its parks
            // wait for, and those `notify_parents` delivers below for its finishing
            // children (it locks them again, which costs nothing). Taken one by one as
            // each delivery comes, a batch that parks a parent on one key and finishes
            // another's child could deadlock with a batch doing the reverse.
            let mut locked_keys: Vec<String> = plan
                .transitions
                .iter()
                .filter(|row| row.completed_at.is_some() && children.contains(&row.id))
                .map(|row| child_finished_event_key(row.id))
                .chain(event_keys.iter().cloned())
                .collect();
            locked_keys.sort();
            locked_keys.dedup();
            for key in &locked_keys {
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
                    .is_some_and(|key| arrived.contains(*key))
                {
                    row.status = RunStatus::Pending.as_str();
                    row.wake_at = Some(now_text.clone());
                    row.wait_event_key = None;
                    wake_others = true;
                }
            }
            let moved = sqlx::query(
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
            let moved = moved
                .iter()
                .map(moved_run_from_row)
                .collect::<EngineResult<Vec<_>>>()?;
            notify_parents(&mut *tx, &moved).await?;
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
}
