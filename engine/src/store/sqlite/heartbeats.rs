//! [`HeartbeatStore`] on SQLite. Differs from Postgres by locking nothing: every write
//! goes through the one writer inside `BEGIN IMMEDIATE`, so one enqueuer or claimer
//! runs at a time; and the feed cursor is `seq` alone (see `feed.rs`). Each write is
//! preceded by a read on the readers that finds most passes have nothing to do, so an
//! idle pinger never takes the writer.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::rows::parse_opt_ts;
use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::store::heartbeats::{HeartbeatClaim, HeartbeatPing, HeartbeatStore, HeartbeatsEnqueued};
use crate::store::rows::{heartbeat_claim_from_row, heartbeat_ping_from_row};

#[async_trait]
impl HeartbeatStore for SqliteWorld {
    async fn enqueue_heartbeats(&self) -> EngineResult<HeartbeatsEnqueued> {
        let behind: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM workflow_feed
                            WHERE seq > (SELECT seq FROM heartbeat_feed_cursor WHERE id = 1))",
        )
        .fetch_one(&self.readers)
        .await?;
        if !behind {
            return Ok(HeartbeatsEnqueued::default());
        }
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let cursor: i64 = sqlx::query_scalar("SELECT seq FROM heartbeat_feed_cursor WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM workflow_feed")
            .fetch_one(&mut *tx)
            .await?;
        if head <= cursor {
            return Ok(HeartbeatsEnqueued::default());
        }
        // A run is a schedule's when the scheduler started it: its metadata names the
        // schedule and its idempotency key is that schedule's tick key. The first
        // terminal entry of a run wins (ORDER BY seq; a later one conflicts).
        let enqueued = sqlx::query(
            "INSERT INTO heartbeat_pings (run_id, schedule, url, outcome, next_attempt_at,
                 created_at)
             SELECT f.run_id, s.name, s.heartbeat_url, f.status, ?3, ?3
             FROM workflow_feed f
             JOIN workflow_runs r ON r.id = f.run_id
             JOIN workflow_schedules s ON s.name = json_extract(r.metadata, '$.schedule')
             WHERE f.seq > ?1 AND f.seq <= ?2
               AND f.kind = 'run:update' AND f.status IN ('completed', 'failed')
               AND s.heartbeat_url IS NOT NULL
               AND substr(r.idempotency_key, 1, length(s.name) + 10) = 'schedule:' || s.name || ':'
             ORDER BY f.seq
             ON CONFLICT (run_id) DO NOTHING",
        )
        .bind(cursor)
        .bind(head)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE heartbeat_feed_cursor SET seq = ?1 WHERE id = 1")
            .bind(head)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(HeartbeatsEnqueued {
            written: enqueued,
            held_back: false,
        })
    }

    async fn claim_heartbeats(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> EngineResult<Vec<HeartbeatClaim>> {
        let now_text = format_ts(now);
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM heartbeat_pings
                            WHERE state = 'pending' AND next_attempt_at <= ?1)",
        )
        .bind(&now_text)
        .fetch_one(&self.readers)
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        let token = Uuid::new_v4();
        let lease_end = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut writer = self.writer().await?;
        let rows = sqlx::query(
            "UPDATE heartbeat_pings SET next_attempt_at = ?2, claim_token = ?3
             WHERE run_id IN (SELECT run_id FROM heartbeat_pings
                              WHERE state = 'pending' AND next_attempt_at <= ?1
                              ORDER BY next_attempt_at LIMIT ?4)
             RETURNING run_id, schedule, url, outcome, attempts",
        )
        .bind(&now_text)
        .bind(format_ts(lease_end))
        .bind(token.to_string())
        .bind(i64::from(limit))
        .fetch_all(&mut *writer)
        .await?;
        rows.iter()
            .map(|row| heartbeat_claim_from_row(row, token))
            .collect()
    }

    async fn heartbeat_delivered(&self, claim: &HeartbeatClaim) -> EngineResult<bool> {
        let mut writer = self.writer().await?;
        let done = sqlx::query(
            "UPDATE heartbeat_pings SET state = 'delivered', attempts = attempts + 1,
                 finished_at = ?3, claim_token = NULL
             WHERE run_id = ?1 AND claim_token = ?2 AND state = 'pending'",
        )
        .bind(claim.run_id.to_string())
        .bind(claim.token.to_string())
        .bind(format_ts(Utc::now()))
        .execute(&mut *writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn heartbeat_failed(
        &self,
        claim: &HeartbeatClaim,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> EngineResult<bool> {
        let mut writer = self.writer().await?;
        let done = sqlx::query(
            "UPDATE heartbeat_pings SET attempts = attempts + 1, last_error = ?3,
                 state = CASE WHEN ?4 IS NULL THEN 'abandoned' ELSE 'pending' END,
                 next_attempt_at = COALESCE(?4, next_attempt_at),
                 finished_at = CASE WHEN ?4 IS NULL THEN ?5 END, claim_token = NULL
             WHERE run_id = ?1 AND claim_token = ?2 AND state = 'pending'",
        )
        .bind(claim.run_id.to_string())
        .bind(claim.token.to_string())
        .bind(error)
        .bind(retry_at.map(format_ts))
        .bind(format_ts(Utc::now()))
        .execute(&mut *writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn next_heartbeat_due(&self) -> EngineResult<Option<DateTime<Utc>>> {
        let next: Option<String> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM heartbeat_pings WHERE state = 'pending'",
        )
        .fetch_one(&self.readers)
        .await?;
        parse_opt_ts(next)
    }

    async fn schedule_heartbeats(
        &self,
        schedule: &str,
        limit: u32,
    ) -> EngineResult<Vec<HeartbeatPing>> {
        let rows = sqlx::query(
            "SELECT * FROM heartbeat_pings WHERE schedule = ?1
             ORDER BY created_at DESC, run_id DESC LIMIT ?2",
        )
        .bind(schedule)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(heartbeat_ping_from_row).collect()
    }
}
