//! The simulated chain: an in-memory ledger that checks transactions the way a Cosmos
//! SDK chain's ante handler does and applies Akash escrow deposits in blocks.
//!
//! - `check_tx` (broadcast, sync mode) decodes `TxRaw`/`TxBody`/`AuthInfo` and checks,
//!   in the SDK's order: duplicate (code 19), gas (11), minimum fee (13), the
//!   account (9), fee funds (5), public key matches the signer (8), sequence against
//!   the *check state* (32), the secp256k1 signature over the `SignDoc` with this
//!   chain id and the account number (4). Beyond a real CheckTx it also checks the
//!   deposits themselves (deployment exists and is open, funds for amount + fee), so
//!   clients get the rejection at broadcast. Accepted transactions wait in the
//!   mempool; the check state's sequence moves at once, the committed one in the
//!   block.
//! - `produce_block` first drains every active deployment's escrow by its lease rate
//!   and closes those that cannot pay for the block, then applies the mempool in
//!   order (fee and sequence first, then the messages, which may still fail: the
//!   deployment may have closed in this very block).
//!
//! Codes of the `sdk` codespace are the Cosmos SDK's. The Akash module errors are the
//! simulator's own choice (codespace `escrow` for `escrow.v1` messages, `deployment`
//! for `deployment.v1beta3`): 3 / 4 "not found", 2 / 5 "closed", 5 / 20 "invalid
//! denomination"; clients should match on the message.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use cosmrs::proto::cosmos::crypto::secp256k1::PubKey;
use cosmrs::proto::cosmos::tx::signing::v1beta1::SignMode;
use cosmrs::proto::cosmos::tx::v1beta1::mode_info::Sum as ModeSum;
use cosmrs::proto::cosmos::tx::v1beta1::{AuthInfo, SignDoc, TxBody, TxRaw};
use k256::ecdsa::signature::Verifier;
use k256::ecdsa::{Signature, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use super::gas_price::GasPrice;
use super::messages::{decode_deposit, DepositMessage, DepositRequest, MessageError};

/// Type URL of secp256k1 public keys.
pub const SECP256K1_PUBKEY_TYPE_URL: &str = "/cosmos.crypto.secp256k1.PubKey";

/// The address prefix the simulator uses.
pub const ACCOUNT_PREFIX: &str = "akash";

/// The provider every simulated lease is with (a fixed, keyless address).
pub const SIMULATED_PROVIDER: &str = "akash1simulatedprovider000000000000000000000";

/// A result code as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxCode {
    /// `sdk`, `escrow`, `deployment`, or empty for success.
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
        Self {
            codespace: "sdk",
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
            DepositMessage::AccountDeposit => Self {
                codespace: "escrow",
                code: escrow_code,
                log,
            },
            DepositMessage::DepositDeployment => Self {
                codespace: "deployment",
                code: deployment_code,
                log,
            },
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

/// Whether a deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    /// Running, paying its leases from escrow.
    Active,
    /// Closed (by its escrow running dry, or created closed).
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

/// A lease: a provider paid `price` per block from the deployment's escrow.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Group sequence.
    pub gseq: u32,
    /// Order sequence.
    pub oseq: u32,
    /// Provider address.
    pub provider: String,
    /// Price per block in the chain denom.
    pub price: u128,
    /// `active` or `closed` (same words as deployments).
    pub state: DeploymentState,
    /// Height it started.
    pub created_at: u64,
    /// Height it closed (0 while active).
    pub closed_on: u64,
}

/// A deployment with its escrow account.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Owner address.
    pub owner: String,
    /// Sequence number.
    pub dseq: u64,
    /// Active or closed.
    pub state: DeploymentState,
    /// Unspent escrow funds (chain denom).
    pub escrow: u128,
    /// Paid out to providers so far.
    pub transferred: u128,
    /// Creation height.
    pub created_at: u64,
    /// Height of the last settlement.
    pub settled_at: u64,
    /// Height it closed.
    pub closed_at: Option<u64>,
    /// Leases.
    pub leases: Vec<Lease>,
}

impl Deployment {
    /// Sum of the active leases' prices: what one block costs.
    pub fn rate_per_block(&self) -> u128 {
        self.leases
            .iter()
            .filter(|lease| lease.state == DeploymentState::Active)
            .map(|lease| lease.price)
            .sum()
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
    /// One lease per price.
    pub lease_prices: Vec<u128>,
    /// Create it already closed.
    pub closed: bool,
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

/// A decoded, structurally valid transaction.
#[derive(Debug, Clone)]
pub struct DecodedTx {
    /// Hash of the bytes.
    pub hash: String,
    /// Encoded size.
    pub size: usize,
    /// Its deposits, decoded by the simulator's own message types.
    pub deposits: Vec<DepositRequest>,
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
    /// Latest block height.
    pub height: u64,
    /// Latest block time.
    pub block_time: DateTime<Utc>,
    /// Accounts by address.
    pub accounts: BTreeMap<String, Account>,
    /// Deployments by (owner, dseq).
    pub deployments: BTreeMap<(String, u64), Deployment>,
    /// Deposits applied, in order.
    pub deposits: Vec<DepositRecord>,
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

impl Chain {
    /// A chain at height 1 with nothing in it.
    pub fn new(chain_id: &str, denom: &str, min_gas_price: GasPrice, now: DateTime<Utc>) -> Self {
        Self {
            chain_id: chain_id.to_owned(),
            denom: denom.to_owned(),
            min_gas_price,
            height: 1,
            block_time: now,
            accounts: BTreeMap::new(),
            deployments: BTreeMap::new(),
            deposits: Vec::new(),
            duplicate_broadcasts: 0,
            referenced_credits: BTreeMap::new(),
            next_account_number: 1,
            mempool: Vec::new(),
            txs: HashMap::new(),
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

    /// Creates a deployment (admin API).
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
        self.account_entry(&new.owner);
        let state = if new.closed {
            DeploymentState::Closed
        } else {
            DeploymentState::Active
        };
        let leases = new
            .lease_prices
            .iter()
            .enumerate()
            .map(|(i, price)| Lease {
                gseq: 1,
                oseq: i as u32 + 1,
                provider: SIMULATED_PROVIDER.to_owned(),
                price: *price,
                state,
                created_at: self.height,
                closed_on: if new.closed { self.height } else { 0 },
            })
            .collect();
        let deployment = Deployment {
            owner: new.owner,
            dseq,
            state,
            escrow: new.escrow,
            transferred: 0,
            created_at: self.height,
            settled_at: self.height,
            closed_at: new.closed.then_some(self.height),
            leases,
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
        let gas_used = gas_needed(tx.size, tx.deposits.len());
        if let Err(code) = self.ante(&tx, gas_used, true) {
            return reject(code, tx.gas_limit);
        }
        if let Err(code) = self.check_messages(&tx, true) {
            return reject(code, tx.gas_limit);
        }
        let account = self
            .accounts
            .get_mut(&tx.signer)
            .expect("ante checked the account");
        account.check_sequence += 1;
        account.reserved += tx.fee + tx.deposits.iter().map(|d| d.amount).sum::<u128>();
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
    /// and returns the gas the transaction would use.
    pub fn simulate(&self, bytes: &[u8]) -> Result<u64, String> {
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
        self.check_messages(&tx, true).map_err(|code| code.log)?;
        let missing_signature = if tx.signature.is_empty() {
            SIMULATED_SIGNATURE_GAS
        } else {
            0
        };
        Ok(gas_needed(tx.size, tx.deposits.len()) + missing_signature)
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

    /// What executing the deposits requires: known, open deployments in the chain
    /// denom, and funds for every amount plus the fee.
    fn check_messages(&self, tx: &DecodedTx, check_state: bool) -> Result<(), TxCode> {
        let mut total = tx.fee;
        for deposit in &tx.deposits {
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
            total = total.saturating_add(deposit.amount);
        }
        let account = self.accounts.get(&tx.signer).ok_or_else(|| {
            TxCode::sdk(
                9,
                format!("account {} not found: unknown address", tx.signer),
            )
        })?;
        // In the check state the fee and amounts of this transaction are not reserved
        // yet; in delivery the fee has already been taken.
        let (spendable, needed) = if check_state {
            (self.spendable(account, true), total)
        } else {
            (self.spendable(account, false), total - tx.fee)
        };
        if needed > spendable {
            return Err(TxCode::sdk(
                5,
                format!(
                    "spendable balance {spendable}{denom} is smaller than {needed}{denom}: insufficient funds",
                    denom = self.denom
                ),
            ));
        }
        Ok(())
    }

    /// Ends the current block. Escrow is settled first (what the block costs each
    /// active deployment; one that cannot pay closes), then the mempool is applied, so
    /// a deposit checked while its deployment was open can still fail here, as on a
    /// chain where state moves between CheckTx and the block.
    pub fn produce_block(&mut self, now: DateTime<Utc>) {
        self.height += 1;
        self.block_time = now;
        let height = self.height;
        for deployment in self.deployments.values_mut() {
            if deployment.state != DeploymentState::Active {
                continue;
            }
            let rate = deployment.rate_per_block();
            if rate == 0 {
                continue;
            }
            if deployment.escrow >= rate {
                deployment.escrow -= rate;
                deployment.transferred += rate;
                deployment.settled_at = height;
            } else {
                // Cannot pay for this block: the provider gets what is left and the
                // deployment closes, as Akash does with an overdrawn escrow.
                deployment.transferred += deployment.escrow;
                deployment.escrow = 0;
                deployment.settled_at = height;
                deployment.state = DeploymentState::Closed;
                deployment.closed_at = Some(height);
                for lease in &mut deployment.leases {
                    if lease.state == DeploymentState::Active {
                        lease.state = DeploymentState::Closed;
                        lease.closed_on = height;
                    }
                }
            }
        }
        for tx in std::mem::take(&mut self.mempool) {
            let gas_used = gas_needed(tx.size, tx.deposits.len());
            let result = self.deliver(&tx, height);
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
        // The mempool is empty now, so the check state is the committed state again
        // (a real node resets it on commit and re-checks what is left).
        for account in self.accounts.values_mut() {
            account.check_sequence = account.sequence;
            account.reserved = 0;
        }
    }

    /// DeliverTx: the ante handler against committed state (fee and sequence stick
    /// even when a message fails), then the messages, all or nothing.
    fn deliver(&mut self, tx: &DecodedTx, height: u64) -> TxCode {
        let denom = self.denom.clone();
        let gas_used = gas_needed(tx.size, tx.deposits.len());
        if let Err(code) = self.ante(tx, gas_used, false) {
            // Failing the ante handler in the block changes nothing, not even the fee.
            return code;
        }
        let account = self
            .accounts
            .get_mut(&tx.signer)
            .expect("ante checked the account");
        *account.balances.entry(denom.clone()).or_insert(0) -= tx.fee;
        account.sequence += 1;
        if account.pub_key.is_none() {
            account.pub_key = tx.pub_key.clone();
        }
        if let Err(code) = self.check_messages(tx, false) {
            return code;
        }
        for deposit in &tx.deposits {
            let account = self.accounts.get_mut(&tx.signer).expect("checked");
            *account.balances.get_mut(&denom).expect("checked") -= deposit.amount;
            let deployment = self
                .deployments
                .get_mut(&(deposit.owner.clone(), deposit.dseq))
                .expect("checked");
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
        }
        TxCode::ok()
    }
}

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
    let mut deposits = Vec::new();
    for any in &body.messages {
        let deposit = decode_deposit(any).map_err(|error| match error {
            MessageError::UnknownType(text) => parse_error(text),
            MessageError::Invalid(text) => TxCode::sdk(18, format!("{text}: invalid request")),
        })?;
        deposits.push(deposit);
    }
    let signer = deposits[0].signer.clone();
    if deposits.iter().any(|deposit| deposit.signer != signer) {
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
        deposits,
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
