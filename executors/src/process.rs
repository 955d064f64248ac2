//! The `process` executor: runs a shell command as one step effect.
//!
//! Lifecycle rules, and why they exist:
//! - The command gets its own process group, so everything it starts can be killed
//!   together (timeout, cancellation, exit) instead of only the shell.
//! - The shell gets `PR_SET_PDEATHSIG(SIGKILL)`: if the worker is `SIGKILL`ed, the
//!   engine re-executes the step elsewhere and the old command must not keep running
//!   beside it. Limitation: the kernel clears PDEATHSIG in forked children, so only
//!   the shell (or what it `exec`s) gets it; background jobs and pipeline members it
//!   forked survive a worker crash. `exec` the main program where possible.
//! - The exit is observed with `waitid(WNOWAIT)` before the group is killed and the
//!   child is reaped: while the leader is an unreaped zombie its pid (the group id)
//!   cannot be reused, so `killpg` can never hit an unrelated process group.

use std::collections::BTreeMap;
use std::future::pending;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use morpheus_engine::{ExecError, ExecOutput, ExecRequest, Executor, LeaseCheck, StepError};
use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::{getpid, getppid, Pid};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::lines::{pump, LineSplitter, Stream};

/// Environment variable through which the command sees the request's idempotency key.
pub const IDEMPOTENCY_KEY_ENV: &str = "MORPHEUS_IDEMPOTENCY_KEY";

/// Environment variable holding the step attempt (1 for the first).
pub const ATTEMPT_ENV: &str = "MORPHEUS_STEP_ATTEMPT";

/// Environment variable holding the run's fencing token (its lease epoch): a command
/// that writes to an external system can pass it along so stale writers are refused.
pub const FENCING_TOKEN_ENV: &str = "MORPHEUS_FENCING_TOKEN";

/// After the group is killed, how long to wait for the pipes to reach EOF. Only a
/// process that left the group (`setsid`) while keeping our stdout/stderr can hold
/// them open longer; we stop reading rather than hang the step.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Payload of a `process` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRequest {
    /// Shell command line, run as `/bin/sh -c <command>`.
    pub command: String,
    /// Variables added to (or overriding) the worker's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the worker's own when absent. It must already exist.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Give up (and kill the command) after this many seconds. The request's deadline
    /// applies as well; the earlier one wins.
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

/// Result of a command that exited with code 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOutput {
    /// Always 0 here (other codes are errors); kept so the output is self-describing.
    pub exit_code: i32,
    /// The last stdout lines (at most 20).
    pub stdout_tail: Vec<String>,
    /// The last stderr lines (at most 20).
    pub stderr_tail: Vec<String>,
    /// Wall-clock time from spawn to exit.
    pub duration_ms: u64,
}

/// Executor of kind `"process"`: runs a local shell command (see [`ProcessRequest`]).
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    shell: PathBuf,
}

impl Default for ProcessExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessExecutor {
    /// An executor that runs commands with `/bin/sh`.
    pub fn new() -> Self {
        Self::with_shell("/bin/sh")
    }

    /// An executor that runs commands with another POSIX shell (invoked as
    /// `<shell> -c <command>`).
    pub fn with_shell(shell: impl Into<PathBuf>) -> Self {
        Self {
            shell: shell.into(),
        }
    }

    /// Runs one command to completion, streaming its output into `logs`.
    ///
    /// This is [`Executor::call`] with a typed request and output, for callers that
    /// do not go through JSON.
    pub async fn run(
        &self,
        request: &ProcessRequest,
        call: &ExecRequest,
    ) -> Result<ProcessOutput, StepError> {
        let deadline = call.deadline;
        let logs = &call.logs;
        let started = Instant::now();
        let limit = time_limit(request.timeout_s, deadline, started)?;
        if limit == Some(Duration::ZERO) {
            return Err(StepError::retryable(format!(
                "deadline passed before the command started: {}",
                request.command
            )));
        }

        let mut command = Command::new(&self.shell);
        command
            .arg("-c")
            .arg(&request.command)
            .envs(&request.env)
            // Set last so a payload cannot spoof what the engine hands out.
            .env(IDEMPOTENCY_KEY_ENV, &call.idempotency_key)
            .env(ATTEMPT_ENV, call.attempt.to_string())
            .env(FENCING_TOKEN_ENV, call.fencing_token.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &request.cwd {
            // Checked here so the error names the directory: a failed chdir in the
            // child only surfaces as a bare ENOENT.
            if !Path::new(cwd).is_dir() {
                return Err(StepError::permanent(format!(
                    "working directory {cwd:?} does not exist or is not a directory"
                )));
            }
            command.current_dir(cwd);
        }
        let parent = getpid();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed. It makes two syscalls (prctl, getppid)
        // and builds its error from a raw errno, with no allocation or locking.
        unsafe {
            command.pre_exec(move || die_with_parent(parent));
        }

        let child = spawn(command, call.lease.clone()).await.map_err(|error| {
            let message = format!(
                "could not start {} for command {:?}: {error}",
                self.shell.display(),
                request.command
            );
            if is_transient_spawn_error(&error) || error.to_string() == LEASE_LOST_BEFORE_START {
                StepError::retryable(message)
            } else {
                StepError::permanent(message)
            }
        })?;
        let mut group = ProcessGroup::new(child)?;
        tracing::debug!(pid = %group.pgid, command = %request.command, "process started");

        let (stdout, stderr) = match (group.child.stdout.take(), group.child.stderr.take()) {
            (Some(stdout), Some(stderr)) => (stdout, stderr),
            _ => return Err(StepError::retryable("child has no stdout/stderr pipes")),
        };
        let mut stdout_lines = LineSplitter::new(Stream::Stdout);
        let mut stderr_lines = LineSplitter::new(Stream::Stderr);
        let (timed_out, status) = {
            let pumps = async {
                tokio::join!(
                    pump(stdout, &mut stdout_lines, logs),
                    pump(stderr, &mut stderr_lines, logs),
                )
            };
            tokio::pin!(pumps);
            let timer = async {
                match limit {
                    Some(limit) => tokio::time::sleep_until((started + limit).into()).await,
                    None => pending().await,
                }
            };
            tokio::pin!(timer);
            let mut exited = exited(group.pgid);
            let mut pumps_done = false;
            let timed_out = loop {
                tokio::select! {
                    _ = &mut pumps, if !pumps_done => pumps_done = true,
                    _ = &mut exited => break false,
                    _ = &mut timer => break true,
                }
            };
            // On timeout this stops the command; after an exit it stops background
            // jobs that would hold the pipes open and outlive the step.
            group.kill();
            let status = group.reap().await;
            if !pumps_done && tokio::time::timeout(DRAIN_GRACE, &mut pumps).await.is_err() {
                logs.warn(
                    "stopped reading output: a process outside the command's process \
                     group still holds its stdout/stderr open",
                );
            }
            (timed_out, status)
        };
        let duration = started.elapsed();
        let status = status.map_err(|error| {
            StepError::retryable(format!(
                "waiting for command failed: {error}: {}",
                request.command
            ))
        })?;

        // A command that exited on its own just as the timer fired keeps its result.
        if timed_out && status.code().is_none() {
            let limit = limit.unwrap_or(duration);
            return Err(StepError::retryable(with_tail(
                format!(
                    "command timed out after {}: {}",
                    format_secs(limit),
                    request.command
                ),
                &stderr_lines,
            )));
        }
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(ProcessOutput {
                exit_code: 0,
                stdout_tail: stdout_lines.into_tail(),
                stderr_tail: stderr_lines.into_tail(),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            }),
            (Some(code), _) => Err(StepError::retryable(with_tail(
                format!("command exited with code {code}: {}", request.command),
                &stderr_lines,
            ))),
            (None, signal) => {
                let name = signal
                    .map(|number| match Signal::try_from(number) {
                        Ok(signal) => format!("{signal} ({number})"),
                        Err(_) => format!("signal {number}"),
                    })
                    .unwrap_or_else(|| "an unknown signal".to_owned());
                Err(StepError::retryable(with_tail(
                    format!("command killed by {name}: {}", request.command),
                    &stderr_lines,
                )))
            }
        }
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    fn kind(&self) -> &str {
        "process"
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        let spec: ProcessRequest =
            ProcessRequest::deserialize(&request.payload).map_err(|error| {
                StepError::permanent(format!(
                    "invalid process payload: {error} (expected {{\"command\": string, \
                 \"env\"?: {{string: string}}, \"cwd\"?: string, \"timeout_s\"?: number}})"
                ))
            })?;
        let output = self.run(&spec, &request).await?;
        serde_json::to_value(output).map_err(StepError::permanent)
    }
}

/// The effective time limit: the earlier of `timeout_s` and the deadline.
fn time_limit(
    timeout_s: Option<f64>,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<Option<Duration>, StepError> {
    let timeout = match timeout_s {
        None => None,
        Some(secs) => match Duration::try_from_secs_f64(secs) {
            Ok(timeout) if !timeout.is_zero() => Some(timeout),
            _ => {
                return Err(StepError::permanent(format!(
                    "timeout_s must be a positive number of seconds, got {secs}"
                )))
            }
        },
    };
    let until_deadline = deadline.map(|deadline| deadline.saturating_duration_since(now));
    Ok(timeout.into_iter().chain(until_deadline).min())
}

/// Runs in the child between fork and exec.
pub(crate) fn die_with_parent(parent: Pid) -> io::Result<()> {
    prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The worker may have died before prctl took effect; then no signal will come.
    if getppid() != parent {
        return Err(Errno::ESRCH.into());
    }
    Ok(())
}

/// Resource exhaustion may pass; a missing or non-executable shell will not.
fn is_transient_spawn_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EAGAIN | Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE)
    )
}

/// A spawned command's process group. Dropping it before the leader is reaped kills
/// the whole group, which is what makes a dropped `call` future (cancelled run, lost
/// lease) stop the command instead of leaving it running.
struct ProcessGroup {
    // Dropped after `Drop::drop` has killed the group; its own `kill_on_drop` only
    // reaches the shell, not what the shell started.
    child: Child,
    pgid: Pid,
    reaped: bool,
}

impl ProcessGroup {
    fn new(child: Child) -> Result<Self, StepError> {
        // `process_group(0)` makes the child the leader: group id = its pid.
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| StepError::retryable("spawned child has no pid"))?;
        Ok(Self {
            child,
            pgid: Pid::from_raw(pid),
            reaped: false,
        })
    }

    /// SIGKILLs every process in the group. A no-op once the leader is reaped: from
    /// then on the id may belong to someone else.
    fn kill(&self) {
        if self.reaped {
            return;
        }
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => tracing::warn!(pgid = %self.pgid, %error, "killing process group failed"),
        }
    }

    async fn reap(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resolves when `pid` has exited, leaving it unreaped (see the module docs). Blocks a
/// thread of the blocking pool for the command's lifetime; tokio has no async
/// `waitid(WNOWAIT)`.
pub(crate) fn exited(pid: Pid) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => continue,
            // ECHILD: already reaped (the call future was dropped meanwhile).
            _ => return,
        }
    })
}

/// Why a command was not started: the run's lease lapsed before the fork.
const LEASE_LOST_BEFORE_START: &str =
    "the run's lease lapsed before the command started; not starting it";

/// A spawn handed to the spawner thread.
struct SpawnJob {
    command: Command,
    runtime: Handle,
    /// Checked immediately before the fork: the job may have waited in the queue (or the
    /// whole worker may have been frozen) since the step decided to run.
    lease: LeaseCheck,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Sender to the thread that forks all commands.
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);

/// Spawns `command` from a dedicated thread that lives as long as the process.
///
/// Why: `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process. A tokio blocking-pool thread (e.g. one that ran `block_in_place`)
/// can exit after idling while the command still runs, which would SIGKILL a healthy
/// step. The spawner thread only exits with the process, exactly when we want it.
pub(crate) async fn spawn(command: Command, lease: LeaseCheck) -> io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    submit(SpawnJob {
        command,
        runtime: Handle::current(),
        lease,
        reply,
    })?;
    answer
        .await
        .map_err(|_| io::Error::other("the process spawner thread dropped the request"))?
}

fn submit(job: SpawnJob) -> io::Result<()> {
    let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    let job = match spawner.as_ref() {
        Some(sender) => match sender.send(job) {
            Ok(()) => return Ok(()),
            // The thread is gone (it should not be; it catches panics): start anew.
            Err(mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (sender, jobs) = mpsc::channel();
    std::thread::Builder::new()
        .name("morpheus-spawner".to_owned())
        .spawn(move || run_spawner(jobs))?;
    sender
        .send(job)
        .map_err(|_| io::Error::other("the process spawner thread exited at once"))?;
    *spawner = Some(sender);
    Ok(())
}

fn run_spawner(jobs: mpsc::Receiver<SpawnJob>) {
    for SpawnJob {
        mut command,
        runtime,
        lease,
        reply,
    } in jobs
    {
        if !lease.is_held() {
            let _ = reply.send(Err(io::Error::other(LEASE_LOST_BEFORE_START)));
            continue;
        }
        let result = {
            // Pipes and the child watcher register with the caller's runtime.
            let _context = runtime.enter();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                spawn_within(&mut command, lease.deadline())
            }))
            .unwrap_or_else(|_| Err(io::Error::other("spawning the command panicked")))
        };
        if let Err(Ok(child)) = reply.send(result) {
            // The caller was dropped while we forked: nobody will reap or kill this
            // group, so kill it now (the child is unreaped, so the id is still ours).
            drop(ProcessGroup::new(child));
        }
    }
}

/// Forks `command`, and lets it exec only if `deadline` (the lease's, when known) has not
/// passed by then.
///
/// Why the child checks too: the check before this call and the fork are two moments,
/// and a worker frozen (SIGSTOP, a VM pause) between them forks only when it is thawed,
/// seconds later, when another worker may have taken the run over and recorded this
/// very step. The child runs its check after the fork, in a process of its own that the
/// worker's freeze does not stop, so a command either starts while the lease holds or
/// not at all. The deadline is read just before the fork: renewals only ever move it
/// later, so a stale read can refuse a start but never allow a late one.
fn spawn_within(command: &mut Command, deadline: Option<Instant>) -> io::Result<Child> {
    if let Some(deadline) = deadline {
        // SAFETY: runs in the forked child before exec: one clock_gettime (which is
        // async-signal-safe) and a comparison, no allocation or locking.
        unsafe {
            command.pre_exec(move || {
                if Instant::now() < deadline {
                    Ok(())
                } else {
                    Err(Errno::ETIME.into())
                }
            });
        }
    }
    command.spawn().map_err(|error| {
        // Nothing else between fork and exec fails with ETIME (it is a STREAMS timer
        // error), so it can only be the refusal above.
        if deadline.is_some() && error.raw_os_error() == Some(Errno::ETIME as i32) {
            io::Error::other(LEASE_LOST_BEFORE_START)
        } else {
            error
        }
    })
}

/// Appends the stderr tail, which is usually what explains a failure.
fn with_tail(message: String, stderr: &LineSplitter) -> String {
    if stderr.tail().is_empty() {
        return message;
    }
    let lines: Vec<&str> = stderr.tail().iter().map(String::as_str).collect();
    format!("{message}\nstderr tail:\n{}", lines.join("\n"))
}

/// `0.5s`, `30s`, `1.25s`.
fn format_secs(duration: Duration) -> String {
    let text = format!("{:.3}", duration.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}s")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use morpheus_engine::{LogLevel, LogSink};
    use serde_json::{json, Value};

    use super::*;
    use crate::lines::MAX_LINE_BYTES;

    /// One captured log line, with the instant it reached the sink.
    #[derive(Debug, Clone)]
    struct Line {
        level: LogLevel,
        message: String,
        fields: Option<Value>,
        at: Instant,
    }

    type Lines = Arc<Mutex<Vec<Line>>>;

    fn capture() -> (LogSink, Lines) {
        let lines: Lines = Arc::default();
        let sink = {
            let lines = lines.clone();
            LogSink::new(move |level, message, fields| {
                lines.lock().unwrap().push(Line {
                    level,
                    message,
                    fields,
                    at: Instant::now(),
                });
            })
        };
        (sink, lines)
    }

    fn request(payload: Value, logs: LogSink) -> ExecRequest {
        ExecRequest {
            idempotency_key: "run-1/step-a".to_owned(),
            attempt: 1,
            fencing_token: 7,
            lease: LeaseCheck::always(),
            deadline: None,
            payload,
            logs,
        }
    }

    fn messages(lines: &Lines, stream: &str) -> Vec<String> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.fields == Some(json!({ "stream": stream })))
            .map(|line| line.message.clone())
            .collect()
    }

    async fn call(payload: Value) -> (Result<ExecOutput, ExecError>, Lines) {
        let (sink, lines) = capture();
        let result = ProcessExecutor::new().call(request(payload, sink)).await;
        (result, lines)
    }

    /// Whether `pid` is a live (non-zombie) process. Zombies count as gone: they
    /// run no code, and in a container nobody may reap a reparented one.
    fn is_running(pid: Pid) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !(state.starts_with('Z') || state.starts_with('X'))
            }
            Err(_) => false,
        }
    }

    async fn wait_until_gone(pid: Pid) -> bool {
        for _ in 0..40 {
            if !is_running(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn read_pid(path: &Path) -> Pid {
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return Pid::from_raw(pid);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no pid in {}", path.display());
    }

    #[tokio::test]
    async fn success_streams_stdout_at_info_and_stderr_at_warn() {
        let (result, lines) =
            call(json!({"command": "echo hello; echo oops >&2; echo world; echo again >&2"})).await;
        let output: ProcessOutput = serde_json::from_value(result.unwrap()).unwrap();
        assert_eq!(output.exit_code, 0);
        assert_eq!(output.stdout_tail, ["hello", "world"]);
        assert_eq!(output.stderr_tail, ["oops", "again"]);
        assert_eq!(messages(&lines, "stdout"), ["hello", "world"]);
        assert_eq!(messages(&lines, "stderr"), ["oops", "again"]);
        for line in lines.lock().unwrap().iter() {
            let expected = if line.message == "hello" || line.message == "world" {
                LogLevel::Info
            } else {
                LogLevel::Warn
            };
            assert_eq!(line.level, expected, "{line:?}");
        }
    }

    #[tokio::test]
    async fn nonzero_exit_is_retryable_with_code_and_stderr_tail() {
        let (result, _) = call(json!({"command": "echo bad >&2; exit 3"})).await;
        let error = result.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert!(error.message().contains("code 3"), "{error}");
        assert!(error.message().contains("bad"), "{error}");
    }

    #[tokio::test]
    async fn killed_by_signal_is_retryable_and_names_the_signal() {
        let (result, _) = call(json!({"command": "kill -TERM $$"})).await;
        let error = result.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert!(error.message().contains("SIGTERM"), "{error}");
    }

    #[tokio::test]
    async fn env_and_cwd_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        let (result, lines) = call(json!({
            "command": "echo $FOO; pwd -P",
            "env": {"FOO": "bar baz"},
            "cwd": cwd.to_str().unwrap(),
        }))
        .await;
        result.unwrap();
        assert_eq!(
            messages(&lines, "stdout"),
            ["bar baz", cwd.to_str().unwrap()]
        );
    }

    #[tokio::test]
    async fn idempotency_key_is_visible_and_cannot_be_overridden() {
        let (result, lines) = call(json!({
            "command": "echo \"$MORPHEUS_IDEMPOTENCY_KEY\"",
            "env": {"MORPHEUS_IDEMPOTENCY_KEY": "spoofed"},
        }))
        .await;
        result.unwrap();
        assert_eq!(messages(&lines, "stdout"), ["run-1/step-a"]);
    }

    #[tokio::test]
    async fn a_lapsed_lease_starts_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let (sink, _lines) = capture();
        let mut call = request(
            json!({"command": format!("touch {}", marker.display())}),
            sink,
        );
        call.lease = LeaseCheck::new(|| false);
        let error = ProcessExecutor::new().call(call).await.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert!(error.message().contains("lease lapsed"), "{error}");
        assert!(!marker.exists(), "the command must not have run");
    }

    /// A lease that lapses between the last check before the fork and the exec (the
    /// worker was frozen in between) starts no command: the child checks the deadline.
    #[tokio::test]
    async fn a_lease_lapsed_by_the_time_of_the_fork_starts_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(format!("touch {}", marker.display()));
        let past = Instant::now() - Duration::from_millis(1);
        let error = spawn_within(&mut command, Some(past)).unwrap_err();
        assert_eq!(error.to_string(), LEASE_LOST_BEFORE_START);
        assert!(!marker.exists(), "the command must not have run");

        let future = Instant::now() + Duration::from_secs(60);
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(format!("touch {}", marker.display()));
        let status = spawn_within(&mut command, Some(future))
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert!(status.success());
        assert!(marker.exists(), "a held lease starts the command");
    }

    #[tokio::test]
    async fn attempt_and_fencing_token_are_visible_and_cannot_be_overridden() {
        let (result, lines) = call(json!({
            "command": "echo \"$MORPHEUS_STEP_ATTEMPT $MORPHEUS_FENCING_TOKEN\"",
            "env": {"MORPHEUS_STEP_ATTEMPT": "99", "MORPHEUS_FENCING_TOKEN": "0"},
        }))
        .await;
        result.unwrap();
        assert_eq!(messages(&lines, "stdout"), ["1 7"]);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        let (result, _) = call(json!({
            "command": format!("echo going >&2; sleep 30 & echo $! > {}; wait", pidfile.display()),
            "timeout_s": 0.5,
        }))
        .await;
        let elapsed = started.elapsed();
        let error = result.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert!(error.message().contains("timed out after 0.5s"), "{error}");
        assert!(error.message().contains("going"), "stderr tail: {error}");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        let sleep = read_pid(&pidfile).await;
        assert!(
            wait_until_gone(sleep).await,
            "background sleep {sleep} survived"
        );
    }

    #[tokio::test]
    async fn request_deadline_bounds_the_command() {
        let (sink, _) = capture();
        let mut request = request(json!({"command": "sleep 30", "timeout_s": 60}), sink);
        request.deadline = Some(Instant::now() + Duration::from_millis(300));
        let started = Instant::now();
        let error = ProcessExecutor::new().call(request).await.unwrap_err();
        assert!(error.message().contains("timed out"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let (sink, _) = capture();
        let executor = ProcessExecutor::new();
        let mut call = executor.call(request(json!({ "command": command }), sink));
        // Poll the call until the background sleep exists, then drop it mid-flight.
        let sleep = tokio::select! {
            result = &mut call => panic!("call finished early: {result:?}"),
            pid = read_pid(&pidfile) => pid,
        };
        assert!(is_running(sleep));
        drop(call);
        assert!(
            wait_until_gone(sleep).await,
            "background sleep {sleep} survived"
        );
    }

    #[tokio::test]
    async fn background_jobs_are_killed_when_the_command_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        // The background sleep inherits stdout; without the group kill the call would
        // wait for its EOF for 30 s.
        let (result, _) = call(json!({
            "command": format!("sleep 30 & echo $! > {}; echo done", pidfile.display()),
        }))
        .await;
        result.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        let sleep = read_pid(&pidfile).await;
        assert!(
            wait_until_gone(sleep).await,
            "background sleep {sleep} survived"
        );
    }

    #[tokio::test]
    async fn lines_are_streamed_as_they_are_written() {
        let (result, lines) = call(json!({"command": "echo first; sleep 1; echo second"})).await;
        result.unwrap();
        let lines = lines.lock().unwrap().clone();
        let at = |text: &str| lines.iter().find(|line| line.message == text).unwrap().at;
        let gap = at("second") - at("first");
        assert!(gap >= Duration::from_millis(500), "gap {gap:?}");
    }

    #[tokio::test]
    async fn invalid_utf8_and_overlong_lines_are_logged_lossily_and_split() {
        let (result, lines) = call(json!({
            "command": "printf 'a\\377b\\r\\n'; head -c 40000 /dev/zero | tr '\\0' x",
        }))
        .await;
        result.unwrap();
        let stdout = messages(&lines, "stdout");
        assert_eq!(stdout[0], "a\u{FFFD}b");
        let lengths: Vec<usize> = stdout[1..].iter().map(String::len).collect();
        assert_eq!(
            lengths,
            [MAX_LINE_BYTES, MAX_LINE_BYTES, 40000 - 2 * MAX_LINE_BYTES]
        );
    }

    #[tokio::test]
    async fn malformed_payload_is_permanent() {
        let (result, _) = call(json!({"cmd": "x"})).await;
        let error = result.unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert!(
            error.message().contains("invalid process payload"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn bad_timeout_is_permanent() {
        let (result, _) = call(json!({"command": "true", "timeout_s": -1})).await;
        let error = result.unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert!(error.message().contains("timeout_s"), "{error}");
    }

    #[tokio::test]
    async fn missing_cwd_is_permanent_and_named() {
        let (result, _) = call(json!({"command": "true", "cwd": "/no/such/dir-4711"})).await;
        let error = result.unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert!(error.message().contains("/no/such/dir-4711"), "{error}");
    }

    #[tokio::test]
    async fn missing_shell_is_permanent() {
        let (sink, _) = capture();
        let error = ProcessExecutor::with_shell("/no/such/sh")
            .call(request(json!({"command": "true"}), sink))
            .await
            .unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert!(error.message().contains("/no/such/sh"), "{error}");
    }

    /// PDEATHSIG is tied to the forking thread; a command must not be killed because
    /// the thread that first polled the call went away.
    #[test]
    fn command_outlives_the_thread_that_started_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (sink, lines) = capture();
        let handle = runtime.handle().clone();
        let call = std::thread::spawn(move || {
            let payload = json!({"command": "echo started; sleep 1; echo done"});
            let mut call =
                Box::pin(async move { ProcessExecutor::new().call(request(payload, sink)).await });
            // First polls (and so the fork) happen on this thread, which then exits.
            handle.block_on(async {
                while !messages(&lines, "stdout").contains(&"started".to_owned()) {
                    let poll = tokio::time::timeout(Duration::from_millis(10), &mut call);
                    assert!(poll.await.is_err(), "call finished early");
                }
            });
            call
        })
        .join()
        .unwrap();
        let output = runtime.block_on(call).unwrap();
        assert_eq!(output["stdout_tail"], json!(["started", "done"]));
    }

    /// If the worker process is SIGKILLed, the command gets SIGKILL too. The worker is
    /// this test binary, re-run as a child process that we then kill.
    #[test]
    fn command_dies_with_the_worker() {
        const WORKER_ENV: &str = "MORPHEUS_TEST_PDEATHSIG_PIDFILE";
        let runtime = tokio::runtime::Runtime::new().unwrap();
        if let Ok(pidfile) = std::env::var(WORKER_ENV) {
            // Worker side: `exec` keeps the shell's pid (and its PDEATHSIG).
            let command = format!("echo $$ > {pidfile}; exec sleep 30");
            let _ = runtime.block_on(call(json!({ "command": command })));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::command_dies_with_the_worker",
                "--nocapture",
            ])
            .env(WORKER_ENV, &pidfile)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let sleep = runtime.block_on(read_pid(&pidfile));
        assert!(is_running(sleep));
        worker.kill().unwrap();
        worker.wait().unwrap();
        assert!(
            runtime.block_on(wait_until_gone(sleep)),
            "command {sleep} survived its worker"
        );
    }
}
