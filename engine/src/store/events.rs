//! [`EventStore`]: events, delivered once per key, that wake the runs waiting for them.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::EngineResult;

/// Events that wake waiting runs (first delivery of a key wins).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Delivers an event (first delivery of a key wins) and wakes runs waiting for it.
    /// Returns false when the key had already been delivered.
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool>;

    /// The payload of a delivered event.
    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>>;
}
