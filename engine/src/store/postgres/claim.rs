//! Claiming runs on Postgres: `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait
//! on each other or take the same run.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::model::ClaimedRun;
use crate::store::claim::{claim_from_limited_queues, with_journals, LimitedQueueClaim};
use crate::store::rows::{run_from_row, step_from_row, workflow_keys};
use crate::store::ClaimRequest;

/// Claiming from one limited queue inside the claim's transaction, which holds the
/// queue's row lock, so counting and claiming are atomic.
struct LimitedQueues<'t> {
    conn: &'t mut PgConnection,
    request: &'t ClaimRequest,
    keys: &'t [String],
}

#[async_trait]
impl LimitedQueueClaim for LimitedQueues<'_> {
    /// The claimed row: each claim is its own `UPDATE … RETURNING`.
    type Claimed = PgRow;

    async fn claim_due_in_queue(
        &mut self,
        queue: &str,
        statuses: &[&str],
        limit: i64,
    ) -> EngineResult<Vec<PgRow>> {
        Ok(sqlx::query(
            "WITH ready AS (
                 SELECT id FROM workflow_runs
                 WHERE status = ANY($6) AND wake_at <= now() AND queue = $5
                   AND workflow || '@' || workflow_version = ANY($3)
                 ORDER BY priority DESC, wake_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE workflow_runs r
             SET status = 'running', lease_owner = $1, lease_epoch = r.lease_epoch + 1,
                 lease_expires_at = now() + make_interval(secs => $4),
                 wait_event_key = NULL, updated_at = now()
             FROM ready WHERE r.id = ready.id
             RETURNING r.*",
        )
        .bind(&self.request.owner)
        .bind(limit)
        .bind(self.keys)
        .bind(self.request.lease_ttl.as_secs_f64())
        .bind(queue)
        .bind(statuses)
        .fetch_all(&mut *self.conn)
        .await?)
    }

    async fn slots_held(&mut self, queue: &str) -> EngineResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs
             WHERE status IN ('running', 'retrying') AND queue = $1",
        )
        .bind(queue)
        .fetch_one(&mut *self.conn)
        .await?)
    }
}

impl PostgresWorld {
    /// [`crate::store::RunStore::claim_runs`].
    pub(super) async fn claim(&self, request: &ClaimRequest) -> EngineResult<Vec<ClaimedRun>> {
        let keys = workflow_keys(&request.workflows);
        let mut tx = self.pool.begin().await?;
        let limited: Vec<(String, i32)> = sqlx::query_as(
            "SELECT name, concurrency_limit FROM workflow_queues
             WHERE concurrency_limit IS NOT NULL AND ($1::text[] IS NULL OR name = ANY($1))
             ORDER BY name",
        )
        .bind(&request.queues)
        .fetch_all(&mut *tx)
        .await?;
        let limited_names: Vec<String> = limited.iter().map(|(name, _)| name.clone()).collect();
        // One statement for the common case: stranded runs (expired leases) first, then
        // ready runs of unlimited queues by priority and due time, each locked with SKIP
        // LOCKED so concurrent claimers never wait on each other or take the same run.
        let mut rows = sqlx::query(
            "WITH expired AS (
                 SELECT id FROM workflow_runs
                 WHERE status = 'running' AND lease_expires_at < now()
                   AND workflow || '@' || workflow_version = ANY($3)
                   AND ($5::text[] IS NULL OR queue = ANY($5))
                 ORDER BY lease_expires_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), ready AS (
                 SELECT id FROM workflow_runs
                 WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting') AND wake_at <= now()
                   AND workflow || '@' || workflow_version = ANY($3)
                   AND ($5::text[] IS NULL OR queue = ANY($5))
                   AND NOT (queue = ANY($6))
                 ORDER BY priority DESC, wake_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), chosen AS (
                 SELECT id FROM expired UNION ALL SELECT id FROM ready LIMIT $2
             )
             UPDATE workflow_runs r
             SET status = 'running', lease_owner = $1, lease_epoch = r.lease_epoch + 1,
                 lease_expires_at = now() + make_interval(secs => $4), wait_event_key = NULL,
                 updated_at = now()
             FROM chosen WHERE r.id = chosen.id
             RETURNING r.*",
        )
        .bind(&request.owner)
        .bind(request.limit as i64)
        .bind(&keys)
        .bind(request.lease_ttl.as_secs_f64())
        .bind(&request.queues)
        .bind(&limited_names)
        .fetch_all(&mut *tx)
        .await?;
        let remaining = request.limit as i64 - rows.len() as i64;
        if !limited.is_empty() && remaining > 0 {
            // Limited queues: lock their rows (in name order) so claimers count and claim
            // one at a time; each count then sees every claim committed before it.
            sqlx::query(
                "SELECT name FROM workflow_queues WHERE name = ANY($1) ORDER BY name FOR UPDATE",
            )
            .bind(&limited_names)
            .execute(&mut *tx)
            .await?;
            let limited: Vec<(String, i64)> = limited
                .into_iter()
                .map(|(name, limit)| (name, i64::from(limit)))
                .collect();
            let mut limited_queues = LimitedQueues {
                conn: &mut tx,
                request,
                keys: &keys,
            };
            rows.extend(claim_from_limited_queues(&mut limited_queues, &limited, remaining).await?);
        }
        let runs = rows
            .iter()
            .map(run_from_row)
            .collect::<EngineResult<Vec<_>>>()?;
        let reading = crate::profile::start();
        let steps = if runs.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<uuid::Uuid> = runs.iter().map(|run| run.id.0).collect();
            sqlx::query("SELECT * FROM workflow_steps WHERE run_id = ANY($1) ORDER BY run_id, seq")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(step_from_row)
                .collect::<EngineResult<Vec<_>>>()?
        };
        tx.commit().await?;
        Ok(with_journals(runs, steps, reading))
    }
}
