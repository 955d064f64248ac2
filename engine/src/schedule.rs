//! Schedules: cron expressions (seconds field allowed, UTC unless a time zone is given)
//! and fixed intervals, each naming a workflow and its input. This module is the pure
//! half: parsing, the next tick after a time, and what to fire for a due schedule under
//! its catch-up and overlap policies. The adapters run it inside the transaction that
//! locks the schedule row and inserts the runs, and every tick's run carries the
//! idempotency key `schedule:{name}:{tick}`, so any number of schedulers start exactly
//! one run per tick.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::UnknownName;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tick later than this after its time counts as missed (downtime, not scheduling
/// jitter) for [`CatchUp::SkipMissed`].
pub const MISSED_AFTER: Duration = Duration::from_secs(60);

/// [`CatchUp::RunAll`] fires at most this many missed ticks (the most recent ones).
pub const MAX_CATCH_UP_RUNS: usize = 100;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A cron expression (5 fields, or 6–7 with seconds and year) in a time zone.
    Cron {
        /// The expression as given.
        expr: String,
        /// IANA time zone name; UTC when absent.
        timezone: Option<String>,
    },
    /// Every `every`, on multiples of it since the Unix epoch (so every scheduler agrees
    /// on the ticks).
    Every {
        /// The interval in milliseconds.
        every_ms: u64,
    },
}

impl Trigger {
    /// A cron trigger, validated.
    pub fn cron(expr: &str, timezone: Option<&str>) -> Result<Self, InvalidSchedule> {
        let trigger = Self::Cron {
            expr: expr.trim().to_owned(),
            timezone: timezone.map(str::to_owned),
        };
        trigger.validate()?;
        Ok(trigger)
    }

    /// An interval trigger, validated (at least one second).
    pub fn every(every: Duration) -> Result<Self, InvalidSchedule> {
        let trigger = Self::Every {
            every_ms: every.as_millis() as u64,
        };
        trigger.validate()?;
        Ok(trigger)
    }

    /// Checks the expression, time zone or interval.
    pub fn validate(&self) -> Result<(), InvalidSchedule> {
        match self {
            Self::Cron { expr, timezone } => {
                parse_cron(expr).map_err(InvalidSchedule)?;
                if let Some(zone) = timezone {
                    parse_timezone(zone).map_err(InvalidSchedule)?;
                }
                Ok(())
            }
            Self::Every { every_ms } => {
                if *every_ms < 1000 {
                    return Err(InvalidSchedule(format!(
                        "interval {every_ms}ms is too short (at least 1s)"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { expr, timezone } => {
                let schedule = parse_cron(expr).ok()?;
                match timezone {
                    None => schedule.after(&after).next(),
                    Some(zone) => {
                        let zone = parse_timezone(zone).ok()?;
                        schedule
                            .after(&after.with_timezone(&zone))
                            .next()
                            .map(|tick| tick.with_timezone(&Utc))
                    }
                }
            }
            Self::Every { every_ms } => {
                let every = *every_ms as i64;
                let millis = after.timestamp_millis();
                let next = (millis.div_euclid(every) + 1) * every;
                Utc.timestamp_millis_opt(next).single()
            }
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cron {
                expr,
                timezone: None,
            } => write!(f, "cron '{expr}' (UTC)"),
            Self::Cron {
                expr,
                timezone: Some(zone),
            } => write!(f, "cron '{expr}' ({zone})"),
            Self::Every { every_ms } => {
                write!(f, "every {}", humanize(Duration::from_millis(*every_ms)))
            }
        }
    }
}

fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if duration.subsec_millis() != 0 {
        format!("{}ms", duration.as_millis())
    } else if seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// Parses a cron expression; a classic 5-field one gets a leading seconds field of 0.
fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_owned(),
        _ => {
            return Err(format!(
                "invalid cron expression '{expr}': expected 5 fields (min hour day month weekday), \
                 or 6–7 with seconds first and an optional year"
            ))
        }
    };
    cron::Schedule::from_str(&full)
        .map_err(|error| format!("invalid cron expression '{expr}': {error}"))
}

fn parse_timezone(zone: &str) -> Result<chrono_tz::Tz, String> {
    zone.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("unknown time zone '{zone}' (use an IANA name like Europe/Berlin)"))
}

/// What happens when a tick comes while the schedule's previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Drop the tick.
    #[default]
    Skip,
    /// Keep one tick waiting; it starts when the previous run ends (later ticks replace
    /// it, so at most one waits).
    QueueOne,
    /// Start it anyway.
    Allow,
}

/// What happens to ticks missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Ticks more than [`MISSED_AFTER`] late are dropped.
    #[default]
    SkipMissed,
    /// One run for all the missed ticks (the latest).
    RunOnce,
    /// One run per missed tick (the most recent [`MAX_CATCH_UP_RUNS`]).
    RunAll,
}

/// `as_str`, `FromStr` and `Display` for a fieldless enum stored by name.
macro_rules! stored_names {
    ($type:ty, $($variant:ident => $name:literal),+) => {
        impl $type {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }

        impl FromStr for $type {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<Self, UnknownName> {
                match text {
                    $($name => Ok(Self::$variant),)+
                    other => Err(UnknownName::new("value", other)
                        .expected(format!("one of: {}", [$($name),+].join(", ")))),
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use stored_names;

stored_names!(Overlap, Skip => "skip", QueueOne => "queue_one", Allow => "allow");
stored_names!(CatchUp, SkipMissed => "skip_missed", RunOnce => "run_once", RunAll => "run_all");

/// A schedule definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Unique name.
    pub name: String,
    /// Workflow to start.
    pub workflow: String,
    /// Its input (validated against the workflow when the schedule is added).
    pub input: Value,
    /// When it fires.
    pub trigger: Trigger,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// Queue of the runs it starts.
    pub queue: String,
    /// Priority of the runs it starts.
    pub priority: i32,
    /// Pinged (HTTP GET) after each of its runs completes, and `<url>/fail` after one
    /// fails: the uptime-monitor convention of healthchecks.io and Cronitor. Cancelled
    /// runs are not pinged. An `http` or `https` URL (see [`validate_heartbeat_url`]).
    #[serde(default)]
    pub heartbeat_url: Option<String>,
}

/// A stored schedule with its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The definition.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// Paused schedules do not fire.
    pub paused: bool,
    /// The next tick.
    pub next_fire_at: DateTime<Utc>,
    /// The last tick that started a run.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The run that tick started.
    pub last_run_id: Option<crate::RunId>,
    /// A tick waiting for the previous run to end (`queue_one`).
    pub queued_tick: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A run a scheduler started.
#[derive(Debug, Clone, PartialEq)]
pub struct FiredRun {
    /// Schedule name.
    pub schedule: String,
    /// The tick.
    pub tick: DateTime<Utc>,
    /// The run.
    pub run_id: crate::RunId,
}

/// A schedule's definition as stored in its row's columns: [`ScheduleColumns::of`] for
/// writing one, [`ScheduleColumns::into_spec`] for reading one back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduleColumns {
    pub name: String,
    pub workflow: String,
    pub input: Value,
    /// Set for a cron trigger, with `timezone`; `every_ms` is then `None`.
    pub cron_expr: Option<String>,
    pub timezone: Option<String>,
    /// Set for an interval trigger; `cron_expr` is then `None`.
    pub every_ms: Option<i64>,
    pub overlap: String,
    pub catch_up: String,
    pub queue: String,
    pub priority: i32,
    pub heartbeat_url: Option<String>,
}

impl ScheduleColumns {
    /// The columns that store `spec`.
    pub fn of(spec: &ScheduleSpec) -> Self {
        let (cron_expr, timezone, every_ms) = match &spec.trigger {
            Trigger::Cron { expr, timezone } => (Some(expr.clone()), timezone.clone(), None),
            Trigger::Every { every_ms } => (None, None, Some(*every_ms as i64)),
        };
        Self {
            name: spec.name.clone(),
            workflow: spec.workflow.clone(),
            input: spec.input.clone(),
            cron_expr,
            timezone,
            every_ms,
            overlap: spec.overlap.as_str().to_owned(),
            catch_up: spec.catch_up.as_str().to_owned(),
            queue: spec.queue.clone(),
            priority: spec.priority,
            heartbeat_url: spec.heartbeat_url.clone(),
        }
    }

    /// Rebuilds the definition these columns store; a row with no single trigger or an
    /// unknown policy name is refused with a reason.
    pub fn into_spec(self) -> Result<ScheduleSpec, String> {
        let trigger = match (self.cron_expr, self.every_ms) {
            (Some(expr), None) => Trigger::Cron {
                expr,
                timezone: self.timezone,
            },
            (None, Some(every_ms)) => Trigger::Every {
                every_ms: every_ms as u64,
            },
            _ => return Err(format!("schedule '{}' has no single trigger", self.name)),
        };
        Ok(ScheduleSpec {
            overlap: self
                .overlap
                .parse::<Overlap>()
                .map_err(|error| error.to_string())?,
            catch_up: self
                .catch_up
                .parse::<CatchUp>()
                .map_err(|error| error.to_string())?,
            name: self.name,
            workflow: self.workflow,
            input: self.input,
            trigger,
            queue: self.queue,
            priority: self.priority,
            heartbeat_url: self.heartbeat_url,
        })
    }
}

/// Why a schedule definition cannot work: a bad cron expression, time zone or
/// interval, an empty name or queue, a heartbeat URL that is not http(s). The message says which
/// (`interval 500ms is too short (at least 1s)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchedule(pub String);

/// Checks a definition before it is stored.
pub fn validate_spec(spec: &ScheduleSpec) -> Result<(), InvalidSchedule> {
    if spec.name.trim().is_empty() || spec.name.contains(char::is_whitespace) {
        return Err(InvalidSchedule(format!(
            "schedule name '{}' must be non-empty and without spaces",
            spec.name
        )));
    }
    if spec.queue.trim().is_empty() {
        return Err(InvalidSchedule("queue must not be empty".into()));
    }
    if let Some(url) = &spec.heartbeat_url {
        validate_heartbeat_url(url)?;
    }
    spec.trigger.validate()
}

/// Longest heartbeat URL accepted (browsers and monitors agree on about 2 KB).
pub const MAX_HEARTBEAT_URL_LEN: usize = 2048;

/// Checks a heartbeat URL: absolute, `http` or `https`, with a host, and without
/// credentials (`user:password@` would store a secret inline, which nothing here does).
/// The message quotes the URL and says what is wrong with it.
pub fn validate_heartbeat_url(text: &str) -> Result<(), InvalidSchedule> {
    let shown: String = text.chars().take(120).collect();
    if text.len() > MAX_HEARTBEAT_URL_LEN {
        return Err(InvalidSchedule(format!(
            "heartbeat URL '{shown}…' is longer than {MAX_HEARTBEAT_URL_LEN} bytes"
        )));
    }
    let url = url::Url::parse(text).map_err(|error| {
        InvalidSchedule(format!(
            "heartbeat URL '{shown}' is not a valid URL: {error}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidSchedule(format!(
            "heartbeat URL '{shown}' must use http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidSchedule(format!(
            "heartbeat URL '{shown}' has no host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidSchedule(format!(
            "heartbeat URL '{shown}' must not carry credentials (user:password@)"
        )));
    }
    Ok(())
}

/// The idempotency key of a tick's run: one run per tick, however many schedulers.
pub fn tick_idempotency_key(schedule: &str, tick: DateTime<Utc>) -> String {
    format!(
        "schedule:{schedule}:{}",
        tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// What a due schedule should do now.
#[derive(Debug, Clone, PartialEq)]
pub struct FirePlan {
    /// Ticks to start runs for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// The tick to keep waiting (`queue_one`), if any.
    pub queued_tick: Option<DateTime<Utc>>,
    /// The next tick after now.
    pub next_fire_at: DateTime<Utc>,
    /// Ticks dropped (missed, or overlapping), for the log.
    pub dropped: usize,
}

/// Decides what a schedule fires at `now`, given its due tick, a tick already waiting,
/// and whether its previous run is still going. Pure: the scheduler's whole policy.
pub fn plan_fires(
    spec: &ScheduleSpec,
    due: DateTime<Utc>,
    queued_tick: Option<DateTime<Utc>>,
    previous_running: bool,
    now: DateTime<Utc>,
) -> FirePlan {
    // Every tick from `due` up to now (bounded: only the most recent ones matter).
    let mut ticks = Vec::new();
    let mut tick = Some(due);
    let mut skipped_old = 0usize;
    while let Some(current) = tick.filter(|t| *t <= now) {
        ticks.push(current);
        if ticks.len() > MAX_CATCH_UP_RUNS {
            ticks.remove(0);
            skipped_old += 1;
        }
        tick = spec.trigger.next_after(current);
    }
    let next_fire_at = tick.unwrap_or(now + chrono::Duration::days(36_500));
    let due_count = ticks.len() + skipped_old;

    let mut candidates: Vec<DateTime<Utc>> = match spec.catch_up {
        CatchUp::SkipMissed => ticks
            .last()
            .filter(|latest| (now - **latest).to_std().unwrap_or_default() <= MISSED_AFTER)
            .map(|latest| vec![*latest])
            .unwrap_or_default(),
        CatchUp::RunOnce => ticks.last().map(|latest| vec![*latest]).unwrap_or_default(),
        CatchUp::RunAll => ticks,
    };
    let mut dropped = due_count - candidates.len();

    // A tick that was already waiting goes first.
    if let Some(waiting) = queued_tick {
        if !candidates.contains(&waiting) {
            candidates.insert(0, waiting);
        }
    }
    candidates.sort();

    let (fire, queued_tick) = match spec.overlap {
        Overlap::Allow => (candidates, None),
        Overlap::Skip => {
            if previous_running {
                dropped += candidates.len();
                (Vec::new(), None)
            } else {
                // The first one starts; the rest would overlap it.
                let mut fire = candidates;
                dropped += fire.len().saturating_sub(1);
                fire.truncate(1);
                (fire, None)
            }
        }
        Overlap::QueueOne => {
            if previous_running {
                // Only the latest waits.
                dropped += candidates.len().saturating_sub(1);
                (Vec::new(), candidates.last().copied())
            } else if candidates.is_empty() {
                (Vec::new(), None)
            } else {
                let first = candidates[0];
                let latest_rest = candidates[1..].last().copied();
                dropped += candidates.len().saturating_sub(2);
                (vec![first], latest_rest)
            }
        }
    };
    FirePlan {
        fire,
        queued_tick,
        next_fire_at,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn spec(trigger: Trigger, overlap: Overlap, catch_up: CatchUp) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            workflow: "wf".into(),
            input: json!({}),
            trigger,
            overlap,
            catch_up,
            queue: "default".into(),
            priority: 0,
            heartbeat_url: None,
        }
    }

    fn every_30s() -> Trigger {
        Trigger::every(Duration::from_secs(30)).unwrap()
    }

    #[test]
    fn intervals_align_to_the_epoch() {
        let trigger = every_30s();
        assert_eq!(
            trigger.next_after(at("2026-01-01T00:00:10Z")),
            Some(at("2026-01-01T00:00:30Z"))
        );
        assert_eq!(
            trigger.next_after(at("2026-01-01T00:00:30Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn cron_accepts_five_or_six_fields_and_time_zones() {
        let five = Trigger::cron("*/15 * * * *", None).unwrap();
        assert_eq!(
            five.next_after(at("2026-01-01T00:07:00Z")),
            Some(at("2026-01-01T00:15:00Z"))
        );
        let seconds = Trigger::cron("*/10 * * * * *", None).unwrap();
        assert_eq!(
            seconds.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
        // 09:00 in Berlin is 08:00 UTC in winter.
        let berlin = Trigger::cron("0 9 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            berlin.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T08:00:00Z"))
        );
    }

    #[test]
    fn bad_triggers_are_refused_with_a_reason() {
        assert!(Trigger::cron("every day", None)
            .unwrap_err()
            .to_string()
            .contains("5 fields"));
        assert!(Trigger::cron("61 * * * *", None)
            .unwrap_err()
            .to_string()
            .contains("invalid cron expression"));
        assert!(Trigger::cron("0 9 * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string()
            .contains("unknown time zone"));
        assert!(Trigger::every(Duration::from_millis(10))
            .unwrap_err()
            .to_string()
            .contains("too short"));
    }

    #[test]
    fn on_time_tick_fires_once_and_moves_on() {
        let spec = spec(every_30s(), Overlap::Skip, CatchUp::SkipMissed);
        let plan = plan_fires(
            &spec,
            at("2026-01-01T00:00:30Z"),
            None,
            false,
            at("2026-01-01T00:00:30.200Z"),
        );
        assert_eq!(plan.fire, vec![at("2026-01-01T00:00:30Z")]);
        assert_eq!(plan.next_fire_at, at("2026-01-01T00:01:00Z"));
        assert_eq!(plan.dropped, 0);
    }

    #[test]
    fn catch_up_policies_after_ten_minutes_down() {
        let due = at("2026-01-01T00:00:30Z");
        let now = at("2026-01-01T00:10:05Z");
        let skip = plan_fires(
            &spec(every_30s(), Overlap::Allow, CatchUp::SkipMissed),
            due,
            None,
            false,
            now,
        );
        assert_eq!(
            skip.fire,
            vec![at("2026-01-01T00:10:00Z")],
            "latest is only 5 s late"
        );
        assert_eq!(skip.dropped, 19);
        let once = plan_fires(
            &spec(every_30s(), Overlap::Allow, CatchUp::RunOnce),
            due,
            None,
            false,
            now,
        );
        assert_eq!(once.fire, vec![at("2026-01-01T00:10:00Z")]);
        let all = plan_fires(
            &spec(every_30s(), Overlap::Allow, CatchUp::RunAll),
            due,
            None,
            false,
            now,
        );
        assert_eq!(all.fire.len(), 20);
        assert_eq!(all.fire[0], due);
        assert_eq!(all.next_fire_at, at("2026-01-01T00:10:30Z"));
    }

    #[test]
    fn skip_missed_drops_a_stale_latest_tick() {
        let hourly = Trigger::cron("0 * * * *", None).unwrap();
        let plan = plan_fires(
            &spec(hourly, Overlap::Allow, CatchUp::SkipMissed),
            at("2026-01-01T01:00:00Z"),
            None,
            false,
            at("2026-01-01T03:30:00Z"),
        );
        assert!(plan.fire.is_empty());
        assert_eq!(plan.dropped, 3);
        assert_eq!(plan.next_fire_at, at("2026-01-01T04:00:00Z"));
    }

    #[test]
    fn run_all_is_bounded() {
        let plan = plan_fires(
            &spec(every_30s(), Overlap::Allow, CatchUp::RunAll),
            at("2026-01-01T00:00:00Z"),
            None,
            false,
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(plan.fire.len(), MAX_CATCH_UP_RUNS);
        assert_eq!(*plan.fire.last().unwrap(), at("2026-01-02T00:00:00Z"));
        assert_eq!(plan.dropped, 2881 - MAX_CATCH_UP_RUNS);
    }

    #[test]
    fn overlap_policies_while_previous_run_is_going() {
        let due = at("2026-01-01T00:01:00Z");
        let now = at("2026-01-01T00:01:01Z");
        let skip = plan_fires(
            &spec(every_30s(), Overlap::Skip, CatchUp::SkipMissed),
            due,
            None,
            true,
            now,
        );
        assert!(skip.fire.is_empty());
        assert_eq!(skip.queued_tick, None);
        assert_eq!(skip.dropped, 1);
        let queue = plan_fires(
            &spec(every_30s(), Overlap::QueueOne, CatchUp::SkipMissed),
            due,
            None,
            true,
            now,
        );
        assert!(queue.fire.is_empty());
        assert_eq!(queue.queued_tick, Some(due));
        let allow = plan_fires(
            &spec(every_30s(), Overlap::Allow, CatchUp::SkipMissed),
            due,
            None,
            true,
            now,
        );
        assert_eq!(allow.fire, vec![due]);
    }

    #[test]
    fn queued_tick_fires_when_previous_run_ended() {
        let queued = at("2026-01-01T00:01:00Z");
        // Not due yet (next tick in the future), but the waiting tick goes now.
        let plan = plan_fires(
            &spec(every_30s(), Overlap::QueueOne, CatchUp::SkipMissed),
            at("2026-01-01T00:01:30Z"),
            Some(queued),
            false,
            at("2026-01-01T00:01:10Z"),
        );
        assert_eq!(plan.fire, vec![queued]);
        assert_eq!(plan.queued_tick, None);
        assert_eq!(plan.next_fire_at, at("2026-01-01T00:01:30Z"));
        // Still running: a newer tick replaces the waiting one.
        let plan = plan_fires(
            &spec(every_30s(), Overlap::QueueOne, CatchUp::SkipMissed),
            at("2026-01-01T00:01:30Z"),
            Some(queued),
            true,
            at("2026-01-01T00:01:31Z"),
        );
        assert!(plan.fire.is_empty());
        assert_eq!(plan.queued_tick, Some(at("2026-01-01T00:01:30Z")));
        assert_eq!(plan.dropped, 1);
    }

    #[test]
    fn heartbeat_urls_must_be_plain_http_or_https() {
        assert!(validate_heartbeat_url("https://hc-ping.com/5f1c0a3e").is_ok());
        assert!(validate_heartbeat_url("http://127.0.0.1:8080/ping/").is_ok());
        let reason = |url: &str| validate_heartbeat_url(url).unwrap_err().0;
        assert!(reason("hc-ping.com/abc").contains("not a valid URL"));
        assert!(reason("ftp://example.com/x").contains("must use http or https"));
        assert!(reason("https://user:secret@example.com/x").contains("credentials"));
        assert!(reason(&format!("https://example.com/{}", "a".repeat(3000))).contains("longer"));
        let mut bad = spec(every_30s(), Overlap::Skip, CatchUp::SkipMissed);
        bad.heartbeat_url = Some("mailto:ops@example.com".into());
        let error = validate_spec(&bad).unwrap_err().0;
        assert!(
            error.starts_with("heartbeat URL 'mailto:ops@example.com'"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn tick_keys_are_stable() {
        assert_eq!(
            tick_idempotency_key("topup", at("2026-01-01T00:00:30Z")),
            "schedule:topup:2026-01-01T00:00:30.000Z"
        );
    }
}
