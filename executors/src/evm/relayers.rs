//! Relayer keys: EVM keys Morpheus generates for an automation and signs its relayed
//! transactions with. They are kept sealed in the document store (collection
//! [`RELAYER_KEYS_COLLECTION`]) the way ephemeral keys are
//! ([`EphemeralKey::seal`](crate::cosmos::ephemeral::EphemeralKey::seal): age, scrypt,
//! the passphrase by reference), opened in memory by the `evm` executor when a `sign`
//! names one (`relayer = "<id>"`), and never appear in a run's input, output or logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use chrono::{DateTime, Utc};
use morpheus_engine::{Documents, StepError};
use serde::{Deserialize, Serialize};

use crate::cosmos::ephemeral::{EphemeralKey, PassphraseSource};

/// The document collection relayer keys are kept in (key: the key's id).
pub const RELAYER_KEYS_COLLECTION: &str = "relayer_keys";

/// One relayer key as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayerKeyRecord {
    /// `rly-…`, unique.
    pub id: String,
    /// Its address (`0x…`, checksummed).
    pub address: String,
    /// What it relays for (an automation's id).
    pub owner: String,
    /// The key, sealed; `None` once destroyed.
    pub sealed_key: Option<String>,
    /// When it was generated.
    pub created_at: DateTime<Utc>,
}

/// A fresh relayer key: its address and the key sealed under `passphrase`.
pub fn generate_relayer_key(passphrase: &str) -> Result<(String, String), String> {
    let key = EphemeralKey::generate();
    let signer = PrivateKeySigner::from_bytes(&B256::from(*key.secret()))
        .map_err(|error| format!("relayer key: {error}"))?;
    Ok((signer.address().to_checksum(None), key.seal(passphrase)?))
}

/// The relayer keys as the `evm` executor signs with them: read from the document
/// store, opened with the configured passphrase (once per key, in memory).
pub struct RelayerKeyring {
    documents: Documents,
    passphrase: PassphraseSource,
    opened: Mutex<HashMap<String, Arc<PrivateKeySigner>>>,
}

impl std::fmt::Debug for RelayerKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayerKeyring").finish_non_exhaustive()
    }
}

impl RelayerKeyring {
    /// Keys in `documents`, sealed under the passphrase in `passphrase`.
    pub fn new(documents: Documents, passphrase: PassphraseSource) -> Self {
        Self {
            documents,
            passphrase,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The signer of relayer key `id`. An unknown or destroyed key is a permanent error.
    pub async fn signer(&self, id: &str) -> Result<Arc<PrivateKeySigner>, StepError> {
        if let Some(signer) = self.opened.lock().expect("not poisoned").get(id) {
            return Ok(signer.clone());
        }
        let record = self
            .documents
            .get::<RelayerKeyRecord>(RELAYER_KEYS_COLLECTION, id)
            .await
            .map_err(|error| StepError::retryable(format!("relayer keys: {error}")))?
            .ok_or_else(|| StepError::permanent(format!("relayer key {id} is unknown")))?
            .value;
        let sealed = record
            .sealed_key
            .ok_or_else(|| StepError::permanent(format!("relayer key {id} was destroyed")))?;
        let passphrase = self.passphrase.read().map_err(StepError::permanent)?;
        let key_id = id.to_owned();
        // scrypt takes a tenth of a second: off the async threads.
        let signer = tokio::task::spawn_blocking(move || {
            let key = EphemeralKey::open(&sealed, &passphrase)
                .map_err(|error| format!("relayer key {key_id}: {error}"))?;
            PrivateKeySigner::from_bytes(&B256::from(*key.secret()))
                .map_err(|error| format!("relayer key {key_id}: {error}"))
        })
        .await
        .map_err(|error| StepError::retryable(format!("opening the relayer key: {error}")))?
        .map_err(StepError::permanent)?;
        if signer.address().to_checksum(None) != record.address {
            return Err(StepError::permanent(format!(
                "relayer key {id} opens to {}, not its recorded address {}",
                signer.address(),
                record.address
            )));
        }
        let signer = Arc::new(signer);
        self.opened
            .lock()
            .expect("not poisoned")
            .insert(id.to_owned(), signer.clone());
        Ok(signer)
    }
}
