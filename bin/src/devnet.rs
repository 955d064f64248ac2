//! `morpheus devnet …`: local stand-ins for the chains the flows talk to. Each one is a
//! simulator (no real node can be installed here) and says so wherever it appears. The
//! simulators live in the `morpheus-devnets` crate; this module only turns the command
//! line into their options and runs them until a signal.

use std::time::Duration;

use anyhow::{Context, Result};
use morpheus_devnets::akash;
use tokio::net::TcpListener;

use crate::cli::{DevnetAkashArgs, DevnetCommand};

/// Runs a devnet command until SIGTERM or Ctrl-C.
pub async fn run(command: DevnetCommand) -> Result<()> {
    match command {
        DevnetCommand::Akash(args) => run_akash(args).await,
    }
}

async fn run_akash(args: DevnetAkashArgs) -> Result<()> {
    let options = akash::SimulatorOptions {
        chain_id: args.chain_id,
        block_time: Duration::from_millis(args.block_time_ms),
        seed_demo: args.seed_demo,
        ..akash::SimulatorOptions::default()
    };
    if options.chain_id.trim().is_empty() {
        anyhow::bail!("--chain-id must not be empty");
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let simulator = akash::serve(listener, options).await?;
    tracing::info!(
        url = %simulator.url(),
        chain_id = %simulator.options().chain_id,
        demo_wallet = simulator.demo().map(|demo| demo.address.as_str()),
        "akash devnet simulator started"
    );
    // The banner goes to stdout in one write, so a process reading it line by line
    // (a test, a script waiting for the port) sees it whole.
    print!("{}", simulator.banner());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    shutdown_signal().await;
    simulator.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
