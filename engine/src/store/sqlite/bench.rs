//! [`BenchSupport`] on SQLite: synthetic history generated in SQL (a recursive counter
//! feeding one `INSERT … SELECT` per table), one transaction per call, then a WAL
//! checkpoint.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::{BenchSupport, RawStepWrites};

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
        self.checkpoint().await
    }

    async fn seed_runs(
        &self,
        workflow: &str,
        count: u64,
        newest_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        // Timestamps in `format_ts`'s layout, one millisecond apart, computed exactly
        // from integer milliseconds.
        sqlx::query(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1),
             h AS (SELECT x, lower(hex(randomblob(16))) AS hex, ?3 - x AS ms FROM n),
             s AS (SELECT x,
                     substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-4' || substr(hex, 14, 3)
                       || '-a' || substr(hex, 18, 3) || '-' || substr(hex, 21, 12) AS id,
                     strftime('%Y-%m-%dT%H:%M:%S', ms / 1000, 'unixepoch') || '.'
                       || printf('%03d', ms % 1000) || '000Z' AS at
                   FROM h)
             INSERT INTO workflow_runs (id, workflow, input, output, error, status, created_at,
                 updated_at, completed_at)
             SELECT id, ?2, '{}', CASE WHEN x % 20 = 0 THEN NULL ELSE '0' END,
                    CASE WHEN x % 20 = 0 THEN 'seeded failure' END,
                    CASE x % 20 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'completed' END,
                    at, at, at
             FROM s",
        )
        .bind(count as i64)
        .bind(workflow)
        .bind(newest_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn seed_log_lines(
        &self,
        runs: &[RunId],
        first_line: u64,
        count: u64,
        at: DateTime<Utc>,
    ) -> EngineResult<()> {
        if runs.is_empty() || count == 0 {
            return Ok(());
        }
        let run_ids =
            serde_json::to_string(&runs.iter().map(|run| run.to_string()).collect::<Vec<_>>())?;
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < ?2),
             r(k, id) AS (SELECT key, value FROM json_each(?1))
             INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, ts)
             SELECT r.id, 'work', 1, 3, 'bench line ' || (?3 + x) || ': processed a batch', ?4
             FROM n JOIN r ON r.k = n.x % ?5
             ORDER BY n.x",
        )
        .bind(run_ids)
        .bind(count as i64)
        .bind(first_line as i64)
        .bind(format_ts(at))
        .bind(runs.len() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn settle(&self) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        sqlx::query("ANALYZE").execute(&mut *writer).await?;
        drop(writer);
        self.checkpoint().await
    }

    async fn raw_step_writes(
        &self,
        runs: u64,
        steps_per_run: u64,
        per_commit: u64,
    ) -> EngineResult<RawStepWrites> {
        self.ceiling_writes(runs, steps_per_run, per_commit).await
    }
}

impl SqliteWorld {
    /// Folds a bulk load into the main file now, so the measurement that follows does
    /// not pay for checkpointing it.
    async fn checkpoint(&self) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *writer)
            .await?;
        Ok(())
    }

    /// [`BenchSupport::raw_step_writes`] on the single writer connection.
    async fn ceiling_writes(
        &self,
        runs: u64,
        steps_per_run: u64,
        per_commit: u64,
    ) -> EngineResult<RawStepWrites> {
        let now = format_ts(Utc::now());
        let ids: Vec<String> = (0..runs).map(|_| RunId::new().to_string()).collect();
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        for id in &ids {
            sqlx::query(
                "INSERT INTO workflow_runs (id, workflow, input, status, queue, lease_owner,
                     lease_expires_at, lease_epoch, created_at, updated_at)
                 VALUES (?1, 'bench.ceiling', '{}', 'running', 'bench-ceiling', 'ceiling', ?2, 1, ?2, ?2)",
            )
            .bind(id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let started = std::time::Instant::now();
        let mut steps = 0u64;
        for seq in 0..steps_per_run {
            let step_key = format!("step-{seq}");
            for chunk in ids.chunks(per_commit.max(1) as usize) {
                // One multi-row statement per kind of row, as the engine's group commit
                // writes them: the fastest raw form of the same rows.
                let at = format_ts(Utc::now());
                let rows = serde_json::to_string(chunk)?;
                let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(
                    "INSERT INTO workflow_steps (run_id, step_key, seq, status, output,
                         attempts, started_at, completed_at)
                     SELECT value, ?2, ?3, 'completed', '0', 1, ?4, ?4 FROM json_each(?1)",
                )
                .bind(&rows)
                .bind(&step_key)
                .bind(seq as i64)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                steps += sqlx::query(
                    "UPDATE workflow_runs SET updated_at = ?2
                     WHERE id IN (SELECT value FROM json_each(?1))
                       AND lease_epoch = 1 AND status = 'running'",
                )
                .bind(&rows)
                .bind(&at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
            }
        }
        let took = started.elapsed();
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "DELETE FROM workflow_steps WHERE run_id IN
                 (SELECT id FROM workflow_runs WHERE workflow = 'bench.ceiling')",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM workflow_runs WHERE workflow = 'bench.ceiling'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RawStepWrites { took, steps })
    }
}
