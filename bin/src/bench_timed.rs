//! What the flow benchmarks (`bench fund`, `bench deploy`) share: [`Timed`], an
//! executor wrapper that records how long each call took, so they can subtract the
//! chains' and providers' own latency from the wall time and report the engine's; and
//! the arithmetic of their reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use morpheus_engine::{ErrorCode, ExecError, ExecOutput, ExecRequest, Executor};

/// Time spent inside executor calls, by idempotency key (`run/step`).
pub(crate) type CallTimes = Arc<Mutex<HashMap<String, Duration>>>;

/// An executor that times its inner executor's calls (the flow benchmarks subtract
/// them from the wall time to get the engine's own).
pub(crate) struct Timed<E> {
    /// The executor timed.
    pub inner: E,
    /// Where its call times go.
    pub times: CallTimes,
}

#[async_trait]
impl<E: Executor> Executor for Timed<E> {
    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        let key = request.idempotency_key.clone();
        let started = Instant::now();
        let result = self.inner.call(request).await;
        *self
            .times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += started.elapsed();
        result
    }

    fn error_code(&self, message: &str) -> Option<ErrorCode> {
        self.inner.error_code(message)
    }
}

/// A duration in milliseconds.
pub(crate) fn ms(duration: chrono::Duration) -> f64 {
    duration.num_microseconds().unwrap_or_default() as f64 / 1000.0
}

/// Rounded to three decimals (microseconds, for milliseconds).
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The median of `values` (sorted in place; 0 for none).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
