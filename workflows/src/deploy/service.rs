//! What an operator can do with deploys (`morpheus deploy …` calls these): set and read
//! specs, start, redeploy and stop runs, list runs and snapshots, wait for a run, and
//! collect garbage. Every request is checked before anything is written.

use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{Documents, Engine, RunId, Workflow};
use morpheus_executors::docker::DockerExecutor;

use super::error::DeployError;
use super::gc::{collect_garbage, GcEntry};
use super::model::{DeployStatus, DeploymentRun, DeploymentSpec, SourceSnapshot, Target};
use super::spec::check_agent_id;
use super::start::{DeployStart, DeployStartInput};
use super::stop::{DeployStop, DeployStopInput};
use super::store::DeployStore;

/// How often [`DeployService::wait`] looks at a run.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// The queue of an agent's start pipelines (concurrency limit 1).
pub fn queue_for(agent_id: &str) -> String {
    format!("deploy:{agent_id}")
}

/// Deploy operations over an engine (its database and registered workflows).
#[derive(Clone)]
pub struct DeployService {
    engine: Engine,
    store: DeployStore,
}

impl DeployService {
    /// Operations on `engine`'s database; `deploy.start` and `deploy.stop` must be
    /// registered in it.
    pub fn new(engine: Engine) -> Self {
        let store = DeployStore::new(Documents::new(engine.world()));
        Self { engine, store }
    }

    /// The records.
    pub fn store(&self) -> &DeployStore {
        &self.store
    }

    /// Saves a validated spec (see `SpecRequest::validate`), keeping the id and
    /// creation time of the spec it replaces, and limits the agent's queue to one
    /// running pipeline. Returns the stored spec and whether it is new.
    pub async fn save_spec(
        &self,
        mut spec: DeploymentSpec,
    ) -> Result<(DeploymentSpec, bool), DeployError> {
        let existing = self.store.spec_versioned(&spec.agent_id).await?;
        let created = existing.is_none();
        if let Some(existing) = &existing {
            spec.id = existing.value.id.clone();
            spec.created_at = existing.value.created_at;
        }
        self.engine
            .world()
            .set_queue_limit(&queue_for(&spec.agent_id), Some(1))
            .await?;
        self.store
            .put_spec(&spec, existing.map(|e| e.version))
            .await?;
        Ok((spec, created))
    }

    /// The agent's spec.
    pub async fn spec(&self, agent_id: &str) -> Result<DeploymentSpec, DeployError> {
        check_agent_id(agent_id)?;
        self.store.spec(agent_id).await?.ok_or_else(|| {
            DeployError::NotFound(format!(
                "no deployment spec for agent '{agent_id}' (set one with `morpheus deploy spec set`)"
            ))
        })
    }

    /// Starts a deploy run of the agent's current spec (capturing the directory, or
    /// redeploying `snapshot_id`) into a new sandbox. Returns the queued run.
    pub async fn start(
        &self,
        agent_id: &str,
        target: Option<Target>,
        note: Option<String>,
        snapshot_id: Option<String>,
    ) -> Result<DeploymentRun, DeployError> {
        let spec = self.spec(agent_id).await?;
        if let Some(snapshot_id) = &snapshot_id {
            let owned = self
                .store
                .snapshot(snapshot_id)
                .await?
                .is_some_and(|snapshot| snapshot.agent_id == agent_id);
            if !owned {
                return Err(DeployError::NotFound(format!(
                    "no snapshot {snapshot_id} for agent '{agent_id}' (see `morpheus deploy snapshots --agent {agent_id}`)"
                )));
            }
        }
        let target = target.unwrap_or(spec.target_default);
        let input = DeployStartInput {
            agent_id: agent_id.to_owned(),
            spec: spec.clone(),
            target,
            note: note.clone(),
            snapshot_id: snapshot_id.clone(),
        };
        let queue = queue_for(agent_id);
        let new_run = self
            .engine
            .prepare(
                DeployStart::NAME,
                serde_json::to_value(input).map_err(morpheus_engine::EngineError::from)?,
                None,
            )?
            .queue(queue.clone());
        // Idempotent; set here too so the limit holds even if it was removed by hand.
        self.engine.world().set_queue_limit(&queue, Some(1)).await?;
        let started = self.engine.start_prepared(new_run).await?;
        let record = DeploymentRun::queued(
            started.run_id.to_string(),
            spec,
            target,
            note,
            snapshot_id,
            Utc::now(),
        );
        self.store.insert_run(&record).await?;
        Ok(self.store.run(&record.id).await?.unwrap_or(record))
    }

    /// Starts a `deploy.stop` run for one of the agent's runs; returns its run id.
    pub async fn stop(&self, agent_id: &str, run_id: &str) -> Result<RunId, DeployError> {
        let run = self.run_of(agent_id, run_id).await?;
        if !run.status.stoppable() {
            let hint = if run.status.in_pipeline() {
                format!(
                    "; its pipeline is still running (cancel it with `morpheus runs cancel {run_id}`, then `morpheus deploy gc`)"
                )
            } else {
                String::new()
            };
            return Err(DeployError::State(format!(
                "deploy run {run_id} is {}: only a ready or failed deploy can be stopped{hint}",
                run.status
            )));
        }
        let input = DeployStopInput {
            agent_id: agent_id.to_owned(),
            run_id: run.id,
        };
        let new_run = self.engine.prepare(
            DeployStop::NAME,
            serde_json::to_value(input).map_err(morpheus_engine::EngineError::from)?,
            None,
        )?;
        Ok(self.engine.start_prepared(new_run).await?.run_id)
    }

    /// One of the agent's runs.
    pub async fn run_of(&self, agent_id: &str, run_id: &str) -> Result<DeploymentRun, DeployError> {
        check_agent_id(agent_id)?;
        run_id
            .parse::<RunId>()
            .map_err(|error| DeployError::Invalid(super::spec::SpecError::new("run", error)))?;
        self.store
            .run(run_id)
            .await?
            .filter(|run| run.agent_id == agent_id)
            .ok_or_else(|| {
                DeployError::NotFound(format!("no deploy run {run_id} for agent '{agent_id}'"))
            })
    }

    /// The agent's runs, newest first.
    pub async fn runs(
        &self,
        agent_id: &str,
        limit: u64,
    ) -> Result<Vec<DeploymentRun>, DeployError> {
        check_agent_id(agent_id)?;
        Ok(self.store.runs(agent_id, limit).await?)
    }

    /// The agent's snapshots, newest first.
    pub async fn snapshots(
        &self,
        agent_id: &str,
        limit: u64,
    ) -> Result<Vec<SourceSnapshot>, DeployError> {
        check_agent_id(agent_id)?;
        Ok(self.store.snapshots(agent_id, limit).await?)
    }

    /// Waits until deploy run `run_id` reaches a status for which `done` holds, while
    /// engine run `watched` (the pipeline, or a stop) is alive: if `watched` ends first
    /// without the record getting there, that is an error naming how it ended.
    pub async fn wait(
        &self,
        run_id: &str,
        watched: RunId,
        done: impl Fn(DeployStatus) -> bool,
        timeout: Option<Duration>,
    ) -> Result<DeploymentRun, DeployError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let engine_run = self.engine.world().get_run(watched).await?;
            // Read the record after the run: a run that ended wrote its record first.
            let record = self.store.run(run_id).await?;
            if let Some(record) = &record {
                if done(record.status) {
                    return Ok(record.clone());
                }
            }
            if let Some(engine_run) = engine_run.filter(|run| run.status.is_terminal()) {
                let status = record
                    .map(|r| r.status.to_string())
                    .unwrap_or_else(|| "unrecorded".into());
                return Err(DeployError::State(format!(
                    "run {watched} ended {} while deploy run {run_id} is {status}: {}",
                    engine_run.status,
                    engine_run.error.as_deref().unwrap_or("no error recorded")
                )));
            }
            if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                return Err(DeployError::State(format!(
                    "gave up waiting for deploy run {run_id} after {:?}",
                    timeout.unwrap_or_default()
                )));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Removes containers labelled by Morpheus whose runs are finished (see
    /// [`super::gc`]).
    pub async fn gc(
        &self,
        docker: &DockerExecutor,
        dry_run: bool,
    ) -> Result<Vec<GcEntry>, DeployError> {
        collect_garbage(&self.store, self.engine.world().as_ref(), docker, dry_run).await
    }
}
