//! The runs list (`/`) and a run's page (`/runs/{id}`).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use morpheus_engine::{RunFilter, RunStatus};
use serde::Deserialize;

use super::{
    chip, duration, layout, live_cursor, non_empty, pretty, query_string, when, when_opt,
    JumpQuery, Page, PageError, PageResult, Tab,
};
use crate::api::parse_run_id;
use crate::api::runs::{
    decode_cursor, encode_cursor, load_detail, parse_status, RunDetail, RunSummary,
};
use crate::AppState;

/// Runs per page of the list.
const PAGE_SIZE: u64 = 50;

/// Filters of the runs list (empty fields are no filter).
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    workflow: Option<String>,
    queue: Option<String>,
    cursor: Option<String>,
}

/// `/`: runs newest first, filtered, one page at a time.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let status = non_empty(query.status);
    let workflow = non_empty(query.workflow);
    let queue = non_empty(query.queue);
    let cursor = non_empty(query.cursor);
    let cursor_live = live_cursor(&state).await?;
    let filter = RunFilter {
        status: status.as_deref().map(parse_status).transpose()?,
        workflow: workflow.clone(),
        queue: queue.clone(),
        created_after: None,
        created_before: None,
        older_than: cursor.as_deref().map(decode_cursor).transpose()?,
        limit: Some(PAGE_SIZE + 1),
    };
    let mut runs = state.engine.world().list_runs(&filter).await?;
    let next = if runs.len() as u64 > PAGE_SIZE {
        runs.truncate(PAGE_SIZE as usize);
        runs.last().map(encode_cursor)
    } else {
        None
    };
    let summaries: Vec<RunSummary> = runs.iter().map(RunSummary::from).collect();
    let filters = [
        ("status", status.as_deref()),
        ("workflow", workflow.as_deref()),
        ("queue", queue.as_deref()),
    ];
    let older = next.as_deref().map(|next| {
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", Some(next)));
        format!("/{}", query_string(&pairs))
    });
    let body = html! {
        div.page-head {
            h1 { "Runs" }
            form.inline #jump action="/runs" method="get" {
                input name="id" placeholder="run id" aria-label="Jump to run id" size="38" required;
                button type="submit" { "Go to run" }
            }
        }
        form.filters #run-filters method="get" action="/" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for candidate in RunStatus::ALL {
                        option value=(candidate.as_str()) selected[status.as_deref() == Some(candidate.as_str())] {
                            (candidate.as_str())
                        }
                    }
                }
            }
            label { "Workflow " input name="workflow" value=[workflow.as_deref()] size="14"; }
            label { "Queue " input name="queue" value=[queue.as_deref()] size="14"; }
            button type="submit" { "Filter" }
            @if status.is_some() || workflow.is_some() || queue.is_some() {
                a href="/" { "clear" }
            }
        }
        div #new-runs hidden { a href={ "/" (query_string(&filters)) } { "New runs — refresh" } }
        table.runs #runs data-live=(cursor_live) {
            thead { tr {
                th { "Run" } th { "Workflow" } th { "Status" } th { "Queue" }
                th { "Created" } th { "Input" } th { "Error" }
            } }
            tbody {
                @for run in &summaries {
                    tr data-run-row=(run.id) {
                        td { a.mono href={ "/runs/" (run.id) } { (run.id) } }
                        td { (run.workflow) }
                        td { (chip(&run.status)) }
                        td { (run.queue) }
                        td { (when(run.created_at)) }
                        td.preview { code { (run.input_preview) } }
                        td.error-cell { @if let Some(error) = &run.error { (error) } }
                    }
                }
                @if summaries.is_empty() {
                    tr { td colspan="7" .muted { "No runs match." } }
                }
            }
        }
        @if let Some(older) = &older {
            p.paging { a #older href=(older) { "Older runs →" } }
        }
        @if cursor.is_some() {
            p.paging { a href={ "/" (query_string(&filters)) } { "← Newest" } }
        }
    };
    Ok(Page::ok(layout("Runs", Tab::Runs, body)))
}

/// `/runs?id=`: the jump box.
pub(super) async fn jump(Query(query): Query<JumpQuery>) -> Result<Response, PageError> {
    let id = parse_run_id(query.id.as_deref().unwrap_or("").trim())?;
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

fn terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// `/runs/{id}`: everything about one run.
pub(super) async fn page(State(state): State<AppState>, Path(id): Path<String>) -> PageResult {
    let id = parse_run_id(&id)?;
    let cursor = live_cursor(&state).await?;
    let detail = load_detail(&state, id).await?;
    let body = html! {
        div #run-page data-run=(detail.run.id) data-live=(cursor) {
            (summary(&detail))
            (steps(&detail))
            (io(&detail))
            (logs(&detail))
        }
    };
    Ok(Page::ok(layout(
        &format!("Run {}", detail.run.id),
        Tab::Runs,
        body,
    )))
}

/// The header: what the run is, where it is, and the actions on it. The script swaps
/// this section (and the steps) for a fresh render when the run changes.
fn summary(detail: &RunDetail) -> Markup {
    let run = &detail.run;
    html! {
        section #run-summary data-status=(run.status) {
            div.page-head {
                h1 { "Run " span.mono { (run.id) } }
                div.actions {
                    @if !terminal(&run.status) {
                        button.danger data-action="run-cancel" data-run=(run.id) { "Cancel" }
                    }
                    @if matches!(run.status.as_str(), "failed" | "cancelled") {
                        button data-action="run-resume" data-run=(run.id) { "Resume" }
                    }
                    button data-action="run-rerun" data-run=(run.id) { "Re-run with same input" }
                }
            }
            dl.facts {
                dt { "Status" } dd #run-status { (chip(&run.status)) }
                dt { "Workflow" } dd { a href={ "/" (query_string(&[("workflow", Some(run.workflow.as_str()))])) } { (run.workflow) } }
                dt { "Queue" } dd { (run.queue) " · priority " (run.priority) }
                dt { "Created" } dd { (when(run.created_at)) }
                dt { "Updated" } dd { (when(run.updated_at)) }
                dt { "Completed" } dd { (when_opt(run.completed_at)) }
                @if let Some(parent) = &run.parent_run_id {
                    dt { "Parent" } dd { a.mono href={ "/runs/" (parent) } { (parent) } }
                }
                @if let Some(key) = &run.idempotency_key {
                    dt { "Idempotency key" } dd.mono { (key) }
                }
                @if let Some(wake) = run.wake_at {
                    dt { "Wakes" } dd { (when(wake)) }
                }
                @if let Some(event) = &run.wait_event_key {
                    dt { "Waits for event" } dd.mono { (event) }
                }
                @if let Some(owner) = &detail.lease_owner {
                    dt { "Worker" } dd.mono { (owner) }
                }
            }
            @if let Some(error) = &run.error {
                h2 { "Error" }
                pre.error #run-error { (error) }
            }
        }
    }
}

/// The step timeline: attempts, durations, retries, the next attempt, and a fork button
/// per step.
fn steps(detail: &RunDetail) -> Markup {
    html! {
        section #steps {
            h2 { "Steps" }
            @if detail.steps.is_empty() {
                p.muted { "No step has started yet." }
            } @else {
                ol.timeline {
                    @for step in &detail.steps {
                        li.step data-step=(step.key) data-status=(step.status) {
                            div.step-head {
                                span.seq { "#" (step.seq) }
                                strong.step-key { (step.key) }
                                (chip(&step.status))
                                span.muted {
                                    (step.attempts) @if step.attempts == 1 { " attempt" } @else { " attempts" }
                                    @if let Some(executor) = &step.executor { " · " (executor) }
                                }
                                span.muted { "started " (when(step.started_at)) }
                                @if let Some(ms) = step.duration_ms {
                                    span.duration { (duration(ms)) }
                                }
                                @if let Some(next) = step.next_attempt_at {
                                    span.retry { "next attempt " (when(next)) }
                                }
                                button.fork data-action="run-fork" data-run=(detail.run.id) data-step=(step.key)
                                    title="Start a new run that keeps the steps before this one and runs this one again" {
                                    "Fork from this step"
                                }
                            }
                            @if let Some(error) = &step.error {
                                pre.error { (error) }
                            }
                            @if let Some(output) = &step.output {
                                details { summary { "output" } pre { (pretty(output)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn io(detail: &RunDetail) -> Markup {
    html! {
        section #io .two {
            div {
                h2 { "Input" }
                pre #run-input { (pretty(&detail.input)) }
            }
            div {
                h2 { "Output" }
                @match &detail.output {
                    Some(output) => pre #run-output { (pretty(output)) },
                    None => p.muted { "None yet." },
                }
            }
        }
    }
}

/// The log panel: filters, follow, and the lines (filled and followed by the script).
fn logs(detail: &RunDetail) -> Markup {
    html! {
        section #logs {
            h2 { "Logs" }
            form.filters #log-filter {
                label { "Level "
                    select name="level" {
                        option value="" { "all" }
                        @for level in ["trace", "debug", "info", "warn", "error"] {
                            option value=(level) { (level) }
                        }
                    }
                }
                label { "Step "
                    select name="step" {
                        option value="" { "all" }
                        @for step in &detail.steps {
                            option value=(step.key) { (step.key) }
                        }
                    }
                }
                label { "Text " input name="q" type="search" size="18"; }
                label { input name="follow" type="checkbox" checked; " follow" }
                span.muted #log-state {}
            }
            ol.log-lines #log-lines data-logs={ "/api/v1/runs/" (detail.run.id) "/logs" } {}
        }
    }
}
