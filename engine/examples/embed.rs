//! Embedding the engine in an application, on the embedded default (a SQLite file).
//!
//! ```text
//! cargo run -p morpheus-engine --example embed            # ./embed-example.db
//! cargo run -p morpheus-engine --example embed -- sqlite:///tmp/other.db
//! ```
//!
//! It registers one workflow, starts the runtime (worker + scheduler) in the
//! background, starts a run, waits for its output and prints the run's log lines.
//! Run it twice: the second start uses the same idempotency key, so it returns the
//! first run instead of starting another.

use std::time::Duration;

use morpheus_engine::{
    async_trait, Ctx, Engine, LogLevel, LogQuery, Runtime, StepLogLayer, Workflow, WorkflowResult,
};
use serde::{Deserialize, Serialize};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// What the application asks for.
#[derive(Debug, Serialize, Deserialize)]
struct Reminder {
    to: String,
    after_ms: u64,
}

/// A reminder: look the address up, wait (durably), then "send" it.
struct SendReminder;

#[async_trait]
impl Workflow for SendReminder {
    const NAME: &'static str = "send-reminder";
    type Input = Reminder;
    type Output = String;

    async fn run(&self, ctx: &Ctx, input: Reminder) -> WorkflowResult<String> {
        // Outside a step: runs again each time the run wakes up (after the sleep below
        // too), so it only logs; the printed logs show this line twice.
        ctx.log(LogLevel::Info, format!("reminder for {}", input.to));
        let address = ctx
            .step("look-up")
            .run(|_| {
                let to = input.to.clone();
                async move {
                    // `tracing` inside a step lands in the run's logs (StepLogLayer).
                    tracing::info!(%to, "looking the address up");
                    Ok(format!("{to}@example.org"))
                }
            })
            .await?;
        // A durable sleep: the worker releases the run; it is claimed again when due,
        // even by another process after a crash.
        ctx.sleep(Duration::from_millis(input.after_ms)).await?;
        let receipt = ctx
            .step("send")
            .run(|_| async move { Ok(format!("sent to {address}")) })
            .await?;
        Ok(receipt)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without a subscriber the engine prints nothing. `RUST_LOG=debug` shows more
    // (every SQL statement at debug).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(StepLogLayer)
        .init();

    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite://embed-example.db".to_owned());
    let engine = Engine::builder(morpheus_engine::connect(&url).await?)
        .workflow(SendReminder)
        .build();
    let runtime = Runtime::new(engine.clone()).spawn();

    let input = Reminder {
        to: "ada".into(),
        after_ms: 500,
    };
    let started = engine
        .start_typed::<SendReminder>(input, Some("reminder-ada".into()))
        .await?;
    println!(
        "run {} ({})",
        started.run_id,
        if started.created {
            "new"
        } else {
            "already started earlier"
        }
    );
    let receipt = engine
        .wait_for_output::<SendReminder>(started.run_id)
        .await?;
    println!("output: {receipt}");

    let lines = engine
        .world()
        .query_logs(&LogQuery {
            run_id: Some(started.run_id),
            ..LogQuery::default()
        })
        .await?;
    for line in lines {
        println!(
            "  {} {:5} {:8} {}",
            line.ts.format("%H:%M:%S%.3f"),
            line.level.as_str(),
            line.step_key.as_deref().unwrap_or("-"),
            line.message
        );
    }
    runtime.shutdown().await?;
    Ok(())
}
