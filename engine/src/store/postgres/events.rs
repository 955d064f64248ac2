//! [`EventStore`] on Postgres: event delivery inside a transaction (the [`EventTx`]
//! primitives), and `NOTIFY` to wake workers in other processes.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgConnection;

use super::{PostgresWorld, WAKE_CHANNEL};
use crate::error::EngineResult;
use crate::store::events::{deliver_event, EventTx};
use crate::store::EventStore;

/// Serializes event delivery and event parks for one key, so a delivery can never slip
/// between a waiter's "has it arrived?" check and its park.
pub(super) async fn lock_event_key(conn: &mut PgConnection, key: &str) -> EngineResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('morpheus-event:' || $1))")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Tells listening workers (at commit) that a run may be claimable.
pub(super) async fn notify(conn: &mut PgConnection) -> EngineResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl EventTx for PgConnection {
    async fn lock_event_key(&mut self, key: &str) -> EngineResult<()> {
        lock_event_key(self, key).await
    }

    async fn insert_event(&mut self, key: &str, payload: &Value) -> EngineResult<bool> {
        Ok(sqlx::query(
            "INSERT INTO workflow_events (key, payload) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(payload)
        .execute(&mut *self)
        .await?
        .rows_affected()
            == 1)
    }

    async fn wake_waiting_runs(&mut self, key: &str) -> EngineResult<u64> {
        Ok(sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', wake_at = now(), wait_event_key = NULL,
                 updated_at = now()
             WHERE status = 'waiting' AND wait_event_key = $1",
        )
        .bind(key)
        .execute(&mut *self)
        .await?
        .rows_affected())
    }

    async fn announce_wake(&mut self) -> EngineResult<()> {
        notify(self).await
    }
}

#[async_trait]
impl EventStore for PostgresWorld {
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = deliver_event(&mut *tx, key, &payload).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>> {
        Ok(
            sqlx::query_scalar("SELECT payload FROM workflow_events WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
