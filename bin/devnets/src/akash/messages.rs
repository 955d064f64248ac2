//! The Akash messages as the simulator reads them: its own prost types, written from
//! the Akash protobuf definitions (`akash-network/chain-sdk`, `proto/node/akash/…`) and
//! checked field by field against the SDK's generated encoders
//! (`@akashnetwork/chain-sdk` 1.0.0-alpha.25, `dist/cjs/generated/protos/akash/…`),
//! not shared with the `cosmos` executor that signs them. The simulator is the oracle
//! the client is tested against; if both used one set of types, an encoding mistake in
//! the client would decode "correctly" here and no test would see it.
//!
//! # Deposits
//!
//! | message (type URL) | fields, from the `.proto` files |
//! |---|---|
//! | `/akash.escrow.v1.MsgAccountDeposit` (`escrow/v1/msg.proto`) | `string owner = 1` (the signer, who pays), `akash.escrow.id.v1.Account id = 2`, `akash.base.deposit.v1.Deposit deposit = 3` |
//! | `akash.escrow.id.v1.Account` (`escrow/id/v1/id.proto`) | `Scope scope = 1` (`invalid = 0`, `deployment = 1`, `bid = 2`), `string xid = 2` (`"{owner}/{dseq}"` for a deployment) |
//! | `akash.base.deposit.v1.Deposit` (`base/deposit/v1/deposit.proto`) | `cosmos.base.v1beta1.Coin amount = 1`, `repeated Source sources = 5` (`invalid = 0`, `balance = 1`, `grant = 2`) |
//! | `/akash.deployment.v1beta3.MsgDepositDeployment` (`deployment/v1beta3/deploymentmsg.proto`) | `DeploymentID id = 1`, `cosmos.base.v1beta1.Coin amount = 2`, `string depositor = 3` |
//! | `akash.deployment.v1beta3.DeploymentID` | `string owner = 1`, `uint64 dseq = 2` |
//!
//! A repeated enum is packed by default in proto3; a decoder must accept both the packed
//! and the unpacked form, and prost's does.
//!
//! # Deployments, orders, leases
//!
//! | message (type URL) | fields, checked against the SDK's generated encoders |
//! |---|---|
//! | `/akash.deployment.v1beta4.MsgCreateDeployment` | `akash.deployment.v1.DeploymentID id = 1`, `repeated GroupSpec groups = 2`, `bytes hash = 3`, `akash.base.deposit.v1.Deposit deposit = 4` |
//! | `/akash.deployment.v1beta4.MsgCloseDeployment` | `akash.deployment.v1.DeploymentID id = 1` |
//! | `/akash.market.v1beta5.MsgCreateLease` | `akash.market.v1.BidID bid_id = 1` |
//! | `akash.deployment.v1.DeploymentID` | `string owner = 1`, `uint64 dseq = 2` |
//! | `akash.market.v1.BidID` | `string owner = 1`, `uint64 dseq = 2`, `uint32 gseq = 3`, `uint32 oseq = 4`, `string provider = 5`, `uint32 bseq = 6` |
//! | `akash.deployment.v1beta4.GroupSpec` | `string name = 1`, `akash.base.attributes.v1.PlacementRequirements requirements = 2`, `repeated ResourceUnit resources = 3` |
//! | `akash.deployment.v1beta4.ResourceUnit` | `akash.base.resources.v1beta4.Resources resource = 1`, `uint32 count = 2`, `cosmos.base.v1beta1.DecCoin price = 3` |
//! | `akash.base.attributes.v1.PlacementRequirements` | `SignedBy signed_by = 1`, `repeated Attribute attributes = 2` |
//! | `akash.base.attributes.v1.SignedBy` | `repeated string all_of = 1`, `repeated string any_of = 2` |
//! | `akash.base.attributes.v1.Attribute` | `string key = 1`, `string value = 2` |
//! | `akash.base.resources.v1beta4.Resources` | `uint32 id = 1`, `CPU cpu = 2`, `Memory memory = 3`, `repeated Storage storage = 4`, `GPU gpu = 5`, `repeated Endpoint endpoints = 6` |
//! | `akash.base.resources.v1beta4.CPU` / `GPU` | `ResourceValue units = 1`, `repeated Attribute attributes = 2` |
//! | `akash.base.resources.v1beta4.Memory` | `ResourceValue quantity = 1`, `repeated Attribute attributes = 2` |
//! | `akash.base.resources.v1beta4.Storage` | `string name = 1`, `ResourceValue quantity = 2`, `repeated Attribute attributes = 3` |
//! | `akash.base.resources.v1beta4.ResourceValue` | `bytes val = 1` (the ASCII decimal of the number) |
//! | `akash.base.resources.v1beta4.Endpoint` | `Kind kind = 1` (`SHARED_HTTP = 0`, `RANDOM_PORT = 1`, `LEASED_IP = 2`), `uint32 sequence_number = 2` |
//! | `cosmos.base.v1beta1.DecCoin` | `string denom = 1`, `string amount = 2` (a `LegacyDec`: on the wire the value scaled by 10¹⁸ as an integer) |
//!
//! prost skips fields it does not know; the chain's decoder refuses them ("unknown
//! field", a tx parse error). So before decoding these three messages the simulator
//! walks their wire bytes against the table above ([`check_wire`]), and a client that
//! put a field under a wrong number is refused instead of silently losing it.

use cosmrs::proto::cosmos::base::v1beta1::{Coin, DecCoin};
use cosmrs::Any;
use prost::Message;

use super::dec::Dec;

/// Which of the two deposit messages carried a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositMessage {
    /// `/akash.escrow.v1.MsgAccountDeposit`: current chains. Its module errors are
    /// reported in the `escrow` codespace.
    AccountDeposit,
    /// `/akash.deployment.v1beta3.MsgDepositDeployment`: older chains. Its module errors
    /// are reported in the `deployment` codespace.
    DepositDeployment,
}

impl DepositMessage {
    /// The message's type URL, as it appears in a transaction's `Any`.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::AccountDeposit => "/akash.escrow.v1.MsgAccountDeposit",
            Self::DepositDeployment => "/akash.deployment.v1beta3.MsgDepositDeployment",
        }
    }
}

/// A decoded deposit: what either message asks the chain to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRequest {
    /// The account that signs and pays (`owner` of `MsgAccountDeposit`, `depositor`
    /// of `MsgDepositDeployment`).
    pub signer: String,
    /// The deployment's owner.
    pub owner: String,
    /// The deployment's sequence number.
    pub dseq: u64,
    /// Amount in the denomination's base unit (positive).
    pub amount: u128,
    /// Denomination of the amount.
    pub denom: String,
    /// Which message carried it.
    pub message: DepositMessage,
}

/// Why a message was refused before execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Not a deposit message this simulator knows (the SDK's "unable to resolve type
    /// URL", a decoding failure of the transaction).
    UnknownType(String),
    /// Undecodable bytes or a deposit that fails the message's own validation (what
    /// `ValidateBasic` refuses: an invalid request).
    Invalid(String),
    /// Bytes the chain's decoder refuses (an unknown field, a wrong wire type): a tx
    /// parse error.
    Undecodable(String),
    /// What `ValidateBasic` refuses with a registered error of its own: the
    /// codespace and code the chain reports (`sdk` 7 invalid address, `deployment` 7
    /// invalid groups, …).
    Refused {
        /// `sdk`, `deployment` or `market`.
        codespace: &'static str,
        /// The error's code in that codespace.
        code: u32,
        /// The raw log.
        log: String,
    },
}

/// `akash.escrow.v1.MsgAccountDeposit`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgAccountDeposit {
    #[prost(string, tag = "1")]
    owner: String,
    #[prost(message, optional, tag = "2")]
    id: Option<EscrowAccount>,
    #[prost(message, optional, tag = "3")]
    deposit: Option<Deposit>,
}

/// `akash.escrow.id.v1.Account`.
#[derive(Clone, PartialEq, prost::Message)]
struct EscrowAccount {
    #[prost(int32, tag = "1")]
    scope: i32,
    #[prost(string, tag = "2")]
    xid: String,
}

/// `akash.escrow.id.v1.Scope` value of a deployment's escrow account.
const SCOPE_DEPLOYMENT: i32 = 1;

/// `akash.base.deposit.v1.Deposit`.
#[derive(Clone, PartialEq, prost::Message)]
struct Deposit {
    #[prost(message, optional, tag = "1")]
    amount: Option<Coin>,
    #[prost(int32, repeated, tag = "5")]
    sources: Vec<i32>,
}

/// `akash.base.deposit.v1.Source` value of "from the signer's bank balance".
const SOURCE_BALANCE: i32 = 1;

/// `akash.deployment.v1beta3.MsgDepositDeployment`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgDepositDeployment {
    #[prost(message, optional, tag = "1")]
    id: Option<DeploymentId>,
    #[prost(message, optional, tag = "2")]
    amount: Option<Coin>,
    #[prost(string, tag = "3")]
    depositor: String,
}

/// `akash.deployment.v1beta3.DeploymentID`, field for field the same as
/// `akash.deployment.v1.DeploymentID` (`deployment/v1/deployment.cjs`: owner tag 10,
/// dseq tag 16).
#[derive(Clone, PartialEq, prost::Message)]
struct DeploymentId {
    #[prost(string, tag = "1")]
    owner: String,
    #[prost(uint64, tag = "2")]
    dseq: u64,
}

/// Decodes one message of a transaction body and validates it as the chain's
/// `ValidateBasic` would: a deployment-scoped escrow id of the form `owner/dseq`, a
/// positive integer amount in a well-formed denomination, the balance as the only
/// source of funds. That the signer is the key's address is the ante handler's check.
pub fn decode_deposit(any: &Any) -> Result<DepositRequest, MessageError> {
    let invalid = |text: String| MessageError::Invalid(text);
    Ok(
        if any.type_url == DepositMessage::AccountDeposit.type_url() {
            let msg = MsgAccountDeposit::decode(any.value.as_slice())
                .map_err(|error| invalid(format!("cannot decode MsgAccountDeposit: {error}")))?;
            let id = msg
                .id
                .ok_or_else(|| invalid("MsgAccountDeposit has no escrow account id".into()))?;
            if id.scope != SCOPE_DEPLOYMENT {
                return Err(invalid(format!(
                    "escrow scope {} is not supported (only deployment)",
                    id.scope
                )));
            }
            let (owner, dseq) = split_xid(&id.xid).map_err(invalid)?;
            let deposit = msg
                .deposit
                .ok_or_else(|| invalid("MsgAccountDeposit has no deposit".into()))?;
            if deposit.sources != [SOURCE_BALANCE] {
                return Err(invalid(format!(
                    "deposit sources {:?} are not supported (only [balance])",
                    deposit.sources
                )));
            }
            let (amount, denom) = coin_amount(deposit.amount).map_err(invalid)?;
            DepositRequest {
                signer: msg.owner,
                owner,
                dseq,
                amount,
                denom,
                message: DepositMessage::AccountDeposit,
            }
        } else if any.type_url == DepositMessage::DepositDeployment.type_url() {
            let msg = MsgDepositDeployment::decode(any.value.as_slice())
                .map_err(|error| invalid(format!("cannot decode MsgDepositDeployment: {error}")))?;
            let id = msg
                .id
                .ok_or_else(|| invalid("MsgDepositDeployment has no deployment id".into()))?;
            let (amount, denom) = coin_amount(msg.amount).map_err(invalid)?;
            DepositRequest {
                signer: msg.depositor,
                owner: id.owner,
                dseq: id.dseq,
                amount,
                denom,
                message: DepositMessage::DepositDeployment,
            }
        } else {
            return Err(MessageError::UnknownType(format!(
                "unable to resolve type URL {}",
                any.type_url
            )));
        },
    )
}

/// Splits a deployment escrow id, `"{owner}/{dseq}"`.
fn split_xid(xid: &str) -> Result<(String, u64), String> {
    match xid.split_once('/') {
        Some((owner, dseq)) if !owner.is_empty() => dseq
            .parse()
            .map(|dseq| (owner.to_owned(), dseq))
            .map_err(|_| format!("escrow id '{xid}' has no numeric dseq")),
        _ => Err(format!("escrow id '{xid}' is not owner/dseq")),
    }
}

fn coin_amount(coin: Option<Coin>) -> Result<(u128, String), String> {
    let coin = coin.ok_or("deposit has no amount")?;
    let amount: u128 = coin
        .amount
        .parse()
        .map_err(|_| format!("deposit amount '{}' is not an integer", coin.amount))?;
    if amount == 0 {
        return Err("deposit amount must be positive".to_owned());
    }
    if !valid_denom(&coin.denom) {
        return Err(format!("'{}' is not a valid denomination", coin.denom));
    }
    Ok((amount, coin.denom))
}

/// The SDK's denomination rule: a letter, then 2 to 127 letters, digits or `/:._-`.
pub fn valid_denom(denom: &str) -> bool {
    let mut bytes = denom.bytes();
    let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    starts_with_letter
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"/:._-".contains(&b))
        && (3..=128).contains(&denom.len())
}

/// Type URL of `MsgCreateDeployment` (deployment module v1beta4).
pub const MSG_CREATE_DEPLOYMENT: &str = "/akash.deployment.v1beta4.MsgCreateDeployment";

/// Type URL of `MsgCloseDeployment` (deployment module v1beta4).
pub const MSG_CLOSE_DEPLOYMENT: &str = "/akash.deployment.v1beta4.MsgCloseDeployment";

/// Type URL of `MsgCreateLease` (market module v1beta5).
pub const MSG_CREATE_LEASE: &str = "/akash.market.v1beta5.MsgCreateLease";

/// Length of a deployment's hash: SHA-256 of its manifest (the chain's `HashLength`).
pub const HASH_LENGTH: usize = 32;

/// The smallest resource amounts a unit may ask for, the chain's validation limits:
/// 10 millicpu, 1 MiB of memory, 5 MiB per storage volume.
const MIN_CPU_MILLIS: u128 = 10;
const MIN_MEMORY_BYTES: u128 = 1 << 20;
const MIN_STORAGE_BYTES: u128 = 5 << 20;

/// One message of a transaction, decoded by the simulator's own types and validated
/// as the chain's `ValidateBasic` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainMessage {
    /// `MsgAccountDeposit` or `MsgDepositDeployment`.
    Deposit(DepositRequest),
    /// `MsgCreateDeployment`.
    CreateDeployment(CreateDeploymentRequest),
    /// `MsgCloseDeployment`.
    CloseDeployment(DeploymentRef),
    /// `MsgCreateLease`.
    CreateLease(BidRef),
}

impl ChainMessage {
    /// Who must sign it: the depositor of a deposit, the deployment's owner otherwise
    /// (the chain's `GetSigners`).
    pub fn signer(&self) -> &str {
        match self {
            Self::Deposit(deposit) => &deposit.signer,
            Self::CreateDeployment(create) => &create.owner,
            Self::CloseDeployment(close) => &close.owner,
            Self::CreateLease(bid) => &bid.owner,
        }
    }

    /// Its type URL.
    pub fn type_url(&self) -> &'static str {
        match self {
            Self::Deposit(deposit) => deposit.message.type_url(),
            Self::CreateDeployment(_) => MSG_CREATE_DEPLOYMENT,
            Self::CloseDeployment(_) => MSG_CLOSE_DEPLOYMENT,
            Self::CreateLease(_) => MSG_CREATE_LEASE,
        }
    }

    /// What it takes from the signer's balance: a deposit's amount, a new
    /// deployment's initial deposit, nothing for the others.
    pub fn spend(&self) -> u128 {
        match self {
            Self::Deposit(deposit) => deposit.amount,
            Self::CreateDeployment(create) => create.deposit,
            Self::CloseDeployment(_) | Self::CreateLease(_) => 0,
        }
    }

    /// The deployment it acts on, as `(owner, dseq)`.
    pub fn deployment_key(&self) -> (String, u64) {
        match self {
            Self::Deposit(deposit) => (deposit.owner.clone(), deposit.dseq),
            Self::CreateDeployment(create) => (create.owner.clone(), create.dseq),
            Self::CloseDeployment(close) => (close.owner.clone(), close.dseq),
            Self::CreateLease(bid) => (bid.owner.clone(), bid.dseq),
        }
    }
}

/// A decoded `MsgCreateDeployment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDeploymentRequest {
    /// The owner (and signer).
    pub owner: String,
    /// The deployment's sequence number (positive).
    pub dseq: u64,
    /// Its groups, at least one; the chain numbers them 1, 2, … in this order.
    pub groups: Vec<GroupSpec>,
    /// SHA-256 of the manifest ([`HASH_LENGTH`] bytes).
    pub hash: Vec<u8>,
    /// Initial escrow, taken from the owner's balance.
    pub deposit: u128,
    /// Denomination of the deposit.
    pub denom: String,
}

/// A deployment named by a message (`MsgCloseDeployment`'s id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef {
    /// The owner (and signer).
    pub owner: String,
    /// The deployment's sequence number.
    pub dseq: u64,
}

/// A bid named by `MsgCreateLease` (`akash.market.v1.BidID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidRef {
    /// The deployment's owner (and signer).
    pub owner: String,
    /// Deployment sequence.
    pub dseq: u64,
    /// Group sequence (positive).
    pub gseq: u32,
    /// Order sequence (positive).
    pub oseq: u32,
    /// The bidding provider.
    pub provider: String,
    /// Bid sequence.
    pub bseq: u32,
}

/// A deployment group as the chain stores it (`akash.deployment.v1beta4.GroupSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Its name (non-empty).
    pub name: String,
    /// Which providers may bid.
    pub requirements: PlacementRequirements,
    /// What it runs.
    pub resources: Vec<ResourceUnit>,
}

impl GroupSpec {
    /// The most the group pays per block: the sum over its resources of price ×
    /// count (the chain's `GroupSpec.Price()`); `None` if it overflows.
    pub fn price_ceiling(&self) -> Option<Dec> {
        self.resources.iter().try_fold(Dec::ZERO, |sum, unit| {
            sum.checked_add(unit.price.checked_mul_count(unit.count)?)
        })
    }

    /// The denomination of its prices (one for the whole group, as validation checks;
    /// empty for a group without resources).
    pub fn denom(&self) -> &str {
        self.resources
            .first()
            .map_or("", |unit| unit.denom.as_str())
    }
}

/// `akash.base.attributes.v1.PlacementRequirements`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementRequirements {
    /// Auditors that must all have signed the provider's attributes.
    pub signed_by_all_of: Vec<String>,
    /// Auditors of which one must have signed them.
    pub signed_by_any_of: Vec<String>,
    /// Attributes a provider must all have.
    pub attributes: Vec<Attribute>,
}

/// `akash.base.attributes.v1.Attribute`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attribute {
    /// Key (`region`, `capabilities/storage/1/class`, …).
    pub key: String,
    /// Value.
    pub value: String,
}

/// `akash.deployment.v1beta4.ResourceUnit`: `count` replicas of `resources` at `price`
/// each per block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUnit {
    /// What one replica needs.
    pub resources: Resources,
    /// How many replicas.
    pub count: u32,
    /// Price per replica per block.
    pub price: Dec,
    /// Denomination of the price.
    pub denom: String,
}

/// `akash.base.resources.v1beta4.Resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Resource id within the group (positive).
    pub id: u32,
    /// CPU in millicpu.
    pub cpu: Quantity,
    /// Memory in bytes.
    pub memory: Quantity,
    /// Storage volumes (at least one), sizes in bytes.
    pub storage: Vec<Storage>,
    /// GPU units.
    pub gpu: Quantity,
    /// Endpoints the unit exposes.
    pub endpoints: Vec<Endpoint>,
}

/// An amount of one resource (`ResourceValue`) with its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    /// The amount (`ResourceValue.val`, ASCII decimal on the wire).
    pub value: u128,
    /// Its attributes.
    pub attributes: Vec<Attribute>,
}

/// `akash.base.resources.v1beta4.Storage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Volume name (`default`, `data`, …).
    pub name: String,
    /// Size in bytes and attributes (`persistent`, `class`).
    pub quantity: Quantity,
}

/// `akash.base.resources.v1beta4.Endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `Kind` value (`SHARED_HTTP = 0`, `RANDOM_PORT = 1`, `LEASED_IP = 2`).
    pub kind: i32,
    /// Sequence number (for leased IPs).
    pub sequence_number: u32,
}

impl Endpoint {
    /// The kind's name, as the gRPC gateway writes the enum.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            0 => "SHARED_HTTP",
            1 => "RANDOM_PORT",
            2 => "LEASED_IP",
            _ => "UNRECOGNIZED",
        }
    }
}

/// `akash.deployment.v1beta4.MsgCreateDeployment`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgCreateDeployment {
    #[prost(message, optional, tag = "1")]
    id: Option<DeploymentId>,
    #[prost(message, repeated, tag = "2")]
    groups: Vec<ProtoGroupSpec>,
    #[prost(bytes = "vec", tag = "3")]
    hash: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    deposit: Option<Deposit>,
}

/// `akash.deployment.v1beta4.MsgCloseDeployment`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgCloseDeployment {
    #[prost(message, optional, tag = "1")]
    id: Option<DeploymentId>,
}

/// `akash.market.v1beta5.MsgCreateLease`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgCreateLease {
    #[prost(message, optional, tag = "1")]
    bid_id: Option<ProtoBidId>,
}

/// `akash.market.v1.BidID`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoBidId {
    #[prost(string, tag = "1")]
    owner: String,
    #[prost(uint64, tag = "2")]
    dseq: u64,
    #[prost(uint32, tag = "3")]
    gseq: u32,
    #[prost(uint32, tag = "4")]
    oseq: u32,
    #[prost(string, tag = "5")]
    provider: String,
    #[prost(uint32, tag = "6")]
    bseq: u32,
}

/// `akash.deployment.v1beta4.GroupSpec`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoGroupSpec {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    requirements: Option<ProtoPlacementRequirements>,
    #[prost(message, repeated, tag = "3")]
    resources: Vec<ProtoResourceUnit>,
}

/// `akash.base.attributes.v1.PlacementRequirements`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoPlacementRequirements {
    #[prost(message, optional, tag = "1")]
    signed_by: Option<ProtoSignedBy>,
    #[prost(message, repeated, tag = "2")]
    attributes: Vec<ProtoAttribute>,
}

/// `akash.base.attributes.v1.SignedBy`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoSignedBy {
    #[prost(string, repeated, tag = "1")]
    all_of: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    any_of: Vec<String>,
}

/// `akash.base.attributes.v1.Attribute`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAttribute {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `akash.deployment.v1beta4.ResourceUnit`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoResourceUnit {
    #[prost(message, optional, tag = "1")]
    resource: Option<ProtoResources>,
    #[prost(uint32, tag = "2")]
    count: u32,
    #[prost(message, optional, tag = "3")]
    price: Option<DecCoin>,
}

/// `akash.base.resources.v1beta4.Resources`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoResources {
    #[prost(uint32, tag = "1")]
    id: u32,
    #[prost(message, optional, tag = "2")]
    cpu: Option<ProtoUnits>,
    #[prost(message, optional, tag = "3")]
    memory: Option<ProtoUnits>,
    #[prost(message, repeated, tag = "4")]
    storage: Vec<ProtoStorage>,
    #[prost(message, optional, tag = "5")]
    gpu: Option<ProtoUnits>,
    #[prost(message, repeated, tag = "6")]
    endpoints: Vec<ProtoEndpoint>,
}

/// `akash.base.resources.v1beta4.CPU`, `GPU` and `Memory` share this layout:
/// `ResourceValue units|quantity = 1`, `repeated Attribute attributes = 2`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoUnits {
    #[prost(message, optional, tag = "1")]
    value: Option<ProtoResourceValue>,
    #[prost(message, repeated, tag = "2")]
    attributes: Vec<ProtoAttribute>,
}

/// `akash.base.resources.v1beta4.Storage`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoStorage {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    quantity: Option<ProtoResourceValue>,
    #[prost(message, repeated, tag = "3")]
    attributes: Vec<ProtoAttribute>,
}

/// `akash.base.resources.v1beta4.ResourceValue`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoResourceValue {
    #[prost(bytes = "vec", tag = "1")]
    val: Vec<u8>,
}

/// `akash.base.resources.v1beta4.Endpoint`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoEndpoint {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(uint32, tag = "2")]
    sequence_number: u32,
}

/// How a field may appear on the wire.
#[derive(Debug, Clone, Copy)]
enum FieldKind {
    /// Wire type 0 (integers, bools, enums).
    Varint,
    /// Wire type 2 holding strings or bytes.
    Bytes,
    /// A repeated enum or integer: unpacked (type 0) or packed (type 2).
    Packable,
    /// Wire type 2 holding a message of this schema.
    Message(&'static Schema),
}

/// The fields a message may carry: what [`check_wire`] compares the bytes with.
#[derive(Debug)]
pub struct Schema {
    name: &'static str,
    fields: &'static [(u32, FieldKind)],
}

static ATTRIBUTE: Schema = Schema {
    name: "akash.base.attributes.v1.Attribute",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Bytes)],
};
static SIGNED_BY: Schema = Schema {
    name: "akash.base.attributes.v1.SignedBy",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Bytes)],
};
static PLACEMENT: Schema = Schema {
    name: "akash.base.attributes.v1.PlacementRequirements",
    fields: &[
        (1, FieldKind::Message(&SIGNED_BY)),
        (2, FieldKind::Message(&ATTRIBUTE)),
    ],
};
static RESOURCE_VALUE: Schema = Schema {
    name: "akash.base.resources.v1beta4.ResourceValue",
    fields: &[(1, FieldKind::Bytes)],
};
static UNITS: Schema = Schema {
    name: "akash.base.resources.v1beta4.CPU/Memory/GPU",
    fields: &[
        (1, FieldKind::Message(&RESOURCE_VALUE)),
        (2, FieldKind::Message(&ATTRIBUTE)),
    ],
};
static STORAGE: Schema = Schema {
    name: "akash.base.resources.v1beta4.Storage",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Message(&RESOURCE_VALUE)),
        (3, FieldKind::Message(&ATTRIBUTE)),
    ],
};
static ENDPOINT: Schema = Schema {
    name: "akash.base.resources.v1beta4.Endpoint",
    fields: &[(1, FieldKind::Varint), (2, FieldKind::Varint)],
};
static RESOURCES: Schema = Schema {
    name: "akash.base.resources.v1beta4.Resources",
    fields: &[
        (1, FieldKind::Varint),
        (2, FieldKind::Message(&UNITS)),
        (3, FieldKind::Message(&UNITS)),
        (4, FieldKind::Message(&STORAGE)),
        (5, FieldKind::Message(&UNITS)),
        (6, FieldKind::Message(&ENDPOINT)),
    ],
};
static DEC_COIN: Schema = Schema {
    name: "cosmos.base.v1beta1.DecCoin",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Bytes)],
};
static COIN: Schema = Schema {
    name: "cosmos.base.v1beta1.Coin",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Bytes)],
};
static RESOURCE_UNIT: Schema = Schema {
    name: "akash.deployment.v1beta4.ResourceUnit",
    fields: &[
        (1, FieldKind::Message(&RESOURCES)),
        (2, FieldKind::Varint),
        (3, FieldKind::Message(&DEC_COIN)),
    ],
};
static GROUP_SPEC: Schema = Schema {
    name: "akash.deployment.v1beta4.GroupSpec",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Message(&PLACEMENT)),
        (3, FieldKind::Message(&RESOURCE_UNIT)),
    ],
};
static DEPLOYMENT_ID: Schema = Schema {
    name: "akash.deployment.v1.DeploymentID",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Varint)],
};
static DEPOSIT: Schema = Schema {
    name: "akash.base.deposit.v1.Deposit",
    fields: &[(1, FieldKind::Message(&COIN)), (5, FieldKind::Packable)],
};
static BID_ID: Schema = Schema {
    name: "akash.market.v1.BidID",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Varint),
        (3, FieldKind::Varint),
        (4, FieldKind::Varint),
        (5, FieldKind::Bytes),
        (6, FieldKind::Varint),
    ],
};

/// The wire schema of `MsgCreateDeployment`.
pub static CREATE_DEPLOYMENT_SCHEMA: Schema = Schema {
    name: "akash.deployment.v1beta4.MsgCreateDeployment",
    fields: &[
        (1, FieldKind::Message(&DEPLOYMENT_ID)),
        (2, FieldKind::Message(&GROUP_SPEC)),
        (3, FieldKind::Bytes),
        (4, FieldKind::Message(&DEPOSIT)),
    ],
};

/// The wire schema of `MsgCloseDeployment`.
pub static CLOSE_DEPLOYMENT_SCHEMA: Schema = Schema {
    name: "akash.deployment.v1beta4.MsgCloseDeployment",
    fields: &[(1, FieldKind::Message(&DEPLOYMENT_ID))],
};

/// The wire schema of `MsgCreateLease`.
pub static CREATE_LEASE_SCHEMA: Schema = Schema {
    name: "akash.market.v1beta5.MsgCreateLease",
    fields: &[(1, FieldKind::Message(&BID_ID))],
};

/// Reads a base-128 varint at `*at`, moving past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Walks protobuf wire bytes against `schema`, refusing what the chain's decoder
/// refuses and prost would skip: a field number the message does not have, or a
/// field in the wrong wire type. Nested messages are checked the same way.
pub fn check_wire(bytes: &[u8], schema: &Schema) -> Result<(), String> {
    let truncated = || format!("{}: truncated or malformed wire bytes", schema.name);
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at).ok_or_else(truncated)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let kind = schema
            .fields
            .iter()
            .find(|(tag, _)| u64::from(*tag) == number)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                format!(
                    "{}: unknown field number {number} (wire type {wire_type})",
                    schema.name
                )
            })?;
        let expected_len = matches!(
            (kind, wire_type),
            (
                FieldKind::Bytes | FieldKind::Message(_) | FieldKind::Packable,
                2
            )
        );
        let expected_varint = matches!(
            (kind, wire_type),
            (FieldKind::Varint | FieldKind::Packable, 0)
        );
        if !expected_len && !expected_varint {
            return Err(format!(
                "{}: field {number} has wire type {wire_type}, which its type does not use",
                schema.name
            ));
        }
        if wire_type == 0 {
            read_varint(bytes, &mut at).ok_or_else(truncated)?;
            continue;
        }
        let len = read_varint(bytes, &mut at).ok_or_else(truncated)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(truncated)?;
        if let FieldKind::Message(inner) = kind {
            check_wire(&bytes[at..end], inner)?;
        }
        at = end;
    }
    Ok(())
}

/// `sdk.AccAddressFromBech32` with the chain's `akash` prefix.
fn valid_akash_address(address: &str) -> bool {
    address
        .parse::<cosmrs::AccountId>()
        .is_ok_and(|id| id.prefix() == "akash")
}

fn refused(codespace: &'static str, code: u32, log: String) -> MessageError {
    MessageError::Refused {
        codespace,
        code,
        log,
    }
}

/// `DeploymentID.Validate`: a valid owner address and a positive dseq.
fn validate_deployment_id(id: &DeploymentId, what: &str) -> Result<(), MessageError> {
    if !valid_akash_address(&id.owner) {
        return Err(refused(
            "sdk",
            7,
            format!(
                "{what}: Invalid Owner Address '{}': invalid address",
                id.owner
            ),
        ));
    }
    if id.dseq == 0 {
        return Err(refused(
            "sdk",
            3,
            format!("{what}: Invalid Deployment Sequence 0: invalid sequence"),
        ));
    }
    Ok(())
}

fn attributes(list: Vec<ProtoAttribute>) -> Vec<Attribute> {
    list.into_iter()
        .map(|a| Attribute {
            key: a.key,
            value: a.value,
        })
        .collect()
}

/// `ResourceValue.val`: the ASCII decimal of the amount (`sdkmath.Int` text); empty is
/// zero, as the chain's decoder reads it.
fn resource_value(value: Option<ProtoResourceValue>, what: &str) -> Result<u128, MessageError> {
    let bytes = value.map(|v| v.val).unwrap_or_default();
    if bytes.is_empty() {
        return Ok(0);
    }
    std::str::from_utf8(&bytes)
        .ok()
        .filter(|text| text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            MessageError::Undecodable(format!(
                "{what} ResourceValue {:?} is not an ASCII decimal",
                String::from_utf8_lossy(&bytes)
            ))
        })
}

fn units(value: Option<ProtoUnits>, what: &str) -> Result<Option<Quantity>, MessageError> {
    value
        .map(|units| {
            Ok(Quantity {
                value: resource_value(units.value, what)?,
                attributes: attributes(units.attributes),
            })
        })
        .transpose()
}

/// The group spec validation errors: the chain returns them as plain errors (no
/// registered code); the simulator reports them as `deployment` 19, "GroupSpec
/// invalid", so clients see one stable code.
fn group_error(log: String) -> MessageError {
    refused("deployment", 19, format!("{log}: GroupSpec invalid"))
}

/// Converts and validates one group as `GroupSpec.ValidateBasic` does: a name, and
/// per resource unit a positive id, CPU ≥ 10 millicpu, memory ≥ 1 MiB, at least one
/// storage volume of ≥ 5 MiB each, a GPU entry (no attributes without units), a
/// valid price; one denomination for the whole group. (The chain's upper limits on
/// units are not enforced here.)
fn group_spec(proto: ProtoGroupSpec) -> Result<GroupSpec, MessageError> {
    if proto.name.is_empty() {
        return Err(group_error("empty group spec name".to_owned()));
    }
    let name = proto.name;
    let requirements = proto.requirements.unwrap_or_default();
    let signed_by = requirements.signed_by.unwrap_or_default();
    let mut resources = Vec::new();
    for unit in proto.resources {
        let what = format!("group {name}");
        let resource = unit
            .resource
            .ok_or_else(|| group_error(format!("{what}: resource unit without resources")))?;
        if resource.id == 0 {
            return Err(group_error(format!(
                "{what}: invalid resources ID (> 0 fails)"
            )));
        }
        let cpu = units(resource.cpu, "CPU")?
            .ok_or_else(|| group_error(format!("{what}: invalid unit CPU, cannot be nil")))?;
        if cpu.value < MIN_CPU_MILLIS {
            return Err(group_error(format!(
                "{what}: invalid unit CPU ({} < {MIN_CPU_MILLIS} millicpu)",
                cpu.value
            )));
        }
        let memory = units(resource.memory, "memory")?
            .ok_or_else(|| group_error(format!("{what}: invalid unit memory, cannot be nil")))?;
        if memory.value < MIN_MEMORY_BYTES {
            return Err(group_error(format!(
                "{what}: invalid unit memory ({} < {MIN_MEMORY_BYTES} bytes)",
                memory.value
            )));
        }
        let gpu = units(resource.gpu, "GPU")?
            .ok_or_else(|| group_error(format!("{what}: invalid unit GPU, cannot be nil")))?;
        if gpu.value == 0 && !gpu.attributes.is_empty() {
            return Err(group_error(format!(
                "{what}: invalid GPU state. attributes cannot be present if units == 0"
            )));
        }
        if resource.storage.is_empty() {
            return Err(group_error(format!(
                "{what}: invalid unit storage, cannot be nil"
            )));
        }
        let mut storage = Vec::new();
        for volume in resource.storage {
            let size = resource_value(volume.quantity, "storage")?;
            if size < MIN_STORAGE_BYTES {
                return Err(group_error(format!(
                    "{what}: invalid unit storage {} ({size} < {MIN_STORAGE_BYTES} bytes)",
                    volume.name
                )));
            }
            storage.push(Storage {
                name: volume.name,
                quantity: Quantity {
                    value: size,
                    attributes: attributes(volume.attributes),
                },
            });
        }
        let price = unit.price.unwrap_or_default();
        if !valid_denom(&price.denom) {
            return Err(group_error(format!(
                "{what}: error: invalid price object (denom '{}')",
                price.denom
            )));
        }
        let amount = Dec::from_wire(&price.amount).map_err(|error| {
            group_error(format!("{what}: error: invalid price object ({error})"))
        })?;
        if let Some(first) = resources.first() {
            let first: &ResourceUnit = first;
            if first.denom != price.denom {
                return Err(group_error(format!(
                    "{what}: multi-denonimation group: ({} == {} fails)",
                    price.denom, first.denom
                )));
            }
        }
        resources.push(ResourceUnit {
            resources: Resources {
                id: resource.id,
                cpu,
                memory,
                storage,
                gpu,
                endpoints: resource
                    .endpoints
                    .into_iter()
                    .map(|e| Endpoint {
                        kind: e.kind,
                        sequence_number: e.sequence_number,
                    })
                    .collect(),
            },
            count: unit.count,
            price: amount,
            denom: price.denom,
        });
    }
    let spec = GroupSpec {
        name,
        requirements: PlacementRequirements {
            signed_by_all_of: signed_by.all_of,
            signed_by_any_of: signed_by.any_of,
            attributes: attributes(requirements.attributes),
        },
        resources,
    };
    if spec.price_ceiling().is_none() {
        return Err(group_error(format!("group {}: price overflows", spec.name)));
    }
    Ok(spec)
}

/// Decodes and validates `MsgCreateDeployment` as its `ValidateBasic` does, in its
/// order: the id (sdk 7 / 3), the deposit (a valid coin; the balance as its only
/// source, the simulator's limit), groups non-empty (`deployment` 7), the hash
/// present (9) and 32 bytes (10), each group valid (19, see [`group_spec`]) and
/// priced in the deposit's denomination (20).
fn decode_create_deployment(bytes: &[u8]) -> Result<CreateDeploymentRequest, MessageError> {
    check_wire(bytes, &CREATE_DEPLOYMENT_SCHEMA).map_err(MessageError::Undecodable)?;
    let msg = MsgCreateDeployment::decode(bytes)
        .map_err(|e| MessageError::Undecodable(format!("MsgCreateDeployment: {e}")))?;
    let id = msg.id.unwrap_or_default();
    validate_deployment_id(&id, "DeploymentID")?;
    let deposit = msg.deposit.unwrap_or_default();
    let coin = deposit.amount.unwrap_or_default();
    if !valid_denom(&coin.denom) {
        return Err(refused(
            "sdk",
            10,
            format!(
                "invalid denom '{}' in the deposit: invalid coins",
                coin.denom
            ),
        ));
    }
    let amount: u128 = coin.amount.parse().map_err(|_| {
        refused(
            "sdk",
            10,
            format!(
                "deposit amount '{}' is not a non-negative integer: invalid coins",
                coin.amount
            ),
        )
    })?;
    if deposit.sources.is_empty() {
        return Err(MessageError::Invalid("empty deposit sources".to_owned()));
    }
    if deposit.sources != [SOURCE_BALANCE] {
        return Err(MessageError::Invalid(format!(
            "deposit sources {:?} are not supported (only [balance])",
            deposit.sources
        )));
    }
    if msg.groups.is_empty() {
        return Err(refused(
            "deployment",
            7,
            "no groups: Invalid groups".to_owned(),
        ));
    }
    if msg.hash.is_empty() {
        return Err(refused("deployment", 9, "Invalid: empty hash".to_owned()));
    }
    if msg.hash.len() != HASH_LENGTH {
        return Err(refused(
            "deployment",
            10,
            format!(
                "hash has {} bytes, not {HASH_LENGTH}: Invalid: deployment hash",
                msg.hash.len()
            ),
        ));
    }
    let mut groups = Vec::new();
    for proto in msg.groups {
        let group = group_spec(proto)?;
        if amount != 0 && group.denom() != coin.denom {
            return Err(refused(
                "deployment",
                20,
                format!(
                    "Mismatched denominations ({} != {}): Deposit invalid",
                    coin.denom,
                    group.denom()
                ),
            ));
        }
        groups.push(group);
    }
    Ok(CreateDeploymentRequest {
        owner: id.owner,
        dseq: id.dseq,
        groups,
        hash: msg.hash,
        deposit: amount,
        denom: coin.denom,
    })
}

/// Decodes and validates `MsgCloseDeployment` (its id, as `ValidateBasic` does).
fn decode_close_deployment(bytes: &[u8]) -> Result<DeploymentRef, MessageError> {
    check_wire(bytes, &CLOSE_DEPLOYMENT_SCHEMA).map_err(MessageError::Undecodable)?;
    let msg = MsgCloseDeployment::decode(bytes)
        .map_err(|e| MessageError::Undecodable(format!("MsgCloseDeployment: {e}")))?;
    let id = msg.id.unwrap_or_default();
    validate_deployment_id(&id, "DeploymentID")?;
    Ok(DeploymentRef {
        owner: id.owner,
        dseq: id.dseq,
    })
}

/// Decodes and validates `MsgCreateLease` as `BidID.Validate` does: the order id
/// (owner, dseq, positive gseq and oseq), a valid provider address that is not the
/// owner (`market` 2).
fn decode_create_lease(bytes: &[u8]) -> Result<BidRef, MessageError> {
    check_wire(bytes, &CREATE_LEASE_SCHEMA).map_err(MessageError::Undecodable)?;
    let msg = MsgCreateLease::decode(bytes)
        .map_err(|e| MessageError::Undecodable(format!("MsgCreateLease: {e}")))?;
    let bid = msg.bid_id.unwrap_or_default();
    validate_deployment_id(
        &DeploymentId {
            owner: bid.owner.clone(),
            dseq: bid.dseq,
        },
        "BidID",
    )?;
    if bid.gseq == 0 {
        return Err(refused(
            "sdk",
            3,
            "GroupID: Invalid Group Sequence 0: invalid sequence".to_owned(),
        ));
    }
    if bid.oseq == 0 {
        return Err(refused(
            "sdk",
            3,
            "OrderID: Invalid Order Sequence 0: invalid sequence".to_owned(),
        ));
    }
    if !valid_akash_address(&bid.provider) {
        return Err(refused(
            "sdk",
            7,
            format!(
                "BidID: Invalid Provider Address '{}': invalid address",
                bid.provider
            ),
        ));
    }
    if bid.provider == bid.owner {
        return Err(refused(
            "market",
            2,
            "owner and provider are the same account".to_owned(),
        ));
    }
    Ok(BidRef {
        owner: bid.owner,
        dseq: bid.dseq,
        gseq: bid.gseq,
        oseq: bid.oseq,
        provider: bid.provider,
        bseq: bid.bseq,
    })
}

/// Decodes one message of a transaction body with the simulator's own types and
/// validates it as the chain's `ValidateBasic` would (see [`decode_deposit`] for the
/// deposits).
pub fn decode_message(any: &Any) -> Result<ChainMessage, MessageError> {
    match any.type_url.as_str() {
        MSG_CREATE_DEPLOYMENT => {
            decode_create_deployment(&any.value).map(ChainMessage::CreateDeployment)
        }
        MSG_CLOSE_DEPLOYMENT => {
            decode_close_deployment(&any.value).map(ChainMessage::CloseDeployment)
        }
        MSG_CREATE_LEASE => decode_create_lease(&any.value).map(ChainMessage::CreateLease),
        _ => decode_deposit(any).map(ChainMessage::Deposit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf wire bytes written by hand from the `.proto` field numbers (tag byte =
    /// field << 3 | wire type), independent of any prost struct.
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    fn coin(denom: &str, amount: &str) -> Vec<u8> {
        [field(1, denom.as_bytes()), field(2, amount.as_bytes())].concat()
    }

    fn account_deposit(scope: u8, xid: &str, sources: &[u8]) -> Any {
        let id = [vec![0x08, scope], field(2, xid.as_bytes())].concat();
        let mut deposit = field(1, &coin("uakt", "5000000"));
        for source in sources {
            deposit.extend_from_slice(&[5 << 3, *source]); // unpacked varint, field 5
        }
        Any {
            type_url: "/akash.escrow.v1.MsgAccountDeposit".into(),
            value: [field(1, b"akash1signer"), field(2, &id), field(3, &deposit)].concat(),
        }
    }

    #[test]
    fn account_deposit_decodes_from_hand_written_wire_bytes() {
        let request = decode_deposit(&account_deposit(1, "akash1owner/1234", &[1])).unwrap();
        assert_eq!(
            request,
            DepositRequest {
                signer: "akash1signer".into(),
                owner: "akash1owner".into(),
                dseq: 1234,
                amount: 5_000_000,
                denom: "uakt".into(),
                message: DepositMessage::AccountDeposit,
            }
        );
    }

    #[test]
    fn packed_sources_decode_like_unpacked_ones() {
        let mut any = account_deposit(1, "akash1owner/7", &[]);
        // Re-encode the deposit with `sources` packed: field 5, length 1, value 1.
        let id = [vec![0x08, 1], field(2, b"akash1owner/7")].concat();
        let deposit = [field(1, &coin("uakt", "5000000")), field(5, &[1])].concat();
        any.value = [field(1, b"akash1signer"), field(2, &id), field(3, &deposit)].concat();
        assert_eq!(decode_deposit(&any).unwrap().dseq, 7);
    }

    #[test]
    fn deposit_deployment_decodes_from_hand_written_wire_bytes() {
        let id = [field(1, b"akash1owner"), vec![0x10, 42]].concat();
        let any = Any {
            type_url: "/akash.deployment.v1beta3.MsgDepositDeployment".into(),
            value: [
                field(1, &id),
                field(2, &coin("uakt", "77")),
                field(3, b"akash1payer"),
            ]
            .concat(),
        };
        let request = decode_deposit(&any).unwrap();
        assert_eq!(
            (
                request.signer.as_str(),
                request.owner.as_str(),
                request.dseq
            ),
            ("akash1payer", "akash1owner", 42)
        );
        assert_eq!(
            (request.amount, request.message),
            (77, DepositMessage::DepositDeployment)
        );
    }

    #[test]
    fn refuses_what_validate_basic_refuses() {
        let bid_scope = decode_deposit(&account_deposit(2, "akash1owner/1", &[1]));
        assert!(matches!(bid_scope, Err(MessageError::Invalid(e)) if e.contains("scope")));
        let grant = decode_deposit(&account_deposit(1, "akash1owner/1", &[2]));
        assert!(matches!(grant, Err(MessageError::Invalid(e)) if e.contains("sources")));
        let no_dseq = decode_deposit(&account_deposit(1, "akash1owner", &[1]));
        assert!(matches!(no_dseq, Err(MessageError::Invalid(e)) if e.contains("owner/dseq")));
        let unknown = decode_deposit(&Any {
            type_url: "/cosmos.bank.v1beta1.MsgSend".into(),
            value: vec![],
        });
        assert!(
            matches!(unknown, Err(MessageError::UnknownType(e)) if e.contains("unable to resolve type URL"))
        );
        assert!(valid_denom("uakt") && valid_denom("ibc/27394FB0"));
        assert!(!valid_denom("u") && !valid_denom("1akt") && !valid_denom("u akt"));
    }
}
