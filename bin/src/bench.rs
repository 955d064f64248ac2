//! `morpheus bench`: N runs of M no-op steps with C runs in flight, through the real
//! engine (claims, leases, journal, group commit), on a fresh database.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use morpheus_engine::{
    async_trait, Ctx, Engine, ExecutorRegistry, RunFilter, RunStatus, Worker, WorkerConfig,
    Workflow, WorkflowRegistry, WorkflowResult, World,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::BenchArgs;
use crate::commands::{open, redact};

/// Step latencies in microseconds (from the step's start to its commit ack).
static STEP_LATENCIES_US: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize)]
struct NoopInput {
    steps: u64,
    park_for_s: Option<u64>,
}

/// M memoized no-op steps (or, for parked filler runs, one durable sleep).
struct BenchNoop;

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
            sum += ctx.step("noop").run(|_| async move { Ok(index) }).await?;
            let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
            STEP_LATENCIES_US.lock().expect("latencies").push(micros);
        }
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

fn percentile_ms(sorted_us: &[u32], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * fraction).round() as usize;
    (sorted_us[index] as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(url: &str, args: BenchArgs) -> Result<()> {
    let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
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
    let engine = Engine::with_listen_url(
        world.clone(),
        workflows,
        ExecutorRegistry::new(),
        &bench_url,
    );

    let mut config = WorkerConfig::for_backend(world.backend());
    config.concurrency = args.concurrency as usize;
    config.poll_interval = Duration::from_millis(100);

    if args.parked > 0 {
        // Phase 1 (not timed): park filler runs, so phase 2 runs beside them.
        for _ in 0..args.parked {
            engine
                .start(
                    BenchNoop::NAME,
                    json!({"steps": 0, "park_for_s": 3600}),
                    None,
                )
                .await?;
        }
        let worker = start_worker(&engine, &config);
        wait_for_count(&*world, RunStatus::Sleeping, args.parked).await?;
        worker.stop().await?;
    }

    for _ in 0..args.runs {
        engine
            .start(BenchNoop::NAME, json!({"steps": args.steps}), None)
            .await?;
    }
    STEP_LATENCIES_US.lock().expect("latencies").clear();
    let started = Instant::now();
    let worker = start_worker(&engine, &config);
    wait_for_count(&*world, RunStatus::Completed, args.runs).await?;
    let seconds = started.elapsed().as_secs_f64();
    worker.stop().await?;

    let failed = world
        .list_runs(&RunFilter {
            status: Some(RunStatus::Failed),
            workflow: Some(BenchNoop::NAME.into()),
            limit: Some(1),
        })
        .await?;
    if let Some(run) = failed.first() {
        bail!(
            "bench run {} failed: {}",
            run.id,
            run.error.clone().unwrap_or_default()
        );
    }
    let mut latencies = STEP_LATENCIES_US.lock().expect("latencies").clone();
    latencies.sort_unstable();
    let steps = args.runs * args.steps;
    let report = json!({
        "backend": world.backend().as_str(),
        "database": redact(&bench_url),
        "runs": args.runs,
        "steps": steps,
        "concurrency": args.concurrency,
        "parked": args.parked,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "steps_per_s": (steps as f64 / seconds).round(),
        "p50_step_ms": percentile_ms(&latencies, 0.50),
        "p99_step_ms": percentile_ms(&latencies, 0.99),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{report}");
    Ok(())
}

struct RunningWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<morpheus_engine::EngineResult<()>>,
}

impl RunningWorker {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

fn start_worker(engine: &Engine, config: &WorkerConfig) -> RunningWorker {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Worker::new(engine.clone(), config.clone()).run(async {
        let _ = stopped.await;
    }));
    RunningWorker { stop, task }
}

/// Waits until `expected` bench runs have `status`; fails fast if any bench run failed.
async fn wait_for_count(world: &dyn World, status: RunStatus, expected: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let filter = |status| RunFilter {
        status: Some(status),
        workflow: Some(BenchNoop::NAME.into()),
        limit: None,
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
