//! The scheduler service: runs beside the workers in every `morpheus up` process and
//! starts the runs of due schedules. Any number of schedulers may run against one
//! database: each tick's run is started exactly once (see [`crate::schedule`]).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;

use crate::engine::Engine;
use crate::outage::OutageReporter;

/// Longest sleep between passes where the store cannot notify schedule changes
/// (SQLite): schedules added or resumed from another process are noticed within this.
pub const SCHEDULER_POLL: Duration = Duration::from_secs(2);

/// Longest sleep between passes where the store notifies schedule changes (Postgres
/// `LISTEN`): only a fallback, should a notification be lost; due ticks and changes
/// wake the scheduler sooner. An idle scheduler so costs two statements a minute.
pub const SCHEDULER_IDLE_POLL: Duration = Duration::from_secs(60);

/// Fires due schedules until `shutdown` resolves.
pub async fn run_scheduler(engine: Engine, shutdown: impl Future<Output = ()>) {
    let world = engine.world();
    let workflows = engine.workflows().versions();
    let mut outage = OutageReporter::new("scheduler", Duration::from_secs(30));
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let listener = world.spawn_schedule_listener(changed.clone());
    let idle_poll = if listener.is_some() {
        SCHEDULER_IDLE_POLL
    } else {
        SCHEDULER_POLL
    };
    // Stops the listener when the scheduler stops.
    struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            if let Some(task) = self.0.take() {
                task.abort();
            }
        }
    }
    let _listener = AbortOnDrop(listener);
    tokio::pin!(shutdown);
    loop {
        let wait = match world.fire_due_schedules(Utc::now(), &workflows).await {
            Ok(fired) => {
                outage.success();
                for run in &fired {
                    tracing::info!(schedule = %run.schedule, tick = %run.tick, run = %run.run_id, "schedule fired");
                    crate::metrics::schedule_fired(&run.schedule);
                }
                if !fired.is_empty() {
                    engine.wake_signal().notify_one();
                }
                match world.next_schedule_due().await {
                    Ok(Some(due)) => (due - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .clamp(Duration::from_millis(10), idle_poll),
                    _ => idle_poll,
                }
            }
            Err(error) => {
                outage.failure(&error, Some(SCHEDULER_POLL));
                SCHEDULER_POLL
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
