//! [`NonceStore`]: durable nonce reservations per account, so that no two transactions
//! Morpheus signs for one account (from two runs, or two workers) share a nonce.

use async_trait::async_trait;

use crate::error::EngineResult;
use crate::ids::RunId;

/// One reserved nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceReservation {
    /// The reserved nonce.
    pub nonce: i64,
    /// The transaction (signing step) that holds it.
    pub holder: String,
    /// The run that reserved it, when a run did.
    pub run_id: Option<RunId>,
}

/// Nonce reservations. A *scope* is one account on one chain (for example
/// `evm:31337:0xf39f…`); a *holder* is the transaction that will use the nonce (the
/// signing step's idempotency key).
#[async_trait]
pub trait NonceStore: Send + Sync + 'static {
    /// Reserves for `holder` the lowest nonce of `scope` that is at least `floor` (the
    /// account's next nonce on chain) and not held by another holder. Idempotent on
    /// `holder`: a holder that already has a nonce gets it back, whatever `floor` says
    /// now (its transaction may already be signed, or sent).
    async fn reserve_nonce(
        &self,
        scope: &str,
        holder: &str,
        floor: i64,
        run_id: Option<RunId>,
    ) -> EngineResult<NonceReservation>;

    /// Gives a holder's nonce back, for a transaction that provably never reached the
    /// chain (refused before it entered a mempool). `false` when it held none.
    async fn release_nonce(&self, scope: &str, holder: &str) -> EngineResult<bool>;

    /// A scope's reservations at or above `from`, lowest nonce first.
    async fn nonce_reservations(
        &self,
        scope: &str,
        from: i64,
    ) -> EngineResult<Vec<NonceReservation>>;
}

/// The lowest free nonce ≥ floor: the floor itself, or one past a reserved nonce, that
/// no reservation holds. Positional parameters: 1 = scope, 2 = floor (both backends
/// accept `?N`/`$N` in the same places; each backend substitutes its own marker).
pub(crate) const LOWEST_FREE_NONCE_SQL: &str = "SELECT MIN(candidate) FROM (
         SELECT CAST(#2 AS BIGINT) AS candidate
         UNION SELECT nonce + 1 FROM nonce_reservations WHERE scope = #1 AND nonce >= #2
     ) AS candidates
     WHERE candidate NOT IN (SELECT nonce FROM nonce_reservations WHERE scope = #1)";
