//! The `akash.deploy` and `akash.close` workflows: a project on Akash, one durable run.
//!
//! `akash.deploy`: build and push the image (when the project has a build section; the
//! docker executor's `build_image`, by digest) → synthesize the SDL, manifest, version and
//! groups (a journaled step, so a resumed run sends what it signed) → create the
//! deployment → wait for bids (durable sleeps, a deadline) → choose one per group with
//! the pure [`choose_bid`] (every decision logged with its numbers) → create the lease →
//! send the manifest to the provider → poll the lease until its services are ready →
//! report dseq, provider, lease and URIs.
//!
//! Every transaction goes through the `cosmos` executor's exactly-once path (signed and
//! journaled before broadcast, the same bytes on resume: [`submit_once`]). Sending the
//! manifest again is harmless (the provider's PUT is idempotent); a second deployment or
//! lease for one run never happens, because the sign steps are journaled.
//!
//! Once the deployment exists, any failure — no acceptable bid by the deadline, a lease
//! the chain refuses, a provider that refuses the manifest, services that never become
//! ready, a step that ran out of attempts — closes the deployment (its escrow comes back)
//! and fails the run naming why.
//!
//! `akash.close`: `MsgCloseDeployment`, exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use morpheus_engine::{
    async_trait, Ctx, InvalidInput, LogLevel, StepError, Workflow, WorkflowError, WorkflowResult,
};
use morpheus_executors::cosmos::{AccountInfo, LatestHeight};
use morpheus_executors::image_build::{BuildImageSpec, PushedImage};
use morpheus_executors::sealed::SecretKey;
use morpheus_executors::DockerRequest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::bids::{choose_bid, BidDecision, BidPolicy, Candidate};
use super::manifest::manifest_version;
use super::project::Project;
use super::{secrets, synthesize};
use crate::deploy::secrets::Masker;
use crate::escrow::{chain_step, dseq_number, submit_once, Submission};
use crate::topup::decide::Dec;
use crate::topup::workflow::DEFAULT_SECONDS_PER_BLOCK;

/// Input of `akash.deploy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkashDeployInput {
    /// The project's `morpheus.yaml`, as text.
    pub project_yaml: String,
    /// The image build, when the project has a build section (the CLI captures the
    /// context and plans it); the SDL then runs the pushed image by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildImageSpec>,
    /// The deployment's owner: the `cosmos` executor's key must be this address.
    pub owner: String,
    /// The deployment's first escrow deposit (`5000000uakt`).
    #[serde(default = "default_deposit")]
    pub deposit: String,
    /// Which bids are acceptable.
    #[serde(default)]
    pub bids: BidPolicy,
    /// Collect bids at least this long after the deployment is created before choosing.
    #[serde(default = "default_bid_window_s")]
    pub bid_window_s: f64,
    /// No acceptable bid for every group this long after creation: close and fail.
    #[serde(default = "default_bid_timeout_s")]
    pub bid_timeout_s: f64,
    /// Services not ready this long after the manifest was accepted: close and fail.
    #[serde(default = "default_ready_timeout_s")]
    pub ready_timeout_s: f64,
    /// How often bids and the lease status are polled (default: one block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_s: Option<f64>,
    /// Seconds per block.
    #[serde(default = "default_seconds_per_block")]
    pub seconds_per_block: f64,
}

fn default_deposit() -> String {
    "5000000uakt".into()
}
fn default_bid_window_s() -> f64 {
    18.0
}
fn default_bid_timeout_s() -> f64 {
    300.0
}
fn default_ready_timeout_s() -> f64 {
    600.0
}
fn default_seconds_per_block() -> f64 {
    DEFAULT_SECONDS_PER_BLOCK
}

/// What the synthesis step journals: exactly what the deployment is created with and
/// what the provider is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Synthesized {
    /// The image the SDL runs.
    pub image: String,
    /// The SDL.
    pub sdl_yaml: String,
    /// The manifest's sorted JSON (what the provider is sent).
    pub manifest_sorted_json: String,
    /// Its SHA-256, hex (the deployment's hash).
    pub manifest_version: String,
    /// The deployment groups, in the SDK's `groups()` shape.
    pub groups: Value,
    /// Whether the manifest holds sealed values (opened only for the upload; the
    /// version is the opened manifest's hash).
    #[serde(default)]
    pub sealed: bool,
}

/// One lease of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// The group.
    pub gseq: u32,
    /// The order.
    pub oseq: u32,
    /// The provider.
    pub provider: String,
    /// The bid sequence.
    pub bseq: u32,
    /// Price per block, with its denom.
    pub price: String,
    /// The provider's API.
    pub host_uri: String,
    /// The `MsgCreateLease` transaction.
    pub tx_hash: String,
}

/// Output of `akash.deploy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AkashDeployReport {
    /// The owner.
    pub owner: String,
    /// The deployment.
    pub dseq: String,
    /// The image it runs.
    pub image: String,
    /// The manifest version, hex.
    pub manifest_version: String,
    /// The `MsgCreateDeployment` transaction.
    pub create_tx: String,
    /// Its leases, one per group.
    pub leases: Vec<LeaseReport>,
    /// Each service's URIs, as the provider reports them.
    pub uris: BTreeMap<String, Vec<String>>,
}

/// An open bid as the `cosmos` executor's `bids` op lists it.
#[derive(Debug, Clone, Deserialize)]
struct BidInfo {
    gseq: u32,
    oseq: u32,
    provider: String,
    bseq: u32,
    price: BidPrice,
}

#[derive(Debug, Clone, Deserialize)]
struct BidPrice {
    denom: String,
    amount: String,
}

#[derive(Debug, Deserialize)]
struct BidsInfo {
    bids: Vec<BidInfo>,
}

#[derive(Debug, Deserialize)]
struct ProviderInfo {
    host_uri: String,
    #[serde(default)]
    attributes: Vec<AttributeInfo>,
}

#[derive(Debug, Deserialize)]
struct AttributeInfo {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct LeaseStatus {
    ready: bool,
    #[serde(default)]
    services: BTreeMap<String, ServiceStatus>,
}

#[derive(Debug, Deserialize)]
struct ServiceStatus {
    #[serde(default)]
    uris: Vec<String>,
    #[serde(default)]
    available: u64,
    #[serde(default)]
    total: u64,
}

/// The `akash.deploy` workflow.
#[derive(Clone, Default)]
pub struct AkashDeploy {
    secrets_key: Option<Arc<SecretKey>>,
}

impl AkashDeploy {
    /// The workflow, opening the project's sealed values with `secrets_key` (`[secrets]
    /// key`); without one, a project with a sealed value fails before anything is
    /// created on chain.
    pub fn new(secrets_key: Option<Arc<SecretKey>>) -> Self {
        Self { secrets_key }
    }
}

impl std::fmt::Debug for AkashDeploy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkashDeploy")
            .field("secrets_key", &self.secrets_key.is_some())
            .finish()
    }
}

fn positive(name: &str, value: f64) -> Result<(), InvalidInput> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "{name}: must be a positive number of seconds"
        )))
    }
}

fn check_owner(owner: &str) -> Result<(), InvalidInput> {
    if owner.starts_with("akash1") && owner.len() >= 20 {
        Ok(())
    } else {
        Err(InvalidInput::new(format!(
            "owner: '{owner}' is not an Akash address (akash1…)"
        )))
    }
}

#[async_trait]
impl Workflow for AkashDeploy {
    const NAME: &'static str = "akash.deploy";
    type Input = AkashDeployInput;
    type Output = AkashDeployReport;

    fn validate(&self, input: &AkashDeployInput) -> Result<(), InvalidInput> {
        check_owner(&input.owner)?;
        let project = Project::from_yaml(&input.project_yaml)
            .map_err(|error| InvalidInput::new(format!("project_yaml: {error}")))?;
        secrets::check_sealed(&project)
            .map_err(|error| InvalidInput::new(format!("project_yaml: {error}")))?;
        crate::topup::decide::parse_coin(&input.deposit, &input.bids.denom)
            .map_err(|error| InvalidInput::new(format!("deposit: {error}")))?;
        positive("bid_timeout_s", input.bid_timeout_s)?;
        positive("ready_timeout_s", input.ready_timeout_s)?;
        positive("seconds_per_block", input.seconds_per_block)?;
        if let Some(poll) = input.poll_s {
            positive("poll_s", poll)?;
        }
        if !(input.bid_window_s >= 0.0 && input.bid_window_s < input.bid_timeout_s) {
            return Err("bid_window_s: must be at least 0 and less than bid_timeout_s".into());
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: AkashDeployInput) -> WorkflowResult<AkashDeployReport> {
        check_signer(ctx, &input.owner).await?;
        let image = match &input.build {
            Some(build) => {
                let pushed: PushedImage = ctx
                    .step("build")
                    .executor("docker")
                    .timeout(Duration::from_secs(1800))
                    .call_as(&DockerRequest::BuildImage(build.clone()))
                    .await?;
                ctx.log(
                    LogLevel::Info,
                    format!("image {} ({:?})", pushed.by_digest, pushed.source),
                );
                pushed.by_digest
            }
            None => {
                Project::from_yaml(&input.project_yaml)
                    .map_err(|error| WorkflowError::failed(format!("project_yaml: {error}")))?
                    .image
            }
        };
        let synthesized =
            synthesize_step(ctx, &input.project_yaml, &image, self.secrets_key.clone()).await?;
        ctx.log(
            LogLevel::Info,
            format!(
                "synthesized the SDL: manifest version {}, {} group(s)",
                synthesized.manifest_version,
                synthesized.groups.as_array().map_or(0, Vec::len)
            ),
        );
        // Akash clients number a deployment by the height they create it at.
        let latest: LatestHeight = chain_step(ctx, "height")
            .call_as(&json!({"op": "latest_height"}))
            .await?;
        let dseq = latest.height.to_string();
        let subject = format!("dseq={dseq}");
        let created = submit_once(
            ctx,
            &Submission {
                sign: json!({
                    "op": "sign_create_deployment",
                    "dseq": dseq,
                    "groups": synthesized.groups,
                    "hash_hex": synthesized.manifest_version,
                    "deposit": input.deposit,
                }),
                seconds_per_block: input.seconds_per_block,
                steps: "deployment/create",
                subject: &subject,
            },
        )
        .await?;
        let (create_tx, height) = created.map_err(|reason| {
            WorkflowError::failed(format!("the chain refused the deployment: {reason}"))
        })?;
        ctx.log(
            LogLevel::Info,
            format!(
                "created deployment {subject} in block {height} (tx {create_tx}), deposit {}",
                input.deposit
            ),
        );
        let created_at = ctx.now().await?;
        let deploy = Deployment {
            ctx,
            input: &input,
            dseq: &dseq,
            subject: &subject,
            poll: Duration::from_secs_f64(input.poll_s.unwrap_or(input.seconds_per_block)),
            secrets_key: self.secrets_key.as_deref(),
        };
        let outcome = match deploy.lease_and_start(created_at, &synthesized).await {
            Ok(outcome) => outcome,
            Err(error) if error.is_control_flow() => return Err(error),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok((leases, uris)) => {
                let report = AkashDeployReport {
                    owner: input.owner.clone(),
                    dseq: dseq.clone(),
                    image: synthesized.image.clone(),
                    manifest_version: synthesized.manifest_version.clone(),
                    create_tx,
                    leases,
                    uris,
                };
                ctx.log(
                    LogLevel::Info,
                    format!(
                        "deployment {subject} is running: {}",
                        uri_summary(&report.uris)
                    ),
                );
                Ok(report)
            }
            Err(reason) => {
                ctx.log(
                    LogLevel::Error,
                    format!("{subject}: {reason}; closing the deployment so its escrow comes back"),
                );
                let closed = close_once(ctx, &dseq, &subject, input.seconds_per_block).await?;
                let closing = match closed {
                    Ok((tx_hash, _)) => format!("deployment closed (tx {tx_hash})"),
                    Err(close_error) => format!("closing it failed too: {close_error}"),
                };
                Err(WorkflowError::failed(format!("{reason}; {closing}")))
            }
        }
    }
}

/// Fails the run before anything is built or sent when the `cosmos` executor's key is
/// not the owner's (every message of a deployment is signed by its owner).
async fn check_signer(ctx: &Ctx, owner: &str) -> WorkflowResult<()> {
    let account: AccountInfo = chain_step(ctx, "signer")
        .call_as(&json!({"op": "account"}))
        .await?;
    if account.address != owner {
        return Err(WorkflowError::failed(format!(
            "owner: the cosmos executor signs as {}, not as the owner {owner}",
            account.address
        )));
    }
    Ok(())
}

/// Synthesizes in a step so that the journal holds what was signed: a resumed run (or a
/// newer binary) sends the provider the very manifest whose hash is on chain.
///
/// With sealed values the journal holds the sealed SDL and manifest; the version is the
/// hash of the opened manifest (what the provider receives and hashes), opened here in
/// memory and dropped.
async fn synthesize_step(
    ctx: &Ctx,
    project_yaml: &str,
    image: &str,
    secrets_key: Option<Arc<SecretKey>>,
) -> WorkflowResult<Synthesized> {
    let (project_yaml, image) = (project_yaml.to_owned(), image.to_owned());
    ctx.step("synthesize")
        .run(move |_| async move {
            let mut project = Project::from_yaml(&project_yaml)
                .map_err(|error| StepError::permanent(format!("project_yaml: {error}")))?;
            project.image = image.clone();
            let synthesis = synthesize(&project)
                .map_err(|error| StepError::permanent(format!("SDL synthesis: {error}")))?;
            let groups = serde_json::to_value(&synthesis.groups).map_err(StepError::permanent)?;
            let sealed = secrets::has_sealed(&project);
            let manifest_version = if sealed {
                let (opened, _) = secrets::open_manifest(
                    &synthesis.manifest_sorted_json,
                    secrets_key.as_deref(),
                )?;
                hex::encode(manifest_version(&opened))
            } else {
                synthesis.manifest_version_hex
            };
            Ok(Synthesized {
                image,
                sdl_yaml: synthesis.sdl_yaml,
                manifest_sorted_json: synthesis.manifest_sorted_json,
                manifest_version,
                groups,
                sealed,
            })
        })
        .await
}

fn uri_summary(uris: &BTreeMap<String, Vec<String>>) -> String {
    uris.iter()
        .map(|(service, uris)| format!("{service} → {}", uris.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `MsgCloseDeployment` exactly once, under the step names both workflows use.
async fn close_once(
    ctx: &Ctx,
    dseq: &str,
    subject: &str,
    seconds_per_block: f64,
) -> WorkflowResult<Result<(String, u64), String>> {
    submit_once(
        ctx,
        &Submission {
            sign: json!({"op": "sign_close_deployment", "dseq": dseq}),
            seconds_per_block,
            steps: "deployment/close",
            subject,
        },
    )
    .await
}

/// The part of a deploy that runs once the deployment exists: its failures close it.
struct Deployment<'a> {
    ctx: &'a Ctx,
    input: &'a AkashDeployInput,
    dseq: &'a str,
    subject: &'a str,
    poll: Duration,
    secrets_key: Option<&'a SecretKey>,
}

type Started = (Vec<LeaseReport>, BTreeMap<String, Vec<String>>);

impl Deployment<'_> {
    /// `Ok(Err(reason))`: the deploy failed for a reason the run names; the deployment
    /// must be closed.
    async fn lease_and_start(
        &self,
        created_at: DateTime<Utc>,
        synthesized: &Synthesized,
    ) -> WorkflowResult<Result<Started, String>> {
        let groups = synthesized.groups.as_array().map_or(0, Vec::len) as u32;
        let chosen = match self.wait_for_bids(created_at, groups).await? {
            Ok(chosen) => chosen,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut leases = Vec::new();
        for bid in chosen {
            let steps = format!("lease/{}", bid.gseq);
            let leased = submit_once(
                self.ctx,
                &Submission {
                    sign: json!({
                        "op": "sign_create_lease",
                        "dseq": self.dseq,
                        "gseq": bid.gseq,
                        "oseq": bid.oseq,
                        "provider": bid.provider,
                        "bseq": bid.bseq,
                    }),
                    seconds_per_block: self.input.seconds_per_block,
                    steps: &steps,
                    subject: self.subject,
                },
            )
            .await?;
            let (tx_hash, height) = match leased {
                Ok(landed) => landed,
                Err(reason) => {
                    return Ok(Err(format!(
                        "the chain refused the lease with {}: {reason}",
                        bid.provider
                    )))
                }
            };
            let provider: ProviderInfo = chain_step(self.ctx, format!("{steps}/provider"))
                .call_as(&json!({"op": "provider", "address": bid.provider}))
                .await?;
            self.ctx.log(
                LogLevel::Info,
                format!(
                    "{} leased group {} from {} at {}{}/block in block {height} (tx {tx_hash}); provider API {}",
                    self.subject, bid.gseq, bid.provider, bid.price, bid.denom, provider.host_uri
                ),
            );
            leases.push(LeaseReport {
                gseq: bid.gseq,
                oseq: bid.oseq,
                provider: bid.provider.clone(),
                bseq: bid.bseq,
                price: format!("{}{}", bid.price, bid.denom),
                host_uri: provider.host_uri,
                tx_hash,
            });
        }
        // One manifest per provider (a provider running two groups takes it once).
        let hosts: BTreeSet<&str> = leases.iter().map(|lease| lease.host_uri.as_str()).collect();
        for host in hosts {
            // Opened here, in memory only: a step's request is not journaled, its
            // output (the answer's status) holds nothing of the manifest.
            let (manifest_json, masker) = if synthesized.sealed {
                let (opened, masker) = match secrets::open_manifest(
                    &synthesized.manifest_sorted_json,
                    self.secrets_key,
                ) {
                    Ok(opened) => opened,
                    Err(error) => return Ok(Err(error.message().to_owned())),
                };
                if hex::encode(manifest_version(&opened)) != synthesized.manifest_version {
                    return Ok(Err(
                        "the opened manifest's hash is not the deployment's version: was [secrets] key changed since the deployment was created?".to_owned(),
                    ));
                }
                (opened, masker)
            } else {
                (
                    Zeroizing::new(synthesized.manifest_sorted_json.clone()),
                    Masker::default(),
                )
            };
            let sent = chain_step(self.ctx, format!("manifest/{host}"))
                .timeout(Duration::from_secs(120))
                .call(json!({
                    "op": "send_manifest",
                    "host_uri": host,
                    "dseq": self.dseq,
                    "manifest_json": manifest_json.as_str(),
                }))
                .await;
            drop(manifest_json);
            match sent {
                Ok(_) => self.ctx.log(
                    LogLevel::Info,
                    format!("{} manifest accepted by {host}", self.subject),
                ),
                Err(WorkflowError::StepFailed { message, .. }) => {
                    return Ok(Err(format!(
                        "the provider refused the manifest: {}",
                        masker.mask(&message)
                    )))
                }
                Err(other) => return Err(other),
            }
        }
        match self.wait_until_ready(&leases).await? {
            Ok(uris) => Ok(Ok((leases, uris))),
            Err(reason) => Ok(Err(reason)),
        }
    }

    /// Polls the open bids until every group has an acceptable one (and the bid window
    /// has passed), then chooses; `Ok(Err)` when the deadline passes first.
    async fn wait_for_bids(
        &self,
        created_at: DateTime<Utc>,
        groups: u32,
    ) -> WorkflowResult<Result<Vec<Candidate>, String>> {
        let policy = &self.input.bids;
        let window = chrono::Duration::milliseconds((self.input.bid_window_s * 1000.0) as i64);
        let deadline =
            created_at + chrono::Duration::milliseconds((self.input.bid_timeout_s * 1000.0) as i64);
        let mut attributes: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for poll in 1.. {
            let listed: BidsInfo = chain_step(self.ctx, format!("bids/{poll}"))
                .call_as(&json!({"op": "bids", "dseq": self.dseq, "state": "open"}))
                .await?;
            let now = self.ctx.now().await?;
            let mut candidates: BTreeMap<u32, Vec<Candidate>> = BTreeMap::new();
            for bid in listed.bids {
                if !policy.required_attributes.is_empty() && !attributes.contains_key(&bid.provider)
                {
                    let info: ProviderInfo =
                        chain_step(self.ctx, format!("bids/{poll}/provider/{}", bid.provider))
                            .call_as(&json!({"op": "provider", "address": bid.provider}))
                            .await?;
                    attributes.insert(
                        bid.provider.clone(),
                        info.attributes
                            .into_iter()
                            .map(|a| (a.key, a.value))
                            .collect(),
                    );
                }
                let price: Dec = bid.price.amount.parse().map_err(|error| {
                    WorkflowError::failed(format!(
                        "bid from {}: price '{}' is not a decimal: {error}",
                        bid.provider, bid.price.amount
                    ))
                })?;
                candidates.entry(bid.gseq).or_default().push(Candidate {
                    attributes: attributes.get(&bid.provider).cloned().unwrap_or_default(),
                    provider: bid.provider,
                    gseq: bid.gseq,
                    oseq: bid.oseq,
                    bseq: bid.bseq,
                    price,
                    denom: bid.price.denom,
                });
            }
            let decisions: BTreeMap<u32, Vec<BidDecision>> = (1..=groups)
                .map(|gseq| {
                    let bids = candidates.remove(&gseq).unwrap_or_default();
                    (gseq, choose_bid(policy, &bids))
                })
                .collect();
            let complete = decisions
                .values()
                .all(|decisions| decisions.iter().any(BidDecision::chosen));
            if complete && now - created_at >= window {
                let mut chosen = Vec::new();
                for decisions in decisions.values() {
                    for decision in decisions {
                        self.ctx.log(LogLevel::Info, decision.log_line(policy));
                    }
                    chosen.extend(
                        decisions
                            .iter()
                            .filter(|d| d.chosen())
                            .map(|d| d.candidate.clone()),
                    );
                }
                return Ok(Ok(chosen));
            }
            if now >= deadline {
                let seen: usize = decisions.values().map(Vec::len).sum();
                for decision in decisions.values().flatten() {
                    self.ctx.log(LogLevel::Warn, decision.log_line(policy));
                }
                return Ok(Err(format!(
                    "no acceptable bid for every group within {}s ({seen} bid(s) seen)",
                    self.input.bid_timeout_s
                )));
            }
            if poll == 1 || poll % 10 == 0 {
                let seen: usize = decisions.values().map(Vec::len).sum();
                self.ctx.log(
                    LogLevel::Info,
                    format!("{} waiting for bids: {seen} so far", self.subject),
                );
            }
            self.ctx.sleep(self.poll).await?;
        }
        unreachable!("the poll loop only ends by returning")
    }

    /// Polls every lease's status until all its services are ready; `Ok(Err)` at the
    /// deadline.
    async fn wait_until_ready(
        &self,
        leases: &[LeaseReport],
    ) -> WorkflowResult<Result<BTreeMap<String, Vec<String>>, String>> {
        let started = self.ctx.now().await?;
        let deadline =
            started + chrono::Duration::milliseconds((self.input.ready_timeout_s * 1000.0) as i64);
        for poll in 1.. {
            let mut uris = BTreeMap::new();
            let mut waiting = Vec::new();
            for lease in leases {
                let status: LeaseStatus =
                    chain_step(self.ctx, format!("ready/{poll}/{}", lease.gseq))
                        .call_as(&json!({
                            "op": "lease_status",
                            "host_uri": lease.host_uri,
                            "dseq": self.dseq,
                            "gseq": lease.gseq,
                            "oseq": lease.oseq,
                        }))
                        .await?;
                for (name, service) in &status.services {
                    uris.insert(name.clone(), service.uris.clone());
                    if !status.ready {
                        waiting.push(format!("{name} {}/{}", service.available, service.total));
                    }
                }
                if !status.ready && status.services.is_empty() {
                    waiting.push(format!("group {} (no services yet)", lease.gseq));
                }
            }
            if waiting.is_empty() {
                return Ok(Ok(uris));
            }
            if self.ctx.now().await? >= deadline {
                return Ok(Err(format!(
                    "services not ready within {}s: {}",
                    self.input.ready_timeout_s,
                    waiting.join(", ")
                )));
            }
            if poll == 1 || poll % 10 == 0 {
                self.ctx.log(
                    LogLevel::Info,
                    format!(
                        "{} waiting for services: {}",
                        self.subject,
                        waiting.join(", ")
                    ),
                );
            }
            self.ctx.sleep(self.poll).await?;
        }
        unreachable!("the poll loop only ends by returning")
    }
}

/// Input of `akash.close`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkashCloseInput {
    /// The deployment's owner: the `cosmos` executor's key must be this address.
    pub owner: String,
    /// The deployment.
    pub dseq: String,
    /// Seconds per block.
    #[serde(default = "default_seconds_per_block")]
    pub seconds_per_block: f64,
}

/// Output of `akash.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AkashCloseReport {
    /// The deployment.
    pub dseq: String,
    /// The `MsgCloseDeployment` transaction.
    pub tx_hash: String,
    /// The block it landed in.
    pub height: u64,
}

/// The `akash.close` workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct AkashClose;

#[async_trait]
impl Workflow for AkashClose {
    const NAME: &'static str = "akash.close";
    type Input = AkashCloseInput;
    type Output = AkashCloseReport;

    fn validate(&self, input: &AkashCloseInput) -> Result<(), InvalidInput> {
        check_owner(&input.owner)?;
        if input.dseq.is_empty() || !input.dseq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidInput::new(format!(
                "dseq: '{}' is not a deployment sequence number",
                input.dseq
            )));
        }
        positive("seconds_per_block", input.seconds_per_block)
    }

    async fn run(&self, ctx: &Ctx, input: AkashCloseInput) -> WorkflowResult<AkashCloseReport> {
        dseq_number(&input.dseq)?;
        check_signer(ctx, &input.owner).await?;
        let subject = format!("dseq={}", input.dseq);
        let (tx_hash, height) = close_once(ctx, &input.dseq, &subject, input.seconds_per_block)
            .await?
            .map_err(|reason| {
                WorkflowError::failed(format!("the chain refused to close {subject}: {reason}"))
            })?;
        ctx.log(
            LogLevel::Info,
            format!("closed deployment {subject} in block {height} (tx {tx_hash}); its escrow went back to the owner"),
        );
        Ok(AkashCloseReport {
            dseq: input.dseq,
            tx_hash,
            height,
        })
    }
}
