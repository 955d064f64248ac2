//! [`RunStore`]: runs, their leases and their journals — the heart of the port; and
//! pruning, written once over the per-dialect primitives of `Prune` and `PruneTx`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::batch::child_finished_event_key;
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::{
    ClaimedRun, Fence, NewRun, Outcome, Park, PruneReport, RunFilter, RunRecord, StartedRun,
    StepRecord, WriteOp, WriteOutcome,
};
use crate::store::ClaimRequest;

/// Runs, their leases and their journals.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Starts a run, or returns the existing run with the same idempotency key.
    async fn start_run(&self, run: NewRun) -> EngineResult<StartedRun>;

    /// Claims up to `limit` runnable runs (pending, parked and due, or running with an
    /// expired lease), bumping each one's lease epoch.
    async fn claim_runs(&self, request: &ClaimRequest) -> EngineResult<Vec<ClaimedRun>>;

    /// The run's journal in program order.
    async fn load_journal(&self, run_id: RunId) -> EngineResult<Vec<StepRecord>>;

    /// Applies a batch of fenced writes in one transaction and reports each one's fate.
    /// A write whose fence no longer holds writes nothing.
    async fn apply(&self, ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>>;

    /// Extends the given leases (run and claim epoch) in one statement; returns the runs
    /// still held. A run its worker abandoned (say, after a failed commit) is left out by
    /// the worker, so its lease expires and any worker can take it over.
    async fn renew_leases(&self, leases: &[Fence], lease_ttl: Duration)
        -> EngineResult<Vec<RunId>>;

    /// Gives back every lease `owner` holds (graceful shutdown): the runs become pending.
    async fn release_leases(&self, owner: &str) -> EngineResult<u64>;

    /// The earliest time a run this worker could claim becomes due (parked wake time or
    /// lease expiry), so an idle worker sleeps exactly until then.
    async fn next_due_at(&self, workflows: &[(String, u32)])
        -> EngineResult<Option<DateTime<Utc>>>;

    /// Cancels a run that has not ended. The holder of its lease, if any, loses it.
    async fn cancel_run(&self, run_id: RunId) -> EngineResult<()>;

    /// Makes a failed or cancelled run runnable again: its failed steps are retried,
    /// its completed steps kept.
    async fn resume_run(&self, run_id: RunId) -> EngineResult<()>;

    /// A new run of the same workflow and input that keeps the completed steps before
    /// `from_step` (in program order) and runs the rest again.
    async fn fork_run(&self, run_id: RunId, from_step: &str) -> EngineResult<RunId>;

    /// One run.
    async fn get_run(&self, run_id: RunId) -> EngineResult<Option<RunRecord>>;

    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> EngineResult<Vec<RunRecord>>;

    /// How many runs match the filter (its limit is ignored).
    async fn count_runs(&self, filter: &RunFilter) -> EngineResult<u64>;

    /// Deletes runs that finished (completed, failed or cancelled) before `cutoff`, with
    /// their steps, logs and child-finished events, `batch_size` runs per transaction so
    /// no lock is held for long. Running and parked runs are never touched. With
    /// `dry_run`, only counts.
    async fn prune_finished(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
        dry_run: bool,
    ) -> EngineResult<PruneReport>;

    /// Records a completed step (one-write convenience over [`RunStore::apply`]).
    async fn complete_step(
        &self,
        fence: Fence,
        step_key: &str,
        seq: i64,
        output: Value,
        attempts: i32,
    ) -> EngineResult<WriteOutcome> {
        self.apply_one(WriteOp::CompleteStep {
            fence,
            step_key: step_key.to_owned(),
            seq,
            output,
            attempts,
            executor: None,
            started_at: Utc::now(),
        })
        .await
    }

    /// Parks a run (one-write convenience over [`RunStore::apply`]).
    async fn park_run(&self, fence: Fence, park: Park) -> EngineResult<WriteOutcome> {
        self.apply_one(WriteOp::Park { fence, park }).await
    }

    /// Finishes a run (one-write convenience over [`RunStore::apply`]).
    async fn finish_run(&self, fence: Fence, outcome: Outcome) -> EngineResult<WriteOutcome> {
        self.apply_one(WriteOp::Finish { fence, outcome }).await
    }

    /// Applies one write.
    async fn apply_one(&self, op: WriteOp) -> EngineResult<WriteOutcome> {
        let outcomes = self.apply(vec![op]).await?;
        Ok(outcomes[0])
    }
}

/// Pruning in one dialect: the count of a dry run, and one batch in its own transaction.
#[async_trait]
pub(crate) trait Prune: Sync {
    /// What pruning runs that finished before `cutoff` would delete now (`batches`: 0).
    async fn count_prunable(&self, cutoff: DateTime<Utc>) -> EngineResult<PruneReport>;

    /// Deletes one batch (see [`delete_finished_batch`]) in a transaction of its own;
    /// `None` when no run is left to prune.
    async fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        batch_size: u32,
    ) -> EngineResult<Option<PruneReport>>;
}

/// [`RunStore::prune_finished`], written once: batches until none is left.
pub(crate) async fn prune_finished(
    store: &impl Prune,
    cutoff: DateTime<Utc>,
    batch_size: u32,
    dry_run: bool,
) -> EngineResult<PruneReport> {
    if dry_run {
        return store.count_prunable(cutoff).await;
    }
    let mut report = PruneReport::default();
    while let Some(batch) = store.prune_batch(cutoff, batch_size).await? {
        report.runs += batch.runs;
        report.steps += batch.steps;
        report.logs += batch.logs;
        report.batches += batch.batches;
    }
    Ok(report)
}

/// The statements of one prune batch, in one dialect, inside the batch's transaction.
#[async_trait]
pub(crate) trait PruneTx: Send {
    /// Up to `limit` runs that finished before `cutoff`, the oldest first, locked for
    /// this transaction.
    async fn finished_runs(
        &mut self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> EngineResult<Vec<RunId>>;

    /// Deletes the runs' log lines; returns how many.
    async fn delete_logs(&mut self, runs: &[RunId]) -> EngineResult<u64>;

    /// Deletes the runs' journal entries; returns how many.
    async fn delete_steps(&mut self, runs: &[RunId]) -> EngineResult<u64>;

    /// Deletes the events with these keys.
    async fn delete_events(&mut self, keys: &[String]) -> EngineResult<()>;

    /// Deletes the runs themselves (only finished ones); returns how many.
    async fn delete_runs(&mut self, runs: &[RunId]) -> EngineResult<u64>;
}

/// Deletes up to `batch_size` runs that finished before `cutoff`, with their log lines,
/// journal entries and child-finished events; `None` when there were none.
pub(crate) async fn delete_finished_batch(
    tx: &mut impl PruneTx,
    cutoff: DateTime<Utc>,
    batch_size: u32,
) -> EngineResult<Option<PruneReport>> {
    let runs = tx.finished_runs(cutoff, batch_size).await?;
    if runs.is_empty() {
        return Ok(None);
    }
    let event_keys: Vec<String> = runs.iter().copied().map(child_finished_event_key).collect();
    let logs = tx.delete_logs(&runs).await?;
    let steps = tx.delete_steps(&runs).await?;
    tx.delete_events(&event_keys).await?;
    let runs = tx.delete_runs(&runs).await?;
    Ok(Some(PruneReport {
        runs,
        steps,
        logs,
        batches: 1,
    }))
}
