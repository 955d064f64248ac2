//! The operations of the `evm` executor: payloads, outputs, and how each one talks to
//! the node. The contract is described in the [module docs](super).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, Transaction as _, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{TransactionInput, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use morpheus_engine::crash::crash_point;
use morpheus_engine::{ErrorCode, LeaseCheck, LogLevel, LogSink, NonceStore, RunId, StepError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::abi;
use super::config::EvmSettings;

/// A `broadcast` failure: the transaction was mined and reverted (gas paid, nonce
/// used, no effect). Its message starts with [`TX_REVERTED_PREFIX`] and holds the
/// decoded revert reason.
pub const TX_REVERTED: ErrorCode = ErrorCode::from_static("tx_reverted");

/// A `call` or `sign` failure: executing the call against the node's latest state
/// reverts (nothing was signed or sent). Its message starts with
/// [`CALL_REVERTED_PREFIX`] and holds the decoded revert reason.
pub const CALL_REVERTED: ErrorCode = ErrorCode::from_static("call_reverted");

/// A `broadcast` failure: the node refused the transaction (insufficient funds for
/// gas, fee below the base fee, …); it is in no mempool. See `release_nonce`.
pub const TX_REJECTED: ErrorCode = ErrorCode::from_static("tx_rejected");

/// A `broadcast` failure: the transaction's nonce is used by another transaction of
/// the signer (mined, or pending with a higher fee). Ask `tx_status`, then sign anew
/// only if [`can_resign`] says this one can never land.
pub const NONCE_TAKEN: ErrorCode = ErrorCode::from_static("nonce_taken");

/// Messages of [`TX_REVERTED`] failures start with this.
pub const TX_REVERTED_PREFIX: &str = "tx reverted:";
/// Messages of [`CALL_REVERTED`] failures start with this.
pub const CALL_REVERTED_PREFIX: &str = "call reverted:";
/// Messages of [`TX_REJECTED`] failures start with this.
pub const TX_REJECTED_PREFIX: &str = "tx rejected:";
/// Messages of [`NONCE_TAKEN`] failures start with this.
pub const NONCE_TAKEN_PREFIX: &str = "nonce taken:";

const CODED_PREFIXES: [(ErrorCode, &str); 4] = [
    (TX_REVERTED, TX_REVERTED_PREFIX),
    (CALL_REVERTED, CALL_REVERTED_PREFIX),
    (TX_REJECTED, TX_REJECTED_PREFIX),
    (NONCE_TAKEN, NONCE_TAKEN_PREFIX),
];

fn coded_failure(code: ErrorCode, detail: impl std::fmt::Display) -> StepError {
    let prefix = CODED_PREFIXES
        .iter()
        .find_map(|(known, prefix)| (*known == code).then_some(*prefix))
        .expect("every code has a prefix");
    StepError::permanent(format!("{prefix} {detail}")).with_code(code)
}

/// The code of a failure this executor reported, read back from its message.
pub(crate) fn error_code(message: &str) -> Option<ErrorCode> {
    CODED_PREFIXES
        .iter()
        .find_map(|(code, prefix)| message.starts_with(prefix).then(|| code.clone()))
}

/// Whether a persisted signed transaction provably can never land, so signing a new
/// one cannot pay twice: it is not on chain, *and* the signer's mined nonce count is
/// past its nonce (another transaction used that nonce). Feed it `found` and
/// `signer_nonce` from `tx_status` and `nonce` from `sign`'s output.
///
/// ```
/// use morpheus_executors::evm::can_resign;
/// assert!(!can_resign(true, 9, 4));  // mined: never sign again
/// assert!(!can_resign(false, 4, 4)); // may still land: broadcast the same bytes again
/// assert!(can_resign(false, 5, 4));  // nonce 4 was used by something else
/// ```
pub fn can_resign(tx_found: bool, signer_nonce: u64, tx_nonce: u64) -> bool {
    !tx_found && signer_nonce > tx_nonce
}

/// A payload of the `evm` executor, selected by `"op"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvmRequest {
    /// The node's chain id and latest block, and the executor's address → [`ChainInfo`].
    ChainInfo,
    /// The logs of blocks `from_block..=to_block` matching `address` and `topics`
    /// (`eth_getLogs`; a `null` topic matches anything) → [`EvmLogs`].
    Logs {
        /// The emitting contract, if one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Up to four topics, `0x…` or `null`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        topics: Vec<Value>,
        /// The first block.
        from_block: u64,
        /// The last block.
        to_block: u64,
    },
    /// A read-only contract call (`eth_call`) → [`CallResult`].
    Call {
        /// The contract.
        to: String,
        /// A Solidity signature, `balanceOf(address)` or `function balanceOf(address
        /// owner) returns (uint256)` (with `returns` the result is decoded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
        /// Or a JSON ABI function item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        abi: Option<Value>,
        /// The arguments, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<Value>,
        /// Call as this address (default: the executor's, if it has a key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// An ERC-20 balance → [`TokenAmount`].
    Erc20Balance {
        /// The token contract.
        token: String,
        /// Default: the executor's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// An ERC-20 allowance → [`TokenAmount`] (with `spender`).
    Allowance {
        /// The token contract.
        token: String,
        /// Default: the executor's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Who may spend.
        spender: String,
    },
    /// An ERC-20 token's decimals → [`TokenDecimals`].
    Decimals {
        /// The token contract.
        token: String,
    },
    /// Signs (does not send) a transaction → [`SignedEvmTx`]. Its nonce is reserved
    /// durably for this step (idempotency key), so no other transaction Morpheus
    /// signs for this account uses it. `approve(address,uint256)` and
    /// `transfer(address,uint256)` make the ERC-20 writes.
    Sign {
        /// The contract (or account) to send to.
        to: String,
        /// A Solidity signature (see `call`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
        /// Or a JSON ABI function item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        abi: Option<Value>,
        /// The arguments, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<Value>,
        /// Or the calldata itself (`0x…`), as a route API returns it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// Wei sent along (decimal string; default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// A fixed gas limit instead of `eth_estimateGas` × `gas_multiplier`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gas_limit: Option<u64>,
        /// Sign with this relayer key (its id) instead of the configured key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relayer: Option<String>,
    },
    /// Sends exactly these bytes and waits for the receipt → [`EvmReceipt`].
    Broadcast {
        /// `raw_tx` of a [`SignedEvmTx`].
        raw_tx: String,
    },
    /// Whether a transaction is mined, and the signer's nonce → [`EvmTxStatus`].
    TxStatus {
        /// `0x…` hash.
        tx_hash: String,
        /// Whose nonce to report: this relayer key's (default: the configured key's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relayer: Option<String>,
    },
    /// Gives back the nonce of a signed transaction that never reached a mempool (the
    /// node refused it), so the next transaction does not leave a gap → [`Released`].
    /// Refused while the node knows the transaction.
    ReleaseNonce {
        /// `raw_tx` of the [`SignedEvmTx`].
        raw_tx: String,
        /// The relayer key that signed it, if not the configured key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relayer: Option<String>,
    },
}

/// One log of `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvmLog {
    /// The emitting contract.
    pub address: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Its data, `0x…`.
    pub data: String,
    /// The block.
    pub block_number: u64,
    /// The block's hash.
    pub block_hash: String,
    /// The transaction.
    pub tx_hash: String,
    /// Its index in the block.
    pub log_index: u64,
}

/// Output of `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvmLogs {
    /// The logs, in chain order.
    pub logs: Vec<EvmLog>,
}

/// Output of `chain_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// The node's chain id (equal to the configured one, or the call failed).
    pub chain_id: u64,
    /// The latest block.
    pub block_number: u64,
    /// The executor's address, if it has a key.
    pub address: Option<String>,
}

/// Output of `call`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// The decoded outputs, when the function declares them (integers as strings).
    pub result: Vec<Value>,
    /// What the call returned, `0x…`.
    pub raw: String,
}

/// Output of `erc20_balance` and `allowance`: base units as a decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAmount {
    /// The token contract.
    pub token: String,
    /// The holder.
    pub owner: String,
    /// The spender (`allowance` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spender: Option<String>,
    /// Base units.
    pub amount: String,
}

/// Output of `decimals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDecimals {
    /// The token contract.
    pub token: String,
    /// Its decimals.
    pub decimals: u8,
}

/// Output of `sign`: public data only (the signed bytes are what will be sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEvmTx {
    /// The EIP-2718 encoded signed transaction, `0x…`.
    pub raw_tx: String,
    /// Its hash.
    pub tx_hash: String,
    /// The signer.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The reserved nonce.
    pub nonce: u64,
    /// The chain id it is signed for.
    pub chain_id: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Wei per gas, at most.
    pub max_fee_per_gas: String,
    /// Tip per gas, at most.
    pub max_priority_fee_per_gas: String,
    /// Wei sent along.
    pub value: String,
}

/// Output of `broadcast`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvmReceipt {
    /// The transaction.
    pub tx_hash: String,
    /// The block that included it.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// Blocks on top of (and including) its block when it was reported.
    pub confirmations: u64,
    /// How many logs it emitted.
    pub logs: usize,
    /// The node already had it (a resumed run re-sent the same bytes).
    pub already_known: bool,
}

/// Output of `tx_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvmTxStatus {
    /// The transaction.
    pub tx_hash: String,
    /// Whether it is mined.
    pub found: bool,
    /// Its block, when mined.
    pub block_number: Option<u64>,
    /// Whether it succeeded, when mined.
    pub success: Option<bool>,
    /// The executor's mined nonce count (`eth_getTransactionCount(latest)`).
    pub signer_nonce: u64,
}

/// Output of `release_nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// The nonce.
    pub nonce: u64,
    /// Whether a reservation was given back (false: none was held).
    pub released: bool,
}

/// What an operation needs from the step calling it.
pub(crate) struct Call<'a> {
    pub idempotency_key: &'a str,
    pub lease: &'a LeaseCheck,
    pub deadline: Option<Instant>,
    pub logs: &'a LogSink,
}

/// The shared state of an executor.
pub(crate) struct Client {
    pub settings: EvmSettings,
    pub provider: RootProvider,
    pub signer: Option<Arc<PrivateKeySigner>>,
    pub nonces: Arc<dyn NonceStore>,
    pub chain_id_checked: OnceLock<()>,
    /// Where signatures are recorded before they leave the executor, if anywhere.
    pub audit: Option<crate::audit::SignatureAudit>,
    /// Relayer keys, when the executor has the document store.
    pub relayers: Option<super::relayers::RelayerKeyring>,
}

type RpcFailure = RpcError<TransportErrorKind>;

/// What a signed call does, for the key audit: the function as given (`approve(address,
/// uint256)`), an ABI item's name, the selector of raw data, or a plain value transfer.
fn call_description(function: Option<&str>, abi: Option<&Value>, data: Option<&str>) -> String {
    if let Some(function) = function {
        return function.trim().to_owned();
    }
    if let Some(name) = abi
        .and_then(|item| item.get("name"))
        .and_then(Value::as_str)
    {
        return name.to_owned();
    }
    match data.map(|data| data.trim().trim_start_matches("0x")) {
        Some(hex) if hex.len() >= 8 => format!("call 0x{}", &hex[..8]),
        Some(hex) if !hex.is_empty() => format!("call 0x{hex}"),
        _ => "value transfer".to_owned(),
    }
}

/// Whether an RPC failure is worth repeating in-process: the transport failed, or
/// the node said it is busy. A JSON-RPC error answer is the node's verdict.
fn transient(error: &RpcFailure) -> bool {
    match error {
        RpcError::Transport(kind) => !matches!(kind, TransportErrorKind::MissingBatchResponse(_)),
        RpcError::ErrorResp(payload) => {
            payload.code == -32005 || payload.message.to_lowercase().contains("rate limit")
        }
        RpcError::NullResp | RpcError::DeserError { .. } => true,
        _ => false,
    }
}

/// The node's error message for an error answer, else the error itself.
fn describe(error: &RpcFailure) -> String {
    match error {
        RpcError::ErrorResp(payload) => format!("{} (code {})", payload.message, payload.code),
        other => other.to_string(),
    }
}

fn step_error(what: &str, error: &RpcFailure) -> StepError {
    let message = format!("{what}: {}", describe(error));
    match error {
        RpcError::ErrorResp(payload) if matches!(payload.code, -32602..=-32600) => {
            StepError::permanent(message)
        }
        _ => StepError::retryable(message),
    }
}

/// The decoded revert reason of an error answer that is a revert, if it is one.
fn revert_reason(error: &RpcFailure) -> Option<String> {
    let RpcError::ErrorResp(payload) = error else {
        return None;
    };
    let data = payload.as_revert_data();
    let message = payload.message.to_lowercase();
    if data.is_none() && !message.contains("revert") {
        return None;
    }
    Some(
        data.as_deref()
            .and_then(|data| alloy::sol_types::decode_revert_reason(data))
            .unwrap_or_else(|| payload.message.to_string()),
    )
}

fn parse_address(what: &str, text: &str) -> Result<Address, StepError> {
    text.trim()
        .parse()
        .map_err(|_| StepError::permanent(format!("{what} '{text}' is not a 0x… address")))
}

fn parse_wei(what: &str, text: &str) -> Result<U256, StepError> {
    text.trim()
        .parse::<U256>()
        .map_err(|_| StepError::permanent(format!("{what} '{text}' is not a whole number of wei")))
}

fn hex_bytes(what: &str, text: &str) -> Result<Vec<u8>, StepError> {
    let text = text.trim();
    hex::decode(text.strip_prefix("0x").unwrap_or(text))
        .map_err(|_| StepError::permanent(format!("{what} is not 0x… hex")))
}

fn decode_raw_tx(raw_tx: &str) -> Result<(TxEnvelope, Vec<u8>), StepError> {
    let bytes = hex_bytes("raw_tx", raw_tx)?;
    let envelope = TxEnvelope::decode_2718(&mut bytes.as_slice()).map_err(|error| {
        StepError::permanent(format!(
            "raw_tx is not a signed EIP-2718 transaction: {error}"
        ))
    })?;
    Ok((envelope, bytes))
}

fn out<T: Serialize>(value: T) -> Result<Value, StepError> {
    serde_json::to_value(value)
        .map_err(|error| StepError::permanent(format!("cannot encode the output: {error}")))
}

impl Client {
    pub(crate) async fn run(
        &self,
        request: EvmRequest,
        call: &Call<'_>,
    ) -> Result<Value, StepError> {
        self.check_chain_id(call).await?;
        match request {
            EvmRequest::Logs {
                address,
                topics,
                from_block,
                to_block,
            } => {
                if from_block > to_block {
                    return Err(StepError::permanent(format!(
                        "from_block {from_block} is after to_block {to_block}"
                    )));
                }
                if topics.len() > 4 {
                    return Err(StepError::permanent("at most four topics"));
                }
                for topic in &topics {
                    let ok = match topic {
                        Value::Null => true,
                        Value::String(text) => text.parse::<B256>().is_ok(),
                        Value::Array(any_of) => any_of
                            .iter()
                            .all(|t| t.as_str().is_some_and(|t| t.parse::<B256>().is_ok())),
                        _ => false,
                    };
                    if !ok {
                        return Err(StepError::permanent(format!(
                            "topic {topic} is not a 32-byte 0x… value, a list of them, or null"
                        )));
                    }
                }
                let mut filter = json!({
                    "fromBlock": format!("0x{from_block:x}"),
                    "toBlock": format!("0x{to_block:x}"),
                    "topics": topics,
                });
                if let Some(address) = address {
                    filter["address"] =
                        json!(parse_address("address", &address)?.to_checksum(None));
                }
                let answer: Value = self
                    .rpc("eth_getLogs", call, |p| {
                        let filter = filter.clone();
                        async move {
                            p.raw_request::<_, Value>(
                                std::borrow::Cow::Borrowed("eth_getLogs"),
                                (filter,),
                            )
                            .await
                        }
                    })
                    .await?;
                let hex_number = |value: &Value| {
                    value.as_str().and_then(|text| {
                        u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
                    })
                };
                let mut logs = Vec::new();
                for log in answer.as_array().cloned().unwrap_or_default() {
                    let malformed =
                        || StepError::retryable(format!("eth_getLogs: malformed log {log}"));
                    logs.push(EvmLog {
                        address: log["address"].as_str().ok_or_else(malformed)?.to_owned(),
                        topics: log["topics"]
                            .as_array()
                            .ok_or_else(malformed)?
                            .iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect(),
                        data: log["data"].as_str().unwrap_or("0x").to_owned(),
                        block_number: hex_number(&log["blockNumber"]).ok_or_else(malformed)?,
                        block_hash: log["blockHash"].as_str().ok_or_else(malformed)?.to_owned(),
                        tx_hash: log["transactionHash"]
                            .as_str()
                            .ok_or_else(malformed)?
                            .to_owned(),
                        log_index: hex_number(&log["logIndex"]).ok_or_else(malformed)?,
                    });
                }
                out(EvmLogs { logs })
            }
            EvmRequest::ChainInfo => {
                let block_number = self
                    .rpc("eth_blockNumber", call, |p| async move {
                        p.get_block_number().await
                    })
                    .await?;
                out(ChainInfo {
                    chain_id: self.settings.chain_id,
                    block_number,
                    address: self.signer.as_ref().map(|s| s.address().to_checksum(None)),
                })
            }
            EvmRequest::Call {
                to,
                function,
                abi,
                args,
                from,
            } => {
                let to = parse_address("to", &to)?;
                let function = abi::parse_function(function.as_deref(), abi.as_ref())
                    .map_err(StepError::permanent)?;
                let data = abi::encode_call(&function, &args).map_err(StepError::permanent)?;
                let from = match from {
                    Some(from) => Some(parse_address("from", &from)?),
                    None => self.signer.as_ref().map(|s| s.address()),
                };
                let raw = self.eth_call(to, from, data, call).await?;
                let result = if function.outputs.is_empty() {
                    Vec::new()
                } else {
                    abi::decode_output(&function, &raw).map_err(StepError::permanent)?
                };
                out(CallResult {
                    result,
                    raw: format!("0x{}", hex::encode(&raw)),
                })
            }
            EvmRequest::Erc20Balance { token, owner } => {
                let owner = self.address_or_own(owner)?;
                let amount = self
                    .read_uint(
                        &token,
                        "balanceOf(address) returns (uint256)",
                        &[json!(owner.to_string())],
                        call,
                    )
                    .await?;
                out(TokenAmount {
                    token,
                    owner: owner.to_checksum(None),
                    spender: None,
                    amount: amount.to_string(),
                })
            }
            EvmRequest::Allowance {
                token,
                owner,
                spender,
            } => {
                let owner = self.address_or_own(owner)?;
                let spender_address = parse_address("spender", &spender)?;
                let amount = self
                    .read_uint(
                        &token,
                        "allowance(address,address) returns (uint256)",
                        &[json!(owner.to_string()), json!(spender_address.to_string())],
                        call,
                    )
                    .await?;
                out(TokenAmount {
                    token,
                    owner: owner.to_checksum(None),
                    spender: Some(spender_address.to_checksum(None)),
                    amount: amount.to_string(),
                })
            }
            EvmRequest::Decimals { token } => {
                let decimals = self
                    .read_uint(&token, "decimals() returns (uint8)", &[], call)
                    .await?;
                let decimals = u8::try_from(decimals).map_err(|_| {
                    StepError::permanent(format!("{token} reports decimals {decimals}"))
                })?;
                out(TokenDecimals { token, decimals })
            }
            EvmRequest::Sign {
                to,
                function,
                abi,
                args,
                data,
                value,
                gas_limit,
                relayer,
            } => {
                let to = parse_address("to", &to)?;
                let what = call_description(function.as_deref(), abi.as_ref(), data.as_deref());
                let data = match (data, function.is_some() || abi.is_some()) {
                    (Some(_), true) => {
                        return Err(StepError::permanent("give data or function/abi, not both"))
                    }
                    (Some(data), false) => hex_bytes("data", &data)?,
                    (None, true) => {
                        let function = abi::parse_function(function.as_deref(), abi.as_ref())
                            .map_err(StepError::permanent)?;
                        abi::encode_call(&function, &args).map_err(StepError::permanent)?
                    }
                    (None, false) if !args.is_empty() => {
                        return Err(StepError::permanent("args need a function or abi"))
                    }
                    (None, false) => Vec::new(),
                };
                let value = match value {
                    Some(value) => parse_wei("value", &value)?,
                    None => U256::ZERO,
                };
                let signer = self.signer_for(relayer.as_deref()).await?;
                let signed = self.sign(&signer, to, data, value, gas_limit, call).await?;
                if let Some(audit) = &self.audit {
                    audit
                        .record(crate::audit::Signed {
                            chain: format!("evm:{}", self.settings.chain_id),
                            tx_hash: &signed.tx_hash,
                            address: &signed.from,
                            message_types: vec![format!("{what} to {to}")],
                            idempotency_key: call.idempotency_key,
                            key_id: relayer.as_ref().map(|id| format!("relayer:{id}")),
                        })
                        .await?;
                }
                out(signed)
            }
            EvmRequest::Broadcast { raw_tx } => out(self.broadcast(&raw_tx, call).await?),
            EvmRequest::TxStatus { tx_hash, relayer } => {
                let hash: B256 = tx_hash.trim().parse().map_err(|_| {
                    StepError::permanent(format!("tx_hash '{tx_hash}' is not a 32-byte 0x… hash"))
                })?;
                let receipt = self
                    .rpc("eth_getTransactionReceipt", call, |p| async move {
                        p.get_transaction_receipt(hash).await
                    })
                    .await?;
                let signer = self.signer_for(relayer.as_deref()).await?.address();
                let signer_nonce = self
                    .rpc("eth_getTransactionCount", call, |p| async move {
                        p.get_transaction_count(signer).latest().await
                    })
                    .await?;
                out(EvmTxStatus {
                    tx_hash: format!("{hash}"),
                    found: receipt.is_some(),
                    block_number: receipt.as_ref().and_then(|r| r.block_number),
                    success: receipt.as_ref().map(|r| r.status()),
                    signer_nonce,
                })
            }
            EvmRequest::ReleaseNonce { raw_tx, relayer } => {
                let (envelope, _) = decode_raw_tx(&raw_tx)?;
                let hash = *envelope.tx_hash();
                let known = self
                    .rpc("eth_getTransactionByHash", call, |p| async move {
                        p.get_transaction_by_hash(hash).await
                    })
                    .await?;
                if known.is_some() {
                    return Err(StepError::permanent(format!(
                        "transaction {hash} is known to the node (pending or mined): its nonce stays reserved"
                    )));
                }
                let nonce = envelope.nonce();
                let scope = self.nonce_scope(self.signer_for(relayer.as_deref()).await?.address());
                let holder = self
                    .nonces
                    .nonce_reservations(&scope, nonce as i64)
                    .await
                    .map_err(|error| StepError::retryable(format!("nonce store: {error}")))?
                    .into_iter()
                    .find(|reservation| reservation.nonce == nonce as i64)
                    .map(|reservation| reservation.holder);
                let released = match holder {
                    Some(holder) => self
                        .nonces
                        .release_nonce(&scope, &holder)
                        .await
                        .map_err(|error| StepError::retryable(format!("nonce store: {error}")))?,
                    None => false,
                };
                call.logs.info(format!("nonce {nonce} of {scope} released: {released} (tx {hash} never reached the node)"));
                out(Released { nonce, released })
            }
        }
    }

    fn signer(&self) -> Result<&PrivateKeySigner, StepError> {
        self.signer.as_deref().ok_or_else(|| {
            StepError::permanent(
                "the evm executor has no key configured (key = { hex_key_env = \"…\" })",
            )
        })
    }

    fn address_or_own(&self, address: Option<String>) -> Result<Address, StepError> {
        match address {
            Some(address) => parse_address("owner", &address),
            None => Ok(self.signer()?.address()),
        }
    }

    /// The configured key, or relayer key `relayer`.
    async fn signer_for(&self, relayer: Option<&str>) -> Result<Arc<PrivateKeySigner>, StepError> {
        match relayer {
            None => {
                self.signer()?;
                Ok(self.signer.clone().expect("checked"))
            }
            Some(id) => {
                let keyring = self.relayers.as_ref().ok_or_else(|| {
                    StepError::permanent(format!(
                        "relayer key {id}: this evm executor has no access to the key store"
                    ))
                })?;
                keyring.signer(id).await
            }
        }
    }

    /// `evm:{chain id}:{address}`: one nonce sequence per account and chain.
    fn nonce_scope(&self, address: Address) -> String {
        format!(
            "evm:{}:{}",
            self.settings.chain_id,
            address.to_string().to_lowercase()
        )
    }

    /// One RPC, repeated in-process on transient failures with backoff, bounded by the
    /// call's deadline.
    async fn rpc<T, F, Fut>(&self, what: &str, call: &Call<'_>, request: F) -> Result<T, StepError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcFailure>>,
    {
        self.rpc_answer(what, call, request)
            .await?
            .map_err(|error| step_error(what, &error))
    }

    /// Like [`Client::rpc`], but hands the node's final error back to the caller to
    /// classify; only a passed deadline is an error here.
    async fn rpc_answer<T, F, Fut>(
        &self,
        what: &str,
        call: &Call<'_>,
        request: F,
    ) -> Result<Result<T, RpcFailure>, StepError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcFailure>>,
    {
        use backon::{ExponentialBuilder, Retryable};
        let attempts = self.settings.timeouts.http_attempts;
        let retried = (|| request(self.provider.clone()))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(attempts.saturating_sub(1) as usize),
            )
            .when(transient);
        match call.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), retried)
                .await
                .map_err(|_| StepError::retryable(format!("{what}: the step's deadline passed"))),
            None => Ok(retried.await),
        }
    }

    /// Signing for the wrong chain would be refused late and vaguely; asking first
    /// gives a clear, permanent error.
    async fn check_chain_id(&self, call: &Call<'_>) -> Result<(), StepError> {
        if self.chain_id_checked.get().is_some() {
            return Ok(());
        }
        let node = self
            .rpc(
                "eth_chainId",
                call,
                |p| async move { p.get_chain_id().await },
            )
            .await?;
        if node != self.settings.chain_id {
            return Err(StepError::permanent(format!(
                "chain id mismatch: configured {} but the node at {} reports {node}",
                self.settings.chain_id, self.settings.rpc_url
            )));
        }
        let _ = self.chain_id_checked.set(());
        Ok(())
    }

    async fn eth_call(
        &self,
        to: Address,
        from: Option<Address>,
        data: Vec<u8>,
        call: &Call<'_>,
    ) -> Result<Vec<u8>, StepError> {
        let mut request = TransactionRequest::default()
            .to(to)
            .input(TransactionInput::new(Bytes::from(data)));
        if let Some(from) = from {
            request = request.from(from);
        }
        let answer = self
            .rpc_or_revert("eth_call", call, |p| {
                let request = request.clone();
                async move { p.call(request).await }
            })
            .await?;
        Ok(answer.to_vec())
    }

    /// Like [`Client::rpc`], but a revert is a permanent [`CALL_REVERTED`] failure with
    /// its decoded reason.
    async fn rpc_or_revert<T, F, Fut>(
        &self,
        what: &str,
        call: &Call<'_>,
        request: F,
    ) -> Result<T, StepError>
    where
        F: Fn(RootProvider) -> Fut,
        Fut: Future<Output = Result<T, RpcFailure>>,
    {
        let attempt = || async {
            match request(self.provider.clone()).await {
                Err(error) => match revert_reason(&error) {
                    Some(reason) => Ok(Err(reason)),
                    None => Err(error),
                },
                Ok(value) => Ok(Ok(value)),
            }
        };
        match self.rpc(what, call, |_| attempt()).await? {
            Ok(value) => Ok(value),
            Err(reason) => Err(coded_failure(
                CALL_REVERTED,
                format_args!("{what}: {reason}"),
            )),
        }
    }

    async fn read_uint(
        &self,
        token: &str,
        signature: &str,
        args: &[Value],
        call: &Call<'_>,
    ) -> Result<U256, StepError> {
        let to = parse_address("token", token)?;
        let function = abi::parse_function(Some(signature), None).map_err(StepError::permanent)?;
        let data = abi::encode_call(&function, args).map_err(StepError::permanent)?;
        let raw = self.eth_call(to, None, data, call).await?;
        if raw.len() < 32 {
            return Err(StepError::permanent(format!(
                "{token} answered {signature} with {} bytes: is it an ERC-20 contract?",
                raw.len()
            )));
        }
        Ok(U256::from_be_slice(&raw[..32]))
    }

    async fn sign(
        &self,
        signer: &PrivateKeySigner,
        to: Address,
        data: Vec<u8>,
        value: U256,
        gas_limit: Option<u64>,
        call: &Call<'_>,
    ) -> Result<SignedEvmTx, StepError> {
        let from = signer.address();
        let input = Bytes::from(data);
        // Estimated first: a call that would revert is refused before a nonce is taken.
        let gas_limit = match gas_limit {
            Some(limit) => limit,
            None => {
                let request = TransactionRequest::default()
                    .from(from)
                    .to(to)
                    .value(value)
                    .input(TransactionInput::new(input.clone()));
                let estimate = self
                    .rpc_or_revert("eth_estimateGas", call, |p| {
                        let request = request.clone();
                        async move { p.estimate_gas(request).await }
                    })
                    .await?;
                (estimate as f64 * self.settings.gas_multiplier).ceil() as u64
            }
        };
        let fees = self
            .rpc("fee estimate", call, |p| async move {
                p.estimate_eip1559_fees().await
            })
            .await?;
        let mut max_fee_per_gas = fees.max_fee_per_gas;
        let mut max_priority_fee_per_gas = fees.max_priority_fee_per_gas;
        if let Some(cap) = self.settings.max_fee_per_gas {
            if max_fee_per_gas > cap {
                call.logs.log(
                    LogLevel::Warn,
                    format!("fee estimate {max_fee_per_gas} wei/gas is above max_fee_per_gas {cap}: capped (the transaction waits for a lower base fee)"),
                    None,
                );
                max_fee_per_gas = cap;
            }
        }
        if let Some(cap) = self.settings.max_priority_fee_per_gas {
            max_priority_fee_per_gas = max_priority_fee_per_gas.min(cap);
        }
        max_priority_fee_per_gas = max_priority_fee_per_gas.min(max_fee_per_gas);
        let scope = self.nonce_scope(from);
        let floor = self
            .rpc("eth_getTransactionCount", call, |p| async move {
                p.get_transaction_count(from).pending().await
            })
            .await?;
        let run_id = call
            .idempotency_key
            .split('/')
            .next()
            .and_then(|prefix| prefix.parse::<RunId>().ok());
        let reservation = self
            .nonces
            .reserve_nonce(&scope, call.idempotency_key, floor as i64, run_id)
            .await
            .map_err(|error| StepError::retryable(format!("nonce store: {error}")))?;
        let nonce = reservation.nonce as u64;
        let mut transaction = TxEip1559 {
            chain_id: self.settings.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        };
        let signature = signer
            .sign_transaction_sync(&mut transaction)
            .map_err(|error| StepError::permanent(format!("cannot sign: {error}")))?;
        let envelope = TxEnvelope::from(transaction.into_signed(signature));
        let raw = envelope.encoded_2718();
        let hash = *envelope.tx_hash();
        call.logs.log(
            LogLevel::Info,
            format!("signed tx {hash} to {to} with nonce {nonce} (gas {gas_limit}, max fee {max_fee_per_gas} wei/gas); not sent yet"),
            Some(json!({"tx_hash": hash.to_string(), "nonce": nonce})),
        );
        Ok(SignedEvmTx {
            raw_tx: format!("0x{}", hex::encode(&raw)),
            tx_hash: hash.to_string(),
            from: from.to_checksum(None),
            to: to.to_checksum(None),
            nonce,
            chain_id: self.settings.chain_id,
            gas_limit,
            max_fee_per_gas: max_fee_per_gas.to_string(),
            max_priority_fee_per_gas: max_priority_fee_per_gas.to_string(),
            value: value.to_string(),
        })
    }

    async fn broadcast(&self, raw_tx: &str, call: &Call<'_>) -> Result<EvmReceipt, StepError> {
        let (envelope, bytes) = decode_raw_tx(raw_tx)?;
        if envelope.chain_id() != Some(self.settings.chain_id) {
            return Err(StepError::permanent(format!(
                "raw_tx is signed for chain {:?}, this executor is for chain {}",
                envelope.chain_id(),
                self.settings.chain_id
            )));
        }
        let hash = *envelope.tx_hash();
        // Already mined (a resumed run): nothing to send.
        if self.receipt(hash, call).await?.is_some() {
            call.logs.info(format!("tx {hash} is already mined"));
            return self.finish(&envelope, true, call).await;
        }
        // Checked at the last moment: a worker frozen past its lease sends nothing.
        if !call.lease.is_held() {
            return Err(StepError::retryable(format!(
                "the run's lease lapsed before broadcasting tx {hash}; nothing was sent"
            )));
        }
        crash_point("evm.broadcast.before_send", call.idempotency_key);
        let sent = self
            .rpc_answer("eth_sendRawTransaction", call, |p| {
                let bytes = bytes.clone();
                async move {
                    p.send_raw_transaction(&bytes)
                        .await
                        .map(|pending| *pending.tx_hash())
                }
            })
            .await?;
        let already_known = match sent {
            Ok(_) => false,
            Err(RpcError::ErrorResp(payload)) => {
                let message = payload.message.to_string();
                let lower = message.to_lowercase();
                if lower.contains("already known") || lower.contains("already imported") {
                    true
                } else if lower.contains("nonce too low")
                    || lower.contains("replacement transaction underpriced")
                {
                    // The same bytes may have been mined earlier.
                    if self.receipt(hash, call).await?.is_some() {
                        return self.finish(&envelope, true, call).await;
                    }
                    let nonce = envelope.nonce();
                    return Err(coded_failure(
                        NONCE_TAKEN,
                        format_args!(
                            "{message} (tx {hash} with nonce {nonce} is not mined; ask tx_status and sign anew only once the signer's nonce is past {nonce})"
                        ),
                    ));
                } else {
                    return Err(coded_failure(
                        TX_REJECTED,
                        format_args!("{message} (code {}, tx {hash})", payload.code),
                    ));
                }
            }
            Err(other) => return Err(step_error("eth_sendRawTransaction", &other)),
        };
        call.logs.log(
            LogLevel::Info,
            format!(
                "broadcast tx {hash}: {}",
                if already_known {
                    "already known to the node"
                } else {
                    "accepted"
                }
            ),
            Some(json!({"tx_hash": hash.to_string()})),
        );
        crash_point("evm.broadcast.after_send", call.idempotency_key);
        self.finish(&envelope, already_known, call).await
    }

    async fn receipt(
        &self,
        hash: B256,
        call: &Call<'_>,
    ) -> Result<Option<alloy::rpc::types::TransactionReceipt>, StepError> {
        self.rpc("eth_getTransactionReceipt", call, |p| async move {
            p.get_transaction_receipt(hash).await
        })
        .await
    }

    /// Waits for the receipt and its confirmations; a revert is a permanent
    /// [`TX_REVERTED`] failure with the reason the node gives when the call is replayed.
    async fn finish(
        &self,
        envelope: &TxEnvelope,
        already_known: bool,
        call: &Call<'_>,
    ) -> Result<EvmReceipt, StepError> {
        let hash = *envelope.tx_hash();
        let timeouts = &self.settings.timeouts;
        let until = Instant::now() + timeouts.receipt;
        let until = call.deadline.map_or(until, |deadline| deadline.min(until));
        loop {
            if let Some(receipt) = self.receipt(hash, call).await? {
                let block = receipt.block_number.unwrap_or_default();
                let latest = self
                    .rpc("eth_blockNumber", call, |p| async move {
                        p.get_block_number().await
                    })
                    .await?;
                let confirmations = latest.saturating_sub(block) + 1;
                if confirmations >= self.settings.confirmations {
                    if !receipt.status() {
                        let reason = self.replay_revert(envelope, block, call).await;
                        return Err(coded_failure(
                            TX_REVERTED,
                            format_args!("{reason} (tx {hash} in block {block})"),
                        ));
                    }
                    crash_point("evm.broadcast.after_receipt", call.idempotency_key);
                    return Ok(EvmReceipt {
                        tx_hash: hash.to_string(),
                        block_number: block,
                        gas_used: receipt.gas_used,
                        confirmations,
                        logs: receipt.inner.logs().len(),
                        already_known,
                    });
                }
            }
            if Instant::now() >= until {
                return Err(StepError::retryable(format!(
                    "tx {hash} has no receipt with {} confirmation(s) after {:?}; broadcasting the same bytes again is safe",
                    self.settings.confirmations, timeouts.receipt
                )));
            }
            tokio::time::sleep(timeouts.receipt_poll).await;
        }
    }

    /// The revert reason of a mined, failed transaction: its call replayed on the state
    /// before its block.
    async fn replay_revert(&self, envelope: &TxEnvelope, block: u64, call: &Call<'_>) -> String {
        let Some(to) = envelope.to() else {
            return "reverted".into();
        };
        // Our own transactions only: the executor signs what it broadcasts.
        let from = self.signer.as_ref().map(|signer| signer.address());
        let mut request = TransactionRequest::default()
            .to(to)
            .value(envelope.value())
            .input(TransactionInput::new(envelope.input().clone()));
        if let Some(from) = from {
            request = request.from(from);
        }
        let result = self
            .provider
            .call(request)
            .block(block.saturating_sub(1).into())
            .await;
        match result {
            Err(error) => {
                revert_reason(&error).unwrap_or_else(|| format!("reverted ({})", describe(&error)))
            }
            Ok(_) => {
                call.logs.log(
                    LogLevel::Warn,
                    format!(
                        "tx {} reverted but its replay succeeds: reason unknown",
                        envelope.tx_hash()
                    ),
                    None,
                );
                "reverted (the replay succeeded, so the reason is unknown)".into()
            }
        }
    }
}

/// Builds the HTTP provider with the configured request timeout.
pub(crate) fn provider(settings: &EvmSettings) -> Result<RootProvider, String> {
    let http = reqwest::Client::builder()
        .timeout(settings.timeouts.request)
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let transport = alloy::transports::http::Http::with_client(http, settings.rpc_url.clone());
    let is_local = settings
        .rpc_url
        .host_str()
        .is_some_and(|host| host == "localhost" || host.starts_with("127.") || host == "[::1]");
    Ok(RootProvider::new(RpcClient::new(transport, is_local)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_back_from_messages() {
        for (code, prefix) in CODED_PREFIXES {
            assert_eq!(error_code(&format!("{prefix} detail")), Some(code));
        }
        assert_eq!(error_code("something else"), None);
    }
}
