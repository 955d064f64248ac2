//! [`NonceStore`] on SQLite. The single writer serializes reservations, so the free
//! nonce a reservation picks cannot be picked by another at the same time.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Connection, Row};

use super::rows::parse_run_id;
use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::nonces::{NonceReservation, NonceStore, LOWEST_FREE_NONCE_SQL};

#[async_trait]
impl NonceStore for SqliteWorld {
    async fn reserve_nonce(
        &self,
        scope: &str,
        holder: &str,
        floor: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<NonceReservation> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let held: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT nonce, run_id FROM nonce_reservations WHERE scope = ?1 AND holder = ?2",
        )
        .bind(scope)
        .bind(holder)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((nonce, run)) = held {
            tx.commit().await?;
            return Ok(NonceReservation {
                nonce,
                holder: holder.to_owned(),
                run_id: run.as_deref().map(parse_run_id).transpose()?,
            });
        }
        let nonce: i64 = sqlx::query_scalar(&LOWEST_FREE_NONCE_SQL.replace('#', "?"))
            .bind(scope)
            .bind(floor.max(0))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO nonce_reservations (scope, nonce, holder, run_id, reserved_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(scope)
        .bind(nonce)
        .bind(holder)
        .bind(run_id.map(|id| id.to_string()))
        .bind(format_ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(NonceReservation {
            nonce,
            holder: holder.to_owned(),
            run_id,
        })
    }

    async fn release_nonce(&self, scope: &str, holder: &str) -> EngineResult<bool> {
        let mut writer = self.writer().await?;
        let deleted =
            sqlx::query("DELETE FROM nonce_reservations WHERE scope = ?1 AND holder = ?2")
                .bind(scope)
                .bind(holder)
                .execute(&mut *writer)
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn nonce_reservations(
        &self,
        scope: &str,
        from: i64,
    ) -> EngineResult<Vec<NonceReservation>> {
        let rows = sqlx::query(
            "SELECT nonce, holder, run_id FROM nonce_reservations
             WHERE scope = ?1 AND nonce >= ?2 ORDER BY nonce",
        )
        .bind(scope)
        .bind(from)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let run: Option<String> = row.try_get("run_id")?;
                Ok(NonceReservation {
                    nonce: row.try_get("nonce")?,
                    holder: row.try_get("holder")?,
                    run_id: run.as_deref().map(parse_run_id).transpose()?,
                })
            })
            .collect()
    }
}
