//! Extensions end to end: `morpheus up` loads `[[extensions]]` from its config file and
//! the `pipeline` workflow calls them. A Python program over stdio and the same program
//! as an HTTP JSON-RPC service make an effect (a ledger line keyed by the step's
//! idempotency key); SIGKILLing the extension mid-call, or the worker itself, never
//! applies it twice, and the run completes.

use std::path::Path;
use std::time::Duration;

use morpheus_tests::extensions::{conformance_script, wasm_plugin, ConformanceService};
use morpheus_tests::{wait_for, Backend, TestEnv, WorkerProcess, FAST_LEASES};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

fn stdio_entry(name: &str) -> String {
    format!(
        "[[extensions]]\nname = \"{name}\"\nprotocol = \"stdio\"\n\
         source = {{ type = \"process\", command = \"python3\", args = [\"{}\"] }}\n\
         restart = {{ strategy = \"immediate\", max_retries = 5 }}\n",
        conformance_script().display()
    )
}

fn write_config(env: &TestEnv, text: &str) -> String {
    let path = env.path("morpheus.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn spawn(env: &TestEnv, name: &str, config: &str) -> WorkerProcess {
    let mut args = vec!["--config", config];
    args.extend(FAST_LEASES);
    env.spawn_worker(name, &args)
}

fn start_pipeline(env: &TestEnv, input: &Value) -> String {
    let started = env.cli_json(&["start", "pipeline", "--input", &input.to_string(), "--json"]);
    started["run_id"].as_str().expect("a run id").to_owned()
}

/// A charge that holds for a while (so it can be killed mid-call), then a step that
/// reads its output through a reference.
fn charge_pipeline(executor: &str, ledger: &Path, hold_ms: u64) -> Value {
    json!({"steps": [
        {"name": "charge", "executor": executor, "method": "ledger",
         "params": {"path": ledger, "hold_ms": hold_ms},
         "retry": {"max_attempts": 5, "initial_delay_ms": 200}},
        {"name": "report", "executor": executor, "method": "echo",
         "params": {"applied": "${steps.charge.output.applied}",
                    "note": "charged ${steps.charge.output.key}"}}
    ]})
}

/// `(pid, idempotency key, attempt)` of every `ledger` call that reached its hold.
fn calls(ledger: &Path) -> Vec<(i32, String, u32)> {
    let path = format!("{}.calls", ledger.display());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let fields: Vec<_> = line.split(' ').collect();
            (
                fields[0].parse().unwrap(),
                fields[1].to_owned(),
                fields[2].parse().unwrap(),
            )
        })
        .collect()
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn is_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn assert_charged_once(env: &TestEnv, run: &str, ledger: &Path) -> Value {
    let shown = env.wait_for_status(run, "completed", Duration::from_secs(60));
    let key = format!("{run}/charge");
    assert_eq!(
        ledger_lines(ledger),
        vec![key.clone()],
        "the effect is applied once"
    );
    let output = &shown["run"]["output"]["steps"];
    assert_eq!(
        output[1]["output"]["params"]["note"],
        format!("charged {key}")
    );
    shown
}

#[test]
fn a_stdio_extension_killed_mid_call_is_restarted_and_the_effect_applied_once() {
    let env = TestEnv::sqlite();
    let config = write_config(&env, &stdio_entry("ledger"));
    let worker = spawn(&env, "w1", &config);
    let ledger = env.path("effects.ledger");
    let run = start_pipeline(&env, &charge_pipeline("ledger", &ledger, 2000));
    let (pid, key, attempt) = wait_for(
        "the charge to be in flight",
        Duration::from_secs(30),
        || calls(&ledger).first().cloned(),
    );
    assert_eq!(key, format!("{run}/charge"));
    assert_eq!(attempt, 1);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let shown = assert_charged_once(&env, &run, &ledger);
    let calls = calls(&ledger);
    assert_eq!(calls.len(), 2, "one retry after the crash: {calls:?}");
    assert_eq!(
        calls[1].1, key,
        "the retry carries the same idempotency key"
    );
    assert_eq!(calls[1].2, 2, "as the step's second attempt");
    assert_ne!(calls[1].0, pid, "a new extension process made it");
    let charge = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step_key"] == "charge")
        .expect("the charge step");
    assert_eq!(charge["attempts"], 2, "{charge}");
    assert_eq!(
        shown["run"]["output"]["steps"][1]["output"]["params"]["applied"],
        true
    );

    // The worker reports the restart, and a direct call works from the CLI.
    let report = wait_for("a report with the restart", Duration::from_secs(20), || {
        let listed = env.cli_json(&["--config", &config, "extensions", "list", "--json"]);
        let worker = listed["extensions"][0]["workers"][0].clone();
        (worker["restarts"] == 1 && worker["calls"].as_u64() >= Some(3)).then_some(worker)
    });
    assert_eq!(report["state"], "ready");
    assert_eq!(report["protocol"], "stdio");
    let answer = env.cli_ok(&[
        "--config",
        &config,
        "extensions",
        "call",
        "ledger",
        "echo",
        "--params",
        r#"{"a":1}"#,
    ]);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["params"], json!({"a": 1}));
    drop(worker);
}

#[test]
fn a_worker_killed_mid_call_reruns_the_step_with_the_same_key() {
    let env = TestEnv::new(Backend::Postgres);
    let config = write_config(&env, &stdio_entry("ledger"));
    let mut first = spawn(&env, "w1", &config);
    let ledger = env.path("effects.ledger");
    let run = start_pipeline(&env, &charge_pipeline("ledger", &ledger, 2000));
    let (pid, key, _) = wait_for(
        "the charge to be in flight",
        Duration::from_secs(30),
        || calls(&ledger).first().cloned(),
    );
    first.kill();
    wait_for(
        "the extension to die with its worker",
        Duration::from_secs(5),
        || (!is_alive(pid)).then_some(()),
    );
    let _second = spawn(&env, "w2", &config);
    assert_charged_once(&env, &run, &ledger);
    let calls = calls(&ledger);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls.iter().all(|call| call.1 == key),
        "same key: {calls:?}"
    );
}

#[test]
fn a_json_rpc_service_is_usable_from_the_pipeline_workflow() {
    let env = TestEnv::sqlite();
    let service = ConformanceService::start(None);
    let config = write_config(
        &env,
        &format!(
            "[[extensions]]\nname = \"remote\"\nprotocol = \"jsonrpc\"\n\
             source = {{ type = \"http\", url = \"{}\" }}\n\
             config = {{ concurrency = 4 }}\n",
            service.url()
        ),
    );
    let _worker = spawn(&env, "w1", &config);
    let ledger = env.path("remote.ledger");
    let run = start_pipeline(&env, &charge_pipeline("remote", &ledger, 0));
    let shown = assert_charged_once(&env, &run, &ledger);
    assert_eq!(
        shown["run"]["output"]["steps"][0]["output"]["applied"],
        true
    );
    // A schema mismatch fails the step for good, naming the field, without a call.
    let bad = start_pipeline(
        &env,
        &json!({"steps": [{"name": "nap", "executor": "remote", "method": "sleep", "params": {"ms": "long"}}]}),
    );
    let failed = env.wait_for_status(&bad, "failed", Duration::from_secs(30));
    let error = failed["run"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("params.ms"), "{failed:#}");
}

#[test]
fn a_bad_extension_entry_stops_up_with_one_line() {
    let env = TestEnv::sqlite();
    for (entry, expected) in [
        (
            "[[extensions]]\nname = \"x\"\nprotocol = \"stdio\"\nsource = { type = \"http\", url = \"http://127.0.0.1:1\" }\n",
            "config: extension 'x': source.type: protocol stdio needs a source of type \"process\", not \"http\"",
        ),
        (
            "[[extensions]]\nname = \"process\"\nprotocol = \"stdio\"\nsource = { type = \"process\", command = \"python3\" }\n",
            "config: extension 'process': name: a built-in executor is already called that",
        ),
        (
            "[[extensions]]\nname = \"y\"\nprotocol = \"stdio\"\nsource = { type = \"process\", command = \"/nonexistent/y\" }\n",
            "extension 'y': could not start: cannot run \"/nonexistent/y\"",
        ),
    ] {
        let config = write_config(&env, entry);
        let out = env.cli(&["--config", &config, "up"]);
        assert!(!out.status.success(), "{entry}");
        let lines = out.stderr_lines();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.contains(expected), "expected {expected:?}, got: {}", out.stderr);
        assert!(!last.contains('\n'));
    }
}

/// One failing step, tried at most twice.
fn failing_pipeline(executor: &str, method: &str, params: Value) -> Value {
    json!({"steps": [{"name": "limit", "executor": executor, "method": method,
                      "params": params,
                      "retry": {"max_attempts": 2, "initial_delay_ms": 100}}]})
}

#[test]
fn limits_fail_their_steps_and_the_worker_keeps_serving_other_runs() {
    let env = TestEnv::sqlite();
    let config = format!(
        "[[extensions]]\nname = \"plugin\"\nprotocol = \"extism\"\n\
         source = {{ type = \"wasm\", path = \"{}\" }}\n\
         permissions = {{ max_execution_time = \"1s\", max_memory = \"8MB\" }}\n\
         restart = {{ strategy = \"immediate\", max_retries = 20 }}\n\
         [[extensions]]\nname = \"proc\"\nprotocol = \"stdio\"\n\
         source = {{ type = \"process\", command = \"python3\", args = [\"{}\"] }}\n\
         permissions = {{ max_memory = \"200MB\" }}\n\
         restart = {{ strategy = \"immediate\", max_retries = 20 }}\n",
        wasm_plugin("echo.wat").display(),
        conformance_script().display()
    );
    let config = write_config(&env, &config);
    let mut worker = spawn(&env, "w1", &config);
    let spin = start_pipeline(&env, &failing_pipeline("plugin", "spin", json!({})));
    let hog = start_pipeline(&env, &failing_pipeline("plugin", "hog", json!({})));
    let allocate = start_pipeline(
        &env,
        &failing_pipeline("proc", "allocate", json!({"mb": 400})),
    );
    // An ordinary run beside them completes while they fail.
    let shell = env.start_shell(&json!({"steps": [
        morpheus_tests::ledger_step(&env.ledger_path(), "tick", "true")
    ]}));
    env.wait_for_status(&shell, "completed", Duration::from_secs(60));

    let spun = env.wait_for_status(&spin, "failed", Duration::from_secs(60));
    let error = spun["run"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not answer spin within"), "{error}");
    let hogged = env.wait_for_status(&hog, "failed", Duration::from_secs(60));
    let error = hogged["run"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("memory limit"), "{error}");
    let allocated = env.wait_for_status(&allocate, "failed", Duration::from_secs(60));
    let error = allocated["run"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("out of memory"), "{error}");

    // Both extensions still answer, through the same worker.
    let echo = start_pipeline(
        &env,
        &json!({"steps": [
            {"name": "a", "executor": "plugin", "method": "echo", "params": {"n": 1}},
            {"name": "b", "executor": "proc", "method": "echo", "params": {"n": 2}}
        ]}),
    );
    let shown = env.wait_for_status(&echo, "completed", Duration::from_secs(60));
    let steps = &shown["run"]["output"]["steps"];
    assert_eq!(steps[0]["output"]["params"]["n"], 1, "{shown}");
    assert_eq!(steps[1]["output"]["params"]["n"], 2, "{shown}");
    assert!(worker.try_exit().is_none(), "the worker is still running");
}
