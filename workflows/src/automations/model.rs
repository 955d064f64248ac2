//! What an automation is (its configuration as the Brahma orchestration layer shapes
//! it), how it is checked, and the HMAC both sides sign with. Pure functions.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// The document collection automations are kept in (key: the automation's id).
pub const AUTOMATIONS_COLLECTION: &str = "automations";
/// The document collection execution log records are kept in.
pub const AUTOMATION_LOGS_COLLECTION: &str = "automation_logs";
/// Default shortest interval, in seconds.
pub const DEFAULT_MIN_INTERVAL_S: u64 = 1;
/// Most relayers one automation may have.
pub const MAX_RELAYERS: u32 = 5;

/// When an automation fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum Source {
    /// Every `value` **seconds** (the Brahma document says minutes in one place and
    /// seconds in another; Morpheus uses seconds).
    #[serde(rename = "INTERVAL")]
    Interval(u64),
    /// On each log matching an `eth_getLogs` filter.
    #[serde(rename = "FILTER")]
    Filter(Value),
}

/// Where the automation's hooks are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    /// `https://…` (or `http://` on a loopback host): `{baseURL}/kernel/trigger` and
    /// `{baseURL}/kernel/executed` are called.
    #[serde(rename = "baseURL")]
    pub base_url: String,
}

/// What a relayed task may do: checked before anything is signed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The only contracts a task may call (`0x…`, any case); empty: none.
    #[serde(default, rename = "allowedTargets")]
    pub allowed_targets: Vec<String>,
    /// The most wei a task may send (decimal string; default `"0"`).
    #[serde(default = "zero", rename = "maxValue")]
    pub max_value: String,
}

fn zero() -> String {
    "0".to_owned()
}

/// `POST /api/v1/automations`, `morpheus automations add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationConfig {
    /// When it fires.
    pub source: Source,
    /// Where its hooks are.
    pub destination: Destination,
    /// Whether the executor's answers must carry an HMAC signature (checked).
    #[serde(rename = "verifyPayload")]
    pub verify_payload: bool,
    /// How many relayer addresses to generate (1..=5).
    #[serde(rename = "relayerCount", default = "one")]
    pub relayer_count: u32,
    /// The relay policy.
    #[serde(default)]
    pub policy: Policy,
    /// Free-form data passed to the executor in `params.subscription`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// FILTER only: how many blocks a log must be buried under before it triggers
    /// (default 2), so that a reorg can neither trigger twice nor make a log be missed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
}

fn default_confirmations() -> u64 {
    2
}

/// Most confirmations a FILTER may ask for.
pub const MAX_CONFIRMATIONS: u64 = 256;

/// A FILTER source's `eth_getLogs` filter, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFilter {
    /// The chain the logs are on (must be the `evm` executor's).
    #[serde(rename = "chainId")]
    pub chain_id: u64,
    /// The emitting contract, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Up to four topics; `null` matches anything.
    #[serde(default)]
    pub topics: Vec<Value>,
    /// `"latest"` (default: logs from registration on) or a block number.
    #[serde(rename = "fromBlock", default)]
    pub from_block: Option<Value>,
}

impl LogFilter {
    /// The first block to scan, when given as a number (`None`: from the chain's head).
    pub fn start_block(&self) -> Option<u64> {
        match &self.from_block {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(text)) if text.starts_with("0x") => {
                u64::from_str_radix(&text[2..], 16).ok()
            }
            Some(Value::String(text)) => text.parse().ok(),
            _ => None,
        }
    }
}

/// A FILTER source's value as a [`LogFilter`], checked.
pub fn log_filter(value: &Value) -> Result<LogFilter, InvalidAutomation> {
    let filter: LogFilter = serde_json::from_value(value.clone())
        .map_err(|error| InvalidAutomation(format!("source.value: {error}")))?;
    if let Some(address) = &filter.address {
        if !is_evm_address(address) {
            return invalid(format!(
                "source.value.address: '{address}' is not an address"
            ));
        }
    }
    if filter.topics.len() > 4 {
        return invalid("source.value.topics: at most four");
    }
    let is_topic = |text: &str| {
        text.len() == 66
            && text.starts_with("0x")
            && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    for topic in &filter.topics {
        let ok = match topic {
            Value::Null => true,
            Value::String(text) => is_topic(text),
            _ => false,
        };
        if !ok {
            return invalid(format!(
                "source.value.topics: {topic} is not a 32-byte 0x… topic or null"
            ));
        }
    }
    match &filter.from_block {
        None => {}
        Some(Value::String(text)) if text == "latest" => {}
        Some(_) if filter.start_block().is_some() => {}
        Some(other) => {
            return invalid(format!(
                "source.value.fromBlock: {other} is neither \"latest\" nor a block number"
            ))
        }
    }
    Ok(filter)
}

fn one() -> u32 {
    1
}

/// Why a configuration is refused: one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAutomation(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, InvalidAutomation> {
    Err(InvalidAutomation(message.into()))
}

/// Whether `host` (as a URL writes it) is a loopback host (`localhost`, `127.x`, `[::1]`).
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An EVM address: `0x` and 40 hex digits.
pub fn is_evm_address(text: &str) -> bool {
    text.len() == 42 && text.starts_with("0x") && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl AutomationConfig {
    /// Checks every field; `min_interval_s` is the configured floor.
    pub fn validate(&self, min_interval_s: u64) -> Result<(), InvalidAutomation> {
        match &self.source {
            Source::Interval(seconds) if *seconds < min_interval_s => {
                return invalid(format!(
                    "source.value: an INTERVAL of {seconds} s is below the minimum of {min_interval_s} s"
                ))
            }
            Source::Interval(_) => {}
            Source::Filter(value) => {
                log_filter(value)?;
                if !(1..=MAX_CONFIRMATIONS).contains(&self.confirmations) {
                    return invalid(format!(
                        "confirmations: {} is outside 1..={MAX_CONFIRMATIONS}",
                        self.confirmations
                    ));
                }
            }
        }
        let url = reqwest::Url::parse(&self.destination.base_url).map_err(|error| {
            InvalidAutomation(format!(
                "destination.baseURL: '{}' is not a URL ({error})",
                self.destination.base_url
            ))
        })?;
        let Some(host) = url.host_str() else {
            return invalid("destination.baseURL: the URL has no host");
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(host) => {}
            "http" => {
                return invalid(format!(
                    "destination.baseURL: '{}' must be https (http only on a loopback host)",
                    self.destination.base_url
                ))
            }
            other => {
                return invalid(format!(
                    "destination.baseURL: scheme '{other}' is not https"
                ))
            }
        }
        if !(1..=MAX_RELAYERS).contains(&self.relayer_count) {
            return invalid(format!(
                "relayerCount: {} is outside 1..={MAX_RELAYERS}",
                self.relayer_count
            ));
        }
        for target in &self.policy.allowed_targets {
            if !is_evm_address(target) {
                return invalid(format!(
                    "policy.allowedTargets: '{target}' is not an address (0x and 40 hex digits)"
                ));
            }
        }
        if self.policy.max_value.is_empty()
            || !self.policy.max_value.bytes().all(|b| b.is_ascii_digit())
            || self.policy.max_value.len() > 78
        {
            return invalid(format!(
                "policy.maxValue: '{}' is not a decimal amount of wei",
                self.policy.max_value
            ));
        }
        Ok(())
    }
}

/// Whether an automation fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutomationStatus {
    /// Its trigger is registered.
    Active,
    /// Its trigger is paused.
    Paused,
}

/// One relayer of an automation: its key is in the relayer key store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayer {
    /// The key's id (`rly-…`).
    pub key_id: String,
    /// Its address.
    pub address: String,
}

/// An automation as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Automation {
    /// `aut-…`.
    pub id: String,
    /// As registered.
    pub config: AutomationConfig,
    /// The HMAC key, sealed (age under the keys' passphrase): opened only to sign and
    /// verify.
    pub hmac_key_sealed: String,
    /// Its relayers.
    pub relayers: Vec<Relayer>,
    /// Whether it fires.
    pub status: AutomationStatus,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

impl Automation {
    /// The automation as lists and the API show it: never its keys.
    pub fn summary(&self) -> Value {
        let trigger = match &self.config.source {
            Source::Interval(seconds) => format!("every {seconds}s"),
            Source::Filter(_) => format!("filter ({} confirmations)", self.config.confirmations),
        };
        serde_json::json!({
            "id": self.id,
            "status": self.status,
            "trigger": trigger,
            "source": self.config.source,
            "destination": self.config.destination,
            "verifyPayload": self.config.verify_payload,
            "relayerCount": self.config.relayer_count,
            "policy": self.config.policy,
            "relayerAddress": self.relayers.iter().map(|r| r.address.clone()).collect::<Vec<_>>(),
            "createdAt": self.created_at,
        })
    }
}

/// What the hooks' HMAC is: hex HMAC-SHA256 of `message` under `key`.
pub fn hmac_hex(key: &[u8], message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `message` under `key`, compared in
/// constant time.
pub fn hmac_verifies(key: &[u8], message: &str, signature: &str) -> bool {
    let Ok(signature) = hex::decode(signature.trim().trim_start_matches("0x")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// What the executor answers `kernel/trigger` with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerAnswer {
    /// Skip this trigger.
    pub skip: bool,
    /// The request answered.
    #[serde(rename = "requestID")]
    pub request_id: String,
    /// What to relay (absent on a skip).
    #[serde(default)]
    pub task: Option<Task>,
    /// HMAC over `${requestID}:${executorSignature}` (`${requestID}:0x` on a skip).
    #[serde(default)]
    pub signature: String,
}

/// A task to relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The executor's own signature of the task (opaque here, part of the HMAC).
    #[serde(rename = "executorSignature", default)]
    pub executor_signature: String,
    /// The call.
    pub executable: Executable,
    /// Other fields the executor sent (kept in the log).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The call a task asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executable {
    /// `CALL` (0) is the only call type a relayer can make from its own account.
    #[serde(rename = "callType")]
    pub call_type: Value,
    /// The contract.
    pub to: String,
    /// Wei (decimal string, or a number).
    pub value: Value,
    /// Calldata, `0x…`.
    pub data: String,
}

/// A task checked against the request and the policy: what to relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relay {
    /// The contract.
    pub to: String,
    /// Wei, decimal.
    pub value: String,
    /// Calldata.
    pub data: String,
}

/// Checks an answer: the request it answers, its signature (when `verify`), its task
/// and the policy. `Ok(None)`: a verified skip.
pub fn check_answer(
    answer: &TriggerAnswer,
    request_id: &str,
    key: &[u8],
    verify: bool,
    policy: &Policy,
) -> Result<Option<Relay>, String> {
    if answer.request_id != request_id {
        return Err(format!(
            "the answer is for request '{}', not '{request_id}'",
            answer.request_id
        ));
    }
    let signed_part = match (&answer.task, answer.skip) {
        (_, true) => "0x".to_owned(),
        (Some(task), false) => task.executor_signature.clone(),
        (None, false) => return Err("the answer neither skips nor has a task".to_owned()),
    };
    if verify {
        if answer.signature.is_empty() {
            return Err("the answer has no signature (verifyPayload is on)".to_owned());
        }
        if !hmac_verifies(
            key,
            &format!("{request_id}:{signed_part}"),
            &answer.signature,
        ) {
            return Err(
                "the answer's signature does not verify under the automation's HMAC key".to_owned(),
            );
        }
    }
    if answer.skip {
        return Ok(None);
    }
    let task = answer.task.as_ref().expect("checked above");
    let executable = &task.executable;
    let call_type_ok = match &executable.call_type {
        Value::Number(n) => n.as_u64() == Some(0),
        Value::String(s) => s == "0" || s.eq_ignore_ascii_case("CALL"),
        _ => false,
    };
    if !call_type_ok {
        return Err(format!(
            "task.executable.callType {} is not CALL (0)",
            executable.call_type
        ));
    }
    if !is_evm_address(&executable.to) {
        return Err(format!(
            "task.executable.to '{}' is not an address",
            executable.to
        ));
    }
    let data = executable.data.trim();
    if !(data.starts_with("0x")
        && data.len().is_multiple_of(2)
        && data[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err("task.executable.data is not 0x-prefixed hex".to_owned());
    }
    let value = match &executable.value {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.clone(),
        Value::String(s) if s.is_empty() => "0".to_owned(),
        Value::Number(n) if n.as_u64().is_some() => n.to_string(),
        other => {
            return Err(format!(
                "task.executable.value {other} is not an amount of wei"
            ))
        }
    };
    let allowed = policy
        .allowed_targets
        .iter()
        .any(|target| target.eq_ignore_ascii_case(&executable.to));
    if !allowed {
        return Err(format!(
            "policy: target {} is not among the automation's allowed targets",
            executable.to
        ));
    }
    if wei_above(&value, &policy.max_value) {
        return Err(format!(
            "policy: value {value} wei is above the automation's ceiling of {} wei",
            policy.max_value
        ));
    }
    Ok(Some(Relay {
        to: executable.to.clone(),
        value,
        data: data.to_owned(),
    }))
}

/// Whether decimal `a` > decimal `b` (both plain digit strings).
fn wei_above(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len() > b.len() || (a.len() == b.len() && a > b)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(source: Value, base_url: &str) -> AutomationConfig {
        serde_json::from_value(json!({
            "source": source, "destination": {"baseURL": base_url}, "verifyPayload": true,
            "relayerCount": 1,
            "policy": {"allowedTargets": ["0x00000000000000000000000000000000000000aa"], "maxValue": "10"},
        }))
        .unwrap()
    }

    #[test]
    fn configurations_are_checked_field_by_field() {
        let filter = config(
            json!({"type": "FILTER", "value": {"chainId": 8453,
                   "address": "0x00000000000000000000000000000000000000aa",
                   "topics": [format!("0x{}", "dd".repeat(32)), null], "fromBlock": "latest"}}),
            "https://executor.example",
        );
        assert_eq!(filter.validate(1), Ok(()));
        let ok = config(
            json!({"type": "INTERVAL", "value": 30}),
            "https://executor.example",
        );
        assert_eq!(ok.validate(1), Ok(()));
        assert_eq!(ok.source, Source::Interval(30));
        let loopback = config(
            json!({"type": "INTERVAL", "value": 1}),
            "http://127.0.0.1:9000",
        );
        assert_eq!(loopback.validate(1), Ok(()));
        let cases = [
            (
                json!({"type": "INTERVAL", "value": 0}),
                "https://e.example",
                "below the minimum of 1 s",
            ),
            (
                json!({"type": "INTERVAL", "value": 5}),
                "http://executor.example",
                "must be https",
            ),
            (
                json!({"type": "INTERVAL", "value": 5}),
                "ftp://127.0.0.1",
                "is not https",
            ),
            (
                json!({"type": "INTERVAL", "value": 5}),
                "not a url",
                "is not a URL",
            ),
            (
                json!({"type": "FILTER", "value": {}}),
                "https://e.example",
                "missing field `chainId`",
            ),
            (
                json!({"type": "FILTER", "value": {"chainId": 1, "topics": ["0x12"]}}),
                "https://e.example",
                "not a 32-byte",
            ),
            (
                json!({"type": "FILTER", "value": {"chainId": 1, "fromBlock": "soon"}}),
                "https://e.example",
                "fromBlock",
            ),
        ];
        for (source, url, expected) in cases {
            let error = config(source, url).validate(1).unwrap_err().0;
            assert!(error.contains(expected), "{error}");
        }
        let mut many = ok.clone();
        many.relayer_count = 6;
        assert!(many.validate(1).unwrap_err().0.contains("relayerCount"));
        let mut bad_target = ok.clone();
        bad_target.policy.allowed_targets = vec!["0x12".into()];
        assert!(bad_target
            .validate(1)
            .unwrap_err()
            .0
            .contains("allowedTargets"));
        assert!(ok.validate(60).unwrap_err().0.contains("minimum of 60 s"));
    }

    #[test]
    fn hmac_matches_the_reference_vector_and_verifies_in_constant_time() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let signature = hmac_hex(b"key", "req-1:0xabc");
        assert!(hmac_verifies(b"key", "req-1:0xabc", &signature));
        assert!(!hmac_verifies(b"key", "req-1:0xabd", &signature));
        assert!(!hmac_verifies(b"other", "req-1:0xabc", &signature));
        assert!(!hmac_verifies(b"key", "req-1:0xabc", "not hex"));
    }

    fn answer(skip: bool, to: &str, value: Value, signature: &str) -> TriggerAnswer {
        serde_json::from_value(json!({
            "skip": skip, "requestID": "req-1", "signature": signature,
            "task": if skip { Value::Null } else { json!({
                "executorSignature": "0xabc",
                "executable": {"callType": 0, "to": to, "value": value, "data": "0x1234"},
            })},
        }))
        .unwrap()
    }

    #[test]
    fn answers_are_checked_against_the_request_the_signature_and_the_policy() {
        let policy = Policy {
            allowed_targets: vec!["0x00000000000000000000000000000000000000AA".into()],
            max_value: "10".into(),
        };
        let target = "0x00000000000000000000000000000000000000aa";
        let good = hmac_hex(b"k", "req-1:0xabc");
        let relay = check_answer(
            &answer(false, target, json!("10"), &good),
            "req-1",
            b"k",
            true,
            &policy,
        )
        .unwrap()
        .unwrap();
        assert_eq!((relay.to.as_str(), relay.value.as_str()), (target, "10"));
        let skip = hmac_hex(b"k", "req-1:0x");
        assert_eq!(
            check_answer(
                &answer(true, target, json!(0), &skip),
                "req-1",
                b"k",
                true,
                &policy
            ),
            Ok(None)
        );
        let refusals = [
            (
                answer(false, target, json!("10"), &good),
                "req-2",
                "not 'req-2'",
            ),
            (
                answer(false, target, json!("10"), ""),
                "req-1",
                "no signature",
            ),
            (
                answer(false, target, json!("10"), &skip),
                "req-1",
                "does not verify",
            ),
            (
                answer(true, target, json!(0), &good),
                "req-1",
                "does not verify",
            ),
            (
                answer(
                    false,
                    "0x00000000000000000000000000000000000000bb",
                    json!("1"),
                    &good,
                ),
                "req-1",
                "not among the automation's allowed targets",
            ),
            (
                answer(false, target, json!("11"), &good),
                "req-1",
                "above the automation's ceiling",
            ),
            (
                answer(false, target, json!(-1), &good),
                "req-1",
                "is not an amount of wei",
            ),
        ];
        for (answer, request, expected) in refusals {
            let error = check_answer(&answer, request, b"k", true, &policy).unwrap_err();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        // Without verifyPayload the signature is not required.
        assert!(check_answer(
            &answer(false, target, json!("1"), ""),
            "req-1",
            b"k",
            false,
            &policy
        )
        .unwrap()
        .is_some());
        assert!(wei_above("100", "99") && !wei_above("099", "99") && !wei_above("5", "10"));
    }
}
