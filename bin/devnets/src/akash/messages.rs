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

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
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

/// Where a deposit's funds come from: `deposit.sources` of `MsgAccountDeposit`
/// (`akash.base.deposit.v1.Source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositSource {
    /// `[balance]` (1): the signer's bank balance.
    Balance,
    /// `[grant]` (2): the `DepositAuthorization`s granted to the signer, the funds taken
    /// from their granters' balances.
    Grant,
}

impl DepositSource {
    /// As the gateway writes the enum.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Balance => "balance",
            Self::Grant => "grant",
        }
    }
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

/// `akash.base.deposit.v1.Source` value of "from the grants to the signer".
const SOURCE_GRANT: i32 = 2;

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
    decode_deposit_with_source(any).map(|(request, _)| request)
}

/// [`decode_deposit`] with where the funds come from: `deposit.sources` of
/// `MsgAccountDeposit` (`[balance]` or `[grant]`), the balance for
/// `MsgDepositDeployment` (it has no sources).
pub fn decode_deposit_with_source(
    any: &Any,
) -> Result<(DepositRequest, DepositSource), MessageError> {
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
            let source = deposit_source(&deposit.sources).map_err(invalid)?;
            let (amount, denom) = coin_amount(deposit.amount).map_err(invalid)?;
            let request = DepositRequest {
                signer: msg.owner,
                owner,
                dseq,
                amount,
                denom,
                message: DepositMessage::AccountDeposit,
            };
            (request, source)
        } else if any.type_url == DepositMessage::DepositDeployment.type_url() {
            let msg = MsgDepositDeployment::decode(any.value.as_slice())
                .map_err(|error| invalid(format!("cannot decode MsgDepositDeployment: {error}")))?;
            let id = msg
                .id
                .ok_or_else(|| invalid("MsgDepositDeployment has no deployment id".into()))?;
            let (amount, denom) = coin_amount(msg.amount).map_err(invalid)?;
            let request = DepositRequest {
                signer: msg.depositor,
                owner: id.owner,
                dseq: id.dseq,
                amount,
                denom,
                message: DepositMessage::DepositDeployment,
            };
            (request, DepositSource::Balance)
        } else {
            return Err(MessageError::UnknownType(format!(
                "unable to resolve type URL {}",
                any.type_url
            )));
        },
    )
}

/// `deposit.sources` as `ValidateBasic` checks them (not empty, known values, no
/// duplicates), then what the simulator runs: `[balance]` or `[grant]`. The chain
/// also takes `[balance, grant]` and `[grant, balance]` (each source in turn until
/// the amount is covered); the simulator refuses those combinations.
fn deposit_source(sources: &[i32]) -> Result<DepositSource, String> {
    if sources.is_empty() {
        return Err("empty deposit sources".to_owned());
    }
    for (index, source) in sources.iter().enumerate() {
        if ![SOURCE_BALANCE, SOURCE_GRANT].contains(source) {
            return Err(format!("invalid deposit source type {source}"));
        }
        if sources[..index].contains(source) {
            return Err(format!("duplicate deposit source type {source}"));
        }
    }
    match sources {
        [SOURCE_BALANCE] => Ok(DepositSource::Balance),
        [SOURCE_GRANT] => Ok(DepositSource::Grant),
        _ => Err(format!(
            "deposit sources {sources:?} are not supported by the simulator (only [balance] = [1] or [grant] = [2])"
        )),
    }
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
    /// `MsgAccountDeposit` or `MsgDepositDeployment`, and where its funds come from.
    Deposit(DepositRequest, DepositSource),
    /// `MsgCreateDeployment`.
    CreateDeployment(CreateDeploymentRequest),
    /// `MsgCloseDeployment`.
    CloseDeployment(DeploymentRef),
    /// `MsgCreateLease`.
    CreateLease(BidRef),
    /// `cosmos.authz.v1beta1.MsgGrant`.
    Grant(GrantRequest),
    /// `cosmos.authz.v1beta1.MsgRevoke`.
    Revoke(RevokeRequest),
    /// `cosmos.authz.v1beta1.MsgExec`.
    Exec(ExecRequest),
    /// `cosmos.feegrant.v1beta1.MsgGrantAllowance`.
    GrantAllowance(AllowanceRequest),
    /// `cosmos.feegrant.v1beta1.MsgRevokeAllowance`.
    RevokeAllowance(AllowanceRef),
    /// `cosmos.bank.v1beta1.MsgSend`.
    Send(SendRequest),
}

impl ChainMessage {
    /// Who must sign it: the depositor of a deposit, the deployment's owner for the
    /// market messages, the granter of a grant or revocation, the grantee of an exec,
    /// the sender of a send (the chain's `GetSigners`).
    pub fn signer(&self) -> &str {
        match self {
            Self::Deposit(deposit, _) => &deposit.signer,
            Self::CreateDeployment(create) => &create.owner,
            Self::CloseDeployment(close) => &close.owner,
            Self::CreateLease(bid) => &bid.owner,
            Self::Grant(grant) => &grant.granter,
            Self::Revoke(revoke) => &revoke.granter,
            Self::Exec(exec) => &exec.grantee,
            Self::GrantAllowance(allowance) => &allowance.granter,
            Self::RevokeAllowance(allowance) => &allowance.granter,
            Self::Send(send) => &send.from,
        }
    }

    /// Its type URL.
    pub fn type_url(&self) -> &'static str {
        match self {
            Self::Deposit(deposit, _) => deposit.message.type_url(),
            Self::CreateDeployment(_) => MSG_CREATE_DEPLOYMENT,
            Self::CloseDeployment(_) => MSG_CLOSE_DEPLOYMENT,
            Self::CreateLease(_) => MSG_CREATE_LEASE,
            Self::Grant(_) => MSG_GRANT,
            Self::Revoke(_) => MSG_REVOKE,
            Self::Exec(_) => MSG_EXEC,
            Self::GrantAllowance(_) => MSG_GRANT_ALLOWANCE,
            Self::RevokeAllowance(_) => MSG_REVOKE_ALLOWANCE,
            Self::Send(_) => MSG_SEND,
        }
    }

    /// What it takes from `address`'s balance in `denom`: a deposit's amount from its
    /// signer (when it pays from its balance, not through grants), a new deployment's
    /// initial deposit from its owner, a send's amount from its sender, and for an
    /// exec whatever its messages take; nothing for the others.
    pub fn spend_by(&self, address: &str, denom: &str) -> u128 {
        match self {
            Self::Deposit(deposit, DepositSource::Balance)
                if deposit.signer == address && deposit.denom == denom =>
            {
                deposit.amount
            }
            Self::CreateDeployment(create) if create.owner == address && create.denom == denom => {
                create.deposit
            }
            Self::Send(send) if send.from == address => send
                .amount
                .iter()
                .filter(|(coin_denom, _)| coin_denom == denom)
                .fold(0u128, |sum, (_, amount)| sum.saturating_add(*amount)),
            Self::Exec(exec) => exec.msgs.iter().fold(0u128, |sum, inner| {
                sum.saturating_add(inner.spend_by(address, denom))
            }),
            _ => 0,
        }
    }

    /// The deployments it acts on, as `(owner, dseq)` (an exec's: its messages').
    pub fn deployment_keys(&self) -> Vec<(String, u64)> {
        match self {
            Self::Deposit(deposit, _) => vec![(deposit.owner.clone(), deposit.dseq)],
            Self::CreateDeployment(create) => vec![(create.owner.clone(), create.dseq)],
            Self::CloseDeployment(close) => vec![(close.owner.clone(), close.dseq)],
            Self::CreateLease(bid) => vec![(bid.owner.clone(), bid.dseq)],
            Self::Exec(exec) => exec.msgs.iter().flat_map(Self::deployment_keys).collect(),
            Self::Grant(_)
            | Self::Revoke(_)
            | Self::GrantAllowance(_)
            | Self::RevokeAllowance(_)
            | Self::Send(_) => Vec::new(),
        }
    }

    /// Every account it may change or create (signers, owners, granters, grantees,
    /// recipients), an exec's messages' included. Grant-funded deposits also take
    /// from the granters of the signer's deposit grants, which only the grants name.
    pub fn addresses(&self) -> Vec<String> {
        match self {
            Self::Deposit(deposit, _) => vec![deposit.signer.clone(), deposit.owner.clone()],
            Self::CreateDeployment(create) => vec![create.owner.clone()],
            Self::CloseDeployment(close) => vec![close.owner.clone()],
            Self::CreateLease(bid) => vec![bid.owner.clone()],
            Self::Grant(grant) => vec![grant.granter.clone(), grant.grantee.clone()],
            Self::Revoke(revoke) => vec![revoke.granter.clone(), revoke.grantee.clone()],
            Self::Exec(exec) => std::iter::once(exec.grantee.clone())
                .chain(exec.msgs.iter().flat_map(Self::addresses))
                .collect(),
            Self::GrantAllowance(allowance) => {
                vec![allowance.granter.clone(), allowance.grantee.clone()]
            }
            Self::RevokeAllowance(allowance) => {
                vec![allowance.granter.clone(), allowance.grantee.clone()]
            }
            Self::Send(send) => vec![send.from.clone(), send.to.clone()],
        }
    }

    /// How many messages it counts for gas: one, plus an exec's messages.
    pub fn weight(&self) -> usize {
        match self {
            Self::Exec(exec) => 1 + exec.msgs.len(),
            _ => 1,
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
pub(crate) fn valid_akash_address(address: &str) -> bool {
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

// ---------------------------------------------------------------------------
// AuthZ, fee grants and bank sends
// ---------------------------------------------------------------------------

/// Type URL of `cosmos.authz.v1beta1.MsgGrant`.
pub const MSG_GRANT: &str = "/cosmos.authz.v1beta1.MsgGrant";

/// Type URL of `cosmos.authz.v1beta1.MsgRevoke`.
pub const MSG_REVOKE: &str = "/cosmos.authz.v1beta1.MsgRevoke";

/// Type URL of `cosmos.authz.v1beta1.MsgExec`.
pub const MSG_EXEC: &str = "/cosmos.authz.v1beta1.MsgExec";

/// Type URL of `cosmos.feegrant.v1beta1.MsgGrantAllowance`.
pub const MSG_GRANT_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.MsgGrantAllowance";

/// Type URL of `cosmos.feegrant.v1beta1.MsgRevokeAllowance`.
pub const MSG_REVOKE_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.MsgRevokeAllowance";

/// Type URL of `cosmos.bank.v1beta1.MsgSend`.
pub const MSG_SEND: &str = "/cosmos.bank.v1beta1.MsgSend";

/// Type URL of `cosmos.authz.v1beta1.GenericAuthorization`.
pub const GENERIC_AUTHORIZATION: &str = "/cosmos.authz.v1beta1.GenericAuthorization";

/// Type URL of `akash.escrow.v1.DepositAuthorization`.
pub const DEPOSIT_AUTHORIZATION: &str = "/akash.escrow.v1.DepositAuthorization";

/// Type URL of `cosmos.feegrant.v1beta1.BasicAllowance`.
pub const BASIC_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.BasicAllowance";

/// `akash.escrow.v1.DepositAuthorization.Scope` of deployment escrow accounts.
pub const DEPOSIT_SCOPE_DEPLOYMENT: i32 = 1;

/// `akash.escrow.v1.DepositAuthorization.Scope` of bid escrow accounts.
pub const DEPOSIT_SCOPE_BID: i32 = 2;

/// The name the gateway writes for a `DepositAuthorization.Scope` value.
pub fn deposit_scope_name(scope: i32) -> &'static str {
    match scope {
        0 => "invalid",
        DEPOSIT_SCOPE_DEPLOYMENT => "deployment",
        DEPOSIT_SCOPE_BID => "bid",
        _ => "UNRECOGNIZED",
    }
}

/// Message types a real Akash node routes that the simulator does not execute. A
/// `GenericAuthorization` for one of them is stored, as the chain would store it
/// (the chain refuses a grant only for a type it has no handler for), but a
/// `MsgExec` carrying one is refused as undecodable: the simulator cannot run it.
pub const ROUTED_NOT_EXECUTED: [&str; 8] = [
    "/akash.deployment.v1beta4.MsgUpdateDeployment",
    "/akash.deployment.v1beta4.MsgCloseGroup",
    "/akash.deployment.v1beta4.MsgPauseGroup",
    "/akash.deployment.v1beta4.MsgStartGroup",
    "/akash.market.v1beta5.MsgCreateBid",
    "/akash.market.v1beta5.MsgCloseBid",
    "/akash.market.v1beta5.MsgCloseLease",
    "/akash.market.v1beta5.MsgWithdrawLease",
];

/// The message types the simulator executes.
pub const EXECUTED: [&str; 11] = [
    "/akash.escrow.v1.MsgAccountDeposit",
    "/akash.deployment.v1beta3.MsgDepositDeployment",
    MSG_CREATE_DEPLOYMENT,
    MSG_CLOSE_DEPLOYMENT,
    MSG_CREATE_LEASE,
    MSG_GRANT,
    MSG_REVOKE,
    MSG_EXEC,
    MSG_GRANT_ALLOWANCE,
    MSG_REVOKE_ALLOWANCE,
    MSG_SEND,
];

/// Whether the chain has a handler for `type_url` (what `MsgGrant` checks of a
/// `GenericAuthorization`): the types the simulator executes and
/// [`ROUTED_NOT_EXECUTED`].
pub fn routed(type_url: &str) -> bool {
    EXECUTED.contains(&type_url) || ROUTED_NOT_EXECUTED.contains(&type_url)
}

/// What an authz grant allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// `GenericAuthorization {string msg = 1}`: any message of that type, unlimited.
    Generic {
        /// The message type URL it authorizes.
        msg: String,
    },
    /// `akash.escrow.v1.DepositAuthorization {Coin spend_limit = 1; repeated Scope
    /// scopes = 2}`: escrow deposits (`MsgAccountDeposit`) up to the spend limit.
    Deposit {
        /// What is left to spend, in `denom`.
        spend_limit: u128,
        /// Denomination of the spend limit.
        denom: String,
        /// Escrow scopes it covers (`deployment = 1`, `bid = 2`).
        scopes: Vec<i32>,
    },
}

impl Authorization {
    /// The message type URL it authorizes (a `DepositAuthorization`:
    /// `/akash.escrow.v1.MsgAccountDeposit`): the third part of its grant's key.
    pub fn msg_type_url(&self) -> &str {
        match self {
            Self::Generic { msg } => msg,
            Self::Deposit { .. } => DepositMessage::AccountDeposit.type_url(),
        }
    }

    /// Its own type URL (the `@type` of its `Any`).
    pub fn type_url(&self) -> &'static str {
        match self {
            Self::Generic { .. } => GENERIC_AUTHORIZATION,
            Self::Deposit { .. } => DEPOSIT_AUTHORIZATION,
        }
    }
}

/// A decoded `MsgGrant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    /// Who grants (and signs).
    pub granter: String,
    /// Who may act.
    pub grantee: String,
    /// What it allows.
    pub authorization: Authorization,
    /// When it ends (none: never).
    pub expiration: Option<DateTime<Utc>>,
}

/// A decoded `MsgRevoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeRequest {
    /// Who granted (and signs).
    pub granter: String,
    /// Who held the grant.
    pub grantee: String,
    /// The message type URL of the grant.
    pub msg_type_url: String,
}

/// A decoded `MsgExec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Who executes (and signs).
    pub grantee: String,
    /// The messages, each signed (in effect) by its own signer, the granter.
    pub msgs: Vec<ChainMessage>,
}

/// A decoded `MsgGrantAllowance` with a `BasicAllowance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowanceRequest {
    /// Who pays the fees (and signs).
    pub granter: String,
    /// Whose fees are paid.
    pub grantee: String,
    /// The most it pays, by denomination; empty: no limit.
    pub spend_limit: BTreeMap<String, u128>,
    /// When it ends (none: never).
    pub expiration: Option<DateTime<Utc>>,
}

/// A decoded `MsgRevokeAllowance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowanceRef {
    /// Who granted (and signs).
    pub granter: String,
    /// Who held the allowance.
    pub grantee: String,
}

/// A decoded `MsgSend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// Sender (and signer).
    pub from: String,
    /// Recipient (created if it has no account).
    pub to: String,
    /// `(denom, amount)`, sorted by denomination, each positive.
    pub amount: Vec<(String, u128)>,
}

/// `google.protobuf.Any`, as the nested messages carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoTimestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `cosmos.authz.v1beta1.MsgGrant`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsgGrant {
    #[prost(string, tag = "1")]
    granter: String,
    #[prost(string, tag = "2")]
    grantee: String,
    #[prost(message, optional, tag = "3")]
    grant: Option<ProtoGrant>,
}

/// `cosmos.authz.v1beta1.Grant`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoGrant {
    #[prost(message, optional, tag = "1")]
    authorization: Option<ProtoAny>,
    #[prost(message, optional, tag = "2")]
    expiration: Option<ProtoTimestamp>,
}

/// `cosmos.authz.v1beta1.GenericAuthorization`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoGenericAuthorization {
    #[prost(string, tag = "1")]
    msg: String,
}

/// `akash.escrow.v1.DepositAuthorization`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDepositAuthorization {
    #[prost(message, optional, tag = "1")]
    spend_limit: Option<Coin>,
    #[prost(int32, repeated, tag = "2")]
    scopes: Vec<i32>,
}

/// `cosmos.authz.v1beta1.MsgRevoke`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsgRevoke {
    #[prost(string, tag = "1")]
    granter: String,
    #[prost(string, tag = "2")]
    grantee: String,
    #[prost(string, tag = "3")]
    msg_type_url: String,
}

/// `cosmos.authz.v1beta1.MsgExec`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsgExec {
    #[prost(string, tag = "1")]
    grantee: String,
    #[prost(message, repeated, tag = "2")]
    msgs: Vec<ProtoAny>,
}

/// `cosmos.feegrant.v1beta1.MsgGrantAllowance`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsgGrantAllowance {
    #[prost(string, tag = "1")]
    granter: String,
    #[prost(string, tag = "2")]
    grantee: String,
    #[prost(message, optional, tag = "3")]
    allowance: Option<ProtoAny>,
}

/// `cosmos.feegrant.v1beta1.BasicAllowance`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoBasicAllowance {
    #[prost(message, repeated, tag = "1")]
    spend_limit: Vec<Coin>,
    #[prost(message, optional, tag = "2")]
    expiration: Option<ProtoTimestamp>,
}

/// `cosmos.feegrant.v1beta1.MsgRevokeAllowance`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsgRevokeAllowance {
    #[prost(string, tag = "1")]
    granter: String,
    #[prost(string, tag = "2")]
    grantee: String,
}

/// `cosmos.bank.v1beta1.MsgSend`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsgSend {
    #[prost(string, tag = "1")]
    from_address: String,
    #[prost(string, tag = "2")]
    to_address: String,
    #[prost(message, repeated, tag = "3")]
    amount: Vec<Coin>,
}

static ANY: Schema = Schema {
    name: "google.protobuf.Any",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Bytes)],
};
static TIMESTAMP: Schema = Schema {
    name: "google.protobuf.Timestamp",
    fields: &[(1, FieldKind::Varint), (2, FieldKind::Varint)],
};
static GRANT: Schema = Schema {
    name: "cosmos.authz.v1beta1.Grant",
    fields: &[
        (1, FieldKind::Message(&ANY)),
        (2, FieldKind::Message(&TIMESTAMP)),
    ],
};

/// The wire schema of `MsgGrant` (the authorization's own bytes are checked against
/// its type's schema once its type URL is known).
pub static GRANT_SCHEMA: Schema = Schema {
    name: "cosmos.authz.v1beta1.MsgGrant",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Bytes),
        (3, FieldKind::Message(&GRANT)),
    ],
};

/// The wire schema of `GenericAuthorization`.
pub static GENERIC_AUTHORIZATION_SCHEMA: Schema = Schema {
    name: "cosmos.authz.v1beta1.GenericAuthorization",
    fields: &[(1, FieldKind::Bytes)],
};

/// The wire schema of `DepositAuthorization`.
pub static DEPOSIT_AUTHORIZATION_SCHEMA: Schema = Schema {
    name: "akash.escrow.v1.DepositAuthorization",
    fields: &[(1, FieldKind::Message(&COIN)), (2, FieldKind::Packable)],
};

/// The wire schema of `MsgRevoke`.
pub static REVOKE_SCHEMA: Schema = Schema {
    name: "cosmos.authz.v1beta1.MsgRevoke",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Bytes),
        (3, FieldKind::Bytes),
    ],
};

/// The wire schema of `MsgExec` (each inner message is checked as its own type).
pub static EXEC_SCHEMA: Schema = Schema {
    name: "cosmos.authz.v1beta1.MsgExec",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Message(&ANY))],
};

/// The wire schema of `MsgGrantAllowance`.
pub static GRANT_ALLOWANCE_SCHEMA: Schema = Schema {
    name: "cosmos.feegrant.v1beta1.MsgGrantAllowance",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Bytes),
        (3, FieldKind::Message(&ANY)),
    ],
};

/// The wire schema of `BasicAllowance`.
pub static BASIC_ALLOWANCE_SCHEMA: Schema = Schema {
    name: "cosmos.feegrant.v1beta1.BasicAllowance",
    fields: &[
        (1, FieldKind::Message(&COIN)),
        (2, FieldKind::Message(&TIMESTAMP)),
    ],
};

/// The wire schema of `MsgRevokeAllowance`.
pub static REVOKE_ALLOWANCE_SCHEMA: Schema = Schema {
    name: "cosmos.feegrant.v1beta1.MsgRevokeAllowance",
    fields: &[(1, FieldKind::Bytes), (2, FieldKind::Bytes)],
};

/// The wire schema of `MsgSend`.
pub static SEND_SCHEMA: Schema = Schema {
    name: "cosmos.bank.v1beta1.MsgSend",
    fields: &[
        (1, FieldKind::Bytes),
        (2, FieldKind::Bytes),
        (3, FieldKind::Message(&COIN)),
    ],
};

/// Checks `bytes` against `schema`, then decodes them: what the chain's decoder
/// refuses is a tx parse error.
fn strict_decode<M: Message + Default>(
    bytes: &[u8],
    schema: &Schema,
    what: &str,
) -> Result<M, MessageError> {
    check_wire(bytes, schema).map_err(MessageError::Undecodable)?;
    M::decode(bytes).map_err(|e| MessageError::Undecodable(format!("{what}: {e}")))
}

/// An address field as the msg servers check it (`sdk` 7).
fn address(value: &str, role: &str) -> Result<(), MessageError> {
    if valid_akash_address(value) {
        Ok(())
    } else {
        Err(refused(
            "sdk",
            7,
            format!("invalid {role} address '{value}': invalid address"),
        ))
    }
}

/// A timestamp as gogoproto's `stdtime` reads it (nanos in `0..10⁹`, within years
/// 1 to 9999); anything else fails the decoder.
fn timestamp(proto: ProtoTimestamp) -> Result<DateTime<Utc>, MessageError> {
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    let nanos = u32::try_from(proto.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000);
    nanos
        .filter(|_| (MIN_SECONDS..=MAX_SECONDS).contains(&proto.seconds))
        .and_then(|nanos| DateTime::from_timestamp(proto.seconds, nanos))
        .ok_or_else(|| {
            MessageError::Undecodable(format!(
                "timestamp {}s {}ns is out of range",
                proto.seconds, proto.nanos
            ))
        })
}

/// `sdk.Coins.Validate` and `IsAllPositive`: valid denominations, sorted, no
/// duplicates, every amount a positive integer (`sdk` 10 otherwise).
fn positive_coins(coins: Vec<Coin>, what: &str) -> Result<Vec<(String, u128)>, MessageError> {
    let invalid = |text: String| refused("sdk", 10, format!("{what}: {text}: invalid coins"));
    let mut out: Vec<(String, u128)> = Vec::new();
    for coin in coins {
        if !valid_denom(&coin.denom) {
            return Err(invalid(format!("invalid denom '{}'", coin.denom)));
        }
        let amount: u128 = coin
            .amount
            .parse()
            .map_err(|_| invalid(format!("amount '{}' is not an integer", coin.amount)))?;
        if amount == 0 {
            return Err(invalid(format!("0{} is not positive", coin.denom)));
        }
        if let Some((last, _)) = out.last() {
            if *last >= coin.denom {
                return Err(invalid(format!(
                    "denominations are not sorted or repeat ({last}, {})",
                    coin.denom
                )));
            }
        }
        out.push((coin.denom, amount));
    }
    Ok(out)
}

/// The authorization of a `MsgGrant`: a known type (`unable to resolve type URL`
/// otherwise, as for an unregistered type), strictly decoded, and valid as its
/// `ValidateBasic` says: a `DepositAuthorization` needs known, distinct scopes
/// (`escrow` 17 "invalid authz scope") and a positive spend limit (`sdk` 10).
fn authorization(any: Option<ProtoAny>) -> Result<Authorization, MessageError> {
    let any =
        any.ok_or_else(|| refused("sdk", 29, "authorization is nil: invalid type".to_owned()))?;
    match any.type_url.as_str() {
        GENERIC_AUTHORIZATION => {
            let generic: ProtoGenericAuthorization = strict_decode(
                &any.value,
                &GENERIC_AUTHORIZATION_SCHEMA,
                "GenericAuthorization",
            )?;
            Ok(Authorization::Generic { msg: generic.msg })
        }
        DEPOSIT_AUTHORIZATION => {
            let deposit: ProtoDepositAuthorization = strict_decode(
                &any.value,
                &DEPOSIT_AUTHORIZATION_SCHEMA,
                "DepositAuthorization",
            )?;
            let scope_error =
                |text: String| refused("escrow", 17, format!("{text}: invalid authz scope"));
            if deposit.scopes.is_empty() {
                return Err(scope_error("empty scope".to_owned()));
            }
            for (index, scope) in deposit.scopes.iter().enumerate() {
                if ![DEPOSIT_SCOPE_DEPLOYMENT, DEPOSIT_SCOPE_BID].contains(scope) {
                    return Err(scope_error(format!(
                        "invalid scope \"{}\"",
                        deposit_scope_name(*scope)
                    )));
                }
                if deposit.scopes[..index].contains(scope) {
                    return Err(scope_error(format!(
                        "duplicate scope \"{}\"",
                        deposit_scope_name(*scope)
                    )));
                }
            }
            let coin = deposit.spend_limit.unwrap_or_default();
            let limit = positive_coins(vec![coin], "spend limit").map_err(|_| {
                refused(
                    "sdk",
                    10,
                    "spend limit cannot be negative: invalid coins".to_owned(),
                )
            })?;
            let (denom, spend_limit) = limit.into_iter().next().expect("one coin");
            Ok(Authorization::Deposit {
                spend_limit,
                denom,
                scopes: deposit.scopes,
            })
        }
        other => Err(MessageError::UnknownType(format!(
            "unable to resolve type URL {other} (the simulator knows {GENERIC_AUTHORIZATION} and {DEPOSIT_AUTHORIZATION})"
        ))),
    }
}

/// `MsgGrant` as its msg server checks it before touching state: distinct granter
/// and grantee (`authz` 7), valid addresses (`sdk` 7), a valid authorization. That
/// the expiration is after the block time and the type has a handler is checked
/// when it runs.
fn decode_grant(bytes: &[u8]) -> Result<GrantRequest, MessageError> {
    let msg: ProtoMsgGrant = strict_decode(bytes, &GRANT_SCHEMA, "MsgGrant")?;
    if msg.granter.eq_ignore_ascii_case(&msg.grantee) {
        return Err(refused(
            "authz",
            7,
            "grantee and granter should be different".to_owned(),
        ));
    }
    address(&msg.grantee, "grantee")?;
    address(&msg.granter, "granter")?;
    let grant = msg.grant.unwrap_or_default();
    let authorization = authorization(grant.authorization)?;
    let expiration = grant.expiration.map(timestamp).transpose()?;
    Ok(GrantRequest {
        granter: msg.granter,
        grantee: msg.grantee,
        authorization,
        expiration,
    })
}

/// `MsgRevoke`: distinct parties (`authz` 7), valid addresses (`sdk` 7), a message
/// type (`sdk` 18).
fn decode_revoke(bytes: &[u8]) -> Result<RevokeRequest, MessageError> {
    let msg: ProtoMsgRevoke = strict_decode(bytes, &REVOKE_SCHEMA, "MsgRevoke")?;
    if msg.granter.eq_ignore_ascii_case(&msg.grantee) {
        return Err(refused(
            "authz",
            7,
            "grantee and granter should be different".to_owned(),
        ));
    }
    address(&msg.grantee, "grantee")?;
    address(&msg.granter, "granter")?;
    if msg.msg_type_url.is_empty() {
        return Err(refused(
            "sdk",
            18,
            "missing msg method name: invalid request".to_owned(),
        ));
    }
    Ok(RevokeRequest {
        granter: msg.granter,
        grantee: msg.grantee,
        msg_type_url: msg.msg_type_url,
    })
}

/// `MsgExec`: a valid grantee (`sdk` 7), at least one message (`sdk` 18), each
/// decoded and validated as if it stood alone. A `MsgExec` inside a `MsgExec` is
/// refused (the chain allows it; the simulator does not run nested execs).
fn decode_exec(bytes: &[u8]) -> Result<ExecRequest, MessageError> {
    let msg: ProtoMsgExec = strict_decode(bytes, &EXEC_SCHEMA, "MsgExec")?;
    address(&msg.grantee, "grantee")?;
    if msg.msgs.is_empty() {
        return Err(refused(
            "sdk",
            18,
            "messages cannot be empty: invalid request".to_owned(),
        ));
    }
    let mut msgs = Vec::new();
    for inner in msg.msgs {
        if inner.type_url == MSG_EXEC {
            return Err(MessageError::Invalid(
                "a MsgExec inside a MsgExec is not supported by the simulator".to_owned(),
            ));
        }
        msgs.push(decode_message(&Any {
            type_url: inner.type_url,
            value: inner.value,
        })?);
    }
    Ok(ExecRequest {
        grantee: msg.grantee,
        msgs,
    })
}

/// `MsgGrantAllowance` with a `BasicAllowance` (the only allowance the simulator
/// knows; `PeriodicAllowance` and `AllowedMsgAllowance` are refused as unknown
/// types): no self-grant (`sdk` 7), valid addresses, a valid positive spend limit
/// (`sdk` 10; empty is unlimited).
fn decode_grant_allowance(bytes: &[u8]) -> Result<AllowanceRequest, MessageError> {
    let msg: ProtoMsgGrantAllowance =
        strict_decode(bytes, &GRANT_ALLOWANCE_SCHEMA, "MsgGrantAllowance")?;
    if msg.granter.eq_ignore_ascii_case(&msg.grantee) {
        return Err(refused(
            "sdk",
            7,
            "cannot self-grant fee authorization: invalid address".to_owned(),
        ));
    }
    address(&msg.grantee, "grantee")?;
    address(&msg.granter, "granter")?;
    let any = msg
        .allowance
        .ok_or_else(|| refused("sdk", 29, "allowance is nil: invalid type".to_owned()))?;
    if any.type_url != BASIC_ALLOWANCE {
        return Err(MessageError::UnknownType(format!(
            "unable to resolve type URL {} (the simulator knows {BASIC_ALLOWANCE})",
            any.type_url
        )));
    }
    let basic: ProtoBasicAllowance =
        strict_decode(&any.value, &BASIC_ALLOWANCE_SCHEMA, "BasicAllowance")?;
    let spend_limit = positive_coins(basic.spend_limit, "spend limit")?
        .into_iter()
        .collect();
    let expiration = basic.expiration.map(timestamp).transpose()?;
    Ok(AllowanceRequest {
        granter: msg.granter,
        grantee: msg.grantee,
        spend_limit,
        expiration,
    })
}

/// `MsgRevokeAllowance`: distinct, valid addresses (`sdk` 7).
fn decode_revoke_allowance(bytes: &[u8]) -> Result<AllowanceRef, MessageError> {
    let msg: ProtoMsgRevokeAllowance =
        strict_decode(bytes, &REVOKE_ALLOWANCE_SCHEMA, "MsgRevokeAllowance")?;
    if msg.granter == msg.grantee {
        return Err(refused(
            "sdk",
            7,
            "addresses must be different: invalid address".to_owned(),
        ));
    }
    address(&msg.grantee, "grantee")?;
    address(&msg.granter, "granter")?;
    Ok(AllowanceRef {
        granter: msg.granter,
        grantee: msg.grantee,
    })
}

/// `MsgSend`: valid addresses (`sdk` 7), valid positive coins (`sdk` 10).
fn decode_send(bytes: &[u8]) -> Result<SendRequest, MessageError> {
    let msg: ProtoMsgSend = strict_decode(bytes, &SEND_SCHEMA, "MsgSend")?;
    address(&msg.from_address, "from")?;
    address(&msg.to_address, "to")?;
    if msg.amount.is_empty() {
        return Err(refused("sdk", 10, "empty amount: invalid coins".to_owned()));
    }
    let amount = positive_coins(msg.amount, "amount")?;
    Ok(SendRequest {
        from: msg.from_address,
        to: msg.to_address,
        amount,
    })
}

/// Decodes one message of a transaction body with the simulator's own types and
/// validates it as the chain's `ValidateBasic` (or its msg server's stateless
/// checks) would (see [`decode_deposit`] for the deposits).
pub fn decode_message(any: &Any) -> Result<ChainMessage, MessageError> {
    match any.type_url.as_str() {
        MSG_CREATE_DEPLOYMENT => {
            decode_create_deployment(&any.value).map(ChainMessage::CreateDeployment)
        }
        MSG_CLOSE_DEPLOYMENT => {
            decode_close_deployment(&any.value).map(ChainMessage::CloseDeployment)
        }
        MSG_CREATE_LEASE => decode_create_lease(&any.value).map(ChainMessage::CreateLease),
        MSG_GRANT => decode_grant(&any.value).map(ChainMessage::Grant),
        MSG_REVOKE => decode_revoke(&any.value).map(ChainMessage::Revoke),
        MSG_EXEC => decode_exec(&any.value).map(ChainMessage::Exec),
        MSG_GRANT_ALLOWANCE => decode_grant_allowance(&any.value).map(ChainMessage::GrantAllowance),
        MSG_REVOKE_ALLOWANCE => {
            decode_revoke_allowance(&any.value).map(ChainMessage::RevokeAllowance)
        }
        MSG_SEND => decode_send(&any.value).map(ChainMessage::Send),
        _ => decode_deposit_with_source(any)
            .map(|(request, source)| ChainMessage::Deposit(request, source)),
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
        let (_, grant) =
            decode_deposit_with_source(&account_deposit(1, "akash1owner/1", &[2])).unwrap();
        assert_eq!(grant, DepositSource::Grant);
        let both = decode_deposit(&account_deposit(1, "akash1owner/1", &[1, 2]));
        assert!(matches!(both, Err(MessageError::Invalid(e)) if e.contains("not supported")));
        let twice = decode_deposit(&account_deposit(1, "akash1owner/1", &[2, 2]));
        assert!(matches!(twice, Err(MessageError::Invalid(e)) if e.contains("duplicate")));
        let unknown_source = decode_deposit(&account_deposit(1, "akash1owner/1", &[3]));
        assert!(
            matches!(unknown_source, Err(MessageError::Invalid(e)) if e.contains("invalid deposit source"))
        );
        let none = decode_deposit(&account_deposit(1, "akash1owner/1", &[]));
        assert!(
            matches!(none, Err(MessageError::Invalid(e)) if e.contains("empty deposit sources"))
        );
        let no_dseq = decode_deposit(&account_deposit(1, "akash1owner", &[1]));
        assert!(matches!(no_dseq, Err(MessageError::Invalid(e)) if e.contains("owner/dseq")));
        let unknown = decode_deposit(&Any {
            type_url: "/cosmos.staking.v1beta1.MsgDelegate".into(),
            value: vec![],
        });
        assert!(
            matches!(unknown, Err(MessageError::UnknownType(e)) if e.contains("unable to resolve type URL"))
        );
        assert!(valid_denom("uakt") && valid_denom("ibc/27394FB0"));
        assert!(!valid_denom("u") && !valid_denom("1akt") && !valid_denom("u akt"));
    }
}
