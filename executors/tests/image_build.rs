//! Image builds against the real Docker engine and a real registry: Debian's
//! `docker-registry` on 127.0.0.1:5000 (scripts/test installs and starts it). The
//! projects build FROM the local busybox test image, so nothing is pulled.

use std::sync::{Arc, Mutex};

use morpheus_executors::image_build::{DockerfileSource, ImageBuild, ImageSource, PushedImage};
use morpheus_executors::DockerExecutor;
use morpheus_tests::docker::{docker_ok, test_image};
use sha2::{Digest, Sha256};

/// Where the tests push.
const REGISTRY: &str = "127.0.0.1:5000";

/// Panics with a clear message unless the registry answers `GET /v2/`.
async fn require_registry() {
    let answer = reqwest::get(format!("http://{REGISTRY}/v2/")).await;
    let ok = matches!(&answer, Ok(response) if response.status().is_success());
    assert!(
        ok,
        "no registry answers at {REGISTRY} ({answer:?}); this test is not skipped: run \
         scripts/test (it installs Debian's docker-registry and starts it there)"
    );
}

/// A plain tar of files.
fn context_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1);
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// The tag the workflows would give this content: its hash, first 16 hex digits.
fn content_tag(repository: &str, context: &[u8], dockerfile: &str) -> String {
    let mut sha = Sha256::new();
    sha.update(context);
    sha.update(dockerfile.as_bytes());
    format!("{repository}:{}", &hex::encode(sha.finalize())[..16])
}

/// A per-test repository, and its local tags removed at the end.
struct Repository {
    name: String,
}

impl Repository {
    fn new() -> Self {
        Self {
            name: format!(
                "{REGISTRY}/morpheus-build-test-{}",
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// The repository's path in the registry (without the host).
    fn path(&self) -> &str {
        self.name.trim_start_matches(&format!("{REGISTRY}/"))
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}", &self.name])
            .output();
        if let Ok(output) = listed {
            for tag in String::from_utf8_lossy(&output.stdout).lines() {
                let _ = std::process::Command::new("docker")
                    .args(["rmi", "-f", tag.trim()])
                    .output();
            }
        }
    }
}

/// Builds and pushes, collecting the output lines.
async fn build(
    executor: &DockerExecutor,
    context: &[u8],
    dockerfile: &str,
    tag: &str,
) -> (Result<PushedImage, morpheus_engine::StepError>, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut on_line = move |line: &str| sink.lock().unwrap().push(line.to_owned());
    let result = executor
        .build_and_push(
            &ImageBuild {
                context_tar: context,
                dockerfile: DockerfileSource::Generated(dockerfile),
                tag,
            },
            &mut on_line,
        )
        .await;
    let lines = lines.lock().unwrap().clone();
    (result, lines)
}

/// The registry's answer to `GET /v2/<name>/manifests/<digest>`: status and the
/// digest it says it served.
async fn manifest(repository: &Repository, digest: &str) -> (u16, Option<String>) {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{REGISTRY}/v2/{}/manifests/{digest}",
            repository.path()
        ))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap();
    let served = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), served)
}

fn dockerfile() -> String {
    format!(
        "FROM {}\nCOPY hello.txt /srv/hello.txt\nRUN echo build-marker && cat /srv/hello.txt\n",
        test_image()
    )
}

#[tokio::test]
async fn builds_pushes_and_answers_a_pullable_digest_then_reuses_it() {
    let dockerfile = dockerfile();
    require_registry().await;
    let repository = Repository::new();
    let executor = DockerExecutor::new();
    let context = context_tar(&[("hello.txt", "hello, morpheus\n")]);
    let tag = content_tag(&repository.name, &context, &dockerfile);

    let (first, lines) = build(&executor, &context, &dockerfile, &tag).await;
    let first = first.unwrap();
    assert_eq!(first.source, ImageSource::Built);
    assert_eq!(first.tag, tag);
    let prefix = format!("{}@sha256:", repository.name);
    assert!(first.by_digest.starts_with(&prefix), "{first:?}");
    assert_eq!(first.by_digest.len(), prefix.len() + 64, "{first:?}");
    // The build's own output reached the callback, line by line.
    assert!(lines.iter().any(|line| line == "build-marker"), "{lines:?}");
    assert!(
        lines.iter().any(|line| line == "hello, morpheus"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|line| line.starts_with("Step 3/3")),
        "{lines:?}"
    );

    let digest = first.by_digest.split_once('@').unwrap().1;
    assert_eq!(
        manifest(&repository, digest).await,
        (200, Some(digest.to_owned()))
    );
    docker_ok(&["pull", "-q", &first.by_digest]);

    // The same content again: the registry has it, nothing is built.
    let (second, lines) = build(&executor, &context, &dockerfile, &tag).await;
    let second = second.unwrap();
    assert_eq!(second.source, ImageSource::Registry);
    assert_eq!(second.by_digest, first.by_digest);
    assert!(
        !lines.iter().any(|line| line.starts_with("Step ")),
        "{lines:?}"
    );

    // Pushing the unchanged image again uploads nothing and gives the same digest.
    let mut pushed_lines = Vec::new();
    let again = executor
        .push(&tag, &mut |line: &str| pushed_lines.push(line.to_owned()))
        .await
        .unwrap();
    assert_eq!(again, first.by_digest);
    assert!(
        !pushed_lines.iter().any(|line| line == "Pushed"),
        "{pushed_lines:?}"
    );

    // A changed file: another tag, another image.
    let changed = context_tar(&[("hello.txt", "hello, changed\n")]);
    let changed_tag = content_tag(&repository.name, &changed, &dockerfile);
    assert_ne!(changed_tag, tag);
    let (third, lines) = build(&executor, &changed, &dockerfile, &changed_tag).await;
    let third = third.unwrap();
    assert_eq!(third.source, ImageSource::Built);
    assert_ne!(third.by_digest, first.by_digest);
    assert!(
        lines.iter().any(|line| line == "hello, changed"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn an_image_built_here_but_not_pushed_is_pushed_without_building() {
    let dockerfile = dockerfile();
    require_registry().await;
    let repository = Repository::new();
    let executor = DockerExecutor::new();
    let tag = format!("{}:local-only", repository.name);
    docker_ok(&["tag", test_image(), &tag]);
    // This Dockerfile cannot build: the image is reused, or the test fails.
    let broken = format!("{dockerfile}RUN exit 7\n");
    let context = context_tar(&[("hello.txt", "unused\n")]);
    let (pushed, lines) = build(&executor, &context, &broken, &tag).await;
    let pushed = pushed.unwrap();
    assert_eq!(pushed.source, ImageSource::Local, "{lines:?}");
    let digest = pushed.by_digest.split_once('@').unwrap().1;
    assert_eq!(manifest(&repository, digest).await.0, 200);
}

#[tokio::test]
async fn a_failing_build_is_a_permanent_error_with_its_last_lines() {
    let dockerfile = dockerfile();
    require_registry().await;
    let repository = Repository::new();
    let executor = DockerExecutor::new();
    let broken = format!("{dockerfile}RUN echo about-to-fail && exit 3\n");
    let context = context_tar(&[("hello.txt", "hello\n")]);
    let tag = content_tag(&repository.name, &context, &broken);
    let (result, lines) = build(&executor, &context, &broken, &tag).await;
    let error = result.unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
    let message = error.message().to_owned();
    assert!(
        message.starts_with(&format!("building {tag} failed: ")),
        "{message}"
    );
    assert!(message.contains("returned a non-zero code: 3"), "{message}");
    assert!(message.contains("about-to-fail"), "{message}");
    assert!(
        lines.iter().any(|line| line == "about-to-fail"),
        "{lines:?}"
    );
    // Nothing was pushed under that tag.
    let answer = reqwest::get(format!(
        "http://{REGISTRY}/v2/{}/tags/list",
        repository.path()
    ))
    .await
    .unwrap();
    assert_eq!(answer.status().as_u16(), 404);
}

#[tokio::test]
async fn the_build_image_op_logs_every_line_and_is_a_no_op_when_repeated() {
    use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogSink};
    let dockerfile = dockerfile();
    require_registry().await;
    let repository = Repository::new();
    let executor = DockerExecutor::new();
    // The context as the deploy snapshots store it: a zstd-compressed tar on disk.
    let context = context_tar(&[("hello.txt", "hello from a step\n")]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("context.tar.zst");
    std::fs::write(&archive, zstd::encode_all(context.as_slice(), 3).unwrap()).unwrap();
    let tag = content_tag(&repository.name, &context, &dockerfile);
    let payload = serde_json::json!({
        "op": "build_image",
        "context": archive,
        "generated_dockerfile": dockerfile,
        "tag": tag,
    });
    let call = |payload: serde_json::Value| {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let sink_rows = rows.clone();
        let logs = LogSink::new(move |_, message, fields| {
            sink_rows.lock().unwrap().push((message, fields))
        });
        let request = ExecRequest {
            idempotency_key: "run/build".into(),
            attempt: 1,
            fencing_token: 1,
            lease: LeaseCheck::always(),
            deadline: None,
            payload,
            logs,
        };
        let executor = &executor;
        async move {
            let output = executor.call(request).await;
            let rows = rows.lock().unwrap().clone();
            (output, rows)
        }
    };
    let (output, rows) = call(payload.clone()).await;
    let output: PushedImage = serde_json::from_value(output.unwrap()).unwrap();
    assert_eq!(output.source, ImageSource::Built);
    assert!(
        rows.iter()
            .any(|(message, fields)| message == "hello from a step"
                && fields.as_ref().is_some_and(|f| f["stream"] == "build")),
        "{rows:?}"
    );
    let (again, rows) = call(payload).await;
    let again: PushedImage = serde_json::from_value(again.unwrap()).unwrap();
    assert_eq!(again.source, ImageSource::Registry);
    assert_eq!(again.by_digest, output.by_digest);
    assert!(
        !rows.iter().any(|(message, _)| message.starts_with("Step ")),
        "{rows:?}"
    );

    let both = serde_json::json!({
        "op": "build_image", "context": archive, "tag": tag,
        "dockerfile": "Dockerfile", "generated_dockerfile": "FROM x",
    });
    let (refused, _) = call(both).await;
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("not both"), "{error}");
}
