//! Runs as records: `start_run` (idempotent on its key), `cancel_run`, `resume_run`,
//! `fork_run`, `get_run`/`list_runs`/`count_runs`, and `prune_finished`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{
    ClaimRequest, EngineError, LogLevel, LogQuery, NewLog, NewRun, Outcome, Park, RunFilter, RunId,
    RunStatus, World, WriteOp, WriteOutcome,
};
use serde_json::json;

use crate::{
    all_runs, apply_one, claim, claim_one, complete, fail, fence_of, request, run_of, start, WF,
};

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
            ..RunFilter::default()
        };
        async move { world.count_runs(&filter).await.expect("count_runs") }
    };
    assert_eq!(count(None, None).await, 5);
    assert_eq!(count(None, Some("a")).await, 3);
    assert_eq!(count(Some(RunStatus::Pending), Some("a")).await, 2);
    assert_eq!(count(Some(RunStatus::Completed), None).await, 1);
    assert_eq!(count(Some(RunStatus::Failed), None).await, 0);
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

async fn list_runs_filters_by_queue_and_time_and_pages_by_keyset(world: Arc<dyn World>) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let queue = if i % 2 == 0 { "even" } else { "odd" };
        let started = world
            .start_run(NewRun::new(crate::WF, json!(i)).queue(queue))
            .await
            .unwrap();
        ids.push(started.run_id);
    }
    let all = world
        .list_runs(&RunFilter {
            limit: Some(100),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    let even = world
        .list_runs(&RunFilter {
            queue: Some("even".into()),
            limit: Some(100),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(even.len(), 4);
    assert!(even.iter().all(|run| run.queue == "even"));
    let counted = world
        .count_runs(&RunFilter {
            queue: Some("odd".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(counted, 3);

    // Pages of two, each starting after the previous page's last run, visit every run
    // once in list order.
    let mut paged = Vec::new();
    let mut older_than = None;
    loop {
        let page = world
            .list_runs(&RunFilter {
                older_than,
                limit: Some(2),
                ..RunFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        older_than = Some((last.created_at, last.id));
        paged.extend(page.into_iter().map(|run| run.id));
    }
    assert_eq!(paged, all.iter().map(|run| run.id).collect::<Vec<_>>());

    // Time bounds: after the newest creation time nothing; before the oldest nothing.
    let newest = all.first().unwrap().created_at;
    let oldest = all.last().unwrap().created_at;
    let window = |after: Option<chrono::DateTime<Utc>>, before: Option<chrono::DateTime<Utc>>| {
        let world = world.clone();
        async move {
            world
                .list_runs(&RunFilter {
                    created_after: after,
                    created_before: before,
                    limit: Some(100),
                    ..RunFilter::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(
        window(Some(newest + chrono::Duration::seconds(1)), None).await,
        0
    );
    assert_eq!(window(None, Some(oldest)).await, 0);
    assert_eq!(
        window(Some(oldest), Some(newest + chrono::Duration::seconds(1))).await,
        7
    );
}

for_each_backend!(
    start_run_is_idempotent_on_key,
    cancel_run,
    resume_failed_run_keeps_completed_steps,
    fork_keeps_steps_before_the_given_step,
    list_runs_filters_by_status_and_workflow_newest_first,
    list_runs_filters_by_queue_and_time_and_pages_by_keyset,
    prune_deletes_only_old_finished_runs_in_batches,
);
