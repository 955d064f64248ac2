//! `Engine`: a world plus the workflows and executors this process knows. It starts
//! runs (validating input before anything is written) and hands out workers.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Notify;

use crate::error::{EngineError, EngineResult};
use crate::executor::ExecutorRegistry;
use crate::model::{NewRun, StartedRun};
use crate::outage::OutageReporter;
use crate::postgres::PostgresWorld;
use crate::sqlite::SqliteWorld;
use crate::workflow::{Workflow, WorkflowRegistry};
use crate::world::World;

/// Opens the database named by `url` (`sqlite://path` or `postgres://…`), refusing a
/// schema newer than this binary and applying pending migrations.
pub async fn connect(url: &str) -> EngineResult<Arc<dyn World>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteWorld::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresWorld::connect(url, 16).await?))
    } else {
        Err(EngineError::UnsupportedUrl(url.to_owned()))
    }
}

struct Inner {
    world: Arc<dyn World>,
    workflows: WorkflowRegistry,
    executors: ExecutorRegistry,
    wake: Arc<Notify>,
    postgres_url: Option<String>,
}

/// The engine of one process. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// An engine over `world` with these workflows and executors.
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
                postgres_url: None,
            }),
        }
    }

    /// Like [`Engine::new`], remembering the Postgres URL so workers can `LISTEN` for
    /// wake-ups on a dedicated connection.
    pub fn with_listen_url(
        world: Arc<dyn World>,
        workflows: WorkflowRegistry,
        executors: ExecutorRegistry,
        url: &str,
    ) -> Self {
        let engine = Self::new(world, workflows, executors);
        let inner = Arc::into_inner(engine.inner).expect("fresh engine");
        Self {
            inner: Arc::new(Inner {
                postgres_url: (url.starts_with("postgres://") || url.starts_with("postgresql://"))
                    .then(|| url.to_owned()),
                ..inner
            }),
        }
    }

    /// The storage port.
    pub fn world(&self) -> Arc<dyn World> {
        self.inner.world.clone()
    }

    /// Registered workflows.
    pub fn workflows(&self) -> &WorkflowRegistry {
        &self.inner.workflows
    }

    /// Registered executors.
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

    /// On Postgres, a task forwarding `NOTIFY`s to the wake signal.
    pub(crate) async fn spawn_wake_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        let url = self.inner.postgres_url.clone()?;
        let wake = self.inner.wake.clone();
        Some(tokio::spawn(async move {
            let mut failures = 0u32;
            let mut outage = OutageReporter::new("LISTEN", std::time::Duration::from_secs(30));
            loop {
                match sqlx::postgres::PgListener::connect(&url).await {
                    Ok(mut listener) => {
                        if listener.listen(crate::postgres::WAKE_CHANNEL).await.is_ok() {
                            failures = 0;
                            outage.success();
                            // After (re)connecting, notifications may have been missed.
                            wake.notify_one();
                            loop {
                                match listener.try_recv().await {
                                    Ok(Some(_)) => wake.notify_one(),
                                    // The connection dropped; the next call reconnects and
                                    // LISTENs again, and anything sent meanwhile was lost:
                                    // look for work now rather than at the next poll.
                                    Ok(None) => {
                                        tracing::info!("LISTEN connection lost; reconnecting");
                                        wake.notify_one();
                                    }
                                    Err(error) => {
                                        outage.failure(&error, None);
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        // Workers keep polling meanwhile.
                        outage.failure(&error, None);
                    }
                }
                let backoff = std::time::Duration::from_millis(500 * 2u64.pow(failures.min(5)));
                tokio::time::sleep(backoff).await;
            }
        }))
    }
}
