//! The `docker` executor against a real Docker engine (the test fails, never skips, when
//! the engine is unreachable): every operation is safe to repeat under the same
//! idempotency key, a container is adopted by name and labels and never created twice,
//! and a command re-executed after a crash first kills what its predecessor left running.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use morpheus_engine::{LogLevel, LogSink};
use morpheus_executors::docker::{
    ContainerSpec, DockerExecutor, ExecSpec, StartSpec, UploadSpec, CREATED_BY_LABEL, MANAGED_LABEL,
};
use morpheus_tests::docker::{containers_with_label, docker_ok, test_image, ContainerGuard};

const TEST_LABEL: &str = "morpheus.test";

struct Fixture {
    docker: DockerExecutor,
    id: String,
    _guard: ContainerGuard,
}

impl Fixture {
    fn new() -> Self {
        test_image();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self {
            docker: DockerExecutor::new(),
            _guard: ContainerGuard::new(TEST_LABEL, &id),
            id,
        }
    }

    fn spec(&self, name: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("morpheus-test-{}-{name}", self.id),
            image: test_image().to_owned(),
            labels: BTreeMap::from([(TEST_LABEL.to_owned(), self.id.clone())]),
            env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
            workdir: "/workspace/app".to_owned(),
            port: Some(3000),
            cpus: Some(0.5),
            memory_bytes: Some(64 << 20),
        }
    }

    fn containers(&self) -> Vec<String> {
        containers_with_label(TEST_LABEL, &self.id)
    }
}

/// Lines a [`recording_sink`] kept.
type Recorded = Arc<Mutex<Vec<(LogLevel, String)>>>;

/// A sink that keeps every line.
fn recording_sink() -> (LogSink, Recorded) {
    let lines: Recorded = Arc::default();
    let sink = {
        let lines = lines.clone();
        LogSink::new(move |level, message, _| lines.lock().unwrap().push((level, message)))
    };
    (sink, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_adopts_the_container_of_its_name_and_never_creates_a_second() {
    let f = Fixture::new();
    let spec = f.spec("sandbox");
    let first = f
        .docker
        .ensure_container(&spec, "run-1/provision", &LogSink::discard())
        .await
        .expect("create");
    assert!(!first.adopted);
    assert_eq!(first.container.state, "running");
    assert_eq!(first.container.labels[MANAGED_LABEL], "true");
    assert_eq!(first.container.labels[CREATED_BY_LABEL], "run-1/provision");
    let host_port = first.container.ports[&3000];
    assert!(host_port > 0);

    // The same call again (a re-executed step) adopts it, even after it stopped.
    docker_ok(&["stop", "-t", "1", &first.container.id]);
    let again = f
        .docker
        .ensure_container(&spec, "run-1/provision", &LogSink::discard())
        .await
        .expect("adopt");
    assert!(again.adopted);
    assert_eq!(again.container.id, first.container.id);
    assert_eq!(
        again.container.state, "running",
        "a stopped sandbox is started again"
    );
    assert_eq!(f.containers().len(), 1, "never a second container");

    // A container of that name without the requested labels is not ours: refused.
    let mut impostor = spec.clone();
    impostor
        .labels
        .insert("morpheus.run".to_owned(), "someone-else".to_owned());
    let refused = f
        .docker
        .ensure_container(&impostor, "run-2/provision", &LogSink::discard())
        .await
        .expect_err("a foreign container is never adopted");
    assert!(!refused.is_retryable());
    assert!(
        refused.message().contains("refusing to adopt"),
        "{}",
        refused.message()
    );

    let info = f
        .docker
        .inspect(&spec.name)
        .await
        .expect("inspect")
        .expect("exists");
    assert_eq!(info.id, first.container.id);
    let listed = f
        .docker
        .list(&BTreeMap::from([(TEST_LABEL.to_owned(), f.id.clone())]))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, spec.name);

    assert!(f.docker.remove(&spec.name).await.expect("remove").removed);
    assert!(
        !f.docker
            .remove(&spec.name)
            .await
            .expect("remove again")
            .removed
    );
    assert!(f
        .docker
        .inspect(&spec.name)
        .await
        .expect("inspect")
        .is_none());
    assert!(f.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_lines_reports_exit_codes_and_kills_its_previous_attempt() {
    let f = Fixture::new();
    let spec = f.spec("exec");
    f.docker
        .ensure_container(&spec, "run/provision", &LogSink::discard())
        .await
        .expect("create");
    let exec = |command: &str| ExecSpec {
        container: spec.name.clone(),
        command: command.to_owned(),
        workdir: Some("/workspace/app".to_owned()),
        env: BTreeMap::from([("EXTRA".to_owned(), "x".to_owned())]),
        timeout_s: Some(20.0),
    };

    let (sink, lines) = recording_sink();
    let done = f
        .docker
        .exec(
            &exec("echo $GREETING $EXTRA; pwd; echo oops >&2"),
            "run/build",
            None,
            &sink,
        )
        .await
        .expect("exit 0");
    assert_eq!(done.stdout_tail, ["hello x", "/workspace/app"]);
    assert_eq!(done.stderr_tail, ["oops"]);
    // stdout and stderr are separate streams: order holds within each, not across.
    let recorded = lines.lock().unwrap().clone();
    let of = |level: LogLevel| -> Vec<String> {
        recorded
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, text)| text.clone())
            .collect()
    };
    assert_eq!(of(LogLevel::Info), ["hello x", "/workspace/app"]);
    assert_eq!(of(LogLevel::Warn), ["oops"]);

    let failed = f
        .docker
        .exec(
            &exec("echo nope >&2; exit 7"),
            "run/test",
            None,
            &LogSink::discard(),
        )
        .await
        .expect_err("exit 7");
    assert!(!failed.is_retryable());
    assert!(
        failed.message().contains("exited with code 7"),
        "{}",
        failed.message()
    );
    assert!(failed.message().contains("nope"), "{}", failed.message());

    // An attempt whose worker crashed: its process group keeps running in the sandbox
    // until the next attempt of the same step kills it. (A crashed worker runs no
    // cleanup, so the first call is forgotten rather than dropped.)
    let processes = || docker_ok(&["exec", &spec.name, "ps", "-o", "pid,args"]);
    let slow = exec("sleep 30 & sleep 30; echo finished-first");
    let discard = LogSink::discard();
    let mut first = Box::pin(f.docker.exec(&slow, "run/slow", None, &discard));
    tokio::select! {
        result = &mut first => panic!("the first attempt ended early: {result:?}"),
        _ = tokio::time::sleep(Duration::from_millis(1500)) => {}
    }
    std::mem::forget(first);
    assert!(processes().contains("sleep 30"), "{}", processes());
    let started = Instant::now();
    let second = f
        .docker
        .exec(&exec("echo second"), "run/slow", None, &LogSink::discard())
        .await
        .expect("second attempt");
    assert_eq!(second.stdout_tail, ["second"]);
    let remaining = processes();
    assert!(
        !remaining.contains("sleep 30"),
        "the first attempt's processes are gone after {:?}:\n{remaining}",
        started.elapsed()
    );

    let timed_out = f
        .docker
        .exec(
            &ExecSpec {
                timeout_s: Some(1.0),
                ..exec("sleep 20")
            },
            "run/hang",
            None,
            &LogSink::discard(),
        )
        .await
        .expect_err("time limit");
    assert!(
        timed_out.message().contains("timed out"),
        "{}",
        timed_out.message()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !processes().contains("sleep 20"),
        "a timed-out command is killed"
    );

    let gone = f
        .docker
        .exec(
            &ExecSpec {
                container: "morpheus-test-no-such-container".into(),
                ..exec("true")
            },
            "run/x",
            None,
            &LogSink::discard(),
        )
        .await
        .expect_err("no container");
    assert!(!gone.is_retryable(), "{}", gone.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_unpacks_zstd_archives_and_start_runs_once() {
    let f = Fixture::new();
    let spec = f.spec("start");
    let ensured = f
        .docker
        .ensure_container(&spec, "run/provision", &LogSink::discard())
        .await
        .expect("create");

    // A tar.zst with one file, as the deploy snapshots are stored.
    let dir = tempfile::tempdir().expect("tempdir");
    let archive_path = dir.path().join("site.tar.zst");
    {
        let file = std::fs::File::create(&archive_path).expect("archive");
        let encoder = zstd::Encoder::new(file, 3).expect("zstd").auto_finish();
        let mut tar = tar::Builder::new(encoder);
        let body = b"served by busybox\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "index.html", &body[..])
            .expect("append");
        tar.finish().expect("finish tar");
    }
    let uploaded = f
        .docker
        .upload_archive(&UploadSpec {
            container: spec.name.clone(),
            archive: archive_path,
            dest: "/workspace/app".into(),
        })
        .await
        .expect("upload");
    assert!(uploaded.bytes >= 1024, "a tar is at least two blocks");
    let start = StartSpec {
        container: spec.name.clone(),
        command: "echo serving on $PORT; httpd -f -p 3000 -h /workspace/app".into(),
        workdir: Some("/workspace/app".into()),
        env: BTreeMap::from([("PORT".to_owned(), "3000".to_owned())]),
    };
    let first = f
        .docker
        .start_command(&start, "run/start", &LogSink::discard())
        .await
        .expect("start");
    assert!(first.started);
    let second = f
        .docker
        .start_command(&start, "run/start", &LogSink::discard())
        .await
        .expect("start again");
    assert!(!second.started, "a live start command is not started twice");
    let httpds = docker_ok(&["exec", &spec.name, "ps", "-o", "args"])
        .lines()
        .filter(|line| line.starts_with("httpd"))
        .count();
    assert_eq!(httpds, 1);

    let url = format!("http://127.0.0.1:{}/", ensured.container.ports[&3000]);
    // The blocking HTTP helper must not run on the runtime's own threads.
    let body = tokio::task::spawn_blocking(move || {
        morpheus_tests::wait_for("httpd to answer", Duration::from_secs(10), || {
            morpheus_tests::docker::http_get(&url).ok()
        })
    })
    .await
    .expect("probe task");
    assert_eq!(body, (200, "served by busybox\n".to_owned()));

    // The start command's output is the container's own log.
    let (sink, lines) = recording_sink();
    let copied = f.docker.logs(&spec.name, 10, &sink).await.expect("logs");
    assert!(copied >= 1);
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, line)| line == "serving on 3000"));
}
