//! [`EventStore`] on SQLite: event delivery inside the writer's transaction (the
//! [`EventTx`] primitives).

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use sqlx::Connection;

use super::rows::parse_json;
use super::{SqliteWorld, WriteTx};
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::store::events::{deliver_event, EventTx};
use crate::store::EventStore;

#[async_trait]
impl EventTx for WriteTx<'_> {
    /// Differs from Postgres because the single writer already serialises every
    /// delivery and park: there is nothing to lock.
    async fn lock_event_key(&mut self, _key: &str) -> EngineResult<()> {
        Ok(())
    }

    async fn insert_event(&mut self, key: &str, payload: &Value) -> EngineResult<bool> {
        Ok(sqlx::query(
            "INSERT INTO workflow_events (key, payload, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(payload.to_string())
        .bind(self.now)
        .execute(&mut *self.conn)
        .await?
        .rows_affected()
            == 1)
    }

    async fn wake_waiting_runs(&mut self, key: &str) -> EngineResult<u64> {
        Ok(sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', wake_at = ?2, wait_event_key = NULL, updated_at = ?2
             WHERE status = 'waiting' AND wait_event_key = ?1",
        )
        .bind(key)
        .bind(self.now)
        .execute(&mut *self.conn)
        .await?
        .rows_affected())
    }

    /// Differs from Postgres because SQLite has no cross-process notifications: workers
    /// in other processes find the woken runs when they next poll.
    async fn announce_wake(&mut self) -> EngineResult<()> {
        Ok(())
    }
}

#[async_trait]
impl EventStore for SqliteWorld {
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = deliver_event(&mut WriteTx::new(&mut tx, &now), key, &payload).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get_event(&self, key: &str) -> EngineResult<Option<Value>> {
        let payload: Option<String> =
            sqlx::query_scalar("SELECT payload FROM workflow_events WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.readers)
                .await?;
        parse_json(payload)
    }
}
