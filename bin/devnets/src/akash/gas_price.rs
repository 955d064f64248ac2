//! The simulator's minimum gas price: a non-negative decimal with 18 fractional digits,
//! exact like the SDK's `LegacyDec`, so `gas limit × price` rounds the way a node's
//! minimum-fee check does (up to the next base unit).

use std::fmt;
use std::str::FromStr;

/// Base units per gas unit, exact to 18 decimals (`0.025` uakt per gas by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GasPrice {
    /// The price in 10⁻¹⁸ base units per gas unit.
    atto: u128,
}

/// 10¹⁸: one base unit in atto units.
const ONE: u128 = 1_000_000_000_000_000_000;

impl GasPrice {
    /// The smallest fee a transaction with this gas limit must pay: `gas × price`,
    /// rounded up to a whole base unit (`u128::MAX` if it overflows).
    pub fn min_fee(self, gas_limit: u64) -> u128 {
        self.atto
            .checked_mul(u128::from(gas_limit))
            .map(|atto| atto.div_ceil(ONE))
            .unwrap_or(u128::MAX)
    }
}

impl fmt::Display for GasPrice {
    /// The shortest exact text: `0.025`, `1`, `0.000000000000000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.atto / ONE, self.atto % ONE);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:018}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for GasPrice {
    type Err = String;

    /// `0.025`, `1`, `1.5`: digits with at most 18 after the point.
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("'{text}' is not a gas price (a decimal like 0.025)");
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 18 {
            return Err(invalid());
        }
        if text.contains('.') && fraction.is_empty() {
            return Err(invalid());
        }
        let whole: u128 = whole.parse().map_err(|_| invalid())?;
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<18}").parse().map_err(|_| invalid())?
        };
        whole
            .checked_mul(ONE)
            .and_then(|atto| atto.checked_add(fraction))
            .map(|atto| Self { atto })
            .ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for text in ["0.025", "1", "1.5", "0.000000000000000001", "12"] {
            assert_eq!(text.parse::<GasPrice>().unwrap().to_string(), text);
        }
        for bad in ["", ".5", "1.", "-1", "0.0000000000000000001", "1e3", "abc"] {
            assert!(bad.parse::<GasPrice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn min_fee_rounds_up_to_a_whole_base_unit() {
        let price: GasPrice = "0.025".parse().unwrap();
        assert_eq!(price.min_fee(200_000), 5_000);
        assert_eq!(price.min_fee(200_001), 5_001); // 5000.025 rounds up
        assert_eq!(price.min_fee(0), 0);
        let huge: GasPrice = "100000000000000000000".parse().unwrap();
        assert_eq!(huge.min_fee(u64::MAX), u128::MAX);
    }
}
