//! Error types. The variant carries the retry meaning (`Retryable` / `Permanent`),
//! so callers never have to guess whether trying again could help.

use std::fmt::Display;

use crate::ids::RunId;

/// Why a step body (or an executor call) failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum StepError {
    /// A transient failure: the step is retried according to its retry policy.
    #[error("{0}")]
    Retryable(String),
    /// A failure that will not go away by retrying: the step fails at once.
    #[error("{0}")]
    Permanent(String),
}

impl StepError {
    /// A transient failure.
    pub fn retryable(message: impl Display) -> Self {
        Self::Retryable(message.to_string())
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Display) -> Self {
        Self::Permanent(message.to_string())
    }

    /// Whether the retry policy may try this step again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(message) | Self::Permanent(message) => message,
        }
    }
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
    InvalidSchedule(String),
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
}

/// Result alias for engine operations.
pub type EngineResult<T> = Result<T, EngineError>;
