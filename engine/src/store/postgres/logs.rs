//! [`LogStore`] on Postgres: text search with `to_tsvector`/`phraseto_tsquery`.

use async_trait::async_trait;

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::model::{LogQuery, LogRecord};
use crate::store::rows::log_from_row;
use crate::store::LogStore;

#[async_trait]
impl LogStore for PostgresWorld {
    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_logs
             WHERE ($1::uuid IS NULL OR run_id = $1)
               AND ($2::text IS NULL OR step_key = $2)
               AND ($3::smallint IS NULL OR level >= $3)
               AND ($4::timestamptz IS NULL OR ts >= $4)
               AND ($5::timestamptz IS NULL OR ts < $5)
               AND ($6::text IS NULL OR to_tsvector('simple', message) @@ phraseto_tsquery('simple', $6))
               AND ($7::bigint IS NULL OR id > $7)
             ORDER BY id LIMIT $8 OFFSET $9",
        )
        .bind(query.run_id.map(|id| id.0))
        .bind(&query.step_key)
        .bind(query.min_level.map(|l| l.as_i16()))
        .bind(query.since)
        .bind(query.until)
        .bind(&query.text)
        .bind(query.after_id)
        .bind(query.limit.unwrap_or(1000) as i64)
        .bind(query.offset as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(log_from_row).collect()
    }
}
