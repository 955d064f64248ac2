//! [`EventStore`] on Postgres, event delivery inside a transaction, and `NOTIFY`.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use super::rows::FinishedRow;
use super::{PostgresWorld, WAKE_CHANNEL};
use crate::batch::{child_finished_event_key, child_finished_payload};
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::EventStore;

/// Serializes event delivery and event parks for one key, so a delivery can never slip
/// between a waiter's "has it arrived?" check and its park.
pub(super) async fn lock_event_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
) -> EngineResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('morpheus-event:' || $1))")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn deliver_event(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    payload: &Value,
) -> EngineResult<bool> {
    lock_event_key(tx, key).await?;
    let inserted = sqlx::query(
        "INSERT INTO workflow_events (key, payload) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(payload)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    let woken = sqlx::query(
        "UPDATE workflow_runs SET status = 'pending', wake_at = now(), wait_event_key = NULL,
             updated_at = now()
         WHERE status = 'waiting' AND wait_event_key = $1",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if woken > 0 {
        notify(tx).await?;
    }
    Ok(inserted)
}

pub(super) async fn notify(tx: &mut Transaction<'_, Postgres>) -> EngineResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WAKE_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn notify_parents(
    tx: &mut Transaction<'_, Postgres>,
    finished: &[FinishedRow],
) -> EngineResult<()> {
    for (id, parent, status, output, error) in finished {
        if parent.is_none() {
            continue;
        }
        let key = child_finished_event_key(RunId(*id));
        let payload = child_finished_payload(status, output.as_ref(), error.as_deref());
        deliver_event(tx, &key, &payload).await?;
    }
    Ok(())
}

#[async_trait]
impl EventStore for PostgresWorld {
    async fn send_event(&self, key: &str, payload: Value) -> EngineResult<bool> {
        let mut tx = self.pool.begin().await?;
        let inserted = deliver_event(&mut tx, key, &payload).await?;
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
