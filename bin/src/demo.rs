//! `morpheus up --demo`: the gas station on the embedded default, with nothing to
//! install. An Akash devnet SIMULATOR runs in process (a seeded wallet and deployments
//! draining at different speeds, blocks every 200 ms), the `cosmos` executor signs with
//! the simulator's public demo key, and `topup.escrow` runs every 30 s.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use morpheus_engine::{CatchUp, Overlap, ScheduleSpec, Trigger, WorkflowRegistry};
use morpheus_executors::cosmos::{CosmosConfig, CosmosExecutor, Signer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::devnet::akash::{serve, SimulatorHandle, SimulatorOptions, DEMO_MNEMONIC};

/// The demo's schedule name.
pub const DEMO_SCHEDULE: &str = "demo-topup";

/// A running demo: keep it alive as long as `up` runs.
pub struct Demo {
    /// The in-process simulator.
    pub simulator: SimulatorHandle,
    /// The executor signing with the demo wallet.
    pub executor: CosmosExecutor,
    /// The demo wallet's address (owner of the demo deployments).
    pub owner: String,
}

/// Starts the simulator and the executor that talks to it.
pub async fn start() -> Result<Demo> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the demo simulator to a local port")?;
    let options = SimulatorOptions {
        seed_demo: true,
        ..SimulatorOptions::default()
    };
    let chain_id = options.chain_id.clone();
    let simulator = serve(listener, options)
        .await
        .context("cannot start the demo simulator")?;
    let owner = simulator
        .demo()
        .map(|demo| demo.address.clone())
        .ok_or_else(|| anyhow!("the demo simulator seeded no wallet"))?;
    let config: CosmosConfig = serde_json::from_value(json!({
        "rest_url": simulator.url(),
        "chain_id": chain_id,
    }))
    .context("demo cosmos configuration")?;
    let signer = Signer::from_mnemonic(DEMO_MNEMONIC, &config.hd_path, &config.account_prefix)
        .map_err(|error| anyhow!("demo key: {error}"))?;
    let executor = CosmosExecutor::with_signer(&config, signer)
        .map_err(|error| anyhow!("demo cosmos executor: {error}"))?;
    tracing::info!(
        simulator = %simulator.url(),
        owner = %owner,
        "demo: Akash devnet SIMULATOR running in process; topup.escrow every 30 s (schedule '{DEMO_SCHEDULE}')"
    );
    Ok(Demo {
        simulator,
        executor,
        owner,
    })
}

impl Demo {
    /// The demo schedule, checked against the registered workflows. The policy is scaled
    /// to the simulator's 200 ms blocks: a few minutes of look-ahead and runway instead
    /// of a day, so top-ups happen while you watch.
    pub fn schedule(&self, workflows: &WorkflowRegistry) -> Result<(ScheduleSpec, DateTime<Utc>)> {
        let input = json!({
            "owner": self.owner,
            "dseqs": null,
            "look_ahead_h": 0.05,
            "target_runway_h": 0.1,
            "max_per_deposit": "5000000uakt",
            "daily_cap": "50000000uakt",
            "wallet_headroom": "1000000uakt",
            "seconds_per_block": self.simulator.options().block_time.as_secs_f64(),
            "cooldown_min": 1,
            "dry_run": false,
        });
        workflows.prepare("topup.escrow", input.clone(), None)?;
        let spec = ScheduleSpec {
            name: DEMO_SCHEDULE.to_owned(),
            workflow: "topup.escrow".to_owned(),
            input,
            trigger: Trigger::every(Duration::from_secs(30)).map_err(|e| anyhow!(e))?,
            overlap: Overlap::Skip,
            catch_up: CatchUp::SkipMissed,
            queue: "default".to_owned(),
            priority: 0,
        };
        // The first sweep right away, then every 30 s.
        Ok((spec, Utc::now()))
    }
}
