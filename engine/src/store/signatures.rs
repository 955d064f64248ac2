//! [`SignatureStore`]: the key audit. Every signature a Morpheus executor makes is
//! recorded here, once per signed transaction: which key (its reference, never its
//! material), which address, which message types, for which run and step, the
//! transaction hash and when. `morpheus keys audit` reads it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::rows::ReadRow;

/// A signature about to be handed out by an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignature {
    /// The chain, as `evm:<chain id>` or `cosmos:<chain id>`.
    pub chain: String,
    /// The signed transaction's hash: one audit record per transaction.
    pub tx_hash: String,
    /// The key's reference (`env:NAME`, `file:/path`, …): never the key itself.
    pub key_id: String,
    /// The signing address.
    pub address: String,
    /// What the transaction does: Cosmos message type URLs, or the EVM call (`approve`,
    /// `stake(uint256)`, `call 0x…` for raw data).
    pub message_types: Vec<String>,
    /// The run whose step signed, when a run did.
    pub run_id: Option<RunId>,
    /// The signing step (its key inside the run), or the caller's idempotency key.
    pub step_key: String,
}

/// One recorded signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureRecord {
    /// The chain (`evm:<id>` or `cosmos:<id>`).
    pub chain: String,
    /// The signed transaction's hash.
    pub tx_hash: String,
    /// The key's reference, never its material.
    pub key_id: String,
    /// The signing address.
    pub address: String,
    /// The message types the transaction carries.
    pub message_types: Vec<String>,
    /// The run whose step signed, if any.
    pub run_id: Option<RunId>,
    /// The signing step, or the caller's idempotency key.
    pub step_key: String,
    /// When the signature was recorded (just before the executor returned it).
    pub signed_at: DateTime<Utc>,
}

/// Which signatures [`SignatureStore::signatures`] lists.
#[derive(Debug, Clone, Default)]
pub struct SignatureFilter {
    /// Only this key reference, or this address.
    pub key: Option<String>,
    /// Only signatures recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The key audit's storage.
#[async_trait]
pub trait SignatureStore: Send + Sync + 'static {
    /// Records a signature. Idempotent on `(chain, tx_hash)`: signing the same bytes
    /// again (a resumed step) records nothing more. `true` when this call recorded it.
    async fn record_signature(&self, signature: &NewSignature) -> EngineResult<bool>;

    /// Recorded signatures matching `filter`, newest first.
    async fn signatures(&self, filter: &SignatureFilter) -> EngineResult<Vec<SignatureRecord>>;
}

/// The message types as stored: one TEXT column, newline-separated (type URLs and
/// function signatures never hold a newline).
pub(crate) fn join_message_types(types: &[String]) -> String {
    types.join("\n")
}

/// A `key_signatures` row as a record, for both adapters.
pub(crate) fn signature_from_row(row: &impl ReadRow) -> EngineResult<SignatureRecord> {
    let types = row.text("message_types")?;
    Ok(SignatureRecord {
        chain: row.text("chain")?,
        tx_hash: row.text("tx_hash")?,
        key_id: row.text("key_id")?,
        address: row.text("address")?,
        message_types: types
            .split('\n')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        run_id: row.opt_run_id("run_id")?,
        step_key: row.text("step_key")?,
        signed_at: row.timestamp("signed_at")?,
    })
}
