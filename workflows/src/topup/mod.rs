//! Scheduled escrow top-ups for Akash deployments (the "gas station").
//!
//! - [`decide`]: the pure decision (predicted close, look-ahead, runway, caps, headroom).
//! - [`workflow`]: `topup.escrow`, the sweep that reads the chain, decides and deposits
//!   exactly once through the `cosmos` executor.

pub mod decide;
pub mod workflow;

pub use workflow::{TopUpEscrow, TopUpInput, TopUpReport};
