//! `morpheus bench fund`: the wall time of `fund` runs on anvil with instant mining,
//! split by leg, and the engine's own time per leg beyond the chains' and the route's
//! latency.
//!
//! Everything runs on this machine: anvil as a child process (or `--evm-rpc`), the
//! devnet contracts deployed on it, the Akash devnet simulator and the Skip Go route
//! simulator in process, and the real engine on a fresh SQLite file with the real `evm`
//! and `cosmos` executors. Each executor is wrapped to time its calls, so for each leg
//!
//! - **wall** runs from the end of the previous leg (the first step's start for the
//!   first leg) to the commit of the leg's last step;
//! - **external** is the time inside executor calls (JSON-RPC to anvil, REST to the
//!   Akash simulator, waits for receipts and blocks) plus the whole of each route-API
//!   step (the HTTP call to the route simulator and the wait for its settlement; its
//!   commit is counted there too, which flatters the engine by one commit per such
//!   step);
//! - **engine** = wall − external: claims, journal writes, replay, serialization,
//!   wake-ups. The budget is ≤ 5 ms per leg.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use morpheus_devnets::akash::{self, SimulatorOptions, DEMO_MNEMONIC};
use morpheus_devnets::evm::{deploy, mint, signer_from_hex, ANVIL_DEV_KEY};
use morpheus_devnets::skip::{self, quote};
use morpheus_engine::{
    Engine, ExecutorRegistry, RunStatus, Runtime, StepRecord, WorkerConfig, Workflow,
    WorkflowRegistry,
};
use morpheus_executors::cosmos::{CosmosConfig, CosmosExecutor, Signer};
use morpheus_executors::evm::{EvmConfig, EvmExecutor};
use morpheus_workflows::fund::{Fund, FundConfig};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::bench_timed::{median, ms, round3, CallTimes, Timed};
use crate::cli::BenchFundArgs;

/// anvil's second well-known account (public): the wallet whose USDC is funded.
const USER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// The budget: engine time per leg beyond the chains' own latency.
const BUDGET_MS: f64 = 5.0;
/// The legs, in the order the workflow runs them.
const LEGS: [&str; 4] = ["checks", "swap", "deposit", "stake"];

/// anvil as a child process, killed on drop.
struct AnvilProcess(Child);

impl Drop for AnvilProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One leg of one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct LegTime {
    wall_ms: f64,
    external_ms: f64,
    engine_ms: f64,
    steps: usize,
}

/// The figures of one leg over every run.
#[derive(Debug, Serialize)]
struct LegSummary {
    leg: &'static str,
    steps: usize,
    wall_ms_median: f64,
    external_ms_median: f64,
    engine_ms_median: f64,
    engine_ms_max: f64,
    budget_ms: f64,
    verdict: &'static str,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    runs: u64,
    backend: &'static str,
    run_wall_ms_median: f64,
    start_latency_ms_median: f64,
    legs: Vec<LegSummary>,
    /// The engine's step-time profile of the measured runs (`--profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<serde_json::Value>,
}

fn leg_of(step_key: &str) -> &'static str {
    let head = step_key.split('/').next().unwrap_or_default();
    match head.split('.').next().unwrap_or_default() {
        "swap" => "swap",
        "deposit" => "deposit",
        "stake" => "stake",
        _ => "checks",
    }
}

/// Splits one run's journal into legs.
fn leg_times(
    journal: &[StepRecord],
    run_id: &str,
    calls: &HashMap<String, Duration>,
) -> Result<[LegTime; 4]> {
    let mut legs = [LegTime::default(); 4];
    let mut previous_end: Option<DateTime<Utc>> = None;
    for (index, leg) in LEGS.iter().enumerate() {
        let steps: Vec<&StepRecord> = journal
            .iter()
            .filter(|step| leg_of(&step.step_key) == *leg)
            .collect();
        let Some(end) = steps.iter().filter_map(|step| step.completed_at).max() else {
            continue;
        };
        let start = previous_end
            .or_else(|| steps.iter().map(|step| step.started_at).min())
            .ok_or_else(|| anyhow!("leg {leg} has no step"))?;
        let mut external = 0.0;
        for step in &steps {
            external += match &step.executor {
                Some(_) => calls
                    .get(&format!("{run_id}/{}", step.step_key))
                    .map_or(0.0, |took| took.as_secs_f64() * 1000.0),
                None => step
                    .completed_at
                    .map_or(0.0, |done| ms(done - step.started_at)),
            };
        }
        let wall = ms(end - start);
        legs[index] = LegTime {
            wall_ms: wall,
            external_ms: external,
            engine_ms: wall - external,
            steps: steps.len(),
        };
        previous_end = Some(end);
    }
    Ok(legs)
}

/// Where each step of one run spent its time: the gap since the previous step's
/// commit (replay, workflow code, dispatch), the executor call, and the rest of the
/// step's recorded span (encoding, the commit).
fn print_steps(journal: &[StepRecord], run_id: &str, calls: &HashMap<String, Duration>) {
    let mut ordered: Vec<&StepRecord> = journal.iter().collect();
    ordered.sort_by_key(|step| step.started_at);
    eprintln!(
        "{:<28} {:>9} {:>12} {:>14}",
        "step (last run)", "gap ms", "executor ms", "commit+rest ms"
    );
    let mut previous: Option<DateTime<Utc>> = None;
    for step in ordered {
        let Some(done) = step.completed_at else {
            continue;
        };
        let span = ms(done - step.started_at);
        let inside = match &step.executor {
            Some(_) => calls
                .get(&format!("{run_id}/{}", step.step_key))
                .map_or(0.0, |took| took.as_secs_f64() * 1000.0),
            None => span,
        };
        let gap = previous.map_or(0.0, |at| ms(step.started_at - at));
        eprintln!(
            "{:<28} {:>9.2} {:>12.2} {:>14.2}",
            step.step_key,
            gap,
            inside,
            span - inside
        );
        previous = Some(previous.map_or(done, |at| at.max(done)));
    }
}

async fn start_anvil(args: &BenchFundArgs) -> Result<(Option<AnvilProcess>, String)> {
    if let Some(url) = &args.evm_rpc {
        return Ok((None, url.to_string()));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(&args.anvil)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start anvil '{}' (install it with `npm ci` in bin/devnets/contracts and pass --anvil bin/devnets/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil, or give --evm-rpc)",
                args.anvil.display()
            )
        })?;
    let anvil = AnvilProcess(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http
            .post(&url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
            .send()
            .await;
        if answer.is_ok_and(|answer| answer.status().is_success()) {
            return Ok((Some(anvil), url));
        }
        if Instant::now() > deadline {
            bail!("anvil did not answer on {url} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `morpheus bench fund`.
pub async fn run(args: BenchFundArgs) -> Result<()> {
    let (_anvil, rpc) = start_anvil(&args).await?;
    let rpc_url: url::Url = rpc.parse()?;
    eprintln!("fund bench: EVM node {rpc} (instant mining)");
    let deployer = signer_from_hex(ANVIL_DEV_KEY).map_err(|error| anyhow!("{error}"))?;
    let contracts = deploy(&rpc_url, deployer.clone())
        .await
        .map_err(|error| anyhow!("deploying the devnet contracts: {error}"))?;
    let user = signer_from_hex(USER_KEY).map_err(|error| anyhow!("{error}"))?;
    let per_run: u128 = 100_000_000;
    mint(
        &rpc_url,
        deployer.clone(),
        contracts.usdc,
        &[(user.address(), per_run * (args.runs as u128 + 1))],
    )
    .await
    .map_err(|error| anyhow!("minting USDC: {error}"))?;

    let akash_options = SimulatorOptions {
        seed_demo: true,
        block_time: args.akash_block_time,
        ..SimulatorOptions::default()
    };
    let akash_chain = akash_options.chain_id.clone();
    let akash_sim = akash::serve(TcpListener::bind("127.0.0.1:0").await?, akash_options).await?;
    let owner = akash_sim
        .demo()
        .ok_or_else(|| anyhow!("the Akash simulator seeded no demo wallet"))?
        .address
        .clone();
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{}/simulator/deployments", akash_sim.url()))
        .json(&json!({"owner": owner, "escrow": "5000000", "lease_prices": ["10"]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let dseq = created["deployment"]["deployment"]["id"]["dseq"]
        .as_str()
        .ok_or_else(|| anyhow!("the Akash simulator created no deployment: {created}"))?
        .to_owned();
    let route = skip::serve(
        TcpListener::bind("127.0.0.1:0").await?,
        skip::SkipOptions {
            evm_rpc: rpc_url.clone(),
            akash_rest: akash_sim.url().parse()?,
            bridge: contracts.bridge,
            usdc: Some(contracts.usdc),
            owner_key: deployer,
            pricing: quote::Pricing {
                price: quote::Decimal::parse("2.5", "price").map_err(anyhow::Error::msg)?,
                fee_bps: 30,
                price_impact_pct: quote::Decimal::parse("0.5", "impact")
                    .map_err(anyhow::Error::msg)?,
            },
            poll_interval: args.route_poll,
        },
    )
    .await?;
    eprintln!(
        "fund bench: Akash devnet SIMULATOR {} (blocks every {}), Skip Go route SIMULATOR {}",
        akash_sim.url(),
        humantime::format_duration(args.akash_block_time),
        route.url()
    );

    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let world =
        crate::commands::open(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
    let times: CallTimes = Arc::default();
    let mut evm_config = EvmConfig::new(rpc.clone(), contracts.chain_id);
    evm_config.timeouts.receipt_poll = Duration::from_millis(5);
    let evm = EvmExecutor::with_signer(&evm_config, user, world.clone())?;
    let mut cosmos_config = CosmosConfig::new(akash_sim.url(), akash_chain);
    cosmos_config.timeouts.confirm_poll = Duration::from_millis(10);
    let signer = Signer::from_mnemonic(
        DEMO_MNEMONIC,
        &cosmos_config.hd_path,
        &cosmos_config.account_prefix,
    )
    .map_err(|error| anyhow!("demo key: {error}"))?;
    let cosmos = CosmosExecutor::with_signer(&cosmos_config, signer)?;
    let mut executors = ExecutorRegistry::new();
    executors.register(Timed {
        inner: evm,
        times: times.clone(),
    });
    executors.register(Timed {
        inner: cosmos,
        times: times.clone(),
    });
    let mut workflows = WorkflowRegistry::new();
    workflows.register(Fund::new(FundConfig {
        usdc: Some(contracts.usdc.to_string()),
        staking_vault: Some(contracts.staking_vault.to_string()),
        route_api: Some(route.url()),
        status_poll: args.route_poll,
        akash_seconds_per_block: args.akash_block_time.as_secs_f64().max(0.05),
        ..FundConfig::default()
    }));
    let engine = Engine::new(world.clone(), workflows.clone(), executors);
    let mut worker = WorkerConfig::for_backend(world.backend());
    worker.poll_interval = Duration::from_millis(50);
    let runtime = Runtime::new(engine.clone())
        .worker_config(worker)
        .without_scheduler()
        .spawn();

    let mut per_leg: Vec<Vec<LegTime>> = vec![Vec::new(); LEGS.len()];
    let mut run_walls = Vec::new();
    let mut start_latencies = Vec::new();
    // One warm-up run (connections, caches), then the measured ones.
    for index in 0..=args.runs {
        let input = json!({"usdc_amount": per_run.to_string(), "stake_share_pct": 60,
                           "owner": owner, "dseq": dseq, "slippage_pct": 1});
        let new_run = workflows.prepare(Fund::NAME, input, None)?;
        let started = engine.start_prepared(new_run).await?;
        let run = tokio::time::timeout(Duration::from_secs(120), engine.wait(started.run_id))
            .await
            .map_err(|_| anyhow!("fund run {} did not end within 120 s", started.run_id))??;
        if run.status != RunStatus::Completed {
            bail!(
                "fund run {} ended {}: {}",
                run.id,
                run.status,
                run.error.unwrap_or_default()
            );
        }
        if index == 0 {
            eprintln!("fund bench: warm-up run done; measuring {} runs", args.runs);
            if args.profile {
                morpheus_engine::profile::reset();
                morpheus_engine::profile::enable(true);
            }
            continue;
        }
        let journal = world.load_journal(run.id).await?;
        let calls = times.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let legs = leg_times(&journal, &run.id.to_string(), &calls)?;
        if args.per_step && index == args.runs {
            print_steps(&journal, &run.id.to_string(), &calls);
        }
        let first_start = journal.iter().map(|step| step.started_at).min();
        let last_end = journal.iter().filter_map(|step| step.completed_at).max();
        if let (Some(first), Some(last)) = (first_start, last_end) {
            run_walls.push(ms(last - first));
            start_latencies.push(ms(first - run.created_at));
        }
        for (index, leg) in legs.iter().enumerate() {
            per_leg[index].push(*leg);
        }
        eprintln!(
            "fund bench: run {index}/{}: {}",
            args.runs,
            LEGS.iter()
                .zip(&legs)
                .map(|(name, leg)| format!(
                    "{name} {:.1} ms ({:.2} engine)",
                    leg.wall_ms, leg.engine_ms
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let profile = args.profile.then(|| {
        morpheus_engine::profile::enable(false);
        crate::bench::profile_report()
    });
    runtime.shutdown().await?;
    route.shutdown().await;
    akash_sim.shutdown().await;

    let legs: Vec<LegSummary> = LEGS
        .iter()
        .zip(per_leg)
        .map(|(leg, times)| {
            let pick = |f: fn(&LegTime) -> f64| times.iter().map(f).collect::<Vec<f64>>();
            let engine_max = pick(|t| t.engine_ms).into_iter().fold(0.0, f64::max);
            let engine_median = median(&mut pick(|t| t.engine_ms));
            LegSummary {
                leg,
                steps: times.first().map_or(0, |t| t.steps),
                wall_ms_median: round3(median(&mut pick(|t| t.wall_ms))),
                external_ms_median: round3(median(&mut pick(|t| t.external_ms))),
                engine_ms_median: round3(engine_median),
                engine_ms_max: round3(engine_max),
                budget_ms: BUDGET_MS,
                verdict: if engine_median <= BUDGET_MS {
                    "PASS"
                } else {
                    "OVER"
                },
            }
        })
        .collect();
    let report = Report {
        benchmark: "fund",
        runs: args.runs,
        backend: "sqlite",
        run_wall_ms_median: round3(median(&mut run_walls)),
        start_latency_ms_median: round3(median(&mut start_latencies)),
        legs,
        profile,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "fund on anvil (instant mining), Akash simulator blocks every {}, SQLite: {} runs, medians",
        humantime::format_duration(args.akash_block_time),
        report.runs
    );
    println!(
        "run wall {:.1} ms (first step to last commit); start latency {:.1} ms (created → first step)",
        report.run_wall_ms_median, report.start_latency_ms_median
    );
    println!(
        "{:<8} {:>5} {:>10} {:>13} {:>11} {:>15} {:>10}",
        "leg", "steps", "wall ms", "external ms", "engine ms", "engine max ms", "budget"
    );
    for leg in &report.legs {
        println!(
            "{:<8} {:>5} {:>10.1} {:>13.1} {:>11.2} {:>15.2} {:>7} {}",
            leg.leg,
            leg.steps,
            leg.wall_ms_median,
            leg.external_ms_median,
            leg.engine_ms_median,
            leg.engine_ms_max,
            format!("≤ {} ms", leg.budget_ms),
            leg.verdict
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fall_into_their_legs() {
        for (step, leg) in [
            ("config", "checks"),
            ("usdc-balance", "checks"),
            ("swap/route", "swap"),
            ("swap.1/bridge/sign", "swap"),
            ("swap/approve/broadcast#2", "swap"),
            ("deposit/sign", "deposit"),
            ("stake/stake/broadcast", "stake"),
        ] {
            assert_eq!(leg_of(step), leg, "{step}");
        }
    }
}
