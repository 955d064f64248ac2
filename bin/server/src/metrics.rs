//! Prometheus metrics at `GET /metrics`, behind the API's tokens (a `read` token is
//! enough): the engine's own counters and histograms (see [`morpheus_engine::metrics`])
//! from the recorder this process installed, and the queue depth gauge, sampled from the
//! database at each scrape rather than kept up to date on the hot path. A process
//! without workers (`morpheus serve`) therefore still shows every queue's depth, and a
//! worker's counters are its own: sum them across processes in Prometheus.
//!
//! The text exposition format 0.0.4 is rendered by `metrics-exporter-prometheus`
//! without its own HTTP listener: this server serves it, so the tokens apply.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use morpheus_engine::metrics::{COMMIT_BATCH_SIZE, QUEUE_DEPTH};
use morpheus_engine::{QueueDepth, RunStatus, World};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) of every `_seconds` histogram. A no-op step, a claim or a
/// group commit takes a fraction of a millisecond on SQLite, so the buckets start at
/// 50 µs; deploy builds take minutes, so they end at 30 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Bucket bounds of the group-commit batch size (a batch holds at most 1024 writes).
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (so
/// an unscraped process does not keep every sample).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed Prometheus recorder and what the scrape samples from the database.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Queues with a depth gauge set by an earlier scrape: a queue whose runs have all
    /// finished leaves the sample, and its gauges must drop to zero, not stay at their
    /// last value. Held across a scrape's query, so scrapes do not interleave.
    sampled_queues: Arc<tokio::sync::Mutex<BTreeSet<String>>>,
}

impl Metrics {
    /// Installs the Prometheus recorder as this process's global recorder, describes the
    /// engine's metrics, and starts the upkeep task. Call it once, inside a Tokio
    /// runtime and before the worker starts (the worker resolves its handles against the
    /// recorder installed when it starts).
    pub fn install() -> Result<Self, String> {
        let cannot = |error: metrics_exporter_prometheus::BuildError| {
            format!("cannot install the metrics recorder: {error}")
        };
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(COMMIT_BATCH_SIZE.into()),
                    BATCH_SIZE_BUCKETS,
                )
            })
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(cannot)?;
        morpheus_engine::metrics::describe();
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticker.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Self {
            handle,
            sampled_queues: Arc::default(),
        })
    }

    /// Samples the queue depths from `world` into their gauges, then renders everything.
    async fn scrape(&self, world: &dyn World) -> ApiResult<String> {
        let mut sampled = self.sampled_queues.lock().await;
        // A database that cannot answer fails the scrape (503, so Prometheus marks the
        // target down) rather than serving stale depths; the counters lose nothing,
        // they are cumulative and the next scrape has them.
        let depths = world.queue_depths().await.map_err(ApiError::from)?;
        let now: BTreeSet<String> = depths.iter().map(|d| d.queue.clone()).collect();
        for gone in sampled.difference(&now) {
            for state in unfinished_states() {
                set_depth(gone, state, 0);
            }
        }
        for queue in &now {
            for state in unfinished_states() {
                set_depth(queue, state, runs_in(&depths, queue, state));
            }
        }
        *sampled = now;
        Ok(self.handle.render())
    }
}

/// The states a run is in before it ends, each a `state` label of the depth gauge.
fn unfinished_states() -> impl Iterator<Item = RunStatus> {
    RunStatus::ALL
        .into_iter()
        .filter(|status| !status.is_terminal())
}

fn runs_in(depths: &[QueueDepth], queue: &str, state: RunStatus) -> u64 {
    depths
        .iter()
        .find(|d| d.queue == queue && d.status == state)
        .map_or(0, |d| d.runs)
}

fn set_depth(queue: &str, state: RunStatus, runs: u64) {
    ::metrics::gauge!(QUEUE_DEPTH, "queue" => queue.to_owned(), "state" => state.as_str())
        .set(runs as f64);
}

/// `GET /metrics`, behind the auth layer.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>) -> Response {
    let Some(metrics) = &state.metrics else {
        return ApiError::not_found(
            "this process installed no metrics recorder (morpheus up --listen and morpheus serve do)",
        )
        .into_response();
    };
    match metrics.scrape(state.engine.world().as_ref()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => error.into_response(),
    }
}
