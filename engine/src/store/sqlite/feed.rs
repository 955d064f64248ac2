//! [`FeedStore`] on SQLite: the single writer assigns `seq` in commit order, so the
//! cursor is `seq` alone (`txid` is always 0). SQLite has no notifications: readers in
//! the writing process are woken each time its writer is released, and readers in
//! other processes poll.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::store::feed::{FeedCursor, FeedEntry, FeedStore};
use crate::store::rows::feed_entry_from_row;

#[async_trait]
impl FeedStore for SqliteWorld {
    async fn read_feed(&self, after: FeedCursor, limit: u32) -> EngineResult<Vec<FeedEntry>> {
        let rows = sqlx::query(
            "SELECT f.seq, 0 AS txid, f.kind, f.run_id, f.status, f.ts, f.collection, f.doc_key,
                    r.workflow AS run_workflow, r.queue AS run_queue, r.status AS run_status,
                    r.error AS run_error, r.parent_run_id AS run_parent,
                    r.created_at AS run_created_at, r.updated_at AS run_updated_at,
                    l.id AS log_id, l.step_key AS log_step_key, l.attempt AS log_attempt,
                    l.level AS log_level, l.message AS log_message, l.fields AS log_fields,
                    l.ts AS log_ts, d.body AS doc_body
             FROM workflow_feed f
             LEFT JOIN workflow_runs r ON r.id = f.run_id
             LEFT JOIN workflow_logs l ON l.id = f.log_id
             LEFT JOIN workflow_documents d ON d.collection = f.collection AND d.key = f.doc_key
             WHERE f.seq > ?1
             ORDER BY f.seq LIMIT ?2",
        )
        .bind(after.seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(feed_entry_from_row).collect()
    }

    async fn feed_head(&self) -> EngineResult<FeedCursor> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM workflow_feed")
            .fetch_one(&self.readers)
            .await?;
        Ok(FeedCursor {
            txid: 0,
            seq: seq.unwrap_or(0) as u64,
        })
    }

    async fn prune_feed(&self, before: DateTime<Utc>) -> EngineResult<u64> {
        let mut writer = self.writer().await?;
        // The newest entry stays: `seq` is max(seq) + 1, so keeping it keeps every
        // later `seq` above every cursor a reader already holds.
        let done = sqlx::query(
            "DELETE FROM workflow_feed
             WHERE ts < ?1 AND seq < (SELECT MAX(seq) FROM workflow_feed)",
        )
        .bind(format_ts(before))
        .execute(&mut *writer)
        .await?;
        Ok(done.rows_affected())
    }

    fn spawn_feed_listener(&self, changed: Arc<Notify>) -> Option<JoinHandle<()>> {
        // Writes by this process only: another process on the same file is found by
        // the reader's poll.
        let mut written = self.written.subscribe();
        Some(tokio::spawn(async move {
            changed.notify_one();
            while written.changed().await.is_ok() {
                changed.notify_one();
            }
        }))
    }
}
