//! The `extism` host against real WASM plugins, built from source at test time: the
//! fixtures are WebAssembly text written against the Extism kernel ABI
//! (`tests/fixtures/wasm/*.wat`), compiled by the host on load (or by the `wat` crate
//! here, for the binary path). Everything goes through [`Extension::load`] and the
//! supervisor, on a real tokio runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogSink, StepError};
use morpheus_executors::extensions::{CallContext, Extension, ExtensionConfig, Phase};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wasm")
        .join(name)
}

/// An `[[extensions]]` entry for the module at `path`, with extra `key = value` lines.
fn config(name: &str, path: &Path, extra: &str) -> ExtensionConfig {
    let text = format!(
        "name = {name:?}\nprotocol = \"extism\"\nsource = {{ type = \"wasm\", path = {:?} }}\n{extra}",
        path.display().to_string()
    );
    toml::from_str(&text).unwrap_or_else(|error| panic!("{text}: {error}"))
}

async fn load(name: &str, extra: &str) -> Extension {
    Extension::load(config(name, &fixture("echo.wat"), extra))
        .await
        .expect("the echo plugin loads")
}

fn context(key: &str) -> CallContext {
    CallContext::new(key, 1, 3, Utc::now() + chrono::Duration::seconds(30))
}

async fn call(extension: &Extension, method: &str, params: Value) -> Result<Value, StepError> {
    extension
        .call_method(
            method,
            &params,
            &context("run-1/step"),
            None,
            &LogSink::discard(),
        )
        .await
}

/// Waits until the extension has been restarted `restarts` times and is ready again.
async fn wait_restarted(extension: &Extension, restarts: u32) {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let status = extension.status();
        if status.restarts >= restarts && status.state == Phase::Ready {
            assert_eq!(status.restarts, restarts, "{status:?}");
            return;
        }
        assert!(
            Instant::now() < give_up,
            "not restarted in time: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_and_capabilities_are_visible() {
    let extension = load("echo", "").await;
    let capabilities = extension.capabilities().expect("declared");
    assert_eq!(capabilities.name, "echo-wasm");
    assert_eq!(capabilities.concurrency, 4);
    let methods: Vec<_> = capabilities
        .methods
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        methods,
        ["echo", "fail", "spin", "hog", "crash", "garbage", "ghost"]
    );
    let status = extension.status();
    assert_eq!(status.state, Phase::Ready);
    assert_eq!(status.protocol.as_str(), "extism");
    extension.stop().await;
    assert_eq!(extension.status().state, Phase::Stopped);
    let after = call(&extension, "echo", json!({})).await.unwrap_err();
    assert!(after.message().contains("is stopped"), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_params_and_context_through_the_executor() {
    let extension = load("echo", "").await;
    let request = ExecRequest {
        idempotency_key: "0190-run/charge/1".to_owned(),
        attempt: 2,
        fencing_token: 11,
        lease: LeaseCheck::always(),
        deadline: None,
        payload: json!({"method": "echo", "params": {"amount": 5, "to": "acct-ü", "tags": [1, 2, 3]}}),
        logs: LogSink::discard(),
    };
    let output = extension.call(request).await.expect("echo answers");
    assert_eq!(
        output["params"],
        json!({"amount": 5, "to": "acct-ü", "tags": [1, 2, 3]})
    );
    let context = &output["context"];
    assert_eq!(context["idempotency_key"], "0190-run/charge/1");
    assert_eq!(context["run_id"], "0190-run");
    assert_eq!(context["step"], "charge/1");
    assert_eq!(context["attempt"], 2);
    assert_eq!(context["fencing_token"], 11);
    let deadline = context["deadline"].as_str().expect("an RFC 3339 deadline");
    let deadline = chrono::DateTime::parse_from_rfc3339(deadline).expect("RFC 3339");
    assert!(deadline > Utc::now(), "{deadline}");
    // Inputs of every length: the plugin copies 8 bytes at a time, then the tail.
    for size in [0, 1, 7, 8, 9, 100, 70_000] {
        let params = json!({"text": "x".repeat(size)});
        let echoed = call(&extension, "echo", params.clone()).await.unwrap();
        assert_eq!(echoed["params"], params, "size {size}");
    }
    assert_eq!(extension.status().calls, 8);
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_a_permanent_step_error_carrying_its_message() {
    let extension = load("echo", "").await;
    let error = call(&extension, "fail", json!({"amount": -1}))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(
        error.message(),
        "extension 'echo' fail: bad amount (code -32602)"
    );
    // An error answer does not break the instance.
    let status = extension.status();
    assert_eq!((status.state, status.restarts), (Phase::Ready, 0));
    assert!(call(&extension, "echo", json!({})).await.is_ok());
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_spinning_forever_is_stopped_at_its_time_limit_and_restarted() {
    let extension = load(
        "spinner",
        "permissions = { max_execution_time = \"300ms\" }\nrestart = { strategy = \"immediate\", max_retries = 3 }",
    )
    .await;
    let started = Instant::now();
    let error = call(&extension, "spin", json!({})).await.unwrap_err();
    let took = started.elapsed();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        error
            .message()
            .starts_with("extension 'spinner' spin: did not answer spin within 300ms"),
        "{error:?}"
    );
    // Stopped at the limit, not at some later safety net.
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    wait_restarted(&extension, 1).await;
    let echoed = call(&extension, "echo", json!({"after": "restart"}))
        .await
        .unwrap();
    assert_eq!(echoed["params"], json!({"after": "restart"}));
    let status = extension.status();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("did not answer spin"),
        "{status:?}"
    );
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_deadline_shorter_than_the_time_limit_interrupts_the_call() {
    let extension = load("spinner", "permissions = { max_execution_time = \"30s\" }").await;
    let started = Instant::now();
    let error = extension
        .call_method(
            "spin",
            &json!({}),
            &context("run-1/step"),
            Some(Instant::now() + Duration::from_millis(200)),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        error.message().contains("did not answer spin within"),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_restarted(&extension, 1).await;
    assert!(call(&extension, "echo", json!({})).await.is_ok());
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_growing_past_its_memory_limit_fails_cleanly_and_permanently() {
    let extension = load("hog", "permissions = { max_memory = \"2MB\" }").await;
    let error = call(&extension, "hog", json!({})).await.unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
    // 2 MB is 30 whole pages of 64 KiB.
    assert_eq!(
        error.message(),
        "extension 'hog' hog: exceeded its memory limit of 1966080 bytes"
    );
    // The instance is replaced; the extension goes on serving.
    let echoed = call(&extension, "echo", json!({"still": "here"}))
        .await
        .unwrap();
    assert_eq!(echoed["params"], json!({"still": "here"}));
    wait_restarted(&extension, 1).await;
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_garbage_break_the_instance_retryably() {
    let extension = load(
        "breakable",
        "restart = { strategy = \"immediate\", max_retries = 3 }",
    )
    .await;
    let trapped = call(&extension, "crash", json!({})).await.unwrap_err();
    assert!(trapped.is_retryable(), "{trapped:?}");
    assert!(
        trapped
            .message()
            .starts_with("extension 'breakable' crash: trapped in crash: "),
        "{trapped:?}"
    );
    assert!(trapped.message().contains("unreachable"), "{trapped:?}");
    wait_restarted(&extension, 1).await;
    let garbage = call(&extension, "garbage", json!({})).await.unwrap_err();
    assert!(garbage.is_retryable(), "{garbage:?}");
    assert!(
        garbage
            .message()
            .contains("answered garbage with output that is not JSON"),
        "{garbage:?}"
    );
    assert!(
        garbage.message().contains("this is not JSON"),
        "{garbage:?}"
    );
    wait_restarted(&extension, 2).await;
    assert!(call(&extension, "echo", json!({})).await.is_ok());
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_all_get_their_own_answer() {
    let extension = load("echo", "").await;
    let calls = (0..50).map(|n| {
        let extension = extension.clone();
        tokio::spawn(async move {
            let key = format!("run-{n}/step");
            let answer = extension
                .call_method(
                    "echo",
                    &json!({"n": n}),
                    &context(&key),
                    None,
                    &LogSink::discard(),
                )
                .await;
            (n, key, answer)
        })
    });
    for joined in futures::future::join_all(calls).await {
        let (n, key, answer) = joined.expect("the task ran");
        let answer = answer.unwrap_or_else(|error| panic!("call {n}: {error:?}"));
        assert_eq!(answer["params"], json!({"n": n}));
        assert_eq!(answer["context"]["idempotency_key"], key.as_str());
    }
    let status = extension.status();
    assert_eq!((status.calls, status.failures, status.restarts), (50, 0, 0));
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_of_the_pool_is_initialized_before_its_first_call() {
    let extension = Extension::load(config("stateful", &fixture("stateful.wat"), ""))
        .await
        .expect("the stateful plugin loads");
    let calls = (0..8).map(|_| {
        let extension = extension.clone();
        tokio::spawn(async move { call(&extension, "ready", json!({})).await })
    });
    let mut first_calls = 0;
    for joined in futures::future::join_all(calls).await {
        let answer = joined
            .expect("the task ran")
            .expect("every instance was initialized");
        if answer["calls"] == 1 {
            first_calls += 1;
        }
    }
    // Several instances each saw their first call: the pool grew past one.
    assert!(first_calls >= 2, "only {first_calls} instance(s) were used");
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unexported_methods_are_clear_errors() {
    let extension = load("echo", "").await;
    let unknown = call(&extension, "refund", json!({})).await.unwrap_err();
    assert!(!unknown.is_retryable());
    assert_eq!(
        unknown.message(),
        "extension 'echo' has no method 'refund' (it offers: echo, fail, spin, hog, crash, garbage, ghost)"
    );
    // Declared but not exported: a method-not-found answer, not a broken instance.
    let ghost = call(&extension, "ghost", json!({})).await.unwrap_err();
    assert!(!ghost.is_retryable());
    assert_eq!(
        ghost.message(),
        "extension 'echo' ghost: the plugin exports no function 'ghost' of type () -> i32 (code -32601)"
    );
    assert_eq!(extension.status().restarts, 0);
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_module_compiled_from_the_same_source_loads_too() {
    let directory = tempfile::tempdir().unwrap();
    let binary = directory.path().join("echo.wasm");
    std::fs::write(&binary, wat::parse_file(fixture("echo.wat")).unwrap()).unwrap();
    let extension = Extension::load(config("binary", &binary, ""))
        .await
        .expect("the binary module loads");
    let echoed = call(&extension, "echo", json!({"format": "binary"}))
        .await
        .unwrap();
    assert_eq!(echoed["params"], json!({"format": "binary"}));
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_and_grants_fail_the_load_with_one_line_naming_the_extension() {
    let directory = tempfile::tempdir().unwrap();
    let write = |name: &str, contents: &[u8]| {
        let path = directory.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let not_wasm = write("notes.wasm", b"hello, I am not a module");
    let binary_junk = write("junk.wasm", &[0x7f, b'E', b'L', b'F', 0, 1, 2]);
    let ill_typed = write(
        "ill-typed.wat",
        b"(module (func (export \"answer\") (result i32)))",
    );
    let unknown_import = write(
        "imports.wat",
        b"(module (import \"extism:host/user\" \"launch_missiles\" (func)) (func (export \"initialize\") (result i32) (i32.const 0)))",
    );
    let cases = [
        (
            config("missing", &directory.path().join("nowhere.wasm"), ""),
            "extension 'missing': could not start: cannot read ",
        ),
        (
            config("notes", &not_wasm, ""),
            "extension 'notes': could not start: ",
        ),
        (
            config("junk", &binary_junk, ""),
            "extension 'junk': could not start: ",
        ),
        (
            config("ill-typed", &ill_typed, ""),
            "extension 'ill-typed': could not start: cannot compile ",
        ),
        (
            config("imports", &unknown_import, ""),
            "extension 'imports': could not start: cannot instantiate the module: ",
        ),
        (
            config(
                "networked",
                &fixture("echo.wat"),
                "permissions = { network = [\"127.0.0.1:8080\"] }",
            ),
            "extension 'networked': permissions.network: ",
        ),
        (
            config(
                "files",
                &fixture("echo.wat"),
                &format!(
                    "permissions = {{ filesystem = [{:?}] }}",
                    directory.path().join("absent").display().to_string()
                ),
            ),
            "extension 'files': could not start: permissions.filesystem: ",
        ),
    ];
    for (config, expected) in cases {
        let name = config.name.clone();
        let error = Extension::load(config)
            .await
            .expect_err("a bad entry must not load");
        assert!(error.starts_with(expected), "{name}: {error}");
        assert!(!error.contains('\n'), "{name}: not one line: {error}");
        if name == "notes" || name == "junk" {
            assert!(
                error.contains("is not a WebAssembly module"),
                "{name}: {error}"
            );
        }
        if name == "imports" {
            assert!(error.contains("launch_missiles"), "{error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_directory_is_accepted() {
    let directory = tempfile::tempdir().unwrap();
    let extension = load(
        "with-files",
        &format!(
            "permissions = {{ filesystem = [{:?}] }}",
            directory.path().display().to_string()
        ),
    )
    .await;
    assert!(call(&extension, "echo", json!({})).await.is_ok());
    extension.stop().await;
}

/// Prints the mean latency of sequential `echo` calls through the supervisor (for the
/// report; `morpheus bench` is where performance is measured, so nothing is asserted
/// about time here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_echo_calls_answer_correctly() {
    let extension = load("echo", "").await;
    let params = json!({"amount": 5, "to": "acct"});
    let context = context("run-1/step");
    let logs = LogSink::discard();
    const CALLS: u32 = 10_000;
    let started = Instant::now();
    for _ in 0..CALLS {
        let answer = extension
            .call_method("echo", &params, &context, None, &logs)
            .await
            .unwrap();
        assert_eq!(answer["params"], params);
    }
    let mean = started.elapsed() / CALLS;
    eprintln!("wasm echo: {CALLS} sequential calls, mean {mean:?} per call");
    assert_eq!(extension.status().calls, u64::from(CALLS));
    extension.stop().await;
}

/// A loopback HTTP server answering every request with a small JSON body; it records
/// each request line it receives, so a test can tell that a refused request never left.
struct LoopbackServer {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const SERVER_BODY: &str = r#"{"greeting":"hello from loopback"}"#;

impl LoopbackServer {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    log.lock().unwrap().push(line);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{SERVER_BODY}",
                        SERVER_BODY.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn load_http(name: &str, extra: &str) -> Extension {
    Extension::load(config(name, &fixture("http.wat"), extra))
        .await
        .expect("the http plugin loads")
}

async fn fetch(extension: &Extension, url: &str) -> Result<Value, StepError> {
    call(extension, "fetch", json!({"url": url, "method": "GET"})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_host_is_reached_through_http_request() {
    let server = LoopbackServer::start().await;
    let extension = load_http("fetcher", "permissions = { network = [\"127.0.0.1\"] }").await;
    let url = format!("http://127.0.0.1:{}/hello?n=1", server.port);
    let answer = fetch(&extension, &url)
        .await
        .expect("the request is allowed");
    assert_eq!(
        answer,
        json!({"status": 200, "body": {"greeting": "hello from loopback"}})
    );
    assert_eq!(server.seen(), ["GET /hello?n=1 HTTP/1.1"]);
    // A name that is not on the list is refused even when it resolves to the same
    // address: Extism compares the URL's host with the grant.
    let by_name = format!("http://localhost:{}/by-name", server.port);
    let error = fetch(&extension, &by_name).await.unwrap_err();
    assert!(error.message().contains("is not allowed"), "{error:?}");
    assert_eq!(server.seen().len(), 1, "{:?}", server.seen());
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_true_grants_every_host() {
    let server = LoopbackServer::start().await;
    let extension = load_http("anywhere", "permissions = { network = true }").await;
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("http://{host}:{}/{host}", server.port);
        let answer = fetch(&extension, &url)
            .await
            .expect("every host is allowed");
        assert_eq!(answer["status"], 200, "{host}");
        assert_eq!(answer["body"]["greeting"], "hello from loopback");
    }
    assert_eq!(
        server.seen(),
        ["GET /127.0.0.1 HTTP/1.1", "GET /localhost HTTP/1.1"]
    );
    extension.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grant_or_for_another_host_the_request_never_leaves() {
    let server = LoopbackServer::start().await;
    let url = format!("http://127.0.0.1:{}/secret", server.port);
    for (name, extra) in [
        ("offline", ""),
        ("offline-explicit", "permissions = { network = false }"),
        (
            "elsewhere",
            "permissions = { network = [\"api.example.com\", \"*.example.org\"] }",
        ),
    ] {
        let extension = load_http(name, extra).await;
        let error = fetch(&extension, &url).await.unwrap_err();
        let message = error.message();
        assert!(
            message.contains(&format!("HTTP request to {url} is not allowed")),
            "{name}: {error:?}"
        );
        assert!(!message.contains('\n'), "{name}: not one line: {message}");
        // The grant's verdict: permanent, and the instance stays up.
        assert!(!error.is_retryable(), "{name}: {error:?}");
        let status = extension.status();
        assert_eq!((status.state, status.restarts), (Phase::Ready, 0), "{name}");
        extension.stop().await;
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}
