//! The wake source: a task that `LISTEN`s on [`WAKE_CHANNEL`] on a connection of its own
//! and turns every notification into a wake-up of this process's workers. Differs from
//! SQLite, which has no cross-process notifications (its workers rely on in-process
//! signals and polling).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::WAKE_CHANNEL;
use crate::outage::OutageReporter;

/// Connects a listener on a dedicated connection (a pool of one, never shared with the
/// adapter's pool, without idle or lifetime limits: it only serves reconnections).
async fn connect_listener(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // The pool is private to the listener and never closed by anyone else.
    listener.ignore_pool_close_event(true);
    Ok(listener)
}

/// Spawns the listener task (see [`crate::store::World::spawn_wake_listener`]):
/// reconnects with backoff (500 ms doubling up to 16 s), reports an outage at most every
/// 30 s, and signals `wake` after every (re)connection, since notifications sent
/// meanwhile were lost.
pub(super) fn spawn_wake_listener(options: PgConnectOptions, wake: Arc<Notify>) -> JoinHandle<()> {
    spawn_listener(options, WAKE_CHANNEL, wake)
}

/// Spawns a task that `LISTEN`s on `channel` and signals `wake` on every notification
/// and after every (re)connection, reconnecting as [`spawn_wake_listener`] describes.
pub(super) fn spawn_listener(
    options: PgConnectOptions,
    channel: &'static str,
    wake: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut outage = OutageReporter::new("LISTEN", Duration::from_secs(30));
        loop {
            match connect_listener(&options).await {
                Ok(mut listener) => {
                    if listener.listen(channel).await.is_ok() {
                        failures = 0;
                        outage.success();
                        // After (re)connecting, notifications may have been missed.
                        wake.notify_one();
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(_)) => wake.notify_one(),
                                // The connection dropped; the next call reconnects and
                                // LISTENs again, and anything sent meanwhile was lost:
                                // look for work now rather than at the next poll.
                                Ok(None) => {
                                    tracing::info!("LISTEN connection lost; reconnecting");
                                    wake.notify_one();
                                }
                                Err(error) => {
                                    outage.failure(&error, None);
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    // Workers keep polling meanwhile.
                    outage.failure(&error, None);
                }
            }
            let backoff = Duration::from_millis(500 * 2u64.pow(failures.min(5)));
            tokio::time::sleep(backoff).await;
        }
    })
}
