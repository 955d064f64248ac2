//! [`FeedStore`] on Postgres: entries are ordered by (writing transaction, `seq`) and
//! only those of transactions older than every one still in flight are read (see
//! `migrations/postgres/0006_feed.sql` for why); each writing transaction notifies
//! [`FEED_CHANNEL`], which `spawn_feed_listener` turns into wake-ups of readers.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{listen, PostgresWorld, FEED_CHANNEL};
use crate::error::EngineResult;
use crate::store::feed::{FeedCursor, FeedEntry, FeedStore};
use crate::store::rows::feed_entry_from_row;

#[async_trait]
impl FeedStore for PostgresWorld {
    async fn read_feed(&self, after: FeedCursor, limit: u32) -> EngineResult<Vec<FeedEntry>> {
        let rows = sqlx::query(
            "SELECT f.seq, f.txid::text::bigint AS txid, f.kind, f.run_id, f.status, f.ts,
                    f.collection, f.doc_key,
                    r.workflow AS run_workflow, r.queue AS run_queue, r.status AS run_status,
                    r.error AS run_error, r.parent_run_id AS run_parent,
                    r.created_at AS run_created_at, r.updated_at AS run_updated_at,
                    l.id AS log_id, l.step_key AS log_step_key, l.attempt AS log_attempt,
                    l.level::int AS log_level, l.message AS log_message, l.fields AS log_fields,
                    l.ts AS log_ts, d.body AS doc_body
             FROM workflow_feed f
             LEFT JOIN workflow_runs r ON r.id = f.run_id
             LEFT JOIN workflow_logs l ON l.id = f.log_id
             LEFT JOIN workflow_documents d ON d.collection = f.collection AND d.key = f.doc_key
             WHERE (f.txid, f.seq) > ($1::text::xid8, $2)
               AND f.txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY f.txid, f.seq LIMIT $3",
        )
        .bind(after.txid.to_string())
        .bind(after.seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(feed_entry_from_row).collect()
    }

    async fn feed_head(&self) -> EngineResult<FeedCursor> {
        let row = sqlx::query(
            "SELECT txid::text::bigint AS txid, seq FROM workflow_feed
             WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY txid DESC, seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => FeedCursor {
                txid: row.try_get::<i64, _>("txid")? as u64,
                seq: row.try_get::<i64, _>("seq")? as u64,
            },
            None => FeedCursor::START,
        })
    }

    async fn prune_feed(&self, before: DateTime<Utc>) -> EngineResult<u64> {
        // The newest entry stays, as on SQLite (where it keeps `seq` from going back).
        let done = sqlx::query(
            "DELETE FROM workflow_feed
             WHERE ts < $1 AND seq < (SELECT MAX(seq) FROM workflow_feed)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    fn spawn_feed_listener(&self, changed: Arc<Notify>) -> Option<JoinHandle<()>> {
        Some(listen::spawn_listener(
            self.options.clone(),
            FEED_CHANNEL,
            changed,
        ))
    }
}
