//! Executors out of process: extensions reached over stdio, JSON-RPC or WASM.
//!
//! An extension is loaded from an `[[extensions]]` entry ([`ExtensionConfig`]) and
//! then *is* an executor named by its `name`: a step calls it with the payload
//! `{"method": "<method>", "params": {…}}` (see [`ExtensionCall`]), and the answer's
//! `result` is the step's output.
//!
//! One [`Host`] per protocol starts instances ([`Transport`]s): [`stdio`] runs a child
//! process speaking JSON Lines, [`jsonrpc`] POSTs JSON-RPC 2.0 to a URL, [`wasm`] runs
//! an Extism plugin. Above them, [`Extension`] is the same for every protocol:
//!
//! - **Lifecycle**: start → `initialize {config, protocol_version}` → `capabilities`
//!   (name, description, methods with optional JSON Schemas, `concurrency`) → calls →
//!   `shutdown`.
//! - **Calls** carry a [`CallContext`] (idempotency key, run, step, attempt, deadline,
//!   fencing token) so the extension can make its effect exactly once. Params are
//!   checked against the method's schema first: a mismatch is a permanent error naming
//!   the field. At most `concurrency` calls run at once; up to `queue` more wait, and
//!   past that calls are refused retryably (backpressure).
//! - **Failures**: an error answer is a step error (retryable or not by its code, see
//!   [`protocol::RemoteError`]). An extension that crashes, hangs past the deadline or
//!   answers garbage is *broken*: the call fails retryably (the engine retries the
//!   step at a persisted time) and the extension is restarted per its
//!   [`RestartStrategy`]. Once the strategy gives up the extension is `failed` and
//!   calls fail permanently, saying so.
//!
//! The [`ExtensionManager`] loads every entry, registers each as an executor and
//! reports their state ([`ExtensionStatus`]).

pub mod config;
pub mod jsonrpc;
pub mod metrics;
pub mod protocol;
pub mod stdio;
pub mod wasm;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use morpheus_engine::{
    ExecError, ExecOutput, ExecRequest, Executor, ExecutorRegistry, LogSink, StepError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

pub use config::{ExtensionConfig, Permissions, Protocol, RestartConfig, RestartStrategy, Source};
pub use protocol::{Answer, CallContext, Capabilities, MethodInfo, RemoteError};

use metrics::{ExtensionMetrics, FailureReason, MethodMetrics, Outcome, UNDECLARED_METHOD};
use protocol::{methods, Schema, PROTOCOL_VERSION};

/// One request to a started instance.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a str,
    /// Its params.
    pub params: &'a Value,
    /// The step's context (absent for lifecycle requests).
    pub context: Option<&'a CallContext>,
    /// When to give up waiting for the answer.
    pub deadline: Instant,
    /// Where the extension's log lines for this request go.
    pub logs: &'a LogSink,
}

/// Why a request got no well-formed answer. The first three make the instance
/// unusable: the call fails retryably and the instance is replaced; they differ only in
/// what the failure metrics say ([`metrics::FailureReason`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The instance crashed, exited, trapped or cannot be reached.
    Broken(String),
    /// The instance did not answer (or read the request) by the deadline.
    TimedOut(String),
    /// The instance answered something that is not a well-formed answer.
    BadAnswer(String),
    /// The call hit a resource limit (memory): it fails permanently, since the same
    /// call would hit it again; the instance is replaced.
    LimitExceeded(String),
}

impl TransportError {
    /// What the failure metrics call it.
    pub fn reason(&self) -> metrics::FailureReason {
        match self {
            Self::Broken(_) => metrics::FailureReason::Crash,
            Self::TimedOut(_) => metrics::FailureReason::Timeout,
            Self::BadAnswer(_) => metrics::FailureReason::BadAnswer,
            Self::LimitExceeded(_) => metrics::FailureReason::Memory,
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broken(reason)
            | Self::TimedOut(reason)
            | Self::BadAnswer(reason)
            | Self::LimitExceeded(reason) => f.write_str(reason),
        }
    }
}

/// A started instance of an extension: one process, one HTTP endpoint, one plugin.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends one request and waits for its answer until `request.deadline`.
    async fn request(&self, request: Request<'_>) -> Result<Answer, TransportError>;

    /// Stops the instance: `shutdown` first where it can still answer, then whatever
    /// the protocol needs (a process group is killed).
    async fn stop(&self);
}

/// Starts instances of one protocol.
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// The protocol this host speaks.
    fn protocol(&self) -> Protocol;

    /// Starts (spawns, connects to, instantiates) one instance. The lifecycle requests
    /// are sent by [`Extension`], not here.
    async fn start(&self, config: &ExtensionConfig) -> Result<Arc<dyn Transport>, String>;
}

/// The host of a protocol.
pub fn host_for(protocol: Protocol) -> Arc<dyn Host> {
    match protocol {
        Protocol::Stdio => Arc::new(stdio::StdioHost),
        Protocol::Jsonrpc => Arc::new(jsonrpc::JsonRpcHost::new()),
        Protocol::Extism => Arc::new(wasm::WasmHost),
    }
}

/// The payload a step sends to an extension executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionCall {
    /// The method (one the extension declared in `capabilities`).
    pub method: String,
    /// Its params (default `{}`).
    #[serde(default = "empty_object")]
    pub params: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Where an extension is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being started for the first time.
    Starting,
    /// Answering calls.
    Ready,
    /// Broken, and being restarted.
    Restarting,
    /// Broken, and its restart strategy gave up: calls fail permanently.
    Failed,
    /// Stopped by the worker.
    Stopped,
}

/// What `extensions list` shows for one extension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtensionStatus {
    /// The executor name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Where it is in its life.
    pub state: Phase,
    /// Restarts since the worker started.
    pub restarts: u32,
    /// Calls made (step calls, not lifecycle requests).
    pub calls: u64,
    /// Calls that failed, for any reason.
    pub failures: u64,
    /// Mean duration of a call, in milliseconds.
    pub mean_call_ms: f64,
    /// The last failure that broke it, if any.
    pub last_error: Option<String>,
    /// What it declared (absent until it first started).
    pub capabilities: Option<Capabilities>,
}

/// A loaded extension: the executor, its supervisor and its restart loop.
#[derive(Clone)]
pub struct Extension {
    shared: Arc<Shared>,
}

struct Shared {
    config: ExtensionConfig,
    host: Arc<dyn Host>,
    strategy: RestartStrategy,
    state: Mutex<State>,
    /// Bumped on every change of `state`, so waiters re-check it.
    changed: watch::Sender<u64>,
    /// Admission: `concurrency` running plus `queue` waiting.
    admission: Arc<Semaphore>,
    calls: AtomicU64,
    failures: AtomicU64,
    call_micros: AtomicU64,
    metrics: ExtensionMetrics,
}

struct State {
    phase: Phase,
    /// Which instance is current; a failure reported for an older one is ignored.
    generation: u64,
    instance: Option<Instance>,
    restarts: u32,
    restarts_in_a_row: u32,
    last_error: Option<String>,
    /// What the latest instance declared, kept while it is replaced (for the metrics'
    /// method labels).
    last_declared: Option<Arc<Declared>>,
}

/// One started and initialized instance.
#[derive(Clone)]
struct Instance {
    transport: Arc<dyn Transport>,
    declared: Arc<Declared>,
    running: Arc<Semaphore>,
}

struct Declared {
    capabilities: Capabilities,
    params: BTreeMap<String, Schema>,
    results: BTreeMap<String, Schema>,
    /// The call metrics of each declared method.
    metrics: BTreeMap<String, MethodMetrics>,
}

/// A failed call: the step's error, and why (for the failure metrics).
struct CallFailure {
    error: StepError,
    reason: FailureReason,
}

impl CallFailure {
    fn new(reason: FailureReason, error: StepError) -> Self {
        Self { error, reason }
    }
}

/// The time a lifecycle request (`initialize`, `capabilities`) may take.
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The time `shutdown` may take before the instance is stopped regardless.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

impl Extension {
    /// Starts the extension once (spawn/connect, `initialize`, `capabilities`); an
    /// error names the extension and says what failed.
    pub async fn load(config: ExtensionConfig) -> Result<Self, String> {
        config.validate()?;
        let host = host_for(config.protocol);
        Self::load_with(config, host).await
    }

    /// [`Extension::load`] with a given host (another implementation of a protocol).
    pub async fn load_with(config: ExtensionConfig, host: Arc<dyn Host>) -> Result<Self, String> {
        let strategy = config.restart.strategy();
        let instance = start_instance(&config, host.as_ref())
            .await
            .map_err(|error| format!("extension '{}': {error}", config.name))?;
        let admission = instance.declared.capabilities.concurrency + config.queue_capacity();
        let shared = Arc::new(Shared {
            strategy,
            host,
            state: Mutex::new(State {
                phase: Phase::Ready,
                generation: 1,
                last_declared: Some(instance.declared.clone()),
                instance: Some(instance),
                restarts: 0,
                restarts_in_a_row: 0,
                last_error: None,
            }),
            changed: watch::channel(0).0,
            admission: Arc::new(Semaphore::new(admission)),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            call_micros: AtomicU64::new(0),
            metrics: ExtensionMetrics::new(&config.name, config.protocol),
            config,
        });
        shared.metrics.active.increment(1.0);
        tracing::info!(extension = %shared.config.name, protocol = %shared.config.protocol, "extension loaded");
        Ok(Self { shared })
    }

    /// The executor name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &ExtensionConfig {
        &self.shared.config
    }

    /// What the current instance declared (`None` while none is running).
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.shared
            .lock()
            .instance
            .as_ref()
            .map(|instance| instance.declared.capabilities.clone())
    }

    /// Its state, restarts and call figures.
    pub fn status(&self) -> ExtensionStatus {
        let shared = &self.shared;
        let calls = shared.calls.load(Ordering::Relaxed);
        let micros = shared.call_micros.load(Ordering::Relaxed);
        let state = shared.lock();
        ExtensionStatus {
            name: shared.config.name.clone(),
            protocol: shared.config.protocol,
            state: state.phase,
            restarts: state.restarts,
            calls,
            failures: shared.failures.load(Ordering::Relaxed),
            mean_call_ms: if calls == 0 {
                0.0
            } else {
                micros as f64 / calls as f64 / 1000.0
            },
            last_error: state.last_error.clone(),
            capabilities: state
                .instance
                .as_ref()
                .map(|instance| instance.declared.capabilities.clone()),
        }
    }

    /// Whether it answers calls now.
    pub fn is_healthy(&self) -> bool {
        self.shared.lock().phase == Phase::Ready
    }

    /// Calls `method` with `params`. `context` is the step's (a direct call from the CLI
    /// makes one up); the call gives up at `deadline` or after the extension's
    /// `max_execution_time`, whichever is first.
    pub async fn call_method(
        &self,
        method: &str,
        params: &Value,
        context: &CallContext,
        deadline: Option<Instant>,
        logs: &LogSink,
    ) -> Result<Value, StepError> {
        let started = Instant::now();
        let shared = &self.shared;
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let mut declared = None;
        let result = self
            .call_inner(method, params, context, deadline, logs, &mut declared)
            .await
            .map_err(|failure| {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                shared.metrics.failed(failure.reason);
                failure.error
            });
        let took = started.elapsed();
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        shared.call_micros.fetch_add(micros, Ordering::Relaxed);
        let outcome = Outcome::of(&result);
        // A call refused before it reached an instance (busy, failed) is labelled by what
        // the last instance declared.
        let declared = declared.or_else(|| shared.lock().last_declared.clone());
        match declared.as_deref() {
            Some(declared) => match declared.metrics.get(method) {
                Some(handles) => handles.record(outcome, took),
                // An extension that declares no methods takes any: label them as called.
                None if declared.capabilities.methods.is_empty() => {
                    shared.metrics.call_undeclared(method, outcome, took)
                }
                None => shared
                    .metrics
                    .call_undeclared(UNDECLARED_METHOD, outcome, took),
            },
            None => shared
                .metrics
                .call_undeclared(UNDECLARED_METHOD, outcome, took),
        }
        result
    }

    async fn call_inner(
        &self,
        method: &str,
        params: &Value,
        context: &CallContext,
        deadline: Option<Instant>,
        logs: &LogSink,
        reached: &mut Option<Arc<Declared>>,
    ) -> Result<Value, CallFailure> {
        let shared = &self.shared;
        let name = &shared.config.name;
        let Ok(_admitted) = shared.admission.clone().try_acquire_owned() else {
            return Err(CallFailure::new(FailureReason::Busy, StepError::retryable(format!(
                "extension '{name}' is busy: {} calls are already waiting (raise `queue` to allow more)",
                shared.config.queue_capacity()
            ))));
        };
        // Waiting through a restart is not the extension's execution time: a call that
        // arrives while another call's limit broke the instance gets what a restart takes
        // (bounded by the caller's own deadline), and its execution limit starts once an
        // instance is ready. Otherwise a slow reload on a loaded machine would fail calls
        // that never ran.
        let ready_by = deadline.unwrap_or_else(|| Instant::now() + LIFECYCLE_TIMEOUT);
        let (instance, generation) = self.ready_instance(ready_by).await?;
        let limit = Instant::now() + shared.config.max_execution_time();
        let deadline = deadline.map_or(limit, |deadline| deadline.min(limit));
        let declared = &instance.declared;
        *reached = Some(declared.clone());
        if !declared.capabilities.methods.is_empty()
            && declared.capabilities.method(method).is_none()
        {
            let known: Vec<_> = declared
                .capabilities
                .methods
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            return Err(CallFailure::new(
                FailureReason::UnknownMethod,
                StepError::permanent(format!(
                    "extension '{name}' has no method '{method}' (it offers: {})",
                    known.join(", ")
                )),
            ));
        }
        if let Some(schema) = declared.params.get(method) {
            schema.check(params, "params").map_err(|problem| {
                CallFailure::new(
                    FailureReason::Schema,
                    StepError::permanent(format!("extension '{name}' {method}: {problem}")),
                )
            })?;
        }
        let _running =
            tokio::time::timeout_at(deadline.into(), instance.running.clone().acquire_owned())
                .await
                .map_err(|_| {
                    CallFailure::new(
                        FailureReason::Queued,
                        StepError::retryable(format!(
                    "extension '{name}' {method}: still queued behind other calls at the deadline"
                )),
                    )
                })?
                .map_err(|_| {
                    CallFailure::new(
                        FailureReason::Unavailable,
                        StepError::retryable(format!(
                            "extension '{name}' was restarted while the call waited"
                        )),
                    )
                })?;
        let answer = instance
            .transport
            .request(Request {
                method,
                params,
                context: Some(context),
                deadline,
                logs,
            })
            .await;
        match answer {
            Ok(Ok(result)) => {
                self.healthy_call(generation);
                if let Some(schema) = declared.results.get(method) {
                    if let Err(problem) = schema.check(&result, "result") {
                        logs.warn(format!(
                            "extension '{name}' {method}: the result does not match its declared schema: {problem}"
                        ));
                    }
                }
                Ok(result)
            }
            Ok(Err(remote)) => {
                self.healthy_call(generation);
                Err(CallFailure::new(
                    FailureReason::Error,
                    remote.step_error(name, method),
                ))
            }
            Err(TransportError::LimitExceeded(reason)) => {
                let message = format!("extension '{name}' {method}: {reason}");
                self.broken(generation, &message);
                Err(CallFailure::new(
                    FailureReason::Memory,
                    StepError::permanent(message),
                ))
            }
            Err(broken) => {
                let message = format!("extension '{name}' {method}: {broken}");
                self.broken(generation, &message);
                Err(CallFailure::new(
                    broken.reason(),
                    StepError::retryable(format!(
                        "{message}; it is being restarted and the step will be retried"
                    )),
                ))
            }
        }
    }

    /// The current instance once one is ready (waiting through a restart until
    /// `deadline`), or why there is none.
    async fn ready_instance(&self, deadline: Instant) -> Result<(Instance, u64), CallFailure> {
        let name = &self.shared.config.name;
        let mut changes = self.shared.changed.subscribe();
        loop {
            {
                let state = self.shared.lock();
                match (state.phase, &state.instance) {
                    (Phase::Ready, Some(instance)) => return Ok((instance.clone(), state.generation)),
                    (Phase::Failed, _) => {
                        return Err(CallFailure::new(FailureReason::Failed, StepError::permanent(format!(
                            "extension '{name}' has failed and will not be restarted (restart strategy exhausted after {} restarts; last error: {}); fix it and restart the worker",
                            state.restarts,
                            state.last_error.as_deref().unwrap_or("unknown")
                        ))))
                    }
                    (Phase::Stopped, _) => {
                        return Err(CallFailure::new(FailureReason::Unavailable, StepError::retryable(format!("extension '{name}' is stopped (the worker is shutting down)"))))
                    }
                    _ => {}
                }
            }
            if tokio::time::timeout_at(deadline.into(), changes.changed())
                .await
                .is_err()
            {
                return Err(CallFailure::new(
                    FailureReason::Unavailable,
                    StepError::retryable(format!(
                        "extension '{name}' is restarting and was not ready by the deadline"
                    )),
                ));
            }
        }
    }

    fn healthy_call(&self, generation: u64) {
        let mut state = self.shared.lock();
        if state.generation == generation {
            state.restarts_in_a_row = 0;
        }
    }

    /// Marks instance `generation` broken and starts the restart loop (once per instance).
    fn broken(&self, generation: u64, reason: &str) {
        let old = {
            let mut state = self.shared.lock();
            if state.generation != generation || state.phase != Phase::Ready {
                return;
            }
            state.last_error = Some(reason.to_owned());
            state.phase = Phase::Restarting;
            self.shared.metrics.active.decrement(1.0);
            state.instance.take()
        };
        self.shared.notify();
        tracing::warn!(extension = %self.shared.config.name, %reason, "extension broken");
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(old) = old {
                old.running.close();
                old.transport.stop().await;
            }
            this.restart_loop().await;
        });
    }

    async fn restart_loop(&self) {
        let name = self.shared.config.name.clone();
        loop {
            let attempt = {
                let mut state = self.shared.lock();
                if state.phase == Phase::Stopped {
                    return;
                }
                state.restarts_in_a_row += 1;
                state.restarts_in_a_row
            };
            let Some(delay) = self.shared.strategy.delay_before(attempt) else {
                {
                    let mut state = self.shared.lock();
                    if state.phase != Phase::Stopped {
                        state.phase = Phase::Failed;
                    }
                }
                self.shared.notify();
                tracing::error!(extension = %name, "extension failed: its restart strategy gave up");
                return;
            };
            tokio::time::sleep(delay).await;
            let started = start_instance(&self.shared.config, self.shared.host.as_ref()).await;
            let mut state = self.shared.lock();
            state.restarts += 1;
            self.shared.metrics.restarts.increment(1);
            if state.phase == Phase::Stopped {
                if let Ok(instance) = started {
                    tokio::spawn(async move { instance.transport.stop().await });
                }
                return;
            }
            match started {
                Ok(instance) => {
                    state.last_declared = Some(instance.declared.clone());
                    state.instance = Some(instance);
                    state.generation += 1;
                    state.phase = Phase::Ready;
                    self.shared.metrics.active.increment(1.0);
                    drop(state);
                    self.shared.notify();
                    tracing::info!(extension = %name, attempt, "extension restarted");
                    return;
                }
                Err(error) => {
                    tracing::warn!(extension = %name, attempt, %error, "extension restart failed");
                    state.last_error = Some(error);
                }
            }
        }
    }

    /// Sends `shutdown` and stops the instance; later calls fail retryably.
    pub async fn stop(&self) {
        let instance = {
            let mut state = self.shared.lock();
            if state.phase == Phase::Ready {
                self.shared.metrics.active.decrement(1.0);
            }
            state.phase = Phase::Stopped;
            state.instance.take()
        };
        self.shared.notify();
        if let Some(instance) = instance {
            // Let calls in flight finish (bounded), then say goodbye.
            let everyone = instance.declared.capabilities.concurrency as u32;
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, instance.running.acquire_many(everyone))
                .await;
            let _ = instance
                .transport
                .request(Request {
                    method: methods::SHUTDOWN,
                    params: &json!({}),
                    context: None,
                    deadline: Instant::now() + SHUTDOWN_TIMEOUT,
                    logs: &LogSink::discard(),
                })
                .await;
            instance.transport.stop().await;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_modify(|version| *version += 1);
    }
}

/// Starts one instance and runs `initialize` and `capabilities` on it.
async fn start_instance(config: &ExtensionConfig, host: &dyn Host) -> Result<Instance, String> {
    let transport = host
        .start(config)
        .await
        .map_err(|error| format!("could not start: {error}"))?;
    match handshake(config, transport.as_ref()).await {
        Ok(declared) => Ok(Instance {
            running: Arc::new(Semaphore::new(declared.capabilities.concurrency)),
            declared: Arc::new(declared),
            transport,
        }),
        Err(error) => {
            transport.stop().await;
            Err(error)
        }
    }
}

async fn handshake(
    config: &ExtensionConfig,
    transport: &dyn Transport,
) -> Result<Declared, String> {
    let logs = LogSink::new({
        let name = config.name.clone();
        move |level, message, _| tracing::info!(extension = %name, %level, "{message}")
    });
    let lifecycle = |method: &'static str, params: Value| {
        let logs = logs.clone();
        async move {
            match transport
                .request(Request {
                    method,
                    params: &params,
                    context: None,
                    deadline: Instant::now() + LIFECYCLE_TIMEOUT,
                    logs: &logs,
                })
                .await
            {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(remote)) => Err(format!(
                    "{method} failed: {} (code {})",
                    remote.message, remote.code
                )),
                Err(error) => Err(format!("{method} failed: {error}")),
            }
        }
    };
    lifecycle(
        methods::INITIALIZE,
        json!({"config": config.config, "protocol_version": PROTOCOL_VERSION}),
    )
    .await?;
    let answer = lifecycle(methods::CAPABILITIES, json!({})).await?;
    let capabilities: Capabilities = serde_json::from_value(answer).map_err(|error| {
        format!(
            "capabilities: the answer is not {{name, description, methods, concurrency}}: {error}"
        )
    })?;
    capabilities.validate()?;
    let mut params = BTreeMap::new();
    let mut results = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for method in &capabilities.methods {
        metrics.insert(
            method.name.clone(),
            MethodMetrics::new(&config.name, &method.name),
        );
        if let Some(schema) = &method.params {
            params.insert(
                method.name.clone(),
                Schema::compile(schema, &format!("{} params", method.name))?,
            );
        }
        if let Some(schema) = &method.result {
            results.insert(
                method.name.clone(),
                Schema::compile(schema, &format!("{} result", method.name))?,
            );
        }
    }
    Ok(Declared {
        capabilities,
        params,
        results,
        metrics,
    })
}

#[async_trait]
impl Executor for Extension {
    fn kind(&self) -> &str {
        self.name()
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        let call = ExtensionCall::deserialize(&request.payload).map_err(|error| {
            StepError::permanent(format!(
                "invalid payload for extension '{}': {error} (expected {{\"method\": string, \"params\"?: any}})",
                self.name()
            ))
        })?;
        if !request.lease.is_held() {
            return Err(StepError::retryable(format!(
                "extension '{}' {}: the run's lease lapsed before the call was sent",
                self.name(),
                call.method
            )));
        }
        let deadline = request
            .deadline
            .unwrap_or_else(|| Instant::now() + self.shared.config.max_execution_time())
            .min(Instant::now() + self.shared.config.max_execution_time());
        let context = CallContext::new(
            &request.idempotency_key,
            request.attempt,
            request.fencing_token,
            wall_clock(deadline),
        );
        // The step's own deadline: `call_inner` applies the execution limit once an
        // instance is ready.
        self.call_method(
            &call.method,
            &call.params,
            &context,
            request.deadline,
            &request.logs,
        )
        .await
    }
}

/// The wall-clock time of a monotonic instant.
pub fn wall_clock(instant: Instant) -> chrono::DateTime<chrono::Utc> {
    let now = Instant::now();
    let wall = chrono::Utc::now();
    match instant.checked_duration_since(now) {
        Some(ahead) => wall + chrono::Duration::from_std(ahead).unwrap_or(chrono::Duration::MAX),
        None => {
            wall - chrono::Duration::from_std(now - instant).unwrap_or(chrono::Duration::zero())
        }
    }
}

impl fmt::Debug for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extension")
            .field("name", &self.shared.config.name)
            .field("protocol", &self.shared.config.protocol)
            .finish()
    }
}

/// Every loaded extension, by name.
#[derive(Debug, Default, Clone)]
pub struct ExtensionManager {
    extensions: BTreeMap<String, Extension>,
}

impl ExtensionManager {
    /// Checks every entry (names unique, none clashing with `taken` executor names),
    /// then loads the enabled ones, in order. The first problem is the error: one line
    /// naming the entry; extensions already started are stopped again.
    pub async fn load(configs: &[ExtensionConfig], taken: &[String]) -> Result<Self, String> {
        Self::check(configs, taken)?;
        let mut manager = Self::default();
        for config in configs.iter().filter(|config| config.enabled) {
            match Extension::load(config.clone()).await {
                Ok(extension) => {
                    manager.extensions.insert(config.name.clone(), extension);
                }
                Err(error) => {
                    manager.stop().await;
                    return Err(error);
                }
            }
        }
        Ok(manager)
    }

    /// Checks entries without starting anything.
    pub fn check(configs: &[ExtensionConfig], taken: &[String]) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for config in configs {
            config.validate()?;
            if taken.contains(&config.name) {
                return Err(format!(
                    "extension '{}': name: a built-in executor is already called that",
                    config.name
                ));
            }
            if !seen.insert(config.name.as_str()) {
                return Err(format!(
                    "extension '{}': name: used by two entries",
                    config.name
                ));
            }
        }
        Ok(())
    }

    /// Registers every loaded extension as an executor under its name.
    pub fn register(&self, registry: &mut ExecutorRegistry) {
        for extension in self.extensions.values() {
            registry.register(extension.clone());
        }
    }

    /// The extension called `name`.
    pub fn get(&self, name: &str) -> Option<&Extension> {
        self.extensions.get(name)
    }

    /// Whether none is loaded.
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
    }

    /// The status of each, by name.
    pub fn statuses(&self) -> Vec<ExtensionStatus> {
        self.extensions.values().map(Extension::status).collect()
    }

    /// Stops every extension.
    pub async fn stop(&self) {
        futures::future::join_all(self.extensions.values().map(Extension::stop)).await;
    }
}
