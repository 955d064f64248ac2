//! An Akash provider's HTTP API, as a deployment's owner uses it: send the manifest,
//! read the lease's status. Every request carries a provider JWT (see
//! [`provider_jwt`](super::provider_jwt)) minted for it from the executor's key; the
//! token lives only in the request's `Authorization` header, never in an output, an
//! error or a log line.
//!
//! One attempt per call: a 5xx/429 answer or a connection failure is a retryable step
//! error (the engine retries with its backoff; sending the same manifest again is a
//! no-op for the provider), any other 4xx a permanent one naming the provider's answer.

use std::time::{Duration, SystemTime};

use morpheus_engine::StepError;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::keys::Signer;
use super::provider_jwt::{mint_provider_jwt, DEFAULT_PROVIDER_JWT_TTL};

/// A client for any provider (each call names its `host_uri`).
#[derive(Debug, Clone)]
pub(crate) struct ProviderApi {
    client: reqwest::Client,
}

/// A provider's answer with a success status.
pub(crate) struct ProviderAnswer {
    pub status: StatusCode,
    pub body: String,
}

impl ProviderApi {
    pub fn new(request_timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .user_agent(concat!("morpheus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("HTTP client: {error}"))?;
        Ok(Self { client })
    }

    /// `method {host_uri}{path}` with a fresh JWT of `signer` and, if given, a JSON
    /// body sent byte for byte. `what` names the operation in errors.
    pub async fn request(
        &self,
        signer: &Signer,
        method: Method,
        host_uri: &str,
        path: &str,
        body: Option<&str>,
        what: &str,
    ) -> Result<ProviderAnswer, StepError> {
        let url = format!("{host_uri}{path}");
        let token = mint_provider_jwt(signer, SystemTime::now(), DEFAULT_PROVIDER_JWT_TTL);
        let mut request = self.client.request(method.clone(), &url).bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        // reqwest's errors name the URL, never the headers: the token stays out.
        let response = request.send().await.map_err(|error| {
            StepError::retryable(format!(
                "{what}: provider {host_uri} unreachable ({method} {path}): {}",
                super::rest::describe_transport(&error)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|error| {
            StepError::retryable(format!(
                "{what}: provider {host_uri} answer cut off: {}",
                super::rest::describe_transport(&error)
            ))
        })?;
        if status.is_success() {
            return Ok(ProviderAnswer { status, body: text });
        }
        let detail = provider_error(&text);
        let message = format!("{what}: provider {host_uri} answered HTTP {status}: {detail}");
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(StepError::retryable(message))
        } else {
            Err(StepError::permanent(message))
        }
    }
}

/// The provider's one-line reason: its `{"error": "..."}` (or `message`), else the
/// start of the body.
fn provider_error(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let reason = parsed.as_ref().and_then(|body| {
        ["error", "message"]
            .iter()
            .find_map(|key| body.get(key).and_then(Value::as_str))
            .map(str::to_owned)
    });
    let reason = reason.unwrap_or_else(|| super::rest::snippet(text));
    let line = reason.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        "(no body)".to_owned()
    } else {
        line.to_owned()
    }
}

/// A provider base URL: `http(s)://host[:port]` with any trailing `/` removed.
pub(crate) fn normalize_host_uri(host_uri: &str) -> Result<String, StepError> {
    let trimmed = host_uri.trim().trim_end_matches('/');
    let url = url::Url::parse(trimmed).map_err(|error| {
        StepError::permanent(format!("host_uri '{host_uri}' is not a URL: {error}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(StepError::permanent(format!(
            "host_uri '{host_uri}' is not an http(s)://host URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(StepError::permanent(format!(
            "host_uri '{host_uri}' has a query or fragment"
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_are_one_line() {
        assert_eq!(
            provider_error(r#"{"error": "manifest hash mismatch\nsecond"}"#),
            "manifest hash mismatch"
        );
        assert_eq!(provider_error(r#"{"message": "no lease"}"#), "no lease");
        assert_eq!(provider_error("  forbidden  "), "forbidden");
        assert_eq!(provider_error(""), "(no body)");
    }

    #[test]
    fn host_uris_are_checked() {
        assert_eq!(
            normalize_host_uri("http://127.0.0.1:8443/").unwrap(),
            "http://127.0.0.1:8443"
        );
        assert_eq!(
            normalize_host_uri("https://provider.example.com:8443").unwrap(),
            "https://provider.example.com:8443"
        );
        for bad in ["provider.example.com", "ftp://x", "http://x/?a=1", ""] {
            assert!(normalize_host_uri(bad).is_err(), "{bad}");
        }
    }
}
