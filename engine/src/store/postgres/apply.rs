//! Group commit on Postgres: one batch of fenced writes in one transaction that locks its
//! runs' rows in id order, one statement per kind of write, rows passed as JSONB.

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
