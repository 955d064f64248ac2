//! Who may do what: bearer tokens configured by reference (an environment variable or a
//! file, never inline), each with a scope, compared in constant time; a per-token rate
//! limit. Without any token configured requests need none, and the server then only
//! binds a loopback address (see [`crate::ServerConfig::check`]).
//!
//! Dashboard pages are behind the same layer. A browser cannot send a header when it
//! navigates, so the token may also come in the cookie [`TOKEN_COOKIE`] (set by the
//! dashboard's `/login`), and a page navigation without a valid token is sent to
//! `/login` instead of answered with JSON.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The environment variable that, when set, is one more `admin` token.
pub const TOKEN_ENV: &str = "MORPHEUS_API_TOKEN";

/// The cookie the dashboard's `/login` stores the token in (`HttpOnly`,
/// `SameSite=Strict`, percent-encoded).
pub const TOKEN_COOKIE: &str = "morpheus_token";

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET` (lists, details, logs, live events, metrics).
    Read,
    /// Everything, writes included.
    Admin,
}

/// One `[[api.tokens]]` entry of `morpheus.toml`: a name (logged, never the secret), a
/// scope, and where the secret is (exactly one of `token_env` and `token_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Shown in logs and used as the rate-limit key.
    pub name: String,
    /// `read` or `admin`.
    pub scope: Scope,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// A token ready to compare against requests.
#[derive(Clone)]
pub struct ApiToken {
    /// Its name.
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// A token with its secret given directly (tests, and the environment token).
    pub fn new(name: impl Into<String>, scope: Scope, secret: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scope,
            secret: secret.into().into_bytes(),
        }
    }
}

impl TokenSpec {
    /// Reads the secret from where the entry points; the error names the entry and the
    /// source, never the secret.
    pub fn resolve(&self) -> Result<ApiToken, String> {
        let label = format!("[[api.tokens]] '{}'", self.name);
        let secret = match (&self.token_env, &self.token_file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| format!("{label}: environment variable {var} is not set"))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|error| format!("{label}: cannot read {}: {error}", path.display()))?,
            _ => {
                return Err(format!(
                    "{label}: give exactly one of token_env and token_file"
                ))
            }
        };
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err(format!(
                "{label}: the token is shorter than 16 characters; use a long random one"
            ));
        }
        Ok(ApiToken::new(&self.name, self.scope, secret))
    }
}

/// The configured tokens and the rate limiter, shared by every request.
pub struct Auth {
    tokens: Vec<ApiToken>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Auth {
    /// Tokens and a limit of `per_second` requests per token (or per peer without
    /// tokens), with bursts of `burst`.
    pub fn new(tokens: Vec<ApiToken>, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            tokens,
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// Whether any token is configured.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token a presented secret matches. Every token is compared, each in constant
    /// time, so the answer's timing says nothing about which or how much matched.
    fn find(&self, presented: &[u8]) -> Option<&ApiToken> {
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.secret.ct_eq(presented)) {
                found = Some(token);
            }
        }
        found
    }
}

/// The caller, as the auth layer identified it (an extension of every request).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`anonymous` when none is configured).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// Middleware: 401 without a valid token (when tokens are configured), 403 for a `read`
/// token on anything but a read, 429 past the caller's rate limit.
pub async fn authorize(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = if auth.required() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            // Browsers cannot set headers on a WebSocket or EventSource: the live
            // events also take the token as `?access_token=`.
            .map(str::to_owned)
            .or_else(|| query_token(request.uri().query()))
            .or_else(|| cookie_token(request.headers()));
        let Some(presented) = presented else {
            if let Some(login) = login_redirect(&request, false) {
                return login;
            }
            return ApiError::unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>`",
            )
            .into_response();
        };
        match auth.find(presented.as_bytes()) {
            Some(token) => Caller {
                name: token.name.clone(),
                scope: token.scope,
            },
            None => {
                if let Some(login) = login_redirect(&request, true) {
                    return login;
                }
                return ApiError::unauthorized("invalid token").into_response();
            }
        }
    } else {
        Caller {
            name: "anonymous".into(),
            scope: Scope::Admin,
        }
    };
    let read_only = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !read_only && caller.scope < Scope::Admin {
        return ApiError::forbidden(format!(
            "token '{}' has scope read; {} needs an admin token",
            caller.name,
            request.method()
        ))
        .into_response();
    }
    if auth.limiter.check_key(&caller.name).is_err() {
        return ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for '{}'; slow down", caller.name),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .map(|value| value.to_owned())
}

/// The token in the [`TOKEN_COOKIE`] cookie, if any.
fn cookie_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then(|| percent_decode(value))
        })
        .filter(|token| !token.is_empty())
}

/// For a page navigation (a `GET` outside `/api/` and `/metrics`), a redirect to the
/// dashboard's login form that comes back here afterwards; `None` for API calls, which
/// keep their JSON 401.
fn login_redirect(request: &Request, presented_invalid: bool) -> Option<Response> {
    let path = request.uri().path();
    if request.method() != Method::GET || path.starts_with("/api/") || path == "/metrics" {
        return None;
    }
    let back = request
        .uri()
        .path_and_query()
        .map(|value| value.as_str())
        .unwrap_or("/");
    let mut location = format!("/login?next={}", percent_encode(back));
    if presented_invalid {
        location.push_str("&failed=1");
    }
    Some(axum::response::Redirect::to(&location).into_response())
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for query values,
/// path segments and the cookie's value).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reverses [`percent_encode`] (an invalid escape is kept as it is).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_token_is_found_among_other_cookies_and_decoded() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; morpheus_token=a%3Bb%20c; other=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("a;b c"));
    }

    #[test]
    fn percent_encoding_round_trips_any_text() {
        let text = "/runs?status=failed&q=<x> ü%";
        assert_eq!(percent_decode(&percent_encode(text)), text);
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
