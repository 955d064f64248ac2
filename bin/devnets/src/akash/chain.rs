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
    decode_message, Attribute, BidRef, ChainMessage, CreateDeploymentRequest, DeploymentRef,
    DepositMessage, DepositRequest, GroupSpec, MessageError,
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
    /// Gas limit.
    pub gas_limit: u64,
    /// The signature.
    pub signature: Vec<u8>,
    body_bytes: Vec<u8>,
    auth_info_bytes: Vec<u8>,
}

impl DecodedTx {
    /// What its messages take from the signer's balance, fee excluded.
    pub fn spend(&self) -> u128 {
        self.messages
            .iter()
            .fold(0u128, |sum, message| sum.saturating_add(message.spend()))
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
        let gas_used = gas_needed(tx.size, tx.messages.len());
        if let Err(code) = self.ante(&tx, gas_used, true) {
            return reject(code, tx.gas_limit);
        }
        if let Err(code) = self.trial(&tx) {
            return reject(code, tx.gas_limit);
        }
        let account = self
            .accounts
            .get_mut(&tx.signer)
            .expect("ante checked the account");
        account.check_sequence += 1;
        account.reserved = account
            .reserved
            .saturating_add(tx.fee)
            .saturating_add(tx.spend());
        if account.pub_key.is_none() {
            account.pub_key = tx.pub_key.clone();
        }
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
        Ok(gas_needed(tx.size, tx.messages.len()) + missing_signature)
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
        let spendable = self.spendable(account, check_state);
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

    /// Saves what the messages of `txs` may change: their signers' and deployment
    /// owners' accounts, the deployments they name, the lengths of the records.
    fn snapshot<'a>(&self, txs: impl IntoIterator<Item = &'a DecodedTx>) -> Snapshot {
        let mut addresses = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for tx in txs {
            addresses.insert(tx.signer.clone());
            for message in &tx.messages {
                let key = message.deployment_key();
                addresses.insert(key.0.clone());
                keys.insert(key);
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
    }

    /// Runs `tx`'s fee and messages against the check state (the committed state
    /// with every transaction of the mempool applied in order, as the next block
    /// would) and undoes all of it: what the block would answer, known now.
    fn trial(&mut self, tx: &DecodedTx) -> Result<(), TxCode> {
        let mempool = std::mem::take(&mut self.mempool);
        let snapshot = self.snapshot(mempool.iter().chain(std::iter::once(tx)));
        let height = self.height + 1;
        for pending in &mempool {
            let funds = Funds {
                spendable: 0,
                needed: 0,
            };
            if self.take_fee(pending).is_ok() {
                // A pending transaction that would fail changes nothing, as in the
                // block; its refusal is not this transaction's answer.
                let _ = self.apply_messages(pending, height, funds);
            }
        }
        let spendable = self
            .accounts
            .get(&tx.signer)
            .map_or(0, |account| self.balance(account));
        let funds = Funds {
            spendable,
            needed: tx.fee.saturating_add(tx.spend()),
        };
        let result = match self.take_fee(tx) {
            Ok(()) => self.apply_messages(tx, height, funds),
            Err(()) => Err(self.insufficient_funds(funds)),
        };
        self.restore(snapshot);
        self.mempool = mempool;
        result
    }

    fn balance(&self, account: &Account) -> u128 {
        account.balances.get(&self.denom).copied().unwrap_or(0)
    }

    /// Takes the fee from the signer's balance (`Err` when it cannot pay it).
    fn take_fee(&mut self, tx: &DecodedTx) -> Result<(), ()> {
        let balance = self
            .accounts
            .get_mut(&tx.signer)
            .and_then(|account| account.balances.get_mut(&self.denom));
        match balance {
            Some(balance) if *balance >= tx.fee => {
                *balance -= tx.fee;
                Ok(())
            }
            _ if tx.fee == 0 => Ok(()),
            _ => Err(()),
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
            let applied = match message {
                ChainMessage::Deposit(deposit) => self.apply_deposit(deposit, tx, height, funds),
                ChainMessage::CreateDeployment(create) => {
                    self.apply_create_deployment(create, height, funds)
                }
                ChainMessage::CloseDeployment(close) => {
                    self.apply_close_deployment(close, tx, height)
                }
                ChainMessage::CreateLease(bid) => self.apply_create_lease(bid, height),
            };
            if let Err(code) = applied {
                self.restore(snapshot);
                return Err(code);
            }
        }
        Ok(())
    }

    /// A deposit: a known, open deployment, the chain denom, the funds.
    fn apply_deposit(
        &mut self,
        deposit: &DepositRequest,
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
        self.debit(&deposit.signer, deposit.amount, funds)?;
        let deployment = self
            .deployments
            .get_mut(&(deposit.owner.clone(), deposit.dseq))
            .expect("checked above");
        deployment.escrow += deposit.amount;
        self.deposits.push(DepositRecord {
            height,
            tx_hash: tx.hash.clone(),
            signer: tx.signer.clone(),
            owner: deposit.owner.clone(),
            dseq: deposit.dseq,
            amount: deposit.amount,
            denom: deposit.denom.clone(),
            message: deposit.message,
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
    pub fn produce_block(&mut self, now: DateTime<Utc>) {
        self.height += 1;
        self.block_time = now;
        let height = self.height;
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
            let gas_used = gas_needed(tx.size, tx.messages.len());
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
        let gas_used = gas_needed(tx.size, tx.messages.len());
        if let Err(code) = self.ante(tx, gas_used, false) {
            // Failing the ante handler in the block changes nothing, not even the fee.
            return code;
        }
        self.take_fee(tx).expect("ante checked the fee funds");
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
            needed: tx.spend(),
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
