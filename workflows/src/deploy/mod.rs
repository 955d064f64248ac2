//! # Deploys: a directory into a fresh Docker sandbox, resumable after crashes
//!
//! An agent (or a person) sets a [`DeploymentSpec`] pointing at a directory; every
//! `deploy start` then snapshots that directory ([`snapshot`]), provisions a brand-new
//! sandbox container for the run ([`sandbox`], through the `docker` executor), installs,
//! builds, starts and probes it ([`probe`]), and records where it serves. A deploy run
//! *is* an engine run of [`DeployStart`] (same id, same logs); its product-level status
//! lives on a [`DeploymentRun`] record in the engine's document store ([`store`]).
//!
//! Read in this order:
//! 1. [`model`] — the records and the status machine (`queued → capturing →
//!    provisioning → building → starting → ready`, `→ failed`, `ready|failed →
//!    stopping → stopped`).
//! 2. [`spec`] — spec validation (fields, ports, allowed source roots); [`secrets`] —
//!    sealed env values, opened only where the sandbox gets them, masked in logs.
//! 3. [`snapshot`] — capture, content hash, ignore rules, limits, artifact store.
//! 4. [`start`] and [`stop`] — the two workflows, step by step.
//! 5. [`service`] — what `morpheus deploy …` does; [`gc`] — garbage collection.
//!
//! Crash safety: every effect is a journaled step; the sandbox is named and labelled
//! from the run id, so a resumed run adopts its own container and never creates a
//! second one; a failed run removes its container before it is marked `failed`, and a
//! stopped one when it is marked `stopped`.

pub mod config;
mod error;
pub mod gc;
pub mod model;
pub mod probe;
pub mod sandbox;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod spec;
pub mod start;
pub mod stop;
pub mod store;
#[cfg(test)]
mod test_fixtures;

use std::sync::Arc;

use morpheus_engine::WorkflowRegistry;

pub use config::DeployConfig;
pub use error::DeployError;
pub use model::{
    DeployStatus, DeploymentRun, DeploymentSpec, ForbiddenTransition, SourceSnapshot, Target,
    UnknownTarget,
};
pub use service::DeployService;
pub use spec::{SpecError, SpecRequest};
pub use start::DeployStart;
pub use stop::DeployStop;

/// Registers `deploy.start` (configured by `config`), `deploy.stop` and `akash.deploy`
/// (which opens sealed values with `config.secrets_key`).
pub fn register(registry: &mut WorkflowRegistry, config: Arc<DeployConfig>) {
    registry.register(crate::akash::deploy::AkashDeploy::new(
        config.secrets_key.clone(),
    ));
    registry.register(DeployStart::new(config));
    registry.register(DeployStop);
}
