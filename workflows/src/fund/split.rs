//! The funding split, as pure functions: how much of the USDC goes to MOR staking and
//! how much is swapped into AKT, and how the AKT received becomes a deposit.

use serde::{Deserialize, Serialize};

/// The largest amount accepted: 10³⁰ base units (10²⁴ USDC), far above any real
/// balance, so `amount × 100` can never overflow.
pub const MAX_AMOUNT: u128 = 1_000_000_000_000_000_000_000_000_000_000;

/// The USDC amount split between the two legs (base units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Staked on the MOR vault: `floor(amount × stake_share_pct / 100)`.
    pub stake: u128,
    /// Swapped to AKT: the rest, so the two always add up to the amount.
    pub swap: u128,
}

/// Splits `amount` base units: the stake leg gets `floor(amount × share / 100)`, the
/// swap leg the rest. Rounding therefore favours the swap leg by at most one base unit
/// (one millionth of a USDC), and no unit is ever lost or created: `stake + swap ==
/// amount`. `stake_share_pct` above 100 is treated as 100 (validation refuses it
/// before a run starts).
///
/// ```
/// use morpheus_workflows::fund::split;
/// let split = split(100_000_001, 60);
/// assert_eq!((split.stake, split.swap), (60_000_000, 40_000_001));
/// ```
pub fn split(amount: u128, stake_share_pct: u8) -> Split {
    let share = u128::from(stake_share_pct.min(100));
    // `amount ≤ MAX_AMOUNT` keeps this in range; saturate rather than panic otherwise.
    let stake = amount.saturating_mul(share) / 100;
    Split {
        stake,
        swap: amount - stake.min(amount),
    }
}

/// What to deposit of `received` base units once `fee_reserve` is kept back for the
/// wallet's own fees: `None` when nothing would be left.
pub fn deposit_amount(received: u128, fee_reserve: u128) -> Option<u128> {
    received
        .checked_sub(fee_reserve)
        .filter(|amount| *amount > 0)
}

/// Parses a base-unit amount: a non-empty string of ASCII digits, at most
/// [`MAX_AMOUNT`].
pub fn parse_base_units(text: &str) -> Result<u128, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{text}' is not an amount in base units (digits only, e.g. \"100000000\" for 100 USDC)"
        ));
    }
    text.parse::<u128>()
        .ok()
        .filter(|amount| *amount <= MAX_AMOUNT)
        .ok_or_else(|| format!("'{text}' is too large (at most {MAX_AMOUNT})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_floors_the_stake_and_gives_the_rest_to_the_swap() {
        // (amount, share, stake, swap)
        let cases: &[(u128, u8, u128, u128)] = &[
            (100_000_000, 60, 60_000_000, 40_000_000),
            (100_000_001, 60, 60_000_000, 40_000_001),
            (100_000_099, 60, 60_000_059, 40_000_040),
            (1, 60, 0, 1),
            (2, 50, 1, 1),
            (3, 50, 1, 2),
            (0, 60, 0, 0),
            (7, 0, 0, 7),
            (7, 100, 7, 0),
            (7, 250, 7, 0),
            (999_999, 33, 329_999, 670_000),
            (MAX_AMOUNT, 60, MAX_AMOUNT / 100 * 60, MAX_AMOUNT / 100 * 40),
        ];
        for &(amount, share, stake, swap) in cases {
            let got = split(amount, share);
            assert_eq!(got, Split { stake, swap }, "split({amount}, {share})");
            assert_eq!(got.stake + got.swap, amount, "nothing lost: {amount}");
        }
    }

    #[test]
    fn the_deposit_keeps_the_fee_reserve_back() {
        let cases: &[(u128, u128, Option<u128>)] = &[
            (99_700_000, 50_000, Some(99_650_000)),
            (50_001, 50_000, Some(1)),
            (50_000, 50_000, None),
            (10, 50_000, None),
            (10, 0, Some(10)),
            (0, 0, None),
        ];
        for &(received, reserve, expected) in cases {
            assert_eq!(
                deposit_amount(received, reserve),
                expected,
                "{received} - {reserve}"
            );
        }
    }

    #[test]
    fn amounts_are_digits_within_range() {
        assert_eq!(parse_base_units("100000000"), Ok(100_000_000));
        assert_eq!(parse_base_units("0"), Ok(0));
        for bad in ["", "1.5", "-1", "1e6", " 1", "100 USDC"] {
            let error = parse_base_units(bad).unwrap_err();
            assert!(error.contains("base units"), "{bad}: {error}");
        }
        let too_large = format!("{}0", MAX_AMOUNT);
        assert!(parse_base_units(&too_large)
            .unwrap_err()
            .contains("too large"));
    }
}
