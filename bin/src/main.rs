//! `morpheus`: the command-line front of the engine. Wiring only: it opens the database,
//! registers the built-in workflows and executors, and calls into the engine.

mod akash_deploy;
mod akash_project;
mod automations;
mod bench;
mod bench_api;
mod bench_deploy;
mod bench_extensions;
mod bench_fund;
mod bench_idle;
mod bench_timed;
mod bench_workers;
mod cli;
mod commands;
mod config;
mod demo;
mod deploy;
mod devnet;
mod extensions;
mod fund;
mod heartbeats;
mod keys_ephemeral;
mod output;
mod schedules;
mod secrets;
mod serve;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    commands::init_tracing();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, always: operators grep for it and scripts show it verbatim.
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// Help and version print as usual; a usage mistake is one line (plus a pointer to
/// `--help`) and exit code 2.
fn usage_error(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let missing_detail = rendered
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("error:"))
        .nth(1)
        .map(str::trim)
        .filter(|line| line.starts_with("--") || line.starts_with('<'));
    match missing_detail {
        Some(detail) => eprintln!("error: {first} {detail} (see --help)"),
        None => eprintln!("error: {first} (see --help)"),
    }
    ExitCode::from(2)
}

/// The error and its causes on one line, skipping causes whose text the line already
/// holds (database errors repeat their source in their own message).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(text.trim()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text.trim());
    }
    line.replace('\n', " ")
}
