//! Database faults: a private PostgreSQL cluster restarted or stopped under load, the
//! worker's LISTEN session cut by a proxy, and a SQLite file that turns read-only or whose
//! disk fills up (tmpfs mounts; tests run as root). The shared test server is never
//! touched: every Postgres test here gets its own throwaway cluster ([`PgCluster`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use morpheus_tests::pg_cluster::{PgCluster, TcpProxy, Tmpfs};
use morpheus_tests::{
    block_on, ledger_step, steps_of, wait_for, CliOutput, Ledger, TestEnv, WorkerProcess,
    FAST_LEASES,
};
use serde_json::{json, Value};
use sqlx::Connection as _;

/// Upper bound for anything that should take a few seconds.
const LONG: Duration = Duration::from_secs(30);

/// A database other than the [`TestEnv`]'s own (a private cluster, a file on a tmpfs):
/// the env only provides the working directory, ledger and worker stderr files.
struct Db<'a> {
    env: &'a TestEnv,
    url: String,
}

impl<'a> Db<'a> {
    fn new(env: &'a TestEnv, url: String) -> Self {
        Self { env, url }
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        CliOutput::from_command(self.env.command_for(&self.url).args(args))
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "morpheus {args:?} against {} failed ({}):\nstdout: {}\nstderr: {}",
            self.url,
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let stdout = self.cli_ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("morpheus {args:?}: not JSON ({error}): {stdout}"))
    }

    fn start_shell(&self, input: &Value) -> String {
        let started = self.cli_json(&["start", "shell", "--input", &input.to_string(), "--json"]);
        started["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("start --json printed no run_id: {started}"))
            .to_owned()
    }

    fn show(&self, run: &str) -> Value {
        self.cli_json(&["runs", "show", run, "--json"])
    }

    fn list(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["runs", "list", "--limit", "10000", "--json"];
        args.extend_from_slice(extra);
        match self.cli_json(&args) {
            Value::Array(runs) => runs,
            other => panic!("runs list --json is not an array: {other}"),
        }
    }

    /// `run id → status` of every run.
    fn statuses(&self) -> BTreeMap<String, String> {
        self.list(&[])
            .iter()
            .map(|run| {
                (
                    run["id"].as_str().unwrap_or_default().to_owned(),
                    run["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// `morpheus up` on this database. The env's command already carries its own
    /// `--database-url`; the later one (after `up`) wins, as clap keeps the last value.
    fn spawn_worker(&self, name: &str, extra: &[&str]) -> WorkerProcess {
        let id = format!("fault-{name}");
        let mut args = vec!["--database-url", self.url.as_str()];
        args.extend_from_slice(FAST_LEASES);
        args.extend(["--worker-id", id.as_str()]);
        args.extend_from_slice(extra);
        self.env.spawn_worker(name, &args)
    }
}

/// Non-empty lines of `text`.
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// What a worker wrote to stderr between two byte offsets of its stderr file.
fn stderr_between(worker: &WorkerProcess, from: usize, to: usize) -> String {
    let all = worker.stderr();
    all.get(from..to.min(all.len()))
        .unwrap_or_default()
        .to_owned()
}

/// A CLI call that must fail with one `error: …` line mentioning one of `needles`.
fn assert_one_line_error(out: &CliOutput, what: &str, needles: &[&str]) -> String {
    assert!(
        !out.status.success(),
        "{what}: exited 0\nstdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    let lines = out.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "{what}: stderr must be exactly one line:\n{}",
        out.stderr
    );
    let line = lines[0].to_owned();
    assert!(line.starts_with("error: "), "{what}: {line}");
    let lower = line.to_lowercase();
    assert!(
        needles.iter().any(|needle| lower.contains(needle)),
        "{what}: {line:?} mentions none of {needles:?}"
    );
    eprintln!("{what}: {line}");
    line
}

// ---------------------------------------------------------------------------------
// 1. PostgreSQL restarts (fast mode: every session is killed) while steps are in flight.

#[test]
fn postgres_restart_mid_flight_every_run_completes() {
    let cluster = PgCluster::start();
    let env = TestEnv::sqlite();
    let db = Db::new(&env, cluster.url());
    db.cli_ok(&["migrate"]);
    let ledger = env.ledger_path();
    let keys = ["s1", "s2", "s3", "s4"];
    let steps: Vec<Value> = keys
        .iter()
        .map(|key| ledger_step(&ledger, key, "sleep 0.3"))
        .collect();
    let mut a = db.spawn_worker("A", &["--concurrency", "8"]);
    let mut b = db.spawn_worker("B", &["--concurrency", "8"]);
    let runs: Vec<String> = (0..20)
        .map(|_| db.start_shell(&json!({ "steps": steps })))
        .collect();

    // Some steps done, some in flight.
    let before = wait_for("20 finished and some in-flight step bodies", LONG, || {
        let now = env.ledger();
        let done = now
            .entries
            .iter()
            .filter(|e| e.mark == morpheus_tests::Mark::Done);
        let in_flight = in_flight(&now);
        (done.count() >= 20 && !in_flight.is_empty()).then_some(now)
    });
    let in_flight_at_restart = in_flight(&before);
    let took = cluster.restart();
    let restarted = Instant::now();
    eprintln!(
        "restarted PostgreSQL ({took:?}) with {} step bodies finished and {} in flight",
        before
            .entries
            .iter()
            .filter(|e| e.mark == morpheus_tests::Mark::Done)
            .count(),
        in_flight_at_restart.len()
    );

    wait_for(
        "every run to complete after the restart",
        Duration::from_secs(60),
        || {
            let statuses = db.statuses();
            for status in statuses.values() {
                assert!(
                    !["failed", "cancelled"].contains(&status.as_str()),
                    "a run ended {status} after the restart: {statuses:?}"
                );
            }
            (statuses.len() == runs.len() && statuses.values().all(|s| s == "completed"))
                .then_some(())
        },
    );
    eprintln!(
        "all {} runs completed {:?} after the restart",
        runs.len(),
        restarted.elapsed()
    );
    assert!(
        db.list(&["--status", "running"]).is_empty(),
        "runs stranded in running"
    );

    let ledger = env.ledger();
    let mut reexecuted = Vec::new();
    for run in &runs {
        let shown = db.show(run);
        assert_eq!(shown["run"]["status"], "completed", "{shown:#}");
        assert!(shown["run"]["lease_owner"].is_null(), "{shown:#}");
        let steps = steps_of(&shown);
        let recorded: BTreeSet<&str> = steps
            .iter()
            .map(|s| s["step_key"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(steps.len(), keys.len(), "one result per step: {shown:#}");
        assert_eq!(recorded, keys.iter().copied().collect(), "{shown:#}");
        for step in steps {
            assert_eq!(step["status"], "completed", "{step:#}");
        }
        for key in keys {
            let starts = ledger.starts(run, key);
            assert!(
                !ledger.dones(run, key).is_empty(),
                "{run}/{key} never finished"
            );
            if starts.len() > 1 {
                reexecuted.push(format!("{run}/{key} x{}", starts.len()));
            }
        }
    }
    eprintln!(
        "restart: runs={} steps={} in_flight_at_restart={} reexecuted={} {:?}",
        runs.len(),
        runs.len() * keys.len(),
        in_flight_at_restart.len(),
        reexecuted.len(),
        reexecuted
    );

    for worker in [&mut a, &mut b] {
        let exit = worker.try_exit();
        assert!(
            exit.is_none(),
            "worker {} exited after the restart ({exit:?}):\n{}",
            worker.name(),
            worker.stderr()
        );
        let log = worker.stderr();
        if std::env::var_os("FAULTS_DUMP").is_some() {
            eprintln!("{log}");
        }
        let warnings: Vec<&str> = lines(&log)
            .into_iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        eprintln!(
            "worker {} logged {} warnings/errors; first ones:\n  {}",
            worker.name(),
            warnings.len(),
            warnings
                .iter()
                .take(8)
                .copied()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

/// `run/step` of every body started but not (yet) finished.
fn in_flight(ledger: &Ledger) -> BTreeSet<String> {
    let mut open = BTreeMap::<String, i32>::new();
    for entry in &ledger.entries {
        let key = format!("{}/{}", entry.run_id, entry.step_key);
        *open.entry(key).or_default() += match entry.mark {
            morpheus_tests::Mark::Start => 1,
            morpheus_tests::Mark::Done => -1,
        };
    }
    open.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(key, _)| key)
        .collect()
}

// ---------------------------------------------------------------------------------
// 2. PostgreSQL is gone for longer than the lease TTL; LISTEN wake-ups after a reconnect.

/// Three lease TTLs. Every database call is then still waiting for a connection (the
/// pool's acquire timeout is 10 s) when the server returns, so the worker may log nothing
/// at all; it must not flood, and must recover.
#[test]
fn postgres_outage_longer_than_lease_recovers_without_log_flood() {
    postgres_outage(Duration::from_secs(6), false);
}

/// Longer than the pool's acquire timeout: claims, lease renewals and group commits fail
/// while the server is down, and must be reported as failing until it is back.
#[test]
fn postgres_long_outage_reports_one_line_per_interval_and_recovery_only_when_back() {
    postgres_outage(Duration::from_secs(25), true);
}

fn postgres_outage(outage_len: Duration, must_report: bool) {
    let cluster = PgCluster::start();
    let env = TestEnv::sqlite();
    let db = Db::new(&env, cluster.url());
    db.cli_ok(&["migrate"]);
    let ledger = env.ledger_path();
    let steps: Vec<Value> = ["s1", "s2", "s3"]
        .iter()
        .map(|key| ledger_step(&ledger, key, "sleep 1"))
        .collect();
    // The default Postgres poll interval (60 s): wake-ups come from LISTEN/NOTIFY.
    let mut worker = listen_driven_worker(&env, &db);
    let mut runs: Vec<String> = (0..4)
        .map(|_| db.start_shell(&json!({ "steps": steps })))
        .collect();
    wait_for("a first step to finish", LONG, || {
        env.ledger()
            .entries
            .iter()
            .any(|e| e.mark == morpheus_tests::Mark::Done)
            .then_some(())
    });

    let down_at = worker.stderr().len();
    let down = Instant::now();
    cluster.stop();
    // The CLI while the database is down: must fail fast, naming the cause.
    let (sender, receiver) = mpsc::channel();
    {
        let mut command = env.command_for(&db.url);
        command.args([
            "start",
            "shell",
            "--input",
            r#"{"steps":[{"name":"x","run":"true"}]}"#,
        ]);
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = CliOutput::from_command(&mut command);
            let _ = sender.send((out, started.elapsed()));
        });
    }
    std::thread::sleep(outage_len.saturating_sub(down.elapsed()));
    let cli_during_outage = receiver.try_recv();
    let up_at = worker.stderr().len();
    let outage = down.elapsed();
    cluster.start_again();
    let back = Instant::now();

    let (out, cli_took) = cli_during_outage.unwrap_or_else(|_| {
        panic!(
            "`morpheus start` against the stopped server was still running after {outage:?} \
             (it should fail fast with the connection error)"
        )
    });
    assert_one_line_error(
        &out,
        "morpheus start while PostgreSQL is down",
        &["refused", "connect"],
    );
    eprintln!("(it failed after {cli_took:?})");

    let during = stderr_between(&worker, down_at, up_at);
    let during = lines(&during);
    eprintln!(
        "worker stderr during the {outage:?} outage ({} lines):\n  {}",
        during.len(),
        during.join("\n  ")
    );
    let budget = (3.0 * outage.as_secs_f64()).ceil() as usize;
    assert!(
        during.len() <= budget,
        "log flood: {} lines in a {outage:?} outage (budget {budget}, 3 per second)",
        during.len()
    );
    let reported = during.iter().any(|l| l.contains("database unavailable"));
    if must_report {
        for what in ["claim", "lease renewal", "group commit"] {
            assert!(
                during
                    .iter()
                    .any(|l| l.contains("database unavailable") && l.contains(what)),
                "no 'database unavailable' line for {what} during a {outage:?} outage"
            );
        }
    }
    let false_recovery: Vec<&str> = during
        .iter()
        .copied()
        .filter(|l| l.contains("reachable again"))
        .collect();
    assert!(
        false_recovery.is_empty(),
        "the worker reported a recovery while the server was still down (its stderr above): \
         {false_recovery:#?}"
    );

    wait_for("every old run to complete", LONG, || {
        runs.iter()
            .all(|run| db.show(run)["run"]["status"] == "completed")
            .then_some(())
    });
    let recovered_in = back.elapsed();
    let after = worker.stderr()[up_at..].to_owned();
    eprintln!(
        "old runs completed {recovered_in:?} after the server was up; worker stderr since:\n  {}",
        lines(&after).join("\n  ")
    );
    if reported {
        assert!(
            after.contains("reachable again"),
            "the worker reported the outage but not the recovery"
        );
    }

    let (new_runs, pickup) = start_and_time_pickup(&env, &db, &steps, 2, || ());
    eprintln!("{pickup}");
    runs.extend(new_runs);
    wait_for("every run (old and new) to complete", LONG, || {
        let statuses = db.statuses();
        for status in statuses.values() {
            assert!(
                !["failed", "cancelled"].contains(&status.as_str()),
                "a run ended {status}: {statuses:?}"
            );
        }
        (statuses.len() == runs.len() && statuses.values().all(|s| s == "completed")).then_some(())
    });
    eprintln!(
        "all {} runs completed {:?} after the server came back",
        runs.len(),
        back.elapsed()
    );
    for run in &runs {
        let shown = db.show(run);
        assert_eq!(steps_of(&shown).len(), 3, "{shown:#}");
    }
    let exit = worker.try_exit();
    assert!(
        exit.is_none(),
        "the worker exited ({exit:?}):\n{}",
        worker.stderr()
    );
}

/// How long new runs took to start, and when the worker's LISTEN session was there.
struct Pickup {
    took: Duration,
    listening_before: bool,
    listening_at: Option<Duration>,
}

impl std::fmt::Display for Pickup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "new runs started {:?} after `morpheus start`; LISTEN session present before: {}, \
             seen {:?} after",
            self.took, self.listening_before, self.listening_at
        )
    }
}

/// Starts `count` runs of `steps`, calls `meanwhile`, then waits until each run has
/// started its `s1`, watching pg_stat_activity for the worker's LISTEN session.
fn start_and_time_pickup(
    env: &TestEnv,
    db: &Db,
    steps: &[Value],
    count: usize,
    meanwhile: impl FnOnce(),
) -> (Vec<String>, Pickup) {
    // One runtime for the connection's whole life (it is bound to the runtime it was
    // made on).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut admin = runtime
        .block_on(sqlx::PgConnection::connect(&db.url))
        .expect("connect");
    let mut listening = || -> bool {
        runtime
            .block_on(
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM pg_stat_activity
                     WHERE pid <> pg_backend_pid() AND query ILIKE 'LISTEN %morpheus_runs%'",
                )
                .fetch_one(&mut admin),
            )
            .expect("query pg_stat_activity")
            > 0
    };
    let listening_before = listening();
    let started = Instant::now();
    let runs: Vec<String> = (0..count)
        .map(|_| db.start_shell(&json!({ "steps": steps })))
        .collect();
    meanwhile();
    let mut listening_at = listening_before.then_some(Duration::ZERO);
    let took = wait_for("the new runs to start", LONG, || {
        if listening_at.is_none() && listening() {
            listening_at = Some(started.elapsed());
        }
        let ledger = env.ledger();
        runs.iter()
            .all(|run| !ledger.starts(run, "s1").is_empty())
            .then(|| started.elapsed())
    });
    (
        runs,
        Pickup {
            took,
            listening_before,
            listening_at,
        },
    )
}

/// A worker on the default Postgres poll interval (60 s): its wake-ups come from
/// LISTEN/NOTIFY.
fn listen_driven_worker(env: &TestEnv, db: &Db) -> WorkerProcess {
    env.spawn_worker(
        "W",
        &[
            "--database-url",
            &db.url,
            "--lease-ttl",
            "2s",
            "--heartbeat",
            "500ms",
            "--worker-id",
            "fault-W",
            "--concurrency",
            "8",
        ],
    )
}

/// The worker's LISTEN session ends with a clean EOF and its reconnects are refused for
/// a second (a pooler or load balancer in between restarts); its other sessions are
/// untouched. A run started meanwhile sends a NOTIFY nobody hears. Once the listener is
/// back the worker must look for work (within 2 s of its LISTEN session reappearing in
/// pg_stat_activity), not wait for its 60 s poll.
#[test]
fn postgres_wakeup_sent_while_listener_reconnects_is_not_lost() {
    let cluster = PgCluster::start();
    let env = TestEnv::sqlite();
    let db = Db::new(&env, cluster.url());
    db.cli_ok(&["migrate"]);
    let proxy = TcpProxy::start(cluster.port());
    let via_proxy = Db::new(
        &env,
        format!("postgres://morpheus@127.0.0.1:{}/postgres", proxy.port()),
    );
    let worker = listen_driven_worker(&env, &via_proxy);
    let ledger = env.ledger_path();
    let steps = vec![ledger_step(&ledger, "s1", "true")];
    std::thread::sleep(Duration::from_millis(500));
    let (_, baseline) = start_and_time_pickup(&env, &db, &steps, 1, || ());
    eprintln!("before: {baseline}");
    assert!(
        baseline.took < Duration::from_secs(2),
        "LISTEN wake-ups do not work in the first place: {baseline}"
    );

    proxy.set_accepting(false);
    // `up` listens three times: for wake-ups (`morpheus_runs`), for the change feed that
    // drives heartbeat pings (`morpheus_feed`) and for schedule changes
    // (`morpheus_schedules`). All are cut; the wake-up one matters here.
    assert_eq!(
        proxy.cut_listener_sessions(),
        3,
        "expected the wake-up, change-feed and schedule LISTEN sessions"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (_, pickup) = start_and_time_pickup(&env, &db, &steps, 1, || {
        std::thread::sleep(Duration::from_secs(1));
        proxy.set_accepting(true);
    });
    eprintln!("LISTEN session cut, reconnects refused for 1.5 s: {pickup}");
    let log = worker.stderr();
    if std::env::var_os("FAULTS_DUMP").is_some() {
        eprintln!("{log}");
    }
    let limit = pickup.listening_at.unwrap_or(pickup.took) + Duration::from_secs(2);
    assert!(
        pickup.took < limit,
        "{pickup} (poll interval 60 s): the NOTIFY sent while the listener was reconnecting \
         was lost, and nothing looked for work once it listened again.\nworker stderr:\n{log}"
    );
}

// ---------------------------------------------------------------------------------
// 3. SQLite: read-only file system, full disk.

fn mount_tmpfs(size: &str) -> Tmpfs {
    Tmpfs::mount(size).unwrap_or_else(|why| {
        panic!(
            "these tests put the SQLite file on a tmpfs to make it read-only or full, and \
             cannot here: {why}"
        )
    })
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("morpheus.db").display())
}

/// `PRAGMA integrity_check` on a SQLite file.
fn integrity_check(url: &str) -> String {
    let url = url.to_owned();
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(result)
    })
    .expect("PRAGMA integrity_check")
}

/// The parts of a run that must not change: status, output, and its steps' results.
fn snapshot(db: &Db, run: &str) -> Value {
    let shown = db.show(run);
    let steps: Vec<Value> = steps_of(&shown)
        .iter()
        .map(|s| json!([s["step_key"], s["status"], s["output"]]))
        .collect();
    json!({
        "status": shown["run"]["status"],
        "output": shown["run"]["output"],
        "steps": steps,
    })
}

/// Waits up to `timeout` for `worker` to exit; its exit status, or `None` if it is still
/// running.
fn exit_within(worker: &mut WorkerProcess, timeout: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) = worker.try_exit() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.try_exit()
}

fn mentions_any(text: &str, needles: &[&str]) -> bool {
    let text = text.to_lowercase();
    needles.iter().any(|needle| text.contains(needle))
}

/// The issue's requirement for a read-only or full SQLite file: a clear error naming the
/// cause and a non-zero exit (checked last, after the data-safety checks).
fn assert_exits_with_clear_error(
    what: &str,
    exit: Option<std::process::ExitStatus>,
    waited: Duration,
    log: &str,
    needles: &[&str],
    after: &str,
) {
    let status = exit.unwrap_or_else(|| {
        panic!(
            "{what}: `morpheus up` was still running {waited:?} later (expected: a clear error \
             naming the cause and a non-zero exit; it treats the error as a passing outage). \
             Its stderr names the cause: {}. {after}\nstderr:\n{log}",
            mentions_any(log, needles)
        )
    });
    assert!(!status.success(), "{what}: `morpheus up` exited 0:\n{log}");
    assert!(
        mentions_any(log, needles),
        "{what}: `morpheus up` exited ({status}) without naming the cause ({needles:?}):\n{log}"
    );
}

const READ_ONLY: &[&str] = &["read-only", "readonly", "unable to open"];

/// `morpheus start` and `morpheus up` on the (now read-only) file; what went wrong, if
/// anything, is added to `problems`.
fn read_only_attempt(db: &Db, state: &str, problems: &mut Vec<String>) {
    let out = db.cli(&[
        "start",
        "shell",
        "--input",
        r#"{"steps":[{"name":"x","run":"true"}]}"#,
    ]);
    let stderr = out.stderr_lines();
    eprintln!("[{state}] start: {} {:?}", out.status, out.stderr);
    if out.status.success() {
        problems.push(format!("[{state}] start exited 0 on a read-only file"));
    } else if stderr.len() != 1 || !stderr[0].starts_with("error: ") {
        problems.push(format!(
            "[{state}] start: stderr is not one `error: …` line: {:?}",
            out.stderr
        ));
    } else if !mentions_any(stderr[0], READ_ONLY) {
        problems.push(format!(
            "[{state}] start: the error does not name the cause: {}",
            stderr[0]
        ));
    } else {
        // The SQLite message itself, e.g. "(code: 8) attempt to write a readonly database".
        let line = stderr[0];
        if let Some(at) = line.rfind("(code: ") {
            let cause = &line[at..];
            let repeats = line.matches(cause).count();
            if repeats > 1 {
                problems.push(format!(
                    "[{state}] start: the one-line error repeats its cause {repeats} times: {line}"
                ));
            }
        }
    }

    let waited = Duration::from_secs(10);
    let mut up = db.spawn_worker(&format!("ro-{}", state.len()), &[]);
    let exit = exit_within(&mut up, waited);
    // Still running: stop it before the file is writable again.
    up.kill();
    let log = up.stderr();
    eprintln!("[{state}] up: exit {exit:?} within {waited:?}; stderr:\n{log}");
    match exit {
        None => problems.push(format!(
            "[{state}] `morpheus up` was still running {waited:?} after it started (expected: \
             a clear error and a non-zero exit); it retries as if the database were \
             temporarily unavailable. Last line: {}",
            lines(&log).last().copied().unwrap_or_default()
        )),
        Some(status) if status.success() => {
            problems.push(format!(
                "[{state}] `morpheus up` exited 0 on a read-only file"
            ));
        }
        Some(status) if !mentions_any(&log, READ_ONLY) => problems.push(format!(
            "[{state}] `morpheus up` exited ({status}) without naming the cause:\n{log}"
        )),
        Some(_) => {}
    }
}

fn wal_state(dir: &Path) -> &'static str {
    if dir.join("morpheus.db-wal").exists() {
        "-wal present"
    } else {
        "no -wal"
    }
}

#[test]
fn sqlite_read_only_database_is_a_clear_error_and_nothing_is_damaged() {
    let fs = mount_tmpfs("16m");
    let env = TestEnv::sqlite();
    let db = Db::new(&env, sqlite_url(fs.path()));
    db.cli_ok(&["migrate"]);
    let done = db.start_shell(&json!({"steps": [
        {"name": "a", "run": "echo one"},
        {"name": "b", "run": "echo two"},
    ]}));
    let pending = db.cli_json(&[
        "start",
        "shell",
        "--queue",
        "later",
        "--json",
        "--input",
        r#"{"steps":[{"name":"a","run":"echo later"}]}"#,
    ])["run_id"]
        .as_str()
        .expect("run_id")
        .to_owned();
    let mut worker = db.spawn_worker("W", &["--queue", "default"]);
    wait_for("the first run to complete", LONG, || {
        (db.show(&done)["run"]["status"] == "completed").then_some(())
    });
    let before = [snapshot(&db, &done), snapshot(&db, &pending)];
    assert_eq!(before[1]["status"], "pending", "{before:?}");
    // SIGKILL: no clean close, so -wal and -shm stay behind (as after a crash).
    worker.kill();
    let mut problems = Vec::new();

    let state = format!("after a crash, {}", wal_state(fs.path()));
    fs.remount("ro");
    read_only_attempt(&db, &state, &mut problems);
    fs.remount("rw");
    let after = [snapshot(&db, &done), snapshot(&db, &pending)];
    assert_eq!(before, after, "a run changed while the file was read-only");

    // The state after a clean shutdown: everything checkpointed into the main file, no
    // -wal or -shm (what SQLite leaves when the last connection closes cleanly; done by
    // hand here because whether the CLI's last close does it varies).
    let url = db.url.clone();
    let (busy, wal_frames): (i64, i64) = block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        let row: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>((row.0, row.1))
    })
    .expect("checkpoint the database");
    assert_eq!(
        (busy, wal_frames),
        (0, 0),
        "wal_checkpoint(TRUNCATE) left frames behind"
    );
    for suffix in ["-wal", "-shm"] {
        let path = fs.path().join(format!("morpheus.db{suffix}"));
        if path.exists() {
            std::fs::remove_file(&path).expect("remove the checkpointed -wal/-shm");
        }
    }
    let state = format!("after a clean shutdown, {}", wal_state(fs.path()));
    fs.remount("ro");
    read_only_attempt(&db, &state, &mut problems);
    fs.remount("rw");

    let after = [snapshot(&db, &done), snapshot(&db, &pending)];
    assert_eq!(before, after, "a run changed while the file was read-only");
    assert_eq!(db.statuses().len(), 2, "{:?}", db.statuses());
    assert_eq!(integrity_check(&db.url), "ok");
    // And it is writable again.
    db.cli_ok(&[
        "start",
        "shell",
        "--input",
        r#"{"steps":[{"name":"x","run":"true"}]}"#,
    ]);
    eprintln!("after remount,rw: both runs intact, integrity_check ok, writable");

    assert!(
        problems.is_empty(),
        "read-only SQLite file (nothing was damaged; checked above):\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn sqlite_disk_full_is_a_clear_error_and_committed_runs_survive() {
    const FULL: &[&str] = &["full", "no space"];
    let fs = mount_tmpfs("2m");
    let env = TestEnv::sqlite();
    let db = Db::new(&env, sqlite_url(fs.path()));
    db.cli_ok(&["migrate"]);
    let mut worker = db.spawn_worker("W", &["--concurrency", "4"]);
    let small: Vec<String> = (0..3)
        .map(|i| {
            db.start_shell(&json!({"steps": [
                {"name": "a", "run": format!("echo small {i}")},
                {"name": "b", "run": "echo b"},
            ]}))
        })
        .collect();
    wait_for("the small runs to complete", LONG, || {
        small
            .iter()
            .all(|run| db.show(run)["run"]["status"] == "completed")
            .then_some(())
    });
    let before: Vec<Value> = small.iter().map(|run| snapshot(&db, run)).collect();

    // Each step writes 60,000 log lines: far more than 2 MB of rows.
    let chatty = "yes line | head -c 300000";
    let heavy: Vec<String> = (0..3)
        .map(|_| {
            db.start_shell(&json!({"steps": [
                {"name": "a", "run": chatty},
                {"name": "b", "run": chatty},
            ]}))
        })
        .collect();
    let waited = Duration::from_secs(20);
    let exit = exit_within(&mut worker, waited);
    let log = worker.stderr();
    let full_at = log.len();
    eprintln!(
        "worker {waited:?} after the heavy runs started: exit {exit:?}; stderr:\n  {}",
        lines(&log).join("\n  ")
    );
    let df = std::process::Command::new("df")
        .arg(fs.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    eprintln!("{df}");
    // The CLI on the full disk: if a write fails, it says why in one line (a small insert
    // may still fit in pages SQLite already owns).
    let out = db.cli(&[
        "start",
        "shell",
        "--input",
        r#"{"steps":[{"name":"x","run":"true"}]}"#,
    ]);
    eprintln!(
        "start on the full disk: {} stdout={:?} stderr={:?}",
        out.status, out.stdout, out.stderr
    );
    if !out.status.success() {
        assert_one_line_error(&out, "start on a full disk", FULL);
    }

    fs.remount("size=64m");
    // A worker still running should at least recover once there is room again.
    let recovered = exit.is_none()
        && (|| {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(12) {
                if worker.stderr()[full_at..].contains("reachable again") {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })();
    let since = worker.stderr()[full_at..].to_owned();
    worker.kill();
    eprintln!(
        "after enlarging the disk: worker recovered={recovered}; stderr since:\n  {}",
        lines(&since).join("\n  ")
    );
    let statuses = db.statuses();
    eprintln!("runs after enlarging: {statuses:?}");
    let after: Vec<Value> = small.iter().map(|run| snapshot(&db, run)).collect();
    assert_eq!(
        before, after,
        "a run completed before the disk filled changed"
    );
    for run in &heavy {
        assert!(
            statuses.contains_key(run),
            "run {run} vanished: {statuses:?}"
        );
    }
    assert_eq!(integrity_check(&db.url), "ok");
    eprintln!("completed runs intact, integrity_check ok");

    let after_note = if exit.is_some() {
        String::new()
    } else if recovered {
        "It did recover once the disk was enlarged.".to_owned()
    } else {
        "Nor did it recover within 12 s once the disk was enlarged to 64 MB.".to_owned()
    };
    assert_exits_with_clear_error("full disk", exit, waited, &log, FULL, &after_note);
}
