//! The `fund` workflow: USDC on an EVM chain (Base) split between MOR staking and an
//! Akash deployment's escrow, every leg exactly once whatever crashes.
//!
//! 1. Check: the EVM chain and wallet, the Akash wallet, the deployment (open), the
//!    USDC balance (below the amount: a logged refusal, nothing sent).
//! 2. Split with the pure [`split`]: stake = floor(amount × share / 100), swap = rest.
//! 3. **Swap leg first**: route and msgs (one journaled answer) → each returned EVM transaction with its
//!    approvals, exactly once → track and wait for delivery → check the AKT arrived →
//!    deposit it (minus the fee reserve) into the escrow through the `cosmos` executor.
//! 4. **Stake leg**: approve the vault (skipped when the allowance covers it) → stake.
//!
//! The swap goes first because it is the leg that can be refused for reasons outside
//! the wallet (price impact beyond the slippage bound, no route, a route API down): a
//! refusal then leaves nothing staked and the whole amount in the wallet, instead of a
//! run that staked 60 % and cannot fund the deployment it was for. The escrow is also
//! the urgent part: it is what keeps the deployment running. The stake leg can only
//! fail for reasons that a resume fixes (a paused vault, gas), and by then the
//! deployment is funded.
//!
//! A leg that fails fails the run with a message naming what was done and what was not;
//! `runs resume` keeps every completed step (a landed transaction is never sent again)
//! and continues from the failed one.

use std::sync::Arc;
use std::time::Duration;

use morpheus_engine::{
    async_trait, Ctx, InvalidInput, LogLevel, RetryPolicy, StepError, Workflow, WorkflowError,
    WorkflowResult,
};
use morpheus_executors::cosmos::{
    AccountInfo, BalanceInfo, CosmosRequest, DeploymentsInfo, LatestHeight,
};
use morpheus_executors::evm::{ChainInfo, EvmRequest, TokenAmount};
use serde::{Deserialize, Serialize};

use super::evm_tx::{approve_and_send, evm_retry, evm_step, ApprovalOutcome, LandedTx, TxFailure};
use super::route::{
    is_hex_address, Quote, RouteApi, RouteAsk, RouteMsgs, TransferStatus, STATE_COMPLETED_SUCCESS,
};
use super::split::{deposit_amount, parse_base_units, split, Split};
use crate::escrow::{chain_step, deposit, dseq_number, EscrowDeposit};

/// The denom the swap delivers and the escrow takes.
pub const AKT_DENOM: &str = "uakt";

/// `[fund]` in `morpheus.toml`: where the money goes. Each value is copied into the
/// run's journal when it starts, so a resumed run uses what it started with even if
/// the file changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundConfig {
    /// The USDC token on the EVM chain (`0x…`; on Base:
    /// `0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913`).
    pub usdc: Option<String>,
    /// The MOR staking contract (`stake(uint256)` after an ERC-20 approval).
    pub staking_vault: Option<String>,
    /// The route API's base URL (Skip Go: `https://api.skip.build`; the devnet:
    /// `morpheus devnet skip`).
    pub route_api: Option<String>,
    /// uakt kept back from the AKT received, for the wallet's own fees.
    #[serde(default = "default_fee_reserve")]
    pub fee_reserve_uakt: u64,
    /// How often to ask the route API whether the transfer was delivered.
    #[serde(
        default = "default_status_poll",
        with = "morpheus_executors::duration_text"
    )]
    pub status_poll: Duration,
    /// How long one wait for delivery lasts before the step is retried.
    #[serde(
        default = "default_delivery_timeout",
        with = "morpheus_executors::duration_text"
    )]
    pub delivery_timeout: Duration,
    /// Timeout of one request to the route API.
    #[serde(
        default = "default_request_timeout",
        with = "morpheus_executors::duration_text"
    )]
    pub request_timeout: Duration,
    /// Seconds per Akash block (how long a competing deposit needs to settle).
    #[serde(default = "default_seconds_per_block")]
    pub akash_seconds_per_block: f64,
}

impl Default for FundConfig {
    fn default() -> Self {
        Self {
            usdc: None,
            staking_vault: None,
            route_api: None,
            fee_reserve_uakt: default_fee_reserve(),
            status_poll: default_status_poll(),
            delivery_timeout: default_delivery_timeout(),
            request_timeout: default_request_timeout(),
            akash_seconds_per_block: default_seconds_per_block(),
        }
    }
}

fn default_fee_reserve() -> u64 {
    50_000
}
fn default_status_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_seconds_per_block() -> f64 {
    crate::topup::workflow::DEFAULT_SECONDS_PER_BLOCK
}

impl FundConfig {
    /// Checks every value, naming the field: what `morpheus up` checks before it starts.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [("usdc", &self.usdc), ("staking_vault", &self.staking_vault)] {
            if let Some(value) = value {
                if !is_hex_address(value) {
                    return Err(format!("{name}: '{value}' is not a 0x… address"));
                }
            }
        }
        if let Some(url) = &self.route_api {
            RouteApi::new(url, self.request_timeout)?;
        }
        if self.status_poll.is_zero() || self.delivery_timeout < self.status_poll {
            return Err("status_poll: must be positive and at most delivery_timeout".into());
        }
        if !(self.akash_seconds_per_block > 0.0 && self.akash_seconds_per_block.is_finite()) {
            return Err("akash_seconds_per_block: must be positive".into());
        }
        Ok(())
    }

    fn resolve(&self) -> Result<Resolved, String> {
        let missing = |name: &str| {
            format!("fund: [fund] {name} is not configured in morpheus.toml (see the README's funding section)")
        };
        self.check()
            .map_err(|error| format!("fund: [fund] {error}"))?;
        Ok(Resolved {
            usdc: self.usdc.clone().ok_or_else(|| missing("usdc"))?,
            staking_vault: self
                .staking_vault
                .clone()
                .ok_or_else(|| missing("staking_vault"))?,
            route_api: self.route_api.clone().ok_or_else(|| missing("route_api"))?,
            fee_reserve_uakt: self.fee_reserve_uakt,
            status_poll_ms: self.status_poll.as_millis() as u64,
            delivery_timeout_ms: self.delivery_timeout.as_millis() as u64,
            request_timeout_ms: self.request_timeout.as_millis() as u64,
            akash_seconds_per_block: self.akash_seconds_per_block,
        })
    }
}

/// The configuration a run uses, journaled when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resolved {
    usdc: String,
    staking_vault: String,
    route_api: String,
    fee_reserve_uakt: u64,
    status_poll_ms: u64,
    delivery_timeout_ms: u64,
    request_timeout_ms: u64,
    akash_seconds_per_block: f64,
}

/// Input of `fund`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundInput {
    /// USDC in base units (6 decimals: `"100000000"` is 100 USDC).
    pub usdc_amount: String,
    /// The share staked on MOR, in whole percent (0–100); the rest is swapped to AKT.
    #[serde(default = "default_stake_share")]
    pub stake_share_pct: u8,
    /// The deployment's owner (`akash1…`).
    pub owner: String,
    /// The deployment whose escrow receives the AKT.
    pub dseq: String,
    /// The most the swap may deliver below its quote, in percent (Skip's slippage
    /// tolerance).
    #[serde(default = "default_slippage")]
    pub slippage_pct: f64,
    /// Check, quote and plan, but send nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_stake_share() -> u8 {
    60
}
fn default_slippage() -> f64 {
    1.0
}

/// How a leg ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegStatus {
    /// It landed.
    Done,
    /// A dry run: planned, nothing sent.
    Planned,
    /// Nothing to do (a zero amount).
    Skipped,
}

/// The swap leg: USDC → AKT on the deployment's Akash wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapReport {
    /// How it ended.
    pub status: LegStatus,
    /// USDC base units swapped.
    pub usdc_in: String,
    /// What the route quoted, uakt.
    pub estimated_uakt_out: Option<String>,
    /// The least the route may deliver, uakt.
    pub min_uakt_out: Option<String>,
    /// The approvals sent (empty when the allowance covered the swap).
    pub approve_txs: Vec<String>,
    /// The route's transactions.
    pub tx_hashes: Vec<String>,
    /// What was delivered, uakt.
    pub uakt_received: Option<String>,
}

/// The deposit into the deployment's escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositReport {
    /// How it ended.
    pub status: LegStatus,
    /// The deployment.
    pub dseq: String,
    /// Deposited, uakt.
    pub uakt: Option<String>,
    /// Kept back for fees, uakt.
    pub fee_reserve_uakt: String,
    /// The deposit's transaction.
    pub tx_hash: Option<String>,
    /// The block it landed in.
    pub height: Option<u64>,
}

/// The stake leg: USDC staked on the MOR vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StakeReport {
    /// How it ended.
    pub status: LegStatus,
    /// USDC base units staked.
    pub usdc: String,
    /// The approval sent, if the allowance did not cover the stake.
    pub approve_tx: Option<String>,
    /// The stake's transaction.
    pub tx_hash: Option<String>,
    /// The block it landed in.
    pub block_number: Option<u64>,
}

/// Output of `fund`: one report per leg, with its transaction hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundReport {
    /// USDC base units funded.
    pub usdc_amount: String,
    /// The share staked, percent.
    pub stake_share_pct: u8,
    /// Nothing was sent on purpose.
    pub dry_run: bool,
    /// The EVM wallet that paid.
    pub evm_address: String,
    /// The Akash wallet that received the AKT and deposited it.
    pub akash_address: String,
    /// Swap leg (first).
    pub swap: SwapReport,
    /// Deposit of what the swap delivered.
    pub deposit: DepositReport,
    /// Stake leg (last).
    pub stake: StakeReport,
}

/// The `fund` workflow (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct Fund {
    config: Arc<FundConfig>,
}

impl Fund {
    /// The workflow with `[fund]`'s configuration.
    pub fn new(config: FundConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

/// Slippage as Skip takes it: a decimal string.
fn slippage_text(slippage_pct: f64) -> String {
    let text = format!("{slippage_pct:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A failed leg as the run's error: what was done and what was not. Engine control
/// flow (a park, a lost lease) passes through untouched.
fn leg_failed(
    leg: &str,
    error: WorkflowError,
    done: &[String],
    not_done: &[&str],
) -> WorkflowError {
    if error.is_control_flow() || matches!(error, WorkflowError::NonDeterminism { .. }) {
        return error;
    }
    let done = if done.is_empty() {
        "nothing".to_owned()
    } else {
        done.join("; ")
    };
    WorkflowError::failed(format!(
        "{leg} leg failed: {error}. Done: {done}. Not done: {}. `morpheus runs resume` continues from the failed step; what landed is never sent again",
        not_done.join(", ")
    ))
}

fn tx_failed(failure: TxFailure) -> WorkflowError {
    WorkflowError::failed(match failure {
        TxFailure::WouldRevert(message) => format!("{message} (nothing was sent)"),
        TxFailure::Reverted(message) => {
            format!("{message} (mined and reverted: gas paid, no effect)")
        }
        TxFailure::NotSent(message) => format!("{message} (nothing was spent)"),
    })
}

#[async_trait]
impl Workflow for Fund {
    const NAME: &'static str = "fund";
    type Input = FundInput;
    type Output = FundReport;

    fn validate(&self, input: &FundInput) -> Result<(), InvalidInput> {
        let amount = parse_base_units(&input.usdc_amount)
            .map_err(|error| InvalidInput::new(format!("usdc_amount: {error}")))?;
        if amount == 0 {
            return Err("usdc_amount: must be positive".into());
        }
        if input.stake_share_pct > 100 {
            return Err(InvalidInput::new(format!(
                "stake_share_pct: {} is not a percentage (0–100)",
                input.stake_share_pct
            )));
        }
        if !input.owner.starts_with("akash1") || input.owner.len() < 20 {
            return Err(InvalidInput::new(format!(
                "owner: '{}' is not an Akash address (akash1…)",
                input.owner
            )));
        }
        if input.dseq.is_empty() || !input.dseq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidInput::new(format!(
                "dseq: '{}' is not a deployment sequence number",
                input.dseq
            )));
        }
        if !(input.slippage_pct > 0.0 && input.slippage_pct <= 50.0) {
            return Err(InvalidInput::new(format!(
                "slippage_pct: {} is outside (0, 50]",
                input.slippage_pct
            )));
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: FundInput) -> WorkflowResult<FundReport> {
        let amount = parse_base_units(&input.usdc_amount).map_err(WorkflowError::failed)?;
        let config = self.config.clone();
        let settings: Resolved = ctx
            .step("config")
            .run(move |_| async move { config.resolve().map_err(StepError::permanent) })
            .await?;
        let route_api = RouteApi::new(
            &settings.route_api,
            Duration::from_millis(settings.request_timeout_ms),
        )
        .map_err(WorkflowError::failed)?;

        // Everything is checked before anything is sent. The five reads are independent:
        // they run at once (their journal entries commit together), in fixed positions.
        let dseq = dseq_number(&input.dseq)?;
        let deployment_query = CosmosRequest::Deployments {
            owner: Some(input.owner.clone()),
            dseqs: Some(vec![dseq]),
            include_closed: true,
        };
        let balance_query = EvmRequest::Erc20Balance {
            token: settings.usdc.clone(),
            owner: None,
        };
        let own_account = CosmosRequest::Account { address: None };
        let (evm, akash, akash_account, deployments, balance) = futures::join!(
            evm_step(ctx, "evm-chain").call_as::<ChainInfo>(&EvmRequest::ChainInfo),
            chain_step(ctx, "akash-chain").call_as::<LatestHeight>(&CosmosRequest::LatestHeight),
            chain_step(ctx, "akash-account").call_as::<AccountInfo>(&own_account),
            chain_step(ctx, "deployment").call_as::<DeploymentsInfo>(&deployment_query),
            evm_step(ctx, "usdc-balance").call_as::<TokenAmount>(&balance_query),
        );
        // Every branch ran to its end (none is cut off mid-call); the first error wins.
        let (evm, akash, akash_account, deployments, balance) =
            (evm?, akash?, akash_account?, deployments?, balance?);
        let evm_address = evm.address.clone().ok_or_else(|| {
            WorkflowError::failed("the evm executor has no key: set [evm] key in morpheus.toml")
        })?;
        let akash_address = akash_account.address.clone();
        let open = deployments.deployments.iter().any(|deployment| {
            deployment.dseq == input.dseq
                && deployment.state == "active"
                && deployment.escrow_state == "open"
        });
        if !open {
            let message = format!(
                "refused: deployment {} of {} is not open on {} (missing or closed): nothing was sent",
                input.dseq, input.owner, akash.chain_id
            );
            ctx.log(LogLevel::Error, &message);
            return Err(WorkflowError::failed(message));
        }
        let held = parse_base_units(&balance.amount)
            .map_err(|error| WorkflowError::failed(format!("usdc balance: {error}")))?;
        if held < amount {
            let message = format!(
                "refused: USDC balance {held} of {evm_address} on chain {} is below usdc_amount {amount}: nothing was sent",
                evm.chain_id
            );
            ctx.log(LogLevel::Error, &message);
            return Err(WorkflowError::failed(message));
        }
        let legs = split(amount, input.stake_share_pct);
        ctx.log(
            LogLevel::Info,
            format!(
                "split usdc_amount={amount} stake_share_pct={} stake={} swap={} (stake = floor(amount × share / 100), swap = the rest) balance={held} evm={evm_address} akash={akash_address} dseq={} dry_run={}",
                input.stake_share_pct, legs.stake, legs.swap, input.dseq, input.dry_run
            ),
        );

        let mut done: Vec<String> = Vec::new();
        let ask = RouteAsk {
            amount_in: legs.swap,
            source_asset_denom: settings.usdc.clone(),
            source_asset_chain_id: evm.chain_id.to_string(),
            dest_asset_denom: AKT_DENOM.into(),
            dest_asset_chain_id: akash.chain_id.clone(),
        };
        let leg_context = LegContext {
            ctx,
            input: &input,
            settings: &settings,
            route_api: &route_api,
            evm_address: &evm_address,
            akash_address: &akash_address,
        };
        let swap = leg_context
            .swap(&ask)
            .await
            .map_err(|error| leg_failed("swap", error, &done, &["swap", "deposit", "stake"]))?;
        if let Some(received) = &swap.uakt_received {
            done.push(format!(
                "swapped {} USDC base units, {received} uakt delivered to {akash_address} (tx {})",
                swap.usdc_in,
                swap.tx_hashes.join(", ")
            ));
        }
        let deposit = leg_context
            .deposit(&swap)
            .await
            .map_err(|error| leg_failed("deposit", error, &done, &["deposit", "stake"]))?;
        if let (Some(uakt), Some(tx)) = (&deposit.uakt, &deposit.tx_hash) {
            done.push(format!(
                "deposited {uakt} uakt into dseq {} (tx {tx})",
                input.dseq
            ));
        }
        let stake = leg_context
            .stake(&legs)
            .await
            .map_err(|error| leg_failed("stake", error, &done, &["stake"]))?;
        ctx.log(
            LogLevel::Info,
            format!(
                "funded: swap={:?} deposit={:?} stake={:?} stake_tx={} deposit_tx={}",
                swap.status,
                deposit.status,
                stake.status,
                stake.tx_hash.as_deref().unwrap_or("-"),
                deposit.tx_hash.as_deref().unwrap_or("-"),
            ),
        );
        Ok(FundReport {
            usdc_amount: amount.to_string(),
            stake_share_pct: input.stake_share_pct,
            dry_run: input.dry_run,
            evm_address,
            akash_address,
            swap,
            deposit,
            stake,
        })
    }
}

/// What every leg needs.
struct LegContext<'a> {
    ctx: &'a Ctx,
    input: &'a FundInput,
    settings: &'a Resolved,
    route_api: &'a RouteApi,
    evm_address: &'a str,
    akash_address: &'a str,
}

impl LegContext<'_> {
    async fn swap(&self, ask: &RouteAsk) -> WorkflowResult<SwapReport> {
        let ctx = self.ctx;
        let mut report = SwapReport {
            status: LegStatus::Skipped,
            usdc_in: ask.amount_in.to_string(),
            estimated_uakt_out: None,
            min_uakt_out: None,
            approve_txs: Vec::new(),
            tx_hashes: Vec::new(),
            uakt_received: None,
        };
        if ask.amount_in == 0 {
            ctx.log(LogLevel::Info, "swap skipped: swap amount is 0");
            return Ok(report);
        }
        // The quote and the transactions that execute it are one journaled answer: a
        // resumed run sends exactly the transactions it was given, never a re-quote.
        let slippage = slippage_text(self.input.slippage_pct);
        let api = self.route_api.clone();
        let quote_ask = ask.clone();
        let (sender, receiver) = (self.evm_address.to_owned(), self.akash_address.to_owned());
        let msgs_slippage = slippage.clone();
        let (quote, msgs): (Quote, RouteMsgs) = ctx
            .step("swap/route")
            .retry(evm_retry())
            .run(move |_| async move {
                let quote = api.route(&quote_ask).await?;
                let msgs = api
                    .msgs(&quote_ask, &quote, &sender, &receiver, &msgs_slippage)
                    .await?;
                Ok((quote, msgs))
            })
            .await?;
        report.estimated_uakt_out = Some(quote.estimated_amount_out.to_string());
        report.min_uakt_out = msgs.min_amount_out.map(|amount| amount.to_string());
        ctx.log(
            LogLevel::Info,
            format!(
                "swap route: {} USDC base units → estimated {} uakt (min {}, slippage {slippage} %, price impact {} %) in {} transaction(s) to {}",
                ask.amount_in,
                quote.estimated_amount_out,
                report.min_uakt_out.as_deref().unwrap_or("?"),
                quote.swap_price_impact_percent.as_deref().unwrap_or("?"),
                msgs.txs.len(),
                self.akash_address
            ),
        );
        if self.input.dry_run {
            ctx.log(LogLevel::Info, "swap planned: dry_run=true, nothing sent");
            report.status = LegStatus::Planned;
            return Ok(report);
        }
        let mut first_tx = None;
        for (index, tx) in msgs.txs.iter().enumerate() {
            let steps = if index == 0 {
                "swap".to_owned()
            } else {
                format!("swap.{index}")
            };
            let approvals: Vec<(String, String, u128)> = tx
                .approvals
                .iter()
                .map(|a| (a.token_contract.clone(), a.spender.clone(), a.amount))
                .collect();
            let spend = EvmRequest::Sign {
                to: tx.to.clone(),
                function: None,
                abi: None,
                args: Vec::new(),
                data: Some(tx.data.clone()),
                value: None,
                gas_limit: None,
                relayer: None,
            };
            let (outcomes, landed): (Vec<ApprovalOutcome>, LandedTx) =
                approve_and_send(ctx, &steps, "bridge", &approvals, &spend)
                    .await?
                    .map_err(tx_failed)?;
            report.approve_txs.extend(
                outcomes
                    .into_iter()
                    .filter_map(|outcome| outcome.approve_tx.map(|tx| tx.tx_hash)),
            );
            ctx.log(
                LogLevel::Info,
                format!(
                    "{steps}: bridge transaction landed tx={} nonce={} block={}",
                    landed.tx_hash, landed.nonce, landed.block_number
                ),
            );
            first_tx.get_or_insert_with(|| landed.tx_hash.clone());
            report.tx_hashes.push(landed.tx_hash);
        }
        let tracked =
            first_tx.ok_or_else(|| WorkflowError::failed("the route had no transaction"))?;
        let chain_id = ask.source_asset_chain_id.clone();
        let api = self.route_api.clone();
        let poll = Duration::from_millis(self.settings.status_poll_ms);
        let patience = Duration::from_millis(self.settings.delivery_timeout_ms);
        let status: TransferStatus = ctx
            .step("swap/delivery")
            .retry(RetryPolicy {
                max_attempts: 3,
                ..evm_retry()
            })
            .timeout(patience + Duration::from_secs(60))
            .run(move |_| async move {
                // Tracking is idempotent: a retried or resumed wait asks again.
                api.track(&tracked, &chain_id).await?;
                let started = tokio::time::Instant::now();
                loop {
                    let status = api.status(&tracked, &chain_id).await?;
                    if status.is_final() {
                        return Ok(status);
                    }
                    if started.elapsed() >= patience {
                        return Err(StepError::retryable(format!(
                            "transfer of {tracked} still {} after {patience:?}",
                            status.state
                        )));
                    }
                    tokio::time::sleep(poll).await;
                }
            })
            .await?;
        if status.state != STATE_COMPLETED_SUCCESS {
            return Err(WorkflowError::failed(format!(
                "the route ended the transfer {} ({}): {}",
                report.tx_hashes.join(", "),
                status.state,
                status.error.as_deref().unwrap_or("no reason given")
            )));
        }
        let received = status.released_amount.unwrap_or_default();
        if status
            .released_denom
            .as_deref()
            .is_some_and(|denom| denom != AKT_DENOM)
            || status
                .released_chain_id
                .as_deref()
                .is_some_and(|chain| chain != ask.dest_asset_chain_id)
        {
            return Err(WorkflowError::failed(format!(
                "the route delivered {received} {} on {}, not {AKT_DENOM} on {}",
                status.released_denom.as_deref().unwrap_or("?"),
                status.released_chain_id.as_deref().unwrap_or("?"),
                ask.dest_asset_chain_id
            )));
        }
        if let Some(min) = msgs.min_amount_out {
            if received < min {
                return Err(WorkflowError::failed(format!(
                    "the route delivered {received} uakt, below the agreed minimum {min}"
                )));
            }
        }
        ctx.log(
            LogLevel::Info,
            format!(
                "swap delivered {received} uakt to {} (quoted {}, min {})",
                self.akash_address,
                quote.estimated_amount_out,
                report.min_uakt_out.as_deref().unwrap_or("?")
            ),
        );
        report.uakt_received = Some(received.to_string());
        report.status = LegStatus::Done;
        Ok(report)
    }

    async fn deposit(&self, swap: &SwapReport) -> WorkflowResult<DepositReport> {
        let ctx = self.ctx;
        let reserve = u128::from(self.settings.fee_reserve_uakt);
        let mut report = DepositReport {
            status: if swap.status == LegStatus::Planned {
                LegStatus::Planned
            } else {
                LegStatus::Skipped
            },
            dseq: self.input.dseq.clone(),
            uakt: None,
            fee_reserve_uakt: reserve.to_string(),
            tx_hash: None,
            height: None,
        };
        let Some(received) = swap.uakt_received.as_deref() else {
            return Ok(report);
        };
        let received: u128 = received.parse().unwrap_or_default();
        let Some(amount) = deposit_amount(received, reserve) else {
            ctx.log(
                LogLevel::Warn,
                format!("deposit skipped: received {received} uakt does not exceed the fee reserve {reserve}"),
            );
            return Ok(report);
        };
        // The route's word is checked against the chain's: the wallet must hold it.
        let balance: BalanceInfo = chain_step(ctx, "deposit/balance")
            .call_as(&CosmosRequest::Balance {
                address: Some(self.akash_address.to_owned()),
                denom: Some(AKT_DENOM.into()),
            })
            .await?;
        let held: u128 = balance.amount.parse().unwrap_or_default();
        if held < amount {
            return Err(WorkflowError::failed(format!(
                "the route reports {received} uakt delivered but {} holds {held} uakt, less than the {amount} to deposit",
                self.akash_address
            )));
        }
        ctx.log(
            LogLevel::Info,
            format!(
                "deposit dseq={} amount={amount} uakt (received {received} - fee reserve {reserve}) wallet={held}",
                self.input.dseq
            ),
        );
        let subject = format!("dseq={}", self.input.dseq);
        let landed = deposit(
            ctx,
            &EscrowDeposit {
                owner: &self.input.owner,
                dseq: &self.input.dseq,
                amount,
                denom: AKT_DENOM,
                seconds_per_block: self.settings.akash_seconds_per_block,
                steps: "deposit",
                subject: &subject,
            },
        )
        .await?
        .map_err(|reason| {
            WorkflowError::failed(format!(
                "the chain refused the deposit of {amount} uakt: {reason}"
            ))
        })?;
        ctx.log(
            LogLevel::Info,
            format!(
                "dseq={} deposit confirmed amount={amount} tx={} height={}",
                self.input.dseq, landed.0, landed.1
            ),
        );
        report.status = LegStatus::Done;
        report.uakt = Some(amount.to_string());
        report.tx_hash = Some(landed.0);
        report.height = Some(landed.1);
        Ok(report)
    }

    async fn stake(&self, legs: &Split) -> WorkflowResult<StakeReport> {
        let ctx = self.ctx;
        let mut report = StakeReport {
            status: LegStatus::Skipped,
            usdc: legs.stake.to_string(),
            approve_tx: None,
            tx_hash: None,
            block_number: None,
        };
        if legs.stake == 0 {
            ctx.log(LogLevel::Info, "stake skipped: stake amount is 0");
            return Ok(report);
        }
        if self.input.dry_run {
            ctx.log(
                LogLevel::Info,
                format!(
                    "stake planned: {} USDC base units on {} (dry_run=true, nothing sent)",
                    legs.stake, self.settings.staking_vault
                ),
            );
            report.status = LegStatus::Planned;
            return Ok(report);
        }
        let vault = &self.settings.staking_vault;
        let spend = EvmRequest::Sign {
            to: vault.clone(),
            function: Some("stake(uint256)".into()),
            abi: None,
            args: vec![legs.stake.to_string().into()],
            data: None,
            value: None,
            gas_limit: None,
            relayer: None,
        };
        let approvals = [(self.settings.usdc.clone(), vault.clone(), legs.stake)];
        let (outcomes, landed) = approve_and_send(ctx, "stake", "stake", &approvals, &spend)
            .await?
            .map_err(tx_failed)?;
        report.approve_tx = outcomes
            .into_iter()
            .filter_map(|outcome| outcome.approve_tx.map(|tx| tx.tx_hash))
            .next_back();
        ctx.log(
            LogLevel::Info,
            format!(
                "staked {} USDC base units on {vault} tx={} nonce={} block={}",
                legs.stake, landed.tx_hash, landed.nonce, landed.block_number
            ),
        );
        report.status = LegStatus::Done;
        report.tx_hash = Some(landed.tx_hash);
        report.block_number = Some(landed.block_number);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn input(value: Value) -> FundInput {
        serde_json::from_value(value).expect("decodes")
    }

    fn valid() -> Value {
        json!({"usdc_amount": "100000000", "stake_share_pct": 60,
               "owner": "akash1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "dseq": "123",
               "slippage_pct": 1, "dry_run": false})
    }

    #[test]
    fn the_documented_input_is_valid_and_defaults_apply() {
        assert_eq!(Fund::default().validate(&input(valid())), Ok(()));
        let minimal = input(
            json!({"usdc_amount": "5", "owner": "akash1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "dseq": "1"}),
        );
        assert_eq!(minimal.stake_share_pct, 60);
        assert_eq!(minimal.slippage_pct, 1.0);
        assert!(!minimal.dry_run);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases = [
            ("usdc_amount", json!("100.5")),
            ("usdc_amount", json!("0")),
            ("stake_share_pct", json!(101)),
            ("owner", json!("0xabc")),
            ("dseq", json!("12a")),
            ("slippage_pct", json!(0)),
            ("slippage_pct", json!(75)),
        ];
        for (field, value) in cases {
            let mut bad = valid();
            bad[field] = value;
            let error = Fund::default().validate(&input(bad)).unwrap_err();
            assert!(error.starts_with(field), "{field}: {error}");
        }
        let unknown = serde_json::from_value::<FundInput>(
            json!({"usdc_amount": "1", "owner": "akash1x", "dseq": "1", "stake": 5}),
        );
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn slippage_is_written_as_skip_takes_it() {
        assert_eq!(slippage_text(1.0), "1");
        assert_eq!(slippage_text(0.5), "0.5");
        assert_eq!(slippage_text(2.25), "2.25");
    }

    #[test]
    fn configuration_is_checked_field_by_field() {
        let unconfigured = FundConfig::default().resolve().unwrap_err();
        assert!(
            unconfigured.contains("usdc is not configured"),
            "{unconfigured}"
        );
        let bad = FundConfig {
            usdc: Some("0x12".into()),
            ..FundConfig::default()
        };
        assert!(bad.check().unwrap_err().starts_with("usdc:"));
        let bad_url = FundConfig {
            route_api: Some("ftp://x".into()),
            ..FundConfig::default()
        };
        assert!(bad_url.check().unwrap_err().starts_with("route_api:"));
        let good = FundConfig {
            usdc: Some(format!("0x{}", "a".repeat(40))),
            staking_vault: Some(format!("0x{}", "b".repeat(40))),
            route_api: Some("http://127.0.0.1:26680".into()),
            ..FundConfig::default()
        };
        assert_eq!(good.resolve().map(|r| r.fee_reserve_uakt), Ok(50_000));
    }

    #[test]
    fn a_failed_leg_names_what_was_done_and_what_was_not() {
        let error = leg_failed(
            "stake",
            WorkflowError::failed("staking paused"),
            &["deposited 5 uakt into dseq 1 (tx AB)".into()],
            &["stake"],
        );
        let text = error.to_string();
        assert!(
            text.starts_with("stake leg failed: staking paused. Done: deposited 5 uakt"),
            "{text}"
        );
        assert!(text.contains("Not done: stake."), "{text}");
        assert!(leg_failed("swap", WorkflowError::Suspended, &[], &[]).is_control_flow());
    }
}
