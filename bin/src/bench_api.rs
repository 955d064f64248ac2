//! `morpheus bench api`: the HTTP API over a large history, measured as its clients see
//! it. Per backend it seeds a fresh database (finished runs, and log lines interleaved
//! over a few of them), serves the real API in process on 127.0.0.1 (as `morpheus up
//! --listen` does beside its workers) and measures with real clients:
//!
//! 1. `GET /api/v1/runs`: the first page, and every page walked by keyset cursor, with
//!    and without a status filter;
//! 2. a run's log pages walked by cursor;
//! 3. live-event fan-out: a worker writes log lines (each committed by a step of its
//!    own) while many WebSocket clients follow `/api/v1/events`; each line carries the
//!    time it was written, taken before the write, and each client measures from there
//!    to receipt (the event travels through the database's change feed, as in
//!    production);
//! 4. steps/s of `morpheus bench`'s workload (plus a log line per step) without the API,
//!    then with it serving while clients follow logs live (each one run's events, as an
//!    operator watching a run does; `--follow-all`: every event), alternating rounds.
//!
//! It prints a table of each figure beside its budget, or with `--json` one JSON line
//! per backend. Progress goes to stderr.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use futures::StreamExt;
use morpheus_engine::store::{connect_bench, create_postgres_database, drop_postgres_database};
use morpheus_engine::{
    async_trait, Backend, Ctx, Engine, LogLevel, RunFilter, RunId, RunStatus, WorkerConfig,
    Workflow, WorkflowRegistry, WorkflowResult, World,
};
use morpheus_server::{Server, ServerConfig, ServerError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{
    percentile_ms, round3, start_worker, wait_until_finished, BenchNoop, BODIES_DONE,
};
use crate::cli::{BenchApiArgs, BenchBackend};
use crate::commands::{open, redact};

/// The database the Postgres measurement creates (and drops) on the given server.
const POSTGRES_BENCH_DATABASE: &str = "morpheus_bench_api";

/// The workflow of the seeded history.
const HISTORY_WORKFLOW: &str = "bench.api.history";

/// Runs per seeding transaction (a progress line after each).
const RUNS_PER_CHUNK: u64 = 20_000;

/// Log lines per seeding transaction (a progress line after each).
const LINES_PER_CHUNK: u64 = 100_000;

/// Runs per `GET /api/v1/runs` page: the API's default.
const RUNS_PAGE: u64 = 50;

/// The budgets of the API issue.
const LIST_P99_BUDGET_MS: f64 = 20.0;
const FANOUT_P99_BUDGET_MS: f64 = 100.0;
const OVERHEAD_BUDGET_PCT: f64 = 10.0;

/// The field of a fan-out probe line that holds when it was written (µs since the
/// epoch, taken before the write).
const SENT_FIELD: &str = "bench_sent_us";

#[derive(Debug, Serialize, Deserialize)]
struct ProbeInput {
    lines: u64,
    interval_ms: u64,
}

/// Writes `lines` probe log lines, each committed by a step of its own, `interval_ms`
/// apart: what the fan-out clients receive.
struct BenchProbe;

#[async_trait]
impl Workflow for BenchProbe {
    const NAME: &'static str = "bench.api.probe";
    type Input = ProbeInput;
    type Output = u64;

    async fn run(&self, ctx: &Ctx, input: ProbeInput) -> WorkflowResult<u64> {
        for index in 0..input.lines {
            ctx.log_with(
                LogLevel::Info,
                "fan-out probe",
                json!({ SENT_FIELD: Utc::now().timestamp_micros(), "index": index }),
            );
            // The line is committed with this step's checkpoint.
            ctx.step("probe").run(|_| async move { Ok(index) }).await?;
            tokio::time::sleep(Duration::from_millis(input.interval_ms)).await;
        }
        Ok(input.lines)
    }
}

/// p50/p99 of a set of timings.
#[derive(Debug, Clone, Serialize)]
struct Timings {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
}

impl Timings {
    fn of(mut micros: Vec<u32>) -> Self {
        micros.sort_unstable();
        Self {
            count: micros.len(),
            p50_ms: percentile_ms(&micros, 0.50),
            p99_ms: percentile_ms(&micros, 0.99),
        }
    }
}

/// What one backend measured.
#[derive(Debug, Serialize)]
struct BackendReport {
    backend: &'static str,
    database: String,
    runs: u64,
    log_lines: u64,
    seed_seconds: f64,
    runs_first_page: Timings,
    runs_all_pages: Timings,
    runs_failed_first_page: Timings,
    runs_failed_all_pages: Timings,
    logs_pages: Timings,
    logs_lines_per_page: u64,
    logs_lines_walked: u64,
    fanout_clients: u64,
    fanout_events: u64,
    fanout_deliveries: Timings,
    workload: String,
    followers: u64,
    /// `run` (each follower follows one run's events) or `all` (every event).
    follows: &'static str,
    follower_events_min: u64,
    steps_per_s_without_api: Vec<f64>,
    steps_per_s_with_api: Vec<f64>,
    median_steps_per_s_without_api: f64,
    median_steps_per_s_with_api: f64,
    api_overhead_pct: f64,
}

/// Runs the API benchmark on each asked backend and prints the figures.
pub async fn run(url: &str, args: BenchApiArgs) -> Result<()> {
    let postgres_server = match Backend::of_url(url) {
        Some(Backend::Postgres) => Some(url.to_owned()),
        _ => None,
    };
    let backends: &[Backend] = match args.backend {
        BenchBackend::Sqlite => &[Backend::Sqlite],
        BenchBackend::Postgres => &[Backend::Postgres],
        BenchBackend::Both => &[Backend::Sqlite, Backend::Postgres],
    };
    if backends.contains(&Backend::Postgres) && postgres_server.is_none() {
        bail!("--backend postgres and both need a postgres:// --database-url naming the server (the benchmark creates its own database there)");
    }
    let mut reports = Vec::new();
    for backend in backends {
        let report = match backend {
            Backend::Sqlite => {
                let dir = match &args.dir {
                    Some(dir) => tempfile::tempdir_in(dir),
                    None => tempfile::tempdir(),
                }
                .context("cannot create a temporary directory for the benchmark database")?;
                let bench_url = format!("sqlite://{}/bench-api.db", dir.path().display());
                measure(&bench_url, &args).await?
            }
            Backend::Postgres => {
                let server = postgres_server.as_deref().expect("checked above");
                let bench_url = database_url(server, POSTGRES_BENCH_DATABASE)?;
                create_postgres_database(server, POSTGRES_BENCH_DATABASE)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot create the database {POSTGRES_BENCH_DATABASE} on {}",
                            redact(server)
                        )
                    })?;
                let measured = measure(&bench_url, &args).await;
                let dropped = drop_postgres_database(server, POSTGRES_BENCH_DATABASE).await;
                let measured = measured?;
                dropped.with_context(|| {
                    format!("cannot drop the benchmark database {POSTGRES_BENCH_DATABASE}")
                })?;
                measured
            }
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        }
        reports.push(report);
    }
    if !args.json {
        print_table(&reports, &args);
    }
    Ok(())
}

/// `server` with its database replaced by `database`.
pub(crate) fn database_url(server: &str, database: &str) -> Result<String> {
    let mut url = reqwest::Url::parse(server)
        .with_context(|| format!("invalid --database-url {}", redact(server)))?;
    url.set_path(database);
    Ok(url.to_string())
}

fn progress(backend: &str, text: impl std::fmt::Display) {
    eprintln!("[bench api {backend}] {text}");
}

async fn measure(url: &str, args: &BenchApiArgs) -> Result<BackendReport> {
    let world = open(url).await?;
    let backend = world.backend().as_str();
    let mut workflows = WorkflowRegistry::new();
    workflows.register(BenchNoop);
    workflows.register(BenchProbe);
    let engine = Engine::builder(world.clone())
        .workflows(workflows.clone())
        .build();

    let seed_started = Instant::now();
    seed(&*world, url, backend, args).await?;
    let seed_seconds = seed_started.elapsed().as_secs_f64();
    progress(backend, format!("seeded in {seed_seconds:.1} s"));

    let server = ApiServer::start(&engine).await?;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    progress(backend, "timing GET /api/v1/runs");
    let runs_first_page =
        Timings::of(time_run_pages(&client, &base, "", args.requests, false).await?);
    let runs_all_pages = Timings::of(time_run_pages(&client, &base, "", 0, true).await?);
    let failed = "&status=failed";
    let runs_failed_first_page =
        Timings::of(time_run_pages(&client, &base, failed, args.requests, false).await?);
    let runs_failed_all_pages = Timings::of(time_run_pages(&client, &base, failed, 0, true).await?);
    progress(backend, "timing log pages");
    let log_runs = history_log_runs(&*world, args.log_runs).await?;
    let (logs_pages, logs_lines_walked) =
        time_log_pages(&client, &base, &log_runs, args.requests).await?;
    let logs_pages = Timings::of(logs_pages);
    let logs_lines_per_page = (args.log_lines / args.log_runs).min(1000);
    drop(client);

    progress(
        backend,
        format!(
            "fan-out: {} WebSocket clients, {} events",
            args.ws_clients, args.events
        ),
    );
    let fanout = fan_out(&engine, &workflows, &server, args).await?;
    server.stop().await?;

    let workload = format!(
        "{}×{} steps (a log line each), concurrency {}",
        args.workload_runs, args.workload_steps, args.concurrency
    );
    let mut without_api = Vec::new();
    let mut with_api = Vec::new();
    let mut follower_events_min = u64::MAX;
    for round in 1..=args.rounds {
        let plain = Round::prepare(&engine, &workflows, args)
            .await?
            .execute(&engine, args)
            .await?;
        without_api.push(plain.round());
        let server = ApiServer::start(&engine).await?;
        let served_round = Round::prepare(&engine, &workflows, args).await?;
        // As operators do: each follower watches one run's logs live (`--follow-all`:
        // every follower gets every event of every run).
        let followed = if args.follow_all {
            vec![None; args.followers as usize]
        } else {
            served_round
                .spread(args.followers)
                .into_iter()
                .map(Some)
                .collect()
        };
        let followers = Followers::connect(&server, &followed).await?;
        let served = served_round.execute(&engine, args).await?;
        let received = followers.stop().await?;
        server.stop().await?;
        with_api.push(served.round());
        follower_events_min = follower_events_min.min(received);
        progress(
            backend,
            format!(
                "workload round {round}/{}: {plain:.0} steps/s without the API, {served:.0} with it ({} followers, each got ≥ {received} events)",
                args.rounds, args.followers
            ),
        );
    }
    let median_without = median(&without_api);
    let median_with = median(&with_api);
    Ok(BackendReport {
        backend,
        database: redact(url),
        runs: args.runs,
        log_lines: args.log_lines,
        seed_seconds: round3(seed_seconds),
        runs_first_page,
        runs_all_pages,
        runs_failed_first_page,
        runs_failed_all_pages,
        logs_pages,
        logs_lines_per_page,
        logs_lines_walked,
        fanout_clients: args.ws_clients,
        fanout_events: args.events,
        fanout_deliveries: fanout,
        workload,
        followers: args.followers,
        follows: if args.follow_all { "all" } else { "run" },
        follower_events_min,
        steps_per_s_without_api: without_api,
        steps_per_s_with_api: with_api,
        median_steps_per_s_without_api: median_without,
        median_steps_per_s_with_api: median_with,
        api_overhead_pct: ((1.0 - median_with / median_without) * 1000.0).round() / 10.0,
    })
}

/// Seeds `args.runs` finished runs and `args.log_lines` log lines over the newest
/// `args.log_runs` of them, in chunks, with a progress line after each.
async fn seed(world: &dyn World, url: &str, backend: &str, args: &BenchApiArgs) -> Result<()> {
    let loader = connect_bench(url).await?;
    let started = Instant::now();
    // The history ends a minute ago, so what the benchmark runs itself is newer.
    let newest = Utc::now() - chrono::Duration::minutes(1);
    let mut seeded = 0;
    while seeded < args.runs {
        let chunk = (args.runs - seeded).min(RUNS_PER_CHUNK);
        let chunk_newest = newest - chrono::Duration::milliseconds(seeded as i64);
        loader
            .seed_runs(HISTORY_WORKFLOW, chunk, chunk_newest)
            .await?;
        seeded += chunk;
        progress(
            backend,
            format!(
                "seeding runs: {}/{} ({:.1} s)",
                thousands(seeded),
                thousands(args.runs),
                started.elapsed().as_secs_f64()
            ),
        );
    }
    let log_runs = history_log_runs(world, args.log_runs).await?;
    let mut seeded = 0;
    while seeded < args.log_lines {
        let chunk = (args.log_lines - seeded).min(LINES_PER_CHUNK);
        loader
            .seed_log_lines(&log_runs, seeded, chunk, newest)
            .await?;
        seeded += chunk;
        progress(
            backend,
            format!(
                "seeding log lines: {}/{} over {} runs ({:.1} s)",
                thousands(seeded),
                thousands(args.log_lines),
                log_runs.len(),
                started.elapsed().as_secs_f64()
            ),
        );
    }
    progress(
        backend,
        "settling the bulk load (analyze, checkpoint/vacuum)",
    );
    loader.settle().await?;
    Ok(())
}

/// The seeded runs that hold the log lines: the newest `count` of the history.
async fn history_log_runs(world: &dyn World, count: u64) -> Result<Vec<RunId>> {
    let runs = world
        .list_runs(&RunFilter {
            workflow: Some(HISTORY_WORKFLOW.into()),
            limit: Some(count),
            ..RunFilter::default()
        })
        .await?;
    Ok(runs.iter().map(|run| run.id).collect())
}

/// The API served in process, as `morpheus up --listen` serves it beside its workers.
struct ApiServer {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl ApiServer {
    async fn start(engine: &Engine) -> Result<Self> {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("valid address"));
        // The limiter guards real deployments; here it would only turn timed requests
        // into 429s.
        let unlimited = NonZeroU32::new(1_000_000).expect("non-zero");
        config.rate_per_second = unlimited;
        config.rate_burst = unlimited;
        let server = Server::bind(config, engine.clone(), None).await?;
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }

    fn events_url(&self) -> String {
        format!("ws://{}/api/v1/events", self.addr)
    }
}

/// GETs `url`; returns the time to the last byte of the body (µs) and the body.
async fn timed_get(client: &reqwest::Client, url: &str) -> Result<(u32, Value)> {
    let started = Instant::now();
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
    if !status.is_success() {
        bail!(
            "GET {url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok((micros, serde_json::from_slice(&body)?))
}

/// Times `GET /api/v1/runs` pages: the first page `requests` times, or (`walk`) every
/// page from the first to the last by `next_cursor`.
async fn time_run_pages(
    client: &reqwest::Client,
    base: &str,
    filter: &str,
    requests: u64,
    walk: bool,
) -> Result<Vec<u32>> {
    let mut latencies = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/runs?limit={RUNS_PAGE}{filter}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (micros, page) = timed_get(client, &url).await?;
        let runs = page["runs"].as_array().map_or(0, Vec::len);
        if runs == 0 {
            bail!("GET {url} returned no runs: the seeded history is missing");
        }
        latencies.push(micros);
        if walk {
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                return Ok(latencies);
            }
        } else if latencies.len() as u64 >= requests {
            return Ok(latencies);
        }
    }
}

/// Walks the log pages of `runs` by cursor (the API's default page size), one run after
/// the other, until at least `requests` pages were timed; returns the timings and the
/// lines read.
async fn time_log_pages(
    client: &reqwest::Client,
    base: &str,
    runs: &[RunId],
    requests: u64,
) -> Result<(Vec<u32>, u64)> {
    let mut latencies = Vec::new();
    let mut lines = 0u64;
    for run in runs.iter().cycle() {
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{base}/api/v1/runs/{run}/logs");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("?cursor={cursor}"));
            }
            let (micros, page) = timed_get(client, &url).await?;
            latencies.push(micros);
            let count = page["logs"].as_array().map_or(0, Vec::len) as u64;
            if count == 0 {
                if cursor.is_none() {
                    bail!("run {run} has no log lines: the seeded lines are missing");
                }
                break;
            }
            lines += count;
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        if latencies.len() as u64 >= requests {
            break;
        }
    }
    Ok((latencies, lines))
}

/// Connects `args.ws_clients` WebSocket clients to the live events, has a worker write
/// `args.events` probe lines, and times each line from its write to each client.
async fn fan_out(
    engine: &Engine,
    workflows: &WorkflowRegistry,
    server: &ApiServer,
    args: &BenchApiArgs,
) -> Result<Timings> {
    let (stop, stopped) = watch::channel(false);
    let mut clients = Vec::new();
    for _ in 0..args.ws_clients {
        // The handshake returns once the server has subscribed this client.
        let (mut socket, _) = tokio_tungstenite::connect_async(server.events_url())
            .await
            .context("cannot open a WebSocket to /api/v1/events")?;
        let expected = args.events;
        let mut stopped = stopped.clone();
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected as usize);
            while (latencies.len() as u64) < expected {
                let message = tokio::select! {
                    message = socket.next() => message,
                    _ = stopped.wait_for(|stop| *stop) => break,
                };
                let Some(Ok(Message::Text(text))) = message else {
                    match message {
                        Some(Ok(_)) => continue,
                        _ => break,
                    }
                };
                let received_us = Utc::now().timestamp_micros();
                let Ok(event) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if event["event"] != "log:append" {
                    continue;
                }
                if let Some(sent_us) = event["data"]["fields"][SENT_FIELD].as_i64() {
                    let micros = (received_us - sent_us).clamp(0, u32::MAX as i64) as u32;
                    latencies.push(micros);
                }
            }
            let _ = socket.close(None).await;
            latencies
        }));
    }
    let queue = format!(
        "bench-api-probe-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let probe = workflows
        .prepare(
            BenchProbe::NAME,
            json!({"lines": args.events, "interval_ms": args.event_interval.as_millis() as u64}),
            None,
        )?
        .queue(queue.clone());
    let started = engine.start_prepared(probe).await?;
    let worker = start_worker(engine, &worker_config(engine, args, &queue));
    let deadline =
        Duration::from_secs(60) + args.event_interval * (args.events.min(u32::MAX as u64) as u32);
    let all_received = async {
        let mut latencies = Vec::new();
        for client in clients.iter_mut() {
            latencies.extend(client.await?);
        }
        anyhow::Ok(latencies)
    };
    let latencies = match tokio::time::timeout(deadline, all_received).await {
        Ok(latencies) => latencies?,
        Err(_) => {
            let _ = stop.send(true);
            bail!("the fan-out clients did not receive every probe event within {deadline:?}");
        }
    };
    worker.shutdown().await?;
    let run = engine
        .get_run(started.run_id)
        .await?
        .context("the probe run vanished")?;
    if run.status != RunStatus::Completed {
        bail!(
            "the probe run ended {}: {}",
            run.status,
            run.error.unwrap_or_default()
        );
    }
    let expected = args.ws_clients * args.events;
    if (latencies.len() as u64) < expected {
        bail!(
            "the fan-out clients received {} of {expected} probe events",
            latencies.len()
        );
    }
    Ok(Timings::of(latencies))
}

/// WebSocket clients following live events while the workload runs: one run's each,
/// or every event.
struct Followers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<u64>>,
}

impl Followers {
    async fn connect(server: &ApiServer, runs: &[Option<RunId>]) -> Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for run in runs {
            let url = match run {
                Some(run) => format!("{}?run={run}", server.events_url()),
                None => server.events_url(),
            };
            let (mut socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .context("cannot open a WebSocket to /api/v1/events")?;
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let mut received = 0u64;
                loop {
                    tokio::select! {
                        message = socket.next() => match message {
                            Some(Ok(Message::Text(_))) => received += 1,
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                }
                let _ = socket.close(None).await;
                received
            }));
        }
        Ok(Self { stop, tasks })
    }

    /// Disconnects them; returns the fewest events one of them received.
    async fn stop(self) -> Result<u64> {
        let _ = self.stop.send(true);
        let mut fewest = u64::MAX;
        for task in self.tasks {
            fewest = fewest.min(task.await?);
        }
        Ok(fewest)
    }
}

fn worker_config(engine: &Engine, args: &BenchApiArgs, queue: &str) -> WorkerConfig {
    let mut config = WorkerConfig::for_backend(engine.world().backend());
    config.concurrency = args.concurrency as usize;
    config.poll_interval = Duration::from_millis(100);
    config.queues = Some(vec![queue.to_owned()]);
    config
}

/// One round of `morpheus bench`'s workload (each step also logging a line) on a queue
/// of its own, created but not yet started.
struct Round {
    queue: String,
    run_ids: Vec<RunId>,
}

impl Round {
    async fn prepare(
        engine: &Engine,
        workflows: &WorkflowRegistry,
        args: &BenchApiArgs,
    ) -> Result<Self> {
        let queue = format!(
            "bench-api-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut run_ids = Vec::with_capacity(args.workload_runs as usize);
        for _ in 0..args.workload_runs {
            let new_run = workflows
                .prepare(
                    BenchNoop::NAME,
                    json!({"steps": args.workload_steps, "log_each_step": true}),
                    None,
                )?
                .queue(queue.clone());
            run_ids.push(engine.start_prepared(new_run).await?.run_id);
        }
        Ok(Self { queue, run_ids })
    }

    /// `count` of its runs, spread evenly over the round (the first, the last, and
    /// between), for followers to follow.
    fn spread(&self, count: u64) -> Vec<RunId> {
        let total = self.run_ids.len() as u64;
        (0..count)
            .map(|index| self.run_ids[(index * total / count.max(1)) as usize % total as usize])
            .collect()
    }

    /// Runs the round; returns its steps/s.
    async fn execute(self, engine: &Engine, args: &BenchApiArgs) -> Result<f64> {
        let check_ids = self.run_ids.clone();
        BODIES_DONE.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let worker = start_worker(engine, &worker_config(engine, args, &self.queue));
        let deadline = started + Duration::from_secs(3600);
        while BODIES_DONE.load(Ordering::SeqCst) < args.workload_runs {
            if Instant::now() > deadline {
                bail!("the workload did not finish within an hour");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let world: Arc<dyn World> = engine.world();
        wait_until_finished(&*world, self.run_ids).await?;
        let seconds = started.elapsed().as_secs_f64();
        worker.shutdown().await?;
        for run_id in check_ids.iter().take(1) {
            let run = world
                .get_run(*run_id)
                .await?
                .context("bench run vanished")?;
            if run.status != RunStatus::Completed {
                bail!(
                    "bench run {run_id} ended {}: {}",
                    run.status,
                    run.error.unwrap_or_default()
                );
            }
        }
        Ok((args.workload_runs * args.workload_steps) as f64 / seconds)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => ((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0).round(),
    }
}

fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "OVER"
    }
}

fn print_table(reports: &[BackendReport], args: &BenchApiArgs) {
    println!(
        "morpheus bench api: {} runs and {} log lines seeded ({} runs hold the lines)",
        thousands(args.runs),
        thousands(args.log_lines),
        args.log_runs
    );
    println!(
        "{:<10} {:<58} {:>9} {:>9} {:>9} {:>7}",
        "backend", "measurement", "p50", "p99", "budget", "verdict"
    );
    for report in reports {
        let latency_rows: [(String, &Timings); 5] = [
            (
                format!(
                    "GET /api/v1/runs first page ({RUNS_PAGE}), ×{}",
                    report.runs_first_page.count
                ),
                &report.runs_first_page,
            ),
            (
                format!(
                    "GET /api/v1/runs every page by cursor ({} pages)",
                    report.runs_all_pages.count
                ),
                &report.runs_all_pages,
            ),
            (
                format!(
                    "GET /api/v1/runs?status=failed first page, ×{}",
                    report.runs_failed_first_page.count
                ),
                &report.runs_failed_first_page,
            ),
            (
                format!(
                    "GET /api/v1/runs?status=failed every page ({} pages)",
                    report.runs_failed_all_pages.count
                ),
                &report.runs_failed_all_pages,
            ),
            (
                format!(
                    "GET …/logs by cursor ({} pages of ≤ {} lines)",
                    report.logs_pages.count, report.logs_lines_per_page
                ),
                &report.logs_pages,
            ),
        ];
        for (name, timings) in latency_rows {
            println!(
                "{:<10} {:<58} {:>6.2} ms {:>6.2} ms {:>9} {:>7}",
                report.backend,
                name,
                timings.p50_ms,
                timings.p99_ms,
                "≤ 20 ms",
                verdict(timings.p99_ms <= LIST_P99_BUDGET_MS)
            );
        }
        let fanout = &report.fanout_deliveries;
        println!(
            "{:<10} {:<58} {:>6.2} ms {:>6.2} ms {:>9} {:>7}",
            report.backend,
            format!(
                "event commit → {} WS clients ({} deliveries)",
                report.fanout_clients, fanout.count
            ),
            fanout.p50_ms,
            fanout.p99_ms,
            "≤ 100 ms",
            verdict(fanout.p99_ms <= FANOUT_P99_BUDGET_MS)
        );
        println!(
            "{:<10} {:<58} {:>9} {:>9} {:>9} {:>7}",
            report.backend,
            format!(
                "steps/s without API → with API + {} WS followers ({})",
                report.followers,
                if report.follows == "all" {
                    "every event"
                } else {
                    "a run each"
                }
            ),
            report.median_steps_per_s_without_api,
            report.median_steps_per_s_with_api,
            "",
            ""
        );
        println!(
            "{:<10} {:<58} {:>19} {:>9} {:>7}",
            report.backend,
            "… API overhead on steps/s (median of rounds)",
            format!("{:.1} %", report.api_overhead_pct),
            "≤ 10 %",
            verdict(report.api_overhead_pct <= OVERHEAD_BUDGET_PCT)
        );
    }
    for report in reports {
        println!(
            "{}: seeded in {:.1} s; workload {}; {} rounds, steps/s without API {:?}, with API {:?}; each follower got ≥ {} events",
            report.backend,
            report.seed_seconds,
            report.workload,
            report.steps_per_s_without_api.len(),
            report.steps_per_s_without_api,
            report.steps_per_s_with_api,
            report.follower_events_min
        );
    }
}
