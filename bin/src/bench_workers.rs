//! `morpheus bench workers`: N worker processes sharing one Postgres database. Does
//! steps/s hold as N grows (it cannot rise much on a small machine, but it must not
//! collapse from lock contention or heartbeat storms), and does the claim latency p99
//! stay within 10 ms?
//!
//! Everything happens in a fresh database `morpheus_bench_workers` on the server of
//! --database-url, dropped afterwards. For each worker count N in --workers, on a queue
//! of its own:
//!
//! 1. N child processes of this binary start (`bench workers --child-queue Q`, hidden).
//!    Each installs a metrics recorder of its own, connects, warms a few pool connections
//!    (as a long-running worker's pool has them: open, with the claim statements
//!    prepared, by claims in an empty queue) and prints `ready`. None claims from Q yet.
//! 2. Meanwhile this process inserts all --runs runs (`{"steps": S}`) into Q.
//! 3. Once every child is ready, the clock starts and each child is sent `go`: only then
//!    does it start one real worker (the engine's `Runtime` without a scheduler, with
//!    `WorkerConfig::for_backend` defaults except --concurrency and the queue Q). The
//!    clock therefore covers claiming and executing, not process start-up or inserts.
//! 4. The children print `done K` (bench bodies returned so far) as they go. Once the sum
//!    reaches --runs, this process counts Q's completed runs (one query; Q holds exactly
//!    these runs) until all are committed, and stops the clock. Watching the children's
//!    counts instead of polling the database during the run keeps this process's own
//!    load off the server the workers share.
//! 5. Off the clock, the children's stdin is closed: each shuts its worker down
//!    gracefully and prints one JSON line with the duration of every claim its worker
//!    made (raw samples of the engine's [`CLAIM_DURATION`] histogram, from the worker's
//!    first claim to its last), pooled here for p50/p99. Then every run is checked by id
//!    and no bench run may have failed.
//!
//! Server connections: each worker process opens what `morpheus up` opens (the engine's
//! pool, up to 16, and one `LISTEN` connection), so N workers need up to 17·N of the
//! server's `max_connections`. This process keeps one open while the workers run: it
//! inserts and checks through pools of their own, closed before the workers start or
//! after they stopped.
//!
//! The children get the database URL in `MORPHEUS_DATABASE_URL` rather than on their
//! command line, so its password does not show in `ps`. They are killed if this process
//! fails (no orphans), and stop on their own when their stdin closes or on SIGTERM.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use morpheus_engine::metrics::CLAIM_DURATION;
use morpheus_engine::store::{create_postgres_database, drop_postgres_database};
use morpheus_engine::{
    ClaimRequest, Engine, RunFilter, RunId, RunStatus, Runtime, WorkerConfig, Workflow,
    WorkflowRegistry, World,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bench::{check_no_failed_run, wait_until_finished, BenchNoop, BODIES_DONE};
use crate::bench_api::database_url;
use crate::cli::BenchWorkersArgs;
use crate::commands::{open, redact};

/// The database the benchmark owns on the server.
const DATABASE: &str = "morpheus_bench_workers";

/// Each worker process's Postgres pool (`MORPHEUS_PG_POOL_SIZE`, unless the caller set
/// it): eight workers then hold 8 × (8 + their LISTEN sessions), under a default
/// server's 100 connections.
const WORKER_POOL_SIZE: u32 = 8;

/// The claim latency budget: p99 at most this.
const CLAIM_P99_BUDGET_MS: f64 = 10.0;

/// Pool connections a child opens before it reports ready, each having prepared the claim
/// statements (with a claim in a queue nobody uses). A worker's claim loop, its group
/// committer, its heartbeat and its runs' journal loads use several connections at once;
/// a connection opened inside the measurement (TCP and SCRAM handshakes) or a first
/// claim on a connection (parsing and planning its statements) would count as a slow
/// claim that a long-running worker does not see. With a few dozen claims per worker,
/// those first claims alone would be the p99.
const WARM_CONNECTIONS: usize = 4;

/// Runs inserted at once (the parent's pool has 16 connections).
const INSERT_CONCURRENCY: usize = 16;

/// How long the children may take to connect and report ready (debug builds, 2 cores).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one measurement may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long the children may take to shut down and report (the worker's shutdown grace
/// is 30 s; nothing is in flight by then).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the parent looks for failed runs while the children work: a failed run
/// never returns its body, so the children's counts alone would wait for it forever.
const FAILURE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How often a child reports its count of returned bodies (when it changed).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(5);

/// Runs the benchmark against the Postgres server `url` points at (or, with
/// `--child-queue`, is one of its worker processes).
pub async fn run(url: &str, args: BenchWorkersArgs) -> Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("bench workers measures worker processes sharing one Postgres database: give --database-url postgres://… (SQLite serves one process)");
    }
    if let Some(queue) = args.child_queue.clone() {
        return child(url, queue, &args).await;
    }
    let bench_url = database_url(url, DATABASE)?;
    create_postgres_database(url, DATABASE)
        .await
        .with_context(|| format!("cannot create the database {DATABASE} on {}", redact(url)))?;
    let measured = measure_all(&bench_url, &args).await;
    // Dropped on failure too (ending any session a killed child left behind).
    let dropped = drop_postgres_database(url, DATABASE).await;
    let report = measured?;
    dropped.with_context(|| format!("cannot drop the benchmark database {DATABASE}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The whole benchmark, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    backend: &'static str,
    database: String,
    runs: u64,
    steps_per_run: u64,
    concurrency_per_worker: u32,
    claim_p99_budget_ms: f64,
    rows: Vec<Row>,
    /// steps/s at the largest worker count over steps/s at the smallest.
    scaling: Option<Scaling>,
}

/// One worker count's measurement.
#[derive(Debug, Serialize)]
struct Row {
    workers: u32,
    seconds: f64,
    steps_per_s: f64,
    /// Claims made by all workers (empty ones too), from their first claim to their last.
    claims: u64,
    claim_p50_ms: f64,
    claim_p99_ms: f64,
    claim_max_ms: f64,
    claim_p99_within_budget: bool,
    /// Runs of the measurement's queue that completed (all of them, or the row fails).
    runs_completed: u64,
    /// Bench bodies each worker process ran to the end: how evenly they shared the work.
    runs_executed_by_worker: Vec<u64>,
}

/// steps/s at the largest worker count against the smallest.
#[derive(Debug, Serialize)]
struct Scaling {
    from_workers: u32,
    to_workers: u32,
    ratio: f64,
}

/// What a child prints on its last line.
#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    /// Every claim's duration, in microseconds, in the order made.
    claim_us: Vec<u32>,
    /// Bench bodies that returned in this process.
    runs_executed: u64,
}

async fn measure_all(bench_url: &str, args: &BenchWorkersArgs) -> Result<Report> {
    // Watches the measurements, one query at a time: a single pool connection.
    let monitor = open(bench_url).await?;
    let mut workflows = WorkflowRegistry::new();
    workflows.register(BenchNoop);
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let mut rows = Vec::with_capacity(args.workers.len());
    for &workers in &args.workers {
        let bench = Bench {
            exe: &exe,
            bench_url,
            monitor: &*monitor,
            workflows: &workflows,
            args,
        };
        rows.push(bench.measure(workers).await?);
    }
    let smallest = rows.iter().min_by_key(|row| row.workers);
    let largest = rows.iter().max_by_key(|row| row.workers);
    let scaling = smallest
        .zip(largest)
        .filter(|(small, large)| small.workers != large.workers)
        .map(|(small, large)| Scaling {
            from_workers: small.workers,
            to_workers: large.workers,
            ratio: round3(large.steps_per_s / small.steps_per_s),
        });
    Ok(Report {
        bench: "workers",
        backend: "postgres",
        database: redact(bench_url),
        runs: args.runs,
        steps_per_run: args.steps,
        concurrency_per_worker: args.concurrency,
        claim_p99_budget_ms: CLAIM_P99_BUDGET_MS,
        rows,
        scaling,
    })
}

/// What one measurement needs from the parent.
struct Bench<'a> {
    exe: &'a Path,
    bench_url: &'a str,
    /// Used one query at a time while the workers run, so it holds one connection.
    monitor: &'a dyn World,
    workflows: &'a WorkflowRegistry,
    args: &'a BenchWorkersArgs,
}

impl Bench<'_> {
    async fn measure(&self, workers: u32) -> Result<Row> {
        let args = self.args;
        // A queue per measurement: the runs of one never reach the workers of another.
        let queue = format!(
            "bench-workers-{workers}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        progress(format_args!(
            "{workers} worker process(es): starting them; inserting {} runs of {} steps into queue {queue}",
            args.runs, args.steps
        ));
        let mut fleet = Fleet::spawn(self.exe, self.bench_url, &queue, args, workers)?;
        // Through a pool of their own, closed before the workers start: its idle
        // connections would otherwise take server connection slots from the workers.
        let run_ids = {
            let loader = open(self.bench_url).await?;
            self.insert_runs(&*loader, &queue).await?
        };
        fleet.wait_ready().await?;

        let started = Instant::now();
        fleet.go().await?;
        fleet
            .wait_bodies(self.monitor, args.runs, started + RUN_TIMEOUT)
            .await?;
        // The last bodies returned; their completions may still be in a group commit.
        let completed = loop {
            let completed = count(self.monitor, RunStatus::Completed, &queue).await?;
            if completed >= args.runs {
                break completed;
            }
            check_no_failed_run(self.monitor).await?;
            if started.elapsed() > RUN_TIMEOUT {
                bail!("the runs did not complete within {RUN_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let seconds = started.elapsed().as_secs_f64();

        // Off the clock. The workers stop first, giving their connections back to the
        // server; then every run, by id, has ended (checked 16 at a time, through a pool
        // of its own, closed before the next row), none failed, and all completed.
        let reports = fleet.finish().await?;
        wait_until_finished(&*open(self.bench_url).await?, run_ids).await?;
        check_no_failed_run(self.monitor).await?;
        if completed != args.runs {
            bail!(
                "queue {queue} holds {completed} completed runs, not the {} inserted",
                args.runs
            );
        }

        let mut claims: Vec<u32> = reports
            .iter()
            .flat_map(|report| report.claim_us.iter().copied())
            .collect();
        claims.sort_unstable();
        let claim_p99_ms = percentile_ms(&claims, 0.99);
        let row = Row {
            workers,
            seconds: round3(seconds),
            steps_per_s: ((args.runs * args.steps) as f64 / seconds).round(),
            claims: claims.len() as u64,
            claim_p50_ms: percentile_ms(&claims, 0.50),
            claim_p99_ms,
            claim_max_ms: percentile_ms(&claims, 1.0),
            claim_p99_within_budget: claim_p99_ms <= CLAIM_P99_BUDGET_MS,
            runs_completed: completed,
            runs_executed_by_worker: reports.iter().map(|report| report.runs_executed).collect(),
        };
        progress(format_args!(
            "{workers} worker process(es): {} steps in {:.3} s: {:.0} steps/s; {} claims, p50 {:.3} ms, p99 {:.3} ms; runs per worker {:?}",
            args.runs * args.steps,
            row.seconds,
            row.steps_per_s,
            row.claims,
            row.claim_p50_ms,
            row.claim_p99_ms,
            row.runs_executed_by_worker
        ));
        Ok(row)
    }

    /// Inserts the measurement's runs into `queue` (no worker claims them yet).
    async fn insert_runs(&self, world: &dyn World, queue: &str) -> Result<Vec<RunId>> {
        futures::stream::iter(0..self.args.runs)
            .map(|_| async move {
                let new_run = self
                    .workflows
                    .prepare(BenchNoop::NAME, json!({"steps": self.args.steps}), None)?
                    .queue(queue);
                // Straight to the store: no worker of this process needs waking.
                anyhow::Ok(world.start_run(new_run).await?.run_id)
            })
            .buffer_unordered(INSERT_CONCURRENCY)
            .try_collect()
            .await
    }
}

/// What a child's stdout says, line by line.
#[derive(Debug)]
enum ChildEvent {
    /// Connected, waiting for `go`.
    Ready,
    /// This many bench bodies returned so far.
    Done(u64),
    /// The last line: the child's [`ChildReport`], still as JSON.
    Report(String),
    /// Its stdout closed (it exited, or is about to).
    Closed,
}

/// One child process and what the parent holds of it.
struct WorkerChild {
    process: tokio::process::Child,
    /// Taken (closed) to tell the child to stop.
    stdin: Option<ChildStdin>,
    /// Forwards the child's stderr; ends with the child's last `error:` line.
    stderr: Option<JoinHandle<Option<String>>>,
}

/// The N children of one measurement. Dropping it kills them (`kill_on_drop`).
struct Fleet {
    children: Vec<WorkerChild>,
    events: mpsc::UnboundedReceiver<(usize, ChildEvent)>,
}

impl Fleet {
    fn spawn(
        exe: &Path,
        bench_url: &str,
        queue: &str,
        args: &BenchWorkersArgs,
        workers: u32,
    ) -> Result<Self> {
        let (sender, events) = mpsc::unbounded_channel();
        let mut children = Vec::with_capacity(workers as usize);
        for index in 0..workers as usize {
            let mut command = Command::new(exe);
            command
                .env("MORPHEUS_DATABASE_URL", bench_url)
                .args(["bench", "workers", "--child-queue", queue])
                .arg("--concurrency")
                .arg(args.concurrency.to_string())
                .arg("--steps")
                .arg(args.steps.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            // Eight workers' "worker started" lines per row would bury the progress;
            // warnings and errors still come through (prefixed with the worker).
            if std::env::var_os("MORPHEUS_LOG").is_none() {
                command.env("MORPHEUS_LOG", "warn");
            }
            // The default pool (16 per process, plus the LISTEN sessions) would take 136
            // connections at eight workers, over a default server's 100: claims and
            // commits would then wait out the pool's timeout. A worker needs few (one
            // committer, one claimer, the heartbeat, the claims' journal reads).
            if std::env::var_os("MORPHEUS_PG_POOL_SIZE").is_none() {
                command.env("MORPHEUS_PG_POOL_SIZE", WORKER_POOL_SIZE.to_string());
            }
            let mut process = command.spawn().with_context(|| {
                format!("cannot start worker process {index} ({})", exe.display())
            })?;
            let stdout = process.stdout.take().context("worker stdout")?;
            let stderr = process.stderr.take().context("worker stderr")?;
            let stdin = process.stdin.take();
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let event = if line == "ready" {
                        ChildEvent::Ready
                    } else if let Some(done) = line.strip_prefix("done ") {
                        ChildEvent::Done(done.trim().parse().unwrap_or(0))
                    } else if line.starts_with('{') {
                        ChildEvent::Report(line)
                    } else {
                        eprintln!("[worker {index}] {line}");
                        continue;
                    };
                    if sender.send((index, event)).is_err() {
                        return;
                    }
                }
                let _ = sender.send((index, ChildEvent::Closed));
            });
            let stderr = tokio::spawn(async move {
                let mut last_error = None;
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(error) = line.strip_prefix("error: ") {
                        last_error = Some(error.to_owned());
                    }
                    eprintln!("[worker {index}] {line}");
                }
                last_error
            });
            children.push(WorkerChild {
                process,
                stdin,
                stderr: Some(stderr),
            });
        }
        Ok(Self { children, events })
    }

    async fn next_event(&mut self) -> Result<(usize, ChildEvent)> {
        // The fleet holds no sender, but every child's reader does until it sends Closed.
        self.events
            .recv()
            .await
            .ok_or_else(|| anyhow!("every worker process's output closed"))
    }

    /// Waits until every child printed `ready`.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut ready = vec![false; self.children.len()];
        while !ready.iter().all(|ready| *ready) {
            let event = tokio::time::timeout_at(deadline, self.next_event())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{} of {} worker processes were not ready within {READY_TIMEOUT:?}",
                        ready.iter().filter(|ready| !**ready).count(),
                        ready.len()
                    )
                })??;
            match event {
                (index, ChildEvent::Ready) => ready[index] = true,
                (index, ChildEvent::Closed) => {
                    return Err(self.failure(index, "exited before it was ready").await)
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Tells every child to start its worker.
    async fn go(&mut self) -> Result<()> {
        for index in 0..self.children.len() {
            let stdin = self.children[index]
                .stdin
                .as_mut()
                .context("worker stdin")?;
            let written = async {
                stdin.write_all(b"go\n").await?;
                stdin.flush().await
            }
            .await;
            if written.is_err() {
                return Err(self.failure(index, "could not be told to start").await);
            }
        }
        Ok(())
    }

    /// Waits until the children's bodies add up to `runs`, failing early if a run failed
    /// or a child exited.
    async fn wait_bodies(&mut self, world: &dyn World, runs: u64, deadline: Instant) -> Result<()> {
        let mut done = vec![0u64; self.children.len()];
        let mut checks = tokio::time::interval(FAILURE_CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A body re-run after a lost lease counts twice here: the count of completed
        // runs that follows is what decides.
        while done.iter().sum::<u64>() < runs {
            tokio::select! {
                event = self.next_event() => match event? {
                    (index, ChildEvent::Done(count)) => done[index] = count,
                    (index, ChildEvent::Closed) => {
                        return Err(self.failure(index, "exited during the measurement").await)
                    }
                    _ => {}
                },
                _ = checks.tick() => {
                    check_no_failed_run(world).await?;
                    if Instant::now() > deadline {
                        bail!("{} of {runs} runs' bodies returned within {RUN_TIMEOUT:?}", done.iter().sum::<u64>());
                    }
                }
            }
        }
        Ok(())
    }

    /// Closes the children's stdin, collects their reports and waits for them to exit.
    async fn finish(mut self) -> Result<Vec<ChildReport>> {
        for child in &mut self.children {
            child.stdin = None;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        let mut reports: Vec<Option<ChildReport>> = self.children.iter().map(|_| None).collect();
        while reports.iter().any(Option::is_none) {
            let event = tokio::time::timeout_at(deadline, self.next_event())
                .await
                .map_err(|_| anyhow!("the worker processes did not report within {SHUTDOWN_TIMEOUT:?} of being told to stop"))??;
            match event {
                (index, ChildEvent::Report(line)) => {
                    let report = serde_json::from_str(&line)
                        .with_context(|| format!("worker process {index} printed a bad report"))?;
                    reports[index] = Some(report);
                }
                (index, ChildEvent::Closed) if reports[index].is_none() => {
                    return Err(self.failure(index, "exited without its report").await)
                }
                _ => {}
            }
        }
        for index in 0..self.children.len() {
            let status = tokio::time::timeout_at(deadline, self.children[index].process.wait())
                .await
                .map_err(|_| anyhow!("worker process {index} did not exit after its report"))??;
            if !status.success() {
                return Err(self.failure(index, "failed").await);
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// The error for child `index`, with its exit status and its last `error:` line.
    async fn failure(&mut self, index: usize, what: &str) -> anyhow::Error {
        let child = &mut self.children[index];
        let status = match tokio::time::timeout(Duration::from_secs(5), child.process.wait()).await
        {
            Ok(Ok(status)) => status.to_string(),
            _ => "still running".to_owned(),
        };
        let last_error = match child.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        match last_error {
            Some(error) => anyhow!("worker process {index} {what} ({status}): {error}"),
            None => anyhow!("worker process {index} {what} ({status})"),
        }
    }
}

/// One worker process of the benchmark (see the module documentation).
async fn child(url: &str, queue: String, args: &BenchWorkersArgs) -> Result<()> {
    // Before the worker starts: it resolves its histogram handles when it starts.
    let claims = install_claim_recorder()?;
    let world = open(url).await?;
    let mut workflows = WorkflowRegistry::new();
    workflows.register(BenchNoop);
    let mut config = WorkerConfig::for_backend(world.backend());
    config.concurrency = args.concurrency as usize;
    let warm_up = ClaimRequest {
        owner: config.worker_id.clone(),
        limit: args.concurrency,
        lease_ttl: config.lease_ttl,
        workflows: workflows.versions(),
        queues: Some(vec![format!("{queue}-warm-up")]),
    };
    // At once, so the pool opens that many connections (and keeps them, idle).
    let warmed =
        futures::future::try_join_all((0..WARM_CONNECTIONS).map(|_| world.claim_runs(&warm_up)))
            .await?;
    if warmed.iter().any(|claimed| !claimed.is_empty()) {
        bail!("the warm-up claims found runs in a queue of their own");
    }
    config.queues = Some(vec![queue]);
    let engine = Engine::builder(world.clone()).workflows(workflows).build();

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    say("ready");
    let go = tokio::select! {
        line = stdin.next_line() => line?.is_some_and(|line| line.trim() == "go"),
        _ = terminate.recv() => false,
    };
    if !go {
        // The benchmark gave up before the start: nothing was measured here.
        return Ok(());
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut worker = tokio::spawn(
        Runtime::new(engine)
            .worker_config(config)
            .without_scheduler()
            .run(async move {
                let _ = stopped.await;
            }),
    );
    let reporter = tokio::spawn(async {
        let mut reported = 0;
        loop {
            tokio::time::sleep(PROGRESS_INTERVAL).await;
            let done = BODIES_DONE.load(Ordering::SeqCst);
            if done != reported {
                reported = done;
                say(&format!("done {done}"));
            }
        }
    });
    let stopped_on_its_own = tokio::select! {
        _ = async { while let Ok(Some(_)) = stdin.next_line().await {} } => None,
        _ = terminate.recv() => None,
        result = &mut worker => Some(result),
    };
    let result = match stopped_on_its_own {
        Some(result) => result,
        None => {
            let _ = stop.send(());
            worker.await
        }
    };
    reporter.abort();
    result
        .context("the worker task panicked")?
        .context("the worker stopped")?;
    let report = ChildReport {
        claim_us: std::mem::take(&mut *claims.lock().expect("claim samples")),
        runs_executed: BODIES_DONE.load(Ordering::SeqCst),
    };
    say(&serde_json::to_string(&report)?);
    Ok(())
}

/// One line on stdout, flushed at once (the parent reads it as it comes). A parent that
/// is gone also closed our stdin, which stops this process: the error is not ours to
/// report.
fn say(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Installs, as this process's metrics recorder, one that keeps every sample of the
/// engine's claim histogram (raw, so the parent can pool exact percentiles; exporters
/// keep buckets or sketches) and ignores everything else.
fn install_claim_recorder() -> Result<Arc<Mutex<Vec<u32>>>> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    metrics::set_global_recorder(ClaimRecorder {
        samples: samples.clone(),
    })
    .map_err(|_| anyhow!("a metrics recorder was already installed in this process"))?;
    Ok(samples)
}

/// Keeps the claim durations (see [`install_claim_recorder`]).
struct ClaimRecorder {
    samples: Arc<Mutex<Vec<u32>>>,
}

/// The claim histogram's samples, in microseconds.
struct ClaimSamples(Arc<Mutex<Vec<u32>>>);

impl HistogramFn for ClaimSamples {
    fn record(&self, seconds: f64) {
        let micros = (seconds * 1e6).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        self.0.lock().expect("claim samples").push(micros);
    }
}

impl Recorder for ClaimRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == CLAIM_DURATION {
            Histogram::from_arc(Arc::new(ClaimSamples(self.samples.clone())))
        } else {
            Histogram::noop()
        }
    }
}

async fn count(world: &dyn World, status: RunStatus, queue: &str) -> Result<u64> {
    Ok(world
        .count_runs(&RunFilter {
            status: Some(status),
            queue: Some(queue.to_owned()),
            limit: None,
            ..RunFilter::default()
        })
        .await?)
}

/// The nearest-rank percentile of `sorted_us` (microseconds), in milliseconds: the
/// smallest sample at least `fraction` of the samples are at or below.
fn percentile_ms(sorted_us: &[u32], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (sorted_us.len() as f64 * fraction).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    round3(f64::from(sorted_us[index]) / 1000.0)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn progress(text: std::fmt::Arguments<'_>) {
    eprintln!("[bench workers] {text}");
}

fn print_table(report: &Report) {
    println!(
        "{} runs × {} no-op steps per row, {} runs in flight per worker process, on {}",
        report.runs, report.steps_per_run, report.concurrency_per_worker, report.database
    );
    let budget = format!("p99 ≤ {} ms", report.claim_p99_budget_ms);
    println!(
        "{:>7} {:>9} {:>9} {:>13} {:>13} {:>8}  {budget}",
        "workers", "steps/s", "seconds", "claim p50 ms", "claim p99 ms", "claims"
    );
    for row in &report.rows {
        println!(
            "{:>7} {:>9.0} {:>9.3} {:>13.3} {:>13.3} {:>8}  {}",
            row.workers,
            row.steps_per_s,
            row.seconds,
            row.claim_p50_ms,
            row.claim_p99_ms,
            row.claims,
            if row.claim_p99_within_budget {
                "PASS"
            } else {
                "OVER"
            }
        );
    }
    if let Some(scaling) = &report.scaling {
        println!(
            "steps/s at {} workers / steps/s at {}: {:.2}",
            scaling.to_workers, scaling.from_workers, scaling.ratio
        );
    }
}
