//! The operations of the `cosmos` executor: their payloads, their outputs, and how
//! each one talks to the node. The contract is described in the [module
//! docs](super).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::Any;
use morpheus_engine::crash::crash_point;
use morpheus_engine::{ErrorCode, LeaseCheck, LogLevel, LogSink, StepError};
use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use super::akash::{DeploymentId, DepositIntent};
use super::amount::{AmountError, Coin, Decimal};
use super::config::{DeploymentsApi, FeePolicy, Gas, Settings};
use super::keys::Signer;
use super::market::{
    groups_from_json, parse_manifest_hash, BidId, MsgCloseDeployment, MsgCreateDeployment,
    MsgCreateLease,
};
use super::provider_api::{normalize_host_uri, ProviderApi};
use super::rest::{encode_query, u64_field, Rest, RestError};
use super::tx::{self, TxParams};

/// The code of a `broadcast` failure whose signed sequence number is stale (another
/// transaction of the account used it first): match it on
/// `WorkflowError::StepFailed { code, .. }`, then see [`can_resign`]. Its message
/// starts with [`SEQUENCE_MISMATCH_PREFIX`].
pub const SEQUENCE_MISMATCH: ErrorCode = ErrorCode::from_static("sequence_mismatch");

/// The code of a `broadcast` failure for a transaction that was included in a block
/// but failed there (fee paid, sequence used, no deposit). Its message starts with
/// [`TX_FAILED_PREFIX`].
pub const TX_FAILED: ErrorCode = ErrorCode::from_static("tx_failed");

/// The code of a `broadcast` failure for a transaction the node refused to accept (it
/// will never be included). Its message starts with [`TX_REJECTED_PREFIX`].
pub const TX_REJECTED: ErrorCode = ErrorCode::from_static("tx_rejected");

/// Error messages of `broadcast` that mean the signed sequence number is stale start
/// with this (the text an operator reads; callers match [`SEQUENCE_MISMATCH`]).
pub const SEQUENCE_MISMATCH_PREFIX: &str = "sequence mismatch:";

/// Error messages of `broadcast` for a transaction that was included in a block but
/// failed there start with this (callers match [`TX_FAILED`]).
pub const TX_FAILED_PREFIX: &str = "tx failed:";

/// Error messages of `broadcast` for a transaction the node refused to accept start
/// with this (callers match [`TX_REJECTED`]).
pub const TX_REJECTED_PREFIX: &str = "tx rejected:";

/// Each code with the prefix of its messages: the journal stores only the message,
/// and [`error_code`] reads the code back from it on a replay.
const CODED_PREFIXES: [(ErrorCode, &str); 3] = [
    (SEQUENCE_MISMATCH, SEQUENCE_MISMATCH_PREFIX),
    (TX_FAILED, TX_FAILED_PREFIX),
    (TX_REJECTED, TX_REJECTED_PREFIX),
];

/// A permanent failure with `code`, its message being the code's prefix, a space and
/// `detail` (so [`error_code`] reads the same code back).
fn coded_failure(code: ErrorCode, detail: impl std::fmt::Display) -> StepError {
    let prefix = CODED_PREFIXES
        .iter()
        .find_map(|(known, prefix)| (*known == code).then_some(*prefix))
        .expect("every code has a prefix");
    StepError::permanent(format!("{prefix} {detail}")).with_code(code)
}

/// The code of a failure this executor reported, from its message (see
/// `Executor::error_code`).
pub(crate) fn error_code(message: &str) -> Option<ErrorCode> {
    CODED_PREFIXES
        .iter()
        .find_map(|(code, prefix)| message.starts_with(prefix).then(|| code.clone()))
}

/// Whether a persisted signed transaction provably never landed, so signing a new one
/// cannot pay twice: it is not on chain, *and* the account's sequence has moved past
/// the transaction's (another transaction used that number, so this one can never be
/// included). Feed it `found` from `tx_status`, `sequence` from `account`, and the
/// `sequence` of the signing operation's output ([`SignedDeposit`] or [`SignedTx`]).
///
/// ```
/// use morpheus_executors::cosmos::can_resign;
/// assert!(!can_resign(true, 9, 4));   // landed: never sign again
/// assert!(!can_resign(false, 4, 4));  // may still land: broadcast the same bytes again
/// assert!(can_resign(false, 5, 4));   // sequence 4 was used by something else
/// ```
pub fn can_resign(tx_found: bool, account_sequence: u64, tx_sequence: u64) -> bool {
    !tx_found && account_sequence > tx_sequence
}

/// A payload of the `cosmos` executor: one operation, selected by `"op"`. It
/// serialises to the JSON the executor reads (dseqs as strings, absent defaults
/// left out), so a workflow sends it with `StepBuilder::call_as`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CosmosRequest {
    /// The chain's latest block → [`LatestHeight`].
    LatestHeight,
    /// An account's number and sequence → [`AccountInfo`].
    Account {
        /// Default: the executor's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// A bank balance → [`BalanceInfo`].
    Balance {
        /// Default: the executor's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Default: the configured denom.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        denom: Option<String>,
    },
    /// What is left of the escrow deposit grant from `granter` to `grantee`
    /// (`/cosmos/authz/v1beta1/grants`) → [`DepositGrantInfo`].
    DepositGrant {
        /// The owner who granted.
        granter: String,
        /// The ephemeral key's address.
        grantee: String,
    },
    /// An owner's deployments with escrow funds → [`DeploymentsInfo`].
    Deployments {
        /// Default: the executor's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Only these (missing ones are listed in `missing`); default: all of the
        /// owner's.
        #[serde(
            default,
            deserialize_with = "dseq_list",
            serialize_with = "dseq_list_text"
        )]
        dseqs: Option<Vec<u64>>,
        /// Also list closed deployments (only without `dseqs`).
        #[serde(default)]
        include_closed: bool,
    },
    /// Active lease rates summed per deployment → [`LeaseRates`].
    Leases {
        /// Default: the executor's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// Only these (each listed, with rate 0 when it has no active lease).
        #[serde(
            default,
            deserialize_with = "dseq_list",
            serialize_with = "dseq_list_text"
        )]
        dseqs: Option<Vec<u64>>,
    },
    /// Signs (does not broadcast) a deposit into a deployment's escrow →
    /// [`SignedDeposit`].
    SignDeposit {
        /// Default: the executor's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// The deployment.
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// `"5000000uakt"`, or `"5000000"` in the configured denom.
        amount: String,
        /// Default: the configured memo, else `morpheus:{idempotency key}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
    },
    /// Signs (does not broadcast) the creation of a deployment owned by the executor's
    /// address, funded from its balance → [`SignedTx`].
    SignCreateDeployment {
        /// The new deployment's sequence number (by convention a recent block height).
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// The groups, in the shape of the Akash SDK's `SDL.groups()` (see
        /// [`groups_from_json`](super::market::groups_from_json)).
        groups: Value,
        /// SHA-256 of the manifest's sorted JSON, 64 hex digits.
        hash_hex: String,
        /// The escrow deposit: `"5000000uakt"`, or `"5000000"` in the configured denom.
        deposit: String,
        /// Default: the configured memo, else `morpheus:{idempotency key}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
    },
    /// Signs (does not broadcast) the executor key's grants to an ephemeral key, in one
    /// transaction (see [`super::ephemeral::grant_messages`]) → [`SignedTx`].
    SignGrantEphemeral {
        /// The ephemeral key's address.
        grantee: String,
        /// When every grant expires (whole seconds are kept).
        expires_at: chrono::DateTime<chrono::Utc>,
        /// The most the key may deposit into escrow (`20000000uakt`).
        spend_limit: String,
        /// The most of the granter's funds the key may spend on fees (`1000000uakt`).
        fee_limit: String,
        /// The granter the caller expects: refused unless the executor's key is its.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        granter: Option<String>,
        /// Default: the configured memo, else `morpheus:{idempotency key}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
    },
    /// Signs (does not broadcast) revoking every grant of
    /// [`CosmosRequest::SignGrantEphemeral`] → [`SignedTx`].
    SignRevokeEphemeral {
        /// The ephemeral key's address.
        grantee: String,
        /// The granter the caller expects: refused unless the executor's key is its.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        granter: Option<String>,
        /// Default: the configured memo, else `morpheus:{idempotency key}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
    },
    /// Signs (does not broadcast) closing one of the executor's deployments (the
    /// remaining escrow goes back to its balance) → [`SignedTx`].
    SignCloseDeployment {
        /// The deployment.
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// Default: the configured memo, else `morpheus:{idempotency key}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
    },
    /// Signs (does not broadcast) accepting a bid on one of the executor's deployments
    /// as a lease → [`SignedTx`].
    SignCreateLease {
        /// The deployment.
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// The group.
        #[serde(deserialize_with = "small_seq")]
        gseq: u32,
        /// The order.
        #[serde(deserialize_with = "small_seq")]
        oseq: u32,
        /// The bidding provider's address.
        provider: String,
        /// The bid's sequence.
        #[serde(deserialize_with = "small_seq")]
        bseq: u32,
        /// Default: the configured memo, else `morpheus:{idempotency key}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<String>,
    },
    /// The bids on a deployment's orders → [`Bids`].
    Bids {
        /// Default: the executor's own address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// The deployment.
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// Only bids in this state (`open`, `active`, `lost`, `closed`); default: all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
    },
    /// A provider's registration on chain → [`ProviderInfo`].
    Provider {
        /// The provider's address.
        address: String,
    },
    /// Sends a deployment's manifest to the provider of its lease → [`ManifestSent`].
    SendManifest {
        /// The provider's `host_uri` (from `provider`).
        host_uri: String,
        /// The deployment.
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// The manifest's sorted JSON text, sent byte for byte (its SHA-256 is the
        /// deployment's on-chain hash).
        manifest_json: String,
    },
    /// A lease's services as its provider reports them → [`LeaseStatus`].
    LeaseStatus {
        /// The provider's `host_uri`.
        host_uri: String,
        /// The deployment.
        #[serde(deserialize_with = "dseq", serialize_with = "dseq_text")]
        dseq: u64,
        /// The group.
        #[serde(deserialize_with = "small_seq")]
        gseq: u32,
        /// The order.
        #[serde(deserialize_with = "small_seq")]
        oseq: u32,
    },
    /// Broadcasts exactly these bytes and waits for the block → [`BroadcastResult`].
    Broadcast {
        /// `tx_bytes_b64` of a [`SignedDeposit`] or [`SignedTx`].
        tx_bytes_b64: String,
    },
    /// Whether a transaction is on chain → [`TxStatus`].
    TxStatus {
        /// Upper- or lower-case hex.
        tx_hash: String,
    },
}

fn parse_dseq(value: &Value) -> Result<u64, String> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_u64(),
        _ => None,
    }
    .ok_or_else(|| format!("dseq {value} is not a non-negative integer"))
}

/// A group, order or bid sequence number (uint32 on chain), as a number or a string.
fn small_seq<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = Value::deserialize(deserializer)?;
    let number = match &value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_u64(),
        _ => None,
    };
    number.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
        serde::de::Error::custom(format!("{value} is not an integer from 0 to {}", u32::MAX))
    })
}

fn dseq<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    parse_dseq(&Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

fn dseq_text<S: Serializer>(dseq: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(dseq)
}

fn dseq_list_text<S: Serializer>(
    dseqs: &Option<Vec<u64>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let texts: Option<Vec<String>> = dseqs
        .as_ref()
        .map(|dseqs| dseqs.iter().map(u64::to_string).collect());
    texts.serialize(serializer)
}

fn dseq_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u64>>, D::Error> {
    Option::<Vec<Value>>::deserialize(deserializer)?
        .map(|values| values.iter().map(parse_dseq).collect())
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// Output of `latest_height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestHeight {
    /// Height of the latest block.
    pub height: u64,
    /// The chain id the node reports.
    pub chain_id: String,
    /// The block's time (RFC 3339), as the node reports it.
    pub time: String,
}

/// Output of `account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The address.
    pub address: String,
    /// False for an address the chain has never seen (then `sequence` is 0).
    pub exists: bool,
    /// The account number (signed into every transaction).
    pub account_number: Option<u64>,
    /// The next sequence number the chain will accept (committed state).
    pub sequence: u64,
}

/// Output of `deposit_grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositGrantInfo {
    /// Whether the chain holds the grant (an expired or revoked one is gone).
    pub found: bool,
    /// What the grantee may still deposit (`"15000000uakt"`), if found.
    pub spend_limit_left: Option<String>,
    /// When it expires (RFC 3339), if found and it does.
    pub expiration: Option<String>,
}

/// Output of `balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceInfo {
    /// The address.
    pub address: String,
    /// The denomination.
    pub denom: String,
    /// Integer amount in base units.
    pub amount: String,
}

/// One deployment in the output of `deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    /// Sequence number.
    pub dseq: String,
    /// `active` or `closed`.
    pub state: String,
    /// The escrow account's state: `open`, `closed`, `overdrawn`.
    pub escrow_state: String,
    /// Unspent escrow funds in `escrow_denom` (a decimal, e.g. `"120000"` or
    /// `"1.5"`).
    pub escrow_funds: Decimal,
    /// The denomination of `escrow_funds` (the configured one).
    pub escrow_denom: String,
    /// Height of the escrow's last settlement, when the node reports it.
    pub settled_at: Option<u64>,
}

/// Output of `deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentsInfo {
    /// The owner.
    pub owner: String,
    /// Deployments, by dseq.
    pub deployments: Vec<DeploymentInfo>,
    /// Requested dseqs the chain does not know.
    pub missing: Vec<String>,
}

/// One deployment in the output of `leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRate {
    /// Sequence number.
    pub dseq: String,
    /// Sum of the active leases' prices per block.
    pub rate_per_block: Decimal,
    /// Denomination of the rate (the configured one; leases priced in other
    /// denominations are not counted and are logged as a warning).
    pub denom: String,
    /// How many active leases were summed.
    pub leases: u32,
}

/// Output of `leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRates {
    /// The owner.
    pub owner: String,
    /// Per deployment, by dseq.
    pub rates: Vec<LeaseRate>,
}

/// Output of `sign_deposit`: everything needed to broadcast later, and to decide
/// whether the transaction can still land.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDeposit {
    /// The signed `TxRaw`, base64 (standard alphabet, padded). Broadcast exactly these.
    pub tx_bytes_b64: String,
    /// SHA-256 of the bytes, upper-case hex: the id the chain will know it by.
    pub tx_hash: String,
    /// The chain id it is signed for.
    pub chain_id: String,
    /// The signer's account number.
    pub account_number: u64,
    /// The sequence it is signed with.
    pub sequence: u64,
    /// The signer's address.
    pub signer: String,
    /// The message's type URL.
    pub msg_type: String,
    /// The deployment's owner.
    pub owner: String,
    /// The deployment.
    pub dseq: String,
    /// Deposited amount, integer base units.
    pub amount: String,
    /// Denomination of `amount`.
    pub denom: String,
    /// Gas limit.
    pub gas_limit: u64,
    /// Fee, e.g. `"5000uakt"`.
    pub fee: String,
}

/// Output of `sign_create_deployment`, `sign_close_deployment` and `sign_create_lease`:
/// everything needed to broadcast later, and to decide whether the transaction can
/// still land (`sequence` feeds [`can_resign`] as for [`SignedDeposit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The signed `TxRaw`, base64 (standard alphabet, padded). Broadcast exactly these.
    pub tx_bytes_b64: String,
    /// SHA-256 of the bytes, upper-case hex: the id the chain will know it by.
    pub tx_hash: String,
    /// The chain id it is signed for.
    pub chain_id: String,
    /// The signer's account number.
    pub account_number: u64,
    /// The sequence it is signed with.
    pub sequence: u64,
    /// The signer's address (the deployment's owner).
    pub signer: String,
    /// The message's type URL.
    pub msg_type: String,
    /// The deployment.
    pub dseq: String,
    /// Gas limit.
    pub gas_limit: u64,
    /// Fee, e.g. `"5000uakt"`.
    pub fee: String,
}

/// A bid's price per block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidPrice {
    /// The denomination.
    pub denom: String,
    /// Decimal text (`"12"`, `"12.5"`).
    pub amount: Decimal,
}

/// One bid in the output of `bids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// The deployment.
    pub dseq: String,
    /// The group.
    pub gseq: u32,
    /// The order.
    pub oseq: u32,
    /// The bidding provider.
    pub provider: String,
    /// The bid's sequence.
    pub bseq: u32,
    /// `open`, `active`, `lost` or `closed`.
    pub state: String,
    /// The price it asks.
    pub price: BidPrice,
}

/// Output of `bids`: ordered by group, order, price (cheapest first), provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bids {
    /// The bids.
    pub bids: Vec<Bid>,
}

/// A provider attribute (`region`, `tier`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAttribute {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// Output of `provider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The provider's address.
    pub address: String,
    /// Where its API listens (`https://provider.example.com:8443`).
    pub host_uri: String,
    /// Its attributes.
    pub attributes: Vec<ProviderAttribute>,
}

/// Output of `send_manifest`: the provider accepted the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSent {
    /// The provider's HTTP status (2xx).
    pub status: u16,
    /// The provider it was sent to.
    pub host_uri: String,
}

/// One service in the output of `lease_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Replicas available.
    pub available: u32,
    /// Replicas wanted.
    pub total: u32,
    /// Where it is reachable (`host:port` or host names).
    pub uris: Vec<String>,
    /// Replicas ready.
    pub ready_replicas: u32,
}

/// Output of `lease_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Every service has all its replicas available (and there is at least one).
    pub ready: bool,
    /// Per service name.
    pub services: BTreeMap<String, ServiceStatus>,
    /// The provider's `forwarded_ports`, as it reports them (per service, a list of
    /// `{"host", "port", "externalPort", "proto", "name"}`).
    pub forwarded_ports: Value,
}

/// Output of `broadcast`: the transaction is in a block and succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastResult {
    /// Its hash.
    pub tx_hash: String,
    /// The block it is in.
    pub height: u64,
    /// Always 0 here (a non-zero code is a `tx failed:` error).
    pub code: u32,
    /// Gas it used.
    pub gas_used: u64,
    /// The node already had it (an earlier broadcast of the same bytes).
    pub already_known: bool,
}

/// Output of `tx_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxStatus {
    /// Its hash (upper-case).
    pub tx_hash: String,
    /// Whether it is in a block.
    pub found: bool,
    /// The block, if found.
    pub height: Option<u64>,
    /// Its result code (0 = success), if found.
    pub code: Option<u32>,
    /// The node's log for it, if found.
    pub raw_log: Option<String>,
}

/// Response of `GET /cosmos/tx/v1beta1/txs/{hash}`, reduced to what the executor uses.
struct TxResponse {
    height: u64,
    code: u32,
    codespace: String,
    raw_log: String,
    gas_used: u64,
}

impl TxResponse {
    fn parse(body: &Value) -> Option<Self> {
        let response = body.get("tx_response")?;
        Some(Self {
            height: u64_field(response, "height").unwrap_or(0),
            code: response.get("code").and_then(Value::as_u64).unwrap_or(0) as u32,
            codespace: response
                .get("codespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            raw_log: response
                .get("raw_log")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            gas_used: u64_field(response, "gas_used").unwrap_or(0),
        })
    }
}

/// Cosmos SDK codes the executor treats specially (codespace `sdk`).
const CODE_TX_IN_CACHE: u32 = 19;
const CODE_MEMPOOL_FULL: u32 = 20;
const CODE_WRONG_SEQUENCE: u32 = 32;

/// The state an executor shares across calls.
pub(crate) struct Client {
    pub settings: Settings,
    pub rest: Rest,
    pub signer: Option<std::sync::Arc<Signer>>,
    pub chain_id_checked: OnceLock<()>,
    /// Where signatures are recorded before they leave the executor, if anywhere.
    pub audit: Option<crate::audit::SignatureAudit>,
    /// Providers' APIs (`send_manifest`, `lease_status`).
    pub providers: ProviderApi,
    /// `[cosmos] ephemeral`, as configured.
    pub ephemeral_settings: Option<super::ephemeral::EphemeralSigning>,
    /// The granter's ephemeral keys, once the executor has the document store.
    pub ephemeral: Option<super::ephemeral::EphemeralKeyring>,
}

/// Whose key a transaction is signed with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Authority {
    /// The configured key itself (granting and revoking ephemeral keys).
    OwnKey,
    /// Automation: the granter's ephemeral key when `[cosmos] ephemeral` is set,
    /// else the configured key.
    Automation,
}

/// The key a transaction is signed with, and how.
struct SigningKey {
    signer: std::sync::Arc<Signer>,
    /// The granter, when an ephemeral key signs: it pays the fee (fee grant), its
    /// deployments are the ones acted on (`MsgExec`), its balance funds deposits.
    granter: Option<String>,
    /// The key's id in the audit (`ephemeral:eph-…`), when it is not the configured one.
    audit_key_id: Option<String>,
}

/// What one call needs besides the payload.
pub(crate) struct Call<'a> {
    pub idempotency_key: &'a str,
    pub lease: &'a LeaseCheck,
    pub deadline: Option<Instant>,
    pub logs: &'a LogSink,
}

impl Client {
    pub async fn run(&self, request: CosmosRequest, call: &Call<'_>) -> Result<Value, StepError> {
        fn out<T: Serialize>(value: T) -> Result<Value, StepError> {
            serde_json::to_value(value).map_err(StepError::permanent)
        }
        match request {
            CosmosRequest::LatestHeight => out(self.latest_height(call).await?),
            CosmosRequest::Account { address } => {
                let address = self.address_or_own(address)?;
                out(self.account(&address, call).await?)
            }
            CosmosRequest::DepositGrant { granter, grantee } => {
                let granter = self.address_or_own(Some(granter))?;
                let grantee = self.address_or_own(Some(grantee))?;
                out(self.deposit_grant(&granter, &grantee, call).await?)
            }
            CosmosRequest::Balance { address, denom } => {
                let address = self.address_or_own(address)?;
                out(self.balance(&address, denom, call).await?)
            }
            CosmosRequest::Deployments {
                owner,
                dseqs,
                include_closed,
            } => {
                let owner = self.address_or_own(owner)?;
                out(self
                    .deployments(&owner, dseqs, include_closed, call)
                    .await?)
            }
            CosmosRequest::Leases { owner, dseqs } => {
                let owner = self.address_or_own(owner)?;
                out(self.leases(&owner, dseqs, call).await?)
            }
            CosmosRequest::SignDeposit {
                owner,
                dseq,
                amount,
                memo,
            } => {
                let owner = self.address_or_own(owner)?;
                out(self.sign_deposit(&owner, dseq, &amount, memo, call).await?)
            }
            CosmosRequest::SignCreateDeployment {
                dseq,
                groups,
                hash_hex,
                deposit,
                memo,
            } => out(self
                .sign_create_deployment(dseq, &groups, &hash_hex, &deposit, memo, call)
                .await?),
            CosmosRequest::SignGrantEphemeral {
                grantee,
                expires_at,
                spend_limit,
                fee_limit,
                granter: expected,
                memo,
            } => {
                let grantee = self.address_or_own(Some(grantee))?;
                let granter = self.granter_key(expected.as_deref())?;
                if grantee == granter {
                    return Err(StepError::permanent(
                        "grantee: an ephemeral key must not be the granter's own key",
                    ));
                }
                let coin = |text: &str, what: &str| {
                    text.parse::<Coin>()
                        .map_err(|error| StepError::permanent(format!("{what}: {error}")))
                };
                let messages = super::ephemeral::grant_messages(
                    &granter,
                    &grantee,
                    expires_at,
                    &coin(&spend_limit, "spend_limit")?,
                    &coin(&fee_limit, "fee_limit")?,
                );
                let details = format!(" grantee={grantee} expires={}", expires_at.to_rfc3339());
                let key = self.signing_key(Authority::OwnKey).await?;
                out(self
                    .sign_messages(&key, messages, "grant", 0, &details, memo, call)
                    .await?)
            }
            CosmosRequest::SignRevokeEphemeral {
                grantee,
                granter: expected,
                memo,
            } => {
                let grantee = self.address_or_own(Some(grantee))?;
                let granter = self.granter_key(expected.as_deref())?;
                let messages = super::ephemeral::revoke_messages(&granter, &grantee);
                let details = format!(" grantee={grantee}");
                let key = self.signing_key(Authority::OwnKey).await?;
                out(self
                    .sign_messages(&key, messages, "revoke", 0, &details, memo, call)
                    .await?)
            }
            CosmosRequest::SignCloseDeployment { dseq, memo } => {
                out(self.sign_close_deployment(dseq, memo, call).await?)
            }
            CosmosRequest::SignCreateLease {
                dseq,
                gseq,
                oseq,
                provider,
                bseq,
                memo,
            } => {
                let provider = self.address_or_own(Some(provider))?;
                let owner = self.owner_address()?;
                let bid = BidId {
                    owner,
                    dseq,
                    gseq,
                    oseq,
                    provider,
                    bseq,
                };
                out(self.sign_create_lease(bid, memo, call).await?)
            }
            CosmosRequest::Bids { owner, dseq, state } => {
                let owner = self.address_or_own(owner)?;
                out(self.bids(&owner, dseq, state, call).await?)
            }
            CosmosRequest::Provider { address } => {
                let address = self.address_or_own(Some(address))?;
                out(self.provider(&address, call).await?)
            }
            CosmosRequest::SendManifest {
                host_uri,
                dseq,
                manifest_json,
            } => {
                let sent = self.send_manifest(&host_uri, dseq, &manifest_json).await?;
                // The provider has the manifest; the step has not recorded it yet.
                crash_point("cosmos.manifest.after_send", call.idempotency_key);
                out(sent)
            }
            CosmosRequest::LeaseStatus {
                host_uri,
                dseq,
                gseq,
                oseq,
            } => out(self.lease_status(&host_uri, dseq, gseq, oseq).await?),
            CosmosRequest::Broadcast { tx_bytes_b64 } => {
                out(self.broadcast(&tx_bytes_b64, call).await?)
            }
            CosmosRequest::TxStatus { tx_hash } => {
                let tx_hash = normalize_hash(&tx_hash)?;
                out(self.tx_status(&tx_hash, call.deadline).await?)
            }
        }
    }

    fn signer(&self) -> Result<&Signer, StepError> {
        self.signer.as_deref().ok_or_else(|| {
            StepError::permanent(
                "the cosmos executor has no key configured (set key = { mnemonic_env = … } or similar)",
            )
        })
    }

    /// `address`, checked, or the executor's own.
    fn address_or_own(&self, address: Option<String>) -> Result<String, StepError> {
        match address {
            Some(address) => {
                let id = cosmrs::AccountId::from_str(&address).map_err(|_| {
                    StepError::permanent(format!("'{address}' is not a bech32 address"))
                })?;
                if id.prefix() != self.settings.account_prefix {
                    return Err(StepError::permanent(format!(
                        "'{address}' is not an {}1… address",
                        self.settings.account_prefix
                    )));
                }
                Ok(address)
            }
            None => self.owner_address(),
        }
    }

    /// The configured key's address, checked to be `expected` (the granter a grant or
    /// revocation is for).
    fn granter_key(&self, expected: Option<&str>) -> Result<String, StepError> {
        let own = self.signer()?.address().to_owned();
        match expected {
            Some(expected) if expected != own => Err(StepError::permanent(format!(
                "granter: the cosmos executor's key is {own}, not the granter {expected}"
            ))),
            _ => Ok(own),
        }
    }

    /// The owner automation acts for: the ephemeral keys' granter, else the
    /// configured key's address.
    fn owner_address(&self) -> Result<String, StepError> {
        match &self.ephemeral_settings {
            Some(ephemeral) => Ok(ephemeral.granter.clone()),
            None => Ok(self.signer()?.address().to_owned()),
        }
    }

    /// The key to sign with for `authority`.
    async fn signing_key(&self, authority: Authority) -> Result<SigningKey, StepError> {
        if authority == Authority::Automation && self.ephemeral_settings.is_some() {
            let keyring = self.ephemeral.as_ref().ok_or_else(|| {
                StepError::permanent(
                    "[cosmos] ephemeral is set but this executor has no access to the key store",
                )
            })?;
            let (signer, record) = keyring.current(chrono::Utc::now()).await?;
            return Ok(SigningKey {
                signer,
                granter: Some(keyring.granter().to_owned()),
                audit_key_id: Some(format!("ephemeral:{}", record.id)),
            });
        }
        let signer = self.signer.clone().ok_or_else(|| {
            StepError::permanent(
                "the cosmos executor has no key configured (set key = { mnemonic_env = … } or similar)",
            )
        })?;
        Ok(SigningKey {
            signer,
            granter: None,
            audit_key_id: None,
        })
    }

    async fn latest_height(&self, call: &Call<'_>) -> Result<LatestHeight, StepError> {
        let body = self
            .rest
            .get(
                "/cosmos/base/tendermint/v1beta1/blocks/latest",
                call.deadline,
            )
            .await
            .map_err(|e| e.into_step_error("latest block"))?;
        // Newer nodes put the header in `sdk_block`, older ones only in `block`.
        let header = ["sdk_block", "block"]
            .iter()
            .find_map(|key| body.get(key)?.get("header"))
            .ok_or_else(|| StepError::retryable("latest block: no block.header in the answer"))?;
        let height = u64_field(header, "height")
            .ok_or_else(|| StepError::retryable("latest block: no header.height"))?;
        let chain_id = header
            .get("chain_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let time = header
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(LatestHeight {
            height,
            chain_id,
            time,
        })
    }

    /// Signing for the wrong chain would only fail at broadcast with a vague
    /// "unauthorized"; asking the node first gives a clear, permanent error.
    async fn check_chain_id(&self, call: &Call<'_>) -> Result<(), StepError> {
        if self.chain_id_checked.get().is_some() {
            return Ok(());
        }
        let latest = self.latest_height(call).await?;
        if latest.chain_id != self.settings.chain_id {
            return Err(StepError::permanent(format!(
                "chain id mismatch: configured '{}' but the node at {} reports '{}'",
                self.settings.chain_id,
                self.rest.base(),
                latest.chain_id
            )));
        }
        let _ = self.chain_id_checked.set(());
        Ok(())
    }

    async fn account(&self, address: &str, call: &Call<'_>) -> Result<AccountInfo, StepError> {
        let path = format!("/cosmos/auth/v1beta1/accounts/{address}");
        let body = match self.rest.get(&path, call.deadline).await {
            Ok(body) => body,
            Err(error) if error.is_not_found() => {
                return Ok(AccountInfo {
                    address: address.to_owned(),
                    exists: false,
                    account_number: None,
                    sequence: 0,
                })
            }
            Err(error) => return Err(error.into_step_error("account")),
        };
        let base = body
            .get("account")
            .and_then(find_base_account)
            .ok_or_else(|| {
                StepError::retryable(format!("account {address}: no account number in {body}"))
            })?;
        Ok(AccountInfo {
            address: address.to_owned(),
            exists: true,
            account_number: u64_field(base, "account_number"),
            sequence: u64_field(base, "sequence").unwrap_or(0),
        })
    }

    async fn deposit_grant(
        &self,
        granter: &str,
        grantee: &str,
        call: &Call<'_>,
    ) -> Result<DepositGrantInfo, StepError> {
        let path = format!(
            "/cosmos/authz/v1beta1/grants?granter={granter}&grantee={grantee}&msg_type_url={}",
            encode_query(super::ephemeral::MSG_ACCOUNT_DEPOSIT_TYPE_URL)
        );
        let body = match self.rest.get(&path, call.deadline).await {
            Ok(body) => body,
            // The SDK answers a grant it does not hold (expired, revoked) with an error.
            Err(error) if error.is_not_found() => {
                return Ok(DepositGrantInfo {
                    found: false,
                    spend_limit_left: None,
                    expiration: None,
                })
            }
            Err(error) => return Err(error.into_step_error("deposit_grant")),
        };
        let grant = body
            .get("grants")
            .and_then(Value::as_array)
            .and_then(|grants| grants.first());
        let Some(grant) = grant else {
            return Ok(DepositGrantInfo {
                found: false,
                spend_limit_left: None,
                expiration: None,
            });
        };
        let limit = &grant["authorization"]["spend_limit"];
        let spend_limit_left = match (limit["amount"].as_str(), limit["denom"].as_str()) {
            (Some(amount), Some(denom)) => Some(format!("{amount}{denom}")),
            _ => None,
        };
        Ok(DepositGrantInfo {
            found: true,
            spend_limit_left,
            expiration: grant["expiration"].as_str().map(str::to_owned),
        })
    }

    async fn balance(
        &self,
        address: &str,
        denom: Option<String>,
        call: &Call<'_>,
    ) -> Result<BalanceInfo, StepError> {
        let denom = denom.unwrap_or_else(|| self.settings.denom.clone());
        let path = format!("/cosmos/bank/v1beta1/balances/{address}?pagination.limit=1000");
        let body = self
            .rest
            .get(&path, call.deadline)
            .await
            .map_err(|e| e.into_step_error("balance"))?;
        let amount = body
            .get("balances")
            .and_then(Value::as_array)
            .ok_or_else(|| StepError::retryable(format!("balance: no balances in {body}")))?
            .iter()
            .find(|coin| coin.get("denom").and_then(Value::as_str) == Some(denom.as_str()))
            .and_then(|coin| coin.get("amount").and_then(Value::as_str))
            .unwrap_or("0")
            .to_owned();
        Ok(BalanceInfo {
            address: address.to_owned(),
            denom,
            amount,
        })
    }

    async fn deployments(
        &self,
        owner: &str,
        dseqs: Option<Vec<u64>>,
        include_closed: bool,
        call: &Call<'_>,
    ) -> Result<DeploymentsInfo, StepError> {
        let api = self.settings.deployments_api;
        let mut deployments = Vec::new();
        let mut missing = Vec::new();
        match dseqs {
            Some(dseqs) => {
                for dseq in dseqs {
                    let path = format!(
                        "/akash/deployment/{}/deployments/info?id.owner={}&id.dseq={dseq}",
                        api.as_str(),
                        encode_query(owner)
                    );
                    match self.rest.get(&path, call.deadline).await {
                        Ok(body) => deployments.push(self.parse_deployment(&body)?),
                        Err(error) if error.is_not_found() => missing.push(dseq.to_string()),
                        Err(error) => return Err(error.into_step_error("deployment info")),
                    }
                }
            }
            None => {
                let state = if include_closed {
                    String::new()
                } else {
                    "&filters.state=active".to_owned()
                };
                let path = format!(
                    "/akash/deployment/{}/deployments/list?filters.owner={}{state}",
                    api.as_str(),
                    encode_query(owner)
                );
                for item in self.paginate(&path, "deployments", call).await? {
                    deployments.push(self.parse_deployment(&item)?);
                }
            }
        }
        deployments.sort_by_key(|d| d.dseq.parse::<u64>().unwrap_or(u64::MAX));
        Ok(DeploymentsInfo {
            owner: owner.to_owned(),
            deployments,
            missing,
        })
    }

    /// Reads one `QueryDeploymentResponse` (`{deployment, groups, escrow_account}`).
    fn parse_deployment(&self, item: &Value) -> Result<DeploymentInfo, StepError> {
        let malformed =
            |what: &str| StepError::retryable(format!("deployment answer without {what}: {item}"));
        let deployment = item
            .get("deployment")
            .ok_or_else(|| malformed("deployment"))?;
        let id_key = match self.settings.deployments_api {
            DeploymentsApi::V1beta4 => "id",
            DeploymentsApi::V1beta3 => "deployment_id",
        };
        let dseq = deployment
            .get(id_key)
            .and_then(|id| u64_field(id, "dseq"))
            .ok_or_else(|| malformed(&format!("deployment.{id_key}.dseq")))?;
        let state = deployment
            .get("state")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("deployment.state"))?
            .to_owned();
        let escrow = item
            .get("escrow_account")
            .ok_or_else(|| malformed("escrow_account"))?;
        let denom = &self.settings.denom;
        let matching = |coin: &Value| -> Result<Decimal, StepError> {
            if coin.get("denom").and_then(Value::as_str) != Some(denom.as_str()) {
                return Ok(Decimal::ZERO);
            }
            coin.get("amount")
                .and_then(Value::as_str)
                .unwrap_or("0")
                .parse()
                .map_err(|error: AmountError| {
                    malformed(&format!("a valid escrow amount ({error})"))
                })
        };
        let (escrow_state, funds, settled_at) = match self.settings.deployments_api {
            DeploymentsApi::V1beta4 => {
                let state = escrow
                    .get("state")
                    .ok_or_else(|| malformed("escrow_account.state"))?;
                let mut funds = Decimal::ZERO;
                for coin in state
                    .get("funds")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    funds = funds
                        .checked_add(matching(coin)?)
                        .ok_or_else(|| malformed("escrow funds that fit"))?;
                }
                (
                    state.get("state").and_then(Value::as_str),
                    funds,
                    u64_field(state, "settled_at"),
                )
            }
            DeploymentsApi::V1beta3 => {
                // The owner's own deposits are `balance`; third-party deposits `funds`.
                let mut funds = Decimal::ZERO;
                for key in ["balance", "funds"] {
                    if let Some(coin) = escrow.get(key) {
                        funds = funds
                            .checked_add(matching(coin)?)
                            .ok_or_else(|| malformed("escrow funds that fit"))?;
                    }
                }
                (
                    escrow.get("state").and_then(Value::as_str),
                    funds,
                    u64_field(escrow, "settled_at"),
                )
            }
        };
        Ok(DeploymentInfo {
            dseq: dseq.to_string(),
            state,
            escrow_state: escrow_state.unwrap_or("unknown").to_owned(),
            escrow_funds: funds,
            escrow_denom: denom.clone(),
            settled_at,
        })
    }

    async fn leases(
        &self,
        owner: &str,
        dseqs: Option<Vec<u64>>,
        call: &Call<'_>,
    ) -> Result<LeaseRates, StepError> {
        let path = format!(
            "/akash/market/{}/leases/list?filters.owner={}&filters.state=active",
            self.settings.leases_api.as_str(),
            encode_query(owner)
        );
        let mut sums: BTreeMap<u64, (Decimal, u32)> = BTreeMap::new();
        if let Some(dseqs) = &dseqs {
            for dseq in dseqs {
                sums.insert(*dseq, (Decimal::ZERO, 0));
            }
        }
        for item in self.paginate(&path, "leases", call).await? {
            let malformed =
                |what: &str| StepError::retryable(format!("lease answer without {what}: {item}"));
            let lease = item.get("lease").ok_or_else(|| malformed("lease"))?;
            // v1beta5 calls the id `id`, v1beta4 `lease_id`.
            let dseq = ["id", "lease_id"]
                .iter()
                .find_map(|key| lease.get(key))
                .and_then(|id| u64_field(id, "dseq"))
                .ok_or_else(|| malformed("lease.id.dseq"))?;
            if lease.get("state").and_then(Value::as_str) != Some("active") {
                continue;
            }
            if dseqs.as_ref().is_some_and(|wanted| !wanted.contains(&dseq)) {
                continue;
            }
            let price = lease.get("price").ok_or_else(|| malformed("lease.price"))?;
            let denom = price.get("denom").and_then(Value::as_str).unwrap_or("");
            if denom != self.settings.denom {
                call.logs.log(
                    LogLevel::Warn,
                    format!(
                        "lease of dseq {dseq} is priced in {denom}, not {}; not counted",
                        self.settings.denom
                    ),
                    Some(json!({"dseq": dseq.to_string(), "denom": denom})),
                );
                continue;
            }
            let amount: Decimal = price
                .get("amount")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("lease.price.amount"))?
                .parse()
                .map_err(|error: AmountError| malformed(&format!("a valid price ({error})")))?;
            let entry = sums.entry(dseq).or_insert((Decimal::ZERO, 0));
            entry.0 = entry
                .0
                .checked_add(amount)
                .ok_or_else(|| malformed("lease prices that fit"))?;
            entry.1 += 1;
        }
        Ok(LeaseRates {
            owner: owner.to_owned(),
            rates: sums
                .into_iter()
                .map(|(dseq, (rate, leases))| LeaseRate {
                    dseq: dseq.to_string(),
                    rate_per_block: rate,
                    denom: self.settings.denom.clone(),
                    leases,
                })
                .collect(),
        })
    }

    /// Follows `pagination.next_key` and collects the `field` arrays of every page.
    async fn paginate(
        &self,
        path: &str,
        field: &str,
        call: &Call<'_>,
    ) -> Result<Vec<Value>, StepError> {
        const MAX_PAGES: usize = 100;
        let mut items = Vec::new();
        let mut key: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = match &key {
                Some(key) => format!(
                    "{path}&pagination.limit=1000&pagination.key={}",
                    encode_query(key)
                ),
                None => format!("{path}&pagination.limit=1000"),
            };
            let body = self
                .rest
                .get(&page, call.deadline)
                .await
                .map_err(|e| e.into_step_error(field))?;
            let list = body.get(field).and_then(Value::as_array).ok_or_else(|| {
                StepError::retryable(format!("{field}: no {field} array in the answer"))
            })?;
            items.extend(list.iter().cloned());
            key = body
                .get("pagination")
                .and_then(|p| p.get("next_key"))
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            if key.is_none() {
                return Ok(items);
            }
        }
        Err(StepError::permanent(format!(
            "{field}: more than {MAX_PAGES} pages of 1000"
        )))
    }

    async fn sign_deposit(
        &self,
        owner: &str,
        dseq: u64,
        amount: &str,
        memo: Option<String>,
        call: &Call<'_>,
    ) -> Result<SignedDeposit, StepError> {
        let coin = Coin::parse_with_default(amount, &self.settings.denom)
            .map_err(|error| StepError::permanent(format!("amount: {error}")))?;
        if coin.amount == 0 {
            return Err(StepError::permanent("amount must be positive"));
        }
        let key = self.signing_key(Authority::Automation).await?;
        let intent = DepositIntent {
            signer: key.signer.address().to_owned(),
            owner: owner.to_owned(),
            dseq,
            amount: coin.amount,
            denom: coin.denom.clone(),
            // An ephemeral key deposits the granter's funds through its grant.
            from_grant: key.granter.is_some(),
        };
        let message = intent.to_any(self.settings.msg_version);
        let signed = self
            .sign_messages(
                &key,
                vec![message],
                "deposit",
                dseq,
                &format!(" amount={coin}"),
                memo,
                call,
            )
            .await?;
        Ok(SignedDeposit {
            tx_bytes_b64: signed.tx_bytes_b64,
            tx_hash: signed.tx_hash,
            chain_id: signed.chain_id,
            account_number: signed.account_number,
            sequence: signed.sequence,
            signer: signed.signer,
            msg_type: signed.msg_type,
            owner: owner.to_owned(),
            dseq: signed.dseq,
            amount: coin.amount.to_string(),
            denom: coin.denom,
            gas_limit: signed.gas_limit,
            fee: signed.fee,
        })
    }

    async fn sign_create_deployment(
        &self,
        dseq: u64,
        groups: &Value,
        hash_hex: &str,
        deposit: &str,
        memo: Option<String>,
        call: &Call<'_>,
    ) -> Result<SignedTx, StepError> {
        let owner = self.owner_address()?;
        let hash = parse_manifest_hash(hash_hex).map_err(|e| StepError::permanent(e.0))?;
        let groups = groups_from_json(groups).map_err(|e| StepError::permanent(e.0))?;
        let deposit = Coin::parse_with_default(deposit, &self.settings.denom)
            .map_err(|error| StepError::permanent(format!("deposit: {error}")))?;
        if deposit.amount == 0 {
            return Err(StepError::permanent("deposit must be positive"));
        }
        let details = format!(
            " groups={} hash={} deposit={deposit}",
            groups.len(),
            hex::encode(hash)
        );
        let message = MsgCreateDeployment::new(&owner, dseq, groups, hash, &deposit);
        self.sign_message(
            message.to_any(),
            "create-deployment",
            dseq,
            &details,
            memo,
            call,
        )
        .await
    }

    async fn sign_close_deployment(
        &self,
        dseq: u64,
        memo: Option<String>,
        call: &Call<'_>,
    ) -> Result<SignedTx, StepError> {
        let message = MsgCloseDeployment {
            id: Some(DeploymentId {
                owner: self.owner_address()?,
                dseq,
            }),
        };
        self.sign_message(message.to_any(), "close-deployment", dseq, "", memo, call)
            .await
    }

    async fn sign_create_lease(
        &self,
        bid: BidId,
        memo: Option<String>,
        call: &Call<'_>,
    ) -> Result<SignedTx, StepError> {
        let details = format!(
            " gseq={} oseq={} provider={} bseq={}",
            bid.gseq, bid.oseq, bid.provider, bid.bseq
        );
        let dseq = bid.dseq;
        let message = MsgCreateLease { bid_id: Some(bid) };
        self.sign_message(message.to_any(), "create-lease", dseq, &details, memo, call)
            .await
    }

    /// What every signing operation does once its message is built: look up the
    /// account (after checking the chain id), size the gas (simulating if configured),
    /// compute the fee, sign, record the signature in the key audit *before* the bytes
    /// leave the executor, and log one line (`signed {what} tx … dseq=…{details} …`).
    async fn sign_message(
        &self,
        message: Any,
        what: &str,
        dseq: u64,
        details: &str,
        memo: Option<String>,
        call: &Call<'_>,
    ) -> Result<SignedTx, StepError> {
        let key = self.signing_key(Authority::Automation).await?;
        self.sign_messages(&key, vec![message], what, dseq, details, memo, call)
            .await
    }

    /// [`Self::sign_message`] for several messages in one transaction (all or nothing on
    /// chain); `msg_type` of the answer is the first one's, the audit lists them all.
    #[allow(clippy::too_many_arguments)]
    async fn sign_messages(
        &self,
        key: &SigningKey,
        messages: Vec<Any>,
        what: &str,
        dseq: u64,
        details: &str,
        memo: Option<String>,
        call: &Call<'_>,
    ) -> Result<SignedTx, StepError> {
        let signer = key.signer.as_ref();
        // The audit names what the transaction does, MsgExec or not.
        let message_types: Vec<String> = messages.iter().map(|m| m.type_url.clone()).collect();
        // An ephemeral key acts for its granter: deposits name it as their signer and
        // draw on the grant themselves; every other message is the granter's and goes
        // inside one MsgExec.
        let messages = match &key.granter {
            Some(_) => {
                let (direct, granted): (Vec<Any>, Vec<Any>) = messages
                    .into_iter()
                    .partition(|m| m.type_url == super::ephemeral::MSG_ACCOUNT_DEPOSIT_TYPE_URL);
                let mut messages = direct;
                if !granted.is_empty() {
                    messages.push(super::ephemeral::exec_message(signer.address(), granted));
                }
                messages
            }
            None => messages,
        };
        let memo = memo
            .or_else(|| self.settings.memo.clone())
            .unwrap_or_else(|| format!("morpheus:{}", call.idempotency_key));
        let memo = truncate_to(&memo, 256);
        self.check_chain_id(call).await?;
        let account = self.account(signer.address(), call).await?;
        let account_number = match (account.exists, account.account_number) {
            (true, Some(number)) => number,
            _ => {
                return Err(StepError::permanent(format!(
                    "account {} does not exist on chain {} (it was never funded)",
                    signer.address(),
                    self.settings.chain_id
                )))
            }
        };
        let msg_type = messages
            .first()
            .map(|message| message.type_url.clone())
            .unwrap_or_default();
        let mut params = TxParams {
            chain_id: &self.settings.chain_id,
            account_number,
            sequence: account.sequence,
            memo,
            fee: Coin::new(0, self.fee_denom()),
            gas_limit: 0,
            fee_granter: key.granter.as_deref(),
        };
        let gas_limit = match self.settings.gas {
            Gas::Fixed(limit) => limit,
            Gas::Simulate => {
                let unsigned = tx::unsigned_for_simulation(signer, messages.clone(), &params)
                    .map_err(StepError::permanent)?;
                let gas_used = self.simulate(&unsigned, call).await?;
                (gas_used as f64 * self.settings.gas_adjustment).ceil() as u64
            }
        };
        params.gas_limit = gas_limit;
        params.fee = self.fee_for(gas_limit)?;
        let signed = tx::sign(signer, messages, &params).map_err(StepError::permanent)?;
        let output = SignedTx {
            tx_bytes_b64: BASE64.encode(&signed.bytes),
            tx_hash: signed.hash,
            chain_id: self.settings.chain_id.clone(),
            account_number,
            sequence: account.sequence,
            signer: signer.address().to_owned(),
            msg_type,
            dseq: dseq.to_string(),
            gas_limit,
            fee: params.fee.to_string(),
        };
        if let Some(audit) = &self.audit {
            audit
                .record(crate::audit::Signed {
                    chain: format!("cosmos:{}", self.settings.chain_id),
                    tx_hash: &output.tx_hash,
                    address: &output.signer,
                    message_types,
                    idempotency_key: call.idempotency_key,
                    key_id: key.audit_key_id.clone(),
                })
                .await?;
        }
        call.logs.log(
            LogLevel::Info,
            format!(
                "signed {what} tx {} dseq={}{details} sequence={} gas={} fee={}",
                output.tx_hash, output.dseq, output.sequence, gas_limit, output.fee
            ),
            Some(json!({"tx_hash": output.tx_hash, "dseq": output.dseq, "sequence": output.sequence})),
        );
        Ok(output)
    }

    async fn bids(
        &self,
        owner: &str,
        dseq: u64,
        state: Option<String>,
        call: &Call<'_>,
    ) -> Result<Bids, StepError> {
        let state = match state {
            Some(state) if ["open", "active", "lost", "closed"].contains(&state.as_str()) => {
                format!("&filters.state={state}")
            }
            Some(state) => {
                return Err(StepError::permanent(format!(
                    "bid state '{state}' is not open, active, lost or closed"
                )))
            }
            None => String::new(),
        };
        let path = format!(
            "/akash/market/{}/bids/list?filters.owner={}&filters.dseq={dseq}{state}",
            self.settings.leases_api.as_str(),
            encode_query(owner)
        );
        let mut bids = Vec::new();
        for item in self.paginate(&path, "bids", call).await? {
            let malformed =
                |what: &str| StepError::retryable(format!("bid answer without {what}: {item}"));
            let bid = item.get("bid").ok_or_else(|| malformed("bid"))?;
            // v1beta5 calls the id `id`, v1beta4 `bid_id`.
            let id = ["id", "bid_id"]
                .iter()
                .find_map(|key| bid.get(key))
                .ok_or_else(|| malformed("bid.id"))?;
            let small = |field: &str| {
                u64_field(id, field)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| malformed(&format!("bid.id.{field}")))
            };
            let text = |value: &Value, field: &str| {
                value
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| malformed(field))
            };
            let price = bid.get("price").ok_or_else(|| malformed("bid.price"))?;
            let amount: Decimal = text(price, "amount")?
                .parse()
                .map_err(|error: AmountError| malformed(&format!("a valid price ({error})")))?;
            bids.push(Bid {
                dseq: u64_field(id, "dseq")
                    .ok_or_else(|| malformed("bid.id.dseq"))?
                    .to_string(),
                gseq: small("gseq")?,
                oseq: small("oseq")?,
                provider: text(id, "provider")?,
                bseq: small("bseq")?,
                state: text(bid, "state")?,
                price: BidPrice {
                    denom: text(price, "denom")?,
                    amount,
                },
            });
        }
        bids.sort_by(|a, b| {
            (a.gseq, a.oseq, a.price.amount, &a.provider, a.bseq).cmp(&(
                b.gseq,
                b.oseq,
                b.price.amount,
                &b.provider,
                b.bseq,
            ))
        });
        Ok(Bids { bids })
    }

    async fn provider(&self, address: &str, call: &Call<'_>) -> Result<ProviderInfo, StepError> {
        let path = format!("/akash/provider/v1beta4/providers/{address}");
        let body = match self.rest.get(&path, call.deadline).await {
            Ok(body) => body,
            Err(error) if error.is_not_found() => {
                return Err(StepError::permanent(format!(
                    "provider {address} is not registered on chain {}",
                    self.settings.chain_id
                )))
            }
            Err(error) => return Err(error.into_step_error("provider")),
        };
        let malformed =
            |what: &str| StepError::retryable(format!("provider answer without {what}: {body}"));
        let provider = body.get("provider").ok_or_else(|| malformed("provider"))?;
        let host_uri = provider
            .get("host_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("provider.host_uri"))?
            .to_owned();
        let attributes = provider
            .get("attributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|attribute| {
                let text = |key: &str| {
                    attribute
                        .get(key)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| malformed(&format!("provider.attributes[].{key}")))
                };
                Ok(ProviderAttribute {
                    key: text("key")?,
                    value: text("value")?,
                })
            })
            .collect::<Result<_, StepError>>()?;
        Ok(ProviderInfo {
            address: address.to_owned(),
            host_uri,
            attributes,
        })
    }

    async fn send_manifest(
        &self,
        host_uri: &str,
        dseq: u64,
        manifest_json: &str,
    ) -> Result<ManifestSent, StepError> {
        let signer = self.signer()?;
        let host_uri = normalize_host_uri(host_uri)?;
        // The provider checks the hash of its own re-serialization; text that is not
        // JSON at all can only be a caller's mistake, so it is refused before sending.
        serde_json::from_str::<Value>(manifest_json)
            .map_err(|error| StepError::permanent(format!("manifest_json is not JSON: {error}")))?;
        let answer = self
            .providers
            .request(
                signer,
                Method::PUT,
                &host_uri,
                &format!("/deployment/{dseq}/manifest"),
                Some(manifest_json),
                "send_manifest",
            )
            .await?;
        Ok(ManifestSent {
            status: answer.status.as_u16(),
            host_uri,
        })
    }

    async fn lease_status(
        &self,
        host_uri: &str,
        dseq: u64,
        gseq: u32,
        oseq: u32,
    ) -> Result<LeaseStatus, StepError> {
        let signer = self.signer()?;
        let host_uri = normalize_host_uri(host_uri)?;
        let answer = self
            .providers
            .request(
                signer,
                Method::GET,
                &host_uri,
                &format!("/lease/{dseq}/{gseq}/{oseq}/status"),
                None,
                "lease_status",
            )
            .await?;
        parse_lease_status(&answer.body).map_err(|why| {
            StepError::retryable(format!("lease_status: provider {host_uri}: {why}"))
        })
    }

    fn fee_denom(&self) -> String {
        match &self.settings.fee {
            FeePolicy::Fixed(coin) => coin.denom.clone(),
            FeePolicy::GasPrice(price) => price.denom.clone(),
        }
    }

    fn fee_for(&self, gas_limit: u64) -> Result<Coin, StepError> {
        match &self.settings.fee {
            FeePolicy::Fixed(coin) => Ok(coin.clone()),
            FeePolicy::GasPrice(price) => price
                .amount
                .checked_mul_integer(u128::from(gas_limit))
                .map(|fee| Coin::new(fee.ceil(), price.denom.clone()))
                .ok_or_else(|| StepError::permanent("fee overflows")),
        }
    }

    /// Gas the node says the transaction uses. Simulation runs the full transaction,
    /// so its errors say what broadcasting would say.
    async fn simulate(&self, tx_bytes: &[u8], call: &Call<'_>) -> Result<u64, StepError> {
        let body = json!({"tx_bytes": BASE64.encode(tx_bytes)});
        match self
            .rest
            .post("/cosmos/tx/v1beta1/simulate", &body, call.deadline)
            .await
        {
            Ok(answer) => answer
                .get("gas_info")
                .and_then(|info| u64_field(info, "gas_used"))
                .filter(|gas| *gas > 0)
                .ok_or_else(|| {
                    StepError::retryable(format!("simulate: no gas_info.gas_used in {answer}"))
                }),
            Err(RestError::Status { message, .. }) if message.contains("sequence mismatch") => {
                Err(StepError::retryable(format!(
                    "simulate: {message} (the account's sequence moved while signing)"
                )))
            }
            Err(RestError::Status {
                status, message, ..
            }) if status.is_client_error() || is_deterministic_failure(&message) => {
                Err(StepError::permanent(format!("simulate: {message}")))
            }
            Err(error) => Err(error.into_step_error("simulate")),
        }
    }

    async fn broadcast(
        &self,
        tx_bytes_b64: &str,
        call: &Call<'_>,
    ) -> Result<BroadcastResult, StepError> {
        let bytes = BASE64.decode(tx_bytes_b64.trim()).map_err(|error| {
            StepError::permanent(format!("tx_bytes_b64 is not base64: {error}"))
        })?;
        let sequence = tx::tx_sequence(&bytes)
            .map_err(|error| StepError::permanent(format!("tx_bytes_b64: {error}")))?;
        let hash = tx::tx_hash(&bytes);
        // Already in a block (a resumed run): nothing to send.
        if let Some(found) = self.lookup_tx(&hash, call.deadline).await? {
            call.logs
                .info(format!("tx {hash} is already in block {}", found.height));
            return finish(&hash, found, true);
        }
        // Checked at the last moment: a worker frozen past its lease must not send
        // anything (re-sending the same bytes would be harmless, but a stale worker
        // acting at all is what fencing exists to prevent).
        if !call.lease.is_held() {
            return Err(StepError::retryable(format!(
                "the run's lease lapsed before broadcasting tx {hash}; nothing was sent"
            )));
        }
        crash_point("cosmos.broadcast.before_send", call.idempotency_key);
        let body = json!({"tx_bytes": tx_bytes_b64.trim(), "mode": "BROADCAST_MODE_SYNC"});
        let answer = self
            .rest
            .post("/cosmos/tx/v1beta1/txs", &body, call.deadline)
            .await
            .map_err(|e| e.into_step_error("broadcast"))?;
        let checked = TxResponse::parse(&answer).ok_or_else(|| {
            StepError::retryable(format!("broadcast: no tx_response in {answer}"))
        })?;
        let sdk = checked.codespace.is_empty() || checked.codespace == "sdk";
        let already_known = match checked.code {
            0 => false,
            CODE_TX_IN_CACHE if sdk => true,
            _ if checked.raw_log.contains("tx already exists in cache") => true,
            CODE_WRONG_SEQUENCE if sdk => {
                // The same bytes may have landed earlier (the node's cache forgot them).
                if let Some(found) = self.lookup_tx(&hash, call.deadline).await? {
                    return finish(&hash, found, true);
                }
                return Err(coded_failure(
                    SEQUENCE_MISMATCH,
                    format_args!(
                        "{} (tx {hash} signed with sequence {sequence} is not on chain; \
                         query tx_status and account, and sign anew only if the account's sequence is past {sequence})",
                        checked.raw_log
                    ),
                ));
            }
            CODE_MEMPOOL_FULL if sdk => {
                return Err(StepError::retryable(format!(
                    "broadcast: mempool is full ({})",
                    checked.raw_log
                )))
            }
            code => {
                return Err(coded_failure(
                    TX_REJECTED,
                    format_args!(
                        "code {code} ({}): {} (tx {hash})",
                        checked.codespace, checked.raw_log
                    ),
                ))
            }
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
            Some(json!({"tx_hash": hash})),
        );
        crash_point("cosmos.broadcast.after_send", call.idempotency_key);
        let found = self.confirm(&hash, call).await?;
        crash_point("cosmos.broadcast.after_confirm", call.idempotency_key);
        finish(&hash, found, already_known)
    }

    /// Polls for the transaction until it is in a block, or the confirm timeout or the
    /// call's deadline passes.
    async fn confirm(&self, hash: &str, call: &Call<'_>) -> Result<TxResponse, StepError> {
        let timeouts = &self.settings.timeouts;
        let started = Instant::now();
        let mut until = started + timeouts.confirm;
        if let Some(deadline) = call.deadline {
            until = until.min(deadline);
        }
        loop {
            // Each look-up is bounded by the call's deadline, not by the confirm
            // window, so a slow answer near the window's end is not cut off as an
            // error; the window is checked between look-ups.
            if let Some(found) = self.lookup_tx(hash, call.deadline).await? {
                return Ok(found);
            }
            let now = Instant::now();
            if now + timeouts.confirm_poll > until {
                return Err(StepError::retryable(format!(
                    "tx {hash} not in a block after {}; broadcasting the same bytes again is safe",
                    humantime::format_duration(round_ms(now - started))
                )));
            }
            tokio::time::sleep(timeouts.confirm_poll).await;
        }
    }

    async fn lookup_tx(
        &self,
        hash: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<TxResponse>, StepError> {
        match self
            .rest
            .get(&format!("/cosmos/tx/v1beta1/txs/{hash}"), deadline)
            .await
        {
            Ok(body) => TxResponse::parse(&body).map(Some).ok_or_else(|| {
                StepError::retryable(format!("tx {hash}: no tx_response in the answer"))
            }),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error.into_step_error(&format!("tx {hash}"))),
        }
    }

    async fn tx_status(
        &self,
        hash: &str,
        deadline: Option<Instant>,
    ) -> Result<TxStatus, StepError> {
        let found = self.lookup_tx(hash, deadline).await?;
        Ok(TxStatus {
            tx_hash: hash.to_owned(),
            found: found.is_some(),
            height: found.as_ref().map(|f| f.height),
            code: found.as_ref().map(|f| f.code),
            raw_log: found.map(|f| f.raw_log),
        })
    }
}

/// A provider's lease status answer (`{"services": {name: {"available", "total",
/// "uris", "ready_replicas", …}}, "forwarded_ports": {…}}`), reduced to what a deploy
/// waits for.
fn parse_lease_status(body: &str) -> Result<LeaseStatus, String> {
    let body: Value =
        serde_json::from_str(body).map_err(|error| format!("answer is not JSON: {error}"))?;
    let count = |service: &Value, name: &str, field: &str| -> Result<u32, String> {
        match service.get(field) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("services.{name}.{field} is {value}, not a count")),
        }
    };
    let mut services = BTreeMap::new();
    if let Some(listed) = body.get("services").filter(|s| !s.is_null()) {
        let listed = listed
            .as_object()
            .ok_or_else(|| format!("services is {listed}, not an object"))?;
        for (name, service) in listed {
            let uris = match service.get("uris") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(uris)) => uris
                    .iter()
                    .map(|uri| {
                        uri.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("services.{name}.uris holds {uri}"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(format!("services.{name}.uris is {other}")),
            };
            services.insert(
                name.clone(),
                ServiceStatus {
                    available: count(service, name, "available")?,
                    total: count(service, name, "total")?,
                    uris,
                    ready_replicas: count(service, name, "ready_replicas")?,
                },
            );
        }
    }
    // A service with no replicas wanted is not up; an empty lease is not ready.
    let ready = !services.is_empty()
        && services
            .values()
            .all(|service| service.total > 0 && service.available >= service.total);
    let forwarded_ports = match body.get("forwarded_ports") {
        None | Some(Value::Null) => json!({}),
        Some(ports) => ports.clone(),
    };
    Ok(LeaseStatus {
        ready,
        services,
        forwarded_ports,
    })
}

/// A found transaction as the outcome of `broadcast`.
fn finish(
    hash: &str,
    found: TxResponse,
    already_known: bool,
) -> Result<BroadcastResult, StepError> {
    if found.code != 0 {
        return Err(coded_failure(
            TX_FAILED,
            format_args!(
                "code {} ({}) in block {}: {} (tx {hash}; its fee was paid and its sequence used)",
                found.code, found.codespace, found.height, found.raw_log
            ),
        ));
    }
    Ok(BroadcastResult {
        tx_hash: hash.to_owned(),
        height: found.height,
        code: 0,
        gas_used: found.gas_used,
        already_known,
    })
}

/// Errors a node reports that retrying the same transaction cannot fix.
fn is_deterministic_failure(message: &str) -> bool {
    [
        "insufficient funds",
        "insufficient fee",
        "not found",
        "closed",
        "unauthorized",
        "invalid",
        "unable to resolve type URL",
        "out of gas",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// The `BaseAccount` inside an account answer, also when wrapped (vesting and module
/// accounts nest it as `base_account` / `base_vesting_account.base_account`).
fn find_base_account(account: &Value) -> Option<&Value> {
    if account.get("account_number").is_some() {
        return Some(account);
    }
    ["base_account", "base_vesting_account"]
        .iter()
        .find_map(|key| account.get(key).and_then(find_base_account))
}

fn normalize_hash(text: &str) -> Result<String, StepError> {
    let hash = text.trim().to_ascii_uppercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(StepError::permanent(format!(
            "tx_hash '{text}' is not 64 hex digits"
        )))
    }
}

fn truncate_to(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_serialize_to_the_json_the_executor_always_read() {
        let cases = [
            (CosmosRequest::LatestHeight, json!({"op": "latest_height"})),
            (
                CosmosRequest::Account { address: None },
                json!({"op": "account"}),
            ),
            (
                CosmosRequest::Balance {
                    address: None,
                    denom: Some("uakt".into()),
                },
                json!({"op": "balance", "denom": "uakt"}),
            ),
            (
                CosmosRequest::Deployments {
                    owner: Some("akash1owner".into()),
                    dseqs: Some(vec![1002, 7]),
                    include_closed: true,
                },
                json!({"op": "deployments", "owner": "akash1owner", "dseqs": ["1002", "7"],
                       "include_closed": true}),
            ),
            (
                CosmosRequest::Deployments {
                    owner: Some("akash1owner".into()),
                    dseqs: None,
                    include_closed: false,
                },
                json!({"op": "deployments", "owner": "akash1owner", "dseqs": null,
                       "include_closed": false}),
            ),
            (
                CosmosRequest::Leases {
                    owner: Some("akash1owner".into()),
                    dseqs: None,
                },
                json!({"op": "leases", "owner": "akash1owner", "dseqs": null}),
            ),
            (
                CosmosRequest::SignDeposit {
                    owner: Some("akash1owner".into()),
                    dseq: 1002,
                    amount: "5000000uakt".into(),
                    memo: None,
                },
                json!({"op": "sign_deposit", "owner": "akash1owner", "dseq": "1002",
                       "amount": "5000000uakt"}),
            ),
            (
                CosmosRequest::Broadcast {
                    tx_bytes_b64: "AAAA".into(),
                },
                json!({"op": "broadcast", "tx_bytes_b64": "AAAA"}),
            ),
            (
                CosmosRequest::TxStatus {
                    tx_hash: "AB12".into(),
                },
                json!({"op": "tx_status", "tx_hash": "AB12"}),
            ),
        ];
        for (request, expected) in cases {
            let sent = serde_json::to_value(&request).unwrap();
            assert_eq!(sent, expected);
            assert_eq!(
                serde_json::from_value::<CosmosRequest>(sent).unwrap(),
                request
            );
        }
    }

    #[test]
    fn coded_failures_read_back_their_code_from_the_stored_message() {
        for (code, prefix) in CODED_PREFIXES {
            let error = coded_failure(code.clone(), "code 32 (sdk): account sequence mismatch");
            assert!(!error.is_retryable());
            assert!(error.message().starts_with(prefix), "{}", error.message());
            assert_eq!(error.code(), Some(&code));
            assert_eq!(error_code(error.message()), Some(code));
        }
        assert_eq!(error_code("broadcast: mempool is full (x)"), None);
    }

    #[test]
    fn payloads_parse_with_string_or_number_dseqs() {
        let request: CosmosRequest = serde_json::from_value(json!({
            "op": "sign_deposit", "dseq": "123", "amount": "5000000uakt"
        }))
        .unwrap();
        assert_eq!(
            request,
            CosmosRequest::SignDeposit {
                owner: None,
                dseq: 123,
                amount: "5000000uakt".into(),
                memo: None
            }
        );
        let request: CosmosRequest =
            serde_json::from_value(json!({"op": "leases", "dseqs": [1, "2"]})).unwrap();
        assert_eq!(
            request,
            CosmosRequest::Leases {
                owner: None,
                dseqs: Some(vec![1, 2])
            }
        );
        let request: CosmosRequest =
            serde_json::from_value(json!({"op": "latest_height"})).unwrap();
        assert_eq!(request, CosmosRequest::LatestHeight);
    }

    #[test]
    fn bad_payloads_are_refused() {
        for bad in [
            json!({"op": "sign_deposit", "dseq": "x", "amount": "1"}),
            json!({"op": "sign_deposit", "dseq": -1, "amount": "1"}),
            json!({"op": "sign_deposit", "amount": "1"}),
            json!({"op": "broadcast", "tx_bytes_b64": "AA==", "extra": 1}),
            json!({"op": "transfer"}),
            json!({"dseq": 1}),
        ] {
            assert!(
                serde_json::from_value::<CosmosRequest>(bad.clone()).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn resign_only_when_provably_never_landed() {
        assert!(!can_resign(true, 10, 3));
        assert!(!can_resign(false, 3, 3));
        assert!(!can_resign(false, 2, 3));
        assert!(can_resign(false, 4, 3));
    }

    #[test]
    fn base_accounts_are_found_inside_wrappers() {
        let vesting = json!({
            "@type": "/cosmos.vesting.v1beta1.ContinuousVestingAccount",
            "base_vesting_account": {"base_account": {"address": "a", "account_number": "4", "sequence": "9"}}
        });
        let base = find_base_account(&vesting).unwrap();
        assert_eq!(u64_field(base, "sequence"), Some(9));
        assert!(find_base_account(&json!({"address": "a"})).is_none());
    }

    #[test]
    fn hashes_and_memos_are_normalized() {
        let hash = "ab".repeat(32);
        assert_eq!(normalize_hash(&hash).unwrap(), "AB".repeat(32));
        assert!(normalize_hash("xyz").is_err());
        assert_eq!(truncate_to("héllo", 2), "h");
        assert_eq!(truncate_to("hello", 10), "hello");
    }
}
