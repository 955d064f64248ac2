//! `Engine`: a store plus the workflows and executors this process knows. It starts
//! runs (validating input before anything is written), looks them up, waits for them to
//! end, and is what a [`crate::Runtime`] (worker and scheduler) serves.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use crate::error::{EngineError, EngineResult};
use crate::executor::{Executor, ExecutorRegistry};
use crate::ids::RunId;
use crate::model::{NewRun, RunRecord, RunStatus, StartedRun};
use crate::postgres::PostgresWorld;
use crate::sqlite::SqliteWorld;
use crate::store::{Backend, World};
use crate::workflow::{Workflow, WorkflowRegistry};

/// Opens the database named by `url`, refusing a schema newer than this binary and
/// applying pending migrations.
///
/// URL forms:
/// - `sqlite://.morpheus/morpheus.db` — a path relative to the working directory
///   (the file and its directory are created when missing);
/// - `sqlite:///var/lib/morpheus/morpheus.db` — an absolute path (three slashes);
/// - `postgres://user:password@host:5432/database` (or `postgresql://…`) — a server
///   shared by any number of processes on any number of hosts. The process opens at most
///   [`POSTGRES_POOL_SIZE`] connections (`$MORPHEUS_PG_POOL_SIZE` overrides it: many
///   processes on one server must stay under its `max_connections` together).
pub async fn connect(url: &str) -> EngineResult<Arc<dyn World>> {
    match Backend::of_url(url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteWorld::connect(url).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(
            PostgresWorld::connect(url, postgres_pool_size()?).await?,
        )),
        None => Err(EngineError::UnsupportedUrl(url.to_owned())),
    }
}

/// Connections one process opens to Postgres by default (plus one per `LISTEN`).
pub const POSTGRES_POOL_SIZE: u32 = 16;

/// `$MORPHEUS_PG_POOL_SIZE` (1–1000), or [`POSTGRES_POOL_SIZE`] when it is unset.
fn postgres_pool_size() -> EngineResult<u32> {
    match std::env::var("MORPHEUS_PG_POOL_SIZE") {
        Err(_) => Ok(POSTGRES_POOL_SIZE),
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|size| (1..=1000).contains(size))
            .ok_or_else(|| {
                EngineError::Database(sqlx::Error::Configuration(
                    format!("MORPHEUS_PG_POOL_SIZE must be a number of connections from 1 to 1000, not '{text}'").into(),
                ))
            }),
    }
}

struct Inner {
    world: Arc<dyn World>,
    workflows: WorkflowRegistry,
    executors: ExecutorRegistry,
    wake: Arc<Notify>,
}

/// The engine of one process. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// An engine over `world` with these workflows and executors (see also
    /// [`Engine::builder`], which needs neither registry up front).
    pub fn new(
        world: Arc<dyn World>,
        workflows: WorkflowRegistry,
        executors: ExecutorRegistry,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                world,
                workflows,
                executors,
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// Starts building an engine over `world`, with no workflows and no executors yet.
    ///
    /// ```no_run
    /// # async fn example() -> morpheus_engine::EngineResult<()> {
    /// let engine = morpheus_engine::Engine::builder(morpheus_engine::connect("sqlite://app.db").await?)
    ///     // .workflow(MyWorkflow)
    ///     .build();
    /// # Ok(()) }
    /// ```
    pub fn builder(world: Arc<dyn World>) -> EngineBuilder {
        EngineBuilder {
            world,
            workflows: WorkflowRegistry::new(),
            executors: ExecutorRegistry::new(),
        }
    }

    /// The storage port.
    pub fn world(&self) -> Arc<dyn World> {
        self.inner.world.clone()
    }

    /// The workflows this process can start and run (a worker claims only runs of
    /// these names and versions).
    pub fn workflows(&self) -> &WorkflowRegistry {
        &self.inner.workflows
    }

    /// The executors steps of this process can call by kind (`ctx.step(..).executor(kind)`).
    pub fn executors(&self) -> &ExecutorRegistry {
        &self.inner.executors
    }

    /// Signalled when work may have arrived (a run started or parked in this process).
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// Validates `input` for the workflow named `workflow` and starts a run. Unknown
    /// workflows and bad input are refused before anything is written.
    pub async fn start(
        &self,
        workflow: &str,
        input: Value,
        idempotency_key: Option<String>,
    ) -> EngineResult<StartedRun> {
        let new_run = self.prepare(workflow, input, idempotency_key)?;
        self.start_prepared(new_run).await
    }

    /// Starts a prepared run (see [`Engine::prepare`]; set queue or priority on it first).
    pub async fn start_prepared(&self, new_run: NewRun) -> EngineResult<StartedRun> {
        let started = self.inner.world.start_run(new_run).await?;
        self.inner.wake.notify_one();
        Ok(started)
    }

    /// Starts a run of `W` with a typed input.
    pub async fn start_typed<W: Workflow>(
        &self,
        input: W::Input,
        idempotency_key: Option<String>,
    ) -> EngineResult<StartedRun> {
        self.start(W::NAME, serde_json::to_value(input)?, idempotency_key)
            .await
    }

    /// One run, as stored now (`None`: no run has this id).
    pub async fn get_run(&self, run_id: RunId) -> EngineResult<Option<RunRecord>> {
        self.inner.world.get_run(run_id).await
    }

    /// Makes a failed or cancelled run runnable again: its failed step is tried again,
    /// its completed steps are kept (their bodies do not run again).
    pub async fn resume(&self, run_id: RunId) -> EngineResult<()> {
        self.inner.world.resume_run(run_id).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Cancels a run that has not ended (observed by its worker at the next step
    /// boundary).
    pub async fn cancel(&self, run_id: RunId) -> EngineResult<()> {
        self.inner.world.cancel_run(run_id).await
    }

    /// Waits until the run has ended (completed, failed or cancelled) and returns it.
    /// Some worker must be serving the engine's database meanwhile (a [`crate::Runtime`]
    /// in this process or `morpheus up` elsewhere); a parked run (sleeping, waiting for
    /// an event) is waited for too, however long that takes: wrap the call in
    /// `tokio::time::timeout` to bound it.
    pub async fn wait(&self, run_id: RunId) -> EngineResult<RunRecord> {
        // The run may be worked on by another process, so the database is the only
        // source of truth: poll it, quickly at first, then every quarter second.
        let mut pause = Duration::from_millis(5);
        loop {
            let run = self
                .get_run(run_id)
                .await?
                .ok_or(EngineError::RunNotFound(run_id))?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Waits until a run of `W` has ended (see [`Engine::wait`]) and returns its typed
    /// output. A run that failed or was cancelled is
    /// [`EngineError::InvalidState`] carrying the run's error.
    pub async fn wait_for_output<W: Workflow>(&self, run_id: RunId) -> EngineResult<W::Output> {
        let run = self.wait(run_id).await?;
        match run.status {
            RunStatus::Completed => Ok(serde_json::from_value(run.output.unwrap_or(Value::Null))?),
            status => Err(EngineError::InvalidState {
                run: run_id,
                status: status.as_str().to_owned(),
                reason: run.error.unwrap_or_else(|| "it has no output".to_owned()),
            }),
        }
    }

    /// Checks a start request without touching the database.
    pub fn prepare(
        &self,
        workflow: &str,
        input: Value,
        idempotency_key: Option<String>,
    ) -> EngineResult<NewRun> {
        self.inner
            .workflows
            .prepare(workflow, input, idempotency_key)
    }

    /// Where the store can tell this process about work written by others (Postgres
    /// `NOTIFY`), a task forwarding those wake-ups to the wake signal.
    pub(crate) fn spawn_wake_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.inner
            .world
            .spawn_wake_listener(self.inner.wake.clone())
    }
}

/// Builds an [`Engine`] (see [`Engine::builder`]): register the workflows this process
/// runs and the executors their steps call, then [`EngineBuilder::build`].
pub struct EngineBuilder {
    world: Arc<dyn World>,
    workflows: WorkflowRegistry,
    executors: ExecutorRegistry,
}

impl EngineBuilder {
    /// Registers a workflow under its name (a later one of the same name replaces it).
    pub fn workflow<W: Workflow>(mut self, workflow: W) -> Self {
        self.workflows.register(workflow);
        self
    }

    /// Uses these workflows (replacing any registered so far).
    pub fn workflows(mut self, workflows: WorkflowRegistry) -> Self {
        self.workflows = workflows;
        self
    }

    /// Registers an executor under its kind.
    pub fn executor(mut self, executor: impl Executor) -> Self {
        self.executors.register(executor);
        self
    }

    /// Uses these executors (replacing any registered so far).
    pub fn executors(mut self, executors: ExecutorRegistry) -> Self {
        self.executors = executors;
        self
    }

    /// The engine, ready to start runs and to be served by a [`crate::Runtime`].
    pub fn build(self) -> Engine {
        Engine::new(self.world, self.workflows, self.executors)
    }
}
