//! Extension hosts against real extensions: a Python program over stdio, the same
//! program serving JSON-RPC over HTTP on loopback, and an Extism plugin in WebAssembly
//! text that behaves like it (`fixtures/wasm/conformance.wat`). The conformance tests
//! run unchanged on all three protocols (initialize, capabilities, echo, error format,
//! concurrency, timeouts, schemas); the rest exercise what only one protocol has (log
//! notifications, crashes and garbage on stdio, a service that goes away over HTTP).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogLevel, LogSink, StepError};
use morpheus_executors::extensions::{Extension, ExtensionConfig, ExtensionManager, Phase};
use morpheus_tests::extensions::{conformance_script, wasm_plugin, ConformanceService};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Stdio,
    JsonRpc,
    Wasm,
}

impl Kind {
    /// What the error of a `sleep` call stopped at the 300 ms `max_execution_time`
    /// says. The process hosts wait for an answer that never comes ("in time"); the
    /// WASM host interrupts the call itself at its Extism timeout and names the limit.
    fn sleep_timeout_wording(self) -> &'static str {
        match self {
            Kind::Stdio | Kind::JsonRpc => "did not answer sleep in time",
            Kind::Wasm => "did not answer sleep within 300ms",
        }
    }
}

/// One extension under test (and the service behind it, for JSON-RPC).
struct Fixture {
    extension: Extension,
    _service: Option<ConformanceService>,
}

fn config(kind: Kind, service: Option<&ConformanceService>, extra: Value) -> ExtensionConfig {
    let mut entry = match kind {
        Kind::Stdio => json!({
            "name": "conformance",
            "protocol": "stdio",
            "source": {"type": "process", "command": "python3", "args": [conformance_script()]},
        }),
        Kind::JsonRpc => json!({
            "name": "conformance",
            "protocol": "jsonrpc",
            "source": {"type": "http", "url": service.expect("a service").url()},
        }),
        Kind::Wasm => json!({
            "name": "conformance",
            "protocol": "extism",
            "source": {"type": "wasm", "path": wasm_plugin("conformance.wat")},
        }),
    };
    for (key, value) in extra.as_object().unwrap() {
        entry[key] = value.clone();
    }
    serde_json::from_value(entry).expect("a valid entry")
}

async fn load(kind: Kind, extra: Value) -> Fixture {
    let service = matches!(kind, Kind::JsonRpc).then(|| ConformanceService::start(None));
    let extension = Extension::load(config(kind, service.as_ref(), extra))
        .await
        .expect("loads");
    Fixture {
        extension,
        _service: service,
    }
}

type Lines = Arc<Mutex<Vec<(LogLevel, String, Option<Value>)>>>;

fn capture() -> (LogSink, Lines) {
    let lines: Lines = Arc::default();
    let sink = {
        let lines = lines.clone();
        LogSink::new(move |level, message, fields| {
            lines.lock().unwrap().push((level, message, fields))
        })
    };
    (sink, lines)
}

fn request(key: &str, payload: Value, logs: LogSink) -> ExecRequest {
    ExecRequest {
        idempotency_key: key.to_owned(),
        attempt: 1,
        fencing_token: 4,
        lease: LeaseCheck::always(),
        deadline: Some(Instant::now() + Duration::from_secs(20)),
        payload,
        logs,
    }
}

async fn call(extension: &Extension, method: &str, params: Value) -> Result<Value, StepError> {
    extension
        .call(request(
            "0190aaaa-0000-7000-8000-000000000001/step-1",
            json!({"method": method, "params": params}),
            LogSink::discard(),
        ))
        .await
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- conformance: the same tests on every protocol ---------------------------

async fn initialize_and_capabilities(kind: Kind) {
    let fixture = load(kind, json!({"config": {"concurrency": 3}})).await;
    let capabilities = fixture.extension.capabilities().expect("declared");
    assert_eq!(capabilities.name, "conformance");
    assert_eq!(
        capabilities.concurrency, 3,
        "initialize received the entry's config"
    );
    assert!(capabilities.method("echo").is_some());
    let status = fixture.extension.status();
    assert_eq!(status.state, Phase::Ready);
    assert_eq!(status.restarts, 0);
}

async fn echo_carries_params_and_context(kind: Kind) {
    let fixture = load(kind, json!({})).await;
    let params = json!({"amount": 5, "nested": {"list": [1, "two", null]}});
    let answer = fixture
        .extension
        .call(request(
            "0190aaaa-0000-7000-8000-000000000001/charge#2",
            json!({"method": "echo", "params": params}),
            LogSink::discard(),
        ))
        .await
        .expect("echo answers");
    assert_eq!(answer["params"], params);
    let context = &answer["context"];
    assert_eq!(
        context["idempotency_key"],
        "0190aaaa-0000-7000-8000-000000000001/charge#2"
    );
    assert_eq!(context["run_id"], "0190aaaa-0000-7000-8000-000000000001");
    assert_eq!(context["step"], "charge#2");
    assert_eq!(context["attempt"], 1);
    assert_eq!(context["fencing_token"], 4);
    let deadline = chrono::DateTime::parse_from_rfc3339(context["deadline"].as_str().unwrap())
        .expect("the deadline is RFC 3339");
    let ahead = deadline.signed_duration_since(chrono::Utc::now());
    assert!(
        ahead > chrono::Duration::seconds(10) && ahead <= chrono::Duration::seconds(21),
        "deadline {deadline} is about 20 s ahead"
    );
}

async fn error_answers_keep_their_code_and_meaning(kind: Kind) {
    let fixture = load(kind, json!({})).await;
    let error = call(&fixture.extension, "fail", json!({}))
        .await
        .unwrap_err();
    assert!(
        !error.is_retryable(),
        "invalid params is permanent: {error:?}"
    );
    assert_eq!(
        error.message(),
        "extension 'conformance' fail: bad amount (code -32602)"
    );
    // The extension stays healthy after an error answer.
    assert!(fixture.extension.is_healthy());
    assert!(call(&fixture.extension, "echo", json!({})).await.is_ok());
}

async fn params_are_checked_against_the_schema(kind: Kind) {
    let fixture = load(kind, json!({})).await;
    let error = call(&fixture.extension, "sleep", json!({"ms": "soon"}))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.message().contains("params.ms"),
        "the error names the field: {}",
        error.message()
    );
    let missing = call(&fixture.extension, "sleep", json!({}))
        .await
        .unwrap_err();
    assert!(missing.message().contains("ms"), "{}", missing.message());
    let unknown = call(&fixture.extension, "transmogrify", json!({}))
        .await
        .unwrap_err();
    assert!(!unknown.is_retryable());
    assert!(unknown.message().contains("has no method 'transmogrify'"));
    let payload = fixture
        .extension
        .call(request("r/s", json!({"params": {}}), LogSink::discard()))
        .await
        .unwrap_err();
    assert!(
        payload.message().contains("expected {\"method\""),
        "{}",
        payload.message()
    );
}

/// Spans `(start, end)` of calls made at once to `sleep`.
async fn sleep_spans(extension: &Extension, calls: usize) -> Vec<(Instant, Instant)> {
    let spans = futures::future::join_all((0..calls).map(|_| async {
        let start = Instant::now();
        call(extension, "sleep", json!({"ms": 200}))
            .await
            .expect("sleeps");
        (start, Instant::now())
    }))
    .await;
    spans
}

async fn concurrency_is_honoured(kind: Kind) {
    // Declared concurrency 4: four calls run at once, so they all overlap.
    let parallel = load(kind, json!({"config": {"concurrency": 4}})).await;
    let answers = futures::future::join_all(
        (0..4).map(|_| async { call(&parallel.extension, "sleep", json!({"ms": 300})).await }),
    )
    .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    // Sequential (the default): the extension never sees two calls at once, so four
    // 200 ms calls take at least 800 ms end to end.
    let sequential = load(kind, json!({})).await;
    let spans = sleep_spans(&sequential.extension, 4).await;
    let first = spans.iter().map(|span| span.0).min().unwrap();
    let last = spans.iter().map(|span| span.1).max().unwrap();
    assert!(
        last - first >= Duration::from_millis(800),
        "sequential calls were queued, not run together ({:?})",
        last - first
    );
    let parallel_spans = sleep_spans(&parallel.extension, 4).await;
    let first = parallel_spans.iter().map(|span| span.0).min().unwrap();
    let last = parallel_spans.iter().map(|span| span.1).max().unwrap();
    assert!(
        last - first < Duration::from_millis(800),
        "parallel calls overlapped ({:?})",
        last - first
    );
}

async fn a_hung_call_times_out_and_the_extension_is_restarted(kind: Kind) {
    let fixture = load(
        kind,
        json!({"permissions": {"max_execution_time": "300ms"},
               "restart": {"strategy": "immediate", "max_retries": 3}}),
    )
    .await;
    let error = call(&fixture.extension, "sleep", json!({"ms": 5000}))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        error.message().contains(kind.sleep_timeout_wording()),
        "{}",
        error.message()
    );
    wait_until("the extension is back", || {
        fixture.extension.status().restarts == 1
    })
    .await;
    wait_until("it is ready", || fixture.extension.is_healthy()).await;
    assert!(call(&fixture.extension, "echo", json!({})).await.is_ok());
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod stdio {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Kind::Stdio).await }) *
        }
        mod jsonrpc {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Kind::JsonRpc).await }) *
        }
        mod wasm {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Kind::Wasm).await }) *
        }
    };
}

conformance!(
    initialize_and_capabilities,
    echo_carries_params_and_context,
    error_answers_keep_their_code_and_meaning,
    params_are_checked_against_the_schema,
    concurrency_is_honoured,
    a_hung_call_times_out_and_the_extension_is_restarted,
);

// --- stdio only -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_notifications_and_stderr_land_in_the_step_logs() {
    let fixture = load(Kind::Stdio, json!({})).await;
    let (logs, lines) = capture();
    fixture
        .extension
        .call(request("r/s", json!({"method": "log"}), logs))
        .await
        .expect("log answers");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|(level, message, fields)| *level == LogLevel::Warn
                && message == "from the extension"
                && fields.as_ref() == Some(&json!({"n": 1}))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, message, fields)| message == "a stderr line"
                && fields.as_ref() == Some(&json!({"stream": "stderr"}))),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_is_retryable_and_the_process_is_replaced() {
    let fixture = load(Kind::Stdio, json!({"restart": {"strategy": "immediate"}})).await;
    let before = call(&fixture.extension, "sleep", json!({"ms": 0}))
        .await
        .unwrap()["pid"]
        .clone();
    let error = call(&fixture.extension, "crash", json!({}))
        .await
        .unwrap_err();
    assert!(error.is_retryable());
    assert!(
        error.message().contains("exited with code 3"),
        "the error says how it ended: {}",
        error.message()
    );
    wait_until("restarted", || fixture.extension.is_healthy()).await;
    let after = call(&fixture.extension, "sleep", json!({"ms": 0}))
        .await
        .unwrap()["pid"]
        .clone();
    assert_ne!(before, after, "a new process answers");
    assert_eq!(fixture.extension.status().restarts, 1);
    assert!(fixture
        .extension
        .status()
        .last_error
        .unwrap()
        .contains("crash"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_break_the_instance_with_a_clear_error() {
    let fixture = load(
        Kind::Stdio,
        json!({"restart": {"strategy": "immediate", "max_retries": 10}}),
    )
    .await;
    for (method, expected) in [
        ("garbage", "not a JSON object: \"this is not json\""),
        ("wrong_id", "which no request is waiting for"),
        ("both", "both \"result\" and \"error\""),
        ("huge", "longer than 8388608 bytes"),
    ] {
        wait_until("ready", || fixture.extension.is_healthy()).await;
        let error = call(&fixture.extension, method, json!({}))
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{method}: {error:?}");
        assert!(
            error.message().contains(expected),
            "{method}: {}",
            error.message()
        );
    }
    wait_until("ready", || fixture.extension.is_healthy()).await;
    assert!(call(&fixture.extension, "echo", json!({})).await.is_ok());
    assert_eq!(fixture.extension.status().restarts, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_strategy_gives_up_calls_fail_permanently() {
    let fixture = load(Kind::Stdio, json!({"restart": {"strategy": "never"}})).await;
    assert!(call(&fixture.extension, "crash", json!({}))
        .await
        .unwrap_err()
        .is_retryable());
    wait_until("failed", || {
        fixture.extension.status().state == Phase::Failed
    })
    .await;
    let error = call(&fixture.extension, "echo", json!({}))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.message().contains("will not be restarted"),
        "{}",
        error.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_see_only_allowed_variables_and_their_directory() {
    std::env::set_var("MORPHEUS_TEST_SECRET", "hunter2");
    let default = load(Kind::Stdio, json!({})).await;
    let seen = call(&default.extension, "environment", json!({}))
        .await
        .unwrap();
    assert_eq!(seen["secret"], Value::Null, "withheld by default: {seen}");
    assert!(seen["env"].as_array().unwrap().contains(&json!("PATH")));
    let directory = tempfile::tempdir().unwrap();
    let granted = load(
        Kind::Stdio,
        json!({"permissions": {"env": ["PATH", "MORPHEUS_TEST_SECRET"], "filesystem": [directory.path()]},
               "source": {"type": "process", "command": "python3", "args": [conformance_script()],
                          "env": {"EXTRA": "1"}}}),
    )
    .await;
    let seen = call(&granted.extension, "environment", json!({}))
        .await
        .unwrap();
    assert_eq!(seen["secret"], "hunter2");
    assert!(seen["env"].as_array().unwrap().contains(&json!("EXTRA")));
    assert_eq!(
        PathBuf::from(seen["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        directory.path().canonicalize().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_past_its_memory_limit_fails_cleanly() {
    let fixture = load(Kind::Stdio, json!({"permissions": {"max_memory": "200MB"}})).await;
    assert!(call(&fixture.extension, "allocate", json!({"mb": 10}))
        .await
        .is_ok());
    let error = call(&fixture.extension, "allocate", json!({"mb": 400}))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
    assert!(
        error.message().contains("out of memory"),
        "{}",
        error.message()
    );
    assert!(call(&fixture.extension, "echo", json!({})).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_calls_retryably() {
    let fixture = load(Kind::Stdio, json!({"queue": 1})).await;
    let answers = futures::future::join_all(
        (0..3).map(|_| call(&fixture.extension, "sleep", json!({"ms": 300}))),
    )
    .await;
    let busy: Vec<_> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().err())
        .collect();
    assert_eq!(
        busy.len(),
        1,
        "one running, one waiting, one refused: {answers:?}"
    );
    assert!(busy[0].is_retryable());
    assert!(
        busy[0].message().contains("is busy"),
        "{}",
        busy[0].message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_and_programs_are_one_line_errors() {
    let missing: ExtensionConfig = serde_json::from_value(json!({
        "name": "ghost", "protocol": "stdio",
        "source": {"type": "process", "command": "/nonexistent/ghost"}}))
    .unwrap();
    let error = Extension::load(missing).await.unwrap_err();
    assert!(
        error.starts_with("extension 'ghost': could not start: cannot run"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    let silent: ExtensionConfig = serde_json::from_value(json!({
        "name": "silent", "protocol": "stdio",
        "source": {"type": "process", "command": "true"}}))
    .unwrap();
    let error = Extension::load(silent).await.unwrap_err();
    assert!(
        error.starts_with("extension 'silent': initialize failed:"),
        "{error}"
    );
    let clash = config(Kind::Stdio, None, json!({"name": "process"}));
    let error = ExtensionManager::load(&[clash], &["process".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(
        error,
        "extension 'process': name: a built-in executor is already called that"
    );
}

// --- JSON-RPC only ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_goes_away_is_reconnected_when_it_returns() {
    let service = ConformanceService::start(None);
    let port = service.port();
    let extension = Extension::load(config(
        Kind::JsonRpc,
        Some(&service),
        json!({"restart": {"strategy": "exponential", "max_retries": 50,
                            "initial_delay": "50ms", "max_delay": "200ms"}}),
    ))
    .await
    .expect("loads");
    assert!(call(&extension, "echo", json!({})).await.is_ok());
    drop(service);
    let error = call(&extension, "echo", json!({})).await.unwrap_err();
    assert!(error.is_retryable());
    assert!(
        error.message().contains("cannot be reached"),
        "{}",
        error.message()
    );
    let _back = ConformanceService::start(Some(port));
    wait_until("reconnected", || extension.is_healthy()).await;
    assert!(call(&extension, "echo", json!({})).await.is_ok());
    assert!(extension.status().restarts >= 1);
}
