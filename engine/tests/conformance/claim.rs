//! `claim_runs`: which due runs a worker gets (once each, by priority then due time, only
//! from the requested queues, only of workflows it registered), and the leases that come
//! with them: an expired lease is reclaimed with a higher epoch and the old holder's writes
//! are refused (fencing); `renew_leases` and `release_leases`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{
    ClaimRequest, Fence, LogLevel, LogQuery, NewRun, Outcome, RunId, RunStatus, World, WriteOp,
    WriteOutcome,
};
use serde_json::json;

use crate::{
    all_runs, apply_one, claim, claim_one, complete, fence_of, log_op, request, run_of, start, WF,
};

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

for_each_backend!(
    claim_takes_each_run_once_and_bumps_epoch,
    concurrent_claims_never_share_a_run,
    claim_ignores_unregistered_workflows_and_versions,
    claim_orders_by_priority_then_due_time,
    claim_only_from_requested_queues,
    expired_lease_is_reclaimed_with_higher_epoch_and_stale_writes_are_rejected,
    renew_and_release_leases,
);
