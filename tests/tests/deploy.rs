//! End-to-end deploy tests: the real `morpheus` binary (`deploy …` commands and `up`
//! workers), real SQLite/PostgreSQL and a real Docker engine. Each test builds the tiny
//! busybox base image locally (no registry is reachable), uses an agent id of its own
//! and removes every container labelled with it when it ends. A test that needs Docker
//! fails, with a message saying how to get one, when the engine is unreachable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use morpheus_tests::docker::{
    containers_with_label, docker_ok, http_get, require_docker, test_image, ContainerGuard,
};
use morpheus_tests::{
    both_backends, wait_for, Backend, CliOutput, TestEnv, WorkerProcess, FAST_LEASES,
};
use serde_json::{json, Value};

/// Upper bound for one deploy to become ready or fail.
const LONG: Duration = Duration::from_secs(45);

/// Serves the sandbox's work directory (where the snapshot is unpacked).
const SERVE: &str = "httpd -f -p 3000 -h /workspace/app";

/// One test's deploy world: a [`TestEnv`], a data directory inside it (also the only
/// allowed source root), and an agent id whose containers are removed on drop.
struct Deploy {
    env: TestEnv,
    data_dir: PathBuf,
    agent: String,
    _containers: ContainerGuard,
}

impl Deploy {
    fn new(backend: Backend) -> Self {
        require_docker();
        test_image();
        Self::without_docker(backend)
    }

    /// For tests that run with Docker out of reach on purpose.
    fn without_docker(backend: Backend) -> Self {
        let env = TestEnv::new(backend);
        let agent = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            data_dir: env.path("data"),
            _containers: ContainerGuard::new("morpheus.agent", &agent),
            agent,
            env,
        }
    }

    /// A second agent of this test, whose containers are removed too.
    fn other_agent(&self, suffix: &str) -> (String, ContainerGuard) {
        let agent = format!("{}-{suffix}", self.agent);
        let guard = ContainerGuard::new("morpheus.agent", &agent);
        (agent, guard)
    }

    fn paths(&self) -> Vec<String> {
        vec![
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--allowed-root".into(),
            self.env.dir().display().to_string(),
        ]
    }

    /// `morpheus deploy <args> --data-dir … --allowed-root …`.
    fn deploy(&self, args: &[&str]) -> CliOutput {
        let paths = self.paths();
        let mut all: Vec<&str> = vec!["deploy"];
        all.extend_from_slice(args);
        all.extend(paths.iter().map(String::as_str));
        self.env.cli(&all)
    }

    fn deploy_ok(&self, args: &[&str]) -> String {
        let out = self.deploy(args);
        assert!(
            out.status.success(),
            "morpheus deploy {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// A source directory `name` inside the environment with these files.
    fn site(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = self.env.path(name);
        std::fs::create_dir_all(&root).expect("site dir");
        for (path, contents) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("site subdir");
            std::fs::write(path, contents).expect("site file");
        }
        root
    }

    fn set_spec(&self, agent: &str, site: &Path, build: &str) {
        self.deploy_ok(&[
            "spec",
            "set",
            "--agent",
            agent,
            "--name",
            "e2e site",
            "--source-dir",
            &site.display().to_string(),
            "--build",
            build,
            "--start",
            SERVE,
            "--image",
            test_image(),
        ]);
    }

    /// `morpheus up` with 2 s leases and this test's deploy paths.
    fn worker(&self, name: &str, extra: &[&str]) -> WorkerProcess {
        let id = format!("e2e-{name}");
        let paths = self.paths();
        let mut args: Vec<&str> = FAST_LEASES.to_vec();
        args.extend(["--worker-id", id.as_str()]);
        args.extend(paths.iter().map(String::as_str));
        args.extend_from_slice(extra);
        self.env.spawn_worker(name, &args)
    }

    /// `deploy start` (no wait): the run id.
    fn start(&self, agent: &str) -> String {
        let stdout = self.deploy_ok(&["start", "--agent", agent]);
        stdout.lines().next().expect("a run id").trim().to_owned()
    }

    fn runs(&self, agent: &str) -> Vec<Value> {
        let stdout = self.deploy_ok(&["list", "--agent", agent, "--json"]);
        match serde_json::from_str(&stdout) {
            Ok(Value::Array(runs)) => runs,
            other => panic!("deploy list --json is not an array: {other:?}: {stdout}"),
        }
    }

    fn run(&self, agent: &str, run: &str) -> Value {
        self.runs(agent)
            .into_iter()
            .find(|r| r["id"] == run)
            .unwrap_or_else(|| panic!("deploy list has no run {run}"))
    }

    fn logs(&self, run: &str) -> String {
        self.env.cli_ok(&["logs", run])
    }

    /// Waits until the run has `status`; fails early (with the record and the run's
    /// logs) if it reaches another status it cannot leave on its own.
    fn wait_status(&self, agent: &str, run: &str, status: &str, timeout: Duration) -> Value {
        wait_for(&format!("deploy run {run} to be {status}"), timeout, || {
            let record = self.run(agent, run);
            let now = record["status"].as_str().unwrap_or_default().to_owned();
            if now == status {
                return Some(record);
            }
            if ["failed", "stopped", "ready"].contains(&now.as_str()) {
                panic!(
                    "deploy run {run} is {now}, not {status}: {record:#}\nlogs:\n{}",
                    self.logs(run)
                );
            }
            None
        })
    }

    fn containers_of(run: &str) -> Vec<String> {
        containers_with_label("morpheus.run", run)
    }
}

fn entered(record: &Value, status: &str) -> DateTime<Utc> {
    let at = record["history"]
        .as_array()
        .and_then(|history| history.iter().find(|change| change["status"] == status))
        .and_then(|change| change["at"].as_str())
        .unwrap_or_else(|| panic!("run never entered {status}: {record:#}"));
    at.parse().expect("history timestamps are RFC 3339")
}

fn statuses(record: &Value) -> Vec<String> {
    record["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|change| change["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn get(url: &str, path: &str) -> (u16, String) {
    let url = format!("{}{path}", url.trim_end_matches('/'));
    http_get(&url).unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

fn single_error_line(out: &CliOutput) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "one error line expected: {:?}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
    lines[0].to_owned()
}

// ---------------------------------------------------------------------------------
// A sample site deploys to ready, serves its files, and `stop` removes its container.

#[test]
fn a_site_deploys_to_ready_serves_its_files_and_stop_removes_the_container() {
    let d = Deploy::new(Backend::Sqlite);
    let site = d.site(
        "site",
        &[
            ("index.html", "<h1>hello from morpheus</h1>\n"),
            ("node_modules/left-pad/index.js", "ignored"),
            (".git/HEAD", "ref: refs/heads/main"),
            ("debug.log", "ignored"),
        ],
    );
    d.set_spec(
        &d.agent,
        &site,
        "echo building; echo built-at-build-time > built.txt",
    );
    let _worker = d.worker("w", &[]);

    let started = Instant::now();
    let stdout = d.deploy_ok(&["start", "--agent", &d.agent, "--wait"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "run id, then URL: {stdout}");
    let (run, url) = (lines[0], lines[1]);
    eprintln!("deploy ready in {:?} at {url}", started.elapsed());

    let record = d.run(&d.agent, run);
    assert_eq!(record["status"], "ready");
    assert_eq!(record["url"], url);
    assert_eq!(
        statuses(&record),
        [
            "queued",
            "capturing",
            "provisioning",
            "building",
            "starting",
            "ready"
        ]
    );
    assert_eq!(
        Deploy::containers_of(run).len(),
        1,
        "one sandbox for the run"
    );
    let sandbox = record["sandbox_id"].as_str().expect("sandbox id");
    assert_eq!(Deploy::containers_of(run)[0], sandbox);

    assert_eq!(
        get(url, "/"),
        (200, "<h1>hello from morpheus</h1>\n".into())
    );
    assert_eq!(
        get(url, "/built.txt"),
        (200, "built-at-build-time\n".into())
    );
    // Ignored paths never reached the sandbox.
    let listing = docker_ok(&["exec", sandbox, "ls", "-a", "/workspace/app"]);
    let mut names: Vec<&str> = listing.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, [".", "..", "built.txt", "index.html"]);
    // The build's output is in the run's logs, line by line.
    let logs = d.logs(run);
    assert!(logs.contains("[build #1] building"), "{logs}");

    let stopped = d.deploy_ok(&["stop", "--agent", &d.agent, run, "--wait"]);
    assert_eq!(stopped.trim(), format!("stopped {run}"));
    assert!(
        Deploy::containers_of(run).is_empty(),
        "stop removed the container"
    );
    let record = d.run(&d.agent, run);
    assert_eq!(record["status"], "stopped");
    assert!(record["url"].is_null(), "{record:#}");
    assert!(
        http_get(url).is_err(),
        "nothing answers at {url} once the sandbox is gone"
    );
    let again = single_error_line(&d.deploy(&["stop", "--agent", &d.agent, run]));
    assert!(again.contains("is stopped"), "{again}");
}

// ---------------------------------------------------------------------------------
// A failing build ends failed, with its output in the logs and no container left.

#[test]
fn a_failing_build_ends_failed_with_its_output_in_the_logs_and_no_container() {
    let d = Deploy::new(Backend::Sqlite);
    let site = d.site("site", &[("index.html", "never served")]);
    d.set_spec(
        &d.agent,
        &site,
        "echo compiling; echo 'boom: missing semicolon' >&2; exit 3",
    );
    let _worker = d.worker("w", &[]);

    let out = d.deploy(&["start", "--agent", &d.agent, "--wait"]);
    let error = single_error_line(&out);
    let run = out
        .stdout
        .lines()
        .next()
        .expect("run id printed first")
        .trim();
    assert!(
        error.contains(&format!("deploy run {run} failed")),
        "{error}"
    );
    assert!(error.contains("exited with code 3"), "{error}");

    let record = d.run(&d.agent, run);
    assert_eq!(record["status"], "failed");
    assert_eq!(
        statuses(&record),
        ["queued", "capturing", "provisioning", "building", "failed"]
    );
    let recorded = record["error"].as_str().unwrap_or_default();
    assert!(recorded.contains("step 'build' failed"), "{recorded}");
    assert!(recorded.contains("boom: missing semicolon"), "{recorded}");

    let logs = d.logs(run);
    assert!(logs.contains("INFO  [build #1] compiling"), "{logs}");
    assert!(
        logs.contains("WARN  [build #1] boom: missing semicolon"),
        "{logs}"
    );
    assert!(
        Deploy::containers_of(run).is_empty(),
        "a failed run leaves no container behind"
    );
    assert_eq!(d.env.status(run), "failed", "the engine run failed too");
}

// ---------------------------------------------------------------------------------
// SIGKILL while building; the restarted worker resumes the run to ready with exactly
// one container for it.

fn sigkill_while_building_resumes_with_one_container(backend: Backend) {
    let d = Deploy::new(backend);
    let site = d.site("site", &[("index.html", "survived a crash\n")]);
    d.set_spec(&d.agent, &site, "sleep 3; echo built > marker");
    let mut first = d.worker("first", &[]);
    let run = d.start(&d.agent);

    d.wait_status(&d.agent, &run, "building", LONG);
    std::thread::sleep(Duration::from_millis(1000));
    first.kill();
    let killed = Instant::now();
    assert_eq!(d.run(&d.agent, &run)["status"], "building");
    assert_eq!(Deploy::containers_of(&run).len(), 1);

    let _second = d.worker("second", &[]);
    let record = d.wait_status(&d.agent, &run, "ready", LONG);
    eprintln!("{backend:?}: ready {:?} after SIGKILL", killed.elapsed());

    let containers = Deploy::containers_of(&run);
    assert_eq!(containers.len(), 1, "exactly one container for the run");
    assert_eq!(record["sandbox_id"], containers[0].as_str());
    let url = record["url"].as_str().expect("url");
    assert_eq!(get(url, "/"), (200, "survived a crash\n".into()));
    assert_eq!(get(url, "/marker"), (200, "built\n".into()));
    // The container was created once and adopted by the journal, not re-created.
    let logs = d.logs(&run);
    assert_eq!(logs.matches("created container").count(), 1, "{logs}");
    assert_eq!(
        statuses(&record),
        [
            "queued",
            "capturing",
            "provisioning",
            "building",
            "starting",
            "ready"
        ]
    );
}

// ---------------------------------------------------------------------------------
// Snapshot rules: bad source dirs are refused at `spec set` (nothing written); an
// escaping symlink and the file-count and size limits fail the run at capture with
// clear errors, before any container exists.

#[test]
fn bad_source_dirs_escaping_symlinks_and_limits_are_refused_with_clear_errors() {
    let d = Deploy::new(Backend::Sqlite);
    let site = d.site("site", &[("index.html", "x")]);
    let outside = tempfile::tempdir().expect("outside dir");
    let site_text = site.display().to_string();
    let cases = [
        (
            outside.path().display().to_string(),
            "outside the allowed roots",
        ),
        (
            format!("{site_text}/../site"),
            "must not contain '.' or '..'",
        ),
        ("site".to_owned(), "must be an absolute path"),
        (format!("{site_text}/missing"), "cannot be read"),
    ];
    for (source_dir, expected) in &cases {
        let out = d.deploy(&[
            "spec",
            "set",
            "--agent",
            &d.agent,
            "--name",
            "n",
            "--source-dir",
            source_dir,
            "--build",
            "true",
            "--start",
            SERVE,
        ]);
        let error = single_error_line(&out);
        assert!(
            error.starts_with("error: source_dir: "),
            "{source_dir}: {error}"
        );
        assert!(error.contains(expected), "{source_dir}: {error}");
    }
    let port = d.deploy(&[
        "spec",
        "set",
        "--agent",
        &d.agent,
        "--name",
        "n",
        "--source-dir",
        &site_text,
        "--build",
        "true",
        "--start",
        SERVE,
        "--port",
        "80",
    ]);
    assert!(single_error_line(&port).starts_with("error: runtime_port: "));
    let shown = single_error_line(&d.deploy(&["spec", "show", "--agent", &d.agent]));
    assert!(
        shown.contains("no deployment spec"),
        "nothing was written: {shown}"
    );

    let (links, _links_guard) = d.other_agent("links");
    let linked = d.site("linked", &[("index.html", "x")]);
    std::os::unix::fs::symlink("/etc/passwd", linked.join("leak")).expect("symlink");
    d.set_spec(&links, &linked, "true");
    let (files, _files_guard) = d.other_agent("files");
    let many = d.site(
        "many",
        &[
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("d", "4"),
            ("node_modules/e", "ignored"),
        ],
    );
    d.set_spec(&files, &many, "true");
    let (bytes, _bytes_guard) = d.other_agent("bytes");
    let big = d.site("big", &[]);
    let noise = morpheus_tests::noise(0x2545_f491_4f6c_dd1d, 64 * 1024);
    std::fs::write(big.join("noise.bin"), noise).expect("noise");
    d.set_spec(&bytes, &big, "true");

    let _worker = d.worker(
        "w",
        &[
            "--deploy-max-files",
            "3",
            "--deploy-max-snapshot-bytes",
            "4096",
        ],
    );
    for (agent, expected) in [
        (
            &links,
            "symlink 'leak' points outside the source directory (to '/etc/passwd')",
        ),
        (&files, "holds more than 3 files"),
        (&bytes, "is larger than 4096 bytes"),
    ] {
        let out = d.deploy(&["start", "--agent", agent, "--wait"]);
        let error = single_error_line(&out);
        assert!(error.contains(expected), "{agent}: {error}");
        let run = out.stdout.lines().next().expect("run id").trim().to_owned();
        let record = d.run(agent, &run);
        assert_eq!(
            statuses(&record),
            ["queued", "capturing", "failed"],
            "{agent}"
        );
        assert!(record["snapshot_id"].is_null(), "{record:#}");
        assert!(
            Deploy::containers_of(&run).is_empty(),
            "{agent}: no sandbox"
        );
        let snapshots = d.deploy_ok(&["snapshots", "--agent", agent, "--json"]);
        assert_eq!(snapshots.trim(), "[]", "{agent}: no snapshot recorded");
    }
    // No partial artifact is left in the store either.
    for agent in [&links, &files, &bytes] {
        let dir = d.data_dir.join("artifacts").join(agent);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| entries.map(|e| e.expect("entry").file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{agent}: {left:?}");
    }
}

// ---------------------------------------------------------------------------------
// Two starts for one agent: the second waits until the first pipeline ends; they get
// different containers and snapshots.

fn two_starts_for_one_agent_run_one_after_the_other(backend: Backend) {
    let d = Deploy::new(backend);
    let site = d.site("site", &[("index.html", "twice\n")]);
    d.set_spec(&d.agent, &site, "sleep 2");
    let _worker = d.worker("w", &["--concurrency", "4"]);
    let first = d.start(&d.agent);
    let second = d.start(&d.agent);

    // While the first is in its pipeline, the second stays queued.
    d.wait_status(&d.agent, &first, "building", LONG);
    assert_eq!(d.run(&d.agent, &second)["status"], "queued");
    let a = d.wait_status(&d.agent, &first, "ready", LONG);
    let b = d.wait_status(&d.agent, &second, "ready", LONG);
    assert!(
        entered(&b, "capturing") >= entered(&a, "ready"),
        "the second pipeline began only after the first ended:\n{a:#}\n{b:#}"
    );
    assert_ne!(a["sandbox_id"], b["sandbox_id"]);
    assert_ne!(a["snapshot_id"], b["snapshot_id"]);
    assert_eq!(
        a["snapshot_hash"], b["snapshot_hash"],
        "same tree, same content hash"
    );
    let containers = containers_with_label("morpheus.agent", &d.agent);
    assert_eq!(containers.len(), 2, "{containers:?}");
    let queues = d.env.cli_json(&["queues", "list", "--json"]);
    let queue = queues
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == format!("deploy:{}", d.agent))
        .unwrap_or_else(|| panic!("no queue for the agent: {queues:#}"));
    assert_eq!(queue["concurrency_limit"], 1);
}

// ---------------------------------------------------------------------------------
// Redeploying an older snapshot rolls back into a fresh sandbox; an untouched tree
// keeps its hash whatever its mtimes.

#[test]
fn redeploying_an_older_snapshot_rolls_back_into_a_fresh_sandbox() {
    let d = Deploy::new(Backend::Sqlite);
    let site = d.site("site", &[("index.html", "version one\n")]);
    d.set_spec(&d.agent, &site, "true");
    let _worker = d.worker("w", &[]);
    let ready = |args: &[&str]| -> (String, String) {
        let stdout = d.deploy_ok(args);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        (lines[0].to_owned(), lines[1].to_owned())
    };
    let start = ["start", "--agent", d.agent.as_str(), "--wait"];

    let (v1, v1_url) = ready(&start);
    // Same contents, new mtimes: a new snapshot record with the same hash and artifact.
    let index = site.join("index.html");
    std::fs::File::options()
        .write(true)
        .open(&index)
        .expect("open index")
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .expect("touch");
    let (v1_again, _) = ready(&start);
    std::fs::write(&index, "version two\n").expect("edit");
    let (v2, v2_url) = ready(&start);
    assert_eq!(get(&v2_url, "/").1, "version two\n");

    let records: Vec<Value> = [&v1, &v1_again, &v2]
        .iter()
        .map(|run| d.run(&d.agent, run))
        .collect();
    assert_eq!(records[0]["snapshot_hash"], records[1]["snapshot_hash"]);
    assert_ne!(records[0]["snapshot_id"], records[1]["snapshot_id"]);
    assert_ne!(records[0]["snapshot_hash"], records[2]["snapshot_hash"]);
    let snapshots: Value =
        serde_json::from_str(&d.deploy_ok(&["snapshots", "--agent", &d.agent, "--json"]))
            .expect("snapshots json");
    let snapshots = snapshots.as_array().expect("array");
    assert_eq!(snapshots.len(), 3);
    assert_eq!(
        snapshots[1]["artifact_path"], snapshots[2]["artifact_path"],
        "the same tree is stored once"
    );

    let v1_snapshot = records[0]["snapshot_id"].as_str().expect("snapshot id");
    let (rollback, rollback_url) = ready(&[
        "redeploy",
        "--agent",
        &d.agent,
        "--snapshot",
        v1_snapshot,
        "--note",
        "rollback",
        "--wait",
    ]);
    assert_eq!(get(&rollback_url, "/"), (200, "version one\n".into()));
    let record = d.run(&d.agent, &rollback);
    assert_eq!(record["snapshot_id"], v1_snapshot);
    assert_eq!(record["redeploy_of"], v1_snapshot);
    assert_eq!(record["note"], "rollback");
    assert_ne!(
        record["sandbox_id"], records[0]["sandbox_id"],
        "a fresh sandbox"
    );
    assert_ne!(rollback_url, v1_url);
    assert_eq!(get(&v1_url, "/").1, "version one\n", "v1 still serves");
    assert_eq!(Deploy::containers_of(&rollback).len(), 1);

    let unknown = single_error_line(&d.deploy(&[
        "redeploy",
        "--agent",
        &d.agent,
        "--snapshot",
        "no-such-snapshot",
    ]));
    assert!(
        unknown.contains("no snapshot no-such-snapshot"),
        "{unknown}"
    );
}

// ---------------------------------------------------------------------------------
// `deploy gc` removes containers labelled by Morpheus whose runs are finished, and
// keeps the ones still serving.

#[test]
fn gc_removes_containers_of_finished_runs_and_keeps_serving_ones() {
    let d = Deploy::new(Backend::Sqlite);
    let site = d.site("site", &[("index.html", "kept\n")]);
    d.set_spec(&d.agent, &site, "true");
    let _worker = d.worker("w", &[]);
    let stdout = d.deploy_ok(&["start", "--agent", &d.agent, "--wait"]);
    let serving = stdout.lines().next().expect("run id").to_owned();

    // A pipeline cancelled mid-build leaves its sandbox behind.
    let (slow, _slow_guard) = d.other_agent("slow");
    d.set_spec(&slow, &site, "sleep 30");
    let cancelled = d.start(&slow);
    d.wait_status(&slow, &cancelled, "building", LONG);
    d.env.cli_ok(&["runs", "cancel", &cancelled]);
    d.env.wait_for_status(&cancelled, "cancelled", LONG);
    assert_eq!(Deploy::containers_of(&cancelled).len(), 1);

    // A container of this installation whose run no record knows of, and one of
    // another installation (another database on the same Docker host).
    let serving_sandbox = d.run(&d.agent, &serving)["sandbox_id"]
        .as_str()
        .expect("sandbox id")
        .to_owned();
    let instance = docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"morpheus.instance\"}}",
        &serving_sandbox,
    ])
    .trim()
    .to_owned();
    assert!(!instance.is_empty(), "sandboxes carry the installation id");
    let orphan_run = uuid::Uuid::new_v4().to_string();
    let foreign_run = uuid::Uuid::new_v4().to_string();
    for (run, owner) in [
        (&orphan_run, instance.as_str()),
        (&foreign_run, "another-installation"),
    ] {
        docker_ok(&[
            "run",
            "-d",
            "--label",
            "morpheus.managed=true",
            "--label",
            &format!("morpheus.run={run}"),
            "--label",
            &format!("morpheus.instance={owner}"),
            "--label",
            &format!("morpheus.agent={}", d.agent),
            test_image(),
            "sleep",
            "300",
        ]);
    }

    let dry = d.deploy_ok(&["gc", "--dry-run", "--json"]);
    let dry: Value = serde_json::from_str(&dry).expect("gc json");
    let action = |entries: &Value, run: &str| -> String {
        entries
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["run_id"] == run)
            .map(|e| {
                e["verdict"]["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("gc did not examine run {run}: {entries:#}"))
    };
    assert_eq!(action(&dry, &serving), "keep");
    assert_eq!(action(&dry, &cancelled), "remove");
    assert_eq!(action(&dry, &orphan_run), "remove");
    assert_eq!(
        Deploy::containers_of(&cancelled).len(),
        1,
        "a dry run removes nothing"
    );

    let report = d.deploy_ok(&["gc"]);
    assert!(
        report.contains(&format!(
            "removed morpheus-deploy-{cancelled} (run {cancelled})"
        )),
        "{report}"
    );
    assert!(Deploy::containers_of(&cancelled).is_empty());
    assert!(Deploy::containers_of(&orphan_run).is_empty());
    assert_eq!(
        Deploy::containers_of(&foreign_run).len(),
        1,
        "another installation's container is never touched"
    );
    assert!(
        !dry.to_string().contains(&foreign_run),
        "nor even examined: {dry:#}"
    );
    assert_eq!(
        Deploy::containers_of(&serving).len(),
        1,
        "the ready deploy is kept"
    );
    let record = d.run(&slow, &cancelled);
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().unwrap_or_default();
    assert!(error.contains("removed by deploy gc"), "{error}");
    let url = d.run(&d.agent, &serving)["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert_eq!(get(&url, "/"), (200, "kept\n".into()));
}

// ---------------------------------------------------------------------------------
// Without Docker, `up` still runs other workflows; a deploy step fails with a clear
// retryable error (and is retried).

#[test]
fn without_docker_up_runs_other_workflows_and_deploy_steps_retry() {
    let d = Deploy::without_docker(Backend::Sqlite);
    let site = d.site("site", &[("index.html", "x")]);
    d.deploy_ok(&[
        "spec",
        "set",
        "--agent",
        &d.agent,
        "--name",
        "n",
        "--source-dir",
        &site.display().to_string(),
        "--build",
        "true",
        "--start",
        SERVE,
    ]);
    let paths = d.paths();
    let mut args: Vec<&str> = FAST_LEASES.to_vec();
    args.extend(paths.iter().map(String::as_str));
    let worker = d.env.spawn_worker_with("no-docker", &args, |command| {
        command.env(
            "DOCKER_HOST",
            "unix:///nonexistent/morpheus-test/docker.sock",
        );
    });

    let shell = d
        .env
        .start_shell(&json!({"steps": [{"name": "hello", "run": "echo hi"}]}));
    d.env.wait_for_status(&shell, "completed", LONG);

    let run = d.start(&d.agent);
    let shown = wait_for("the provision step to fail and be retried", LONG, || {
        let shown = d.env.show(&run);
        let steps = shown["steps"].as_array()?;
        let provision = steps.iter().find(|s| s["step_key"] == "provision")?;
        // The step is recorded retrying just before its run parks.
        (provision["status"] == "retrying" && shown["run"]["status"] == "retrying").then_some(shown)
    });
    let provision = shown["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step_key"] == "provision"))
        .expect("provision step");
    let error = provision["error"].as_str().unwrap_or_default();
    assert!(error.contains("docker engine unreachable"), "{error}");
    assert!(error.contains("is dockerd running?"), "{error}");
    assert!(!provision["next_attempt_at"].is_null(), "{provision:#}");
    assert_eq!(shown["run"]["status"], "retrying");
    assert_eq!(d.run(&d.agent, &run)["status"], "provisioning");
    let stderr = worker.stderr();
    assert!(stderr.contains("docker is unreachable"), "{stderr}");
}

// Every body above that takes a `Backend`, as `sqlite::<name>` and `postgres::<name>`.
both_backends! {
    sigkill_while_building_resumes_to_ready_with_exactly_one_container => sigkill_while_building_resumes_with_one_container,
    two_starts_for_one_agent_run_one_after_the_other => two_starts_for_one_agent_run_one_after_the_other,
}
