//! The node's REST (LCD) API over HTTP, with in-process retries of transient failures.
//!
//! Transient: connection errors and timeouts, HTTP 429/502/503/504, HTTP 500 without a
//! gRPC-gateway error body (a proxy's page), and a success status with a body that is
//! not JSON. These are retried with exponential backoff (`backon`) up to
//! `timeouts.http_attempts` times, never past the call's deadline. Everything else is
//! handed to the caller, which knows what an answer means for its operation.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use morpheus_engine::StepError;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A failed request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RestError {
    /// Worth retrying later (after the in-process retries ran out).
    Transient(String),
    /// The node answered with an error status.
    Status {
        status: StatusCode,
        /// The gRPC status code of a gRPC-gateway error body (`{"code", "message"}`).
        grpc_code: Option<i64>,
        message: String,
    },
}

impl RestError {
    /// Whether the node said the thing does not exist. Nodes answer 404 (gRPC
    /// `NotFound`); some versions answer 500 with "not found" in the message.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Status {
                status,
                grpc_code,
                message,
            } => {
                *status == StatusCode::NOT_FOUND
                    || *grpc_code == Some(5)
                    || message.contains("not found")
            }
            Self::Transient(_) => false,
        }
    }

    /// As a step error: transient and 5xx answers are retryable, other answers are
    /// permanent.
    pub fn into_step_error(self, what: &str) -> StepError {
        match self {
            Self::Transient(message) => StepError::retryable(format!("{what}: {message}")),
            Self::Status {
                status, message, ..
            } if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                StepError::retryable(format!("{what}: HTTP {status}: {message}"))
            }
            Self::Status {
                status, message, ..
            } => StepError::permanent(format!("{what}: HTTP {status}: {message}")),
        }
    }
}

/// A client for one node.
#[derive(Debug, Clone)]
pub(crate) struct Rest {
    client: reqwest::Client,
    base: String,
    attempts: u32,
}

impl Rest {
    pub fn new(base: &str, request_timeout: Duration, attempts: u32) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .user_agent(concat!("morpheus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("HTTP client: {error}"))?;
        Ok(Self {
            client,
            base: base.to_owned(),
            attempts,
        })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str, deadline: Option<Instant>) -> Result<Value, RestError> {
        self.request(Method::GET, path, None, deadline).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, RestError> {
        self.request(Method::POST, path, Some(body), deadline).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        deadline: Option<Instant>,
    ) -> Result<Value, RestError> {
        let url = format!("{}{}", self.base, path);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .with_jitter();
        let once = || async {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Attempt::Final(RestError::Transient(format!(
                    "deadline passed before {method} {path}"
                ))));
            }
            let mut request = self.client.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(deadline) = deadline {
                request = request.timeout(deadline.saturating_duration_since(Instant::now()));
            }
            let response = request
                .send()
                .await
                .map_err(|error| Attempt::Again(describe_transport(&error)))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|error| Attempt::Again(describe_transport(&error)))?;
            classify(status, &text)
        };
        once.retry(backoff)
            .when(|attempt| matches!(attempt, Attempt::Again(_)))
            .await
            .map_err(|attempt| match attempt {
                Attempt::Again(message) => {
                    RestError::Transient(format!("{method} {path}: {message}"))
                }
                Attempt::Final(error) => error,
            })
    }
}

/// One attempt's failure: retry it, or give it to the caller.
#[derive(Debug)]
enum Attempt {
    Again(String),
    Final(RestError),
}

pub(crate) fn describe_transport(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn classify(status: StatusCode, text: &str) -> Result<Value, Attempt> {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    if status.is_success() {
        return parsed.ok_or_else(|| {
            Attempt::Again(format!(
                "HTTP {status} with a body that is not JSON: {}",
                snippet(text)
            ))
        });
    }
    let grpc = parsed.as_ref().and_then(|body| {
        let message = body.get("message")?.as_str()?.to_owned();
        Some((body.get("code").and_then(Value::as_i64), message))
    });
    match (status, grpc) {
        (StatusCode::TOO_MANY_REQUESTS, _)
        | (StatusCode::BAD_GATEWAY, _)
        | (StatusCode::SERVICE_UNAVAILABLE, _)
        | (StatusCode::GATEWAY_TIMEOUT, _) => {
            Err(Attempt::Again(format!("HTTP {status}: {}", snippet(text))))
        }
        (StatusCode::INTERNAL_SERVER_ERROR, None) => {
            Err(Attempt::Again(format!("HTTP {status}: {}", snippet(text))))
        }
        (status, Some((grpc_code, message))) => Err(Attempt::Final(RestError::Status {
            status,
            grpc_code,
            message,
        })),
        (status, None) => Err(Attempt::Final(RestError::Status {
            status,
            grpc_code: None,
            message: snippet(text),
        })),
    }
}

/// The start of a body, for error messages.
pub(crate) fn snippet(text: &str) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &trimmed[..at]),
        None => trimmed.to_owned(),
    }
}

/// Reads `field` of a JSON object as a `u64`, accepting the chain's string numbers.
pub(crate) fn u64_field(value: &Value, field: &str) -> Option<u64> {
    match value.get(field)? {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn classifies_answers() {
        assert_eq!(
            classify(StatusCode::OK, r#"{"a":1}"#).unwrap(),
            json!({"a": 1})
        );
        assert!(matches!(
            classify(StatusCode::OK, "<html>"),
            Err(Attempt::Again(_))
        ));
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, "upstream died"),
            Err(Attempt::Again(_))
        ));
        assert!(matches!(
            classify(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"code":14,"message":"x"}"#
            ),
            Err(Attempt::Again(_))
        ));
        let Err(Attempt::Final(error)) = classify(
            StatusCode::NOT_FOUND,
            r#"{"code":5,"message":"tx not found: AB","details":[]}"#,
        ) else {
            panic!("404 is final")
        };
        assert!(error.is_not_found());
        let Err(Attempt::Final(error)) = classify(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"code":2,"message":"account sequence mismatch"}"#,
        ) else {
            panic!("a gRPC error body is final")
        };
        assert!(!error.is_not_found());
        assert!(error.clone().into_step_error("x").is_retryable());
        let Err(Attempt::Final(error)) = classify(StatusCode::BAD_REQUEST, "nope") else {
            panic!("400 is final")
        };
        assert!(!error.into_step_error("x").is_retryable());
    }

    #[test]
    fn numbers_and_query_values() {
        let value = json!({"a": "12", "b": 13, "c": "x"});
        assert_eq!(u64_field(&value, "a"), Some(12));
        assert_eq!(u64_field(&value, "b"), Some(13));
        assert_eq!(u64_field(&value, "c"), None);
        assert_eq!(encode_query("akash1x/y+z="), "akash1x%2Fy%2Bz%3D");
    }
}
