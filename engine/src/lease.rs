//! The worker's own view of how long it may still act for a run. The database is the
//! authority (every write is fenced by the lease epoch), but a worker that was frozen
//! (SIGSTOP, a VM pause) must not *start* a step body after its lease may have expired
//! and another worker may have taken the run over and recorded that step. The deadline is
//! kept on the monotonic clock, which keeps running while the process is stopped, and is
//! always earlier than the database's expiry (it counts from when the claim or renewal
//! was *sent*).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A run's local lease deadline, shared by its task and the worker's heartbeat.
#[derive(Debug, Clone)]
pub(crate) struct LeaseClock {
    deadline_nanos: Arc<AtomicU64>,
}

impl LeaseClock {
    /// A lease granted by a request sent at `sent`, lasting `ttl`.
    pub fn new(sent: Instant, ttl: Duration) -> Self {
        let clock = Self {
            deadline_nanos: Arc::new(AtomicU64::new(0)),
        };
        clock.extend(sent, ttl);
        clock
    }

    /// A renewal sent at `sent` succeeded.
    pub fn extend(&self, sent: Instant, ttl: Duration) {
        let deadline = (sent + ttl).saturating_duration_since(origin()).as_nanos() as u64;
        self.deadline_nanos.fetch_max(deadline, Ordering::SeqCst);
    }

    /// Whether the lease is certainly still held.
    pub fn valid(&self) -> bool {
        Instant::now() < self.deadline()
    }

    /// The instant the lease can no longer be vouched for (it only moves later).
    pub fn deadline(&self) -> Instant {
        origin() + Duration::from_nanos(self.deadline_nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_until_the_deadline_and_extended_by_renewals() {
        let clock = LeaseClock::new(Instant::now(), Duration::from_millis(50));
        assert!(clock.valid());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!clock.valid());
        clock.extend(Instant::now(), Duration::from_millis(50));
        assert!(clock.valid());
        // An older renewal never shortens the deadline.
        clock.extend(
            Instant::now() - Duration::from_secs(10),
            Duration::from_millis(1),
        );
        assert!(clock.valid());
    }
}
