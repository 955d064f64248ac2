//! Market prices as the chain keeps them: a non-negative `LegacyDec` (18 fractional
//! digits), exact, so a bid of `12.5` uakt per block compares with an order's ceiling
//! and drains an escrow the way the chain's decimal arithmetic does.
//!
//! Three spellings meet here: the protobuf wire form of a `LegacyDec` (the integer
//! scaled by 10¹⁸, as decimal text without a point: `12` is
//! `"12000000000000000000"`), the gRPC-gateway JSON form (always 18 decimals:
//! `"12.000000000000000000"`), and the shortest form people write (`"12"`, `"12.5"`).

use std::fmt;
use std::str::FromStr;

/// 10¹⁸: one whole unit in atto units.
pub const ATTO_PER_UNIT: u128 = 1_000_000_000_000_000_000;

/// A non-negative decimal with 18 fractional digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dec {
    /// The value in 10⁻¹⁸ units.
    atto: u128,
}

impl Dec {
    /// Zero.
    pub const ZERO: Self = Self { atto: 0 };

    /// A whole number of units (`None` if it does not fit).
    pub fn from_whole(units: u128) -> Option<Self> {
        units.checked_mul(ATTO_PER_UNIT).map(|atto| Self { atto })
    }

    /// The value in 10⁻¹⁸ units.
    pub fn atto(self) -> u128 {
        self.atto
    }

    /// A value given in 10⁻¹⁸ units.
    pub fn from_atto(atto: u128) -> Self {
        Self { atto }
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.atto == 0
    }

    /// `self + other` (`None` on overflow).
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.atto.checked_add(other.atto).map(|atto| Self { atto })
    }

    /// `self × count` (`None` on overflow), what a resource unit of `count` replicas
    /// costs at this price each.
    pub fn checked_mul_count(self, count: u32) -> Option<Self> {
        self.atto
            .checked_mul(u128::from(count))
            .map(|atto| Self { atto })
    }

    /// Parses the protobuf wire form of a `LegacyDec`: decimal digits of the value
    /// scaled by 10¹⁸, no point, no sign. A point or a sign here is a client that
    /// put the human form on the wire, which the chain's decoder refuses too.
    pub fn from_wire(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty LegacyDec".to_owned());
        }
        if text.starts_with('-') {
            return Err(format!("LegacyDec '{text}' is negative"));
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "LegacyDec '{text}' is not the wire form (the value scaled by 10^18 as an integer, e.g. \"12000000000000000000\" for 12)"
            ));
        }
        text.parse()
            .map(|atto| Self { atto })
            .map_err(|_| format!("LegacyDec '{text}' is too large"))
    }

    /// The protobuf wire form (the value scaled by 10¹⁸ as an integer).
    pub fn to_wire(self) -> String {
        self.atto.to_string()
    }

    /// The gRPC-gateway JSON form: always 18 decimals (`"12.000000000000000000"`).
    pub fn to_sdk_string(self) -> String {
        format!(
            "{}.{:018}",
            self.atto / ATTO_PER_UNIT,
            self.atto % ATTO_PER_UNIT
        )
    }
}

impl fmt::Display for Dec {
    /// The shortest exact text: `12`, `12.5`, `0.000000000000000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.atto / ATTO_PER_UNIT, self.atto % ATTO_PER_UNIT);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:018}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Dec {
    type Err = String;

    /// `12`, `12.5`, `0.000000000000000001`: digits with at most 18 after the point
    /// (the human form, as admin bodies and the gRPC-gateway JSON write it).
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("'{text}' is not a non-negative decimal like 12 or 12.5");
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
            .checked_mul(ATTO_PER_UNIT)
            .and_then(|atto| atto.checked_add(fraction))
            .map(|atto| Self { atto })
            .ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_agree() {
        let twelve_and_a_half: Dec = "12.5".parse().unwrap();
        assert_eq!(twelve_and_a_half.to_wire(), "12500000000000000000");
        assert_eq!(
            Dec::from_wire("12500000000000000000").unwrap(),
            twelve_and_a_half
        );
        assert_eq!(twelve_and_a_half.to_sdk_string(), "12.500000000000000000");
        assert_eq!(twelve_and_a_half.to_string(), "12.5");
        assert_eq!(Dec::from_whole(1000).unwrap().to_string(), "1000");
        assert_eq!(
            "12.000000000000000000".parse::<Dec>().unwrap(),
            Dec::from_whole(12).unwrap()
        );
    }

    #[test]
    fn the_wire_form_refuses_the_human_form_and_signs() {
        for bad in ["", "12.5", "-1", "1e3", " 1"] {
            assert!(Dec::from_wire(bad).is_err(), "{bad:?}");
        }
        let error = Dec::from_wire("1000.0").unwrap_err();
        assert!(error.contains("scaled by 10^18"), "{error}");
        assert!(Dec::from_wire(&"9".repeat(40)).is_err());
    }

    #[test]
    fn human_text_is_checked() {
        for bad in ["", ".5", "1.", "-1", "0.0000000000000000001", "abc"] {
            assert!(bad.parse::<Dec>().is_err(), "{bad:?}");
        }
        assert_eq!("0.000000000000000001".parse::<Dec>().unwrap().atto(), 1);
    }

    #[test]
    fn arithmetic_is_exact_and_checked() {
        let price: Dec = "0.5".parse().unwrap();
        assert_eq!(price.checked_mul_count(3).unwrap().to_string(), "1.5");
        assert_eq!(
            price.checked_add(price).unwrap(),
            Dec::from_whole(1).unwrap()
        );
        assert!(Dec::from_atto(u128::MAX).checked_mul_count(2).is_none());
        assert!(Dec::from_whole(u128::MAX).is_none());
    }
}
