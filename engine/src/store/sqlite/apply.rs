//! Group commit on SQLite: one batch of fenced writes in one `BEGIN IMMEDIATE`
//! transaction, one statement per kind of write.
//!
//! Two paths. The optimistic one is the common case in two trips to the connection's
//! thread: the transaction's start and every write in one multi-statement query, rows
//! bound as parameters (no JSON to encode and parse), each statement fenced by joining
//! the run's row on its lease epoch, nothing read back but the number of rows changed;
//! then the commit. When that number is not the batch's (a lease lost, a step completed
//! before, a finishing child whose parent must hear of it), it rolls back and the
//! checked path decides write by write: it reads which leases hold, reports which
//! steps were already completed, and delivers child-finished events.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Connection, Executor};

use super::rows::parse_run_id;
use super::{SqliteWorld, WriteTx};
use crate::batch::{format_ts, BatchPlan, LogRow, RunTransitionRow, StepRow};
use crate::error::EngineResult;
use crate::model::{RunStatus, WriteOp, WriteOutcome};
use crate::store::events::notify_parents;
use crate::store::rows::moved_run_from_row;

/// Most rows of one kind the optimistic path binds in one statement (12 parameters per
/// step row; SQLite allows 32,766 parameters per statement).
const OPTIMISTIC_ROWS: usize = 1024;

/// The optimistic path's query under construction: its SQL and its parameters, taken
/// in order across the whole multi-statement query. They are anonymous `?`s on purpose:
/// the driver looks each parameter's name up, and SQLite finds a named one by walking
/// the statement's list of names, which makes binding hundreds of `?N`s quadratic.
struct Statements {
    sql: String,
    args: SqliteArguments<'static>,
}

impl Statements {
    fn push<T>(&mut self, value: T) -> EngineResult<()>
    where
        T: 'static + Send + sqlx::Encode<'static, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        self.args
            .add(value)
            .map_err(|error| crate::error::EngineError::from(sqlx::Error::Encode(error)))?;
        self.sql
            .push_str(if self.sql.ends_with('(') { "?" } else { ", ?" });
        Ok(())
    }

    /// `VALUES` rows for `rows`, padded with all-`NULL` rows to a power of two so that
    /// batches of similar size share one prepared statement (a `NULL` run id joins no
    /// run, so padding changes nothing).
    fn values<R>(
        &mut self,
        rows: &[R],
        width: usize,
        mut bind: impl FnMut(&mut Self, &R) -> EngineResult<()>,
    ) -> EngineResult<()> {
        let padded = rows.len().next_power_of_two();
        self.sql.push_str("(VALUES ");
        for index in 0..padded {
            if index > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push('(');
            match rows.get(index) {
                Some(row) => bind(self, row)?,
                None => {
                    for _ in 0..width {
                        self.push(None::<String>)?;
                    }
                }
            }
            self.sql.push(')');
        }
        self.sql.push(')');
        Ok(())
    }
}

impl SqliteWorld {
    /// [`crate::store::RunStore::apply`].
    pub(super) async fn apply_batch(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
        let now = Utc::now();
        if let Some(outcomes) = self.apply_optimistic(&ops, now).await? {
            return Ok(outcomes);
        }
        self.apply_checked(ops, now).await
    }

    /// The optimistic path (see the module comment): `Some` with every write applied,
    /// or `None` after rolling back when the batch needs the checked path.
    async fn apply_optimistic(
        &self,
        ops: &[WriteOp],
        now: DateTime<Utc>,
    ) -> EngineResult<Option<Vec<WriteOutcome>>> {
        // Assume each write's lease holds; two epochs of one run in a batch (an
        // execution abandoned and its run claimed again) need the checked path.
        let mut assumed = HashMap::new();
        for op in ops {
            let fence = op.fence();
            if *assumed.entry(fence.run_id).or_insert(fence.epoch) != fence.epoch {
                return Ok(None);
            }
        }
        let plan = BatchPlan::new(ops, &assumed, now);
        let steps: &[StepRow] = plan.step_chunks.first().map(Vec::as_slice).unwrap_or(&[]);
        if !plan.event_keys.is_empty()
            || plan.step_chunks.len() > 1
            || steps.len() > OPTIMISTIC_ROWS
            || plan.logs.len() > OPTIMISTIC_ROWS
            || plan.transitions.len() > OPTIMISTIC_ROWS
        {
            return Ok(None);
        }
        let mut query = Statements {
            sql: String::from("BEGIN IMMEDIATE;"),
            args: SqliteArguments::default(),
        };
        if !steps.is_empty() {
            query.sql.push_str(
                "INSERT INTO workflow_steps (run_id, step_key, seq, status, output, error,
                     attempts, next_attempt_at, executor, started_at, completed_at)
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6,
                        v.column7, v.column8, v.column9, v.column10, v.column11
                 FROM ",
            );
            query.values(steps, 12, bind_step)?;
            query.sql.push_str(
                " AS v JOIN workflow_runs r ON r.id = v.column1 AND r.lease_epoch = v.column12
                     AND r.status = 'running'
                 WHERE true
                 ON CONFLICT (run_id, step_key) DO UPDATE SET
                     status = excluded.status, output = excluded.output, error = excluded.error,
                     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                     executor = excluded.executor, completed_at = excluded.completed_at
                 WHERE workflow_steps.status <> 'completed';",
            );
        }
        // Log lines before the transitions: a run finishing in this batch is still
        // `running` for its own last lines.
        if !plan.logs.is_empty() {
            query.sql.push_str(
                "INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, fields, ts)
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6,
                        v.column7
                 FROM ",
            );
            query.values(&plan.logs, 8, bind_log)?;
            query.sql.push_str(
                " AS v JOIN workflow_runs r ON r.id = v.column1 AND r.lease_epoch = v.column8
                     AND r.status = 'running';",
            );
        }
        if !plan.transitions.is_empty() {
            query.sql.push_str(
                "UPDATE workflow_runs SET status = t.column2, wake_at = t.column3,
                     wait_event_key = t.column4, output = t.column5, error = t.column6,
                     completed_at = t.column7, lease_owner = NULL, lease_expires_at = NULL,
                     updated_at = t.column9
                 FROM ",
            );
            let now_text = format_ts(now);
            query.values(&plan.transitions, 9, |query, row| {
                bind_transition(query, row, &now_text)
            })?;
            // A child's end is delivered to its parent by the checked path.
            query.sql.push_str(
                " AS t WHERE workflow_runs.id = t.column1 AND workflow_runs.lease_epoch = t.column8
                     AND workflow_runs.status = 'running' AND workflow_runs.parent_run_id IS NULL;",
            );
        }
        let expected = (steps.len() + plan.logs.len() + plan.transitions.len()) as u64;
        let Statements { sql, args, .. } = query;
        let mut writer = self.writer().await?;
        // One result per statement. `BEGIN`'s is skipped: SQLite's count of changed rows
        // after a statement that changes none still holds the previous statement's.
        let results: Result<Vec<_>, sqlx::Error> = (&mut *writer)
            .fetch_many(sqlx::query_with(&sql, args))
            .try_collect()
            .await;
        let changed: u64 = match results {
            Ok(results) => results
                .into_iter()
                .filter_map(|result| result.left())
                .skip(1)
                .map(|result| result.rows_affected())
                .sum(),
            Err(error) => {
                // The transaction may have begun before the failing statement.
                let _ = (&mut *writer).execute("ROLLBACK").await;
                return Err(error.into());
            }
        };
        if changed != expected {
            (&mut *writer).execute("ROLLBACK").await?;
            return Ok(None);
        }
        (&mut *writer).execute("COMMIT").await?;
        Ok(Some(plan.outcomes))
    }

    /// The checked path (see the module comment).
    async fn apply_checked(
        &self,
        ops: Vec<WriteOp>,
        now: DateTime<Utc>,
    ) -> EngineResult<Vec<WriteOutcome>> {
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
        let mut plan = BatchPlan::new(&ops, &held, now);

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
                    .is_some_and(|key| arrived.contains(*key))
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

/// JSON as stored: its text, or `NULL` for none (and, where the column keeps JSON `null`
/// as `NULL`, for `null`).
fn json_text(value: Option<&serde_json::Value>, null_as_none: bool) -> Option<String> {
    value
        .filter(|value| !(null_as_none && value.is_null()))
        .map(|value| value.to_string())
}

fn bind_step(query: &mut Statements, row: &StepRow) -> EngineResult<()> {
    query.push(row.run_id.to_string())?;
    query.push(row.step_key.to_owned())?;
    query.push(row.seq)?;
    query.push(row.status)?;
    query.push(json_text(row.output, false))?;
    query.push(row.error.map(str::to_owned))?;
    query.push(row.attempts)?;
    query.push(row.next_attempt_at.clone())?;
    query.push(row.executor.map(str::to_owned))?;
    query.push(row.started_at.clone())?;
    query.push(row.completed_at.clone())?;
    query.push(row.epoch)
}

fn bind_log(query: &mut Statements, row: &LogRow) -> EngineResult<()> {
    query.push(row.run_id.to_string())?;
    query.push(row.step_key.map(str::to_owned))?;
    query.push(row.attempt)?;
    query.push(row.level)?;
    query.push(row.message.to_owned())?;
    query.push(json_text(row.fields, true))?;
    query.push(row.ts.clone())?;
    query.push(row.epoch)
}

fn bind_transition(query: &mut Statements, row: &RunTransitionRow, now: &str) -> EngineResult<()> {
    query.push(row.id.to_string())?;
    query.push(row.status)?;
    query.push(row.wake_at.clone())?;
    query.push(row.wait_event_key.map(str::to_owned))?;
    query.push(json_text(row.output, true))?;
    query.push(row.error.map(str::to_owned))?;
    query.push(row.completed_at.clone())?;
    query.push(row.epoch)?;
    query.push(now.to_owned())
}
