//! [`QueueStore`] on SQLite.

use async_trait::async_trait;
use chrono::Utc;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::model::{QueueDepth, QueueInfo};
use crate::store::queues::{queue_depth, queue_info, QueueRow, LIST_QUEUES, QUEUE_DEPTHS};
use crate::store::QueueStore;

#[async_trait]
impl QueueStore for SqliteWorld {
    async fn set_queue_limit(&self, queue: &str, limit: Option<u32>) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        sqlx::query(
            "INSERT INTO workflow_queues (name, concurrency_limit, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit,
                 updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(limit.map(i64::from))
        .bind(format_ts(Utc::now()))
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    async fn list_queues(&self) -> EngineResult<Vec<QueueInfo>> {
        let rows: Vec<QueueRow<i64>> = sqlx::query_as(LIST_QUEUES).fetch_all(&self.readers).await?;
        Ok(rows.into_iter().map(queue_info).collect())
    }

    async fn queue_depths(&self) -> EngineResult<Vec<QueueDepth>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(QUEUE_DEPTHS)
            .fetch_all(&self.readers)
            .await?;
        Ok(rows.into_iter().map(queue_depth).collect())
    }
}
