//! Exact amounts: integer coins (`5000000uakt`) and Cosmos decimals (`sdk.Dec`, 18
//! fractional digits, as in lease prices and escrow balances). No floating point: a
//! rounding error in a deposit amount is real money.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Text that is not an amount, coin or denomination (`'5akt' is not a coin like
/// 5000000uakt`): what parsing [`Decimal`], [`Coin`], [`DecCoin`] and denominations
/// returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AmountError(pub String);

impl From<AmountError> for String {
    /// The message, for callers that pass errors on as text.
    fn from(error: AmountError) -> Self {
        error.0
    }
}

/// A non-negative decimal with 18 fractional digits, stored exactly (in units of
/// 10⁻¹⁸). This is how the chain writes lease prices (`"10.500000000000000000"`) and
/// escrow balances.
///
/// ```
/// use morpheus_executors::cosmos::Decimal;
/// let rate: Decimal = "10.5".parse().unwrap();
/// assert_eq!(rate.to_string(), "10.5");
/// assert_eq!(rate.to_sdk_string(), "10.500000000000000000");
/// assert_eq!(rate.ceil(), 11);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(u128);

impl Decimal {
    /// Fractional digits.
    pub const PRECISION: u32 = 18;
    /// 10¹⁸: one whole unit.
    pub const ONE_ATTO: u128 = 1_000_000_000_000_000_000;
    /// Zero.
    pub const ZERO: Decimal = Decimal(0);

    /// The decimal `n` (`None` on overflow, above about 3.4·10²⁰).
    pub fn from_integer(n: u128) -> Option<Self> {
        n.checked_mul(Self::ONE_ATTO).map(Self)
    }

    /// The decimal with this many 10⁻¹⁸ units.
    pub fn from_atto(atto: u128) -> Self {
        Self(atto)
    }

    /// Its value in 10⁻¹⁸ units.
    pub fn atto(self) -> u128 {
        self.0
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The integer part (rounded down).
    pub fn floor(self) -> u128 {
        self.0 / Self::ONE_ATTO
    }

    /// Rounded up to an integer.
    pub fn ceil(self) -> u128 {
        self.0.div_ceil(Self::ONE_ATTO)
    }

    /// Sum, `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self × n`, `None` on overflow.
    pub fn checked_mul_integer(self, n: u128) -> Option<Self> {
        self.0.checked_mul(n).map(Self)
    }

    /// The chain's canonical text: always 18 fractional digits.
    pub fn to_sdk_string(self) -> String {
        format!(
            "{}.{:018}",
            self.0 / Self::ONE_ATTO,
            self.0 % Self::ONE_ATTO
        )
    }
}

impl fmt::Display for Decimal {
    /// The shortest exact text: `10`, `10.5`, `0.000000000000000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::ONE_ATTO;
        let fraction = self.0 % Self::ONE_ATTO;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:018}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Decimal {
    type Err = AmountError;

    /// Accepts `10`, `10.5`, `10.500000000000000000`; at most 18 fractional digits; no
    /// sign, exponent or separators.
    fn from_str(text: &str) -> Result<Self, AmountError> {
        let invalid = || {
            AmountError(format!(
                "'{text}' is not a non-negative decimal with at most 18 fractional digits"
            ))
        };
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || fraction.len() > Self::PRECISION as usize
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid());
        }
        let whole: u128 = whole.parse().map_err(|_| invalid())?;
        let mut fraction_atto: u128 = 0;
        for (i, digit) in fraction.bytes().enumerate() {
            let place = 10u128.pow(Self::PRECISION - 1 - i as u32);
            fraction_atto += u128::from(digit - b'0') * place;
        }
        whole
            .checked_mul(Self::ONE_ATTO)
            .and_then(|atto| atto.checked_add(fraction_atto))
            .map(Self)
            .ok_or_else(|| AmountError(format!("'{text}' is too large")))
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a denomination the way the Cosmos SDK does: a letter, then 2–127 of
/// letters, digits, `/ : . _ -`.
pub fn validate_denom(denom: &str) -> Result<(), AmountError> {
    let mut bytes = denom.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"/:._-".contains(&b));
    if first_ok && rest_ok && (3..=128).contains(&denom.len()) {
        Ok(())
    } else {
        Err(AmountError(format!(
            "'{denom}' is not a valid denomination"
        )))
    }
}

/// An integer amount of a denomination, written `5000000uakt`.
///
/// ```
/// use morpheus_executors::cosmos::Coin;
/// let coin: Coin = "5000000uakt".parse().unwrap();
/// assert_eq!((coin.amount, coin.denom.as_str()), (5_000_000, "uakt"));
/// assert_eq!(Coin::parse_with_default("42", "uakt").unwrap().to_string(), "42uakt");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Coin {
    /// Amount in the denomination's base unit.
    pub amount: u128,
    /// Denomination (`uakt`).
    pub denom: String,
}

impl Coin {
    /// A coin.
    pub fn new(amount: u128, denom: impl Into<String>) -> Self {
        Self {
            amount,
            denom: denom.into(),
        }
    }

    /// Parses `5000000uakt`, or a bare `5000000` meaning `default_denom`.
    pub fn parse_with_default(text: &str, default_denom: &str) -> Result<Self, AmountError> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let amount = text
                .parse()
                .map_err(|_| AmountError(format!("'{text}' is too large")))?;
            return Ok(Self::new(amount, default_denom));
        }
        text.parse()
    }
}

impl fmt::Display for Coin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.denom)
    }
}

impl FromStr for Coin {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Self, AmountError> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .filter(|&at| at > 0)
            .ok_or_else(|| AmountError(format!("'{text}' is not a coin like 5000000uakt")))?;
        let (amount, denom) = text.split_at(split);
        validate_denom(denom).map_err(|error| AmountError(format!("'{text}': {error}")))?;
        let amount = amount
            .parse()
            .map_err(|_| AmountError(format!("'{text}': amount is too large")))?;
        Ok(Self::new(amount, denom))
    }
}

/// A decimal amount of a denomination, written `0.025uakt` (gas prices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecCoin {
    /// Amount.
    pub amount: Decimal,
    /// Denomination.
    pub denom: String,
}

impl fmt::Display for DecCoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.denom)
    }
}

impl FromStr for DecCoin {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Self, AmountError> {
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&at| at > 0)
            .ok_or_else(|| AmountError(format!("'{text}' is not a decimal coin like 0.025uakt")))?;
        let (amount, denom) = text.split_at(split);
        validate_denom(denom).map_err(|error| AmountError(format!("'{text}': {error}")))?;
        Ok(Self {
            amount: amount.parse()?,
            denom: denom.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_and_print_both_ways() {
        let cases = [
            ("0", "0", "0.000000000000000000"),
            ("10", "10", "10.000000000000000000"),
            ("10.5", "10.5", "10.500000000000000000"),
            ("1.378800000000000000", "1.3788", "1.378800000000000000"),
            (
                "0.000000000000000001",
                "0.000000000000000001",
                "0.000000000000000001",
            ),
        ];
        for (input, short, sdk) in cases {
            let value: Decimal = input.parse().unwrap();
            assert_eq!(value.to_string(), short, "{input}");
            assert_eq!(value.to_sdk_string(), sdk, "{input}");
            assert_eq!(sdk.parse::<Decimal>().unwrap(), value);
        }
    }

    #[test]
    fn decimals_reject_what_the_chain_would_not_write() {
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e3",
            "1.0000000000000000001",
            "1,5",
            " 1",
        ] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?} accepted");
        }
        assert!("999999999999999999999999".parse::<Decimal>().is_err());
    }

    #[test]
    fn decimal_rounding_and_arithmetic() {
        let rate: Decimal = "2.25".parse().unwrap();
        assert_eq!(rate.floor(), 2);
        assert_eq!(rate.ceil(), 3);
        assert_eq!(Decimal::from_integer(7).unwrap().ceil(), 7);
        assert_eq!(rate.checked_mul_integer(4).unwrap().to_string(), "9");
        let sum = rate.checked_add("0.75".parse().unwrap()).unwrap();
        assert_eq!(sum, Decimal::from_integer(3).unwrap());
        assert!(Decimal::from_atto(u128::MAX).checked_add(rate).is_none());
    }

    #[test]
    fn coins_parse_with_and_without_denomination() {
        let coin: Coin = "5000000uakt".parse().unwrap();
        assert_eq!(coin, Coin::new(5_000_000, "uakt"));
        assert_eq!(coin.to_string(), "5000000uakt");
        let ibc: Coin = "7ibc/27394FB092D2ECCD".parse().unwrap();
        assert_eq!(ibc.denom, "ibc/27394FB092D2ECCD");
        assert_eq!(
            Coin::parse_with_default("12", "uakt").unwrap(),
            Coin::new(12, "uakt")
        );
        for bad in ["uakt", "12", "12u", "12 uakt", "-5uakt", "5.5uakt", ""] {
            assert!(bad.parse::<Coin>().is_err(), "{bad:?} accepted");
        }
        assert!(Coin::parse_with_default("abc", "uakt").is_err());
    }

    #[test]
    fn dec_coins_parse_gas_prices() {
        let price: DecCoin = "0.025uakt".parse().unwrap();
        assert_eq!(price.amount.to_string(), "0.025");
        assert_eq!(price.denom, "uakt");
        assert!("uakt".parse::<DecCoin>().is_err());
        assert!("0.025".parse::<DecCoin>().is_err());
    }
}
