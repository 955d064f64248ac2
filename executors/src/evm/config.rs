//! Configuration of the `evm` executor. Like the `cosmos` one it names where the key is,
//! never the key itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration_text as humantime_text;
pub use crate::key_source::KeySource;

/// Configuration of an [`EvmExecutor`](super::EvmExecutor).
///
/// In `morpheus.toml` (`[evm]`; every key but `rpc_url` and `chain_id` is optional):
///
/// ```toml
/// rpc_url = "https://mainnet.base.org"
/// chain_id = 8453                            # checked against the node's eth_chainId
/// key = { hex_key_env = "BASE_PRIVATE_KEY" } # or mnemonic_env / mnemonic_file / hex_key_file
/// hd_path = "m/44'/60'/0'/0/0"               # for mnemonics
/// confirmations = 1                          # blocks a receipt needs (1 = mined)
/// gas_multiplier = 1.2                       # eth_estimateGas × this
/// max_fee_per_gas = "50000000000"            # wei; the node's estimate is capped at this
/// max_priority_fee_per_gas = "2000000000"    # wei
/// timeouts = { request = "10s", receipt = "120s", receipt_poll = "500ms", http_attempts = 4 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmConfig {
    /// The node's JSON-RPC URL (HTTP).
    pub rpc_url: String,
    /// The chain id transactions are signed for (EIP-155), checked against the node's.
    pub chain_id: u64,
    /// Where the signing key is. Without one only the read operations work.
    #[serde(default)]
    pub key: Option<KeySource>,
    /// BIP-44 derivation path for mnemonics.
    #[serde(default = "default_hd_path")]
    pub hd_path: String,
    /// Blocks a transaction's receipt needs before `broadcast` reports it (1: the
    /// block that included it).
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Multiplier for `eth_estimateGas` (at least 1.0).
    #[serde(default = "default_gas_multiplier")]
    pub gas_multiplier: f64,
    /// Most wei per gas a transaction may pay (the node's EIP-1559 estimate is capped
    /// at this); default: no cap.
    #[serde(default)]
    pub max_fee_per_gas: Option<String>,
    /// Most priority fee (tip) per gas, in wei; default: no cap.
    #[serde(default)]
    pub max_priority_fee_per_gas: Option<String>,
    /// Time limits and HTTP retries.
    #[serde(default)]
    pub timeouts: EvmTimeouts,
}

fn default_hd_path() -> String {
    "m/44'/60'/0'/0/0".into()
}

fn default_confirmations() -> u64 {
    1
}

fn default_gas_multiplier() -> f64 {
    1.2
}

impl EvmConfig {
    /// A configuration for `rpc_url` and `chain_id` with every default and no key.
    pub fn new(rpc_url: impl Into<String>, chain_id: u64) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            chain_id,
            key: None,
            hd_path: default_hd_path(),
            confirmations: default_confirmations(),
            gas_multiplier: default_gas_multiplier(),
            max_fee_per_gas: None,
            max_priority_fee_per_gas: None,
            timeouts: EvmTimeouts::default(),
        }
    }

    /// Checks every value, naming the key of the first bad one.
    pub(crate) fn settings(&self) -> Result<EvmSettings, EvmConfigError> {
        let rpc_url: url::Url = self
            .rpc_url
            .parse()
            .map_err(|error| EvmConfigError(format!("rpc_url '{}': {error}", self.rpc_url)))?;
        if !matches!(rpc_url.scheme(), "http" | "https") {
            return Err(EvmConfigError(format!(
                "rpc_url '{}' must be http:// or https://",
                self.rpc_url
            )));
        }
        if self.chain_id == 0 {
            return Err(EvmConfigError("chain_id must be positive".into()));
        }
        if self.confirmations == 0 {
            return Err(EvmConfigError(
                "confirmations must be at least 1 (the including block)".into(),
            ));
        }
        if !(self.gas_multiplier.is_finite() && self.gas_multiplier >= 1.0) {
            return Err(EvmConfigError(format!(
                "gas_multiplier must be at least 1.0, not {}",
                self.gas_multiplier
            )));
        }
        let wei = |key: &str, value: &Option<String>| -> Result<Option<u128>, EvmConfigError> {
            value
                .as_deref()
                .map(|text| {
                    text.trim().parse::<u128>().map_err(|_| {
                        EvmConfigError(format!("{key} '{text}' is not a whole number of wei"))
                    })
                })
                .transpose()
        };
        if self.timeouts.http_attempts == 0 {
            return Err(EvmConfigError(
                "timeouts.http_attempts must be at least 1".into(),
            ));
        }
        Ok(EvmSettings {
            rpc_url,
            chain_id: self.chain_id,
            confirmations: self.confirmations,
            gas_multiplier: self.gas_multiplier,
            max_fee_per_gas: wei("max_fee_per_gas", &self.max_fee_per_gas)?,
            max_priority_fee_per_gas: wei(
                "max_priority_fee_per_gas",
                &self.max_priority_fee_per_gas,
            )?,
            timeouts: self.timeouts.clone(),
        })
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct EvmSettings {
    pub rpc_url: url::Url,
    pub chain_id: u64,
    pub confirmations: u64,
    pub gas_multiplier: f64,
    pub max_fee_per_gas: Option<u128>,
    pub max_priority_fee_per_gas: Option<u128>,
    pub timeouts: EvmTimeouts,
}

/// Time limits and HTTP retries of the `evm` executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmTimeouts {
    /// One JSON-RPC request.
    #[serde(default = "default_request", with = "humantime_text")]
    pub request: Duration,
    /// How long `broadcast` waits for the receipt and its confirmations.
    #[serde(default = "default_receipt", with = "humantime_text")]
    pub receipt: Duration,
    /// Pause between receipt look-ups.
    #[serde(default = "default_receipt_poll", with = "humantime_text")]
    pub receipt_poll: Duration,
    /// Attempts per request for transport failures before the call fails as retryable.
    #[serde(default = "default_http_attempts")]
    pub http_attempts: u32,
}

impl Default for EvmTimeouts {
    fn default() -> Self {
        Self {
            request: default_request(),
            receipt: default_receipt(),
            receipt_poll: default_receipt_poll(),
            http_attempts: default_http_attempts(),
        }
    }
}

fn default_request() -> Duration {
    Duration::from_secs(10)
}

fn default_receipt() -> Duration {
    Duration::from_secs(120)
}

fn default_receipt_poll() -> Duration {
    Duration::from_millis(500)
}

fn default_http_attempts() -> u32 {
    4
}

/// A configuration that cannot work, with a message naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evm config: {0}")]
pub struct EvmConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_bad_values_name_their_key() {
        let config: EvmConfig =
            serde_json::from_value(json!({"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337}))
                .unwrap();
        let settings = config.settings().unwrap();
        assert_eq!(settings.confirmations, 1);
        assert_eq!(config.hd_path, "m/44'/60'/0'/0/0");
        let cases = [
            (json!({"rpc_url": "ws://x", "chain_id": 1}), "rpc_url"),
            (json!({"rpc_url": "http://x", "chain_id": 0}), "chain_id"),
            (
                json!({"rpc_url": "http://x", "chain_id": 1, "confirmations": 0}),
                "confirmations",
            ),
            (
                json!({"rpc_url": "http://x", "chain_id": 1, "gas_multiplier": 0.5}),
                "gas_multiplier",
            ),
            (
                json!({"rpc_url": "http://x", "chain_id": 1, "max_fee_per_gas": "1.5gwei"}),
                "max_fee_per_gas",
            ),
        ];
        for (value, key) in cases {
            let config: EvmConfig = serde_json::from_value(value).unwrap();
            let error = config.settings().unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("evm config: {key}")),
                "{key}: {error}"
            );
        }
        let unknown = serde_json::from_value::<EvmConfig>(
            json!({"rpc_url": "http://x", "chain_id": 1, "private_key": "0xabc"}),
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("unknown field `private_key`"), "{unknown}");
    }
}
