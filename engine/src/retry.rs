//! Per-step retry policies. The next attempt time is computed here and persisted by the
//! engine (the run parks in `retrying`), so a retry schedule survives crashes.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Why a [`RetryPolicy`] cannot work: names the field and the rule it breaks
/// (`retry.max_attempts must be at least 1`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRetryPolicy(pub &'static str);

/// How a failing step is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    pub initial_delay_ms: u64,
    /// Each further delay is the previous one times this.
    pub multiplier: f64,
    /// Upper bound on any delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Fraction of each delay (0.0–1.0) replaced by random jitter, so retries of many
    /// runs do not arrive in lockstep.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay_ms: 1_000,
            multiplier: 2.0,
            max_delay_ms: 60_000,
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), InvalidRetryPolicy> {
        if self.max_attempts == 0 {
            return Err(InvalidRetryPolicy("retry.max_attempts must be at least 1"));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(InvalidRetryPolicy(
                "retry.multiplier must be a finite number >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(InvalidRetryPolicy("retry.jitter must be between 0 and 1"));
        }
        Ok(())
    }

    /// The delay after the `attempt`-th failed attempt (1-based), or `None` when no
    /// attempts are left.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exponent = attempt.saturating_sub(1) as i32;
        let base = (self.initial_delay_ms as f64 * self.multiplier.powi(exponent))
            .min(self.max_delay_ms as f64);
        let jitter = if self.jitter > 0.0 {
            base * self.jitter * rand::thread_rng().gen_range(-1.0..=1.0)
        } else {
            0.0
        };
        Some(Duration::from_millis((base + jitter).max(0.0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_stop_after_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_delay_ms: 100,
            multiplier: 3.0,
            max_delay_ms: 500,
            jitter: 0.0,
        };
        assert_eq!(policy.delay_after(1), Some(Duration::from_millis(100)));
        assert_eq!(policy.delay_after(2), Some(Duration::from_millis(300)));
        assert_eq!(policy.delay_after(3), Some(Duration::from_millis(500)));
        assert_eq!(policy.delay_after(4), Some(Duration::from_millis(500)));
        assert_eq!(policy.delay_after(5), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_delay_ms: 1000,
            jitter: 0.2,
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            let delay = policy.delay_after(1).unwrap().as_millis();
            assert!((800..=1200).contains(&delay), "delay {delay}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(zero.validate().is_err());
        let shrinking = RetryPolicy {
            multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert!(shrinking.validate().is_err());
    }
}
