//! `World`: the storage port. Everything the engine remembers goes through it, and two
//! adapters implement it with the same semantics: [`crate::sqlite::SqliteWorld`] (the
//! embedded default) and [`crate::postgres::PostgresWorld`] (scale-out). One conformance
//! suite (`engine/tests/conformance.rs`) runs against both.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::documents::{Document, DocumentQuery};
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::{
    BudgetReservation, ClaimedRun, Fence, LogQuery, LogRecord, NewRun, Outcome, Park, PruneReport,
    QueueInfo, RunFilter, RunRecord, StartedRun, StepRecord, WriteOp, WriteOutcome,
};
use crate::schedule::{FiredRun, ScheduleRecord, ScheduleSpec};

/// Which database a `World` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Which runs a worker may claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The claiming worker's id (stored as `lease_owner`).
    pub owner: String,
    /// At most this many runs.
    pub limit: u32,
    /// Lease length.
    pub lease_ttl: Duration,
    /// `(workflow, version)` pairs this worker can replay; other runs are left alone.
    pub workflows: Vec<(String, u32)>,
    /// Only runs in these queues (`None`: every queue).
    pub queues: Option<Vec<String>>,
}

/// The storage port. All methods are safe to call concurrently; writes for a run held
/// under a lease are fenced by its epoch (see [`Fence`]).
#[async_trait]
pub trait World: Send + Sync + 'static {
    /// The backend behind this world.
    fn backend(&self) -> Backend;

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

    /// Delivers an event (first delivery of a key wins) and wakes runs waiting for it.
    /// Returns false when the key had already been delivered.
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool>;

    /// The payload of a delivered event.
    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>>;

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

    /// Sets (or with `None` removes) a queue's concurrency limit: at most that many of
    /// its runs hold a slot at once across all workers. A run holds a slot while it is
    /// `running` and while it is parked for a step retry (`retrying`: it is in the middle
    /// of its work, so a run due for a retry is claimed again before any other run of
    /// the queue starts); a run that sleeps or waits for an event gives its slot back
    /// until it is claimed again (a parent waiting for a child in the same queue must
    /// not block it).
    async fn set_queue_limit(&self, queue: &str, limit: Option<u32>) -> EngineResult<()>;

    /// Queues that have runs or a configured limit, with their current load.
    async fn list_queues(&self) -> EngineResult<Vec<QueueInfo>>;

    /// Inserts `count` synthetic finished runs of `workflow`, each with one completed step
    /// and one log line, finished at `completed_at`. Benchmarks and retention tests use it
    /// to show how claims and steps behave as history grows; it never touches live runs.
    async fn seed_finished_runs(
        &self,
        workflow: &str,
        count: u64,
        completed_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Adds a schedule that first fires at `next_fire_at`. A taken name is
    /// [`EngineError::ScheduleExists`](crate::EngineError::ScheduleExists) and stores
    /// nothing.
    async fn add_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Creates or updates a schedule from configuration. An unchanged definition keeps its
    /// state; a changed one is replaced and fires next at `next_fire_at`. Returns whether
    /// anything changed.
    async fn sync_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<bool>;

    /// Pauses or resumes a schedule; a resumed schedule fires next at `next_fire_at`
    /// (ticks during the pause are not caught up).
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Deletes a schedule (its runs stay).
    async fn delete_schedule(&self, name: &str) -> EngineResult<()>;

    /// One schedule.
    async fn get_schedule(&self, name: &str) -> EngineResult<Option<ScheduleRecord>>;

    /// Every schedule, by name.
    async fn list_schedules(&self) -> EngineResult<Vec<ScheduleRecord>>;

    /// Starts the runs of every due schedule whose workflow is in `workflows` (per its
    /// catch-up and overlap policies), one run per tick however many schedulers call
    /// this at once, and moves each schedule to its next tick.
    async fn fire_due_schedules(
        &self,
        now: DateTime<Utc>,
        workflows: &[(String, u32)],
    ) -> EngineResult<Vec<FiredRun>>;

    /// When the next schedule is due (or has a waiting tick: now).
    async fn next_schedule_due(&self) -> EngineResult<Option<DateTime<Utc>>>;

    /// Runs a schedule started, newest first.
    async fn schedule_runs(&self, name: &str, limit: u64) -> EngineResult<Vec<RunRecord>>;

    /// Log lines matching the query, in emission order.
    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>>;

    /// Reserves `amount` of `budget` under `limit` (all reservations of the budget, by
    /// every run, count). Idempotent on `reservation_key`: repeating a reservation returns
    /// its first answer and reserves nothing more.
    async fn reserve_budget(
        &self,
        budget: &str,
        reservation_key: &str,
        amount: i64,
        limit: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<BudgetReservation>;

    /// Gives a reservation back (no-op when it does not exist).
    async fn release_budget(&self, budget: &str, reservation_key: &str) -> EngineResult<()>;

    /// The total reserved of a budget.
    async fn budget_used(&self, budget: &str) -> EngineResult<i64>;

    /// Records a completed step (one-write convenience over [`World::apply`]).
    #[allow(clippy::too_many_arguments)]
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

    /// Parks a run (one-write convenience over [`World::apply`]).
    async fn park_run(&self, fence: Fence, park: Park) -> EngineResult<WriteOutcome> {
        self.apply_one(WriteOp::Park { fence, park }).await
    }

    /// Finishes a run (one-write convenience over [`World::apply`]).
    async fn finish_run(&self, fence: Fence, outcome: Outcome) -> EngineResult<WriteOutcome> {
        self.apply_one(WriteOp::Finish { fence, outcome }).await
    }

    /// Applies one write.
    async fn apply_one(&self, op: WriteOp) -> EngineResult<WriteOutcome> {
        let outcomes = self.apply(vec![op]).await?;
        Ok(outcomes[0])
    }

    /// Writes a document (see [`crate::documents`]). With `expected_version` `None` it
    /// is created and must not exist yet; with `Some(v)` it replaces the stored body only
    /// while the stored version is still `v` (compare-and-set). Returns the document as
    /// stored (version 1 after a create, `v + 1` after a replace). A failed precondition
    /// is [`crate::EngineError::DocumentConflict`] and writes nothing.
    async fn put_document(
        &self,
        collection: &str,
        key: &str,
        body: &Value,
        expected_version: Option<i64>,
    ) -> EngineResult<Document>;

    /// One document.
    async fn get_document(&self, collection: &str, key: &str) -> EngineResult<Option<Document>>;

    /// Documents of one collection, newest first (see [`DocumentQuery`]).
    async fn list_documents(&self, query: &DocumentQuery) -> EngineResult<Vec<Document>>;

    /// Deletes a document (with `expected_version`, only while it is at that version,
    /// else [`crate::EngineError::DocumentConflict`]). Returns whether one was deleted.
    async fn delete_document(
        &self,
        collection: &str,
        key: &str,
        expected_version: Option<i64>,
    ) -> EngineResult<bool>;
}
