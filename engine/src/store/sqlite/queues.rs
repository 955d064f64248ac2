//! [`QueueStore`] on SQLite.

use async_trait::async_trait;
use chrono::Utc;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::model::QueueInfo;
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
        let rows: Vec<(String, Option<i64>, i64, i64, i64)> = sqlx::query_as(
            "WITH names AS (
                 SELECT name FROM workflow_queues
                 UNION SELECT DISTINCT queue FROM workflow_runs
                 WHERE status NOT IN ('completed', 'failed', 'cancelled'))
             SELECT names.name, q.concurrency_limit,
                    (SELECT COUNT(*) FROM workflow_runs r WHERE r.queue = names.name AND r.status = 'running'),
                    (SELECT COUNT(*) FROM workflow_runs r WHERE r.queue = names.name
                        AND r.status = 'retrying'),
                    (SELECT COUNT(*) FROM workflow_runs r WHERE r.queue = names.name
                        AND r.status IN ('pending', 'sleeping', 'waiting'))
             FROM names LEFT JOIN workflow_queues q ON q.name = names.name
             ORDER BY names.name",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, limit, running, retrying, queued)| QueueInfo {
                name,
                concurrency_limit: limit.map(|l| l as u32),
                running: running as u64,
                retrying: retrying as u64,
                queued: queued as u64,
            })
            .collect())
    }
}
