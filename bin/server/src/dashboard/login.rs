//! `/login`: stores an API token in the `morpheus_token` cookie so page navigations
//! (which cannot carry an `Authorization` header) pass the auth layer; `/logout` drops
//! it. The cookie is `HttpOnly` (no script reads it) and `SameSite=Strict` (no other
//! site's page sends it), and the token is checked by the auth layer on every request
//! exactly as a bearer token is.

use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::{layout, Page, Tab};
use crate::auth::{percent_encode, TOKEN_COOKIE};

/// `?next=&failed=` of the form.
#[derive(Debug, Deserialize)]
pub(super) struct FormQuery {
    next: Option<String>,
    failed: Option<String>,
}

/// Where to go after logging in: a path on this site only, never another origin.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

/// The form.
pub(super) async fn form(Query(query): Query<FormQuery>) -> Page {
    let next = local_path(query.next.as_deref());
    Page::ok(layout(
        "Log in",
        Tab::None,
        html! {
            h1 { "Log in" }
            @if query.failed.is_some() {
                p.error #login-failed { "That token was not accepted. Paste a configured API token." }
            }
            p { "Paste an API token (from " code { "[[api.tokens]]" } " or " code { "MORPHEUS_API_TOKEN" } "). It is kept in an HttpOnly cookie for this browser session." }
            form.login method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Token " input type="password" name="token" required autocomplete="current-password" size="40"; }
                button.primary type="submit" { "Log in" }
            }
        },
    ))
}

/// The form's body.
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// A request from a page of another site carries its own `Origin`: refuse it, so no
/// other site can log this browser in with a token of its choosing.
fn cross_site(headers: &HeaderMap) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or(origin);
            origin_host != host
        }
        _ => false,
    }
}

/// Sets the cookie and goes back where the visitor wanted to be (the auth layer judges
/// the token there, and sends an invalid one back here with `failed=1`).
pub(super) async fn submit(headers: HeaderMap, Form(login): Form<LoginForm>) -> Response {
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site login refused").into_response();
    }
    let token = login.token.trim();
    let next = local_path(login.next.as_deref()).to_owned();
    let cookie = format!(
        "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        percent_encode(token)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

/// Drops the cookie.
pub(super) async fn logout(headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site logout refused").into_response();
    }
    let cookie = format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/runs/1?x=2")), "/runs/1?x=2");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }
}
