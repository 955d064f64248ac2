//! The runtime (worker and scheduler under one shutdown) and the engine's own waiting
//! API, as an embedder uses them: no hand-made channels, no polling of the store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::test_worker_config;
use morpheus_engine::{
    async_trait, CatchUp, Ctx, Engine, EngineError, Overlap, RunId, RunStatus, Runtime,
    ScheduleSpec, StepError, Trigger, Workflow, WorkflowResult, World,
};
use serde_json::json;

/// Doubles its input in one step, after a short durable sleep (so the run is released
/// and claimed again before it completes); fails on a negative input.
struct DoubleLater;

#[async_trait]
impl Workflow for DoubleLater {
    const NAME: &'static str = "double_later";
    type Input = i64;
    type Output = i64;

    async fn run(&self, ctx: &Ctx, input: i64) -> WorkflowResult<i64> {
        ctx.sleep(Duration::from_millis(20)).await?;
        let doubled = ctx
            .step("double")
            .run(|_| async move {
                if input < 0 {
                    Err(StepError::permanent("negative input"))
                } else {
                    Ok(input * 2)
                }
            })
            .await?;
        Ok(doubled)
    }
}

fn engine(world: &Arc<dyn World>) -> Engine {
    Engine::builder(world.clone()).workflow(DoubleLater).build()
}

fn runtime(engine: &Engine) -> Runtime {
    Runtime::new(engine.clone()).worker_config(test_worker_config(engine.world().backend()))
}

async fn wait_returns_the_ended_run_and_its_typed_output(world: Arc<dyn World>) {
    let engine = engine(&world);
    let running = runtime(&engine).without_scheduler().spawn();
    let good = engine.start_typed::<DoubleLater>(21, None).await.unwrap();
    let bad = engine.start_typed::<DoubleLater>(-1, None).await.unwrap();

    let output = tokio::time::timeout(
        Duration::from_secs(20),
        engine.wait_for_output::<DoubleLater>(good.run_id),
    )
    .await
    .expect("the run ends within 20 s")
    .unwrap();
    assert_eq!(output, 42);
    let run = engine.get_run(good.run_id).await.unwrap().expect("the run");
    assert_eq!(run.status, RunStatus::Completed);

    match engine.wait_for_output::<DoubleLater>(bad.run_id).await {
        Err(EngineError::InvalidState { status, reason, .. }) => {
            assert_eq!(status, "failed");
            assert_eq!(reason, "step 'double' failed: negative input");
        }
        other => panic!("a failed run's output must be an error naming it, got {other:?}"),
    }
    let unknown = RunId::new();
    assert!(matches!(
        engine.wait(unknown).await,
        Err(EngineError::RunNotFound(id)) if id == unknown
    ));
    running.shutdown().await.unwrap();
}

async fn the_runtime_fires_due_schedules_and_stops_both_services_on_shutdown(
    world: Arc<dyn World>,
) {
    let engine = engine(&world);
    let spec = ScheduleSpec {
        name: "doubler".into(),
        workflow: DoubleLater::NAME.into(),
        input: json!(5),
        trigger: Trigger::every(Duration::from_secs(3600)).unwrap(),
        overlap: Overlap::Skip,
        catch_up: CatchUp::SkipMissed,
        queue: "default".into(),
        priority: 0,
        heartbeat_url: None,
    };
    world.add_schedule(&spec, chrono::Utc::now()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(runtime(&engine).run(async move {
        let _ = stopped.await;
    }));

    // The scheduler of this runtime starts the tick's run; its worker completes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let runs = world.schedule_runs("doubler", 10).await.unwrap();
        if let Some(run) = runs.iter().find(|run| run.status == RunStatus::Completed) {
            break run.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the schedule's run did not complete within 20 s: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(run.output, Some(json!(10)));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("run returns once shutdown resolves")
        .expect("the runtime did not panic")
        .expect("the runtime stopped without error");
}

for_each_backend!(
    wait_returns_the_ended_run_and_its_typed_output,
    the_runtime_fires_due_schedules_and_stops_both_services_on_shutdown,
);
