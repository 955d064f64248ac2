//! `/agents/{id}/deployments`: the Deployments tab as the directory-deploy design's
//! wireframe draws it — a spec header (Configured/Missing, the source directory, Edit
//! spec, Start), the spec editor, the runs list on the left and the selected run's
//! details (URL, commands, live logs, Stop) on the right.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use morpheus_workflows::deploy::spec::check_agent_id;
use morpheus_workflows::deploy::DeployService;
use serde::Deserialize;

use super::{
    chip, layout, live_cursor, non_empty, when, JumpQuery, Page, PageError, PageResult, Tab,
};
use crate::api::deployments::{RunView, SpecView};
use crate::error::ApiError;
use crate::AppState;

/// Runs the list shows.
const RUNS_SHOWN: u64 = 50;

/// `?run=`: the run whose details are shown (default: the newest).
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    run: Option<String>,
}

fn check_agent(agent: &str) -> Result<(), PageError> {
    check_agent_id(agent).map_err(|error| PageError(ApiError::invalid(error.to_string())))
}

fn service(state: &AppState) -> Result<&DeployService, PageError> {
    state.deploy.as_ref().ok_or_else(|| {
        PageError(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_configured",
            "this server has no deploy workflows registered",
        ))
    })
}

/// `/agents?id=`: the navigation's agent box.
pub(super) async fn jump(Query(query): Query<JumpQuery>) -> Result<Response, PageError> {
    let agent = query.id.unwrap_or_default();
    let agent = agent.trim();
    check_agent(agent)?;
    // The id is checked to be [A-Za-z0-9_.-] only, so it is safe in a path as it is.
    Ok(Redirect::to(&format!("/agents/{agent}/deployments")).into_response())
}

/// The short forms the wireframe shows (`sha_7a12…`, a container's short id).
fn short(id: &str, length: usize) -> &str {
    id.get(..length).unwrap_or(id)
}

/// `/agents/{id}/deployments`.
pub(super) async fn page(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<PageQuery>,
) -> PageResult {
    check_agent(&agent)?;
    let service = service(&state)?;
    let cursor = live_cursor(&state).await?;
    let spec = service
        .store()
        .spec(&agent)
        .await
        .map_err(morpheus_workflows::deploy::DeployError::from)?
        .map(|spec| SpecView::from(&spec));
    let runs: Vec<RunView> = service
        .runs(&agent, RUNS_SHOWN)
        .await?
        .iter()
        .map(RunView::from)
        .collect();
    let wanted = non_empty(query.run);
    let selected = match &wanted {
        Some(id) => match runs.iter().find(|run| &run.id == id) {
            Some(run) => Some(run),
            None => {
                return Err(PageError(ApiError::not_found(format!(
                    "agent '{agent}' has no deploy run {id}"
                ))))
            }
        },
        None => runs.first(),
    };
    let body = html! {
        div #deployments data-agent=(agent) data-live=(cursor)
            data-run=[selected.map(|run| run.id.as_str())] {
            h1 { "Deployments " span.muted { "· agent " (agent) } }
            (header(spec.as_ref()))
            (editor(spec.as_ref()))
            div.split {
                (runs_list(&agent, &runs, selected))
                section #dep-details {
                    h2 { "Run details" }
                    (details(selected))
                    div #dep-logs {
                        h3 { "Logs" }
                        @match selected {
                            Some(run) => ol.log-lines #log-lines
                                data-logs={ "/api/agents/" (agent) "/deployments/" (run.id) "/logs" } {},
                            None => p.muted { "No run yet." },
                        }
                    }
                }
            }
        }
    };
    Ok(Page::ok(layout(
        &format!("Deployments of {agent}"),
        Tab::Deployments,
        body,
    )))
}

fn header(spec: Option<&SpecView>) -> Markup {
    html! {
        section #dep-header .spec-header {
            "Spec: "
            @match spec {
                Some(spec) => {
                    span.chip.s-configured #spec-chip { "Configured" }
                    " (" code #spec-source { (spec.source_dir) } ")"
                },
                None => span.chip.s-missing #spec-chip { "Missing" },
            }
            span.spacer {}
            button data-action="dep-edit" { "Edit spec" }
            label { "Target "
                select #start-target {
                    @for target in ["preview", "production"] {
                        option value=(target)
                            selected[spec.is_some_and(|spec| spec.target_default == target)] { (target) }
                    }
                }
            }
            button.primary data-action="dep-start" disabled[spec.is_none()] { "Start" }
        }
    }
}

/// The spec editor: every field of the design's editor (and the sandbox's image and
/// limits, which a spec also has), filled from the current spec.
fn editor(spec: Option<&SpecView>) -> Markup {
    let text = |field: fn(&SpecView) -> &str| spec.map(field).unwrap_or("");
    let port = spec.map(|spec| spec.runtime_port).unwrap_or(3000);
    let target = spec
        .map(|spec| spec.target_default.as_str())
        .unwrap_or("preview");
    let env: Vec<(&String, &String)> = spec
        .map(|spec| spec.env.iter().collect())
        .unwrap_or_default();
    html! {
        form #spec-editor .editor hidden[spec.is_some()] {
            h2 { "Spec" }
            div.grid {
                label { "Name" input name="name" required value=(text(|s| &s.name)); }
                label { "Source directory" input name="sourceDir" required placeholder="/absolute/path" value=(text(|s| &s.source_dir)); }
                label { "Install command" input name="installCommand" placeholder="(none)" value=(text(|s| &s.install_command)); }
                label { "Build command" input name="buildCommand" required placeholder="true" value=(text(|s| &s.build_command)); }
                label { "Start command" input name="startCommand" required value=(text(|s| &s.start_command)); }
                label { "Runtime port" input name="runtimePort" type="number" min="1024" max="65535" value=(port); }
                label { "Target default"
                    select name="targetDefault" {
                        @for option in ["preview", "production"] {
                            option value=(option) selected[target == option] { (option) }
                        }
                    }
                }
                label { "Image" input name="image" placeholder="(default)" value=(text(|s| &s.image)); }
                label { "CPU (cores)" input name="cpu" type="number" step="0.1" min="0" value=[spec.and_then(|s| s.cpu)]; }
                label { "Memory (bytes, or 512m)" input name="memory" value=[spec.and_then(|s| s.memory_bytes)]; }
            }
            fieldset #env-rows {
                legend { "Environment" }
                @for (key, value) in &env {
                    div.env-row {
                        input name="envKey" placeholder="KEY" value=(key) aria-label="Variable name";
                        input name="envValue" placeholder="value" value=(value) aria-label="Variable value";
                        button type="button" data-action="env-remove" { "×" }
                    }
                }
                button type="button" data-action="env-add" { "Add variable" }
            }
            div.footer {
                button type="button" data-action="spec-save" { "Save spec" }
                button.primary type="button" data-action="spec-save-deploy" { "Save and deploy" }
            }
        }
    }
}

fn runs_list(agent: &str, runs: &[RunView], selected: Option<&RunView>) -> Markup {
    html! {
        section #dep-runs {
            h2 { "Runs" }
            @if runs.is_empty() {
                p.muted { "No deployment yet." }
            }
            ul.dep-runs {
                @for run in runs {
                    li data-dep-run=(run.id)
                        class=[selected.is_some_and(|s| s.id == run.id).then_some("selected")] {
                        a href={ "/agents/" (agent) "/deployments?run=" (run.id) } {
                            div { (chip(&run.status)) " " (run.target) " " span.muted { (age_of(run.created_at)) } }
                            div.mono.small { "snapshot: "
                                @match &run.snapshot_hash { Some(hash) => { "sha_" (short(hash, 8)) }, None => "—" } }
                            div.mono.small { "sandbox: "
                                @match &run.sandbox_id { Some(id) => (short(id, 12)), None => "—" } }
                        }
                    }
                }
            }
        }
    }
}

fn age_of(millis: i64) -> Markup {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(at) => when(at),
        None => html! { "—" },
    }
}

/// Commands are shown exactly as the run used them: from its spec snapshot.
fn details(run: Option<&RunView>) -> Markup {
    let Some(run) = run else {
        return html! { div #dep-info { p.muted { "Start a deployment to see it here." } } };
    };
    let spec = &run.spec_snapshot;
    // Only http(s) URLs become links: anything else is shown as text.
    let link = run
        .url
        .as_deref()
        .filter(|url| url.starts_with("http://") || url.starts_with("https://"));
    let stoppable = matches!(run.status.as_str(), "ready" | "failed" | "stopping");
    html! {
        div #dep-info data-status=(run.status) {
            dl.facts {
                dt { "Status" } dd #dep-status { (chip(&run.status)) }
                dt { "URL" } dd #dep-url {
                    @match (link, &run.url) {
                        (Some(url), _) => a href=(url) target="_blank" rel="noopener noreferrer" { (url) },
                        (None, Some(url)) => (url),
                        (None, None) => span.muted { "—" },
                    }
                }
                dt { "Run" } dd.mono { a href={ "/runs/" (run.id) } { (run.id) } }
                dt { "Target" } dd { (run.target) }
                dt { "Created" } dd { (age_of(run.created_at)) }
                dt { "Snapshot" } dd.mono {
                    @match &run.snapshot_hash { Some(hash) => span title=(hash) { "sha_" (short(hash, 8)) }, None => "—" }
                }
                dt { "Sandbox" } dd.mono {
                    @match &run.sandbox_id { Some(id) => span title=(id) { (short(id, 12)) }, None => "—" }
                }
                @if let Some(note) = &run.note { dt { "Note" } dd { (note) } }
                @if let Some(stopped) = run.stopped_at { dt { "Stopped" } dd { (age_of(stopped)) } }
            }
            @if let Some(error) = &run.error {
                pre.error #dep-error { (error) }
            }
            h3 { "Commands" }
            pre.commands #dep-commands {
                @if !spec.install_command.is_empty() { "$ " (spec.install_command) "\n" }
                "$ " (spec.build_command) "\n"
                "$ " (spec.start_command) "   # port " (spec.runtime_port)
            }
            @if stoppable {
                button.danger data-action="dep-stop" data-run=(run.id) { "Stop" }
            }
        }
    }
}
