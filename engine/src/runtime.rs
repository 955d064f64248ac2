//! The runtime: everything one process runs for an [`Engine`] — the worker (claims and
//! executes runs) and the scheduler (starts the runs of due schedules) — under one
//! shutdown signal. `morpheus up`, the benchmark, the tests and embedders all start the
//! engine this way instead of wiring channels between the services by hand.
//!
//! ```no_run
//! # async fn example(engine: morpheus_engine::Engine) -> morpheus_engine::EngineResult<()> {
//! use morpheus_engine::Runtime;
//!
//! // In the foreground, until Ctrl-C:
//! Runtime::new(engine.clone())
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//!
//! // Or in the background, stopped (gracefully) by the handle:
//! let running = Runtime::new(engine).spawn();
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::scheduler::run_scheduler;
use crate::worker::{Worker, WorkerConfig};

/// The services of one process for one [`Engine`], started together and stopped
/// together. Built with defaults for the engine's backend
/// ([`WorkerConfig::for_backend`]); change them with the builder methods.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    worker: WorkerConfig,
    scheduler: bool,
}

impl Runtime {
    /// A runtime with a worker configured for the engine's backend and a scheduler.
    pub fn new(engine: Engine) -> Self {
        let worker = WorkerConfig::for_backend(engine.world().backend());
        Self {
            engine,
            worker,
            scheduler: true,
        }
    }

    /// Replaces the worker's settings (concurrency, lease, queues…).
    pub fn worker_config(mut self, config: WorkerConfig) -> Self {
        self.worker = config;
        self
    }

    /// Runs no scheduler in this process: schedules are fired by other processes (any
    /// number may fire them; each tick still starts exactly one run).
    pub fn without_scheduler(mut self) -> Self {
        self.scheduler = false;
        self
    }

    /// Runs the worker and the scheduler until `shutdown` resolves (or the worker stops
    /// on a storage failure it cannot retry), then stops both gracefully: the worker stops
    /// claiming, lets in-flight runs finish within its grace period and gives the rest
    /// back. Returns once both have stopped, with the worker's result.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> EngineResult<()> {
        let (stop, stopped) = watch::channel(false);
        let scheduler = self.scheduler.then(|| {
            tokio::spawn(run_scheduler(
                self.engine.clone(),
                wait_for_stop(stopped.clone()),
            ))
        });
        let worker = Worker::new(self.engine, self.worker).run(wait_for_stop(stopped));
        tokio::pin!(worker, shutdown);
        let result = tokio::select! {
            result = &mut worker => result,
            () = &mut shutdown => {
                let _ = stop.send(true);
                worker.await
            }
        };
        let _ = stop.send(true);
        if let Some(scheduler) = scheduler {
            // The scheduler only waits between passes: it stops at once.
            let _ = scheduler.await;
        }
        result
    }

    /// Starts the runtime in the background; the handle stops it.
    pub fn spawn(self) -> RunningRuntime {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            let _ = stopped.await;
        }));
        RunningRuntime {
            stop: Some(stop),
            task,
        }
    }
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can ask for more work either.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A [`Runtime`] running in the background (see [`Runtime::spawn`]). Dropping it without
/// [`RunningRuntime::shutdown`] aborts the services at once, as a crash would (leases
/// then expire and other workers take the runs over).
pub struct RunningRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<EngineResult<()>>,
}

impl RunningRuntime {
    /// Stops the services gracefully and waits for them; returns the worker's result.
    pub async fn shutdown(mut self) -> EngineResult<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            // A panic in the services is a bug: surface it where the caller is.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(EngineError::StorageFailed(format!(
                "runtime task was cancelled: {error}"
            ))),
        }
    }

    /// Whether the services have stopped on their own (a storage failure).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for RunningRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}
