//! [`QueueStore`]: queue concurrency limits and what each queue holds.

use async_trait::async_trait;

use crate::error::EngineResult;
use crate::model::QueueInfo;

/// Queue concurrency limits and load.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Sets (or with `None` removes) a queue's concurrency limit: at most that many of
    /// its runs hold a slot at once across all workers. A run holds a slot while it is
    /// `running` and while it is parked for a step retry (`retrying`: it is in the middle
    /// of its work, so a run due for a retry is claimed again before any other run of
    /// the queue starts); a run that sleeps or waits for an event gives its slot back
    /// until it is claimed again (a parent waiting for a child in the same queue must
    /// not block it).
    async fn set_queue_limit(&self, queue: &str, limit: Option<u32>) -> EngineResult<()>;

    /// Queues that have runs or a configured limit, with their current load.
    async fn list_queues(&self) -> EngineResult<Vec<QueueInfo>>;
}
