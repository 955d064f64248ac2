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
use crate::profile::{self, Phase};
use crate::world::World;

/// Most writes in one transaction; bounds a batch's latency and memory.
const MAX_BATCH: usize = 1024;

/// Most scheduler yields the committer spends gathering a batch (it stops at the first
/// yield that brought nothing new).
const GATHER_YIELDS: usize = 16;

/// Longest a batch of log lines alone waits for a write that someone waits on. Log
/// lines are queued without waiting (a step goes on while its line is written), and a
/// step's lines usually come just before its result: committed alone, the lines cost a
/// transaction (an fsync) of their own, and the result queues behind it. Lingering, they
/// ride along with the result's commit, in their order; a line with nothing after it
/// is committed this much later, which nobody reading logs can tell.
const LOG_LINGER: Duration = Duration::from_millis(20);

/// How many times a batch the database rolled back for a conflict (a deadlock) is
/// applied again before its writers are told it failed.
const CONFLICT_RETRIES: u32 = 5;

/// An acknowledgement: the write's outcome and when the committer sent it (for the
/// profile's ack hop), or why its batch failed.
type Ack = Result<(WriteOutcome, Option<Instant>), String>;

struct Pending {
    op: WriteOp,
    ack: Option<oneshot::Sender<Ack>>,
    /// When the write was queued, while profiling.
    queued: Option<Instant>,
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
            .send(Pending {
                op,
                ack: Some(ack),
                queued: profile::start(),
            })
            .map_err(|_| EngineError::ShuttingDown)?;
        match done.await {
            Ok(Ok((outcome, acked))) => {
                if let Some(acked) = acked {
                    profile::record_since(Phase::AckHop, acked);
                }
                Ok(outcome)
            }
            Ok(Err(message)) => Err(EngineError::BatchFailed(message)),
            Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    /// Queues a write without waiting (log lines): it rides along with the next batch.
    pub fn write_later(&self, op: WriteOp) {
        // A send fails only when the committer has stopped; the line is then dropped
        // together with the run's lease, as any write of a stopped worker would be.
        let _ = self.sender.send(Pending {
            op,
            ack: None,
            queued: profile::start(),
        });
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
        gather(&mut receiver, &mut batch).await;
        linger_for_a_waiter(&mut receiver, &mut batch).await;
        let applying = Instant::now();
        if profile::enabled() {
            for queued in batch.iter().filter_map(|pending| pending.queued) {
                profile::record(Phase::ToCommitter, applying.duration_since(queued), 1);
            }
        }
        let (ops, acks): (Vec<_>, Vec<_>) = batch.drain(..).map(|p| (p.op, p.ack)).unzip();
        batch_size.record(ops.len() as f64);
        match apply(world.as_ref(), ops).await {
            Ok(outcomes) => {
                let took = applying.elapsed();
                commit_duration.record(took);
                outage.success();
                let acked = profile::start();
                if acked.is_some() {
                    let waiters = acks.iter().filter(|ack| ack.is_some()).count() as u64;
                    profile::record(Phase::Commit, took, 1);
                    profile::record(Phase::CommitPerWrite, took * waiters as u32, waiters);
                }
                for (ack, outcome) in acks.into_iter().zip(outcomes) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok((outcome, acked)));
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

/// Lets the writers that are about to write join this batch. The tasks the last commit
/// acknowledged are runnable now and usually write their next step within microseconds;
/// taking the batch at once would split the in-flight runs into two cohorts that
/// alternate commits of half the size (and twice the fixed cost per write). Each yield
/// lets the runnable tasks run; gathering stops at the first yield that brought nothing,
/// so an idle or sequential writer waits one yield, not a timer.
async fn gather(receiver: &mut mpsc::UnboundedReceiver<Pending>, batch: &mut Vec<Pending>) {
    for _ in 0..GATHER_YIELDS {
        if batch.len() >= MAX_BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
        }
    }
}

/// When nobody waits for anything in `batch` (log lines only), waits up to
/// [`LOG_LINGER`] for a write somebody waits on, then gathers what comes with it. The
/// channel closing (shutdown) or the batch filling up ends the wait at once.
async fn linger_for_a_waiter(
    receiver: &mut mpsc::UnboundedReceiver<Pending>,
    batch: &mut Vec<Pending>,
) {
    if batch.iter().any(|pending| pending.ack.is_some()) {
        return;
    }
    let deadline = tokio::time::Instant::now() + LOG_LINGER;
    while batch.len() < MAX_BATCH {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(pending)) => {
                let awaited = pending.ack.is_some();
                batch.push(pending);
                if awaited {
                    gather(receiver, batch).await;
                    return;
                }
            }
            Ok(None) | Err(_) => return,
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
