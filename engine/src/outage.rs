//! Rate-limited reporting of a failing dependency (the database). During an outage every
//! component fails on every attempt; an operator needs one clear line per retry interval
//! and one line when it recovers, not a flood.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Tracks one component's consecutive failures and decides when to say so.
#[derive(Debug)]
pub(crate) struct OutageReporter {
    what: &'static str,
    every: Duration,
    failing_since: Option<Instant>,
    last_report: Option<Instant>,
    suppressed: u64,
}

impl OutageReporter {
    /// Reports failures of `what` at most once per `every` (zero: every failure).
    pub fn new(what: &'static str, every: Duration) -> Self {
        Self {
            what,
            every,
            failing_since: None,
            last_report: None,
            suppressed: 0,
        }
    }

    /// Records a failure; logs it if it is the first or the interval has passed.
    pub fn failure(&mut self, error: &dyn Display, next_try: Option<Duration>) {
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= self.every);
        if !due {
            self.suppressed += 1;
            tracing::debug!(what = self.what, %error, "still failing");
            return;
        }
        let failing_for = format!("{:.1}s", now.duration_since(since).as_secs_f64());
        let retry_in = next_try.map(|d| format!("{:.1}s", d.as_secs_f64()));
        tracing::warn!(
            what = self.what,
            %error,
            failing_for,
            retry_in = retry_in.as_deref().unwrap_or("-"),
            similar_failures_not_shown = self.suppressed,
            "database unavailable"
        );
        self.last_report = Some(now);
        self.suppressed = 0;
    }

    /// Records a success; logs the recovery once if it was failing.
    pub fn success(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                what = self.what,
                outage = format!("{:.1}s", since.elapsed().as_secs_f64()),
                "database reachable again"
            );
            self.last_report = None;
            self.suppressed = 0;
        }
    }
}
