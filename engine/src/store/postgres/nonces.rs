//! [`NonceStore`] on Postgres. An advisory lock per scope serializes reservations, so
//! two workers cannot pick the same free nonce.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::nonces::{NonceReservation, NonceStore, LOWEST_FREE_NONCE_SQL};

#[async_trait]
impl NonceStore for PostgresWorld {
    async fn reserve_nonce(
        &self,
        scope: &str,
        holder: &str,
        floor: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<NonceReservation> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('morpheus-nonce:' || $1))")
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        let held: Option<(i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT nonce, run_id FROM nonce_reservations WHERE scope = $1 AND holder = $2",
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
                run_id: run.map(RunId),
            });
        }
        let nonce: i64 = sqlx::query_scalar(&LOWEST_FREE_NONCE_SQL.replace('#', "$"))
            .bind(scope)
            .bind(floor.max(0))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO nonce_reservations (scope, nonce, holder, run_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(scope)
        .bind(nonce)
        .bind(holder)
        .bind(run_id.map(|id| id.0))
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
        let deleted =
            sqlx::query("DELETE FROM nonce_reservations WHERE scope = $1 AND holder = $2")
                .bind(scope)
                .bind(holder)
                .execute(&self.pool)
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
             WHERE scope = $1 AND nonce >= $2 ORDER BY nonce",
        )
        .bind(scope)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(NonceReservation {
                    nonce: row.try_get("nonce")?,
                    holder: row.try_get("holder")?,
                    run_id: row.try_get::<Option<Uuid>, _>("run_id")?.map(RunId),
                })
            })
            .collect()
    }
}
