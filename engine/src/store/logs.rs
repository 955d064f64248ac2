//! [`LogStore`]: the log lines steps emit, filed under their run.

use async_trait::async_trait;

use crate::error::EngineResult;
use crate::model::{LogQuery, LogRecord};

/// Step log lines (written by [`super::RunStore::apply`] with the batch they belong to).
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Log lines matching the query, in emission order.
    async fn query_logs(&self, query: &LogQuery) -> EngineResult<Vec<LogRecord>>;
}
