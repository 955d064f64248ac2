//! The `evm` executor: contract reads and exactly-once transactions on an EVM chain
//! (Base, anvil, …) over JSON-RPC, with keys that never leave the process.
//!
//! # Exactly-once transactions
//!
//! The recipe is the `cosmos` executor's, with nonces in place of sequences:
//!
//! 1. `sign` — estimates gas (a call that would revert fails here, permanently, with
//!    its decoded reason, before anything is reserved), takes EIP-1559 fees from the
//!    node (capped by `max_fee_per_gas` / `max_priority_fee_per_gas`), **reserves a
//!    nonce durably** in the engine's [`NonceStore`] for this step (scope
//!    `evm:{chain}:{address}`, holder = the step's idempotency key; the lowest nonce
//!    at or above the node's pending count that no other holder has), and signs. Its
//!    output — the raw transaction and its hash — is journaled *before* anything is
//!    sent. Two runs, or two workers, never sign different transactions with one
//!    nonce; a re-executed `sign` step gets its own nonce back.
//! 2. `broadcast {raw_tx}` — sends exactly those bytes and waits for the receipt with
//!    `confirmations` blocks. A resumed run re-sends the same bytes: "already known",
//!    and "nonce too low" when the receipt of *our* hash exists, are success. A mined
//!    revert is the permanent [`TX_REVERTED`] failure with the reason (the call
//!    replayed on the block's parent state).
//! 3. [`NONCE_TAKEN`] (the nonce is used by another transaction of the signer, which
//!    Morpheus's reservations make possible only for transactions signed elsewhere):
//!    the workflow asks `tx_status` and signs anew only if [`can_resign`] says the
//!    persisted bytes can never land (not mined *and* the signer's mined nonce is past
//!    theirs). [`TX_REJECTED`] (the node refused it: it is in no mempool): the workflow
//!    may `release_nonce` so the next transaction does not leave a gap.
//!
//! # Payload contract
//!
//! A payload is a JSON object with `"op"` (see [`EvmRequest`]). Addresses are `0x…`
//! hex; amounts are decimal strings of base units (integers exceed JSON's 2^53).
//! Functions are Solidity signatures (`approve(address,uint256)`, or with names and
//! `returns (…)` to decode results) or JSON ABI items (`abi`).
//!
//! | op | payload | output |
//! |---|---|---|
//! | `chain_info` | `{}` | [`ChainInfo`] `{"chain_id": 31337, "block_number": 12, "address": "0x…"}` |
//! | `call` | `{"to", "function" \| "abi", "args"?: [...], "from"?}` | [`CallResult`] `{"result": ["1000000"], "raw": "0x…"}` |
//! | `erc20_balance` | `{"token", "owner"?}` | [`TokenAmount`] `{"token", "owner", "amount": "100000000"}` |
//! | `allowance` | `{"token", "owner"?, "spender"}` | [`TokenAmount`] with `spender` |
//! | `decimals` | `{"token"}` | [`TokenDecimals`] `{"token", "decimals": 6}` |
//! | `sign` | `{"to", "function" \| "abi" \| "data", "args"?, "value"?, "gas_limit"?}` | [`SignedEvmTx`] `{"raw_tx", "tx_hash", "from", "to", "nonce", "chain_id", "gas_limit", "max_fee_per_gas", "max_priority_fee_per_gas", "value"}` |
//! | `broadcast` | `{"raw_tx"}` | [`EvmReceipt`] `{"tx_hash", "block_number", "gas_used", "confirmations", "logs", "already_known"}` |
//! | `tx_status` | `{"tx_hash"}` | [`EvmTxStatus`] `{"tx_hash", "found", "block_number", "success", "signer_nonce"}` |
//! | `release_nonce` | `{"raw_tx"}` | [`Released`] `{"nonce", "released"}` |
//!
//! ERC-20 writes are `sign` calls: `{"op": "sign", "to": usdc, "function":
//! "approve(address,uint256)", "args": [spender, "60000000"]}`.
//!
//! # Errors
//!
//! Retryable: the node is unreachable, slow or busy (after in-process retries with
//! backoff), a receipt does not arrive within `timeouts.receipt` (sending the same
//! bytes again is safe), the run's lease lapsed before `broadcast` sent anything.
//! Permanent: a bad payload, no key, chain id mismatch (checked against the node
//! before the first operation), and the coded failures, each with a message prefix
//! that [`Executor::error_code`] reads back on a replay: [`CALL_REVERTED`]
//! (`call reverted:`), [`TX_REVERTED`] (`tx reverted:`), [`TX_REJECTED`]
//! (`tx rejected:`), [`NONCE_TAKEN`] (`nonce taken:`).
//!
//! # Crash points
//!
//! `broadcast` passes the crash points `evm.broadcast.before_send`,
//! `evm.broadcast.after_send` and `evm.broadcast.after_receipt` (see
//! [`morpheus_engine::crash`]), which the crash-matrix tests arm.
//!
//! # Keys
//!
//! A hex private key or a BIP-39 mnemonic (derived at `hd_path`, default
//! `m/44'/60'/0'/0/0`), in an environment variable or a file whose *name* is
//! configured ([`KeySource`]), read once at start-up. No output, error or log line
//! contains it.

mod abi;
mod config;
mod ops;
pub mod relayers;

use std::sync::{Arc, OnceLock};

use alloy::signers::local::{coins_bip39::English, MnemonicBuilder, PrivateKeySigner};
use async_trait::async_trait;
use morpheus_engine::{
    ErrorCode, ExecError, ExecOutput, ExecRequest, Executor, NonceStore, StepError,
};
use zeroize::Zeroizing;

pub use config::{EvmConfig, EvmConfigError, EvmTimeouts, KeySource};
pub use ops::{
    can_resign, CallResult, ChainInfo, EvmLog, EvmLogs, EvmReceipt, EvmRequest, EvmTxStatus,
    Released, SignedEvmTx, TokenAmount, TokenDecimals, CALL_REVERTED, CALL_REVERTED_PREFIX,
    NONCE_TAKEN, NONCE_TAKEN_PREFIX, TX_REJECTED, TX_REJECTED_PREFIX, TX_REVERTED,
    TX_REVERTED_PREFIX,
};

use ops::{Call, Client};

/// Executor of kind `"evm"` (see the [module docs](self) for its operations).
#[derive(Clone)]
pub struct EvmExecutor {
    client: Arc<Client>,
}

impl std::fmt::Debug for EvmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmExecutor")
            .field("rpc_url", &self.client.settings.rpc_url.as_str())
            .field("chain_id", &self.client.settings.chain_id)
            .field("address", &self.address())
            .finish()
    }
}

/// Why an `evm` executor could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvmSetupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] EvmConfigError),
    /// The key could not be loaded (the message says where it was looked for, never
    /// what it holds).
    #[error("evm key: {0}")]
    Key(String),
}

impl EvmExecutor {
    /// Checks `config` and loads the key it points to (if any). Nonces are reserved in
    /// `nonces` (the engine's database: pass the `World`).
    pub fn new(config: &EvmConfig, nonces: Arc<dyn NonceStore>) -> Result<Self, EvmSetupError> {
        let signer = match &config.key {
            Some(source) => Some(load_signer(source, &config.hd_path)?),
            None => None,
        };
        Self::build(config, signer, nonces)
    }

    /// Like [`EvmExecutor::new`] with a key the caller already holds (the configured
    /// `key` is ignored).
    pub fn with_signer(
        config: &EvmConfig,
        signer: PrivateKeySigner,
        nonces: Arc<dyn NonceStore>,
    ) -> Result<Self, EvmSetupError> {
        Self::build(config, Some(signer), nonces)
    }

    fn build(
        config: &EvmConfig,
        signer: Option<PrivateKeySigner>,
        nonces: Arc<dyn NonceStore>,
    ) -> Result<Self, EvmSetupError> {
        let settings = config.settings()?;
        let provider = ops::provider(&settings).map_err(EvmConfigError)?;
        Ok(Self {
            client: Arc::new(Client {
                settings,
                provider,
                signer: signer.map(Arc::new),
                nonces,
                chain_id_checked: OnceLock::new(),
                audit: None,
                relayers: None,
            }),
        })
    }

    /// Records every transaction this executor signs in `audit` (the key audit), before
    /// the signed bytes are returned. Call right after building the executor.
    pub fn with_signature_audit(mut self, audit: crate::audit::SignatureAudit) -> Self {
        Arc::get_mut(&mut self.client)
            .expect("with_signature_audit is called on a freshly built executor")
            .audit = Some(audit);
        self
    }

    /// Lets `sign` name a relayer key (`relayer = "<id>"`): keys from `documents`,
    /// opened with the passphrase in `passphrase`. Call right after building the executor.
    pub fn with_relayer_keys(
        mut self,
        documents: morpheus_engine::Documents,
        passphrase: crate::cosmos::ephemeral::PassphraseSource,
    ) -> Self {
        Arc::get_mut(&mut self.client)
            .expect("with_relayer_keys is called on a freshly built executor")
            .relayers = Some(relayers::RelayerKeyring::new(documents, passphrase));
        self
    }

    /// The executor's own address (checksummed), if it has a key.
    pub fn address(&self) -> Option<String> {
        self.client
            .signer
            .as_ref()
            .map(|signer| signer.address().to_checksum(None))
    }

    /// Runs one operation: [`Executor::call`] with a typed payload.
    pub async fn execute(
        &self,
        request: EvmRequest,
        call: &ExecRequest,
    ) -> Result<serde_json::Value, StepError> {
        let context = Call {
            idempotency_key: &call.idempotency_key,
            lease: &call.lease,
            deadline: call.deadline,
            logs: &call.logs,
        };
        self.client.run(request, &context).await
    }
}

/// Loads the key `source` points to.
pub fn load_signer(source: &KeySource, hd_path: &str) -> Result<PrivateKeySigner, EvmSetupError> {
    let secret = crate::key_source::read_secret(source).map_err(EvmSetupError::Key)?;
    match source {
        KeySource::HexKeyEnv(_) | KeySource::HexKeyFile(_) => secret
            .trim()
            .parse::<PrivateKeySigner>()
            .map_err(|_| EvmSetupError::Key(format!("{source}: not a 32-byte hex private key"))),
        KeySource::MnemonicEnv(_) | KeySource::MnemonicFile(_) => {
            let phrase = Zeroizing::new(
                secret
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            MnemonicBuilder::<English>::default()
                .phrase(phrase.as_str())
                .derivation_path(hd_path)
                .map_err(|_| {
                    EvmSetupError::Key(format!("hd path '{hd_path}' is not a BIP-32 path"))
                })?
                .build()
                .map_err(|_| {
                    EvmSetupError::Key(format!("{source}: not a valid BIP-39 English mnemonic"))
                })
        }
    }
}

#[async_trait]
impl Executor for EvmExecutor {
    fn kind(&self) -> &str {
        "evm"
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        let payload: EvmRequest = serde_json::from_value(request.payload.clone())
            .map_err(|error| StepError::permanent(format!("invalid evm payload: {error}")))?;
        self.execute(payload, &request).await
    }

    fn error_code(&self, message: &str) -> Option<ErrorCode> {
        ops::error_code(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BIP-39 test vector (public; anvil's default accounts derive from another).
    const ANVIL_MNEMONIC: &str = "test test test test test test test test test test test junk";

    #[test]
    fn keys_load_from_env_and_never_appear_in_errors() {
        std::env::set_var("MORPHEUS_TEST_EVM_MNEMONIC", ANVIL_MNEMONIC);
        let signer = load_signer(
            &KeySource::MnemonicEnv("MORPHEUS_TEST_EVM_MNEMONIC".into()),
            "m/44'/60'/0'/0/0",
        )
        .unwrap();
        // anvil's well-known account 0.
        assert_eq!(
            signer.address().to_checksum(None),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        std::env::set_var("MORPHEUS_TEST_EVM_HEX", "0xnot-a-secret-key-zebra");
        let error = load_signer(&KeySource::HexKeyEnv("MORPHEUS_TEST_EVM_HEX".into()), "")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a 32-byte hex private key"), "{error}");
        assert!(!error.contains("zebra"), "{error}");
    }
}
