//! `morpheus bench idle`: what an idle `morpheus up` costs its Postgres database, and
//! how fast it still wakes up. In a fresh database it starts what `up` runs (a worker, a
//! scheduler and the heartbeat pinger, with `up`'s defaults), lets them settle, measures
//! one wake-up (a run started from another connection, until it completes), then counts
//! the transactions the idle process commits (`pg_stat_database.xact_commit`, read over
//! a connection to another database) for `--duration`. Autocommitted statements count
//! as transactions, as they do for the server.
//!
//! The server commits in every database by itself too: the autovacuum launcher sends a
//! worker into each one every `autovacuum_naptime`, and that worker's catalog reads are
//! transactions of the database even with autovacuum off for all its tables. So a
//! second, control database with the same schema and nobody connected is counted over
//! the same window, and the process's cost is the difference.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use morpheus_engine::store::{
    create_postgres_database, drop_postgres_database, postgres_commits, postgres_disable_autovacuum,
};
use morpheus_engine::{Engine, RunStatus, Runtime, WorkerConfig, WorkflowRegistry};
use serde_json::json;

use crate::bench::BenchNoop;
use crate::bench_api::database_url;
use crate::cli::BenchIdleArgs;
use crate::commands::{open, redact};

/// The database the benchmark owns on the server.
const DATABASE: &str = "morpheus_bench_idle";

/// The control database: the same schema, nobody connected during the window.
const CONTROL: &str = "morpheus_bench_idle_control";

/// Runs the benchmark against the Postgres server `url` points at.
pub async fn run(url: &str, args: BenchIdleArgs) -> Result<()> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("bench idle measures a Postgres database: give --database-url postgres://… (SQLite has no other processes to pay for)");
    }
    let bench_url = database_url(url, DATABASE)?;
    for name in [DATABASE, CONTROL] {
        create_postgres_database(url, name)
            .await
            .with_context(|| format!("cannot create the database {name} on {}", redact(url)))?;
    }
    let measured = measure(url, &bench_url, &args).await;
    let mut dropped = Ok(());
    for name in [DATABASE, CONTROL] {
        let result = drop_postgres_database(url, name)
            .await
            .with_context(|| format!("cannot drop the benchmark database {name}"));
        dropped = dropped.and(result);
    }
    let report = measured?;
    dropped?;
    println!("{report}");
    Ok(())
}

async fn measure(server: &str, bench_url: &str, args: &BenchIdleArgs) -> Result<serde_json::Value> {
    // The control gets the same tables (opening migrates it) and is then left alone.
    let control_url = database_url(server, CONTROL)?;
    drop(open(&control_url).await?);
    postgres_disable_autovacuum(&control_url).await?;
    let world = open(bench_url).await?;
    // The server's autovacuum commits in this database too: not the process's cost.
    postgres_disable_autovacuum(bench_url).await?;
    let mut workflows = WorkflowRegistry::new();
    workflows.register(BenchNoop);
    let engine = Engine::builder(world.clone())
        .workflows(workflows.clone())
        .build();
    let config = WorkerConfig::for_backend(world.backend());
    let poll = config.poll_interval;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let pinger = tokio::spawn(crate::heartbeats::run(
        world.clone(),
        crate::heartbeats::fallback_poll(world.backend(), poll),
        wait_stop(stopped.clone()),
    ));
    let runtime = tokio::spawn(
        Runtime::new(engine)
            .worker_config(config)
            .run(wait_stop(stopped.clone())),
    );
    eprintln!("[bench idle] worker, scheduler and heartbeat pinger up (poll {poll:?}); settling");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One wake-up, from another connection (as another process would start a run).
    let other = open(bench_url).await?;
    let starter = Engine::builder(other.clone()).workflows(workflows).build();
    let started_at = Instant::now();
    let started = starter
        .start(
            <BenchNoop as morpheus_engine::Workflow>::NAME,
            json!({"steps": 1}),
            None,
        )
        .await?;
    loop {
        let run = other
            .get_run(started.run_id)
            .await?
            .context("the wake-up run")?;
        if run.status == RunStatus::Completed {
            break;
        }
        if started_at.elapsed() > Duration::from_secs(30) {
            bail!("the wake-up run did not complete within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wakeup_ms = started_at.elapsed().as_secs_f64() * 1000.0;
    drop(starter);
    drop(other);
    // Sessions publish their counts within 10 s of going idle: the start-up and the
    // wake-up must be in the first reading, not in the window.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = postgres_commits(server, DATABASE).await?;
    let control_before = postgres_commits(server, CONTROL).await?;
    eprintln!(
        "[bench idle] woke up in {wakeup_ms:.1} ms; counting idle commits for {}",
        humantime::format_duration(args.duration)
    );
    tokio::time::sleep(args.duration).await;
    // Read while still running: both readings lag what the sessions did by the same
    // publication delay, so the window counted is `duration` long (shutting down, which
    // releases leases and unlistens, is not idle cost).
    let after = postgres_commits(server, DATABASE).await?;
    let control_after = postgres_commits(server, CONTROL).await?;
    let _ = stop.send(true);
    runtime.await??;
    pinger.await??;
    drop(world);
    let measured = after - before;
    let server_commits = control_after - control_before;
    let commits = (measured - server_commits).max(0);
    let minutes = args.duration.as_secs_f64() / 60.0;
    Ok(json!({
        "bench": "idle",
        "backend": "postgres",
        "duration_s": args.duration.as_secs_f64(),
        "poll_interval_s": poll.as_secs_f64(),
        "measured_commits": measured,
        "server_commits_in_control": server_commits,
        "idle_commits": commits,
        "commits_per_minute": commits as f64 / minutes,
        "target_commits_per_minute": 10,
        "wakeup_ms": wakeup_ms,
    }))
}
