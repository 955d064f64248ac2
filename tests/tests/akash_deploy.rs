//! The Akash deploy end to end, every part a real process: the Akash chain
//! **simulator** (`morpheus devnet akash`), the provider **simulator** (`morpheus devnet
//! provider`, which runs leases as containers on the real Docker engine), the local
//! registry on 127.0.0.1:5000, `morpheus up` with `[cosmos]` (SQLite and Postgres), and
//! the CLI: `morpheus deploy` of a project whose image is built from `FROM scratch` plus
//! a static busybox, pushed, and run by digest.
//!
//! Every check reads what really happened — the chain simulator's ledger (deployments,
//! leases, escrow refunds, committed transactions), the containers on the Docker engine,
//! the app's own HTTP answer — never the workflow's report alone:
//!
//! - the happy path: the URI answers with the project's page, the sidecar runs in the
//!   same pod, `morpheus logs --follow` streams the app's output, `morpheus status`
//!   reports it ready, and `morpheus close` removes the containers and refunds the rest
//!   of the escrow;
//! - no bid before the deadline, a manifest the provider refuses, services that never
//!   become ready: each run fails saying why, and its deployment is closed and refunded;
//! - the crash matrix kills `morpheus up` around the create-deployment and the
//!   create-lease broadcasts (before the send, after it, after its confirmation), after
//!   the manifest send, while waiting for bids and while waiting for readiness,
//!   restarts it, and finds one deployment, one lease and one pod per run, each transaction
//!   committed once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use morpheus_tests::devnet::{http_request, DevnetProcess, DEMO_MNEMONIC};
use morpheus_tests::docker::{containers_with_label, docker_ok, http_get, ContainerGuard};
use morpheus_tests::{
    both_backends, wait_for, Backend, CliOutput, TestEnv, WorkerProcess, FAST_LEASES,
};
use serde_json::{json, Value};

const MNEMONIC_ENV: &str = "MORPHEUS_DEMO_MNEMONIC";
const REGISTRY: &str = "127.0.0.1:5000";
/// The provider simulator's container labels (see `morpheus_devnets::provider`).
const PROVIDER_LABEL: &str = "morpheus.provider-simulator";
const DSEQ_LABEL: &str = "akash.dseq";
const CREATE_DEPLOYMENT: &str = "/akash.deployment.v1beta4.MsgCreateDeployment";
const CREATE_LEASE: &str = "/akash.market.v1beta5.MsgCreateLease";
/// What the app serves.
const PAGE: &str = "hello from an akash lease\n";
/// What the sidecar serves to the app, inside the pod.
const SIDECAR_PAGE: &str = "sidecar here\n";

fn busybox() -> PathBuf {
    std::env::var_os("MORPHEUS_TEST_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// The sidecar image (busybox httpd on 9000), built and pushed to the local registry
/// once per test process: the provider simulator pulls every image, as a provider does.
fn sidecar_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        morpheus_tests::docker::require_docker();
        let context = tempfile::tempdir().unwrap();
        std::fs::copy(busybox(), context.path().join("busybox")).expect("copy busybox");
        std::fs::write(context.path().join("index.html"), SIDECAR_PAGE).unwrap();
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /srv/index.html\n\
             ENTRYPOINT [\"/bin/busybox\"]\nCMD [\"httpd\", \"-f\", \"-p\", \"9000\", \"-h\", \"/srv\"]\n",
        )
        .unwrap();
        let image = format!("{REGISTRY}/morpheus-e2e-sidecar:latest");
        docker_ok(&["build", "-q", "-t", &image, &context.path().display().to_string()]);
        docker_ok(&["push", "-q", &image]);
        image
    })
}

/// One deploy world: a database, both simulators, the configuration, a project.
struct DeployWorld {
    env: TestEnv,
    akash: DevnetProcess,
    provider: DevnetProcess,
    owner: String,
    config: PathBuf,
    project: PathBuf,
    // Removes every container of this provider when the test ends, however it ends.
    _containers: ContainerGuard,
}

impl DeployWorld {
    fn new(backend: Backend) -> Self {
        let env = TestEnv::new(backend);
        let mut akash = DevnetProcess::spawn_akash(&["--seed-demo", "--block-time-ms", "100"]);
        let owner = akash.demo_wallet();
        let rest = format!("http://{}", akash.addr);
        let provider = DevnetProcess::spawn(
            "provider",
            &[
                "--akash-rest",
                &rest,
                "--attribute",
                "region=local",
                "--bid-delay-blocks",
                "1",
                "--poll-interval-ms",
                "200",
            ],
        );
        let provider_address = provider.get_json("/address")["address"]
            .as_str()
            .expect("the provider's address")
            .to_owned();
        let containers = ContainerGuard::new(PROVIDER_LABEL, &provider_address);
        let config = env.path("morpheus.toml");
        std::fs::write(
            &config,
            format!(
                "[cosmos]\nrest_url = \"{rest}\"\nchain_id = \"morpheus-devnet-1\"\n\
                 key = {{ mnemonic_env = \"{MNEMONIC_ENV}\" }}\n\
                 timeouts = {{ confirm_poll = \"100ms\", confirm = \"10s\" }}\n"
            ),
        )
        .unwrap();
        let project = env.path("project");
        write_project(
            &project,
            &format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        );
        Self {
            env,
            akash,
            provider,
            owner,
            config,
            project,
            _containers: containers,
        }
    }

    /// `morpheus up` with fast leases and `[cosmos]`; `crash_at` arms `MORPHEUS_CRASH_AT`.
    fn worker(&self, name: &str, crash_at: Option<&str>) -> WorkerProcess {
        self.env.spawn_worker_with(name, FAST_LEASES, |command| {
            command
                .env("MORPHEUS_CONFIG", &self.config)
                .env(MNEMONIC_ENV, DEMO_MNEMONIC);
            if let Some(point) = crash_at {
                command.env("MORPHEUS_CRASH_AT", point);
            }
        })
    }

    /// A `morpheus <args>` command with the configuration and the key.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.env.command();
        command
            .env("MORPHEUS_CONFIG", &self.config)
            .env(MNEMONIC_ENV, DEMO_MNEMONIC)
            .args(args);
        command
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        CliOutput::from_command(&mut self.command(args))
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "morpheus {args:?} failed: {}\n{}",
            out.stderr,
            out.stdout
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|error| panic!("morpheus {args:?}: not JSON ({error}): {}", out.stdout))
    }

    /// `morpheus deploy` of the project with short windows for a 100 ms chain;
    /// `extra` flags with a value replace the defaults of the same name.
    fn deploy(&self, extra: &[&str]) -> CliOutput {
        let project = self.project.display().to_string();
        let defaults = [
            ("--deposit", "1000000uakt"),
            ("--bid-window", "500ms"),
            ("--bid-timeout", "20s"),
            ("--ready-timeout", "30s"),
            ("--seconds-per-block", "0.1"),
            ("--timeout", "150s"),
        ];
        let mut args = vec!["deploy", "--project-dir", &project, "--json"];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    fn ledger(&self) -> Value {
        self.akash.get_json("/simulator/ledger")
    }

    /// The owner's deployments on the chain, by dseq.
    fn deployments(&self) -> Vec<Value> {
        self.ledger()["deployments"]
            .as_array()
            .expect("deployments")
            .iter()
            .filter(|d| d["owner"] == self.owner.as_str())
            .cloned()
            .collect()
    }

    fn deployment(&self, dseq: &str) -> Value {
        self.deployments()
            .into_iter()
            .find(|d| d["dseq"] == dseq)
            .unwrap_or_else(|| panic!("no deployment {dseq} on the chain"))
    }

    fn leases(&self, dseq: &str) -> Vec<Value> {
        self.ledger()["leases"]
            .as_array()
            .expect("leases")
            .iter()
            .filter(|l| l["owner"] == self.owner.as_str() && l["dseq"] == dseq)
            .cloned()
            .collect()
    }

    /// How many committed transactions carried a message of `msg_type`.
    fn committed(&self, msg_type: &str) -> usize {
        self.ledger()["committed_txs"]
            .as_array()
            .expect("committed_txs")
            .iter()
            .filter(|tx| tx["code"] == 0)
            .filter(|tx| {
                tx["msg_types"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|t| t == msg_type))
            })
            .count()
    }

    /// The deployment is closed, its leases are closed, and the escrow holds nothing:
    /// what was not paid to the provider went back to the owner.
    fn assert_closed_and_refunded(&self, dseq: &str, why: &str) {
        let deployment = self.deployment(dseq);
        assert_eq!(deployment["state"], "closed", "{why}: {deployment}");
        assert_eq!(deployment["escrow"], "0", "{why}: {deployment}");
        let amount = |field: &str| -> f64 {
            deployment[field]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("{why}: {field} in {deployment}"))
        };
        assert!(
            amount("refunded") > 0.0,
            "{why}: nothing refunded: {deployment}"
        );
        assert!(
            (amount("refunded") + amount("transferred")
                - amount("deposited")
                - amount("initial_deposit"))
            .abs()
                < 1e-6,
            "{why}: escrow not accounted for (refunded + transferred ≠ deposits): {deployment}"
        );
        for lease in self.leases(dseq) {
            assert_ne!(lease["state"], "active", "{why}: {lease}");
        }
        wait_for(
            &format!("{why}: the containers of deployment {dseq} to be removed"),
            Duration::from_secs(15),
            || {
                containers_with_label(DSEQ_LABEL, dseq)
                    .is_empty()
                    .then_some(())
            },
        );
    }

    fn arm_fault(&self, fault: &Value) {
        let answer = self.provider.post("/simulator/faults", fault);
        assert!((200..300).contains(&answer.status), "{}", answer.body);
    }

    fn clear_faults(&self) {
        let answer = http_request(self.provider.addr, "DELETE", "/simulator/faults", None)
            .expect("DELETE /simulator/faults");
        assert!((200..300).contains(&answer.status), "{}", answer.body);
    }

    /// The dseq of the one deployment that appeared since `before`.
    fn new_dseq(&self, before: &[Value]) -> String {
        let known: Vec<&Value> = before.iter().map(|d| &d["dseq"]).collect();
        let fresh: Vec<Value> = self
            .deployments()
            .into_iter()
            .filter(|d| !known.contains(&&d["dseq"]))
            .collect();
        assert_eq!(fresh.len(), 1, "expected one new deployment: {fresh:?}");
        fresh[0]["dseq"].as_str().unwrap().to_owned()
    }
}

/// A project: a Dockerfile (`FROM scratch` + busybox, httpd on 8080 after a start
/// line), its page, and a `morpheus.yaml` with a custom sidecar.
fn write_project(dir: &Path, name: &str) {
    write_project_with_env(dir, name, "GREETING: hello");
}

/// [`write_project`] with `env` (YAML map entries, one per line, unindented).
fn write_project_with_env(dir: &Path, name: &str, env: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(busybox(), dir.join("busybox")).expect("copy busybox");
    std::fs::write(dir.join("index.html"), PAGE).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\n\
         ENTRYPOINT [\"/bin/busybox\"]\n\
         CMD [\"sh\", \"-c\", \"echo app started; exec /bin/busybox httpd -f -v -p 8080 -h /www\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("morpheus.yaml"),
        format!(
            "name: {name}\ntemplate: website\n\
             build: {{ context: ., tag: {REGISTRY}/morpheus-{name} }}\n\
             ports:\n  - {{ port: 8080, as: 80 }}\n\
             env:\n{env}\n\
             sidecars:\n  custom:\n    - name: side\n      image: {sidecar}\n      port: 9000\n\
             \x20     resources: {{ cpu: 0.1, memory: 64Mi }}\n",
            sidecar = sidecar_image(),
            env = env
                .lines()
                .map(|line| format!("  {line}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    )
    .unwrap();
}

/// The deploy's report from `deploy --json`.
fn report(out: &CliOutput) -> Value {
    assert!(
        out.status.success(),
        "morpheus deploy failed: {}\n{}",
        out.stderr,
        out.stdout
    );
    let printed: Value = serde_json::from_str(&out.stdout).expect("deploy --json");
    printed["report"].clone()
}

/// The app's URL from a report.
fn app_url(report: &Value) -> String {
    let uri = report["uris"]["app"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no app URI in {report}"));
    if uri.contains("://") {
        uri.to_owned()
    } else {
        format!("http://{uri}")
    }
}

/// The containers of deployment `dseq` by service name: (id, running).
fn pod(dseq: &str) -> Vec<(String, String, bool)> {
    containers_with_label(DSEQ_LABEL, dseq)
        .into_iter()
        .map(|id| {
            let inspected = docker_ok(&[
                "inspect",
                "--format",
                "{{index .Config.Labels \"akash.service\"}} {{.State.Running}}",
                &id,
            ]);
            let mut words = inspected.split_whitespace();
            let service = words.next().unwrap_or_default().to_owned();
            let running = words.next() == Some("true");
            (id, service, running)
        })
        .collect()
}

fn happy_path_runs_answers_streams_logs_and_closes(backend: Backend) {
    let world = DeployWorld::new(backend);
    let _worker = world.worker("w", None);
    let project = world.project.display().to_string();

    let before = world.deployments();
    let report = report(&world.deploy(&[]));
    let dseq = report["dseq"].as_str().expect("a dseq").to_owned();
    assert!(
        report["image"]
            .as_str()
            .is_some_and(|image| image.starts_with(REGISTRY) && image.contains("@sha256:")),
        "the SDL runs the pushed image by digest: {report}"
    );

    // The app answers at its URI with the project's page.
    let url = app_url(&report);
    let (status, body) = http_get(&url).expect("the app answers");
    assert_eq!((status, body.as_str()), (200, PAGE), "{url}");

    // The sidecar runs in the same pod: the app reaches it on localhost.
    let containers = pod(&dseq);
    let mut services: Vec<&str> = containers.iter().map(|(_, s, _)| s.as_str()).collect();
    services.sort_unstable();
    assert_eq!(services, ["app", "side"], "{containers:?}");
    assert!(
        containers.iter().all(|(_, _, running)| *running),
        "{containers:?}"
    );
    let app = &containers.iter().find(|(_, s, _)| s == "app").unwrap().0;
    let from_app = docker_ok(&[
        "exec",
        app,
        "/bin/busybox",
        "wget",
        "-qO-",
        "http://127.0.0.1:9000/",
    ]);
    assert_eq!(from_app, SIDECAR_PAGE);

    // One deployment, one lease, each transaction committed once.
    assert_eq!(world.new_dseq(&before), dseq);
    assert_eq!(world.leases(&dseq).len(), 1);
    assert_eq!(world.committed(CREATE_DEPLOYMENT), 1);
    assert_eq!(world.committed(CREATE_LEASE), 1);

    // `morpheus status` reads the chain and the provider.
    let status = world.cli_json(&["status", "--project-dir", &project, "--json"]);
    assert_eq!(status["dseq"], dseq.as_str(), "{status}");
    assert_eq!(status["deployment"]["state"], "active", "{status}");
    let services = &status["leases"][0]["status"]["services"];
    assert!(
        services.to_string().contains("\"app\""),
        "the lease status names the app: {status}"
    );

    // `morpheus logs --follow` streams the app's own output: the start line, then a
    // request made after it began following.
    let mut follower = world
        .command(&[
            "logs",
            "--project-dir",
            &project,
            "--follow",
            "--tail",
            "100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn morpheus logs --follow");
    let (send, lines) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let next_matching = |what: &str, matches: &dyn Fn(&str) -> bool| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!("morpheus logs --follow printed no {what} line"),
            }
        }
    };
    let started = next_matching("start", &|line| line.contains("app started"));
    assert!(
        started.starts_with("app"),
        "lines are `service | message`: {started}"
    );
    let (status, _) = http_get(&format!("{url}/index.html")).expect("the app answers");
    assert_eq!(status, 200);
    next_matching("request", &|line| line.contains("response:200"));
    let _ = follower.kill();
    let _ = follower.wait();

    // `morpheus close` closes it on chain; the provider removes the containers; the
    // escrow's rest goes back to the owner.
    let closed = world.cli_json(&[
        "close",
        "--project-dir",
        &project,
        "--seconds-per-block",
        "0.1",
        "--json",
    ]);
    assert!(closed.to_string().contains(&dseq), "{closed}");
    world.assert_closed_and_refunded(&dseq, "close");
    assert!(
        http_get(&url).is_err(),
        "the app still answers after its lease closed"
    );
}

both_backends!(happy_path => happy_path_runs_answers_streams_logs_and_closes);

/// Each failure ends with the run failed saying why, and the deployment closed and
/// refunded; then a deploy with the fault cleared still works in the same world.
#[test]
fn failures_close_the_deployment_and_refund_it() {
    let world = DeployWorld::new(Backend::Sqlite);
    let _worker = world.worker("w", None);
    let cases: [(&str, Option<Value>, Vec<&str>, &str); 4] = [
        (
            "no bid before the deadline",
            None,
            vec!["--require-attribute", "region=mars", "--bid-timeout", "2s"],
            "no acceptable bid",
        ),
        (
            "the provider refuses the manifest",
            Some(json!({"kind": "refuse_manifest", "status": 422})),
            vec![],
            "refused the manifest",
        ),
        (
            // What the provider answers a JWT it does not accept (the simulator's own
            // JWT checks are tested in bin/devnets/tests/provider.rs).
            "the provider answers 401 to the manifest",
            Some(json!({"kind": "refuse_manifest", "status": 401})),
            vec![],
            "refused the manifest",
        ),
        (
            "services never become ready",
            Some(json!({"kind": "never_ready"})),
            vec!["--ready-timeout", "3s"],
            "not ready",
        ),
    ];
    for (why, fault, args, says) in cases {
        if let Some(fault) = &fault {
            world.arm_fault(fault);
        }
        let before = world.deployments();
        let out = world.deploy(&args);
        assert!(
            !out.status.success(),
            "{why}: the deploy succeeded: {}",
            out.stdout
        );
        assert!(
            out.stderr.contains(says),
            "{why}: the error does not say '{says}': {}",
            out.stderr
        );
        let dseq = world.new_dseq(&before);
        world.assert_closed_and_refunded(&dseq, why);
        world.clear_faults();
    }
    let report = report(&world.deploy(&[]));
    let (status, body) = http_get(&app_url(&report)).expect("the app answers");
    assert_eq!((status, body.as_str()), (200, PAGE));
}

/// Where a crash round kills `morpheus up`.
enum Kill {
    /// At a named crash point (`MORPHEUS_CRASH_AT`): the worker kills itself there.
    Point(String),
    /// With SIGKILL once the run's logs show `line`; `fault` is armed on the provider
    /// until then (so the phase lasts long enough to be caught), and cleared before the
    /// restart.
    WhenLogged {
        line: &'static str,
        fault: Option<Value>,
    },
}

impl Kill {
    fn name(&self) -> String {
        match self {
            Kill::Point(point) => point.clone(),
            Kill::WhenLogged { line, .. } => format!("SIGKILL once the run logged '{line}'"),
        }
    }
}

/// Every crash round: each side of both transactions, the manifest send, and the two
/// waits. `MORPHEUS_DEPLOY_CRASH_POINTS=<substring>` keeps only the matching ones.
fn crash_rounds() -> Vec<Kill> {
    let only = std::env::var("MORPHEUS_DEPLOY_CRASH_POINTS").unwrap_or_default();
    let mut rounds = Vec::new();
    for steps in ["/deployment/create/broadcast", "/lease/1/broadcast"] {
        for point in ["before_send", "after_send", "after_confirm"] {
            rounds.push(Kill::Point(format!("cosmos.broadcast.{point}:{steps}")));
        }
    }
    rounds.push(Kill::Point("cosmos.manifest.after_send:/manifest/".into()));
    rounds.push(Kill::WhenLogged {
        line: "waiting for bids",
        fault: None,
    });
    rounds.push(Kill::WhenLogged {
        line: "manifest accepted",
        fault: Some(json!({"kind": "never_ready"})),
    });
    rounds.retain(|kill| kill.name().contains(&only));
    rounds
}

/// SIGKILL `morpheus up` at every step of a deploy, restart it: the run completes with
/// one deployment, one lease and one set of containers, each transaction committed
/// once, and the app answers.
#[test]
fn a_crash_at_any_step_never_makes_a_second_deployment_lease_or_pod() {
    let world = DeployWorld::new(Backend::Sqlite);
    let project = world.project.display().to_string();
    // The bid window is long enough for the bid wait to be caught.
    let deploy_args = ["--bid-window", "2s"];
    for (index, kill) in crash_rounds().iter().enumerate() {
        let why = kill.name();
        let deployments_before = world.deployments();
        let created_before = world.committed(CREATE_DEPLOYMENT);
        let leased_before = world.committed(CREATE_LEASE);
        let point = match kill {
            Kill::Point(point) => Some(point.as_str()),
            Kill::WhenLogged { .. } => None,
        };
        if let Kill::WhenLogged {
            fault: Some(fault), ..
        } = kill
        {
            world.arm_fault(fault);
        }
        let mut doomed = world.worker(&format!("crash-{index}"), point);
        let key = format!("crash-{index}");
        let mut args = vec!["--no-wait", "--idempotency-key", &key];
        args.extend_from_slice(&deploy_args);
        let started = world.deploy(&args);
        assert!(started.status.success(), "{why}: {}", started.stderr);
        let run: Value = serde_json::from_str(&started.stdout).expect("deploy --no-wait --json");
        let run = run["run_id"].as_str().expect("a run id").to_owned();
        match kill {
            Kill::Point(point) => {
                let status = doomed.wait_exit(Duration::from_secs(90));
                assert!(!status.success(), "{why}: the worker exited cleanly");
                let name = point.split(':').next().unwrap();
                assert!(
                    doomed
                        .stderr()
                        .contains(&format!("crash point {name} reached")),
                    "{why}: the worker died elsewhere: {}",
                    doomed.stderr()
                );
            }
            Kill::WhenLogged { line, fault } => {
                wait_for(&format!("{why}: the line"), Duration::from_secs(60), || {
                    let logs = world.env.cli(&["logs", &run]).stdout;
                    logs.contains(line).then_some(())
                });
                doomed.kill();
                if fault.is_some() {
                    world.clear_faults();
                }
            }
        }
        let mut survivor = world.worker(&format!("resume-{index}"), None);
        let shown = world
            .env
            .wait_for_status(&run, "completed", Duration::from_secs(120));
        survivor.kill();
        let dseq = world.new_dseq(&deployments_before);
        let output = &shown["run"]["output"];
        assert_eq!(output["dseq"], dseq.as_str(), "{why}");
        assert_eq!(world.leases(&dseq).len(), 1, "{why}: leases");
        assert_eq!(
            world.committed(CREATE_DEPLOYMENT),
            created_before + 1,
            "{why}: create-deployment transactions"
        );
        assert_eq!(
            world.committed(CREATE_LEASE),
            leased_before + 1,
            "{why}: create-lease transactions"
        );
        let containers = pod(&dseq);
        assert_eq!(
            containers.len(),
            2,
            "{why}: one set of containers: {containers:?}"
        );
        let (status, body) = http_get(&app_url(output)).expect("the app answers");
        assert_eq!((status, body.as_str()), (200, PAGE), "{why}");
        // Close it (a worker must run the close) so the next round starts clean.
        let _closer = world.worker(&format!("close-{index}"), None);
        let closed = world.cli(&[
            "close",
            &dseq,
            "--project-dir",
            &project,
            "--seconds-per-block",
            "0.1",
        ]);
        assert!(closed.status.success(), "{why}: close: {}", closed.stderr);
        world.assert_closed_and_refunded(&dseq, &why);
    }
}

/// A sealed env value of `morpheus.yaml` reaches the container in plaintext, while the
/// database file, the run's logs and its journal hold only the sealed form; a tampered
/// value fails the run before anything is created on chain.
#[test]
fn sealed_values_reach_the_container_and_nothing_else() {
    let world = DeployWorld::new(Backend::Sqlite);
    let key = world.env.path("sealing.key");
    world
        .env
        .cli_ok(&["secrets", "keygen", "--out", &key.display().to_string()]);
    let mut config = std::fs::read_to_string(&world.config).unwrap();
    config.push_str(&format!(
        "\n[secrets]\nkey = {{ hex_key_file = \"{}\" }}\n",
        key.display()
    ));
    std::fs::write(&world.config, config).unwrap();
    let plaintext = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let sealed = world
        .env
        .cli_ok(&[
            "secrets",
            "seal",
            "--key-file",
            &key.display().to_string(),
            "--value",
            &plaintext,
        ])
        .trim()
        .to_owned();
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    let name = format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    write_project_with_env(
        &world.project,
        &name,
        &format!("GREETING: hello\nSECRET_TOKEN: '{sealed}'"),
    );
    let _worker = world.worker("w", None);

    let printed = world.deploy(&[]);
    let report = report(&printed);
    let dseq = report["dseq"].as_str().unwrap().to_owned();
    let app = pod(&dseq)
        .into_iter()
        .find(|(_, service, _)| service == "app")
        .expect("the app container")
        .0;
    let env = docker_ok(&["inspect", "--format", "{{json .Config.Env}}", &app]);
    assert!(
        env.contains(&format!("SECRET_TOKEN={plaintext}")),
        "the container has the opened value: {env}"
    );

    // Nowhere else: the database (and its WAL), the run's logs and journal, the CLI's
    // own output.
    let run = serde_json::from_str::<Value>(&printed.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = world.env.cli_ok(&["runs", "show", &run, "--json"]);
    let logs = world.env.cli_ok(&["logs", &run]);
    for (what, text) in [
        ("runs show", shown.as_str()),
        ("logs", logs.as_str()),
        ("deploy's stdout", printed.stdout.as_str()),
        ("deploy's stderr", printed.stderr.as_str()),
    ] {
        assert!(!text.contains(&plaintext), "{what} holds the plaintext");
    }
    assert!(shown.contains(&sealed), "the journal keeps the sealed form");
    for entry in std::fs::read_dir(world.env.dir()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with("morpheus.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(plaintext.len())
                    .any(|window| window == plaintext.as_bytes()),
                "{file} holds the plaintext"
            );
        }
    }

    // A tampered value (still well-formed base64) does not open: the run fails naming
    // the variable, and nothing is created on chain.
    let mut tampered: Vec<char> = sealed.chars().collect();
    let at = tampered.len() - 8;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    write_project_with_env(
        &world.project,
        &name,
        &format!("SECRET_TOKEN: '{tampered}'"),
    );
    let before = world.deployments();
    let created_before = world.committed(CREATE_DEPLOYMENT);
    let failed = world.deploy(&[]);
    assert!(!failed.status.success(), "a tampered value deployed");
    assert!(
        failed.stderr.contains("env SECRET_TOKEN"),
        "the error names the variable: {}",
        failed.stderr
    );
    assert_eq!(
        world.deployments().len(),
        before.len(),
        "a deployment was created"
    );
    assert_eq!(world.committed(CREATE_DEPLOYMENT), created_before);
}
