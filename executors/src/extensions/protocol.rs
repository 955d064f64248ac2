//! What travels between Morpheus and an extension, whatever the transport.
//!
//! Lifecycle: `initialize {config, protocol_version}` → `capabilities` → calls →
//! `shutdown`. Every call carries a [`CallContext`] beside its params. Errors are
//! JSON-RPC error objects `{code, message, data?}`; [`RemoteError::step_error`] decides
//! whether a retry can help.

use chrono::{DateTime, Utc};
use morpheus_engine::StepError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version Morpheus speaks, sent in `initialize`.
pub const PROTOCOL_VERSION: &str = "1";

/// Method names of the lifecycle.
pub mod methods {
    /// First request after start: `{config, protocol_version}`.
    pub const INITIALIZE: &str = "initialize";
    /// Second request: answers [`super::Capabilities`].
    pub const CAPABILITIES: &str = "capabilities";
    /// Last request before the extension is stopped.
    pub const SHUTDOWN: &str = "shutdown";
    /// Notification (no `id`) from a process extension: a log line for the call.
    pub const LOG: &str = "log";
}

/// Sent with every call so the extension can make its effect exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    /// Stable across retries and re-executions after a crash (`{run_id}/{step}`).
    pub idempotency_key: String,
    /// The run.
    pub run_id: String,
    /// The step key within the run.
    pub step: String,
    /// 1 for the step's first attempt.
    pub attempt: u32,
    /// When the call must be answered by (RFC 3339, UTC).
    pub deadline: DateTime<Utc>,
    /// The run's lease epoch: an external system remembering the highest one seen can
    /// refuse a stale worker's late request.
    pub fencing_token: i64,
}

impl CallContext {
    /// The context of a call with this idempotency key (`{run_id}/{step}`).
    pub fn new(
        idempotency_key: &str,
        attempt: u32,
        fencing_token: i64,
        deadline: DateTime<Utc>,
    ) -> Self {
        let (run_id, step) = idempotency_key
            .split_once('/')
            .unwrap_or((idempotency_key, ""));
        Self {
            idempotency_key: idempotency_key.to_owned(),
            run_id: run_id.to_owned(),
            step: step.to_owned(),
            attempt,
            deadline,
            fencing_token,
        }
    }
}

/// One method an extension offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// The method name steps call.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema the params must match (checked before the call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// JSON Schema of the result (a mismatch is logged as a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// The answer to `capabilities`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The extension's own name for itself.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its methods; calls to other methods are refused before they are sent.
    #[serde(default)]
    pub methods: Vec<MethodInfo>,
    /// How many calls it can take at once (default 1: calls are queued).
    #[serde(default = "one")]
    pub concurrency: usize,
}

fn one() -> usize {
    1
}

impl Capabilities {
    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|method| method.name == name)
    }

    /// Checks what the extension declared.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(format!(
                "capabilities: concurrency {} is outside 1..=1024",
                self.concurrency
            ));
        }
        for method in &self.methods {
            if [
                methods::INITIALIZE,
                methods::CAPABILITIES,
                methods::SHUTDOWN,
            ]
            .contains(&method.name.as_str())
            {
                return Err(format!(
                    "capabilities: method '{}' is reserved for the lifecycle",
                    method.name
                ));
            }
        }
        Ok(())
    }
}

/// JSON-RPC 2.0 error codes, with their meaning for a step.
pub mod codes {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The request object is not valid.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Start of the implementation-defined server error range.
    pub const SERVER_ERROR_MIN: i64 = -32099;
    /// End of the implementation-defined server error range.
    pub const SERVER_ERROR_MAX: i64 = -32000;
}

/// An error answer: `{"code", "message", "data"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteError {
    /// JSON-RPC code.
    pub code: i64,
    /// What went wrong.
    pub message: String,
    /// Anything else; `{"retryable": true|false}` overrides the code's meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RemoteError {
    /// Whether retrying can help: a bad request, unknown method or bad params cannot;
    /// an internal or server error can. `data.retryable` wins when the extension says.
    pub fn is_retryable(&self) -> bool {
        if let Some(retryable) = self
            .data
            .as_ref()
            .and_then(|data| data.get("retryable"))
            .and_then(Value::as_bool)
        {
            return retryable;
        }
        !matches!(
            self.code,
            codes::PARSE_ERROR
                | codes::INVALID_REQUEST
                | codes::METHOD_NOT_FOUND
                | codes::INVALID_PARAMS
        )
    }

    /// The step error for this answer from `extension`'s `method`.
    pub fn step_error(&self, extension: &str, method: &str) -> StepError {
        let message = format!(
            "extension '{extension}' {method}: {} (code {})",
            self.message, self.code
        );
        if self.is_retryable() {
            StepError::retryable(message)
        } else {
            StepError::permanent(message)
        }
    }
}

/// A well-formed answer to one request: its result, or its error.
pub type Answer = Result<Value, RemoteError>;

/// Reads the answer out of a response object `{"id", "result"}` / `{"id", "error"}`,
/// refusing one that has both, neither, or a malformed error.
pub fn answer_of(response: &mut serde_json::Map<String, Value>) -> Result<Answer, String> {
    match (response.remove("result"), response.remove("error")) {
        (Some(_), Some(_)) => Err("answer has both \"result\" and \"error\"".to_owned()),
        (None, None) => Err("answer has neither \"result\" nor \"error\"".to_owned()),
        (Some(result), None) => Ok(Ok(result)),
        (None, Some(error)) => serde_json::from_value::<RemoteError>(error)
            .map(Err)
            .map_err(|error| format!("answer's \"error\" is not {{code, message}}: {error}")),
    }
}

/// A log line a process sends as a notification: `{"method": "log", "params": {…}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogParams {
    /// `debug` | `info` | `warn` | `error` (default `info`).
    #[serde(default)]
    pub level: Option<String>,
    /// The line.
    pub message: String,
    /// Structured fields.
    #[serde(default)]
    pub fields: Option<Value>,
    /// The request this line belongs to, when several are in flight.
    #[serde(default)]
    pub id: Option<u64>,
}

/// A compiled JSON Schema (params or result of one method).
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Compiles `schema`; `what` names it in the error (`"params"`).
    pub fn compile(schema: &Value, what: &str) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(|validator| Self { validator })
            .map_err(|error| format!("the declared {what} schema is invalid: {error}"))
    }

    /// Checks `value`; the error names the first offending field (`params.amount: …`).
    pub fn check(&self, value: &Value, what: &str) -> Result<(), String> {
        match self.validator.iter_errors(value).next() {
            None => Ok(()),
            Some(error) => {
                let path = error.instance_path.to_string();
                let field = if path.is_empty() {
                    what.to_owned()
                } else {
                    format!("{what}{}", path.replace('/', "."))
                };
                Err(format!("{field}: {error}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_splits_the_idempotency_key() {
        let deadline = Utc::now();
        let context = CallContext::new("0190-abc/charge/1", 2, 7, deadline);
        assert_eq!(context.run_id, "0190-abc");
        assert_eq!(context.step, "charge/1");
        let encoded = serde_json::to_value(&context).unwrap();
        assert_eq!(encoded["attempt"], 2);
        assert!(encoded["deadline"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn answers_with_both_or_neither_are_refused() {
        let mut both = json!({"id": 1, "result": 1, "error": {"code": 1, "message": "x"}});
        assert!(answer_of(both.as_object_mut().unwrap())
            .unwrap_err()
            .contains("both"));
        let mut neither = json!({"id": 1});
        assert!(answer_of(neither.as_object_mut().unwrap())
            .unwrap_err()
            .contains("neither"));
        let mut bad_error = json!({"id": 1, "error": "boom"});
        assert!(answer_of(bad_error.as_object_mut().unwrap()).is_err());
        let mut ok = json!({"id": 1, "result": {"a": 1}});
        assert_eq!(
            answer_of(ok.as_object_mut().unwrap()),
            Ok(Ok(json!({"a": 1})))
        );
    }

    #[test]
    fn error_codes_decide_retries_unless_the_extension_says() {
        let error = |code, data| RemoteError {
            code,
            message: "m".into(),
            data,
        };
        assert!(!error(codes::INVALID_PARAMS, None).is_retryable());
        assert!(!error(codes::METHOD_NOT_FOUND, None).is_retryable());
        assert!(error(codes::INTERNAL_ERROR, None).is_retryable());
        assert!(error(-32001, None).is_retryable());
        assert!(!error(-32001, Some(json!({"retryable": false}))).is_retryable());
        let step = error(codes::INVALID_PARAMS, None).step_error("ledger", "charge");
        assert!(!step.is_retryable());
        assert_eq!(step.message(), "extension 'ledger' charge: m (code -32602)");
    }

    #[test]
    fn schema_errors_name_the_field() {
        let schema = json!({"type": "object", "required": ["amount"],
            "properties": {"amount": {"type": "integer"}, "to": {"type": "string"}}});
        let schema = Schema::compile(&schema, "params").unwrap();
        assert_eq!(schema.check(&json!({"amount": 5}), "params"), Ok(()));
        let wrong = schema.check(&json!({"amount": "5"}), "params").unwrap_err();
        assert!(wrong.starts_with("params.amount:"), "{wrong}");
        let missing = schema.check(&json!({}), "params").unwrap_err();
        assert!(missing.contains("amount"), "{missing}");
    }

    #[test]
    fn reserved_methods_and_bad_concurrency_are_refused() {
        let caps: Capabilities = serde_json::from_value(json!({"name": "x",
            "methods": [{"name": "shutdown"}]}))
        .unwrap();
        assert!(caps.validate().unwrap_err().contains("reserved"));
        let caps: Capabilities =
            serde_json::from_value(json!({"name": "x", "concurrency": 0})).unwrap();
        assert!(caps.validate().is_err());
        let caps: Capabilities = serde_json::from_value(json!({"name": "x"})).unwrap();
        assert_eq!(caps.concurrency, 1);
    }
}
