//! The dashboard: server-rendered HTML pages over the same engine and deploy service the
//! JSON API uses, plus one small script (`/assets/app.js`) for the actions (it `POST`s
//! to the API) and the live updates (it follows `/api/v1/events` over WebSocket).
//!
//! - `/` — runs, with status/workflow/queue filters, a jump-to-id box and cursor paging.
//! - `/runs/{id}` — a run: its step timeline, input, output, error, actions (cancel,
//!   resume, fork from a step, re-run) and its logs, filtered and followed live.
//! - `/agents/{id}/deployments` — the directory-deploy tab as the design draws it: spec
//!   header, spec editor, runs list, run details with live logs and Stop.
//! - `/schedules`, `/queues` — schedules with their fire times, queues with their load.
//! - `/login` — a form that stores an API token in an `HttpOnly` cookie, since a
//!   browser cannot send a bearer header when it navigates.
//!
//! Every value from a run, a log line or a spec reaches the page escaped: maud escapes
//! whatever it interpolates, and the script only ever sets data with `textContent`.
//! Pages are served with a `Content-Security-Policy` that refuses inline scripts, so
//! even a missed escape could not run one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

mod deployments;
mod login;
mod queues;
mod runs;
mod schedules;

/// The script every page loads: actions and live updates.
const APP_JS: &str = include_str!("assets/app.js");
/// The stylesheet every page loads.
const APP_CSS: &str = include_str!("assets/app.css");

/// Only the page's own script and stylesheet may run or apply: an injected `<script>`
/// or `style` attribute is inert even if some value were not escaped.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The pages, behind the auth layer like the API they read.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(runs::list))
        .route("/runs", get(runs::jump))
        .route("/runs/{id}", get(runs::page))
        .route("/agents", get(deployments::jump))
        .route("/agents/{id}/deployments", get(deployments::page))
        .route("/schedules", get(schedules::page))
        .route("/queues", get(queues::page))
}

/// What anyone may fetch: the login form and the static assets.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", axum::routing::post(login::logout))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change with the binary; a short cache keeps upgrades visible.
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Which tab of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Runs,
    Schedules,
    Queues,
    Deployments,
    None,
}

/// A rendered page, answered with the security headers every page carries.
struct Page {
    status: StatusCode,
    body: Markup,
}

impl Page {
    fn ok(body: Markup) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (self.status, Html(self.body.into_string())).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        response
    }
}

/// An error shown as a page (with the API's status and message).
struct PageError(ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let error = self.0;
        let body = layout(
            "Error",
            Tab::None,
            html! {
                h1 { "Error " (error.status.as_u16()) }
                p.error { (error.message) }
                p { a href="/" { "Back to runs" } }
            },
        );
        Page {
            status: error.status,
            body,
        }
        .into_response()
    }
}

type PageResult = Result<Page, PageError>;

/// The frame of every page: navigation, a place for action errors, the content.
fn layout(title: &str, tab: Tab, content: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Tab| {
        html! { a href=(href) class=[(tab == this).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Morpheus" }
                // No favicon request (and no 404 for it) on every page.
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Morpheus" }
                    nav {
                        (link("/", "Runs", Tab::Runs))
                        (link("/schedules", "Schedules", Tab::Schedules))
                        (link("/queues", "Queues", Tab::Queues))
                        span class=[(tab == Tab::Deployments).then_some("active")] { "Deployments" }
                        form.inline action="/agents" method="get" {
                            input name="id" placeholder="agent id" aria-label="Agent id" size="12";
                            button type="submit" { "Open" }
                        }
                    }
                }
                div #flash role="alert" hidden {}
                main { (content) }
            }
        }
    }
}

/// A status as a coloured chip (the script updates `data-status` and the text live).
fn chip(status: &str) -> Markup {
    html! { span class={ "chip s-" (status) } data-status=(status) { (status) } }
}

/// A time as its age ("3m ago", "in 20s"), the exact instant in the tooltip.
fn when(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) title=(at.to_rfc3339()) { (age(at, Utc::now())) } }
}

/// An optional time, or a dash.
fn when_opt(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => when(at),
        None => html! { span.muted { "—" } },
    }
}

/// `at` relative to `now`, in its largest whole unit.
fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let magnitude = seconds.unsigned_abs();
    let text = match magnitude {
        0..=59 => format!("{magnitude}s"),
        60..=3599 => format!("{}m", magnitude / 60),
        3600..=86_399 => format!("{}h", magnitude / 3600),
        _ => format!("{}d", magnitude / 86_400),
    };
    if seconds >= 0 {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A duration in milliseconds, as people read it.
fn duration(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// JSON, indented, for a `<pre>`.
fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `?key=value&…` of the non-empty pairs, each value percent-encoded.
fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| {
            value
                .filter(|value| !value.is_empty())
                .map(|value| format!("{key}={}", crate::auth::percent_encode(value)))
        })
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

/// The live-event cursor of "now", read before a page reads what it shows: the page's
/// script follows events after it, so a change between the read and the script's
/// connection is delivered, not lost.
async fn live_cursor(state: &AppState) -> Result<String, PageError> {
    let head = state.engine.world().feed_head().await?;
    Ok(crate::live::EventCursor {
        feed: head,
        sub: u8::MAX,
    }
    .to_string())
}

/// An empty form field is no filter.
fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// `?id=` of the jump boxes.
#[derive(Debug, Deserialize)]
struct JumpQuery {
    id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s ago");
        assert_eq!(age(now - chrono::Duration::seconds(150), now), "2m ago");
        assert_eq!(age(now + chrono::Duration::seconds(7200), now), "in 2h");
    }

    #[test]
    fn query_strings_skip_empty_values_and_encode_the_rest() {
        assert_eq!(
            query_string(&[("status", Some("failed")), ("q", Some("a&b")), ("x", None)]),
            "?status=failed&q=a%26b"
        );
        assert_eq!(query_string(&[("status", Some(""))]), "");
    }

    #[test]
    fn interpolated_values_are_escaped() {
        let page = html! { p { ("<script>alert(1)</script>") } }.into_string();
        assert_eq!(page, "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
    }
}
