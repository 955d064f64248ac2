//! [`BenchSupport`]: a benchmark hook that is not part of the port. Benchmarks use it to
//! show how claims, steps and the HTTP API behave as history grows; the engine never
//! calls it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Connection;

use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::store::postgres::PostgresWorld;
use crate::store::sqlite::SqliteWorld;
use crate::store::Backend;

/// Bulk loading of synthetic history, implemented by both adapters. Each call is one
/// transaction of generated rows (multi-row `INSERT … SELECT`), so a caller loading
/// millions of rows calls it in chunks and can report progress between them.
#[async_trait]
pub trait BenchSupport: Send + Sync {
    /// Inserts `count` synthetic finished runs of `workflow`, each with one completed step
    /// and one log line, finished at `completed_at`. It never touches live runs.
    async fn seed_finished_runs(
        &self,
        workflow: &str,
        count: u64,
        completed_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Inserts `count` synthetic finished runs of `workflow` (no steps, no logs), created
    /// one millisecond apart, the newest at `newest_at`: every 20th one `failed`, every
    /// 20th (the next) `cancelled`, the rest `completed`, interleaved as a real history
    /// is (so a status filter finds its rows spread through the newest-first order).
    async fn seed_runs(
        &self,
        workflow: &str,
        count: u64,
        newest_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Appends `count` log lines spread round-robin over `runs` (so each run's lines are
    /// interleaved with the others' in id order, as concurrent runs write them), numbered
    /// from `first_line` in their messages, all at `at`.
    async fn seed_log_lines(
        &self,
        runs: &[RunId],
        first_line: u64,
        count: u64,
        at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Settles a bulk load (Postgres: `VACUUM ANALYZE`; SQLite: `ANALYZE` and a WAL
    /// checkpoint), so the measurement that follows does not pay for it.
    async fn settle(&self) -> EngineResult<()>;

    /// The raw write path's ceiling: `runs` running runs (created first, not timed),
    /// then `steps_per_run` rounds in which every run gets one step: for each step the
    /// rows the engine writes (the step row, and the fenced update of its run), with
    /// the engine's durability settings, `per_commit` steps per transaction, no engine
    /// logic around them. Returns how long the steps took and how many fenced updates
    /// found their run (every one, or the measurement is wrong); the runs are deleted
    /// after.
    async fn raw_step_writes(
        &self,
        runs: u64,
        steps_per_run: u64,
        per_commit: u64,
    ) -> EngineResult<RawStepWrites>;
}

/// What [`BenchSupport::raw_step_writes`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawStepWrites {
    /// How long the steps took (their setup and clean-up excluded).
    pub took: std::time::Duration,
    /// Steps whose fenced run update matched its run.
    pub steps: u64,
}

/// Opens the database named by `url` (as [`crate::connect`] does, migrations included)
/// for a benchmark's bulk loads, on a connection of its own.
pub async fn connect_bench(url: &str) -> EngineResult<Box<dyn BenchSupport>> {
    match Backend::of_url(url) {
        Some(Backend::Sqlite) => Ok(Box::new(SqliteWorld::connect(url).await?)),
        Some(Backend::Postgres) => Ok(Box::new(PostgresWorld::connect(url, 2).await?)),
        None => Err(EngineError::UnsupportedUrl(url.to_owned())),
    }
}

/// Creates the empty Postgres database `name` on the server `server_url` points at,
/// dropping a leftover of that name first (a benchmark owns its database).
pub async fn create_postgres_database(server_url: &str, name: &str) -> EngineResult<()> {
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    let quoted = quote_identifier(name);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Drops the Postgres database `name` on the server `server_url` points at (ending its
/// sessions).
pub async fn drop_postgres_database(server_url: &str, name: &str) -> EngineResult<()> {
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    let quoted = quote_identifier(name);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// How many transactions database `name` has committed (`pg_stat_database`), read over
/// a connection to the server `server_url` points at (another database, so the reading
/// itself is not counted). The server publishes a session's counts when it goes idle
/// (at most every second; within 10 s) and when it ends.
pub async fn postgres_commits(server_url: &str, name: &str) -> EngineResult<i64> {
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    let commits: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
    Ok(commits)
}

/// Turns autovacuum (and its analyze) off for every table of the database `url` points
/// at, so that a benchmark counting the database's transactions counts only its
/// clients' (the server's autovacuum workers commit in the database too).
pub async fn postgres_disable_autovacuum(url: &str) -> EngineResult<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut conn)
    .await?;
    for table in tables {
        sqlx::query(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
        ))
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}

/// `name` as a quoted SQL identifier (DDL takes no bind parameters).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
