//! Engine-level tests: real workflows executed by a real worker, on both backends.
//! Each test registers its own small workflows (state they share with the test is
//! passed in through the workflow struct, never a `static`, because the SQLite and
//! Postgres instances of a test run at the same time in one process).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{registry, wait_for, wait_for_status, wait_for_terminal, Harness};
use morpheus_engine::{
    async_trait, Ctx, LogLevel, LogQuery, RetryPolicy, RunFilter, RunStatus, StepError, StepStatus,
    Workflow, WorkflowResult, World,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

/// Counts how often named things happened.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<String, usize>>>);

impl Counts {
    fn bump(&self, name: &str) {
        *self.0.lock().unwrap().entry(name.to_owned()).or_default() += 1;
    }

    fn get(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

async fn logs_of(world: &Arc<dyn World>, query: LogQuery) -> Vec<morpheus_engine::LogRecord> {
    world.query_logs(&query).await.expect("query_logs")
}

// --- 1 ----------------------------------------------------------------------------------

struct ThreeSteps {
    counts: Counts,
}

#[async_trait]
impl Workflow for ThreeSteps {
    const NAME: &'static str = "three_steps";
    type Input = u64;
    type Output = u64;

    async fn run(&self, ctx: &Ctx, input: u64) -> WorkflowResult<u64> {
        self.counts.bump("body");
        let mut total = input;
        for name in ["a", "b", "c"] {
            let counts = self.counts.clone();
            total += ctx
                .step(name)
                .run(move |_| async move {
                    counts.bump(name);
                    Ok::<u64, StepError>(1)
                })
                .await?;
        }
        // Parking forces a replay of the steps above.
        ctx.sleep(Duration::from_millis(50)).await?;
        Ok(total)
    }
}

async fn steps_are_memoized_and_run_once(world: Arc<dyn World>) {
    let counts = Counts::default();
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(ThreeSteps {
                counts: counts.clone(),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<ThreeSteps>(10, None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!(13)));
    for name in ["a", "b", "c"] {
        assert_eq!(counts.get(name), 1, "step {name} ran more than once");
    }
    assert!(
        counts.get("body") >= 2,
        "the sleep should have forced a replay"
    );

    let journal = world.load_journal(run_id).await.unwrap();
    let steps: Vec<(&str, i64, StepStatus, i32)> = journal
        .iter()
        .filter(|s| !s.step_key.starts_with('$'))
        .map(|s| (s.step_key.as_str(), s.seq, s.status, s.attempts))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("a", 0, StepStatus::Completed, 1),
            ("b", 1, StepStatus::Completed, 1),
            ("c", 2, StepStatus::Completed, 1),
        ]
    );
    assert!(journal
        .iter()
        .all(|s| s.output.is_some() || s.step_key.starts_with('$')));
    harness.stop().await;
}

// --- 2 ----------------------------------------------------------------------------------

struct Flaky {
    attempts_seen: Arc<Mutex<Vec<u32>>>,
}

#[async_trait]
impl Workflow for Flaky {
    const NAME: &'static str = "flaky";
    type Input = ();
    type Output = u32;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<u32> {
        let seen = self.attempts_seen.clone();
        ctx.step("flaky")
            .retry(RetryPolicy {
                max_attempts: 3,
                initial_delay_ms: 50,
                multiplier: 1.0,
                max_delay_ms: 1_000,
                jitter: 0.0,
            })
            .run(move |step| async move {
                seen.lock().unwrap().push(step.attempt);
                if step.attempt < 3 {
                    Err(StepError::retryable(format!("transient #{}", step.attempt)))
                } else {
                    Ok(step.attempt)
                }
            })
            .await
    }
}

async fn retry_then_success_with_persisted_next_attempt(world: Arc<dyn World>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Flaky {
                attempts_seen: seen.clone(),
            });
        }),
    );
    let started = Instant::now();
    let run_id = harness
        .engine
        .start_typed::<Flaky>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!(3)));
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "two 50 ms retry delays were honoured"
    );
    let journal = world.load_journal(run_id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].step_key, "flaky");
    assert_eq!(journal[0].status, StepStatus::Completed);
    assert_eq!(journal[0].attempts, 3);
    assert!(journal[0].next_attempt_at.is_none());
    assert!(journal[0].error.is_none());

    let warnings: Vec<String> = logs_of(
        &world,
        LogQuery {
            run_id: Some(run_id),
            step_key: Some("flaky".into()),
            min_level: Some(LogLevel::Warn),
            ..LogQuery::default()
        },
    )
    .await
    .into_iter()
    .map(|line| line.message)
    .filter(|message| message.contains("failed, retrying"))
    .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("attempt 1 failed"), "{warnings:?}");
    assert!(warnings[0].contains("transient #1"), "{warnings:?}");
    harness.stop().await;
}

// --- 3 ----------------------------------------------------------------------------------

struct Doomed {
    counts: Counts,
}

#[async_trait]
impl Workflow for Doomed {
    const NAME: &'static str = "doomed";
    type Input = ();
    type Output = ();

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<()> {
        let counts = self.counts.clone();
        ctx.step("explode")
            .run(move |_| async move {
                counts.bump("explode");
                Err::<(), _>(StepError::permanent("the bucket does not exist"))
            })
            .await
    }
}

async fn permanent_error_fails_run_without_retry(world: Arc<dyn World>) {
    let counts = Counts::default();
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Doomed {
                counts: counts.clone(),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Doomed>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(error.contains("explode"), "{error}");
    assert!(error.contains("the bucket does not exist"), "{error}");
    assert_eq!(counts.get("explode"), 1);
    let journal = world.load_journal(run_id).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].status, StepStatus::Failed);
    assert_eq!(journal[0].attempts, 1);
    harness.stop().await;
}

// --- 4 ----------------------------------------------------------------------------------

struct Napper;

#[async_trait]
impl Workflow for Napper {
    const NAME: &'static str = "napper";
    type Input = ();
    type Output = String;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<String> {
        ctx.step("before")
            .run(|_| async { Ok::<_, StepError>(()) })
            .await?;
        ctx.log(LogLevel::Info, "going to sleep");
        ctx.sleep(Duration::from_millis(300)).await?;
        ctx.log(LogLevel::Info, "awake");
        ctx.step("after")
            .run(|_| async { Ok::<_, StepError>("rested".to_owned()) })
            .await
    }
}

async fn durable_sleep_parks_and_resumes(world: Arc<dyn World>) {
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Napper);
        }),
    );
    let started = Instant::now();
    let run_id = harness
        .engine
        .start_typed::<Napper>((), None)
        .await
        .unwrap()
        .run_id;
    let sleeping = wait_for_status(&world, run_id, RunStatus::Sleeping).await;
    assert!(
        sleeping.lease_owner.is_none(),
        "a sleeping run holds no lease"
    );
    assert!(sleeping.wake_at.is_some());
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!("rested")));
    assert!(started.elapsed() >= Duration::from_millis(300));

    let journal = world.load_journal(run_id).await.unwrap();
    let keys: Vec<&str> = journal.iter().map(|s| s.step_key.as_str()).collect();
    assert_eq!(keys, vec!["before", "$sleep", "after"]);
    let until: DateTime<Utc> =
        serde_json::from_value(journal[1].output.clone().unwrap()["until"].clone()).unwrap();
    assert!(
        journal[2].started_at >= until,
        "the step after the sleep started at {} before the wake time {until}",
        journal[2].started_at
    );
    // The body ran twice (before and after the park); each line was written once.
    let lines: Vec<String> = logs_of(
        &world,
        LogQuery {
            run_id: Some(run_id),
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .filter(|line| line.step_key.is_none())
    .map(|line| line.message)
    .collect();
    assert_eq!(lines, vec!["going to sleep", "awake"], "{lines:?}");
    harness.stop().await;
}

// --- 5 ----------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct WaitInput {
    key: String,
    timeout_ms: u64,
}

struct Waiter;

#[async_trait]
impl Workflow for Waiter {
    const NAME: &'static str = "waiter";
    type Input = WaitInput;
    type Output = Option<Value>;

    async fn run(&self, ctx: &Ctx, input: WaitInput) -> WorkflowResult<Option<Value>> {
        ctx.wait_for_event(&input.key, Some(Duration::from_millis(input.timeout_ms)))
            .await
    }
}

async fn wait_for_event_and_send_event(world: Arc<dyn World>) {
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Waiter);
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Waiter>(
            WaitInput {
                key: "k".into(),
                timeout_ms: 10_000,
            },
            None,
        )
        .await
        .unwrap()
        .run_id;
    let waiting = wait_for_status(&world, run_id, RunStatus::Waiting).await;
    assert_eq!(waiting.wait_event_key.as_deref(), Some("k"));
    assert!(world.send_event("k", json!({"x": 1})).await.unwrap());
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!({"x": 1})));

    // Nobody sends: the wait times out and the workflow sees no payload.
    let started = Instant::now();
    let timed_out = harness
        .engine
        .start_typed::<Waiter>(
            WaitInput {
                key: "never-sent".into(),
                timeout_ms: 200,
            },
            None,
        )
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, timed_out).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output.unwrap_or(Value::Null), Value::Null);
    assert!(started.elapsed() >= Duration::from_millis(200));
    harness.stop().await;
}

// --- 6 ----------------------------------------------------------------------------------

struct Double;

#[async_trait]
impl Workflow for Double {
    const NAME: &'static str = "double";
    type Input = u64;
    type Output = u64;

    async fn run(&self, ctx: &Ctx, n: u64) -> WorkflowResult<u64> {
        ctx.step("double")
            .run(move |_| async move { Ok::<_, StepError>(n * 2) })
            .await
    }
}

struct Parent;

#[async_trait]
impl Workflow for Parent {
    const NAME: &'static str = "parent";
    type Input = u64;
    type Output = Value;

    async fn run(&self, ctx: &Ctx, n: u64) -> WorkflowResult<Value> {
        let child = ctx.start_child::<Double>(n).await?;
        let doubled: u64 = ctx.join_child(&child).await?;
        Ok(json!({ "parent": n, "child": doubled, "child_id": child.run_id }))
    }
}

async fn child_workflow_start_and_await(world: Arc<dyn World>) {
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Double).register(Parent);
        }),
    );
    let parent = harness
        .engine
        .start_typed::<Parent>(21, None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, parent).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let output = run.output.unwrap();
    assert_eq!(output["parent"], json!(21));
    assert_eq!(output["child"], json!(42));

    let children = world
        .list_runs(&RunFilter {
            workflow: Some("double".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(children.len(), 1, "the child was started exactly once");
    assert_eq!(children[0].parent_run_id, Some(parent));
    assert_eq!(children[0].status, RunStatus::Completed);
    assert_eq!(output["child_id"], json!(children[0].id));
    harness.stop().await;
}

// --- 7 ----------------------------------------------------------------------------------

/// What one execution of the `Clock` body saw.
type Observed = (DateTime<Utc>, Uuid);

struct Clock {
    seen: Arc<Mutex<Vec<Observed>>>,
}

#[async_trait]
impl Workflow for Clock {
    const NAME: &'static str = "clock";
    type Input = ();
    type Output = (DateTime<Utc>, Uuid);

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<(DateTime<Utc>, Uuid)> {
        let now = ctx.now().await?;
        let id = ctx.uuid().await?;
        self.seen.lock().unwrap().push((now, id));
        ctx.sleep(Duration::from_millis(100)).await?;
        Ok((now, id))
    }
}

async fn now_and_uuid_are_memoized(world: Arc<dyn World>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Clock { seen: seen.clone() });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Clock>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 2,
        "the sleep should have forced a replay: {seen:?}"
    );
    assert!(
        seen.iter().all(|values| *values == seen[0]),
        "replays saw different values: {seen:?}"
    );
    let output: (DateTime<Utc>, Uuid) = serde_json::from_value(run.output.unwrap()).unwrap();
    assert_eq!(output, seen[0]);
    harness.stop().await;
}

// --- 8 ----------------------------------------------------------------------------------

struct Panicky;

#[async_trait]
impl Workflow for Panicky {
    const NAME: &'static str = "panicky";
    type Input = ();
    type Output = ();

    async fn run(&self, _ctx: &Ctx, _: ()) -> WorkflowResult<()> {
        panic!("boom");
    }
}

struct Echo;

#[async_trait]
impl Workflow for Echo {
    const NAME: &'static str = "echo";
    type Input = Value;
    type Output = Value;

    async fn run(&self, ctx: &Ctx, input: Value) -> WorkflowResult<Value> {
        ctx.step("echo")
            .run(move |_| async move { Ok::<_, StepError>(input) })
            .await
    }
}

async fn panic_fails_run_and_worker_keeps_serving(world: Arc<dyn World>) {
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Panicky).register(Echo);
        }),
    );
    let panicked = harness
        .engine
        .start_typed::<Panicky>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, panicked).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(run.error.as_deref().unwrap().contains("boom"), "{run:?}");
    let errors = logs_of(
        &world,
        LogQuery {
            run_id: Some(panicked),
            min_level: Some(LogLevel::Error),
            ..LogQuery::default()
        },
    )
    .await;
    assert!(
        errors.iter().any(|line| line.message.contains("boom")),
        "{errors:?}"
    );

    let echoed = harness
        .engine
        .start_typed::<Echo>(json!({"still": "alive"}), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, echoed).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!({"still": "alive"})));
    harness.stop().await;
}

// --- 9 ----------------------------------------------------------------------------------

struct Drifting {
    replayed: Arc<AtomicBool>,
}

#[async_trait]
impl Workflow for Drifting {
    const NAME: &'static str = "drifting";
    type Input = ();
    type Output = ();

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<()> {
        // The first execution asks for "a", every replay for "b": changed code.
        let name = if self.replayed.swap(true, Ordering::SeqCst) {
            "b"
        } else {
            "a"
        };
        ctx.step(name)
            .run(|_| async { Ok::<_, StepError>(1) })
            .await?;
        ctx.sleep(Duration::from_millis(100)).await?;
        Ok(())
    }
}

async fn non_determinism_is_reported(world: Arc<dyn World>) {
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Drifting {
                replayed: Arc::new(AtomicBool::new(false)),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Drifting>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap();
    assert!(error.contains("non-determinism"), "{error}");
    assert!(error.contains("'a'") && error.contains("'b'"), "{error}");
    let journal = world.load_journal(run_id).await.unwrap();
    assert!(
        journal.iter().all(|s| s.step_key != "b"),
        "the drifted step must not be recorded: {journal:?}"
    );
    harness.stop().await;
}

// --- 10 ---------------------------------------------------------------------------------

struct FanOut {
    bodies: Arc<AtomicUsize>,
}

#[async_trait]
impl Workflow for FanOut {
    const NAME: &'static str = "fan_out";
    type Input = ();
    type Output = Vec<u64>;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<Vec<u64>> {
        let steps = (0..5u64).map(|i| {
            let bodies = self.bodies.clone();
            // Later items finish first, so completion order differs from request order.
            ctx.step(format!("item/{i}")).run(move |_| async move {
                tokio::time::sleep(Duration::from_millis((5 - i) * 20)).await;
                bodies.fetch_add(1, Ordering::SeqCst);
                Ok::<_, StepError>(i)
            })
        });
        let results = futures::future::join_all(steps).await;
        let values = results.into_iter().collect::<WorkflowResult<Vec<u64>>>()?;
        ctx.sleep(Duration::from_millis(50)).await?;
        Ok(values)
    }
}

async fn concurrent_steps_have_deterministic_keys(world: Arc<dyn World>) {
    let bodies = Arc::new(AtomicUsize::new(0));
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(FanOut {
                bodies: bodies.clone(),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<FanOut>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!([0, 1, 2, 3, 4])));
    assert_eq!(bodies.load(Ordering::SeqCst), 5, "each item ran once");
    let journal = world.load_journal(run_id).await.unwrap();
    let keys: Vec<(String, i64)> = journal
        .iter()
        .map(|s| (s.step_key.clone(), s.seq))
        .collect();
    let mut expected: Vec<(String, i64)> = (0..5).map(|i| (format!("item/{i}"), i)).collect();
    expected.push(("$sleep".into(), 5));
    assert_eq!(keys, expected);
    assert!(journal
        .iter()
        .take(5)
        .enumerate()
        .all(|(i, s)| s.output == Some(json!(i))));
    harness.stop().await;
}

// --- 11 ---------------------------------------------------------------------------------

struct Slow {
    started: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

#[async_trait]
impl Workflow for Slow {
    const NAME: &'static str = "slow";
    type Input = ();
    type Output = u32;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<u32> {
        let started = self.started.clone();
        let finished = self.finished.clone();
        ctx.step("slow")
            .run(move |_| async move {
                started.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                finished.store(true, Ordering::SeqCst);
                Ok::<_, StepError>(1)
            })
            .await
    }
}

async fn cancel_running_run_stops_it(world: Arc<dyn World>) {
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Slow {
                started: started.clone(),
                finished: finished.clone(),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Slow>((), None)
        .await
        .unwrap()
        .run_id;
    wait_for(&world, run_id, "running with its step started", |run| {
        run.status == RunStatus::Running && started.load(Ordering::SeqCst)
    })
    .await;
    world.cancel_run(run_id).await.unwrap();
    assert_eq!(
        world.get_run(run_id).await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );

    // Longer than the step body would take: the worker must have dropped it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let run = world.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    assert!(run.lease_owner.is_none());
    assert!(
        !finished.load(Ordering::SeqCst),
        "the worker kept running a cancelled run's step"
    );
    let journal = world.load_journal(run_id).await.unwrap();
    assert!(
        journal.iter().all(|s| s.status != StepStatus::Completed),
        "a cancelled run's step completion was recorded: {journal:?}"
    );
    harness.stop().await;
}

// --- 12 ---------------------------------------------------------------------------------

/// Warnings "lease lost; abandoning run" the worker emitted, as the `run` field.
static ABANDON_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records the worker's "abandoning run" warnings (the run id of each).
struct AbandonWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AbandonWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            run: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "run" => self.run = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "lease lost; abandoning run" {
            ABANDON_WARNINGS.lock().unwrap().push(fields.run);
        }
    }
}

fn abandon_warnings_for(run_id: morpheus_engine::RunId) -> usize {
    let run = run_id.to_string();
    ABANDON_WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|seen| **seen == run)
        .count()
}

/// One global subscriber per test binary: the engine's step-log layer plus a layer
/// that watches the worker's own warnings.
fn install_subscriber() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(morpheus_engine::StepLogLayer)
            .with(AbandonWarnings);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
    });
}

struct Traced;

#[async_trait]
impl Workflow for Traced {
    const NAME: &'static str = "traced";
    type Input = ();
    type Output = ();

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<()> {
        ctx.step("check")
            .run(|_| async {
                tracing::info!(disk = "sda", "checking disk");
                Ok::<_, StepError>(())
            })
            .await
    }
}

async fn tracing_events_inside_a_step_land_in_run_logs(world: Arc<dyn World>) {
    install_subscriber();
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Traced);
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Traced>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let lines = logs_of(
        &world,
        LogQuery {
            run_id: Some(run_id),
            step_key: Some("check".into()),
            ..LogQuery::default()
        },
    )
    .await;
    let line = lines
        .iter()
        .find(|line| line.message == "checking disk")
        .unwrap_or_else(|| panic!("no 'checking disk' line in {lines:?}"));
    assert_eq!(line.level, LogLevel::Info);
    assert_eq!(line.attempt, Some(1));
    assert_eq!(line.step_key.as_deref(), Some("check"));
    assert_eq!(line.fields.as_ref().unwrap()["disk"], json!("sda"));
    harness.stop().await;
}

// --- 13 ---------------------------------------------------------------------------------

struct Recovering {
    counts: Counts,
    healed: Arc<AtomicBool>,
}

#[async_trait]
impl Workflow for Recovering {
    const NAME: &'static str = "recovering";
    type Input = ();
    type Output = String;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<String> {
        let counts = self.counts.clone();
        let a: String = ctx
            .step("a")
            .run(move |_| async move {
                counts.bump("a");
                Ok::<_, StepError>("a-done".to_owned())
            })
            .await?;
        let counts = self.counts.clone();
        let healed = self.healed.clone();
        let b: String = ctx
            .step("b")
            .run(move |_| async move {
                counts.bump("b");
                if healed.load(Ordering::SeqCst) {
                    Ok("b-done".to_owned())
                } else {
                    Err(StepError::permanent("b is broken"))
                }
            })
            .await?;
        Ok(format!("{a}+{b}"))
    }
}

async fn resumed_run_reruns_only_what_failed(world: Arc<dyn World>) {
    let counts = Counts::default();
    let healed = Arc::new(AtomicBool::new(false));
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Recovering {
                counts: counts.clone(),
                healed: healed.clone(),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Recovering>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");

    healed.store(true, Ordering::SeqCst);
    world.resume_run(run_id).await.unwrap();
    harness.engine.wake_signal().notify_one();
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!("a-done+b-done")));
    assert_eq!(counts.get("a"), 1, "the completed step was kept");
    assert_eq!(counts.get("b"), 2, "the failed step ran again");
    harness.stop().await;
}

/// After a cancel the worker drops the run once. Its bookkeeping entry must go with it:
/// otherwise every later heartbeat finds the run "lost" again and warns again.
async fn cancelled_run_is_abandoned_once_not_every_heartbeat(world: Arc<dyn World>) {
    install_subscriber();
    let started = Arc::new(AtomicBool::new(false));
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(Slow {
                started: started.clone(),
                finished: Arc::new(AtomicBool::new(false)),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<Slow>((), None)
        .await
        .unwrap()
        .run_id;
    wait_for(&world, run_id, "running with its step started", |run| {
        run.status == RunStatus::Running && started.load(Ordering::SeqCst)
    })
    .await;
    world.cancel_run(run_id).await.unwrap();
    // Six heartbeats (200 ms apart).
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let warnings = abandon_warnings_for(run_id);
    assert_eq!(
        warnings, 1,
        "the worker warned 'lease lost; abandoning run' {warnings} times for one cancelled run: \
         its in-flight entry is never removed when the heartbeat aborts the task"
    );
    harness.stop().await;
}

for_each_backend!(
    steps_are_memoized_and_run_once,
    retry_then_success_with_persisted_next_attempt,
    permanent_error_fails_run_without_retry,
    durable_sleep_parks_and_resumes,
    wait_for_event_and_send_event,
    child_workflow_start_and_await,
    now_and_uuid_are_memoized,
    panic_fails_run_and_worker_keeps_serving,
    non_determinism_is_reported,
    concurrent_steps_have_deterministic_keys,
    cancel_running_run_stops_it,
    tracing_events_inside_a_step_land_in_run_logs,
    resumed_run_reruns_only_what_failed,
    cancelled_run_is_abandoned_once_not_every_heartbeat,
);

// --- A group commit that lost a deadlock ------------------------------------------------

struct OneStep {
    counts: Counts,
}

#[async_trait]
impl Workflow for OneStep {
    const NAME: &'static str = "one_step";
    type Input = ();
    type Output = u64;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<u64> {
        let counts = self.counts.clone();
        ctx.step("only")
            .run(move |_| async move {
                counts.bump("only");
                Ok::<u64, StepError>(7)
            })
            .await
    }
}

/// A batch the database rolls back for a deadlock is applied again by the committer:
/// given up, its run's task would stop, the lease lapse and the run be claimed anew, and
/// the step body would run a second time on a healthy worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_group_commit_rolled_back_for_a_deadlock_is_applied_again() {
    use sqlx::Connection as _;
    let db = common::TestDb::postgres().await;
    let world = db.world().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for statement in [
        // The first step write fails as a lost deadlock would, rolling its batch back;
        // the sequence's advance survives the rollback, so it fails exactly once.
        "CREATE SEQUENCE deadlocks_raised",
        "CREATE FUNCTION fake_deadlock() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN
              IF nextval('deadlocks_raised') = 1 THEN
                  RAISE EXCEPTION 'deadlock detected (injected)' USING ERRCODE = '40P01';
              END IF;
              RETURN NEW;
            END $$",
        "CREATE TRIGGER fake_deadlock BEFORE INSERT ON workflow_steps
         FOR EACH ROW EXECUTE FUNCTION fake_deadlock()",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    let counts = Counts::default();
    let harness = Harness::start(
        world.clone(),
        registry(|r| {
            r.register(OneStep {
                counts: counts.clone(),
            });
        }),
    );
    let run_id = harness
        .engine
        .start_typed::<OneStep>((), None)
        .await
        .unwrap()
        .run_id;
    let run = wait_for_terminal(&world, run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!(7)));
    let raised: i64 = sqlx::query_scalar("SELECT last_value FROM deadlocks_raised")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(raised >= 2, "the injected deadlock never fired");
    assert_eq!(
        counts.get("only"),
        1,
        "the step body ran again after its batch lost a deadlock"
    );
    assert_eq!(run.lease_epoch, 1, "the run was claimed again: {run:?}");
    harness.stop().await;
    conn.close().await.unwrap();
    drop(db);
}
