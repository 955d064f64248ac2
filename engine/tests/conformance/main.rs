//! The storage port's conformance suite: every test body is written once and runs against
//! both SQLite and PostgreSQL (`for_each_backend!`), each on a fresh database. The two
//! adapters must agree on every behaviour here: the engine's promise as `engine/src/lib.rs`
//! states it (first completion wins, only the current lease holder writes, nothing is lost
//! on bad input), and everything else the port offers.
//!
//! One module per concern of the port, in the order a run meets them, so a test is found
//! by what it exercises and is named `<concern>::<backend>::<behaviour>`:
//!
//! - [`runs`]: start (idempotency keys), cancel, resume, fork, list/count, prune.
//! - [`claim`]: claiming due runs (priority, queues, registered workflows), leases, fencing.
//! - [`apply`]: the journal writes: step completions and failures, parks, finishing a run.
//! - [`events`]: waiting for events, delivery, timeouts, child runs waking their parent.
//! - [`queues`]: per-queue concurrency limits.
//! - [`schedules`]: schedules and their firing (time passed explicitly, so exact).
//! - [`logs`]: run logs and their query.
//! - [`budgets`]: cross-run budget reservations.
//! - [`nonces`]: nonce reservations per account.
//! - [`signatures`]: the key audit.
//! - [`documents`]: the document store.
//! - [`feed`]: the change feed live views follow.
//! - [`schema`]: migrations and a schema newer than the binary.
//! - [`bench`]: the raw write path of `morpheus bench --ceiling`.
//!
//! The helpers below are shared by the modules.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod apply;
mod bench;
mod budgets;
mod claim;
mod documents;
mod events;
mod feed;
mod logs;
mod nonces;
mod queues;
mod runs;
mod schedules;
mod schema;
mod signatures;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use morpheus_engine::{
    ClaimRequest, ClaimedRun, Fence, LogLevel, NewLog, NewRun, RunFilter, RunId, World, WriteOp,
    WriteOutcome,
};
use serde_json::{json, Value};

const WF: &str = "wf";

fn registered() -> Vec<(String, u32)> {
    vec![(WF.to_owned(), 1)]
}

fn request(owner: &str, limit: u32, ttl: Duration) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        limit,
        lease_ttl: ttl,
        workflows: registered(),
        queues: None,
    }
}

async fn start(world: &Arc<dyn World>, input: Value) -> RunId {
    let started = world
        .start_run(NewRun::new(WF, input))
        .await
        .expect("start_run");
    assert!(started.created);
    started.run_id
}

async fn claim(world: &Arc<dyn World>, owner: &str, limit: u32) -> Vec<ClaimedRun> {
    world
        .claim_runs(&request(owner, limit, Duration::from_secs(30)))
        .await
        .expect("claim_runs")
}

/// Claims exactly one run (the only claimable one) and returns its fence.
async fn claim_one(world: &Arc<dyn World>, owner: &str) -> Fence {
    let claimed = claim(world, owner, 10).await;
    assert_eq!(claimed.len(), 1, "expected exactly one claimable run");
    fence_of(&claimed[0])
}

fn fence_of(claimed: &ClaimedRun) -> Fence {
    Fence {
        run_id: claimed.run.id,
        epoch: claimed.run.lease_epoch,
    }
}

fn complete(fence: Fence, key: &str, seq: i64, output: Value) -> WriteOp {
    WriteOp::CompleteStep {
        fence,
        step_key: key.to_owned(),
        seq,
        output,
        attempts: 1,
        executor: None,
        started_at: Utc::now(),
    }
}

fn fail(
    fence: Fence,
    key: &str,
    seq: i64,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
) -> WriteOp {
    WriteOp::FailStepAttempt {
        fence,
        step_key: key.to_owned(),
        seq,
        error: format!("attempt {attempts} broke"),
        attempts,
        next_attempt_at,
        executor: Some("process".into()),
        started_at: Utc::now(),
    }
}

fn log_op(
    fence: Fence,
    step: Option<&str>,
    level: LogLevel,
    message: &str,
    ts: DateTime<Utc>,
) -> WriteOp {
    WriteOp::Log {
        fence,
        log: NewLog {
            run_id: fence.run_id,
            step_key: step.map(str::to_owned),
            attempt: step.map(|_| 1),
            level,
            message: message.to_owned(),
            fields: Some(json!({ "n": message.len() })),
            ts,
        },
    }
}

async fn apply_one(world: &Arc<dyn World>, op: WriteOp) -> WriteOutcome {
    world.apply_one(op).await.expect("apply")
}

async fn run_of(world: &Arc<dyn World>, run_id: RunId) -> morpheus_engine::RunRecord {
    world
        .get_run(run_id)
        .await
        .expect("get_run")
        .expect("run exists")
}

async fn all_runs(world: &Arc<dyn World>) -> Vec<morpheus_engine::RunRecord> {
    world
        .list_runs(&RunFilter {
            limit: Some(1000),
            ..RunFilter::default()
        })
        .await
        .expect("list_runs")
}

fn close_to(a: DateTime<Utc>, b: DateTime<Utc>, tolerance_ms: i64) -> bool {
    (a - b).num_milliseconds().abs() <= tolerance_ms
}
