//! [`LogStore`] on Postgres: text search with `to_tsvector`/`phraseto_tsquery`.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::model::{LogQuery, LogRecord};
use crate::store::rows::log_from_row;
use crate::store::LogStore;

#[async_trait]
impl LogStore for PostgresWorld {
    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>> {
        // Only the conditions given, so the planner sees what it can use
        // (`($1 IS NULL OR run_id = $1)` in a cached generic plan can hide the index).
        let mut sql = QueryBuilder::<Postgres>::new("SELECT * FROM workflow_logs WHERE TRUE");
        if let Some(run_id) = query.run_id {
            sql.push(" AND run_id = ").push_bind(run_id.0);
        }
        if let Some(step_key) = &query.step_key {
            sql.push(" AND step_key = ").push_bind(step_key.clone());
        }
        if let Some(level) = query.min_level {
            sql.push(" AND level >= ").push_bind(level.as_i16());
        }
        if let Some(since) = query.since {
            sql.push(" AND ts >= ").push_bind(since);
        }
        if let Some(until) = query.until {
            sql.push(" AND ts < ").push_bind(until);
        }
        if let Some(text) = &query.text {
            sql.push(" AND to_tsvector('simple', message) @@ phraseto_tsquery('simple', ")
                .push_bind(text.clone())
                .push(")");
        }
        if let Some(after_id) = query.after_id {
            sql.push(" AND id > ").push_bind(after_id);
        }
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(query.limit.unwrap_or(1000) as i64)
            .push(" OFFSET ")
            .push_bind(query.offset as i64);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(log_from_row).collect()
    }
}
