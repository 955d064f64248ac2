//! Bad input under load: 10,000 start requests, a random mix of valid inputs and many
//! kinds of malformed ones, submitted concurrently while a worker runs. Every malformed
//! one must be refused with an error naming the problem and leave no row behind; every
//! valid one must complete with all of its steps; nothing is half-written.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use morpheus_engine::{
    async_trait, Ctx, EngineError, RunFilter, RunId, RunStatus, StepStatus, Workflow,
    WorkflowResult, World,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use common::{registry, Harness};

const REQUESTS: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderInput {
    order_id: String,
    quantity: u32,
    items: Vec<String>,
}

/// Two steps per valid run, so a half-written run would show up as a missing step.
struct PlaceOrder;

#[async_trait]
impl Workflow for PlaceOrder {
    const NAME: &'static str = "order.place";
    type Input = OrderInput;
    type Output = u32;

    fn validate(&self, input: &OrderInput) -> Result<(), morpheus_engine::InvalidInput> {
        if input.order_id.is_empty() {
            return Err("order_id: must not be empty".into());
        }
        if input.quantity == 0 {
            return Err("quantity: must be at least 1".into());
        }
        if input.items.is_empty() {
            return Err("items: at least one item is required".into());
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: OrderInput) -> WorkflowResult<u32> {
        let reserved = ctx
            .step("reserve")
            .run(|_| async move { Ok(input.items.len() as u32) })
            .await?;
        let quantity = input.quantity;
        ctx.step("confirm")
            .run(|_| async move { Ok(reserved * quantity) })
            .await
    }
}

/// A malformed request and the words its error must contain.
fn malformed(rng: &mut StdRng, index: usize) -> (String, Value, &'static str) {
    let workflow = PlaceOrder::NAME.to_owned();
    match rng.gen_range(0..9) {
        0 => ("order.nope".into(), json!({}), "unknown workflow"),
        1 => (workflow, json!("not an object"), "invalid type"),
        2 => (workflow, json!({"quantity": 1, "items": ["a"]}), "order_id"),
        3 => (
            workflow,
            json!({"order_id": index.to_string(), "quantity": "many", "items": ["a"]}),
            "invalid type",
        ),
        4 => (
            workflow,
            json!({"order_id": index.to_string(), "quantity": -1, "items": ["a"]}),
            "invalid value",
        ),
        5 => (
            workflow,
            json!({"order_id": index.to_string(), "quantity": 1, "items": ["a"], "extra": true}),
            "unknown field",
        ),
        6 => (
            workflow,
            json!({"order_id": "", "quantity": 1, "items": ["a"]}),
            "order_id: must not be empty",
        ),
        7 => (
            workflow,
            json!({"order_id": index.to_string(), "quantity": 0, "items": ["a"]}),
            "quantity: must be at least 1",
        ),
        _ => (
            workflow,
            json!({"order_id": index.to_string(), "quantity": 2, "items": []}),
            "items: at least one item",
        ),
    }
}

async fn malformed_inputs_are_refused_and_valid_ones_complete(world: Arc<dyn World>) {
    let seed: u64 = std::env::var("MORPHEUS_BAD_INPUT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("seed={seed} (replay with MORPHEUS_BAD_INPUT_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut requests = Vec::with_capacity(REQUESTS);
    for index in 0..REQUESTS {
        if rng.gen_bool(0.5) {
            let items: Vec<String> = (0..rng.gen_range(1..4))
                .map(|i| format!("item{i}"))
                .collect();
            let quantity = rng.gen_range(1..10u32);
            let expected = items.len() as u32 * quantity;
            let input =
                json!({"order_id": index.to_string(), "quantity": quantity, "items": items});
            requests.push((PlaceOrder::NAME.to_owned(), input, Ok(expected)));
        } else {
            let (workflow, input, words) = malformed(&mut rng, index);
            requests.push((workflow, input, Err(words)));
        }
    }

    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(PlaceOrder);
        }),
    );
    let engine = harness.engine.clone();

    // 16 submitters at once, while the worker is already running.
    let chunks: Vec<Vec<_>> = requests
        .chunks(REQUESTS / 16)
        .map(|chunk| chunk.to_vec())
        .collect();
    let submitters = chunks.into_iter().map(|chunk| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for (workflow, input, expected) in chunk {
                let result = engine.start(&workflow, input.clone(), None).await;
                match (result, expected) {
                    (Ok(started), Ok(output)) => accepted.push((started.run_id, output)),
                    (Err(error), Err(words)) => {
                        let message = error.to_string();
                        assert!(
                            matches!(
                                error,
                                EngineError::InvalidInput { .. } | EngineError::UnknownWorkflow(_)
                            ),
                            "malformed {input} refused with the wrong error: {error:?}"
                        );
                        assert!(
                            message.contains(&workflow) && message.contains(words),
                            "error for {input} should name the workflow and contain '{words}': {message}"
                        );
                        assert!(!message.contains('\n'), "one-line error: {message:?}");
                    }
                    (Ok(started), Err(words)) => {
                        panic!("malformed input {input} (expected '{words}') was accepted as run {}", started.run_id)
                    }
                    (Err(error), Ok(_)) => panic!("valid input {input} was refused: {error}"),
                }
            }
            accepted
        })
    });
    let mut accepted: Vec<(RunId, u32)> = Vec::new();
    for submitter in submitters {
        accepted.extend(submitter.await.expect("submitter did not panic"));
    }
    let valid = requests.iter().filter(|r| r.2.is_ok()).count();
    assert_eq!(accepted.len(), valid);
    println!(
        "requests={REQUESTS} valid={valid} malformed={}",
        REQUESTS - valid
    );

    // Every valid run completes with the right output.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let completed = world
            .count_runs(&RunFilter {
                status: Some(RunStatus::Completed),
                ..Default::default()
            })
            .await
            .unwrap();
        if completed as usize == valid {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {completed} of {valid} valid runs completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    harness.stop().await;

    // Nothing but the valid runs exists: no row from a refused request.
    let total = world.count_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(total as usize, valid, "rows exist beyond the accepted runs");
    let ids: HashSet<RunId> = accepted.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), valid, "every accepted run has its own id");

    // Nothing is half-written: each run has both steps completed and its output.
    for (run_id, expected) in accepted.iter().step_by(7) {
        let run = world.get_run(*run_id).await.unwrap().expect("run exists");
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.output, Some(json!(expected)));
        let journal = world.load_journal(*run_id).await.unwrap();
        let keys: Vec<&str> = journal.iter().map(|s| s.step_key.as_str()).collect();
        assert_eq!(keys, ["reserve", "confirm"]);
        assert!(journal.iter().all(|s| s.status == StepStatus::Completed));
    }
}

for_each_backend!(malformed_inputs_are_refused_and_valid_ones_complete);
