//! Typed executor calls and coded step errors, through a real worker on both backends:
//! `StepBuilder::call_as` refuses an answer that does not decode (a permanent step
//! failure naming the step and the type, never a default), and an executor's
//! `ErrorCode` reaches the workflow both live and when the failed step is replayed
//! from the journal.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{test_worker_config, wait_for_terminal};
use morpheus_engine::{
    async_trait, Ctx, Engine, ErrorCode, ExecError, ExecOutput, ExecRequest, Executor,
    ExecutorRegistry, RunStatus, StepError, Worker, Workflow, WorkflowError, WorkflowRegistry,
    WorkflowResult, World,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The code [`Oracle`] gives the failures it is asked for.
const REFUSED: ErrorCode = ErrorCode::from_static("refused");
const REFUSED_PREFIX: &str = "refused:";

/// What [`Oracle`] is asked: answer with `answer`, or fail with a coded error.
#[derive(Debug, Serialize)]
struct Ask {
    answer: serde_json::Value,
    refuse: bool,
}

/// An executor that answers what it is told to, counting its calls.
#[derive(Clone, Default)]
struct Oracle {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Executor for Oracle {
    fn kind(&self) -> &str {
        "oracle"
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if request.payload["refuse"] == true {
            return Err(
                StepError::permanent(format!("{REFUSED_PREFIX} not today")).with_code(REFUSED)
            );
        }
        Ok(request.payload["answer"].clone())
    }

    fn error_code(&self, message: &str) -> Option<ErrorCode> {
        message.starts_with(REFUSED_PREFIX).then_some(REFUSED)
    }
}

#[derive(Debug, Deserialize)]
struct Height {
    height: u64,
}

/// Reads a height through `call_as`; the input is the oracle's answer.
struct ReadHeight;

#[async_trait]
impl Workflow for ReadHeight {
    const NAME: &'static str = "read_height";
    type Input = serde_json::Value;
    type Output = u64;

    async fn run(&self, ctx: &Ctx, answer: serde_json::Value) -> WorkflowResult<u64> {
        let read: Height = ctx
            .step("read")
            .executor("oracle")
            .call_as(&Ask {
                answer,
                refuse: false,
            })
            .await?;
        Ok(read.height)
    }
}

/// Meets a refusal, branches on its code, then parks so the refusal is replayed.
struct BranchOnCode;

#[async_trait]
impl Workflow for BranchOnCode {
    const NAME: &'static str = "branch_on_code";
    type Input = ();
    type Output = String;

    async fn run(&self, ctx: &Ctx, _: ()) -> WorkflowResult<String> {
        let asked: WorkflowResult<Height> = ctx
            .step("ask")
            .executor("oracle")
            .call_as(&Ask {
                answer: json!(null),
                refuse: true,
            })
            .await;
        let message = match asked {
            Err(WorkflowError::StepFailed {
                code: Some(code),
                message,
                ..
            }) if code == REFUSED => message,
            Err(other) => return Err(other),
            Ok(_) => return Err(WorkflowError::failed("the oracle was told to refuse")),
        };
        // Parking replays the body: the refusal then comes from the journal.
        ctx.sleep(Duration::from_millis(50)).await?;
        Ok(message)
    }
}

/// Runs `input` through `W` on a worker with the oracle registered; the finished run
/// and how often the oracle was called.
async fn run_to_end<W: Workflow>(
    world: Arc<dyn World>,
    workflow: W,
    input: W::Input,
) -> (morpheus_engine::RunRecord, usize) {
    let oracle = Oracle::default();
    let mut workflows = WorkflowRegistry::new();
    workflows.register(workflow);
    let mut executors = ExecutorRegistry::new();
    executors.register(oracle.clone());
    let engine = Engine::new(world.clone(), workflows, executors);
    let worker = Worker::new(engine.clone(), test_worker_config(world.backend()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let run_id = engine.start_typed::<W>(input, None).await.unwrap().run_id;
    let run = wait_for_terminal(&world, run_id).await;
    let _ = stop.send(());
    task.await
        .expect("worker task did not panic")
        .expect("worker stopped cleanly");
    (run, oracle.calls.load(Ordering::SeqCst))
}

async fn typed_calls_decode_the_executor_answer(world: Arc<dyn World>) {
    let (run, calls) = run_to_end(world, ReadHeight, json!({"height": 812, "extra": 1})).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!(812)));
    assert_eq!(calls, 1);
}

async fn a_malformed_answer_fails_the_step_instead_of_becoming_a_default(world: Arc<dyn World>) {
    let (run, calls) = run_to_end(world, ReadHeight, json!({"height": "tall"})).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(
        error.starts_with(
            "step 'read' failed: executor 'oracle' answered with output that does not decode as "
        ) && error.contains("Height"),
        "{error}"
    );
    assert_eq!(calls, 1, "a permanent failure is not retried");
}

async fn an_error_code_survives_the_replay_of_a_failed_step(world: Arc<dyn World>) {
    let (run, calls) = run_to_end(world, BranchOnCode, ()).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!("refused: not today")));
    assert_eq!(calls, 1, "the replay reads the refusal from the journal");
}

for_each_backend!(
    typed_calls_decode_the_executor_answer,
    a_malformed_answer_fails_the_step_instead_of_becoming_a_default,
    an_error_code_survives_the_replay_of_a_failed_step,
);
