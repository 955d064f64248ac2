//! The dashboard in a real browser: `morpheus up --listen` on a fresh SQLite database,
//! data prepared with the CLI, then a scenario under `tests/browser/` drives Debian's
//! headless Chromium through playwright-core against the served pages and the test
//! asserts its exit code (and checks what it did through the CLI).
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `tests/browser` (scripts/test does both);
//! the deploy scenario also needs Docker and a static busybox, as `tests/deploy.rs`.
//! Screenshots go to `<target>/test-artifacts/dashboard/<test>/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use morpheus_tests::api::ApiProcess;
use morpheus_tests::docker::{containers_with_label, require_docker, test_image, ContainerGuard};
use morpheus_tests::{shell_quote, wait_for, TestEnv, FAST_LEASES};
use serde_json::{json, Value};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `<target>/test-artifacts/dashboard/<name>` (the test executable lives in
/// `<target>/<profile>/deps/`).
fn artifacts(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test executable lives in <target>/<profile>/deps")
        .to_path_buf();
    let dir = target.join("test-artifacts").join("dashboard").join(name);
    // Only this run's screenshots (a failure shot of an earlier run would mislead).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    eprintln!("screenshots of {name}: {}", dir.display());
    dir
}

/// Runs `node tests/browser/<name>.mjs <base> <artifacts>` with `data` in
/// `$SCENARIO_DATA`; panics (with its output) unless it exits 0; returns the JSON it
/// printed last.
fn run_scenario(name: &str, base: &str, data: &Value) -> Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{} has no node_modules: run `npm ci` there (scripts/test does)",
        dir.display()
    );
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: apt-get install chromium (scripts/test does)"
    );
    let output = Command::new("node")
        .arg(dir.join(format!("{name}.mjs")))
        .arg(base)
        .arg(artifacts(name))
        .env("SCENARIO_DATA", data.to_string())
        .output()
        .expect("run node (install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- {name}.mjs stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "browser scenario {name} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or("{}");
    serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("{name}.mjs printed no JSON result ({error}): {stdout}"))
}

/// `morpheus up --listen 127.0.0.1:<free port>` with fast leases and `extra` flags.
fn serve(env: &TestEnv, extra: &[&str]) -> ApiProcess {
    let mut args: Vec<&str> = FAST_LEASES.to_vec();
    args.extend_from_slice(extra);
    ApiProcess::spawn(env, "up", "up", &args, |_| {})
}

// Scenario 1: a failed run is forked from its failed step in the page (after the
// condition it checks was made true) and the new run completes on its own page.
#[test]
fn a_failed_run_forked_from_its_failed_step_completes_in_the_browser() {
    let env = TestEnv::sqlite();
    let flag = env.path("flag");
    let server = serve(&env, &[]);
    let run = env.start_shell(&json!({"steps": [
        {"name": "prepare", "run": "echo preparing"},
        {"name": "check", "run": format!("test -f {} && echo flag found", shell_quote(&flag.display().to_string()))},
    ]}));
    env.wait_for_status(&run, "failed", Duration::from_secs(30));
    std::fs::write(&flag, "").expect("create the flag");
    env.cli_ok(&[
        "schedules",
        "add",
        "nightly",
        "--workflow",
        "shell",
        "--input",
        r#"{"steps":[{"name":"hello","run":"echo hello"}]}"#,
        "--cron",
        "0 3 * * *",
    ]);
    let limited = server.put("/api/v1/queues/default", &json!({"concurrency_limit": 4}));
    assert_eq!(limited.status, 200, "{:?}", limited.body);
    let result = run_scenario(
        "fork",
        &server.base,
        &json!({"run": run, "step": "check", "schedule": "nightly"}),
    );
    let forked = result["forked"].as_str().expect("the forked run's id");
    assert_ne!(forked, run);
    let shown = env.show(forked);
    assert_eq!(shown["run"]["status"], "completed", "{shown}");
    assert_eq!(
        env.status(&run),
        "failed",
        "the original run is left as it was"
    );
}

// Scenario 2: a log line `<script>…</script>` and an HTML input show as text.
#[test]
fn a_script_tag_in_a_log_line_shows_as_text() {
    let env = TestEnv::sqlite();
    let gate = env.path("gate");
    let server = serve(&env, &[]);
    let wait_then_print = format!(
        "while [ ! -f {} ]; do sleep 0.1; done; echo '<script>alert(1)</script>'",
        shell_quote(&gate.display().to_string())
    );
    let run = env.start_shell(&json!({
        "steps": [{"name": "print", "run": wait_then_print}],
        "env": {"MARK": "<img src=x onerror=alert(2)>"},
    }));
    run_scenario(
        "escape",
        &server.base,
        &json!({"run": run, "gate": gate.display().to_string()}),
    );
    assert_eq!(env.status(&run), "completed");
}

// Scenario 3: a directory deploy driven from the Deployments tab, from an empty spec
// to ready and back to stopped, with real containers.
#[test]
fn a_directory_deploy_from_the_deployments_tab_streams_logs_to_ready_then_stops() {
    require_docker();
    let image = test_image();
    let env = TestEnv::sqlite();
    let agent = format!(
        "e2e-ui-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let _containers = ContainerGuard::new("morpheus.agent", &agent);
    let site = env.path("site");
    let marker = format!("dashboard-deploy-{agent}");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("index.html"), format!("<h1>{marker}</h1>\n")).expect("index.html");
    let data_dir = env.path("data").display().to_string();
    let root = env.dir().display().to_string();
    let server = serve(&env, &["--data-dir", &data_dir, "--allowed-root", &root]);
    let start = "httpd -f -p 3000 -h /workspace/app";
    let result = run_scenario(
        "deploy",
        &server.base,
        &json!({
            "agent": agent,
            "sourceDir": site.display().to_string(),
            "startCommand": start,
            "image": image,
            "marker": marker,
        }),
    );
    assert!(result["lines"].as_u64().unwrap_or(0) > 0, "{result}");
    let run = result["run"].as_str().expect("the deploy run's id");
    let runs = server.get(&format!("/api/agents/{agent}/deployments"));
    let record = runs.body["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["id"] == run))
        .unwrap_or_else(|| panic!("no run {run} in {}", runs.body));
    assert_eq!(record["status"], "stopped", "{record}");
    assert_eq!(
        record["specSnapshot"]["env"]["GREETING"],
        "hello-from-the-browser"
    );
    wait_for("the sandbox to be removed", Duration::from_secs(30), || {
        containers_with_label("morpheus.agent", &agent)
            .is_empty()
            .then_some(())
    });
}
