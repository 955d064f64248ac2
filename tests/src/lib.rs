//! Harness for Morpheus end-to-end tests (the tests themselves live in `tests/tests/`).
//!
//! Everything here drives the real `morpheus` binary as a child process against a real
//! database, so the tests see what an operator sees:
//!
//! - [`TestEnv`]: a fresh temporary directory plus a fresh database in it (SQLite) or a
//!   fresh database `morpheus_e2e_<random>` on the server named by `MORPHEUS_TEST_PG_URL`
//!   (Postgres), dropped again when the environment is dropped.
//! - [`TestEnv::cli`] and friends: one-shot CLI commands, with `--json` output parsed.
//! - [`WorkerProcess`]: a `morpheus up` child whose stderr goes to a file; it can be
//!   `SIGKILL`ed, `SIGSTOP`ped, `SIGCONT`inued or `SIGTERM`ed, and is always killed when
//!   dropped (also when a test panics).
//! - [`Ledger`]: an *effect ledger*. Each shell step built by [`ledger_step`] appends
//!   `start <run>/<step> <worker pid>` before its body and `done <run>/<step> <worker pid>`
//!   after it, so the ledger counts real body executions and who did them.
//! - [`wait_for`]: poll a condition until a deadline, failing with a description.
//! - [`anvil`]: a real anvil (EVM dev node) on a free loopback port, killed on drop.
//! - [`docker`]: a locally built busybox test image, containers by label, guards that
//!   remove a test's containers, an HTTP GET (for the deploy tests).
//!
//! The binary is `$MORPHEUS_BIN` if set, else `morpheus` next to the test executable's
//! `deps/` directory (`cargo build -p morpheus` puts it there).

pub mod anvil;
pub mod api;
pub mod devnet;
pub mod docker;
pub mod extensions;
pub mod pg_cluster;
pub mod sdl_judge;
pub mod torture;

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use sqlx::Connection as _;
use tempfile::TempDir;

/// Environment variable naming a Postgres superuser URL for tests.
pub const PG_URL_ENV: &str = "MORPHEUS_TEST_PG_URL";

/// Worker flags that make crashes cheap to observe: 2 s leases renewed every 500 ms,
/// claims polled every 100 ms.
pub const FAST_LEASES: &[&str] = &[
    "--lease-ttl",
    "2s",
    "--heartbeat",
    "500ms",
    "--poll-interval",
    "100ms",
];

/// Path of the `morpheus` binary under test: a snapshot (hard link, or copy) of
/// [`built_morpheus_bin`] taken once per test process, so a rebuild in a shared target
/// directory halfway through the tests cannot mix two binaries in one test.
///
/// # Panics
/// If the binary does not exist (it must be built first with `cargo build -p morpheus`).
pub fn morpheus_bin() -> PathBuf {
    static SNAPSHOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SNAPSHOT
        .get_or_init(|| {
            let built = built_morpheus_bin();
            let root = std::env::temp_dir().join("morpheus-e2e-bin");
            // Snapshots of test processes that are gone.
            if let Ok(entries) = std::fs::read_dir(&root) {
                for entry in entries.flatten() {
                    let pid = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<i32>().ok());
                    if let Some(pid) = pid {
                        if kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
                            let _ = std::fs::remove_dir_all(entry.path());
                        }
                    }
                }
            }
            let dir = root.join(std::process::id().to_string());
            std::fs::create_dir_all(&dir).expect("snapshot dir");
            let snapshot = dir.join("morpheus");
            let _ = std::fs::remove_file(&snapshot);
            if std::fs::hard_link(&built, &snapshot).is_err() {
                std::fs::copy(&built, &snapshot).expect("copy the morpheus binary");
            }
            snapshot
        })
        .clone()
}

/// Path of the built `morpheus` binary: `$MORPHEUS_BIN` if set, else `morpheus` in the
/// directory above the test executable's `deps/`.
///
/// # Panics
/// If the binary does not exist (it must be built first with `cargo build -p morpheus`).
pub fn built_morpheus_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MORPHEUS_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "MORPHEUS_BIN={} does not exist; run cargo build -p morpheus first",
            path.display()
        );
        return path;
    }
    // …/target/debug/deps/crash-0123abcd → …/target/debug/morpheus
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("morpheus"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} does not exist: run cargo build -p morpheus first (or set MORPHEUS_BIN)",
        path.display()
    );
    path
}

/// Runs a future to completion on a fresh single-threaded runtime (the tests themselves
/// are synchronous; only direct database access needs async).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Polls `check` every 50 ms until it returns `Some`, and returns that value.
///
/// # Panics
/// When `timeout` passes first; the message names `what` and the time waited.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which database a [`TestEnv`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the environment's temporary directory.
    Sqlite,
    /// A fresh database on the server named by [`PG_URL_ENV`].
    Postgres,
}

/// A fresh Postgres database, dropped (with `FORCE`) on drop.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
            conn.close().await
        });
        if let Err(error) = dropped {
            eprintln!(
                "warning: could not drop test database {}: {error}",
                self.name
            );
        }
    }
}

/// Replaces the database name in a Postgres URL, keeping credentials, host and query.
pub fn pg_url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// What a finished CLI command returned.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    fn from_output(output: Output) -> Self {
        Self {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `command` to completion (stdin closed) and captures its output.
    pub fn from_command(command: &mut Command) -> Self {
        let output = command.stdin(Stdio::null()).output().expect("run morpheus");
        Self::from_output(output)
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// One test's world: a temporary directory (ledger and other files live there) and a
/// fresh database. Postgres databases are dropped when this is dropped.
pub struct TestEnv {
    backend: Backend,
    url: String,
    // Dropped before `dir` (field order): nothing in it refers to the directory.
    _pg: Option<PgDatabase>,
    dir: TempDir,
}

impl TestEnv {
    /// A fresh environment on `backend`.
    ///
    /// # Panics
    /// For Postgres, if [`PG_URL_ENV`] is unset or the server refuses `CREATE DATABASE`.
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres(),
        }
    }

    /// A fresh temporary directory with `sqlite://<dir>/morpheus.db` (the file is created
    /// on first use by the binary).
    pub fn sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("morpheus-e2e-")
            .tempdir()
            .expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("morpheus.db").display());
        Self {
            backend: Backend::Sqlite,
            url,
            _pg: None,
            dir,
        }
    }

    /// A fresh temporary directory and a fresh database `morpheus_e2e_<random>` on the
    /// Postgres server of [`PG_URL_ENV`].
    pub fn postgres() -> Self {
        let admin_url = std::env::var(PG_URL_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_URL_ENV} is not set: Postgres end-to-end tests need a Postgres superuser URL; \
                 run scripts/test (it starts Postgres and sets it), or export \
                 {PG_URL_ENV}=postgres://morpheus:morpheus@127.0.0.1:5432/postgres"
            )
        });
        let name = format!("morpheus_e2e_{}", uuid::Uuid::new_v4().simple());
        let create = {
            let admin_url = admin_url.clone();
            let name = name.clone();
            block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        };
        if let Err(error) = create {
            panic!("cannot create test database {name} via {PG_URL_ENV}: {error}");
        }
        let url = pg_url_with_database(&admin_url, &name);
        let dir = tempfile::Builder::new()
            .prefix("morpheus-e2e-")
            .tempdir()
            .expect("temp dir");
        Self {
            backend: Backend::Postgres,
            url,
            _pg: Some(PgDatabase { admin_url, name }),
            dir,
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL handed to the binary.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Path of the effect ledger file.
    pub fn ledger_path(&self) -> PathBuf {
        self.path("ledger")
    }

    /// The effect ledger as it is now (empty if no step wrote yet).
    pub fn ledger(&self) -> Ledger {
        Ledger::read(&self.ledger_path())
    }

    /// A `morpheus` command with `--database-url` set and a clean environment for it.
    pub fn command(&self) -> Command {
        self.command_for(&self.url)
    }

    /// A `morpheus` command against another database URL (run in the temporary
    /// directory, with a clean environment).
    pub fn command_for(&self, url: &str) -> Command {
        let mut command = Command::new(morpheus_bin());
        command
            .env_remove("MORPHEUS_DATABASE_URL")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .arg("--database-url")
            .arg(url);
        command
    }

    /// Runs `morpheus --database-url URL <args>` to completion.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        CliOutput::from_command(self.command().args(args))
    }

    /// Like [`TestEnv::cli`], but panics (showing stderr) unless it exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "morpheus {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Like [`TestEnv::cli_ok`], parsing stdout as one JSON document.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let stdout = self.cli_ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|error| {
            panic!("morpheus {args:?}: stdout is not JSON ({error}): {stdout}")
        })
    }

    /// `morpheus start shell --input INPUT`: returns the new run's id.
    pub fn start_shell(&self, input: &Value) -> String {
        let started = self.cli_json(&["start", "shell", "--input", &input.to_string(), "--json"]);
        started["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("start --json printed no run_id: {started}"))
            .to_owned()
    }

    /// `morpheus runs show RUN --json`: `{"run": {…}, "steps": [{…}]}`.
    pub fn show(&self, run: &str) -> Value {
        self.cli_json(&["runs", "show", run, "--json"])
    }

    /// `morpheus schedules runs NAME --limit 1000 --json`: the runs a schedule started.
    pub fn schedule_runs(&self, name: &str) -> Vec<Value> {
        match self.cli_json(&["schedules", "runs", name, "--limit", "1000", "--json"]) {
            Value::Array(runs) => runs,
            other => panic!("schedules runs --json is not an array: {other}"),
        }
    }

    /// `morpheus runs list --json`.
    pub fn list(&self) -> Vec<Value> {
        match self.cli_json(&["runs", "list", "--json"]) {
            Value::Array(runs) => runs,
            other => panic!("runs list --json is not an array: {other}"),
        }
    }

    /// The run's status (`runs show`).
    pub fn status(&self, run: &str) -> String {
        self.show(run)["run"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the run has `status` and returns its `runs show` document.
    ///
    /// # Panics
    /// On timeout, or if the run reaches a different terminal status first.
    pub fn wait_for_status(&self, run: &str, status: &str, timeout: Duration) -> Value {
        wait_for(&format!("run {run} to be {status}"), timeout, || {
            let shown = self.show(run);
            let now = shown["run"]["status"].as_str().unwrap_or_default();
            if now == status {
                return Some(shown);
            }
            if ["completed", "failed", "cancelled"].contains(&now) {
                panic!("run {run} ended {now}, not {status}: {shown:#}");
            }
            None
        })
    }

    /// Waits until the ledger has at least one `start` line for `run/step`; returns its pid.
    pub fn wait_for_start(&self, run: &str, step: &str, timeout: Duration) -> u32 {
        wait_for(
            &format!("ledger line 'start {run}/{step}'"),
            timeout,
            || self.ledger().starts(run, step).last().copied(),
        )
    }

    /// Whether some other connection holds a transaction open in this database right
    /// now: on Postgres, a session of this database that is `idle in transaction`; on
    /// SQLite, the write lock being taken (a `BEGIN IMMEDIATE` probe times out).
    ///
    /// A worker frozen (SIGSTOP) while this is true keeps the lock until it is thawed.
    pub fn transaction_open(&self) -> bool {
        let url = self.url.clone();
        match self.backend {
            Backend::Postgres => block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                let open: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND state LIKE 'idle in transaction%'",
                )
                .fetch_one(&mut conn)
                .await?;
                conn.close().await?;
                Ok::<_, sqlx::Error>(open > 0)
            })
            .expect("query pg_stat_activity"),
            Backend::Sqlite => block_on(async move {
                use std::str::FromStr as _;
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                    .busy_timeout(Duration::from_millis(200));
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
                let locked = match sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await {
                    Ok(_) => {
                        sqlx::query("ROLLBACK").execute(&mut conn).await?;
                        false
                    }
                    Err(sqlx::Error::Database(error))
                        if error.message().contains("locked")
                            || error.message().contains("busy") =>
                    {
                        true
                    }
                    Err(error) => return Err(error),
                };
                conn.close().await?;
                Ok::<_, sqlx::Error>(locked)
            })
            .expect("probe the SQLite write lock"),
        }
    }

    /// SIGSTOPs `worker` at a moment it holds no open database transaction (retrying
    /// SIGCONT/SIGSTOP until [`TestEnv::transaction_open`] says so), so that other
    /// workers are only kept out by its lease, not by a lock it froze with.
    ///
    /// # Panics
    /// If no such moment is found in 50 tries.
    pub fn freeze_outside_transaction(&self, worker: &WorkerProcess) {
        for attempt in 0..50 {
            worker.stop();
            // Let a statement already sent finish on the server.
            std::thread::sleep(Duration::from_millis(100));
            if !self.transaction_open() {
                if attempt > 0 {
                    eprintln!(
                        "froze worker {} outside a transaction after {} retries",
                        worker.name(),
                        attempt
                    );
                }
                return;
            }
            worker.cont();
            std::thread::sleep(Duration::from_millis(20 + 7 * attempt));
        }
        panic!(
            "worker {} was inside a transaction at every SIGSTOP",
            worker.name()
        );
    }

    /// Postgres only: whether some transaction holds a row lock on `run`'s row (probed
    /// with `SELECT … FOR UPDATE NOWAIT` inside a transaction that is rolled back).
    pub fn run_row_locked(&self, run: &str) -> bool {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "run_row_locked is for Postgres"
        );
        let url = self.url.clone();
        let run = run.to_owned();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            sqlx::query("BEGIN").execute(&mut conn).await?;
            let probe =
                sqlx::query("SELECT 1 FROM workflow_runs WHERE id = $1::uuid FOR UPDATE NOWAIT")
                    .bind(&run)
                    .execute(&mut conn)
                    .await;
            let locked = match probe {
                Ok(_) => false,
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => {
                    true
                }
                Err(error) => return Err(error),
            };
            sqlx::query("ROLLBACK").execute(&mut conn).await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>(locked)
        })
        .expect("probe the run's row lock")
    }

    /// Postgres only: SIGSTOPs `worker` at a moment one of its transactions holds the
    /// row lock of `run` (retrying SIGCONT/SIGSTOP up to `tries` times). Returns whether
    /// it succeeded; the worker is left running if not.
    pub fn freeze_holding_run_lock(&self, worker: &WorkerProcess, run: &str, tries: u32) -> bool {
        for attempt in 0..tries {
            worker.stop();
            std::thread::sleep(Duration::from_millis(100));
            if self.run_row_locked(run) {
                eprintln!(
                    "froze worker {} holding run {run}'s row lock after {attempt} retries",
                    worker.name()
                );
                return true;
            }
            worker.cont();
            std::thread::sleep(Duration::from_millis(u64::from(attempt % 7) * 3));
        }
        false
    }

    /// Starts `morpheus up <args>` with stderr captured to `<dir>/<name>.stderr`.
    pub fn spawn_worker(&self, name: &str, args: &[&str]) -> WorkerProcess {
        self.spawn_worker_with(name, args, |_| {})
    }

    /// Like [`TestEnv::spawn_worker`], letting `configure` adjust the command first
    /// (environment variables, say).
    pub fn spawn_worker_with(
        &self,
        name: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> WorkerProcess {
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        self.spawn_process(name, &all, configure)
    }

    /// Spawns `morpheus --database-url URL <args>` (any long-running command: `up`,
    /// `serve`) in the background, its stderr kept in `<dir>/<name>.stderr`.
    pub fn spawn_process(
        &self,
        name: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> WorkerProcess {
        let stderr_path = self.path(&format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).expect("worker stderr file");
        let mut command = self.command();
        configure(&mut command);
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn morpheus");
        WorkerProcess {
            name: name.to_owned(),
            child,
            stderr_path,
            exit: None,
        }
    }
}

/// A `morpheus up` child process. Dropping it SIGKILLs and reaps it (printing its
/// stderr if the test is panicking).
pub struct WorkerProcess {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Its process id (what `$PPID` is inside its step commands).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|error| panic!("{signal} to worker {}: {error}", self.name));
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        self.signal(Signal::SIGKILL);
        let status = self.child.wait().expect("wait for killed worker");
        self.exit = Some(status);
        status
    }

    /// SIGSTOP: freezes the process (its step commands keep running).
    pub fn stop(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT: unfreezes it.
    pub fn cont(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM: asks for a graceful shutdown.
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Its exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait worker");
        }
        self.exit
    }

    /// Waits for it to exit.
    ///
    /// # Panics
    /// If it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("worker {name} to exit"), timeout, || {
            self.try_exit()
        })
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            // SIGKILL also ends a stopped process.
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
            self.exit = self.child.wait().ok();
        }
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- stderr of worker {} (pid {}) ---\n{}",
                self.name,
                self.child.id(),
                self.stderr()
            );
        }
    }
}

/// Whether a ledger line marks the beginning or the end of a step body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Written before the body.
    Start,
    /// Written after the body succeeded.
    Done,
}

/// One ledger line: `start|done <run_id>/<step_key> <worker pid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Start or done.
    pub mark: Mark,
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_key: String,
    /// The worker process that ran the body.
    pub pid: u32,
}

/// The effect ledger: one line per body start/end, in the order they happened.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// All entries, in file order.
    pub entries: Vec<LedgerEntry>,
}

impl Ledger {
    /// Reads and parses the ledger file (missing file = empty ledger).
    ///
    /// # Panics
    /// On a malformed line.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let entries = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let parse = || -> Option<LedgerEntry> {
                    let mut words = line.split_whitespace();
                    let mark = match words.next()? {
                        "start" => Mark::Start,
                        "done" => Mark::Done,
                        _ => return None,
                    };
                    let (run_id, step_key) = words.next()?.split_once('/')?;
                    let pid = words.next()?.parse().ok()?;
                    Some(LedgerEntry {
                        mark,
                        run_id: run_id.to_owned(),
                        step_key: step_key.to_owned(),
                        pid,
                    })
                };
                parse().unwrap_or_else(|| panic!("malformed ledger line: {line:?}"))
            })
            .collect();
        Self { entries }
    }

    fn pids(&self, mark: Mark, run: &str, step: &str) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|e| e.mark == mark && e.run_id == run && e.step_key == step)
            .map(|e| e.pid)
            .collect()
    }

    /// Worker pids of every start of `run/step`, in order.
    pub fn starts(&self, run: &str, step: &str) -> Vec<u32> {
        self.pids(Mark::Start, run, step)
    }

    /// Worker pids of every successful end of `run/step`, in order.
    pub fn dones(&self, run: &str, step: &str) -> Vec<u32> {
        self.pids(Mark::Done, run, step)
    }

    /// Every entry of `run`.
    pub fn for_run(&self, run: &str) -> Vec<&LedgerEntry> {
        self.entries.iter().filter(|e| e.run_id == run).collect()
    }
}

/// Single-quotes `text` for `/bin/sh`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A `shell` workflow step named `name` whose command records itself in `ledger`:
/// `start` line, then `body`, then (only if `body` did not exit) a `done` line.
pub fn ledger_step(ledger: &Path, name: &str, body: &str) -> Value {
    let ledger = shell_quote(&ledger.display().to_string());
    json!({
        "name": name,
        "run": format!(
            "echo \"start $MORPHEUS_IDEMPOTENCY_KEY $PPID\" >> {ledger}; {body}; \
             echo \"done $MORPHEUS_IDEMPOTENCY_KEY $PPID\" >> {ledger}"
        ),
    })
}

/// The steps of a `runs show --json` document.
pub fn steps_of(shown: &Value) -> &Vec<Value> {
    shown["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("runs show has no steps array: {shown}"))
}

/// The step with `key` in a `runs show --json` document.
pub fn step_of<'a>(shown: &'a Value, key: &str) -> &'a Value {
    steps_of(shown)
        .iter()
        .find(|step| step["step_key"] == key)
        .unwrap_or_else(|| panic!("run has no step {key}: {shown:#}"))
}

/// A step's `stdout_tail` lines.
pub fn stdout_tail(step: &Value) -> Vec<String> {
    step["output"]["stdout_tail"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Instantiates end-to-end test bodies once per backend: each `name => body` becomes the
/// tests `sqlite::name` and `postgres::name`, which call `body(Backend::Sqlite)` and
/// `body(Backend::Postgres)`. Arguments after the backend follow the body in parentheses
/// (`name => body(arg, …)`); they are evaluated in the calling module. One invocation per
/// test file, listing every body that runs on both backends, so the two names of a pair
/// cannot drift apart. Tests that exist for one backend only stay plain `#[test]` fns.
///
/// ```
/// use morpheus_tests::{both_backends, Backend};
///
/// enum Rounds {
///     One,
///     Many,
/// }
///
/// fn survives_a_crash(backend: Backend, rounds: Rounds) {
///     let _ = (backend, rounds);
/// }
///
/// both_backends! {
///     survives_one_crash => survives_a_crash(Rounds::One),
///     survives_many_crashes => survives_a_crash(Rounds::Many),
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! both_backends {
    (@backend $module:ident, $backend:ident, $($name:ident => $body:ident $(($($arg:expr),*))?),*) => {
        mod $module {
            // The arguments are written in the calling module.
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    super::$body($crate::Backend::$backend $($(, $arg)*)?);
                }
            )*
        }
    };
    ($($name:ident => $body:ident $(($($arg:expr),* $(,)?))?),* $(,)?) => {
        $crate::both_backends!(@backend sqlite, Sqlite, $($name => $body $(($($arg),*))?),*);
        $crate::both_backends!(@backend postgres, Postgres, $($name => $body $(($($arg),*))?),*);
    };
}

/// `len` bytes of deterministic noise from `seed` (xorshift64): incompressible, so a
/// compressed snapshot of them is as large as they are, and the same on every run. Used by
/// the snapshot size-limit tests here and in `morpheus-workflows`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_a_postgres_url() {
        assert_eq!(
            pg_url_with_database("postgres://u:p@127.0.0.1:5432/postgres", "x"),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            pg_url_with_database("postgres://u:p@h/postgres?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(pg_url_with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn parses_ledger_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        std::fs::write(&path, "start r1/s1 10\ndone r1/s1 10\nstart r1/s2 11\n").unwrap();
        let ledger = Ledger::read(&path);
        assert_eq!(ledger.starts("r1", "s1"), vec![10]);
        assert_eq!(ledger.dones("r1", "s1"), vec![10]);
        assert_eq!(ledger.starts("r1", "s2"), vec![11]);
        assert!(ledger.dones("r1", "s2").is_empty());
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
