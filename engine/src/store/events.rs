//! [`EventStore`]: events, delivered once per key, that wake the runs waiting for them;
//! and event delivery written once over the per-dialect primitives of `EventTx`.

use async_trait::async_trait;
use serde_json::Value;

use crate::batch::{child_finished_event_key, child_finished_payload};
use crate::error::EngineResult;
use crate::model::RunStatus;
use crate::store::rows::{decode_status, MovedRun};

/// Events that wake waiting runs (first delivery of a key wins).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Delivers an event (first delivery of a key wins) and wakes runs waiting for it.
    /// Returns false when the key had already been delivered.
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool>;

    /// The payload of a delivered event.
    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>>;
}

/// Delivering an event in one dialect, inside the caller's write transaction: the
/// primitives [`deliver_event`] and [`notify_parents`] are written over.
#[async_trait]
pub(crate) trait EventTx: Send {
    /// Serialises deliveries and parks on `key` until the transaction ends, so a delivery
    /// cannot slip between a waiter's "has it arrived?" check and its park.
    async fn lock_event_key(&mut self, key: &str) -> EngineResult<()>;

    /// Stores the event unless its key was delivered before; returns whether it stored it.
    async fn insert_event(&mut self, key: &str, payload: &Value) -> EngineResult<bool>;

    /// Makes the runs waiting for `key` pending at once; returns how many there were.
    async fn wake_waiting_runs(&mut self, key: &str) -> EngineResult<u64>;

    /// Tells other processes, when the transaction commits, that runs became claimable.
    async fn announce_wake(&mut self) -> EngineResult<()>;
}

/// Delivers an event (first delivery of a key wins) and wakes the runs waiting for it.
/// Returns false when the key had already been delivered.
pub(crate) async fn deliver_event<T: EventTx + ?Sized>(
    tx: &mut T,
    key: &str,
    payload: &Value,
) -> EngineResult<bool> {
    tx.lock_event_key(key).await?;
    let inserted = tx.insert_event(key, payload).await?;
    if tx.wake_waiting_runs(key).await? > 0 {
        tx.announce_wake().await?;
    }
    Ok(inserted)
}

/// Tells the parent of every child run among `moved` that ended (completed, failed or
/// cancelled) by delivering its child-finished event. Shared by finishing and cancelling.
pub(crate) async fn notify_parents<T: EventTx + ?Sized>(
    tx: &mut T,
    moved: &[MovedRun],
) -> EngineResult<()> {
    for run in moved {
        if run.parent_run_id.is_none()
            || !decode_status(&run.status).is_ok_and(RunStatus::is_terminal)
        {
            continue;
        }
        let key = child_finished_event_key(run.id);
        let payload =
            child_finished_payload(&run.status, run.output.as_ref(), run.error.as_deref());
        deliver_event(tx, &key, &payload).await?;
    }
    Ok(())
}
