//! [`BudgetStore`] on Postgres. An advisory lock per budget serialises reservations, so
//! the sum a reservation checks against sees every reservation committed before it.

use async_trait::async_trait;

use super::PostgresWorld;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::BudgetReservation;
use crate::store::BudgetStore;

#[async_trait]
impl BudgetStore for PostgresWorld {
    async fn reserve_budget(
        &self,
        budget: &str,
        reservation_key: &str,
        amount: i64,
        limit: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<BudgetReservation> {
        if amount <= 0 {
            return Err(EngineError::InvalidState {
                run: run_id.unwrap_or_default(),
                status: "unchanged".into(),
                reason: format!("budget reservation amount must be positive, got {amount}"),
            });
        }
        let mut tx = self.pool.begin().await?;
        // Serializes reservations of one budget: the sum below then sees every
        // reservation committed before this one.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('morpheus-budget:' || $1))")
            .bind(budget)
            .execute(&mut *tx)
            .await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT amount FROM workflow_budget_reservations
             WHERE budget = $1 AND reservation_key = $2",
        )
        .bind(budget)
        .bind(reservation_key)
        .fetch_optional(&mut *tx)
        .await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM workflow_budget_reservations
             WHERE budget = $1",
        )
        .bind(budget)
        .fetch_one(&mut *tx)
        .await?;
        if existing.is_some() || used.saturating_add(amount) > limit {
            tx.commit().await?;
            return Ok(BudgetReservation {
                granted: existing.is_some(),
                used,
            });
        }
        sqlx::query(
            "INSERT INTO workflow_budget_reservations (budget, reservation_key, amount, run_id)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(budget)
        .bind(reservation_key)
        .bind(amount)
        .bind(run_id.map(|id| id.0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BudgetReservation {
            granted: true,
            used: used + amount,
        })
    }

    async fn release_budget(&self, budget: &str, reservation_key: &str) -> EngineResult<()> {
        sqlx::query(
            "DELETE FROM workflow_budget_reservations WHERE budget = $1 AND reservation_key = $2",
        )
        .bind(budget)
        .bind(reservation_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn budget_used(&self, budget: &str) -> EngineResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM workflow_budget_reservations
             WHERE budget = $1",
        )
        .bind(budget)
        .fetch_one(&self.pool)
        .await?)
    }
}
