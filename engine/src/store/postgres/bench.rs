//! [`BenchSupport`] on Postgres: synthetic history generated in SQL, 50,000 runs per
//! statement, then `VACUUM ANALYZE`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::store::BenchSupport;

#[async_trait]
impl BenchSupport for PostgresWorld {
    async fn seed_finished_runs(
        &self,
        workflow: &str,
        count: u64,
        completed_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        let mut left = count;
        while left > 0 {
            let chunk = left.min(50_000);
            sqlx::query(
                "WITH runs AS (
                     INSERT INTO workflow_runs (id, workflow, input, output, status, created_at,
                         updated_at, completed_at)
                     SELECT gen_random_uuid(), $1, '{}', '0', 'completed', $3, $3, $3
                     FROM generate_series(1, $2)
                     RETURNING id
                 ), steps AS (
                     INSERT INTO workflow_steps (run_id, step_key, seq, status, output, attempts,
                         started_at, completed_at)
                     SELECT id, 'seed', 0, 'completed', '0', 1, $3, $3 FROM runs
                 )
                 INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, ts)
                 SELECT id, 'seed', 1, 3, 'seeded history', $3 FROM runs",
            )
            .bind(workflow)
            .bind(chunk as i64)
            .bind(completed_at)
            .execute(&self.pool)
            .await?;
            left -= chunk;
        }
        // Settle the bulk load (visibility map, statistics) now, so the measurement that
        // follows does not race autovacuum over it.
        sqlx::query("VACUUM ANALYZE workflow_runs, workflow_steps, workflow_logs")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
