//! Scheduled escrow top-ups for Akash deployments (the "gas station").
//!
//! - [`decide`]: the pure decision (predicted close, look-ahead, runway, caps, headroom).

pub mod decide;
