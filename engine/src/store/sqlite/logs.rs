//! [`LogStore`] on SQLite: text search through the FTS5 table `workflow_logs_fts`.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite};

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::model::{LogQuery, LogRecord};
use crate::store::rows::log_from_row;
use crate::store::LogStore;

/// Quotes text as one FTS5 phrase.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[async_trait]
impl LogStore for SqliteWorld {
    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>> {
        // Only the conditions given: SQLite plans `(?1 IS NULL OR run_id = ?1)` as a scan,
        // so a page deep into a large table would cost the pages before it.
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT * FROM workflow_logs WHERE 1 = 1");
        if let Some(run_id) = query.run_id {
            sql.push(" AND run_id = ").push_bind(run_id.to_string());
        }
        if let Some(step_key) = &query.step_key {
            sql.push(" AND step_key = ").push_bind(step_key.clone());
        }
        if let Some(level) = query.min_level {
            sql.push(" AND level >= ").push_bind(level.as_i16() as i64);
        }
        if let Some(since) = query.since {
            sql.push(" AND ts >= ").push_bind(format_ts(since));
        }
        if let Some(until) = query.until {
            sql.push(" AND ts < ").push_bind(format_ts(until));
        }
        if let Some(text) = &query.text {
            sql.push(
                " AND id IN (SELECT rowid FROM workflow_logs_fts WHERE workflow_logs_fts MATCH ",
            )
            .push_bind(fts_phrase(text))
            .push(")");
        }
        if let Some(after_id) = query.after_id {
            sql.push(" AND id > ").push_bind(after_id);
        }
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(query.limit.unwrap_or(1000) as i64)
            .push(" OFFSET ")
            .push_bind(query.offset as i64);
        let rows = sql.build().fetch_all(&self.readers).await?;
        rows.iter().map(log_from_row).collect()
    }
}
