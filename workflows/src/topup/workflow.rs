//! The `topup.escrow` workflow: one sweep over an owner's deployments. It reads the chain
//! once (height, escrows, lease rates, wallet balance, today's cap use), decides with the
//! pure [`plan_topups`], logs every decision with its numbers, and makes each deposit
//! exactly once: the daily cap is reserved across runs, the signed transaction is
//! journaled *before* it is broadcast, and a resumed run re-broadcasts the same bytes.
//! Chain access goes through the `cosmos` executor, with its typed requests and
//! outputs.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use morpheus_engine::{
    async_trait, Ctx, DocumentQuery, InvalidInput, LogLevel, ResultExt, Versioned, Workflow,
    WorkflowError, WorkflowResult,
};
use morpheus_executors::cosmos::{
    BalanceInfo, CosmosRequest, Decimal, DeploymentsInfo, LatestHeight, LeaseRates,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::escrow::{chain_step, deposit, dseq_number, EscrowDeposit};

use super::decide::{
    hours_to_blocks, parse_coin, plan_topups, Dec, Decided, Decision, DeploymentView, Policy,
    SkipReason,
};

/// The document collection that remembers this workflow's deposits (one document per
/// deposit, keyed `{owner}/{dseq}/{tx_hash}`), for the cool-down across runs.
pub const DEPOSITS: &str = "topup.escrow.deposits";

/// A deposit this workflow made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepositRecord {
    /// The owner.
    pub owner: String,
    /// The deployment.
    pub dseq: String,
    /// When it was confirmed.
    pub at: DateTime<Utc>,
    /// How much (micro-denom).
    pub amount: String,
    /// Its transaction.
    pub tx_hash: String,
}

/// Seconds per Akash block, by default.
pub const DEFAULT_SECONDS_PER_BLOCK: f64 = 6.174;

/// Input of `topup.escrow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUpInput {
    /// The deployments' owner (`akash1…`).
    pub owner: String,
    /// Only these deployments; `null`: all of the owner's open deployments.
    #[serde(default)]
    pub dseqs: Option<Vec<String>>,
    /// Top up when the escrow runs dry within this many hours.
    #[serde(default = "default_look_ahead_h")]
    pub look_ahead_h: f64,
    /// Deposit enough for this many hours.
    #[serde(default = "default_target_runway_h")]
    pub target_runway_h: f64,
    /// Most per deposit (`5000000uakt`).
    pub max_per_deposit: String,
    /// Most per UTC day for this owner, across runs (`20000000uakt`).
    pub daily_cap: String,
    /// Never spend the wallet below this (`1000000uakt`).
    pub wallet_headroom: String,
    /// Decide and log, but deposit nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Seconds per block.
    #[serde(default = "default_seconds_per_block")]
    pub seconds_per_block: f64,
    /// Skip a deployment this workflow topped up less than this many minutes ago.
    #[serde(default = "default_cooldown_min")]
    pub cooldown_min: u64,
    /// The denom of every amount.
    #[serde(default = "default_denom")]
    pub denom: String,
}

fn default_look_ahead_h() -> f64 {
    24.0
}
fn default_target_runway_h() -> f64 {
    48.0
}
fn default_seconds_per_block() -> f64 {
    DEFAULT_SECONDS_PER_BLOCK
}
fn default_cooldown_min() -> u64 {
    10
}
fn default_denom() -> String {
    "uakt".into()
}

/// What happened to one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentReport {
    /// The decision and the numbers behind it.
    #[serde(flatten)]
    pub decided: Decided,
    /// The deposit's transaction, when one was made.
    pub tx_hash: Option<String>,
    /// The block the deposit landed in; left out when no deposit landed (a skip, a
    /// dry run, a refused deposit), rather than written as `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Why a decided deposit did not happen.
    pub error: Option<String>,
}

/// Output of `topup.escrow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopUpReport {
    /// The owner.
    pub owner: String,
    /// Height the sweep decided at.
    pub height: u64,
    /// Whether nothing was deposited on purpose.
    pub dry_run: bool,
    /// Total deposited.
    pub deposited: u128,
    /// One entry per deployment.
    pub deployments: Vec<DeploymentReport>,
}

/// The `topup.escrow` workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopUpEscrow;

struct Amounts {
    max_per_deposit: u128,
    daily_cap: u128,
    wallet_headroom: u128,
}

fn amounts(input: &TopUpInput) -> Result<Amounts, String> {
    Ok(Amounts {
        max_per_deposit: parse_coin(&input.max_per_deposit, &input.denom)
            .map_err(|e| format!("max_per_deposit: {e}"))?,
        daily_cap: parse_coin(&input.daily_cap, &input.denom)
            .map_err(|e| format!("daily_cap: {e}"))?,
        wallet_headroom: parse_coin(&input.wallet_headroom, &input.denom)
            .map_err(|e| format!("wallet_headroom: {e}"))?,
    })
}

/// The budget that counts an owner's deposits of one UTC day across runs.
pub fn daily_budget(owner: &str, day: DateTime<Utc>) -> String {
    format!("topup.escrow:{owner}:{}", day.format("%Y-%m-%d"))
}

/// A chain amount as the planner's decimal (both count in 10⁻¹⁸ units).
fn dec(amount: Decimal) -> Dec {
    Dec::from_atto(amount.atto())
}

#[async_trait]
impl Workflow for TopUpEscrow {
    const NAME: &'static str = "topup.escrow";
    type Input = TopUpInput;
    type Output = TopUpReport;

    fn validate(&self, input: &TopUpInput) -> Result<(), InvalidInput> {
        if !input.owner.starts_with("akash1") || input.owner.len() < 20 {
            return Err(InvalidInput::new(format!(
                "owner: '{}' is not an Akash address (akash1…)",
                input.owner
            )));
        }
        if let Some(dseqs) = &input.dseqs {
            if dseqs.is_empty() {
                return Err("dseqs: give at least one, or null for all".into());
            }
            if let Some(bad) = dseqs
                .iter()
                .find(|d| d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(InvalidInput::new(format!(
                    "dseqs: '{bad}' is not a deployment sequence number"
                )));
            }
        }
        for (name, hours) in [
            ("look_ahead_h", input.look_ahead_h),
            ("target_runway_h", input.target_runway_h),
        ] {
            if !(hours > 0.0 && hours.is_finite()) {
                return Err(InvalidInput::new(format!(
                    "{name}: must be a positive number of hours"
                )));
            }
        }
        if input.target_runway_h < input.look_ahead_h {
            return Err("target_runway_h: must be at least look_ahead_h".into());
        }
        if !(input.seconds_per_block > 0.0 && input.seconds_per_block.is_finite()) {
            return Err("seconds_per_block: must be positive".into());
        }
        amounts(input).map(|_| ()).map_err(InvalidInput::from)
    }

    async fn run(&self, ctx: &Ctx, input: TopUpInput) -> WorkflowResult<TopUpReport> {
        let amounts = amounts(&input).map_err(WorkflowError::failed)?;
        let dseqs: Option<Vec<u64>> = input
            .dseqs
            .as_ref()
            .map(|dseqs| dseqs.iter().map(|dseq| dseq_number(dseq)).collect())
            .transpose()?;
        let cosmos = |name: &str| chain_step(ctx, name).timeout(Duration::from_secs(120));

        // One consistent view of the chain for the whole sweep.
        let latest: LatestHeight = cosmos("height")
            .call_as(&CosmosRequest::LatestHeight)
            .await?;
        let height = latest.height;
        let deployments: DeploymentsInfo = cosmos("deployments")
            .call_as(&CosmosRequest::Deployments {
                owner: Some(input.owner.clone()),
                dseqs: dseqs.clone(),
                include_closed: input.dseqs.is_some(),
            })
            .await?;
        let leases: LeaseRates = cosmos("leases")
            .call_as(&CosmosRequest::Leases {
                owner: Some(input.owner.clone()),
                dseqs,
            })
            .await?;
        let balance: BalanceInfo = cosmos("balance")
            .call_as(&CosmosRequest::Balance {
                address: None,
                denom: Some(input.denom.clone()),
            })
            .await?;
        let now = ctx.now().await?;
        let budget = daily_budget(&input.owner, now);
        let cap_used = ctx.budget_used("cap-used", &budget).await?;

        // When each deployment was last topped up by this workflow (any run).
        let last_deposits: HashMap<String, DateTime<Utc>> = {
            let documents = ctx.documents();
            let owner = input.owner.clone();
            ctx.step("last-deposits")
                .run(move |_| async move {
                    let query = DocumentQuery::new(DEPOSITS)
                        .field_equals("owner", owner)
                        .limit(1000);
                    let records: Vec<Versioned<DepositRecord>> =
                        documents.list(&query).await.retryable()?;
                    let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
                    for record in records {
                        let at = last.entry(record.value.dseq).or_insert(record.value.at);
                        *at = (*at).max(record.value.at);
                    }
                    Ok(last)
                })
                .await?
        };
        let rates: HashMap<&str, Dec> = leases
            .rates
            .iter()
            .map(|rate| (rate.dseq.as_str(), dec(rate.rate_per_block)))
            .collect();
        let mut views = Vec::new();
        for deployment in &deployments.deployments {
            let dseq = deployment.dseq.clone();
            views.push(DeploymentView {
                rate_per_block: rates.get(dseq.as_str()).copied().unwrap_or(Dec::ZERO),
                funds: dec(deployment.escrow_funds),
                open: deployment.state == "active" && deployment.escrow_state == "open",
                last_topup_at: last_deposits.get(&dseq).copied(),
                dseq,
            });
        }
        for missing in &deployments.missing {
            // Quoted, as this line has always shown it.
            ctx.log(
                LogLevel::Warn,
                format!(
                    "dseq={} not found on chain for owner {}",
                    json!(missing),
                    input.owner
                ),
            );
        }
        let wallet = balance
            .amount
            .parse::<Dec>()
            .map_err(|error| WorkflowError::failed(format!("amount: {error}")))?
            .floor();
        let policy = Policy {
            look_ahead_blocks: hours_to_blocks(input.look_ahead_h, input.seconds_per_block),
            target_runway_blocks: hours_to_blocks(input.target_runway_h, input.seconds_per_block),
            max_per_deposit: amounts.max_per_deposit,
            daily_cap: amounts.daily_cap,
            cap_used: cap_used.max(0) as u128,
            wallet_headroom: amounts.wallet_headroom,
            cooldown: chrono::Duration::minutes(input.cooldown_min as i64),
        };
        let plan = plan_topups(&policy, height as u128, now, &views, wallet);

        let mut reports = Vec::with_capacity(plan.len());
        let mut deposited = 0u128;
        for mut decided in plan {
            let level = match decided.decision {
                Decision::Skip {
                    reason: SkipReason::InsufficientBalance | SkipReason::DailyCapReached,
                } => LogLevel::Warn,
                _ => LogLevel::Info,
            };
            let mut report = DeploymentReport {
                decided: decided.clone(),
                tx_hash: None,
                height: None,
                error: None,
            };
            let Decision::Deposit { amount } = decided.decision else {
                ctx.log(level, decided.log_line());
                reports.push(report);
                continue;
            };
            if input.dry_run {
                ctx.log(level, format!("{} dry_run=true", decided.log_line()));
                reports.push(report);
                continue;
            }
            ctx.log(level, decided.log_line());
            let dseq = decided.dseq.clone();
            // Reserve the cap first: another run may have spent it since we read it.
            let reserve_step = format!("cap/{dseq}");
            let reserved = ctx
                .reserve_budget(
                    &reserve_step,
                    &budget,
                    amount as i64,
                    amounts.daily_cap as i64,
                )
                .await?;
            if !reserved.granted {
                decided.decision = Decision::Skip {
                    reason: SkipReason::DailyCapReached,
                };
                ctx.log(LogLevel::Warn, decided.log_line());
                report.decided = decided;
                reports.push(report);
                continue;
            }
            match deposit(
                ctx,
                &EscrowDeposit {
                    owner: &input.owner,
                    dseq: &dseq,
                    amount,
                    denom: &input.denom,
                    seconds_per_block: input.seconds_per_block,
                    steps: &format!("deposit/{dseq}"),
                    subject: &format!("dseq={dseq}"),
                },
            )
            .await?
            {
                Ok((tx_hash, landed_at)) => {
                    deposited += amount;
                    let confirmed_at = ctx.now().await?;
                    let record = DepositRecord {
                        owner: input.owner.clone(),
                        dseq: dseq.clone(),
                        at: confirmed_at,
                        amount: amount.to_string(),
                        tx_hash: tx_hash.clone(),
                    };
                    let documents = ctx.documents();
                    let key = format!("{}/{dseq}/{tx_hash}", input.owner);
                    ctx.step(format!("record/{dseq}"))
                        .run(move |_| async move {
                            // Idempotent: a re-run of this body finds it already there.
                            documents
                                .insert_if_absent(DEPOSITS, &key, &record)
                                .await
                                .retryable()
                        })
                        .await?;
                    ctx.log(
                        LogLevel::Info,
                        format!("dseq={dseq} deposit confirmed amount={amount} tx={tx_hash} height={landed_at}"),
                    );
                    report.tx_hash = Some(tx_hash);
                    report.height = Some(landed_at);
                }
                Err(reason) => {
                    ctx.release_budget(&format!("cap-release/{dseq}"), &budget, &reserve_step)
                        .await?;
                    ctx.log(
                        LogLevel::Error,
                        format!("dseq={dseq} deposit failed amount={amount}: {reason}"),
                    );
                    report.error = Some(reason);
                }
            }
            reports.push(report);
        }
        // A deposit the chain refused must not hide in a completed run: every decision
        // and deposit is in the logs and the deposits made are recorded (cool-down, cap),
        // so the sweep ends, then the run fails naming each refusal.
        let refused: Vec<String> = reports
            .iter()
            .filter_map(|report| {
                let error = report.error.as_ref()?;
                Some(format!("dseq={}: {error}", report.decided.dseq))
            })
            .collect();
        if !refused.is_empty() {
            return Err(WorkflowError::failed(format!(
                "{} deposit(s) refused ({deposited}{} deposited by the others): {}",
                refused.len(),
                input.denom,
                refused.join("; ")
            )));
        }
        Ok(TopUpReport {
            owner: input.owner,
            height,
            dry_run: input.dry_run,
            deposited,
            deployments: reports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn input(value: Value) -> TopUpInput {
        serde_json::from_value(value).expect("decodes")
    }

    fn valid() -> Value {
        json!({"owner": "akash1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "dseqs": ["123"],
               "look_ahead_h": 24, "target_runway_h": 48, "max_per_deposit": "5000000uakt",
               "daily_cap": "20000000uakt", "wallet_headroom": "1000000uakt", "dry_run": false})
    }

    #[test]
    fn the_documented_input_is_valid() {
        assert_eq!(TopUpEscrow.validate(&input(valid())), Ok(()));
        let mut all = valid();
        all["dseqs"] = Value::Null;
        assert_eq!(TopUpEscrow.validate(&input(all)), Ok(()));
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases = [
            ("owner", json!("cosmos1abc")),
            ("dseqs", json!([])),
            ("dseqs", json!(["12a"])),
            ("look_ahead_h", json!(0)),
            ("max_per_deposit", json!("5akt")),
            ("daily_cap", json!("lots")),
        ];
        for (field, value) in cases {
            let mut bad = valid();
            bad[field] = value;
            let error = TopUpEscrow.validate(&input(bad)).unwrap_err();
            assert!(error.starts_with(field), "{field}: {error}");
        }
        let mut short_runway = valid();
        short_runway["target_runway_h"] = json!(12);
        assert!(TopUpEscrow
            .validate(&input(short_runway))
            .unwrap_err()
            .contains("target_runway_h"));
    }

    #[test]
    fn daily_budgets_are_per_owner_and_utc_day() {
        let day = DateTime::parse_from_rfc3339("2026-11-23T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            daily_budget("akash1x", day),
            "topup.escrow:akash1x:2026-11-23"
        );
    }
}
