//! The `Workflow` trait and the registry that maps names to workflows.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::error::{EngineError, ErrorCode, StepError};
use crate::model::NewRun;

/// Why a workflow run stopped without an output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The workflow decided the run failed.
    #[error("{0}")]
    Failed(String),
    /// A step failed for good (attempts exhausted or a permanent error).
    #[error("step '{step}' failed{}: {message}", after_attempts(*attempts))]
    StepFailed {
        /// The step key.
        step: String,
        /// Its last error.
        message: String,
        /// How many attempts were made (the retry policy's budget, when it ran out).
        attempts: u32,
        /// The stable code of its last error, when the executor gave one: match it
        /// (`code: Some(c), .. if c == SEQUENCE_MISMATCH`) instead of the message.
        code: Option<ErrorCode>,
    },
    /// The replay asked for different steps than the journal holds.
    #[error("non-determinism: step #{seq} is '{journal}' in the journal but the workflow asked for '{requested}'; the workflow code changed under a running run (declare a new VERSION instead)")]
    NonDeterminism {
        /// Program-order position.
        seq: i64,
        /// The key recorded in the journal.
        journal: String,
        /// The key the replay asked for.
        requested: String,
    },
    /// Internal: the run parked (sleep, retry, event). Propagate it with `?`; never
    /// swallow it.
    #[error("run suspended")]
    Suspended,
    /// Internal: this worker lost the run's lease; stop and write nothing.
    #[error("lease lost")]
    LeaseLost,
    /// Internal: the database could not be written; the run is retried after its lease
    /// expires.
    #[error("storage unavailable: {0}")]
    Storage(String),
}

/// ` after N attempts` when a step was retried, so an operator sees the policy ran out.
fn after_attempts(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

impl WorkflowError {
    /// A failure with a message.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }

    /// Whether this is engine control flow rather than a failure of the run.
    pub fn is_control_flow(&self) -> bool {
        matches!(self, Self::Suspended | Self::LeaseLost | Self::Storage(_))
    }
}

impl From<serde_json::Error> for WorkflowError {
    fn from(error: serde_json::Error) -> Self {
        Self::Failed(format!("json: {error}"))
    }
}

impl From<StepError> for WorkflowError {
    fn from(error: StepError) -> Self {
        Self::Failed(error.message().to_owned())
    }
}

/// Result of a workflow or of a `Ctx` operation.
pub type WorkflowResult<T> = Result<T, WorkflowError>;

/// Why [`Workflow::validate`] refused an input: a message naming the field and what is
/// wrong with it (`owner: 'x' is not an Akash address`), shown to whoever started the
/// run. It reads as the message (`error.starts_with("owner:")`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(String);

impl InvalidInput {
    /// A refusal with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self(message.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl From<String> for InvalidInput {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for InvalidInput {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

impl std::ops::Deref for InvalidInput {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A durable workflow: a function from input to output whose steps are journaled, so it
/// can be replayed after a crash and continue where it stopped.
///
/// ```
/// use morpheus_engine::{async_trait, Ctx, Workflow, WorkflowResult};
///
/// struct Greet;
///
/// #[async_trait]
/// impl Workflow for Greet {
///     const NAME: &'static str = "greet";
///     type Input = String;
///     type Output = String;
///     async fn run(&self, ctx: &Ctx, name: String) -> WorkflowResult<String> {
///         let greeting = ctx
///             .step("compose")
///             .run(|_| async move { Ok(format!("hi {name}")) })
///             .await?;
///         Ok(greeting)
///     }
/// }
/// ```
#[async_trait]
pub trait Workflow: Send + Sync + 'static {
    /// The registered name (`morpheus start <NAME>`).
    const NAME: &'static str;
    /// Bumped when the step sequence changes; a run keeps the version it started with.
    const VERSION: u32 = 1;
    /// Input (validated when the run is started).
    type Input: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Output (stored when the run completes).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Checks an input beyond its type (start is refused, and nothing written, on error).
    fn validate(&self, _input: &Self::Input) -> Result<(), InvalidInput> {
        Ok(())
    }

    /// The workflow body. Replayed from the top on resume; completed steps return their
    /// recorded outputs without running.
    async fn run(&self, ctx: &Ctx, input: Self::Input) -> WorkflowResult<Self::Output>;
}

/// A workflow with its types erased, as the worker sees it.
pub trait DynWorkflow: Send + Sync {
    /// Name.
    fn name(&self) -> &'static str;
    /// Version.
    fn version(&self) -> u32;
    /// Decodes and validates an input.
    fn check_input(&self, input: &Value) -> Result<(), InvalidInput>;
    /// Runs on a JSON input, returning a JSON output.
    fn run_json<'a>(&'a self, ctx: &'a Ctx, input: Value) -> BoxFuture<'a, WorkflowResult<Value>>;
}

struct Erased<W>(W);

impl<W: Workflow> DynWorkflow for Erased<W> {
    fn name(&self) -> &'static str {
        W::NAME
    }

    fn version(&self) -> u32 {
        W::VERSION
    }

    fn check_input(&self, input: &Value) -> Result<(), InvalidInput> {
        let typed: W::Input = serde_json::from_value(input.clone()).map_err(InvalidInput::new)?;
        self.0.validate(&typed)
    }

    fn run_json<'a>(&'a self, ctx: &'a Ctx, input: Value) -> BoxFuture<'a, WorkflowResult<Value>> {
        Box::pin(async move {
            let typed: W::Input = serde_json::from_value(input)
                .map_err(|e| WorkflowError::failed(format!("stored input does not decode: {e}")))?;
            let output = self.0.run(ctx, typed).await?;
            Ok(serde_json::to_value(output)?)
        })
    }
}

/// Workflows by name.
#[derive(Clone, Default)]
pub struct WorkflowRegistry {
    workflows: HashMap<String, Arc<dyn DynWorkflow>>,
}

impl WorkflowRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a workflow under its name.
    pub fn register<W: Workflow>(&mut self, workflow: W) -> &mut Self {
        self.workflows
            .insert(W::NAME.to_owned(), Arc::new(Erased(workflow)));
        self
    }

    /// The workflow with this name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynWorkflow>> {
        self.workflows.get(name).cloned()
    }

    /// `(name, version)` of every registered workflow, sorted.
    pub fn versions(&self) -> Vec<(String, u32)> {
        let mut versions: Vec<_> = self
            .workflows
            .values()
            .map(|w| (w.name().to_owned(), w.version()))
            .collect();
        versions.sort();
        versions
    }

    /// Checks a start request (known workflow, input that decodes and validates) and
    /// builds it, without touching the database.
    pub fn prepare(
        &self,
        workflow: &str,
        input: Value,
        idempotency_key: Option<String>,
    ) -> Result<NewRun, EngineError> {
        let registered = self
            .get(workflow)
            .ok_or_else(|| EngineError::UnknownWorkflow(workflow.to_owned()))?;
        registered
            .check_input(&input)
            .map_err(|reason| EngineError::InvalidInput {
                workflow: workflow.to_owned(),
                reason: reason.to_string(),
            })?;
        let mut new_run = NewRun::new(workflow, input);
        new_run.workflow_version = registered.version();
        new_run.idempotency_key = idempotency_key;
        Ok(new_run)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.versions().into_iter().map(|(name, _)| name).collect()
    }
}

impl fmt::Debug for WorkflowRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowRegistry")
            .field("workflows", &self.versions())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_failure_says_how_many_attempts_were_made_when_it_was_retried() {
        let failed = |attempts| {
            WorkflowError::StepFailed {
                step: "height".into(),
                message: "HTTP 500".into(),
                attempts,
                code: None,
            }
            .to_string()
        };
        assert_eq!(failed(1), "step 'height' failed: HTTP 500");
        assert_eq!(failed(5), "step 'height' failed after 5 attempts: HTTP 500");
    }
}
