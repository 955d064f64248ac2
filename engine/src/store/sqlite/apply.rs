//! Group commit on SQLite: one batch of fenced writes in one `BEGIN IMMEDIATE`
//! transaction, one statement per kind of write, rows passed as a JSON array.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sqlx::Connection;

use super::rows::parse_run_id;
use super::{SqliteWorld, WriteTx};
use crate::batch::{format_ts, BatchPlan};
use crate::error::EngineResult;
use crate::model::{RunStatus, WriteOp, WriteOutcome};
use crate::store::events::notify_parents;
use crate::store::rows::moved_run_from_row;

impl SqliteWorld {
    /// [`crate::store::RunStore::apply`].
    pub(super) async fn apply_batch(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
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
            let moved = sqlx::query(
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
            let moved = moved
                .iter()
                .map(moved_run_from_row)
                .collect::<EngineResult<Vec<_>>>()?;
            notify_parents(&mut WriteTx::new(&mut tx, &now_text), &moved).await?;
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
}
