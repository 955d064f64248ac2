//! [`BenchSupport`] on Postgres: synthetic history generated in SQL (`generate_series`
//! feeding one `INSERT … SELECT`), one statement per call, then `VACUUM ANALYZE`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::{BenchSupport, RawStepWrites};

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
        self.settle().await
    }

    async fn seed_runs(
        &self,
        workflow: &str,
        count: u64,
        newest_at: DateTime<Utc>,
    ) -> EngineResult<()> {
        sqlx::query(
            "INSERT INTO workflow_runs (id, workflow, input, output, error, status, created_at,
                 updated_at, completed_at)
             SELECT gen_random_uuid(), $1, '{}',
                    CASE WHEN x % 20 = 0 THEN NULL ELSE '0'::jsonb END,
                    CASE WHEN x % 20 = 0 THEN 'seeded failure' END,
                    CASE x % 20 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'completed' END,
                    at, at, at
             FROM (SELECT x, $3::timestamptz - x * interval '1 millisecond' AS at
                   FROM generate_series(1, $2) AS x) AS s",
        )
        .bind(workflow)
        .bind(count as i64)
        .bind(newest_at)
        .execute(&self.pool)
        .await?;
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
        let run_ids: Vec<uuid::Uuid> = runs.iter().map(|run| run.0).collect();
        sqlx::query(
            "INSERT INTO workflow_logs (run_id, step_key, attempt, level, message, ts)
             SELECT $1[1 + x % cardinality($1)], 'work', 1, 3,
                    'bench line ' || ($3 + x) || ': processed a batch', $4
             FROM generate_series(0, $2 - 1) AS x
             ORDER BY x",
        )
        .bind(&run_ids)
        .bind(count as i64)
        .bind(first_line as i64)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn settle(&self) -> EngineResult<()> {
        // Settle the bulk load (visibility map, statistics) now, so the measurement that
        // follows does not race autovacuum over it.
        sqlx::query("VACUUM ANALYZE workflow_runs, workflow_steps, workflow_logs, workflow_feed")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn raw_step_writes(
        &self,
        runs: u64,
        steps_per_run: u64,
        per_commit: u64,
    ) -> EngineResult<RawStepWrites> {
        let ids: Vec<uuid::Uuid> = (0..runs).map(|_| RunId::new().0).collect();
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        for id in &ids {
            sqlx::query(
                "INSERT INTO workflow_runs (id, workflow, input, status, queue, lease_owner,
                     lease_expires_at, lease_epoch, created_at, updated_at)
                 VALUES ($1, 'bench.ceiling', '{}', 'running', 'bench-ceiling', 'ceiling', $2, 1, $2, $2)",
            )
            .bind(id)
            .bind(now)
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
                let at = Utc::now();
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO workflow_steps (run_id, step_key, seq, status, output,
                         attempts, started_at, completed_at)
                     SELECT id, $2, $3, 'completed', '0', 1, $4, $4 FROM UNNEST($1::uuid[]) AS id",
                )
                .bind(chunk)
                .bind(&step_key)
                .bind(seq as i32)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                steps += sqlx::query(
                    "UPDATE workflow_runs SET updated_at = $2
                     WHERE id = ANY($1) AND lease_epoch = 1 AND status = 'running'",
                )
                .bind(chunk)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
            }
        }
        let took = started.elapsed();
        sqlx::query(
            "DELETE FROM workflow_steps WHERE run_id IN
                 (SELECT id FROM workflow_runs WHERE workflow = 'bench.ceiling')",
        )
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM workflow_runs WHERE workflow = 'bench.ceiling'")
            .execute(&self.pool)
            .await?;
        Ok(RawStepWrites { took, steps })
    }
}
