//! [`EventStore`] on SQLite, and event delivery inside a write transaction.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use sqlx::{Connection, SqliteConnection};

use super::rows::{parse_json, parse_run_id, FinishedRow};
use super::SqliteWorld;
use crate::batch::{child_finished_event_key, child_finished_payload, format_ts};
use crate::error::EngineResult;
use crate::store::EventStore;

/// Ends a run's lease and, if it is a child, tells its parent (shared by finishing and
/// cancelling). Runs inside the writer's transaction.
pub(super) async fn notify_parents(
    tx: &mut SqliteConnection,
    finished: &[FinishedRow],
    now: &str,
) -> EngineResult<()> {
    for (id, parent, status, output, error) in finished {
        if parent.is_none() {
            continue;
        }
        let key = child_finished_event_key(parse_run_id(id)?);
        let output = parse_json(output.clone())?;
        let payload = child_finished_payload(status, output.as_ref(), error.as_deref());
        deliver_event(tx, &key, &payload, now).await?;
    }
    Ok(())
}

pub(super) async fn deliver_event(
    tx: &mut SqliteConnection,
    key: &str,
    payload: &Value,
    now: &str,
) -> EngineResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO workflow_events (key, payload, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE workflow_runs SET status = 'pending', wake_at = ?2, wait_event_key = NULL, updated_at = ?2
         WHERE status = 'waiting' AND wait_event_key = ?1",
    )
    .bind(key)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(inserted)
}

#[async_trait]
impl EventStore for SqliteWorld {
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool> {
        let now = format_ts(Utc::now());
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = deliver_event(&mut tx, key, &payload, &now).await?;
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
