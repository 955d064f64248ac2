//! `/queues`: each queue's concurrency limit and what is running, retrying and queued.

use axum::extract::State;
use maud::html;

use super::{layout, query_string, Page, PageResult, Tab};
use crate::api::queues::QueueView;
use crate::AppState;

/// The page.
pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let queues: Vec<QueueView> = state
        .engine
        .world()
        .list_queues()
        .await?
        .iter()
        .map(QueueView::from)
        .collect();
    let body = html! {
        h1 { "Queues" }
        @if queues.is_empty() {
            p.muted { "No queues yet: a queue appears with its first run or limit." }
        } @else {
            table #queues {
                thead { tr { th { "Queue" } th { "Limit" } th.num { "Running" } th.num { "Retrying" } th.num { "Queued" } } }
                tbody {
                    @for queue in &queues {
                        tr data-queue=(queue.name) {
                            td { a href={ "/" (query_string(&[("queue", Some(queue.name.as_str()))])) } { (queue.name) } }
                            td { @match queue.concurrency_limit { Some(limit) => (limit), None => span.muted { "none" } } }
                            td.num { (queue.running) }
                            td.num { (queue.retrying) }
                            td.num { (queue.queued) }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::ok(layout("Queues", Tab::Queues, body)))
}
