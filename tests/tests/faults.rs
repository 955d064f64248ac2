//! Database faults: a private PostgreSQL cluster restarted or stopped under load, and a
//! SQLite file that turns read-only or whose disk fills up (tmpfs mounts; tests run as
//! root). The shared test server is never touched: every Postgres test here gets its own
//! throwaway cluster ([`PgCluster`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use morpheus_tests::pg_cluster::{PgCluster, Tmpfs};
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
// 2. PostgreSQL is gone for three lease TTLs.

#[test]
fn postgres_outage_longer_than_lease_recovers_without_log_flood() {
    const OUTAGE: Duration = Duration::from_secs(6);
    let cluster = PgCluster::start();
    let env = TestEnv::sqlite();
    let db = Db::new(&env, cluster.url());
    db.cli_ok(&["migrate"]);
    let ledger = env.ledger_path();
    let steps: Vec<Value> = ["s1", "s2", "s3"]
        .iter()
        .map(|key| ledger_step(&ledger, key, "sleep 1"))
        .collect();
    let mut worker = db.spawn_worker("W", &["--concurrency", "8"]);
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
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
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

    wait_for("the worker to log that the database is back", LONG, || {
        worker.stderr()[up_at..]
            .contains("reachable again")
            .then_some(())
    });
    eprintln!(
        "worker logged \"reachable again\" {:?} after the server was up; lines since:\n  {}",
        back.elapsed(),
        lines(&worker.stderr()[up_at..]).join("\n  ")
    );
    runs.extend((0..2).map(|_| db.start_shell(&json!({ "steps": steps }))));
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
    let mut worker = db.spawn_worker("W", &[]);
    wait_for("the first run to complete", LONG, || {
        (db.show(&done)["run"]["status"] == "completed").then_some(())
    });
    worker.terminate();
    assert!(worker.wait_exit(LONG).success(), "{}", worker.stderr());
    let pending = db.start_shell(&json!({"steps": [{"name": "a", "run": "echo later"}]}));
    let before = [snapshot(&db, &done), snapshot(&db, &pending)];
    eprintln!(
        "files before remount,ro: {:?}",
        std::fs::read_dir(fs.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );

    fs.remount("ro");
    let out = db.cli(&[
        "start",
        "shell",
        "--input",
        r#"{"steps":[{"name":"x","run":"true"}]}"#,
    ]);
    assert_one_line_error(
        &out,
        "start on a read-only file",
        &["read-only", "readonly"],
    );

    let mut up = db.spawn_worker("ro", &[]);
    let exited = (|| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Some(status) = up.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })();
    let up_log = up.stderr();
    eprintln!("morpheus up on a read-only file ({exited:?}):\n{up_log}");
    let status = exited.unwrap_or_else(|| {
        panic!("morpheus up on a read-only database file was still running after 15 s:\n{up_log}")
    });
    assert!(
        !status.success(),
        "morpheus up exited 0 on a read-only file"
    );
    let errors: Vec<&str> = lines(&up_log)
        .into_iter()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("read-only") || l.contains("readonly")
        })
        .collect();
    assert!(
        !errors.is_empty(),
        "morpheus up's stderr does not say the database is read-only:\n{up_log}"
    );

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
    drop(env);
}

#[test]
fn sqlite_disk_full_is_a_clear_error_and_committed_runs_survive() {
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
    let filling = Instant::now();
    let chatty = "yes line | head -c 300000";
    let heavy: Vec<String> = (0..3)
        .map(|_| {
            db.start_shell(&json!({"steps": [
                {"name": "a", "run": chatty},
                {"name": "b", "run": chatty},
            ]}))
        })
        .collect();
    let said_full = |log: &str| {
        let log = log.to_lowercase();
        log.contains("full") || log.contains("no space")
    };
    let outcome = (|| {
        while filling.elapsed() < Duration::from_secs(30) {
            if let Some(status) = worker.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })();
    let log = worker.stderr();
    let log_lines = lines(&log);
    eprintln!(
        "worker after {:?} of filling the disk: exit {outcome:?}, {} stderr lines; last ones:\n  {}",
        filling.elapsed(),
        log_lines.len(),
        log_lines[log_lines.len().saturating_sub(12)..].join("\n  ")
    );
    let df = std::process::Command::new("df")
        .arg(fs.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    eprintln!("{df}");
    // The CLI on a full disk: a write fails with a clear error (reads may still work).
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
        assert_one_line_error(&out, "start on a full disk", &["full", "space"]);
    }

    let status = outcome.unwrap_or_else(|| {
        panic!(
            "30 s after its disk filled up the worker is still running (expected: a clear \
             error and a non-zero exit); said the disk is full: {}",
            said_full(&log)
        )
    });
    assert!(!status.success(), "the worker exited 0 on a full disk");
    assert!(
        said_full(&log),
        "the worker exited ({status}) without saying the disk is full:\n{log}"
    );

    fs.remount("size=64m");
    let statuses = db.statuses();
    eprintln!("after enlarging: {statuses:?}");
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
}
