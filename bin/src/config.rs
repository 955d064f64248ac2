//! `morpheus.toml`: optional configuration (path by `--config`, env `MORPHEUS_CONFIG`,
//! default `./morpheus.toml` when it exists). Environment variables and flags override
//! it. Secrets are never written here inline: only references (an env var name or a
//! file path).
//!
//! ```toml
//! [[schedules]]
//! name = "nightly-backup"
//! workflow = "shell"
//! input = { steps = [{ name = "backup", run = "pg_dump mydb > /backups/db.sql" }] }
//! cron = "0 3 * * *"          # or: every = "30s"
//! timezone = "Europe/Berlin"  # cron only; UTC when absent
//! overlap = "skip"            # skip | queue_one | allow
//! catch_up = "skip_missed"    # skip_missed | run_once | run_all
//! heartbeat_url = "https://hc-ping.com/<uuid>"  # pinged after each run; <url>/fail on failure
//!
//! [api]                       # the HTTP API and dashboard (`up --listen`, `serve`)
//! listen = "127.0.0.1:7420"
//! cors_origins = []           # CORS is off unless origins are listed
//! [[api.tokens]]              # bearer tokens, by reference only
//! name = "ops"
//! scope = "admin"             # admin | read
//! token_env = "MORPHEUS_OPS_TOKEN"   # or: token_file = "/run/secrets/ops-token"
//!
//! [[extensions]]              # an executor out of process: stdio | jsonrpc | extism
//! name = "ledger"             # steps call it with executor("ledger")
//! protocol = "stdio"
//! source = { type = "process", command = "python3", args = ["./ledger.py"] }
//! permissions = { max_execution_time = "30s", max_memory = "256MB", env = ["PATH"] }
//! restart = { strategy = "exponential", max_retries = 5, initial_delay = "200ms", max_delay = "10s" }
//!
//! [secrets]                   # opens sealed deploy env values (`morpheus secrets`)
//! key = { hex_key_file = "/run/secrets/morpheus-sealing.key" }   # or: hex_key_env = "…"
//!
//! [cosmos]                    # the chain executor used by topup.escrow
//! rest_url = "https://api.akashnet.net"
//! chain_id = "akashnet-2"
//! key = { mnemonic_env = "AKASH_WALLET_MNEMONIC" }
//! ```

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database URL (the flag and `MORPHEUS_DATABASE_URL` win over it).
    pub database_url: Option<String>,
    /// Schedules synced into the database when `morpheus up` starts.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
    /// The `cosmos` executor (chain access for `topup.escrow`); without it `up` runs
    /// without that executor. The key is referenced (`key = { mnemonic_env = "…" }`),
    /// never written here.
    pub cosmos: Option<morpheus_executors::cosmos::CosmosConfig>,
    /// The `evm` executor (contract calls and exactly-once transactions on an EVM
    /// chain); without it `up` runs without that executor. The key is referenced
    /// (`key = { hex_key_env = "…" }`), never written here.
    pub evm: Option<morpheus_executors::evm::EvmConfig>,
    /// `[fund]`: the USDC token, the MOR staking vault and the route API the `fund`
    /// workflow uses.
    #[serde(default)]
    pub fund: Option<morpheus_workflows::fund::FundConfig>,
    /// The HTTP API (`[api]`).
    #[serde(default)]
    pub api: ApiConfig,
    /// Executors out of process (`[[extensions]]`), loaded by `morpheus up`.
    #[serde(default)]
    pub extensions: Vec<morpheus_executors::extensions::ExtensionConfig>,
    /// `[secrets]`: the key that opens sealed deploy env values.
    pub secrets: Option<SecretsConfig>,
    /// `[automations]`: the passphrase their keys are sealed with, the interval floor.
    #[serde(default)]
    pub automations: AutomationsConfig,
}

/// `[automations]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationsConfig {
    /// Where the passphrase sealing HMAC and relayer keys is (default: the environment
    /// variable `MORPHEUS_KEYS_PASSPHRASE`).
    #[serde(default)]
    pub passphrase: morpheus_executors::cosmos::ephemeral::PassphraseSource,
    /// The shortest INTERVAL accepted, in seconds (default 1).
    #[serde(default = "default_min_interval_s")]
    pub min_interval_s: u64,
}

fn default_min_interval_s() -> u64 {
    morpheus_workflows::automations::model::DEFAULT_MIN_INTERVAL_S
}

impl Default for AutomationsConfig {
    fn default() -> Self {
        Self {
            passphrase: Default::default(),
            min_interval_s: default_min_interval_s(),
        }
    }
}

/// `[secrets]`: the key `morpheus up` opens sealed values with (and `secrets seal`
/// seals to when no key is given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A hex secp256k1 secret key, by reference: `{ hex_key_env = "…" }` or
    /// `{ hex_key_file = "…" }`.
    pub key: morpheus_executors::key_source::KeySource,
}

/// `[api]`: where the HTTP server listens and who may call it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where `morpheus up` serves the API (the `--listen` flag wins); without either,
    /// `up` serves nothing.
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer tokens (`[[api.tokens]]`), each naming where its secret is.
    #[serde(default)]
    pub tokens: Vec<morpheus_server::TokenSpec>,
    /// Origins allowed to call the API from other sites' pages.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes (default 1 MiB).
    pub body_limit_bytes: Option<usize>,
    /// Requests per second per token (default 200).
    pub rate_per_second: Option<u32>,
    /// Burst above that rate (default 400).
    pub rate_burst: Option<u32>,
}

/// One `[[schedules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name.
    pub name: String,
    /// Workflow to start.
    pub workflow: String,
    /// Its input.
    #[serde(default = "empty_object")]
    pub input: toml::Value,
    /// Cron expression (5 fields, or 6–7 with seconds).
    pub cron: Option<String>,
    /// Fixed interval (`30s`, `5m`).
    pub every: Option<String>,
    /// IANA time zone for `cron`.
    pub timezone: Option<String>,
    /// `skip` | `queue_one` | `allow`.
    pub overlap: Option<String>,
    /// `skip_missed` | `run_once` | `run_all`.
    pub catch_up: Option<String>,
    /// Queue of the runs.
    pub queue: Option<String>,
    /// Priority of the runs.
    pub priority: Option<i32>,
    /// Pinged after each run completes, `<url>/fail` after one fails.
    pub heartbeat_url: Option<String>,
}

fn empty_object() -> toml::Value {
    toml::Value::Table(Default::default())
}

impl Config {
    /// Loads the file named by `path`, or `./morpheus.toml` when no path is given and it
    /// exists; an empty configuration otherwise.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from("morpheus.toml"), false),
        };
        if !required && !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|error| {
            let message = error.to_string().replace('\n', " ");
            anyhow!("config file {}: {}", path.display(), message.trim())
        })
    }
}

impl ScheduleConfig {
    /// The input as JSON.
    pub fn input_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.input)
            .with_context(|| format!("schedule '{}': input is not JSON-compatible", self.name))
    }

    /// Checks that exactly one trigger is given.
    pub fn check_trigger(&self) -> Result<()> {
        match (&self.cron, &self.every) {
            (Some(_), Some(_)) => bail!("schedule '{}': give cron or every, not both", self.name),
            (None, None) => bail!("schedule '{}': give cron or every", self.name),
            _ => Ok(()),
        }
    }
}
