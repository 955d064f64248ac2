//! # Morpheus engine
//!
//! A durable workflow engine: workflow code is ordinary async Rust, and every step it
//! takes is journaled so a run resumes after any crash, on any worker, from its last
//! completed step. Read the modules in this order:
//!
//! 1. [`model`] — runs, steps, logs and the fenced writes a worker makes.
//! 2. [`world`] — `World`, the storage port, with [`sqlite`] (embedded default) and
//!    [`postgres`] adapters that share one conformance suite.
//! 3. [`workflow`] and [`ctx`] — the `Workflow` trait and the durable context
//!    (memoized steps, retries at persisted times, durable sleep, events, children).
//! 4. [`executor`] — pluggable effectful adapters, called from steps.
//! 5. [`committer`] — group commit: one writer batches every run's checkpoints.
//! 6. [`worker`] — claims under a lease, heartbeats, fencing, graceful shutdown.
//! 7. [`logs`] — the `tracing` layer that files step events under their run.
//! 8. [`schedule`] and [`scheduler`] — cron and interval schedules, one run per tick.
//! 9. [`documents`] — a small generic document store (JSON by collection and key,
//!    compare-and-set on a version) for workflows' own domain records.
//!
//! The promise: step results are recorded exactly once (first completion wins), step
//! bodies run at least once, and only the holder of a run's current lease can write for
//! it (a stale writer gets `LeaseLost` and writes nothing).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod committer;
pub mod ctx;
pub mod documents;
pub mod engine;
pub mod error;
pub mod executor;
pub mod ids;
mod lease;
pub mod logs;
pub mod model;
mod outage;
pub mod postgres;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod sqlite;
pub mod worker;
pub mod workflow;
pub mod world;

pub use async_trait::async_trait;
pub use batch::child_finished_event_key;
pub use batch::ChildFinished;
pub use ctx::{ChildRun, Ctx, StepBuilder, StepContext};
pub use documents::{Document, DocumentQuery, Documents, Versioned};
pub use engine::{connect, Engine};
pub use error::{EngineError, EngineResult, ResultExt, StepError};
pub use error::{ErrorCode, StepFailure, UnknownName};
pub use executor::{
    ExecError, ExecOutput, ExecRequest, Executor, ExecutorRegistry, LeaseCheck, LogSink,
};
pub use ids::InvalidRunId;
pub use ids::RunId;
pub use logs::StepLogLayer;
pub use model::*;
pub use retry::InvalidRetryPolicy;
pub use retry::RetryPolicy;
pub use schedule::{CatchUp, FiredRun, Overlap, ScheduleRecord, ScheduleSpec, Trigger};
pub use scheduler::run_scheduler;
pub use worker::{Worker, WorkerConfig};
pub use workflow::InvalidInput;
pub use workflow::{DynWorkflow, Workflow, WorkflowError, WorkflowRegistry, WorkflowResult};
pub use world::{Backend, ClaimRequest, World};
