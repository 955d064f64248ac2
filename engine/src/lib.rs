//! # Morpheus engine
//!
//! A durable workflow engine: workflow code is ordinary async Rust, and every step it
//! takes is journaled so a run resumes after any crash, on any worker, from its last
//! completed step.
//!
//! ## Quick start
//!
//! A workflow with two steps, on a SQLite file: the run fails at its second step,
//! the cause is fixed, and `resume` finishes it *without running the first step again*.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
//!
//! use morpheus_engine::{async_trait, Ctx, Engine, Runtime, RunStatus, StepError, Workflow,
//!     WorkflowResult};
//!
//! static PACKED: AtomicU32 = AtomicU32::new(0);
//! static CARRIER_UP: AtomicBool = AtomicBool::new(false);
//!
//! struct ShipOrder;
//!
//! #[async_trait]
//! impl Workflow for ShipOrder {
//!     const NAME: &'static str = "ship-order";
//!     type Input = String;
//!     type Output = String;
//!
//!     async fn run(&self, ctx: &Ctx, order: String) -> WorkflowResult<String> {
//!         // A step's body runs until it succeeds once; its result is journaled and
//!         // replayed from the journal ever after.
//!         let parcel = ctx
//!             .step("pack")
//!             .run(|_| async move {
//!                 PACKED.fetch_add(1, Ordering::SeqCst);
//!                 Ok(format!("parcel for {order}"))
//!             })
//!             .await?;
//!         let tracking = ctx
//!             .step("ship")
//!             .run(|_| async move {
//!                 if CARRIER_UP.load(Ordering::SeqCst) {
//!                     Ok(format!("{parcel}: shipped as TRACK-1"))
//!                 } else {
//!                     Err(StepError::permanent("carrier is down"))
//!                 }
//!             })
//!             .await?;
//!         Ok(tracking)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let dir = tempfile::tempdir()?;
//!     let url = format!("sqlite://{}/quickstart.db", dir.path().display());
//!     let engine = Engine::builder(morpheus_engine::connect(&url).await?)
//!         .workflow(ShipOrder)
//!         .build();
//!     // The worker and the scheduler, in the background of this process.
//!     let runtime = Runtime::new(engine.clone()).spawn();
//!
//!     let run = engine.start_typed::<ShipOrder>("order-7".into(), None).await?;
//!     let failed = engine.wait(run.run_id).await?;
//!     assert_eq!(failed.status, RunStatus::Failed);
//!     assert_eq!(failed.error.as_deref(), Some("step 'ship' failed: carrier is down"));
//!
//!     CARRIER_UP.store(true, Ordering::SeqCst);
//!     engine.resume(run.run_id).await?;
//!     let output = engine.wait_for_output::<ShipOrder>(run.run_id).await?;
//!     assert_eq!(output, "parcel for order-7: shipped as TRACK-1");
//!     assert_eq!(PACKED.load(Ordering::SeqCst), 1, "the completed step did not run again");
//!
//!     runtime.shutdown().await?;
//!     Ok(())
//! }
//! ```
//!
//! `cargo run -p morpheus-engine --example embed` runs a fuller embedding
//! (`engine/examples/embed.rs`): logs on stderr, a durable sleep, a run's log lines.
//!
//! Three things to know before writing workflows:
//!
//! - **Code between steps runs again on every wake-up**, not only after a crash. A run
//!   that sleeps, waits for an event or waits for a step's retry is released by its
//!   worker; when it is due, the workflow function is *replayed from the top*: completed
//!   steps return their journaled results at once, and everything outside a step runs
//!   again. Put every effect (and anything non-deterministic: use [`Ctx::now`] and
//!   [`Ctx::uuid`]) inside a step.
//! - **Database URLs**: `sqlite://relative/path.db`, `sqlite:///absolute/path.db` (three
//!   slashes) or `postgres://user:pass@host/db`; see [`connect`].
//! - **Logs**: the engine logs through `tracing`. Without a subscriber nothing is
//!   printed; install one, and add [`StepLogLayer`] so that `tracing` events inside step
//!   bodies also land in the run's own logs (`morpheus logs RUN`):
//!
//!   ```
//!   use tracing_subscriber::{prelude::*, EnvFilter};
//!   // `RUST_LOG` picks the level (the database driver logs every statement at debug).
//!   let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
//!   tracing_subscriber::registry()
//!       .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
//!       .with(morpheus_engine::StepLogLayer)
//!       .init();
//!   ```
//!
//! ## Reading the code
//!
//! Read the modules in this order:
//!
//! 1. [`model`] — runs, steps, logs and the fenced writes a worker makes.
//! 2. [`store`] — the storage port: one small trait per concern (runs, events, queues,
//!    schedules, logs, budgets, documents) under the `World` umbrella, with the
//!    [`sqlite`] (embedded default) and [`postgres`] adapters as mirror trees that share
//!    their procedures and one conformance suite (`engine/tests/conformance/`).
//! 3. [`workflow`] and [`ctx`] — the `Workflow` trait and the durable context
//!    (memoized steps, retries at persisted times, durable sleep, events, children).
//! 4. [`executor`] — pluggable effectful adapters, called from steps.
//! 5. [`committer`] — group commit: one writer batches every run's checkpoints.
//! 6. [`worker`] — claims under a lease, heartbeats, fencing, graceful shutdown.
//! 7. [`logs`] — the `tracing` layer that files step events under their run.
//! 8. [`schedule`] and [`scheduler`] — cron and interval schedules, one run per tick.
//! 9. [`documents`] — a small generic document store (JSON by collection and key,
//!    compare-and-set on a version) for workflows' own domain records.
//! 10. [`runtime`] — the worker and the scheduler of one process under one shutdown.
//! 11. [`metrics`] — what the engine counts and times, for a recorder the process
//!     installs (Prometheus in `morpheus up --listen`).
//!
//! The promise: step results are recorded exactly once (first completion wins), step
//! bodies run at least once, and only the holder of a run's current lease can write for
//! it (a stale writer gets `LeaseLost` and writes nothing).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod committer;
pub mod crash;
pub mod ctx;
pub mod documents;
pub mod engine;
pub mod error;
pub mod executor;
pub mod ids;
mod lease;
pub mod logs;
pub mod metrics;
pub mod model;
mod outage;
pub mod profile;
pub mod retry;
pub mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod worker;
pub mod workflow;

pub use async_trait::async_trait;
pub use batch::child_finished_event_key;
pub use batch::ChildFinished;
pub use ctx::{ChildRun, Ctx, StepBuilder, StepContext};
pub use documents::{Document, DocumentQuery, Documents, Versioned};
pub use engine::{connect, Engine, EngineBuilder};
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
pub use runtime::{RunningRuntime, Runtime};
pub use schedule::{CatchUp, FiredRun, Overlap, ScheduleRecord, ScheduleSpec, Trigger};
pub use scheduler::run_scheduler;
/// The storage port under its earlier name: `morpheus_engine::world::World` is
/// [`store::World`].
pub use store as world;
pub use store::{postgres, sqlite};
pub use store::{
    Backend, BudgetStore, ClaimRequest, DocumentStore, EventStore, FeedCursor, FeedEntry, FeedKind,
    FeedRun, FeedStore, HeartbeatClaim, HeartbeatOutcome, HeartbeatPing, HeartbeatStore,
    HeartbeatsEnqueued, InvalidFeedCursor, LogStore, NonceReservation, NonceStore, PingState,
    QueueStore, RunStore, ScheduleStore, SignatureStore, World,
};
pub use store::{NewSignature, SignatureFilter, SignatureRecord};
pub use worker::{Worker, WorkerConfig};
pub use workflow::InvalidInput;
pub use workflow::{DynWorkflow, Workflow, WorkflowError, WorkflowRegistry, WorkflowResult};
