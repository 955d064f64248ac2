//! Operator configuration of deploys: where artifacts live, which directories may be
//! deployed, snapshot limits, time limits and the key of sealed env values. `morpheus`
//! builds it from flags, environment variables (see `morpheus up --help`) and
//! `morpheus.toml` (`[secrets]`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use morpheus_executors::sealed::SecretKey;

use super::snapshot::SnapshotLimits;

/// Default readiness deadline: how long the start command has to answer HTTP.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time limit of each install or build command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How deploys are run by this process.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployConfig {
    /// Data directory; artifacts go to `<data_dir>/artifacts/<agent_id>/`. Absolute.
    pub data_dir: PathBuf,
    /// A spec's `source_dir` must resolve inside one of these.
    pub allowed_roots: Vec<PathBuf>,
    /// Snapshot limits.
    pub limits: SnapshotLimits,
    /// Readiness deadline.
    pub ready_timeout: Duration,
    /// Time limit of each install/build command.
    pub command_timeout: Duration,
    /// The key that opens a spec's sealed env values (`[secrets] key`); without it a
    /// deploy whose spec has one fails before its sandbox is created.
    pub secrets_key: Option<Arc<SecretKey>>,
}

impl DeployConfig {
    /// A configuration with default limits and timeouts.
    pub fn new(data_dir: PathBuf, allowed_roots: Vec<PathBuf>) -> Self {
        Self {
            data_dir,
            allowed_roots,
            limits: SnapshotLimits::default(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            secrets_key: None,
        }
    }

    /// The artifact store (`<data_dir>/artifacts`).
    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
}

impl Default for DeployConfig {
    /// `./.morpheus` as the data directory and the current directory as the only
    /// allowed root (both made absolute).
    fn default() -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self::new(cwd.join(".morpheus"), vec![cwd])
    }
}
