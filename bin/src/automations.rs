//! `morpheus automations add | list | pause | resume | delete | logs`.

use anyhow::{anyhow, Result};
use morpheus_workflows::automations::model::AutomationConfig;
use morpheus_workflows::automations::store::Automations;
use serde_json::Value;

use crate::cli::AutomationsCommand;
use crate::commands::{open, read_json_argument};
use crate::config::Config;

/// Runs one `automations` command.
pub async fn run(url: &str, command: AutomationsCommand, config: &Config) -> Result<()> {
    if let AutomationsCommand::Add { definition } = &command {
        // Parsed and checked before the database is opened: bad input writes nothing.
        let value = read_json_argument("the configuration", definition)?;
        let parsed: AutomationConfig =
            serde_json::from_value(value).map_err(|error| anyhow!("the configuration: {error}"))?;
        parsed
            .validate(config.automations.min_interval_s)
            .map_err(|error| anyhow!("the configuration: {error}"))?;
        config
            .automations
            .passphrase
            .read()
            .map_err(|error| anyhow!("{error}"))?;
        let automations = store(url, config).await?;
        let registered = automations.register(parsed).await?;
        println!("{}", serde_json::to_string_pretty(&registered)?);
        eprintln!(
            "keep hmacKey now: it is not shown again. Fund the relayers with gas; `morpheus up` triggers the automation."
        );
        return Ok(());
    }
    let automations = store(url, config).await?;
    match command {
        AutomationsCommand::Add { .. } => unreachable!("handled above"),
        AutomationsCommand::List { json } => {
            let all = automations.list().await?;
            if json {
                let rows: Vec<Value> = all.iter().map(summary).collect();
                println!("{}", Value::Array(rows));
            } else if all.is_empty() {
                println!("no automations (register one with `morpheus automations add CONFIG`)");
            } else {
                println!(
                    "{:<21} {:<7} {:<14} {:<40} RELAYERS",
                    "ID", "STATUS", "TRIGGER", "DESTINATION"
                );
                for automation in &all {
                    let row = summary(automation);
                    println!(
                        "{:<21} {:<7} {:<14} {:<40} {}",
                        automation.id,
                        row["status"].as_str().unwrap_or(""),
                        row["trigger"].as_str().unwrap_or(""),
                        automation.config.destination.base_url,
                        automation
                            .relayers
                            .iter()
                            .map(|r| r.address.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                }
            }
        }
        AutomationsCommand::Pause { id } => {
            automations.set_paused(&id, true).await?;
            println!("automation {id} paused");
        }
        AutomationsCommand::Resume { id } => {
            automations.set_paused(&id, false).await?;
            println!("automation {id} resumed");
        }
        AutomationsCommand::Delete { id } => {
            automations.delete(&id).await?;
            println!(
                "automation {id} deleted (its trigger deregistered, its relayer keys destroyed)"
            );
        }
        AutomationsCommand::Logs {
            id,
            offset,
            limit,
            json,
        } => {
            automations.get(&id).await?;
            let records = automations.logs(&id, offset, limit).await?;
            if json {
                println!("{}", Value::Array(records));
            } else {
                for record in &records {
                    println!(
                        "{}  #{}  {}  {}",
                        record["createdAt"].as_str().unwrap_or(""),
                        record["executionCount"],
                        record["message"].as_str().unwrap_or(""),
                        record["outputTxHash"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

async fn store(url: &str, config: &Config) -> Result<Automations> {
    Ok(Automations::new(
        open(url).await?,
        config.automations.passphrase.clone(),
        config.automations.min_interval_s,
    ))
}

/// An automation as `list` shows it: never its keys.
pub fn summary(automation: &morpheus_workflows::automations::model::Automation) -> Value {
    automation.summary()
}
