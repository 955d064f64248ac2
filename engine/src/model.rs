//! The data the storage port reads and writes: runs, steps, logs, events.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::UnknownName;
use crate::ids::RunId;

/// Where a run is in its life. Each state names who moves a run into it and out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created by `start_run` (or `resume`/lease release); a worker's claim moves it to `running`.
    Pending,
    /// Held by one worker under a lease; the worker parks, finishes or fails it. A claim of
    /// an expired lease moves it to a new holder.
    Running,
    /// Parked by `ctx.sleep` until `wake_at`; a claim after `wake_at` moves it to `running`.
    Sleeping,
    /// Parked after a failed step attempt until the persisted next attempt time.
    Retrying,
    /// Parked by `ctx.wait_for_event` (or awaiting a child) until the event arrives or the
    /// timeout passes.
    Waiting,
    /// Finished with an output. Terminal.
    Completed,
    /// Finished with an error. `resume` moves it back to `pending`.
    Failed,
    /// Cancelled by an operator. `resume` moves it back to `pending`.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [RunStatus; 8] = [
        Self::Pending,
        Self::Running,
        Self::Sleeping,
        Self::Retrying,
        Self::Waiting,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Sleeping => "sleeping",
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended (completed, failed or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                UnknownName::new("status", text).expected(format!("one of: {}", names.join(", ")))
            })
    }
}

/// A request to start a run.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Registered workflow name.
    pub workflow: String,
    /// The workflow version the run is started with.
    pub workflow_version: u32,
    /// The input, already validated against the workflow's input type.
    pub input: Value,
    /// Starting twice with the same key returns the first run and creates nothing.
    pub idempotency_key: Option<String>,
    /// The run that started this one as a child.
    pub parent_run_id: Option<RunId>,
    /// Queue name (default `default`).
    pub queue: String,
    /// Higher runs first.
    pub priority: i32,
    /// Free-form metadata shown to operators.
    pub metadata: Value,
}

impl NewRun {
    /// A run of `workflow` version 1 with `input` and default queue, priority and metadata.
    pub fn new(workflow: impl Into<String>, input: Value) -> Self {
        Self {
            workflow: workflow.into(),
            workflow_version: 1,
            input,
            idempotency_key: None,
            parent_run_id: None,
            queue: "default".into(),
            priority: 0,
            metadata: Value::Object(Default::default()),
        }
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority (higher runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What `start_run` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedRun {
    /// The run id (the existing one when the idempotency key was seen before).
    pub run_id: RunId,
    /// False when an earlier run with the same idempotency key was returned.
    pub created: bool,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id: a UUIDv7 assigned by `start_run`, so ids sort roughly by creation time.
    pub id: RunId,
    /// The registered name of the workflow the run executes (`Workflow::NAME`).
    pub workflow: String,
    /// The workflow version the run started with; only workers that registered this
    /// version claim it (a run no live worker knows stays visible, never skipped).
    pub workflow_version: u32,
    /// The input the run was started with, as JSON; fixed for the run's life (a fork
    /// copies it).
    pub input: Value,
    /// The workflow's return value, set when the run completes; `None` until then.
    pub output: Option<Value>,
    /// Why the run failed (or that it was cancelled), set when it ends that way;
    /// cleared by `resume`.
    pub error: Option<String>,
    /// Where the run is in its life; see [`RunStatus`] for who moves it between states.
    pub status: RunStatus,
    /// The key the starter gave: a second start with the same key returns this run.
    /// Schedules use `schedule:{name}:{tick}`.
    pub idempotency_key: Option<String>,
    /// The run that started this one with `ctx.start_child`; it is woken when this
    /// run ends.
    pub parent_run_id: Option<RunId>,
    /// The queue the run belongs to (`default` unless the starter chose one); workers
    /// may serve only some queues, and a queue may limit how many of its runs hold a
    /// slot at once.
    pub queue: String,
    /// Set by the starter; within a queue, higher-priority due runs are claimed first
    /// (ties by due time, then id).
    pub priority: i32,
    /// When the run becomes claimable: its start time while pending, the wake time
    /// while sleeping, the next attempt while retrying, the timeout while waiting.
    pub wake_at: Option<DateTime<Utc>>,
    /// The event key a `waiting` run waits for (`ctx.wait_for_event`, or a child's
    /// completion); delivering it makes the run due at once.
    pub wait_event_key: Option<String>,
    /// The id of the worker holding the run's lease (`WorkerConfig::worker_id`), while
    /// it is `running`; `None` otherwise.
    pub lease_owner: Option<String>,
    /// Bumped by every claim. Every write of the lease holder is guarded by
    /// `run_id AND lease_epoch`, so a stale worker's late write changes nothing.
    pub lease_epoch: i64,
    /// When the current lease expires unless its worker renews it (every heartbeat);
    /// past it, any worker may claim the run.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Free-form JSON the starter attached (shown to operators, never read by the
    /// engine).
    pub metadata: Value,
    /// When `start_run` stored the run.
    pub created_at: DateTime<Utc>,
    /// When any column of the run last changed (claim, park, finish, lease renewal…).
    pub updated_at: DateTime<Utc>,
    /// When the run completed, failed or was cancelled; `None` while it has not
    /// ended. Retention (`prune`) judges age by it.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A run handed to a worker by a claim.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run as it was claimed (status `running`, the new epoch).
    pub run: RunRecord,
    /// Its journal (the steps recorded so far, in `seq` order), read by the claim in one
    /// query for every run it claimed, so the worker need not load each run's apart.
    pub journal: Vec<StepRecord>,
}

/// A step's journal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// An attempt failed; the next one is due at `next_attempt_at`.
    Retrying,
    /// Waiting for an event until `next_attempt_at` (the timeout).
    Waiting,
    /// Completed; its output is final.
    Completed,
    /// Failed for good; its error is final.
    Failed,
}

impl StepStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for StepStatus {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "retrying" => Ok(Self::Retrying),
            "waiting" => Ok(Self::Waiting),
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            other => Err(UnknownName::new("step status", other)),
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run whose journal holds this entry.
    pub run_id: RunId,
    /// Deterministic key (`name`, or `name#N` for the N-th repeat).
    pub step_key: String,
    /// Position in the workflow's program order (assigned when the step is requested).
    pub seq: i64,
    /// Whether the step completed, failed for good, or waits for its next attempt or
    /// its event.
    pub status: StepStatus,
    /// The step's result, once completed: replays return it instead of running the body.
    pub output: Option<Value>,
    /// The error of the latest failed attempt (kept after a later success for the
    /// record; the final error when the step failed for good).
    pub error: Option<String>,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the next attempt (or the wait's timeout) is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The executor that ran the step, if any.
    pub executor: Option<String>,
    /// When the first attempt started.
    pub started_at: DateTime<Utc>,
    /// When it completed or failed for good.
    pub completed_at: Option<DateTime<Utc>>,
}

/// Log severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Step-by-step tracing, normally filtered out.
    Trace = 1,
    /// Diagnostic detail for whoever debugs a run.
    Debug = 2,
    /// Normal operation worth recording (the default level of step output).
    Info = 3,
    /// Something looks wrong.
    Warn = 4,
    /// Something failed (a step attempt, a run).
    Error = 5,
}

impl LogLevel {
    /// The stored number (1–5).
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// From the stored number.
    pub fn from_i16(value: i16) -> Self {
        match value {
            i16::MIN..=1 => Self::Trace,
            2 => Self::Debug,
            3 => Self::Info,
            4 => Self::Warn,
            _ => Self::Error,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            _ => {
                Err(UnknownName::new("log level", text)
                    .expected("trace, debug, info, warn or error"))
            }
        }
    }
}

/// A log line to append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewLog {
    /// The run the line belongs to.
    pub run_id: RunId,
    /// The step that emitted it, if any.
    pub step_key: Option<String>,
    /// The step attempt that emitted it.
    pub attempt: Option<i32>,
    /// Severity; queries can ask for this level and above.
    pub level: LogLevel,
    /// The human-readable line (searchable as full text).
    pub message: String,
    /// Structured key/values (a `tracing` event's fields, `{"stream": "stderr"}` of
    /// process output…), as a JSON object.
    pub fields: Option<Value>,
    /// When it was emitted.
    pub ts: DateTime<Utc>,
}

/// A stored log line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    /// Monotonic id (also the keyset cursor).
    pub id: i64,
    /// The run the line belongs to.
    pub run_id: RunId,
    /// The step that emitted it (`None`: the workflow body outside any step, or the
    /// engine itself).
    pub step_key: Option<String>,
    /// The step attempt.
    pub attempt: Option<i32>,
    /// Severity; queries can ask for this level and above.
    pub level: LogLevel,
    /// The human-readable line (searchable as full text).
    pub message: String,
    /// Structured key/values, as a JSON object.
    pub fields: Option<Value>,
    /// When it was emitted.
    pub ts: DateTime<Utc>,
}

/// A log query. Filters combine with AND; results are in id (emission) order.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only this run.
    pub run_id: Option<RunId>,
    /// Only this step.
    pub step_key: Option<String>,
    /// Only lines at or above this level.
    pub min_level: Option<LogLevel>,
    /// Only lines at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lines before this time.
    pub until: Option<DateTime<Utc>>,
    /// Full-text phrase match on the message (words, case-insensitive).
    pub text: Option<String>,
    /// Keyset cursor: only lines with id greater than this.
    pub after_id: Option<i64>,
    /// Skip this many matching lines.
    pub offset: u64,
    /// At most this many lines (default 1000).
    pub limit: Option<u64>,
}

/// Filter for listing runs (newest first).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only runs of this queue.
    pub queue: Option<String>,
    /// Only runs created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only runs created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Keyset cursor: only runs older than this one in list order (`created_at` then
    /// `id`, both descending), so a page starts where the previous page's last run was.
    pub older_than: Option<(DateTime<Utc>, RunId)>,
    /// At most this many (default 50).
    pub limit: Option<u64>,
}

/// How a parked run wakes.
#[derive(Debug, Clone, PartialEq)]
pub enum Park {
    /// Durable sleep until the time.
    Sleep {
        /// When the run becomes claimable again.
        until: DateTime<Utc>,
    },
    /// A step attempt failed; retry at the time.
    Retry {
        /// Next attempt time.
        at: DateTime<Utc>,
    },
    /// Wait for an event, until the optional timeout.
    Event {
        /// The key of the event that wakes the run (see `send_event`).
        key: String,
        /// When to give up waiting.
        timeout_at: Option<DateTime<Utc>>,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// With an output.
    Completed(Value),
    /// With an error message.
    Failed(String),
}

/// One write of a run's holder, fenced by its lease epoch. The group committer applies
/// many of these, from many runs, in one transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// A step completed; the first completion of `(run, step_key)` wins.
    CompleteStep {
        /// The run and the lease epoch its holder claimed it with; the write applies only
        /// while that lease still holds.
        fence: Fence,
        /// The step's deterministic key (`name`, or `name#N` for a repeat).
        step_key: String,
        /// Program-order position.
        seq: i64,
        /// The step's result, as JSON.
        output: Value,
        /// Attempt number that succeeded.
        attempts: i32,
        /// Executor used, if any.
        executor: Option<String>,
        /// When the step (first) started.
        started_at: DateTime<Utc>,
    },
    /// A step attempt failed: either it is retried at `next_attempt_at`, or (when
    /// `next_attempt_at` is `None`) it failed for good.
    FailStepAttempt {
        /// The run and the lease epoch its holder claimed it with; the write applies only
        /// while that lease still holds.
        fence: Fence,
        /// The step's deterministic key (`name`, or `name#N` for a repeat).
        step_key: String,
        /// Program-order position.
        seq: i64,
        /// The attempt's error message, as the run's operators will read it.
        error: String,
        /// Attempts made so far.
        attempts: i32,
        /// Next attempt time, or none for a final failure.
        next_attempt_at: Option<DateTime<Utc>>,
        /// Executor used, if any.
        executor: Option<String>,
        /// When the step first started.
        started_at: DateTime<Utc>,
    },
    /// A step started waiting for an event (records the timeout so replays keep it).
    BeginWait {
        /// The run and the lease epoch its holder claimed it with; the write applies only
        /// while that lease still holds.
        fence: Fence,
        /// The step's deterministic key (`name`, or `name#N` for a repeat).
        step_key: String,
        /// Program-order position.
        seq: i64,
        /// When the wait gives up.
        timeout_at: Option<DateTime<Utc>>,
    },
    /// Park the run and release the lease.
    Park {
        /// The run and the lease epoch its holder claimed it with; the write applies only
        /// while that lease still holds.
        fence: Fence,
        /// How it wakes.
        park: Park,
    },
    /// Finish the run and release the lease.
    Finish {
        /// The run and the lease epoch its holder claimed it with; the write applies only
        /// while that lease still holds.
        fence: Fence,
        /// Completed or failed.
        outcome: Outcome,
    },
    /// Append a log line (written only while the fence holds).
    Log {
        /// The run and the lease epoch its holder claimed it with; the write applies only
        /// while that lease still holds.
        fence: Fence,
        /// The log line.
        log: NewLog,
    },
}

impl WriteOp {
    /// The lease this write is fenced by.
    pub fn fence(&self) -> Fence {
        match self {
            Self::CompleteStep { fence, .. }
            | Self::FailStepAttempt { fence, .. }
            | Self::BeginWait { fence, .. }
            | Self::Park { fence, .. }
            | Self::Finish { fence, .. }
            | Self::Log { fence, .. } => *fence,
        }
    }
}

/// A run id plus the lease epoch its holder claimed it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The run being written for.
    pub run_id: RunId,
    /// The epoch of the claim.
    pub epoch: i64,
}

/// The result of one write in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write was applied (it is durable once the batch's commit returns).
    Applied,
    /// The lease is gone: nothing was written.
    LeaseLost,
    /// A completion for this step already exists: it was kept, this one rejected.
    AlreadyCompleted,
}

/// What a retention pass removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Finished runs deleted.
    pub runs: u64,
    /// Their journal entries.
    pub steps: u64,
    /// Their log lines.
    pub logs: u64,
    /// Transactions used (each bounded by the batch size).
    pub batches: u64,
}

/// A queue and its load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The queue's name, as runs and workers refer to it.
    pub name: String,
    /// Most runs holding a slot at once across all workers (`None`: unlimited); see
    /// [`QueueStore::set_queue_limit`](crate::QueueStore::set_queue_limit).
    pub concurrency_limit: Option<u32>,
    /// Runs running now.
    pub running: u64,
    /// Runs parked for a step retry (each still holds its slot).
    pub retrying: u64,
    /// Runs waiting to run, asleep or waiting for an event (pending, sleeping, waiting).
    pub queued: u64,
}

/// How many unfinished runs one queue holds in one state (see
/// [`QueueStore::queue_depths`](crate::QueueStore::queue_depths)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// The state: `pending`, `running`, `sleeping`, `retrying` or `waiting`.
    pub status: RunStatus,
    /// How many of the queue's runs are in it.
    pub runs: u64,
}

/// The answer to a budget reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetReservation {
    /// Whether the amount fit under the limit and is now reserved.
    pub granted: bool,
    /// The budget's total reserved amount after this call.
    pub used: i64,
}
