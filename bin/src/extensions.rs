//! `morpheus extensions …` and the reports workers publish about their extensions.
//!
//! Each `morpheus up` writes the status of its extensions (state, restarts, calls,
//! failures, mean call time, capabilities) into the document collection
//! [`STATUS_COLLECTION`] every [`REPORT_INTERVAL`] and when it stops, keyed by
//! `<worker id>/<extension>`. `extensions list` reads those reports beside the
//! configuration, so it shows what the running workers see — a restarting or failed
//! extension included — from any machine that can open the database.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use morpheus_engine::{DocumentQuery, LogSink, World};
use morpheus_executors::extensions::{
    CallContext, Extension, ExtensionConfig, ExtensionManager, ExtensionStatus, Phase,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::ExtensionsCommand;
use crate::commands::{open, read_json_argument};
use crate::config::Config;

/// Where workers publish their extensions' status.
pub const STATUS_COLLECTION: &str = "morpheus.extensions.status";

/// How often a worker publishes.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A report older than this comes from a worker that is probably gone.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// One worker's report on one extension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker that wrote it.
    pub worker_id: String,
    /// When.
    pub reported_at: DateTime<Utc>,
    /// What it saw.
    #[serde(flatten)]
    pub status: ExtensionStatus,
}

/// Publishes `extensions`' status every [`REPORT_INTERVAL`] until `stop` resolves, then
/// once more (so a stopped worker's last word is `stopped`).
pub async fn publish(
    world: std::sync::Arc<dyn World>,
    worker_id: String,
    extensions: ExtensionManager,
    stop: impl std::future::Future<Output = ()>,
) {
    if extensions.is_empty() {
        return;
    }
    tokio::pin!(stop);
    loop {
        write_reports(world.as_ref(), &worker_id, &extensions).await;
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
    }
}

/// Writes one report per extension (failures are logged: reports are best effort).
pub async fn write_reports(world: &dyn World, worker_id: &str, extensions: &ExtensionManager) {
    for status in extensions.statuses() {
        let key = format!("{worker_id}/{}", status.name);
        let report = WorkerReport {
            worker_id: worker_id.to_owned(),
            reported_at: Utc::now(),
            status,
        };
        let body = match serde_json::to_value(&report) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "extension report does not encode");
                continue;
            }
        };
        let written = match world.get_document(STATUS_COLLECTION, &key).await {
            Ok(existing) => {
                world
                    .put_document(
                        STATUS_COLLECTION,
                        &key,
                        &body,
                        existing.map(|doc| doc.version),
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::warn!(%error, extension = %report.status.name, "could not publish the extension's status");
        }
    }
}

/// Runs an `extensions` subcommand.
pub async fn run(url: &str, config: &Config, command: ExtensionsCommand) -> Result<()> {
    let (_, executors) = crate::commands::default_registries();
    ExtensionManager::check(&config.extensions, &executors.kinds())
        .map_err(|error| anyhow!("config: {error}"))?;
    match command {
        ExtensionsCommand::List { json } => list(url, config, json).await,
        ExtensionsCommand::Inspect { name, json } => {
            inspect(url, entry(config, &name)?, json).await
        }
        ExtensionsCommand::Call {
            name,
            method,
            params,
            idempotency_key,
        } => {
            let params = read_json_argument("--params", &params)?;
            call(entry(config, &name)?, &method, &params, idempotency_key).await
        }
    }
}

fn entry<'a>(config: &'a Config, name: &str) -> Result<&'a ExtensionConfig> {
    config
        .extensions
        .iter()
        .find(|entry| entry.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = config
                .extensions
                .iter()
                .map(|entry| entry.name.as_str())
                .collect();
            if known.is_empty() {
                anyhow!("no extension '{name}': the configuration has no [[extensions]] entries")
            } else {
                anyhow!("no extension '{name}' (configured: {})", known.join(", "))
            }
        })
}

/// Reports from workers, by extension name, newest first.
async fn reports(world: &dyn World) -> Result<Vec<WorkerReport>> {
    let mut query = DocumentQuery::new(STATUS_COLLECTION);
    query.limit = Some(1000);
    let mut reports: Vec<WorkerReport> = world
        .list_documents(&query)
        .await?
        .into_iter()
        .filter_map(|document| serde_json::from_value(document.body).ok())
        .collect();
    reports.sort_by_key(|report| std::cmp::Reverse(report.reported_at));
    Ok(reports)
}

fn is_stale(report: &WorkerReport) -> bool {
    Utc::now().signed_duration_since(report.reported_at)
        > chrono::Duration::from_std(STALE_AFTER).unwrap_or_default()
}

async fn list(url: &str, config: &Config, as_json: bool) -> Result<()> {
    let world = open(url).await?;
    let reports = reports(world.as_ref()).await?;
    if as_json {
        let entries: Vec<Value> = config
            .extensions
            .iter()
            .map(|entry| {
                let workers: Vec<Value> = reports
                    .iter()
                    .filter(|report| report.status.name == entry.name)
                    .map(|report| {
                        let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
                        value["stale"] = json!(is_stale(report));
                        value
                    })
                    .collect();
                json!({"name": entry.name, "protocol": entry.protocol, "enabled": entry.enabled,
                       "workers": workers})
            })
            .collect();
        println!("{}", json!({"extensions": entries}));
        return Ok(());
    }
    if config.extensions.is_empty() {
        println!("no extensions configured (add [[extensions]] entries to morpheus.toml)");
        return Ok(());
    }
    println!(
        "{:<20}  {:<8}  {:<12}  {:>8}  {:>8}  {:>8}  {:>8}  {:<24}  METHODS",
        "NAME", "PROTOCOL", "STATE", "RESTARTS", "CALLS", "FAILURES", "MEAN_MS", "WORKER"
    );
    for entry in &config.extensions {
        let mine: Vec<_> = reports
            .iter()
            .filter(|report| report.status.name == entry.name)
            .collect();
        if mine.is_empty() {
            let state = if entry.enabled {
                "no worker"
            } else {
                "disabled"
            };
            println!(
                "{:<20}  {:<8}  {:<12}  {:>8}  {:>8}  {:>8}  {:>8}  {:<24}  -",
                entry.name, entry.protocol, state, "-", "-", "-", "-", "-"
            );
        }
        for report in mine {
            let status = &report.status;
            let state = if is_stale(report) {
                "stale".to_owned()
            } else {
                serde_json::to_value(status.state)
                    .ok()
                    .and_then(|state| state.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            let methods = status
                .capabilities
                .as_ref()
                .map(|caps| {
                    caps.methods
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "-".to_owned());
            println!(
                "{:<20}  {:<8}  {:<12}  {:>8}  {:>8}  {:>8}  {:>8.2}  {:<24}  {}",
                entry.name,
                entry.protocol,
                state,
                status.restarts,
                status.calls,
                status.failures,
                status.mean_call_ms,
                report.worker_id,
                methods
            );
            if let (Some(error), Phase::Failed | Phase::Restarting) =
                (&status.last_error, status.state)
            {
                println!("    last error: {error}");
            }
        }
    }
    Ok(())
}

/// Starts the extension here (initialize + capabilities), prints what it declares and
/// what the workers report, then stops it.
async fn inspect(url: &str, entry: &ExtensionConfig, as_json: bool) -> Result<()> {
    let extension = Extension::load(entry.clone())
        .await
        .map_err(|error| anyhow!(error))?;
    let capabilities = extension.capabilities();
    extension.stop().await;
    let world = open(url).await?;
    let workers: Vec<WorkerReport> = reports(world.as_ref())
        .await?
        .into_iter()
        .filter(|report| report.status.name == entry.name)
        .collect();
    if as_json {
        println!(
            "{}",
            json!({"config": entry, "capabilities": capabilities, "workers": workers})
        );
        return Ok(());
    }
    println!("name:        {}", entry.name);
    println!("protocol:    {}", entry.protocol);
    println!("enabled:     {}", entry.enabled);
    println!("source:      {}", serde_json::to_string(&entry.source)?);
    println!(
        "permissions: {}",
        serde_json::to_string(&entry.permissions)?
    );
    println!("restart:     {}", serde_json::to_string(&entry.restart)?);
    if let Some(capabilities) = capabilities {
        println!(
            "declares:    {} — {} (concurrency {})",
            capabilities.name, capabilities.description, capabilities.concurrency
        );
        for method in &capabilities.methods {
            println!("  method {}: {}", method.name, method.description);
            if let Some(schema) = &method.params {
                println!("    params: {schema}");
            }
            if let Some(schema) = &method.result {
                println!("    result: {schema}");
            }
        }
    }
    for report in workers {
        println!(
            "worker {}: {:?}, {} restarts, {} calls, {} failures (reported {})",
            report.worker_id,
            report.status.state,
            report.status.restarts,
            report.status.calls,
            report.status.failures,
            crate::output::time(report.reported_at)
        );
    }
    Ok(())
}

/// A direct call, for trying an extension out: prints the result as JSON.
async fn call(
    entry: &ExtensionConfig,
    method: &str,
    params: &Value,
    key: Option<String>,
) -> Result<()> {
    if !entry.enabled {
        bail!(
            "extension '{}' is disabled in the configuration",
            entry.name
        );
    }
    let extension = Extension::load(entry.clone())
        .await
        .map_err(|error| anyhow!(error))?;
    let key = key.unwrap_or_else(|| format!("cli-{}/{method}", uuid::Uuid::now_v7()));
    let deadline = std::time::Instant::now() + entry.max_execution_time();
    let context = CallContext::new(
        &key,
        1,
        0,
        morpheus_executors::extensions::wall_clock(deadline),
    );
    let logs = LogSink::new(|level, message, _| eprintln!("[{level}] {message}"));
    let result = extension
        .call_method(method, params, &context, Some(deadline), &logs)
        .await;
    extension.stop().await;
    let result = result.map_err(|error| anyhow!(error.message().to_owned()))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
