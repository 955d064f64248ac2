//! Group commit: one task owns all writes of a worker process. Checkpoints, parks,
//! finishes and log lines from every in-flight run queue up here; the task takes
//! whatever has queued, applies it in one transaction, and only then acks each waiter.
//! Under load many steps share one commit (and one fsync); idle, a write goes out at
//! once. Durability is not traded away: nobody hears "done" before the commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{EngineError, EngineResult};
use crate::metrics::{COMMIT_BATCH_SIZE, COMMIT_DURATION};
use crate::model::{WriteOp, WriteOutcome};
use crate::outage::OutageReporter;
use crate::world::World;

/// Most writes in one transaction; bounds a batch's latency and memory.
const MAX_BATCH: usize = 1024;

/// How many times a batch the database rolled back for a conflict (a deadlock) is
/// applied again before its writers are told it failed.
const CONFLICT_RETRIES: u32 = 5;

struct Pending {
    op: WriteOp,
    ack: Option<oneshot::Sender<Result<WriteOutcome, String>>>,
}

/// Handle to the group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    sender: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Starts the group-commit task on `world`. It ends when every handle is dropped,
    /// after writing what was queued.
    ///
    /// `fatal` receives the error when a commit fails in a way retrying cannot fix
    /// (read-only or full SQLite file); the worker then stops.
    pub fn start(
        world: Arc<dyn World>,
        fatal: watch::Sender<Option<String>>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(world, receiver, fatal));
        (Self { sender }, task)
    }

    /// Queues a write and waits until its transaction has committed.
    pub async fn write(&self, op: WriteOp) -> EngineResult<WriteOutcome> {
        let (ack, done) = oneshot::channel();
        self.sender
            .send(Pending { op, ack: Some(ack) })
            .map_err(|_| EngineError::ShuttingDown)?;
        match done.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(message)) => Err(EngineError::BatchFailed(message)),
            Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    /// Queues a write without waiting (log lines): it rides along with the next batch.
    pub fn write_later(&self, op: WriteOp) {
        // A send fails only when the committer has stopped; the line is then dropped
        // together with the run's lease, as any write of a stopped worker would be.
        let _ = self.sender.send(Pending { op, ack: None });
    }
}

async fn run(
    world: Arc<dyn World>,
    mut receiver: mpsc::UnboundedReceiver<Pending>,
    fatal: watch::Sender<Option<String>>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut outage = OutageReporter::new("group commit", Duration::from_secs(30));
    let batch_size = ::metrics::histogram!(COMMIT_BATCH_SIZE);
    let commit_duration = ::metrics::histogram!(COMMIT_DURATION);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (ops, acks): (Vec<_>, Vec<_>) = batch.drain(..).map(|p| (p.op, p.ack)).unzip();
        batch_size.record(ops.len() as f64);
        let applying = Instant::now();
        match apply(world.as_ref(), ops).await {
            Ok(outcomes) => {
                commit_duration.record(applying.elapsed());
                outage.success();
                for (ack, outcome) in acks.into_iter().zip(outcomes) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(outcome));
                    }
                }
            }
            Err(error) => {
                // The batch's runs are abandoned by their tasks and retried after their
                // leases expire.
                outage.failure(&error, None);
                if error.is_fatal_storage() {
                    let _ = fatal.send(Some(error.to_string()));
                }
                let message = error.to_string();
                for ack in acks.into_iter().flatten() {
                    let _ = ack.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Applies one batch, again if the database rolled it back for losing a race (a
/// deadlock with another transaction over the same runs).
///
/// Why not give up at once: a failed batch fails every run in it, and their tasks stop
/// without their writes, so a run's lease lapses and the run is claimed anew, by this
/// worker too, and its step bodies run again although nothing was wrong with the worker
/// or the database. Retrying is safe: the rolled-back transaction wrote nothing, every
/// write is fenced inside the transaction, and step records are idempotent.
async fn apply(world: &dyn World, mut ops: Vec<WriteOp>) -> EngineResult<Vec<WriteOutcome>> {
    let mut tries = 0;
    loop {
        tries += 1;
        let retry = (tries <= CONFLICT_RETRIES).then(|| ops.clone());
        match world.apply(ops).await {
            Err(error) if error.is_transaction_conflict() && retry.is_some() => {
                tracing::debug!(%error, tries, "group commit lost a race; applying it again");
                // A little apart, so the transaction that won can finish first.
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
                ops = retry.expect("checked above");
            }
            result => return result,
        }
    }
}
