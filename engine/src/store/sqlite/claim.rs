//! Claiming runs on SQLite. Differs from Postgres because this transaction is the only
//! writer: there are no row locks to skip, so the ids are chosen first and claimed in one
//! `UPDATE` at the end.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Connection, SqliteConnection};

use super::rows::workflow_keys_json;
use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::model::ClaimedRun;
use crate::store::claim::{claim_from_limited_queues, with_journals, LimitedQueueClaim};
use crate::store::rows::{run_from_row, step_from_row};
use crate::store::ClaimRequest;

/// Claiming from one limited queue inside the claim's `BEGIN IMMEDIATE` transaction.
struct LimitedQueues<'t> {
    conn: &'t mut SqliteConnection,
    now_text: &'t str,
    /// The registered `workflow@version`s as a JSON array.
    keys: &'t str,
}

#[async_trait]
impl LimitedQueueClaim for LimitedQueues<'_> {
    /// Differs from Postgres: only the ids are chosen here, and every chosen run is
    /// claimed by the one `UPDATE` at the end of the claim.
    type Claimed = String;

    async fn claim_due_in_queue(
        &mut self,
        queue: &str,
        statuses: &[&str],
        limit: i64,
    ) -> EngineResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM workflow_runs
             WHERE status IN (SELECT value FROM json_each(?5)) AND wake_at <= ?1
               AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?2))
               AND queue = ?4
             ORDER BY priority DESC, wake_at, id LIMIT ?3",
        )
        .bind(self.now_text)
        .bind(self.keys)
        .bind(limit)
        .bind(queue)
        .bind(serde_json::to_string(statuses)?)
        .fetch_all(&mut *self.conn)
        .await?)
    }

    async fn slots_held(&mut self, queue: &str) -> EngineResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflow_runs
             WHERE status IN ('running', 'retrying') AND queue = ?1",
        )
        .bind(queue)
        .fetch_one(&mut *self.conn)
        .await?)
    }
}

impl SqliteWorld {
    /// [`crate::store::RunStore::claim_runs`].
    pub(super) async fn claim(&self, request: &ClaimRequest) -> EngineResult<Vec<ClaimedRun>> {
        let now = Utc::now();
        let now_text = format_ts(now);
        let expires = format_ts(now + request.lease_ttl);
        let keys = workflow_keys_json(&request.workflows);
        let queues = request
            .queues
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let limited: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, concurrency_limit FROM workflow_queues
             WHERE concurrency_limit IS NOT NULL
               AND (?1 IS NULL OR name IN (SELECT value FROM json_each(?1)))
             ORDER BY name",
        )
        .bind(&queues)
        .fetch_all(&mut *tx)
        .await?;
        let limited_names =
            serde_json::to_string(&limited.iter().map(|(name, _)| name).collect::<Vec<_>>())?;
        // Stranded runs (expired leases) first: they have waited longest, and taking one
        // over does not change how many of its queue are running.
        let mut ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM workflow_runs
             WHERE status = 'running' AND lease_expires_at < ?1
               AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?2))
               AND (?4 IS NULL OR queue IN (SELECT value FROM json_each(?4)))
             ORDER BY lease_expires_at LIMIT ?3",
        )
        .bind(&now_text)
        .bind(&keys)
        .bind(request.limit as i64)
        .bind(&queues)
        .fetch_all(&mut *tx)
        .await?;
        let mut remaining = request.limit as i64 - ids.len() as i64;
        if remaining > 0 {
            let ready: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM workflow_runs
                 WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting') AND wake_at <= ?1
                   AND workflow || '@' || workflow_version IN (SELECT value FROM json_each(?2))
                   AND (?4 IS NULL OR queue IN (SELECT value FROM json_each(?4)))
                   AND queue NOT IN (SELECT value FROM json_each(?5))
                 ORDER BY priority DESC, wake_at, id LIMIT ?3",
            )
            .bind(&now_text)
            .bind(&keys)
            .bind(remaining)
            .bind(&queues)
            .bind(&limited_names)
            .fetch_all(&mut *tx)
            .await?;
            remaining -= ready.len() as i64;
            ids.extend(ready);
        }
        // Limited queues: this transaction is the only writer, so counting and claiming
        // here cannot overshoot a limit.
        if remaining > 0 {
            let mut limited_queues = LimitedQueues {
                conn: &mut tx,
                now_text: &now_text,
                keys: &keys,
            };
            ids.extend(claim_from_limited_queues(&mut limited_queues, &limited, remaining).await?);
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE workflow_runs
             SET status = 'running', lease_owner = ?1, lease_epoch = lease_epoch + 1,
                 lease_expires_at = ?2, wait_event_key = NULL, updated_at = ?3
             WHERE id IN (SELECT value FROM json_each(?4))
             RETURNING *",
        )
        .bind(&request.owner)
        .bind(&expires)
        .bind(&now_text)
        .bind(serde_json::to_string(&ids)?)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let runs = rows
            .iter()
            .map(run_from_row)
            .collect::<EngineResult<Vec<_>>>()?;
        // Read after the commit, on a reader: the writer is free again meanwhile, and
        // the leases are ours, so nobody else writes these journals.
        let reading = crate::profile::start();
        let steps = sqlx::query(
            "SELECT * FROM workflow_steps WHERE run_id IN (SELECT value FROM json_each(?1))
             ORDER BY run_id, seq",
        )
        .bind(serde_json::to_string(&ids)?)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(step_from_row)
        .collect::<EngineResult<Vec<_>>>()?;
        Ok(with_journals(runs, steps, reading))
    }
}
