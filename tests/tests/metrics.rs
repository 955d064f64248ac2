//! Prometheus metrics, end to end: a real Prometheus server (Debian's `prometheus`,
//! `$MORPHEUS_TEST_PROMETHEUS`, default `/usr/bin/prometheus`; scripts/test installs it)
//! scrapes `morpheus up --listen` every second with a read token and answers queries
//! about the runs the workers executed; `/metrics` refuses callers without a token when
//! tokens are configured, and `morpheus serve` (no workers) shows the queue depth it
//! samples from the database; on PostgreSQL, the counters and the depth gauge read
//! straight from `/metrics` follow runs as they start, finish and are cancelled.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use morpheus_tests::api::ApiProcess;
use morpheus_tests::devnet::free_port;
use morpheus_tests::{wait_for, Backend, TestEnv};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// The environment variable naming the Prometheus server binary.
const PROMETHEUS_ENV: &str = "MORPHEUS_TEST_PROMETHEUS";

const READ_TOKEN: &str = "metrics-reader-0123456789abcdef";
const ADMIN_TOKEN: &str = "metrics-admin-0123456789abcdef";

fn shell(steps: &[(&str, &str)]) -> Value {
    json!({"steps": steps.iter().map(|(name, run)| json!({"name": name, "run": run})).collect::<Vec<_>>()})
}

/// Starts a `shell` run through the API; returns its id.
fn start(api: &ApiProcess, queue: &str, steps: &[(&str, &str)]) -> String {
    let started = api.post(
        "/api/v1/runs",
        &json!({"workflow": "shell", "input": shell(steps), "queue": queue}),
    );
    assert_eq!(started.status, 201, "{:?}", started.body);
    started.body["run_id"].as_str().unwrap().to_owned()
}

/// A `morpheus.toml` with a read token (in a file) and an admin token (in the
/// environment, `MORPHEUS_API_TOKEN`), for [`ApiProcess::spawn`]'s `configure`.
fn with_tokens(env: &TestEnv) -> impl FnOnce(&mut Command) {
    std::fs::write(env.path("read.token"), format!("{READ_TOKEN}\n")).unwrap();
    std::fs::write(
        env.path("morpheus.toml"),
        format!(
            "[[api.tokens]]\nname = \"prometheus\"\nscope = \"read\"\ntoken_file = \"{}\"\n",
            env.path("read.token").display()
        ),
    )
    .unwrap();
    let config = env.path("morpheus.toml");
    move |command: &mut Command| {
        command
            .env("MORPHEUS_API_TOKEN", ADMIN_TOKEN)
            .arg("--config")
            .arg(config);
    }
}

/// `GET /metrics` with an optional bearer token: status, content type and body.
fn get_metrics(api: &ApiProcess, token: Option<&str>) -> (u16, String, String) {
    let request = api.client().get(format!("{}/metrics", api.base));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request.send().expect("GET /metrics");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().unwrap_or_default())
}

/// The value of the sample `name{labels…}` in a text exposition, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// A Prometheus server scraping one target; killed (and reaped) when dropped.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    client: reqwest::blocking::Client,
}

impl Prometheus {
    /// Starts Prometheus with a fresh TSDB in `env`, scraping `target`'s `/metrics`
    /// every second with `token`, and waits until it is ready.
    fn start(env: &TestEnv, target: &str, token: &str) -> Self {
        let binary = PathBuf::from(
            std::env::var_os(PROMETHEUS_ENV).unwrap_or_else(|| "/usr/bin/prometheus".into()),
        );
        assert!(
            binary.is_file(),
            "{} is missing: the metrics tests need a real Prometheus server; \
             apt-get install prometheus (scripts/test does), or point {PROMETHEUS_ENV} at one",
            binary.display()
        );
        std::fs::write(env.path("prometheus.token"), token).unwrap();
        let config = env.path("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: morpheus\n    metrics_path: /metrics\n    \
                 authorization:\n      type: Bearer\n      credentials_file: {}\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                env.path("prometheus.token").display()
            ),
        )
        .unwrap();
        let data = env.path("prometheus-data");
        let listen = format!("127.0.0.1:{}", free_port());
        let log = env.path("prometheus.log");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let prometheus = Self {
            child,
            base: format!("http://{listen}"),
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        let ready = format!("{}/-/ready", prometheus.base);
        wait_for("Prometheus to be ready", WAIT, || {
            prometheus
                .client
                .get(&ready)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        prometheus
    }

    /// The instant-query result of `query`: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let answer: Value = self
            .client
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{}/api/v1/query", self.base),
                    [("query", query)],
                )
                .unwrap(),
            )
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|error| panic!("Prometheus query {query}: {error}"));
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let value = series["value"][1].as_str().unwrap().parse().unwrap();
                (series["metric"].clone(), value)
            })
            .collect()
    }

    /// Waits until `query` has a series for which `accept` holds; returns it.
    fn wait_for_series(&self, query: &str, accept: impl Fn(&Value, f64) -> bool) -> (Value, f64) {
        wait_for(&format!("Prometheus to answer {query}"), WAIT, || {
            self.query(query)
                .into_iter()
                .find(|(labels, value)| accept(labels, *value))
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- prometheus log (last lines) ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

#[test]
fn a_real_prometheus_scrapes_the_workers_metrics_with_a_read_token() {
    let env = TestEnv::sqlite();
    let configure = with_tokens(&env);
    let api = ApiProcess::spawn(&env, "up", "up", &["--poll-interval", "100ms"], configure)
        .with_token(ADMIN_TOKEN);
    let completed: Vec<String> = (0..3)
        .map(|index| {
            start(
                &api,
                "default",
                &[("build", &format!("echo build {index}")), ("test", "true")],
            )
        })
        .collect();
    let failed = start(&api, "default", &[("broken", "exit 3")]);
    for run in &completed {
        api.wait_for_status(run, "completed", WAIT);
    }
    api.wait_for_status(&failed, "failed", WAIT);
    let slow = start(&api, "slow", &[("wait", "sleep 60")]);
    api.wait_for_status(&slow, "running", WAIT);

    let target = api.base.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&env, &target, READ_TOKEN);

    let (_, up) = prometheus.wait_for_series("up{job=\"morpheus\"}", |_, value| value == 1.0);
    assert_eq!(up, 1.0, "Prometheus scrapes /metrics with the read token");
    // Seven step attempts ran: two steps of three runs, one failing step.
    let (labels, steps) = prometheus
        .wait_for_series("morpheus_step_duration_seconds_count", |labels, value| {
            labels["workflow"] == "shell" && value >= 7.0
        });
    assert_eq!(labels["executor"], "process", "{labels}");
    assert_eq!(labels["job"], "morpheus");
    assert_eq!(steps, 7.0, "one sample per step attempt: {labels}");
    let (_, fast) = prometheus.wait_for_series(
        "morpheus_step_duration_seconds_bucket{workflow=\"shell\",executor=\"process\",le=\"+Inf\"}",
        |_, value| value >= 7.0,
    );
    assert_eq!(fast, 7.0);
    let finished = |status: &str| {
        prometheus
            .wait_for_series(
                &format!("morpheus_runs_finished_total{{workflow=\"shell\",status=\"{status}\"}}"),
                |_, value| value > 0.0,
            )
            .1
    };
    assert_eq!(finished("completed"), 3.0);
    assert_eq!(finished("failed"), 1.0);
    let (_, started) = prometheus.wait_for_series(
        "morpheus_runs_started_total{workflow=\"shell\"}",
        |_, value| value > 0.0,
    );
    assert_eq!(started, 5.0, "every run started once, the slow one too");
    let (_, calls) = prometheus.wait_for_series(
        "morpheus_executor_calls_total{executor=\"process\"}",
        |_, value| value >= 7.0,
    );
    let (_, failures) = prometheus.wait_for_series(
        "morpheus_executor_failures_total{executor=\"process\"}",
        |_, value| value > 0.0,
    );
    assert_eq!(
        (failures, calls >= 7.0),
        (1.0, true),
        "the slow step's call may have ended too"
    );
    let (_, running) = prometheus.wait_for_series(
        "morpheus_queue_depth{queue=\"slow\",state=\"running\"}",
        |_, value| value > 0.0,
    );
    assert_eq!(running, 1.0, "sampled from the database at scrape time");
    for histogram in [
        "morpheus_claim_duration_seconds_count",
        "morpheus_commit_duration_seconds_count",
        "morpheus_commit_batch_size_count",
    ] {
        prometheus.wait_for_series(histogram, |_, value| value > 0.0);
    }
    // The sub-millisecond buckets are there for claims on an idle SQLite file.
    let buckets: Vec<String> = prometheus
        .query("morpheus_claim_duration_seconds_bucket")
        .into_iter()
        .map(|(labels, _)| labels["le"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        buckets.iter().any(|le| le == "0.0001"),
        "sub-millisecond buckets: {buckets:?}"
    );
    drop(prometheus);
}

#[test]
fn metrics_need_a_token_when_tokens_are_configured_and_serve_shows_queue_depth() {
    let env = TestEnv::sqlite();
    let configure = with_tokens(&env);
    // `serve` runs no workers: a started run stays pending in its queue.
    let api = ApiProcess::spawn(&env, "serve", "serve", &[], configure).with_token(ADMIN_TOKEN);
    start(&api, "reports", &[("a", "true")]);
    start(&api, "reports", &[("b", "true")]);

    let (status, _, body) = get_metrics(&api, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    let (status, _, _) = get_metrics(&api, Some("not-the-token-at-all-0123"));
    assert_eq!(status, 401);
    let (status, content_type, body) = get_metrics(&api, Some(READ_TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(
        sample(
            &body,
            "morpheus_queue_depth",
            &[("queue", "reports"), ("state", "pending")]
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "morpheus_queue_depth",
            &[("queue", "reports"), ("state", "running")]
        ),
        Some(0.0),
        "{body}"
    );
    assert!(body.contains("# TYPE morpheus_queue_depth gauge"), "{body}");
    let (status, _, _) = get_metrics(&api, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "an admin token reads too");
}

#[test]
fn counters_and_queue_depth_follow_runs_on_postgres() {
    let env = TestEnv::new(Backend::Postgres);
    let api = ApiProcess::spawn(&env, "up", "up", &["--poll-interval", "100ms"], |_| {});
    // No tokens configured: none is needed (the server listens on loopback only).
    let completed: Vec<String> = (0..3)
        .map(|index| start(&api, "default", &[("step", &format!("echo {index}"))]))
        .collect();
    for run in &completed {
        api.wait_for_status(run, "completed", WAIT);
    }
    let slow = start(&api, "slow", &[("wait", "sleep 60")]);
    api.wait_for_status(&slow, "running", WAIT);

    let (status, content_type, body) = get_metrics(&api, None);
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    assert_eq!(
        sample(
            &body,
            "morpheus_runs_finished_total",
            &[("workflow", "shell"), ("status", "completed")]
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "morpheus_runs_started_total",
            &[("workflow", "shell")]
        ),
        Some(4.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "morpheus_step_duration_seconds_count",
            &[("workflow", "shell"), ("executor", "process")]
        ),
        Some(3.0),
        "the slow step is still running: {body}"
    );
    assert_eq!(
        sample(
            &body,
            "morpheus_queue_depth",
            &[("queue", "slow"), ("state", "running")]
        ),
        Some(1.0),
        "{body}"
    );

    // Cancelled, the slow run leaves the queue: its gauges drop to zero, they do not
    // keep their last value.
    let cancelled = api.post(&format!("/api/v1/runs/{slow}/cancel"), &json!({}));
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    api.wait_for_status(&slow, "cancelled", WAIT);
    let (_, _, body) = get_metrics(&api, None);
    assert_eq!(
        sample(
            &body,
            "morpheus_queue_depth",
            &[("queue", "slow"), ("state", "running")]
        ),
        Some(0.0),
        "{body}"
    );
    // The worker saw the cancellation as its lease going away.
    let lost = wait_for("the worker to give up the cancelled run", WAIT, || {
        let (_, _, body) = get_metrics(&api, None);
        sample(&body, "morpheus_leases_lost_total", &[]).filter(|lost| *lost >= 1.0)
    });
    assert_eq!(lost, 1.0);
}
