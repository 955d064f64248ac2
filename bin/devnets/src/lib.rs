//! Local chain **simulators** for demos and tests: each one speaks the subset of a
//! node's API the Morpheus flows use, backed by an in-memory ledger, and names itself a
//! simulator wherever it appears (banner, response headers, node info). None of them is
//! a chain.
//!
//! - [`akash`]: the Akash devnet simulator behind `morpheus devnet akash` and
//!   `morpheus up --demo`. Start it in process with [`akash::serve`]:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use morpheus_devnets::akash::{serve, SimulatorOptions};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let simulator = serve(listener, SimulatorOptions { seed_demo: true, ..Default::default() }).await?;
//! print!("{}", simulator.banner()); // "Akash devnet SIMULATOR …", the demo wallet, …
//! simulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! This crate depends on no other Morpheus crate: it is the oracle the `cosmos`
//! executor is tested against, so it decodes transactions with its own message types
//! ([`akash::messages`]) and hashes them itself ([`akash::chain::tx_hash`]).

#![warn(missing_docs)]

pub mod akash;
pub mod evm;
pub mod provider;
pub mod skip;
