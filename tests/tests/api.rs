//! The HTTP API over real HTTP against the real binary, on both backends: every endpoint,
//! every error status, idempotent starts, tokens and scopes, and the live event stream's
//! cursor resume after a dropped connection with the worker in another process (`serve`
//! and `up` on one database).

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use morpheus_tests::api::ApiProcess;
use morpheus_tests::{both_backends, wait_for, Backend, TestEnv};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(60);

fn shell(steps: &[(&str, &str)]) -> Value {
    json!({"steps": steps.iter().map(|(name, run)| json!({"name": name, "run": run})).collect::<Vec<_>>()})
}

fn run_count(api: &ApiProcess) -> usize {
    api.get("/api/v1/runs?limit=500").body["runs"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

fn every_endpoint_answers_and_bad_input_writes_nothing(backend: Backend) {
    let env = TestEnv::new(backend);
    let api = ApiProcess::spawn(
        &env,
        "up",
        "up",
        &["--lease-ttl", "5s", "--heartbeat", "1s"],
        |_| {},
    );

    // Start, idempotently.
    let input = shell(&[
        ("greet", "echo hello; echo '<b>bold</b> warning' >&2"),
        ("second", "echo two"),
    ]);
    let first = api.post_with(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": input, "queue": "q1"}),
        &[("Idempotency-Key", "order-1")],
    );
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["created"], true);
    assert!(
        first.request_id.is_some(),
        "every answer carries a request id"
    );
    let again = api.post_with(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": input, "queue": "q1"}),
        &[("Idempotency-Key", "order-1")],
    );
    assert_eq!(again.status, 200);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["run_id"], first.body["run_id"]);
    let id = first.body["run_id"].as_str().unwrap().to_owned();
    let done = api.wait_for_status(&id, "completed", WAIT);
    let steps = done["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["key"], "greet");
    assert_eq!(steps[0]["attempts"], 1);
    assert!(steps[0]["duration_ms"].is_i64());

    // Lists: filters and the keyset cursor.
    let second = api.post(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": shell(&[("x", "exit 3")])}),
    );
    assert_eq!(second.status, 201);
    let failed_id = second.body["run_id"].as_str().unwrap().to_owned();
    api.wait_for_status(&failed_id, "failed", WAIT);
    let page = api.get("/api/v1/runs?limit=1");
    assert_eq!(page.body["runs"].as_array().unwrap().len(), 1);
    assert_eq!(
        page.body["runs"][0]["id"],
        failed_id.as_str(),
        "newest first"
    );
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let next = api.get(&format!("/api/v1/runs?limit=1&cursor={cursor}"));
    assert_eq!(next.body["runs"][0]["id"], id.as_str());
    assert!(next.body["next_cursor"].is_null());
    let by_queue = api.get("/api/v1/runs?queue=q1");
    assert_eq!(by_queue.body["runs"].as_array().unwrap().len(), 1);
    let by_status = api.get("/api/v1/runs?status=failed&workflow=shell");
    assert_eq!(by_status.body["runs"][0]["id"], failed_id.as_str());
    assert!(by_status.body["runs"][0]["error"]
        .as_str()
        .unwrap()
        .contains("exit"));
    let future = api.get("/api/v1/runs?created_after=2999-01-01T00:00:00Z");
    assert!(future.body["runs"].as_array().unwrap().is_empty());

    // Logs: paging, cursor and filters.
    let logs = api.get(&format!("/api/v1/runs/{id}/logs"));
    assert_eq!(logs.status, 200);
    let lines: Vec<String> = logs.body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(lines.iter().any(|l| l.contains("hello")), "{lines:?}");
    let one = api.get(&format!("/api/v1/runs/{id}/logs?limit=1"));
    assert_eq!(one.body["logs"].as_array().unwrap().len(), 1);
    let after = one.body["next_cursor"].as_str().unwrap();
    let rest = api.get(&format!("/api/v1/runs/{id}/logs?cursor={after}"));
    assert_eq!(rest.body["logs"].as_array().unwrap().len(), lines.len() - 1);
    let offset = api.get(&format!("/api/v1/runs/{id}/logs?offset=1&limit=1"));
    assert_eq!(offset.body["logs"][0], rest.body["logs"][0]);
    let searched = api.get(&format!("/api/v1/runs/{id}/logs?q=bold"));
    assert!(searched.body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["message"].as_str().unwrap().contains("bold")));
    assert!(!searched.body["logs"].as_array().unwrap().is_empty());
    let by_step = api.get(&format!("/api/v1/runs/{id}/logs?step=second"));
    assert!(by_step.body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["step"] == "second"));
    let since = api.get(&format!("/api/v1/runs/{id}/logs?since=1h"));
    assert_eq!(since.body["logs"].as_array().unwrap().len(), lines.len());

    // Actions: rerun, fork, resume, cancel.
    let rerun = api.post(&format!("/api/v1/runs/{id}/rerun"), &json!({}));
    assert_eq!(rerun.status, 201);
    api.wait_for_status(rerun.body["run_id"].as_str().unwrap(), "completed", WAIT);
    let fork = api.post(
        &format!("/api/v1/runs/{id}/fork"),
        &json!({"from_step": "second"}),
    );
    assert_eq!(fork.status, 201, "{:?}", fork.body);
    api.wait_for_status(fork.body["run_id"].as_str().unwrap(), "completed", WAIT);
    let resumed = api.post(&format!("/api/v1/runs/{failed_id}/resume"), &json!({}));
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    api.wait_for_status(&failed_id, "failed", WAIT);
    let sleeper = api.post(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": shell(&[("wait", "sleep 30")])}),
    );
    let sleeper_id = sleeper.body["run_id"].as_str().unwrap().to_owned();
    let cancelled = api.post(&format!("/api/v1/runs/{sleeper_id}/cancel"), &json!({}));
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    api.wait_for_status(&sleeper_id, "cancelled", WAIT);
    let again = api.post(&format!("/api/v1/runs/{id}/cancel"), &json!({}));
    assert_eq!(
        again.status, 409,
        "a completed run cannot be cancelled: {:?}",
        again.body
    );
    assert_eq!(again.code(), "conflict");

    // Events.
    let sent = api.post(
        "/api/v1/events",
        &json!({"key": "approval:1", "payload": {"ok": true}}),
    );
    assert_eq!(sent.body["delivered"], true);
    let twice = api.post(
        "/api/v1/events",
        &json!({"key": "approval:1", "payload": {"ok": false}}),
    );
    assert_eq!(twice.body["delivered"], false);

    // Schedules.
    let added = api.post("/api/v1/schedules", &json!({"name": "tick", "workflow": "shell", "input": shell(&[("t", "true")]), "every": "1h"}));
    assert_eq!(added.status, 201, "{:?}", added.body);
    assert_eq!(added.body["upcoming"].as_array().unwrap().len(), 5);
    assert_eq!(api.post("/api/v1/schedules", &json!({"name": "tick", "workflow": "shell", "input": shell(&[("t", "true")]), "every": "1h"})).status, 409);
    assert_eq!(
        api.get("/api/v1/schedules").body["schedules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.post("/api/v1/schedules/tick/pause", &json!({})).body["paused"],
        true
    );
    assert_eq!(
        api.post("/api/v1/schedules/tick/resume", &json!({})).body["paused"],
        false
    );
    assert_eq!(api.get("/api/v1/schedules/tick/runs").status, 200);
    for bad in [
        json!({"name": "b", "workflow": "shell", "input": shell(&[("t", "true")])}),
        json!({"name": "b", "workflow": "shell", "input": shell(&[("t", "true")]), "every": "soon"}),
        json!({"name": "b", "workflow": "nope", "every": "1h"}),
        json!({"name": "b", "workflow": "shell", "input": shell(&[("t", "true")]), "cron": "61 * * * *"}),
    ] {
        let answer = api.post("/api/v1/schedules", &bad);
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
    }
    assert_eq!(api.delete("/api/v1/schedules/tick").status, 204);
    assert_eq!(api.get("/api/v1/schedules/tick").status, 404);
    assert_eq!(
        api.get("/api/v1/schedules").body["schedules"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Queues.
    let limited = api.put("/api/v1/queues/q1", &json!({"concurrency_limit": 2}));
    assert_eq!(limited.body["concurrency_limit"], 2);
    let queues = api.get("/api/v1/queues");
    assert!(queues.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "q1" && q["concurrency_limit"] == 2));
    assert_eq!(
        api.put("/api/v1/queues/q1", &json!({"concurrency_limit": 0}))
            .status,
        400
    );

    // Bad input: a JSON error, and no row written.
    let before = run_count(&api);
    let bad_requests = [
        api.post_raw("/api/v1/runs", "{not json"),
        api.post("/api/v1/runs", &json!({"workflow": 5})),
        api.post(
            "/api/v1/runs",
            &json!({"workflow": "shell", "input": {"steps": "no"}}),
        ),
        api.post("/api/v1/runs", &json!({"workflow": "nope"})),
        api.post(
            "/api/v1/runs",
            &json!({"workflow": "shell", "input": shell(&[("a", "true")]), "surprise": 1}),
        ),
        api.post_raw_alone("/api/v1/runs", vec![b' '; 2 * 1024 * 1024]),
    ];
    let statuses: Vec<u16> = bad_requests.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [400, 400, 400, 400, 400, 413], "{bad_requests:?}");
    for answer in &bad_requests {
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer:?}"
        );
    }
    assert_eq!(bad_requests[5].code(), "payload_too_large");
    assert_eq!(run_count(&api), before, "no run written by bad input");
    assert_eq!(
        api.get("/api/v1/runs/01a23875-7a6c-7344-9f47-d4d4d48309f3")
            .status,
        404
    );
    assert_eq!(api.get("/api/v1/runs/not-a-uuid").status, 400);
    assert_eq!(api.get("/api/v1/runs?cursor=garbage").status, 400);
    assert_eq!(api.get("/api/v1/runs?status=sideways").status, 400);
    assert_eq!(api.get("/api/v1/runs?limit=abc").status, 400);
    assert_eq!(
        api.get(&format!("/api/v1/runs/{id}/logs?cursor=x")).status,
        400
    );
    assert_eq!(
        api.get(&format!("/api/v1/runs/{id}/logs?level=loud"))
            .status,
        400
    );
    assert_eq!(api.get("/api/v1/events?after=nonsense").status, 400);
    assert_eq!(api.get("/api/v1/nothing-here").status, 404);

    // The OpenAPI document describes what is served.
    let doc = api.get("/api/openapi.json");
    assert_eq!(doc.body["openapi"], "3.1.0");
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/{id}/logs",
        "/api/v1/events",
        "/api/agents/{id}/deployments/start",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

fn tokens_scopes_and_rate_limits() {
    let env = TestEnv::sqlite();
    let read_token = "read-token-0123456789abcdef";
    let admin_token = "admin-token-0123456789abcdef";
    std::fs::write(env.path("read.token"), format!("{read_token}\n")).unwrap();
    std::fs::write(
        env.path("morpheus.toml"),
        format!(
            "[api]\nrate_per_second = 1\nrate_burst = 30\n[[api.tokens]]\nname = \"viewer\"\nscope = \"read\"\ntoken_file = \"{}\"\n",
            env.path("read.token").display()
        ),
    )
    .unwrap();
    let config = env.path("morpheus.toml");
    let api = ApiProcess::spawn(&env, "serve", "serve", &[], |command| {
        command
            .env("MORPHEUS_API_TOKEN", admin_token)
            .arg("--config")
            .arg(&config);
    });
    let start = json!({"workflow": "shell", "input": shell(&[("a", "true")])});
    let missing = api.get("/api/v1/runs");
    assert_eq!((missing.status, missing.code()), (401, "unauthorized"));
    let reader = api_with(&api, read_token);
    assert_eq!(reader.get("/api/v1/runs").status, 200);
    let forbidden = reader.post("/api/v1/runs", &start);
    assert_eq!((forbidden.status, forbidden.code()), (403, "forbidden"));
    let admin = api_with(&api, admin_token);
    assert_eq!(admin.post("/api/v1/runs", &start).status, 201);
    assert_eq!(
        api_with(&api, "not-the-token-at-all")
            .get("/api/v1/runs")
            .status,
        401
    );
    assert_eq!(
        api.get("/api/openapi.json").status,
        200,
        "the API's description is public"
    );
    // Past the burst, the reader is slowed down; the admin token has its own budget.
    let statuses: Vec<u16> = (0..40)
        .map(|_| reader.get("/api/v1/queues").status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = reader.get("/api/v1/queues");
    assert_eq!(limited.code(), "rate_limited");
    assert_eq!(admin.get("/api/v1/queues").status, 200);
}

/// The same server, with another token.
fn api_with(api: &ApiProcess, token: &str) -> ApiClient {
    ApiClient {
        base: api.base.clone(),
        token: token.to_owned(),
        client: api.client().clone(),
    }
}

struct ApiClient {
    base: String,
    token: String,
    client: reqwest::blocking::Client,
}

impl ApiClient {
    fn get(&self, path: &str) -> morpheus_tests::api::Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap();
        answer(response)
    }
    fn post(&self, path: &str, body: &Value) -> morpheus_tests::api::Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .unwrap();
        answer(response)
    }
}

fn answer(response: reqwest::blocking::Response) -> morpheus_tests::api::Answer {
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    morpheus_tests::api::Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        request_id: None,
    }
}

fn connect(api: &ApiProcess, query: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let url = format!(
        "{}/api/v1/events{query}",
        api.base.replace("http://", "ws://")
    );
    let (socket, _) = tungstenite::connect(url).expect("WebSocket connect");
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
    }
    socket
}

/// Reads events until `done` says so (or the deadline passes).
fn read_events(
    socket: &mut WebSocket<MaybeTlsStream<TcpStream>>,
    deadline: Instant,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut events = Vec::new();
    while Instant::now() < deadline && !done(&events) {
        match socket.read() {
            Ok(Message::Text(text)) => events.push(serde_json::from_str(&text).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(error))
                if error.kind() == std::io::ErrorKind::WouldBlock
                    || error.kind() == std::io::ErrorKind::TimedOut => {}
            Err(error) => panic!("WebSocket read failed: {error}"),
        }
    }
    events
}

fn finished(events: &[Value], run: &str) -> bool {
    events.iter().any(|e| {
        e["event"] == "run:update"
            && e["data"]["run_id"] == run
            && e["data"]["status"] == "completed"
    })
}

fn event_stream_resumes_after_a_dropped_connection(backend: Backend) {
    let env = TestEnv::new(backend);
    // The API alone; the worker is another process on the same database.
    let api = ApiProcess::spawn(&env, "serve", "serve", &[], |_| {});
    let _worker = env.spawn_worker("worker", &["--lease-ttl", "5s", "--heartbeat", "1s"]);
    let noisy = |n: usize| {
        shell(&[(
            "count",
            &format!("for i in $(seq 1 {n}); do echo line $i; sleep 0.01; done"),
        )])
    };

    let mut socket = connect(&api, "");
    let first = api.post(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": noisy(20)}),
    );
    let first_id = first.body["run_id"].as_str().unwrap().to_owned();
    // Read a few events, then drop the connection mid-run.
    let seen = read_events(&mut socket, Instant::now() + WAIT, |events| {
        events.len() >= 5
    });
    assert!(seen.len() >= 5, "{seen:?}");
    drop(socket);
    let second = api.post(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": noisy(10)}),
    );
    let second_id = second.body["run_id"].as_str().unwrap().to_owned();
    api.wait_for_status(&first_id, "completed", WAIT);
    api.wait_for_status(&second_id, "completed", WAIT);

    // Reconnect after the last cursor seen: everything since, nothing twice.
    let last = seen.last().unwrap()["cursor"].as_str().unwrap().to_owned();
    let mut socket = connect(&api, &format!("?after={last}"));
    let rest = read_events(&mut socket, Instant::now() + WAIT, |events| {
        finished(events, &first_id) && finished(events, &second_id)
    });
    assert!(
        finished(&rest, &first_id) && finished(&rest, &second_id),
        "{rest:?}"
    );

    // The two halves are exactly the stream from the start, in order.
    let mut whole = connect(&api, "?after=0-0");
    let all = read_events(&mut whole, Instant::now() + WAIT, |events| {
        finished(events, &first_id) && finished(events, &second_id)
    });
    let cursors = |list: &[Value]| {
        list.iter()
            .map(|e| e["cursor"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut joined = cursors(&seen);
    joined.extend(cursors(&rest));
    let unique: HashSet<&String> = joined.iter().collect();
    assert_eq!(unique.len(), joined.len(), "an event came twice");
    let start = cursors(&all)
        .iter()
        .position(|c| *c == cursors(&seen)[0])
        .expect("the first event is in the full stream");
    assert_eq!(
        joined,
        cursors(&all)[start..start + joined.len()].to_vec(),
        "resumed stream differs from the full one"
    );
    let mut counted: Vec<String> = all
        .iter()
        .filter(|e| e["event"] == "log:append" && e["data"]["run_id"] == first_id.as_str())
        .filter_map(|e| e["data"]["message"].as_str())
        .filter(|m| m.starts_with("line "))
        .map(str::to_owned)
        .collect();
    counted.sort_by_key(|m| m[5..].parse::<u32>().unwrap_or(0));
    let expected: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
    assert_eq!(
        counted, expected,
        "every line the first run printed arrives once"
    );

    // Filters: only the second run's events.
    let mut filtered = connect(
        &api,
        &format!("?after=0-0&run={second_id}&events=log:append"),
    );
    let only = read_events(&mut filtered, Instant::now() + WAIT, |events| {
        events.len() >= 10
    });
    assert_eq!(only.len(), 10);
    assert!(only
        .iter()
        .all(|e| e["event"] == "log:append" && e["data"]["run_id"] == second_id.as_str()));

    // Server-sent events, resumed by Last-Event-ID.
    let response = api
        .client()
        .get(format!("{}/api/v1/events?run={second_id}", api.base))
        .header("accept", "text/event-stream")
        .header("last-event-id", "0-0")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut reader = std::io::BufReader::new(response);
    let mut ids = Vec::new();
    let mut line = String::new();
    wait_for("SSE events", WAIT, || {
        line.clear();
        if std::io::BufRead::read_line(&mut reader, &mut line).ok()? == 0 {
            return Some(());
        }
        if let Some(id) = line.trim().strip_prefix("id: ") {
            ids.push(id.to_owned());
        }
        (ids.len() >= 12).then_some(())
    });
    let ws_ids: Vec<String> = all
        .iter()
        .filter(|e| e["data"]["run_id"] == second_id.as_str())
        .map(|e| e["cursor"].as_str().unwrap().to_owned())
        .take(12)
        .collect();
    assert_eq!(ids, ws_ids, "SSE and WebSocket give the same events");
}

both_backends! {
    every_endpoint_answers_and_bad_input_writes_nothing => every_endpoint_answers_and_bad_input_writes_nothing,
    event_stream_resumes_after_a_dropped_connection => event_stream_resumes_after_a_dropped_connection,
}

#[test]
fn tokens_scopes_and_rate_limits_are_enforced() {
    tokens_scopes_and_rate_limits();
}

/// The directory-deploy API's spec and list endpoints, with the design's field names;
/// `sourceDir` is checked exactly as the CLI checks it. (Starting a deploy needs Docker:
/// the dashboard's browser test starts one through this API.)
#[test]
fn deploy_spec_api_validates_like_the_cli() {
    let env = TestEnv::sqlite();
    let root = env.path("apps");
    std::fs::create_dir_all(root.join("site")).unwrap();
    let root_arg = root.display().to_string();
    let api = ApiProcess::spawn(
        &env,
        "serve",
        "serve",
        &["--allowed-root", &root_arg],
        |_| {},
    );
    let missing = api.get("/api/agents/agent-1/deployments/spec");
    assert_eq!(missing.status, 404, "{:?}", missing.body);
    let spec = json!({
        "name": "site", "sourceDir": root.join("site").display().to_string(),
        "buildCommand": "true", "startCommand": "httpd -f -p 3000",
        "runtimePort": 3000, "env": {"MODE": "demo"}, "targetDefault": "preview"
    });
    let created = api.put("/api/agents/agent-1/deployments/spec", &spec);
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["sourceDir"], spec["sourceDir"]);
    assert_eq!(created.body["env"]["MODE"], "demo");
    let updated = api.put("/api/agents/agent-1/deployments/spec", &spec);
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.body["id"], created.body["id"],
        "an update keeps the spec's id"
    );
    let traversal = json!({"name": "x", "sourceDir": format!("{}/../..", root.join("site").display()), "buildCommand": "true", "startCommand": "true"});
    let outside =
        json!({"name": "x", "sourceDir": "/etc", "buildCommand": "true", "startCommand": "true"});
    let relative =
        json!({"name": "x", "sourceDir": "site", "buildCommand": "true", "startCommand": "true"});
    let low_port = json!({"name": "x", "sourceDir": root.join("site").display().to_string(), "buildCommand": "true", "startCommand": "true", "runtimePort": 80});
    for bad in [traversal, outside, relative, low_port] {
        let answer = api.put("/api/agents/agent-1/deployments/spec", &bad);
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
    }
    assert_eq!(
        api.get("/api/agents/agent-1/deployments/spec").body,
        updated.body,
        "refused specs changed nothing"
    );
    assert_eq!(
        api.put("/api/agents/bad%20id/deployments/spec", &spec)
            .status,
        400
    );
    let runs = api.get("/api/agents/agent-1/deployments");
    assert_eq!(runs.body["runs"], json!([]));
    assert_eq!(
        api.get("/api/agents/agent-1/deployments/snapshots").body["snapshots"],
        json!([])
    );
    let unknown = api.post(
        "/api/agents/agent-1/deployments/01a23875-7a6c-7344-9f47-d4d4d48309f3/stop",
        &json!({}),
    );
    assert_eq!(unknown.status, 404);
    let bad_target = api.post(
        "/api/agents/agent-1/deployments/start",
        &json!({"target": "staging"}),
    );
    assert_eq!(bad_target.status, 400);
    assert_eq!(
        api.get("/api/agents/agent-1/deployments").body["runs"],
        json!([]),
        "a refused start wrote nothing"
    );
}
