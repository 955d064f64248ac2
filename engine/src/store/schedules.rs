//! [`ScheduleStore`]: cron and interval schedules, and the runs their ticks start.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::EngineResult;
use crate::model::RunRecord;
use crate::schedule::{FiredRun, ScheduleRecord, ScheduleSpec};

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
