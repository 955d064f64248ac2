//! Configuration of the `cosmos` executor. It names where the key is (an environment
//! variable or a file), never the key itself, so it can live in `morpheus.toml`, in
//! the database or in logs without leaking anything.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::amount::{validate_denom, Coin, DecCoin};
use crate::duration_text as humantime_text;
pub use crate::key_source::KeySource;

/// Configuration of a [`CosmosExecutor`](super::CosmosExecutor).
///
/// In `morpheus.toml` (every key but `rest_url` and `chain_id` is optional):
///
/// ```toml
/// rest_url = "https://api.akashnet.net"
/// chain_id = "akashnet-2"
/// key = { mnemonic_env = "AKASH_MNEMONIC" }   # or mnemonic_file / hex_key_env / hex_key_file
/// account_prefix = "akash"
/// hd_path = "m/44'/118'/0'/0/0"
/// denom = "uakt"
/// gas = "simulate"          # or a fixed limit: gas = 200000
/// gas_adjustment = 1.5      # simulated gas × this
/// gas_price = "0.025uakt"   # fee = ceil(gas limit × gas price) …
/// # fee = "5000uakt"        # … or a fixed fee instead of gas_price
/// msg_version = "escrow.v1" # or "deployment.v1beta3"
/// deployments_api = "v1beta4"
/// leases_api = "v1beta5"
/// timeouts = { request = "10s", confirm = "60s", confirm_poll = "1s", http_attempts = 4 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosmosConfig {
    /// Base URL of the node's REST (LCD) API, e.g. `https://api.akashnet.net`.
    pub rest_url: String,
    /// The chain id transactions are signed for (checked against the node's).
    pub chain_id: String,
    /// Where the signing key is. Without one only the read operations work.
    #[serde(default)]
    pub key: Option<KeySource>,
    /// Bech32 prefix of addresses.
    #[serde(default = "default_account_prefix")]
    pub account_prefix: String,
    /// BIP-44 derivation path for mnemonics.
    #[serde(default = "default_hd_path")]
    pub hd_path: String,
    /// The denomination deposits, fees and balances use by default.
    #[serde(default = "default_denom")]
    pub denom: String,
    /// Gas limit: fixed, or simulated and multiplied by `gas_adjustment`.
    #[serde(default)]
    pub gas: Gas,
    /// Multiplier for simulated gas (at least 1.0).
    #[serde(default = "default_gas_adjustment")]
    pub gas_adjustment: f64,
    /// Price per unit of gas; the fee is `ceil(gas limit × gas price)`. Default
    /// `0.025` of `denom`. Mutually exclusive with `fee`.
    #[serde(default)]
    pub gas_price: Option<String>,
    /// A fixed fee per transaction instead of `gas_price`.
    #[serde(default)]
    pub fee: Option<String>,
    /// Which deposit message to send.
    #[serde(default)]
    pub msg_version: MsgVersion,
    /// Which deployment query API to read escrow funds from.
    #[serde(default)]
    pub deployments_api: DeploymentsApi,
    /// Which market query API to read leases from.
    #[serde(default)]
    pub leases_api: LeasesApi,
    /// Transaction memo; default `morpheus:{idempotency key}`.
    #[serde(default)]
    pub memo: Option<String>,
    /// Time limits and HTTP retries.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Sign deployment messages and deposits with the granter's ephemeral keys
    /// (`morpheus keys ephemeral create`) through their AuthZ grants, fees paid by the
    /// granter's fee allowance: `ephemeral = { granter = "akash1…" }`. `key` is then
    /// only needed to grant or revoke keys.
    #[serde(default)]
    pub ephemeral: Option<super::ephemeral::EphemeralSigning>,
}

fn default_account_prefix() -> String {
    "akash".to_owned()
}

fn default_hd_path() -> String {
    "m/44'/118'/0'/0/0".to_owned()
}

fn default_denom() -> String {
    "uakt".to_owned()
}

fn default_gas_adjustment() -> f64 {
    1.5
}

/// How the gas limit is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gas {
    /// `POST /cosmos/tx/v1beta1/simulate`, times `gas_adjustment` (written `"simulate"`).
    #[default]
    Simulate,
    /// This limit (written as a number).
    Fixed(u64),
}

impl Serialize for Gas {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Simulate => serializer.serialize_str("simulate"),
            Self::Fixed(limit) => serializer.serialize_u64(*limit),
        }
    }
}

impl<'de> Deserialize<'de> for Gas {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Limit(u64),
            Word(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Limit(0) => Err(serde::de::Error::custom("gas must be positive")),
            Raw::Limit(limit) => Ok(Self::Fixed(limit)),
            Raw::Word(word) if word == "simulate" => Ok(Self::Simulate),
            Raw::Word(word) => Err(serde::de::Error::custom(format!(
                "gas must be \"simulate\" or a number, not \"{word}\""
            ))),
        }
    }
}

/// Which deposit message the executor signs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MsgVersion {
    /// `/akash.escrow.v1.MsgAccountDeposit` (current chains).
    #[default]
    #[serde(rename = "escrow.v1")]
    EscrowV1,
    /// `/akash.deployment.v1beta3.MsgDepositDeployment` (older chains).
    #[serde(rename = "deployment.v1beta3")]
    DeploymentV1beta3,
}

impl MsgVersion {
    /// The message's type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::EscrowV1 => super::akash::MSG_ACCOUNT_DEPOSIT_TYPE_URL,
            Self::DeploymentV1beta3 => super::akash::MSG_DEPOSIT_DEPLOYMENT_TYPE_URL,
        }
    }
}

/// The deployment query API (`/akash/deployment/{version}/deployments/{list,info}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentsApi {
    /// Escrow funds in `escrow_account.state.funds[]` (current chains).
    #[default]
    V1beta4,
    /// Escrow funds in `escrow_account.balance` + `escrow_account.funds` (older chains).
    V1beta3,
}

impl DeploymentsApi {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1beta4 => "v1beta4",
            Self::V1beta3 => "v1beta3",
        }
    }
}

/// The market query API (`/akash/market/{version}/leases/list`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeasesApi {
    /// Leases carry `lease.id` (current chains).
    #[default]
    V1beta5,
    /// Leases carry `lease.lease_id` (older chains).
    V1beta4,
}

impl LeasesApi {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1beta5 => "v1beta5",
            Self::V1beta4 => "v1beta4",
        }
    }
}

/// Time limits and HTTP retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// One HTTP request.
    #[serde(default = "default_request", with = "humantime_text")]
    pub request: Duration,
    /// How long `broadcast` waits for the transaction to appear in a block.
    #[serde(default = "default_confirm", with = "humantime_text")]
    pub confirm: Duration,
    /// Pause between look-ups of the transaction while confirming.
    #[serde(default = "default_confirm_poll", with = "humantime_text")]
    pub confirm_poll: Duration,
    /// Attempts per HTTP request for transient failures (connection errors, 5xx,
    /// 429, malformed JSON) before the call fails as retryable.
    #[serde(default = "default_http_attempts")]
    pub http_attempts: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: default_request(),
            confirm: default_confirm(),
            confirm_poll: default_confirm_poll(),
            http_attempts: default_http_attempts(),
        }
    }
}

fn default_request() -> Duration {
    Duration::from_secs(10)
}

fn default_confirm() -> Duration {
    Duration::from_secs(60)
}

fn default_confirm_poll() -> Duration {
    Duration::from_secs(1)
}

fn default_http_attempts() -> u32 {
    4
}

/// A configuration that cannot work, with a message naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cosmos executor config: {0}")]
pub struct ConfigError(pub String);

/// How the fee of a transaction is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FeePolicy {
    Fixed(Coin),
    GasPrice(DecCoin),
}

/// A configuration with every value checked and parsed.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub rest_url: String,
    pub chain_id: String,
    pub account_prefix: String,
    pub denom: String,
    pub gas: Gas,
    pub gas_adjustment: f64,
    pub fee: FeePolicy,
    pub msg_version: MsgVersion,
    pub deployments_api: DeploymentsApi,
    pub leases_api: LeasesApi,
    pub memo: Option<String>,
    pub timeouts: Timeouts,
}

impl CosmosConfig {
    /// Parses a JSON configuration (unknown keys are errors).
    pub fn from_json(value: serde_json::Value) -> Result<Self, ConfigError> {
        serde_json::from_value(value).map_err(|error| ConfigError(error.to_string()))
    }

    /// A configuration with defaults for everything but the node and the chain id.
    pub fn new(rest_url: impl Into<String>, chain_id: impl Into<String>) -> Self {
        Self {
            rest_url: rest_url.into(),
            chain_id: chain_id.into(),
            key: None,
            account_prefix: default_account_prefix(),
            hd_path: default_hd_path(),
            denom: default_denom(),
            gas: Gas::default(),
            gas_adjustment: default_gas_adjustment(),
            gas_price: None,
            fee: None,
            msg_version: MsgVersion::default(),
            deployments_api: DeploymentsApi::default(),
            leases_api: LeasesApi::default(),
            memo: None,
            timeouts: Timeouts::default(),
            ephemeral: None,
        }
    }

    /// Checks every value, with a message that names the offending key.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let error = |message: String| Err(ConfigError(message));
        let rest_url = self.rest_url.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&rest_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return error(format!(
                    "rest_url '{}' is not an http(s) URL",
                    self.rest_url
                ))
            }
        }
        if self.chain_id.trim().is_empty() {
            return error("chain_id must not be empty".into());
        }
        if self.account_prefix.is_empty()
            || !self
                .account_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return error(format!(
                "account_prefix '{}' must be lowercase letters and digits",
                self.account_prefix
            ));
        }
        if self
            .hd_path
            .parse::<cosmrs::bip32::DerivationPath>()
            .is_err()
        {
            return error(format!(
                "hd_path '{}' is not a BIP-32 path like m/44'/118'/0'/0/0",
                self.hd_path
            ));
        }
        validate_denom(&self.denom).map_err(|e| ConfigError(format!("denom: {e}")))?;
        if !(self.gas_adjustment.is_finite() && (1.0..=10.0).contains(&self.gas_adjustment)) {
            return error(format!(
                "gas_adjustment {} must be between 1.0 and 10.0",
                self.gas_adjustment
            ));
        }
        let fee = match (&self.fee, &self.gas_price) {
            (Some(_), Some(_)) => return error("set either fee or gas_price, not both".into()),
            (Some(fee), None) => {
                FeePolicy::Fixed(fee.parse().map_err(|e| ConfigError(format!("fee: {e}")))?)
            }
            (None, Some(price)) => FeePolicy::GasPrice(
                price
                    .parse()
                    .map_err(|e| ConfigError(format!("gas_price: {e}")))?,
            ),
            (None, None) => FeePolicy::GasPrice(DecCoin {
                amount: "0.025".parse().expect("constant"),
                denom: self.denom.clone(),
            }),
        };
        if let Some(memo) = &self.memo {
            if memo.len() > 256 {
                return error("memo must be at most 256 bytes".into());
            }
        }
        if let Some(ephemeral) = &self.ephemeral {
            let granter = cosmrs::AccountId::from_str(&ephemeral.granter).map_err(|_| {
                ConfigError(format!(
                    "ephemeral.granter '{}' is not a bech32 address",
                    ephemeral.granter
                ))
            })?;
            if granter.prefix() != self.account_prefix {
                return error(format!(
                    "ephemeral.granter '{}' does not use account_prefix '{}'",
                    ephemeral.granter, self.account_prefix
                ));
            }
            if self.msg_version != MsgVersion::EscrowV1 {
                return error(
                    "ephemeral keys deposit through a grant, which only msg_version = \"escrow.v1\" can say"
                        .into(),
                );
            }
        }
        let t = &self.timeouts;
        if t.request.is_zero() || t.confirm.is_zero() || t.confirm_poll.is_zero() {
            return error("timeouts must be positive".into());
        }
        if !(1..=20).contains(&t.http_attempts) {
            return error(format!(
                "timeouts.http_attempts {} must be between 1 and 20",
                t.http_attempts
            ));
        }
        Ok(Settings {
            rest_url,
            chain_id: self.chain_id.clone(),
            account_prefix: self.account_prefix.clone(),
            denom: self.denom.clone(),
            gas: self.gas,
            gas_adjustment: self.gas_adjustment,
            fee,
            msg_version: self.msg_version,
            deployments_api: self.deployments_api,
            leases_api: self.leases_api,
            memo: self.memo.clone(),
            timeouts: self.timeouts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minimal() -> serde_json::Value {
        json!({"rest_url": "http://127.0.0.1:1317", "chain_id": "akashnet-2"})
    }

    fn settings(extra: serde_json::Value) -> Result<Settings, ConfigError> {
        let mut value = minimal();
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        CosmosConfig::from_json(value)?.settings()
    }

    #[test]
    fn defaults_are_akash_mainnet_conventions() {
        let config = CosmosConfig::from_json(minimal()).unwrap();
        assert_eq!(
            config,
            CosmosConfig::new("http://127.0.0.1:1317", "akashnet-2")
        );
        let settings = config.settings().unwrap();
        assert_eq!(settings.account_prefix, "akash");
        assert_eq!(settings.denom, "uakt");
        assert_eq!(settings.gas, Gas::Simulate);
        assert_eq!(settings.msg_version, MsgVersion::EscrowV1);
        assert_eq!(
            settings.fee,
            FeePolicy::GasPrice("0.025uakt".parse().unwrap())
        );
        assert_eq!(settings.timeouts, Timeouts::default());
    }

    #[test]
    fn full_configuration_parses() {
        let settings = settings(json!({
            "key": {"mnemonic_file": "/run/secrets/akash"},
            "gas": 250000,
            "fee": "6000uakt",
            "msg_version": "deployment.v1beta3",
            "deployments_api": "v1beta3",
            "leases_api": "v1beta4",
            "timeouts": {"request": "2s", "confirm": "1m 30s", "confirm_poll": "250ms", "http_attempts": 2},
        }))
        .unwrap();
        assert_eq!(settings.gas, Gas::Fixed(250_000));
        assert_eq!(settings.fee, FeePolicy::Fixed(Coin::new(6000, "uakt")));
        assert_eq!(settings.msg_version, MsgVersion::DeploymentV1beta3);
        assert_eq!(settings.deployments_api, DeploymentsApi::V1beta3);
        assert_eq!(settings.leases_api, LeasesApi::V1beta4);
        assert_eq!(settings.timeouts.confirm, Duration::from_secs(90));
        assert_eq!(settings.timeouts.confirm_poll, Duration::from_millis(250));
    }

    #[test]
    fn bad_configurations_name_the_key() {
        let cases = [
            (json!({"rest_url": "ftp://x"}), "rest_url"),
            (json!({"rest_url": "not a url"}), "rest_url"),
            (json!({"chain_id": " "}), "chain_id"),
            (json!({"account_prefix": "Akash"}), "account_prefix"),
            (json!({"hd_path": "44/118"}), "hd_path"),
            (json!({"denom": "u"}), "denom"),
            (json!({"gas": "lots"}), "gas must be"),
            (json!({"gas": 0}), "gas must be positive"),
            (json!({"gas_adjustment": 0.5}), "gas_adjustment"),
            (json!({"fee": "5000"}), "fee"),
            (json!({"gas_price": "cheap"}), "gas_price"),
            (
                json!({"fee": "1uakt", "gas_price": "0.1uakt"}),
                "either fee or gas_price",
            ),
            (json!({"msg_version": "v2"}), "unknown variant"),
            (json!({"key": {"mnemonic": "abandon"}}), "unknown variant"),
            (json!({"mnemonic_env": "X"}), "unknown field"),
            (json!({"timeouts": {"request": "soon"}}), "soon"),
            (json!({"timeouts": {"confirm": "0s"}}), "positive"),
            (json!({"timeouts": {"http_attempts": 0}}), "http_attempts"),
        ];
        for (extra, expected) in cases {
            let error = settings(extra.clone()).unwrap_err().to_string();
            assert!(error.contains(expected), "{extra}: {error}");
            assert!(error.starts_with("cosmos executor config: "), "{error}");
        }
    }

    #[test]
    fn key_sources_serialize_by_reference_only() {
        let key = KeySource::MnemonicEnv("AKASH_MNEMONIC".into());
        assert_eq!(
            serde_json::to_value(&key).unwrap(),
            json!({"mnemonic_env": "AKASH_MNEMONIC"})
        );
        assert_eq!(key.to_string(), "mnemonic in $AKASH_MNEMONIC");
        let file: KeySource = serde_json::from_value(json!({"hex_key_file": "/k"})).unwrap();
        assert_eq!(format!("{file:?}"), "hex key in /k");
    }
}
