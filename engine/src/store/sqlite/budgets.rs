//! [`BudgetStore`] on SQLite. The single writer serialises reservations, so the sum a
//! reservation checks against sees every reservation before it.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Connection;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::{EngineError, EngineResult};
use crate::ids::RunId;
use crate::model::BudgetReservation;
use crate::store::BudgetStore;

#[async_trait]
impl BudgetStore for SqliteWorld {
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
        let mut writer = self.writer().await?;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT amount FROM workflow_budget_reservations
             WHERE budget = ?1 AND reservation_key = ?2",
        )
        .bind(budget)
        .bind(reservation_key)
        .fetch_optional(&mut *tx)
        .await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0) FROM workflow_budget_reservations WHERE budget = ?1",
        )
        .bind(budget)
        .fetch_one(&mut *tx)
        .await?;
        if existing.is_some() {
            tx.commit().await?;
            return Ok(BudgetReservation {
                granted: true,
                used,
            });
        }
        if used.saturating_add(amount) > limit {
            tx.commit().await?;
            return Ok(BudgetReservation {
                granted: false,
                used,
            });
        }
        sqlx::query(
            "INSERT INTO workflow_budget_reservations (budget, reservation_key, amount, run_id,
                 created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(budget)
        .bind(reservation_key)
        .bind(amount)
        .bind(run_id.map(|id| id.to_string()))
        .bind(format_ts(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BudgetReservation {
            granted: true,
            used: used + amount,
        })
    }

    async fn release_budget(&self, budget: &str, reservation_key: &str) -> EngineResult<()> {
        let mut writer = self.writer().await?;
        sqlx::query(
            "DELETE FROM workflow_budget_reservations WHERE budget = ?1 AND reservation_key = ?2",
        )
        .bind(budget)
        .bind(reservation_key)
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    async fn budget_used(&self, budget: &str) -> EngineResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0) FROM workflow_budget_reservations WHERE budget = ?1",
        )
        .bind(budget)
        .fetch_one(&self.readers)
        .await?)
    }
}
