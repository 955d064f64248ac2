//! Schedules: one run per tick however many schedulers fire at once, overlap and catch-up
//! policies, pause/resume, config sync, bad definitions that store nothing, the heartbeat
//! outbox following finished scheduled runs, and due
//! schedules of workflows this process does not know never hiding the ones it does. Time is
//! passed explicitly (`fire_due_schedules(now, …)`), so the tests are exact rather than
//! timed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use morpheus_engine::{
    CatchUp, ClaimRequest, EngineError, Fence, Outcome, Overlap, RunStatus, ScheduleSpec, Trigger,
    World, WriteOp, WriteOutcome,
};
use serde_json::json;

use crate::{registered, WF};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn every_10s(name: &str, overlap: Overlap, catch_up: CatchUp) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_owned(),
        workflow: WF.to_owned(),
        input: json!({"from": name}),
        trigger: Trigger::every(Duration::from_secs(10)).unwrap(),
        overlap,
        catch_up,
        queue: "default".into(),
        priority: 0,
        heartbeat_url: None,
    }
}

async fn finish(world: &Arc<dyn World>, run_id: morpheus_engine::RunId) {
    let claimed = world
        .claim_runs(&ClaimRequest {
            owner: "finisher".into(),
            limit: 100,
            lease_ttl: Duration::from_secs(30),
            workflows: registered(),
            queues: None,
        })
        .await
        .unwrap();
    let run = claimed
        .iter()
        .find(|c| c.run.id == run_id)
        .expect("the run is claimable");
    let outcome = world
        .apply_one(WriteOp::Finish {
            fence: Fence {
                run_id,
                epoch: run.run.lease_epoch,
            },
            outcome: Outcome::Completed(json!(null)),
        })
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Applied);
    world.release_leases("finisher").await.unwrap();
}

async fn concurrent_schedulers_start_exactly_one_run_per_tick(world: Arc<dyn World>) {
    let spec = every_10s("tick", Overlap::Allow, CatchUp::RunAll);
    world
        .add_schedule(&spec, at("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    // Eight schedulers wake at 00:00:35: ticks 00, 10, 20, 30 are due.
    let now = at("2026-01-01T00:00:35Z");
    let schedulers = (0..8).map(|_| {
        let world = world.clone();
        async move { world.fire_due_schedules(now, &registered()).await.unwrap() }
    });
    let fired: Vec<_> = futures::future::join_all(schedulers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let ticks: HashSet<DateTime<Utc>> = fired.iter().map(|f| f.tick).collect();
    assert_eq!(ticks.len(), 4);
    let runs = world.schedule_runs("tick", 100).await.unwrap();
    assert_eq!(runs.len(), 4, "exactly one run per tick: {fired:?}");
    let run_ids: HashSet<_> = fired.iter().map(|f| f.run_id).collect();
    assert_eq!(run_ids.len(), 4, "a tick reported twice names the same run");
    assert!(runs.iter().all(|r| r.input == json!({"from": "tick"})));
    assert!(runs.iter().all(|r| r.metadata["schedule"] == "tick"));

    // Firing again at the same time starts nothing; the next tick is 00:00:40.
    assert!(world
        .fire_due_schedules(now, &registered())
        .await
        .unwrap()
        .is_empty());
    let schedule = world.get_schedule("tick").await.unwrap().unwrap();
    assert_eq!(schedule.next_fire_at, at("2026-01-01T00:00:40Z"));
    assert_eq!(schedule.last_fire_at, Some(at("2026-01-01T00:00:30Z")));
}

async fn schedules_of_unknown_workflows_wait_for_a_worker_that_has_them(world: Arc<dyn World>) {
    let mut spec = every_10s("other", Overlap::Allow, CatchUp::RunOnce);
    spec.workflow = "elsewhere".into();
    world
        .add_schedule(&spec, at("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let fired = world
        .fire_due_schedules(at("2026-01-01T00:00:05Z"), &registered())
        .await
        .unwrap();
    assert!(fired.is_empty());
    let schedule = world.get_schedule("other").await.unwrap().unwrap();
    assert_eq!(
        schedule.next_fire_at,
        at("2026-01-01T00:00:00Z"),
        "still due"
    );
}

/// A scheduler reads due schedules a batch at a time; schedules of workflows it does not
/// know must not fill that batch and hide the due schedule of one it does (written when
/// SQLite read 100 due schedules without the workflow filter Postgres applies).
async fn many_due_schedules_of_unknown_workflows_do_not_hide_a_known_one(world: Arc<dyn World>) {
    for index in 0..120 {
        let mut unknown = every_10s(
            &format!("unknown-{index:03}"),
            Overlap::Allow,
            CatchUp::RunOnce,
        );
        unknown.workflow = "elsewhere".into();
        world
            .add_schedule(&unknown, at("2026-01-01T00:00:00Z"))
            .await
            .unwrap();
    }
    // Due after all of them, so it comes last in due order.
    let known = every_10s("known", Overlap::Allow, CatchUp::RunOnce);
    world
        .add_schedule(&known, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap();
    let fired = world
        .fire_due_schedules(at("2026-01-01T00:00:15Z"), &[(WF.to_owned(), 1)])
        .await
        .unwrap();
    assert_eq!(fired.len(), 1, "the known schedule fires: {fired:?}");
    assert_eq!(fired[0].schedule, "known");
    assert_eq!(fired[0].tick, at("2026-01-01T00:00:10Z"));
    let runs = world.schedule_runs("known", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, fired[0].run_id);
    assert_eq!(runs[0].workflow, WF);
    // The unknown ones are still due, for a worker that has their workflow.
    let unknown = world.get_schedule("unknown-000").await.unwrap().unwrap();
    assert_eq!(unknown.next_fire_at, at("2026-01-01T00:00:00Z"));
    assert_eq!(unknown.last_run_id, None);
}

async fn overlap_skip_waits_for_the_previous_run(world: Arc<dyn World>) {
    let spec = every_10s("skip", Overlap::Skip, CatchUp::SkipMissed);
    world
        .add_schedule(&spec, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap();
    let first = world
        .fire_due_schedules(at("2026-01-01T00:00:10Z"), &registered())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The first run is still pending at the next tick: skipped.
    let second = world
        .fire_due_schedules(at("2026-01-01T00:00:20Z"), &registered())
        .await
        .unwrap();
    assert!(second.is_empty());
    finish(&world, first[0].run_id).await;
    let third = world
        .fire_due_schedules(at("2026-01-01T00:00:30Z"), &registered())
        .await
        .unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].tick, at("2026-01-01T00:00:30Z"));
    assert_eq!(world.schedule_runs("skip", 10).await.unwrap().len(), 2);
}

async fn overlap_queue_one_starts_the_waiting_tick_when_the_previous_ends(world: Arc<dyn World>) {
    let spec = every_10s("queue", Overlap::QueueOne, CatchUp::SkipMissed);
    world
        .add_schedule(&spec, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap();
    let first = world
        .fire_due_schedules(at("2026-01-01T00:00:10Z"), &registered())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    for tick in ["2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z"] {
        assert!(world
            .fire_due_schedules(at(tick), &registered())
            .await
            .unwrap()
            .is_empty());
    }
    let waiting = world.get_schedule("queue").await.unwrap().unwrap();
    assert_eq!(waiting.queued_tick, Some(at("2026-01-01T00:00:30Z")));
    finish(&world, first[0].run_id).await;
    // Between ticks, the waiting one starts as soon as a scheduler looks.
    let started = world
        .fire_due_schedules(at("2026-01-01T00:00:33Z"), &registered())
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].tick, at("2026-01-01T00:00:30Z"));
    let after = world.get_schedule("queue").await.unwrap().unwrap();
    assert_eq!(after.queued_tick, None);
    assert_eq!(world.schedule_runs("queue", 10).await.unwrap().len(), 2);
}

async fn catch_up_skip_missed_after_downtime_fires_nothing_stale(world: Arc<dyn World>) {
    let spec = every_10s("late", Overlap::Allow, CatchUp::SkipMissed);
    world
        .add_schedule(&spec, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap();
    // Down for an hour; the latest tick (01:00:00) is 5 s old: it fires, the rest not.
    let fired = world
        .fire_due_schedules(at("2026-01-01T01:00:05Z"), &registered())
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].tick, at("2026-01-01T01:00:00Z"));
}

async fn paused_schedules_do_not_fire_and_resume_from_the_next_tick(world: Arc<dyn World>) {
    let spec = every_10s("p", Overlap::Allow, CatchUp::RunAll);
    world
        .add_schedule(&spec, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap();
    world
        .set_schedule_paused("p", true, at("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert!(world
        .fire_due_schedules(at("2026-01-01T00:05:00Z"), &registered())
        .await
        .unwrap()
        .is_empty());
    world
        .set_schedule_paused("p", false, at("2026-01-01T00:05:10Z"))
        .await
        .unwrap();
    let fired = world
        .fire_due_schedules(at("2026-01-01T00:05:10Z"), &registered())
        .await
        .unwrap();
    assert_eq!(fired.len(), 1, "no catch-up of ticks during the pause");
    assert!(matches!(
        world.set_schedule_paused("missing", true, Utc::now()).await,
        Err(EngineError::ScheduleNotFound(_))
    ));
}

async fn bad_and_duplicate_definitions_store_nothing(world: Arc<dyn World>) {
    let spec = every_10s("dup", Overlap::Skip, CatchUp::SkipMissed);
    world.add_schedule(&spec, Utc::now()).await.unwrap();
    let mut other = spec.clone();
    other.input = json!({"different": true});
    assert!(matches!(
        world.add_schedule(&other, Utc::now()).await,
        Err(EngineError::ScheduleExists(name)) if name == "dup"
    ));
    let stored = world.get_schedule("dup").await.unwrap().unwrap();
    assert_eq!(stored.spec.input, spec.input, "the first definition stands");

    let mut bad = every_10s("bad", Overlap::Skip, CatchUp::SkipMissed);
    bad.trigger = Trigger::Cron {
        expr: "not a cron".into(),
        timezone: None,
    };
    assert!(matches!(
        world.add_schedule(&bad, Utc::now()).await,
        Err(EngineError::InvalidSchedule(_))
    ));
    bad.trigger = Trigger::Every { every_ms: 5 };
    assert!(matches!(
        world.add_schedule(&bad, Utc::now()).await,
        Err(EngineError::InvalidSchedule(_))
    ));
    let names: Vec<String> = world
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["dup"]);
    assert!(matches!(
        world.delete_schedule("bad").await,
        Err(EngineError::ScheduleNotFound(_))
    ));
}

async fn sync_keeps_unchanged_schedules_and_replaces_changed_ones(world: Arc<dyn World>) {
    let spec = every_10s("synced", Overlap::Skip, CatchUp::SkipMissed);
    assert!(world
        .sync_schedule(&spec, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap());
    // Same definition: untouched (its next tick stays).
    assert!(!world
        .sync_schedule(&spec, at("2030-01-01T00:00:00Z"))
        .await
        .unwrap());
    let kept = world.get_schedule("synced").await.unwrap().unwrap();
    assert_eq!(kept.next_fire_at, at("2026-01-01T00:00:10Z"));
    // Changed definition: replaced.
    let mut changed = spec.clone();
    changed.trigger = Trigger::cron("0 * * * *", Some("Europe/Berlin")).unwrap();
    assert!(world
        .sync_schedule(&changed, at("2026-01-01T01:00:00Z"))
        .await
        .unwrap());
    let replaced = world.get_schedule("synced").await.unwrap().unwrap();
    assert_eq!(replaced.spec, changed);
    assert_eq!(replaced.next_fire_at, at("2026-01-01T01:00:00Z"));
}

async fn scheduled_runs_are_ordinary_runs(world: Arc<dyn World>) {
    let spec = every_10s("ordinary", Overlap::Allow, CatchUp::RunOnce);
    world
        .add_schedule(&spec, at("2026-01-01T00:00:10Z"))
        .await
        .unwrap();
    let fired = world
        .fire_due_schedules(at("2026-01-01T00:00:10Z"), &registered())
        .await
        .unwrap();
    let run = world.get_run(fired[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(
        run.idempotency_key.as_deref(),
        Some("schedule:ordinary:2026-01-01T00:00:10.000Z")
    );
    assert_eq!(run.workflow, WF);
    assert_eq!(
        world.next_schedule_due().await.unwrap(),
        Some(at("2026-01-01T00:00:20Z"))
    );
}

for_each_backend!(
    concurrent_schedulers_start_exactly_one_run_per_tick,
    schedules_of_unknown_workflows_wait_for_a_worker_that_has_them,
    many_due_schedules_of_unknown_workflows_do_not_hide_a_known_one,
    overlap_skip_waits_for_the_previous_run,
    overlap_queue_one_starts_the_waiting_tick_when_the_previous_ends,
    catch_up_skip_missed_after_downtime_fires_nothing_stale,
    paused_schedules_do_not_fire_and_resume_from_the_next_tick,
    bad_and_duplicate_definitions_store_nothing,
    sync_keeps_unchanged_schedules_and_replaces_changed_ones,
    scheduled_runs_are_ordinary_runs,
    a_finished_scheduled_run_is_enqueued_for_its_heartbeat_once,
);

/// Adds schedule `name` with a heartbeat URL and fires its first tick: the run.
async fn fire_a_pinged_schedule(world: &Arc<dyn World>, name: &str) -> morpheus_engine::RunId {
    let mut spec = every_10s(name, Overlap::Allow, CatchUp::RunOnce);
    spec.heartbeat_url = Some("http://127.0.0.1:9/hc".into());
    world
        .add_schedule(&spec, at("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    let fired = world
        .fire_due_schedules(at("2026-01-01T00:00:05Z"), &registered())
        .await
        .unwrap();
    fired[0].run_id
}

/// The heartbeat outbox follows the feed: a finished run of a schedule with a heartbeat
/// URL is enqueued once, and nothing is held back on either backend when no transaction
/// is open.
async fn a_finished_scheduled_run_is_enqueued_for_its_heartbeat_once(world: Arc<dyn World>) {
    let run_id = fire_a_pinged_schedule(&world, "pinged").await;
    finish(&world, run_id).await;
    let enqueued = world.enqueue_heartbeats().await.unwrap();
    assert_eq!(enqueued.written, 1, "{enqueued:?}");
    assert!(!enqueued.held_back, "{enqueued:?}");
    let again = world.enqueue_heartbeats().await.unwrap();
    assert_eq!(again.written, 0, "enqueued twice: {again:?}");
    assert!(world.next_heartbeat_due().await.unwrap().is_some());
}

/// Postgres reads the feed only below the oldest open transaction. A run finished while
/// an older transaction (one that writes no feed entry, so sends no notification when it
/// ends) is still open is held back, and says so, so the pinger looks again soon instead of
/// at its fallback poll; once that transaction ends (and any other session's of the same
/// server, whose transaction ids count too), the ping is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_heartbeats_held_back_behind_an_open_transaction_say_so() {
    use sqlx::Connection;
    let (world, db) = crate::common::postgres_world().await;
    let run_id = fire_a_pinged_schedule(&world, "held").await;
    // An older transaction with an id of its own, left open.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut other)
        .await
        .unwrap();
    finish(&world, run_id).await;
    let held = world.enqueue_heartbeats().await.unwrap();
    assert_eq!(held.written, 0, "read past an open transaction: {held:?}");
    assert!(held.held_back, "held back without saying so: {held:?}");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    // Transaction ids are the server's, not the database's: other sessions of the same
    // server (tests running beside this one) may still hold the horizon back for a
    // moment, and each such pass must say so.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let enqueued = world.enqueue_heartbeats().await.unwrap();
        if enqueued.written == 1 {
            break;
        }
        assert_eq!(enqueued.written, 0, "{enqueued:?}");
        assert!(
            enqueued.held_back,
            "nothing written, nothing held back: {enqueued:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "still held back after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(world);
    drop(db);
}
