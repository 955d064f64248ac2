//! [`ScheduleStore`]: cron and interval schedules, and the runs their ticks start; and
//! `fire_due_schedules`, written once over the per-dialect primitives of `ScheduleTx`
//! (the pure policy is [`plan_fires`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::{RunRecord, RunStatus};
use crate::schedule::{
    plan_fires, tick_idempotency_key, FirePlan, FiredRun, ScheduleRecord, ScheduleSpec,
};
use crate::store::rows::decode_status;

/// Schedules and their ticks.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Adds a schedule that first fires at `next_fire_at`. A taken name is
    /// [`EngineError::ScheduleExists`](crate::EngineError::ScheduleExists) and stores
    /// nothing.
    async fn add_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Creates or updates a schedule from configuration. An unchanged definition keeps its
    /// state; a changed one is replaced and fires next at `next_fire_at`. Returns whether
    /// anything changed.
    async fn sync_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<bool>;

    /// Pauses or resumes a schedule; a resumed schedule fires next at `next_fire_at`
    /// (ticks during the pause are not caught up).
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: DateTime<Utc>,
    ) -> EngineResult<()>;

    /// Deletes a schedule (its runs stay).
    async fn delete_schedule(&self, name: &str) -> EngineResult<()>;

    /// One schedule.
    async fn get_schedule(&self, name: &str) -> EngineResult<Option<ScheduleRecord>>;

    /// Every schedule, by name.
    async fn list_schedules(&self) -> EngineResult<Vec<ScheduleRecord>>;

    /// Starts the runs of every due schedule whose workflow is in `workflows` (per its
    /// catch-up and overlap policies), one run per tick however many schedulers call
    /// this at once, and moves each schedule to its next tick.
    async fn fire_due_schedules(
        &self,
        now: DateTime<Utc>,
        workflows: &[(String, u32)],
    ) -> EngineResult<Vec<FiredRun>>;

    /// When the next schedule is due (or has a waiting tick: now).
    async fn next_schedule_due(&self) -> EngineResult<Option<DateTime<Utc>>>;

    /// Runs a schedule started, newest first.
    async fn schedule_runs(&self, name: &str, limit: u64) -> EngineResult<Vec<RunRecord>>;
}

/// Firing due schedules in one dialect, inside the firing transaction: the primitives
/// [`fire_due_schedules`] is written over.
#[async_trait]
pub(crate) trait ScheduleTx: Send {
    /// Up to 100 schedules of `workflows` that are not paused and are due at `now` (or
    /// have a tick waiting), the most overdue first, each held by this transaction until
    /// it ends. Only schedules of `workflows`: due schedules of workflows this process
    /// does not know must not take the places of those it does (the rest wait for the
    /// next pass, which comes at once since they are still due).
    async fn due_schedules(
        &mut self,
        now: DateTime<Utc>,
        workflows: &[String],
    ) -> EngineResult<Vec<ScheduleRecord>>;

    /// The status of a run, if it exists.
    async fn run_status(&mut self, run_id: RunId) -> EngineResult<Option<String>>;

    /// Inserts the run of a tick, as `new_id`, unless a run with its idempotency key
    /// `key` exists; returns the id of the run with that key.
    async fn insert_tick_run(
        &mut self,
        spec: &ScheduleSpec,
        workflow_version: u32,
        key: &str,
        metadata: &Value,
        new_id: RunId,
    ) -> EngineResult<RunId>;

    /// Moves a schedule to the next tick of `plan`, and records `last` (the last tick
    /// that started a run, and that run) when this pass started one.
    async fn advance(
        &mut self,
        name: &str,
        plan: &FirePlan,
        last: Option<(DateTime<Utc>, RunId)>,
    ) -> EngineResult<()>;
}

/// [`ScheduleStore::fire_due_schedules`], written once: for each due schedule of a
/// workflow in `workflows`, whether its previous run still goes, what [`plan_fires`]
/// says to start, one run per tick (the tick's idempotency key makes a second start
/// impossible), and the schedule moved to its next tick.
pub(crate) async fn fire_due_schedules(
    tx: &mut impl ScheduleTx,
    now: DateTime<Utc>,
    workflows: &[(String, u32)],
) -> EngineResult<Vec<FiredRun>> {
    let versions: HashMap<&str, u32> = workflows
        .iter()
        .map(|(name, version)| (name.as_str(), *version))
        .collect();
    let names: Vec<String> = versions.keys().map(|name| (*name).to_owned()).collect();
    let due = tx.due_schedules(now, &names).await?;
    let mut fired = Vec::new();
    for schedule in &due {
        let Some(version) = versions.get(schedule.spec.workflow.as_str()) else {
            continue; // Another process knows this workflow.
        };
        let previous_running = match schedule.last_run_id {
            Some(run_id) => tx
                .run_status(run_id)
                .await?
                .is_some_and(|s| !decode_status(&s).is_ok_and(RunStatus::is_terminal)),
            None => false,
        };
        let plan = plan_fires(
            &schedule.spec,
            schedule.next_fire_at,
            schedule.queued_tick,
            previous_running,
            now,
        );
        let mut last = None;
        for tick in &plan.fire {
            let key = tick_idempotency_key(&schedule.spec.name, *tick);
            let metadata = serde_json::json!({"schedule": schedule.spec.name, "tick": tick});
            let run_id = tx
                .insert_tick_run(&schedule.spec, *version, &key, &metadata, RunId::new())
                .await?;
            fired.push(FiredRun {
                schedule: schedule.spec.name.clone(),
                tick: *tick,
                run_id,
            });
            last = Some((*tick, run_id));
        }
        tx.advance(&schedule.spec.name, &plan, last).await?;
    }
    Ok(fired)
}
