//! [`HeartbeatStore`] on Postgres. One enqueuer at a time holds the cursor row
//! (`FOR UPDATE SKIP LOCKED`: the others skip the pass rather than wait) and reads the
//! feed by (txid, seq) only up to entries of transactions older than every one still in
//! flight, as the feed's readers do (see `feed.rs`), so no entry can appear behind the
//! cursor after it moved. Senders claim due rows with `FOR UPDATE SKIP LOCKED`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::store::heartbeats::{HeartbeatClaim, HeartbeatPing, HeartbeatStore, HeartbeatsEnqueued};
use crate::store::rows::{heartbeat_claim_from_row, heartbeat_ping_from_row};

#[async_trait]
impl HeartbeatStore for PostgresWorld {
    async fn enqueue_heartbeats(&self) -> EngineResult<HeartbeatsEnqueued> {
        // Most passes find nothing new, and then lock nothing. Entries at or above the
        // horizon (the oldest open transaction) are committed but not yet readable.
        let (ready, held_back): (bool, bool) = sqlx::query_as(
            "SELECT COALESCE(bool_or(f.txid < h.xmin), false),
                    COALESCE(bool_or(f.txid >= h.xmin), false)
             FROM heartbeat_feed_cursor c
             CROSS JOIN (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) h
             JOIN workflow_feed f ON (f.txid, f.seq) > (c.txid, c.seq)
             WHERE c.id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        let nothing = HeartbeatsEnqueued {
            written: 0,
            held_back,
        };
        if !ready {
            return Ok(nothing);
        }
        let mut tx = self.pool.begin().await?;
        let Some(cursor) = sqlx::query(
            "SELECT txid::text AS txid, seq FROM heartbeat_feed_cursor WHERE id = 1
             FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(nothing); // Another process is enqueuing this very range.
        };
        let Some(head) = sqlx::query(
            "SELECT txid::text AS txid, seq FROM workflow_feed
             WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY txid DESC, seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(nothing);
        };
        let (cursor_txid, cursor_seq): (String, i64) =
            (cursor.try_get("txid")?, cursor.try_get("seq")?);
        let (head_txid, head_seq): (String, i64) = (head.try_get("txid")?, head.try_get("seq")?);
        // Every entry up to `head` was committed before `head` was read, so this
        // statement sees all of (cursor, head]. A run is a schedule's when the
        // scheduler started it: its metadata names the schedule and its idempotency key
        // is that schedule's tick key. A run's first terminal entry wins.
        let enqueued = sqlx::query(
            "INSERT INTO heartbeat_pings (run_id, schedule, url, outcome)
             SELECT DISTINCT ON (f.run_id) f.run_id, s.name, s.heartbeat_url, f.status
             FROM workflow_feed f
             JOIN workflow_runs r ON r.id = f.run_id
             JOIN workflow_schedules s ON s.name = r.metadata->>'schedule'
             WHERE (f.txid, f.seq) > ($1::xid8, $2) AND (f.txid, f.seq) <= ($3::xid8, $4)
               AND f.kind = 'run:update' AND f.status IN ('completed', 'failed')
               AND s.heartbeat_url IS NOT NULL
               AND starts_with(r.idempotency_key, 'schedule:' || s.name || ':')
             ORDER BY f.run_id, f.txid, f.seq
             ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(&cursor_txid)
        .bind(cursor_seq)
        .bind(&head_txid)
        .bind(head_seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE heartbeat_feed_cursor SET txid = $1::xid8, seq = $2 WHERE id = 1")
            .bind(&head_txid)
            .bind(head_seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(HeartbeatsEnqueued {
            written: enqueued,
            held_back,
        })
    }

    async fn claim_heartbeats(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> EngineResult<Vec<HeartbeatClaim>> {
        let token = Uuid::new_v4();
        let lease_end = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT run_id FROM heartbeat_pings
                 WHERE state = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             UPDATE heartbeat_pings p SET next_attempt_at = $2, claim_token = $3
             FROM due WHERE p.run_id = due.run_id
             RETURNING p.run_id, p.schedule, p.url, p.outcome, p.attempts",
        )
        .bind(now)
        .bind(lease_end)
        .bind(token)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| heartbeat_claim_from_row(row, token))
            .collect()
    }

    async fn heartbeat_delivered(&self, claim: &HeartbeatClaim) -> EngineResult<bool> {
        let done = sqlx::query(
            "UPDATE heartbeat_pings SET state = 'delivered', attempts = attempts + 1,
                 finished_at = now(), claim_token = NULL
             WHERE run_id = $1 AND claim_token = $2 AND state = 'pending'",
        )
        .bind(claim.run_id.0)
        .bind(claim.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn heartbeat_failed(
        &self,
        claim: &HeartbeatClaim,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> EngineResult<bool> {
        let done = sqlx::query(
            "UPDATE heartbeat_pings SET attempts = attempts + 1, last_error = $3,
                 state = CASE WHEN $4::timestamptz IS NULL THEN 'abandoned' ELSE 'pending' END,
                 next_attempt_at = COALESCE($4, next_attempt_at),
                 finished_at = CASE WHEN $4::timestamptz IS NULL THEN now() END,
                 claim_token = NULL
             WHERE run_id = $1 AND claim_token = $2 AND state = 'pending'",
        )
        .bind(claim.run_id.0)
        .bind(claim.token)
        .bind(error)
        .bind(retry_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn next_heartbeat_due(&self) -> EngineResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM heartbeat_pings WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn schedule_heartbeats(
        &self,
        schedule: &str,
        limit: u32,
    ) -> EngineResult<Vec<HeartbeatPing>> {
        let rows = sqlx::query(
            "SELECT * FROM heartbeat_pings WHERE schedule = $1
             ORDER BY created_at DESC, run_id DESC LIMIT $2",
        )
        .bind(schedule)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(heartbeat_ping_from_row).collect()
    }
}
