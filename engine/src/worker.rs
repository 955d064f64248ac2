//! The worker: claims runnable runs under a lease, executes them with bounded
//! concurrency, renews all its leases in one statement per heartbeat, drops any run
//! whose lease it lost, and on shutdown stops claiming, lets in-flight runs finish
//! within a grace period and gives the rest back.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::committer::Committer;
use crate::ctx::{Ctx, CtxShared};
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::lease::LeaseClock;
use crate::metrics::WorkerMetrics;
use crate::model::{ClaimedRun, Fence, LogLevel, NewLog, Outcome, Park, WriteOp};
use crate::outage::OutageReporter;
use crate::workflow::WorkflowError;
use crate::world::{Backend, ClaimRequest};

/// How a worker claims and holds runs. [`WorkerConfig::for_backend`] gives the defaults
/// `morpheus up` uses; tests shorten the lease and the intervals.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Identifies this worker in `lease_owner` (unique per process).
    pub worker_id: String,
    /// Most runs executing at once.
    pub concurrency: usize,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often all held leases are renewed (well under `lease_ttl`).
    pub heartbeat_interval: Duration,
    /// Longest idle wait between claim attempts when nothing says work arrived.
    pub poll_interval: Duration,
    /// How long in-flight runs may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Only claim runs of these queues (`None`: every queue).
    pub queues: Option<Vec<String>>,
}

impl WorkerConfig {
    /// Defaults for a backend: SQLite polls its local file every second (other processes
    /// cannot notify it); Postgres waits on `LISTEN` and polls only once a minute, as a
    /// fallback should a notification be lost (a lost `LISTEN` connection wakes it on
    /// reconnecting, and due timers and expiring leases wake it on time either way: the
    /// wait is bounded by the next one).
    pub fn for_backend(backend: Backend) -> Self {
        Self {
            worker_id: format!(
                "{}:{}:{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            concurrency: 50,
            lease_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: match backend {
                Backend::Sqlite => Duration::from_secs(1),
                Backend::Postgres => Duration::from_secs(60),
            },
            shutdown_grace: Duration::from_secs(30),
            queues: None,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs workflows of one [`Engine`].
pub struct Worker {
    engine: Engine,
    config: WorkerConfig,
}

struct InFlight {
    epoch: i64,
    abort: tokio::task::AbortHandle,
    lease: LeaseClock,
}

impl Worker {
    /// A worker for `engine`.
    pub fn new(engine: Engine, config: WorkerConfig) -> Self {
        Self { engine, config }
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> EngineResult<()> {
        let Worker { engine, config } = self;
        let world = engine.world();
        let workflows = engine.workflows().versions();
        let (fatal_sender, mut fatal) = tokio::sync::watch::channel(None::<String>);
        let (committer, commit_task) = Committer::start(world.clone(), fatal_sender);
        let mut stop_error: Option<EngineError> = None;
        let wake = engine.wake_signal();
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let in_flight: Arc<Mutex<HashMap<RunId, InFlight>>> = Default::default();
        let mut tasks = JoinSet::new();
        let metrics = Arc::new(WorkerMetrics::new(engine.workflows(), engine.executors()));

        let listener_task = engine.spawn_wake_listener();
        let heartbeat_task = tokio::spawn(heartbeat(
            engine.clone(),
            config.clone(),
            in_flight.clone(),
            metrics.clone(),
        ));

        tokio::pin!(shutdown);
        tracing::info!(worker = %config.worker_id, backend = world.backend().as_str(),
            concurrency = config.concurrency, "worker started");
        let mut claim_failures = 0u32;
        let mut claim_outage = OutageReporter::new("claim", Duration::ZERO);
        loop {
            while tasks.try_join_next().is_some() {}
            let available = permits.available_permits();
            let mut claimed_full = false;
            if available > 0 {
                let request = ClaimRequest {
                    owner: config.worker_id.clone(),
                    limit: available.min(256) as u32,
                    lease_ttl: config.lease_ttl,
                    workflows: workflows.clone(),
                    queues: config.queues.clone(),
                };
                let claim_sent = std::time::Instant::now();
                match world.claim_runs(&request).await {
                    Ok(claimed) => {
                        metrics.claim_duration.record(claim_sent.elapsed());
                        crate::profile::record(
                            crate::profile::Phase::Claim,
                            claim_sent.elapsed(),
                            claimed.len() as u64,
                        );
                        claim_outage.success();
                        claim_failures = 0;
                        claimed_full = claimed.len() as u32 == request.limit;
                        for run in claimed {
                            let permit = permits
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed no more than the free permits");
                            let run_id = run.run.id;
                            let epoch = run.run.lease_epoch;
                            let lease = LeaseClock::new(claim_sent, config.lease_ttl);
                            let lease_for_task = lease.clone();
                            let engine = engine.clone();
                            let committer = committer.clone();
                            let wake = wake.clone();
                            let in_flight_for_task = in_flight.clone();
                            let metrics_for_task = metrics.clone();
                            // Hold the map while spawning so the task cannot finish (and
                            // remove itself) before it has been inserted.
                            let mut map = in_flight.lock().expect("in-flight");
                            let handle = tasks.spawn(async move {
                                execute(engine, committer, run, lease_for_task, &metrics_for_task)
                                    .await;
                                let mut map = in_flight_for_task.lock().expect("in-flight");
                                // Only our own entry: the run may have been re-claimed (new
                                // epoch) by this worker meanwhile.
                                if map.get(&run_id).is_some_and(|f| f.epoch == epoch) {
                                    map.remove(&run_id);
                                }
                                drop(map);
                                drop(permit);
                                wake.notify_one();
                            });
                            let previous = map.insert(
                                run_id,
                                InFlight {
                                    epoch,
                                    abort: handle,
                                    lease,
                                },
                            );
                            if let Some(stale) = previous {
                                // Our own earlier claim of this run expired (a stall
                                // longer than the lease) and we just claimed it again:
                                // the old execution must not go on beside the new one.
                                tracing::warn!(run = %run_id, old_epoch = stale.epoch, epoch, "re-claimed a run whose lease had expired here; stopping the old execution");
                                stale.abort.abort();
                                metrics.leases_lost.increment(1);
                            }
                        }
                    }
                    Err(error) if error.is_fatal_storage() => {
                        tracing::error!(%error, "storage failed; stopping the worker");
                        stop_error = Some(EngineError::StorageFailed(error.to_string()));
                        break;
                    }
                    Err(error) => {
                        claim_failures += 1;
                        // One line per retry interval, not a flood; no claims meanwhile.
                        claim_outage.failure(&error, Some(claim_backoff(claim_failures)));
                    }
                }
            }
            if claimed_full {
                continue;
            }
            let wait = if claim_failures > 0 {
                claim_backoff(claim_failures)
            } else if permits.available_permits() == 0 {
                config.poll_interval
            } else {
                match world.next_due_at(&workflows).await {
                    Ok(Some(due)) => (due - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(config.poll_interval),
                    Ok(None) => config.poll_interval,
                    Err(_) => config.poll_interval,
                }
            };
            if wait.is_zero() {
                // Due now but not claimed (another worker holds it, or a lease has not
                // quite expired): yield briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Ok(()) = fatal.changed() => {
                    if let Some(error) = fatal.borrow().clone() {
                        tracing::error!(%error, "storage failed; stopping the worker");
                        stop_error = Some(EngineError::StorageFailed(error));
                        break;
                    }
                }
            }
        }

        // After a storage failure nothing in flight can commit any more: waiting out the
        // grace period would only keep a dead worker alive. Its runs are not lost; their
        // leases expire and whoever claims them next resumes from the last commit.
        let grace = if stop_error.is_some() {
            Duration::ZERO
        } else {
            config.shutdown_grace
        };
        tracing::info!(
            in_flight = tasks.len(),
            ?grace,
            "shutting down: no more claims"
        );
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = tasks.len(),
                "grace period over; abandoning in-flight runs"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        heartbeat_task.abort();
        if let Some(listener) = listener_task {
            listener.abort();
        }
        drop(committer);
        if stop_error.is_some() {
            // The committer would go on retrying a batch the failed database refuses;
            // nothing waits for it any more.
            commit_task.abort();
        }
        let _ = commit_task.await;
        if let Some(error) = stop_error {
            // Leases cannot be given back through a failed database; they expire.
            return Err(error);
        }
        let released = world.release_leases(&config.worker_id).await?;
        tracing::info!(released, "worker stopped");
        Ok(())
    }
}

/// Wait before the next claim after `failures` failed ones: 1 s doubling to 10 s.
fn claim_backoff(failures: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(failures.min(5))).min(Duration::from_secs(10))
}

async fn heartbeat(
    engine: Engine,
    config: WorkerConfig,
    in_flight: Arc<Mutex<HashMap<RunId, InFlight>>>,
    metrics: Arc<WorkerMetrics>,
) {
    let world = engine.world();
    let mut ticker = tokio::time::interval(config.heartbeat_interval);
    let mut outage = OutageReporter::new("lease renewal", Duration::from_secs(30));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let before: Vec<(RunId, i64)> = in_flight
            .lock()
            .expect("in-flight")
            .iter()
            .map(|(id, f)| (*id, f.epoch))
            .collect();
        if before.is_empty() {
            // Nothing to renew; saying nothing about the database is the honest answer.
            continue;
        }
        let leases: Vec<Fence> = before
            .iter()
            .map(|(run_id, epoch)| Fence {
                run_id: *run_id,
                epoch: *epoch,
            })
            .collect();
        let renewal_sent = std::time::Instant::now();
        match world.renew_leases(&leases, config.lease_ttl).await {
            Ok(held) => {
                outage.success();
                let held: std::collections::HashSet<RunId> = held.into_iter().collect();
                let mut map = in_flight.lock().expect("in-flight");
                for (run_id, epoch) in before {
                    if held.contains(&run_id) {
                        if let Some(flight) = map.get(&run_id).filter(|f| f.epoch == epoch) {
                            flight.lease.extend(renewal_sent, config.lease_ttl);
                        }
                        continue;
                    }
                    // Gone from our leases (cancelled, or expired and taken over): stop
                    // it now; its writes would be rejected anyway. The aborted task never
                    // reaches its own cleanup, so the entry goes here.
                    if map.get(&run_id).is_some_and(|f| f.epoch == epoch) {
                        if let Some(flight) = map.remove(&run_id) {
                            tracing::warn!(run = %run_id, "lease lost; abandoning run");
                            flight.abort.abort();
                            metrics.leases_lost.increment(1);
                        }
                    }
                }
            }
            Err(error) => outage.failure(&error, Some(config.heartbeat_interval)),
        }
    }
}

async fn execute(
    engine: Engine,
    committer: Committer,
    claimed: ClaimedRun,
    lease: LeaseClock,
    worker_metrics: &WorkerMetrics,
) {
    let ClaimedRun { run, journal } = claimed;
    let fence = Fence {
        run_id: run.id,
        epoch: run.lease_epoch,
    };
    let world = engine.world();
    let (Some(workflow), Some(metrics)) = (
        engine.workflows().get(&run.workflow),
        worker_metrics.workflow(&run.workflow),
    ) else {
        return;
    };
    // Epochs start at 0 and every claim adds one: epoch 1 is the run's first claim.
    if run.lease_epoch == 1 {
        metrics.started.increment(1);
    }
    let keys_by_seq = journal
        .iter()
        .map(|step| (step.seq, step.step_key.clone()))
        .collect();
    let journal = journal
        .into_iter()
        .map(|step| (step.step_key.clone(), step))
        .collect();
    let ctx = Ctx::new(CtxShared {
        run_id: run.id,
        fence,
        journal,
        keys_by_seq,
        committer: committer.clone(),
        world: world.clone(),
        executors: engine.executors().clone(),
        workflows: engine.workflows().clone(),
        lease,
        metrics: metrics.clone(),
    });
    let result = AssertUnwindSafe(workflow.run_json(&ctx, run.input.clone()))
        .catch_unwind()
        .await;
    let op = match result {
        Ok(Ok(output)) => WriteOp::Finish {
            fence,
            outcome: Outcome::Completed(output),
        },
        Ok(Err(WorkflowError::Suspended)) => match ctx.take_park() {
            Some(park) => WriteOp::Park { fence, park },
            None => WriteOp::Finish {
                fence,
                outcome: Outcome::Failed(
                    "workflow returned Suspended without a durable operation asking to park".into(),
                ),
            },
        },
        Ok(Err(WorkflowError::LeaseLost)) => {
            tracing::warn!(run = %run.id, epoch = fence.epoch, "lease lost: write rejected, abandoning run");
            worker_metrics.leases_lost.increment(1);
            return;
        }
        Ok(Err(WorkflowError::Storage(error))) => {
            tracing::debug!(run = %run.id, %error, "storage error; run will be retried after its lease expires");
            return;
        }
        Ok(Err(error)) => WriteOp::Finish {
            fence,
            outcome: Outcome::Failed(error.to_string()),
        },
        Err(panic) => {
            let message = panic_message(&panic);
            committer.write_later(WriteOp::Log {
                fence,
                log: NewLog {
                    run_id: run.id,
                    step_key: None,
                    attempt: None,
                    level: LogLevel::Error,
                    message: format!("workflow panicked: {message}"),
                    fields: None,
                    ts: Utc::now(),
                },
            });
            WriteOp::Finish {
                fence,
                outcome: Outcome::Failed(format!("workflow panicked: {message}")),
            }
        }
    };
    let parked_until = match &op {
        WriteOp::Park { park, .. } => Some(park.clone()),
        _ => None,
    };
    let finished = match &op {
        WriteOp::Finish {
            outcome: Outcome::Completed(_),
            ..
        } => Some(&metrics.completed),
        WriteOp::Finish {
            outcome: Outcome::Failed(_),
            ..
        } => Some(&metrics.failed),
        _ => None,
    };
    match committer.write(op).await {
        Ok(crate::model::WriteOutcome::LeaseLost) => {
            tracing::warn!(run = %run.id, epoch = fence.epoch, "lease lost: write rejected, abandoning run");
            worker_metrics.leases_lost.increment(1);
        }
        Ok(_) => {
            if let Some(counter) = finished {
                counter.increment(1);
            }
            if let Some(Park::Sleep { .. } | Park::Retry { .. }) = parked_until {
                engine.wake_signal().notify_one();
            }
        }
        Err(error) => {
            tracing::debug!(run = %run.id, %error, "could not record the run's end; it will be retried")
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".into()
    }
}
