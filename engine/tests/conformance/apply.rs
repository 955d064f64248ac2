//! `apply`: the journal writes of a lease holder. A step's first completion wins, failed
//! attempts record when the next one is due, outputs exist only once completed, a parked
//! run is claimable only when due, and a finished run keeps its outcome.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{
    LogLevel, LogQuery, Outcome, Park, RunStatus, StepStatus, World, WriteOp, WriteOutcome,
};
use serde_json::{json, Value};

use crate::{
    apply_one, claim, claim_one, close_to, complete, fail, fence_of, log_op, registered, request,
    run_of, start,
};

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

/// One batch carrying a run's step, its last log line and its finish, beside the write
/// of a holder whose lease was taken over: the held run's three writes all land (the
/// line too, although the run finishes in the same transaction), the stale write is
/// refused, and the same batch without the stale write lands whole as well.
async fn a_batch_mixes_finishing_runs_with_a_lost_lease(world: Arc<dyn World>) {
    let stolen = start(&world, json!("stolen")).await;
    let first = world
        .claim_runs(&request("old", 1, Duration::from_millis(50)))
        .await
        .unwrap();
    let old = fence_of(&first[0]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(claim_one(&world, "new").await.run_id, stolen);

    for (round, with_stale) in [(0, true), (1, false)] {
        let done = start(&world, json!(round)).await;
        let fence = claim_one(&world, "w").await;
        assert_eq!(fence.run_id, done);
        let mut ops = vec![
            complete(fence, "only", 0, json!(round)),
            log_op(
                fence,
                Some("only"),
                LogLevel::Info,
                "last words",
                Utc::now(),
            ),
            WriteOp::Finish {
                fence,
                outcome: Outcome::Completed(json!({"round": round})),
            },
        ];
        if with_stale {
            ops.insert(1, complete(old, "late", 0, json!("stale")));
        }
        let outcomes = world.apply(ops).await.unwrap();
        let mut expected = vec![WriteOutcome::Applied; 3];
        if with_stale {
            expected.insert(1, WriteOutcome::LeaseLost);
        }
        assert_eq!(outcomes, expected, "round {round}");
        let run = run_of(&world, done).await;
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.output, Some(json!({"round": round})));
        let journal = world.load_journal(done).await.unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].output, Some(json!(round)));
        let logs = world
            .query_logs(&LogQuery {
                run_id: Some(done),
                ..LogQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].message, "last words");
        assert_eq!(logs[0].fields, Some(json!({"n": 10})));
    }
    assert!(world.load_journal(stolen).await.unwrap().is_empty());
}

for_each_backend!(
    a_batch_mixes_finishing_runs_with_a_lost_lease,
    first_step_completion_wins,
    failed_attempt_records_next_attempt_and_final_failure,
    step_output_is_absent_until_completed,
    park_sleep_then_claim_only_when_due,
    finish_run_completed_and_failed,
);
