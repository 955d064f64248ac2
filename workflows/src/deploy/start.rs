//! `deploy.start`: one deploy run, from directory to a ready sandbox.
//!
//! ```text
//! record → status/capturing → capture (or load-snapshot) → status/provisioning
//!   → provision (ensure container) → record-sandbox → upload → status/building
//!   → install? → build → status/starting → start → inspect → probe → status/ready
//! ```
//!
//! Every box is a journaled step, so a crash anywhere resumes at the step in flight:
//! the container is found again by its name (the run id), never created twice. On a
//! failure the run's sandbox is removed (`cleanup`, after copying the start command's
//! last output into the logs if it had started) and the run is marked `failed` with the
//! error; the engine run fails too.
//!
//! Runs of one agent share the queue `deploy:<agent_id>` whose concurrency limit is 1
//! (set by `deploy spec set`/`deploy start`), so the database lets at most one of them
//! run at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use morpheus_engine::{
    async_trait, Ctx, ExecRequest, Executor, InvalidInput, RetryPolicy, StepError, Workflow,
    WorkflowError, WorkflowResult,
};
use morpheus_executors::docker::{
    ContainerInfo, DockerExecutor, DockerRequest, EnsureOutput, ExecSpec, RemoveOutcome, StartSpec,
    UploadSpec,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::config::DeployConfig;
use super::model::{DeployStatus, DeploymentRun, DeploymentSpec, SourceSnapshot, Target};
use super::probe::{wait_until_ready, Readiness};
use super::sandbox::{self, WORKDIR};
use super::secrets::{has_sealed, OpenedEnv};
use super::snapshot::{self, SnapshotError};
use super::spec::{check_shape, check_source_dir};
use super::store::{DeployStore, StoreError};

/// Lines of the container log copied into the run's logs when a started sandbox fails.
const START_OUTPUT_LINES: u32 = 50;

/// Input of `deploy.start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStartInput {
    /// The agent.
    pub agent_id: String,
    /// The spec as it was when the run was started.
    pub spec: DeploymentSpec,
    /// Target.
    pub target: Target,
    /// Operator note.
    #[serde(default)]
    pub note: Option<String>,
    /// Redeploy this snapshot instead of capturing the directory again.
    #[serde(default)]
    pub snapshot_id: Option<String>,
}

/// Output of `deploy.start` (a ready deployment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStartOutput {
    /// Where it serves.
    pub url: String,
    /// Container id.
    pub sandbox_id: String,
    /// Container name.
    pub sandbox_name: String,
    /// Snapshot deployed.
    pub snapshot_id: String,
    /// Its content hash.
    pub content_hash: String,
}

/// The `deploy.start` workflow.
#[derive(Debug, Clone)]
pub struct DeployStart {
    config: Arc<DeployConfig>,
    /// For the steps of a spec with sealed env values, which call Docker from their
    /// own body (see [`DeployStart::sandbox_step`]).
    docker: Arc<DockerExecutor>,
}

impl DeployStart {
    /// The workflow, capturing and probing per `config`.
    pub fn new(config: Arc<DeployConfig>) -> Self {
        Self {
            config,
            docker: Arc::new(DockerExecutor::new()),
        }
    }
}

/// How far a run got: decides what a failure has to clean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// No container can exist yet.
    Capture,
    /// The sandbox may exist.
    Sandbox,
    /// The start command may be running.
    Started,
}

/// A change made together with a status transition.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    /// Only the status.
    Nothing,
    /// The snapshot deployed.
    Snapshot { id: String, hash: String },
    /// The sandbox created.
    Sandbox { id: String, name: String },
    /// Serving at this URL.
    Url(String),
    /// Failed with this error.
    Error(String),
    /// The sandbox is gone: no URL any more.
    ClearUrl,
}

impl Edit {
    fn apply(&self, run: &mut DeploymentRun) {
        match self {
            Self::Nothing => {}
            Self::Snapshot { id, hash } => {
                run.snapshot_id = Some(id.clone());
                run.snapshot_hash = Some(hash.clone());
            }
            Self::Sandbox { id, name } => {
                run.sandbox_id = Some(id.clone());
                run.sandbox_name = Some(name.clone());
            }
            Self::Url(url) => run.url = Some(url.clone()),
            Self::Error(error) => run.error = Some(error.clone()),
            Self::ClearUrl => run.url = None,
        }
    }
}

/// Retries of document-store writes (a database hiccup).
pub(crate) fn store_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_delay_ms: 500,
        multiplier: 2.0,
        max_delay_ms: 10_000,
        jitter: 0.1,
    }
}

/// Retries of Docker calls: about half a minute for an engine that is restarting.
pub(crate) fn docker_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        initial_delay_ms: 1_000,
        multiplier: 2.0,
        max_delay_ms: 20_000,
        jitter: 0.1,
    }
}

pub(crate) fn store_step_error(error: StoreError) -> StepError {
    match error {
        StoreError::Engine(error) => StepError::retryable(error),
        other => StepError::permanent(other),
    }
}

/// A status transition as a journaled step (`status/<status>` unless named otherwise).
pub(crate) async fn set_status(
    ctx: &Ctx,
    store: &DeployStore,
    run_id: &str,
    step: &str,
    next: DeployStatus,
    edit: Edit,
) -> WorkflowResult<()> {
    let store = store.clone();
    let run_id = run_id.to_owned();
    ctx.step(step)
        .retry(store_retry())
        .run(move |_| async move {
            store
                .transition(&run_id, next, Utc::now(), |run| edit.apply(run))
                .await
                .map(|_| ())
                .map_err(store_step_error)
        })
        .await
}

/// A `docker` executor call as a journaled step, decoding its output
/// ([`morpheus_engine::StepBuilder::call_as`] with the docker executor's kind).
pub(crate) async fn docker_step<T: DeserializeOwned>(
    ctx: &Ctx,
    step: &str,
    request: DockerRequest,
    retry: RetryPolicy,
) -> WorkflowResult<T> {
    ctx.step(step)
        .executor(morpheus_executors::docker::KIND)
        .retry(retry)
        .call_as(&request)
        .await
}

#[async_trait]
impl Workflow for DeployStart {
    const NAME: &'static str = "deploy.start";
    type Input = DeployStartInput;
    type Output = DeployStartOutput;

    fn validate(&self, input: &DeployStartInput) -> Result<(), InvalidInput> {
        check_shape(&input.spec).map_err(|error| format!("spec.{error}"))?;
        if input.agent_id != input.spec.agent_id {
            return Err(InvalidInput::new(format!(
                "agent_id: '{}' does not match spec.agent_id '{}'",
                input.agent_id, input.spec.agent_id
            )));
        }
        if input.snapshot_id.as_deref().is_some_and(str::is_empty) {
            return Err("snapshot_id: must not be empty when given".into());
        }
        if input.note.as_ref().is_some_and(|note| note.len() > 1000) {
            return Err("note: at most 1000 bytes".into());
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: DeployStartInput) -> WorkflowResult<DeployStartOutput> {
        let run_id = ctx.run_id().to_string();
        let store = DeployStore::new(ctx.documents());
        // Records the run and learns the installation id (for the sandbox's labels).
        let instance: String = {
            // `deploy start` records the run too; whichever comes first wins.
            let store = store.clone();
            let record = DeploymentRun::queued(
                run_id.clone(),
                input.spec.clone(),
                input.target,
                input.note.clone(),
                input.snapshot_id.clone(),
                Utc::now(),
            );
            ctx.step("record")
                .retry(store_retry())
                .run(move |_| async move {
                    store.insert_run(&record).await.map_err(store_step_error)?;
                    store.instance_id().await.map_err(store_step_error)
                })
                .await?
        };
        let mut stage = Stage::Capture;
        match self
            .pipeline(ctx, &store, &run_id, &instance, &input, &mut stage)
            .await
        {
            Ok(output) => Ok(output),
            Err(error) if error.is_control_flow() => Err(error),
            Err(error) => {
                self.fail(ctx, &store, &run_id, &input.spec.env, stage, &error)
                    .await?;
                Err(error)
            }
        }
    }
}

impl DeployStart {
    async fn pipeline(
        &self,
        ctx: &Ctx,
        store: &DeployStore,
        run_id: &str,
        instance: &str,
        input: &DeployStartInput,
        stage: &mut Stage,
    ) -> WorkflowResult<DeployStartOutput> {
        let spec = &input.spec;
        set_status(
            ctx,
            store,
            run_id,
            "status/capturing",
            DeployStatus::Capturing,
            Edit::Nothing,
        )
        .await?;
        let snapshot = match &input.snapshot_id {
            None => self.capture(ctx, store, run_id, spec).await?,
            Some(snapshot_id) => self.load_snapshot(ctx, store, spec, snapshot_id).await?,
        };
        set_status(
            ctx,
            store,
            run_id,
            "status/provisioning",
            DeployStatus::Provisioning,
            Edit::Snapshot {
                id: snapshot.id.clone(),
                hash: snapshot.content_hash.clone(),
            },
        )
        .await?;

        *stage = Stage::Sandbox;
        let container = sandbox::container_name(run_id);
        let ensured: EnsureOutput = self
            .sandbox_step(ctx, "provision", &spec.env, docker_retry(), |env| {
                DockerRequest::EnsureContainer(sandbox::container_spec(run_id, spec, instance, env))
            })
            .await?;
        set_status(
            ctx,
            store,
            run_id,
            "record-sandbox",
            DeployStatus::Provisioning,
            Edit::Sandbox {
                id: ensured.container.id.clone(),
                name: container.clone(),
            },
        )
        .await?;
        let _: serde_json::Value = docker_step(
            ctx,
            "upload",
            DockerRequest::UploadArchive(UploadSpec {
                container: container.clone(),
                archive: snapshot.artifact_path.clone().into(),
                dest: WORKDIR.to_owned(),
            }),
            docker_retry(),
        )
        .await?;

        set_status(
            ctx,
            store,
            run_id,
            "status/building",
            DeployStatus::Building,
            Edit::Nothing,
        )
        .await?;
        let command = |command: &str| ExecSpec {
            container: container.clone(),
            command: command.to_owned(),
            workdir: Some(WORKDIR.to_owned()),
            env: Default::default(),
            timeout_s: Some(self.config.command_timeout.as_secs_f64()),
        };
        // The sandbox's commands see the opened values and may print them.
        if let Some(install) = &spec.install_command {
            let _: serde_json::Value = self
                .sandbox_step(ctx, "install", &spec.env, docker_retry(), |_| {
                    DockerRequest::Exec(command(install))
                })
                .await?;
        }
        let _: serde_json::Value = self
            .sandbox_step(ctx, "build", &spec.env, docker_retry(), |_| {
                DockerRequest::Exec(command(&spec.build_command))
            })
            .await?;

        set_status(
            ctx,
            store,
            run_id,
            "status/starting",
            DeployStatus::Starting,
            Edit::Nothing,
        )
        .await?;
        *stage = Stage::Started;
        let _: serde_json::Value = docker_step(
            ctx,
            "start",
            DockerRequest::StartCommand(StartSpec {
                container: container.clone(),
                command: spec.start_command.clone(),
                workdir: Some(WORKDIR.to_owned()),
                env: Default::default(),
            }),
            docker_retry(),
        )
        .await?;
        let inspected: Option<ContainerInfo> = docker_step(
            ctx,
            "inspect",
            DockerRequest::Inspect {
                container: container.clone(),
            },
            docker_retry(),
        )
        .await?;
        let host_port = inspected
            .as_ref()
            .and_then(|info| info.ports.get(&spec.runtime_port).copied())
            .ok_or_else(|| {
                WorkflowError::failed(format!(
                    "sandbox {container} does not publish port {} (container gone?)",
                    spec.runtime_port
                ))
            })?;
        let url = sandbox::url(host_port);
        let probe_url = url.clone();
        let ready_timeout = self.config.ready_timeout;
        let _: Readiness = ctx
            .step("probe")
            .retry(RetryPolicy::none())
            .run(move |step| async move {
                wait_until_ready(&probe_url, ready_timeout, &step.logs).await
            })
            .await?;
        set_status(
            ctx,
            store,
            run_id,
            "status/ready",
            DeployStatus::Ready,
            Edit::Url(url.clone()),
        )
        .await?;
        ctx.log(
            morpheus_engine::LogLevel::Info,
            format!("deploy ready at {url}"),
        );
        Ok(DeployStartOutput {
            url,
            sandbox_id: ensured.container.id,
            sandbox_name: container,
            snapshot_id: snapshot.id,
            content_hash: snapshot.content_hash,
        })
    }

    async fn capture(
        &self,
        ctx: &Ctx,
        store: &DeployStore,
        run_id: &str,
        spec: &DeploymentSpec,
    ) -> WorkflowResult<SourceSnapshot> {
        // Memoized before the capture, so a capture re-executed after a crash records
        // the same snapshot instead of a second one.
        let snapshot_id = ctx.uuid().await?.to_string();
        let store = store.clone();
        let config = self.config.clone();
        let spec = spec.clone();
        let run_id = run_id.to_owned();
        ctx.step("capture")
            .retry(store_retry())
            .run(move |step| async move {
                let source_dir = spec.source_dir.clone();
                let roots = config.allowed_roots.clone();
                let agent_dir = config.artifacts_dir().join(&spec.agent_id);
                let limits = config.limits;
                let exclude = vec![config.data_dir.clone()];
                let captured = tokio::task::spawn_blocking(move || {
                    let resolved = check_source_dir(&source_dir, &roots)
                        .map_err(|error| StepError::permanent(format!("spec.{error}")))?;
                    snapshot::capture(&resolved, &agent_dir, &limits, &exclude)
                        .map_err(snapshot_step_error)
                })
                .await
                .map_err(|error| StepError::retryable(format!("capture task failed: {error}")))??;
                for skipped in &captured.skipped {
                    step.logs
                        .warn(format!("skipped {skipped}: it cannot be shipped"));
                }
                step.logs.info(format!(
                    "captured {} files ({} bytes, {} compressed) from {}: {}{}",
                    captured.file_count,
                    captured.content_bytes,
                    captured.size_bytes,
                    spec.source_dir,
                    captured.content_hash,
                    if captured.reused {
                        " (identical tree stored before; reusing its artifact)"
                    } else {
                        ""
                    }
                ));
                let record = SourceSnapshot {
                    id: snapshot_id.clone(),
                    agent_id: spec.agent_id.clone(),
                    spec_id: spec.id.clone(),
                    source_dir: spec.source_dir.clone(),
                    artifact_path: captured.artifact_path.display().to_string(),
                    content_hash: captured.content_hash,
                    file_count: captured.file_count,
                    size_bytes: captured.size_bytes,
                    content_bytes: captured.content_bytes,
                    created_at: Utc::now(),
                };
                store
                    .insert_snapshot(&record)
                    .await
                    .map_err(store_step_error)?;
                // After a crash between recording and the checkpoint, the first record
                // stands (its artifact was stored before it was recorded).
                let stored = store
                    .snapshot(&snapshot_id)
                    .await
                    .map_err(store_step_error)?
                    .unwrap_or(record);
                tracing::debug!(run = %run_id, snapshot = %stored.id, "snapshot recorded");
                Ok(stored)
            })
            .await
    }

    async fn load_snapshot(
        &self,
        ctx: &Ctx,
        store: &DeployStore,
        spec: &DeploymentSpec,
        snapshot_id: &str,
    ) -> WorkflowResult<SourceSnapshot> {
        let store = store.clone();
        let agent_id = spec.agent_id.clone();
        let snapshot_id = snapshot_id.to_owned();
        ctx.step("load-snapshot")
            .retry(store_retry())
            .run(move |step| async move {
                let snapshot = store
                    .snapshot(&snapshot_id)
                    .await
                    .map_err(store_step_error)?
                    .filter(|snapshot| snapshot.agent_id == agent_id)
                    .ok_or_else(|| {
                        StepError::permanent(format!(
                            "no snapshot {snapshot_id} for agent '{agent_id}'"
                        ))
                    })?;
                let artifact = std::path::PathBuf::from(&snapshot.artifact_path);
                let digest =
                    tokio::task::spawn_blocking(move || snapshot::verify_artifact(&artifact))
                        .await
                        .map_err(|error| {
                            StepError::retryable(format!("verify task failed: {error}"))
                        })?
                        .map_err(snapshot_step_error)?;
                if digest.content_hash != snapshot.content_hash {
                    return Err(StepError::permanent(format!(
                        "artifact {} hashes to {}, not {}: it was modified",
                        snapshot.artifact_path, digest.content_hash, snapshot.content_hash
                    )));
                }
                step.logs.info(format!(
                    "redeploying snapshot {} ({} files, {}) captured {}",
                    snapshot.id, snapshot.file_count, snapshot.content_hash, snapshot.created_at
                ));
                Ok(snapshot)
            })
            .await
    }

    /// A `docker` executor call as a journaled step, like [`docker_step`], for a step
    /// whose request needs the spec's environment (`env`) or whose output may show it.
    ///
    /// Without sealed values in `env` it is exactly [`docker_step`]. With them, the body
    /// opens them (a value that does not open fails the step for good, naming the
    /// variable), builds the request from the opened environment and calls Docker
    /// itself, so the plaintext is never part of anything the journal records; every
    /// log line, the answer and an error are masked before they leave the body. The
    /// step still records the `docker` executor.
    async fn sandbox_step<T: DeserializeOwned>(
        &self,
        ctx: &Ctx,
        step: &str,
        env: &BTreeMap<String, String>,
        retry: RetryPolicy,
        request: impl FnOnce(&BTreeMap<String, String>) -> DockerRequest + Send,
    ) -> WorkflowResult<T> {
        if !has_sealed(env) {
            return docker_step(ctx, step, request(env), retry).await;
        }
        let docker = self.docker.clone();
        let key = self.config.secrets_key.clone();
        let answer: serde_json::Value = ctx
            .step(step)
            .executor(morpheus_executors::docker::KIND)
            .retry(retry)
            .run(move |step| async move {
                let opened = OpenedEnv::open(env, key.as_deref())?;
                let masker = Arc::new(opened.masker());
                let payload = serde_json::to_value(request(opened.env())).map_err(|error| {
                    StepError::permanent(format!("the docker request does not encode: {error}"))
                })?;
                drop(opened);
                let answer = docker
                    .call(ExecRequest {
                        idempotency_key: step.idempotency_key,
                        attempt: step.attempt,
                        fencing_token: step.fencing_token,
                        lease: step.lease,
                        deadline: None,
                        payload,
                        logs: masker.sink(step.logs),
                    })
                    .await;
                answer
                    .map(|answer| masker.mask_json(answer))
                    .map_err(|error| masker.mask_error(error))
            })
            .await?;
        serde_json::from_value(answer).map_err(|error| {
            WorkflowError::failed(format!(
                "step '{step}': the docker executor's answer does not decode: {error}"
            ))
        })
    }

    async fn fail(
        &self,
        ctx: &Ctx,
        store: &DeployStore,
        run_id: &str,
        env: &BTreeMap<String, String>,
        stage: Stage,
        error: &WorkflowError,
    ) -> WorkflowResult<()> {
        let container = sandbox::container_name(run_id);
        if stage >= Stage::Started {
            // The start command's own output usually explains a failed probe.
            let copied: WorkflowResult<serde_json::Value> = self
                .sandbox_step(ctx, "start-output", env, RetryPolicy::none(), |_| {
                    DockerRequest::Logs {
                        container: container.clone(),
                        tail: START_OUTPUT_LINES,
                    }
                })
                .await;
            if let Err(error) = copied {
                if error.is_control_flow() {
                    return Err(error);
                }
            }
        }
        let mut message = error.to_string();
        if stage >= Stage::Sandbox {
            let removed: WorkflowResult<RemoveOutcome> = docker_step(
                ctx,
                "cleanup",
                DockerRequest::Remove {
                    container: container.clone(),
                },
                docker_retry(),
            )
            .await;
            match removed {
                Ok(_) => {}
                Err(error) if error.is_control_flow() => return Err(error),
                Err(error) => message.push_str(&format!(
                    " (the sandbox {container} could not be removed: {error}; `morpheus deploy gc` removes it later)"
                )),
            }
        }
        set_status(
            ctx,
            store,
            run_id,
            "status/failed",
            DeployStatus::Failed,
            Edit::Error(message),
        )
        .await
    }
}

fn snapshot_step_error(error: SnapshotError) -> StepError {
    if error.is_retryable() {
        StepError::retryable(error)
    } else {
        StepError::permanent(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::test_fixtures::deployment_spec;

    fn input() -> DeployStartInput {
        DeployStartInput {
            agent_id: "agent".into(),
            spec: deployment_spec(Utc::now()),
            target: Target::Production,
            note: None,
            snapshot_id: None,
        }
    }

    fn workflow() -> DeployStart {
        DeployStart::new(Arc::new(DeployConfig::default()))
    }

    #[test]
    fn inputs_are_checked_before_a_run_is_started() {
        assert_eq!(workflow().validate(&input()), Ok(()));
        let mut mismatch = input();
        mismatch.agent_id = "other".into();
        assert!(workflow()
            .validate(&mismatch)
            .unwrap_err()
            .starts_with("agent_id:"));
        let mut bad_port = input();
        bad_port.spec.runtime_port = 80;
        assert!(workflow()
            .validate(&bad_port)
            .unwrap_err()
            .starts_with("spec.runtime_port:"));
        let mut relative = input();
        relative.spec.source_dir = "site".into();
        assert!(workflow()
            .validate(&relative)
            .unwrap_err()
            .starts_with("spec.source_dir:"));
        let mut damaged_secret = input();
        damaged_secret
            .spec
            .env
            .insert("TOKEN".into(), "sealed:v1:AAAA".into());
        assert!(workflow()
            .validate(&damaged_secret)
            .unwrap_err()
            .starts_with("spec.env: TOKEN: sealed value is too short"));
        let mut empty_snapshot = input();
        empty_snapshot.snapshot_id = Some(String::new());
        assert!(workflow()
            .validate(&empty_snapshot)
            .unwrap_err()
            .starts_with("snapshot_id:"));
    }

    #[test]
    fn edits_touch_only_their_fields() {
        let now = Utc::now();
        let mut run =
            DeploymentRun::queued("r".into(), input().spec, Target::Preview, None, None, now);
        Edit::Snapshot {
            id: "s".into(),
            hash: "h".into(),
        }
        .apply(&mut run);
        Edit::Sandbox {
            id: "c".into(),
            name: "n".into(),
        }
        .apply(&mut run);
        Edit::Url("http://x/".into()).apply(&mut run);
        assert_eq!(run.snapshot_id.as_deref(), Some("s"));
        assert_eq!(run.snapshot_hash.as_deref(), Some("h"));
        assert_eq!(run.sandbox_id.as_deref(), Some("c"));
        assert_eq!(run.url.as_deref(), Some("http://x/"));
        Edit::ClearUrl.apply(&mut run);
        assert_eq!(run.url, None);
        Edit::Error("boom".into()).apply(&mut run);
        assert_eq!(run.error.as_deref(), Some("boom"));
        assert_eq!(run.sandbox_id.as_deref(), Some("c"), "untouched");
    }

    #[test]
    fn only_the_artifact_store_s_own_trouble_is_retried() {
        let store = SnapshotError::Store {
            path: "/data".into(),
            message: "disk full".into(),
        };
        assert!(snapshot_step_error(store).is_retryable());
        let limit = SnapshotError::TooManyFiles {
            dir: "/src".into(),
            limit: 1,
        };
        assert!(!snapshot_step_error(limit).is_retryable());
    }
}
