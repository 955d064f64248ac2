//! The storage port: everything the engine remembers goes through it. It is split by
//! what is stored, one small trait per concern, as Restate has one trait per table:
//!
//! - [`RunStore`]: runs, their leases and their journals (claim, apply, cancel, prune…);
//! - [`EventStore`]: events that wake waiting runs;
//! - [`QueueStore`]: queue concurrency limits and load;
//! - [`ScheduleStore`]: cron and interval schedules and their ticks;
//! - [`LogStore`]: step log lines;
//! - [`BudgetStore`]: budget reservations;
//! - [`NonceStore`]: nonce reservations per account (exactly-once transactions);
//! - [`SignatureStore`]: the key audit (every signature an executor made);
//! - [`DocumentStore`]: workflows' own JSON documents;
//! - [`FeedStore`]: the change feed live views follow (written by triggers);
//! - [`HeartbeatStore`]: the outbox of heartbeat pings after scheduled runs.
//!
//! [`World`] is the umbrella over all of them, so callers keep one handle
//! (`Arc<dyn World>`). Two adapters implement it with the same semantics, laid out as
//! mirror trees with one file per concern, so `sqlite/schedules.rs` diffs against
//! `postgres/schedules.rs`: [`sqlite::SqliteWorld`] (the embedded default) and
//! [`postgres::PostgresWorld`] (scale-out). One conformance suite (`engine/tests/`) runs
//! against both.
//!
//! A procedure of several statements is written once, in this module's files, over small
//! per-dialect primitives that each adapter implements with its own SQL (as DBOS writes
//! its system database once with thin per-dialect overrides): firing due schedules
//! ([`schedules`]), claiming from concurrency-limited queues (`claim`), pruning
//! ([`runs`]), delivering events and telling parents their children ended ([`events`]),
//! and mapping rows to records (`rows`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::{EngineError, EngineResult};

pub mod bench;
pub mod budgets;
mod claim;
pub mod documents;
pub mod events;
pub mod feed;
pub mod heartbeats;
pub mod logs;
pub mod nonces;
pub mod postgres;
pub mod queues;
mod rows;
pub mod runs;
pub mod schedules;
pub mod signatures;
pub mod sqlite;

pub use bench::{
    connect_bench, create_postgres_database, drop_postgres_database, postgres_commits,
    postgres_disable_autovacuum, BenchSupport, RawStepWrites,
};
pub use budgets::BudgetStore;
pub use documents::DocumentStore;
pub use events::EventStore;
pub use feed::{FeedCursor, FeedEntry, FeedKind, FeedRun, FeedStore, InvalidFeedCursor};
pub use heartbeats::{
    HeartbeatClaim, HeartbeatOutcome, HeartbeatPing, HeartbeatStore, HeartbeatsEnqueued, PingState,
};
pub use logs::LogStore;
pub use nonces::{NonceReservation, NonceStore};
pub use queues::QueueStore;
pub use runs::RunStore;
pub use schedules::ScheduleStore;
pub use signatures::{NewSignature, SignatureFilter, SignatureRecord, SignatureStore};

/// Which database a `World` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// The backend a database URL names (`sqlite:…`, `postgres://…` or
    /// `postgresql://…`), or `None` for any other URL.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Which runs a worker may claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The claiming worker's id (stored as `lease_owner`).
    pub owner: String,
    /// At most this many runs.
    pub limit: u32,
    /// Lease length.
    pub lease_ttl: Duration,
    /// `(workflow, version)` pairs this worker can replay; other runs are left alone.
    pub workflows: Vec<(String, u32)>,
    /// Only runs in these queues (`None`: every queue).
    pub queues: Option<Vec<String>>,
}

/// The storage port, all of it: every store the engine uses, behind one handle. All
/// methods are safe to call concurrently; writes for a run held under a lease are fenced
/// by its epoch (see [`crate::model::Fence`]).
pub trait World:
    RunStore
    + EventStore
    + QueueStore
    + ScheduleStore
    + LogStore
    + BudgetStore
    + NonceStore
    + SignatureStore
    + DocumentStore
    + FeedStore
    + HeartbeatStore
{
    /// The backend behind this world.
    fn backend(&self) -> Backend;

    /// Starts a task that signals `wake` whenever another process may have made a run
    /// claimable (a run started, parked, woken or released elsewhere), and once after
    /// every (re)connection, since notifications sent meanwhile are lost. The task runs
    /// until aborted, reconnecting with backoff (workers keep polling meanwhile); it
    /// must be called inside a Tokio runtime.
    ///
    /// `None` when the backend has no cross-process notifications (SQLite): workers then
    /// rely on in-process signals and polling.
    fn spawn_wake_listener(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        let _ = wake;
        None
    }

    /// Like [`World::spawn_wake_listener`], for schedule changes: signals `changed`
    /// whenever any process adds, changes or resumes a schedule (and after every
    /// (re)connection), so a scheduler can sleep until its next due tick instead of
    /// polling. `None` when the backend cannot notify other processes (SQLite): the
    /// scheduler then polls every [`crate::scheduler::SCHEDULER_POLL`].
    fn spawn_schedule_listener(&self, changed: Arc<Notify>) -> Option<JoinHandle<()>> {
        let _ = changed;
        None
    }
}

/// Refuses a database whose newest applied migration (`found`) is newer than any this
/// binary knows: an older binary must not write a schema it does not understand.
fn refuse_newer_schema(found: Option<i64>, migrator: &sqlx::migrate::Migrator) -> EngineResult<()> {
    let supported = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match found {
        Some(found) if found > supported => Err(EngineError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}
