//! What the extension supervisor counts and times, recorded through the [`metrics`]
//! facade like the engine's own figures (`morpheus_engine::metrics`): a process that
//! wants them installs a recorder *before* it loads its extensions (`morpheus up
//! --listen` does), since every handle is resolved when an extension (or a new
//! instance of it) starts. Without a recorder each record does nothing.
//!
//! The hot path builds no labels and takes no lock: the counters and histograms of
//! every declared method are resolved at the handshake, and the failure counters and
//! the restart counter when the extension loads. Only a call to a method the extension
//! did not declare builds its labels on the spot; such methods are labelled
//! [`UNDECLARED_METHOD`] so that a typo in a workflow cannot mint new series.
//!
//! | name | type | labels |
//! |---|---|---|
//! | [`CALLS`] | counter | `extension`, `method`, `outcome` ([`Outcome`]) |
//! | [`CALL_DURATION`] | histogram | `extension`, `method`, `outcome` |
//! | [`FAILURES`] | counter | `extension`, `reason` ([`FailureReason`]) |
//! | [`RESTARTS`] | counter | `extension` |
//! | [`ACTIVE`] | gauge | `protocol` |

use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use ::metrics::{Counter, Gauge, Histogram, Label, Unit};
use morpheus_engine::StepError;

use super::Protocol;

/// Step calls made to an extension, by how they ended.
pub const CALLS: &str = "morpheus_extension_calls_total";
/// How long one step call to an extension took, waiting for a free slot included.
pub const CALL_DURATION: &str = "morpheus_extension_call_duration_seconds";
/// Step calls that failed, by why.
pub const FAILURES: &str = "morpheus_extension_failures_total";
/// Restarts of an extension's instance (each attempt, successful or not).
pub const RESTARTS: &str = "morpheus_extension_restarts_total";
/// Extensions loaded and answering calls, by protocol.
pub const ACTIVE: &str = "morpheus_extensions_active";

/// The `method` label of calls to a method the extension did not declare.
pub const UNDECLARED_METHOD: &str = "(undeclared)";

/// Gives every extension metric its help text and unit in the installed recorder. Call
/// it once after installing one.
pub fn describe() {
    describe_counter!(CALLS, "Step calls made to an extension, by outcome");
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Duration of one step call to an extension, queueing included"
    );
    describe_counter!(
        FAILURES,
        "Step calls to an extension that failed, by reason"
    );
    describe_counter!(RESTARTS, "Restart attempts of an extension's instance");
    describe_gauge!(
        ACTIVE,
        Unit::Count,
        "Extensions loaded and answering calls, by protocol"
    );
}

/// How a call ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered a result.
    Ok,
    /// It failed permanently (an error answer not worth retrying, bad params, a limit).
    Error,
    /// It failed retryably: the engine retries the step at a persisted time.
    Retryable,
}

impl Outcome {
    const ALL: [Self; 3] = [Self::Ok, Self::Error, Self::Retryable];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Retryable => "retryable",
        }
    }

    /// The outcome of a call that ended with `result`.
    pub fn of<T>(result: &Result<T, StepError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(error) if error.is_retryable() => Self::Retryable,
            Err(_) => Self::Error,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a call failed, as far as the supervisor can tell, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The extension answered with an error object (its own verdict).
    Error,
    /// The instance crashed, exited or could not be reached; it is being restarted.
    Crash,
    /// The instance did not answer by the deadline; it is being restarted.
    Timeout,
    /// The instance answered something that is not a well-formed answer (not JSON, a
    /// wrong id, both result and error, an over-long line); it is being restarted.
    BadAnswer,
    /// The call hit the extension's memory limit.
    Memory,
    /// Refused at once: `concurrency` calls running and `queue` more already waiting.
    Busy,
    /// Admitted, but still waiting for a free slot at the deadline.
    Queued,
    /// The params did not match the method's declared schema.
    Schema,
    /// The method is not one the extension declared.
    UnknownMethod,
    /// No instance was ready: it was restarting past the deadline, or stopped.
    Unavailable,
    /// The restart strategy gave up: every call fails until the worker restarts.
    Failed,
}

impl FailureReason {
    const ALL: [Self; 11] = [
        Self::Error,
        Self::Crash,
        Self::Timeout,
        Self::BadAnswer,
        Self::Memory,
        Self::Busy,
        Self::Queued,
        Self::Schema,
        Self::UnknownMethod,
        Self::Unavailable,
        Self::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Crash => "crash",
            Self::Timeout => "timeout",
            Self::BadAnswer => "bad_answer",
            Self::Memory => "memory",
            Self::Busy => "busy",
            Self::Queued => "queued",
            Self::Schema => "schema",
            Self::UnknownMethod => "unknown_method",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The handles of one extension, resolved when it loads.
pub(crate) struct ExtensionMetrics {
    extension: String,
    failures: [Counter; FailureReason::ALL.len()],
    /// Per restart attempt.
    pub restarts: Counter,
    /// This extension's protocol's share of [`ACTIVE`]: +1 while it is ready.
    pub active: Gauge,
}

impl ExtensionMetrics {
    /// Resolves the handles of extension `extension` speaking `protocol`.
    pub fn new(extension: &str, protocol: Protocol) -> Self {
        Self {
            failures: FailureReason::ALL.map(|reason| {
                counter!(FAILURES, "extension" => extension.to_owned(), "reason" => reason.as_str())
            }),
            restarts: counter!(RESTARTS, "extension" => extension.to_owned()),
            active: gauge!(ACTIVE, "protocol" => protocol.as_str()),
            extension: extension.to_owned(),
        }
    }

    /// Counts one failed call.
    pub fn failed(&self, reason: FailureReason) {
        self.failures[reason.index()].increment(1);
    }

    /// Records a call to a method with no resolved handles (building its labels now).
    pub fn call_undeclared(&self, method: &str, outcome: Outcome, took: Duration) {
        MethodMetrics::new(&self.extension, method).record(outcome, took);
    }
}

/// The call counters and durations of one method, by outcome.
pub(crate) struct MethodMetrics {
    calls: [Counter; Outcome::ALL.len()],
    durations: [Histogram; Outcome::ALL.len()],
}

impl MethodMetrics {
    /// Resolves the handles of `method` of `extension`.
    pub fn new(extension: &str, method: &str) -> Self {
        let labels = |outcome: Outcome| {
            vec![
                Label::new("extension", extension.to_owned()),
                Label::new("method", method.to_owned()),
                Label::new("outcome", outcome.as_str()),
            ]
        };
        Self {
            calls: Outcome::ALL.map(|outcome| counter!(CALLS, labels(outcome))),
            durations: Outcome::ALL.map(|outcome| histogram!(CALL_DURATION, labels(outcome))),
        }
    }

    /// Records one call.
    pub fn record(&self, outcome: Outcome, took: Duration) {
        self.calls[outcome.index()].increment(1);
        self.durations[outcome.index()].record(took);
    }
}
