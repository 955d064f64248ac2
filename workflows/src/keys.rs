//! Ephemeral keys as workflows, so that a crash anywhere leaves exactly one key stored
//! and one grant on chain:
//!
//! - `keys.ephemeral.create`: generate a key and store it sealed (document collection
//!   [`EPHEMERAL_KEYS_COLLECTION`], status `granting`) *before* anything is signed; then
//!   the granter's grant transaction through the exactly-once path (signed and journaled
//!   before broadcast); then mark it `active`. A resumed run finds the stored key and
//!   re-sends the journaled bytes.
//! - `keys.ephemeral.revoke`: revoke every grant on chain (skipped when they already
//!   expired there), then destroy the key material.
//! - `keys.ephemeral.rotate`: when the granter's newest key expires within
//!   `rotate_before_s`, create the new key first and revoke the old ones after, so a
//!   sweep in between still signs (the `cosmos` executor takes the key that expires
//!   last).
//!
//! The granter's own key signs the grant and the revocation: these runs need a worker
//! whose `cosmos` executor holds it (`morpheus keys ephemeral create` and `revoke` run
//! one in process; see [`register_commands`]). The key material never reaches a run's input, output, journal or logs.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use morpheus_engine::{
    Ctx, DocumentQuery, InvalidInput, LogLevel, StepError, Workflow, WorkflowError, WorkflowResult,
};
use morpheus_executors::cosmos::ephemeral::{
    granted_message_types, EphemeralKey, EphemeralRecord, EphemeralStatus, PassphraseSource,
    EPHEMERAL_KEYS_COLLECTION,
};
use morpheus_executors::cosmos::{Coin, CosmosRequest};
use serde::{Deserialize, Serialize};

use crate::escrow::{submit_once, Submission};

/// Shortest lifetime of a key: a grant that expires before its transaction lands is
/// useless.
pub const MIN_TTL_S: u64 = 10;
/// Longest lifetime of a key (30 days): an ephemeral key that lives for months is the
/// owner's key by another name.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;
/// Default lifetime: 24 hours.
pub const DEFAULT_TTL_S: u64 = 24 * 3600;
/// Default escrow spend limit of a key.
pub const DEFAULT_SPEND_LIMIT: &str = "20000000uakt";
/// Default fee allowance of a key.
pub const DEFAULT_FEE_LIMIT: &str = "5000000uakt";

fn default_ttl_s() -> u64 {
    DEFAULT_TTL_S
}
fn default_spend_limit() -> String {
    DEFAULT_SPEND_LIMIT.to_owned()
}
fn default_fee_limit() -> String {
    DEFAULT_FEE_LIMIT.to_owned()
}
fn default_seconds_per_block() -> f64 {
    6.0
}
fn default_rotate_before_s() -> u64 {
    3600
}

/// Input of `keys.ephemeral.create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralCreateInput {
    /// The owner granting (its key must be the worker's `cosmos` key).
    pub granter: String,
    /// Lifetime in seconds ([`MIN_TTL_S`]..=[`MAX_TTL_S`], default 24 h).
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// The most the key may deposit into escrow (default `20000000uakt`).
    #[serde(default = "default_spend_limit")]
    pub spend_limit: String,
    /// The most of the granter's funds the key may spend on fees (default `5000000uakt`).
    #[serde(default = "default_fee_limit")]
    pub fee_limit: String,
    /// Seconds per block: how long a competing transaction needs to settle.
    #[serde(default = "default_seconds_per_block")]
    pub seconds_per_block: f64,
}

/// Output of `keys.ephemeral.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralKeyReport {
    /// The key's id (`eph-…`).
    pub id: String,
    /// Its address.
    pub address: String,
    /// The granter.
    pub granter: String,
    /// When its grants expire.
    pub expires_at: DateTime<Utc>,
    /// The grant transaction.
    pub grant_tx: String,
    /// Its block.
    pub height: u64,
}

/// Input of `keys.ephemeral.revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralRevokeInput {
    /// The key's id.
    pub id: String,
    /// Seconds per block.
    #[serde(default = "default_seconds_per_block")]
    pub seconds_per_block: f64,
}

/// Output of `keys.ephemeral.revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralRevokeReport {
    /// The key's id.
    pub id: String,
    /// The revoke transaction; `None` when the grants had already expired on chain (or
    /// were never granted).
    pub revoke_tx: Option<String>,
}

/// Input of `keys.ephemeral.rotate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EphemeralRotateInput {
    /// The owner whose keys rotate.
    pub granter: String,
    /// Rotate when the newest key expires within this many seconds (default 1 h).
    #[serde(default = "default_rotate_before_s")]
    pub rotate_before_s: u64,
    /// Lifetime of the new key.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
    /// Spend limit of the new key.
    #[serde(default = "default_spend_limit")]
    pub spend_limit: String,
    /// Fee allowance of the new key.
    #[serde(default = "default_fee_limit")]
    pub fee_limit: String,
    /// Seconds per block.
    #[serde(default = "default_seconds_per_block")]
    pub seconds_per_block: f64,
}

/// Output of `keys.ephemeral.rotate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EphemeralRotateReport {
    /// The new key, if one was due.
    pub created: Option<EphemeralKeyReport>,
    /// The older keys revoked after it.
    pub revoked: Vec<EphemeralRevokeReport>,
}

fn check_granter(granter: &str) -> Result<(), InvalidInput> {
    if !granter.starts_with("akash1") || granter.len() < 20 {
        return Err(InvalidInput::new(format!(
            "granter: '{granter}' is not an Akash address (akash1…)"
        )));
    }
    Ok(())
}

fn check_key_terms(
    ttl_s: u64,
    spend_limit: &str,
    fee_limit: &str,
    seconds_per_block: f64,
) -> Result<(), InvalidInput> {
    if !(MIN_TTL_S..=MAX_TTL_S).contains(&ttl_s) {
        return Err(InvalidInput::new(format!(
            "ttl: {ttl_s} s is outside {MIN_TTL_S} s ..= {MAX_TTL_S} s (30 days)"
        )));
    }
    for (field, text) in [("spend_limit", spend_limit), ("fee_limit", fee_limit)] {
        let coin: Coin = text.parse().map_err(|error| {
            InvalidInput::new(format!(
                "{field}: '{text}' is not an amount like 20000000uakt ({error})"
            ))
        })?;
        if coin.amount == 0 {
            return Err(InvalidInput::new(format!("{field}: must be positive")));
        }
    }
    if !(seconds_per_block.is_finite() && seconds_per_block > 0.0) {
        return Err(InvalidInput::new("seconds_per_block: must be positive"));
    }
    Ok(())
}

/// The three `keys.ephemeral.*` workflows share this: where the passphrase that seals
/// the keys is.
#[derive(Debug, Clone, Default)]
pub struct EphemeralKeys {
    passphrase: PassphraseSource,
}

impl EphemeralKeys {
    /// Keys sealed under the passphrase in `passphrase`.
    pub fn new(passphrase: PassphraseSource) -> Self {
        Self { passphrase }
    }
}

/// `keys.ephemeral.create`.
#[derive(Debug, Clone, Default)]
pub struct EphemeralCreate(pub EphemeralKeys);
/// `keys.ephemeral.revoke`.
#[derive(Debug, Clone, Default)]
pub struct EphemeralRevoke;
/// `keys.ephemeral.rotate`.
#[derive(Debug, Clone, Default)]
pub struct EphemeralRotate(pub EphemeralKeys);

/// Registers `keys.ephemeral.rotate` (what a scheduled `morpheus up` runs), keys
/// sealed under `passphrase`.
pub fn register_rotation(
    registry: &mut morpheus_engine::WorkflowRegistry,
    passphrase: PassphraseSource,
) {
    registry.register(EphemeralRotate(EphemeralKeys::new(passphrase)));
}

/// Registers `keys.ephemeral.create` and `keys.ephemeral.revoke`. Only the commands
/// that run them in process with the granter's key register them: a worker claims only
/// runs of workflows it has, so a `morpheus up` that signs with ephemeral keys (and
/// holds no granter key) never takes them.
pub fn register_commands(
    registry: &mut morpheus_engine::WorkflowRegistry,
    passphrase: PassphraseSource,
) {
    registry.register(EphemeralCreate(EphemeralKeys::new(passphrase)));
    registry.register(EphemeralRevoke);
}

#[async_trait]
impl Workflow for EphemeralCreate {
    const NAME: &'static str = "keys.ephemeral.create";
    type Input = EphemeralCreateInput;
    type Output = EphemeralKeyReport;

    fn validate(&self, input: &EphemeralCreateInput) -> Result<(), InvalidInput> {
        check_granter(&input.granter)?;
        check_key_terms(
            input.ttl_s,
            &input.spend_limit,
            &input.fee_limit,
            input.seconds_per_block,
        )
    }

    async fn run(
        &self,
        ctx: &Ctx,
        input: EphemeralCreateInput,
    ) -> WorkflowResult<EphemeralKeyReport> {
        create_key(ctx, &self.0, &input, "").await
    }
}

#[async_trait]
impl Workflow for EphemeralRevoke {
    const NAME: &'static str = "keys.ephemeral.revoke";
    type Input = EphemeralRevokeInput;
    type Output = EphemeralRevokeReport;

    fn validate(&self, input: &EphemeralRevokeInput) -> Result<(), InvalidInput> {
        if !input.id.starts_with("eph-") || input.id.len() > 64 {
            return Err(InvalidInput::new(format!(
                "id: '{}' is not an ephemeral key id (eph-…; `morpheus keys ephemeral list` shows them)",
                input.id
            )));
        }
        Ok(())
    }

    async fn run(
        &self,
        ctx: &Ctx,
        input: EphemeralRevokeInput,
    ) -> WorkflowResult<EphemeralRevokeReport> {
        revoke_key(ctx, &input.id, input.seconds_per_block, "").await
    }
}

#[async_trait]
impl Workflow for EphemeralRotate {
    const NAME: &'static str = "keys.ephemeral.rotate";
    type Input = EphemeralRotateInput;
    type Output = EphemeralRotateReport;

    fn validate(&self, input: &EphemeralRotateInput) -> Result<(), InvalidInput> {
        check_granter(&input.granter)?;
        check_key_terms(
            input.ttl_s,
            &input.spend_limit,
            &input.fee_limit,
            input.seconds_per_block,
        )?;
        if input.rotate_before_s >= input.ttl_s {
            return Err(InvalidInput::new(format!(
                "rotate_before_s: {} s is not shorter than the key's ttl {} s (every run would rotate)",
                input.rotate_before_s, input.ttl_s
            )));
        }
        Ok(())
    }

    async fn run(
        &self,
        ctx: &Ctx,
        input: EphemeralRotateInput,
    ) -> WorkflowResult<EphemeralRotateReport> {
        let granter = input.granter.clone();
        let documents = ctx.documents();
        let active: Vec<(String, DateTime<Utc>)> = ctx
            .step("active-keys")
            .run(move |_| async move {
                let keys = documents
                    .list::<EphemeralRecord>(
                        &DocumentQuery::new(EPHEMERAL_KEYS_COLLECTION)
                            .field_equals("granter", granter.as_str())
                            .limit(1_000),
                    )
                    .await
                    .map_err(StepError::retryable)?;
                Ok(keys
                    .into_iter()
                    .filter(|key| key.value.status == EphemeralStatus::Active)
                    .map(|key| (key.value.id, key.value.expires_at))
                    .collect())
            })
            .await?;
        let now = ctx.now().await?;
        let horizon = now + chrono::Duration::seconds(input.rotate_before_s as i64);
        if let Some((id, expires_at)) = active.iter().max_by_key(|(_, at)| *at) {
            if *expires_at > horizon {
                ctx.log(
                    LogLevel::Info,
                    format!(
                        "ephemeral key {id} of {} expires at {} (beyond the rotation horizon of {} s): nothing to rotate",
                        input.granter,
                        expires_at.to_rfc3339(),
                        input.rotate_before_s
                    ),
                );
                return Ok(EphemeralRotateReport {
                    created: None,
                    revoked: Vec::new(),
                });
            }
        }
        let create = EphemeralCreateInput {
            granter: input.granter.clone(),
            ttl_s: input.ttl_s,
            spend_limit: input.spend_limit.clone(),
            fee_limit: input.fee_limit.clone(),
            seconds_per_block: input.seconds_per_block,
        };
        // The new grant first: the executor switches to it as soon as it is active, so
        // a sweep between here and the revocations still signs.
        let created = create_key(ctx, &self.0, &create, "new/").await?;
        let mut revoked = Vec::new();
        for (id, _) in &active {
            revoked.push(
                revoke_key(ctx, id, input.seconds_per_block, &format!("revoke/{id}/")).await?,
            );
        }
        Ok(EphemeralRotateReport {
            created: Some(created),
            revoked,
        })
    }
}

/// What the `generate` step answers: never the key.
#[derive(Debug, Serialize, Deserialize)]
struct Generated {
    id: String,
    address: String,
}

/// Generates and stores the key, grants it, marks it active. `prefix` prefixes the step
/// names (part of the journal: never change it for runs in flight).
async fn create_key(
    ctx: &Ctx,
    keys: &EphemeralKeys,
    input: &EphemeralCreateInput,
    prefix: &str,
) -> WorkflowResult<EphemeralKeyReport> {
    let now = ctx.now().await?;
    let expires_at = (now + chrono::Duration::seconds(input.ttl_s as i64)).trunc_subsecs(0);
    let id = format!("eph-{}", &ctx.uuid().await?.simple().to_string()[..16]);
    let generated: Generated = {
        let (documents, passphrase) = (ctx.documents(), keys.passphrase.clone());
        let record_base = EphemeralRecord {
            id: id.clone(),
            address: String::new(),
            granter: input.granter.clone(),
            sealed_key: None,
            expires_at,
            spend_limit: input.spend_limit.clone(),
            fee_limit: input.fee_limit.clone(),
            grants: granted_message_types(),
            status: EphemeralStatus::Granting,
            grant_tx: None,
            revoke_tx: None,
            created_at: now,
            run_id: Some(ctx.run_id().to_string()),
        };
        let id = id.clone();
        ctx.step(format!("{prefix}generate"))
            .run(move |_| async move {
                // A repeated attempt (a crash after the insert, before the step was
                // recorded) finds the key it stored: one key per run, never two.
                if let Some(stored) = documents
                    .get::<EphemeralRecord>(EPHEMERAL_KEYS_COLLECTION, &id)
                    .await
                    .map_err(StepError::retryable)?
                {
                    return Ok(Generated {
                        id,
                        address: stored.value.address,
                    });
                }
                let passphrase = passphrase.read().map_err(StepError::permanent)?;
                // scrypt takes a tenth of a second: off the async threads.
                let (address, sealed) = tokio::task::spawn_blocking(move || {
                    let key = EphemeralKey::generate();
                    let address = key
                        .signer("akash")
                        .map_err(|error| error.to_string())?
                        .address()
                        .to_owned();
                    Ok::<_, String>((address, key.seal(&passphrase)?))
                })
                .await
                .map_err(StepError::retryable)?
                .map_err(StepError::permanent)?;
                let record = EphemeralRecord {
                    address: address.clone(),
                    sealed_key: Some(sealed),
                    ..record_base
                };
                if !documents
                    .insert_if_absent(EPHEMERAL_KEYS_COLLECTION, &id, &record)
                    .await
                    .map_err(StepError::retryable)?
                {
                    // Another attempt of this very step got there first: keep its key.
                    let stored = documents
                        .get::<EphemeralRecord>(EPHEMERAL_KEYS_COLLECTION, &id)
                        .await
                        .map_err(StepError::retryable)?
                        .ok_or_else(|| StepError::retryable("the stored key vanished"))?;
                    return Ok(Generated {
                        id,
                        address: stored.value.address,
                    });
                }
                Ok(Generated { id, address })
            })
            .await?
    };
    ctx.log(
        LogLevel::Info,
        format!(
            "ephemeral key {} ({}) stored sealed; granting it {} of escrow deposits and {} of fees from {} until {}",
            generated.id,
            generated.address,
            input.spend_limit,
            input.fee_limit,
            input.granter,
            expires_at.to_rfc3339()
        ),
    );
    let sign = serde_json::to_value(CosmosRequest::SignGrantEphemeral {
        grantee: generated.address.clone(),
        expires_at,
        spend_limit: input.spend_limit.clone(),
        fee_limit: input.fee_limit.clone(),
        granter: Some(input.granter.clone()),
        memo: None,
    })?;
    let subject = format!("ephemeral key {}", generated.id);
    let landed = submit_once(
        ctx,
        &Submission {
            sign,
            seconds_per_block: input.seconds_per_block,
            steps: &format!("{prefix}grant"),
            subject: &subject,
        },
    )
    .await;
    let (grant_tx, height) = match landed {
        Ok(Ok(landed)) => landed,
        Ok(Err(reason)) => {
            set_status(ctx, &format!("{prefix}discard"), &generated.id, |record| {
                record.status = EphemeralStatus::Failed;
                record.sealed_key = None;
            })
            .await?;
            return Err(WorkflowError::failed(format!(
                "the chain refused the grant of {subject}: {reason} (its key was destroyed)"
            )));
        }
        Err(WorkflowError::StepFailed { message, .. }) => {
            set_status(ctx, &format!("{prefix}discard"), &generated.id, |record| {
                record.status = EphemeralStatus::Failed;
                record.sealed_key = None;
            })
            .await?;
            return Err(WorkflowError::failed(format!(
                "cannot grant {subject}: {message} (its key was destroyed)"
            )));
        }
        Err(other) => return Err(other),
    };
    let tx = grant_tx.clone();
    set_status(
        ctx,
        &format!("{prefix}activate"),
        &generated.id,
        move |record| {
            record.status = EphemeralStatus::Active;
            record.grant_tx = Some(tx.clone());
        },
    )
    .await?;
    ctx.log(
        LogLevel::Info,
        format!(
            "ephemeral key {} is active: granted in block {height} (tx {grant_tx}), expires {}",
            generated.id,
            expires_at.to_rfc3339()
        ),
    );
    Ok(EphemeralKeyReport {
        id: generated.id,
        address: generated.address,
        granter: input.granter.clone(),
        expires_at,
        grant_tx,
        height,
    })
}

/// Applies `change` to the stored record in a step (idempotent: the change sets
/// fields, so a repeat writes the same).
async fn set_status(
    ctx: &Ctx,
    step: &str,
    id: &str,
    change: impl Fn(&mut EphemeralRecord) + Send + Sync + 'static,
) -> WorkflowResult<()> {
    let (documents, id) = (ctx.documents(), id.to_owned());
    ctx.step(step)
        .run(move |_| async move {
            documents
                .update::<EphemeralRecord, morpheus_engine::EngineError, _>(
                    EPHEMERAL_KEYS_COLLECTION,
                    &id,
                    |record| {
                        change(record);
                        Ok(())
                    },
                )
                .await
                .map_err(StepError::retryable)?
                .ok_or_else(|| StepError::permanent(format!("ephemeral key {id} is not stored")))?;
            Ok(())
        })
        .await
}

/// What the revocation needs of the stored record.
#[derive(Debug, Serialize, Deserialize)]
struct Revocable {
    address: String,
    granter: String,
    status: EphemeralStatus,
    expires_at: DateTime<Utc>,
    revoke_tx: Option<String>,
}

/// Revokes `id`'s grants (unless they expired) and destroys its key material.
async fn revoke_key(
    ctx: &Ctx,
    id: &str,
    seconds_per_block: f64,
    prefix: &str,
) -> WorkflowResult<EphemeralRevokeReport> {
    let (documents, key_id) = (ctx.documents(), id.to_owned());
    let stored: Revocable = ctx
        .step(format!("{prefix}load"))
        .run(move |_| async move {
            let record = documents
                .get::<EphemeralRecord>(EPHEMERAL_KEYS_COLLECTION, &key_id)
                .await
                .map_err(StepError::retryable)?
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "ephemeral key {key_id} is unknown (`morpheus keys ephemeral list` shows the keys)"
                    ))
                })?
                .value;
            Ok(Revocable {
                address: record.address,
                granter: record.granter,
                status: record.status,
                expires_at: record.expires_at,
                revoke_tx: record.revoke_tx,
            })
        })
        .await?;
    if stored.status == EphemeralStatus::Revoked {
        ctx.log(
            LogLevel::Info,
            format!("ephemeral key {id} was already revoked"),
        );
        return Ok(EphemeralRevokeReport {
            id: id.to_owned(),
            revoke_tx: stored.revoke_tx,
        });
    }
    let now = ctx.now().await?;
    let revoke_tx = if stored.status == EphemeralStatus::Active && stored.expires_at > now {
        let sign = serde_json::to_value(CosmosRequest::SignRevokeEphemeral {
            grantee: stored.address.clone(),
            granter: Some(stored.granter.clone()),
            memo: None,
        })?;
        let subject = format!("ephemeral key {id}");
        let (tx, height) = submit_once(
            ctx,
            &Submission {
                sign,
                seconds_per_block,
                steps: &format!("{prefix}revoke"),
                subject: &subject,
            },
        )
        .await?
        .map_err(|reason| {
            WorkflowError::failed(format!(
                "the chain refused to revoke {subject}'s grants: {reason} (the key is kept)"
            ))
        })?;
        ctx.log(
            LogLevel::Info,
            format!("revoked every grant of ephemeral key {id} in block {height} (tx {tx})"),
        );
        Some(tx)
    } else {
        ctx.log(
            LogLevel::Info,
            format!(
                "ephemeral key {id} holds no live grant (status {}, expiry {}): nothing to revoke on chain",
                stored.status,
                stored.expires_at.to_rfc3339()
            ),
        );
        None
    };
    let tx = revoke_tx.clone();
    set_status(ctx, &format!("{prefix}destroy"), id, move |record| {
        record.status = EphemeralStatus::Revoked;
        record.sealed_key = None;
        record.revoke_tx = tx.clone();
    })
    .await?;
    ctx.log(
        LogLevel::Info,
        format!("ephemeral key {id}: key material destroyed"),
    );
    Ok(EphemeralRevokeReport {
        id: id.to_owned(),
        revoke_tx,
    })
}
