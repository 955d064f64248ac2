//! [`BenchSupport`]: a benchmark hook that is not part of the port. Benchmarks use it to
//! show how claims and steps behave as history grows; the engine never calls it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{EngineError, EngineResult};
use crate::store::postgres::PostgresWorld;
use crate::store::sqlite::SqliteWorld;
use crate::store::Backend;

/// Bulk loading of synthetic history, implemented by both adapters.
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
