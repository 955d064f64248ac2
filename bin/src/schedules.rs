//! `morpheus schedules …` and the `[[schedules]]` of the config file.

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};
use morpheus_engine::{CatchUp, Overlap, ScheduleSpec, Trigger, WorkflowRegistry};
use serde_json::{json, Value};

use crate::cli::{ScheduleAddArgs, SchedulesCommand};
use crate::commands::{default_registries, open, read_json_argument};
use crate::config::ScheduleConfig;
use crate::output;

/// Everything a schedule needs, as given on the command line or in the config file.
struct Definition<'a> {
    name: &'a str,
    workflow: &'a str,
    input: Value,
    cron: Option<&'a str>,
    every: Option<&'a str>,
    timezone: Option<&'a str>,
    overlap: &'a str,
    catch_up: &'a str,
    queue: &'a str,
    priority: i32,
    heartbeat_url: Option<&'a str>,
}

/// Validates a definition completely (workflow known, input accepted by it, trigger and
/// policies well-formed) and returns it with its first tick — before anything is stored.
fn build(
    definition: Definition<'_>,
    workflows: &WorkflowRegistry,
) -> Result<(ScheduleSpec, DateTime<Utc>)> {
    let name = definition.name;
    let trigger = match (definition.cron, definition.every) {
        (Some(expr), None) => Trigger::cron(expr, definition.timezone),
        (None, Some(every)) => humantime::parse_duration(every)
            .map_err(|_| {
                morpheus_engine::schedule::InvalidSchedule(format!(
                    "invalid interval '{every}' (use e.g. 30s, 5m, 1h)"
                ))
            })
            .and_then(Trigger::every),
        _ => Err(morpheus_engine::schedule::InvalidSchedule(
            "give exactly one of cron or every".to_owned(),
        )),
    }
    .map_err(|reason| anyhow!("schedule '{name}': {reason}"))?;
    let overlap: Overlap = definition
        .overlap
        .parse()
        .map_err(|reason| anyhow!("schedule '{name}': overlap: {reason}"))?;
    let catch_up: CatchUp = definition
        .catch_up
        .parse()
        .map_err(|reason| anyhow!("schedule '{name}': catch-up: {reason}"))?;
    if let Some(url) = definition.heartbeat_url {
        morpheus_engine::schedule::validate_heartbeat_url(url)
            .map_err(|reason| anyhow!("schedule '{name}': {reason}"))?;
    }
    workflows
        .prepare(definition.workflow, definition.input.clone(), None)
        .map_err(|error| anyhow!("schedule '{name}': {error}"))?;
    let spec = ScheduleSpec {
        name: name.to_owned(),
        workflow: definition.workflow.to_owned(),
        input: definition.input,
        trigger,
        overlap,
        catch_up,
        queue: definition.queue.to_owned(),
        priority: definition.priority,
        heartbeat_url: definition.heartbeat_url.map(str::to_owned),
    };
    morpheus_engine::schedule::validate_spec(&spec).map_err(|reason| anyhow!(reason))?;
    let first = spec
        .trigger
        .next_after(Utc::now())
        .ok_or_else(|| anyhow!("schedule '{name}': its trigger never fires"))?;
    Ok((spec, first))
}

/// The config file's schedules, each validated.
pub fn from_config(
    declared: &[ScheduleConfig],
    workflows: &WorkflowRegistry,
) -> Result<Vec<(ScheduleSpec, DateTime<Utc>)>> {
    let mut names = std::collections::HashSet::new();
    declared
        .iter()
        .map(|entry| {
            entry.check_trigger()?;
            if !names.insert(entry.name.as_str()) {
                bail!("config: schedule '{}' is declared twice", entry.name);
            }
            build(
                Definition {
                    name: &entry.name,
                    workflow: &entry.workflow,
                    input: entry.input_json()?,
                    cron: entry.cron.as_deref(),
                    every: entry.every.as_deref(),
                    timezone: entry.timezone.as_deref(),
                    overlap: entry.overlap.as_deref().unwrap_or("skip"),
                    catch_up: entry.catch_up.as_deref().unwrap_or("skip_missed"),
                    queue: entry.queue.as_deref().unwrap_or("default"),
                    priority: entry.priority.unwrap_or(0),
                    heartbeat_url: entry.heartbeat_url.as_deref(),
                },
                workflows,
            )
        })
        .collect()
}

/// Runs a `schedules` subcommand.
pub async fn run(url: &str, command: SchedulesCommand) -> Result<()> {
    match command {
        SchedulesCommand::Add(args) => add(url, *args).await,
        SchedulesCommand::List { json } => {
            let schedules = open(url).await?.list_schedules().await?;
            if json {
                println!("{}", serde_json::to_string(&schedules)?);
                return Ok(());
            }
            println!(
                "{:<24}  {:<20}  {:<28}  {:<7}  {:<24}  {:<36}  HEARTBEAT",
                "NAME", "WORKFLOW", "TRIGGER", "STATE", "NEXT TICK", "LAST RUN"
            );
            for schedule in schedules {
                println!(
                    "{:<24}  {:<20}  {:<28}  {:<7}  {:<24}  {:<36}  {}",
                    schedule.spec.name,
                    schedule.spec.workflow,
                    schedule.spec.trigger.to_string(),
                    if schedule.paused { "paused" } else { "active" },
                    output::time(schedule.next_fire_at),
                    schedule
                        .last_run_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "-".into()),
                    schedule.spec.heartbeat_url.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        SchedulesCommand::Show { name, json } => show(url, &name, json).await,
        SchedulesCommand::Pause { name } => {
            open(url)
                .await?
                .set_schedule_paused(&name, true, Utc::now())
                .await?;
            println!("paused schedule '{name}'");
            Ok(())
        }
        SchedulesCommand::Resume { name } => {
            let world = open(url).await?;
            let schedule = world
                .get_schedule(&name)
                .await?
                .ok_or_else(|| anyhow!("no schedule named '{name}'"))?;
            let next = schedule
                .spec
                .trigger
                .next_after(Utc::now())
                .ok_or_else(|| anyhow!("schedule '{name}': its trigger never fires"))?;
            world.set_schedule_paused(&name, false, next).await?;
            println!(
                "resumed schedule '{name}'; next tick {}",
                output::time(next)
            );
            Ok(())
        }
        SchedulesCommand::Delete { name } => {
            open(url).await?.delete_schedule(&name).await?;
            println!("deleted schedule '{name}'");
            Ok(())
        }
        SchedulesCommand::Runs { name, limit, json } => {
            let world = open(url).await?;
            if world.get_schedule(&name).await?.is_none() {
                bail!("no schedule named '{name}'");
            }
            let runs = world.schedule_runs(&name, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&runs)?);
            } else {
                print!("{}", output::run_table(&runs));
            }
            Ok(())
        }
    }
}

/// How many of a schedule's latest heartbeat pings `schedules show` lists.
const SHOWN_HEARTBEATS: u32 = 20;

async fn show(url: &str, name: &str, json: bool) -> Result<()> {
    let world = open(url).await?;
    let schedule = world
        .get_schedule(name)
        .await?
        .ok_or_else(|| anyhow!("no schedule named '{name}'"))?;
    let heartbeats = world.schedule_heartbeats(name, SHOWN_HEARTBEATS).await?;
    if json {
        println!(
            "{}",
            json!({"schedule": schedule, "heartbeats": heartbeats})
        );
        return Ok(());
    }
    let spec = &schedule.spec;
    let optional_time =
        |time: Option<DateTime<Utc>>| time.map(output::time).unwrap_or_else(|| "-".into());
    println!("name:       {}", spec.name);
    println!("workflow:   {}", spec.workflow);
    println!("trigger:    {}", spec.trigger);
    println!(
        "policies:   overlap {}, catch-up {}",
        spec.overlap, spec.catch_up
    );
    println!("queue:      {} (priority {})", spec.queue, spec.priority);
    println!(
        "state:      {}",
        if schedule.paused { "paused" } else { "active" }
    );
    println!("next tick:  {}", output::time(schedule.next_fire_at));
    println!("last tick:  {}", optional_time(schedule.last_fire_at));
    println!(
        "last run:   {}",
        schedule
            .last_run_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "heartbeat:  {}",
        spec.heartbeat_url.as_deref().unwrap_or("-")
    );
    if !heartbeats.is_empty() {
        println!();
        println!(
            "{:<36}  {:<9}  {:<9}  {:>8}  {:<24}  LAST ERROR",
            "RUN", "OUTCOME", "PING", "ATTEMPTS", "SENT"
        );
        for ping in &heartbeats {
            println!(
                "{:<36}  {:<9}  {:<9}  {:>8}  {:<24}  {}",
                ping.run_id.to_string(),
                ping.outcome.as_str(),
                ping.state.as_str(),
                ping.attempts,
                optional_time(ping.finished_at),
                ping.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

async fn add(url: &str, args: ScheduleAddArgs) -> Result<()> {
    let (workflows, _) = default_registries();
    let input = read_json_argument("--input", &args.input)?;
    // Everything is checked before the database is opened: bad input stores nothing.
    let (spec, first) = build(
        Definition {
            name: &args.name,
            workflow: &args.workflow,
            input,
            cron: args.cron.as_deref(),
            every: args.every.as_deref(),
            timezone: args.timezone.as_deref(),
            overlap: &args.overlap,
            catch_up: &args.catch_up,
            queue: &args.queue,
            priority: args.priority,
            heartbeat_url: args.heartbeat_url.as_deref(),
        },
        &workflows,
    )?;
    open(url).await?.add_schedule(&spec, first).await?;
    println!(
        "{}",
        json!({"schedule": spec.name, "trigger": spec.trigger.to_string(), "next_tick": first})
    );
    Ok(())
}
