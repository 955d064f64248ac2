//! `morpheus up --demo`: the gas station on the embedded default, with nothing to
//! install. An Akash devnet SIMULATOR runs in process (a seeded wallet and deployments
//! draining at different speeds, blocks every 200 ms), the `cosmos` executor signs with
//! the simulator's public demo key, and `topup.escrow` runs at start and every 30 s.
//!
//! The policy is the production one scaled to 200 ms blocks: a 5 min look-ahead and a
//! 6 min target runway instead of 24 h and 48 h. The draining demo deployment (dseq
//! 1002) starts with 1 200 blocks of escrow, 4 min: inside the look-ahead, so the very
//! first sweep tops it up to 6 min. From then on it is topped up whenever its runway
//! falls under 5 min, about every 90 s (the first sweep at least 60 s after a deposit,
//! by the demo's cool-down and drain rate).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use morpheus_devnets::akash::{serve, DemoInfo, SimulatorHandle, SimulatorOptions, DEMO_MNEMONIC};
use morpheus_engine::{CatchUp, Overlap, ScheduleSpec, Trigger, WorkflowRegistry};
use morpheus_executors::cosmos::{CosmosConfig, CosmosExecutor, Signer};
use serde_json::json;
use tokio::net::TcpListener;

/// The demo's schedule name.
pub const DEMO_SCHEDULE: &str = "demo-topup";

/// How often the demo sweeps (the first sweep runs at start).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Top up a deployment whose escrow runs out within this long (the production default
/// is 24 h; the demo's seeded draining deployment starts with 4 min, inside it).
const LOOK_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Deposit enough for this long (the production default is 48 h).
const TARGET_RUNWAY: Duration = Duration::from_secs(6 * 60);

/// A running demo: keep it alive as long as `up` runs.
pub struct Demo {
    /// The in-process simulator.
    pub simulator: SimulatorHandle,
    /// The executor signing with the demo wallet.
    pub executor: CosmosExecutor,
    /// The demo wallet's address (owner of the demo deployments).
    pub owner: String,
}

/// Starts the simulator and the executor that talks to it, and prints the banner: what
/// the demo seeded, when its first deposit comes and why, and the commands that watch
/// it against `database_url` (the database `up` is using).
pub async fn start(database_url: &str) -> Result<Demo> {
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
    let demo = simulator
        .demo()
        .ok_or_else(|| anyhow!("the demo simulator seeded no wallet"))?;
    let owner = demo.address.clone();
    let config = CosmosConfig::new(simulator.url(), chain_id);
    let signer = Signer::from_mnemonic(DEMO_MNEMONIC, &config.hd_path, &config.account_prefix)
        .map_err(|error| anyhow!("demo key: {error}"))?;
    let executor = CosmosExecutor::with_signer(&config, signer)
        .map_err(|error| anyhow!("demo cosmos executor: {error}"))?;
    let block_time = simulator.options().block_time;
    tracing::info!(
        simulator = %simulator.url(),
        owner = %owner,
        "demo: Akash devnet SIMULATOR running in process; topup.escrow at start and every {} (schedule '{DEMO_SCHEDULE}')",
        humantime::format_duration(SWEEP_EVERY)
    );
    for line in first_deposit_lines(demo, block_time) {
        tracing::info!("demo: {line}");
    }
    // One write, so the banner is not interleaved with the log lines on stderr.
    print!(
        "{}",
        banner(&simulator.url(), demo, block_time, database_url)
    );
    use std::io::Write as _;
    std::io::stdout().flush()?;
    Ok(Demo {
        simulator,
        executor,
        owner,
    })
}

/// Hours as the `topup.escrow` input takes them.
fn hours(duration: Duration) -> f64 {
    duration.as_secs_f64() / 3600.0
}

/// What each seeded deployment's starting runway means under the demo's policy: which
/// one the first sweep tops up, and which ones it leaves alone (and why).
fn first_deposit_lines(demo: &DemoInfo, block_time: Duration) -> Vec<String> {
    let look_ahead = humantime::format_duration(LOOK_AHEAD);
    let target = humantime::format_duration(TARGET_RUNWAY);
    demo.deployments
        .iter()
        .map(|deployment| {
            let dseq = deployment.dseq;
            let Some(blocks) = deployment.runway_blocks() else {
                return format!("dseq {dseq}: {}; never topped up", deployment.description);
            };
            let runway = block_time.saturating_mul(u32::try_from(blocks).unwrap_or(u32::MAX));
            let runway_text = humantime::format_duration(runway);
            if block_time.is_zero() || runway > LOOK_AHEAD {
                format!(
                    "dseq {dseq}: {blocks} blocks of escrow ({runway_text}), beyond the {look_ahead} look-ahead: healthy, not topped up for now"
                )
            } else {
                format!(
                    "dseq {dseq}: {blocks} blocks of escrow ({runway_text}), inside the {look_ahead} look-ahead: \
                     the first sweep (at start) tops it up to {target}; then again whenever its runway \
                     falls under {look_ahead}"
                )
            }
        })
        .collect()
}

/// The banner `up --demo` prints: what runs, what it seeded, when the first deposit
/// comes, and the exact commands to watch it (working for someone who ran `up` through
/// `cargo run`, where `morpheus` is not on the PATH).
pub fn banner(
    simulator_url: &str,
    demo: &DemoInfo,
    block_time: Duration,
    database_url: &str,
) -> String {
    let shown_url = crate::commands::redact(database_url);
    let password_note = if shown_url == database_url {
        ""
    } else {
        " (put the password back where the URL shows ***)"
    };
    let db = format!("--database-url '{shown_url}'");
    let mut text = format!(
        "\nmorpheus up --demo: topup.escrow keeps the demo wallet's Akash deployments funded on an \
         in-process Akash devnet SIMULATOR (not a real chain) at {simulator_url}\n\
         demo wallet {} (public demo mnemonic; never use it for real funds)\n",
        demo.address
    );
    for line in first_deposit_lines(demo, block_time) {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str(&format!(
        "sweeps at start and every {}; look-ahead {}, target runway {} (the 24 h / 48 h defaults scaled to {} blocks)\n\
         \n\
         Watch it from another terminal{password_note}:\n\
         \x20 morpheus schedules runs {DEMO_SCHEDULE} {db}\n\
         \x20 morpheus logs <run id from that list> {db}\n\
         `morpheus` is on your PATH after `cargo install --path bin`; without installing, run each as\n\
         \x20 cargo run --release -p morpheus -- schedules runs {DEMO_SCHEDULE} {db}\n\
         \x20 cargo run --release -p morpheus -- logs <run id> {db}\n\n",
        humantime::format_duration(SWEEP_EVERY),
        humantime::format_duration(LOOK_AHEAD),
        humantime::format_duration(TARGET_RUNWAY),
        humantime::format_duration(block_time),
    ));
    text
}

impl Demo {
    /// The demo schedule, checked against the registered workflows: the policy scaled
    /// to the simulator's 200 ms blocks (see the module header for the numbers and when
    /// they make the first deposit happen).
    pub fn schedule(&self, workflows: &WorkflowRegistry) -> Result<(ScheduleSpec, DateTime<Utc>)> {
        let input = json!({
            "owner": self.owner,
            "dseqs": null,
            "look_ahead_h": hours(LOOK_AHEAD),
            "target_runway_h": hours(TARGET_RUNWAY),
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
            trigger: Trigger::every(SWEEP_EVERY).map_err(|e| anyhow!(e))?,
            overlap: Overlap::Skip,
            catch_up: CatchUp::SkipMissed,
            queue: "default".to_owned(),
            priority: 0,
            heartbeat_url: None,
        };
        // The first sweep right away, then every 30 s.
        Ok((spec, Utc::now()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use morpheus_devnets::akash::{serve, SimulatorOptions, DEMO_HD_PATH, DEMO_MNEMONIC};
    use morpheus_engine::{
        Engine, ExecutorRegistry, RunStatus, Worker, WorkerConfig, WorkflowRegistry,
    };
    use morpheus_executors::cosmos::{CosmosConfig, CosmosExecutor, Signer};
    use serde_json::{json, Value};
    use tokio::net::TcpListener;

    use super::*;

    /// The demo's numbers do what its banner says: at 200 ms blocks the draining
    /// deployment is inside the look-ahead at start (the first sweep deposits), the
    /// healthy one beyond it, the closed one never.
    #[tokio::test]
    async fn the_first_sweep_tops_up_only_the_draining_demo_deployment() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = SimulatorOptions {
            seed_demo: true,
            block_time: Duration::ZERO,
            ..SimulatorOptions::default()
        };
        let sim = serve(listener, options).await.unwrap();
        let lines = first_deposit_lines(sim.demo().unwrap(), Duration::from_millis(200));
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("dseq 1001") && lines[0].contains("healthy"));
        assert!(
            lines[1].starts_with("dseq 1002: 1200 blocks of escrow (4m), inside the 5m look-ahead")
                && lines[1].contains("first sweep"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("dseq 1003") && lines[2].contains("never"));
        let banner = banner(
            &sim.url(),
            sim.demo().unwrap(),
            Duration::from_millis(200),
            "postgres://morpheus:secret@db/morpheus",
        );
        assert!(banner.contains("SIMULATOR"), "{banner}");
        assert!(
            banner.contains(
                "morpheus schedules runs demo-topup --database-url 'postgres://morpheus:***@db/morpheus'"
            ),
            "{banner}"
        );
        assert!(banner.contains("cargo install --path bin"), "{banner}");
        assert!(!banner.contains("secret"), "{banner}");
    }

    /// The `topup.escrow` workflow, run by a real worker on SQLite, drives the `cosmos`
    /// executor against the seeded simulator: the payload contract holds end to end.
    /// (It lives here, beside the demo that wires the same three pieces, because the
    /// simulator's crate depends on no workflow crate.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topup_workflow_tops_up_the_draining_demo_deployment_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = serve(
            listener,
            SimulatorOptions {
                seed_demo: true,
                block_time: Duration::from_millis(50),
                ..SimulatorOptions::default()
            },
        )
        .await
        .unwrap();
        let owner = sim.demo().unwrap().address.clone();
        let signer = Signer::from_mnemonic(DEMO_MNEMONIC, DEMO_HD_PATH, "akash").unwrap();
        let mut config = CosmosConfig::new(sim.url(), "morpheus-devnet-1");
        config.timeouts.confirm_poll = Duration::from_millis(20);
        let mut executors = ExecutorRegistry::new();
        executors.register(CosmosExecutor::with_signer(&config, signer).unwrap());
        let mut workflows = WorkflowRegistry::new();
        morpheus_workflows::register_builtin(&mut workflows);
        let dir = tempfile::tempdir().unwrap();
        let world =
            morpheus_engine::connect(&format!("sqlite://{}/topup.db", dir.path().display()))
                .await
                .unwrap();
        let engine = Engine::new(world.clone(), workflows, executors);
        let started = engine
            .start(
                "topup.escrow",
                json!({"owner": owner, "dseqs": null, "max_per_deposit": "5000000uakt",
                       "daily_cap": "20000000uakt", "wallet_headroom": "1000000uakt"}),
                None,
            )
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(
            Worker::new(engine.clone(), WorkerConfig::for_backend(world.backend())).run(async {
                let _ = stopped.await;
            }),
        );
        let wait_for_end = |run_id| {
            let world = world.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let run = world.get_run(run_id).await.unwrap().unwrap();
                    if run.status.is_terminal() {
                        break run;
                    }
                    assert!(Instant::now() < deadline, "run still {:?}", run.status);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let run = wait_for_end(started.run_id).await;

        // A second sweep right after: the deployment is still inside the look-ahead window
        // (one deposit is capped at 5 AKT), but it was topped up within the cool-down.
        let again = engine
            .start(
                "topup.escrow",
                json!({"owner": owner, "dseqs": null, "max_per_deposit": "5000000uakt",
                       "daily_cap": "20000000uakt", "wallet_headroom": "1000000uakt"}),
                None,
            )
            .await
            .unwrap();
        let second = wait_for_end(again.run_id).await;
        let _ = stop.send(());
        worker.await.unwrap().unwrap();
        assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
        let second_report = second.output.unwrap();
        let draining = second_report["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dseq"] == "1002")
            .expect("1002 in the second report");
        assert_eq!(draining["decision"], "skip", "{second_report:#}");
        assert_eq!(draining["reason"], "cool_down", "{second_report:#}");
        assert_eq!(second_report["deposited"], 0);
        assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
        let report = run.output.unwrap();
        let deposited: Vec<&str> = report["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["tx_hash"].is_string())
            .map(|d| d["dseq"].as_str().unwrap())
            .collect();
        assert_eq!(deposited, ["1002"], "{report:#}");

        let ledger: Value = reqwest::get(format!("{}/simulator/ledger", sim.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let deposits = ledger["deposits"].as_array().unwrap();
        assert_eq!(deposits.len(), 1, "{ledger:#}");
        assert_eq!(deposits[0]["dseq"], "1002");
        assert_eq!(
            deposits[0]["amount"]
                .as_str()
                .unwrap()
                .parse::<u128>()
                .unwrap(),
            report["deposited"].as_u64().unwrap() as u128
        );
    }
}
