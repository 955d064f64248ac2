//! `morpheus bench extensions`: what an extension host adds to a step's executor call,
//! measured side by side in one run. The same no-op call goes through
//!
//! - an in-process Rust executor (the baseline),
//! - the WASM host (the `echo` export of the WAT plugin in the executors' test
//!   fixtures, compiled by the host at load),
//! - the stdio host (a small Python 3 program embedded here, written to a temp file),
//! - the JSON-RPC host (the same program serving HTTP on loopback, in its own process),
//!
//! each called through [`Executor::call`], the path a workflow step takes (payload
//! decoding, admission, schema checks, the supervisor, the transport). Sequential calls
//! give p50/p99 and the overhead (host p50 − in-process p50) against the issue's
//! budgets; calls at a given concurrency give throughput.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use morpheus_engine::{
    async_trait, Engine, ExecError, ExecOutput, ExecRequest, Executor, ExecutorRegistry,
    LeaseCheck, LogSink, RunStatus, Runtime, WorkerConfig, Workflow, WorkflowRegistry,
};
use morpheus_executors::extensions::{Extension, ExtensionConfig};
use morpheus_workflows::pipeline::Pipeline;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::BenchExtensionsArgs;

/// The WASM plugin: its `echo` export answers its input envelope.
const ECHO_WAT: &str = include_str!("../../executors/tests/fixtures/wasm/echo.wat");

/// A no-op extension over stdio (default) or JSON-RPC over HTTP (`--http`, printing
/// `listening PORT` once it accepts connections).
const NOOP_PY: &str = r#"import json, sys

CAPABILITIES = {"name": "bench-noop", "description": "Answers every call with {}",
                "methods": [{"name": "noop"}], "concurrency": 64}


def answer(request):
    result = CAPABILITIES if request.get("method") == "capabilities" else {}
    return {"id": request.get("id"), "result": result}


def serve_stdio():
    for line in sys.stdin:
        sys.stdout.write(json.dumps(answer(json.loads(line))) + "\n")
        sys.stdout.flush()


def serve_http():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK, 40 ms later.
        disable_nagle_algorithm = True

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            response = answer(request)
            response["jsonrpc"] = "2.0"
            body = json.dumps(response).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        # Room for every connection of a concurrent client (the default backlog is 5).
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve_http() if sys.argv[1:] == ["--http"] else serve_stdio()
"#;

/// Calls made before measuring, so caches, pools and connections are warm.
const WARMUP_CALLS: usize = 200;

/// The deadline each call is handed (far beyond any no-op).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The baseline: an executor compiled into the binary that answers `{}`.
struct InProcessNoop;

#[async_trait]
impl Executor for InProcessNoop {
    fn kind(&self) -> &str {
        "bench-in-process"
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        // Reads the payload as an extension would, so the baseline is not free.
        Ok(json!({"method": request.payload["method"].clone()}))
    }
}

/// One host under test.
struct Subject {
    host: &'static str,
    /// Its executor name (what a pipeline step names).
    kind: &'static str,
    /// The largest overhead over the in-process p50 the issue allows, in ms.
    budget_ms: Option<f64>,
    executor: Arc<dyn Executor>,
    method: &'static str,
}

/// One host's figures.
#[derive(Debug, Serialize)]
struct HostReport {
    host: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    overhead_ms: Option<f64>,
    budget_ms: Option<f64>,
    verdict: Option<&'static str>,
    calls_per_s: f64,
    /// With `--durable-runs`: pipeline steps per second through this host, on SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    durable_steps_per_s: Option<f64>,
}

/// Everything `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    calls: usize,
    throughput_calls: usize,
    concurrency: usize,
    hosts: Vec<HostReport>,
}

/// The JSON-RPC extension's process, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many calls to make, after the command line.
struct Plan {
    calls: usize,
    throughput_calls: usize,
    concurrency: usize,
}

/// Runs the benchmark and prints its table (or, with `--json`, one JSON line).
pub async fn run(args: BenchExtensionsArgs) -> Result<()> {
    let plan = Plan {
        calls: args.calls as usize,
        throughput_calls: args.throughput_calls as usize,
        concurrency: args.concurrency as usize,
    };
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let script = dir.path().join("noop.py");
    std::fs::write(&script, NOOP_PY).context("cannot write the Python extension")?;
    let plugin = dir.path().join("echo.wat");
    std::fs::write(&plugin, ECHO_WAT).context("cannot write the WASM plugin")?;

    eprintln!(
        "starting the JSON-RPC service ({} {})",
        args.python,
        script.display()
    );
    let (service, url) = start_service(&args.python, &script)?;
    eprintln!("loading the extensions");
    let wasm = load(&format!(
        "name = \"bench-wasm\"\nprotocol = \"extism\"\nsource = {{ type = \"wasm\", path = {:?} }}\n",
        plugin.display().to_string()
    ))
    .await?;
    let stdio = load(&format!(
        "name = \"bench-stdio\"\nprotocol = \"stdio\"\nsource = {{ type = \"process\", command = {:?}, args = [{:?}] }}\n",
        args.python,
        script.display().to_string()
    ))
    .await?;
    let jsonrpc = load(&format!(
        "name = \"bench-jsonrpc\"\nprotocol = \"jsonrpc\"\nsource = {{ type = \"http\", url = {url:?} }}\n"
    ))
    .await?;
    let subjects = [
        Subject {
            host: "in-process",
            kind: "bench-in-process",
            budget_ms: None,
            executor: Arc::new(InProcessNoop),
            method: "noop",
        },
        Subject {
            host: "wasm",
            kind: "bench-wasm",
            budget_ms: Some(0.2),
            executor: Arc::new(wasm.clone()),
            method: "echo",
        },
        Subject {
            host: "stdio",
            kind: "bench-stdio",
            budget_ms: Some(0.5),
            executor: Arc::new(stdio.clone()),
            method: "noop",
        },
        Subject {
            host: "jsonrpc",
            kind: "bench-jsonrpc",
            budget_ms: Some(1.0),
            executor: Arc::new(jsonrpc.clone()),
            method: "noop",
        },
    ];
    let mut measured = measure_all(&subjects, &plan).await;
    if let (Ok(hosts), Some(runs)) = (&mut measured, args.durable_runs) {
        let mut executors = ExecutorRegistry::new();
        executors.register(InProcessNoop);
        for extension in [&wasm, &stdio, &jsonrpc] {
            executors.register(extension.clone());
        }
        let durable = DurablePlan {
            runs: runs as usize,
            steps: args.durable_steps as usize,
            concurrency: plan.concurrency,
        };
        match durable_steps(&subjects, executors, &durable).await {
            Ok(rates) => {
                for (host, rate) in hosts.iter_mut().zip(rates) {
                    host.durable_steps_per_s = Some(rate.round());
                }
            }
            Err(error) => measured = Err(error),
        }
    }
    for extension in [&wasm, &stdio, &jsonrpc] {
        extension.stop().await;
    }
    drop(service);
    let hosts = measured?;
    let report = Report {
        calls: plan.calls,
        throughput_calls: plan.throughput_calls,
        concurrency: plan.concurrency,
        hosts,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn measure_all(subjects: &[Subject], args: &Plan) -> Result<Vec<HostReport>> {
    let mut hosts: Vec<HostReport> = Vec::new();
    for subject in subjects {
        eprintln!(
            "{}: {WARMUP_CALLS} warm-up calls, {} sequential calls",
            subject.host, args.calls
        );
        sequential(subject, WARMUP_CALLS).await?;
        let mut latencies = sequential(subject, args.calls).await?;
        latencies.sort_unstable();
        eprintln!(
            "{}: {} calls at concurrency {}",
            subject.host, args.throughput_calls, args.concurrency
        );
        let calls_per_s = throughput(subject, args.throughput_calls, args.concurrency).await?;
        let p50_ms = percentile_ms(&latencies, 0.50);
        let baseline = hosts.first().map(|baseline| baseline.p50_ms);
        let overhead_ms = subject
            .budget_ms
            .and(baseline)
            .map(|baseline| round3(p50_ms - baseline));
        hosts.push(HostReport {
            host: subject.host,
            p50_ms,
            p99_ms: percentile_ms(&latencies, 0.99),
            overhead_ms,
            budget_ms: subject.budget_ms,
            verdict: overhead_ms
                .zip(subject.budget_ms)
                .map(
                    |(overhead, budget)| {
                        if overhead <= budget {
                            "PASS"
                        } else {
                            "OVER"
                        }
                    },
                ),
            calls_per_s: calls_per_s.round(),
            durable_steps_per_s: None,
        });
    }
    Ok(hosts)
}

/// Loads one extension from its `[[extensions]]` entry (queue room for the
/// throughput calls).
async fn load(entry: &str) -> Result<Extension> {
    let config: ExtensionConfig = toml::from_str(&format!("{entry}queue = 10000\n"))
        .map_err(|error| anyhow!("bench extension entry: {error}"))?;
    Extension::load(config)
        .await
        .map_err(|error| anyhow!(error))
}

/// Starts the script serving JSON-RPC on a free loopback port; returns it and its URL.
fn start_service(python: &str, script: &std::path::Path) -> Result<(Service, String)> {
    let mut child = Command::new(python)
        .arg(script)
        .arg("--http")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {python} (the stdio and JSON-RPC hosts need Python 3; --python names another)"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let service = Service(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("the JSON-RPC service did not start")?;
    let Some(port) = line.trim().strip_prefix("listening ") else {
        bail!("the JSON-RPC service did not say where it listens (it printed {line:?})");
    };
    Ok((service, format!("http://127.0.0.1:{port}/")))
}

fn request(index: usize, method: &str) -> ExecRequest {
    ExecRequest {
        idempotency_key: format!("bench/call-{index}"),
        attempt: 1,
        fencing_token: 1,
        lease: LeaseCheck::always(),
        deadline: Some(Instant::now() + CALL_DEADLINE),
        payload: json!({"method": method, "params": {}}),
        logs: LogSink::discard(),
    }
}

async fn call(subject: &Subject, index: usize) -> Result<Value> {
    subject
        .executor
        .call(request(index, subject.method))
        .await
        .map_err(|error| anyhow!("{} call {index} failed: {error}", subject.host))
}

/// Latency of each of `calls` calls made one after another.
async fn sequential(subject: &Subject, calls: usize) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(calls);
    for index in 0..calls {
        let started = Instant::now();
        call(subject, index).await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Calls per second with `concurrency` calls in flight.
async fn throughput(subject: &Subject, calls: usize, concurrency: usize) -> Result<f64> {
    let started = Instant::now();
    let mut answers = futures::stream::iter(0..calls)
        .map(|index| call(subject, index))
        .buffer_unordered(concurrency);
    while let Some(answer) = answers.next().await {
        answer?;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// The durable-steps part of the benchmark.
struct DurablePlan {
    runs: usize,
    steps: usize,
    concurrency: usize,
}

/// Steps per second of `pipeline` runs whose every step calls one host, through the
/// real engine on a fresh SQLite file (claims, leases, journal, group commit), one host
/// after the other.
async fn durable_steps(
    subjects: &[Subject],
    executors: ExecutorRegistry,
    plan: &DurablePlan,
) -> Result<Vec<f64>> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let world =
        crate::commands::open(&format!("sqlite://{}/bench.db", dir.path().display())).await?;
    let mut workflows = WorkflowRegistry::new();
    workflows.register(Pipeline);
    let engine = Engine::new(world.clone(), workflows.clone(), executors);
    let mut config = WorkerConfig::for_backend(world.backend());
    config.concurrency = plan.concurrency;
    config.poll_interval = Duration::from_millis(50);
    let mut rates = Vec::new();
    for subject in subjects {
        eprintln!(
            "{}: {} pipeline runs of {} steps on SQLite, {} in flight",
            subject.host, plan.runs, plan.steps, plan.concurrency
        );
        let steps: Vec<Value> = (0..plan.steps)
            .map(|index| {
                json!({"name": format!("call-{index}"), "executor": subject.kind,
                       "method": subject.method, "params": {}})
            })
            .collect();
        let mut run_ids = Vec::with_capacity(plan.runs);
        for _ in 0..plan.runs {
            let new_run = workflows.prepare(Pipeline::NAME, json!({"steps": steps}), None)?;
            run_ids.push(engine.start_prepared(new_run).await?.run_id);
        }
        let started = Instant::now();
        let runtime = Runtime::new(engine.clone())
            .worker_config(config.clone())
            .without_scheduler()
            .spawn();
        let mut failed = None;
        for run_id in run_ids {
            let run = engine.wait(run_id).await?;
            if run.status != RunStatus::Completed && failed.is_none() {
                failed = Some(format!(
                    "run {run_id} ended {:?}: {:?}",
                    run.status, run.error
                ));
            }
        }
        let took = started.elapsed();
        runtime.shutdown().await?;
        if let Some(failed) = failed {
            bail!("{}: {failed}", subject.host);
        }
        rates.push((plan.runs * plan.steps) as f64 / took.as_secs_f64());
    }
    Ok(rates)
}

fn percentile_ms(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    round3(sorted[index].as_secs_f64() * 1000.0)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn print_table(report: &Report) {
    println!(
        "{} sequential calls per host (p50/p99); throughput: {} calls at concurrency {}",
        report.calls, report.throughput_calls, report.concurrency
    );
    println!(
        "{:<11} {:>9} {:>9} {:>12} {:>10} {:>7} {:>10} {:>16}",
        "host", "p50 ms", "p99 ms", "overhead ms", "budget ms", "", "calls/s", "durable steps/s"
    );
    let dash = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.3}"));
    for host in &report.hosts {
        println!(
            "{:<11} {:>9.3} {:>9.3} {:>12} {:>10} {:>7} {:>10.0} {:>16}",
            host.host,
            host.p50_ms,
            host.p99_ms,
            dash(host.overhead_ms),
            dash(host.budget_ms),
            host.verdict.unwrap_or(""),
            host.calls_per_s,
            host.durable_steps_per_s
                .map_or("-".to_owned(), |rate| format!("{rate:.0}"))
        );
    }
}
