//! Torture harness: several `morpheus up` processes SIGKILLed and SIGSTOPped at random
//! moments while they work through runs whose step bodies record every execution in an
//! *effect ledger*, then a check of the engine's promise (as `engine/src/lib.rs` states it)
//! against what the database and the ledger say afterwards.
//!
//! - [`EffectLedger`]: on Postgres a table `effect_ledger` in the run database (each body
//!   inserts a row with `psql`); on SQLite an append-only text file. One `start` and one
//!   `done` record per body execution, with run, step, attempt, fencing token, worker pid
//!   and a wall-clock timestamp.
//! - [`Fleet`]: `K` workers that can be killed (and restarted as a new incarnation with
//!   a fresh `--worker-id`) or frozen; every fault is recorded per pid with its time.
//! - [`run_torture`]: submit runs spread over the chaos period, inject faults, heal, let
//!   the load drain, and [`analyze`] the outcome into a [`TortureReport`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::Connection as _;

use crate::{block_on, wait_for, Backend, TestEnv, WorkerProcess, FAST_LEASES, PG_URL_ENV};

/// Microseconds since the Unix epoch, from the wall clock (the same clock Postgres'
/// `clock_timestamp()`, `date +%s.%N` and the workers' `Utc::now()` read on this host).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

/// Parses an RFC 3339 UTC timestamp as the engine writes it on SQLite
/// (`2026-01-02T03:04:05.123456Z`, also `+00:00`) into microseconds since the epoch.
pub fn parse_utc_us(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', ' '])?;
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))
        .unwrap_or(time);
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms_parts = hms.splitn(3, ':');
    let hour: i64 = hms_parts.next()?.parse().ok()?;
    let minute: i64 = hms_parts.next()?.parse().ok()?;
    let second: i64 = hms_parts.next()?.parse().ok()?;
    let micros: i64 = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().chain("000000".chars()).take(6).collect();
        digits.parse().ok()?
    };
    // Days from 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000) + micros)
}

/// `secs.nanos` (as printed by `date +%s.%N`) in microseconds.
fn parse_epoch_us(text: &str) -> Option<i64> {
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = fraction.chars().chain("000000".chars()).take(6).collect();
    Some(secs * 1_000_000 + digits.parse::<i64>().ok()?)
}

fn env_parse<T: FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(parsed) => Some(parsed),
        Err(_) => panic!("{name}={value:?} is not a valid number"),
    }
}

/// The size of a torture run.
#[derive(Debug, Clone)]
pub struct TortureConfig {
    /// Worker processes (`K`).
    pub workers: usize,
    /// Runs submitted (`R`).
    pub runs: usize,
    /// Steps per run (`S`).
    pub steps: usize,
    /// Length of the chaos period (`T`).
    pub seconds: f64,
    /// `--concurrency` of each worker.
    pub concurrency: u32,
    /// Seed of every random choice (fault schedule, step durations).
    pub seed: u64,
    /// Whether workers are also SIGSTOPped (needs a second worker to make progress).
    pub freezes: bool,
}

/// Most `morpheus up` processes on the shared test server: each may hold ~17 connections
/// and the server allows 100.
pub const MAX_PG_WORKERS: usize = 5;

impl TortureConfig {
    /// CI defaults (K=3 on Postgres, 1 on SQLite; R=40, S=5, T=20 s), overridden by
    /// `MORPHEUS_SOAK=1` (T=300 s, R=400) and then by `MORPHEUS_TORTURE_SECONDS`,
    /// `MORPHEUS_TORTURE_RUNS`, `MORPHEUS_TORTURE_WORKERS` (Postgres only),
    /// `MORPHEUS_TORTURE_STEPS` and `MORPHEUS_TORTURE_SEED`.
    pub fn from_env(backend: Backend) -> Self {
        let soak = std::env::var("MORPHEUS_SOAK").is_ok_and(|v| v.trim() == "1");
        let (seconds, runs) = if soak { (300.0, 400) } else { (20.0, 40) };
        let workers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => {
                let wanted = env_parse("MORPHEUS_TORTURE_WORKERS").unwrap_or(3usize);
                if wanted > MAX_PG_WORKERS {
                    eprintln!(
                        "MORPHEUS_TORTURE_WORKERS={wanted}: using {MAX_PG_WORKERS} (each worker \
                         holds up to ~17 of the server's 100 connections)"
                    );
                }
                wanted.clamp(1, MAX_PG_WORKERS)
            }
        };
        let seed = env_parse("MORPHEUS_TORTURE_SEED").unwrap_or_else(|| {
            (now_us() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id())
        });
        Self {
            workers,
            runs: env_parse("MORPHEUS_TORTURE_RUNS").unwrap_or(runs).max(1),
            steps: env_parse("MORPHEUS_TORTURE_STEPS").unwrap_or(5usize).max(1),
            seconds: env_parse("MORPHEUS_TORTURE_SECONDS").unwrap_or(seconds),
            concurrency: 8,
            seed,
            freezes: workers >= 2,
        }
    }
}

// ---------------------------------------------------------------------------------
// The effect ledger.

/// Where step bodies record their executions.
pub enum EffectLedger {
    /// Table `effect_ledger` in the run database, written with `psql`.
    Table {
        /// Database URL.
        url: String,
        /// The `psql` binary.
        psql: PathBuf,
    },
    /// An append-only text file, one line per record:
    /// `<phase> <run> <step> <attempt> <fencing token> <worker pid> <secs.nanos>`.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// One ledger record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// The run.
    pub run_id: String,
    /// The step key.
    pub step_key: String,
    /// `MORPHEUS_STEP_ATTEMPT`.
    pub attempt: i64,
    /// `MORPHEUS_FENCING_TOKEN`: the lease epoch of the claim that ran the body.
    pub token: i64,
    /// The worker process (`$PPID` of the step's shell).
    pub pid: u32,
    /// `start` or `done`.
    pub phase: String,
    /// When, in microseconds since the epoch.
    pub at_us: i64,
}

/// One execution of a step body: a `start` record and the matching `done` record (if
/// the body got that far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The run.
    pub run_id: String,
    /// The step key.
    pub step_key: String,
    /// Attempt number.
    pub attempt: i64,
    /// Fencing token.
    pub token: i64,
    /// Worker pid.
    pub pid: u32,
    /// Start time (µs since the epoch).
    pub start_us: i64,
    /// End time, if the body finished.
    pub done_us: Option<i64>,
}

/// The `psql` binary: the newest `/usr/lib/postgresql/*/bin/psql` (skipping Debian's
/// Perl wrapper, which costs a few ms per call), else `psql` on `$PATH`.
pub fn psql_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let psql = entry.path().join("bin/psql");
            psql.is_file().then_some((version, psql))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, path)| path)
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// Shell prelude of every ledger step: `$r` and `$s` are the run and step parsed out of
/// `MORPHEUS_IDEMPOTENCY_KEY` (`{run_id}/{step_key}`).
const KEY_PRELUDE: &str = r#"k="$MORPHEUS_IDEMPOTENCY_KEY"; r="${k%%/*}"; s="${k#*/}""#;

/// `L start|done` for the table ledger. A failing `psql` (e.g. too many connections) is
/// retried for ~5 s, then fails the step (and the run), so no record is silently lost.
const TABLE_RECORDER: &str = r#"L() { n=0; until "$PSQL" -qX "$LEDGER_URL" -c "INSERT INTO effect_ledger (run_id, step_key, attempt, fencing_token, worker_pid, phase) VALUES ('$r', '$s', $MORPHEUS_STEP_ATTEMPT, $MORPHEUS_FENCING_TOKEN, $PPID, '$1')"; do n=$((n+1)); [ "$n" -lt 50 ] || exit 1; sleep 0.1; done; }"#;

/// `L start|done` for the file ledger (a short `>>` write is one atomic append).
const FILE_RECORDER: &str = r#"L() { echo "$1 $r $s $MORPHEUS_STEP_ATTEMPT $MORPHEUS_FENCING_TOKEN $PPID $(date +%s.%N)" >> "$LEDGER_FILE"; }"#;

impl EffectLedger {
    /// A fresh ledger for `env`: the `effect_ledger` table in its Postgres database, or
    /// `effect_ledger.txt` in its directory.
    pub fn create(env: &TestEnv) -> Self {
        match env.backend() {
            Backend::Postgres => {
                let url = env.url().to_owned();
                block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&url).await?;
                    sqlx::query(
                        "CREATE TABLE effect_ledger (
                             id bigserial PRIMARY KEY, run_id text, step_key text, attempt int,
                             fencing_token bigint, worker_pid int, phase text,
                             at timestamptz DEFAULT clock_timestamp())",
                    )
                    .execute(&mut conn)
                    .await?;
                    conn.close().await
                })
                .expect("create the effect_ledger table");
                Self::Table {
                    url,
                    psql: psql_bin(),
                }
            }
            Backend::Sqlite => Self::file(env),
        }
    }

    /// A file ledger (`effect_ledger.txt` in `env`'s directory) whatever the backend:
    /// cheaper per record than `psql`, so it sees executions that last only a few ms.
    pub fn file(env: &TestEnv) -> Self {
        Self::File {
            path: env.path("effect_ledger.txt"),
        }
    }

    /// The `env` object of a shell run's input that the steps of [`EffectLedger::step`]
    /// need.
    pub fn shell_env(&self) -> Value {
        match self {
            Self::Table { url, psql } => {
                json!({"LEDGER_URL": url, "PSQL": psql.display().to_string()})
            }
            Self::File { path } => json!({"LEDGER_FILE": path.display().to_string()}),
        }
    }

    /// A shell step `name`: records `start`, runs `body`, records `done`, then prints
    /// `"<worker pid> <fencing token>"` so the recorded output says who produced it.
    pub fn step(&self, name: &str, body: &str) -> Value {
        let recorder = match self {
            Self::Table { .. } => TABLE_RECORDER,
            Self::File { .. } => FILE_RECORDER,
        };
        json!({
            "name": name,
            "run": format!(
                "{KEY_PRELUDE}; {recorder}; L start; {body}; L done; \
                 echo \"$PPID $MORPHEUS_FENCING_TOKEN\""
            ),
        })
    }

    /// A shell run input with these steps and the ledger's environment.
    pub fn input(&self, steps: Vec<Value>) -> Value {
        json!({"steps": steps, "env": self.shell_env()})
    }

    /// Every record so far, in the order written.
    ///
    /// # Panics
    /// On a malformed record or a database error.
    pub fn rows(&self) -> Vec<LedgerRow> {
        match self {
            Self::Table { url, .. } => {
                let url = url.clone();
                let rows: Vec<(String, String, i32, i64, i32, String, i64)> = block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&url).await?;
                    let rows = sqlx::query_as(
                        "SELECT run_id, step_key, attempt, fencing_token, worker_pid, phase,
                                (EXTRACT(EPOCH FROM at) * 1000000)::int8
                         FROM effect_ledger ORDER BY id",
                    )
                    .fetch_all(&mut conn)
                    .await?;
                    conn.close().await?;
                    Ok::<_, sqlx::Error>(rows)
                })
                .expect("read effect_ledger");
                rows.into_iter()
                    .map(
                        |(run_id, step_key, attempt, token, pid, phase, at_us)| LedgerRow {
                            run_id,
                            step_key,
                            attempt: attempt.into(),
                            token,
                            pid: pid as u32,
                            phase,
                            at_us,
                        },
                    )
                    .collect()
            }
            Self::File { path } => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                text.lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| {
                        let parse = || -> Option<LedgerRow> {
                            let w: Vec<&str> = line.split_whitespace().collect();
                            if w.len() != 7 || !["start", "done"].contains(&w[0]) {
                                return None;
                            }
                            Some(LedgerRow {
                                phase: w[0].to_owned(),
                                run_id: w[1].to_owned(),
                                step_key: w[2].to_owned(),
                                attempt: w[3].parse().ok()?,
                                token: w[4].parse().ok()?,
                                pid: w[5].parse().ok()?,
                                at_us: parse_epoch_us(w[6])?,
                            })
                        };
                        parse().unwrap_or_else(|| panic!("malformed ledger line: {line:?}"))
                    })
                    .collect()
            }
        }
    }
}

/// Pairs `start` and `done` records into executions, per `(run, step)`, by start time.
pub fn executions(rows: &[LedgerRow]) -> BTreeMap<(String, String), Vec<Execution>> {
    let mut by_key: BTreeMap<(String, String), Vec<Execution>> = BTreeMap::new();
    for row in rows {
        let list = by_key
            .entry((row.run_id.clone(), row.step_key.clone()))
            .or_default();
        if row.phase == "start" {
            list.push(Execution {
                run_id: row.run_id.clone(),
                step_key: row.step_key.clone(),
                attempt: row.attempt,
                token: row.token,
                pid: row.pid,
                start_us: row.at_us,
                done_us: None,
            });
            continue;
        }
        let open = list.iter_mut().rev().find(|e| {
            e.done_us.is_none()
                && e.attempt == row.attempt
                && e.token == row.token
                && e.pid == row.pid
        });
        match open {
            Some(execution) => execution.done_us = Some(row.at_us),
            // A `done` without a `start`: keep it visible as an execution of its own.
            None => list.push(Execution {
                run_id: row.run_id.clone(),
                step_key: row.step_key.clone(),
                attempt: row.attempt,
                token: row.token,
                pid: row.pid,
                start_us: row.at_us,
                done_us: Some(row.at_us),
            }),
        }
    }
    for list in by_key.values_mut() {
        list.sort_by_key(|e| e.start_us);
    }
    by_key
}

/// The most intervals `[start, end]` open at one moment (an end at the same instant as
/// a start does not overlap it).
pub fn max_overlap(intervals: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // Ends (-1) sort before starts (+1) at the same instant.
    events.sort();
    let mut open = 0i32;
    let mut most = 0i32;
    for (_, delta) in events {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

// ---------------------------------------------------------------------------------
// Direct reads of the engine's tables.

/// A `workflow_steps` row.
#[derive(Debug, Clone)]
pub struct StepRow {
    /// The run.
    pub run_id: String,
    /// The step key.
    pub step_key: String,
    /// `completed`, `failed`, ….
    pub status: String,
    /// `completed_at` in µs since the epoch.
    pub completed_us: Option<i64>,
    /// The recorded output (`null` if none).
    pub output: Value,
    /// Recorded attempts.
    pub attempts: i64,
}

impl StepRow {
    /// `"<pid> <token>"` parsed from the last `stdout_tail` line of the recorded output.
    pub fn producer(&self) -> Option<(u32, i64)> {
        let last = self.output["stdout_tail"].as_array()?.last()?.as_str()?;
        let (pid, token) = last.trim().split_once(' ')?;
        Some((pid.parse().ok()?, token.parse().ok()?))
    }
}

/// A `workflow_runs` row.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// The run.
    pub id: String,
    /// Its status.
    pub status: String,
    /// Whether it has a lease that has already expired.
    pub lease_expired: bool,
    /// Current lease epoch.
    pub lease_epoch: i64,
    /// Current lease owner.
    pub lease_owner: Option<String>,
}

async fn sqlite_connect(url: &str) -> Result<sqlx::SqliteConnection, sqlx::Error> {
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(url)?.busy_timeout(Duration::from_secs(10));
    sqlx::SqliteConnection::connect_with(&options).await
}

/// `run_id, step_key, status, completed_at (µs), output, attempts` on Postgres.
type PgStepRow = (String, String, String, Option<i64>, Option<String>, i32);
/// `run_id, step_key, status, completed_at, output, attempts` on SQLite.
type SqliteStepRow = (String, String, String, Option<String>, Option<String>, i64);
/// `id, status, lease_expires_at, lease_epoch, lease_owner` on SQLite.
type SqliteRunRow = (String, String, Option<String>, i64, Option<String>);

/// Every row of `workflow_steps`, read with sqlx.
pub fn read_steps(env: &TestEnv) -> Vec<StepRow> {
    let url = env.url().to_owned();
    match env.backend() {
        Backend::Postgres => {
            let rows: Vec<PgStepRow> = block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                let rows = sqlx::query_as(
                    "SELECT run_id::text, step_key, status,
                                (EXTRACT(EPOCH FROM completed_at) * 1000000)::int8,
                                output::text, attempts
                         FROM workflow_steps",
                )
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(rows)
            })
            .expect("read workflow_steps");
            rows.into_iter()
                .map(
                    |(run_id, step_key, status, completed_us, output, attempts)| StepRow {
                        run_id,
                        step_key,
                        status,
                        completed_us,
                        output: parse_json(output),
                        attempts: attempts.into(),
                    },
                )
                .collect()
        }
        Backend::Sqlite => {
            let rows: Vec<SqliteStepRow> = block_on(async {
                let mut conn = sqlite_connect(&url).await?;
                let rows = sqlx::query_as(
                    "SELECT run_id, step_key, status, completed_at, output, attempts
                         FROM workflow_steps",
                )
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(rows)
            })
            .expect("read workflow_steps");
            rows.into_iter()
                .map(
                    |(run_id, step_key, status, completed_at, output, attempts)| StepRow {
                        run_id,
                        step_key,
                        status,
                        completed_us: completed_at.map(|text| {
                            parse_utc_us(&text)
                                .unwrap_or_else(|| panic!("bad completed_at {text:?}"))
                        }),
                        output: parse_json(output),
                        attempts,
                    },
                )
                .collect()
        }
    }
}

fn parse_json(text: Option<String>) -> Value {
    text.map(|text| {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
    })
    .unwrap_or(Value::Null)
}

/// Every row of `workflow_runs`, read with sqlx.
pub fn read_runs(env: &TestEnv) -> Vec<RunRow> {
    let url = env.url().to_owned();
    match env.backend() {
        Backend::Postgres => {
            let rows: Vec<(String, String, bool, i64, Option<String>)> = block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                let rows = sqlx::query_as(
                    "SELECT id::text, status, COALESCE(lease_expires_at < now(), false),
                            lease_epoch, lease_owner
                     FROM workflow_runs",
                )
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(rows)
            })
            .expect("read workflow_runs");
            rows.into_iter()
                .map(
                    |(id, status, lease_expired, lease_epoch, lease_owner)| RunRow {
                        id,
                        status,
                        lease_expired,
                        lease_epoch,
                        lease_owner,
                    },
                )
                .collect()
        }
        Backend::Sqlite => {
            let rows: Vec<SqliteRunRow> = block_on(async {
                let mut conn = sqlite_connect(&url).await?;
                let rows = sqlx::query_as(
                    "SELECT id, status, lease_expires_at, lease_epoch, lease_owner
                         FROM workflow_runs",
                )
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(rows)
            })
            .expect("read workflow_runs");
            let now = now_us();
            rows.into_iter()
                .map(|(id, status, expires, lease_epoch, lease_owner)| RunRow {
                    id,
                    status,
                    lease_expired: expires
                        .and_then(|text| parse_utc_us(&text))
                        .is_some_and(|at| at < now),
                    lease_epoch,
                    lease_owner,
                })
                .collect()
        }
    }
}

/// `morpheus start shell --input INPUT <extra> --json`: the new run's id.
pub fn start_run(env: &TestEnv, input: &Value, extra: &[&str]) -> String {
    let input = input.to_string();
    let mut args = vec!["start", "shell", "--input", input.as_str()];
    args.extend_from_slice(extra);
    args.push("--json");
    let started = env.cli_json(&args);
    started["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("start --json printed no run_id: {started}"))
        .to_owned()
}

/// Waits until every run in `ids` is `completed` (checked with one query per poll).
/// Returns how long it took, or `None` if `timeout` passed first.
pub fn wait_all_completed(env: &TestEnv, ids: &[String], timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let runs = read_runs(env);
        let completed: std::collections::HashSet<&str> = runs
            .iter()
            .filter(|r| r.status == "completed")
            .map(|r| r.id.as_str())
            .collect();
        if ids.iter().all(|id| completed.contains(id.as_str())) {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------
// The workers and the faults.

/// What was done to a worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL (the slot gets a new incarnation afterwards).
    Kill,
    /// SIGSTOP … SIGCONT.
    Freeze,
    /// Not injected: the host itself stalled (see [`HostWatch`]); `pid` is 0 (every
    /// process may have been affected).
    HostStall,
}

/// A fault injected into one worker process, `[from, to]` in µs since the epoch (a kill
/// is an instant).
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// The worker process.
    pub pid: u32,
    /// Kill or freeze.
    pub kind: FaultKind,
    /// Start.
    pub from_us: i64,
    /// End.
    pub to_us: i64,
}

struct Slot {
    worker: Option<WorkerProcess>,
    incarnation: u32,
    /// (frozen since µs, thaw at)
    frozen: Option<(i64, Instant)>,
    restart_at: Option<Instant>,
}

/// `K` worker slots running `morpheus up` with fast leases. A killed worker is replaced
/// by a new process (`w<slot>-inc<n>`, also its `--worker-id`).
pub struct Fleet<'a> {
    env: &'a TestEnv,
    args: Vec<String>,
    slots: Vec<Slot>,
    /// Killed incarnations (kept so their stderr is printed if the test panics).
    graveyard: Vec<WorkerProcess>,
    /// Every fault so far.
    pub faults: Vec<Fault>,
    /// Every incarnation ever started: pid → name.
    pub names: BTreeMap<u32, String>,
}

impl<'a> Fleet<'a> {
    /// Starts `workers` processes with `--concurrency concurrency`, [`FAST_LEASES`] and
    /// `extra` arguments, and waits until each has logged `worker started`.
    pub fn start(env: &'a TestEnv, workers: usize, concurrency: u32, extra: &[&str]) -> Self {
        let mut args: Vec<String> = FAST_LEASES.iter().map(|s| s.to_string()).collect();
        args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut fleet = Self {
            env,
            args,
            slots: (0..workers)
                .map(|_| Slot {
                    worker: None,
                    incarnation: 0,
                    frozen: None,
                    restart_at: None,
                })
                .collect(),
            graveyard: Vec::new(),
            faults: Vec::new(),
            names: BTreeMap::new(),
        };
        for index in 0..workers {
            fleet.spawn(index);
        }
        fleet.wait_ready();
        fleet
    }

    fn spawn(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.incarnation += 1;
        slot.restart_at = None;
        slot.frozen = None;
        let name = format!("w{}-inc{}", index + 1, slot.incarnation);
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(["--worker-id", name.as_str()]);
        let worker = self.env.spawn_worker(&name, &args);
        self.names.insert(worker.pid(), name);
        slot.worker = Some(worker);
    }

    /// Waits until every live worker has logged `worker started`.
    pub fn wait_ready(&self) {
        for worker in self.slots.iter().filter_map(|s| s.worker.as_ref()) {
            wait_for(
                &format!("worker {} to start", worker.name()),
                Duration::from_secs(30),
                || worker.stderr().contains("worker started").then_some(()),
            );
        }
    }

    /// Pids of the live workers, by slot.
    pub fn pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|s| s.worker.as_ref().map(WorkerProcess::pid))
            .collect()
    }

    /// The incarnation name of `pid` (or `pid <n>`).
    pub fn name_of(&self, pid: u32) -> String {
        self.names
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| format!("pid {pid}"))
    }

    fn running(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        slot.worker.is_some() && slot.frozen.is_none()
    }

    fn others_running(&self, index: usize) -> usize {
        (0..self.slots.len())
            .filter(|&i| i != index && self.running(i))
            .count()
    }

    /// A slot that may be killed now: alive, and (with more than one slot) leaving at
    /// least one other worker alive and not frozen.
    pub fn pick_killable(&self, rng: &mut StdRng) -> Option<usize> {
        let single = self.slots.len() == 1;
        let candidates: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].worker.is_some() && (single || self.others_running(i) > 0))
            .collect();
        (!candidates.is_empty()).then(|| candidates[rng.gen_range(0..candidates.len())])
    }

    /// A slot that may be frozen now: running, leaving another worker running.
    pub fn pick_freezable(&self, rng: &mut StdRng) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.running(i) && self.others_running(i) > 0)
            .collect();
        (!candidates.is_empty()).then(|| candidates[rng.gen_range(0..candidates.len())])
    }

    /// SIGKILLs slot `index` (ending a freeze of it, if any); a new incarnation starts
    /// after `restart_after`.
    pub fn kill(&mut self, index: usize, restart_after: Duration) {
        let now = now_us();
        let slot = &mut self.slots[index];
        let Some(mut worker) = slot.worker.take() else {
            return;
        };
        worker.kill();
        let pid = worker.pid();
        if let Some((since, _)) = slot.frozen.take() {
            self.faults.push(Fault {
                pid,
                kind: FaultKind::Freeze,
                from_us: since,
                to_us: now,
            });
        }
        self.faults.push(Fault {
            pid,
            kind: FaultKind::Kill,
            from_us: now,
            to_us: now,
        });
        slot.restart_at = Some(Instant::now() + restart_after);
        self.graveyard.push(worker);
    }

    /// SIGSTOPs slot `index` for `duration` (thawed by [`Fleet::tick`]).
    pub fn freeze(&mut self, index: usize, duration: Duration) {
        let slot = &mut self.slots[index];
        if let Some(worker) = &slot.worker {
            worker.stop();
            slot.frozen = Some((now_us(), Instant::now() + duration));
        }
    }

    fn thaw(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let (Some(worker), Some((since, _))) = (&slot.worker, slot.frozen.take()) {
            worker.cont();
            self.faults.push(Fault {
                pid: worker.pid(),
                kind: FaultKind::Freeze,
                from_us: since,
                to_us: now_us(),
            });
        }
    }

    /// Thaws frozen workers whose time is up and restarts killed ones that are due.
    pub fn tick(&mut self) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            if self.slots[index].frozen.is_some_and(|(_, at)| at <= now) {
                self.thaw(index);
            }
            if self.slots[index].restart_at.is_some_and(|at| at <= now) {
                self.spawn(index);
            }
        }
    }

    /// Thaws every frozen worker and restarts every killed one now.
    pub fn heal(&mut self) {
        for index in 0..self.slots.len() {
            self.thaw(index);
            if self.slots[index].worker.is_none() {
                self.spawn(index);
            }
        }
    }

    /// Kills every worker (no fault recorded): the end of the test.
    pub fn stop_all(&mut self) {
        for index in 0..self.slots.len() {
            self.thaw(index);
            if let Some(mut worker) = self.slots[index].worker.take() {
                worker.kill();
                self.graveyard.push(worker);
            }
        }
    }

    /// How many `lease lost` lines all incarnations logged (stale writers that noticed).
    pub fn lease_lost_lines(&self) -> usize {
        self.graveyard
            .iter()
            .chain(self.slots.iter().filter_map(|s| s.worker.as_ref()))
            .map(|w| {
                w.stderr()
                    .lines()
                    .filter(|l| l.contains("lease lost"))
                    .count()
            })
            .sum()
    }
}

// ---------------------------------------------------------------------------------
// The torture run and its analysis.

/// An execution started at most this long after a fault of its worker is still blamed
/// on it: a `psql` of a SIGKILLed worker's shell can land after the kill (only the shell
/// gets PDEATHSIG), and a thawed worker can start its next step before it learns its
/// lease is gone.
pub const START_SLACK_US: i64 = 2_000_000;
/// A body that finished at most this long before a fault may still have been unrecorded
/// when it struck (its checkpoint was not committed yet).
pub const DONE_SLACK_US: i64 = 1_000_000;
/// An execution with no `done` record is assumed to have ended within this long.
pub const UNFINISHED_BOUND_US: i64 = 10_000_000;

/// The first fault of `execution`'s worker that overlaps it (with the slacks above).
/// Injected faults (kill, freeze) are preferred over host stalls.
pub fn explaining_fault<'f>(execution: &Execution, faults: &'f [Fault]) -> Option<&'f Fault> {
    let end = execution
        .done_us
        .unwrap_or(execution.start_us + UNFINISHED_BOUND_US);
    let overlaps = |f: &Fault| {
        execution.start_us <= f.to_us + START_SLACK_US && end >= f.from_us - DONE_SLACK_US
    };
    faults
        .iter()
        .find(|f| f.pid == execution.pid && f.kind != FaultKind::HostStall && overlaps(f))
        .or_else(|| {
            faults
                .iter()
                .find(|f| f.kind == FaultKind::HostStall && overlaps(f))
        })
}

/// A host stall at least this long is recorded by [`HostWatch`].
pub const HOST_STALL_US: i64 = 500_000;

/// Watches the host while a torture runs, so that a lease lost *without* an injected
/// fault can be told apart from an engine bug: on a shared 2-CPU machine another
/// build can starve the workers (or the database's fsync) for seconds, longer than a
/// 2 s lease. Every 50 ms it measures how late its own sleep woke up (CPU starvation)
/// and, on Postgres, how long a one-row autocommit `UPDATE` takes in the test database
/// (commit/fsync stalls); either taking longer than [`HOST_STALL_US`] is a
/// [`FaultKind::HostStall`].
pub struct HostWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<Vec<Fault>>>,
}

impl HostWatch {
    /// Starts watching (with a commit probe in `pg_url`'s database, if given).
    pub fn start(pg_url: Option<String>) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let mut stalls = Vec::new();
                let mut probe = None;
                if let Some(url) = &pg_url {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
                        let created = sqlx::query(
                            "CREATE TABLE IF NOT EXISTS torture_host_watch (n bigint);
                             INSERT INTO torture_host_watch VALUES (0)",
                        )
                        .execute(&mut conn)
                        .await;
                        if created.is_ok() {
                            probe = Some(conn);
                        }
                    }
                }
                let period = Duration::from_millis(50);
                while !stopped.load(Ordering::Relaxed) {
                    let before = now_us();
                    tokio::time::sleep(period).await;
                    let after = now_us();
                    if after - before - period.as_micros() as i64 > HOST_STALL_US {
                        stalls.push(Fault {
                            pid: 0,
                            kind: FaultKind::HostStall,
                            from_us: before,
                            to_us: after,
                        });
                    }
                    if let Some(conn) = probe.as_mut() {
                        let started = now_us();
                        let _ = sqlx::query("UPDATE torture_host_watch SET n = n + 1")
                            .execute(&mut *conn)
                            .await;
                        let ended = now_us();
                        if ended - started > HOST_STALL_US {
                            stalls.push(Fault {
                                pid: 0,
                                kind: FaultKind::HostStall,
                                from_us: started,
                                to_us: ended,
                            });
                        }
                    }
                }
                if let Some(conn) = probe {
                    let _ = conn.close().await;
                }
                stalls
            })
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching and returns the stalls seen.
    pub fn finish(mut self) -> Vec<Fault> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What [`analyze`] found.
#[derive(Debug, Default)]
pub struct TortureReport {
    /// Kills injected.
    pub kills: usize,
    /// Freezes injected.
    pub freezes: usize,
    /// Runs submitted.
    pub runs: usize,
    /// Step results recorded.
    pub steps: usize,
    /// Recorded results beyond one per `(run, step)`.
    pub duplicate_results: usize,
    /// Submitted runs that are not `completed` (with their state).
    pub lost_runs: Vec<String>,
    /// Body executions beyond the recorded one, each overlapping a kill or freeze of
    /// its worker.
    pub reexecuted_in_flight: usize,
    /// Extra executions explained only by a host stall (a lease that expired while the
    /// machine was starved, not because of an injected fault).
    pub reexecuted_after_host_stall: usize,
    /// Host stalls seen by [`HostWatch`].
    pub host_stalls: usize,
    /// One line per extra execution.
    pub reexecutions: Vec<String>,
    /// Recorded results per worker incarnation (`name(pid …)`, count), in pid order.
    pub per_worker: Vec<(String, usize)>,
    /// Every broken promise, described.
    pub violations: Vec<String>,
}

impl TortureReport {
    /// `kills=… freezes=… runs=… steps=… duplicate_results=… lost_runs=… reexecuted_in_flight=…`
    pub fn summary(&self) -> String {
        format!(
            "kills={} freezes={} runs={} steps={} duplicate_results={} lost_runs={} \
             reexecuted_in_flight={}",
            self.kills,
            self.freezes,
            self.runs,
            self.steps,
            self.duplicate_results,
            self.lost_runs.len(),
            self.reexecuted_in_flight
        )
    }

    /// `per_worker_results: w1-inc1=12 w2-inc1=30 …`
    pub fn per_worker_line(&self) -> String {
        let counts: Vec<String> = self
            .per_worker
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        format!("per_worker_results: {}", counts.join(" "))
    }

    /// `host_stalls=… reexecuted_after_host_stall=…`
    pub fn host_line(&self) -> String {
        format!(
            "host_stalls={} reexecuted_after_host_stall={}",
            self.host_stalls, self.reexecuted_after_host_stall
        )
    }

    /// Prints the extra executions, the summary and per-worker lines.
    pub fn print(&self) {
        const SHOWN: usize = 60;
        for line in self.reexecutions.iter().take(SHOWN) {
            eprintln!("re-executed: {line}");
        }
        if self.reexecutions.len() > SHOWN {
            eprintln!(
                "re-executed: … and {} more",
                self.reexecutions.len() - SHOWN
            );
        }
        for run in &self.lost_runs {
            eprintln!("lost run: {run}");
        }
        for violation in &self.violations {
            eprintln!("VIOLATION: {violation}");
        }
        eprintln!("{}", self.summary());
        eprintln!("{}", self.per_worker_line());
        eprintln!("{}", self.host_line());
    }

    /// Panics listing every violation, unless there are none.
    pub fn assert_clean(&self) {
        let mut problems = self.violations.clone();
        if self.duplicate_results > 0 {
            problems.push(format!("duplicate_results={}", self.duplicate_results));
        }
        for run in &self.lost_runs {
            problems.push(format!("lost run {run}"));
        }
        assert!(
            problems.is_empty(),
            "the engine broke its promise ({} problems):\n{}\n{}",
            problems.len(),
            problems.join("\n"),
            self.summary()
        );
    }
}

/// Everything [`analyze`] looks at.
pub struct Observed<'a> {
    /// Run ids submitted.
    pub submitted: &'a [String],
    /// Step keys every run has.
    pub step_keys: &'a [String],
    /// `workflow_runs`.
    pub runs: &'a [RunRow],
    /// `workflow_steps`.
    pub steps: &'a [StepRow],
    /// The effect ledger.
    pub ledger: &'a [LedgerRow],
    /// Faults injected.
    pub faults: &'a [Fault],
    /// pid → worker incarnation name.
    pub names: &'a BTreeMap<u32, String>,
    /// Test start (µs since the epoch), for relative times in messages.
    pub t0_us: i64,
}

/// Checks the promise against what was observed (see the test file for the reasoning).
pub fn analyze(seen: &Observed<'_>) -> TortureReport {
    let rel = |us: i64| format!("+{:.3}s", (us - seen.t0_us) as f64 / 1e6);
    let name = |pid: u32| {
        seen.names
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| format!("pid {pid}"))
    };
    let mut report = TortureReport {
        kills: seen
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Kill)
            .count(),
        freezes: seen
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Freeze)
            .count(),
        host_stalls: seen
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::HostStall)
            .count(),
        runs: seen.submitted.len(),
        steps: seen.steps.len(),
        ..TortureReport::default()
    };

    // Every run reached `completed`.
    let runs: HashMap<&str, &RunRow> = seen.runs.iter().map(|r| (r.id.as_str(), r)).collect();
    for id in seen.submitted {
        match runs.get(id.as_str()) {
            None => report.lost_runs.push(format!("{id}: no workflow_runs row")),
            Some(run) if run.status != "completed" => report.lost_runs.push(format!(
                "{id}: status {} epoch {} owner {:?}{}",
                run.status,
                run.lease_epoch,
                run.lease_owner,
                if run.status == "running" && run.lease_expired {
                    " — STUCK running with an expired lease"
                } else {
                    ""
                }
            )),
            Some(_) => {}
        }
    }
    if seen.runs.len() != seen.submitted.len() {
        report.violations.push(format!(
            "{} runs in workflow_runs, {} submitted",
            seen.runs.len(),
            seen.submitted.len()
        ));
    }

    // Exactly one recorded result per (run, step).
    let mut recorded: BTreeMap<(String, String), Vec<&StepRow>> = BTreeMap::new();
    for step in seen.steps {
        recorded
            .entry((step.run_id.clone(), step.step_key.clone()))
            .or_default()
            .push(step);
    }
    for ((run, key), rows) in &recorded {
        report.duplicate_results += rows.len() - 1;
        if !seen.step_keys.contains(key) {
            report
                .violations
                .push(format!("{run}/{key}: a step row no run asked for"));
        }
    }
    let expected = seen.submitted.len() * seen.step_keys.len();
    if seen.steps.len() != expected {
        report.violations.push(format!(
            "{} step rows, expected runs×steps = {expected}",
            seen.steps.len()
        ));
    }
    for id in seen.submitted {
        for key in seen.step_keys {
            if !recorded.contains_key(&(id.clone(), key.clone())) {
                report
                    .violations
                    .push(format!("{id}/{key}: no recorded result"));
            }
        }
    }

    let executions = executions(seen.ledger);
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for ((run, key), rows) in &recorded {
        let step = rows[0];
        let label = format!("{run}/{key}");
        if step.status != "completed" {
            report.violations.push(format!(
                "{label}: recorded status {} (attempts {})",
                step.status, step.attempts
            ));
            continue;
        }
        let Some((pid, token)) = step.producer() else {
            report.violations.push(format!(
                "{label}: recorded output has no '<pid> <token>' line: {}",
                step.output
            ));
            continue;
        };
        *per_pid.entry(pid).or_default() += 1;
        let empty = Vec::new();
        let runs_of_step = executions
            .get(&(run.clone(), key.clone()))
            .unwrap_or(&empty);
        if runs_of_step.is_empty() {
            report.violations.push(format!(
                "{label}: result recorded but the ledger has no execution of it"
            ));
            continue;
        }

        // Never executed again after its result was recorded.
        if let Some(completed) = step.completed_us {
            for late in runs_of_step.iter().filter(|e| e.start_us > completed) {
                report.violations.push(format!(
                    "{label}: executed again at {} by {} (token {}) after its result was \
                     recorded at {} by {} (token {token})",
                    rel(late.start_us),
                    name(late.pid),
                    late.token,
                    rel(completed),
                    name(pid)
                ));
            }
        } else {
            report
                .violations
                .push(format!("{label}: completed without completed_at"));
        }

        // Fencing: the recorded result comes from the newest lease that ran the body.
        let max_token = runs_of_step.iter().map(|e| e.token).max().unwrap_or(0);
        let producer = runs_of_step
            .iter()
            .position(|e| e.pid == pid && e.token == token && e.done_us.is_some());
        if token != max_token {
            report.violations.push(format!(
                "{label}: recorded result from {} with token {token}, but the body also ran \
                 under token {max_token}: a stale lease holder's write was accepted",
                name(pid)
            ));
        }
        if producer.is_none() {
            report.violations.push(format!(
                "{label}: recorded result claims {} token {token}, but the ledger has no \
                 finished execution by it",
                name(pid)
            ));
        }

        // Extra executions happen only for steps in flight at a kill or freeze.
        for (index, execution) in runs_of_step.iter().enumerate() {
            if Some(index) == producer {
                continue;
            }
            let what = format!(
                "{label}: {} token {} attempt {} ran {}..{}",
                name(execution.pid),
                execution.token,
                execution.attempt,
                rel(execution.start_us),
                execution
                    .done_us
                    .map(rel)
                    .unwrap_or_else(|| "(no done)".into())
            );
            match explaining_fault(execution, seen.faults) {
                Some(fault) => {
                    if fault.kind == FaultKind::HostStall {
                        report.reexecuted_after_host_stall += 1;
                    } else {
                        report.reexecuted_in_flight += 1;
                    }
                    let fault = match fault.kind {
                        FaultKind::Kill => format!("killed at {}", rel(fault.from_us)),
                        FaultKind::Freeze => {
                            format!("frozen {}..{}", rel(fault.from_us), rel(fault.to_us))
                        }
                        FaultKind::HostStall => format!(
                            "no injected fault; the host stalled {}..{}",
                            rel(fault.from_us),
                            rel(fault.to_us)
                        ),
                    };
                    report.reexecutions.push(format!(
                        "{what} [{fault}; recorded: {} token {token}]",
                        name(pid)
                    ));
                }
                None => report.violations.push(format!(
                    "{what}: an extra execution while its worker was neither killed nor \
                     frozen (recorded: {} token {token})",
                    name(pid)
                )),
            }
        }
    }
    for (key, list) in &executions {
        if !recorded.contains_key(key) && !list.is_empty() {
            report.violations.push(format!(
                "{}/{}: executed {} times but no result recorded",
                key.0,
                key.1,
                list.len()
            ));
        }
    }
    report.per_worker = per_pid
        .into_iter()
        .map(|(pid, count)| (format!("{}(pid {pid})", name(pid)), count))
        .collect();
    report
}

/// Runs the torture on a fresh `backend` environment and returns the report (printed
/// already). See `tests/tests/torture.rs` for what is asserted and why.
pub fn run_torture(backend: Backend, config: &TortureConfig) -> TortureReport {
    let t0 = Instant::now();
    let t0_us = now_us();
    eprintln!(
        "torture {backend:?}: seed={} (replay with MORPHEUS_TORTURE_SEED={}) workers={} runs={} \
         steps={} seconds={} concurrency={} freezes={}",
        config.seed,
        config.seed,
        config.workers,
        config.runs,
        config.steps,
        config.seconds,
        config.concurrency,
        config.freezes
    );
    let env = TestEnv::new(backend);
    let ledger = EffectLedger::create(&env);
    let watch = HostWatch::start((backend == Backend::Postgres).then(|| env.url().to_owned()));
    let mut fleet = Fleet::start(&env, config.workers, config.concurrency, &[]);

    // The plan (from its own stream, so it does not depend on fault timing).
    let mut plan_rng = StdRng::seed_from_u64(config.seed ^ 0x5eed_5eed_5eed_5eed);
    let step_keys: Vec<String> = (1..=config.steps).map(|i| format!("s{i}")).collect();
    let chaos = Duration::from_secs_f64(config.seconds.max(0.0));
    let submit_window = chaos.mul_f64(0.85);
    let schedule: Vec<(Duration, Value)> = (0..config.runs)
        .map(|i| {
            let steps = step_keys
                .iter()
                .map(|key| {
                    let sleep_ms: u32 = plan_rng.gen_range(20..=500);
                    ledger.step(
                        key,
                        &format!("sleep {}.{:03}", sleep_ms / 1000, sleep_ms % 1000),
                    )
                })
                .collect();
            let at = submit_window.mul_f64(i as f64 / config.runs as f64);
            (at, ledger.input(steps))
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(config.seed);
    let gap_ms = if config.workers > 1 {
        300..=1500u64
    } else {
        800..=2500u64
    };
    let chaos_started = Instant::now();
    let mut chaos_took = Duration::ZERO;
    let submitted: Vec<String> = std::thread::scope(|scope| {
        let env = &env;
        let schedule = &schedule;
        let submitter = scope.spawn(move || {
            let start = Instant::now();
            let mut ids = Vec::with_capacity(schedule.len());
            for (at, input) in schedule {
                if let Some(wait) = at.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                ids.push(env.start_shell(input));
            }
            ids
        });

        let mut next_fault = Instant::now() + Duration::from_millis(rng.gen_range(gap_ms.clone()));
        while chaos_started.elapsed() < chaos {
            fleet.tick();
            if Instant::now() >= next_fault {
                let freeze = config.freezes && rng.gen_bool(0.4);
                if freeze {
                    if let Some(index) = fleet.pick_freezable(&mut rng) {
                        let millis = rng.gen_range(2500..=4000);
                        fleet.freeze(index, Duration::from_millis(millis));
                    }
                } else if let Some(index) = fleet.pick_killable(&mut rng) {
                    let millis = rng.gen_range(0..=500);
                    fleet.kill(index, Duration::from_millis(millis));
                }
                next_fault = Instant::now() + Duration::from_millis(rng.gen_range(gap_ms.clone()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        fleet.heal();
        chaos_took = chaos_started.elapsed();
        submitter
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    eprintln!(
        "chaos over after {:.1}s ({} kills, {} freezes), all runs submitted after {:.1}s; \
         draining with every worker up",
        chaos_took.as_secs_f64(),
        fleet
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Kill)
            .count(),
        fleet
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::Freeze)
            .count(),
        chaos_started.elapsed().as_secs_f64()
    );
    let drain_timeout = Duration::from_secs(120);
    match wait_all_completed(&env, &submitted, drain_timeout) {
        Some(took) => eprintln!("drained in {:.1}s", took.as_secs_f64()),
        None => eprintln!("NOT drained after {drain_timeout:?}"),
    }
    // Time for anything late (a stale worker starting one more step) to show up.
    std::thread::sleep(Duration::from_millis(1500));
    let lease_lost = fleet.lease_lost_lines();
    fleet.stop_all();
    let mut faults = fleet.faults.clone();
    faults.extend(watch.finish());

    let runs = read_runs(&env);
    let steps = read_steps(&env);
    let rows = ledger.rows();
    let report = analyze(&Observed {
        submitted: &submitted,
        step_keys: &step_keys,
        runs: &runs,
        steps: &steps,
        ledger: &rows,
        faults: &faults,
        names: &fleet.names,
        t0_us,
    });
    report.print();
    eprintln!(
        "ledger records={} body executions={} 'lease lost' log lines={} total {:.1}s",
        rows.len(),
        rows.iter().filter(|r| r.phase == "start").count(),
        lease_lost,
        t0.elapsed().as_secs_f64()
    );
    if !report.violations.is_empty() || !report.lost_runs.is_empty() {
        eprintln!("faults (pid, kind, from, to):");
        for fault in &faults {
            eprintln!(
                "  {} {:?} {:.3}..{:.3}",
                fleet.name_of(fault.pid),
                fault.kind,
                (fault.from_us - t0_us) as f64 / 1e6,
                (fault.to_us - t0_us) as f64 / 1e6
            );
        }
    }
    report
}

// ---------------------------------------------------------------------------------
// Serializing the Postgres-heavy tests.

/// Holds a Postgres advisory lock (on a dedicated connection) so that the tests that
/// start several workers on the shared server run one at a time, whatever the test
/// runner's parallelism: each worker may hold ~17 of its 100 connections, and the
/// lease timing they check assumes the CPU is not shared with another worker fleet.
/// Released when dropped (or when the process dies: the connection closes).
pub struct PgHeavyLock {
    release: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// `morpheus` in ASCII: the advisory lock key.
const HEAVY_LOCK_KEY: i64 = 0x6d6f_7270_6865_7573;

impl PgHeavyLock {
    /// Waits for the lock.
    ///
    /// # Panics
    /// If [`PG_URL_ENV`] is unset or the server cannot be reached.
    pub fn acquire(test: &str) -> Self {
        let url = std::env::var(PG_URL_ENV)
            .unwrap_or_else(|_| panic!("{PG_URL_ENV} is not set (see TestEnv::postgres)"));
        let (locked_tx, locked_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let waited = Instant::now();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .expect("connect for the advisory lock");
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(HEAVY_LOCK_KEY)
                    .execute(&mut conn)
                    .await
                    .expect("pg_advisory_lock");
                let _ = locked_tx.send(());
                // Nothing else runs on this thread's runtime: block until released.
                let _ = release_rx.recv();
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(HEAVY_LOCK_KEY)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            });
        });
        locked_rx
            .recv()
            .expect("the advisory lock thread failed (see its panic above)");
        if waited.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "{test}: waited {:.1}s for the other Postgres-heavy tests",
                waited.elapsed().as_secs_f64()
            );
        }
        Self {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for PgHeavyLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_engine_timestamps() {
        assert_eq!(parse_utc_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc_us("1970-01-02T00:00:01.5Z"), Some(86_401_500_000));
        // date -u -d 2026-11-23T15:12:53Z +%s → 1795446773
        assert_eq!(
            parse_utc_us("2026-11-23T15:12:53.074954Z"),
            Some(1_795_446_773_074_954)
        );
        assert_eq!(
            parse_utc_us("2026-11-23T15:12:53.074954+00:00"),
            Some(1_795_446_773_074_954)
        );
        assert_eq!(parse_epoch_us("12.000001999"), Some(12_000_001));
    }

    #[test]
    fn measures_overlap() {
        assert_eq!(max_overlap(&[]), 0);
        assert_eq!(max_overlap(&[(0, 10), (10, 20)]), 1);
        assert_eq!(max_overlap(&[(0, 10), (5, 20), (6, 7), (30, 40)]), 3);
    }

    #[test]
    fn pairs_starts_with_dones() {
        let row = |phase: &str, token: i64, pid: u32, at_us: i64| LedgerRow {
            run_id: "r".into(),
            step_key: "s1".into(),
            attempt: 1,
            token,
            pid,
            phase: phase.into(),
            at_us,
        };
        let rows = [
            row("start", 1, 10, 100),
            row("start", 2, 20, 200),
            row("done", 2, 20, 300),
            row("done", 1, 10, 350),
        ];
        let by_key = executions(&rows);
        let list = &by_key[&("r".to_owned(), "s1".to_owned())];
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].pid, list[0].done_us), (10, Some(350)));
        assert_eq!((list[1].pid, list[1].done_us), (20, Some(300)));
        let kill = Fault {
            pid: 10,
            kind: FaultKind::Kill,
            from_us: 5_000_000,
            to_us: 5_000_000,
        };
        assert!(explaining_fault(&list[0], &[kill]).is_none());
        let freeze = Fault {
            pid: 10,
            kind: FaultKind::Freeze,
            from_us: 300,
            to_us: 3_000_300,
        };
        assert!(explaining_fault(&list[0], &[freeze]).is_some());
        assert!(explaining_fault(&list[1], &[freeze]).is_none());
        let stall = Fault {
            pid: 0,
            kind: FaultKind::HostStall,
            from_us: 250,
            to_us: 900_000,
        };
        assert_eq!(
            explaining_fault(&list[1], &[stall]).map(|f| f.kind),
            Some(FaultKind::HostStall)
        );
        // An injected fault of the worker wins over a host stall.
        assert_eq!(
            explaining_fault(&list[0], &[stall, freeze]).map(|f| f.kind),
            Some(FaultKind::Freeze)
        );
    }
}
