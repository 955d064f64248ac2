//! What the engine counts and times, recorded through the [`metrics`] facade. The engine
//! exports nothing itself: a process that wants the numbers installs a recorder *before*
//! it starts its [`Runtime`](crate::Runtime) (`morpheus up --listen` installs
//! Prometheus's; see `morpheus-server`). Without a recorder every record is a call that
//! does nothing, so embedders and the benchmark pay next to nothing.
//!
//! The hot path (a step, a claim, a commit) builds no labels and takes no lock: the
//! worker resolves every handle it can name up front, per registered workflow and
//! executor, and a step looks its histogram up by executor kind in a map that is never
//! written after the worker started.
//!
//! | name | type | labels |
//! |---|---|---|
//! | [`RUNS_STARTED`] | counter | `workflow` |
//! | [`RUNS_FINISHED`] | counter | `workflow`, `status` (`completed`, `failed`) |
//! | [`STEP_DURATION`] | histogram | `workflow`, `executor` (`inline` for workflow code) |
//! | [`EXECUTOR_CALLS`], [`EXECUTOR_FAILURES`] | counter | `executor` |
//! | [`CLAIM_DURATION`] | histogram | |
//! | [`COMMIT_BATCH_SIZE`], [`COMMIT_DURATION`] | histogram | |
//! | [`LEASES_LOST`] | counter | |
//! | [`SCHEDULE_FIRES`] | counter | `schedule` |
//! | [`QUEUE_DEPTH`] | gauge | `queue`, `state` (set by whoever samples [`QueueStore::queue_depths`](crate::QueueStore::queue_depths)) |

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

// `::metrics` is the facade crate; this module shares its name.
use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, histogram};
use ::metrics::{Counter, Histogram, Unit};

use crate::executor::ExecutorRegistry;
use crate::workflow::WorkflowRegistry;

/// Runs whose first execution began in this process (claimed for the first time).
pub const RUNS_STARTED: &str = "morpheus_runs_started_total";
/// Runs this process brought to an end, by how they ended.
pub const RUNS_FINISHED: &str = "morpheus_runs_finished_total";
/// How long each attempt of a step's body took (the checkpoint's commit not included).
pub const STEP_DURATION: &str = "morpheus_step_duration_seconds";
/// Calls made to an executor (each attempt is one call).
pub const EXECUTOR_CALLS: &str = "morpheus_executor_calls_total";
/// Executor calls that failed or answered with output the step refused.
pub const EXECUTOR_FAILURES: &str = "morpheus_executor_failures_total";
/// How long one claim of ready runs took (every successful claim, empty ones too).
pub const CLAIM_DURATION: &str = "morpheus_claim_duration_seconds";
/// How many writes one group commit carried.
pub const COMMIT_BATCH_SIZE: &str = "morpheus_commit_batch_size";
/// How long one group commit took to apply (successful commits, conflict retries
/// included).
pub const COMMIT_DURATION: &str = "morpheus_commit_duration_seconds";
/// Runs this worker stopped because it no longer held their lease (it expired and was
/// taken over, or the run was cancelled).
pub const LEASES_LOST: &str = "morpheus_leases_lost_total";
/// Runs started by a schedule's tick in this process.
pub const SCHEDULE_FIRES: &str = "morpheus_schedule_fires_total";
/// Unfinished runs per queue and state, sampled from the database when read.
pub const QUEUE_DEPTH: &str = "morpheus_queue_depth";

/// The `executor` label of steps whose body is workflow code (`ctx.step(…).run(…)`).
pub const INLINE_EXECUTOR: &str = "inline";

/// Gives every metric its help text and unit in the installed recorder. Call it once
/// after installing one (the Prometheus exporter prints them as `# HELP`).
pub fn describe() {
    describe_counter!(
        RUNS_STARTED,
        "Runs whose first execution began in this process"
    );
    describe_counter!(RUNS_FINISHED, "Runs this process brought to an end");
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Duration of each attempt of a step's body"
    );
    describe_counter!(EXECUTOR_CALLS, "Calls made to an executor");
    describe_counter!(
        EXECUTOR_FAILURES,
        "Executor calls that failed or answered unusable output"
    );
    describe_histogram!(
        CLAIM_DURATION,
        Unit::Seconds,
        "Duration of one claim of ready runs"
    );
    describe_histogram!(
        COMMIT_BATCH_SIZE,
        Unit::Count,
        "Writes carried by one group commit"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one group commit"
    );
    describe_counter!(
        LEASES_LOST,
        "Runs a worker stopped because it no longer held their lease"
    );
    describe_counter!(SCHEDULE_FIRES, "Runs started by a schedule's tick");
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Unfinished runs per queue and state, read from the database at scrape time"
    );
}

/// Counts one schedule tick that started a run.
pub(crate) fn schedule_fired(schedule: &str) {
    // Once per tick, not per step: building the label here is cheap enough.
    counter!(SCHEDULE_FIRES, "schedule" => schedule.to_owned()).increment(1);
}

/// The handles of one worker, resolved when it starts.
pub(crate) struct WorkerMetrics {
    workflows: HashMap<String, Arc<WorkflowMetrics>>,
    /// Per claim.
    pub claim_duration: Histogram,
    /// Per run given up for a lost lease.
    pub leases_lost: Counter,
}

/// Calls and failures of one executor kind.
#[derive(Clone)]
pub(crate) struct ExecutorMetrics {
    /// Per call.
    pub calls: Counter,
    /// Per failed call.
    pub failures: Counter,
}

/// The handles of one workflow's runs and steps.
pub(crate) struct WorkflowMetrics {
    workflow: String,
    /// Per first claim of a run.
    pub started: Counter,
    /// Per run that completed.
    pub completed: Counter,
    /// Per run that failed.
    pub failed: Counter,
    /// Step durations by executor kind (and [`INLINE_EXECUTOR`]), registered on first use
    /// so that only combinations that happen become series.
    step_durations: HashMap<String, OnceLock<Histogram>>,
    executors: Arc<HashMap<String, ExecutorMetrics>>,
}

impl WorkerMetrics {
    /// Resolves the handles of every registered workflow and executor (against the
    /// recorder installed now: install one before starting the worker).
    pub fn new(workflows: &WorkflowRegistry, executors: &ExecutorRegistry) -> Self {
        let kinds = executors.kinds();
        let executor_metrics: Arc<HashMap<String, ExecutorMetrics>> = Arc::new(
            kinds
                .iter()
                .map(|kind| {
                    let metrics = ExecutorMetrics {
                        calls: counter!(EXECUTOR_CALLS, "executor" => kind.clone()),
                        failures: counter!(EXECUTOR_FAILURES, "executor" => kind.clone()),
                    };
                    (kind.clone(), metrics)
                })
                .collect(),
        );
        let workflows = workflows
            .names()
            .into_iter()
            .map(|name| {
                let finished = |status: &'static str| {
                    counter!(RUNS_FINISHED, "workflow" => name.clone(), "status" => status)
                };
                let metrics = WorkflowMetrics {
                    started: counter!(RUNS_STARTED, "workflow" => name.clone()),
                    completed: finished("completed"),
                    failed: finished("failed"),
                    step_durations: kinds
                        .iter()
                        .map(String::as_str)
                        .chain([INLINE_EXECUTOR])
                        .map(|kind| (kind.to_owned(), OnceLock::new()))
                        .collect(),
                    executors: executor_metrics.clone(),
                    workflow: name.clone(),
                };
                (name, Arc::new(metrics))
            })
            .collect();
        Self {
            workflows,
            claim_duration: histogram!(CLAIM_DURATION),
            leases_lost: counter!(LEASES_LOST),
        }
    }

    /// The handles of a registered workflow.
    pub fn workflow(&self, name: &str) -> Option<Arc<WorkflowMetrics>> {
        self.workflows.get(name).cloned()
    }
}

impl WorkflowMetrics {
    /// Records one attempt of a step body that ran through `executor` (`None`: inline).
    pub fn step_finished(&self, executor: Option<&str>, took: Duration) {
        let kind = executor.unwrap_or(INLINE_EXECUTOR);
        match self.step_durations.get(kind) {
            Some(slot) => slot.get_or_init(|| self.step_histogram(kind)).record(took),
            // An executor kind that is not registered (the step fails for it): rare
            // enough to build its labels on the spot.
            None => self.step_histogram(kind).record(took),
        }
    }

    fn step_histogram(&self, kind: &str) -> Histogram {
        histogram!(STEP_DURATION, "workflow" => self.workflow.clone(), "executor" => kind.to_owned())
    }

    /// The call counters of a registered executor kind.
    pub fn executor(&self, kind: &str) -> Option<ExecutorMetrics> {
        self.executors.get(kind).cloned()
    }
}
