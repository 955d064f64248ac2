//! Events: a run parked for an event wakes on `send_event` (or goes pending at once when
//! the event already arrived), an event wait's timeout makes the run due, and a child run
//! that finishes delivers its result to its parent and wakes it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{
    child_finished_event_key, NewRun, Outcome, Park, RunStatus, World, WriteOutcome,
};
use serde_json::json;

use crate::{claim, claim_one, close_to, registered, run_of, start, WF};

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

for_each_backend!(
    park_for_event_wakes_on_send_event,
    park_for_event_that_already_arrived_goes_pending,
    event_wait_timeout_makes_run_due,
    child_finish_delivers_event_and_wakes_parent,
);
