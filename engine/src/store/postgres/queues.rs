//! [`QueueStore`] on Postgres.

use async_trait::async_trait;

use super::events::notify;
use super::PostgresWorld;
use crate::error::EngineResult;
use crate::model::{QueueDepth, QueueInfo};
use crate::store::queues::{queue_depth, queue_info, QueueRow, LIST_QUEUES, QUEUE_DEPTHS};
use crate::store::QueueStore;

#[async_trait]
impl QueueStore for PostgresWorld {
    async fn set_queue_limit(&self, queue: &str, limit: Option<u32>) -> EngineResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workflow_queues (name, concurrency_limit) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit,
                 updated_at = now()",
        )
        .bind(queue)
        .bind(limit.map(|l| l as i32))
        .execute(&mut *tx)
        .await?;
        // A raised or removed limit may let waiting runs start.
        notify(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_queues(&self) -> EngineResult<Vec<QueueInfo>> {
        let rows: Vec<QueueRow<i32>> = sqlx::query_as(LIST_QUEUES).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(queue_info).collect())
    }

    async fn queue_depths(&self) -> EngineResult<Vec<QueueDepth>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as(QUEUE_DEPTHS).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(queue_depth).collect())
    }
}
