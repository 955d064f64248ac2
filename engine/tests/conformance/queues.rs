//! Queues: `set_queue_limit` caps the runs of a queue in flight across every claimer, a
//! run parked for a retry keeps its slot, and `list_queues` counts both.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{
    ClaimedRun, NewRun, Outcome, Park, QueueDepth, RunStatus, World, WriteOp, WriteOutcome,
};
use serde_json::{json, Value};

use crate::{apply_one, claim, fence_of, run_of, start, WF};

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

async fn queue_depths_count_unfinished_runs_by_queue_and_state(world: Arc<dyn World>) {
    assert!(world.queue_depths().await.unwrap().is_empty());
    for index in 0..4 {
        world
            .start_run(NewRun::new(WF, json!(index)).queue("builds"))
            .await
            .unwrap();
    }
    start(&world, json!("default queue")).await;
    // Claimed most urgent first: take all five, then put them in different states.
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 5);
    let builds: Vec<&ClaimedRun> = claimed.iter().filter(|c| c.run.queue == "builds").collect();
    let later = Utc::now() + chrono::Duration::hours(1);
    let park = |claimed: &ClaimedRun, park: Park| {
        let world = world.clone();
        let fence = fence_of(claimed);
        async move { world.park_run(fence, park).await.unwrap() }
    };
    assert_eq!(
        park(builds[0], Park::Sleep { until: later }).await,
        WriteOutcome::Applied
    );
    assert_eq!(
        park(builds[1], Park::Retry { at: later }).await,
        WriteOutcome::Applied
    );
    let finished = apply_one(
        &world,
        WriteOp::Finish {
            fence: fence_of(builds[2]),
            outcome: Outcome::Completed(json!(null)),
        },
    )
    .await;
    assert_eq!(finished, WriteOutcome::Applied);
    world
        .start_run(NewRun::new(WF, json!("waiting")).queue("builds"))
        .await
        .unwrap();
    let depth = |queue: &str, status: RunStatus, runs: u64| QueueDepth {
        queue: queue.to_owned(),
        status,
        runs,
    };
    assert_eq!(
        world.queue_depths().await.unwrap(),
        vec![
            depth("builds", RunStatus::Pending, 1),
            depth("builds", RunStatus::Retrying, 1),
            depth("builds", RunStatus::Running, 1),
            depth("builds", RunStatus::Sleeping, 1),
            depth("default", RunStatus::Running, 1),
        ],
        "the completed run is not counted; states without runs are absent"
    );
}

for_each_backend!(
    queue_concurrency_limit_holds_across_concurrent_claimers,
    a_run_parked_for_a_retry_keeps_its_queue_slot,
    queue_depths_count_unfinished_runs_by_queue_and_state,
);
