//! [`HeartbeatStore`]: the outbox of heartbeat pings, the uptime-monitor convention
//! (healthchecks.io, Cronitor) of telling a monitor after every scheduled run that it
//! ended: a GET of the schedule's `heartbeat_url` after a run completes, of
//! `<url>/fail` after one fails. Cancelled runs are not pinged.
//!
//! The engine only stores; the process that sends (it has an HTTP client, the engine
//! has none) drives the three steps, each safe with any number of senders and crashes:
//!
//! 1. [`HeartbeatStore::enqueue_heartbeats`] follows the change feed from a cursor kept
//!    in the database and writes one `heartbeat_pings` row per finished run of a
//!    schedule with a heartbeat URL, in the transaction that moves the cursor (so a
//!    crash loses nothing and repeats nothing), keyed by the run (so a second enqueuer
//!    adds nothing).
//! 2. [`HeartbeatStore::claim_heartbeats`] leases due rows to one sender.
//! 3. [`HeartbeatStore::heartbeat_delivered`] or [`HeartbeatStore::heartbeat_failed`]
//!    records the attempt, only under the claim's token; the retry time a failure sets
//!    is persisted, so a retry schedule survives restarts.
//!
//! A sender that dies between sending and recording leaves the row due again when its
//! lease passes: a ping is sent at least once, and exactly once unless a sender dies
//! in that window. A ping never changes its run.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{EngineResult, UnknownName};
use crate::ids::RunId;
use crate::schedule::stored_names;

/// How the run a ping reports on ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatOutcome {
    /// The run completed: the URL itself is pinged.
    Completed,
    /// The run failed: `<url>/fail` is pinged.
    Failed,
}

/// Where a ping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PingState {
    /// Written by the enqueuer; due at `next_attempt_at` (a claim moves that past its
    /// lease). Left by a delivery or by giving up.
    Pending,
    /// The monitor answered 2xx. Final.
    Delivered,
    /// Every attempt failed; the sender gave up (and logged it). Final.
    Abandoned,
}

stored_names!(HeartbeatOutcome, Completed => "completed", Failed => "failed");
stored_names!(PingState, Pending => "pending", Delivered => "delivered", Abandoned => "abandoned");

/// A ping leased to one sender by [`HeartbeatStore::claim_heartbeats`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatClaim {
    /// The finished run (one ping per run).
    pub run_id: RunId,
    /// Its schedule.
    pub schedule: String,
    /// The schedule's heartbeat URL when the run ended (before `/fail` is added).
    pub url: String,
    /// How the run ended.
    pub outcome: HeartbeatOutcome,
    /// Attempts recorded before this one.
    pub attempts: u32,
    /// Fences the result: only the holder of this claim can record it.
    pub token: Uuid,
}

/// A ping as stored, for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatPing {
    /// The finished run.
    pub run_id: RunId,
    /// Its schedule.
    pub schedule: String,
    /// The schedule's heartbeat URL when the run ended.
    pub url: String,
    /// How the run ended.
    pub outcome: HeartbeatOutcome,
    /// Where the ping stands.
    pub state: PingState,
    /// Attempts recorded.
    pub attempts: u32,
    /// When it is due next (pending pings).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What one [`HeartbeatStore::enqueue_heartbeats`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatsEnqueued {
    /// Pings written.
    pub written: u64,
    /// Committed feed entries past the cursor were left for later because a transaction
    /// that began before them is still open (Postgres reads the feed only below the
    /// oldest open transaction, so that the cursor never passes an entry committed
    /// late; transaction ids are the server's, so that includes other databases'
    /// sessions). That older transaction may write no feed entry and so send no
    /// notification when it ends: the caller should try again shortly rather than wait
    /// for its fallback poll. Always `false` on SQLite, whose one writer commits in
    /// feed order.
    pub held_back: bool,
}

/// The heartbeat outbox.
#[async_trait]
pub trait HeartbeatStore: Send + Sync + 'static {
    /// Enqueues a ping for every run of a schedule with a heartbeat URL that completed
    /// or failed since the stored feed cursor (cancelled runs get none; a run that fails,
    /// is resumed and ends again keeps its first ping), and moves the cursor, in one
    /// transaction. Returns how many pings it wrote, and whether committed feed entries
    /// were held back because an older transaction is still open (see
    /// [`HeartbeatsEnqueued::held_back`]). While another process is at it, writes
    /// nothing at once: each finished run is enqueued once, however many call this.
    async fn enqueue_heartbeats(&self) -> EngineResult<HeartbeatsEnqueued>;

    /// Leases up to `limit` pending pings due at `now`, the most overdue first, to the
    /// caller for `lease`: nobody else claims them until it passes.
    async fn claim_heartbeats(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> EngineResult<Vec<HeartbeatClaim>>;

    /// Records that the claimed ping was delivered (one more attempt). `false` when the
    /// claim was lost meanwhile (its lease passed and another sender took the row), and
    /// then nothing is written.
    async fn heartbeat_delivered(&self, claim: &HeartbeatClaim) -> EngineResult<bool>;

    /// Records a failed attempt of the claimed ping: due again at `retry_at`, or given up
    /// when `retry_at` is `None`. `false` (nothing written) when the claim was lost.
    async fn heartbeat_failed(
        &self,
        claim: &HeartbeatClaim,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> EngineResult<bool>;

    /// When the next pending ping is due (claimed ones count at their lease's end).
    async fn next_heartbeat_due(&self) -> EngineResult<Option<DateTime<Utc>>>;

    /// The newest `limit` pings of a schedule, newest first.
    async fn schedule_heartbeats(
        &self,
        schedule: &str,
        limit: u32,
    ) -> EngineResult<Vec<HeartbeatPing>>;
}
