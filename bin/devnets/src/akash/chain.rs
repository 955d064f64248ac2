//! The simulated chain: an in-memory ledger that checks transactions the way a Cosmos
//! SDK chain's ante handler does and applies Akash escrow deposits, deployments, bids
//! and leases in blocks.
//!
//! - `check_tx` (broadcast, sync mode) decodes `TxRaw`/`TxBody`/`AuthInfo` and checks,
//!   in the SDK's order: duplicate (code 19), gas (11), minimum fee (13), the
//!   account (9), fee funds (5), public key matches the signer (8), sequence against
//!   the *check state* (32), the secp256k1 signature over the `SignDoc` with this
//!   chain id and the account number (4). Beyond a real CheckTx it also runs the
//!   messages themselves against the check state (the committed state with the
//!   mempool applied on top, undone afterwards), so clients get a deposit into a
//!   closed deployment, a taken dseq or a lost bid refused at broadcast. Accepted
//!   transactions wait in the mempool; the check state's sequence moves at once, the
//!   committed one in the block.
//! - `produce_block` first drains every active deployment's escrow by its active
//!   leases' prices and closes those that cannot pay for the block, then applies the
//!   mempool in order (fee and sequence first, then the messages, all or nothing:
//!   a failing message leaves the state as it was, the deployment may have closed in
//!   this very block), then lets the simulated providers bid.
//!
//! # The market
//!
//! - `MsgCreateDeployment` (signer = owner): the dseq must be unused, the deposit in
//!   the chain denom and at least [`Chain::min_deposit`], the balance must cover it
//!   (plus the fee). The deployment starts active with the deposit as its escrow, its
//!   groups open (gseq 1, 2, …) and one open order per group (oseq 1).
//! - Bids: every registered [`SimulatedProvider`] bids once on each open order,
//!   `bid_delay_blocks` after the order opened, at its own price, when it has every
//!   attribute the group requires and the group's ceiling (sum of price × count) is
//!   at least that price. A group asking for auditor signatures (`signed_by`) gets no
//!   simulated bids: no simulated provider is audited. Bids hold no deposit and
//!   drain nothing.
//! - `MsgCreateLease` (signer = owner): the bid must exist and be open, its order
//!   open. The lease starts active at the bid's price, the bid becomes active, the
//!   order's other open bids are lost, the order is active. Active leases drain the
//!   escrow, block by block.
//! - `MsgCloseDeployment` (signer = owner): the deployment must be active. It closes
//!   with its groups, orders, leases and open or active bids (lost bids stay lost),
//!   and what is left of the escrow goes back to the owner's balance (recorded in
//!   [`Chain::refunds`]).
//!
//! # Codes
//!
//! Codes of the `sdk` codespace are the Cosmos SDK's. The market messages use the
//! codes Akash registers (`go/node/deployment/v1/errors.go`,
//! `go/node/market/v1/errors.go` in `akash-network/chain-sdk`): `deployment` 3
//! "Deployment exists", 4 "Deployment not found", 5 "Deployment closed", 7 "Invalid
//! groups", 9 "Invalid: empty hash", 10 "Invalid: deployment hash", 20 "Deposit
//! invalid" (below the minimum, wrong denomination); `market` 2 "owner and provider
//! are the same account", 12 "bid not open", 13 "bid: order not open", 15 "order not
//! found", 17 "group not open", 18 "bid not found". Group specs the chain refuses with
//! a plain error are reported as `deployment` 19 "GroupSpec invalid". The deposit
//! messages keep their own scheme (codespace `escrow` for `escrow.v1` messages,
//! `deployment` for `deployment.v1beta3`): 3 / 4 "not found", 2 / 5 "closed", 5 / 20
//! "invalid denomination". Clients should match on the message.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use cosmrs::proto::cosmos::crypto::secp256k1::PubKey;
use cosmrs::proto::cosmos::tx::signing::v1beta1::SignMode;
use cosmrs::proto::cosmos::tx::v1beta1::mode_info::Sum as ModeSum;
use cosmrs::proto::cosmos::tx::v1beta1::{AuthInfo, SignDoc, TxBody, TxRaw};
use k256::ecdsa::signature::Verifier;
use k256::ecdsa::{Signature, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use super::dec::{Dec, ATTO_PER_UNIT};
use super::gas_price::GasPrice;
use super::messages::{
    decode_message, routed, valid_akash_address, AllowanceRef, AllowanceRequest, Attribute,
    Authorization, BidRef, ChainMessage, CreateDeploymentRequest, DeploymentRef, DepositMessage,
    DepositRequest, DepositSource, ExecRequest, GrantRequest, GroupSpec, MessageError,
    RevokeRequest, SendRequest, DEPOSIT_SCOPE_DEPLOYMENT,
};

/// Type URL of secp256k1 public keys.
pub const SECP256K1_PUBKEY_TYPE_URL: &str = "/cosmos.crypto.secp256k1.PubKey";

/// The address prefix the simulator uses.
pub const ACCOUNT_PREFIX: &str = "akash";

/// The provider every lease made through `POST /simulator/deployments` is with (a
/// fixed, keyless address; market leases are with the simulated providers).
pub const SIMULATED_PROVIDER: &str = "akash1simulatedprovider000000000000000000000";

/// The smallest deposit `MsgCreateDeployment` may carry unless configured otherwise
/// (Akash's `min_deposits` parameter for uakt: 0.5 AKT).
pub const DEFAULT_MIN_DEPOSIT_UAKT: u128 = 500_000;

/// A result code as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxCode {
    /// `sdk`, `escrow`, `deployment`, `market`, or empty for success.
    pub codespace: &'static str,
    /// 0 for success.
    pub code: u32,
    /// The raw log (the error message).
    pub log: String,
}

impl TxCode {
    fn ok() -> Self {
        Self {
            codespace: "",
            code: 0,
            log: String::new(),
        }
    }

    fn sdk(code: u32, log: impl Into<String>) -> Self {
        Self::new("sdk", code, log)
    }

    fn new(codespace: &'static str, code: u32, log: impl Into<String>) -> Self {
        Self {
            codespace,
            code,
            log: log.into(),
        }
    }

    fn module(
        message: DepositMessage,
        escrow_code: u32,
        deployment_code: u32,
        log: String,
    ) -> Self {
        match message {
            DepositMessage::AccountDeposit => Self::new("escrow", escrow_code, log),
            DepositMessage::DepositDeployment => Self::new("deployment", deployment_code, log),
        }
    }
}

/// An account.
#[derive(Debug, Clone)]
pub struct Account {
    /// Bech32 address.
    pub address: String,
    /// Assigned when the account first receives funds.
    pub account_number: u64,
    /// Committed sequence (what `GET /accounts` shows).
    pub sequence: u64,
    /// Balances by denomination.
    pub balances: BTreeMap<String, u128>,
    /// Compressed secp256k1 key, learned from the first signed transaction.
    pub pub_key: Option<Vec<u8>>,
    /// Sequence of the check state: committed plus transactions in the mempool.
    check_sequence: u64,
    /// Chain-denom funds promised to transactions in the mempool.
    reserved: u128,
}

/// Whether a deployment (or a lease) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    /// Running, paying its leases from escrow.
    Active,
    /// Closed (by its owner, by its escrow running dry, or created closed).
    Closed,
}

impl DeploymentState {
    /// As the chain writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

/// Whether a group takes bids and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// Created with its deployment; stays open while leased.
    Open,
    /// Closed with its deployment.
    Closed,
}

impl GroupState {
    /// As the chain writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// Where an order is in the market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Created with its deployment; takes bids until a lease is made.
    Open,
    /// A lease was created from one of its bids.
    Active,
    /// Closed with its deployment.
    Closed,
}

impl OrderState {
    /// As the chain writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

/// Where a bid is in the market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BidState {
    /// Placed by a provider; the owner may lease it.
    Open,
    /// Leased.
    Active,
    /// Another bid of its order was leased.
    Lost,
    /// Closed with its deployment.
    Closed,
}

impl BidState {
    /// As the chain writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Active => "active",
            Self::Lost => "lost",
            Self::Closed => "closed",
        }
    }
}

/// A lease: a provider paid `price` per block from the deployment's escrow.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Group sequence.
    pub gseq: u32,
    /// Order sequence.
    pub oseq: u32,
    /// Provider address.
    pub provider: String,
    /// Bid sequence of the bid it was made from (0 for admin-made leases).
    pub bseq: u32,
    /// Price per block in the chain denom.
    pub price: Dec,
    /// `active` or `closed` (same words as deployments).
    pub state: DeploymentState,
    /// Height it started.
    pub created_at: u64,
    /// Height it closed (0 while active).
    pub closed_on: u64,
}

/// A deployment group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group sequence (1, 2, … in the order of the message's groups).
    pub gseq: u32,
    /// Open or closed.
    pub state: GroupState,
    /// What the owner asked for.
    pub spec: GroupSpec,
}

/// An order: one per group, open for bids.
#[derive(Debug, Clone)]
pub struct Order {
    /// Its group.
    pub gseq: u32,
    /// Order sequence (always 1: a group is ordered once).
    pub oseq: u32,
    /// Open, active or closed.
    pub state: OrderState,
    /// Height it opened.
    pub created_at: u64,
}

/// A provider's bid on an order.
#[derive(Debug, Clone)]
pub struct Bid {
    /// Group of the order.
    pub gseq: u32,
    /// The order.
    pub oseq: u32,
    /// Who bid.
    pub provider: String,
    /// Bid sequence (0: a simulated provider bids once per order).
    pub bseq: u32,
    /// Open, active, lost or closed.
    pub state: BidState,
    /// Price per block it asks.
    pub price: Dec,
    /// Height it was placed.
    pub created_at: u64,
}

/// A deployment with its escrow account and market state.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Owner address.
    pub owner: String,
    /// Sequence number.
    pub dseq: u64,
    /// Active or closed.
    pub state: DeploymentState,
    /// SHA-256 of its manifest (empty for deployments made by the admin API).
    pub hash: Vec<u8>,
    /// Unspent escrow funds (chain denom).
    pub escrow: u128,
    /// What the escrow started with.
    pub initial_deposit: u128,
    /// Paid out to providers so far.
    pub transferred: u128,
    /// Returned to the owner when it was closed.
    pub refunded: u128,
    /// Creation height.
    pub created_at: u64,
    /// Height of the last settlement.
    pub settled_at: u64,
    /// Height it closed.
    pub closed_at: Option<u64>,
    /// Its groups (none for deployments made by the admin API).
    pub groups: Vec<Group>,
    /// One order per group.
    pub orders: Vec<Order>,
    /// Bids on its orders.
    pub bids: Vec<Bid>,
    /// Leases.
    pub leases: Vec<Lease>,
    /// What the leases are owed below one base unit (in 10⁻¹⁸), carried to the
    /// next block so fractional prices drain exactly.
    owed_atto: u128,
}

impl Deployment {
    /// Sum of the active leases' prices: what one block costs.
    pub fn rate_per_block(&self) -> Dec {
        self.leases
            .iter()
            .filter(|lease| lease.state == DeploymentState::Active)
            .fold(Dec::ZERO, |sum, lease| {
                sum.checked_add(lease.price)
                    .unwrap_or(Dec::from_atto(u128::MAX))
            })
    }

    /// Closes it with its market state at `height`: groups and orders closed, open
    /// and active bids closed (lost ones stay lost), active leases closed.
    fn close(&mut self, height: u64) {
        self.state = DeploymentState::Closed;
        self.closed_at = Some(height);
        self.settled_at = height;
        self.owed_atto = 0;
        for group in &mut self.groups {
            group.state = GroupState::Closed;
        }
        for order in &mut self.orders {
            order.state = OrderState::Closed;
        }
        for bid in &mut self.bids {
            if matches!(bid.state, BidState::Open | BidState::Active) {
                bid.state = BidState::Closed;
            }
        }
        for lease in &mut self.leases {
            if lease.state == DeploymentState::Active {
                lease.state = DeploymentState::Closed;
                lease.closed_on = height;
            }
        }
    }
}

/// What the admin API asks for when creating a deployment.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// Owner address (an account is created if it does not exist).
    pub owner: String,
    /// Sequence number; default: the next free one from the current height.
    pub dseq: Option<u64>,
    /// Initial escrow funds.
    pub escrow: u128,
    /// One lease per price (whole uakt per block), with [`SIMULATED_PROVIDER`].
    pub lease_prices: Vec<u128>,
    /// Create it already closed.
    pub closed: bool,
}

/// A simulated provider: registered with the chain, it bids on the orders it can
/// serve (see the module docs for when).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedProvider {
    /// Its address (`akash1…`).
    pub address: String,
    /// Where its provider API listens (`http://127.0.0.1:PORT`).
    pub host_uri: String,
    /// Its attributes (`region=local`, …).
    pub attributes: Vec<Attribute>,
    /// What it bids per block, in the chain denom.
    pub price: Dec,
    /// Blocks between an order opening and its bid.
    pub bid_delay_blocks: u64,
    /// Contact e-mail (provider info).
    pub email: String,
    /// Website (provider info).
    pub website: String,
}

impl SimulatedProvider {
    /// The price a provider bids unless told otherwise (10 uakt per block).
    pub const DEFAULT_PRICE_UAKT: u128 = 10;

    /// Blocks a provider waits before bidding unless told otherwise.
    pub const DEFAULT_BID_DELAY_BLOCKS: u64 = 2;

    /// A provider at `address` with the default price and delay, no attributes.
    pub fn new(address: &str, host_uri: &str) -> Self {
        Self {
            address: address.to_owned(),
            host_uri: host_uri.to_owned(),
            attributes: Vec::new(),
            price: Dec::from_whole(Self::DEFAULT_PRICE_UAKT).expect("small constant"),
            bid_delay_blocks: Self::DEFAULT_BID_DELAY_BLOCKS,
            email: String::new(),
            website: String::new(),
        }
    }

    /// Whether it bids on an order for `spec` on a chain whose denom is `denom`:
    /// no auditor signatures asked for, every required attribute among its own, the
    /// group priced in `denom` with a ceiling of at least its price.
    pub fn bids_on(&self, spec: &GroupSpec, denom: &str) -> bool {
        let requirements = &spec.requirements;
        let needs_audit =
            !requirements.signed_by_all_of.is_empty() || !requirements.signed_by_any_of.is_empty();
        let has_attributes = requirements
            .attributes
            .iter()
            .all(|wanted| self.attributes.contains(wanted));
        let fits = spec.denom() == denom
            && spec
                .price_ceiling()
                .is_some_and(|ceiling| ceiling >= self.price);
        !needs_audit && has_attributes && fits
    }
}

/// A deposit that landed.
#[derive(Debug, Clone)]
pub struct DepositRecord {
    /// Block height.
    pub height: u64,
    /// Transaction.
    pub tx_hash: String,
    /// Who paid.
    pub signer: String,
    /// The deployment's owner.
    pub owner: String,
    /// The deployment.
    pub dseq: u64,
    /// Amount.
    pub amount: u128,
    /// Denomination.
    pub denom: String,
    /// Which message carried it.
    pub message: DepositMessage,
    /// `balance` or `grant`.
    pub source: DepositSource,
    /// Whose balances paid it and how much each: the signer for a balance deposit,
    /// the granters of the signer's deposit grants for a grant deposit.
    pub funded_by: Vec<(String, u128)>,
}

/// An authz grant as the chain stores it, under `(granter, grantee, msg type URL)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzGrant {
    /// What it allows (a `DepositAuthorization`'s spend limit is what is left).
    pub authorization: Authorization,
    /// When it ends (none: never). A grant counts while the block time is before it.
    pub expiration: Option<DateTime<Utc>>,
}

/// A fee allowance (`BasicAllowance`) as the chain stores it, under `(granter,
/// grantee)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeAllowance {
    /// What is left to pay, by denomination; empty: no limit.
    pub spend_limit: BTreeMap<String, u128>,
    /// When it ends (none: never).
    pub expiration: Option<DateTime<Utc>>,
}

/// Escrow returned to an owner when their deployment was closed.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    /// Block height.
    pub height: u64,
    /// The closing transaction.
    pub tx_hash: String,
    /// Who got it back.
    pub owner: String,
    /// The deployment.
    pub dseq: u64,
    /// Amount (may be 0).
    pub amount: u128,
    /// Denomination.
    pub denom: String,
}

/// A decoded, structurally valid transaction.
#[derive(Debug, Clone)]
pub struct DecodedTx {
    /// Hash of the bytes.
    pub hash: String,
    /// Encoded size.
    pub size: usize,
    /// Its messages, decoded by the simulator's own message types.
    pub messages: Vec<ChainMessage>,
    /// Memo.
    pub memo: String,
    /// Signer address (every message's signer).
    pub signer: String,
    /// Signed sequence.
    pub sequence: u64,
    /// Public key in the signer info, if any.
    pub pub_key: Option<Vec<u8>>,
    /// Fee in the chain denom.
    pub fee: u128,
    /// `AuthInfo.fee.granter`: who pays the fee through a fee allowance (none: the
    /// signer pays).
    pub fee_granter: Option<String>,
    /// Gas limit.
    pub gas_limit: u64,
    /// The signature.
    pub signature: Vec<u8>,
    body_bytes: Vec<u8>,
    auth_info_bytes: Vec<u8>,
}

impl DecodedTx {
    /// What its messages take from the signer's balance in `denom`, fee excluded.
    pub fn spend(&self, denom: &str) -> u128 {
        self.messages.iter().fold(0u128, |sum, message| {
            sum.saturating_add(message.spend_by(&self.signer, denom))
        })
    }

    /// Who pays the fee: the fee granter when there is one, else the signer.
    pub fn fee_payer(&self) -> &str {
        self.fee_granter.as_deref().unwrap_or(&self.signer)
    }

    /// How many messages it counts for gas (an exec's inner messages included).
    pub fn weight(&self) -> usize {
        self.messages.iter().map(ChainMessage::weight).sum()
    }
}

/// A transaction in a block.
#[derive(Debug, Clone)]
pub struct TxRecord {
    /// The transaction.
    pub tx: DecodedTx,
    /// Block height.
    pub height: u64,
    /// Block time.
    pub timestamp: DateTime<Utc>,
    /// Result.
    pub result: TxCode,
    /// Gas used.
    pub gas_used: u64,
}

/// Answer of `check_tx`.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// Hash of the bytes (also for rejected ones).
    pub hash: String,
    /// 0 when accepted into the mempool.
    pub result: TxCode,
    /// Gas limit of the transaction (0 if it could not be decoded).
    pub gas_wanted: u64,
    /// Gas the checks used.
    pub gas_used: u64,
}

/// The in-memory chain.
#[derive(Debug)]
pub struct Chain {
    /// Chain id.
    pub chain_id: String,
    /// The staking/fee/escrow denomination.
    pub denom: String,
    /// Fees must be at least `gas limit × this`.
    pub min_gas_price: GasPrice,
    /// The smallest deposit `MsgCreateDeployment` may carry (chain denom).
    pub min_deposit: u128,
    /// Latest block height.
    pub height: u64,
    /// Latest block time.
    pub block_time: DateTime<Utc>,
    /// Accounts by address.
    pub accounts: BTreeMap<String, Account>,
    /// Deployments by (owner, dseq).
    pub deployments: BTreeMap<(String, u64), Deployment>,
    /// Simulated providers by address.
    pub providers: BTreeMap<String, SimulatedProvider>,
    /// Deposits applied, in order.
    pub deposits: Vec<DepositRecord>,
    /// Escrow refunds of closed deployments, in order.
    pub refunds: Vec<RefundRecord>,
    /// Broadcasts of a transaction already in the mempool or a block (answered "tx
    /// already exists in cache"): what a client re-sending the same bytes causes.
    pub duplicate_broadcasts: u64,
    /// Admin credits made with a reference (`POST /simulator/accounts` with
    /// `"reference"`), by reference: a second credit with the same reference is
    /// answered from here and moves nothing (how the route simulator delivers each
    /// swap exactly once, even across its own restarts).
    pub referenced_credits: BTreeMap<String, ReferencedCredit>,
    /// AuthZ grants by `(granter, grantee, msg type URL)`.
    pub grants: BTreeMap<(String, String, String), AuthzGrant>,
    /// Fee allowances by `(granter, grantee)`.
    pub allowances: BTreeMap<(String, String), FeeAllowance>,
    /// How far the simulator's clock is ahead of the wall clock
    /// (`POST /simulator/clock`): blocks are stamped with the wall clock plus this.
    pub clock_offset: chrono::TimeDelta,
    next_account_number: u64,
    mempool: Vec<DecodedTx>,
    txs: HashMap<String, TxRecord>,
    /// Hashes of the committed transactions in block order.
    committed: Vec<String>,
}

/// One admin credit made with a reference (see [`Chain::fund_once`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedCredit {
    /// Credited address.
    pub address: String,
    /// Amount credited.
    pub amount: u128,
    /// Its denomination.
    pub denom: String,
    /// Height at which it was credited.
    pub height: u64,
}

/// The numbers an "insufficient funds" refusal of a transaction's messages reports:
/// what the signer could spend when the transaction started and what it all costs.
#[derive(Debug, Clone, Copy)]
struct Funds {
    spendable: u128,
    needed: u128,
}

/// What a transaction's messages may change, saved before they run so a failing
/// message (or a trial at broadcast) leaves nothing behind.
struct Snapshot {
    accounts: Vec<(String, Option<Account>)>,
    deployments: Vec<((String, u64), Option<Deployment>)>,
    deposits: usize,
    refunds: usize,
    grants: BTreeMap<(String, String, String), AuthzGrant>,
    allowances: BTreeMap<(String, String), FeeAllowance>,
    next_account_number: u64,
}

impl Chain {
    /// A chain at height 1 with nothing in it (minimum deposit:
    /// [`DEFAULT_MIN_DEPOSIT_UAKT`]).
    pub fn new(chain_id: &str, denom: &str, min_gas_price: GasPrice, now: DateTime<Utc>) -> Self {
        Self {
            chain_id: chain_id.to_owned(),
            denom: denom.to_owned(),
            min_gas_price,
            min_deposit: DEFAULT_MIN_DEPOSIT_UAKT,
            height: 1,
            block_time: now,
            accounts: BTreeMap::new(),
            deployments: BTreeMap::new(),
            providers: BTreeMap::new(),
            deposits: Vec::new(),
            refunds: Vec::new(),
            duplicate_broadcasts: 0,
            referenced_credits: BTreeMap::new(),
            grants: BTreeMap::new(),
            allowances: BTreeMap::new(),
            clock_offset: chrono::TimeDelta::zero(),
            next_account_number: 1,
            mempool: Vec::new(),
            txs: HashMap::new(),
            committed: Vec::new(),
        }
    }

    /// Adds `amount` of `denom` to `address`, creating the account on first funding.
    pub fn fund(&mut self, address: &str, amount: u128, denom: &str) -> &Account {
        let account = self.account_entry(address);
        *account.balances.entry(denom.to_owned()).or_insert(0) += amount;
        account
    }

    /// Credits `amount` of `denom` to `address` once per `reference`: the first call
    /// funds and records it; a later call with the same reference funds nothing and
    /// returns the first credit with `false` (whatever amount it asks for now).
    pub fn fund_once(
        &mut self,
        reference: &str,
        address: &str,
        amount: u128,
        denom: &str,
    ) -> (ReferencedCredit, bool) {
        if let Some(earlier) = self.referenced_credits.get(reference) {
            return (earlier.clone(), false);
        }
        self.fund(address, amount, denom);
        let credit = ReferencedCredit {
            address: address.to_owned(),
            amount,
            denom: denom.to_owned(),
            height: self.height,
        };
        self.referenced_credits
            .insert(reference.to_owned(), credit.clone());
        (credit, true)
    }

    fn account_entry(&mut self, address: &str) -> &mut Account {
        let next = &mut self.next_account_number;
        self.accounts.entry(address.to_owned()).or_insert_with(|| {
            let account_number = *next;
            *next += 1;
            Account {
                address: address.to_owned(),
                account_number,
                sequence: 0,
                balances: BTreeMap::new(),
                pub_key: None,
                check_sequence: 0,
                reserved: 0,
            }
        })
    }

    /// Moves the simulator's clock forward by `by` (an admin facility, not a chain
    /// feature): the next blocks are stamped that much later, so grants and
    /// allowances expire sooner in wall-clock terms. The latest block keeps its time.
    pub fn advance_clock(&mut self, by: chrono::TimeDelta) {
        self.clock_offset += by;
    }

    /// Registers a simulated provider, or replaces the settings of one registered
    /// before (answers `true` then). Its bids on orders already open follow its new
    /// settings; bids it placed stay as they are.
    pub fn register_provider(&mut self, provider: SimulatedProvider) -> bool {
        self.providers
            .insert(provider.address.clone(), provider)
            .is_some()
    }

    /// Creates a deployment (admin API): leases with [`SIMULATED_PROVIDER`], no
    /// groups, orders or bids, no funds taken from anyone.
    pub fn create_deployment(&mut self, new: NewDeployment) -> Result<&Deployment, String> {
        let dseq = match new.dseq {
            Some(dseq) => dseq,
            None => (self.height..)
                .find(|dseq| !self.deployments.contains_key(&(new.owner.clone(), *dseq)))
                .expect("a free dseq"),
        };
        let key = (new.owner.clone(), dseq);
        if self.deployments.contains_key(&key) {
            return Err(format!("deployment {}/{dseq} already exists", new.owner));
        }
        let prices = new
            .lease_prices
            .iter()
            .map(|price| {
                Dec::from_whole(*price).ok_or_else(|| format!("lease price {price} is too large"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.account_entry(&new.owner);
        let state = if new.closed {
            DeploymentState::Closed
        } else {
            DeploymentState::Active
        };
        let leases = prices
            .into_iter()
            .enumerate()
            .map(|(i, price)| Lease {
                gseq: 1,
                oseq: i as u32 + 1,
                provider: SIMULATED_PROVIDER.to_owned(),
                bseq: 0,
                price,
                state,
                created_at: self.height,
                closed_on: if new.closed { self.height } else { 0 },
            })
            .collect();
        let deployment = Deployment {
            owner: new.owner,
            dseq,
            state,
            hash: Vec::new(),
            escrow: new.escrow,
            initial_deposit: new.escrow,
            transferred: 0,
            refunded: 0,
            created_at: self.height,
            settled_at: self.height,
            closed_at: new.closed.then_some(self.height),
            groups: Vec::new(),
            orders: Vec::new(),
            bids: Vec::new(),
            leases,
            owed_atto: 0,
        };
        Ok(self.deployments.entry(key).or_insert(deployment))
    }

    /// A committed transaction by hash (upper-case hex).
    pub fn tx(&self, hash: &str) -> Option<&TxRecord> {
        self.txs.get(hash)
    }

    /// Number of committed transactions.
    pub fn tx_count(&self) -> usize {
        self.txs.len()
    }

    /// The committed transactions in block order.
    pub fn committed_txs(&self) -> impl Iterator<Item = &TxRecord> {
        self.committed.iter().filter_map(|hash| self.txs.get(hash))
    }

    /// Number of transactions waiting for the next block.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    fn known(&self, hash: &str) -> bool {
        self.txs.contains_key(hash) || self.mempool.iter().any(|tx| tx.hash == hash)
    }

    /// Broadcast in sync mode: checks the transaction and, if it passes, puts it in
    /// the mempool.
    pub fn check_tx(&mut self, bytes: &[u8]) -> CheckOutcome {
        let hash = tx_hash(bytes);
        let reject = |result: TxCode, gas_wanted: u64| CheckOutcome {
            hash: hash.clone(),
            result,
            gas_wanted,
            gas_used: 0,
        };
        if self.known(&hash) {
            self.duplicate_broadcasts += 1;
            return reject(TxCode::sdk(19, "tx already exists in cache"), 0);
        }
        let tx = match decode(bytes, &self.denom) {
            Ok(tx) => tx,
            Err(code) => return reject(code, 0),
        };
        let gas_used = gas_needed(tx.size, tx.weight());
        if let Err(code) = self.ante(&tx, gas_used, true) {
            return reject(code, tx.gas_limit);
        }
        if let Err(code) = self.trial(&tx) {
            return reject(code, tx.gas_limit);
        }
        let spend = tx.spend(&self.denom);
        let account = self
            .accounts
            .get_mut(&tx.signer)
            .expect("ante checked the account");
        account.check_sequence += 1;
        account.reserved = account.reserved.saturating_add(spend);
        if account.pub_key.is_none() {
            account.pub_key = tx.pub_key.clone();
        }
        let payer = self
            .accounts
            .get_mut(tx.fee_payer())
            .expect("ante checked the fee payer");
        payer.reserved = payer.reserved.saturating_add(tx.fee);
        let gas_wanted = tx.gas_limit;
        self.mempool.push(tx);
        CheckOutcome {
            hash,
            result: TxCode::ok(),
            gas_wanted,
            gas_used,
        }
    }

    /// `POST /simulate`: runs every check but the signature against the check state
    /// and returns the gas the transaction would use. The state is left as it was.
    pub fn simulate(&mut self, bytes: &[u8]) -> Result<u64, String> {
        let tx = decode(bytes, &self.denom).map_err(|code| code.log)?;
        let account = self
            .accounts
            .get(&tx.signer)
            .ok_or_else(|| format!("account {} not found: unknown address", tx.signer))?;
        if tx.sequence != account.check_sequence {
            return Err(format!(
                "account sequence mismatch, expected {}, got {}: incorrect account sequence",
                account.check_sequence, tx.sequence
            ));
        }
        self.trial(&tx).map_err(|code| code.log)?;
        let missing_signature = if tx.signature.is_empty() {
            SIMULATED_SIGNATURE_GAS
        } else {
            0
        };
        Ok(gas_needed(tx.size, tx.weight()) + missing_signature)
    }

    /// The ante handler's checks. `check_state` selects the mempool view (sequence and
    /// reservations) over the committed one.
    fn ante(&self, tx: &DecodedTx, gas_used: u64, check_state: bool) -> Result<(), TxCode> {
        if gas_used > tx.gas_limit {
            return Err(TxCode::sdk(
                11,
                format!(
                    "out of gas in location: txSize; gasWanted: {}, gasUsed: {gas_used}: out of gas",
                    tx.gas_limit
                ),
            ));
        }
        let required = self.min_gas_price.min_fee(tx.gas_limit);
        if tx.fee < required {
            return Err(TxCode::sdk(
                13,
                format!(
                    "insufficient fees; got: {}{denom} required: {required}{denom}: insufficient fee",
                    tx.fee,
                    denom = self.denom
                ),
            ));
        }
        let account = self.accounts.get(&tx.signer).ok_or_else(|| {
            TxCode::sdk(
                9,
                format!("account {} not found: unknown address", tx.signer),
            )
        })?;
        let payer = tx.fee_payer();
        if payer != tx.signer {
            self.check_allowance(payer, &tx.signer, tx.fee)?;
        }
        let payer_account = self.accounts.get(payer).ok_or_else(|| {
            TxCode::sdk(
                9,
                format!("fee payer address: {payer} does not exist: unknown address"),
            )
        })?;
        let spendable = self.spendable(payer_account, check_state);
        if tx.fee > spendable {
            return Err(TxCode::sdk(
                5,
                format!(
                    "insufficient funds to pay for fees; {spendable}{denom} < {}{denom}: insufficient funds",
                    tx.fee,
                    denom = self.denom
                ),
            ));
        }
        let pub_key = tx
            .pub_key
            .as_ref()
            .or(account.pub_key.as_ref())
            .ok_or_else(|| TxCode::sdk(8, "pubkey on account is not set: invalid pubkey"))?;
        let verifying_key = VerifyingKey::from_sec1_bytes(pub_key)
            .map_err(|_| TxCode::sdk(8, "invalid secp256k1 public key: invalid pubkey"))?;
        let derived = cosmrs::crypto::PublicKey::from(verifying_key)
            .account_id(ACCOUNT_PREFIX)
            .map_err(|_| TxCode::sdk(8, "cannot derive an address: invalid pubkey"))?;
        if derived.as_ref() != tx.signer {
            return Err(TxCode::sdk(
                8,
                format!(
                    "pubKey does not match signer address {} with signer index: 0: invalid pubkey",
                    tx.signer
                ),
            ));
        }
        let expected = if check_state {
            account.check_sequence
        } else {
            account.sequence
        };
        if tx.sequence != expected {
            return Err(TxCode::sdk(
                32,
                format!(
                    "account sequence mismatch, expected {expected}, got {}: incorrect account sequence",
                    tx.sequence
                ),
            ));
        }
        let sign_doc = SignDoc {
            body_bytes: tx.body_bytes.clone(),
            auth_info_bytes: tx.auth_info_bytes.clone(),
            chain_id: self.chain_id.clone(),
            account_number: account.account_number,
        }
        .encode_to_vec();
        let verified = Signature::from_slice(&tx.signature)
            .ok()
            .is_some_and(|signature| verifying_key.verify(&sign_doc, &signature).is_ok());
        if !verified {
            return Err(TxCode::sdk(
                4,
                format!(
                    "signature verification failed; please verify account number ({}) and chain-id ({}): unauthorized",
                    account.account_number, self.chain_id
                ),
            ));
        }
        Ok(())
    }

    fn spendable(&self, account: &Account, check_state: bool) -> u128 {
        let balance = account.balances.get(&self.denom).copied().unwrap_or(0);
        if check_state {
            balance.saturating_sub(account.reserved)
        } else {
            balance
        }
    }

    fn insufficient_funds(&self, funds: Funds) -> TxCode {
        TxCode::sdk(
            5,
            format!(
                "spendable balance {spendable}{denom} is smaller than {needed}{denom}: insufficient funds",
                spendable = funds.spendable,
                needed = funds.needed,
                denom = self.denom
            ),
        )
    }

    /// Saves what the messages of `txs` may change: the accounts they name (signers,
    /// fee payers, deployment owners, granters, grantees, recipients) and those of
    /// every granter holding a grant (a grant-funded deposit takes from them), the
    /// deployments they name, the grants and allowances, the lengths of the records.
    fn snapshot<'a>(&self, txs: impl IntoIterator<Item = &'a DecodedTx>) -> Snapshot {
        let mut addresses: BTreeSet<String> = self
            .grants
            .keys()
            .map(|(granter, _, _)| granter.clone())
            .collect();
        let mut keys = BTreeSet::new();
        for tx in txs {
            addresses.insert(tx.signer.clone());
            addresses.insert(tx.fee_payer().to_owned());
            for message in &tx.messages {
                addresses.extend(message.addresses());
                for key in message.deployment_keys() {
                    addresses.insert(key.0.clone());
                    keys.insert(key);
                }
            }
        }
        Snapshot {
            accounts: addresses
                .into_iter()
                .map(|address| {
                    let saved = self.accounts.get(&address).cloned();
                    (address, saved)
                })
                .collect(),
            deployments: keys
                .into_iter()
                .map(|key| {
                    let saved = self.deployments.get(&key).cloned();
                    (key, saved)
                })
                .collect(),
            deposits: self.deposits.len(),
            refunds: self.refunds.len(),
            grants: self.grants.clone(),
            allowances: self.allowances.clone(),
            next_account_number: self.next_account_number,
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        for (address, saved) in snapshot.accounts {
            match saved {
                Some(account) => self.accounts.insert(address, account),
                None => self.accounts.remove(&address),
            };
        }
        for (key, saved) in snapshot.deployments {
            match saved {
                Some(deployment) => self.deployments.insert(key, deployment),
                None => self.deployments.remove(&key),
            };
        }
        self.deposits.truncate(snapshot.deposits);
        self.refunds.truncate(snapshot.refunds);
        self.grants = snapshot.grants;
        self.allowances = snapshot.allowances;
        self.next_account_number = snapshot.next_account_number;
    }

    /// Runs `tx`'s fee and messages against the check state (the committed state
    /// with every transaction of the mempool applied in order, as the next block
    /// would) and undoes all of it: what the block would answer, known now. Grants
    /// and allowances are judged by the latest block's time, as CheckTx does.
    fn trial(&mut self, tx: &DecodedTx) -> Result<(), TxCode> {
        let mempool = std::mem::take(&mut self.mempool);
        let snapshot = self.snapshot(mempool.iter().chain(std::iter::once(tx)));
        let height = self.height + 1;
        for pending in &mempool {
            let funds = Funds {
                spendable: 0,
                needed: 0,
            };
            if self.take_fee(pending, funds).is_ok() {
                // A pending transaction that would fail changes nothing, as in the
                // block; its refusal is not this transaction's answer.
                let _ = self.apply_messages(pending, height, funds);
            }
        }
        let spendable = self
            .accounts
            .get(&tx.signer)
            .map_or(0, |account| self.balance(account));
        let own_fee = if tx.fee_payer() == tx.signer {
            tx.fee
        } else {
            0
        };
        let funds = Funds {
            spendable,
            needed: own_fee.saturating_add(tx.spend(&self.denom)),
        };
        let result = match self.take_fee(tx, funds) {
            Ok(()) => self.apply_messages(tx, height, funds),
            Err(code) => Err(code),
        };
        self.restore(snapshot);
        self.mempool = mempool;
        result
    }

    fn balance(&self, account: &Account) -> u128 {
        account.balances.get(&self.denom).copied().unwrap_or(0)
    }

    /// Whether a grant still counts at the current block time: no expiration, or one
    /// after it (the authz module prunes grants whose expiration is at or before the
    /// block time when the block begins).
    fn live(&self, expiration: Option<DateTime<Utc>>) -> bool {
        expiration.is_none_or(|expiration| expiration > self.block_time)
    }

    /// What the fee grant ante step checks before `granter` pays `fee` for
    /// `grantee`: an allowance exists (`feegrant` 5), has not expired (3) and its
    /// spend limit covers the fee (2). Wrapped as the SDK wraps them.
    fn check_allowance(&self, granter: &str, grantee: &str, fee: u128) -> Result<(), TxCode> {
        let context = format!("{granter} does not allow to pay fees for {grantee}");
        let allowance = self
            .allowances
            .get(&(granter.to_owned(), grantee.to_owned()))
            .ok_or_else(|| {
                TxCode::new(
                    "feegrant",
                    5,
                    format!("{context}: fee-grant not found: no allowance"),
                )
            })?;
        if allowance
            .expiration
            .is_some_and(|expiration| expiration < self.block_time)
        {
            return Err(TxCode::new(
                "feegrant",
                3,
                format!("{context}: basic allowance: fee allowance expired"),
            ));
        }
        let left = allowance.spend_limit.get(&self.denom).copied().unwrap_or(0);
        if !allowance.spend_limit.is_empty() && fee > left {
            return Err(TxCode::new(
                "feegrant",
                2,
                format!(
                    "{context}: basic allowance: fee limit exceeded ({fee}{denom} > {left}{denom} left)",
                    denom = self.denom
                ),
            ));
        }
        Ok(())
    }

    /// Takes the fee from the payer: through the allowance when a fee granter pays
    /// for the signer (its spend limit shrinks; an allowance spent to zero is
    /// removed, as `BasicAllowance.Accept` answers), then from the payer's balance.
    /// `funds` words the refusal when the signer pays and cannot.
    fn take_fee(&mut self, tx: &DecodedTx, funds: Funds) -> Result<(), TxCode> {
        let payer = tx.fee_payer().to_owned();
        if payer != tx.signer {
            self.check_allowance(&payer, &tx.signer, tx.fee)?;
            let key = (payer.clone(), tx.signer.clone());
            let allowance = self.allowances.get_mut(&key).expect("checked above");
            if !allowance.spend_limit.is_empty() && tx.fee > 0 {
                let left = allowance
                    .spend_limit
                    .get_mut(&self.denom)
                    .expect("checked above");
                *left -= tx.fee;
                if *left == 0 {
                    allowance.spend_limit.remove(&self.denom);
                    if allowance.spend_limit.is_empty() {
                        self.allowances.remove(&key);
                    }
                }
            }
        }
        let denom = self.denom.clone();
        let balance = self
            .accounts
            .get_mut(&payer)
            .and_then(|account| account.balances.get_mut(&denom));
        match balance {
            Some(balance) if *balance >= tx.fee => {
                *balance -= tx.fee;
                Ok(())
            }
            _ if tx.fee == 0 => Ok(()),
            balance if payer != tx.signer => Err(TxCode::sdk(
                5,
                format!(
                    "insufficient funds to pay for fees; {}{denom} < {}{denom}: insufficient funds",
                    balance.map_or(0, |b| *b),
                    tx.fee
                ),
            )),
            _ => Err(self.insufficient_funds(funds)),
        }
    }

    /// Takes `amount` from `address`'s balance for a message.
    fn debit(&mut self, address: &str, amount: u128, funds: Funds) -> Result<(), TxCode> {
        let refusal = self.insufficient_funds(funds);
        let denom = self.denom.clone();
        let account = self.accounts.get_mut(address).ok_or_else(|| {
            TxCode::sdk(9, format!("account {address} not found: unknown address"))
        })?;
        let balance = account.balances.entry(denom).or_insert(0);
        if *balance < amount {
            return Err(refusal);
        }
        *balance -= amount;
        Ok(())
    }

    /// Runs a transaction's messages in order, all or nothing: when one fails, the
    /// state is put back as it was before the first.
    fn apply_messages(&mut self, tx: &DecodedTx, height: u64, funds: Funds) -> Result<(), TxCode> {
        let snapshot = self.snapshot(std::iter::once(tx));
        for message in &tx.messages {
            if let Err(code) = self.apply_message(message, tx, height, funds) {
                self.restore(snapshot);
                return Err(code);
            }
        }
        Ok(())
    }

    /// Runs one message; `funds` are the numbers of its signer, for an
    /// insufficient-funds refusal.
    fn apply_message(
        &mut self,
        message: &ChainMessage,
        tx: &DecodedTx,
        height: u64,
        funds: Funds,
    ) -> Result<(), TxCode> {
        match message {
            ChainMessage::Deposit(deposit, source) => {
                self.apply_deposit(deposit, *source, tx, height, funds)
            }
            ChainMessage::CreateDeployment(create) => {
                self.apply_create_deployment(create, height, funds)
            }
            ChainMessage::CloseDeployment(close) => self.apply_close_deployment(close, tx, height),
            ChainMessage::CreateLease(bid) => self.apply_create_lease(bid, height),
            ChainMessage::Grant(grant) => self.apply_grant(grant),
            ChainMessage::Revoke(revoke) => self.apply_revoke(revoke),
            ChainMessage::Exec(exec) => self.apply_exec(exec, tx, height),
            ChainMessage::GrantAllowance(allowance) => self.apply_grant_allowance(allowance),
            ChainMessage::RevokeAllowance(allowance) => self.apply_revoke_allowance(allowance),
            ChainMessage::Send(send) => self.apply_send(send),
        }
    }

    /// `MsgGrant`: the authorized type must have a handler (`sdk` 29), the expiration
    /// be after the block time (`authz` 3). The grantee's account is created if it has
    /// none; a grant for the same granter, grantee and message type replaces the
    /// previous one.
    fn apply_grant(&mut self, grant: &GrantRequest) -> Result<(), TxCode> {
        let msg_type = grant.authorization.msg_type_url().to_owned();
        if !routed(&msg_type) {
            return Err(TxCode::sdk(
                29,
                format!("{msg_type} doesn't exist.: invalid type"),
            ));
        }
        if let Some(expiration) = grant.expiration {
            if expiration <= self.block_time {
                return Err(TxCode::new(
                    "authz",
                    3,
                    format!(
                        "expiration must be after the current block time ({}), got {}: expiration time of authorization should be more than current time",
                        rfc3339(self.block_time),
                        rfc3339(expiration)
                    ),
                ));
            }
        }
        self.account_entry(&grant.grantee);
        self.grants.insert(
            (grant.granter.clone(), grant.grantee.clone(), msg_type),
            AuthzGrant {
                authorization: grant.authorization.clone(),
                expiration: grant.expiration,
            },
        );
        Ok(())
    }

    /// `MsgRevoke`: the grant must exist (`authz` 2).
    fn apply_revoke(&mut self, revoke: &RevokeRequest) -> Result<(), TxCode> {
        let key = (
            revoke.granter.clone(),
            revoke.grantee.clone(),
            revoke.msg_type_url.clone(),
        );
        match self.grants.remove(&key) {
            Some(_) => Ok(()),
            None => Err(TxCode::new(
                "authz",
                2,
                format!(
                    "failed to delete grant of {} to {} for {}: authorization not found",
                    revoke.granter, revoke.grantee, revoke.msg_type_url
                ),
            )),
        }
    }

    /// `MsgExec`, as the authz keeper's `DispatchActions`: for each message whose
    /// signer (the granter) is not the grantee, a grant for its type that has not
    /// expired (`authz` 2 "authorization not found" otherwise), accepted by its
    /// authorization; then the message runs as if the granter had signed it. A
    /// failure anywhere fails the whole transaction.
    fn apply_exec(
        &mut self,
        exec: &ExecRequest,
        tx: &DecodedTx,
        height: u64,
    ) -> Result<(), TxCode> {
        let mut funds = BTreeMap::new();
        for inner in &exec.msgs {
            let signer = inner.signer().to_owned();
            if let std::collections::btree_map::Entry::Vacant(entry) = funds.entry(signer) {
                let signer = entry.key();
                let spendable = self
                    .accounts
                    .get(signer)
                    .map_or(0, |account| self.balance(account));
                let needed = exec.msgs.iter().fold(0u128, |sum, m| {
                    sum.saturating_add(m.spend_by(signer, &self.denom))
                });
                entry.insert(Funds { spendable, needed });
            }
        }
        for inner in &exec.msgs {
            let granter = inner.signer();
            if granter != exec.grantee {
                self.accept_grant(granter, &exec.grantee, inner)?;
            }
            self.apply_message(inner, tx, height, funds[granter])?;
        }
        Ok(())
    }

    /// Finds the grant `granter` → `grantee` for `inner`'s type and asks its
    /// authorization: a `GenericAuthorization` accepts; a `DepositAuthorization`
    /// (only for `MsgAccountDeposit`) wants the deployment scope (`escrow` 15), the
    /// spend limit's denomination (`sdk` 4) and an amount within the limit (`sdk` 5),
    /// which then shrinks by it; a grant spent to zero is deleted, as authz does with
    /// an authorization that answers `Delete`.
    fn accept_grant(
        &mut self,
        granter: &str,
        grantee: &str,
        inner: &ChainMessage,
    ) -> Result<(), TxCode> {
        let type_url = inner.type_url();
        let key = (granter.to_owned(), grantee.to_owned(), type_url.to_owned());
        let found = self
            .grants
            .get(&key)
            .filter(|grant| self.live(grant.expiration))
            .cloned()
            .ok_or_else(|| {
                TxCode::new(
                    "authz",
                    2,
                    format!(
                        "failed to get grant with given granter: {granter}, grantee: {grantee} & msgType: {type_url} : authorization not found"
                    ),
                )
            })?;
        let Authorization::Deposit {
            spend_limit,
            denom,
            scopes,
        } = found.authorization
        else {
            return Ok(());
        };
        let ChainMessage::Deposit(deposit, _) = inner else {
            return Err(TxCode::sdk(
                29,
                format!(
                    "\"{type_url}\" is unsupported authorization msg for deposit: invalid type"
                ),
            ));
        };
        if !scopes.contains(&DEPOSIT_SCOPE_DEPLOYMENT) {
            return Err(TxCode::new(
                "escrow",
                15,
                "the grant does not cover the deployment scope: unauthorized deposit scope",
            ));
        }
        if denom != deposit.denom {
            return Err(TxCode::sdk(
                4,
                format!(
                    "the grant's spend limit is in {denom}, the deposit in {}: unauthorized",
                    deposit.denom
                ),
            ));
        }
        if deposit.amount > spend_limit {
            return Err(TxCode::sdk(
                5,
                format!(
                    "deposit {}{denom} exceeds the grant's spend limit {spend_limit}{denom}: insufficient funds",
                    deposit.amount
                ),
            ));
        }
        let left = spend_limit - deposit.amount;
        if left == 0 {
            self.grants.remove(&key);
        } else if let Some(grant) = self.grants.get_mut(&key) {
            grant.authorization = Authorization::Deposit {
                spend_limit: left,
                denom,
                scopes,
            };
        }
        Ok(())
    }

    /// A `[grant]` deposit, as Akash's escrow keeper (`AuthorizeDeposits`) funds it:
    /// the `DepositAuthorization`s granted *to the signer* (any granter, in the order
    /// of the granters' address bytes), skipping expired ones, those spent to zero,
    /// without the deployment scope or in another denomination; each pays what it
    /// can until the amount is covered, its spend limit shrinking by that (a grant
    /// spent to zero is kept with a zero limit: the keeper ignores `Delete` here). Not
    /// covered: `market` 28 "deposit invalid: insufficient balance" (the error the
    /// keeper wraps is the market module's) and nothing moves. Then each granter's
    /// balance pays its part (`sdk` 5 if it cannot).
    fn fund_from_grants(
        &mut self,
        deposit: &DepositRequest,
    ) -> Result<Vec<(String, u128)>, TxCode> {
        let msg_type = DepositMessage::AccountDeposit.type_url();
        let mut candidates: Vec<(Vec<u8>, (String, String, String))> = self
            .grants
            .iter()
            .filter(|((_, grantee, msg), grant)| {
                grantee == &deposit.signer && msg == msg_type && self.live(grant.expiration)
            })
            .map(|(key, _)| {
                let bytes = key
                    .0
                    .parse::<cosmrs::AccountId>()
                    .map(|id| id.to_bytes())
                    .unwrap_or_else(|_| key.0.as_bytes().to_vec());
                (bytes, key.clone())
            })
            .collect();
        candidates.sort();
        let mut remainder = deposit.amount;
        let mut takes = Vec::new();
        for (_, key) in candidates {
            if remainder == 0 {
                break;
            }
            let grant = self.grants.get_mut(&key).expect("listed above");
            let Authorization::Deposit {
                spend_limit,
                denom,
                scopes,
            } = &mut grant.authorization
            else {
                continue;
            };
            if *spend_limit == 0
                || !scopes.contains(&DEPOSIT_SCOPE_DEPLOYMENT)
                || *denom != deposit.denom
            {
                continue;
            }
            let take = (*spend_limit).min(remainder);
            *spend_limit -= take;
            remainder -= take;
            takes.push((key.0, take));
        }
        if remainder > 0 {
            return Err(TxCode::new(
                "market",
                28,
                format!(
                    "deposit invalid: insufficient balance (the deposit grants to {} cover {}{denom} of {}{denom})",
                    deposit.signer,
                    deposit.amount - remainder,
                    deposit.amount,
                    denom = deposit.denom
                ),
            ));
        }
        for (granter, take) in &takes {
            let spendable = self
                .accounts
                .get(granter)
                .map_or(0, |account| self.balance(account));
            let funds = Funds {
                spendable,
                needed: *take,
            };
            self.debit(granter, *take, funds)?;
        }
        Ok(takes)
    }

    /// `MsgGrantAllowance`: none may exist for the pair yet (`sdk` 18 "fee allowance
    /// already exists"; unlike authz grants, allowances are not replaced), the
    /// expiration not before the block time (`sdk` 18). The grantee's account is
    /// created if it has none.
    fn apply_grant_allowance(&mut self, allowance: &AllowanceRequest) -> Result<(), TxCode> {
        let key = (allowance.granter.clone(), allowance.grantee.clone());
        if self.allowances.contains_key(&key) {
            return Err(TxCode::sdk(
                18,
                "fee allowance already exists: invalid request",
            ));
        }
        if allowance
            .expiration
            .is_some_and(|expiration| expiration < self.block_time)
        {
            return Err(TxCode::sdk(
                18,
                "expiration is before current block time: invalid request",
            ));
        }
        self.account_entry(&allowance.grantee);
        self.allowances.insert(
            key,
            FeeAllowance {
                spend_limit: allowance.spend_limit.clone(),
                expiration: allowance.expiration,
            },
        );
        Ok(())
    }

    /// `MsgRevokeAllowance`: the allowance must exist (`feegrant` 5).
    fn apply_revoke_allowance(&mut self, allowance: &AllowanceRef) -> Result<(), TxCode> {
        let key = (allowance.granter.clone(), allowance.grantee.clone());
        match self.allowances.remove(&key) {
            Some(_) => Ok(()),
            None => Err(TxCode::new(
                "feegrant",
                5,
                "fee-grant not found: no allowance",
            )),
        }
    }

    /// `MsgSend`: the sender's balance must hold every coin (`sdk` 5, worded as the
    /// bank module words it); the recipient's account is created if it has none.
    fn apply_send(&mut self, send: &SendRequest) -> Result<(), TxCode> {
        for (denom, amount) in &send.amount {
            let have = self
                .accounts
                .get(&send.from)
                .and_then(|account| account.balances.get(denom))
                .copied()
                .unwrap_or(0);
            if have < *amount {
                return Err(TxCode::sdk(
                    5,
                    format!(
                        "spendable balance {have}{denom} is smaller than {amount}{denom}: insufficient funds"
                    ),
                ));
            }
        }
        for (denom, amount) in &send.amount {
            let from = self.accounts.get_mut(&send.from).expect("checked above");
            *from.balances.get_mut(denom).expect("checked above") -= amount;
            *self
                .account_entry(&send.to)
                .balances
                .entry(denom.clone())
                .or_insert(0) += amount;
        }
        Ok(())
    }

    /// A deposit: a known, open deployment, the chain denom, the funds: the signer's
    /// balance, or for `[grant]` the deposit grants to the signer
    /// ([`Chain::fund_from_grants`]).
    fn apply_deposit(
        &mut self,
        deposit: &DepositRequest,
        source: DepositSource,
        tx: &DecodedTx,
        height: u64,
        funds: Funds,
    ) -> Result<(), TxCode> {
        let xid = format!("{}/{}", deposit.owner, deposit.dseq);
        if deposit.denom != self.denom {
            return Err(TxCode::module(
                deposit.message,
                5,
                20,
                format!(
                    "deposit denomination {} is not {}: invalid denomination",
                    deposit.denom, self.denom
                ),
            ));
        }
        match self.deployments.get(&(deposit.owner.clone(), deposit.dseq)) {
            None => {
                return Err(TxCode::module(
                    deposit.message,
                    3,
                    4,
                    format!("deployment {xid} not found: escrow account not found"),
                ))
            }
            Some(deployment) if deployment.state == DeploymentState::Closed => {
                return Err(TxCode::module(
                    deposit.message,
                    2,
                    5,
                    format!("deployment {xid} is closed: escrow account closed"),
                ))
            }
            Some(_) => {}
        }
        let funded_by = match source {
            DepositSource::Balance => {
                self.debit(&deposit.signer, deposit.amount, funds)?;
                vec![(deposit.signer.clone(), deposit.amount)]
            }
            DepositSource::Grant => self.fund_from_grants(deposit)?,
        };
        let deployment = self
            .deployments
            .get_mut(&(deposit.owner.clone(), deposit.dseq))
            .expect("checked above");
        deployment.escrow += deposit.amount;
        self.deposits.push(DepositRecord {
            height,
            tx_hash: tx.hash.clone(),
            signer: deposit.signer.clone(),
            owner: deposit.owner.clone(),
            dseq: deposit.dseq,
            amount: deposit.amount,
            denom: deposit.denom.clone(),
            message: deposit.message,
            source,
            funded_by,
        });
        Ok(())
    }

    /// `MsgCreateDeployment`: an unused dseq, a deposit in the chain denom of at
    /// least the minimum, the funds; then the deployment, its groups and one order
    /// per group.
    fn apply_create_deployment(
        &mut self,
        create: &CreateDeploymentRequest,
        height: u64,
        funds: Funds,
    ) -> Result<(), TxCode> {
        let key = (create.owner.clone(), create.dseq);
        let xid = format!("{}/{}", create.owner, create.dseq);
        if self.deployments.contains_key(&key) {
            return Err(TxCode::new(
                "deployment",
                3,
                format!("deployment {xid} already exists: Deployment exists"),
            ));
        }
        if create.denom != self.denom {
            return Err(TxCode::new(
                "deployment",
                20,
                format!(
                    "deposit denomination {} is not {}: Deposit invalid",
                    create.denom, self.denom
                ),
            ));
        }
        if create.deposit < self.min_deposit {
            return Err(TxCode::new(
                "deployment",
                20,
                format!(
                    "deposit {deposit}{denom} is below the minimum {min}{denom}: Deposit invalid",
                    deposit = create.deposit,
                    min = self.min_deposit,
                    denom = self.denom
                ),
            ));
        }
        self.debit(&create.owner, create.deposit, funds)?;
        let gseqs = (1..).take(create.groups.len());
        let groups: Vec<Group> = gseqs
            .clone()
            .zip(&create.groups)
            .map(|(gseq, spec)| Group {
                gseq,
                state: GroupState::Open,
                spec: spec.clone(),
            })
            .collect();
        let orders = gseqs
            .map(|gseq| Order {
                gseq,
                oseq: 1,
                state: OrderState::Open,
                created_at: height,
            })
            .collect();
        self.deployments.insert(
            key,
            Deployment {
                owner: create.owner.clone(),
                dseq: create.dseq,
                state: DeploymentState::Active,
                hash: create.hash.clone(),
                escrow: create.deposit,
                initial_deposit: create.deposit,
                transferred: 0,
                refunded: 0,
                created_at: height,
                settled_at: height,
                closed_at: None,
                groups,
                orders,
                bids: Vec::new(),
                leases: Vec::new(),
                owed_atto: 0,
            },
        );
        Ok(())
    }

    /// `MsgCloseDeployment`: an active deployment; it closes with its market state
    /// and the rest of its escrow goes back to the owner.
    fn apply_close_deployment(
        &mut self,
        close: &DeploymentRef,
        tx: &DecodedTx,
        height: u64,
    ) -> Result<(), TxCode> {
        let xid = format!("{}/{}", close.owner, close.dseq);
        let deployment = self
            .deployments
            .get_mut(&(close.owner.clone(), close.dseq))
            .ok_or_else(|| {
                TxCode::new(
                    "deployment",
                    4,
                    format!("deployment {xid} not found: Deployment not found"),
                )
            })?;
        if deployment.state == DeploymentState::Closed {
            return Err(TxCode::new(
                "deployment",
                5,
                format!("deployment {xid} is closed: Deployment closed"),
            ));
        }
        let refund = deployment.escrow;
        deployment.escrow = 0;
        deployment.refunded += refund;
        deployment.close(height);
        let denom = self.denom.clone();
        *self
            .account_entry(&close.owner)
            .balances
            .entry(denom.clone())
            .or_insert(0) += refund;
        self.refunds.push(RefundRecord {
            height,
            tx_hash: tx.hash.clone(),
            owner: close.owner.clone(),
            dseq: close.dseq,
            amount: refund,
            denom,
        });
        Ok(())
    }

    /// `MsgCreateLease`: an open bid on an open order of an open group; then the
    /// lease at the bid's price, the bid active, the order's other open bids lost.
    fn apply_create_lease(&mut self, bid_ref: &BidRef, height: u64) -> Result<(), TxCode> {
        let BidRef {
            owner,
            dseq,
            gseq,
            oseq,
            provider,
            bseq,
        } = bid_ref;
        let (gseq, oseq, bseq) = (*gseq, *oseq, *bseq);
        let bid_xid = format!("{owner}/{dseq}/{gseq}/{oseq}/{provider}/{bseq}");
        let order_xid = format!("{owner}/{dseq}/{gseq}/{oseq}");
        let not_found = || {
            TxCode::new(
                "market",
                18,
                format!("bid {bid_xid} not found: invalid bid: bid not found"),
            )
        };
        let deployment = self
            .deployments
            .get_mut(&(owner.clone(), *dseq))
            .ok_or_else(not_found)?;
        let bid_index = deployment
            .bids
            .iter()
            .position(|b| {
                b.gseq == gseq && b.oseq == oseq && &b.provider == provider && b.bseq == bseq
            })
            .ok_or_else(not_found)?;
        let bid_state = deployment.bids[bid_index].state;
        if bid_state != BidState::Open {
            return Err(TxCode::new(
                "market",
                12,
                format!("bid {bid_xid} is {}: bid not open", bid_state.as_str()),
            ));
        }
        let order = deployment
            .orders
            .iter_mut()
            .find(|o| o.gseq == gseq && o.oseq == oseq)
            .ok_or_else(|| {
                TxCode::new(
                    "market",
                    15,
                    format!("order {order_xid} not found: invalid order: order not found"),
                )
            })?;
        if order.state != OrderState::Open {
            return Err(TxCode::new(
                "market",
                13,
                format!(
                    "order {order_xid} is {}: bid: order not open",
                    order.state.as_str()
                ),
            ));
        }
        let group_open = deployment
            .groups
            .iter()
            .any(|g| g.gseq == gseq && g.state == GroupState::Open);
        if !group_open {
            return Err(TxCode::new(
                "market",
                17,
                format!("group {owner}/{dseq}/{gseq} is not open: group not open"),
            ));
        }
        let order = deployment
            .orders
            .iter_mut()
            .find(|o| o.gseq == gseq && o.oseq == oseq)
            .expect("found above");
        order.state = OrderState::Active;
        for (index, bid) in deployment.bids.iter_mut().enumerate() {
            if index == bid_index {
                bid.state = BidState::Active;
            } else if bid.gseq == gseq && bid.oseq == oseq && bid.state == BidState::Open {
                bid.state = BidState::Lost;
            }
        }
        let price = deployment.bids[bid_index].price;
        deployment.leases.push(Lease {
            gseq,
            oseq,
            provider: provider.clone(),
            bseq,
            price,
            state: DeploymentState::Active,
            created_at: height,
            closed_on: 0,
        });
        Ok(())
    }

    /// Ends the current block. Escrow is settled first (what the block costs each
    /// active deployment; one that cannot pay closes), then the mempool is applied, so
    /// a deposit checked while its deployment was open can still fail here, as on a
    /// chain where state moves between CheckTx and the block. Last, the simulated
    /// providers bid on the orders that are due.
    ///
    /// The block is stamped `now` (the wall clock) plus [`Chain::clock_offset`], and
    /// never earlier than a microsecond after the previous block. When it begins,
    /// grants that expired by its time are pruned (authz's `BeginBlocker`); when it
    /// ends, so are expired fee allowances (feegrant's `EndBlocker`).
    pub fn produce_block(&mut self, now: DateTime<Utc>) {
        self.height += 1;
        let stamped = now + self.clock_offset;
        self.block_time = if stamped > self.block_time {
            stamped
        } else {
            self.block_time + chrono::TimeDelta::microseconds(1)
        };
        let now = self.block_time;
        let height = self.height;
        self.grants
            .retain(|_, grant| grant.expiration.is_none_or(|expiration| expiration > now));
        for deployment in self.deployments.values_mut() {
            if deployment.state != DeploymentState::Active {
                continue;
            }
            let rate = deployment.rate_per_block();
            if rate.is_zero() {
                continue;
            }
            // Whole base units due this block; what is below one unit is carried.
            let owed = rate.atto().saturating_add(deployment.owed_atto);
            let due = owed / ATTO_PER_UNIT;
            if deployment.escrow >= due {
                deployment.escrow -= due;
                deployment.transferred += due;
                deployment.owed_atto = owed % ATTO_PER_UNIT;
                deployment.settled_at = height;
            } else {
                // Cannot pay for this block: the providers get what is left and the
                // deployment closes, as Akash does with an overdrawn escrow.
                deployment.transferred += deployment.escrow;
                deployment.escrow = 0;
                deployment.close(height);
            }
        }
        for tx in std::mem::take(&mut self.mempool) {
            let gas_used = gas_needed(tx.size, tx.weight());
            let result = self.deliver(&tx, height);
            self.committed.push(tx.hash.clone());
            self.txs.insert(
                tx.hash.clone(),
                TxRecord {
                    tx,
                    height,
                    timestamp: now,
                    result,
                    gas_used,
                },
            );
        }
        self.place_bids(height);
        self.allowances.retain(|_, allowance| {
            allowance
                .expiration
                .is_none_or(|expiration| expiration > now)
        });
        // The mempool is empty now, so the check state is the committed state again
        // (a real node resets it on commit and re-checks what is left).
        for account in self.accounts.values_mut() {
            account.check_sequence = account.sequence;
            account.reserved = 0;
        }
    }

    /// Each simulated provider bids once on every open order that is due for it
    /// (opened at least `bid_delay_blocks` ago) and that it can serve.
    fn place_bids(&mut self, height: u64) {
        for deployment in self.deployments.values_mut() {
            if deployment.state != DeploymentState::Active {
                continue;
            }
            let mut placed = Vec::new();
            for order in &deployment.orders {
                if order.state != OrderState::Open {
                    continue;
                }
                let Some(group) = deployment.groups.iter().find(|g| g.gseq == order.gseq) else {
                    continue;
                };
                for provider in self.providers.values() {
                    let due = order.created_at.saturating_add(provider.bid_delay_blocks) <= height;
                    let already = deployment.bids.iter().any(|bid| {
                        bid.gseq == order.gseq
                            && bid.oseq == order.oseq
                            && bid.provider == provider.address
                    });
                    // A provider cannot bid on its own deployment (the chain refuses
                    // owner == provider).
                    let own = provider.address == deployment.owner;
                    if due && !already && !own && provider.bids_on(&group.spec, &self.denom) {
                        placed.push(Bid {
                            gseq: order.gseq,
                            oseq: order.oseq,
                            provider: provider.address.clone(),
                            bseq: 0,
                            state: BidState::Open,
                            price: provider.price,
                            created_at: height,
                        });
                    }
                }
            }
            deployment.bids.extend(placed);
        }
    }

    /// DeliverTx: the ante handler against committed state (fee and sequence stick
    /// even when a message fails), then the messages, all or nothing.
    fn deliver(&mut self, tx: &DecodedTx, height: u64) -> TxCode {
        let gas_used = gas_needed(tx.size, tx.weight());
        if let Err(code) = self.ante(tx, gas_used, false) {
            // Failing the ante handler in the block changes nothing, not even the fee.
            return code;
        }
        let unused = Funds {
            spendable: 0,
            needed: 0,
        };
        self.take_fee(tx, unused)
            .expect("ante checked the fee allowance and funds");
        let account = self
            .accounts
            .get_mut(&tx.signer)
            .expect("ante checked the account");
        account.sequence += 1;
        if account.pub_key.is_none() {
            account.pub_key = tx.pub_key.clone();
        }
        let spendable = self.balance(&self.accounts[&tx.signer]);
        let funds = Funds {
            spendable,
            needed: tx.spend(&self.denom),
        };
        match self.apply_messages(tx, height, funds) {
            Ok(()) => TxCode::ok(),
            Err(code) => code,
        }
    }
}

/// A transaction's hash as Cosmos nodes name it: SHA-256 of the broadcast bytes, in
/// upper-case hex (what `txhash` answers and `GET /txs/{hash}` looks up).
pub fn tx_hash(tx_bytes: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(tx_bytes))
}

/// Gas a transaction needs: a base cost, its size, its messages, like the SDK's
/// `ConsumeTxSizeGas` + message execution (numbers chosen to land near a real deposit).
pub fn gas_needed(size: usize, messages: usize) -> u64 {
    50_000 + 10 * size as u64 + 20_000 * messages as u64
}

/// A time as the gRPC gateway writes a `Timestamp`: RFC 3339 in UTC with `Z`, with
/// as many fractional digits as needed (none, 3, 6 or 9).
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Gas a simulation adds for a signature it does not have yet (64 bytes at 10 gas).
const SIMULATED_SIGNATURE_GAS: u64 = 640;

/// Decodes a transaction and checks its structure (what `ValidateBasic` and the
/// decoder reject: code 2 for undecodable, 4 for signer mismatches, 18 otherwise).
///
/// Only fee coins of `fee_denom` count: a fee in anything else is a zero fee, which
/// the minimum-fee check then refuses, as on a chain with a single fee denom.
pub fn decode(bytes: &[u8], fee_denom: &str) -> Result<DecodedTx, TxCode> {
    let parse_error = |what: String| TxCode::sdk(2, format!("{what}: tx parse error"));
    let raw = TxRaw::decode(bytes).map_err(|e| parse_error(format!("TxRaw: {e}")))?;
    let body = TxBody::decode(raw.body_bytes.as_slice())
        .map_err(|e| parse_error(format!("TxBody: {e}")))?;
    let auth_info = AuthInfo::decode(raw.auth_info_bytes.as_slice())
        .map_err(|e| parse_error(format!("AuthInfo: {e}")))?;
    if body.messages.is_empty() {
        return Err(TxCode::sdk(
            18,
            "must contain at least one message: invalid request",
        ));
    }
    let mut messages = Vec::new();
    for any in &body.messages {
        let message = decode_message(any).map_err(|error| match error {
            MessageError::UnknownType(text) | MessageError::Undecodable(text) => parse_error(text),
            MessageError::Invalid(text) => TxCode::sdk(18, format!("{text}: invalid request")),
            MessageError::Refused {
                codespace,
                code,
                log,
            } => TxCode::new(codespace, code, log),
        })?;
        messages.push(message);
    }
    let signer = messages[0].signer().to_owned();
    if messages.iter().any(|message| message.signer() != signer) {
        return Err(TxCode::sdk(
            4,
            "the simulator accepts one signer per transaction: unauthorized",
        ));
    }
    if auth_info.signer_infos.len() != 1 || raw.signatures.len() != 1 {
        return Err(TxCode::sdk(
            4,
            format!(
                "wrong number of signers; expected 1, got {} signer infos and {} signatures: unauthorized",
                auth_info.signer_infos.len(),
                raw.signatures.len()
            ),
        ));
    }
    let signer_info = &auth_info.signer_infos[0];
    let direct = matches!(
        signer_info.mode_info.as_ref().and_then(|m| m.sum.as_ref()),
        Some(ModeSum::Single(single)) if single.mode == SignMode::Direct as i32
    );
    if !direct {
        return Err(TxCode::sdk(
            18,
            "the simulator only accepts SIGN_MODE_DIRECT: invalid request",
        ));
    }
    let pub_key = match &signer_info.public_key {
        None => None,
        Some(any) if any.type_url == SECP256K1_PUBKEY_TYPE_URL => Some(
            PubKey::decode(any.value.as_slice())
                .map_err(|e| parse_error(format!("PubKey: {e}")))?
                .key,
        ),
        Some(any) => {
            return Err(TxCode::sdk(
                8,
                format!(
                    "unsupported public key type {}: invalid pubkey",
                    any.type_url
                ),
            ))
        }
    };
    let fee = auth_info.fee.unwrap_or_default();
    if !fee.payer.is_empty() && fee.payer != signer {
        return Err(TxCode::sdk(
            4,
            format!(
                "fee payer {} must sign too; wrong number of signers; expected 2, got 1: unauthorized",
                fee.payer
            ),
        ));
    }
    if !fee.granter.is_empty() && !valid_akash_address(&fee.granter) {
        return Err(TxCode::sdk(
            7,
            format!(
                "invalid fee granter address '{}': invalid address",
                fee.granter
            ),
        ));
    }
    let fee_granter = (!fee.granter.is_empty()).then(|| fee.granter.clone());
    let mut fee_amount: u128 = 0;
    for coin in fee.amount.iter().filter(|coin| coin.denom == fee_denom) {
        let amount: u128 = coin
            .amount
            .parse()
            .map_err(|_| parse_error(format!("fee amount '{}'", coin.amount)))?;
        fee_amount = fee_amount.saturating_add(amount);
    }
    Ok(DecodedTx {
        hash: tx_hash(bytes),
        size: bytes.len(),
        messages,
        memo: body.memo,
        signer,
        sequence: signer_info.sequence,
        pub_key,
        fee: fee_amount,
        fee_granter,
        gas_limit: fee.gas_limit,
        signature: raw.signatures[0].clone(),
        body_bytes: raw.body_bytes,
        auth_info_bytes: raw.auth_info_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain::new("test-1", "uakt", "0.025".parse().unwrap(), Utc::now())
    }

    fn deployment(chain: &mut Chain, escrow: u128, prices: Vec<u128>) -> u64 {
        chain
            .create_deployment(NewDeployment {
                owner: "akash1owner".into(),
                dseq: None,
                escrow,
                lease_prices: prices,
                closed: false,
            })
            .unwrap()
            .dseq
    }

    #[test]
    fn blocks_drain_escrow_by_the_summed_lease_rate_and_close_a_dry_deployment() {
        let mut chain = chain();
        let dseq = deployment(&mut chain, 100, vec![30, 10]);
        let key = ("akash1owner".to_owned(), dseq);
        chain.produce_block(Utc::now());
        chain.produce_block(Utc::now());
        assert_eq!(chain.deployments[&key].escrow, 20);
        assert_eq!(chain.deployments[&key].state, DeploymentState::Active);
        chain.produce_block(Utc::now()); // pays 40 of 20: closes
        let closed = &chain.deployments[&key];
        assert_eq!(closed.state, DeploymentState::Closed);
        assert_eq!(closed.escrow, 0);
        assert_eq!(closed.transferred, 100);
        assert_eq!(closed.closed_at, Some(chain.height));
        assert!(closed
            .leases
            .iter()
            .all(|lease| lease.state == DeploymentState::Closed));
        chain.produce_block(Utc::now());
        assert_eq!(chain.deployments[&key].transferred, 100);
    }

    #[test]
    fn zero_rate_deployments_keep_their_escrow() {
        let mut chain = chain();
        let dseq = deployment(&mut chain, 100, vec![]);
        for _ in 0..5 {
            chain.produce_block(Utc::now());
        }
        let key = ("akash1owner".to_owned(), dseq);
        assert_eq!(chain.deployments[&key].escrow, 100);
        assert_eq!(chain.deployments[&key].state, DeploymentState::Active);
    }

    #[test]
    fn accounts_get_numbers_in_funding_order_and_duplicate_dseqs_are_refused() {
        let mut chain = chain();
        assert_eq!(chain.fund("akash1a", 5, "uakt").account_number, 1);
        assert_eq!(chain.fund("akash1b", 5, "uakt").account_number, 2);
        assert_eq!(chain.fund("akash1a", 5, "uakt").balances["uakt"], 10);
        let dseq = deployment(&mut chain, 1, vec![]);
        let error = chain
            .create_deployment(NewDeployment {
                owner: "akash1owner".into(),
                dseq: Some(dseq),
                escrow: 1,
                lease_prices: vec![],
                closed: false,
            })
            .unwrap_err();
        assert!(error.contains("already exists"), "{error}");
    }

    #[test]
    fn undecodable_bytes_are_a_parse_error() {
        let mut chain = chain();
        let outcome = chain.check_tx(b"\x0a\x05hello");
        assert_eq!(outcome.result.code, 2, "{:?}", outcome.result);
        assert!(outcome.result.log.contains("tx parse error"));
        assert_eq!(chain.mempool_len(), 0);
    }

    #[test]
    fn gas_grows_with_size_and_messages() {
        assert!(gas_needed(300, 1) > gas_needed(200, 1));
        assert!(gas_needed(300, 2) > gas_needed(300, 1));
    }
}
