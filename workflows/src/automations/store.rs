//! Registering, listing, pausing, resuming and deleting automations, and reading their
//! execution logs: what `POST /api/v1/automations` and `morpheus automations …` do.
//! An automation is a document (collection [`AUTOMATIONS_COLLECTION`]) and an engine
//! schedule named [`schedule_name`] that starts one `automation.execute` run per tick
//! (exactly one per tick across workers, as every schedule does).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use morpheus_engine::{
    CatchUp, DocumentQuery, Documents, EngineError, Overlap, ScheduleSpec, Trigger, World,
};
use morpheus_executors::cosmos::ephemeral::{EphemeralKey, PassphraseSource};
use morpheus_executors::evm::relayers::{
    generate_relayer_key, RelayerKeyRecord, RELAYER_KEYS_COLLECTION,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::model::{
    Automation, AutomationConfig, AutomationStatus, InvalidAutomation, Relayer, Source,
    AUTOMATIONS_COLLECTION, AUTOMATION_LOGS_COLLECTION,
};
use super::{EXECUTE_WORKFLOW, WATCH_POLL, WATCH_WORKFLOW};

/// The schedule that fires automation `id`.
pub fn schedule_name(id: &str) -> String {
    format!("automation:{id}")
}

/// The queue of automation `id`'s executions: limited to one at a time, so each
/// execution sees the one before it (`context.executionCount`, `prevExecutionID`).
pub fn execution_queue(id: &str) -> String {
    format!("automation:{id}")
}

/// What registering answers: the HMAC key is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    /// The automation's id.
    pub id: String,
    /// The address the orchestration layer signs as (its first relayer).
    #[serde(rename = "executorAddress")]
    pub executor_address: String,
    /// The 256-bit HMAC key, hex.
    #[serde(rename = "hmacKey")]
    pub hmac_key: String,
    /// The relayers' addresses (fund them with gas).
    #[serde(rename = "relayerAddress")]
    pub relayer_addresses: Vec<String>,
}

/// A failure of an automation operation: bad input (nothing written) or storage.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    /// The request is refused; nothing was written.
    #[error("{0}")]
    Invalid(#[from] InvalidAutomation),
    /// No automation has this id.
    #[error("automation {0} is unknown (`morpheus automations list` shows them)")]
    Unknown(String),
    /// The database failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The keys' passphrase or sealing failed.
    #[error("{0}")]
    Keys(String),
}

/// The automations in one database.
#[derive(Clone)]
pub struct Automations {
    world: Arc<dyn World>,
    documents: Documents,
    passphrase: PassphraseSource,
    min_interval_s: u64,
}

impl Automations {
    /// Automations in `world`, keys sealed under the passphrase in `passphrase`,
    /// intervals of at least `min_interval_s`.
    pub fn new(world: Arc<dyn World>, passphrase: PassphraseSource, min_interval_s: u64) -> Self {
        Self {
            documents: Documents::new(world.clone()),
            world,
            passphrase,
            min_interval_s,
        }
    }

    /// Checks `config` (nothing is written if it is refused), generates the HMAC key and
    /// the relayer keys (stored sealed), stores the automation and registers its trigger.
    pub async fn register(&self, config: AutomationConfig) -> Result<Registered, AutomationError> {
        config.validate(self.min_interval_s)?;
        // An INTERVAL fires an execution per tick; a FILTER runs its log watcher.
        let (workflow, every) = match config.source {
            Source::Interval(every_s) => (EXECUTE_WORKFLOW, Duration::from_secs(every_s)),
            Source::Filter(_) => (WATCH_WORKFLOW, WATCH_POLL),
        };
        let trigger = Trigger::every(every)
            .map_err(|error| InvalidAutomation(format!("source.value: {error}")))?;
        let passphrase = self.passphrase.read().map_err(AutomationError::Keys)?;
        let id = format!("aut-{}", &uuid::Uuid::now_v7().simple().to_string()[16..]);
        let (hmac_key, hmac_key_sealed, relayers) = {
            let passphrase = passphrase.clone();
            let count = config.relayer_count;
            let owner = id.clone();
            tokio::task::spawn_blocking(move || {
                let key = EphemeralKey::generate();
                let hmac_key = hex::encode(key.secret());
                let sealed = key.seal(&passphrase)?;
                let mut relayers = Vec::new();
                for _ in 0..count {
                    let (address, sealed_key) = generate_relayer_key(&passphrase)?;
                    let key_id =
                        format!("rly-{}", &uuid::Uuid::now_v7().simple().to_string()[16..]);
                    relayers.push(RelayerKeyRecord {
                        id: key_id,
                        address,
                        owner: owner.clone(),
                        sealed_key: Some(sealed_key),
                        created_at: Utc::now(),
                    });
                }
                Ok::<_, String>((hmac_key, sealed, relayers))
            })
            .await
            .map_err(|error| AutomationError::Keys(error.to_string()))?
            .map_err(AutomationError::Keys)?
        };
        for relayer in &relayers {
            self.documents
                .insert(RELAYER_KEYS_COLLECTION, &relayer.id, relayer)
                .await?;
        }
        let automation = Automation {
            id: id.clone(),
            config,
            hmac_key_sealed,
            relayers: relayers
                .iter()
                .map(|relayer| Relayer {
                    key_id: relayer.id.clone(),
                    address: relayer.address.clone(),
                })
                .collect(),
            status: AutomationStatus::Active,
            created_at: Utc::now(),
        };
        self.world
            .set_queue_limit(&execution_queue(&id), Some(1))
            .await?;
        self.documents
            .insert(AUTOMATIONS_COLLECTION, &id, &automation)
            .await?;
        let spec = ScheduleSpec {
            name: schedule_name(&id),
            workflow: workflow.to_owned(),
            input: json!({"automation_id": id}),
            trigger,
            overlap: Overlap::Skip,
            catch_up: CatchUp::SkipMissed,
            // The watcher is not an execution: it keeps scanning while one runs.
            queue: if workflow == EXECUTE_WORKFLOW {
                execution_queue(&id)
            } else {
                "default".to_owned()
            },
            priority: 0,
            heartbeat_url: None,
        };
        let first = spec.trigger.next_after(Utc::now()).unwrap_or_else(Utc::now);
        self.world.add_schedule(&spec, first).await?;
        let relayer_addresses: Vec<String> = relayers
            .iter()
            .map(|relayer| relayer.address.clone())
            .collect();
        Ok(Registered {
            executor_address: relayer_addresses[0].clone(),
            id,
            hmac_key,
            relayer_addresses,
        })
    }

    /// One automation (its HMAC key only sealed).
    pub async fn get(&self, id: &str) -> Result<Automation, AutomationError> {
        self.documents
            .get::<Automation>(AUTOMATIONS_COLLECTION, id)
            .await?
            .map(|stored| stored.value)
            .ok_or_else(|| AutomationError::Unknown(id.to_owned()))
    }

    /// Every automation, newest first.
    pub async fn list(&self) -> Result<Vec<Automation>, AutomationError> {
        Ok(self
            .documents
            .list::<Automation>(&DocumentQuery::new(AUTOMATIONS_COLLECTION).limit(10_000))
            .await?
            .into_iter()
            .map(|stored| stored.value)
            .collect())
    }

    /// Pauses (`true`) or resumes its trigger.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<Automation, AutomationError> {
        self.get(id).await?;
        let status = if paused {
            AutomationStatus::Paused
        } else {
            AutomationStatus::Active
        };
        let updated = self
            .documents
            .update::<Automation, EngineError, _>(AUTOMATIONS_COLLECTION, id, |automation| {
                automation.status = status;
                Ok(())
            })
            .await?
            .ok_or_else(|| AutomationError::Unknown(id.to_owned()))?;
        self.world
            .set_schedule_paused(&schedule_name(id), paused, Utc::now())
            .await?;
        Ok(updated.value)
    }

    /// Deregisters its trigger, destroys its relayer keys and deletes it (its execution
    /// logs stay).
    pub async fn delete(&self, id: &str) -> Result<(), AutomationError> {
        let automation = self.get(id).await?;
        match self.world.delete_schedule(&schedule_name(id)).await {
            Ok(()) | Err(EngineError::ScheduleNotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
        for relayer in &automation.relayers {
            self.documents
                .delete(RELAYER_KEYS_COLLECTION, &relayer.key_id)
                .await?;
        }
        self.documents.delete(AUTOMATIONS_COLLECTION, id).await?;
        Ok(())
    }

    /// Its execution log records, newest first: `limit` of them after skipping `offset`.
    pub async fn logs(
        &self,
        id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Value>, AutomationError> {
        let records = self
            .documents
            .list::<Value>(
                &DocumentQuery::new(AUTOMATION_LOGS_COLLECTION)
                    .field_equals("automationID", id)
                    .limit(offset.saturating_add(limit).min(100_000)),
            )
            .await?;
        Ok(records
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|stored| stored.value)
            .collect())
    }
}
