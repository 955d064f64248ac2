//! [`LogStore`] on SQLite: text search through the FTS5 table `workflow_logs_fts`.

use async_trait::async_trait;

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
        let rows = sqlx::query(
            "SELECT * FROM workflow_logs
             WHERE (?1 IS NULL OR run_id = ?1)
               AND (?2 IS NULL OR step_key = ?2)
               AND (?3 IS NULL OR level >= ?3)
               AND (?4 IS NULL OR ts >= ?4)
               AND (?5 IS NULL OR ts < ?5)
               AND (?6 IS NULL OR id IN (SELECT rowid FROM workflow_logs_fts WHERE workflow_logs_fts MATCH ?6))
               AND (?7 IS NULL OR id > ?7)
             ORDER BY id LIMIT ?8 OFFSET ?9",
        )
        .bind(query.run_id.map(|id| id.to_string()))
        .bind(&query.step_key)
        .bind(query.min_level.map(|l| l.as_i16() as i64))
        .bind(query.since.map(format_ts))
        .bind(query.until.map(format_ts))
        .bind(query.text.as_deref().map(fts_phrase))
        .bind(query.after_id)
        .bind(query.limit.unwrap_or(1000) as i64)
        .bind(query.offset as i64)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(log_from_row).collect()
    }
}
