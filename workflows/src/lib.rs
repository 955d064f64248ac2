//! Business workflows built on the Morpheus engine. Each is an ordinary
//! [`Workflow`](morpheus_engine::Workflow):
//! decisions in pure functions, effects in steps.
//!
//! - [`shell::Shell`] (`shell`): a crash-proof job runner for shell steps.
//! - [`pipeline::Pipeline`] (`pipeline`): steps defined in JSON, each a call to any
//!   executor (extensions included), later steps using earlier outputs.
//! - [`topup::TopUpEscrow`] (`topup.escrow`): scheduled Akash escrow top-ups.
//! - [`fund::Fund`] (`fund`): USDC split between MOR staking and an Akash escrow
//!   (needs a [`fund::FundConfig`]; registered unconfigured, a run fails saying so).
//! - [`deploy::DeployStart`] (`deploy.start`) and [`deploy::DeployStop`]
//!   (`deploy.stop`): a directory deployed into a fresh Docker sandbox per run.
//! - [`akash`]: `morpheus.yaml` → Akash SDL → manifest, version and deployment groups,
//!   as pure functions, and [`akash::deploy::AkashDeploy`] (`akash.deploy`) and
//!   [`akash::deploy::AkashClose`] (`akash.close`), the project on Akash.
//! - [`automations`]: `automation.execute`, the executions of automations registered
//!   with [`automations::store::Automations`].
//! - [`keys`]: `keys.ephemeral.create`, `.revoke` and `.rotate`, the ephemeral keys
//!   automation signs with through AuthZ grants.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod akash;
pub mod automations;
pub mod deploy;
mod escrow;
pub mod fund;
pub mod keys;
pub mod pipeline;
pub mod shell;
pub mod topup;

use morpheus_engine::WorkflowRegistry;

/// Registers every built-in workflow that needs no configuration (deploys, the
/// directory ones and `akash.deploy`, need a [`deploy::DeployConfig`]: register them
/// with [`deploy::register`]).
pub fn register_builtin(registry: &mut WorkflowRegistry) {
    registry.register(shell::Shell);
    registry.register(pipeline::Pipeline);
    registry.register(topup::TopUpEscrow);
    registry.register(fund::Fund::default());
    registry.register(akash::deploy::AkashClose);
    keys::register_rotation(registry, Default::default());
    automations::register(registry, Default::default());
}
