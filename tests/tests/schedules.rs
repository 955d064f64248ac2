//! Schedules end to end: the real `morpheus up` processes run the scheduler; two of them
//! on one Postgres start exactly one run per tick; bad definitions are one-line errors
//! that store nothing; `[[schedules]]` in the config file are synced on start.

use std::collections::HashMap;
use std::time::Duration;

use morpheus_tests::{both_backends, ledger_step, wait_for, Backend, TestEnv, FAST_LEASES};
use serde_json::{json, Value};

fn every_second_schedule(env: &TestEnv, name: &str) {
    let input = json!({"steps": [ledger_step(&env.ledger_path(), "tick", "true")]});
    env.cli_ok(&[
        "schedules",
        "add",
        name,
        "--workflow",
        "shell",
        "--input",
        &input.to_string(),
        "--every",
        "1s",
        "--overlap",
        "allow",
    ]);
}

/// Every tick's run has its own idempotency key `schedule:{name}:{tick}`: counting runs
/// per key shows whether any tick started twice.
fn assert_one_run_per_tick(runs: &[Value]) {
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for run in runs {
        let key = run["idempotency_key"]
            .as_str()
            .expect("scheduled runs have a key");
        *per_key.entry(key).or_default() += 1;
    }
    assert!(
        per_key.values().all(|count| *count == 1),
        "a tick started more than one run: {per_key:?}"
    );
}

fn two_schedulers_start_one_run_per_tick(backend: Backend) {
    let env = TestEnv::new(backend);
    every_second_schedule(&env, "heartbeat");
    let _a = env.spawn_worker("a", FAST_LEASES);
    let _b = env.spawn_worker("b", FAST_LEASES);
    let runs = wait_for(
        "5 scheduled runs to complete",
        Duration::from_secs(30),
        || {
            let runs = env.schedule_runs("heartbeat");
            let done = runs.iter().filter(|r| r["status"] == "completed").count();
            (done >= 5).then_some(runs)
        },
    );
    assert_one_run_per_tick(&runs);
    // Every completed run executed its step exactly once.
    let ledger = env.ledger();
    for run in runs.iter().filter(|r| r["status"] == "completed") {
        let id = run["id"].as_str().unwrap();
        assert_eq!(ledger.starts(id, "tick").len(), 1, "run {id}");
    }
    let listed = env.cli_json(&["schedules", "list", "--json"]);
    assert_eq!(listed[0]["name"], "heartbeat");
    assert!(listed[0]["last_run_id"].is_string());
}

#[test]
fn paused_schedule_starts_nothing_until_resumed() {
    let env = TestEnv::sqlite();
    every_second_schedule(&env, "paused");
    env.cli_ok(&["schedules", "pause", "paused"]);
    let _worker = env.spawn_worker("w", FAST_LEASES);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(env.schedule_runs("paused").is_empty());
    env.cli_ok(&["schedules", "resume", "paused"]);
    wait_for("a run after resume", Duration::from_secs(10), || {
        let runs = env.schedule_runs("paused");
        (!runs.is_empty()).then_some(())
    });
    env.cli_ok(&["schedules", "delete", "paused"]);
    let listed = env.cli_json(&["schedules", "list", "--json"]);
    assert_eq!(listed, json!([]));
}

#[test]
fn bad_schedule_definitions_are_one_line_errors_that_store_nothing() {
    let env = TestEnv::sqlite();
    env.cli_ok(&["migrate"]);
    let input = json!({"steps": [{"name": "a", "run": "true"}]}).to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--workflow",
                "shell",
                "--input",
                &input,
                "--cron",
                "61 * * * *",
            ],
            "invalid cron expression",
        ),
        (
            vec![
                "--workflow",
                "shell",
                "--input",
                &input,
                "--cron",
                "every day",
            ],
            "expected 5 fields",
        ),
        (
            vec!["--workflow", "shell", "--input", &input, "--every", "soon"],
            "invalid interval",
        ),
        (
            vec!["--workflow", "shell", "--input", &input, "--every", "10ms"],
            "too short",
        ),
        (
            vec!["--workflow", "nope", "--input", &input, "--every", "30s"],
            "unknown workflow 'nope'",
        ),
        (
            vec![
                "--workflow",
                "shell",
                "--input",
                "{\"steps\":[]}",
                "--every",
                "30s",
            ],
            "at least one step",
        ),
        (
            vec![
                "--workflow",
                "shell",
                "--input",
                &input,
                "--cron",
                "0 9 * * *",
                "--timezone",
                "Mars/Base",
            ],
            "unknown time zone",
        ),
        (
            vec![
                "--workflow",
                "shell",
                "--input",
                &input,
                "--every",
                "30s",
                "--overlap",
                "sometimes",
            ],
            "overlap",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["schedules", "add", "bad"];
        full.extend(args.iter().copied());
        let out = env.cli(&full);
        assert!(!out.status.success(), "{full:?} was accepted");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "one line for {full:?}: {lines:?}");
        assert!(
            lines[0].starts_with("error:") && lines[0].contains(expected),
            "{full:?}: expected '{expected}' in {lines:?}"
        );
    }
    assert_eq!(env.cli_json(&["schedules", "list", "--json"]), json!([]));

    // A duplicate name is refused and the first definition stands.
    env.cli_ok(&[
        "schedules",
        "add",
        "dup",
        "--workflow",
        "shell",
        "--input",
        &input,
        "--every",
        "30s",
    ]);
    let out = env.cli(&[
        "schedules",
        "add",
        "dup",
        "--workflow",
        "shell",
        "--input",
        &input,
        "--every",
        "1m",
    ]);
    assert!(!out.status.success());
    assert_eq!(out.stderr_lines().len(), 1);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let listed = env.cli_json(&["schedules", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["trigger"]["every"]["every_ms"], 30_000);
}

#[test]
fn config_file_schedules_are_synced_on_start() {
    let env = TestEnv::sqlite();
    let ledger = env.ledger_path();
    let step = ledger_step(&ledger, "tick", "true");
    let config = format!(
        "[[schedules]]\nname = \"from-config\"\nworkflow = \"shell\"\nevery = \"1s\"\noverlap = \"allow\"\ninput = {}\n",
        toml_inline(&json!({"steps": [step]}))
    );
    let path = env.path("morpheus.toml");
    std::fs::write(&path, config).unwrap();
    let path_text = path.display().to_string();
    let mut args = vec!["--config", path_text.as_str()];
    args.extend(FAST_LEASES);
    let _worker = env.spawn_worker("w", &args);
    wait_for(
        "a run of the configured schedule",
        Duration::from_secs(15),
        || {
            // Until the worker has synced the file, the schedule does not exist yet.
            let out = env.cli(&["schedules", "runs", "from-config", "--json"]);
            if !out.status.success() {
                return None;
            }
            let runs: Value = serde_json::from_str(&out.stdout).ok()?;
            runs.as_array()?
                .iter()
                .any(|r| r["status"] == "completed")
                .then_some(())
        },
    );

    // A config naming an unknown workflow stops `up` with one line, before any write.
    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        "[[schedules]]\nname = \"x\"\nworkflow = \"nope\"\nevery = \"30s\"\n",
    )
    .unwrap();
    let out = env.cli(&["--config", &bad.display().to_string(), "up"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("unknown workflow 'nope'"),
        "{}",
        out.stderr
    );
    let names: Vec<String> = env
        .cli_json(&["schedules", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["from-config"]);
}

/// A JSON value as a TOML inline value.
fn toml_inline(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{key} = {}", toml_inline(value)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_inline).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

// Every body above that takes a `Backend`, as `sqlite::<name>` and `postgres::<name>`.
both_backends! {
    two_schedulers_start_one_run_per_tick => two_schedulers_start_one_run_per_tick,
}
