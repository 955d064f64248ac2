//! The `jsonrpc` host: an extension is a service answering JSON-RPC 2.0 over HTTP POST.
//!
//! Each request is one POST of `{"jsonrpc": "2.0", "id", "method", "params",
//! "context"?}` (`context` beside `params` on step calls) to the configured URL; the
//! answer is `{"jsonrpc": "2.0", "id", "result"}` or `{…, "error": {"code", "message",
//! "data"?}}` with the standard codes (-32700 parse error, -32600 invalid request,
//! -32601 method not found, -32602 invalid params, -32603 internal error, -32000 to
//! -32099 server errors). An HTTP error status whose body is a JSON-RPC error is that
//! error; any other failure (connection refused, timeout, a 5xx without one, a body
//! that is not a JSON-RPC answer to this id) breaks the instance, and a "restart"
//! reconnects and runs `initialize` again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::{ExtensionConfig, Source};
use super::protocol::{answer_of, Answer};
use super::{Host, Protocol, Request, Transport, TransportError};

/// Longest answer body accepted.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Connects to JSON-RPC services; one HTTP client (and connection pool) for all.
#[derive(Debug, Clone)]
pub struct JsonRpcHost {
    client: reqwest::Client,
}

impl Default for JsonRpcHost {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonRpcHost {
    /// A host with its own connection pool.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self { client }
    }
}

#[async_trait]
impl Host for JsonRpcHost {
    fn protocol(&self) -> Protocol {
        Protocol::Jsonrpc
    }

    async fn start(&self, config: &ExtensionConfig) -> Result<Arc<dyn Transport>, String> {
        let Source::Http { url } = &config.source else {
            return Err("a jsonrpc extension needs a source of type \"http\"".to_owned());
        };
        let url = reqwest::Url::parse(url).map_err(|error| format!("source.url: {error}"))?;
        Ok(Arc::new(JsonRpcTransport {
            client: self.client.clone(),
            url,
            next_id: AtomicU64::new(1),
        }))
    }
}

struct JsonRpcTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    next_id: AtomicU64,
}

#[async_trait]
impl Transport for JsonRpcTransport {
    async fn request(&self, request: Request<'_>) -> Result<Answer, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut body =
            json!({"jsonrpc": "2.0", "id": id, "method": request.method, "params": request.params});
        if let Some(context) = request.context {
            body["context"] = serde_json::to_value(context).unwrap_or(Value::Null);
        }
        let left = request
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        let broken = |what: String| TransportError::BadAnswer(format!("{} {what}", self.url));
        let timed_out = |what: String| TransportError::TimedOut(format!("{} {what}", self.url));
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(left)
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    timed_out(format!("did not answer {} in time", request.method))
                } else {
                    TransportError::Broken(format!(
                        "{} cannot be reached: {}",
                        self.url,
                        error_chain(&error)
                    ))
                }
            })?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(broken(format!(
                "answered a body over {MAX_BODY_BYTES} bytes"
            )));
        }
        let bytes = tokio::time::timeout_at(request.deadline.into(), response.bytes())
            .await
            .map_err(|_| {
                timed_out(format!(
                    "did not finish answering {} in time",
                    request.method
                ))
            })?
            .map_err(|error| {
                TransportError::Broken(format!(
                    "{} answer could not be read: {}",
                    self.url,
                    error_chain(&error)
                ))
            })?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(broken(format!(
                "answered a body over {MAX_BODY_BYTES} bytes"
            )));
        }
        let mut answer = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(answer)) => answer,
            _ => {
                let text = String::from_utf8_lossy(&bytes);
                return Err(broken(format!(
                    "answered HTTP {status} with a body that is not a JSON-RPC object: {:?}",
                    text.chars().take(200).collect::<String>()
                )));
            }
        };
        if answer.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(broken("answered without \"jsonrpc\": \"2.0\"".to_owned()));
        }
        match answer.get("id") {
            Some(Value::Number(number)) if number.as_u64() == Some(id) => {}
            // A parse error or invalid request cannot name the id: the answer is the error.
            Some(Value::Null) if answer.contains_key("error") => {}
            other => {
                return Err(broken(format!(
                    "answered id {}, not the request's {id}",
                    other.map_or("none".to_owned(), Value::to_string)
                )))
            }
        }
        let answer = answer_of(&mut answer).map_err(broken)?;
        if answer.is_ok() && !status.is_success() {
            return Err(broken(format!("answered HTTP {status} with a result")));
        }
        Ok(answer)
    }

    async fn stop(&self) {
        // Nothing to tear down: the service runs on its own; `shutdown` was sent.
    }
}

/// The error and its sources on one line (reqwest's top-level message alone says
/// little: "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
