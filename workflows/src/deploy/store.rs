//! Where deploy records live: three collections of the engine's document store
//! ([`Documents`]); no SQL here. Specs are keyed by agent id, snapshots by snapshot id,
//! runs by engine run id; snapshots and runs carry `agent_id` at the top level so they
//! can be listed per agent, newest first.

use chrono::{DateTime, Utc};
use morpheus_engine::{DocumentQuery, Documents, EngineError, Versioned};

use super::model::{DeployStatus, DeploymentRun, DeploymentSpec, SourceSnapshot};

/// Collection of [`DeploymentSpec`]s (key: agent id).
pub const SPECS: &str = "deploy.specs";

/// Collection of [`SourceSnapshot`]s (key: snapshot id).
pub const SNAPSHOTS: &str = "deploy.snapshots";

/// Collection of [`DeploymentRun`]s (key: run id).
pub const RUNS: &str = "deploy.runs";

/// Collection of installation-wide facts (key `instance`: this database's id).
pub const META: &str = "deploy.meta";

const INSTANCE_KEY: &str = "instance";

/// The installation's identity document.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Instance {
    id: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database said no (retrying may help).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No such record.
    #[error("{0}")]
    NotFound(String),
    /// The status machine forbids the change.
    #[error("{0}")]
    InvalidTransition(String),
}

/// Typed access to the deploy records.
#[derive(Debug, Clone)]
pub struct DeployStore {
    docs: Documents,
}

impl DeployStore {
    /// The records in `docs`.
    pub fn new(docs: Documents) -> Self {
        Self { docs }
    }

    /// The agent's spec.
    pub async fn spec(&self, agent_id: &str) -> Result<Option<DeploymentSpec>, StoreError> {
        Ok(self
            .docs
            .get::<DeploymentSpec>(SPECS, agent_id)
            .await?
            .map(|v| v.value))
    }

    /// Stores the agent's spec: creates it, or replaces the current one if it has not
    /// changed since it was read (`expected_version` from [`DeployStore::spec_versioned`]).
    pub async fn put_spec(
        &self,
        spec: &DeploymentSpec,
        expected_version: Option<i64>,
    ) -> Result<i64, StoreError> {
        Ok(match expected_version {
            None => self.docs.insert(SPECS, &spec.agent_id, spec).await?,
            Some(version) => {
                self.docs
                    .replace(SPECS, &spec.agent_id, spec, version)
                    .await?
            }
        })
    }

    /// The agent's spec with its document version.
    pub async fn spec_versioned(
        &self,
        agent_id: &str,
    ) -> Result<Option<Versioned<DeploymentSpec>>, StoreError> {
        Ok(self.docs.get(SPECS, agent_id).await?)
    }

    /// This installation's id (created on first use): it labels every sandbox, so
    /// garbage collection only considers containers this database knows about.
    pub async fn instance_id(&self) -> Result<String, StoreError> {
        if let Some(id) = self.existing_instance_id().await? {
            return Ok(id);
        }
        let fresh = Instance {
            id: uuid::Uuid::new_v4().to_string(),
        };
        // Two first users race: the first insert wins and both read it back.
        self.docs
            .insert_if_absent(META, INSTANCE_KEY, &fresh)
            .await?;
        self.existing_instance_id().await?.ok_or_else(|| {
            StoreError::NotFound("the installation id vanished after it was created".into())
        })
    }

    /// This installation's id, if any sandbox was ever provisioned.
    pub async fn existing_instance_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .docs
            .get::<Instance>(META, INSTANCE_KEY)
            .await?
            .map(|v| v.value.id))
    }

    /// One snapshot.
    pub async fn snapshot(&self, id: &str) -> Result<Option<SourceSnapshot>, StoreError> {
        Ok(self
            .docs
            .get::<SourceSnapshot>(SNAPSHOTS, id)
            .await?
            .map(|v| v.value))
    }

    /// Records a snapshot unless it is recorded already (a capture step re-executed
    /// after a crash writes the same record again).
    pub async fn insert_snapshot(&self, snapshot: &SourceSnapshot) -> Result<(), StoreError> {
        self.docs
            .insert_if_absent(SNAPSHOTS, &snapshot.id, snapshot)
            .await?;
        Ok(())
    }

    /// The agent's snapshots, newest first.
    pub async fn snapshots(
        &self,
        agent_id: &str,
        limit: u64,
    ) -> Result<Vec<SourceSnapshot>, StoreError> {
        let query = DocumentQuery::new(SNAPSHOTS)
            .field_equals("agent_id", agent_id)
            .limit(limit);
        Ok(self
            .docs
            .list::<SourceSnapshot>(&query)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// One run.
    pub async fn run(&self, id: &str) -> Result<Option<DeploymentRun>, StoreError> {
        Ok(self
            .docs
            .get::<DeploymentRun>(RUNS, id)
            .await?
            .map(|v| v.value))
    }

    /// Records a queued run unless it is recorded already (both `deploy start` and the
    /// run's first step write it; whichever comes second changes nothing).
    pub async fn insert_run(&self, run: &DeploymentRun) -> Result<bool, StoreError> {
        Ok(self.docs.insert_if_absent(RUNS, &run.id, run).await?)
    }

    /// The agent's runs, newest first.
    pub async fn runs(&self, agent_id: &str, limit: u64) -> Result<Vec<DeploymentRun>, StoreError> {
        let query = DocumentQuery::new(RUNS)
            .field_equals("agent_id", agent_id)
            .limit(limit);
        Ok(self
            .docs
            .list::<DeploymentRun>(&query)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// Moves a run to `next` (checked against the status machine) and applies `edit`,
    /// in one compare-and-set.
    pub async fn transition(
        &self,
        run_id: &str,
        next: DeployStatus,
        now: DateTime<Utc>,
        mut edit: impl FnMut(&mut DeploymentRun),
    ) -> Result<DeploymentRun, StoreError> {
        let updated = self
            .docs
            .update::<DeploymentRun, StoreError, _>(RUNS, run_id, |run| {
                run.transition(next, now)
                    .map_err(|refused| StoreError::InvalidTransition(refused.to_string()))?;
                edit(run);
                Ok(())
            })
            .await?;
        updated
            .map(|v| v.value)
            .ok_or_else(|| StoreError::NotFound(format!("no deploy run {run_id}")))
    }
}
