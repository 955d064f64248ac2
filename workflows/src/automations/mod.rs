//! Automations as in the Brahma orchestration layer: an operator registers one, and
//! Morpheus triggers an external executor (any language, any host) on an interval,
//! or on each log matching a chain filter, verifies what it answers (HMAC-SHA256 under a key generated at registration),
//! relays the transaction it asks for from one of the automation's relayers through the
//! `evm` executor exactly once, tells it the outcome, and keeps a log of every
//! execution.
//!
//! - [`model`]: the configuration, its checks, the HMAC and the answer checks (pure).
//! - [`store::Automations`]: register, list, pause, resume, delete, logs.
//! - [`execute::AutomationExecute`] (`automation.execute`): one execution.
//! - [`watch::AutomationWatch`] (`automation.watch`): one scan of a FILTER's logs.

pub mod execute;
pub mod model;
pub mod store;
pub mod watch;

use morpheus_engine::WorkflowRegistry;
/// Where the passphrase sealing automations' keys is (shared with ephemeral keys).
pub use morpheus_executors::cosmos::ephemeral::PassphraseSource;

/// The workflow an INTERVAL automation's schedule starts (and a FILTER's watcher, per
/// matching log).
pub const EXECUTE_WORKFLOW: &str = "automation.execute";
/// The workflow a FILTER automation's schedule starts: one scan of new logs.
pub const WATCH_WORKFLOW: &str = "automation.watch";
/// How often a FILTER automation's watcher scans.
pub const WATCH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Registers `automation.execute`, HMAC keys sealed under the passphrase in
/// `passphrase`.
pub fn register(registry: &mut WorkflowRegistry, passphrase: PassphraseSource) {
    registry.register(execute::AutomationExecute::new(passphrase));
    registry.register(watch::AutomationWatch);
}
