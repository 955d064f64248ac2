//! What each command does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use morpheus_engine::{
    Engine, EngineError, ExecutorRegistry, LogLevel, LogQuery, RunFilter, RunId, RunStatus,
    Runtime, SignatureFilter, StepLogLayer, WorkerConfig, WorkflowRegistry, World,
};
use morpheus_executors::audit::SignatureAudit;
use morpheus_executors::cosmos::CosmosExecutor;
use morpheus_executors::evm::EvmExecutor;
use morpheus_executors::extensions::ExtensionManager;
use morpheus_executors::{DockerExecutor, ProcessExecutor};
use morpheus_workflows::deploy::snapshot::SnapshotLimits;
use morpheus_workflows::deploy::DeployConfig;
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{
    BenchArgs, BenchMode, Cli, Command, EventsCommand, KeysAuditArgs, KeysCommand, LogsArgs,
    PruneArgs, QueuesCommand, RunsCommand, StartArgs, UpArgs, DEFAULT_DATABASE_URL,
};
use crate::config::Config;
use crate::output;

/// Process logs go to stderr (filter with `MORPHEUS_LOG`, default `info`); events
/// emitted inside step bodies also go to the run's own logs.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("MORPHEUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .with_filter(docker_bodies_filter()),
        )
        .with(StepLogLayer.with_filter(step_log_filter()))
        .try_init();
}

/// Whatever `MORPHEUS_LOG` asks for, the Docker client logs at info at most: its debug
/// lines hold request and response bodies, and those hold containers' environments,
/// with the opened values of sealed secrets.
fn docker_bodies_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target("bollard", tracing::Level::INFO)
}

/// What reaches a run's logs from `tracing` inside its steps: debug and up, except the
/// HTTP and Docker client libraries' own debug chatter (request dumps), which would
/// drown the step's real output.
fn step_log_filter() -> tracing_subscriber::filter::Targets {
    use tracing::Level;
    tracing_subscriber::filter::Targets::new()
        .with_default(Level::DEBUG)
        .with_target("bollard", Level::INFO)
        .with_target("hyper", Level::INFO)
        .with_target("hyper_util", Level::INFO)
        .with_target("reqwest", Level::INFO)
        .with_target("h2", Level::INFO)
}

/// Every workflow and executor this binary ships; deploys run per `deploy`.
pub fn registries(deploy: DeployConfig) -> (WorkflowRegistry, ExecutorRegistry) {
    let mut workflows = WorkflowRegistry::new();
    morpheus_workflows::register_builtin(&mut workflows);
    morpheus_workflows::deploy::register(&mut workflows, Arc::new(deploy));
    let mut executors = ExecutorRegistry::new();
    executors.register(ProcessExecutor::new());
    executors.register(DockerExecutor::new());
    (workflows, executors)
}

/// The registries of commands that only start or inspect runs (they never capture,
/// so the deploy configuration's paths do not matter to them).
pub fn default_registries() -> (WorkflowRegistry, ExecutorRegistry) {
    registries(DeployConfig::default())
}

/// Hides the password in a database URL.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Opens the database, with an error that names it.
pub async fn open(url: &str) -> Result<Arc<dyn World>> {
    morpheus_engine::connect(url)
        .await
        .map_err(|error| match error {
            EngineError::SchemaTooNew { .. } | EngineError::UnsupportedUrl(_) => anyhow!(error),
            other => anyhow!("cannot open database {}: {other}", redact(url)),
        })
}

fn parse_run_id(text: &str) -> Result<RunId> {
    Ok(text.parse::<RunId>()?)
}

/// Reads `--input`-style arguments: inline JSON, `@file`, or `@-` for stdin.
pub fn read_json_argument(what: &str, text: &str) -> Result<Value> {
    let raw = match text.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} file '{path}'"))?,
        None => text.to_owned(),
    };
    serde_json::from_str(&raw).map_err(|error| anyhow!("{what} is not valid JSON: {error}"))
}

fn parse_since(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
        return Ok(ts.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        anyhow!("--since '{text}' is neither an RFC 3339 time (2026-11-23T10:00:00Z) nor an age (10m, 2h)")
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(age)?)
}

async fn require_run(world: &dyn World, run: &str) -> Result<morpheus_engine::RunRecord> {
    let run_id = parse_run_id(run)?;
    world
        .get_run(run_id)
        .await?
        .ok_or_else(|| anyhow!(EngineError::RunNotFound(run_id)))
}

/// Dispatches a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let url = cli
        .database_url
        .clone()
        .or_else(|| config.database_url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    match cli.command {
        Command::Up(args) => up(&url, args, &config).await,
        Command::Serve(args) => crate::serve::serve(&url, args, &config).await,
        Command::Migrate => {
            open(&url).await?;
            println!("database {} is up to date", redact(&url));
            Ok(())
        }
        Command::Start(args) => start(&url, args).await,
        Command::Runs(command) => runs(&url, command).await,
        Command::Logs(args) => logs(&url, args, &config).await,
        Command::Extensions(command) => crate::extensions::run(&url, &config, command).await,
        Command::Events(EventsCommand::Send { key, payload }) => {
            let payload = read_json_argument("--payload", &payload)?;
            let world = open(&url).await?;
            if world.send_event(&key, payload).await? {
                println!("delivered event '{key}'");
                Ok(())
            } else {
                bail!("event '{key}' was already delivered; the first delivery stands")
            }
        }
        Command::Prune(args) => prune(&url, args).await,
        Command::Queues(command) => queues(&url, command).await,
        Command::Schedules(command) => crate::schedules::run(&url, command).await,
        Command::Automations(command) => crate::automations::run(&url, command, &config).await,
        Command::Bench(BenchArgs {
            mode: Some(BenchMode::Extensions(args)),
            ..
        }) => crate::bench_extensions::run(args).await,
        Command::Bench(BenchArgs {
            mode: Some(BenchMode::Fund(args)),
            ..
        }) => crate::bench_fund::run(args).await,
        Command::Bench(BenchArgs {
            mode: Some(BenchMode::Api(args)),
            ..
        }) => crate::bench_api::run(&url, args).await,
        Command::Bench(args) => crate::bench::run(&url, args).await,
        Command::Deploy(args) => crate::deploy::run(&url, args, &config).await,
        Command::Close(args) => crate::akash_deploy::close(&url, args, &config).await,
        Command::Status(args) => crate::akash_deploy::status(&url, args, &config).await,
        Command::Devnet(command) => crate::devnet::run(command).await,
        Command::Fund(args) => crate::fund::run(&url, args, &config).await,
        Command::Init(args) => crate::akash_project::init(args),
        Command::Secrets(command) => crate::secrets::run(command, &config),
        Command::Keys(KeysCommand::Audit(args)) => keys_audit(&url, args).await,
        Command::Keys(KeysCommand::Ephemeral(command)) => {
            crate::keys_ephemeral::run(&url, command, &config).await
        }
    }
}

async fn keys_audit(url: &str, args: KeysAuditArgs) -> Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let world = open(url).await?;
    let signatures = world
        .signatures(&SignatureFilter {
            key: args.key,
            since,
            limit: i64::from(args.limit.max(1)),
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&signatures)?);
        return Ok(());
    }
    if signatures.is_empty() {
        println!("no signatures recorded");
        return Ok(());
    }
    for signature in &signatures {
        println!(
            "{}  {}  key={}  address={}  signed={}  run={} step={}  tx={}",
            signature
                .signed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            signature.chain,
            signature.key_id,
            signature.address,
            signature.message_types.join(","),
            signature
                .run_id
                .map_or_else(|| "-".to_owned(), |run| run.to_string()),
            signature.step_key,
            signature.tx_hash
        );
    }
    Ok(())
}

async fn up(url: &str, args: UpArgs, config: &Config) -> Result<()> {
    if args.heartbeat >= args.lease_ttl {
        bail!(
            "--heartbeat ({:?}) must be shorter than --lease-ttl ({:?})",
            args.heartbeat,
            args.lease_ttl
        );
    }
    let mut deploy = crate::deploy::config(&args.deploy_paths)?;
    deploy.limits = SnapshotLimits {
        max_files: args.deploy_max_files,
        max_compressed_bytes: args.deploy_max_snapshot_bytes,
    };
    deploy.ready_timeout = args.deploy_ready_timeout;
    deploy.command_timeout = args.deploy_command_timeout;
    // Read once, before anything starts: a missing or bad key stops `up` here.
    if let Some(secrets) = &config.secrets {
        let key = morpheus_executors::sealed::SecretKey::from_source(&secrets.key)
            .map_err(|error| anyhow!("config [secrets]: {error}"))?;
        tracing::info!(public_key = %key.public_key(), "sealed deploy env values open with the [secrets] key");
        deploy.secrets_key = Some(Arc::new(key));
    }
    let deploy_summary = (deploy.data_dir.clone(), deploy.allowed_roots.clone());
    // The demo is the newcomer's first look: it serves the dashboard unless told where.
    let listen = args.listen.or(config.api.listen).or_else(|| {
        args.demo
            .then(|| morpheus_server::DEMO_LISTEN.parse().expect("valid address"))
    });
    // Checked before anything starts: bad tokens or an unprotected address stop here.
    let mut server_config = listen
        .map(|listen| {
            crate::serve::server_config(
                listen,
                &config.api,
                &config.automations,
                deploy.allowed_roots.clone(),
            )
        })
        .transpose()?;
    let (mut workflows, mut executors) = registries(deploy);
    if let Some(ephemeral) = config.cosmos.as_ref().and_then(|c| c.ephemeral.as_ref()) {
        // Checked before anything starts: signing would fail on every sweep otherwise.
        ephemeral
            .passphrase
            .read()
            .map_err(|error| anyhow!("config [cosmos] ephemeral: {error}"))?;
        morpheus_workflows::keys::register_rotation(&mut workflows, ephemeral.passphrase.clone());
    }
    morpheus_workflows::automations::register(
        &mut workflows,
        config.automations.passphrase.clone(),
    );
    if let Some(fund) = &config.fund {
        fund.check()
            .map_err(|error| anyhow!("config [fund] {error}"))?;
        workflows.register(morpheus_workflows::fund::Fund::new(fund.clone()));
    }
    // Check the configured schedules before touching the database.
    let mut declared = crate::schedules::from_config(&config.schedules, &workflows)?;
    let demo = if args.demo {
        Some(crate::demo::start(url).await?)
    } else {
        None
    };
    if let Some(demo) = &demo {
        executors.register(demo.executor.clone());
        declared.push(demo.schedule(&workflows)?);
    }
    // Built (its configuration and key checked) before anything starts, registered once
    // the database is open: its signatures go to the key audit there.
    let cosmos_executor = match (&demo, &config.cosmos) {
        (None, Some(cosmos)) => {
            Some(CosmosExecutor::new(cosmos).map_err(|error| anyhow!("config [cosmos]: {error}"))?)
        }
        _ => None,
    };
    let mut taken = executors.kinds();
    if cosmos_executor.is_some() {
        taken.push("cosmos".to_owned());
    }
    // Checked before anything starts: a bad entry names itself and stops `up` here.
    ExtensionManager::check(&config.extensions, &taken)
        .map_err(|error| anyhow!("config: {error}"))?;
    let world = open(url).await?;
    if let (Some(executor), Some(cosmos)) = (cosmos_executor, &config.cosmos) {
        let key = cosmos
            .key
            .as_ref()
            .map_or_else(|| "no key".to_owned(), ToString::to_string);
        executors.register(
            executor
                .with_signature_audit(SignatureAudit::new(world.clone(), key))
                .with_ephemeral_keys(morpheus_engine::Documents::new(world.clone())),
        );
    }
    // The evm executor reserves nonces in the database, so it is built once it is open.
    if let Some(evm) = &config.evm {
        let key = evm
            .key
            .as_ref()
            .map_or_else(|| "no key".to_owned(), ToString::to_string);
        executors.register(
            EvmExecutor::new(evm, world.clone())
                .map_err(|error| anyhow!("config [evm]: {error}"))?
                .with_signature_audit(SignatureAudit::new(world.clone(), key))
                .with_relayer_keys(
                    morpheus_engine::Documents::new(world.clone()),
                    config.automations.passphrase.clone(),
                ),
        );
    }
    tracing::info!(
        data_dir = %deploy_summary.0.display(),
        allowed_roots = ?deploy_summary.1,
        "deploy configuration"
    );
    for (spec, next_fire_at) in &declared {
        if world.sync_schedule(spec, *next_fire_at).await? {
            tracing::info!(schedule = %spec.name, trigger = %spec.trigger, "schedule synced from config");
        }
    }
    // Docker is only needed by deploy steps: other workflows run without it.
    tokio::spawn(async {
        match DockerExecutor::new().ping().await {
            Ok(version) => tracing::info!(%version, "docker engine reachable"),
            Err(error) => tracing::warn!(
                %error,
                "docker is unreachable: deploy steps will fail and be retried until it is"
            ),
        }
    });
    // Extensions resolve their metric handles when they load: the recorder comes first.
    if let Some(server_config) = &mut server_config {
        crate::serve::install_metrics(server_config)?;
    }
    let extensions = ExtensionManager::load(&config.extensions, &executors.kinds())
        .await
        .map_err(|error| anyhow!(error))?;
    extensions.register(&mut executors);
    let mut config = WorkerConfig::for_backend(world.backend());
    config.concurrency = args.concurrency as usize;
    config.lease_ttl = args.lease_ttl;
    config.heartbeat_interval = args.heartbeat;
    config.shutdown_grace = args.shutdown_grace;
    if let Some(poll) = args.poll_interval {
        config.poll_interval = poll;
    }
    if let Some(id) = args.worker_id {
        config.worker_id = id;
    }
    if !args.queues.is_empty() {
        config.queues = Some(args.queues);
    }
    tracing::info!(
        database = %redact(url),
        workflows = ?workflows.names(),
        executors = ?executors.kinds(),
        "morpheus up"
    );
    let engine = Engine::new(world.clone(), workflows, executors);
    // The port is taken before any worker starts, so "address in use" changes nothing.
    let server = match server_config {
        Some(server_config) => Some(crate::serve::bind(&engine, server_config).await?),
        None => None,
    };
    // The worker, the scheduler, the heartbeat pinger and the server, stopped together by SIGTERM or Ctrl-C.
    let shutdown = crate::serve::Shutdown::new();
    let signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.trigger();
        })
    };
    let serving = server.map(|server| tokio::spawn(server.serve(shutdown.wait())));
    let worker_id = config.worker_id.clone();
    let reporting = tokio::spawn(crate::extensions::publish(
        world.clone(),
        worker_id.clone(),
        extensions.clone(),
        shutdown.wait(),
    ));
    // Heartbeat pings after scheduled runs, sent from the database's outbox (so any
    // process may send any, and a retry outlives this one).
    let pinger = tokio::spawn(crate::heartbeats::run(
        engine.world(),
        crate::heartbeats::fallback_poll(engine.world().backend(), config.poll_interval),
        shutdown.wait(),
    ));
    let result = Runtime::new(engine)
        .worker_config(config)
        .run(shutdown.wait())
        .await;
    // The workers may also stop by themselves (storage failure): stop serving then too.
    shutdown.trigger();
    signal.abort();
    let _ = reporting.await;
    extensions.stop().await;
    crate::extensions::write_reports(world.as_ref(), &worker_id, &extensions).await;
    match pinger.await {
        Ok(Err(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "the heartbeat pinger stopped with an error")
        }
        Err(error) => tracing::warn!(%error, "the heartbeat pinger task failed"),
        Ok(Ok(())) => {}
    }
    if let Some(serving) = serving {
        match serving.await {
            Ok(Err(error)) => tracing::warn!(%error, "the HTTP server stopped with an error"),
            Err(error) => tracing::warn!(%error, "the HTTP server task failed"),
            Ok(Ok(())) => {}
        }
    }
    result?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

async fn start(url: &str, args: StartArgs) -> Result<()> {
    let input = read_json_argument("--input", &args.input)?;
    let (workflows, executors) = default_registries();
    if workflows.get(&args.workflow).is_none() {
        bail!(
            "unknown workflow '{}' (known: {})",
            args.workflow,
            workflows.names().join(", ")
        );
    }
    // Validate before opening the database, so bad input writes nothing at all.
    if args.queue.trim().is_empty() {
        bail!("--queue must not be empty");
    }
    let new_run = workflows
        .prepare(&args.workflow, input, args.idempotency_key)?
        .queue(args.queue)
        .priority(args.priority);
    let world = open(url).await?;
    let engine = Engine::new(world, workflows, executors);
    let started = engine.start_prepared(new_run).await?;
    if args.json {
        println!(
            "{}",
            json!({"run_id": started.run_id, "created": started.created})
        );
    } else {
        println!("{}", started.run_id);
        if !started.created {
            eprintln!(
                "note: a run with this idempotency key already exists; nothing new was started"
            );
        }
    }
    Ok(())
}

async fn runs(url: &str, command: RunsCommand) -> Result<()> {
    match command {
        RunsCommand::List {
            status,
            workflow,
            limit,
            json,
        } => {
            let status = status
                .as_deref()
                .map(str::parse::<RunStatus>)
                .transpose()
                .map_err(|error| anyhow!("--status: {error}"))?;
            let world = open(url).await?;
            let runs = world
                .list_runs(&RunFilter {
                    status,
                    workflow,
                    limit: Some(limit),
                    ..RunFilter::default()
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string(&runs)?);
            } else {
                print!("{}", output::run_table(&runs));
            }
        }
        RunsCommand::Show { run, json } => {
            parse_run_id(&run)?;
            let world = open(url).await?;
            let record = require_run(world.as_ref(), &run).await?;
            let steps = world.load_journal(record.id).await?;
            let (workflows, _) = default_registries();
            let replayable = workflows
                .get(&record.workflow)
                .is_some_and(|w| w.version() == record.workflow_version);
            if json {
                println!(
                    "{}",
                    json!({"run": record, "steps": steps, "replayable_by_this_binary": replayable})
                );
            } else {
                print!("{}", output::run_detail(&record, &steps));
                if !replayable && !record.status.is_terminal() {
                    println!(
                        "note: this binary cannot run {}@{}; the run waits for a worker that has that workflow version",
                        record.workflow, record.workflow_version
                    );
                }
            }
        }
        RunsCommand::Cancel { run } => {
            let run_id = parse_run_id(&run)?;
            open(url).await?.cancel_run(run_id).await?;
            println!("cancelled {run_id}");
        }
        RunsCommand::Resume { run } => {
            let run_id = parse_run_id(&run)?;
            open(url).await?.resume_run(run_id).await?;
            println!("resumed {run_id}");
        }
        RunsCommand::Fork { run, from_step } => {
            let run_id = parse_run_id(&run)?;
            let forked = open(url).await?.fork_run(run_id, &from_step).await?;
            println!("{forked}");
        }
    }
    Ok(())
}

async fn logs(url: &str, args: LogsArgs, config: &Config) -> Result<()> {
    let Some(run) = args.run.clone() else {
        return crate::akash_deploy::app_logs(url, args, config).await;
    };
    let run_id = parse_run_id(&run)?;
    let min_level = args
        .level
        .as_deref()
        .map(str::parse::<LogLevel>)
        .transpose()
        .map_err(|error| anyhow!("--level: {error}"))?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let world = open(url).await?;
    require_run(world.as_ref(), &run).await?;
    let mut query = LogQuery {
        run_id: Some(run_id),
        step_key: args.step,
        min_level,
        since,
        text: args.grep,
        offset: args.offset,
        limit: args.limit,
        ..Default::default()
    };
    let mut printed = 0u64;
    loop {
        let lines = world.query_logs(&query).await?;
        for line in &lines {
            if args.json {
                println!("{}", serde_json::to_string(line)?);
            } else {
                println!("{}", output::log_line(line));
            }
        }
        printed += lines.len() as u64;
        if let Some(last) = lines.last() {
            query.after_id = Some(last.id);
            // The offset applies to the first page only; afterwards the cursor moves.
            query.offset = 0;
        }
        if !args.follow || args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
        if lines.is_empty() {
            let run = require_run(world.as_ref(), &run).await?;
            if run.status.is_terminal() {
                // One more read: lines committed together with the run's end.
                let tail = world.query_logs(&query).await?;
                for line in &tail {
                    if args.json {
                        println!("{}", serde_json::to_string(line)?);
                    } else {
                        println!("{}", output::log_line(line));
                    }
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

async fn prune(url: &str, args: PruneArgs) -> Result<()> {
    let cutoff = Utc::now() - chrono::Duration::from_std(args.completed_older_than)?;
    let world = open(url).await?;
    let report = world
        .prune_finished(cutoff, args.batch_size, args.dry_run)
        .await?;
    // The change feed (what live views follow) is kept for as long as finished runs.
    let feed_entries = if args.dry_run {
        0
    } else {
        world.prune_feed(cutoff).await?
    };
    if args.json {
        println!(
            "{}",
            json!({"dry_run": args.dry_run, "cutoff": cutoff, "runs": report.runs,
                   "steps": report.steps, "logs": report.logs, "batches": report.batches,
                   "feed_entries": feed_entries})
        );
    } else if args.dry_run {
        println!(
            "would delete {} runs finished before {} ({} steps, {} log lines)",
            report.runs,
            output::time(cutoff),
            report.steps,
            report.logs
        );
    } else {
        println!(
            "deleted {} runs finished before {} ({} steps, {} log lines) in {} batches, and {} feed entries",
            report.runs,
            output::time(cutoff),
            report.steps,
            report.logs,
            report.batches,
            feed_entries
        );
    }
    Ok(())
}

async fn queues(url: &str, command: QueuesCommand) -> Result<()> {
    match command {
        QueuesCommand::Set {
            name,
            concurrency,
            unlimited: _,
        } => {
            if name.trim().is_empty() {
                bail!("queue name must not be empty");
            }
            open(url).await?.set_queue_limit(&name, concurrency).await?;
            match concurrency {
                Some(limit) => println!("queue '{name}': at most {limit} running"),
                None => println!("queue '{name}': unlimited"),
            }
        }
        QueuesCommand::List { json } => {
            let queues = open(url).await?.list_queues().await?;
            if json {
                println!("{}", serde_json::to_string(&queues)?);
            } else {
                println!(
                    "{:<24}  {:>7}  {:>7}  {:>8}  {:>7}",
                    "QUEUE", "LIMIT", "RUNNING", "RETRYING", "QUEUED"
                );
                for queue in queues {
                    let limit = queue
                        .concurrency_limit
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<24}  {:>7}  {:>7}  {:>8}  {:>7}",
                        queue.name, limit, queue.running, queue.retrying, queue.queued
                    );
                }
            }
        }
    }
    Ok(())
}
