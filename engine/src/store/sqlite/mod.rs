//! The SQLite adapter: the embedded default. One writer connection (every write goes
//! through it, inside `BEGIN IMMEDIATE`), a small pool of readers, WAL mode and
//! `synchronous = FULL` so a commit is on disk before anyone is told it happened.
//!
//! One file per concern, each beside its Postgres twin in `../postgres/`. Where the two
//! differ by necessity, the SQLite side says why: mostly because this adapter has a
//! single writer (no row locks, no `SKIP LOCKED`, no `NOTIFY`) and stores ids, times and
//! JSON as TEXT.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{watch, Mutex, MutexGuard};

use crate::error::{EngineError, EngineResult};
use crate::store::{refuse_newer_schema, Backend, World};

mod apply;
mod bench;
mod budgets;
mod claim;
mod documents;
mod events;
mod feed;
mod heartbeats;
mod logs;
mod nonces;
mod queues;
mod rows;
mod runs;
mod schedules;
mod signatures;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// SQLite-backed [`World`].
pub struct SqliteWorld {
    writer: Mutex<SqliteConnection>,
    readers: SqlitePool,
    options: SqliteConnectOptions,
    /// Bumped each time the writer is released: SQLite has no notifications, so this
    /// is how readers in this process (the live-event pump beside the workers) learn at
    /// once that the feed may have grown, instead of at their next poll.
    written: watch::Sender<u64>,
}

impl SqliteWorld {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`), checks that
    /// its schema is not newer than this binary, and applies pending migrations.
    pub async fn connect(url: &str) -> EngineResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .statement_cache_capacity(256);
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|error| {
                    EngineError::Database(sqlx::Error::Configuration(
                        format!("cannot create directory {}: {error}", parent.display()).into(),
                    ))
                })?;
            }
        }
        // Processes opening one fresh file at once contend while it is initialised:
        // SQLite answers SQLITE_BUSY without waiting while another connection switches
        // the file to WAL or builds its WAL index, and the loser of the race to apply
        // the first migration fails ("table already exists") once the winner commits.
        // Both pass with a short wait; trying again then finds the migration recorded.
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match Self::open(&options).await {
                Ok(world) => return Ok(world),
                Err(error) if attempt < 10 && is_startup_contention(&error) => {
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn open(options: &SqliteConnectOptions) -> EngineResult<Self> {
        let mut writer = SqliteConnection::connect_with(options).await?;
        check_schema_not_newer(&mut writer).await?;
        MIGRATOR.run_direct(&mut writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options.clone().read_only(true))
            .await?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers,
            options: options.clone(),
            written: watch::Sender::new(0),
        })
    }

    /// The single writer connection. Every write transaction ends before the lock is
    /// released, so a connection still "in a transaction" here is one whose rollback
    /// failed (SQLite rolls back by itself on SQLITE_FULL, and the driver's ROLLBACK then
    /// errors): it is replaced by a fresh connection instead of failing forever.
    async fn writer(&self) -> EngineResult<WriterGuard<'_>> {
        let mut writer = self.writer.lock().await;
        if writer.is_in_transaction() {
            tracing::warn!(
                "sqlite writer connection was left inside a failed transaction; reopening it"
            );
            *writer = SqliteConnection::connect_with(&self.options).await?;
        }
        Ok(WriterGuard {
            connection: writer,
            written: &self.written,
        })
    }
}

/// The writer connection while held; releasing it tells this process's feed readers
/// that something may have been committed (a spurious wake-up only costs a read).
struct WriterGuard<'w> {
    connection: MutexGuard<'w, SqliteConnection>,
    written: &'w watch::Sender<u64>,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.connection
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.written
            .send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// The writer's open transaction and the time its writes are stamped with: what the
/// shared procedures' per-dialect primitives run on (see `events.rs`, `schedules.rs`,
/// `runs.rs`).
struct WriteTx<'t> {
    conn: &'t mut SqliteConnection,
    now: &'t str,
}

impl<'t> WriteTx<'t> {
    fn new(conn: &'t mut SqliteConnection, now: &'t str) -> Self {
        Self { conn, now }
    }
}

impl World for SqliteWorld {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
}

/// Errors that a concurrent opener of the same fresh file causes, and that pass.
fn is_startup_contention(error: &EngineError) -> bool {
    let busy = |error: &sqlx::Error| match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    };
    match error {
        EngineError::Database(error) => busy(error),
        EngineError::Migrate(
            sqlx::migrate::MigrateError::Execute(error)
            | sqlx::migrate::MigrateError::ExecuteMigration(error, _),
        ) => matches!(error, sqlx::Error::Database(_)),
        _ => false,
    }
}

async fn check_schema_not_newer(connection: &mut SqliteConnection) -> EngineResult<()> {
    let table_exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    if table_exists.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *connection)
        .await?;
    refuse_newer_schema(found, &MIGRATOR)
}
