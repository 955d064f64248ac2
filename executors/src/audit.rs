//! The key audit as executors write it: every transaction an executor signs is recorded
//! in the engine's [`SignatureStore`] *before* the signed bytes leave the executor, so
//! no signature can reach a chain unrecorded. A record names the key by its reference
//! (`mnemonic in $AKASH_MNEMONIC`), never its material.

use std::sync::Arc;

use morpheus_engine::{NewSignature, RunId, SignatureStore, StepError};

/// Where one executor records its signatures, and under which key reference.
#[derive(Clone)]
pub struct SignatureAudit {
    store: Arc<dyn SignatureStore>,
    key_id: String,
}

impl std::fmt::Debug for SignatureAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureAudit")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// What was signed, for one audit record.
pub(crate) struct Signed<'a> {
    /// `evm:<chain id>` or `cosmos:<chain id>`.
    pub chain: String,
    /// The signed transaction's hash.
    pub tx_hash: &'a str,
    /// The signing address.
    pub address: &'a str,
    /// What the transaction does.
    pub message_types: Vec<String>,
    /// The signing step's idempotency key (`<run id>/<step key>` for a run's step).
    pub idempotency_key: &'a str,
    /// The key's id when it is not the executor's configured one (`ephemeral:eph-…`).
    pub key_id: Option<String>,
}

impl SignatureAudit {
    /// Records signatures in `store`, naming the key `key_id` (a reference, never the
    /// key itself).
    pub fn new(store: Arc<dyn SignatureStore>, key_id: impl Into<String>) -> Self {
        Self {
            store,
            key_id: key_id.into(),
        }
    }

    /// Records one signature. A failure to record fails the attempt (retryably): the
    /// signed bytes are not handed out unrecorded.
    pub(crate) async fn record(&self, signed: Signed<'_>) -> Result<(), StepError> {
        let (run_id, step_key) = split_idempotency_key(signed.idempotency_key);
        self.store
            .record_signature(&NewSignature {
                chain: signed.chain,
                tx_hash: signed.tx_hash.to_owned(),
                key_id: signed.key_id.unwrap_or_else(|| self.key_id.clone()),
                address: signed.address.to_owned(),
                message_types: signed.message_types,
                run_id,
                step_key,
            })
            .await
            .map(drop)
            .map_err(|error| StepError::retryable(format!("key audit: {error}")))
    }
}

/// `<run id>/<step key>` → (run, step); any other key is kept whole as the step.
fn split_idempotency_key(key: &str) -> (Option<RunId>, String) {
    match key.split_once('/') {
        Some((run, step)) => match run.parse::<RunId>() {
            Ok(run) => (Some(run), step.to_owned()),
            Err(_) => (None, key.to_owned()),
        },
        None => (None, key.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_steps_split_and_other_keys_stay_whole() {
        let run = RunId::new();
        let (parsed, step) = split_idempotency_key(&format!("{run}/swap/approve/sign"));
        assert_eq!((parsed, step.as_str()), (Some(run), "swap/approve/sign"));
        assert_eq!(
            split_idempotency_key("cli-1/sign"),
            (None, "cli-1/sign".to_owned())
        );
        assert_eq!(split_idempotency_key("plain"), (None, "plain".to_owned()));
    }
}
