//! Crash points: named places in effectful code (between signing and sending a
//! transaction, between sending it and recording its receipt, …) where a crash-matrix
//! test can make the process die exactly there, to prove that a resumed run neither
//! repeats nor loses the effect.
//!
//! They are off unless the environment variable [`CRASH_AT_ENV`] is set when the
//! process starts, to `point:substring` (several separated by `,`): when code reaches
//! [`crash_point`] with that `point` and an idempotency key containing `substring`,
//! the process sends itself `SIGKILL` — no destructor, no flush, no checkpoint, as
//! when the machine loses power. An empty substring matches every key. A line on
//! stderr says which point fired, so the test's log shows it.
//!
//! ```text
//! MORPHEUS_CRASH_AT=evm.broadcast.before_send:/stake morpheus up
//! ```

use std::sync::OnceLock;

/// The environment variable that arms crash points (`point:substring[,…]`).
pub const CRASH_AT_ENV: &str = "MORPHEUS_CRASH_AT";

fn armed() -> &'static [(String, String)] {
    static ARMED: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var(CRASH_AT_ENV)
            .map(|value| parse(&value))
            .unwrap_or_default()
    })
}

fn parse(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once(':') {
            Some((point, key)) => (point.to_owned(), key.to_owned()),
            None => (entry.to_owned(), String::new()),
        })
        .collect()
}

fn matches(armed: &[(String, String)], point: &str, key: &str) -> bool {
    armed
        .iter()
        .any(|(armed_point, fragment)| armed_point == point && key.contains(fragment.as_str()))
}

/// Kills this process with `SIGKILL` if [`CRASH_AT_ENV`] arms `point` for
/// `idempotency_key`; otherwise does nothing (one comparison against an empty list).
pub fn crash_point(point: &str, idempotency_key: &str) {
    if matches(armed(), point, idempotency_key) {
        eprintln!("morpheus: crash point {point} reached for {idempotency_key}: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
        // SIGKILL cannot be caught; this only runs if the signal could not be sent.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_match_by_name_and_key_fragment() {
        let armed = parse("evm.broadcast.before_send:/stake, cosmos.broadcast.after_send");
        assert!(matches(
            &armed,
            "evm.broadcast.before_send",
            "run-1/stake/broadcast"
        ));
        assert!(!matches(
            &armed,
            "evm.broadcast.before_send",
            "run-1/approve/broadcast"
        ));
        assert!(!matches(
            &armed,
            "evm.broadcast.after_send",
            "run-1/stake/broadcast"
        ));
        assert!(matches(&armed, "cosmos.broadcast.after_send", "anything"));
        assert!(parse("").is_empty());
    }
}
