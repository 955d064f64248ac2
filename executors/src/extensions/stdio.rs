//! The `stdio` host: an extension is a child process speaking JSON Lines.
//!
//! - Morpheus writes one request per line on the child's stdin:
//!   `{"id": 7, "method": "charge", "params": {…}, "context": {…}}` (`context` only on
//!   step calls). The child answers on stdout, one line each, in any order:
//!   `{"id": 7, "result": …}` or `{"id": 7, "error": {"code", "message", "data"?}}`.
//! - A line without `id` is a notification. `{"method": "log", "params": {"level",
//!   "message", "fields"?, "id"?}}` lands in the run's logs under the step of request
//!   `id` (or of the only request in flight). Lines on stderr land there too, at
//!   `warn`.
//! - Anything else on stdout (not a JSON object, an `id` no request is waiting for, an
//!   answer with both or neither of `result` and `error`, a line over
//!   [`MAX_LINE_BYTES`]) breaks the instance: every request in flight fails retryably
//!   and the process is replaced.
//! - The process runs in its own process group with `PR_SET_PDEATHSIG(SIGKILL)` (it
//!   dies with the worker), sees only the allow-listed environment, starts in the
//!   granted directory, and gets `RLIMIT_AS` from `max_memory`. Stopping it kills the
//!   whole group.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use morpheus_engine::{LeaseCheck, LogLevel, LogSink};
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpid, Pid};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};
use tokio::sync::{oneshot, watch};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::config::{ExtensionConfig, Source, DEFAULT_ENV_ALLOW_LIST};
use super::protocol::{answer_of, methods, Answer, LogParams};
use super::{Host, Protocol, Request, Transport, TransportError};
use crate::process::{die_with_parent, exited, spawn};

/// Longest line accepted on stdout (an answer); a longer one breaks the instance.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Longest stderr line kept; longer ones are dropped with a note.
const MAX_STDERR_LINE_BYTES: usize = 16 * 1024;

/// How long to wait for the exit status after stdout closed, to say how it ended.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Starts process extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdioHost;

#[async_trait]
impl Host for StdioHost {
    fn protocol(&self) -> Protocol {
        Protocol::Stdio
    }

    async fn start(&self, config: &ExtensionConfig) -> Result<Arc<dyn Transport>, String> {
        let Source::Process { command, args, env } = &config.source else {
            return Err("a stdio extension needs a source of type \"process\"".to_owned());
        };
        let mut child_command = Command::new(command);
        child_command
            .args(args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let allowed: Vec<String> = match &config.permissions.env {
            Some(names) => names.clone(),
            None => DEFAULT_ENV_ALLOW_LIST
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
        };
        for name in &allowed {
            if let Some(value) = std::env::var_os(name) {
                child_command.env(name, value);
            }
        }
        child_command.envs(env);
        if let Some(directory) = config.permissions.filesystem.first() {
            if !Path::new(directory).is_dir() {
                return Err(format!(
                    "permissions.filesystem: {} is not a directory",
                    directory.display()
                ));
            }
            child_command.current_dir(directory);
        }
        let memory_limit = config.max_memory_bytes()?;
        let parent = getpid();
        // SAFETY: runs in the forked child before exec, where only async-signal-safe
        // work is allowed: prctl, getppid and setrlimit are plain syscalls, and the
        // errors are built from raw errnos without allocating.
        unsafe {
            child_command.pre_exec(move || {
                die_with_parent(parent)?;
                if let Some(bytes) = memory_limit {
                    setrlimit(Resource::RLIMIT_AS, bytes, bytes).map_err(io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = spawn(child_command, LeaseCheck::always())
            .await
            .map_err(|error| format!("cannot run {command:?}: {error}"))?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or("the child has no pid")?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the child has no stdin/stdout/stderr pipes".to_owned());
        };
        let (exit_sender, exit) = watch::channel(None);
        let transport = Arc::new(StdioTransport {
            name: config.name.clone(),
            stdin: tokio::sync::Mutex::new(stdin),
            calls: Arc::new(Mutex::new(Calls::default())),
            next_id: AtomicU64::new(1),
            pgid: Pid::from_raw(pid),
            reaped: Arc::new(AtomicBool::new(false)),
            exit,
        });
        // Exit watcher: sees the leader exit (unreaped, so its id stays ours), kills
        // the rest of the group, then reaps.
        {
            let pgid = transport.pgid;
            let reaped = transport.reaped.clone();
            tokio::spawn(async move {
                let _ = exited(pgid).await;
                kill_group(pgid);
                let status = child.wait().await;
                reaped.store(true, Ordering::SeqCst);
                let _ = exit_sender.send(Some(describe_exit(status)));
            });
        }
        tokio::spawn(read_answers(
            config.name.clone(),
            stdout,
            transport.calls.clone(),
            transport.exit.clone(),
        ));
        tokio::spawn(read_stderr(
            config.name.clone(),
            stderr,
            transport.calls.clone(),
        ));
        Ok(transport)
    }
}

struct StdioTransport {
    name: String,
    stdin: tokio::sync::Mutex<ChildStdin>,
    calls: Arc<Mutex<Calls>>,
    next_id: AtomicU64,
    pgid: Pid,
    reaped: Arc<AtomicBool>,
    /// How the process ended, once it has.
    exit: watch::Receiver<Option<String>>,
}

/// Requests waiting for their answers.
#[derive(Default)]
struct Calls {
    waiting: HashMap<u64, Waiting>,
    /// Requests given up on (their future was dropped): a late answer is discarded
    /// rather than taken for garbage.
    abandoned: HashSet<u64>,
    /// Set once the instance is broken: why.
    broken: Option<TransportError>,
}

struct Waiting {
    answer: oneshot::Sender<Result<Answer, TransportError>>,
    logs: LogSink,
}

impl Calls {
    /// Breaks the instance: every waiting request fails with `reason`.
    fn break_all(&mut self, reason: TransportError) {
        if self.broken.is_none() {
            self.broken = Some(reason.clone());
        }
        for (_, waiting) in self.waiting.drain() {
            let _ = waiting.answer.send(Err(reason.clone()));
        }
    }

    /// Where a line without a request id goes: the only request in flight, if any.
    fn sole_logs(&self) -> Option<LogSink> {
        (self.waiting.len() == 1)
            .then(|| {
                self.waiting
                    .values()
                    .next()
                    .map(|waiting| waiting.logs.clone())
            })
            .flatten()
    }
}

fn lock(calls: &Mutex<Calls>) -> std::sync::MutexGuard<'_, Calls> {
    calls.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a request from the waiting set when its future ends, however it ends.
struct Forget<'a> {
    calls: &'a Mutex<Calls>,
    id: u64,
    answered: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let mut calls = lock(self.calls);
            if calls.waiting.remove(&self.id).is_some() {
                calls.abandoned.insert(self.id);
            }
        }
    }
}

#[async_trait]
impl Transport for StdioTransport {
    async fn request(&self, request: Request<'_>) -> Result<Answer, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut calls = lock(&self.calls);
            if let Some(reason) = &calls.broken {
                return Err(reason.clone());
            }
            calls.waiting.insert(
                id,
                Waiting {
                    answer,
                    logs: request.logs.clone(),
                },
            );
        }
        let mut forget = Forget {
            calls: &self.calls,
            id,
            answered: false,
        };
        let mut message = json!({"id": id, "method": request.method, "params": request.params});
        if let Some(context) = request.context {
            message["context"] = serde_json::to_value(context).unwrap_or(Value::Null);
        }
        let mut line = message.to_string();
        line.push('\n');
        let written = tokio::time::timeout_at(request.deadline.into(), async {
            let mut stdin = self.stdin.lock().await;
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let reason = TransportError::Broken(
                    self.ended(format!("its stdin is closed ({error})")).await,
                );
                lock(&self.calls).break_all(reason.clone());
                return Err(reason);
            }
            Err(_) => {
                let reason = TransportError::TimedOut(format!(
                    "did not read its stdin within {}",
                    describe_wait(request.deadline)
                ));
                lock(&self.calls).break_all(reason.clone());
                return Err(reason);
            }
        }
        let outcome = tokio::time::timeout_at(request.deadline.into(), answered).await;
        forget.answered = true;
        match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(lock(&self.calls)
                .broken
                .clone()
                .unwrap_or_else(|| TransportError::Broken("the answer reader stopped".to_owned()))),
            Err(_) => {
                let reason =
                    TransportError::TimedOut(format!("did not answer {} in time", request.method));
                let mut calls = lock(&self.calls);
                calls.waiting.remove(&id);
                calls.break_all(reason.clone());
                Err(reason)
            }
        }
    }

    async fn stop(&self) {
        tracing::debug!(extension = %self.name, "stopping the extension process");
        lock(&self.calls).break_all(TransportError::Broken(
            "the extension was stopped".to_owned(),
        ));
        if !self.reaped.load(Ordering::SeqCst) {
            kill_group(self.pgid);
        }
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some)).await;
    }
}

impl StdioTransport {
    /// `what` happened; adds how the process ended if it did by now.
    async fn ended(&self, what: String) -> String {
        match exit_status(self.exit.clone()).await {
            Some(status) => format!("{what}: the process {status}"),
            None => what,
        }
    }
}

impl Drop for StdioTransport {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::SeqCst) {
            kill_group(self.pgid);
        }
    }
}

fn kill_group(pgid: Pid) {
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(%pgid, %error, "killing an extension's process group failed"),
    }
}

/// How the process ended, waiting up to [`EXIT_GRACE`] for it to end.
async fn exit_status(mut exit: watch::Receiver<Option<String>>) -> Option<String> {
    let ended = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some)).await;
    match ended {
        Ok(Ok(status)) => status.clone(),
        _ => None,
    }
}

fn describe_exit(status: io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => match Signal::try_from(signal) {
                Ok(signal) => format!("was killed by {signal}"),
                Err(_) => format!("was killed by signal {signal}"),
            },
            _ => "exited".to_owned(),
        },
        Err(error) => format!("could not be waited for ({error})"),
    }
}

fn describe_wait(deadline: Instant) -> String {
    let left = deadline.saturating_duration_since(Instant::now());
    format!("the deadline ({:.1}s left)", left.as_secs_f64())
}

/// Reads answers and notifications from stdout until it closes or misbehaves.
async fn read_answers(
    name: String,
    stdout: tokio::process::ChildStdout,
    calls: Arc<Mutex<Calls>>,
    exit: watch::Receiver<Option<String>>,
) {
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let reason = loop {
        match lines.next().await {
            None => {
                break TransportError::Broken(match exit_status(exit.clone()).await {
                    Some(status) => format!("the process {status}"),
                    None => "the process closed its stdout".to_owned(),
                });
            }
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                break TransportError::BadAnswer(format!(
                    "answered a line longer than {MAX_LINE_BYTES} bytes"
                ));
            }
            Some(Err(LinesCodecError::Io(error))) => {
                break TransportError::Broken(format!("reading its stdout failed: {error}"))
            }
            Some(Ok(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                if let Err(reason) = take_line(&name, &line, &calls) {
                    break TransportError::BadAnswer(reason);
                }
            }
        }
    };
    tracing::debug!(extension = %name, %reason, "extension stdout ended");
    lock(&calls).break_all(reason);
}

/// Handles one stdout line; an error breaks the instance.
fn take_line(name: &str, line: &str, calls: &Mutex<Calls>) -> Result<(), String> {
    let mut message = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(message)) => message,
        _ => {
            return Err(format!(
                "answered a line that is not a JSON object: {}",
                preview(line)
            ))
        }
    };
    match message.get("id").cloned() {
        None | Some(Value::Null) => {
            take_notification(name, &message, calls);
            Ok(())
        }
        Some(id) => {
            let Some(id) = id.as_u64() else {
                return Err(format!("answered with id {id}, which no request has"));
            };
            let answer = answer_of(&mut message)?;
            let mut calls = lock(calls);
            match calls.waiting.remove(&id) {
                Some(waiting) => {
                    let _ = waiting.answer.send(Ok(answer));
                    Ok(())
                }
                None if calls.abandoned.remove(&id) => Ok(()),
                None => Err(format!("answered id {id}, which no request is waiting for")),
            }
        }
    }
}

fn take_notification(name: &str, message: &serde_json::Map<String, Value>, calls: &Mutex<Calls>) {
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    if method != methods::LOG {
        tracing::debug!(extension = %name, %method, "ignoring an unknown notification");
        return;
    }
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let Ok(log) = serde_json::from_value::<LogParams>(params) else {
        tracing::warn!(extension = %name, "a log notification without a message: ignored");
        return;
    };
    let level = match log.level.as_deref() {
        Some("debug") => LogLevel::Debug,
        Some("warn" | "warning") => LogLevel::Warn,
        Some("error") => LogLevel::Error,
        _ => LogLevel::Info,
    };
    let sink = {
        let calls = lock(calls);
        match log.id {
            Some(id) => calls.waiting.get(&id).map(|waiting| waiting.logs.clone()),
            None => calls.sole_logs(),
        }
    };
    match sink {
        Some(sink) => sink.log(level, log.message, log.fields),
        None => tracing::info!(extension = %name, %level, "{}", log.message),
    }
}

/// Sends stderr lines to the request in flight (or the worker's log).
async fn read_stderr(name: String, stderr: tokio::process::ChildStderr, calls: Arc<Mutex<Calls>>) {
    let mut lines = FramedRead::new(
        stderr,
        LinesCodec::new_with_max_length(MAX_STDERR_LINE_BYTES),
    );
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                format!("(a stderr line over {MAX_STDERR_LINE_BYTES} bytes was dropped)")
            }
            Err(LinesCodecError::Io(_)) => break,
        };
        let sink = lock(&calls).sole_logs();
        match sink {
            Some(sink) => sink.log(LogLevel::Warn, line, Some(json!({"stream": "stderr"}))),
            None => tracing::warn!(extension = %name, "stderr: {line}"),
        }
    }
}

fn preview(line: &str) -> String {
    const LIMIT: usize = 200;
    if line.len() <= LIMIT {
        return format!("{line:?}");
    }
    let mut end = LIMIT;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &line[..end], line.len())
}
