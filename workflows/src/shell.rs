//! The `shell` workflow: each entry of `steps` is a durable step run by the `process`
//! executor. A crash between steps resumes at the first step not yet recorded; only the
//! step in flight at a crash can run a second time.
//!
//! ```json
//! {"steps": [{"name": "build", "run": "make build", "timeout_s": 600,
//!             "retry": {"max_attempts": 3, "initial_delay_ms": 500}}],
//!  "env": {"RUST_LOG": "info"}, "cwd": "/srv/app"}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use morpheus_engine::{async_trait, Ctx, InvalidInput, RetryPolicy, Workflow, WorkflowResult};
use morpheus_executors::process::{ProcessOutput, ProcessRequest};
use serde::{Deserialize, Serialize};

/// Input of the `shell` workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellInput {
    /// The commands, run in order.
    pub steps: Vec<ShellStep>,
    /// Environment added to every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of every command (default: the worker's).
    #[serde(default)]
    pub cwd: Option<String>,
}

/// One command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellStep {
    /// Step name (unique within the run; used as the step key and in `logs --step`).
    pub name: String,
    /// The command line, run with `/bin/sh -c`.
    pub run: String,
    /// Per-attempt time limit in seconds (default 3600).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Retry policy (default: one attempt, no retries).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Environment for this step only (overrides `env`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What one step did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShellStepReport {
    /// Step name.
    pub name: String,
    /// Exit code (always 0: a failing step fails the run).
    pub exit_code: i32,
    /// How long the successful attempt took.
    pub duration_ms: u64,
}

/// Output of the `shell` workflow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShellOutput {
    /// One report per step, in order.
    pub steps: Vec<ShellStepReport>,
}

/// The `shell` workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shell;

const DEFAULT_TIMEOUT_S: f64 = 3600.0;

#[async_trait]
impl Workflow for Shell {
    const NAME: &'static str = "shell";
    type Input = ShellInput;
    type Output = ShellOutput;

    fn validate(&self, input: &ShellInput) -> Result<(), InvalidInput> {
        if input.steps.is_empty() {
            return Err("steps: at least one step is required".into());
        }
        let mut names = HashSet::new();
        for (index, step) in input.steps.iter().enumerate() {
            if step.name.trim().is_empty() {
                return Err(InvalidInput::new(format!(
                    "steps[{index}].name: must not be empty"
                )));
            }
            if step.name.starts_with('$') || step.name.contains('#') {
                return Err(InvalidInput::new(format!(
                    "steps[{index}].name: '{}' may not start with '$' or contain '#' (reserved for engine keys)",
                    step.name
                )));
            }
            if !names.insert(step.name.as_str()) {
                return Err(InvalidInput::new(format!(
                    "steps[{index}].name: '{}' is used twice",
                    step.name
                )));
            }
            if step.run.trim().is_empty() {
                return Err(InvalidInput::new(format!(
                    "steps[{index}].run: must not be empty"
                )));
            }
            if let Some(timeout) = step.timeout_s {
                if !(timeout > 0.0 && timeout.is_finite()) {
                    return Err(InvalidInput::new(format!(
                        "steps[{index}].timeout_s: must be a positive number"
                    )));
                }
            }
            if let Some(retry) = &step.retry {
                retry
                    .validate()
                    .map_err(|reason| format!("steps[{index}].{reason}"))?;
            }
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: ShellInput) -> WorkflowResult<ShellOutput> {
        let mut reports = Vec::with_capacity(input.steps.len());
        for step in &input.steps {
            let mut env = input.env.clone();
            env.extend(step.env.clone());
            let timeout_s = step.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
            let output: ProcessOutput = ctx
                .step(&step.name)
                .executor("process")
                .retry(step.retry.clone().unwrap_or_else(RetryPolicy::none))
                .timeout(Duration::from_secs_f64(timeout_s))
                .call_as(&ProcessRequest {
                    command: step.run.clone(),
                    env,
                    cwd: input.cwd.clone(),
                    timeout_s: Some(timeout_s),
                })
                .await?;
            reports.push(ShellStepReport {
                name: step.name.clone(),
                exit_code: output.exit_code,
                duration_ms: output.duration_ms,
            });
        }
        Ok(ShellOutput { steps: reports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: serde_json::Value) -> ShellInput {
        serde_json::from_value(value).expect("decodes")
    }

    #[test]
    fn accepts_the_documented_example() {
        let example = input(
            json!({"steps":[{"name":"build","run":"make build","timeout_s":600,
            "retry":{"max_attempts":3,"initial_delay_ms":500}}], "env":{}, "cwd":"/path"}),
        );
        assert_eq!(Shell.validate(&example), Ok(()));
        assert_eq!(example.steps[0].retry.as_ref().unwrap().max_attempts, 3);
    }

    #[test]
    fn rejects_empty_duplicate_and_reserved_names() {
        let empty = input(json!({"steps": []}));
        assert!(Shell.validate(&empty).unwrap_err().contains("at least one"));
        let duplicate =
            input(json!({"steps": [{"name":"a","run":"true"},{"name":"a","run":"true"}]}));
        assert!(Shell
            .validate(&duplicate)
            .unwrap_err()
            .contains("used twice"));
        let reserved = input(json!({"steps": [{"name":"$now","run":"true"}]}));
        assert!(Shell.validate(&reserved).unwrap_err().contains("reserved"));
    }

    #[test]
    fn rejects_bad_timeouts_and_retry_policies() {
        let timeout = input(json!({"steps": [{"name":"a","run":"true","timeout_s":0}]}));
        assert!(Shell.validate(&timeout).unwrap_err().contains("timeout_s"));
        let retry = input(json!({"steps": [{"name":"a","run":"true","retry":{"max_attempts":0}}]}));
        assert!(Shell.validate(&retry).unwrap_err().contains("max_attempts"));
    }

    #[test]
    fn unknown_fields_are_refused_by_the_decoder() {
        let typo = serde_json::from_value::<ShellInput>(json!({"stepz": []}));
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
    }
}
