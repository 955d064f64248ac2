//! Business workflows built on the Morpheus engine. Each is an ordinary [`Workflow`]:
//! decisions in pure functions, effects in steps.
//!
//! - [`shell::Shell`] (`shell`): a crash-proof job runner for shell steps.
//! - [`topup::TopUpEscrow`] (`topup.escrow`): scheduled Akash escrow top-ups.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod shell;
pub mod topup;

use morpheus_engine::WorkflowRegistry;

/// Registers every built-in workflow.
pub fn register_builtin(registry: &mut WorkflowRegistry) {
    registry.register(shell::Shell);
    registry.register(topup::TopUpEscrow);
}
