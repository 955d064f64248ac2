//! The `World` conformance suite: every test body is written once and runs against
//! both SQLite and PostgreSQL, each on a fresh database. The two adapters must agree on
//! every behaviour here (DESIGN.md §2: first completion wins, only the current lease
//! holder writes, nothing is lost on bad input).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use morpheus_engine::{
    child_finished_event_key, Backend, ClaimRequest, ClaimedRun, EngineError, Fence, LogLevel,
    LogQuery, NewLog, NewRun, Outcome, Park, RunFilter, RunId, RunStatus, StepStatus, World,
    WriteOp, WriteOutcome,
};
use serde_json::{json, Value};
use sqlx::Connection;

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

// ---------------------------------------------------------------------------------------

async fn start_run_is_idempotent_on_key(world: Arc<dyn World>) {
    let first = world
        .start_run(NewRun::new(WF, json!({"n": 1})).idempotency_key("order-7"))
        .await
        .unwrap();
    let second = world
        .start_run(NewRun::new(WF, json!({"n": 2})).idempotency_key("order-7"))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.run_id, second.run_id);
    let runs = all_runs(&world).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].input,
        json!({"n": 1}),
        "the first start's input is kept"
    );
    assert_eq!(runs[0].idempotency_key.as_deref(), Some("order-7"));
    assert_eq!(runs[0].status, RunStatus::Pending);

    // Runs without a key never collide.
    start(&world, json!(null)).await;
    start(&world, json!(null)).await;
    assert_eq!(all_runs(&world).await.len(), 3);

    // Concurrent starts with one key: exactly one creates, all see the same run.
    let starts: Vec<_> = (0..8)
        .map(|i| {
            let world = world.clone();
            tokio::spawn(async move {
                world
                    .start_run(NewRun::new(WF, json!(i)).idempotency_key("race"))
                    .await
                    .expect("start_run")
            })
        })
        .collect();
    let mut results = Vec::new();
    for start in starts {
        results.push(start.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    assert!(results.iter().all(|r| r.run_id == results[0].run_id));
    assert_eq!(all_runs(&world).await.len(), 4);
}

async fn claim_takes_each_run_once_and_bumps_epoch(world: Arc<dyn World>) {
    for i in 0..4 {
        start(&world, json!(i)).await;
    }
    let a = claim(&world, "worker-a", 2).await;
    let b = claim(&world, "worker-b", 2).await;
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 2);
    let a_ids: HashSet<RunId> = a.iter().map(|c| c.run.id).collect();
    let b_ids: HashSet<RunId> = b.iter().map(|c| c.run.id).collect();
    assert!(a_ids.is_disjoint(&b_ids), "two claims shared a run");
    for (owner, claimed) in [("worker-a", &a), ("worker-b", &b)] {
        for c in claimed.iter() {
            assert_eq!(c.run.status, RunStatus::Running);
            assert_eq!(c.run.lease_epoch, 1);
            assert_eq!(c.run.lease_owner.as_deref(), Some(owner));
            assert!(c.run.lease_expires_at.unwrap() > Utc::now());
            let stored = run_of(&world, c.run.id).await;
            assert_eq!(stored.status, RunStatus::Running);
            assert_eq!(stored.lease_owner.as_deref(), Some(owner));
            assert_eq!(stored.lease_epoch, 1);
        }
    }
    assert!(
        claim(&world, "worker-c", 10).await.is_empty(),
        "every run is held"
    );

    // Given back and claimed again: the epoch moves on.
    assert_eq!(world.release_leases("worker-a").await.unwrap(), 2);
    let again = claim(&world, "worker-c", 10).await;
    let again_ids: HashSet<RunId> = again.iter().map(|c| c.run.id).collect();
    assert_eq!(again_ids, a_ids);
    assert!(again.iter().all(|c| c.run.lease_epoch == 2));
}

async fn concurrent_claims_never_share_a_run(world: Arc<dyn World>) {
    for i in 0..50 {
        start(&world, json!(i)).await;
    }
    let mut claimers = Vec::new();
    for c in 0..8 {
        let world = world.clone();
        claimers.push(tokio::spawn(async move {
            let owner = format!("claimer-{c}");
            let mut mine = Vec::new();
            loop {
                let claimed = claim(&world, &owner, 3).await;
                if claimed.is_empty() {
                    break;
                }
                for run in claimed {
                    assert_eq!(run.run.lease_owner.as_deref(), Some(owner.as_str()));
                    mine.push(run.run.id);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: HashSet<RunId> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a run was claimed twice");
    assert_eq!(unique.len(), 50, "every run was claimed");
    for run in all_runs(&world).await {
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.lease_epoch, 1);
    }
}

async fn claim_ignores_unregistered_workflows_and_versions(world: Arc<dyn World>) {
    let v1 = start(&world, json!(1)).await;
    let mut v2 = NewRun::new(WF, json!(2));
    v2.workflow_version = 2;
    let v2 = world.start_run(v2).await.unwrap().run_id;
    let other = world
        .start_run(NewRun::new("other", json!(3)))
        .await
        .unwrap()
        .run_id;

    let nothing = ClaimRequest {
        workflows: Vec::new(),
        ..request("w", 10, Duration::from_secs(30))
    };
    assert!(world.claim_runs(&nothing).await.unwrap().is_empty());

    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.id, v1);
    assert_eq!(run_of(&world, v2).await.status, RunStatus::Pending);
    assert_eq!(run_of(&world, other).await.status, RunStatus::Pending);
    assert!(claim(&world, "w", 10).await.is_empty());

    let both = ClaimRequest {
        workflows: vec![(WF.to_owned(), 2), ("other".to_owned(), 1)],
        ..request("w2", 10, Duration::from_secs(30))
    };
    let ids: HashSet<RunId> = world
        .claim_runs(&both)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(ids, HashSet::from([v2, other]));
}

async fn expired_lease_is_reclaimed_with_higher_epoch_and_stale_writes_are_rejected(
    world: Arc<dyn World>,
) {
    let run_id = start(&world, json!({})).await;
    let first = world
        .claim_runs(&request("old", 1, Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let old = fence_of(&first[0]);
    assert!(
        claim(&world, "new", 1).await.is_empty(),
        "a live lease is not claimable"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = claim(&world, "new", 1).await;
    assert_eq!(second.len(), 1, "the expired lease is claimable");
    assert_eq!(second[0].run.id, run_id);
    assert_eq!(second[0].run.lease_epoch, old.epoch + 1);
    assert_eq!(second[0].run.lease_owner.as_deref(), Some("new"));
    let new = fence_of(&second[0]);

    // The old holder's writes are rejected and write nothing.
    assert_eq!(
        apply_one(&world, complete(old, "s", 0, json!("stale"))).await,
        WriteOutcome::LeaseLost
    );
    assert!(world.load_journal(run_id).await.unwrap().is_empty());
    assert_eq!(
        apply_one(
            &world,
            log_op(old, Some("s"), LogLevel::Info, "stale line", Utc::now())
        )
        .await,
        WriteOutcome::LeaseLost
    );
    let logs = world
        .query_logs(&LogQuery {
            run_id: Some(run_id),
            ..LogQuery::default()
        })
        .await
        .unwrap();
    assert!(logs.is_empty(), "a stale log line was written: {logs:?}");
    assert_eq!(
        apply_one(
            &world,
            WriteOp::Finish {
                fence: old,
                outcome: Outcome::Failed("stale".into())
            }
        )
        .await,
        WriteOutcome::LeaseLost
    );
    assert_eq!(run_of(&world, run_id).await.status, RunStatus::Running);

    // A batch mixing both holders: each write gets its own fate.
    let outcomes = world
        .apply(vec![
            complete(old, "s", 0, json!("stale")),
            complete(new, "s", 0, json!("fresh")),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![WriteOutcome::LeaseLost, WriteOutcome::Applied]
    );
    let journal = world.load_journal(run_id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].output, Some(json!("fresh")));
}

async fn first_step_completion_wins(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;

    assert_eq!(
        apply_one(&world, complete(fence, "a", 0, json!({"v": 1}))).await,
        WriteOutcome::Applied
    );
    assert_eq!(
        apply_one(&world, complete(fence, "a", 0, json!({"v": 2}))).await,
        WriteOutcome::AlreadyCompleted
    );
    // A failed attempt cannot overwrite a completion either.
    assert_eq!(
        apply_one(&world, fail(fence, "a", 0, 2, None)).await,
        WriteOutcome::AlreadyCompleted
    );

    let outcomes = world
        .apply(vec![
            complete(fence, "b", 1, json!("first")),
            complete(fence, "b", 1, json!("second")),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![WriteOutcome::Applied, WriteOutcome::AlreadyCompleted]
    );

    let journal = world.load_journal(run_id).await.unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[0].step_key, "a");
    assert_eq!(journal[0].status, StepStatus::Completed);
    assert_eq!(journal[0].output, Some(json!({"v": 1})));
    assert!(journal[0].error.is_none());
    assert_eq!(journal[1].step_key, "b");
    assert_eq!(journal[1].output, Some(json!("first")));
}

async fn failed_attempt_records_next_attempt_and_final_failure(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let next = Utc::now() + chrono::Duration::seconds(5);

    assert_eq!(
        apply_one(&world, fail(fence, "s", 0, 1, Some(next))).await,
        WriteOutcome::Applied
    );
    let step = &world.load_journal(run_id).await.unwrap()[0];
    assert_eq!(step.status, StepStatus::Retrying);
    assert_eq!(step.attempts, 1);
    assert_eq!(step.error.as_deref(), Some("attempt 1 broke"));
    assert!(close_to(step.next_attempt_at.unwrap(), next, 1));
    assert_eq!(step.executor.as_deref(), Some("process"));
    assert!(step.completed_at.is_none());

    assert_eq!(
        apply_one(&world, fail(fence, "s", 0, 2, None)).await,
        WriteOutcome::Applied
    );
    let step = &world.load_journal(run_id).await.unwrap()[0];
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.attempts, 2);
    assert_eq!(step.error.as_deref(), Some("attempt 2 broke"));
    assert!(step.next_attempt_at.is_none());
    assert!(step.completed_at.is_some());

    // Only a completion is final: a completion after a failure overwrites the row.
    assert_eq!(
        apply_one(&world, complete(fence, "s", 0, json!(42))).await,
        WriteOutcome::Applied
    );
    let journal = world.load_journal(run_id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].status, StepStatus::Completed);
    assert_eq!(journal[0].output, Some(json!(42)));
    assert!(journal[0].error.is_none());
}

/// A step row has an output only once it completed ("Output, when completed"): a
/// failed attempt, a final failure or a wait stores none, on both backends alike.
async fn step_output_is_absent_until_completed(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let outcomes = world
        .apply(vec![
            fail(
                fence,
                "retrying",
                0,
                1,
                Some(Utc::now() + chrono::Duration::hours(1)),
            ),
            fail(fence, "failed", 1, 1, None),
            WriteOp::BeginWait {
                fence,
                step_key: "$event:k".into(),
                seq: 2,
                timeout_at: None,
            },
            complete(fence, "null-output", 3, json!(null)),
        ])
        .await
        .unwrap();
    assert!(
        outcomes.iter().all(|o| *o == WriteOutcome::Applied),
        "{outcomes:?}"
    );
    let journal = world.load_journal(run_id).await.unwrap();
    let outputs: Vec<(String, StepStatus, Option<Value>)> = journal
        .iter()
        .map(|step| (step.step_key.clone(), step.status, step.output.clone()))
        .collect();
    for (key, status, output) in &outputs[..3] {
        assert!(
            output.is_none(),
            "{} backend: step '{key}' is {status:?} but has output {output:?} (all rows: {outputs:?})",
            world.backend().as_str()
        );
    }
    // A completion whose output is JSON null reads back as null (absent or Some(null)).
    assert_eq!(outputs[3].1, StepStatus::Completed);
    assert_eq!(outputs[3].2.clone().unwrap_or(Value::Null), Value::Null);
}

async fn park_sleep_then_claim_only_when_due(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let until = Utc::now() + chrono::Duration::milliseconds(300);
    assert_eq!(
        world.park_run(fence, Park::Sleep { until }).await.unwrap(),
        WriteOutcome::Applied
    );
    let run = run_of(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Sleeping);
    assert!(run.lease_owner.is_none());
    assert!(run.lease_expires_at.is_none());
    assert!(close_to(run.wake_at.unwrap(), until, 1));

    assert!(claim(&world, "w", 10).await.is_empty(), "not due yet");
    let due = world.next_due_at(&registered()).await.unwrap();
    assert!(
        close_to(due.expect("a due time"), until, 1),
        "next_due_at {due:?} vs {until}"
    );
    assert!(world
        .next_due_at(&[("unrelated".into(), 1)])
        .await
        .unwrap()
        .is_none());

    // Writes after parking are fenced off: the lease was released.
    assert_eq!(
        apply_one(&world, complete(fence, "late", 0, json!(1))).await,
        WriteOutcome::LeaseLost
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let claimed = claim(&world, "w2", 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.id, run_id);
    assert_eq!(claimed[0].run.lease_epoch, fence.epoch + 1);
}

async fn park_for_event_wakes_on_send_event(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let park = Park::Event {
        key: "approval/1".into(),
        timeout_at: None,
    };
    assert_eq!(
        world.park_run(fence, park).await.unwrap(),
        WriteOutcome::Applied
    );
    let run = run_of(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Waiting);
    assert_eq!(run.wait_event_key.as_deref(), Some("approval/1"));
    assert!(run.lease_owner.is_none());
    assert!(claim(&world, "w", 10).await.is_empty());
    assert!(
        world.next_due_at(&registered()).await.unwrap().is_none(),
        "an untimed wait has no due time"
    );
    assert!(world.get_event("approval/1").await.unwrap().is_none());

    assert!(world
        .send_event("approval/1", json!({"ok": true}))
        .await
        .unwrap());
    let run = run_of(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Pending);
    assert!(run.wait_event_key.is_none());
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.id, run_id);
    assert_eq!(
        world.get_event("approval/1").await.unwrap(),
        Some(json!({"ok": true}))
    );

    assert!(!world
        .send_event("approval/1", json!({"ok": false}))
        .await
        .unwrap());
    assert_eq!(
        world.get_event("approval/1").await.unwrap(),
        Some(json!({"ok": true})),
        "the first delivery wins"
    );
}

async fn park_for_event_that_already_arrived_goes_pending(world: Arc<dyn World>) {
    assert!(world.send_event("early", json!(7)).await.unwrap());
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let park = Park::Event {
        key: "early".into(),
        timeout_at: Some(Utc::now() + chrono::Duration::hours(1)),
    };
    assert_eq!(
        world.park_run(fence, park).await.unwrap(),
        WriteOutcome::Applied
    );
    let run = run_of(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Pending);
    assert!(run.wait_event_key.is_none());
    assert!(run.lease_owner.is_none());
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 1, "claimable at once");
    assert_eq!(claimed[0].run.id, run_id);
}

async fn event_wait_timeout_makes_run_due(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let timeout_at = Utc::now() + chrono::Duration::milliseconds(200);
    let park = Park::Event {
        key: "never".into(),
        timeout_at: Some(timeout_at),
    };
    assert_eq!(
        world.park_run(fence, park).await.unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(run_of(&world, run_id).await.status, RunStatus::Waiting);
    assert!(claim(&world, "w", 10).await.is_empty());
    let due = world.next_due_at(&registered()).await.unwrap().unwrap();
    assert!(close_to(due, timeout_at, 1));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 1, "the timeout made the run due");
    assert_eq!(claimed[0].run.id, run_id);
    assert!(claimed[0].run.wait_event_key.is_none());
}

async fn finish_run_completed_and_failed(world: Arc<dyn World>) {
    let done = start(&world, json!(1)).await;
    let fence = claim_one(&world, "w").await;
    assert_eq!(
        world
            .finish_run(fence, Outcome::Completed(json!({"answer": 42})))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let run = run_of(&world, done).await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.output, Some(json!({"answer": 42})));
    assert!(run.error.is_none());
    assert!(run.completed_at.is_some());
    assert!(run.lease_owner.is_none());
    assert!(run.lease_expires_at.is_none());
    // Finishing again with the same (now released) lease does nothing.
    assert_eq!(
        world
            .finish_run(fence, Outcome::Failed("again".into()))
            .await
            .unwrap(),
        WriteOutcome::LeaseLost
    );
    let again = run_of(&world, done).await;
    assert_eq!(again.status, RunStatus::Completed);
    assert_eq!(again.output, Some(json!({"answer": 42})));

    let failed = start(&world, json!(2)).await;
    let fence = claim_one(&world, "w").await;
    assert_eq!(
        world
            .finish_run(fence, Outcome::Failed("it broke".into()))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    let run = run_of(&world, failed).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("it broke"));
    assert!(run.output.is_none());
    assert!(run.completed_at.is_some());
    assert!(run.lease_owner.is_none());

    // A stale holder cannot finish a run someone else now holds.
    let stolen = start(&world, json!(3)).await;
    let first = world
        .claim_runs(&request("old", 1, Duration::from_millis(50)))
        .await
        .unwrap();
    let old = fence_of(&first[0]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let new = claim_one(&world, "new").await;
    assert_eq!(new.run_id, stolen);
    let before = run_of(&world, stolen).await;
    assert_eq!(
        world
            .finish_run(old, Outcome::Completed(json!("stale")))
            .await
            .unwrap(),
        WriteOutcome::LeaseLost
    );
    let after = run_of(&world, stolen).await;
    assert_eq!(after.status, RunStatus::Running);
    assert_eq!(after.lease_owner.as_deref(), Some("new"));
    assert_eq!(after.lease_epoch, new.epoch);
    assert!(after.output.is_none());
    assert_eq!(after.updated_at, before.updated_at);
}

async fn child_finish_delivers_event_and_wakes_parent(world: Arc<dyn World>) {
    let parent = start(&world, json!("parent")).await;
    let parent_fence = claim_one(&world, "w").await;
    let mut child = NewRun::new(WF, json!("child"));
    child.parent_run_id = Some(parent);
    let child = world.start_run(child).await.unwrap().run_id;
    assert_eq!(run_of(&world, child).await.parent_run_id, Some(parent));
    let key = child_finished_event_key(child);
    assert_eq!(
        world
            .park_run(
                parent_fence,
                Park::Event {
                    key: key.clone(),
                    timeout_at: None
                }
            )
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(run_of(&world, parent).await.status, RunStatus::Waiting);

    let child_fence = claim_one(&world, "w").await;
    assert_eq!(child_fence.run_id, child);
    assert_eq!(
        world
            .finish_run(child_fence, Outcome::Completed(json!({"made": "it"})))
            .await
            .unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(run_of(&world, parent).await.status, RunStatus::Pending);
    let event = world
        .get_event(&key)
        .await
        .unwrap()
        .expect("event delivered");
    assert_eq!(event["status"], "completed");
    assert_eq!(event["output"], json!({"made": "it"}));
    assert!(event["error"].is_null());
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.id, parent);

    // A failed child and a cancelled child tell their parent too.
    let mut failing = NewRun::new(WF, json!("failing child"));
    failing.parent_run_id = Some(parent);
    let failing = world.start_run(failing).await.unwrap().run_id;
    let fence = claim_one(&world, "w").await;
    assert_eq!(fence.run_id, failing);
    world
        .finish_run(fence, Outcome::Failed("child broke".into()))
        .await
        .unwrap();
    let event = world
        .get_event(&child_finished_event_key(failing))
        .await
        .unwrap()
        .expect("event delivered");
    assert_eq!(event["status"], "failed");
    assert_eq!(event["error"], "child broke");

    let mut cancelled = NewRun::new(WF, json!("cancelled child"));
    cancelled.parent_run_id = Some(parent);
    let cancelled = world.start_run(cancelled).await.unwrap().run_id;
    world.cancel_run(cancelled).await.unwrap();
    let event = world
        .get_event(&child_finished_event_key(cancelled))
        .await
        .unwrap()
        .expect("event delivered");
    assert_eq!(event["status"], "cancelled");
}

async fn cancel_run(world: Arc<dyn World>) {
    let pending = start(&world, json!(1)).await;
    world.cancel_run(pending).await.unwrap();
    let run = run_of(&world, pending).await;
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.completed_at.is_some());
    assert!(run.error.is_some());

    match world.cancel_run(pending).await {
        Err(EngineError::InvalidState { run, status, .. }) => {
            assert_eq!(run, pending);
            assert_eq!(status, "cancelled");
        }
        other => panic!("expected InvalidState, got {other:?}"),
    }
    let unknown = RunId::new();
    match world.cancel_run(unknown).await {
        Err(EngineError::RunNotFound(id)) => assert_eq!(id, unknown),
        other => panic!("expected RunNotFound, got {other:?}"),
    }

    let running = start(&world, json!(2)).await;
    let fence = claim_one(&world, "holder").await;
    assert_eq!(fence.run_id, running);
    world.cancel_run(running).await.unwrap();
    let run = run_of(&world, running).await;
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.lease_owner.is_none());
    assert_eq!(
        apply_one(&world, complete(fence, "s", 0, json!(1))).await,
        WriteOutcome::LeaseLost
    );
    assert!(world.load_journal(running).await.unwrap().is_empty());
    assert!(world
        .renew_leases(&[fence], Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert!(claim(&world, "other", 10).await.is_empty());
    assert_eq!(run_of(&world, running).await.status, RunStatus::Cancelled);

    // A parked run can be cancelled too, and no longer wakes.
    let parked = start(&world, json!(3)).await;
    let fence = claim_one(&world, "holder").await;
    world
        .park_run(
            fence,
            Park::Sleep {
                until: Utc::now() + chrono::Duration::milliseconds(50),
            },
        )
        .await
        .unwrap();
    world.cancel_run(parked).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(claim(&world, "other", 10).await.is_empty());
}

async fn resume_failed_run_keeps_completed_steps(world: Arc<dyn World>) {
    let run_id = start(&world, json!({})).await;
    let fence = claim_one(&world, "w").await;
    let outcomes = world
        .apply(vec![
            complete(fence, "a", 0, json!("a-out")),
            fail(fence, "b", 1, 3, None),
            WriteOp::Finish {
                fence,
                outcome: Outcome::Failed("step 'b' failed".into()),
            },
        ])
        .await
        .unwrap();
    assert!(
        outcomes.iter().all(|o| *o == WriteOutcome::Applied),
        "{outcomes:?}"
    );
    assert_eq!(run_of(&world, run_id).await.status, RunStatus::Failed);

    world.resume_run(run_id).await.unwrap();
    let run = run_of(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Pending);
    assert!(run.error.is_none());
    assert!(run.completed_at.is_none());
    let journal = world.load_journal(run_id).await.unwrap();
    assert_eq!(
        journal.len(),
        1,
        "the failed step is forgotten: {journal:?}"
    );
    assert_eq!(journal[0].step_key, "a");
    assert_eq!(journal[0].output, Some(json!("a-out")));

    let fence = claim_one(&world, "w").await;
    assert_eq!(fence.run_id, run_id);
    assert_eq!(fence.epoch, 2);
    world
        .finish_run(fence, Outcome::Completed(json!("done")))
        .await
        .unwrap();
    match world.resume_run(run_id).await {
        Err(EngineError::InvalidState { status, .. }) => assert_eq!(status, "completed"),
        other => panic!("expected InvalidState, got {other:?}"),
    }
    match world.resume_run(RunId::new()).await {
        Err(EngineError::RunNotFound(_)) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }

    // A cancelled run can be resumed as well.
    let cancelled = start(&world, json!({})).await;
    world.cancel_run(cancelled).await.unwrap();
    world.resume_run(cancelled).await.unwrap();
    assert_eq!(run_of(&world, cancelled).await.status, RunStatus::Pending);
}

async fn fork_keeps_steps_before_the_given_step(world: Arc<dyn World>) {
    let source = start(&world, json!({"input": true})).await;
    let fence = claim_one(&world, "w").await;
    world
        .apply(vec![
            complete(fence, "a", 0, json!("A")),
            complete(fence, "b", 1, json!("B")),
            complete(fence, "c", 2, json!("C")),
            WriteOp::Finish {
                fence,
                outcome: Outcome::Completed(json!("out")),
            },
        ])
        .await
        .unwrap();

    let fork = world.fork_run(source, "b").await.unwrap();
    assert_ne!(fork, source);
    let run = run_of(&world, fork).await;
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(run.workflow, WF);
    assert_eq!(run.input, json!({"input": true}));
    assert_eq!(run.metadata["forked_from"], json!(source.to_string()));
    assert_eq!(run.metadata["forked_from_step"], json!("b"));
    assert!(run.idempotency_key.is_none());
    let journal = world.load_journal(fork).await.unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].step_key, "a");
    assert_eq!(journal[0].seq, 0);
    assert_eq!(journal[0].output, Some(json!("A")));
    assert_eq!(
        world.load_journal(source).await.unwrap().len(),
        3,
        "the source is untouched"
    );

    let count = all_runs(&world).await.len();
    match world.fork_run(source, "nope").await {
        Err(EngineError::InvalidState { .. }) => {}
        other => panic!("expected InvalidState for an unknown step, got {other:?}"),
    }
    match world.fork_run(RunId::new(), "a").await {
        Err(EngineError::RunNotFound(_)) => {}
        other => panic!("expected RunNotFound, got {other:?}"),
    }
    assert_eq!(
        all_runs(&world).await.len(),
        count,
        "a refused fork creates no run"
    );
}

async fn renew_and_release_leases(world: Arc<dyn World>) {
    for i in 0..3 {
        start(&world, json!(i)).await;
    }
    let mine_fences: Vec<Fence> = world
        .claim_runs(&request("w", 2, Duration::from_secs(1)))
        .await
        .unwrap()
        .iter()
        .map(fence_of)
        .collect();
    let mine: HashSet<RunId> = mine_fences.iter().map(|f| f.run_id).collect();
    let theirs = claim_one(&world, "x").await;
    assert_eq!(mine.len(), 2);

    let renewed: HashSet<RunId> = world
        .renew_leases(&mine_fences, Duration::from_secs(120))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(renewed, mine);
    for id in &mine {
        let run = run_of(&world, *id).await;
        assert!(run.lease_expires_at.unwrap() > Utc::now() + chrono::Duration::seconds(100));
        assert_eq!(run.lease_epoch, 1, "renewing does not change the epoch");
    }
    let stale = Fence {
        epoch: theirs.epoch - 1,
        ..theirs
    };
    assert!(world
        .renew_leases(&[stale], Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());

    assert_eq!(world.release_leases("w").await.unwrap(), 2);
    for id in &mine {
        let run = run_of(&world, *id).await;
        assert_eq!(run.status, RunStatus::Pending);
        assert!(run.lease_owner.is_none());
        assert!(run.lease_expires_at.is_none());
    }
    let other = run_of(&world, theirs.run_id).await;
    assert_eq!(other.status, RunStatus::Running);
    assert_eq!(other.lease_owner.as_deref(), Some("x"));
    assert!(world
        .renew_leases(&mine_fences, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(world.release_leases("w").await.unwrap(), 0);

    let reclaimed = claim(&world, "y", 10).await;
    let ids: HashSet<RunId> = reclaimed.iter().map(|c| c.run.id).collect();
    assert_eq!(ids, mine);
    assert!(reclaimed.iter().all(|c| c.run.lease_epoch == 2));
}

async fn logs_query_filters_and_cursor(world: Arc<dyn World>) {
    start(&world, json!(1)).await;
    start(&world, json!(2)).await;
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 2);
    let fences = [fence_of(&claimed[0]), fence_of(&claimed[1])];
    let runs = [fences[0].run_id, fences[1].run_id];
    let base = (Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(6);
    let ts = |i: usize| base + chrono::Duration::seconds(i as i64);

    // (run index, step, level, message)
    let mut lines: Vec<(usize, Option<&str>, LogLevel, String)> = vec![
        (0, Some("s1"), LogLevel::Info, "disk almost full".into()),
        (0, Some("s1"), LogLevel::Debug, "cpu fine".into()),
        (0, Some("s2"), LogLevel::Warn, "full almost disk".into()),
        (0, None, LogLevel::Error, "run failed badly".into()),
        (1, Some("s1"), LogLevel::Info, "CPU Fine".into()),
    ];
    let levels = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];
    for i in 5..20 {
        let step = ["s1", "s2", "s3"][i % 3];
        lines.push((i % 2, Some(step), levels[i % 5], format!("tick {i}")));
    }
    let ops = lines
        .iter()
        .enumerate()
        .map(|(i, (run, step, level, message))| log_op(fences[*run], *step, *level, message, ts(i)))
        .collect();
    let outcomes = world.apply(ops).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == WriteOutcome::Applied));

    let messages = |records: &[morpheus_engine::LogRecord]| -> Vec<String> {
        records.iter().map(|r| r.message.clone()).collect()
    };
    let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..lines.len())
            .filter(|i| keep(*i))
            .map(|i| lines[i].3.clone())
            .collect()
    };
    let query = |q: LogQuery| {
        let world = world.clone();
        async move { world.query_logs(&q).await.expect("query_logs") }
    };

    // Everything, in emission order, with every field kept.
    let all = query(LogQuery::default()).await;
    assert_eq!(messages(&all), expect(&|_| true));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[0].run_id, runs[0]);
    assert_eq!(all[0].step_key.as_deref(), Some("s1"));
    assert_eq!(all[0].attempt, Some(1));
    assert_eq!(all[0].level, LogLevel::Info);
    assert_eq!(all[0].fields, Some(json!({"n": 16})));
    assert_eq!(all[0].ts, ts(0));
    assert_eq!(all[3].step_key, None);
    assert_eq!(all[3].attempt, None);

    let by_run = query(LogQuery {
        run_id: Some(runs[1]),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&by_run), expect(&|i| lines[i].0 == 1));

    let by_step = query(LogQuery {
        run_id: Some(runs[0]),
        step_key: Some("s1".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&by_step),
        expect(&|i| lines[i].0 == 0 && lines[i].1 == Some("s1"))
    );

    let warn_up = query(LogQuery {
        min_level: Some(LogLevel::Warn),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&warn_up),
        expect(&|i| lines[i].2 >= LogLevel::Warn)
    );

    let phrase = query(LogQuery {
        text: Some("almost full".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&phrase), vec!["disk almost full".to_owned()]);
    let phrase_upper = query(LogQuery {
        text: Some("ALMOST FULL".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&phrase_upper), vec!["disk almost full".to_owned()]);
    let word = query(LogQuery {
        text: Some("fine".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&word),
        vec!["cpu fine".to_owned(), "CPU Fine".to_owned()]
    );
    let word_in_run = query(LogQuery {
        run_id: Some(runs[1]),
        text: Some("fine".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&word_in_run), vec!["CPU Fine".to_owned()]);
    let quoted = query(LogQuery {
        text: Some("\"almost".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&quoted).len(),
        2,
        "a stray quote is matched as text, not syntax"
    );

    let window = query(LogQuery {
        since: Some(ts(5)),
        until: Some(ts(10)),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&window), expect(&|i| (5..10).contains(&i)));

    let page = query(LogQuery {
        run_id: Some(runs[0]),
        offset: 2,
        limit: Some(3),
        ..LogQuery::default()
    })
    .await;
    let run0 = expect(&|i| lines[i].0 == 0);
    assert_eq!(messages(&page), run0[2..5].to_vec());

    // Keyset paging visits every line once, in id order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let batch = query(LogQuery {
            after_id: after,
            limit: Some(3),
            ..LogQuery::default()
        })
        .await;
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 3);
        after = Some(batch.last().unwrap().id);
        seen.extend(batch);
    }
    let seen_ids: Vec<i64> = seen.iter().map(|r| r.id).collect();
    let all_ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(seen_ids, all_ids);
}

async fn list_runs_filters_by_status_and_workflow_newest_first(world: Arc<dyn World>) {
    let mut started = Vec::new();
    for (i, workflow) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        let id = world
            .start_run(NewRun::new(*workflow, json!(i)))
            .await
            .unwrap()
            .run_id;
        started.push(id);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let newest_first: Vec<RunId> = started.iter().rev().copied().collect();
    let ids = |runs: Vec<morpheus_engine::RunRecord>| -> Vec<RunId> {
        runs.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(all_runs(&world).await), newest_first);

    let only_a = world
        .list_runs(&RunFilter {
            workflow: Some("a".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(only_a), vec![started[4], started[2], started[0]]);

    // Finish the oldest "a" run.
    let claimed = world
        .claim_runs(&ClaimRequest {
            workflows: vec![("a".into(), 1)],
            ..request("w", 1, Duration::from_secs(30))
        })
        .await
        .unwrap();
    let fence = fence_of(&claimed[0]);
    world
        .finish_run(fence, Outcome::Completed(json!(null)))
        .await
        .unwrap();

    let completed = world
        .list_runs(&RunFilter {
            status: Some(RunStatus::Completed),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(completed), vec![fence.run_id]);
    let pending_a = world
        .list_runs(&RunFilter {
            status: Some(RunStatus::Pending),
            workflow: Some("a".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending_a.len(), 2);
    assert!(pending_a
        .iter()
        .all(|r| r.workflow == "a" && r.status == RunStatus::Pending));
    assert!(!pending_a.iter().any(|r| r.id == fence.run_id));
    let limited = world
        .list_runs(&RunFilter {
            limit: Some(2),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(limited), newest_first[..2].to_vec());
    let none = world
        .list_runs(&RunFilter {
            workflow: Some("zzz".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // count_runs applies the same filters and ignores the limit.
    let count = |status: Option<RunStatus>, workflow: Option<&str>| {
        let world = world.clone();
        let filter = RunFilter {
            status,
            workflow: workflow.map(str::to_owned),
            limit: Some(1),
        };
        async move { world.count_runs(&filter).await.expect("count_runs") }
    };
    assert_eq!(count(None, None).await, 5);
    assert_eq!(count(None, Some("a")).await, 3);
    assert_eq!(count(Some(RunStatus::Pending), Some("a")).await, 2);
    assert_eq!(count(Some(RunStatus::Completed), None).await, 1);
    assert_eq!(count(Some(RunStatus::Failed), None).await, 0);
}

async fn schema_newer_than_binary_is_refused(url: String) {
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let connect = || async {
        match backend {
            Backend::Sqlite => morpheus_engine::sqlite::SqliteWorld::connect(&url)
                .await
                .map(|w| Arc::new(w) as Arc<dyn World>),
            Backend::Postgres => {
                morpheus_engine::postgres::PostgresWorld::connect(&url, common::PG_MAX_CONNECTIONS)
                    .await
                    .map(|w| Arc::new(w) as Arc<dyn World>)
            }
        }
    };
    // First connection migrates; connecting again to the same schema is fine.
    let world = connect().await.expect("first connect");
    start(&world, json!("kept")).await;
    drop(world);
    let world = connect().await.expect("second connect");
    drop(world);

    match backend {
        Backend::Sqlite => {
            let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
                 VALUES (9999, 'from the future', CURRENT_TIMESTAMP, 1, X'00', 0)",
            )
            .execute(&mut raw)
            .await
            .unwrap();
            raw.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
                 VALUES (9999, 'from the future', now(), true, '\\x00'::bytea, 0)",
            )
            .execute(&mut raw)
            .await
            .unwrap();
            raw.close().await.unwrap();
        }
    }
    common::assert_schema_too_new(connect().await);
    common::assert_schema_too_new(morpheus_engine::connect(&url).await);
}

async fn prune_deletes_only_old_finished_runs_in_batches(world: Arc<dyn World>) {
    // Five finished runs with a step and a log line each, one parked, one running.
    let mut finished = Vec::new();
    for index in 0..5 {
        let run_id = start(&world, json!({ "finished": index })).await;
        let fence = claim_one(&world, "pruner-test").await;
        assert_eq!(fence.run_id, run_id);
        let outcomes = world
            .apply(vec![
                complete(fence, "a", 0, json!(index)),
                WriteOp::Log {
                    fence,
                    log: NewLog {
                        run_id,
                        step_key: Some("a".into()),
                        attempt: Some(1),
                        level: LogLevel::Info,
                        message: format!("line {index}"),
                        fields: None,
                        ts: Utc::now(),
                    },
                },
                WriteOp::Finish {
                    fence,
                    outcome: Outcome::Completed(json!(index)),
                },
            ])
            .await
            .expect("apply");
        assert!(outcomes.iter().all(|o| *o == WriteOutcome::Applied));
        finished.push(run_id);
    }
    let parked = start(&world, json!({"parked": true})).await;
    let parked_fence = claim_one(&world, "pruner-test").await;
    assert_eq!(parked_fence.run_id, parked);
    let outcome = apply_one(
        &world,
        WriteOp::Park {
            fence: parked_fence,
            park: Park::Sleep {
                until: Utc::now() + chrono::Duration::hours(1),
            },
        },
    )
    .await;
    assert_eq!(outcome, WriteOutcome::Applied);
    let running = start(&world, json!({"running": true})).await;
    let running_fence = claim_one(&world, "pruner-test").await;
    assert_eq!(running_fence.run_id, running);

    // A cutoff in the past removes nothing.
    let past = Utc::now() - chrono::Duration::hours(1);
    let report = world.prune_finished(past, 2, false).await.expect("prune");
    assert_eq!(report.runs, 0);
    assert_eq!(all_runs(&world).await.len(), 7);

    // A dry run counts without deleting.
    let future = Utc::now() + chrono::Duration::seconds(1);
    let dry = world
        .prune_finished(future, 2, true)
        .await
        .expect("dry run");
    assert_eq!((dry.runs, dry.steps, dry.logs), (5, 5, 5));
    assert_eq!(all_runs(&world).await.len(), 7);

    // The real pass deletes the five finished runs, two per batch.
    let report = world.prune_finished(future, 2, false).await.expect("prune");
    assert_eq!((report.runs, report.steps, report.logs), (5, 5, 5));
    assert_eq!(report.batches, 3);
    let remaining: HashSet<RunId> = all_runs(&world).await.iter().map(|r| r.id).collect();
    assert_eq!(remaining, HashSet::from([parked, running]));
    for run_id in finished {
        assert!(world.load_journal(run_id).await.unwrap().is_empty());
        let logs = world
            .query_logs(&LogQuery {
                run_id: Some(run_id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(logs.is_empty());
    }
    // The running run's holder can still write.
    let outcome = apply_one(&world, complete(running_fence, "a", 0, json!(1))).await;
    assert_eq!(outcome, WriteOutcome::Applied);
}

async fn claim_orders_by_priority_then_due_time(world: Arc<dyn World>) {
    let low = world
        .start_run(NewRun::new(WF, json!("low")))
        .await
        .unwrap()
        .run_id;
    let high = world
        .start_run(NewRun::new(WF, json!("high")).priority(10))
        .await
        .unwrap()
        .run_id;
    let middle = world
        .start_run(NewRun::new(WF, json!("middle")).priority(5))
        .await
        .unwrap()
        .run_id;
    let order: Vec<RunId> = {
        let mut order = Vec::new();
        for _ in 0..3 {
            let claimed = claim(&world, "prio", 1).await;
            assert_eq!(claimed.len(), 1);
            order.push(claimed[0].run.id);
        }
        order
    };
    assert_eq!(order, vec![high, middle, low]);
}

async fn claim_only_from_requested_queues(world: Arc<dyn World>) {
    let billing = world
        .start_run(NewRun::new(WF, json!(1)).queue("billing"))
        .await
        .unwrap()
        .run_id;
    let default = start(&world, json!(2)).await;
    let only_billing = ClaimRequest {
        queues: Some(vec!["billing".into()]),
        ..request("q", 10, Duration::from_secs(30))
    };
    let claimed = world.claim_runs(&only_billing).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        vec![billing]
    );
    assert_eq!(claimed[0].run.queue, "billing");
    let rest = claim(&world, "any", 10).await;
    assert_eq!(
        rest.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        vec![default]
    );
}

async fn queue_concurrency_limit_holds_across_concurrent_claimers(world: Arc<dyn World>) {
    world.set_queue_limit("deploys", Some(3)).await.unwrap();
    for index in 0..20 {
        world
            .start_run(NewRun::new(WF, json!(index)).queue("deploys"))
            .await
            .unwrap();
    }
    for index in 0..5 {
        start(&world, json!({ "unlimited": index })).await;
    }
    // Eight claimers at once, each asking for plenty.
    let claims = (0..8).map(|worker| {
        let world = world.clone();
        async move { claim(&world, &format!("w{worker}"), 10).await }
    });
    let claimed: Vec<ClaimedRun> = futures::future::join_all(claims)
        .await
        .into_iter()
        .flatten()
        .collect();
    let deploys: Vec<&ClaimedRun> = claimed
        .iter()
        .filter(|c| c.run.queue == "deploys")
        .collect();
    assert_eq!(deploys.len(), 3, "limit 3 must hold across claimers");
    assert_eq!(
        claimed.len() - deploys.len(),
        5,
        "unlimited queue is not held back"
    );
    let queues = world.list_queues().await.unwrap();
    let info = queues.iter().find(|q| q.name == "deploys").unwrap();
    assert_eq!(
        (info.concurrency_limit, info.running, info.queued),
        (Some(3), 3, 17)
    );

    // Finishing one frees exactly one slot.
    let fence = fence_of(deploys[0]);
    let outcome = apply_one(
        &world,
        WriteOp::Finish {
            fence,
            outcome: Outcome::Completed(json!(null)),
        },
    )
    .await;
    assert_eq!(outcome, WriteOutcome::Applied);
    let next = claim(&world, "after", 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].run.queue, "deploys");

    // Removing the limit lets the rest go.
    world.set_queue_limit("deploys", None).await.unwrap();
    let rest = claim(&world, "unlimited", 100).await;
    assert_eq!(rest.len(), 16);
}

async fn a_run_parked_for_a_retry_keeps_its_queue_slot(world: Arc<dyn World>) {
    world.set_queue_limit("pipeline", Some(1)).await.unwrap();
    let in_queue = |input: Value| NewRun::new(WF, input).queue("pipeline");
    let first = world
        .start_run(in_queue(json!("first")))
        .await
        .unwrap()
        .run_id;
    let second = world
        .start_run(in_queue(json!("second")))
        .await
        .unwrap()
        .run_id;
    let ids = |claimed: &[ClaimedRun]| claimed.iter().map(|c| c.run.id).collect::<Vec<_>>();

    let claimed = claim(&world, "w", 10).await;
    assert_eq!(ids(&claimed), vec![first]);
    let at = Utc::now() + chrono::Duration::milliseconds(300);
    let parked = world
        .park_run(fence_of(&claimed[0]), Park::Retry { at })
        .await
        .unwrap();
    assert_eq!(parked, WriteOutcome::Applied);
    assert_eq!(run_of(&world, first).await.status, RunStatus::Retrying);
    assert!(
        claim(&world, "w", 10).await.is_empty(),
        "the run parked for a retry still holds the only slot"
    );
    let queues = world.list_queues().await.unwrap();
    let info = queues.iter().find(|q| q.name == "pipeline").unwrap();
    assert_eq!(
        (
            info.concurrency_limit,
            info.running,
            info.retrying,
            info.queued
        ),
        (Some(1), 0, 1, 1)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(ids(&claimed), vec![first], "the due retry comes back first");
    let outcome = apply_one(
        &world,
        WriteOp::Finish {
            fence: fence_of(&claimed[0]),
            outcome: Outcome::Completed(json!(null)),
        },
    )
    .await;
    assert_eq!(outcome, WriteOutcome::Applied);

    // A sleeping run gives its slot back until it is due.
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(ids(&claimed), vec![second]);
    let until = Utc::now() + chrono::Duration::hours(1);
    let parked = world
        .park_run(fence_of(&claimed[0]), Park::Sleep { until })
        .await
        .unwrap();
    assert_eq!(parked, WriteOutcome::Applied);
    let third = world
        .start_run(in_queue(json!("third")))
        .await
        .unwrap()
        .run_id;
    assert_eq!(ids(&claim(&world, "w", 10).await), vec![third]);
    world.set_queue_limit("pipeline", None).await.unwrap();
}

for_each_backend!(
    claim_orders_by_priority_then_due_time,
    claim_only_from_requested_queues,
    queue_concurrency_limit_holds_across_concurrent_claimers,
    a_run_parked_for_a_retry_keeps_its_queue_slot,
    prune_deletes_only_old_finished_runs_in_batches,
    start_run_is_idempotent_on_key,
    claim_takes_each_run_once_and_bumps_epoch,
    concurrent_claims_never_share_a_run,
    claim_ignores_unregistered_workflows_and_versions,
    expired_lease_is_reclaimed_with_higher_epoch_and_stale_writes_are_rejected,
    first_step_completion_wins,
    failed_attempt_records_next_attempt_and_final_failure,
    step_output_is_absent_until_completed,
    park_sleep_then_claim_only_when_due,
    park_for_event_wakes_on_send_event,
    park_for_event_that_already_arrived_goes_pending,
    event_wait_timeout_makes_run_due,
    finish_run_completed_and_failed,
    child_finish_delivers_event_and_wakes_parent,
    cancel_run,
    resume_failed_run_keeps_completed_steps,
    fork_keeps_steps_before_the_given_step,
    renew_and_release_leases,
    logs_query_filters_and_cursor,
    list_runs_filters_by_status_and_workflow_newest_first,
    schema_newer_than_binary_is_refused,
);
