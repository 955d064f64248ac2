//! `morpheus bench`: N runs of M no-op steps with C runs in flight, through the real
//! engine (claims, leases, journal, group commit), on a fresh SQLite file or the given
//! Postgres database; optionally beside parked runs, over seeded history, while pruning,
//! and next to `pgbench -N` on the same server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use futures::StreamExt;
use morpheus_engine::{
    async_trait, ClaimRequest, Ctx, Engine, LogLevel, RunFilter, RunId, RunStatus, RunningRuntime,
    Runtime, WorkerConfig, Workflow, WorkflowRegistry, WorkflowResult, World,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::BenchArgs;
use crate::commands::{open, redact};

/// Runs per prune transaction in `--prune-during` (the `prune` command's default):
/// on SQLite a claim waits for at most one batch.
const PRUNE_BATCH: u32 = 100;

/// Step latencies in microseconds (from the step's start to its commit ack).
static STEP_LATENCIES_US: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Bench bodies that returned (their runs' completions are being committed). Waiting on
/// this in memory keeps the measurement from counting rows in a table that may hold a
/// million finished runs.
pub(crate) static BODIES_DONE: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NoopInput {
    steps: u64,
    park_for_s: Option<u64>,
    /// Each step also writes a log line (`morpheus bench api`: something to follow).
    #[serde(default)]
    log_each_step: bool,
}

/// M memoized no-op steps (or, for parked filler runs, one durable sleep).
pub(crate) struct BenchNoop;

#[async_trait]
impl Workflow for BenchNoop {
    const NAME: &'static str = "bench.noop";
    type Input = NoopInput;
    type Output = u64;

    async fn run(&self, ctx: &Ctx, input: NoopInput) -> WorkflowResult<u64> {
        if let Some(seconds) = input.park_for_s {
            ctx.sleep(Duration::from_secs(seconds)).await?;
            return Ok(0);
        }
        let mut sum = 0;
        for index in 0..input.steps {
            let started = Instant::now();
            if input.log_each_step {
                ctx.log(LogLevel::Info, format!("bench step {index}"));
            }
            sum += ctx.step("noop").run(|_| async move { Ok(index) }).await?;
            let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
            STEP_LATENCIES_US.lock().expect("latencies").push(micros);
        }
        BODIES_DONE.fetch_add(1, Ordering::SeqCst);
        Ok(sum)
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
        .unwrap_or(0.0)
}

pub(crate) fn percentile_ms(sorted_us: &[u32], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * fraction).round() as usize;
    (sorted_us[index] as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(url: &str, args: BenchArgs) -> Result<()> {
    match args.mode {
        Some(crate::cli::BenchMode::Deploy(deploy)) => {
            return crate::bench_deploy::run(deploy).await
        }
        Some(crate::cli::BenchMode::Idle(idle)) => return crate::bench_idle::run(url, idle).await,
        Some(crate::cli::BenchMode::Workers(workers)) => {
            return crate::bench_workers::run(url, workers).await
        }
        _ => {}
    }
    let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if args.compare_pgbench && !is_postgres {
        bail!("--compare-pgbench needs a postgres:// --database-url");
    }
    let temp_dir;
    let bench_url = if is_postgres {
        url.to_owned()
    } else {
        temp_dir = match &args.dir {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .context("cannot create a temporary directory for the benchmark database")?;
        format!("sqlite://{}/bench.db", temp_dir.path().display())
    };
    let world = open(&bench_url).await?;
    let mut workflows = WorkflowRegistry::new();
    workflows.register(BenchNoop);
    let engine = Engine::builder(world.clone())
        .workflows(workflows.clone())
        .build();
    // A queue of its own, so runs left in a reused database never mix in.
    let queue = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut config = WorkerConfig::for_backend(world.backend());
    config.concurrency = args.concurrency as usize;
    config.poll_interval = Duration::from_millis(100);
    config.queues = Some(vec![queue.clone()]);
    let start_bench_run = |input: serde_json::Value| {
        let new_run = workflows
            .prepare(BenchNoop::NAME, input, None)
            .map(|run| run.queue(queue.clone()));
        let engine = engine.clone();
        async move { anyhow::Ok(engine.start_prepared(new_run?).await?) }
    };

    if args.history > 0 {
        let age = chrono::Duration::from_std(args.history_age)?;
        morpheus_engine::store::connect_bench(&bench_url)
            .await?
            .seed_finished_runs("bench.history", args.history, Utc::now() - age)
            .await?;
    }
    if args.parked > 0 {
        // Not timed: park filler runs, so the measured runs run beside them.
        let before = count(&*world, RunStatus::Sleeping).await?;
        for _ in 0..args.parked {
            start_bench_run(json!({"steps": 0, "park_for_s": 3600})).await?;
        }
        let worker = start_worker(&engine, &config);
        wait_for_count(&*world, RunStatus::Sleeping, before + args.parked).await?;
        worker.shutdown().await?;
    }

    // The ceiling first, on the same database, before the workload's rows exist.
    let ceiling = if args.ceiling {
        let raw = morpheus_engine::store::connect_bench(&bench_url)
            .await?
            .raw_step_writes(args.runs, args.steps, u64::from(args.concurrency))
            .await?;
        if raw.steps != args.runs * args.steps {
            bail!(
                "the ceiling's fenced updates found {} of {} runs",
                raw.steps,
                args.runs * args.steps
            );
        }
        Some(raw.steps as f64 / raw.took.as_secs_f64())
    } else {
        None
    };

    let failed_before = count(&*world, RunStatus::Failed).await?;
    STEP_LATENCIES_US.lock().expect("latencies").clear();
    if args.profile {
        morpheus_engine::profile::reset();
        morpheus_engine::profile::enable(true);
    }
    let mut rates = Vec::with_capacity(args.repeat as usize);
    let mut seconds = 0.0;
    let mut claim_p50_ms = 0.0;
    let mut pruner = None;
    let mut claims_overlapped_prune = None;
    for round in 0..args.repeat {
        let mut run_ids = Vec::with_capacity(args.runs as usize);
        for _ in 0..args.runs {
            run_ids.push(start_bench_run(json!({"steps": args.steps})).await?.run_id);
        }
        BODIES_DONE.store(0, Ordering::SeqCst);
        if round == 0 {
            pruner = args.prune_during.then(|| {
                let world = world.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let cutoff = Utc::now() - chrono::Duration::days(7);
                    let report = world.prune_finished(cutoff, PRUNE_BATCH, false).await;
                    (report, started.elapsed().as_secs_f64())
                })
            });
            // Claim latency over the history (and, with --prune-during, while pruning).
            claim_p50_ms = claim_latency_p50_ms(&*world, &workflows, &queue).await?;
            claims_overlapped_prune = pruner.as_ref().map(|task| !task.is_finished());
        }
        let started = Instant::now();
        let worker = start_worker(&engine, &config);
        // Cheap in-memory wait until every body returned, then confirm in the database.
        let mut polls = 0u64;
        while BODIES_DONE.load(Ordering::SeqCst) < args.runs {
            tokio::time::sleep(Duration::from_millis(1)).await;
            polls += 1;
            // A failed run never returns its body; failed runs are cheap to count (their
            // own partial index).
            if polls.is_multiple_of(500) && count(&*world, RunStatus::Failed).await? > failed_before
            {
                break;
            }
        }
        // Then every completion must be committed: look the runs up by id (never a
        // count over a table that may hold a million finished runs).
        wait_until_finished(&*world, run_ids).await?;
        let took = started.elapsed().as_secs_f64();
        worker.shutdown().await?;
        seconds += took;
        rates.push((args.runs * args.steps) as f64 / took);
        if args.repeat > 1 {
            eprintln!(
                "bench: round {}/{}: {:.0} steps/s",
                round + 1,
                args.repeat,
                rates[rates.len() - 1]
            );
        }
    }
    morpheus_engine::profile::enable(false);
    check_no_failed_run(&*world).await?;
    let mut latencies = STEP_LATENCIES_US.lock().expect("latencies").clone();
    latencies.sort_unstable();
    let steps = args.runs * args.steps;
    let mut sorted_rates = rates.clone();
    sorted_rates.sort_by(f64::total_cmp);
    let steps_per_s = sorted_rates[sorted_rates.len() / 2];
    let mut report = json!({
        "backend": world.backend().as_str(),
        "database": redact(&bench_url),
        "runs": args.runs,
        "steps": steps,
        "concurrency": args.concurrency,
        "parked": args.parked,
        "history": args.history,
        "seconds": round3(seconds),
        "steps_per_s": steps_per_s.round(),
        "repeat": args.repeat,
        "p50_step_ms": percentile_ms(&latencies, 0.50),
        "p99_step_ms": percentile_ms(&latencies, 0.99),
        "claim_p50_ms": claim_p50_ms,
        "peak_rss_mb": peak_rss_mb(),
    });
    if args.repeat > 1 {
        let (low, high) = (sorted_rates[0], sorted_rates[sorted_rates.len() - 1]);
        report["steps_per_s_rounds"] =
            json!(rates.iter().map(|rate| rate.round()).collect::<Vec<_>>());
        report["steps_per_s_min"] = json!(low.round());
        report["steps_per_s_max"] = json!(high.round());
        report["spread_pct"] = json!(((high - low) / steps_per_s * 1000.0).round() / 10.0);
    }
    if let Some(ceiling) = ceiling {
        report["ceiling_steps_per_s"] = json!(ceiling.round());
        report["fraction_of_ceiling"] = json!((steps_per_s / ceiling * 1000.0).round() / 1000.0);
    }
    if args.profile {
        report["profile"] = profile_report();
    }
    if let Some(pruner) = pruner {
        let (pruned, prune_seconds) = pruner.await?;
        let pruned = pruned?;
        report["pruned_runs"] = json!(pruned.runs);
        report["claims_overlapped_prune"] = json!(claims_overlapped_prune);
        report["prune_seconds"] = json!(round3(prune_seconds));
    }
    if args.compare_pgbench {
        let pgbench_tps = pgbench_tps(&bench_url, args.concurrency, seconds).await?;
        report["pgbench_tps"] = json!(pgbench_tps.round());
        report["ratio_to_pgbench"] = json!((steps_per_s / pgbench_tps * 100.0).round() / 100.0);
    }
    println!("{report}");
    Ok(())
}

/// The engine's step-time profile of the workload (`--profile`): each phase's events,
/// total and mean, the mean batch size, and the part of a step no phase accounts for.
/// Also printed as a table on stderr.
pub(crate) fn profile_report() -> serde_json::Value {
    use morpheus_engine::profile::{snapshot, Phase};
    let phases = snapshot();
    let of = |phase: Phase| {
        *phases
            .iter()
            .find(|total| total.phase == phase)
            .expect("snapshot has every phase")
    };
    let mean_us = |phase: Phase| of(phase).mean().as_secs_f64() * 1e6;
    eprintln!("bench: where a step's time goes (means over the whole workload)");
    eprintln!(
        "  {:<38} {:>9} {:>11} {:>10}",
        "phase", "events", "total ms", "mean µs"
    );
    let mut rows = Vec::new();
    for total in &phases {
        eprintln!(
            "  {:<38} {:>9} {:>11.1} {:>10.1}",
            total.phase.as_str(),
            total.events,
            total.total.as_secs_f64() * 1e3,
            total.mean().as_secs_f64() * 1e6
        );
        rows.push(json!({
            "phase": total.phase.as_str(),
            "events": total.events,
            "total_ms": round3(total.total.as_secs_f64() * 1e3),
            "mean_us": round3(total.mean().as_secs_f64() * 1e6),
        }));
    }
    let accounted = [
        Phase::Body,
        Phase::Serialize,
        Phase::ToCommitter,
        Phase::CommitPerWrite,
        Phase::AckHop,
    ]
    .into_iter()
    .map(mean_us)
    .sum::<f64>();
    let unaccounted_us = mean_us(Phase::Step) - accounted;
    let batches = of(Phase::Commit).events;
    let mean_batch = if batches == 0 {
        0.0
    } else {
        of(Phase::CommitPerWrite).events as f64 / batches as f64
    };
    eprintln!("  mean acked writes per commit: {mean_batch:.1}; per step outside the phases: {unaccounted_us:.1} µs");
    json!({
        "phases": rows,
        "mean_acked_writes_per_commit": (mean_batch * 10.0).round() / 10.0,
        "step_unaccounted_us": round3(unaccounted_us),
    })
}

/// Fails with the first failed bench run's error, if any (failed runs are cheap to find:
/// they have a partial index of their own).
pub(crate) async fn check_no_failed_run(world: &dyn World) -> Result<()> {
    let failed = world
        .list_runs(&RunFilter {
            status: Some(RunStatus::Failed),
            workflow: Some(BenchNoop::NAME.into()),
            limit: Some(1),
            ..RunFilter::default()
        })
        .await?;
    if let Some(run) = failed.first() {
        bail!(
            "bench run {} failed: {}",
            run.id,
            run.error.clone().unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

async fn count(world: &dyn World, status: RunStatus) -> Result<u64> {
    Ok(world
        .count_runs(&RunFilter {
            status: Some(status),
            workflow: Some(BenchNoop::NAME.into()),
            limit: None,
            ..RunFilter::default()
        })
        .await?)
}

/// Median latency of claiming one ready run, measured on 100 fresh runs in a queue of
/// their own (cancelled afterwards).
async fn claim_latency_p50_ms(
    world: &dyn World,
    workflows: &WorkflowRegistry,
    queue: &str,
) -> Result<f64> {
    let claim_queue = format!("{queue}-claims");
    let mut ids = Vec::new();
    for _ in 0..100 {
        let new_run = workflows
            .prepare(BenchNoop::NAME, json!({"steps": 1}), None)?
            .queue(claim_queue.clone());
        ids.push(world.start_run(new_run).await?.run_id);
    }
    let request = ClaimRequest {
        owner: format!("{queue}-claimer"),
        limit: 1,
        lease_ttl: Duration::from_secs(60),
        workflows: workflows.versions(),
        queues: Some(vec![claim_queue]),
    };
    let mut latencies = Vec::with_capacity(ids.len());
    for _ in 0..ids.len() {
        let started = Instant::now();
        let claimed = world.claim_runs(&request).await?;
        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if claimed.is_empty() {
            bail!("claim latency probe found no run to claim");
        }
    }
    for id in ids {
        world.cancel_run(id).await?;
    }
    latencies.sort_unstable();
    Ok(percentile_ms(&latencies, 0.5))
}

/// `pgbench -N` (simple updates) with `clients` clients for `seconds` rounded up to
/// whole seconds, on the same database; returns its transactions per second.
async fn pgbench_tps(url: &str, clients: u32, seconds: f64) -> Result<f64> {
    let init = tokio::process::Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", url])
        .output()
        .await
        .context("cannot run pgbench (Debian package postgresql-contrib / postgresql)")?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        );
    }
    let duration = (seconds.ceil() as u64).max(1).to_string();
    let clients = clients.to_string();
    let run = tokio::process::Command::new("pgbench")
        .args(["-N", "-c", &clients, "-j", "2", "-T", &duration, url])
        .output()
        .await
        .context("cannot run pgbench")?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if !run.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    stdout
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .context("pgbench printed no 'tps = …' line")
}

/// The benchmark's worker, in the background: no scheduler (nothing is scheduled, and
/// its passes would only add noise).
pub(crate) fn start_worker(engine: &Engine, config: &WorkerConfig) -> RunningRuntime {
    Runtime::new(engine.clone())
        .worker_config(config.clone())
        .without_scheduler()
        .spawn()
}

/// Waits until every run in `pending` has ended, checking them by id, 16 at a time.
pub(crate) async fn wait_until_finished(world: &dyn World, mut pending: Vec<RunId>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !pending.is_empty() {
        let checks = futures::stream::iter(pending.iter().copied())
            .map(|run_id| async move { (run_id, world.get_run(run_id).await) })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        let mut unfinished = Vec::new();
        for (run_id, run) in checks {
            let run = run?.context("bench run vanished")?;
            if !run.status.is_terminal() {
                unfinished.push(run_id);
            }
        }
        pending = unfinished;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("benchmark did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Waits until `expected` bench runs have `status`; fails fast if any bench run failed.
async fn wait_for_count(world: &dyn World, status: RunStatus, expected: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let filter = |status| RunFilter {
        status: Some(status),
        workflow: Some(BenchNoop::NAME.into()),
        limit: None,
        ..RunFilter::default()
    };
    let mut poll = 0u64;
    loop {
        poll += 1;
        if world.count_runs(&filter(status)).await? >= expected {
            return Ok(());
        }
        // A failed run would never complete: stop early (the caller reports it).
        if poll.is_multiple_of(50) && world.count_runs(&filter(RunStatus::Failed)).await? > 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("benchmark did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
