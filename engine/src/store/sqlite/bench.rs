//! [`BenchSupport`] on SQLite: synthetic history generated in SQL, 50,000 runs per
//! transaction, then a WAL checkpoint.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::store::BenchSupport;

#[async_trait]
impl BenchSupport for SqliteWorld {
    async fn seed_finished_runs(
        &self,
        workflow: &str,
        count: u64,
        completed_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        let at = format_ts(completed_at);
        let mut left = count;
        while left > 0 {
            let chunk = left.min(50_000);
            let mut writer = self.writer().await?;
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("DROP TABLE IF EXISTS temp.seed_ids")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "CREATE TEMP TABLE seed_ids AS
                 WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1),
                 h AS (SELECT lower(hex(randomblob(16))) AS hex FROM n)
                 SELECT substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-4' || substr(hex, 14, 3)
                        || '-a' || substr(hex, 18, 3) || '-' || substr(hex, 21, 12) AS id
                 FROM h",
            )
            .bind(chunk as i64)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO workflow_runs (id, workflow, input, output, status, created_at,
                     updated_at, completed_at)
                 SELECT id, ?1, '{}', '0', 'completed', ?2, ?2, ?2 FROM temp.seed_ids",
            )
            .bind(workflow)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO workflow_steps (run_id, step_key, seq, status, output, attempts,
                     started_at, completed_at)
                 SELECT id, 'seed', 0, 'completed', '0', 1, ?1, ?1 FROM temp.seed_ids",
            )
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, ts)
                 SELECT id, 'seed', 1, 3, 'seeded history', ?1 FROM temp.seed_ids",
            )
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DROP TABLE temp.seed_ids")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            left -= chunk;
        }
        // Fold the bulk load into the main file now, so the measurement that follows does
        // not pay for checkpointing it.
        let mut writer = self.writer().await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *writer)
            .await?;
        Ok(())
    }
}
