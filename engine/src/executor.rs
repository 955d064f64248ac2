//! Pluggable step executors. An executor performs one effect for a step and knows
//! nothing about workflows beyond the request it is handed: a stable idempotency key
//! (`{run_id}/{step_key}`), a deadline, a JSON payload and a log sink.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{ErrorCode, StepError};
use crate::model::LogLevel;

/// Output of an executor call.
pub type ExecOutput = Value;

/// Why an executor call failed (retryable or permanent), with the stable
/// [`ErrorCode`] of the failures callers act on.
pub type ExecError = StepError;

/// One executor call.
#[derive(Clone)]
pub struct ExecRequest {
    /// Stable across retries and re-executions after a crash: `{run_id}/{step_key}`.
    /// Executors turn it into exactly-once effects (a container name, an idempotency
    /// header, a persisted signed transaction).
    pub idempotency_key: String,
    /// 1 for the step's first attempt.
    pub attempt: u32,
    /// The run's lease epoch: grows with every claim of the run, so an external system
    /// that remembers the highest token it has seen can refuse a stale worker's late
    /// request (a fencing token).
    pub fencing_token: i64,
    /// Whether the run's lease is still known to be held. An executor that starts an
    /// effect late (after queueing, say) checks it at the last moment: a worker that was
    /// frozen past its lease must not start an effect another worker may already have
    /// recorded.
    pub lease: LeaseCheck,
    /// The call must give up by this instant.
    pub deadline: Option<Instant>,
    /// What to do, in the executor's own format.
    pub payload: Value,
    /// Where the call's log lines go (the run's logs, tagged with step and attempt).
    pub logs: LogSink,
}

/// An effectful adapter that steps can call by name.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The name steps use to pick this executor (`"process"`, `"docker"`, …).
    fn kind(&self) -> &str;

    /// Performs the effect.
    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError>;

    /// The code of a failure this executor reported, read back from the message the
    /// journal stored for it. The journal keeps only the message, so a replayed run
    /// learns a failed step's code from here: it must return the code [`Executor::call`]
    /// attached to an error with this message, so a workflow branches the same way live
    /// and on replay. The default knows no codes.
    fn error_code(&self, _message: &str) -> Option<ErrorCode> {
        None
    }
}

/// Executors by kind.
#[derive(Clone, Default)]
pub struct ExecutorRegistry {
    executors: HashMap<String, Arc<dyn Executor>>,
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an executor under its kind (replacing one of the same kind).
    pub fn register(&mut self, executor: impl Executor) -> &mut Self {
        self.executors
            .insert(executor.kind().to_owned(), Arc::new(executor));
        self
    }

    /// The executor of this kind.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Executor>> {
        self.executors.get(kind).cloned()
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<_> = self.executors.keys().cloned().collect();
        kinds.sort();
        kinds
    }
}

impl fmt::Debug for ExecutorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

/// Answers "is the run's lease still held?" from the worker's monotonic clock (no I/O).
#[derive(Clone)]
pub struct LeaseCheck {
    held: Arc<dyn Fn() -> bool + Send + Sync>,
    deadline: Option<Arc<dyn Fn() -> Instant + Send + Sync>>,
}

impl LeaseCheck {
    /// A check backed by `held`.
    pub fn new(held: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            held: Arc::new(held),
            deadline: None,
        }
    }

    /// A lease held until the instant `deadline` returns (it may move later, as the
    /// lease is renewed). Unlike [`LeaseCheck::new`], the deadline itself is available
    /// ([`LeaseCheck::deadline`]), so an effect can be refused by a check that runs
    /// *after* the point a freeze could strike (in a forked child, say).
    pub fn until(deadline: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        let deadline: Arc<dyn Fn() -> Instant + Send + Sync> = Arc::new(deadline);
        let for_held = deadline.clone();
        Self {
            held: Arc::new(move || Instant::now() < for_held()),
            deadline: Some(deadline),
        }
    }

    /// A check that always passes (for callers outside a worker).
    pub fn always() -> Self {
        Self::new(|| true)
    }

    /// Whether the lease is still held.
    pub fn is_held(&self) -> bool {
        (self.held)()
    }

    /// The instant the lease can no longer be vouched for, if this check knows it
    /// (`None`: only [`LeaseCheck::is_held`] can answer).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.as_ref().map(|deadline| deadline())
    }
}

impl fmt::Debug for LeaseCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseCheck")
            .field("held", &self.is_held())
            .finish()
    }
}

type LogFn = dyn Fn(LogLevel, String, Option<Value>) + Send + Sync;

/// Where log lines go. Inside a workflow it appends to the run's logs (tagged with run,
/// step and attempt, group-committed with the run's checkpoints); `LogSink::new` lets
/// any other caller decide.
#[derive(Clone)]
pub struct LogSink {
    write: Arc<LogFn>,
}

impl LogSink {
    /// A sink that hands each line to `write`.
    pub fn new(write: impl Fn(LogLevel, String, Option<Value>) + Send + Sync + 'static) -> Self {
        Self {
            write: Arc::new(write),
        }
    }

    /// A sink that drops every line.
    pub fn discard() -> Self {
        Self::new(|_, _, _| {})
    }

    /// Emits a line with structured fields.
    pub fn log(&self, level: LogLevel, message: impl Into<String>, fields: Option<Value>) {
        (self.write)(level, message.into(), fields);
    }

    /// Emits an info line.
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message, None);
    }

    /// Emits a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message, None);
    }

    /// Emits an error line.
    pub fn error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message, None);
    }
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogSink")
    }
}
