//! [`BudgetStore`]: reservations against named budgets, shared by every run.

use async_trait::async_trait;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::BudgetReservation;

/// Budget reservations.
#[async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// Reserves `amount` of `budget` under `limit` (all reservations of the budget, by
    /// every run, count). Idempotent on `reservation_key`: repeating a reservation returns
    /// its first answer and reserves nothing more.
    async fn reserve_budget(
        &self,
        budget: &str,
        reservation_key: &str,
        amount: i64,
        limit: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<BudgetReservation>;

    /// Gives a reservation back (no-op when it does not exist).
    async fn release_budget(&self, budget: &str, reservation_key: &str) -> EngineResult<()>;

    /// The total reserved of a budget.
    async fn budget_used(&self, budget: &str) -> EngineResult<i64>;
}
