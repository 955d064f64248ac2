//! The PostgreSQL adapter: many workers on many hosts against one database. Claims use
//! `FOR UPDATE SKIP LOCKED`; fenced writes lock their runs' rows (in id order, so two
//! batches never deadlock) and check the lease epoch; wake-ups go out with `NOTIFY`.
//!
//! One file per concern, each beside its SQLite twin in `../sqlite/`, plus `listen.rs`,
//! the wake source SQLite does not have.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::EngineResult;
use crate::store::{refuse_newer_schema, Backend, World};

mod apply;
mod bench;
mod budgets;
mod claim;
mod documents;
mod events;
mod feed;
mod heartbeats;
mod listen;
mod logs;
mod nonces;
mod queues;
mod rows;
mod runs;
mod schedules;
mod signatures;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The channel workers `LISTEN` on; a notification means "a run may be claimable".
pub const WAKE_CHANNEL: &str = "morpheus_runs";

/// The channel feed readers `LISTEN` on; the feed's triggers notify it once per
/// transaction that appended to the feed.
pub const FEED_CHANNEL: &str = "morpheus_feed";

/// The channel schedulers `LISTEN` on; a notification means "a schedule was added,
/// changed or resumed: it may fire sooner than you thought".
pub const SCHEDULE_CHANNEL: &str = "morpheus_schedules";

/// How long a session may sit idle inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

/// PostgreSQL-backed [`World`].
pub struct PostgresWorld {
    pool: PgPool,
    /// How the pool's connections were opened; the wake listener opens its own with them.
    options: PgConnectOptions,
}

impl PostgresWorld {
    /// Connects to `url`, checks that the schema is not newer than this binary, and
    /// applies pending migrations (under Postgres's advisory migration lock).
    pub async fn connect(url: &str, max_connections: u32) -> EngineResult<Self> {
        // A worker frozen (SIGSTOP, VM pause) inside a transaction would keep its run rows
        // locked, and a locked row cannot be claimed even after its lease expired: the
        // server ends such a session, releasing the locks. Engine transactions last
        // milliseconds, so the bound never hurts a live worker.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.options([(
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        )]);
        // One direct connection first: its error names the real cause (connection
        // refused, bad password, unknown database) instead of a pool timeout.
        PgConnection::connect_with(&options).await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        check_schema_not_newer(&pool).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, options })
    }
}

impl World for PostgresWorld {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    /// `LISTEN`s on [`WAKE_CHANNEL`] on a connection of its own, opened with this
    /// world's connect options (see `listen.rs`).
    fn spawn_wake_listener(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        Some(listen::spawn_wake_listener(self.options.clone(), wake))
    }

    /// `LISTEN`s on [`SCHEDULE_CHANNEL`] on a connection of its own.
    fn spawn_schedule_listener(&self, changed: Arc<Notify>) -> Option<JoinHandle<()>> {
        Some(listen::spawn_listener(
            self.options.clone(),
            SCHEDULE_CHANNEL,
            changed,
        ))
    }
}

async fn check_schema_not_newer(pool: &PgPool) -> EngineResult<()> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if table.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?;
    refuse_newer_schema(found, &MIGRATOR)
}
