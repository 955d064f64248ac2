//! `deploy.stop`: stops exactly one deploy run.
//!
//! ```text
//! status/stopping → remove (stop and remove the run's container) → status/stopped
//! ```
//!
//! Only a `ready` or `failed` run can be stopped (or a `stopping` one again, to finish
//! a stop that did not complete). The container is found by the run's name; one that
//! is already gone counts as removed, so the workflow is safe to repeat.

use morpheus_engine::{async_trait, Ctx, InvalidInput, RunId, StepError, Workflow, WorkflowResult};
use morpheus_executors::docker::{DockerRequest, RemoveOutcome};
use serde::{Deserialize, Serialize};

use super::model::DeployStatus;
use super::sandbox;
use super::spec::check_agent_id;
use super::start::{docker_retry, docker_step, set_status, store_retry, store_step_error, Edit};
use super::store::DeployStore;

/// Input of `deploy.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStopInput {
    /// The agent owning the run.
    pub agent_id: String,
    /// The deploy run (the `deploy.start` run id).
    pub run_id: String,
}

/// Output of `deploy.stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStopOutput {
    /// The run stopped.
    pub run_id: String,
    /// False when its container was already gone (a failed run's, say).
    pub removed: bool,
}

/// The `deploy.stop` workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployStop;

#[async_trait]
impl Workflow for DeployStop {
    const NAME: &'static str = "deploy.stop";
    type Input = DeployStopInput;
    type Output = DeployStopOutput;

    fn validate(&self, input: &DeployStopInput) -> Result<(), InvalidInput> {
        check_agent_id(&input.agent_id).map_err(|error| error.to_string())?;
        input
            .run_id
            .parse::<RunId>()
            .map_err(|error| format!("run_id: {error}"))?;
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: DeployStopInput) -> WorkflowResult<DeployStopOutput> {
        let store = DeployStore::new(ctx.documents());
        {
            let store = store.clone();
            let input = input.clone();
            ctx.step("check")
                .retry(store_retry())
                .run(move |_| async move {
                    let run = store
                        .run(&input.run_id)
                        .await
                        .map_err(store_step_error)?
                        .ok_or_else(|| {
                            StepError::permanent(format!("no deploy run {}", input.run_id))
                        })?;
                    if run.agent_id != input.agent_id {
                        return Err(StepError::permanent(format!(
                            "deploy run {} belongs to agent '{}', not '{}'",
                            input.run_id, run.agent_id, input.agent_id
                        )));
                    }
                    Ok(())
                })
                .await?;
        }
        set_status(
            ctx,
            &store,
            &input.run_id,
            "status/stopping",
            DeployStatus::Stopping,
            Edit::Nothing,
        )
        .await?;
        let removed: RemoveOutcome = docker_step(
            ctx,
            "remove",
            DockerRequest::Remove {
                container: sandbox::container_name(&input.run_id),
            },
            docker_retry(),
        )
        .await?;
        set_status(
            ctx,
            &store,
            &input.run_id,
            "status/stopped",
            DeployStatus::Stopped,
            Edit::ClearUrl,
        )
        .await?;
        Ok(DeployStopOutput {
            run_id: input.run_id,
            removed: removed.removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_need_a_valid_agent_and_run_id() {
        let good = DeployStopInput {
            agent_id: "agent".into(),
            run_id: RunId::new().to_string(),
        };
        assert_eq!(DeployStop.validate(&good), Ok(()));
        let bad_run = DeployStopInput {
            run_id: "nope".into(),
            ..good.clone()
        };
        assert!(DeployStop
            .validate(&bad_run)
            .unwrap_err()
            .starts_with("run_id:"));
        let bad_agent = DeployStopInput {
            agent_id: "a b".into(),
            ..good
        };
        assert!(DeployStop
            .validate(&bad_agent)
            .unwrap_err()
            .starts_with("agent_id:"));
    }
}
