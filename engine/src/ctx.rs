//! `Ctx`: what a workflow body uses to do durable things. Every operation is journaled
//! under a deterministic step key, so a replay after a crash returns recorded results
//! instead of doing the work again.
//!
//! Keys are the step's name, plus `#N` for its N-th repeat in one run (`poll`, `poll#2`).
//! Each operation also takes the next program-order position (`seq`) the moment it is
//! *requested* (not when it completes), so concurrent steps get the same positions on
//! every replay, and a replay that asks for a different key at a recorded position is
//! reported as non-determinism instead of silently mixing results.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::batch::{child_finished_event_key, ChildFinished};
use crate::committer::Committer;
use crate::documents::Documents;
use crate::error::{EngineError, ErrorCode, StepError};
use crate::executor::{ExecRequest, ExecutorRegistry, LeaseCheck, LogSink};
use crate::ids::RunId;
use crate::lease::LeaseClock;
use crate::logs::STEP_LOG_SINK;
use crate::metrics::WorkflowMetrics;
use crate::model::{
    BudgetReservation, Fence, LogLevel, NewLog, NewRun, Park, RunStatus, StepRecord, StepStatus,
    WriteOp, WriteOutcome,
};
use crate::profile::Phase;
use crate::retry::RetryPolicy;
use crate::workflow::{WorkflowError, WorkflowRegistry, WorkflowResult};
use crate::world::World;

/// What a step body is handed.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The run.
    pub run_id: RunId,
    /// The step key.
    pub step_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `{run_id}/{step_key}`: stable across attempts and crashes.
    pub idempotency_key: String,
    /// The run's lease epoch, usable as a fencing token (see [`ExecRequest::fencing_token`]).
    pub fencing_token: i64,
    /// Whether the run's lease is still held (check it before a late effect).
    pub lease: LeaseCheck,
    /// The run's logs, tagged with this step and attempt.
    pub logs: LogSink,
}

pub(crate) struct CtxShared {
    pub run_id: RunId,
    pub fence: Fence,
    pub journal: HashMap<String, StepRecord>,
    pub keys_by_seq: HashMap<i64, String>,
    pub committer: Committer,
    pub world: Arc<dyn World>,
    pub executors: ExecutorRegistry,
    pub workflows: WorkflowRegistry,
    pub lease: LeaseClock,
    /// The run's workflow's metric handles (resolved once per worker).
    pub metrics: Arc<WorkflowMetrics>,
}

#[derive(Default)]
struct CtxState {
    next_seq: i64,
    /// The highest position the journal holds: code before it already ran in an
    /// earlier execution of this run.
    journal_end: Option<i64>,
    name_counts: HashMap<String, u32>,
    park: Option<Park>,
}

/// The durable context of one run execution. Cheap to share by reference; its methods
/// take `&self`, so steps can run concurrently (`futures::join!`).
pub struct Ctx {
    shared: CtxShared,
    state: Mutex<CtxState>,
}

/// A step being configured: `ctx.step("name").retry(policy).run(body)`.
#[must_use = "a step does nothing until `.run(…)` or `.call(…)` is awaited"]
pub struct StepBuilder<'a> {
    ctx: &'a Ctx,
    key: String,
    seq: i64,
    retry: RetryPolicy,
    executor: Option<String>,
    timeout: Option<Duration>,
}

impl Ctx {
    pub(crate) fn new(shared: CtxShared) -> Self {
        let journal_end = shared.keys_by_seq.keys().max().copied();
        Self {
            shared,
            state: Mutex::new(CtxState {
                journal_end,
                ..CtxState::default()
            }),
        }
    }

    /// Whether the workflow body is replaying: a step at or after the current position
    /// is already in the journal, so the code up to it ran (and logged) before.
    pub fn is_replaying(&self) -> bool {
        let state = self.state.lock().expect("ctx state");
        state.journal_end.is_some_and(|end| state.next_seq <= end)
    }

    /// The run's id.
    pub fn run_id(&self) -> RunId {
        self.shared.run_id
    }

    /// How the run should park, if an operation asked it to (read by the worker after
    /// the body returned [`WorkflowError::Suspended`]).
    pub(crate) fn take_park(&self) -> Option<Park> {
        self.state.lock().expect("ctx state").park.take()
    }

    fn request_park(&self, park: Park) {
        let mut state = self.state.lock().expect("ctx state");
        // With concurrent branches, wake for whichever is due first; a timed park wins
        // over an untimed event wait because the replay re-checks the event anyway.
        let wake = |park: &Park| match park {
            Park::Sleep { until } => Some(*until),
            Park::Retry { at } => Some(*at),
            Park::Event { timeout_at, .. } => *timeout_at,
        };
        let replace = match &state.park {
            None => true,
            Some(current) => match (wake(current), wake(&park)) {
                (Some(current), Some(new)) => new < current,
                (None, Some(_)) => true,
                _ => false,
            },
        };
        if replace {
            state.park = Some(park);
        }
    }

    /// Takes the next key for `name` and its program-order position.
    fn next_key(&self, name: &str) -> (String, i64) {
        let mut state = self.state.lock().expect("ctx state");
        let count = state.name_counts.entry(name.to_owned()).or_insert(0);
        *count += 1;
        let key = if *count == 1 {
            name.to_owned()
        } else {
            format!("{name}#{count}")
        };
        let seq = state.next_seq;
        state.next_seq += 1;
        (key, seq)
    }

    /// The recorded entry for `key`, after checking the replay asks for the same key
    /// at this position as the journal holds.
    fn recorded(&self, key: &str, seq: i64) -> WorkflowResult<Option<&StepRecord>> {
        if let Some(journal_key) = self.shared.keys_by_seq.get(&seq) {
            if journal_key != key {
                return Err(WorkflowError::NonDeterminism {
                    seq,
                    journal: journal_key.clone(),
                    requested: key.to_owned(),
                });
            }
        }
        Ok(self.shared.journal.get(key))
    }

    async fn write(&self, op: WriteOp) -> WorkflowResult<WriteOutcome> {
        match self.shared.committer.write(op).await {
            Ok(WriteOutcome::LeaseLost) => Err(WorkflowError::LeaseLost),
            Ok(outcome) => Ok(outcome),
            Err(error) => Err(WorkflowError::Storage(error.to_string())),
        }
    }

    /// A log sink for this run (optionally tagged with a step and attempt).
    pub(crate) fn log_sink(&self, step_key: Option<String>, attempt: Option<i32>) -> LogSink {
        let committer = self.shared.committer.clone();
        let fence = self.shared.fence;
        LogSink::new(move |level, message, fields| {
            committer.write_later(WriteOp::Log {
                fence,
                log: NewLog {
                    run_id: fence.run_id,
                    step_key: step_key.clone(),
                    attempt,
                    level,
                    message,
                    fields,
                    ts: Utc::now(),
                },
            });
        })
    }

    /// Appends a line to the run's logs (committed with the run's next checkpoint).
    /// While the body replays what an earlier execution already ran, the line is not
    /// written again: a run that sleeps and resumes logs each line once (a crash after
    /// the line and before the next checkpoint may still repeat it).
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        if !self.is_replaying() {
            self.log_sink(None, None).log(level, message, None);
        }
    }

    /// Appends a line with structured fields (not again on replay, as [`Ctx::log`]).
    pub fn log_with(&self, level: LogLevel, message: impl Into<String>, fields: Value) {
        if !self.is_replaying() {
            self.log_sink(None, None).log(level, message, Some(fields));
        }
    }

    /// The document store (see [`crate::documents`]). It is not journaled: use it
    /// inside a step body, so a replay returns the step's recorded output instead of
    /// reading or writing again, and keep the writes idempotent (a body may run twice).
    pub fn documents(&self) -> Documents {
        Documents::new(self.shared.world.clone())
    }

    /// The storage itself, for step bodies that must reach it directly: starting runs
    /// under idempotency keys of their own (one run per chain log, say). Like
    /// [`Ctx::documents`] it is not journaled: use it inside a step body, and keep its
    /// writes idempotent.
    pub fn world(&self) -> Arc<dyn crate::World> {
        self.shared.world.clone()
    }

    /// Starts configuring a step named `name`.
    pub fn step(&self, name: impl AsRef<str>) -> StepBuilder<'_> {
        let (key, seq) = self.next_key(name.as_ref());
        StepBuilder {
            ctx: self,
            key,
            seq,
            retry: RetryPolicy::default(),
            executor: None,
            timeout: None,
        }
    }

    /// Records `value` as the output of a step that is not run (internal operations).
    async fn record<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        value: impl FnOnce() -> T,
    ) -> WorkflowResult<T> {
        let (key, seq) = self.next_key(name);
        if let Some(record) = self.recorded(&key, seq)? {
            if record.status == StepStatus::Completed {
                return decode_output(&key, record.output.clone());
            }
        }
        let value = value();
        self.complete(
            &key,
            seq,
            serde_json::to_value(&value)?,
            1,
            None,
            Utc::now(),
        )
        .await?;
        Ok(value)
    }

    async fn complete(
        &self,
        key: &str,
        seq: i64,
        output: Value,
        attempts: i32,
        executor: Option<String>,
        started_at: DateTime<Utc>,
    ) -> WorkflowResult<Value> {
        let outcome = self
            .write(WriteOp::CompleteStep {
                fence: self.shared.fence,
                step_key: key.to_owned(),
                seq,
                output: output.clone(),
                attempts,
                executor,
                started_at,
            })
            .await?;
        if outcome == WriteOutcome::AlreadyCompleted {
            // The first completion wins: return what was recorded, not what we computed.
            let journal = self
                .shared
                .world
                .load_journal(self.shared.run_id)
                .await
                .map_err(|e| WorkflowError::Storage(e.to_string()))?;
            let recorded = journal.into_iter().find(|step| step.step_key == key);
            return Ok(recorded.and_then(|step| step.output).unwrap_or(output));
        }
        Ok(output)
    }

    /// The current time, memoized: a replay sees the same value.
    pub async fn now(&self) -> WorkflowResult<DateTime<Utc>> {
        self.record("$now", Utc::now).await
    }

    /// A random UUID, memoized: a replay sees the same value.
    pub async fn uuid(&self) -> WorkflowResult<Uuid> {
        self.record("$uuid", Uuid::new_v4).await
    }

    /// Durable sleep: the run parks (no worker holds it) and resumes when due, even if
    /// every worker restarted in between.
    pub async fn sleep(&self, duration: Duration) -> WorkflowResult<()> {
        let (key, seq) = self.next_key("$sleep");
        let until = match self.recorded(&key, seq)? {
            Some(record) => {
                let output: SleepRecord = decode_output(&key, record.output.clone())?;
                output.until
            }
            None => {
                let until = Utc::now() + duration;
                self.complete(
                    &key,
                    seq,
                    serde_json::to_value(SleepRecord { until })?,
                    1,
                    None,
                    Utc::now(),
                )
                .await?;
                until
            }
        };
        if Utc::now() >= until {
            return Ok(());
        }
        self.request_park(Park::Sleep { until });
        Err(WorkflowError::Suspended)
    }

    /// Durable sleep until a time.
    pub async fn sleep_until(&self, until: DateTime<Utc>) -> WorkflowResult<()> {
        let duration = (until - Utc::now()).to_std().unwrap_or_default();
        self.sleep(duration).await
    }

    /// Waits for the event `key` (delivered by [`Ctx::send_event`], `morpheus` or
    /// [`EventStore::send_event`](crate::EventStore::send_event)). Returns its payload, or `None` if `timeout` passed first.
    /// The run parks while waiting. A run waits for one key at a time: if concurrent
    /// branches wait for different keys without timeouts, the run parks on the first.
    /// (Wait with timeouts, or in child runs, to wait for several at once.)
    pub async fn wait_for_event(
        &self,
        key: &str,
        timeout: Option<Duration>,
    ) -> WorkflowResult<Option<Value>> {
        let (step_key, seq) = self.next_key(&format!("$event:{key}"));
        let timeout_at = match self.recorded(&step_key, seq)? {
            Some(record) if record.status == StepStatus::Completed => {
                let outcome: EventRecord = decode_output(&step_key, record.output.clone())?;
                return Ok(outcome.payload);
            }
            Some(record) => record.next_attempt_at,
            None => {
                let timeout_at = timeout.map(|t| Utc::now() + t);
                self.write(WriteOp::BeginWait {
                    fence: self.shared.fence,
                    step_key: step_key.clone(),
                    seq,
                    timeout_at,
                })
                .await?;
                timeout_at
            }
        };
        let arrived = self
            .shared
            .world
            .get_event(key)
            .await
            .map_err(|e| WorkflowError::Storage(e.to_string()))?;
        let timed_out = timeout_at.is_some_and(|at| Utc::now() >= at);
        if arrived.is_some() || timed_out {
            let record = EventRecord { payload: arrived };
            let output = self
                .complete(
                    &step_key,
                    seq,
                    serde_json::to_value(&record)?,
                    1,
                    None,
                    Utc::now(),
                )
                .await?;
            let record: EventRecord = decode_output(&step_key, Some(output))?;
            return Ok(record.payload);
        }
        self.request_park(Park::Event {
            key: key.to_owned(),
            timeout_at,
        });
        Err(WorkflowError::Suspended)
    }

    /// Delivers an event exactly once (first delivery of a key wins). Returns false when
    /// the key had already been delivered.
    pub async fn send_event(&self, key: &str, payload: Value) -> WorkflowResult<bool> {
        let world = self.shared.world.clone();
        let key_owned = key.to_owned();
        self.step(format!("$send:{key}"))
            .retry(RetryPolicy::default())
            .run(move |_| async move {
                world
                    .send_event(&key_owned, payload)
                    .await
                    .map_err(StepError::retryable)
            })
            .await
    }

    /// Reserves `amount` of the cross-run `budget` (say `topup:{owner}:{day}`) under
    /// `limit`, exactly once: the step named `name` holds the answer, and a retried or
    /// replayed reservation reserves nothing more. Returns whether it fit.
    pub async fn reserve_budget(
        &self,
        name: &str,
        budget: &str,
        amount: i64,
        limit: i64,
    ) -> WorkflowResult<BudgetReservation> {
        let world = self.shared.world.clone();
        let run_id = self.shared.run_id;
        let budget = budget.to_owned();
        self.step(name)
            .run(move |step| async move {
                world
                    .reserve_budget(&budget, &step.idempotency_key, amount, limit, Some(run_id))
                    .await
                    .map_err(StepError::retryable)
            })
            .await
    }

    /// How much of the cross-run `budget` is reserved, read once (memoized as the step
    /// `name`, so a replay decides with the same number).
    pub async fn budget_used(&self, name: &str, budget: &str) -> WorkflowResult<i64> {
        let world = self.shared.world.clone();
        let budget = budget.to_owned();
        self.step(name)
            .run(move |_| async move {
                world
                    .budget_used(&budget)
                    .await
                    .map_err(StepError::retryable)
            })
            .await
    }

    /// Gives back the reservation made by the step `reserved_by` (when the spending it
    /// was for did not happen).
    pub async fn release_budget(
        &self,
        name: &str,
        budget: &str,
        reserved_by: &str,
    ) -> WorkflowResult<()> {
        let world = self.shared.world.clone();
        let budget = budget.to_owned();
        let reservation_key = format!("{}/{}", self.shared.run_id, reserved_by);
        self.step(name)
            .run(move |_| async move {
                world
                    .release_budget(&budget, &reservation_key)
                    .await
                    .map_err(StepError::retryable)
            })
            .await
    }

    /// Starts a child run of workflow `W` (once: a replay returns the same child).
    pub async fn start_child<W: crate::workflow::Workflow>(
        &self,
        input: W::Input,
    ) -> WorkflowResult<ChildRun<W::Output>> {
        let workflow =
            self.shared.workflows.get(W::NAME).ok_or_else(|| {
                WorkflowError::failed(EngineError::UnknownWorkflow(W::NAME.into()))
            })?;
        let input = serde_json::to_value(input)?;
        workflow
            .check_input(&input)
            .map_err(|reason| WorkflowError::failed(format!("child {}: {reason}", W::NAME)))?;
        let world = self.shared.world.clone();
        let parent = self.shared.run_id;
        let version = workflow.version();
        let run_id: RunId = self
            .step(format!("$child:{}", W::NAME))
            .run(move |step| async move {
                let mut new_run = NewRun::new(W::NAME, input);
                new_run.workflow_version = version;
                new_run.parent_run_id = Some(parent);
                new_run.idempotency_key = Some(format!("child:{}", step.idempotency_key));
                world
                    .start_run(new_run)
                    .await
                    .map(|started| started.run_id)
                    .map_err(StepError::retryable)
            })
            .await?;
        Ok(ChildRun {
            run_id,
            _output: std::marker::PhantomData,
        })
    }

    /// Waits (parked) for a child run to end; its output, or an error if it failed or
    /// was cancelled.
    pub async fn join_child<O: DeserializeOwned>(&self, child: &ChildRun<O>) -> WorkflowResult<O> {
        let payload = self
            .wait_for_event(&child_finished_event_key(child.run_id), None)
            .await?
            .unwrap_or(Value::Null);
        let finished: ChildFinished = serde_json::from_value(payload).map_err(|error| {
            WorkflowError::failed(format!(
                "child run {} ended with an event that does not decode: {error}",
                child.run_id
            ))
        })?;
        if finished.status == RunStatus::Completed {
            return Ok(serde_json::from_value(
                finished.output.unwrap_or(Value::Null),
            )?);
        }
        Err(WorkflowError::failed(format!(
            "child run {} {}: {}",
            child.run_id,
            finished.status,
            finished.error.as_deref().unwrap_or("no error recorded")
        )))
    }
}

/// A child run started by [`Ctx::start_child`].
#[derive(Debug, Clone)]
pub struct ChildRun<O> {
    /// The child's run id.
    pub run_id: RunId,
    _output: std::marker::PhantomData<fn() -> O>,
}

#[derive(Serialize, serde::Deserialize)]
struct SleepRecord {
    until: DateTime<Utc>,
}

#[derive(Serialize, serde::Deserialize)]
struct EventRecord {
    payload: Option<Value>,
}

fn decode_output<T: DeserializeOwned>(key: &str, output: Option<Value>) -> WorkflowResult<T> {
    serde_json::from_value(output.unwrap_or(Value::Null)).map_err(|error| {
        WorkflowError::failed(format!(
            "recorded output of step '{key}' does not decode: {error}"
        ))
    })
}

impl<'a> StepBuilder<'a> {
    /// The step's key (name plus repeat counter).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sets the retry policy (default: 3 attempts, 1 s initial delay, doubling).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Gives each attempt at most this long (executor calls get it as their deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the step through a registered executor (see [`StepBuilder::call`]).
    pub fn executor(mut self, kind: impl Into<String>) -> Self {
        self.executor = Some(kind.into());
        self
    }

    /// Calls the configured executor with `payload` and returns its output.
    pub async fn call(self, payload: Value) -> WorkflowResult<Value> {
        self.call_checked(payload, |_, _| Ok(())).await
    }

    /// Calls the configured executor with a typed request and decodes its answer as
    /// `Out`: `ctx.step("height").executor("cosmos").call_as::<LatestHeight>(&request)`.
    ///
    /// The executor receives the request's JSON (`serde_json::to_value`), and the
    /// journal records its answer as it came, so a resumed run decodes the same JSON
    /// as before. An answer that does not decode as `Out` fails the step for good, with
    /// a message naming the executor and the type: a malformed answer never turns into
    /// a default.
    pub async fn call_as<Out: DeserializeOwned>(
        self,
        request: &impl Serialize,
    ) -> WorkflowResult<Out> {
        let payload = serde_json::to_value(request).map_err(|error| {
            WorkflowError::failed(format!(
                "step '{}': the request does not encode as JSON: {error}",
                self.key
            ))
        })?;
        let key = self.key.clone();
        let output = self
            .call_checked(payload, |kind, output| {
                Out::deserialize(output).map(drop).map_err(|error| {
                    StepError::permanent(format!(
                        "executor '{kind}' answered with output that does not decode as {}: {error}",
                        std::any::type_name::<Out>()
                    ))
                })
            })
            .await?;
        decode_output(&key, Some(output))
    }

    /// Calls the configured executor, failing an attempt whose answer `check` refuses
    /// (so the journal never holds an answer the workflow cannot use).
    async fn call_checked(
        self,
        payload: Value,
        check: impl FnOnce(&str, &Value) -> Result<(), StepError> + Send,
    ) -> WorkflowResult<Value> {
        let Some(kind) = self.executor.clone() else {
            return Err(WorkflowError::failed(format!(
                "step '{}' called without an executor; use .executor(kind)",
                self.key
            )));
        };
        let executor = self.ctx.shared.executors.get(&kind);
        let calls = self.ctx.shared.metrics.executor(&kind);
        let deadline_after = self.timeout;
        self.run(move |step| async move {
            let executor = executor.ok_or_else(|| {
                StepError::permanent(format!("no executor of kind '{kind}' is registered"))
            })?;
            let answer = executor
                .call(ExecRequest {
                    idempotency_key: step.idempotency_key,
                    attempt: step.attempt,
                    fencing_token: step.fencing_token,
                    lease: step.lease,
                    deadline: deadline_after.map(|d| Instant::now() + d),
                    payload,
                    logs: step.logs,
                })
                .await
                .and_then(|output| check(&kind, &output).map(|()| output));
            if let Some(calls) = calls {
                calls.calls.increment(1);
                if answer.is_err() {
                    calls.failures.increment(1);
                }
            }
            answer
        })
        .await
    }

    /// The code of a journaled failure of this step, read back by its executor (the
    /// journal stores only the message; see [`crate::Executor::error_code`]).
    fn recorded_code(ctx: &Ctx, executor: Option<&str>, message: &str) -> Option<ErrorCode> {
        ctx.shared.executors.get(executor?)?.error_code(message)
    }

    /// Runs `body` unless the journal already holds this step's result, and records the
    /// result exactly once. A failed attempt is retried per the policy at a persisted
    /// time (the run parks meanwhile).
    pub async fn run<T, F, Fut>(self, body: F) -> WorkflowResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(StepContext) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let step_started = crate::profile::start();
        let ctx = self.ctx;
        let key = self.key;
        let seq = self.seq;
        let mut attempt = 1u32;
        let mut started_at = Utc::now();
        if let Some(record) = ctx.recorded(&key, seq)? {
            match record.status {
                StepStatus::Completed => return decode_output(&key, record.output.clone()),
                StepStatus::Failed => {
                    let message = record.error.clone().unwrap_or_default();
                    return Err(WorkflowError::StepFailed {
                        code: Self::recorded_code(ctx, self.executor.as_deref(), &message),
                        step: key,
                        message,
                        attempts: record.attempts.max(1) as u32,
                    });
                }
                StepStatus::Retrying | StepStatus::Waiting => {
                    if let Some(at) = record.next_attempt_at {
                        if at > Utc::now() {
                            ctx.request_park(Park::Retry { at });
                            return Err(WorkflowError::Suspended);
                        }
                    }
                    attempt = record.attempts.max(0) as u32 + 1;
                    started_at = record.started_at;
                }
            }
        }
        if !ctx.shared.lease.valid() {
            // Possibly frozen past the lease: another worker may own the run and have
            // recorded this step already. Never start a body on a lease we cannot vouch
            // for; the run resumes wherever its lease is valid.
            return Err(WorkflowError::LeaseLost);
        }
        let step = StepContext {
            run_id: ctx.shared.run_id,
            step_key: key.clone(),
            attempt,
            idempotency_key: format!("{}/{}", ctx.shared.run_id, key),
            fencing_token: ctx.shared.fence.epoch,
            lease: {
                let clock = ctx.shared.lease.clone();
                LeaseCheck::until(move || clock.deadline())
            },
            logs: ctx.log_sink(Some(key.clone()), Some(attempt as i32)),
        };
        let sink = step.logs.clone();
        let body_started = Instant::now();
        let body = STEP_LOG_SINK.scope(sink, body(step));
        let result = match self.timeout {
            Some(limit) if self.executor.is_none() => {
                tokio::time::timeout(limit, body).await.unwrap_or_else(|_| {
                    Err(StepError::retryable(format!(
                        "step timed out after {limit:?}"
                    )))
                })
            }
            _ => body.await,
        };
        ctx.shared
            .metrics
            .step_finished(self.executor.as_deref(), body_started.elapsed());
        crate::profile::record(Phase::Body, body_started.elapsed(), 1);
        match result {
            Ok(value) => {
                let serializing = crate::profile::start();
                let output = serde_json::to_value(&value)?;
                if let Some(since) = serializing {
                    crate::profile::record_since(Phase::Serialize, since);
                }
                let recorded = ctx
                    .complete(
                        &key,
                        seq,
                        output.clone(),
                        attempt as i32,
                        self.executor,
                        started_at,
                    )
                    .await?;
                if let Some(since) = step_started {
                    crate::profile::record_since(Phase::Step, since);
                }
                if recorded == output {
                    Ok(value)
                } else {
                    decode_output(&key, Some(recorded))
                }
            }
            Err(error) => {
                let retry_at = error
                    .is_retryable()
                    .then(|| self.retry.delay_after(attempt))
                    .flatten()
                    .map(|delay| Utc::now() + delay);
                ctx.write(WriteOp::FailStepAttempt {
                    fence: ctx.shared.fence,
                    step_key: key.clone(),
                    seq,
                    error: error.message().to_owned(),
                    attempts: attempt as i32,
                    next_attempt_at: retry_at,
                    executor: self.executor,
                    started_at,
                })
                .await?;
                match retry_at {
                    Some(at) => {
                        ctx.log_sink(Some(key.clone()), Some(attempt as i32)).log(
                            LogLevel::Warn,
                            format!(
                                "attempt {attempt} failed, retrying at {at}: {}",
                                error.message()
                            ),
                            None,
                        );
                        ctx.request_park(Park::Retry { at });
                        Err(WorkflowError::Suspended)
                    }
                    None => Err(WorkflowError::StepFailed {
                        step: key,
                        message: error.message().to_owned(),
                        attempts: attempt,
                        code: error.code().cloned(),
                    }),
                }
            }
        }
    }
}
