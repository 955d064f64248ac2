//! `morpheus`: the command-line front of the engine. Wiring only: it opens the database,
//! registers the built-in workflows and executors, and calls into the engine.

mod bench;
mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    commands::init_tracing();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, always: operators grep for it and scripts show it verbatim.
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
