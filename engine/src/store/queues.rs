//! [`QueueStore`]: queue concurrency limits and what each queue holds.

use async_trait::async_trait;

use crate::error::EngineResult;
use crate::model::{QueueDepth, QueueInfo};

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

    /// How many unfinished runs each queue holds in each state, ordered by queue and
    /// state; a state a queue has no runs in is absent. Cheap enough to read at every
    /// metrics scrape: it reads only the partial indexes of unfinished runs, never the
    /// history of finished ones.
    async fn queue_depths(&self) -> EngineResult<Vec<QueueDepth>>;
}

/// Unfinished runs by queue and status, in two halves that each match a partial index's
/// predicate (`workflow_runs_ready` for the pending and parked runs,
/// `workflow_runs_running_by_queue` for the running ones), so a large history of finished
/// runs is never scanned.
/// The same text in both dialects.
pub(crate) const QUEUE_DEPTHS: &str = "SELECT queue, status, COUNT(*) FROM workflow_runs
 WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting')
 GROUP BY queue, status
 UNION ALL
 SELECT queue, status, COUNT(*) FROM workflow_runs
 WHERE status = 'running'
 GROUP BY queue, status
 ORDER BY 1, 2";

/// A row of [`QUEUE_DEPTHS`] as a [`QueueDepth`]. `status` is the status column, which
/// the schema's CHECK constraint limits to the [`RunStatus`](crate::RunStatus) names.
pub(crate) fn queue_depth((queue, status, runs): (String, String, i64)) -> QueueDepth {
    QueueDepth {
        queue,
        status: status
            .parse()
            .expect("the status column holds a RunStatus name (CHECK constraint)"),
        runs: runs as u64,
    }
}

/// Every queue that has runs or a configured limit, with its limit and how many of its
/// runs are running, parked for a retry (holding their slots) and waiting. The same text
/// in both dialects (it has no parameters).
pub(crate) const LIST_QUEUES: &str = "WITH names AS (
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
 ORDER BY names.name";

/// A row of [`LIST_QUEUES`]: name, limit (`L`: the dialect's type of the limit column),
/// and the running, retrying and queued counts.
pub(crate) type QueueRow<L> = (String, Option<L>, i64, i64, i64);

/// A row of [`LIST_QUEUES`] as a [`QueueInfo`].
pub(crate) fn queue_info<L: Into<i64>>(
    (name, limit, running, retrying, queued): QueueRow<L>,
) -> QueueInfo {
    QueueInfo {
        name,
        concurrency_limit: limit.map(|limit| limit.into() as u32),
        running: running as u64,
        retrying: retrying as u64,
        queued: queued as u64,
    }
}
