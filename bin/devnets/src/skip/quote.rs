//! The route simulator's arithmetic: decimal prices and percentages parsed exactly, the
//! quote for an amount in, and the minimum out a slippage tolerance allows. Pure, so
//! the rounding is tested here and the HTTP and settlement code only call it.
//!
//! Units: USDC has 6 decimals (base unit "uusdc"), AKT has 6 (base unit `uakt`), so a
//! price of "AKT per USDC" is also "uakt per USDC base unit". For `amount_in` base units:
//!
//! - gross = floor(amount_in × price)
//! - fee = floor(gross × fee_bps / 10 000)
//! - amount out = gross − fee (what `estimated_amount_out` says and the swap delivers)
//! - minimum out for a slippage of s % = floor(amount out × (100 − s) / 100)
//!
//! The price impact is a reported figure (how far the route's own trade moves the
//! simulated pool, already reflected in the price): `/v2/fungible/msgs` refuses a route
//! whose impact exceeds the caller's slippage tolerance.

use alloy::primitives::U256;

/// Fractional digits a [`Decimal`] keeps.
const SCALE_DIGITS: usize = 18;

fn scale() -> U256 {
    U256::from(10u64).pow(U256::from(SCALE_DIGITS))
}

/// A non-negative decimal with up to 18 fractional digits, held exactly (as
/// value × 10¹⁸).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decimal(U256);

impl Decimal {
    /// Parses `"2.5"`, `"0.000001"`, `"3"`; refuses signs, exponents, empty parts and
    /// more than 18 fractional digits, naming `what` in the error.
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        let invalid = || format!("{what} '{text}' is not a non-negative decimal number");
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(invalid());
        }
        if fraction.len() > SCALE_DIGITS {
            return Err(format!(
                "{what} '{text}' has more than {SCALE_DIGITS} decimal places"
            ));
        }
        let digits = format!("{whole}{fraction:0<SCALE_DIGITS$}");
        U256::from_str_radix(&digits, 10)
            .map(Decimal)
            .map_err(|_| invalid())
    }

    /// A whole number.
    pub fn from_integer(value: u64) -> Self {
        Decimal(U256::from(value) * scale())
    }

    /// floor(amount × self).
    pub fn mul_floor(self, amount: U256) -> Option<U256> {
        amount.checked_mul(self.0).map(|product| product / scale())
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.0 / scale();
        let fraction = format!("{:0>SCALE_DIGITS$}", (self.0 % scale()).to_string());
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            write!(f, "{whole}")
        } else {
            write!(f, "{whole}.{fraction}")
        }
    }
}

/// What the simulated pool charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// AKT per USDC (= uakt per USDC base unit).
    pub price: Decimal,
    /// Fee taken from the gross amount out, in basis points (0 ..= 10 000).
    pub fee_bps: u32,
    /// The route's reported price impact, in percent (0 ..= 100).
    pub price_impact_pct: Decimal,
}

impl Pricing {
    /// Checks the ranges (a fee over 100 %, an impact over 100 %).
    pub fn validate(&self) -> Result<(), String> {
        if self.fee_bps > 10_000 {
            return Err(format!(
                "fee_bps {} is more than 10000 (100 %)",
                self.fee_bps
            ));
        }
        if self.price_impact_pct > Decimal::from_integer(100) {
            return Err(format!(
                "price_impact_pct {} is more than 100",
                self.price_impact_pct
            ));
        }
        Ok(())
    }

    /// The quote for `amount_in` USDC base units; `None` when it overflows 256 bits.
    pub fn quote(&self, amount_in: U256) -> Option<Quote> {
        let gross = self.price.mul_floor(amount_in)?;
        let fee = gross.checked_mul(U256::from(self.fee_bps))? / U256::from(10_000u64);
        Some(Quote {
            gross,
            fee,
            amount_out: gross - fee,
        })
    }
}

/// One quote, in uakt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// amount in × price, rounded down.
    pub gross: U256,
    /// The pool's fee, rounded down.
    pub fee: U256,
    /// What the swap delivers: gross − fee.
    pub amount_out: U256,
}

/// floor(amount_out × (100 − slippage) / 100): the least a swap quoted at
/// `amount_out` may deliver. A slippage over 100 % is an error.
pub fn min_amount_out(amount_out: U256, slippage_pct: Decimal) -> Result<U256, String> {
    let hundred = Decimal::from_integer(100);
    if slippage_pct > hundred {
        return Err(format!(
            "slippage_tolerance_percent {slippage_pct} is more than 100"
        ));
    }
    let kept = Decimal(hundred.0 - slippage_pct.0);
    kept.mul_floor(amount_out)
        .map(|scaled| scaled / U256::from(100u64))
        .ok_or_else(|| "amount_out is too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text, "x").unwrap()
    }

    #[test]
    fn decimals_parse_exactly_and_refuse_what_is_not_a_plain_number() {
        assert_eq!(d("2.5").to_string(), "2.5");
        assert_eq!(d("3").to_string(), "3");
        assert_eq!(
            d("0.000000000000000001").to_string(),
            "0.000000000000000001"
        );
        for bad in ["", "-1", "1e3", ".5", "5.", "1.2.3", " 1", "abc", "0x10"] {
            assert!(Decimal::parse(bad, "price").is_err(), "{bad:?}");
        }
        let too_fine = Decimal::parse("0.0000000000000000001", "price").unwrap_err();
        assert_eq!(
            too_fine,
            "price '0.0000000000000000001' has more than 18 decimal places"
        );
    }

    #[test]
    fn quote_rounds_gross_and_fee_down() {
        let pricing = Pricing {
            price: d("2.5"),
            fee_bps: 30,
            price_impact_pct: d("0.5"),
        };
        // 40 USDC → 100 AKT gross, 0.3 % fee = 0.3 AKT.
        let quote = pricing.quote(U256::from(40_000_000u64)).unwrap();
        assert_eq!(quote.gross, U256::from(100_000_000u64));
        assert_eq!(quote.fee, U256::from(300_000u64));
        assert_eq!(quote.amount_out, U256::from(99_700_000u64));
        // 3 base units at 0.333…: gross floor(0.999) = 0, nothing out.
        let tiny = Pricing {
            price: d("0.333"),
            ..pricing
        };
        assert_eq!(tiny.quote(U256::from(3u64)).unwrap().amount_out, U256::ZERO);
        // 7 base units at 2.5 = 17.5 → 17 gross; fee floor(17 × 30 / 10000) = 0.
        let odd = pricing.quote(U256::from(7u64)).unwrap();
        assert_eq!((odd.gross, odd.fee), (U256::from(17u64), U256::ZERO));
        assert!(pricing.quote(U256::MAX).is_none());
    }

    #[test]
    fn min_amount_out_keeps_the_tolerated_share_rounded_down() {
        let out = U256::from(99_700_000u64);
        assert_eq!(
            min_amount_out(out, d("1")).unwrap(),
            U256::from(98_703_000u64)
        );
        assert_eq!(min_amount_out(out, d("0")).unwrap(), out);
        assert_eq!(
            min_amount_out(U256::from(999u64), d("0.5")).unwrap(),
            U256::from(994u64)
        );
        assert_eq!(min_amount_out(out, d("100")).unwrap(), U256::ZERO);
        assert!(min_amount_out(out, d("100.1")).is_err());
    }

    #[test]
    fn pricing_ranges_are_checked() {
        let ok = Pricing {
            price: d("1"),
            fee_bps: 10_000,
            price_impact_pct: d("100"),
        };
        assert!(ok.validate().is_ok());
        assert!(Pricing {
            fee_bps: 10_001,
            ..ok
        }
        .validate()
        .is_err());
        assert!(Pricing {
            price_impact_pct: d("100.5"),
            ..ok
        }
        .validate()
        .is_err());
    }
}
