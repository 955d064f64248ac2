//! Shared helpers for the engine's integration tests: a fresh database per test on
//! either backend, a macro that instantiates one test body for both, and a worker
//! harness for engine-level tests.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use morpheus_engine::postgres::PostgresWorld;
use morpheus_engine::sqlite::SqliteWorld;
use morpheus_engine::{
    async_trait, Backend, EngineResult, RunId, RunRecord, RunStatus, RunningRuntime, Runtime,
    WorkerConfig, WorkflowRegistry, World,
};
use morpheus_engine::{Engine, EngineError};
use sqlx::Connection;
use tempfile::TempDir;

/// The environment variable naming a PostgreSQL superuser URL for the tests.
pub const PG_URL_VAR: &str = "MORPHEUS_TEST_PG_URL";

/// Connections each test's Postgres world may open (many tests share one server).
pub const PG_MAX_CONNECTIONS: u32 = 4;

/// A fresh, empty database that lives as long as this value.
pub struct TestDb {
    /// Which backend.
    pub backend: Backend,
    /// URL of the fresh database.
    pub url: String,
    /// SQLite: the directory holding the file.
    dir: Option<TempDir>,
    /// Postgres: the base URL and the database name (dropped on drop).
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        Self {
            backend: Backend::Sqlite,
            url,
            dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh PostgreSQL database on the server named by `MORPHEUS_TEST_PG_URL`.
    /// Panics (the test fails) when the variable is unset: Postgres tests are never
    /// skipped silently.
    pub async fn postgres() -> Self {
        let base = std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{PG_URL_VAR} is not set, so the PostgreSQL half of the suite cannot run. \
                 Run scripts/test (it starts PostgreSQL and sets {PG_URL_VAR}), or export \
                 {PG_URL_VAR}=postgres://USER:PASSWORD@HOST:PORT/postgres (a superuser)"
            )
        });
        let name = format!("morpheus_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {PG_URL_VAR}={base}: {error}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        let _ = admin.close().await;
        let url = with_database(&base, &name);
        Self {
            backend: Backend::Postgres,
            url,
            dir: None,
            pg: Some((base, name)),
        }
    }

    /// Opens a world on this database (runs migrations).
    pub async fn connect(&self) -> EngineResult<Arc<dyn World>> {
        Ok(match self.backend {
            Backend::Sqlite => Arc::new(SqliteWorld::connect(&self.url).await?),
            Backend::Postgres => {
                Arc::new(PostgresWorld::connect(&self.url, PG_MAX_CONNECTIONS).await?)
            }
        })
    }

    /// Opens a world, panicking on failure.
    pub async fn world(&self) -> Arc<dyn World> {
        self.connect()
            .await
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: drop the test's Postgres database (WITH (FORCE) ends connections
        // still open in pools). Kept when MORPHEUS_TEST_KEEP_DB is set, for debugging.
        let Some((base, name)) = self.pg.take() else {
            return;
        };
        if std::env::var_os("MORPHEUS_TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {name}");
            return;
        }
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&base).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (without_query, query) = match base.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (base, None),
    };
    let authority_start = without_query.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A fresh SQLite world; keep the returned database alive for the whole test.
pub async fn sqlite_world() -> (Arc<dyn World>, TestDb) {
    let db = TestDb::sqlite().await;
    (db.world().await, db)
}

/// A fresh Postgres world; keep the returned database alive for the whole test.
pub async fn postgres_world() -> (Arc<dyn World>, TestDb) {
    let db = TestDb::postgres().await;
    (db.world().await, db)
}

/// What a test body takes: the world (most tests) or the database itself (tests that
/// need its URL). Lets `for_each_backend!` call any body the same way.
#[async_trait]
pub trait TestArg: Sized {
    /// Makes the argument for `db`.
    async fn make(db: &TestDb) -> Self;
}

#[async_trait]
impl TestArg for Arc<dyn World> {
    async fn make(db: &TestDb) -> Self {
        db.world().await
    }
}

#[async_trait]
impl TestArg for String {
    /// The database URL.
    async fn make(db: &TestDb) -> Self {
        db.url.clone()
    }
}

/// Instantiates each listed `async fn name(arg)` (arg: `Arc<dyn World>` or the database
/// URL as `String`) as `sqlite::name` and `postgres::name` tests, each on a fresh
/// database.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        $crate::for_each_backend!(@backend sqlite, sqlite, $($name),*);
        $crate::for_each_backend!(@backend postgres, postgres, $($name),*);
    };
    (@backend $module:ident, $make:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::TestDb::$make().await;
                    let arg = $crate::common::TestArg::make(&db).await;
                    super::$name(arg).await;
                    drop(db);
                }
            )*
        }
    };
}

/// A worker running in the background of a test (a [`Runtime`] without a scheduler:
/// schedule tests fire schedules themselves).
pub struct Harness {
    /// The engine the worker serves.
    pub engine: Engine,
    /// Its world.
    pub world: Arc<dyn World>,
    running: Option<RunningRuntime>,
}

/// Worker settings short enough for tests.
pub fn test_worker_config(backend: Backend) -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(2),
        ..WorkerConfig::for_backend(backend)
    }
}

impl Harness {
    /// Starts an engine over `world` with `workflows` and one worker.
    pub fn start(world: Arc<dyn World>, workflows: WorkflowRegistry) -> Self {
        let engine = Engine::builder(world.clone()).workflows(workflows).build();
        let running = Runtime::new(engine.clone())
            .worker_config(test_worker_config(world.backend()))
            .without_scheduler()
            .spawn();
        Self {
            engine,
            world,
            running: Some(running),
        }
    }

    /// Stops the worker gracefully and checks it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), running.shutdown())
                .await
                .expect("worker stops within 10 s");
            result.expect("worker stopped without error");
        }
    }
}

/// A workflow registry filled by `register`, so a test builds the registry it hands to
/// [`Harness::start`] in one expression: `registry(|r| { r.register(A).register(B); })`.
pub fn registry(register: impl FnOnce(&mut WorkflowRegistry)) -> WorkflowRegistry {
    let mut workflows = WorkflowRegistry::new();
    register(&mut workflows);
    workflows
}

/// How long `wait_for*` helpers wait before failing the test.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(20);

/// Polls the run until `done` holds (fails the test after 20 s, showing the run).
pub async fn wait_for(
    world: &Arc<dyn World>,
    run_id: RunId,
    what: &str,
    done: impl Fn(&RunRecord) -> bool,
) -> RunRecord {
    let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
    loop {
        let run = world
            .get_run(run_id)
            .await
            .expect("get_run")
            .unwrap_or_else(|| panic!("run {run_id} does not exist"));
        if done(&run) {
            return run;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "run {run_id} did not become {what} within {WAIT_DEADLINE:?}; last seen: {run:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until the run has `status`.
pub async fn wait_for_status(
    world: &Arc<dyn World>,
    run_id: RunId,
    status: RunStatus,
) -> RunRecord {
    wait_for(world, run_id, status.as_str(), |run| run.status == status).await
}

/// Polls until the run has ended (completed, failed or cancelled).
pub async fn wait_for_terminal(world: &Arc<dyn World>, run_id: RunId) -> RunRecord {
    wait_for(world, run_id, "terminal", |run| run.status.is_terminal()).await
}

/// Asserts an engine error is the expected variant, with a readable failure.
pub fn assert_schema_too_new(result: EngineResult<Arc<dyn World>>) {
    match result {
        Err(EngineError::SchemaTooNew { found, .. }) => assert_eq!(found, 9999),
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("expected SchemaTooNew, but connecting succeeded"),
    }
}
