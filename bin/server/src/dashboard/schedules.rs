//! `/schedules`: every schedule with its trigger, next and upcoming fire times, the last
//! run it started, and pause/resume.

use axum::extract::State;
use maud::html;

use super::{chip, layout, when, when_opt, Page, PageResult, Tab};
use crate::api::schedules::ScheduleView;
use crate::AppState;

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
    let body = html! {
        h1 { "Schedules" }
        @if schedules.is_empty() {
            p.muted { "No schedules. Add one with " code { "morpheus schedules add" } " or " code { "POST /api/v1/schedules" } "." }
        } @else {
            table #schedules {
                thead { tr {
                    th { "Name" } th { "Workflow" } th { "Trigger" } th { "State" }
                    th { "Next fire" } th { "Upcoming" } th { "Last run" } th { "Policy" } th {}
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
