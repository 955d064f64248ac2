//! Claiming from concurrency-limited queues, written once for both adapters.
//!
//! Runs of unlimited queues (and stranded runs) are claimed by each adapter in one
//! statement. A limited queue is counted and claimed from one at a time, inside a
//! transaction that makes the count exact (SQLite: it is the only writer; Postgres: it
//! holds the queue rows' locks), so no limit is overshot. A run parked for a step retry
//! keeps its slot (see [`QueueStore::set_queue_limit`](super::QueueStore::set_queue_limit)):
//! it is claimed again first, whatever the count.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::{ClaimedRun, RunRecord, StepRecord};

/// Pairs claimed runs with their journals, read in one query for all of them (`steps`
/// of every run, each run's in `seq` order) that began at `read_since` (for the profile).
pub(crate) fn with_journals(
    runs: Vec<RunRecord>,
    steps: Vec<StepRecord>,
    read_since: Option<std::time::Instant>,
) -> Vec<ClaimedRun> {
    if let Some(since) = read_since {
        crate::profile::record(
            crate::profile::Phase::JournalLoad,
            since.elapsed(),
            runs.len() as u64,
        );
    }
    let mut journals: HashMap<RunId, Vec<StepRecord>> = HashMap::new();
    for step in steps {
        journals.entry(step.run_id).or_default().push(step);
    }
    runs.into_iter()
        .map(|run| ClaimedRun {
            journal: journals.remove(&run.id).unwrap_or_default(),
            run,
        })
        .collect()
}

/// Status of a run that holds its queue slot while it waits: a run due for a retry.
pub(crate) const RETRYING: &[&str] = &["retrying"];

/// Statuses of runs that wait for a free slot in their queue.
pub(crate) const WAITING_FOR_A_SLOT: &[&str] = &["pending", "sleeping", "waiting"];

/// The two primitives of claiming from one limited queue, in one dialect, inside the
/// claim's transaction.
#[async_trait]
pub(crate) trait LimitedQueueClaim: Send {
    /// What a claim yields (SQLite: the id, claimed at the end; Postgres: the claimed row).
    type Claimed: Send;

    /// Claims up to `limit` due runs of `queue` in one of `statuses`, by priority and due
    /// time.
    async fn claim_due_in_queue(
        &mut self,
        queue: &str,
        statuses: &[&str],
        limit: i64,
    ) -> EngineResult<Vec<Self::Claimed>>;

    /// How many runs of `queue` hold a slot (running, or parked for a retry).
    async fn slots_held(&mut self, queue: &str) -> EngineResult<i64>;
}

/// Claims from each limited queue (`(name, limit)`, in name order) while fewer than
/// `remaining` runs were claimed: first its runs due for a retry, then as many waiting
/// runs as it has free slots.
pub(crate) async fn claim_from_limited_queues<C: LimitedQueueClaim>(
    claim: &mut C,
    limited: &[(String, i64)],
    mut remaining: i64,
) -> EngineResult<Vec<C::Claimed>> {
    let mut claimed = Vec::new();
    for (queue, limit) in limited {
        if remaining <= 0 {
            break;
        }
        let retries_due = claim.claim_due_in_queue(queue, RETRYING, remaining).await?;
        remaining -= retries_due.len() as i64;
        claimed.extend(retries_due);
        let holding = claim.slots_held(queue).await?;
        let take = (limit - holding).min(remaining);
        if take <= 0 {
            continue;
        }
        let ready = claim
            .claim_due_in_queue(queue, WAITING_FOR_A_SLOT, take)
            .await?;
        remaining -= ready.len() as i64;
        claimed.extend(ready);
    }
    Ok(claimed)
}
