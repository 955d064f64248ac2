//! Heartbeat pings end to end: real `morpheus up` processes ping a real HTTP receiver on
//! loopback after each scheduled run: the schedule's URL when a run completes,
//! `<url>/fail` when one fails; a ping the receiver refuses is retried and the run stays
//! as it ended; two workers on one database ping each run once; a bad URL is a one-line
//! error that stores nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use morpheus_tests::api::ApiProcess;
use morpheus_tests::{both_backends, ledger_step, wait_for, Backend, TestEnv, FAST_LEASES};
use serde_json::{json, Value};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    /// Path and query.
    path: String,
    /// The `x-morpheus-run-id` header.
    run_id: String,
    /// What the receiver answered.
    status: u16,
}

#[derive(Default)]
struct Recorded {
    hits: Vec<Hit>,
    /// Answer 500 to this many requests first.
    refuse_first: usize,
}

/// A real HTTP server on 127.0.0.1 (its own thread and runtime) recording every request.
struct Receiver {
    base: String,
    recorded: Arc<Mutex<Recorded>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn record(
    State(recorded): State<Arc<Mutex<Recorded>>>,
    uri: Uri,
    headers: HeaderMap,
) -> StatusCode {
    let mut recorded = recorded.lock().unwrap();
    let status = if recorded.refuse_first > 0 {
        recorded.refuse_first -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let run_id = headers
        .get("x-morpheus-run-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    recorded.hits.push(Hit {
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        run_id,
        status: status.as_u16(),
    });
    status
}

impl Receiver {
    /// Answers 500 to the first `refuse_first` requests, 200 to the rest.
    fn start(refuse_first: usize) -> Self {
        let recorded = Arc::new(Mutex::new(Recorded {
            hits: Vec::new(),
            refuse_first,
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(recorded.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the receiver");
                bound.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("receiver");
            });
        });
        let address = address.recv().expect("receiver address");
        Self {
            base: format!("http://{address}"),
            recorded,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.recorded.lock().unwrap().hits.clone()
    }

    /// Requests per run id.
    fn hits_by_run(&self) -> HashMap<String, Vec<Hit>> {
        let mut by_run: HashMap<String, Vec<Hit>> = HashMap::new();
        for hit in self.hits() {
            by_run.entry(hit.run_id.clone()).or_default().push(hit);
        }
        by_run
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn add_schedule(env: &TestEnv, name: &str, body: &str, heartbeat_url: &str) {
    let input = json!({"steps": [ledger_step(&env.ledger_path(), "tick", body)]});
    env.cli_ok(&[
        "schedules",
        "add",
        name,
        "--workflow",
        "shell",
        "--input",
        &input.to_string(),
        "--every",
        "1s",
        "--overlap",
        "allow",
        "--heartbeat-url",
        heartbeat_url,
    ]);
}

/// `schedules show NAME --json`.
fn show(env: &TestEnv, name: &str) -> Value {
    env.cli_json(&["schedules", "show", name, "--json"])
}

/// Waits for `count` finished runs of `name`, pauses it, and waits until every finished
/// run's ping left `pending`; returns the finished runs (no more start after the pause,
/// but one may still be finishing: it counts once it has finished).
fn finish_and_settle(env: &TestEnv, name: &str, count: usize) -> Vec<Value> {
    let finished = |runs: &[Value]| -> Vec<Value> {
        runs.iter()
            .filter(|run| run["status"] == "completed" || run["status"] == "failed")
            .cloned()
            .collect()
    };
    wait_for(
        &format!("{count} finished runs of {name}"),
        Duration::from_secs(60),
        || (finished(&env.schedule_runs(name)).len() >= count).then_some(()),
    );
    env.cli_ok(&["schedules", "pause", name]);
    wait_for(
        "every run to finish and its ping to settle",
        Duration::from_secs(60),
        || {
            let runs = env.schedule_runs(name);
            if runs.len() != finished(&runs).len() {
                return None;
            }
            let pings = show(env, name)["heartbeats"].as_array()?.clone();
            let settled =
                pings.len() == runs.len() && pings.iter().all(|ping| ping["state"] != "pending");
            settled.then_some(runs)
        },
    )
}

fn completed_runs_ping_their_url_once(backend: Backend) {
    let env = TestEnv::new(backend);
    let receiver = Receiver::start(0);
    let url = format!("{}/ping/abc", receiver.base);
    add_schedule(&env, "nightly", "true", &url);
    let shown = show(&env, "nightly");
    assert_eq!(shown["schedule"]["heartbeat_url"], url.as_str());
    let _worker = env.spawn_worker("w", FAST_LEASES);
    let runs = finish_and_settle(&env, "nightly", 3);
    // A moment more, so a duplicate ping would have arrived.
    std::thread::sleep(Duration::from_millis(1500));
    let by_run = receiver.hits_by_run();
    for run in &runs {
        assert_eq!(run["status"], "completed", "{run}");
        let id = run["id"].as_str().unwrap();
        let hits = by_run.get(id).cloned().unwrap_or_default();
        assert_eq!(hits.len(), 1, "run {id} was pinged {} times", hits.len());
        assert_eq!(hits[0].path, "/ping/abc");
    }
    assert_eq!(
        receiver.hits().len(),
        runs.len(),
        "pings for runs that are not the schedule's: {:?}",
        receiver.hits()
    );
    let pings = show(&env, "nightly")["heartbeats"].clone();
    for ping in pings.as_array().unwrap() {
        assert_eq!(ping["state"], "delivered", "{ping}");
        assert_eq!(ping["outcome"], "completed");
        assert_eq!(ping["attempts"], 1);
    }
}

fn failed_runs_ping_the_fail_path(backend: Backend) {
    let env = TestEnv::new(backend);
    let receiver = Receiver::start(0);
    // A trailing slash is not doubled.
    add_schedule(
        &env,
        "broken",
        "exit 3",
        &format!("{}/hc/xyz/", receiver.base),
    );
    let _worker = env.spawn_worker("w", FAST_LEASES);
    let runs = finish_and_settle(&env, "broken", 2);
    let by_run = receiver.hits_by_run();
    for run in &runs {
        assert_eq!(run["status"], "failed", "{run}");
        let id = run["id"].as_str().unwrap();
        let paths: Vec<String> = by_run
            .get(id)
            .map(|hits| hits.iter().map(|hit| hit.path.clone()).collect())
            .unwrap_or_default();
        assert_eq!(paths, ["/hc/xyz/fail"], "run {id}");
    }
}

/// The schedule is added through the HTTP API here (`heartbeat_url` in and out); the
/// receiver refuses the first ping with a 500.
fn a_refused_ping_is_retried_and_delivered_once(backend: Backend) {
    let env = TestEnv::new(backend);
    let receiver = Receiver::start(1);
    let api = ApiProcess::spawn(&env, "w", "up", FAST_LEASES, |_| {});
    let url = format!("{}/ping/retry", receiver.base);
    let input = json!({"steps": [ledger_step(&env.ledger_path(), "tick", "true")]});
    let refused = api.post(
        "/api/v1/schedules",
        &json!({"name": "flaky", "workflow": "shell", "input": input, "every": "1s",
                "heartbeat_url": "ftp://example.com/x"}),
    );
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("must use http or https") && !message.contains('\n'),
        "{message}"
    );
    assert_eq!(api.get("/api/v1/schedules/flaky").status, 404);
    let added = api.post(
        "/api/v1/schedules",
        &json!({"name": "flaky", "workflow": "shell", "input": input, "every": "1s",
                "heartbeat_url": url}),
    );
    assert_eq!(added.status, 201, "{:?}", added.body);
    assert_eq!(added.body["heartbeat_url"], url.as_str());
    assert_eq!(
        api.get("/api/v1/schedules/flaky").body["heartbeat_url"],
        url.as_str()
    );

    // The receiver refuses the first ping it gets, whichever run's it is.
    let refused_run = wait_for("a refused ping", Duration::from_secs(30), || {
        receiver
            .hits()
            .into_iter()
            .find(|hit| hit.status == 500)
            .map(|hit| hit.run_id)
    });
    env.cli_ok(&["schedules", "pause", "flaky"]);
    let ping = wait_for(
        "the refused ping to be delivered",
        Duration::from_secs(30),
        || {
            let pings = show(&env, "flaky")["heartbeats"].as_array()?.clone();
            pings
                .into_iter()
                .find(|ping| ping["run_id"] == refused_run.as_str() && ping["state"] == "delivered")
        },
    );
    assert_eq!(ping["attempts"], 2, "{ping}");
    assert!(
        ping["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("500"),
        "{ping}"
    );
    let runs = finish_and_settle(&env, "flaky", 1);
    std::thread::sleep(Duration::from_millis(1500));
    let by_run = receiver.hits_by_run();
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        assert_eq!(
            run["status"], "completed",
            "a ping never changes its run: {run}"
        );
        let statuses: Vec<u16> = by_run
            .get(id)
            .map(|hits| hits.iter().map(|hit| hit.status).collect())
            .unwrap_or_default();
        let expected: &[u16] = if id == refused_run {
            &[500, 200]
        } else {
            &[200]
        };
        assert_eq!(statuses, expected, "run {id}");
    }
    assert!(
        api.process
            .stderr()
            .contains("heartbeat ping failed; it will be retried"),
        "the failed attempt is logged"
    );
}

fn two_workers_ping_each_run_once(backend: Backend) {
    let env = TestEnv::new(backend);
    let receiver = Receiver::start(0);
    add_schedule(
        &env,
        "shared",
        "true",
        &format!("{}/ping/shared", receiver.base),
    );
    let _a = env.spawn_worker("a", FAST_LEASES);
    let _b = env.spawn_worker("b", FAST_LEASES);
    let runs = finish_and_settle(&env, "shared", 6);
    std::thread::sleep(Duration::from_millis(1500));
    let by_run = receiver.hits_by_run();
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        let count = by_run.get(id).map(Vec::len).unwrap_or(0);
        assert_eq!(count, 1, "run {id} was pinged {count} times");
    }
    assert_eq!(receiver.hits().len(), runs.len());
}

#[test]
fn a_bad_heartbeat_url_is_a_one_line_error_that_stores_nothing() {
    let env = TestEnv::sqlite();
    env.cli_ok(&["migrate"]);
    let input = json!({"steps": [{"name": "a", "run": "true"}]}).to_string();
    let cases = [
        ("hc-ping.com/abc", "is not a valid URL"),
        ("ftp://example.com/abc", "must use http or https"),
        ("https://user:secret@example.com/abc", "credentials"),
    ];
    for (url, expected) in cases {
        let out = env.cli(&[
            "schedules",
            "add",
            "bad",
            "--workflow",
            "shell",
            "--input",
            &input,
            "--every",
            "30s",
            "--heartbeat-url",
            url,
        ]);
        assert!(!out.status.success(), "{url} was accepted");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "one line for {url}: {lines:?}");
        assert!(
            lines[0].starts_with("error: schedule 'bad': heartbeat URL")
                && lines[0].contains(expected),
            "{url}: expected '{expected}' in {lines:?}"
        );
    }
    assert_eq!(env.cli_json(&["schedules", "list", "--json"]), json!([]));

    // The same check guards `[[schedules]]` in the config file: `up` stops before any write.
    let config = env.path("morpheus.toml");
    std::fs::write(
        &config,
        "[[schedules]]\nname = \"cfg\"\nworkflow = \"shell\"\nevery = \"30s\"\n\
         heartbeat_url = \"gopher://example.com\"\ninput = { steps = [{ name = \"a\", run = \"true\" }] }\n",
    )
    .unwrap();
    let out = env.cli(&["--config", &config.display().to_string(), "up"]);
    assert!(!out.status.success());
    let lines = out.stderr_lines();
    assert!(
        lines.iter().any(
            |line| line.starts_with("error: schedule 'cfg': heartbeat URL")
                && line.contains("must use http or https")
        ),
        "{lines:?}"
    );
    assert_eq!(env.cli_json(&["schedules", "list", "--json"]), json!([]));
}

// Every body above that takes a `Backend`, as `sqlite::<name>` and `postgres::<name>`.
both_backends! {
    completed_runs_ping_their_url_once => completed_runs_ping_their_url_once,
    failed_runs_ping_the_fail_path => failed_runs_ping_the_fail_path,
    a_refused_ping_is_retried_and_delivered_once => a_refused_ping_is_retried_and_delivered_once,
    two_workers_ping_each_run_once => two_workers_ping_each_run_once,
}
