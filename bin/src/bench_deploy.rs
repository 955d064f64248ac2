//! `morpheus bench deploy`: the wall time of `akash.deploy` runs split by phase, and
//! the engine's own time beyond the simulators' latency and the block times.
//!
//! Everything runs on this machine: the Akash devnet simulator and the Akash provider
//! simulator in process (the provider runs each lease's services as containers on the
//! local Docker engine, pulling their images from `--registry`), and the real engine on
//! a fresh SQLite file with the real `cosmos` executor signing as the simulator's demo
//! wallet. The project is `image:` only (nothing is built while timing): an app and
//! three custom sidecars, all one tiny image (`FROM scratch` + a static busybox, httpd)
//! the benchmark builds and pushes once. Every deploy is followed by an `akash.close`
//! run and a wait until the provider has removed the deployment's containers.
//!
//! Each run's journal is split into phases by step name (`start` is the claim, from
//! the run's creation to its first step; `finish` the run's completion after its last
//! step; `$now`/`$sleep` records count with the step before them). A phase runs from
//! the end of the previous one to the commit of its last step, and
//!
//! - **executor** is the time inside `cosmos` executor calls (REST to the chain
//!   simulator, the wait for blocks while confirming, the provider's manifest and
//!   status calls, which include Docker pulling and starting containers);
//! - **sleep** is the durable sleep the workflow asked for (bid and readiness polls, the
//!   bid window): `until` of each `$sleep` record minus its start;
//! - **engine** = wall − executor − sleep: claims, journal commits, replays after each
//!   wake-up, wake-up latency, serialization, and the workflow's own code (the SDL
//!   synthesis is a step without an executor, so it counts here: its own span is
//!   reported beside it).
//!
//! It also times the pure synthesis `morpheus deploy --dry-run` does, for a project
//! with a PostgreSQL, a Vector and a custom sidecar, against the budget of
//! ≤ 50 ms.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use morpheus_devnets::akash::{self, SimulatorOptions, DEMO_MNEMONIC};
use morpheus_devnets::provider::{start_provider, ProviderOptions, DSEQ_LABEL, PROVIDER_LABEL};
use morpheus_engine::{
    Engine, ExecutorRegistry, LogQuery, LogRecord, RunId, RunRecord, RunStatus, Runtime,
    StepRecord, WorkerConfig, Workflow, WorkflowRegistry, World,
};
use morpheus_executors::cosmos::{CosmosConfig, CosmosExecutor, Signer};
use morpheus_workflows::akash::deploy::{AkashClose, AkashDeploy, AkashDeployReport};
use morpheus_workflows::akash::synthesize;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::bench_timed::{median, ms, round3, CallTimes, Timed};
use crate::cli::BenchDeployArgs;

/// The repository of the benchmark's image in `--registry`.
const IMAGE_NAME: &str = "morpheus-bench-deploy";
/// The app's port, and the custom sidecars with theirs (one image, `PORT` picks it).
const APP_PORT: u16 = 8080;
const SIDECARS: [(&str, u16); 3] = [("side1", 9001), ("side2", 9002), ("side3", 9003)];
/// The phases, in the order a run goes through them.
const PHASES: [&str; 8] = [
    "start",
    "synthesize",
    "create",
    "bids",
    "lease",
    "manifest",
    "ready",
    "finish",
];
const START: usize = 0;
const SYNTHESIZE: usize = 1;
const FINISH: usize = 7;
/// Iterations of the dry-run synthesis timing.
const DRY_RUN_ITERATIONS: usize = 200;
/// The budget for a dry run with three sidecars.
const DRY_RUN_BUDGET_MS: f64 = 50.0;
/// The dry-run project: PostgreSQL, Vector and one custom sidecar.
const DRY_RUN_PROJECT: &str = "name: agent\ntemplate: ai-agent\nimage: ghcr.io/acme/agent:1\n\
    env: {LOG_LEVEL: info}\nsidecars:\n  postgres: {password: change-me}\n  vector: {}\n  custom:\n\
    \x20 - {name: redis, image: 'redis:7', port: 6379, resources: {cpu: 0.5, memory: 256Mi}}\n";

/// Removes every container and volume of the provider simulator when dropped, however
/// the benchmark ends (normally its close runs have removed them already).
struct ContainerCleanup {
    provider: String,
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let filter = format!("label={PROVIDER_LABEL}={}", self.provider);
        for (list, remove) in [
            (vec!["ps", "-aq", "--filter", &filter], vec!["rm", "-f"]),
            (
                vec!["volume", "ls", "-q", "--filter", &filter],
                vec!["volume", "rm", "-f"],
            ),
        ] {
            let Ok(listed) = std::process::Command::new("docker").args(&list).output() else {
                return;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(&remove)
                    .args(&ids)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// One phase of one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct PhaseTime {
    wall_ms: f64,
    executor_ms: f64,
    sleep_ms: f64,
    engine_ms: f64,
    steps: usize,
}

/// A transaction's time inside the executor: signing (with the account look-up and the
/// gas simulation), broadcasting until the node accepted it, and confirming (the wait
/// for its block).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct TxSplit {
    sign_ms: f64,
    broadcast_ms: f64,
    confirm_ms: f64,
}

/// One journal entry of one run, for `--per-step`.
#[derive(Debug, Clone)]
struct StepRow {
    key: String,
    phase: usize,
    gap_ms: f64,
    executor_ms: f64,
    sleep_ms: f64,
    rest_ms: f64,
}

/// Everything measured of one deploy run.
#[derive(Debug, Clone)]
struct RunTimes {
    phases: [PhaseTime; 8],
    total_ms: f64,
    executor_ms: f64,
    sleep_ms: f64,
    engine_ms: f64,
    synthesize_step_ms: f64,
    height_ms: f64,
    create: TxSplit,
    lease: TxSplit,
    bid_polls: usize,
    ready_polls: usize,
    rows: Vec<StepRow>,
}

/// The figures of one phase over every run.
#[derive(Debug, Serialize)]
struct PhaseSummary {
    phase: &'static str,
    steps: usize,
    wall_ms_median: f64,
    executor_ms_median: f64,
    sleep_ms_median: f64,
    engine_ms_median: f64,
    engine_ms_max: f64,
}

/// Medians of a transaction's split.
#[derive(Debug, Serialize)]
struct TxSummary {
    sign_ms_median: f64,
    broadcast_ms_median: f64,
    confirm_ms_median: f64,
}

/// The dry-run synthesis timing.
#[derive(Debug, Serialize)]
struct DryRunSummary {
    project: &'static str,
    iterations: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    budget_ms: f64,
    verdict: &'static str,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    runs: u64,
    backend: &'static str,
    block_time_ms: f64,
    bid_window_s: f64,
    image: String,
    services: usize,
    total_ms_median: f64,
    executor_ms_median: f64,
    sleep_ms_median: f64,
    engine_ms_median: f64,
    engine_ms_max: f64,
    engine_ms_per_run: Vec<f64>,
    synthesize_step_ms_median: f64,
    height_ms_median: f64,
    create_deployment: TxSummary,
    create_lease: TxSummary,
    bid_polls_median: f64,
    ready_polls_median: f64,
    close_run_ms_median: f64,
    teardown_ms_median: f64,
    phases: Vec<PhaseSummary>,
    dry_run_synthesis: DryRunSummary,
}

/// The phase a step's name puts it in; `None` for the engine's own records (`$now`,
/// `$sleep`), which count with the step before them.
fn phase_of(step_key: &str) -> Option<usize> {
    if step_key.starts_with('$') {
        return None;
    }
    let head = step_key.split(['/', '#']).next().unwrap_or_default();
    Some(match head {
        "signer" | "build" | "synthesize" => SYNTHESIZE,
        "height" | "deployment" => 2,
        "bids" => 3,
        "lease" => 4,
        "manifest" => 5,
        "ready" => 6,
        _ => SYNTHESIZE,
    })
}

/// The value at `fraction` (0..=1) of sorted `values`.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

/// Splits one finished run's journal into phases (see the module's documentation).
fn analyse(
    run: &RunRecord,
    journal: &[StepRecord],
    logs: &[LogRecord],
    calls: &HashMap<String, Duration>,
) -> Result<RunTimes> {
    let run_id = run.id.to_string();
    let completed = run
        .completed_at
        .ok_or_else(|| anyhow!("run {run_id} has no completion time"))?;
    let mut ordered: Vec<&StepRecord> = journal.iter().collect();
    ordered.sort_by_key(|step| (step.seq, step.started_at));
    let first = ordered
        .first()
        .map(|step| step.started_at)
        .ok_or_else(|| anyhow!("run {run_id} has an empty journal"))?;
    let executor_ms = |key: &str| {
        calls
            .get(&format!("{run_id}/{key}"))
            .map_or(0.0, |took| took.as_secs_f64() * 1000.0)
    };
    let mut phases = [PhaseTime::default(); 8];
    phases[START].wall_ms = ms(first - run.created_at);
    let mut rows = Vec::new();
    let mut previous_end = first;
    let mut phase = SYNTHESIZE;
    for step in ordered {
        let Some(done) = step.completed_at else {
            bail!("run {run_id}: step {} never completed", step.step_key);
        };
        if step.attempts > 1 {
            eprintln!(
                "deploy bench: note: run {run_id} step {} took {} attempts (its retry pauses count as engine time): {}",
                step.step_key,
                step.attempts,
                step.error.as_deref().unwrap_or("no error recorded")
            );
        }
        phase = phase_of(&step.step_key).unwrap_or(phase);
        let inside = if step.executor.is_some() {
            executor_ms(&step.step_key)
        } else {
            0.0
        };
        // A durable sleep ends at its `until` (the run is parked until then), not at the
        // commit of its record.
        let (end, slept) = if step.step_key.starts_with("$sleep") {
            let until: DateTime<Utc> = step
                .output
                .as_ref()
                .and_then(|output| output.get("until"))
                .cloned()
                .map(serde_json::from_value)
                .transpose()?
                .ok_or_else(|| anyhow!("run {run_id}: {} has no until", step.step_key))?;
            (done.max(until), ms(until - step.started_at).max(0.0))
        } else {
            (done, 0.0)
        };
        let gap = ms(step.started_at - previous_end);
        let span = ms(end - step.started_at);
        let entry = &mut phases[phase];
        entry.wall_ms += gap + span;
        entry.executor_ms += inside;
        entry.sleep_ms += slept;
        entry.steps += 1;
        rows.push(StepRow {
            key: step.step_key.clone(),
            phase,
            gap_ms: gap,
            executor_ms: inside,
            sleep_ms: slept,
            rest_ms: span - inside - slept,
        });
        previous_end = end;
    }
    phases[FINISH].wall_ms = ms(completed - previous_end);
    for entry in &mut phases {
        entry.engine_ms = entry.wall_ms - entry.executor_ms - entry.sleep_ms;
    }
    let accepted_at = |step: &str| {
        logs.iter()
            .find(|line| {
                line.step_key.as_deref() == Some(step) && line.message.starts_with("broadcast tx ")
            })
            .map(|line| line.ts)
    };
    let split = |prefix: &str| {
        let broadcast_key = format!("{prefix}/broadcast");
        let broadcast = journal.iter().find(|step| step.step_key == broadcast_key);
        let inside = executor_ms(&broadcast_key);
        let sent = match (broadcast, accepted_at(&broadcast_key)) {
            (Some(step), Some(at)) => ms(at - step.started_at).clamp(0.0, inside),
            _ => inside,
        };
        TxSplit {
            sign_ms: executor_ms(&format!("{prefix}/sign")),
            broadcast_ms: sent,
            confirm_ms: inside - sent,
        }
    };
    let polls = |head: &str| {
        journal
            .iter()
            .filter(|step| {
                let mut parts = step.step_key.split('/');
                parts.next() == Some(head)
                    && parts.next().is_some_and(|n| n.parse::<u32>().is_ok())
                    && parts.next().is_none_or(|gseq| gseq.parse::<u32>().is_ok())
                    && parts.next().is_none()
            })
            .count()
    };
    let total_ms = ms(completed - run.created_at);
    let executor_ms_sum: f64 = phases.iter().map(|p| p.executor_ms).sum();
    let sleep_ms_sum: f64 = phases.iter().map(|p| p.sleep_ms).sum();
    Ok(RunTimes {
        phases,
        total_ms,
        executor_ms: executor_ms_sum,
        sleep_ms: sleep_ms_sum,
        engine_ms: total_ms - executor_ms_sum - sleep_ms_sum,
        synthesize_step_ms: journal
            .iter()
            .find(|step| step.step_key == "synthesize")
            .and_then(|step| step.completed_at.map(|done| ms(done - step.started_at)))
            .unwrap_or_default(),
        height_ms: executor_ms("height"),
        create: split("deployment/create"),
        lease: split("lease/1"),
        bid_polls: polls("bids"),
        ready_polls: polls("ready"),
        rows,
    })
}

/// Where each journal entry of one run spent its time: the gap since the previous
/// entry's end (replay, workflow code, dispatch, a wake-up's latency), the executor
/// call, the durable sleep asked for, and the rest of its span (encoding, the commit).
fn print_steps(times: &RunTimes) {
    eprintln!(
        "{:<40} {:<10} {:>9} {:>12} {:>10} {:>14}",
        "step (last run)", "phase", "gap ms", "executor ms", "sleep ms", "commit+rest ms"
    );
    for row in &times.rows {
        eprintln!(
            "{:<40} {:<10} {:>9.2} {:>12.2} {:>10.2} {:>14.2}",
            row.key, PHASES[row.phase], row.gap_ms, row.executor_ms, row.sleep_ms, row.rest_ms
        );
    }
    eprintln!(
        "{:<40} {:<10} {:>9.2} (created → first step; finish: last entry → completed {:.2} ms)",
        "(start)", "start", times.phases[START].wall_ms, times.phases[FINISH].wall_ms
    );
}

/// Runs `docker` with `args`; its trimmed stdout, or a one-line error.
async fn docker(args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| anyhow!("cannot run the Docker CLI `docker`: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .unwrap_or("no error output");
        bail!("`docker {}` failed: {line}", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Fails with one line unless the Docker engine and the registry answer.
async fn check_docker_and_registry(registry: &str) -> Result<()> {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .await
        .map_err(|error| {
            anyhow!("the Docker engine is unreachable ({error}); is dockerd running? (DOCKER_HOST selects another engine)")
        })?;
    let url = format!("http://{registry}/v2/");
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await;
    if let Err(error) = answer {
        bail!(
            "the registry at {registry} is unreachable (GET {url}: {error}); start one with `docker run -d -p 5000:5000 registry:2` or pass --registry"
        );
    }
    Ok(())
}

/// Builds the benchmark's image (`FROM scratch` + busybox; httpd on `$PORT`, default
/// 8080) and pushes it to `registry`; returns its reference.
async fn build_image(busybox: &Path, registry: &str) -> Result<String> {
    let metadata = std::fs::metadata(busybox).with_context(|| {
        format!(
            "--busybox {}: give a statically linked busybox",
            busybox.display()
        )
    })?;
    if !metadata.is_file() {
        bail!("--busybox {}: not a file", busybox.display());
    }
    let context = tempfile::tempdir().context("cannot create a temporary directory")?;
    std::fs::copy(busybox, context.path().join("busybox"))
        .with_context(|| format!("cannot copy {}", busybox.display()))?;
    std::fs::write(context.path().join("index.html"), "morpheus bench deploy\n")?;
    std::fs::write(
        context.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\n\
             ENTRYPOINT [\"/bin/busybox\"]\n\
             CMD [\"sh\", \"-c\", \"exec /bin/busybox httpd -f -p ${{PORT:-{APP_PORT}}} -h /www\"]\n"
        ),
    )?;
    let image = format!("{registry}/{IMAGE_NAME}:latest");
    let dir = context.path().display().to_string();
    docker(&["build", "-q", "-t", &image, &dir]).await?;
    docker(&["push", "-q", &image]).await?;
    Ok(image)
}

/// The benchmark's project: the app and three custom sidecars, all of `image`.
fn project_yaml(image: &str) -> String {
    let mut text = format!(
        "name: bench-deploy\ntemplate: website\nimage: {image}\n\
         ports:\n  - {{ port: {APP_PORT}, as: 80 }}\n\
         env:\n  PORT: \"{APP_PORT}\"\n\
         sidecars:\n  custom:\n"
    );
    for (name, port) in SIDECARS {
        text.push_str(&format!(
            "    - {{ name: {name}, image: '{image}', port: {port}, env: {{ PORT: \"{port}\" }}, resources: {{ cpu: 0.1, memory: 64Mi }} }}\n"
        ));
    }
    text
}

/// Waits for a run to end within `limit`; fails unless it completed.
async fn finished(
    engine: &Engine,
    run_id: RunId,
    what: &str,
    limit: Duration,
) -> Result<RunRecord> {
    let run = tokio::time::timeout(limit, engine.wait(run_id))
        .await
        .map_err(|_| {
            anyhow!(
                "{what} run {run_id} did not end within {}",
                humantime::format_duration(limit)
            )
        })??;
    if run.status != RunStatus::Completed {
        bail!(
            "{what} run {} ended {}: {}",
            run.id,
            run.status,
            run.error.unwrap_or_default()
        );
    }
    Ok(run)
}

/// Waits until the provider simulator has removed deployment `dseq`'s containers.
async fn wait_removed(provider: &str, dseq: &str) -> Result<()> {
    let by_provider = format!("label={PROVIDER_LABEL}={provider}");
    let by_dseq = format!("label={DSEQ_LABEL}={dseq}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = docker(&["ps", "-aq", "--filter", &by_provider, "--filter", &by_dseq]).await?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the provider simulator did not remove the containers of closed deployment {dseq} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Times `load` + `synthesize` (what `morpheus deploy --dry-run` runs) of a project
/// with three sidecars, from its `morpheus.yaml` on disk.
fn time_dry_run() -> Result<DryRunSummary> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    std::fs::write(
        dir.path().join(crate::akash_project::PROJECT_FILE),
        DRY_RUN_PROJECT,
    )?;
    let mut took = Vec::with_capacity(DRY_RUN_ITERATIONS);
    for _ in 0..DRY_RUN_ITERATIONS {
        let started = Instant::now();
        let project = crate::akash_project::load(dir.path())?;
        let synthesis = synthesize(&project).map_err(|error| anyhow!("{error}"))?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(synthesis);
    }
    took.sort_by(f64::total_cmp);
    let p99 = percentile(&took, 0.99);
    Ok(DryRunSummary {
        project: "postgres + vector + 1 custom sidecar",
        iterations: DRY_RUN_ITERATIONS,
        p50_ms: round3(percentile(&took, 0.5)),
        p99_ms: round3(p99),
        max_ms: round3(took.last().copied().unwrap_or_default()),
        budget_ms: DRY_RUN_BUDGET_MS,
        verdict: if p99 <= DRY_RUN_BUDGET_MS {
            "PASS"
        } else {
            "OVER"
        },
    })
}

/// A finished run's logs.
async fn run_logs(world: &Arc<dyn World>, run_id: RunId) -> Result<Vec<LogRecord>> {
    Ok(world
        .query_logs(&LogQuery {
            run_id: Some(run_id),
            limit: Some(100_000),
            ..Default::default()
        })
        .await?)
}

/// Runs `morpheus bench deploy`.
pub async fn run(args: BenchDeployArgs) -> Result<()> {
    if args.akash_block_time < Duration::from_millis(10) {
        bail!("--akash-block-time: must be at least 10ms (the workflow polls once a block)");
    }
    check_docker_and_registry(&args.registry).await?;
    let image = build_image(&args.busybox, &args.registry).await?;
    eprintln!("deploy bench: built and pushed {image} (FROM scratch + busybox httpd)");

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
    let mut provider_options = ProviderOptions::new(akash_sim.url().parse()?);
    provider_options
        .attributes
        .push(("region".into(), "local".into()));
    provider_options.bid_delay_blocks = 1;
    provider_options.poll_interval = Duration::from_millis(200);
    let provider = start_provider(TcpListener::bind("127.0.0.1:0").await?, provider_options)
        .await
        .map_err(|error| anyhow!("cannot start the provider simulator: {error}"))?;
    let provider_address = provider.address().to_owned();
    let _cleanup = ContainerCleanup {
        provider: provider_address.clone(),
    };
    eprintln!(
        "deploy bench: Akash devnet SIMULATOR {} (blocks every {}), provider SIMULATOR {} ({}, bids 1 block after an order opens, containers on the local Docker engine)",
        akash_sim.url(),
        humantime::format_duration(args.akash_block_time),
        provider.url(),
        provider_address
    );

    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let world =
        crate::commands::open(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
    let times: CallTimes = Arc::default();
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
        inner: cosmos,
        times: times.clone(),
    });
    let mut workflows = WorkflowRegistry::new();
    workflows.register(AkashDeploy::default());
    workflows.register(AkashClose);
    let engine = Engine::new(world.clone(), workflows.clone(), executors);
    let mut worker = WorkerConfig::for_backend(world.backend());
    worker.poll_interval = Duration::from_millis(50);
    let runtime = Runtime::new(engine.clone())
        .worker_config(worker)
        .without_scheduler()
        .spawn();

    let seconds_per_block = args.akash_block_time.as_secs_f64();
    let bid_window_s = args.bid_window.as_secs_f64();
    let bid_timeout_s = bid_window_s + 60.0;
    let run_limit = args.bid_window + Duration::from_secs(240);
    let input = json!({
        "project_yaml": project_yaml(&image),
        "owner": owner,
        "deposit": "5000000uakt",
        "bids": {},
        "bid_window_s": bid_window_s,
        "bid_timeout_s": bid_timeout_s,
        "ready_timeout_s": 120.0,
        "seconds_per_block": seconds_per_block,
    });
    let mut measured: Vec<RunTimes> = Vec::new();
    let mut close_walls = Vec::new();
    let mut teardowns = Vec::new();
    // One warm-up run (connections, caches, the image's first pull), then the measured.
    for index in 0..=args.runs {
        let new_run = workflows.prepare(AkashDeploy::NAME, input.clone(), None)?;
        let started = engine.start_prepared(new_run).await?;
        let run = finished(&engine, started.run_id, "akash.deploy", run_limit).await?;
        let report: AkashDeployReport =
            serde_json::from_value(run.output.clone().unwrap_or_default()).map_err(|error| {
                anyhow!("akash.deploy run {}: unexpected report: {error}", run.id)
            })?;
        let analysed = if index > 0 {
            let journal = world.load_journal(run.id).await?;
            let logs = run_logs(&world, run.id).await?;
            let calls = times.lock().unwrap_or_else(PoisonError::into_inner).clone();
            Some(analyse(&run, &journal, &logs, &calls)?)
        } else {
            None
        };

        let close_input =
            json!({"owner": owner, "dseq": report.dseq, "seconds_per_block": seconds_per_block});
        let close_run = workflows.prepare(AkashClose::NAME, close_input, None)?;
        let started = engine.start_prepared(close_run).await?;
        let closed = finished(&engine, started.run_id, "akash.close", run_limit).await?;
        wait_removed(&provider_address, &report.dseq).await?;
        let removed_at = Utc::now();

        let Some(times) = analysed else {
            eprintln!(
                "deploy bench: warm-up run done (dseq {}, {} service(s) running); measuring {} runs",
                report.dseq,
                report.uris.len(),
                args.runs
            );
            continue;
        };
        if let Some(done) = closed.completed_at {
            close_walls.push(ms(done - closed.created_at));
            teardowns.push(ms(removed_at - done));
        }
        eprintln!(
            "deploy bench: run {index}/{} (dseq {}): total {:.1} ms, engine {:.2} ms; {}",
            args.runs,
            report.dseq,
            times.total_ms,
            times.engine_ms,
            PHASES
                .iter()
                .zip(&times.phases)
                .skip(1)
                .take(6)
                .map(|(name, phase)| format!("{name} {:.1}", phase.wall_ms))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if args.per_step && index == args.runs {
            print_steps(&times);
        }
        measured.push(times);
    }
    runtime.shutdown().await?;
    provider.shutdown().await;
    akash_sim.shutdown().await;

    eprintln!("deploy bench: timing the dry-run synthesis ({DRY_RUN_ITERATIONS} iterations)");
    let dry_run = time_dry_run()?;

    let pick = |f: &dyn Fn(&RunTimes) -> f64| measured.iter().map(f).collect::<Vec<f64>>();
    let med = |f: &dyn Fn(&RunTimes) -> f64| round3(median(&mut pick(f)));
    let phases: Vec<PhaseSummary> = PHASES
        .iter()
        .enumerate()
        .map(|(index, phase)| PhaseSummary {
            phase,
            steps: measured.first().map_or(0, |t| t.phases[index].steps),
            wall_ms_median: med(&|t| t.phases[index].wall_ms),
            executor_ms_median: med(&|t| t.phases[index].executor_ms),
            sleep_ms_median: med(&|t| t.phases[index].sleep_ms),
            engine_ms_median: med(&|t| t.phases[index].engine_ms),
            engine_ms_max: round3(
                pick(&|t| t.phases[index].engine_ms)
                    .into_iter()
                    .fold(f64::MIN, f64::max),
            ),
        })
        .collect();
    let tx = |f: &dyn Fn(&RunTimes) -> TxSplit| TxSummary {
        sign_ms_median: med(&|t| f(t).sign_ms),
        broadcast_ms_median: med(&|t| f(t).broadcast_ms),
        confirm_ms_median: med(&|t| f(t).confirm_ms),
    };
    let report = Report {
        benchmark: "deploy",
        runs: args.runs,
        backend: "sqlite",
        block_time_ms: args.akash_block_time.as_secs_f64() * 1000.0,
        bid_window_s,
        image,
        services: 1 + SIDECARS.len(),
        total_ms_median: med(&|t| t.total_ms),
        executor_ms_median: med(&|t| t.executor_ms),
        sleep_ms_median: med(&|t| t.sleep_ms),
        engine_ms_median: med(&|t| t.engine_ms),
        engine_ms_max: round3(pick(&|t| t.engine_ms).into_iter().fold(f64::MIN, f64::max)),
        engine_ms_per_run: pick(&|t| round3(t.engine_ms)),
        synthesize_step_ms_median: med(&|t| t.synthesize_step_ms),
        height_ms_median: med(&|t| t.height_ms),
        create_deployment: tx(&|t| t.create),
        create_lease: tx(&|t| t.lease),
        bid_polls_median: med(&|t| t.bid_polls as f64),
        ready_polls_median: med(&|t| t.ready_polls as f64),
        close_run_ms_median: round3(median(&mut close_walls)),
        teardown_ms_median: round3(median(&mut teardowns)),
        phases,
        dry_run_synthesis: dry_run,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

fn print_report(report: &Report) {
    println!(
        "akash.deploy on the Akash devnet simulator (blocks every {} ms) and the provider simulator (Docker), SQLite: {} runs, medians",
        report.block_time_ms, report.runs
    );
    println!(
        "project: app + {} custom sidecars (one group, {} services) of {}; bid window {} s",
        SIDECARS.len(),
        report.services,
        report.image,
        report.bid_window_s
    );
    println!(
        "{:<11} {:>5} {:>10} {:>12} {:>10} {:>11} {:>15}",
        "phase", "steps", "wall ms", "executor ms", "sleep ms", "engine ms", "engine max ms"
    );
    for phase in &report.phases {
        println!(
            "{:<11} {:>5} {:>10.1} {:>12.1} {:>10.1} {:>11.2} {:>15.2}",
            phase.phase,
            phase.steps,
            phase.wall_ms_median,
            phase.executor_ms_median,
            phase.sleep_ms_median,
            phase.engine_ms_median,
            phase.engine_ms_max
        );
    }
    println!(
        "{:<11} {:>5} {:>10.1} {:>12.1} {:>10.1} {:>11.2} {:>15.2}",
        "total",
        report.phases.iter().map(|p| p.steps).sum::<usize>(),
        report.total_ms_median,
        report.executor_ms_median,
        report.sleep_ms_median,
        report.engine_ms_median,
        report.engine_ms_max
    );
    let tx = |name: &str, split: &TxSummary| {
        println!(
            "  {name}: sign {:.1} ms, broadcast {:.1} ms, confirm {:.1} ms (inside the executor)",
            split.sign_ms_median, split.broadcast_ms_median, split.confirm_ms_median
        );
    };
    println!(
        "  synthesize step (SDL, manifest, version, groups) {:.2} ms; latest height {:.1} ms",
        report.synthesize_step_ms_median, report.height_ms_median
    );
    tx("create deployment", &report.create_deployment);
    tx("create lease", &report.create_lease);
    println!(
        "  bid polls {}, readiness polls {}; akash.close run {:.1} ms, containers removed {:.1} ms after it",
        report.bid_polls_median,
        report.ready_polls_median,
        report.close_run_ms_median,
        report.teardown_ms_median
    );
    println!(
        "engine ms per run (wall − executor − sleep): {}",
        report
            .engine_ms_per_run
            .iter()
            .map(|engine| format!("{engine:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dry = &report.dry_run_synthesis;
    println!(
        "dry-run synthesis ({}), {} iterations: p50 {:.3} ms, p99 {:.3} ms (max {:.3}), budget ≤ {} ms: {}",
        dry.project, dry.iterations, dry.p50_ms, dry.p99_ms, dry.max_ms, dry.budget_ms, dry.verdict
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fall_into_their_phases() {
        for (step, phase) in [
            ("signer", Some("synthesize")),
            ("synthesize", Some("synthesize")),
            ("height", Some("create")),
            ("deployment/create/sign", Some("create")),
            ("deployment/create/broadcast", Some("create")),
            ("bids/3", Some("bids")),
            ("bids/1/provider/akash1xyz", Some("bids")),
            ("lease/1/sign", Some("lease")),
            ("lease/1/provider", Some("lease")),
            ("manifest/http://127.0.0.1:1234", Some("manifest")),
            ("ready/2/1", Some("ready")),
            ("$now#3", None),
            ("$sleep", None),
        ] {
            assert_eq!(phase_of(step).map(|index| PHASES[index]), phase, "{step}");
        }
    }

    #[test]
    fn the_project_is_valid_and_has_four_services() {
        let yaml = project_yaml("127.0.0.1:5000/morpheus-bench-deploy:latest");
        let project =
            morpheus_workflows::akash::project::Project::from_yaml(&yaml).expect("valid project");
        let synthesis = synthesize(&project).expect("synthesis");
        assert_eq!(synthesis.groups.len(), 1);
        assert_eq!(synthesis.groups[0].resources.len(), 1 + SIDECARS.len());
    }

    #[test]
    fn the_dry_run_project_is_valid() {
        let project = morpheus_workflows::akash::project::Project::from_yaml(DRY_RUN_PROJECT)
            .expect("valid project");
        let synthesis = synthesize(&project).expect("synthesis");
        assert_eq!(synthesis.groups[0].resources.len(), 4);
    }
}
