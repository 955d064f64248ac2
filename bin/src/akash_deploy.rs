//! The Akash deploy of a project directory: `morpheus deploy` (start an `akash.deploy`
//! run and follow it to the URL), `morpheus close`, `morpheus status` and `morpheus logs`
//! without a run id (the app's own logs from its provider).
//!
//! The CLI only prepares and starts runs; a `morpheus up` with `[cosmos]` serving the same
//! database executes them, so a crash of either never loses or repeats a transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use morpheus_engine::{
    Engine, ExecRequest, LeaseCheck, LogQuery, LogSink, RunFilter, RunId, RunRecord, RunStatus,
    World,
};
use morpheus_executors::cosmos::{
    CosmosExecutor, CosmosRequest, DeploymentsInfo, LeaseRates, LeaseStatus,
};
use morpheus_executors::image_build::BuildImageSpec;
use morpheus_workflows::akash::build;
use morpheus_workflows::akash::deploy::{AkashCloseReport, AkashDeployReport};
use morpheus_workflows::akash::project::Project;
use serde_json::{json, Value};

use crate::akash_project::{load, PROJECT_FILE};
use crate::cli::{
    AkashDeployArgs, CloseArgs, DeployDryRunArgs, DeployPathArgs, LogsArgs, StatusArgs,
};
use crate::commands::{default_registries, open};
use crate::config::Config;
use crate::output;

/// The `cosmos` executor of `[cosmos]`, for commands that read the chain or a provider
/// themselves.
fn cosmos_executor(config: &Config) -> Result<CosmosExecutor> {
    let cosmos = config.cosmos.as_ref().ok_or_else(|| {
        anyhow!("morpheus.toml has no [cosmos] section (rest_url, chain_id, key): the Akash commands need it")
    })?;
    CosmosExecutor::new(cosmos).map_err(|error| anyhow!("config [cosmos]: {error}"))
}

/// The owner: `explicit`, else the address of the `[cosmos]` key.
pub fn cosmos_owner(config: &Config, explicit: Option<String>) -> Result<String> {
    if let Some(owner) = explicit {
        return Ok(owner);
    }
    if let Some(ephemeral) = config.cosmos.as_ref().and_then(|c| c.ephemeral.as_ref()) {
        return Ok(ephemeral.granter.clone());
    }
    let executor =
        cosmos_executor(config).map_err(|error| anyhow!("--owner is required: {error}"))?;
    executor
        .address()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("--owner is required: [cosmos] has no key"))
}

/// Follows a run to its end: prints its log lines as they are written (to stderr) and
/// returns the finished run. Stops waiting (the run goes on) after `timeout`.
pub async fn follow_run(
    world: &Arc<dyn World>,
    run_id: RunId,
    timeout: Duration,
    what: &str,
) -> Result<RunRecord> {
    let mut query = LogQuery {
        run_id: Some(run_id),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let lines = world.query_logs(&query).await?;
        for line in &lines {
            eprintln!("{}", output::log_line(line));
        }
        if let Some(last) = lines.last() {
            query.after_id = Some(last.id);
        }
        let run = world
            .get_run(run_id)
            .await?
            .ok_or_else(|| anyhow!("run {run_id} disappeared"))?;
        if run.status.is_terminal() && lines.is_empty() {
            return Ok(run);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{what} run {run_id} has not ended after {}: it is {} (it goes on; follow it with `morpheus logs {run_id} --follow`)",
                humantime::format_duration(timeout),
                run.status
            );
        }
        if lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A URI as a provider reports it (`host:port` or a host name) as a URL to open.
fn url_of(uri: &str) -> String {
    if uri.contains("://") {
        uri.to_owned()
    } else {
        format!("http://{uri}")
    }
}

/// Captures and plans the project's build (when it has a build section): the context
/// tar is written under `data_dir/artifacts/akash/<project>/`, where the worker's docker
/// executor reads it.
fn prepare_build(dir: &Path, data_dir: &Path, project: &Project) -> Result<Option<BuildImageSpec>> {
    let Some(section) = project.config.build.clone() else {
        return Ok(None);
    };
    let context = dir.join(&section.context);
    let artifacts = absolute(
        &data_dir
            .join("artifacts")
            .join("akash")
            .join(&project.config.name),
    );
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("cannot create {}", artifacts.display()))?;
    let port = project.ports.first().map_or(80, |port| port.port);
    let plan = build::prepare(&context, &artifacts, &section, port)
        .map_err(|error| anyhow!("build: {error}"))?;
    let tar = artifacts.join(format!("{}.tar", plan.content_hash));
    std::fs::write(&tar, &plan.context_tar)
        .with_context(|| format!("cannot write the build context {}", tar.display()))?;
    eprintln!(
        "build context captured ({} bytes, {:?}); the image will be {}",
        plan.context_tar.len(),
        plan.framework,
        plan.tag
    );
    Ok(Some(BuildImageSpec {
        context: tar,
        dockerfile: if plan.generated_dockerfile.is_some() {
            None
        } else {
            section.dockerfile.clone()
        },
        generated_dockerfile: plan.generated_dockerfile,
        tag: plan.tag,
    }))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

/// `--require-attribute KEY=VALUE` as a map.
fn attributes(pairs: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| anyhow!("--require-attribute '{pair}' is not KEY=VALUE"))?;
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok(map)
}

/// `morpheus deploy` of the project in `--project-dir`.
pub async fn deploy(
    url: &str,
    paths: &DeployPathArgs,
    project_args: DeployDryRunArgs,
    args: AkashDeployArgs,
    config: &Config,
) -> Result<()> {
    let dir = project_args
        .project_dir
        .unwrap_or_else(|| PathBuf::from("."));
    let project = load(&dir)?;
    let project_yaml = std::fs::read_to_string(dir.join(PROJECT_FILE))
        .with_context(|| format!("cannot read {}", dir.join(PROJECT_FILE).display()))?;
    let owner = cosmos_owner(config, args.owner)?;
    let mut policy = json!({
        "allow": args.allow_providers,
        "deny": args.deny_providers,
        "required_attributes": attributes(&args.required_attributes)?,
    });
    if let Some(max) = &args.max_price {
        policy["max_price_per_block"] = json!(max);
    }
    let mut input = json!({
        "project_yaml": project_yaml,
        "owner": owner,
        "deposit": args.deposit,
        "bids": policy,
        "bid_window_s": args.bid_window.as_secs_f64(),
        "bid_timeout_s": args.bid_timeout.as_secs_f64(),
        "ready_timeout_s": args.ready_timeout.as_secs_f64(),
        "seconds_per_block": args.seconds_per_block,
    });
    let (workflows, executors) = default_registries();
    // Validated before anything is captured or written: bad input changes nothing.
    workflows.prepare("akash.deploy", input.clone(), args.idempotency_key.clone())?;
    if let Some(build) = prepare_build(&dir, &paths.data_dir, &project)? {
        input["build"] = serde_json::to_value(build)?;
    }
    let new_run = workflows.prepare("akash.deploy", input, args.idempotency_key)?;
    let world = open(url).await?;
    let engine = Engine::new(world.clone(), workflows, executors);
    let started = engine.start_prepared(new_run).await?;
    let run_id = started.run_id;
    if !started.created {
        eprintln!("note: a deploy run with this idempotency key already exists: following it");
    }
    if args.no_wait {
        if project_args.json {
            println!("{}", json!({"run_id": run_id, "created": started.created}));
        } else {
            println!("{run_id}");
            eprintln!("started akash.deploy run {run_id} of {}; a `morpheus up` with [cosmos] runs it. Follow it with `morpheus logs {run_id} --follow`", project.config.name);
        }
        return Ok(());
    }
    eprintln!(
        "deploying {} (run {run_id}): waiting for a `morpheus up` with [cosmos] serving this database to run it (Ctrl-C stops waiting, not the run)",
        project.config.name
    );
    let run = follow_run(&world, run_id, args.timeout, "akash.deploy").await?;
    let report: AkashDeployReport = finished(&run, "akash.deploy")?;
    if project_args.json {
        println!("{}", json!({"run_id": run_id, "report": report}));
        return Ok(());
    }
    println!(
        "deployed {} as dseq {} (owner {})",
        project.config.name, report.dseq, report.owner
    );
    println!("  image     {}", report.image);
    for lease in &report.leases {
        println!(
            "  lease     {}/{}/{}/{} from {} at {}/block (tx {})",
            report.dseq,
            lease.gseq,
            lease.oseq,
            lease.bseq,
            lease.provider,
            lease.price,
            lease.tx_hash
        );
    }
    for (service, uris) in &report.uris {
        for uri in uris {
            println!("  {service:<9} {}", url_of(uri));
        }
    }
    Ok(())
}

/// The output of a completed run, or its failure as the error.
fn finished<T: serde::de::DeserializeOwned>(run: &RunRecord, what: &str) -> Result<T> {
    match run.status {
        RunStatus::Completed => serde_json::from_value(run.output.clone().unwrap_or_default())
            .map_err(|error| anyhow!("{what} run {}: unexpected report: {error}", run.id)),
        status => bail!(
            "{what} run {} {status}: {}",
            run.id,
            run.error.as_deref().unwrap_or("no error recorded")
        ),
    }
}

/// The newest completed `akash.deploy` of the project `name` (or of deployment `dseq`).
async fn find_deploy(
    world: &Arc<dyn World>,
    name: Option<&str>,
    dseq: Option<&str>,
) -> Result<AkashDeployReport> {
    let runs = world
        .list_runs(&RunFilter {
            status: Some(RunStatus::Completed),
            workflow: Some("akash.deploy".into()),
            limit: Some(500),
            ..Default::default()
        })
        .await?;
    for run in runs {
        let Ok(report) =
            serde_json::from_value::<AkashDeployReport>(run.output.unwrap_or_default())
        else {
            continue;
        };
        let matches = match (dseq, name) {
            (Some(dseq), _) => report.dseq == dseq,
            (None, Some(name)) => run.input["project_yaml"]
                .as_str()
                .and_then(|yaml| Project::from_yaml(yaml).ok())
                .is_some_and(|project| project.config.name == name),
            (None, None) => false,
        };
        if matches {
            return Ok(report);
        }
    }
    match (dseq, name) {
        (Some(dseq), _) => {
            bail!("no completed `morpheus deploy` in this database created deployment {dseq}")
        }
        (None, Some(name)) => bail!(
            "no completed `morpheus deploy` of project '{name}' in this database (give the dseq)"
        ),
        (None, None) => bail!("give a dseq or a project directory"),
    }
}

/// The dseq given, else the project's newest deployment.
async fn project_deploy(
    world: &Arc<dyn World>,
    dseq: Option<&str>,
    project_dir: Option<PathBuf>,
) -> Result<AkashDeployReport> {
    match dseq {
        Some(dseq) => find_deploy(world, None, Some(dseq)).await,
        None => {
            let dir = project_dir.unwrap_or_else(|| PathBuf::from("."));
            let project = load(&dir)?;
            find_deploy(world, Some(&project.config.name), None).await
        }
    }
}

/// `morpheus close`.
pub async fn close(url: &str, args: CloseArgs, config: &Config) -> Result<()> {
    let owner = cosmos_owner(config, args.owner)?;
    let world = open(url).await?;
    let dseq = match args.dseq {
        Some(dseq) => dseq,
        None => project_deploy(&world, None, args.project_dir).await?.dseq,
    };
    let (workflows, executors) = default_registries();
    let input = json!({"owner": owner, "dseq": dseq, "seconds_per_block": args.seconds_per_block});
    // One close per deployment: a repeated `morpheus close` follows the first run.
    let new_run = workflows.prepare(
        "akash.close",
        input,
        Some(format!("akash.close:{owner}:{dseq}")),
    )?;
    let engine = Engine::new(world.clone(), workflows, executors);
    let started = engine.start_prepared(new_run).await?;
    let run_id = started.run_id;
    if !started.created {
        eprintln!("note: deployment {dseq} already has a close run: following it");
    }
    if args.no_wait {
        if args.json {
            println!("{}", json!({"run_id": run_id, "created": started.created}));
        } else {
            println!("{run_id}");
        }
        return Ok(());
    }
    eprintln!("closing deployment {dseq} (run {run_id}): waiting for a `morpheus up` with [cosmos] to run it");
    let run = follow_run(&world, run_id, args.timeout, "akash.close").await?;
    let report: AkashCloseReport = finished(&run, "akash.close")?;
    if args.json {
        println!("{}", json!({"run_id": run_id, "report": report}));
    } else {
        println!(
            "closed deployment {} in block {} (tx {}); its escrow's rest is back in {owner}",
            report.dseq, report.height, report.tx_hash
        );
    }
    Ok(())
}

/// One call of the `cosmos` executor outside a run (reads only).
/// One read operation of `executor`, outside any run.
pub(crate) async fn read(executor: &CosmosExecutor, request: CosmosRequest) -> Result<Value> {
    let call = ExecRequest {
        idempotency_key: "cli/read".into(),
        attempt: 1,
        fencing_token: 0,
        lease: LeaseCheck::always(),
        deadline: None,
        payload: Value::Null,
        logs: LogSink::discard(),
    };
    executor
        .execute(request, &call)
        .await
        .map_err(|error| anyhow!("{}", error.message()))
}

/// `morpheus status`.
pub async fn status(url: &str, args: StatusArgs, config: &Config) -> Result<()> {
    let executor = cosmos_executor(config)?;
    let world = open(url).await?;
    let report = project_deploy(&world, args.dseq.as_deref(), args.project_dir).await?;
    let dseq: u64 = report.dseq.parse().context("the deploy report's dseq")?;
    let deployments: DeploymentsInfo = serde_json::from_value(
        read(
            &executor,
            CosmosRequest::Deployments {
                owner: Some(report.owner.clone()),
                dseqs: Some(vec![dseq]),
                include_closed: true,
            },
        )
        .await?,
    )?;
    let rates: LeaseRates = serde_json::from_value(
        read(
            &executor,
            CosmosRequest::Leases {
                owner: Some(report.owner.clone()),
                dseqs: Some(vec![dseq]),
            },
        )
        .await?,
    )?;
    let deployment = deployments.deployments.first();
    let rate = rates.rates.first();
    let runway_s = match (deployment, rate) {
        (Some(deployment), Some(rate)) => {
            let funds: f64 = deployment.escrow_funds.to_string().parse().unwrap_or(0.0);
            let per_block: f64 = rate.rate_per_block.to_string().parse().unwrap_or(0.0);
            (per_block > 0.0).then(|| funds / per_block * args.seconds_per_block)
        }
        _ => None,
    };
    let mut leases = Vec::new();
    for lease in &report.leases {
        let status = if deployment.is_some_and(|d| d.state == "active") {
            read(
                &executor,
                CosmosRequest::LeaseStatus {
                    host_uri: lease.host_uri.clone(),
                    dseq,
                    gseq: lease.gseq,
                    oseq: lease.oseq,
                },
            )
            .await
            .and_then(|value| Ok(serde_json::from_value::<LeaseStatus>(value)?))
            .map_err(|error| error.to_string())
        } else {
            Err("the deployment is not active".to_owned())
        };
        leases.push((lease, status));
    }
    if args.json {
        let leases: Vec<Value> = leases
            .iter()
            .map(|(lease, status)| match status {
                Ok(status) => json!({"lease": lease, "status": status}),
                Err(error) => json!({"lease": lease, "error": error}),
            })
            .collect();
        println!(
            "{}",
            json!({
                "dseq": report.dseq,
                "owner": report.owner,
                "deployment": deployment,
                "rate": rate,
                "runway_seconds": runway_s,
                "leases": leases,
            })
        );
        return Ok(());
    }
    println!("deployment {} (owner {})", report.dseq, report.owner);
    match deployment {
        Some(deployment) => println!(
            "  state     {} (escrow {}): {} {} left",
            deployment.state,
            deployment.escrow_state,
            deployment.escrow_funds,
            deployment.escrow_denom
        ),
        None => println!("  state     unknown to the chain"),
    }
    match (rate, runway_s) {
        (Some(rate), Some(runway)) => println!(
            "  spending  {} {}/block over {} lease(s): runway about {}",
            rate.rate_per_block,
            rate.denom,
            rate.leases,
            humantime::format_duration(Duration::from_secs(runway as u64))
        ),
        _ => println!("  spending  nothing (no active lease)"),
    }
    for (lease, status) in leases {
        println!(
            "  lease     {}/{}/{} from {} at {}/block ({})",
            lease.gseq, lease.oseq, lease.bseq, lease.provider, lease.price, lease.host_uri
        );
        match status {
            Ok(status) => {
                for (name, service) in &status.services {
                    let uris: Vec<String> = service.uris.iter().map(|u| url_of(u)).collect();
                    println!(
                        "    {name:<9} {}/{} ready  {}",
                        service.available,
                        service.total,
                        uris.join(" ")
                    );
                }
            }
            Err(error) => println!("    status unavailable: {error}"),
        }
    }
    Ok(())
}

/// `morpheus logs` without a run id: the app's log lines, streamed over WebSocket from
/// each lease's provider (`/lease/{dseq}/{gseq}/{oseq}/logs`, the provider JWT of the
/// `[cosmos]` key), printed as `service-n | line`.
pub async fn app_logs(url: &str, args: LogsArgs, config: &Config) -> Result<()> {
    let executor = cosmos_executor(config)?;
    let world = open(url).await?;
    let report = project_deploy(&world, args.dseq.as_deref(), args.project_dir.clone()).await?;
    let token = executor
        .provider_jwt()
        .ok_or_else(|| anyhow!("[cosmos] has no key to sign the provider's token with"))?;
    let mut streams = Vec::new();
    for lease in &report.leases {
        let base = lease
            .host_uri
            .trim_end_matches('/')
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        let address = format!(
            "{base}/lease/{}/{}/{}/logs?follow={}&tail={}",
            report.dseq, lease.gseq, lease.oseq, args.follow, args.tail
        );
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                address.as_str(),
            )
            .map_err(|error| anyhow!("provider logs URL {address}: {error}"))?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .map_err(|_| anyhow!("the provider token is not a header value"))?,
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|error| {
                anyhow!(
                    "the provider at {} refused the logs of lease {}/{}/{}: {error}",
                    lease.host_uri,
                    report.dseq,
                    lease.gseq,
                    lease.oseq
                )
            })?;
        streams.push(socket);
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some(message) = merged.next().await {
        let message =
            message.map_err(|error| anyhow!("the provider's log stream broke off: {error}"))?;
        let text = match message {
            tokio_tungstenite::tungstenite::Message::Text(text) => text.to_string(),
            tokio_tungstenite::tungstenite::Message::Close(_) => continue,
            _ => continue,
        };
        if args.json {
            println!("{text}");
            continue;
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(line) => println!(
                "{} | {}",
                line["name"].as_str().unwrap_or("?"),
                line["message"].as_str().unwrap_or_default()
            ),
            Err(_) => println!("{text}"),
        }
    }
    Ok(())
}
