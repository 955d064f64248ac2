//! `morpheus deploy …`: parses, validates (before the database is opened, so bad input
//! writes nothing), calls the deploy service and prints.

use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use chrono::Utc;
use morpheus_engine::{Engine, RunId};
use morpheus_executors::DockerExecutor;
use morpheus_workflows::deploy::gc::Verdict;
use morpheus_workflows::deploy::spec::check_agent_id;
use morpheus_workflows::deploy::{
    DeployConfig, DeployService, DeployStatus, DeploymentRun, SpecRequest,
};

use crate::cli::{DeployArgs, DeployCommand, DeployPathArgs, SpecCommand, SpecSetArgs};
use crate::commands::{open, registries};
use crate::output;

/// The deploy configuration named by the flags: paths made absolute, and the current
/// directory as the allowed root when none is given.
pub fn config(paths: &DeployPathArgs) -> Result<DeployConfig> {
    let cwd = std::env::current_dir()
        .map_err(|error| anyhow!("cannot read the current directory: {error}"))?;
    // Lexically absolute (`./x` → `<cwd>/x`): the directories need not exist yet.
    let absolute = |path: &Path| -> PathBuf {
        let base = if path.is_absolute() {
            PathBuf::new()
        } else {
            cwd.clone()
        };
        base.join(
            path.components()
                .filter(|c| *c != Component::CurDir)
                .collect::<PathBuf>(),
        )
    };
    let roots = if paths.allowed_roots.is_empty() {
        vec![cwd.clone()]
    } else {
        paths
            .allowed_roots
            .iter()
            .filter(|root| !root.as_os_str().is_empty())
            .map(|root| absolute(root))
            .collect()
    };
    Ok(DeployConfig::new(absolute(&paths.data_dir), roots))
}

async fn service(url: &str, config: DeployConfig) -> Result<DeployService> {
    let world = open(url).await?;
    let (workflows, executors) = registries(config);
    Ok(DeployService::new(Engine::new(world, workflows, executors)))
}

/// Runs a `deploy` subcommand.
pub async fn run(url: &str, args: DeployArgs, settings: &crate::config::Config) -> Result<()> {
    let Some(command) = args.command else {
        if args.dry_run {
            return crate::akash_project::dry_run(args.dry_run_args);
        }
        return crate::akash_deploy::deploy(
            url,
            &args.paths,
            args.dry_run_args,
            args.akash,
            settings,
        )
        .await;
    };
    if args.dry_run {
        anyhow::bail!(
            "--dry-run shows the Akash deploy of morpheus.yaml: give it without a subcommand"
        );
    }
    let config = config(&args.paths)?;
    match command {
        DeployCommand::Spec(SpecCommand::Set(set)) => spec_set(url, config, *set).await,
        DeployCommand::Spec(SpecCommand::Show { agent, json }) => {
            check_agent_id(&agent)?;
            let spec = service(url, config).await?.spec(&agent).await?;
            if json {
                println!("{}", serde_json::to_string(&spec)?);
            } else {
                print!("{}", output::spec_detail(&spec));
            }
            Ok(())
        }
        DeployCommand::Start {
            agent,
            target,
            note,
            wait,
        } => {
            check_agent_id(&agent)?;
            let service = service(url, config).await?;
            let run = service.start(&agent, target, note, None).await?;
            finish_start(&service, run, wait).await
        }
        DeployCommand::Redeploy {
            agent,
            snapshot,
            target,
            note,
            wait,
        } => {
            check_agent_id(&agent)?;
            if snapshot.trim().is_empty() {
                bail!("--snapshot must not be empty");
            }
            let service = service(url, config).await?;
            let run = service.start(&agent, target, note, Some(snapshot)).await?;
            finish_start(&service, run, wait).await
        }
        DeployCommand::Stop { agent, run, wait } => {
            check_agent_id(&agent)?;
            run.parse::<RunId>()
                .map_err(|error| anyhow!("run: {error}"))?;
            let service = service(url, config).await?;
            let stop_run = service.stop(&agent, &run).await?;
            if wait {
                service
                    .wait(
                        &run,
                        stop_run,
                        |status| status == DeployStatus::Stopped,
                        None,
                    )
                    .await?;
                println!("stopped {run}");
            } else {
                println!("stopping {run} (stop run {stop_run})");
            }
            Ok(())
        }
        DeployCommand::List { agent, limit, json } => {
            check_agent_id(&agent)?;
            let runs = service(url, config).await?.runs(&agent, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&runs)?);
            } else {
                print!("{}", output::deploy_table(&runs));
            }
            Ok(())
        }
        DeployCommand::Snapshots { agent, limit, json } => {
            check_agent_id(&agent)?;
            let snapshots = service(url, config).await?.snapshots(&agent, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&snapshots)?);
            } else {
                print!("{}", output::snapshot_table(&snapshots));
            }
            Ok(())
        }
        DeployCommand::Gc { dry_run, json } => {
            let service = service(url, config).await?;
            let entries = service.gc(&DockerExecutor::new(), dry_run).await?;
            if json {
                println!("{}", serde_json::to_string(&entries)?);
                return Ok(());
            }
            let mut removed = 0;
            for entry in &entries {
                let run = entry.run_id.as_deref().unwrap_or("-");
                match &entry.verdict {
                    Verdict::Remove(reason) => {
                        removed += 1;
                        let verb = if dry_run { "would remove" } else { "removed" };
                        println!("{verb} {} (run {run}): {reason}", entry.container);
                    }
                    Verdict::Keep(reason) => {
                        println!("kept {} (run {run}): {reason}", entry.container)
                    }
                }
            }
            let verb = if dry_run { "would remove" } else { "removed" };
            println!("{verb} {removed} of {} containers", entries.len());
            Ok(())
        }
    }
}

async fn spec_set(url: &str, config: DeployConfig, args: SpecSetArgs) -> Result<()> {
    let request = SpecRequest {
        agent_id: args.agent,
        name: args.name,
        source_dir: args.source_dir,
        install_command: args.install,
        build_command: args.build,
        start_command: args.start,
        runtime_port: args.port,
        env: args.env,
        image: args.image,
        target_default: args.target,
        cpu: args.cpu,
        memory: args.memory,
    };
    let now = Utc::now();
    // Validated before the database is opened: a bad spec writes nothing at all. The id
    // and creation time are replaced by the stored spec's when it is an update.
    let spec = request.validate(
        &config.allowed_roots,
        uuid::Uuid::now_v7().to_string(),
        now,
        now,
    )?;
    let (spec, created) = service(url, config).await?.save_spec(spec).await?;
    println!(
        "{} spec for agent '{}' ({}): {} from {}",
        if created { "created" } else { "updated" },
        spec.agent_id,
        spec.id,
        spec.name,
        spec.source_dir
    );
    Ok(())
}

async fn finish_start(service: &DeployService, run: DeploymentRun, wait: bool) -> Result<()> {
    println!("{}", run.id);
    if !wait {
        return Ok(());
    }
    let run_id: RunId = run.id.parse()?;
    let done = service
        .wait(
            &run.id,
            run_id,
            |status| matches!(status, DeployStatus::Ready | DeployStatus::Failed),
            None,
        )
        .await?;
    match done.status {
        DeployStatus::Ready => {
            println!("{}", done.url.as_deref().unwrap_or("-"));
            Ok(())
        }
        _ => bail!(
            "deploy run {} failed: {}",
            done.id,
            done.error.as_deref().unwrap_or("no error recorded")
        ),
    }
}
