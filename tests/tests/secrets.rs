//! Sealed secrets end to end: the real `morpheus` binary (`secrets …`, `deploy …`,
//! `up` workers), eciesjs from npm as the judge of the format, real SQLite/PostgreSQL
//! and a real Docker engine (the busybox test image, as in `deploy.rs`).
//!
//! The promise under test: a sealed env value reaches the sandbox's environment in
//! plaintext, and nothing Morpheus writes (database, logs, `spec show`, run records,
//! the worker's own log) ever holds that plaintext; a value that does not open fails
//! the deploy before any container exists.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use morpheus_tests::docker::{
    containers_with_label, docker_ok, http_get, require_docker, test_image, ContainerGuard,
};
use morpheus_tests::{both_backends, Backend, CliOutput, TestEnv, WorkerProcess, FAST_LEASES};
use serde_json::Value;

/// The eciesjs judge (`tests/ecies-judge`, installed by `npm ci` there).
fn judge_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ecies-judge")
}

/// Runs `node judge.mjs <mode> <key>` with `stdin`; its stdout.
fn judge(mode: &str, key: &str, stdin: &str) -> String {
    let dir = judge_dir();
    assert!(
        dir.join("node_modules/eciesjs/package.json").is_file(),
        "eciesjs is not installed in {}: run `npm ci` there (scripts/test does)",
        dir.display()
    );
    let output = piped(
        Command::new("node")
            .arg("judge.mjs")
            .arg(mode)
            .arg(key)
            .current_dir(&dir),
        stdin,
    );
    assert!(
        output.status.success(),
        "node judge.mjs {mode} failed ({}): {}",
        output.status,
        output.stderr
    );
    output.stdout
}

/// Runs `command` with `stdin` written to it.
fn piped(command: &mut Command, stdin: &str) -> CliOutput {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `morpheus secrets keygen --out <dir>/<name>`: (secret key path, public key hex).
fn keygen(env: &TestEnv, name: &str) -> (PathBuf, String) {
    let path = env.path(name);
    let public = env.cli_ok(&["secrets", "keygen", "--out", &path.display().to_string()]);
    (path, public.trim().to_owned())
}

/// `morpheus secrets seal --key-file KEY` with `plaintext` on stdin.
fn seal(env: &TestEnv, key: &Path, plaintext: &str) -> String {
    let out = piped(
        env.command()
            .args(["secrets", "seal", "--key-file"])
            .arg(key),
        plaintext,
    );
    assert!(out.status.success(), "secrets seal failed: {}", out.stderr);
    out.stdout.trim().to_owned()
}

fn single_error_line(out: &CliOutput) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "one error line expected: {:?}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
    lines[0].to_owned()
}

/// A plaintext no other test (and no random base64) produces.
fn unique_plaintext() -> String {
    format!("pt-{}-s3cr3t", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------
// The format: what Morpheus seals, eciesjs opens, and the reverse.

#[test]
fn morpheus_and_eciesjs_open_what_the_other_seals() {
    let env = TestEnv::sqlite();
    let (key_path, public) = keygen(&env, "sealing.key");
    assert_eq!(public.len(), 66, "compressed public key in hex: {public}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_path)
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the secret key file is private");
    let secret_hex = std::fs::read_to_string(&key_path).expect("key file");
    let secret_hex = secret_hex.trim();

    let plaintext = "päss wörd: \"quoted\" $HOME ✓ and more";
    // Morpheus seals (to the public key), eciesjs opens.
    let sealed = {
        let out = piped(
            env.command()
                .args(["secrets", "seal", "--public-key", &public]),
            plaintext,
        );
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout.trim().to_owned()
    };
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    assert!(!sealed.contains("päss"));
    assert_eq!(judge("open", secret_hex, &sealed), plaintext);
    // Sealing to the secret key's reference gives a value of the same key.
    assert_eq!(
        judge("open", secret_hex, &seal(&env, &key_path, plaintext)),
        plaintext
    );

    // No key flag: the `[secrets] key` of the configuration.
    let config = env.path("morpheus.toml");
    std::fs::write(
        &config,
        format!(
            "[secrets]\nkey = {{ hex_key_file = \"{}\" }}\n",
            key_path.display()
        ),
    )
    .expect("config");
    let by_config = env.cli_ok(&[
        "--config",
        &config.display().to_string(),
        "secrets",
        "seal",
        "--value",
        plaintext,
    ]);
    assert_eq!(judge("open", secret_hex, &by_config), plaintext);

    // eciesjs seals, Morpheus opens.
    let from_js = judge("seal", &public, plaintext);
    assert!(from_js.starts_with("sealed:v1:"), "{from_js}");
    let opened = piped(
        env.command()
            .args(["secrets", "open", "--key-file"])
            .arg(&key_path),
        &from_js,
    );
    assert!(opened.status.success(), "{}", opened.stderr);
    assert_eq!(opened.stdout, format!("{plaintext}\n"));
    // The key by environment variable, the value by flag.
    let by_env = env
        .command()
        .env("MORPHEUS_TEST_SEALING_KEY", secret_hex)
        .args(["secrets", "open", "--key-env", "MORPHEUS_TEST_SEALING_KEY"])
        .args(["--value", from_js.trim()])
        .output()
        .expect("secrets open");
    assert!(by_env.status.success());
    assert_eq!(
        String::from_utf8_lossy(&by_env.stdout),
        format!("{plaintext}\n")
    );
}

// ---------------------------------------------------------------------------------
// Bad input: one line, nothing shown, nothing written.

#[test]
fn malformed_values_and_wrong_keys_are_one_line_errors_that_write_nothing() {
    let env = TestEnv::sqlite();
    let (key_path, _) = keygen(&env, "sealing.key");
    let (other_key, _) = keygen(&env, "other.key");
    let plaintext = unique_plaintext();
    let sealed = seal(&env, &key_path, &plaintext);

    let wrong = single_error_line(&piped(
        env.command()
            .args(["secrets", "open", "--key-file"])
            .arg(&other_key),
        &sealed,
    ));
    assert!(
        wrong.contains("wrong key, or the value was tampered with"),
        "{wrong}"
    );
    assert!(!wrong.contains(&plaintext));
    for (value, expected) in [
        ("not sealed", "not a sealed value"),
        ("sealed:v1:%%%", "not valid base64"),
        ("sealed:v1:AAAA", "too short"),
        ("sealed:v7:AAAA", "unknown format"),
    ] {
        let out = env.cli(&[
            "secrets",
            "open",
            "--key-file",
            &key_path.display().to_string(),
            "--value",
            value,
        ]);
        let line = single_error_line(&out);
        assert!(line.contains(expected), "{value}: {line}");
    }
    let bad_public =
        single_error_line(&env.cli(&["secrets", "seal", "--public-key", "02ab", "--value", "x"]));
    assert!(bad_public.contains("public key"), "{bad_public}");
    let unset = single_error_line(&env.cli(&[
        "secrets",
        "seal",
        "--key-env",
        "MORPHEUS_TEST_UNSET_KEY",
        "--value",
        "x",
    ]));
    assert!(
        unset.contains("MORPHEUS_TEST_UNSET_KEY is not set"),
        "{unset}"
    );
    let again = single_error_line(&env.cli(&[
        "secrets",
        "keygen",
        "--out",
        &key_path.display().to_string(),
    ]));
    assert!(again.contains("not overwriting"), "{again}");

    // A damaged sealed value in a spec is refused at `spec set`, naming the variable.
    let site = env.path("site");
    std::fs::create_dir_all(&site).expect("site");
    let data_dir = env.path("data").display().to_string();
    let root = env.dir().display().to_string();
    let truncated = format!("TOKEN={}", &sealed[..40]);
    let refused = single_error_line(&env.cli(&[
        "deploy",
        "spec",
        "set",
        "--agent",
        "bad-input",
        "--name",
        "n",
        "--source-dir",
        &site.display().to_string(),
        "--build",
        "true",
        "--start",
        "true",
        "--env",
        &truncated,
        "--data-dir",
        &data_dir,
        "--allowed-root",
        &root,
    ]));
    assert!(refused.contains("env: TOKEN: sealed value"), "{refused}");
    let shown = env.cli(&[
        "deploy",
        "spec",
        "show",
        "--agent",
        "bad-input",
        "--data-dir",
        &data_dir,
        "--allowed-root",
        &root,
    ]);
    assert!(!shown.status.success(), "no spec was written: {shown:?}");

    // `up` with a key it cannot read stops before it starts anything.
    let config = env.path("morpheus.toml");
    std::fs::write(
        &config,
        "[secrets]\nkey = { hex_key_env = \"MORPHEUS_TEST_UNSET_KEY\" }\n",
    )
    .expect("config");
    let up = env
        .command()
        .args(["--config", &config.display().to_string(), "up"])
        .stdin(Stdio::null())
        .output()
        .expect("up");
    assert!(!up.status.success());
    let stderr = String::from_utf8_lossy(&up.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: config [secrets]"), "{stderr}");
    assert!(
        last.contains("MORPHEUS_TEST_UNSET_KEY is not set"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------
// A sealed env value in a deploy: plaintext in the container, sealed everywhere else.

/// One test's deploy world with a sealing key configured for its workers.
struct SealedDeploy {
    env: TestEnv,
    data_dir: PathBuf,
    config: PathBuf,
    key: PathBuf,
    agent: String,
    _containers: ContainerGuard,
}

impl SealedDeploy {
    fn new(backend: Backend) -> Self {
        require_docker();
        test_image();
        let env = TestEnv::new(backend);
        let (key, _) = keygen(&env, "sealing.key");
        let config = env.path("morpheus.toml");
        std::fs::write(
            &config,
            format!(
                "[secrets]\nkey = {{ hex_key_file = \"{}\" }}\n",
                key.display()
            ),
        )
        .expect("config");
        let agent = format!(
            "sealed-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self {
            data_dir: env.path("data"),
            config,
            key,
            _containers: ContainerGuard::new("morpheus.agent", &agent),
            agent,
            env,
        }
    }

    fn deploy(&self, args: &[&str]) -> CliOutput {
        let data_dir = self.data_dir.display().to_string();
        let root = self.env.dir().display().to_string();
        let mut all = vec!["deploy"];
        all.extend_from_slice(args);
        all.extend(["--data-dir", &data_dir, "--allowed-root", &root]);
        self.env.cli(&all)
    }

    fn deploy_ok(&self, args: &[&str]) -> String {
        let out = self.deploy(args);
        assert!(out.status.success(), "deploy {args:?} failed: {out:?}");
        out.stdout
    }

    fn set_spec(&self, build: &str, start: &str, env: &[String]) {
        let site = self.env.path("site");
        std::fs::create_dir_all(&site).expect("site");
        std::fs::write(site.join("index.html"), "sealed site\n").expect("index");
        let site = site.display().to_string();
        let mut args = vec![
            "spec",
            "set",
            "--agent",
            &self.agent,
            "--name",
            "sealed",
            "--source-dir",
            &site,
            "--build",
            build,
            "--start",
            start,
            "--image",
            test_image(),
        ];
        for pair in env {
            args.extend(["--env", pair.as_str()]);
        }
        self.deploy_ok(&args);
    }

    /// `morpheus up` with the sealing key's config, 2 s leases, debug logging and
    /// `extra` flags.
    fn worker(&self, extra: &[&str]) -> WorkerProcess {
        let data_dir = self.data_dir.display().to_string();
        let root = self.env.dir().display().to_string();
        let config = self.config.display().to_string();
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(FAST_LEASES);
        args.extend(["--data-dir", &data_dir, "--allowed-root", &root]);
        args.extend_from_slice(extra);
        // Debug logging: the worker's own log is searched for the plaintext too, and
        // debug is where client libraries dump request bodies.
        self.env.spawn_worker_with("sealed", &args, |command| {
            command.env("MORPHEUS_LOG", "debug");
        })
    }

    fn run_record(&self, run: &str) -> Value {
        let listed: Value =
            serde_json::from_str(&self.deploy_ok(&["list", "--agent", &self.agent, "--json"]))
                .expect("deploy list --json");
        listed
            .as_array()
            .and_then(|runs| runs.iter().find(|record| record["id"] == run))
            .cloned()
            .unwrap_or_else(|| panic!("no deploy run {run}: {listed}"))
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
                {
                    hits.push(path);
                }
            }
        }
    }
    hits
}

/// `pg_dump` of the test's database, if pg_dump is installed.
fn pg_dump(env: &TestEnv) -> Option<String> {
    let output = Command::new("pg_dump")
        .args(["--dbname", env.url(), "--data-only"])
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn a_sealed_env_value_reaches_the_container_and_nothing_else(backend: Backend) {
    let d = SealedDeploy::new(backend);
    let plaintext = unique_plaintext();
    let sealed = seal(&d.env, &d.key, &plaintext);
    // The build prints the value (masked in the logs and the step's output) and
    // leaves it where the sandbox serves it (the container really has it).
    d.set_spec(
        "echo \"build sees $SECRET and $PLAIN\"; printf %s \"$SECRET\" > secret.txt",
        "echo \"start sees $SECRET\"; httpd -f -p 3000 -h /workspace/app",
        &[format!("SECRET={sealed}"), "PLAIN=visible-value".to_owned()],
    );
    let _worker = d.worker(&[]);
    let out = d.deploy(&["start", "--agent", &d.agent, "--wait"]);
    assert!(out.status.success(), "deploy failed: {out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (run, url) = (lines[0].trim().to_owned(), lines[1].trim().to_owned());

    let sandbox = d.run_record(&run)["sandbox_id"]
        .as_str()
        .expect("sandbox id")
        .to_owned();
    // The image's busybox has no printenv; the shell's printf is exact.
    let in_container = docker_ok(&["exec", &sandbox, "/bin/sh", "-c", "printf %s \"$SECRET\""]);
    assert_eq!(
        in_container, plaintext,
        "the container's env has the plaintext"
    );
    let served = http_get(&format!("{url}secret.txt")).expect("GET secret.txt");
    assert_eq!(served, (200, plaintext.clone()));

    // Logs: the build's line is there, masked; the plain value is not masked.
    let logs = d.env.cli_ok(&["logs", &run]);
    assert!(
        logs.contains("build sees *** and visible-value"),
        "the build's output is masked: {logs}"
    );
    // Every surface an operator reads shows the sealed form only.
    let spec_show = d.deploy_ok(&["spec", "show", "--agent", &d.agent]);
    let spec_json = d.deploy_ok(&["spec", "show", "--agent", &d.agent, "--json"]);
    assert!(
        spec_json.contains(&sealed),
        "spec show --json has the sealed form: {spec_json}"
    );
    let runs_show = d.env.cli_ok(&["runs", "show", &run, "--json"]);
    let deploy_list = d.deploy_ok(&["list", "--agent", &d.agent, "--json"]);
    for (surface, text) in [
        ("morpheus logs", &logs),
        ("deploy spec show", &spec_show),
        ("deploy spec show --json", &spec_json),
        ("runs show", &runs_show),
        ("deploy list", &deploy_list),
    ] {
        assert_eq!(
            text.matches(plaintext.as_str()).count(),
            0,
            "{surface} shows the plaintext:\n{text}"
        );
    }

    // The database, the worker's own log, the artifacts: everything this test's
    // Morpheus wrote. The sealed form is there (so the search works), the plaintext is not.
    d.deploy_ok(&["stop", "--agent", &d.agent, &run, "--wait"]);
    let written = files_containing(d.env.dir(), &plaintext);
    assert!(written.is_empty(), "files hold the plaintext: {written:?}");
    match backend {
        Backend::Sqlite => {
            let with_sealed = files_containing(d.env.dir(), &sealed);
            assert!(
                with_sealed.iter().any(|path| path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("morpheus.db"))),
                "the SQLite files hold the sealed value: {with_sealed:?}"
            );
        }
        Backend::Postgres => match pg_dump(&d.env) {
            Some(dump) => {
                assert!(dump.contains(&sealed), "the dump holds the sealed value");
                assert_eq!(
                    dump.matches(plaintext.as_str()).count(),
                    0,
                    "pg_dump holds the plaintext"
                );
            }
            None => eprintln!("pg_dump is not installed: the Postgres dump was not searched"),
        },
    }
}

both_backends! {
    a_sealed_env_value_reaches_the_container_and_is_masked_everywhere_else =>
        a_sealed_env_value_reaches_the_container_and_nothing_else
}

// ---------------------------------------------------------------------------------
// A tampered value fails the deploy before any container starts.

#[test]
fn a_tampered_sealed_value_fails_the_deploy_before_any_container_starts() {
    let d = SealedDeploy::new(Backend::Sqlite);
    let sealed = seal(&d.env, &d.key, &unique_plaintext());
    // One base64 character of the ciphertext changed: still well-formed, so `spec set`
    // takes it, but it no longer authenticates.
    let mut chars: Vec<char> = sealed.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    d.set_spec(
        "true",
        "httpd -f -p 3000 -h /workspace/app",
        &[format!("API_TOKEN={tampered}")],
    );
    let _worker = d.worker(&[]);
    let out = d.deploy(&["start", "--agent", &d.agent, "--wait"]);
    let error = single_error_line(&out);
    let run = out.stdout.lines().next().expect("run id").trim().to_owned();
    assert!(
        error.contains("spec.env.API_TOKEN: sealed value does not open: wrong key, or the value was tampered with"),
        "{error}"
    );
    let record = d.run_record(&run);
    assert_eq!(record["status"], "failed");
    let statuses: Vec<&str> = record["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|change| change["status"].as_str())
        .collect();
    assert_eq!(statuses, ["queued", "capturing", "provisioning", "failed"]);
    assert!(
        containers_with_label("morpheus.run", &run).is_empty(),
        "no container for the run"
    );
    let logs = d.env.cli_ok(&["logs", &run]);
    assert!(
        !logs.contains("created container"),
        "no container was created: {logs}"
    );
}

// ---------------------------------------------------------------------------------
// A start command that prints the value and never serves: the run fails, and the
// container log copied into the run's logs has the value masked.

#[test]
fn a_failed_start_s_output_is_copied_into_the_logs_masked() {
    let d = SealedDeploy::new(Backend::Sqlite);
    let plaintext = unique_plaintext();
    let sealed = seal(&d.env, &d.key, &plaintext);
    d.set_spec(
        "true",
        "echo \"start sees $SECRET\"; echo \"stderr sees $SECRET\" >&2; sleep 600",
        &[format!("SECRET={sealed}")],
    );
    let _worker = d.worker(&["--deploy-ready-timeout", "2s"]);
    let out = d.deploy(&["start", "--agent", &d.agent, "--wait"]);
    let error = single_error_line(&out);
    assert!(error.contains("not ready"), "{error}");
    let run = out.stdout.lines().next().expect("run id").trim().to_owned();
    let logs = d.env.cli_ok(&["logs", &run]);
    assert!(logs.contains("[start-output #1] start sees ***"), "{logs}");
    assert!(logs.contains("[start-output #1] stderr sees ***"), "{logs}");
    assert_eq!(logs.matches(plaintext.as_str()).count(), 0, "{logs}");
    let written = files_containing(d.env.dir(), &plaintext);
    assert!(written.is_empty(), "files hold the plaintext: {written:?}");
    assert!(
        containers_with_label("morpheus.run", &run).is_empty(),
        "the failed run's sandbox is removed"
    );
}
