//! The `cosmos` executor: reads Akash chain state and signs and broadcasts escrow
//! deposits and deployment transactions (create a deployment, lease a bid, close the
//! deployment) over a node's REST (LCD) API, and talks to a lease's provider (send the
//! manifest, read the lease's status), with keys that never leave the process.
//!
//! # Exactly-once transactions
//!
//! A step body may run more than once (a crash between the effect and its checkpoint
//! re-runs it), so signing and broadcasting are separate operations, and a workflow
//! does them in separate steps:
//!
//! 1. `sign_deposit` (or `sign_create_deployment`, `sign_create_lease`,
//!    `sign_close_deployment`) — its output (the signed bytes and their hash) is
//!    journaled *before* anything is sent. Re-running it could sign a different
//!    transaction; the journal makes sure it does not run again once recorded.
//! 2. `broadcast {tx_bytes_b64}` — sends exactly those bytes and waits for the
//!    block. Running it again (after a crash, on another worker) sends the same bytes:
//!    same hash, so the chain applies them at most once. "Already in the cache" and
//!    "already in a block" are success.
//! 3. If `broadcast` fails with [`SEQUENCE_MISMATCH`] (another transaction of the
//!    account used the sequence first), the workflow asks `tx_status {tx_hash}` and
//!    `account {}`, and signs anew only if [`can_resign`] says the persisted
//!    one provably never landed (not on chain *and* the account's sequence is past the
//!    transaction's). Otherwise it broadcasts or waits again.
//!
//! Caveat: `tx_status` relies on the node's transaction index; use a node that keeps
//! it (`index-events`/`tx_index` not disabled, pruning longer than the retry window).
//!
//! # Payload contract
//!
//! A payload is a JSON object with `"op"` (see [`CosmosRequest`]). Addresses default
//! to the executor's own; `dseq`s may be strings or numbers; amounts are integer
//! strings of base units (`"5000000"`) or coins (`"5000000uakt"`).
//!
//! | op | payload | output |
//! |---|---|---|
//! | `latest_height` | `{}` | [`LatestHeight`] `{"height": 812, "chain_id": "akashnet-2", "time": "…"}` |
//! | `account` | `{"address"?}` | [`AccountInfo`] `{"address", "exists": true, "account_number": 7, "sequence": 12}` |
//! | `balance` | `{"address"?, "denom"?}` | [`BalanceInfo`] `{"address", "denom": "uakt", "amount": "499000000"}` |
//! | `deployments` | `{"owner"?, "dseqs"?: ["1002"], "include_closed"?: false}` | [`DeploymentsInfo`] `{"owner", "deployments": [{"dseq": "1002", "state": "active", "escrow_state": "open", "escrow_funds": "118000", "escrow_denom": "uakt", "settled_at": 812}], "missing": []}` |
//! | `leases` | `{"owner"?, "dseqs"?}` | [`LeaseRates`] `{"owner", "rates": [{"dseq": "1002", "rate_per_block": "100", "denom": "uakt", "leases": 2}]}` |
//! | `sign_deposit` | `{"owner"?, "dseq": "1002", "amount": "2800000uakt", "memo"?}` | [`SignedDeposit`] `{"tx_bytes_b64", "tx_hash", "chain_id", "account_number", "sequence", "signer", "msg_type", "owner", "dseq", "amount", "denom", "gas_limit", "fee"}` |
//! | `sign_create_deployment` | `{"dseq": "1002", "groups": [<SDL.groups() shape>], "hash_hex": "<64 hex>", "deposit": "5000000uakt", "memo"?}` | [`SignedTx`] `{"tx_bytes_b64", "tx_hash", "chain_id", "account_number", "sequence", "signer", "msg_type", "dseq", "gas_limit", "fee"}` |
//! | `sign_close_deployment` | `{"dseq", "memo"?}` | [`SignedTx`] |
//! | `sign_create_lease` | `{"dseq", "gseq": 1, "oseq": 1, "provider": "akash1…", "bseq": 0, "memo"?}` | [`SignedTx`] |
//! | `bids` | `{"owner"?, "dseq", "state"?: "open"}` | [`Bids`] `{"bids": [{"dseq": "1002", "gseq": 1, "oseq": 1, "provider", "bseq": 0, "state": "open", "price": {"denom": "uakt", "amount": "12.5"}}]}` |
//! | `provider` | `{"address"}` | [`ProviderInfo`] `{"address", "host_uri", "attributes": [{"key", "value"}]}` |
//! | `send_manifest` | `{"host_uri", "dseq", "manifest_json": "<sorted JSON text>"}` | [`ManifestSent`] `{"status": 200, "host_uri"}` |
//! | `lease_status` | `{"host_uri", "dseq", "gseq", "oseq"}` | [`LeaseStatus`] `{"ready": true, "services": {"web": {"available": 1, "total": 1, "uris": ["127.0.0.1:32768"], "ready_replicas": 1}}, "forwarded_ports": {…}}` |
//! | `broadcast` | `{"tx_bytes_b64"}` | [`BroadcastResult`] `{"tx_hash", "height": 815, "code": 0, "gas_used": 81234, "already_known": false}` |
//! | `tx_status` | `{"tx_hash"}` | [`TxStatus`] `{"tx_hash", "found": true, "height": 815, "code": 0, "raw_log": ""}` |
//!
//! `deployments` reads `/akash/deployment/{deployments_api}/deployments/list`
//! (`filters.owner`, `filters.state=active` unless `include_closed`) or, with `dseqs`,
//! `…/deployments/info?id.owner=…&id.dseq=…` per dseq. From each
//! `QueryDeploymentResponse` it uses `deployment.id.dseq` (v1beta3:
//! `deployment.deployment_id.dseq`), `deployment.state`, and the escrow funds in the
//! configured denom: the sum of `escrow_account.state.funds[].amount` (v1beta3:
//! `escrow_account.balance.amount` + `escrow_account.funds.amount`), with
//! `escrow_account.state.state` and `settled_at`. `leases` reads
//! `/akash/market/{leases_api}/leases/list?filters.owner=…&filters.state=active` and
//! sums `lease.price.amount` of active leases per `lease.id.dseq` (v1beta4:
//! `lease.lease_id`). Both follow `pagination.next_key`, as does `bids`
//! (`/akash/market/{leases_api}/bids/list?filters.owner=…&filters.dseq=…[&filters.state=…]`,
//! `bid.id` or v1beta4's `bid.bid_id`). `provider` reads
//! `/akash/provider/v1beta4/providers/{address}`.
//!
//! The three deployment messages are signed by the executor's own address, which owns
//! the deployment; their encoding (field numbers checked against Akash's SDK) is in
//! [`MsgCreateDeployment`], [`MsgCloseDeployment`] and [`MsgCreateLease`], and
//! `groups` become protobuf groups through [`groups_from_json`].
//!
//! # Providers
//!
//! `send_manifest` sends `PUT {host_uri}/deployment/{dseq}/manifest` with the manifest
//! text as the body, `lease_status` `GET {host_uri}/lease/{dseq}/{gseq}/{oseq}/status`;
//! both with `Authorization: Bearer <JWT>`, a token minted for the call from the
//! executor's key as Akash's SDK mints it ([`mint_provider_jwt`]: `ES256KADR36`, valid
//! for [`DEFAULT_PROVIDER_JWT_TTL`]). The token appears in no output, error or log
//! line. A provider's 4xx is a permanent error quoting its answer; 5xx, 429 and
//! connection failures are retryable (sending the same manifest again is harmless).
//! `lease_status` is `ready` when every service has all its replicas available.
//!
//! # Errors
//!
//! Retryable: the node is unreachable, slow, answers 5xx/429 or malformed JSON (after
//! in-process retries with backoff), the mempool is full, a broadcast transaction is
//! not in a block within `timeouts.confirm` (broadcasting the same bytes again is
//! safe), the run's lease lapsed before `broadcast` sent anything (checked at the last
//! moment, so a worker frozen past its lease sends nothing). Permanent: a bad payload or address, no key configured, chain id mismatch
//! (checked against the node before the first signature), an account that does not
//! exist, and these failures of `broadcast`, each with a stable code (what callers
//! match, on `WorkflowError::StepFailed { code, .. }`) and a message prefix (what an
//! operator reads; the journal stores the message, and a replay reads the code back
//! from it through `Executor::error_code`):
//!
//! - [`SEQUENCE_MISMATCH`], `sequence mismatch:` ([`SEQUENCE_MISMATCH_PREFIX`]) — see
//!   above;
//! - [`TX_REJECTED`], `tx rejected:` ([`TX_REJECTED_PREFIX`]) — refused at check time
//!   (bad signature → code 4, insufficient funds → 5, insufficient fee → 13, unknown
//!   or closed deployment, …): it will never be included;
//! - [`TX_FAILED`], `tx failed:` ([`TX_FAILED_PREFIX`]) — included in a block but
//!   failed there (the fee was paid and the sequence used; no deposit happened).
//!
//! The signing operations with `gas = "simulate"` report what simulation finds
//! (insufficient funds, unknown deployment, …) as permanent errors before anything is
//! signed. Bad payloads (a hash that is not 64 hex digits, empty groups, a resource
//! value that is not a decimal integer, …) are permanent errors of one line naming the
//! field.
//!
//! # Keys and secrets
//!
//! The key comes from a mnemonic (BIP-39, derived at `hd_path`, default
//! `m/44'/118'/0'/0/0`) or a hex private key, in an environment variable or a file
//! whose *name* is configured ([`KeySource`]). It is read once at start-up. No
//! output, error or log line of this executor contains it, nor a provider JWT made
//! with it; outputs hold only public data (addresses, signed transactions, hashes).

mod akash;
mod amount;
mod config;
pub mod ephemeral;
mod keys;
mod market;
mod ops;
mod provider_api;
mod provider_jwt;
mod rest;
mod tx;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use morpheus_engine::{ErrorCode, ExecError, ExecOutput, ExecRequest, Executor, StepError};

pub use akash::{
    parse_deployment_xid, DepositIntent, DepositSource, EscrowAccountId, EscrowScope,
    InvalidEscrowId, MsgAccountDeposit, MsgDepositDeployment, MSG_ACCOUNT_DEPOSIT_TYPE_URL,
    MSG_DEPOSIT_DEPLOYMENT_TYPE_URL,
};
pub use akash::{DeploymentId, Deposit};
pub use amount::{validate_denom, AmountError, Coin, DecCoin, Decimal};
pub use config::{
    ConfigError, CosmosConfig, DeploymentsApi, Gas, KeySource, LeasesApi, MsgVersion, Timeouts,
};
pub use keys::{KeyError, Signer};
pub use market::{
    groups_from_json, parse_manifest_hash, Attribute, BidId, Cpu, Endpoint, EndpointKind, Gpu,
    GroupSpec, InvalidGroups, Memory, MsgCloseDeployment, MsgCreateDeployment, MsgCreateLease,
    PlacementRequirements, ResourceUnit, ResourceValue, Resources, SignedBy, Storage,
    MSG_CLOSE_DEPLOYMENT_TYPE_URL, MSG_CREATE_DEPLOYMENT_TYPE_URL, MSG_CREATE_LEASE_TYPE_URL,
};
pub use ops::{
    can_resign, AccountInfo, BalanceInfo, Bid, BidPrice, Bids, BroadcastResult, CosmosRequest,
    DeploymentInfo, DeploymentsInfo, DepositGrantInfo, LatestHeight, LeaseRate, LeaseRates,
    LeaseStatus, ManifestSent, ProviderAttribute, ProviderInfo, ServiceStatus, SignedDeposit,
    SignedTx, TxStatus, SEQUENCE_MISMATCH, SEQUENCE_MISMATCH_PREFIX, TX_FAILED, TX_FAILED_PREFIX,
    TX_REJECTED, TX_REJECTED_PREFIX,
};
pub use provider_jwt::{mint_provider_jwt, DEFAULT_PROVIDER_JWT_TTL};
pub use tx::{tx_hash, tx_sequence, TxDecodeError};

use ops::{Call, Client};

/// Executor of kind `"cosmos"` (see the [module docs](self) for its operations).
#[derive(Clone)]
pub struct CosmosExecutor {
    client: Arc<Client>,
}

impl std::fmt::Debug for CosmosExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosExecutor")
            .field("rest_url", &self.client.settings.rest_url)
            .field("chain_id", &self.client.settings.chain_id)
            .field("signer", &self.client.signer)
            .finish()
    }
}

/// Why an executor could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl CosmosExecutor {
    /// Checks `config` and loads the key it points to (if any).
    pub fn new(config: &CosmosConfig) -> Result<Self, SetupError> {
        let signer = match &config.key {
            Some(source) => Some(Signer::load(
                source,
                &config.hd_path,
                &config.account_prefix,
            )?),
            None => None,
        };
        Self::build(config, signer)
    }

    /// Like [`CosmosExecutor::new`] but with a key the caller already holds (the
    /// configured `key`, if any, is ignored).
    pub fn with_signer(config: &CosmosConfig, signer: Signer) -> Result<Self, SetupError> {
        Self::build(config, Some(signer))
    }

    fn build(config: &CosmosConfig, signer: Option<Signer>) -> Result<Self, SetupError> {
        let settings = config.settings()?;
        if let Some(signer) = &signer {
            if !signer
                .address()
                .starts_with(&format!("{}1", settings.account_prefix))
            {
                return Err(ConfigError(format!(
                    "the key's address {} does not use account_prefix '{}'",
                    signer.address(),
                    settings.account_prefix
                ))
                .into());
            }
        }
        let rest = rest::Rest::new(
            &settings.rest_url,
            settings.timeouts.request,
            settings.timeouts.http_attempts,
        )
        .map_err(ConfigError)?;
        let providers =
            provider_api::ProviderApi::new(settings.timeouts.request).map_err(ConfigError)?;
        Ok(Self {
            client: Arc::new(Client {
                settings,
                rest,
                signer: signer.map(Arc::new),
                chain_id_checked: OnceLock::new(),
                audit: None,
                providers,
                ephemeral_settings: config.ephemeral.clone(),
                ephemeral: None,
            }),
        })
    }

    /// Lets the executor open the ephemeral keys `[cosmos] ephemeral` names from
    /// `documents` (the engine's document store). Call right after building the
    /// executor; without it a configured `ephemeral` fails every signing step.
    pub fn with_ephemeral_keys(mut self, documents: morpheus_engine::Documents) -> Self {
        let client = Arc::get_mut(&mut self.client)
            .expect("with_ephemeral_keys is called on a freshly built executor");
        if let Some(settings) = client.ephemeral_settings.clone() {
            client.ephemeral = Some(ephemeral::EphemeralKeyring::new(
                documents,
                settings,
                &client.settings.account_prefix,
            ));
        }
        self
    }

    /// Records every transaction this executor signs in `audit` (the key audit), before
    /// the signed bytes are returned. Call right after building the executor.
    pub fn with_signature_audit(mut self, audit: crate::audit::SignatureAudit) -> Self {
        Arc::get_mut(&mut self.client)
            .expect("with_signature_audit is called on a freshly built executor")
            .audit = Some(audit);
        self
    }

    /// The executor's own address, if it has a key.
    pub fn address(&self) -> Option<&str> {
        self.client.signer.as_deref().map(Signer::address)
    }

    /// A fresh provider JWT of the executor's key (as `send_manifest` sends; Akash's
    /// `JwtTokenManager` shape, short expiry), for clients that talk to a lease's
    /// provider themselves (the app's logs); `None` without a key.
    pub fn provider_jwt(&self) -> Option<String> {
        self.client.signer.as_deref().map(|signer| {
            provider_jwt::mint_provider_jwt(
                signer,
                std::time::SystemTime::now(),
                provider_jwt::DEFAULT_PROVIDER_JWT_TTL,
            )
        })
    }

    /// Runs one operation: [`Executor::call`] with a typed payload.
    pub async fn execute(
        &self,
        request: CosmosRequest,
        call: &ExecRequest,
    ) -> Result<serde_json::Value, StepError> {
        let context = Call {
            idempotency_key: &call.idempotency_key,
            lease: &call.lease,
            deadline: call.deadline,
            logs: &call.logs,
        };
        self.client.run(request, &context).await
    }
}

#[async_trait]
impl Executor for CosmosExecutor {
    fn kind(&self) -> &str {
        "cosmos"
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        let payload: CosmosRequest = serde_json::from_value(request.payload.clone())
            .map_err(|error| StepError::permanent(format!("invalid cosmos payload: {error}")))?;
        self.execute(payload, &request).await
    }

    fn error_code(&self, message: &str) -> Option<ErrorCode> {
        ops::error_code(message)
    }
}
