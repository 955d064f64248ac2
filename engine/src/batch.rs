//! The backend-neutral half of a group commit: given the batch's writes and which
//! leases still hold, decide what each backend must write. Each backend then runs one
//! statement per kind of write (steps, run transitions, logs), passing the rows as a
//! JSON array, so a batch of any size costs a handful of statements.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::RunId;
use crate::model::{Outcome, Park, RunStatus, StepStatus, WriteOp, WriteOutcome};

/// A step row to upsert.
#[derive(Debug, Serialize)]
pub(crate) struct StepRow<'a> {
    pub run_id: RunId,
    /// The writer's lease epoch (not serialized: the fence is checked apart).
    #[serde(skip)]
    pub epoch: i64,
    pub step_key: &'a str,
    pub seq: i64,
    pub status: &'static str,
    /// Absent (not `null`) when the step has no output, so a completed step whose output
    /// is JSON `null` stays distinguishable from one without output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub attempts: i32,
    pub next_attempt_at: Option<String>,
    pub executor: Option<&'a str>,
    pub started_at: String,
    pub completed_at: Option<String>,
    /// Index of the op in the batch, to report its outcome.
    #[serde(skip)]
    pub op_index: usize,
}

/// A run transition (park or finish) to apply.
#[derive(Debug, Serialize)]
pub(crate) struct RunTransitionRow<'a> {
    pub id: RunId,
    /// The writer's lease epoch (not serialized: the fence is checked apart).
    #[serde(skip)]
    pub epoch: i64,
    pub status: &'static str,
    pub wake_at: Option<String>,
    pub wait_event_key: Option<&'a str>,
    pub output: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub completed_at: Option<String>,
}

/// A log row to insert.
#[derive(Debug, Serialize)]
pub(crate) struct LogRow<'a> {
    pub run_id: RunId,
    /// The writer's lease epoch (not serialized: the fence is checked apart).
    #[serde(skip)]
    pub epoch: i64,
    pub step_key: Option<&'a str>,
    pub attempt: Option<i32>,
    pub level: i16,
    pub message: &'a str,
    pub fields: Option<&'a Value>,
    pub ts: String,
}

/// What a batch must write once fences are checked.
#[derive(Debug, Default)]
pub(crate) struct BatchPlan<'a> {
    /// Step upserts, split so that no chunk touches the same `(run, step_key)` twice
    /// (a single upsert statement may not affect one row twice).
    pub step_chunks: Vec<Vec<StepRow<'a>>>,
    pub transitions: Vec<RunTransitionRow<'a>>,
    /// Event keys of `Event` parks: a run whose event already arrived goes straight
    /// back to `pending` instead of waiting for a wake-up that already happened.
    pub event_keys: Vec<String>,
    pub logs: Vec<LogRow<'a>>,
    pub outcomes: Vec<WriteOutcome>,
}

/// Formats a time the way both backends store and compare it: RFC 3339, UTC,
/// microseconds, `Z` (fixed width, so text order is time order in SQLite).
pub(crate) fn format_ts(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl<'a> BatchPlan<'a> {
    /// Plans the batch. `held` maps each run whose lease is still valid to its epoch.
    pub fn new(ops: &'a [WriteOp], held: &HashMap<RunId, i64>, now: DateTime<Utc>) -> Self {
        let mut plan = BatchPlan {
            outcomes: vec![WriteOutcome::Applied; ops.len()],
            ..Default::default()
        };
        let mut chunk_keys: HashSet<(RunId, &str)> = HashSet::new();
        let mut current_chunk: Vec<StepRow> = Vec::new();
        let now_text = format_ts(now);
        for (op_index, op) in ops.iter().enumerate() {
            let fence = op.fence();
            if held.get(&fence.run_id) != Some(&fence.epoch) {
                plan.outcomes[op_index] = WriteOutcome::LeaseLost;
                continue;
            }
            let step_row = match op {
                WriteOp::CompleteStep {
                    fence,
                    step_key,
                    seq,
                    output,
                    attempts,
                    executor,
                    started_at,
                } => Some(StepRow {
                    run_id: fence.run_id,
                    epoch: fence.epoch,
                    step_key,
                    seq: *seq,
                    status: StepStatus::Completed.as_str(),
                    output: Some(output),
                    error: None,
                    attempts: *attempts,
                    next_attempt_at: None,
                    executor: executor.as_deref(),
                    started_at: format_ts(*started_at),
                    completed_at: Some(now_text.clone()),
                    op_index,
                }),
                WriteOp::FailStepAttempt {
                    fence,
                    step_key,
                    seq,
                    error,
                    attempts,
                    next_attempt_at,
                    executor,
                    started_at,
                } => Some(StepRow {
                    run_id: fence.run_id,
                    epoch: fence.epoch,
                    step_key,
                    seq: *seq,
                    status: if next_attempt_at.is_some() {
                        StepStatus::Retrying.as_str()
                    } else {
                        StepStatus::Failed.as_str()
                    },
                    output: None,
                    error: Some(error),
                    attempts: *attempts,
                    completed_at: next_attempt_at.is_none().then(|| now_text.clone()),
                    next_attempt_at: next_attempt_at.map(format_ts),
                    executor: executor.as_deref(),
                    started_at: format_ts(*started_at),
                    op_index,
                }),
                WriteOp::BeginWait {
                    fence,
                    step_key,
                    seq,
                    timeout_at,
                } => Some(StepRow {
                    run_id: fence.run_id,
                    epoch: fence.epoch,
                    step_key,
                    seq: *seq,
                    status: StepStatus::Waiting.as_str(),
                    output: None,
                    error: None,
                    attempts: 0,
                    next_attempt_at: timeout_at.map(format_ts),
                    executor: None,
                    started_at: now_text.clone(),
                    completed_at: None,
                    op_index,
                }),
                WriteOp::Park { fence, park } => {
                    let (status, wake_at, wait_event_key) = match park {
                        Park::Sleep { until } => (RunStatus::Sleeping, Some(*until), None),
                        Park::Retry { at } => (RunStatus::Retrying, Some(*at), None),
                        Park::Event { key, timeout_at } => {
                            plan.event_keys.push(key.clone());
                            (RunStatus::Waiting, *timeout_at, Some(key.as_str()))
                        }
                    };
                    plan.transitions.push(RunTransitionRow {
                        id: fence.run_id,
                        epoch: fence.epoch,
                        status: status.as_str(),
                        wake_at: wake_at.map(format_ts),
                        wait_event_key,
                        output: None,
                        error: None,
                        completed_at: None,
                    });
                    None
                }
                WriteOp::Finish { fence, outcome } => {
                    let (status, output, error) = match outcome {
                        Outcome::Completed(output) => (RunStatus::Completed, Some(output), None),
                        Outcome::Failed(error) => (RunStatus::Failed, None, Some(error.as_str())),
                    };
                    plan.transitions.push(RunTransitionRow {
                        id: fence.run_id,
                        epoch: fence.epoch,
                        status: status.as_str(),
                        wake_at: None,
                        wait_event_key: None,
                        output,
                        error,
                        completed_at: Some(now_text.clone()),
                    });
                    None
                }
                WriteOp::Log { fence, log } => {
                    plan.logs.push(LogRow {
                        run_id: fence.run_id,
                        epoch: fence.epoch,
                        step_key: log.step_key.as_deref(),
                        attempt: log.attempt,
                        level: log.level.as_i16(),
                        message: &log.message,
                        fields: log.fields.as_ref(),
                        ts: format_ts(log.ts),
                    });
                    None
                }
            };
            if let Some(row) = step_row {
                if !chunk_keys.insert((row.run_id, row.step_key)) {
                    plan.step_chunks.push(std::mem::take(&mut current_chunk));
                    chunk_keys.clear();
                    chunk_keys.insert((row.run_id, row.step_key));
                }
                current_chunk.push(row);
            }
        }
        if !current_chunk.is_empty() {
            plan.step_chunks.push(current_chunk);
        }
        plan
    }

    /// Marks step writes the database did not apply (an earlier completion won).
    pub fn mark_unapplied_steps(&mut self, chunk: usize, applied: &HashSet<(RunId, String)>) {
        for row in &self.step_chunks[chunk] {
            if !applied.contains(&(row.run_id, row.step_key.to_owned())) {
                self.outcomes[row.op_index] = WriteOutcome::AlreadyCompleted;
            }
        }
    }

    /// The runs whose fences must be checked.
    pub fn fenced_runs(ops: &[WriteOp]) -> Vec<RunId> {
        let mut ids: Vec<RunId> = ops.iter().map(|op| op.fence().run_id).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The event that tells a parent its child finished.
pub fn child_finished_event_key(child: RunId) -> String {
    format!("run-finished:{child}")
}

/// The payload of the event that tells a parent its child run ended (delivered by the
/// store when the child finishes or is cancelled, under [`child_finished_event_key`],
/// and read by [`crate::Ctx::join_child`]). It serialises to
/// `{"status": …, "output": …, "error": …}` with `null` for an absent output or error,
/// the JSON stored in events since the first release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildFinished {
    /// How the child ended: `completed`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Its output, when it completed.
    pub output: Option<Value>,
    /// Why it failed or was cancelled, when it did not complete.
    pub error: Option<String>,
}

impl ChildFinished {
    /// The event payload as stored.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a status, JSON and text serialize")
    }
}

/// The payload of a child-finished event, from a finished run's columns (the storage
/// adapters' shape of [`ChildFinished`]). `status` is the run's status column, which
/// the schema's CHECK constraint limits to the [`RunStatus`] names.
pub(crate) fn child_finished_payload(
    status: &str,
    output: Option<&Value>,
    error: Option<&str>,
) -> Value {
    ChildFinished {
        status: status
            .parse()
            .expect("the status column holds a RunStatus name (CHECK constraint)"),
        output: output.cloned(),
        error: error.map(str::to_owned),
    }
    .to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_keeps_the_json_of_earlier_releases() {
        let output = serde_json::json!({"sum": 3});
        assert_eq!(
            child_finished_payload("completed", Some(&output), None),
            serde_json::json!({ "status": "completed", "output": output, "error": null })
        );
        assert_eq!(
            child_finished_payload("failed", None, Some("boom")),
            serde_json::json!({ "status": "failed", "output": null, "error": "boom" })
        );
        let stored =
            serde_json::json!({ "status": "cancelled", "output": null, "error": "by operator" });
        let read: ChildFinished = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(read.status, RunStatus::Cancelled);
        assert_eq!(read.to_value(), stored);
    }
}
