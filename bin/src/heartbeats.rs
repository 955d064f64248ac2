//! The heartbeat pinger `morpheus up` runs beside its workers: after each run of a
//! schedule with a `heartbeat_url` completes it GETs the URL, after one fails
//! `<url>/fail` (the healthchecks.io / Cronitor convention). Cancelled runs are not
//! pinged.
//!
//! The pings go through the database's outbox ([`morpheus_engine::HeartbeatStore`]):
//! every pass enqueues the runs that ended since the stored feed cursor (one row per
//! run, however many processes do it), claims due rows under a lease, sends them, and
//! records each result under its claim. A failed ping is retried with exponential backoff whose next time is
//! stored in its row, so retries survive restarts and any process may do them; after
//! [`MAX_ATTEMPTS`] it is given up, logged at warn. A ping never touches its run.
//!
//! A process killed between sending a ping and recording it leaves the row to be sent
//! again once its lease passes: pings are at least once, and exactly once unless a
//! process dies in that moment. Each request carries the run id in
//! [`RUN_ID_HEADER`], so a receiver can tell a repeat.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use chrono::Utc;
use futures::StreamExt;
use morpheus_engine::{HeartbeatClaim, HeartbeatOutcome, World};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Attempts before a ping is given up (the first plus seven retries, about two minutes
/// of trying with [`retry_delay`]).
pub const MAX_ATTEMPTS: u32 = 8;

/// The request header naming the run a ping reports on.
pub const RUN_ID_HEADER: &str = "x-morpheus-run-id";

/// Pings claimed, and sent at once, per round.
const BATCH: u32 = 8;

/// How long a claimed ping is this process's to send: well over [`REQUEST_TIMEOUT`], so
/// a slow monitor does not make a second process send it too.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Longest a monitor may take to answer a ping.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest time between two passes: on Postgres every feed change (log lines
/// included) wakes the pinger, and a busy engine must not turn that into a query storm.
const MIN_PASS_GAP: Duration = Duration::from_millis(200);

/// The longest error text stored for a failed attempt.
const MAX_ERROR_LEN: usize = 500;

/// How long to wait after the `attempts`-th failed attempt (1, 2, …): 1 s doubling up to
/// 5 min.
pub fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << doublings).min(Duration::from_secs(300))
}

/// The URL a ping GETs: the schedule's URL for a completed run, with `/fail` added to
/// its path for a failed one (a trailing slash is not doubled; a query stays a query).
pub fn ping_target(url: &str, outcome: HeartbeatOutcome) -> Result<url::Url> {
    let mut target =
        url::Url::parse(url).map_err(|error| anyhow!("heartbeat URL '{url}': {error}"))?;
    if outcome == HeartbeatOutcome::Failed {
        let path = format!("{}/fail", target.path().trim_end_matches('/'));
        target.set_path(&path);
    }
    Ok(target)
}

/// How soon to pass again when a pass could not finish its work yet: committed feed
/// entries held back behind an older open transaction (Postgres; see
/// [`morpheus_engine::HeartbeatsEnqueued::held_back`]), or a due ping nobody could claim.
const LOOK_AGAIN_SOON: Duration = Duration::from_millis(500);

/// The pinger's longest wait between passes when nothing wakes it: on SQLite the
/// worker's poll (nothing can notify across processes), on Postgres a minute, since a
/// notification on the feed channel wakes it when a run ends and a held-back feed
/// entry, a due retry or an expiring claim wakes it on time anyway.
pub fn fallback_poll(backend: morpheus_engine::Backend, worker_poll: Duration) -> Duration {
    match backend {
        morpheus_engine::Backend::Sqlite => worker_poll,
        morpheus_engine::Backend::Postgres => Duration::from_secs(60),
    }
}

/// Runs the pinger until `shutdown` resolves. `poll` is the longest wait between passes
/// when nothing wakes it (Postgres wakes it when the feed changes; SQLite cannot).
pub async fn run(
    world: Arc<dyn World>,
    poll: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("morpheus-heartbeat/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let changed = Arc::new(Notify::new());
    let listener = world.spawn_feed_listener(changed.clone());
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let mut wait = poll;
        tokio::select! {
            _ = &mut shutdown => break,
            result = pass(world.as_ref(), &client) => match result {
                Ok(next) => {
                    failures = 0;
                    wait = next.map_or(poll, |next| poll.min(next));
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(error = %format!("{error:#}"), "heartbeat pass failed; trying again");
                }
            },
        }
        // The next pass: when woken, when the next retry is due, or after `poll`; after
        // storage errors, later and later (up to a minute).
        if failures > 0 {
            wait = poll.max(retry_delay(failures).min(Duration::from_secs(60)));
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(started + MIN_PASS_GAP) => {}
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
    Ok(())
}

/// Enqueues what ended since the last pass, then sends every due ping. Returns how soon
/// the next pass is needed (a held-back feed entry, the next due ping), if at all
/// before the fallback poll. An idle pass is two reads: the feed past the cursor and the
/// next due ping.
async fn pass(world: &dyn World, client: &reqwest::Client) -> Result<Option<Duration>> {
    let enqueued = world.enqueue_heartbeats().await?;
    if enqueued.written > 0 {
        tracing::debug!(enqueued = enqueued.written, "heartbeat pings enqueued");
    }
    let held_back = enqueued.held_back.then_some(LOOK_AGAIN_SOON);
    loop {
        let until_due = match world.next_heartbeat_due().await? {
            None => return Ok(held_back),
            Some(due) => (due - Utc::now()).to_std().unwrap_or_default(),
        };
        if !until_due.is_zero() {
            return Ok(Some(
                held_back.map_or(until_due, |soon| soon.min(until_due)),
            ));
        }
        let claims = world
            .claim_heartbeats(Utc::now(), BATCH, CLAIM_LEASE)
            .await?;
        if claims.is_empty() {
            // Due but claimed by nobody we can see (another sender just took it, or the
            // clocks differ): look again after a short pause, not in a spin.
            return Ok(Some(LOOK_AGAIN_SOON));
        }
        let results: Vec<Result<()>> = futures::stream::iter(claims)
            .map(|claim| send(world, client, claim))
            .buffer_unordered(BATCH as usize)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
    }
}

/// Sends one claimed ping and records how it went.
async fn send(world: &dyn World, client: &reqwest::Client, claim: HeartbeatClaim) -> Result<()> {
    let outcome = match ping_target(&claim.url, claim.outcome) {
        Ok(target) => client
            .get(target.clone())
            .header(RUN_ID_HEADER, claim.run_id.to_string())
            .send()
            .await
            .map_err(|error| format!("{:#}", anyhow::Error::from(error)))
            .and_then(|response| {
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{target} answered HTTP {status}"))
                }
            }),
        Err(error) => Err(format!("{error:#}")),
    };
    let recorded = match outcome {
        Ok(()) => {
            tracing::debug!(run_id = %claim.run_id, schedule = %claim.schedule, "heartbeat ping delivered");
            world.heartbeat_delivered(&claim).await?
        }
        Err(mut error) => {
            if error.len() > MAX_ERROR_LEN {
                let cut = (0..=MAX_ERROR_LEN)
                    .rev()
                    .find(|at| error.is_char_boundary(*at))
                    .unwrap_or(0);
                error.truncate(cut);
            }
            let attempts = claim.attempts + 1;
            let retry_at = (attempts < MAX_ATTEMPTS).then(|| {
                Utc::now() + chrono::Duration::from_std(retry_delay(attempts)).unwrap_or_default()
            });
            match retry_at {
                Some(at) => tracing::warn!(
                    url = %claim.url, run_id = %claim.run_id, schedule = %claim.schedule,
                    outcome = %claim.outcome, attempts, retry_at = %at, %error,
                    "heartbeat ping failed; it will be retried"
                ),
                None => tracing::warn!(
                    url = %claim.url, run_id = %claim.run_id, schedule = %claim.schedule,
                    outcome = %claim.outcome, attempts, %error,
                    "heartbeat ping failed {MAX_ATTEMPTS} times; giving up"
                ),
            }
            world.heartbeat_failed(&claim, &error, retry_at).await?
        }
    };
    if !recorded {
        // Our lease passed (a very slow monitor) and another process took the ping over.
        tracing::debug!(run_id = %claim.run_id, "heartbeat claim lost before its result was recorded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_runs_ping_the_fail_path() {
        let target = |url: &str, outcome| ping_target(url, outcome).unwrap().to_string();
        use HeartbeatOutcome::{Completed, Failed};
        assert_eq!(
            target("https://hc-ping.com/abc", Completed),
            "https://hc-ping.com/abc"
        );
        assert_eq!(
            target("https://hc-ping.com/abc", Failed),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            target("https://hc-ping.com/abc/", Failed),
            "https://hc-ping.com/abc/fail"
        );
        assert_eq!(
            target("http://127.0.0.1:9/ping?rid=7", Failed),
            "http://127.0.0.1:9/ping/fail?rid=7"
        );
        assert_eq!(
            target("https://example.com", Failed),
            "https://example.com/fail"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=MAX_ATTEMPTS)
            .map(|n| retry_delay(n).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(retry_delay(30), Duration::from_secs(300));
    }
}
