//! The top-up decision, as a pure function: given the chain height, each deployment's
//! escrow and lease rate, the wallet and the policy, decide per deployment whether to
//! deposit and how much. No I/O, so every rule is a table test.
//!
//! Amounts are micro-denom (`uakt`) [`Dec`]s: escrow balances and lease rates on Akash
//! are decimal coins (rates are often fractions of a uakt per block), so they are kept as
//! fixed-point numbers with 18 decimals, never floats. Deposits are whole uakt.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Text that is not an amount of the sweep's denomination (`'5akt' is in 'akt',
/// expected 'uakt'`): what [`parse_coin`] and parsing a [`Dec`] return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAmount(pub String);

/// A non-negative fixed-point amount with 18 decimals (like Cosmos `Dec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Dec(u128);

const SCALE: u128 = 1_000_000_000_000_000_000;

impl Dec {
    /// Zero.
    pub const ZERO: Dec = Dec(0);

    /// The amount with this many 10⁻¹⁸ units (how the chain's decimals count too).
    pub fn from_atto(atto: u128) -> Self {
        Dec(atto)
    }

    /// A whole number.
    pub fn whole(value: u128) -> Self {
        Dec(value * SCALE)
    }

    /// Rounded down to a whole number.
    pub fn floor(self) -> u128 {
        self.0 / SCALE
    }

    /// Rounded up to a whole number.
    pub fn ceil(self) -> u128 {
        self.0.div_ceil(SCALE)
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self × n`.
    pub fn times(self, n: u128) -> Dec {
        Dec(self.0.saturating_mul(n))
    }

    /// How many whole `unit`s fit in `self` (`unit` must not be zero).
    pub fn whole_times(self, unit: Dec) -> u128 {
        self.0 / unit.0
    }

    /// `self - other`, or zero.
    pub fn saturating_sub(self, other: Dec) -> Dec {
        Dec(self.0.saturating_sub(other.0))
    }
}

impl FromStr for Dec {
    type Err = InvalidAmount;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidAmount(format!("'{text}' is not a non-negative decimal amount"));
        let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 18 {
            return Err(bad());
        }
        let whole: u128 = whole.parse().map_err(|_| bad())?;
        let mut fraction_scaled: u128 = 0;
        if !fraction.is_empty() {
            fraction_scaled = fraction.parse::<u128>().map_err(|_| bad())?
                * 10u128.pow(18 - fraction.len() as u32);
        }
        whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(fraction_scaled))
            .map(Dec)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / SCALE;
        let fraction = self.0 % SCALE;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:018}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Dec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a coin like `5000000uakt` into its amount, checking the denom.
pub fn parse_coin(text: &str, denom: &str) -> Result<u128, InvalidAmount> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (amount, found_denom) = text.split_at(digits_end);
    if amount.is_empty() {
        return Err(InvalidAmount(format!(
            "'{text}' is not a coin (expected e.g. 5000000{denom})"
        )));
    }
    if found_denom != denom {
        return Err(InvalidAmount(format!(
            "'{text}' is in '{found_denom}', expected '{denom}'"
        )));
    }
    amount
        .parse()
        .map_err(|_| InvalidAmount(format!("'{text}': amount out of range")))
}

/// The policy, already in blocks and micro-denom.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Top up when the predicted close is within this many blocks.
    pub look_ahead_blocks: u128,
    /// Deposit enough for this many blocks of runway.
    pub target_runway_blocks: u128,
    /// Most per deposit.
    pub max_per_deposit: u128,
    /// Daily cap across runs.
    pub daily_cap: u128,
    /// Already deposited today (across runs).
    pub cap_used: u128,
    /// Never spend the wallet below this.
    pub wallet_headroom: u128,
    /// Skip a deployment topped up more recently than this.
    pub cooldown: chrono::Duration,
}

/// Hours to blocks at `seconds_per_block`, rounded up.
pub fn hours_to_blocks(hours: f64, seconds_per_block: f64) -> u128 {
    (hours * 3600.0 / seconds_per_block).ceil().max(0.0) as u128
}

/// One deployment as read from the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentView {
    /// Deployment sequence number.
    pub dseq: String,
    /// Open (false: closed).
    pub open: bool,
    /// Escrow balance (micro-denom).
    pub funds: Dec,
    /// Sum of its leases' prices per block (micro-denom).
    pub rate_per_block: Dec,
    /// When this deployment was last topped up by us, if known.
    pub last_topup_at: Option<DateTime<Utc>>,
}

/// Why a deployment is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The deployment is closed.
    Closed,
    /// No lease charges it.
    ZeroRate,
    /// Topped up within the cool-down.
    CoolDown,
    /// Its escrow lasts beyond the look-ahead window.
    Healthy,
    /// Today's cap is used up.
    DailyCapReached,
    /// The wallet cannot pay without going below the headroom.
    InsufficientBalance,
}

impl SkipReason {
    /// Human text for logs and reports.
    pub fn text(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::ZeroRate => "zero rate",
            Self::CoolDown => "topped up within cool-down",
            Self::Healthy => "healthy",
            Self::DailyCapReached => "daily cap reached",
            Self::InsufficientBalance => "insufficient balance",
        }
    }
}

/// The decision for one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Deposit this many micro-denom.
    Deposit {
        /// Amount.
        amount: u128,
    },
    /// Leave it alone.
    Skip {
        /// Why.
        reason: SkipReason,
    },
}

/// A decision with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    /// Deployment sequence number.
    pub dseq: String,
    /// Escrow balance.
    pub funds: Dec,
    /// Rate per block.
    pub rate_per_block: Dec,
    /// Height at which the escrow runs dry (none when the rate is zero).
    pub predicted_close: Option<u128>,
    /// What to do.
    #[serde(flatten)]
    pub decision: Decision,
}

impl Decided {
    /// The log line: `dseq=… funds=… rate=… predicted_close=… decision=… amount=…`.
    pub fn log_line(&self) -> String {
        let close = self
            .predicted_close
            .map(|h| h.to_string())
            .unwrap_or_else(|| "never".into());
        match &self.decision {
            Decision::Deposit { amount } => format!(
                "dseq={} funds={} rate={} predicted_close={close} decision=deposit amount={amount}",
                self.dseq, self.funds, self.rate_per_block
            ),
            Decision::Skip { reason } => format!(
                "dseq={} funds={} rate={} predicted_close={close} decision=skip reason=\"{}\"",
                self.dseq,
                self.funds,
                self.rate_per_block,
                reason.text()
            ),
        }
    }
}

/// Decides for every deployment, in order. Deposits earlier in the list use up the cap
/// and the wallet before later ones are decided, so the plan as a whole respects both.
pub fn plan_topups(
    policy: &Policy,
    height: u128,
    now: DateTime<Utc>,
    deployments: &[DeploymentView],
    wallet_balance: u128,
) -> Vec<Decided> {
    let mut cap_left = policy.daily_cap.saturating_sub(policy.cap_used);
    let mut spendable = wallet_balance.saturating_sub(policy.wallet_headroom);
    deployments
        .iter()
        .map(|deployment| {
            let predicted_close = (!deployment.rate_per_block.is_zero())
                .then(|| height + deployment.funds.whole_times(deployment.rate_per_block));
            let decided = |decision| Decided {
                dseq: deployment.dseq.clone(),
                funds: deployment.funds,
                rate_per_block: deployment.rate_per_block,
                predicted_close,
                decision,
            };
            let skip = |reason| decided(Decision::Skip { reason });
            if !deployment.open {
                return skip(SkipReason::Closed);
            }
            let Some(close) = predicted_close else {
                return skip(SkipReason::ZeroRate);
            };
            if deployment
                .last_topup_at
                .is_some_and(|at| now - at < policy.cooldown)
            {
                return skip(SkipReason::CoolDown);
            }
            if close > height + policy.look_ahead_blocks {
                return skip(SkipReason::Healthy);
            }
            let target = deployment.rate_per_block.times(policy.target_runway_blocks);
            let needed = target.saturating_sub(deployment.funds).ceil();
            if needed == 0 {
                return skip(SkipReason::Healthy);
            }
            let amount = needed.min(policy.max_per_deposit).min(cap_left);
            if amount == 0 {
                return skip(SkipReason::DailyCapReached);
            }
            if amount > spendable {
                // Never a partial deposit for lack of funds: the operator must refill.
                return skip(SkipReason::InsufficientBalance);
            }
            cap_left -= amount;
            spendable -= amount;
            decided(Decision::Deposit { amount })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Dec {
        text.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            // 24 h and 48 h at 6.174 s per block.
            look_ahead_blocks: hours_to_blocks(24.0, 6.174),
            target_runway_blocks: hours_to_blocks(48.0, 6.174),
            max_per_deposit: 5_000_000,
            daily_cap: 20_000_000,
            cap_used: 0,
            wallet_headroom: 1_000_000,
            cooldown: chrono::Duration::minutes(10),
        }
    }

    fn deployment(dseq: &str, funds: &str, rate: &str) -> DeploymentView {
        DeploymentView {
            dseq: dseq.into(),
            open: true,
            funds: dec(funds),
            rate_per_block: dec(rate),
            last_topup_at: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn decimal_amounts_parse_and_print_exactly() {
        assert_eq!(dec("5000000.000000000000000000").to_string(), "5000000");
        assert_eq!(dec("1.5").to_string(), "1.5");
        assert_eq!(
            dec("0.000000000000000001").to_string(),
            "0.000000000000000001"
        );
        assert!("1.0000000000000000001".parse::<Dec>().is_err());
        assert!("-1".parse::<Dec>().is_err());
        assert!("".parse::<Dec>().is_err());
        assert_eq!(dec("2.5").ceil(), 3);
        assert_eq!(dec("2.5").floor(), 2);
    }

    #[test]
    fn coins_parse_with_their_denom() {
        assert_eq!(parse_coin("5000000uakt", "uakt"), Ok(5_000_000));
        assert!(parse_coin("5akt", "uakt")
            .unwrap_err()
            .to_string()
            .contains("expected 'uakt'"));
        assert!(parse_coin("uakt", "uakt").is_err());
    }

    #[test]
    fn hours_become_blocks_rounded_up() {
        assert_eq!(hours_to_blocks(24.0, 6.174), 13_995);
        assert_eq!(hours_to_blocks(48.0, 6.174), 27_989);
        assert_eq!(hours_to_blocks(1.0, 6.0), 600);
    }

    #[test]
    fn decision_table() {
        let height = 1_000_000;
        let look_ahead = policy().look_ahead_blocks; // 13 995
        let cases: Vec<(&str, DeploymentView, Decision, Option<u128>)> = vec![
            (
                "healthy: lasts 20 000 blocks > look-ahead",
                deployment("1", "20000", "1"),
                Decision::Skip {
                    reason: SkipReason::Healthy,
                },
                Some(height + 20_000),
            ),
            (
                "draining: 10 000 blocks left -> top up to 27 989 blocks",
                deployment("2", "10000", "1"),
                Decision::Deposit { amount: 17_989 },
                Some(height + 10_000),
            ),
            (
                "exactly at the window edge is due",
                deployment("3", &look_ahead.to_string(), "1"),
                Decision::Deposit {
                    amount: 27_989 - look_ahead,
                },
                Some(height + look_ahead),
            ),
            (
                "fractional rate rounds the deposit up to a whole uakt (13 994.5)",
                deployment("4", "0", "0.5"),
                Decision::Deposit { amount: 13_995 },
                Some(height),
            ),
            (
                "large need is capped per deposit",
                deployment("5", "0", "1000"),
                Decision::Deposit { amount: 5_000_000 },
                Some(height),
            ),
            (
                "zero rate",
                deployment("6", "5", "0"),
                Decision::Skip {
                    reason: SkipReason::ZeroRate,
                },
                None,
            ),
        ];
        for (name, view, expected, close) in cases {
            let decided = plan_topups(&policy(), height, now(), &[view], 100_000_000);
            assert_eq!(decided[0].decision, expected, "{name}");
            assert_eq!(decided[0].predicted_close, close, "{name}");
        }
    }

    #[test]
    fn closed_and_cooling_down_deployments_are_skipped() {
        let mut closed = deployment("1", "0", "1");
        closed.open = false;
        let mut recent = deployment("2", "0", "1");
        recent.last_topup_at = Some(now() - chrono::Duration::minutes(5));
        let mut earlier = deployment("3", "0", "1");
        earlier.last_topup_at = Some(now() - chrono::Duration::minutes(15));
        let decided = plan_topups(
            &policy(),
            10,
            now(),
            &[closed, recent, earlier],
            100_000_000,
        );
        assert_eq!(
            decided[0].decision,
            Decision::Skip {
                reason: SkipReason::Closed
            }
        );
        assert_eq!(
            decided[1].decision,
            Decision::Skip {
                reason: SkipReason::CoolDown
            }
        );
        assert!(matches!(decided[2].decision, Decision::Deposit { .. }));
    }

    #[test]
    fn daily_cap_counts_earlier_deposits_and_other_runs() {
        let mut policy = policy();
        policy.cap_used = 16_000_000; // deposited by earlier runs today
        let views = [
            deployment("1", "0", "1000"), // wants 5 000 000: gets the 4 000 000 left
            deployment("2", "0", "1000"), // nothing left
        ];
        let decided = plan_topups(&policy, 10, now(), &views, 100_000_000);
        assert_eq!(decided[0].decision, Decision::Deposit { amount: 4_000_000 });
        assert_eq!(
            decided[1].decision,
            Decision::Skip {
                reason: SkipReason::DailyCapReached
            }
        );
    }

    #[test]
    fn wallet_headroom_is_never_spent_and_deposits_are_never_partial() {
        // 6 000 000 in the wallet, 1 000 000 headroom: 5 000 000 spendable.
        let views = [
            deployment("1", "0", "1000"), // 5 000 000: fits exactly
            deployment("2", "0", "0.1"),  // 2 799 wanted: nothing left
        ];
        let decided = plan_topups(&policy(), 10, now(), &views, 6_000_000);
        assert_eq!(decided[0].decision, Decision::Deposit { amount: 5_000_000 });
        assert_eq!(
            decided[1].decision,
            Decision::Skip {
                reason: SkipReason::InsufficientBalance
            }
        );
        // 27 989 needed, 10 000 spendable: skipped, not a 10 000 deposit.
        let poor = plan_topups(
            &policy(),
            10,
            now(),
            &[deployment("3", "0", "1")],
            1_010_000,
        );
        assert_eq!(
            poor[0].decision,
            Decision::Skip {
                reason: SkipReason::InsufficientBalance
            }
        );
    }

    #[test]
    fn log_lines_carry_the_numbers() {
        let decided = plan_topups(
            &policy(),
            100,
            now(),
            &[deployment("42", "10", "0.5")],
            100_000_000,
        );
        let line = decided[0].log_line();
        assert!(
            line.starts_with(
                "dseq=42 funds=10 rate=0.5 predicted_close=120 decision=deposit amount="
            ),
            "{line}"
        );
    }
}
