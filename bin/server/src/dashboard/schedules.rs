//! `/schedules`: every schedule with its trigger, next and upcoming fire times, the last
//! run it started, its heartbeat URL with how its latest ping went, and pause/resume.

use axum::extract::State;
use maud::html;

use super::{chip, layout, when, when_opt, Page, PageResult, Tab};
use crate::api::schedules::ScheduleView;
use crate::AppState;
use morpheus_engine::{HeartbeatPing, PingState};

/// The page.
pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let schedules: Vec<ScheduleView> = state
        .engine
        .world()
        .list_schedules()
        .await?
        .iter()
        .map(ScheduleView::from)
        .collect();
    // The latest ping of each schedule that has a heartbeat URL (a handful of schedules,
    // one indexed read each).
    let mut latest_pings = std::collections::HashMap::new();
    for schedule in schedules.iter().filter(|s| s.heartbeat_url.is_some()) {
        let latest = state
            .engine
            .world()
            .schedule_heartbeats(&schedule.name, 1)
            .await?;
        if let Some(ping) = latest.into_iter().next() {
            latest_pings.insert(schedule.name.clone(), ping);
        }
    }
    let body = html! {
        h1 { "Schedules" }
        @if schedules.is_empty() {
            p.muted { "No schedules. Add one with " code { "morpheus schedules add" } " or " code { "POST /api/v1/schedules" } "." }
        } @else {
            table #schedules {
                thead { tr {
                    th { "Name" } th { "Workflow" } th { "Trigger" } th { "State" }
                    th { "Next fire" } th { "Upcoming" } th { "Last run" } th { "Heartbeat" } th { "Policy" } th {}
                } }
                tbody {
                    @for schedule in &schedules {
                        tr data-schedule=(schedule.name) {
                            td { strong { (schedule.name) } }
                            td { (schedule.workflow) }
                            td.mono {
                                @if let Some(cron) = &schedule.cron {
                                    (cron) @if let Some(zone) = &schedule.timezone { " (" (zone) ")" }
                                }
                                @if let Some(every) = schedule.every_ms {
                                    "every " (humantime::format_duration(std::time::Duration::from_millis(every)))
                                }
                            }
                            td { (chip(if schedule.paused { "paused" } else { "active" })) }
                            td { @if schedule.paused { span.muted { "paused" } } @else { (when(schedule.next_fire_at)) } }
                            td.small { @for at in &schedule.upcoming { div { (when(*at)) } } }
                            td {
                                @match &schedule.last_run_id {
                                    Some(run) => { a.mono href={ "/runs/" (run) } { (run.get(..13).unwrap_or(run)) "…" } " " (when_opt(schedule.last_fire_at)) },
                                    None => span.muted { "never fired" },
                                }
                            }
                            td.small data-heartbeat=[schedule.heartbeat_url.as_deref()] {
                                @match &schedule.heartbeat_url {
                                    Some(url) => {
                                        div.mono title=(url) { (shorten(url)) }
                                        @if let Some(ping) = latest_pings.get(&schedule.name) { (ping_summary(ping)) }
                                    },
                                    None => span.muted { "none" },
                                }
                            }
                            td.small { (schedule.overlap) " · " (schedule.catch_up) " · " (schedule.queue) }
                            td {
                                @if schedule.paused {
                                    button data-action="schedule-resume" data-schedule=(schedule.name) { "Resume" }
                                } @else {
                                    button data-action="schedule-pause" data-schedule=(schedule.name) { "Pause" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::ok(layout("Schedules", Tab::Schedules, body)))
}

/// A URL cut to 48 characters for the table (the whole of it is the cell's tooltip).
fn shorten(url: &str) -> String {
    match url.char_indices().nth(47) {
        Some((cut, _)) => format!("{}…", &url[..cut]),
        None => url.to_owned(),
    }
}

/// How the latest ping went: delivered, retrying (with its last error), or given up.
fn ping_summary(ping: &HeartbeatPing) -> maud::Markup {
    let run = ping.run_id.to_string();
    html! {
        div data-ping-state=(ping.state.as_str()) {
            @match ping.state {
                PingState::Delivered => { "last ping " (ping.outcome.as_str()) ": delivered " (when_opt(ping.finished_at)) },
                PingState::Pending if ping.attempts == 0 => { "last ping " (ping.outcome.as_str()) ": sending" },
                PingState::Pending => { "last ping " (ping.outcome.as_str()) ": " (ping.attempts) " failed, retrying " (when(ping.next_attempt_at)) },
                PingState::Abandoned => { "last ping " (ping.outcome.as_str()) ": given up after " (ping.attempts) " attempts" },
            }
            " (run " a.mono href={ "/runs/" (run) } { (run.get(..8).unwrap_or(&run)) "…" } ")"
            @if ping.state != PingState::Delivered {
                @if let Some(error) = &ping.last_error { div.muted { (error) } }
            }
        }
    }
}
