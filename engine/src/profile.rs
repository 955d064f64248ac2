//! An opt-in profile of where a step's time goes, for `morpheus bench --profile`: the
//! claim, the journal load, the step body, serializing its output, the hop to the group
//! committer, the commit itself, and the hop back to the run's task (the oneshot ack and
//! the task's wake-up). Each phase sums its durations and counts its events in
//! process-wide atomics, so the next person can see the hot spots without a profiler.
//!
//! Off by default: then every recording point is one relaxed atomic load. The profile
//! is process-wide (one benchmark at a time), which is why it is not part of the
//! [`crate::Engine`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// A phase of a step's life that the profile times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One claim statement, counted per run it claimed.
    Claim,
    /// Loading the journals of the runs a claim took (one query per claim, counted per
    /// run).
    JournalLoad,
    /// The step body itself (the workflow's code or the executor call).
    Body,
    /// Serializing the step's output to JSON.
    Serialize,
    /// From queuing a write until the group committer took it into a batch.
    ToCommitter,
    /// Applying one batch (its statements and the commit, fsync included), counted per
    /// batch; [`Phase::CommitPerWrite`] counts the same time once per write it carried.
    Commit,
    /// The commit time each acknowledged write waited for (its batch's commit).
    CommitPerWrite,
    /// From the committer's ack until the waiting run's task resumed.
    AckHop,
    /// A whole step, from `StepBuilder::run` to its return (body and commit included).
    Step,
}

impl Phase {
    /// Every phase, in the order a step meets them.
    pub const ALL: [Phase; 9] = [
        Phase::Claim,
        Phase::JournalLoad,
        Phase::Body,
        Phase::Serialize,
        Phase::ToCommitter,
        Phase::Commit,
        Phase::CommitPerWrite,
        Phase::AckHop,
        Phase::Step,
    ];

    /// The phase's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Claim => "claim (per run claimed)",
            Phase::JournalLoad => "journal load (per run)",
            Phase::Body => "step body",
            Phase::Serialize => "serialize output",
            Phase::ToCommitter => "hop to committer (per write)",
            Phase::Commit => "commit (per batch)",
            Phase::CommitPerWrite => "commit wait (per acked write)",
            Phase::AckHop => "ack hop + wake-up (per acked write)",
            Phase::Step => "whole step",
        }
    }

    fn index(self) -> usize {
        Phase::ALL
            .iter()
            .position(|phase| *phase == self)
            .expect("every phase is in ALL")
    }
}

const PHASES: usize = Phase::ALL.len();
static TOTAL_NS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
static COUNTS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];

/// Turns the profile on or off (process-wide).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the profile is recording.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Forgets everything recorded so far.
pub fn reset() {
    for (total, count) in TOTAL_NS.iter().zip(&COUNTS) {
        total.store(0, Ordering::Relaxed);
        count.store(0, Ordering::Relaxed);
    }
}

/// Adds `took` to `phase`, as `events` events (a claim of 40 runs is 40 events).
pub fn record(phase: Phase, took: Duration, events: u64) {
    if !enabled() {
        return;
    }
    let index = phase.index();
    TOTAL_NS[index].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    COUNTS[index].fetch_add(events, Ordering::Relaxed);
}

/// Adds the time since `since` to `phase` as one event.
pub fn record_since(phase: Phase, since: Instant) {
    if enabled() {
        record(phase, since.elapsed(), 1);
    }
}

/// `Some(now)` while profiling, so call sites take a timestamp only when it is used.
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// One phase's totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseTotal {
    /// Which phase.
    pub phase: Phase,
    /// Time summed over its events.
    pub total: Duration,
    /// How many events it saw.
    pub events: u64,
}

impl PhaseTotal {
    /// Mean time per event (zero without events).
    pub fn mean(&self) -> Duration {
        if self.events == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos((self.total.as_nanos() / u128::from(self.events)) as u64)
        }
    }
}

/// What has been recorded since the last [`reset`], one entry per phase.
pub fn snapshot() -> Vec<PhaseTotal> {
    Phase::ALL
        .iter()
        .map(|phase| PhaseTotal {
            phase: *phase,
            total: Duration::from_nanos(TOTAL_NS[phase.index()].load(Ordering::Relaxed)),
            events: COUNTS[phase.index()].load(Ordering::Relaxed),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_while_enabled_and_reports_means() {
        reset();
        enable(false);
        record(Phase::Body, Duration::from_micros(10), 1);
        assert_eq!(snapshot()[Phase::Body.index()].events, 0);
        enable(true);
        record(Phase::Claim, Duration::from_micros(90), 3);
        let claim = snapshot()[Phase::Claim.index()];
        assert_eq!(claim.events, 3);
        assert_eq!(claim.mean(), Duration::from_micros(30));
        enable(false);
        reset();
        assert_eq!(snapshot()[Phase::Claim.index()].events, 0);
    }
}
