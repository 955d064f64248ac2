//! Claiming runs on SQLite. Differs from Postgres because this transaction is the only
//! writer: there are no row locks to skip, so the ids are chosen first and claimed in one
//! `UPDATE` at the end.

use chrono::Utc;
use sqlx::Connection;

use super::rows::{run_from_row, workflow_keys};
use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::model::ClaimedRun;
use crate::store::ClaimRequest;

/// Ids of up to `limit` due runs of one queue in one of `statuses`, by priority and due
/// time (`keys`: the registered `workflow@version`s as a JSON array).
async fn due_ids_in_queue(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    now_text: &str,
    keys: &str,
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
    .bind(now_text)
    .bind(keys)
    .bind(limit)
    .bind(queue)
    .bind(serde_json::to_string(statuses)?)
    .fetch_all(&mut **tx)
    .await?)
}

impl SqliteWorld {
    /// [`crate::store::RunStore::claim_runs`].
    pub(super) async fn claim(&self, request: &ClaimRequest) -> EngineResult<Vec<ClaimedRun>> {
        let now = Utc::now();
        let now_text = format_ts(now);
        let expires = format_ts(now + request.lease_ttl);
        let keys = workflow_keys(&request.workflows);
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
        // here cannot overshoot a limit. A run parked for a step retry keeps its slot
        // (see `World::set_queue_limit`): it is claimed again first, whatever the count.
        for (queue, limit) in &limited {
            if remaining <= 0 {
                break;
            }
            let retries_due =
                due_ids_in_queue(&mut tx, &now_text, &keys, queue, &["retrying"], remaining)
                    .await?;
            remaining -= retries_due.len() as i64;
            ids.extend(retries_due);
            let holding: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM workflow_runs
                 WHERE status IN ('running', 'retrying') AND queue = ?1",
            )
            .bind(queue)
            .fetch_one(&mut *tx)
            .await?;
            let take = (limit - holding).min(remaining);
            if take <= 0 {
                continue;
            }
            let ready = due_ids_in_queue(
                &mut tx,
                &now_text,
                &keys,
                queue,
                &["pending", "sleeping", "waiting"],
                take,
            )
            .await?;
            remaining -= ready.len() as i64;
            ids.extend(ready);
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
        rows.iter()
            .map(|row| run_from_row(row).map(|run| ClaimedRun { run }))
            .collect()
    }
}
