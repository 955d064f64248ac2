//! The `extism` host: an extension is an [Extism](https://extism.org) WASM plugin, run
//! in-process and sandboxed.
//!
//! # Loading
//!
//! `source = {type = "wasm", path}` names a WebAssembly module, either binary (`.wasm`,
//! starting with `\0asm`) or WebAssembly text (`.wat`, compiled on load — handy for small
//! plugins and tests). A file that is neither, or a module that does not compile or
//! imports what the host does not provide, fails the start with one line saying so. The
//! module is compiled once per start (a restart reads the file again, so a fixed plugin
//! is picked up); instances are made from the compiled module.
//!
//! # Wire format
//!
//! A request calls the plugin's export named like the method (`initialize`,
//! `capabilities`, `shutdown` and the extension's own methods), of type `() -> i32`,
//! with one JSON envelope as its Extism input:
//!
//! ```json
//! {"params": {…}, "context": {"idempotency_key", "run_id", "step", "attempt", "deadline", "fencing_token"}}
//! ```
//!
//! (`context` is absent for the lifecycle requests.) The plugin reads it with the Extism
//! kernel's `input_length` / `input_load_u8` / `input_load_u64` and answers:
//!
//! - **a result**: the JSON it sets with `output_set` (no output at all is `null`).
//!   Output that is not JSON breaks the instance.
//! - **an error**: text set with `error_set` (or a non-zero return). Text that is a
//!   JSON-RPC error object `{"code", "message", "data"?}` is that error; any other text is
//!   `{"code": -32000, "message": <text>}`. The codes decide retries as for every
//!   protocol ([`RemoteError::is_retryable`]). Bare `"timeout"` and `"oom"` are what
//!   Extism itself reports, so a plugin should not use them as its whole error text.
//! - **no such export** (or one of another type): a `-32601` (method not found) answer.
//! - **a trap** (`unreachable`, an out-of-bounds access, …): the instance is broken, the
//!   call fails retryably and the extension is restarted.
//!
//! # Limits and sandbox
//!
//! - `max_execution_time` (default 60 s) is the Extism timeout of every call; the step's
//!   deadline applies too. A call past it is interrupted (wasmtime epochs, so even a
//!   tight loop stops): the instance is broken — "did not answer <method> within
//!   <limit>" — and restarted. Instances share one engine, whose epoch the interruption
//!   bumps, so calls in flight beside it are interrupted too (as a crashed process takes
//!   its calls with it).
//! - `max_memory` caps how far each instance's memory may grow (the plugin's own memory
//!   and the kernel's, together) past what the module declares at instantiation, in
//!   64 KiB pages, rounded down (at least one). Growing past it fails the call
//!   permanently ("exceeded its memory limit of N bytes") and replaces the instance.
//!   Without it, wasmtime's own limit (4 GiB per 32-bit memory) applies.
//! - `network`: the hosts the plugin may reach with the Extism kernel's `http_request`
//!   (Extism's `allowed_hosts`, on ureq). `false` or absent: none, every request fails
//!   with "HTTP request to <url> is not allowed" and nothing leaves the worker; `true`:
//!   any host (`*`); a list: only those. Extism matches each entry, a glob (`*`, `?`),
//!   against the URL's host alone — the port is not checked, and a name is not an
//!   address (`["127.0.0.1"]` does not allow `http://localhost/`). A request gets the
//!   call's remaining time as its timeout, and a response body over 50 MiB (Extism's
//!   default) fails the call. A refused request is a permanent plugin error (the
//!   instance stays up); a request that fails on the way (connection refused, timeout)
//!   is a host-function error, counted as a broken instance (the call fails retryably
//!   and the instance is restarted). WASI sockets are never granted.
//! - `filesystem`: each listed directory is preopened read-write at the same path inside
//!   the plugin. WASI preview 1 is always linked, since most PDKs' toolchains import it
//!   even for plugins that touch no file; the WASI context has no arguments, no
//!   environment, no stdio and no directory but the granted ones.
//! - The entry's `config` reaches the plugin in `initialize`, not through Extism's
//!   config store. Extism's `log_*` functions go to the worker's log (target `extism`).
//!
//! # Instances and concurrency
//!
//! Calls block, so each runs on tokio's blocking pool, on an instance checked out of a
//! small pool: idle instances are reused (no per-call instantiation), and a new one is
//! made only when every existing one is busy, so the pool grows to at most the
//! `concurrency` the plugin declares (the supervisor runs no more calls at once). Every
//! instance made after the first gets the same `initialize` envelope before its first
//! call, so state a plugin keeps from it is on every instance; `shutdown` goes to every
//! instance.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use extism::{CancelHandle, CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use serde::Serialize;
use serde_json::Value;

use super::config::{ExtensionConfig, NetworkGrant, Source};
use super::protocol::{codes, methods, Answer, CallContext, RemoteError};
use super::{Host, Protocol, Request, Transport, TransportError};

/// The size of a WebAssembly memory page, the unit of `max_memory` for a plugin.
pub const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// The code of a plugin error whose text is not a JSON-RPC error object.
pub const PLUGIN_ERROR_CODE: i64 = codes::SERVER_ERROR_MAX;

/// How long past a request's deadline the host waits for Extism's own timeout before it
/// interrupts the instance itself (the step's deadline can be shorter than the timeout).
const INTERRUPT_GRACE: Duration = Duration::from_millis(100);

/// How much short of `max_execution_time` a call may end and still count as having
/// used all of it (timers and thread hand-offs are not exact).
const LIMIT_SLACK: Duration = Duration::from_millis(5);

/// The limit a call ran into: `max_execution_time` when it had all of it, else the
/// step's (shorter) deadline.
fn describe_limit(given: Duration, timeout: Duration) -> String {
    if given + LIMIT_SLACK >= timeout {
        humantime::format_duration(timeout).to_string()
    } else {
        format!("{} ms (the step's deadline)", given.as_millis())
    }
}

/// Instantiates WASM plugins.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasmHost;

#[async_trait]
impl Host for WasmHost {
    fn protocol(&self) -> Protocol {
        Protocol::Extism
    }

    async fn start(&self, config: &ExtensionConfig) -> Result<Arc<dyn Transport>, String> {
        let Source::Wasm { path } = &config.source else {
            return Err("the extism protocol needs a source of type \"wasm\"".to_owned());
        };
        let limits = Limits {
            timeout: config.max_execution_time(),
            memory_pages: config.max_memory_bytes()?.map(memory_pages),
        };
        let path = path.clone();
        let directories = config.permissions.filesystem.clone();
        let hosts = allowed_hosts(&config.permissions.network);
        let name = config.name.clone();
        let pool = tokio::task::spawn_blocking(move || {
            let compiled = compile(&path, &limits, &directories, &hosts)?;
            Pool::new(name, compiled, limits)
        })
        .await
        .map_err(|error| format!("loading the module failed inside the host: {error}"))??;
        Ok(Arc::new(WasmTransport {
            pool: Arc::new(pool),
        }))
    }
}

/// The per-instance limits of one extension.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Extism's timeout for every call.
    timeout: Duration,
    /// The memory limit in pages, if any.
    memory_pages: Option<u32>,
}

/// `max_memory` in WASM pages: rounded down, at least one.
fn memory_pages(bytes: u64) -> u32 {
    u32::try_from(bytes / WASM_PAGE_BYTES)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Reads and compiles the module with the extension's limits and grants.
fn compile(
    path: &Path,
    limits: &Limits,
    directories: &[PathBuf],
    hosts: &[String],
) -> Result<CompiledPlugin, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if !bytes.starts_with(b"\0asm") && !looks_like_text(&bytes) {
        return Err(format!(
            "{} is not a WebAssembly module: neither binary (no \\0asm header) nor WebAssembly text",
            path.display()
        ));
    }
    let mut manifest = Manifest::new([Wasm::data(bytes)]).with_timeout(limits.timeout);
    if let Some(pages) = limits.memory_pages {
        manifest = manifest.with_memory_max(pages);
    }
    // No `allowed_hosts` at all is Extism's "no host": every request is refused.
    for host in hosts {
        manifest = manifest.with_allowed_host(host);
    }
    for directory in directories {
        if !directory.is_dir() {
            return Err(format!(
                "permissions.filesystem: {} is not a directory",
                directory.display()
            ));
        }
        let Some(host_path) = directory.to_str() else {
            return Err(format!(
                "permissions.filesystem: {} is not valid UTF-8",
                directory.display()
            ));
        };
        manifest = manifest.with_allowed_path(host_path.to_owned(), directory);
    }
    PluginBuilder::new(manifest)
        .with_wasi(true)
        // Compiling small plugins is quick; a disk cache would write outside the
        // worker's own directories.
        .with_cache_disabled()
        .compile()
        .map_err(|error| format!("cannot compile {}: {}", path.display(), one_line(&error)))
}

/// The manifest's `allowed_hosts` patterns for a grant: none for `false`, every host
/// for `true`, else the listed ones. Extism matches each pattern (a glob) against the
/// request URL's host alone, port ignored. An IPv6 literal's brackets (`[::1]`, as the
/// URL spells the host) would be a glob character class, so they are escaped.
fn allowed_hosts(grant: &NetworkGrant) -> Vec<String> {
    match grant {
        NetworkGrant::All(false) => Vec::new(),
        NetworkGrant::All(true) => vec!["*".to_owned()],
        NetworkGrant::Hosts(hosts) => hosts
            .iter()
            .map(|host| {
                if host.starts_with('[') {
                    host.chars()
                        .map(|c| match c {
                            '[' => "[[]".to_owned(),
                            ']' => "[]]".to_owned(),
                            other => other.to_string(),
                        })
                        .collect()
                } else {
                    host.clone()
                }
            })
            .collect(),
    }
}

/// Whether `bytes` can be WebAssembly text: UTF-8 opening with a form or a comment.
fn looks_like_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| {
        let text = text.trim_start();
        text.starts_with('(') || text.starts_with(";;")
    })
}

/// An error with its causes, on one line (wasmtime's messages span several).
fn one_line(error: &extism::Error) -> String {
    format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The input of every call.
#[derive(Serialize)]
struct Envelope<'a> {
    params: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a CallContext>,
}

/// The instances of one started extension.
struct Pool {
    name: String,
    compiled: CompiledPlugin,
    limits: Limits,
    /// Instances waiting for a call.
    idle: Mutex<Vec<Plugin>>,
    /// Every instance's handle, to interrupt the calls in flight.
    cancels: Mutex<Vec<CancelHandle>>,
    /// The `initialize` input, given to every instance made after the first.
    initialize: Mutex<Option<Arc<[u8]>>>,
    stopped: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool holding one instance, made now so that a module whose imports the host
    /// cannot satisfy fails the start.
    fn new(name: String, compiled: CompiledPlugin, limits: Limits) -> Result<Self, String> {
        let pool = Self {
            name,
            compiled,
            limits,
            idle: Mutex::new(Vec::new()),
            cancels: Mutex::new(Vec::new()),
            initialize: Mutex::new(None),
            stopped: AtomicBool::new(false),
        };
        let first = pool.instantiate().map_err(|error| error.to_string())?;
        lock(&pool.idle).push(first);
        Ok(pool)
    }

    fn instantiate(&self) -> Result<Plugin, TransportError> {
        let plugin = Plugin::new_from_compiled(&self.compiled).map_err(|error| {
            TransportError::Broken(format!(
                "cannot instantiate the module: {}",
                one_line(&error)
            ))
        })?;
        lock(&self.cancels).push(plugin.cancel_handle());
        Ok(plugin)
    }

    /// Runs one request on an idle (or new) instance. An instance that broke is dropped;
    /// the others go back to the pool.
    fn call(&self, method: &str, input: &[u8]) -> Result<Answer, TransportError> {
        let mut plugin = self.checkout(method)?;
        let answer = self.run(&mut plugin, method, input);
        if answer.is_ok() && !self.stopped.load(Ordering::SeqCst) {
            lock(&self.idle).push(plugin);
        }
        answer
    }

    fn checkout(&self, method: &str) -> Result<Plugin, TransportError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(TransportError::Broken(
                "the extension was stopped".to_owned(),
            ));
        }
        if let Some(plugin) = lock(&self.idle).pop() {
            return Ok(plugin);
        }
        tracing::debug!(extension = %self.name, "making another instance of the plugin");
        let mut plugin = self.instantiate()?;
        let replay = lock(&self.initialize).clone();
        if let Some(input) = replay.filter(|_| method != methods::INITIALIZE) {
            let failed = match self.run(&mut plugin, methods::INITIALIZE, &input) {
                Ok(Ok(_)) => None,
                Ok(Err(remote)) => Some(format!("{} (code {})", remote.message, remote.code)),
                Err(error) => Some(error.to_string()),
            };
            if let Some(reason) = failed {
                return Err(TransportError::Broken(format!(
                    "a new instance failed initialize: {reason}"
                )));
            }
        }
        Ok(plugin)
    }

    /// Calls the export `method` with `input` and reads its answer.
    fn run(
        &self,
        plugin: &mut Plugin,
        method: &str,
        input: &[u8],
    ) -> Result<Answer, TransportError> {
        if !plugin.function_exists(method) {
            return Ok(Err(RemoteError {
                code: codes::METHOD_NOT_FOUND,
                message: format!("the plugin exports no function '{method}' of type () -> i32"),
                data: None,
            }));
        }
        let started = Instant::now();
        match plugin.call::<&[u8], &[u8]>(method, input) {
            Ok(output) => decode(method, output),
            Err(error) => self.failure(method, &error, started.elapsed()),
        }
    }

    /// What a failed call means: an error answer, a broken instance, or a limit.
    fn failure(
        &self,
        method: &str,
        error: &extism::Error,
        elapsed: Duration,
    ) -> Result<Answer, TransportError> {
        if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
            return Err(TransportError::Broken(format!(
                "trapped in {method}: {trap}"
            )));
        }
        // A request to a host the grant does not name: the permission's verdict, which
        // no retry or restart changes, so a permanent plugin error (the instance is fine).
        let refusal = error.chain().map(ToString::to_string).find(|cause| {
            cause.starts_with("HTTP request to ") && cause.ends_with(" is not allowed")
        });
        if let Some(refusal) = refusal {
            return Ok(Err(RemoteError {
                code: PLUGIN_ERROR_CODE,
                message: format!("{refusal} (permissions.network)"),
                data: Some(serde_json::json!({"retryable": false})),
            }));
        }
        // Extism reports its own verdicts as bare messages, and the plugin's error text
        // the same way; anything with a chain of causes comes from the host.
        if error.chain().count() > 1 {
            return Err(TransportError::Broken(format!(
                "{method} failed: {}",
                one_line(error)
            )));
        }
        let text = error.to_string();
        match text.as_str() {
            "timeout" => {
                let timeout = self.limits.timeout;
                // The engine's epoch is shared: another instance's timeout (or a stop)
                // interrupts this call too, before its own limit.
                let reason = if elapsed + LIMIT_SLACK >= timeout {
                    format!(
                        "did not answer {method} within {}",
                        describe_limit(elapsed, timeout)
                    )
                } else {
                    format!(
                        "was interrupted in {method} after {} ms (another call timed out or the extension was stopped)",
                        elapsed.as_millis()
                    )
                };
                Err(TransportError::TimedOut(reason))
            }
            "oom" => Err(TransportError::LimitExceeded(format!(
                "exceeded its memory limit of {} bytes",
                self.memory_limit_bytes().unwrap_or(0)
            ))),
            _ => Ok(Err(
                match text.strip_prefix("Returned non-zero exit code: ") {
                    Some(code) => RemoteError {
                        code: PLUGIN_ERROR_CODE,
                        message: format!("{method} returned {code} without an error message"),
                        data: None,
                    },
                    None => plugin_error(&text),
                },
            )),
        }
    }

    fn memory_limit_bytes(&self) -> Option<u64> {
        self.limits
            .memory_pages
            .map(|pages| u64::from(pages) * WASM_PAGE_BYTES)
    }

    /// Sends `shutdown` to every idle instance; the first one's answer is the answer.
    fn shutdown(&self, input: &[u8]) -> Result<Answer, TransportError> {
        let mut instances = std::mem::take(&mut *lock(&self.idle));
        let mut first = None;
        for plugin in &mut instances {
            let answer = self.run(plugin, methods::SHUTDOWN, input);
            first.get_or_insert(answer);
        }
        lock(&self.idle).append(&mut instances);
        first.unwrap_or(Ok(Ok(Value::Null)))
    }

    /// Interrupts every call in flight.
    fn interrupt(&self) {
        for handle in lock(&self.cancels).iter() {
            if let Err(error) = handle.cancel() {
                tracing::debug!(extension = %self.name, %error, "interrupting a plugin call failed");
            }
        }
    }
}

/// A plugin's error text: a JSON-RPC error object, or plain text.
fn plugin_error(text: &str) -> RemoteError {
    serde_json::from_str::<RemoteError>(text).unwrap_or_else(|_| RemoteError {
        code: PLUGIN_ERROR_CODE,
        message: text.to_owned(),
        data: None,
    })
}

/// A plugin's output as the answer's result.
fn decode(method: &str, output: &[u8]) -> Result<Answer, TransportError> {
    if output.iter().all(u8::is_ascii_whitespace) {
        return Ok(Ok(Value::Null));
    }
    serde_json::from_slice(output).map(Ok).map_err(|error| {
        TransportError::BadAnswer(format!(
            "answered {method} with output that is not JSON ({error}): {}",
            preview(output)
        ))
    })
}

fn preview(output: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(&output[..output.len().min(LIMIT)]);
    if output.len() <= LIMIT {
        format!("{text:?}")
    } else {
        format!("{text:?}… ({} bytes)", output.len())
    }
}

/// One started extension: its pool of instances.
struct WasmTransport {
    pool: Arc<Pool>,
}

#[async_trait]
impl Transport for WasmTransport {
    async fn request(&self, request: Request<'_>) -> Result<Answer, TransportError> {
        let started = Instant::now();
        let input: Arc<[u8]> = serde_json::to_vec(&Envelope {
            params: request.params,
            context: request.context,
        })
        .map_err(|error| TransportError::Broken(format!("cannot encode the request: {error}")))?
        .into();
        let method = request.method.to_owned();
        let pool = self.pool.clone();
        let call = tokio::task::spawn_blocking(move || {
            if method == methods::SHUTDOWN {
                return pool.shutdown(&input);
            }
            let answer = pool.call(&method, &input);
            if method == methods::INITIALIZE && matches!(answer, Ok(Ok(_))) {
                *lock(&pool.initialize) = Some(input);
            }
            answer
        });
        let waited =
            tokio::time::timeout_at((request.deadline + INTERRUPT_GRACE).into(), call).await;
        match waited {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => Err(TransportError::Broken(format!(
                "{} failed inside the host: {error}",
                request.method
            ))),
            Err(_) => {
                // Extism's own timeout did not fire first: the step's deadline is the
                // shorter one. Interrupt the instance; its call ends as broken.
                self.pool.interrupt();
                let given = request.deadline.saturating_duration_since(started);
                Err(TransportError::TimedOut(format!(
                    "did not answer {} within {}",
                    request.method,
                    describe_limit(given, self.pool.limits.timeout)
                )))
            }
        }
    }

    async fn stop(&self) {
        tracing::debug!(extension = %self.pool.name, "stopping the plugin's instances");
        self.pool.stopped.store(true, Ordering::SeqCst);
        self.pool.interrupt();
        lock(&self.pool.idle).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_round_down_to_whole_pages() {
        assert_eq!(memory_pages(2_000_000), 30);
        assert_eq!(memory_pages(64 * 1024), 1);
        assert_eq!(memory_pages(1), 1);
        assert_eq!(memory_pages(u64::MAX), u32::MAX);
    }

    #[test]
    fn plugin_error_text_is_an_error_object_or_plain_text() {
        let object =
            plugin_error(r#"{"code":-32602,"message":"bad amount","data":{"field":"amount"}}"#);
        assert_eq!(object.code, codes::INVALID_PARAMS);
        assert_eq!(object.message, "bad amount");
        assert_eq!(object.data, Some(serde_json::json!({"field": "amount"})));
        let text = plugin_error("ledger is closed");
        assert_eq!(text.code, PLUGIN_ERROR_CODE);
        assert_eq!(text.message, "ledger is closed");
        let not_an_error = plugin_error(r#"{"reason":"x"}"#);
        assert_eq!(not_an_error.code, PLUGIN_ERROR_CODE);
    }

    #[test]
    fn outputs_are_json_or_nothing() {
        assert_eq!(decode("m", b""), Ok(Ok(Value::Null)));
        assert_eq!(
            decode("m", b" {\"a\":1}"),
            Ok(Ok(serde_json::json!({"a": 1})))
        );
        let Err(TransportError::BadAnswer(reason)) = decode("m", b"hello") else {
            panic!("garbage output must break the instance");
        };
        assert!(
            reason.starts_with("answered m with output that is not JSON"),
            "{reason}"
        );
        assert!(looks_like_text(b"  ;; a comment\n(module)"));
        assert!(!looks_like_text(b"hello"));
        assert!(!looks_like_text(&[0xff, 0x00, 0x28]));
    }
}
