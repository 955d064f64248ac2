//! Error types. The variant carries the retry meaning (`Retryable` / `Permanent`),
//! so callers never have to guess whether trying again could help; an optional
//! [`ErrorCode`] names the kind of failure for callers in other crates, so they branch
//! on a stable name instead of on message text.

use std::borrow::Cow;
use std::fmt::{self, Display};

use crate::ids::RunId;

/// A stable, machine-readable name for a kind of step failure (`sequence_mismatch`),
/// set by whoever raises the error (an executor, mostly) and exported by that crate as
/// a constant, so a workflow in another crate matches the code instead of a message
/// prefix. Codes are part of the raising crate's contract: renaming one is a breaking
/// change, rewording the message is not.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ErrorCode(Cow<'static, str>);

impl ErrorCode {
    /// A code from a string literal, usable in a `const`.
    pub const fn from_static(code: &'static str) -> Self {
        Self(Cow::Borrowed(code))
    }

    /// A code built at run time (read back from storage, say).
    pub fn new(code: impl Into<String>) -> Self {
        Self(Cow::Owned(code.into()))
    }

    /// The code's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What a failed step attempt reports: the message stored in the journal (word for
/// word what an operator reads) and, optionally, the stable code callers branch on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct StepFailure {
    /// The human-readable message; the journal stores exactly this text.
    pub message: String,
    /// The kind of failure, for callers that act on it (see [`ErrorCode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// Why a step body (or an executor call) failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum StepError {
    /// A transient failure: the step is retried according to its retry policy.
    #[error("{0}")]
    Retryable(StepFailure),
    /// A failure that will not go away by retrying: the step fails at once.
    #[error("{0}")]
    Permanent(StepFailure),
}

impl StepError {
    /// A transient failure.
    pub fn retryable(message: impl Display) -> Self {
        Self::Retryable(StepFailure {
            message: message.to_string(),
            code: None,
        })
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Display) -> Self {
        Self::Permanent(StepFailure {
            message: message.to_string(),
            code: None,
        })
    }

    /// The same failure, tagged with a stable code. The journal stores only the
    /// message, so a replayed failure gets its code back from the executor that raised
    /// it ([`crate::Executor::error_code`]); give codes to executor errors, which is
    /// where callers in other crates meet them.
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.failure_mut().code = Some(code);
        self
    }

    /// Whether the retry policy may try this step again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.failure().message
    }

    /// The stable code, when the raiser gave one.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.failure().code.as_ref()
    }

    fn failure(&self) -> &StepFailure {
        match self {
            Self::Retryable(failure) | Self::Permanent(failure) => failure,
        }
    }

    fn failure_mut(&mut self) -> &mut StepFailure {
        match self {
            Self::Retryable(failure) | Self::Permanent(failure) => failure,
        }
    }
}

/// A name outside a closed set (a run status, a log level, a schedule policy): what
/// the `FromStr` of those types returns, with the names that are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{given}'{}", expected_suffix(.expected))]
pub struct UnknownName {
    /// What kind of name it should have been (`status`, `log level`, `value`).
    pub what: &'static str,
    /// The text as given.
    pub given: String,
    /// The accepted names, as shown to the user (`one of: skip, allow`), when listed.
    pub expected: Option<String>,
}

impl UnknownName {
    /// `given` is not a known `what`.
    pub fn new(what: &'static str, given: impl Into<String>) -> Self {
        Self {
            what,
            given: given.into(),
            expected: None,
        }
    }

    /// Lists the accepted names in the message.
    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
}

fn expected_suffix(expected: &Option<String>) -> String {
    expected
        .as_ref()
        .map(|expected| format!(" (expected {expected})"))
        .unwrap_or_default()
}

/// Extension methods that classify any error as retryable or permanent:
/// `client.get(url).await.retryable()?`.
pub trait ResultExt<T> {
    /// Marks the error as transient.
    fn retryable(self) -> Result<T, StepError>;
    /// Marks the error as permanent.
    fn permanent(self) -> Result<T, StepError>;
}

impl<T, E: Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, StepError> {
        self.map_err(StepError::retryable)
    }

    fn permanent(self) -> Result<T, StepError> {
        self.map_err(StepError::permanent)
    }
}

/// Errors from the storage port and the engine's own machinery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The worker's lease on the run is gone (expired and taken over, or the run was
    /// cancelled): the write was rejected and nothing was written.
    #[error("lease lost on run {0}: another worker owns it now, or it was cancelled")]
    LeaseLost(RunId),
    /// No run has this id.
    #[error("no run with id {0}")]
    RunNotFound(RunId),
    /// The run exists but is in a state that does not allow the operation.
    #[error("run {run} is {status}: {reason}")]
    InvalidState {
        /// The run.
        run: RunId,
        /// Its current status.
        status: String,
        /// What was not allowed.
        reason: String,
    },
    /// No workflow with this name is registered in this binary.
    #[error("unknown workflow '{0}'")]
    UnknownWorkflow(String),
    /// The input does not match what the workflow accepts.
    #[error("invalid input for workflow '{workflow}': {reason}")]
    InvalidInput {
        /// The workflow.
        workflow: String,
        /// What is wrong with the input.
        reason: String,
    },
    /// The database schema was written by a newer binary.
    #[error("database schema version {found} is newer than this binary supports (up to {supported}); upgrade morpheus")]
    SchemaTooNew {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this binary knows.
        supported: i64,
    },
    /// A schedule with this name already exists.
    #[error("a schedule named '{0}' already exists")]
    ScheduleExists(String),
    /// No schedule has this name.
    #[error("no schedule named '{0}'")]
    ScheduleNotFound(String),
    /// A schedule definition that cannot work (bad trigger, empty name…).
    #[error("invalid schedule: {0}")]
    InvalidSchedule(#[from] crate::schedule::InvalidSchedule),
    /// A database URL this binary cannot use.
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// Anything the database said.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// JSON that could not be encoded or decoded.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
    /// A group-committed batch failed as a whole (the database went away, say).
    #[error("commit failed: {0}")]
    BatchFailed(String),
    /// The worker stopped because its storage failed in a way retrying cannot fix.
    #[error("storage failed, stopping: {0}")]
    StorageFailed(String),
    /// The engine is shutting down and no longer accepts writes.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// A document write's precondition failed (it already existed, or its version
    /// moved on): nothing was written.
    #[error("document '{collection}/{key}' {}", conflict_detail(*.expected, *.found))]
    DocumentConflict {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The version the writer expected (`None`: that it did not exist yet).
        expected: Option<i64>,
        /// The version found (`None`: it does not exist).
        found: Option<i64>,
    },
    /// A document request that can never succeed (empty key, bad filter field, a body
    /// that does not decode as the caller's type).
    #[error("invalid document request: {0}")]
    InvalidDocument(String),
}

fn conflict_detail(expected: Option<i64>, found: Option<i64>) -> String {
    match (expected, found) {
        (None, Some(found)) => format!("already exists (version {found})"),
        (Some(expected), Some(found)) => {
            format!("is at version {found}, not {expected}: it changed concurrently")
        }
        (Some(expected), None) => format!("does not exist (expected version {expected})"),
        (None, None) => "kept changing under concurrent writers; try again".into(),
    }
}

impl EngineError {
    /// Whether waiting cannot help: the embedded SQLite file is read-only, full, corrupt
    /// or cannot be opened. A worker stops on these (exit non-zero) instead of retrying
    /// forever; a server database going away is an outage, retried instead.
    pub fn is_fatal_storage(&self) -> bool {
        let EngineError::Database(sqlx::Error::Database(error)) = self else {
            return false;
        };
        if error
            .try_downcast_ref::<sqlx::sqlite::SqliteError>()
            .is_none()
        {
            return false;
        }
        // Primary result codes (the low byte of extended codes): SQLITE_READONLY 8,
        // SQLITE_CORRUPT 11, SQLITE_FULL 13, SQLITE_CANTOPEN 14, SQLITE_NOTADB 26.
        let primary = error
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff);
        matches!(primary, Some(8 | 11 | 13 | 14 | 26))
    }

    /// Whether the database aborted the transaction because it lost a race with another
    /// one (Postgres `deadlock_detected` 40P01, `serialization_failure` 40001): it was
    /// rolled back, so nothing of it was written and running it again is safe.
    pub fn is_transaction_conflict(&self) -> bool {
        let EngineError::Database(sqlx::Error::Database(error)) = self else {
            return false;
        };
        error
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|error| matches!(error.code(), "40P01" | "40001"))
    }
}

/// Result alias for engine operations.
pub type EngineResult<T> = Result<T, EngineError>;
