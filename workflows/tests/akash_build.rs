//! The build engine end to end: a project directory on disk, planned by
//! `akash::build::prepare`, built and pushed by the docker executor to Debian's
//! `docker-registry` on 127.0.0.1:5000 (scripts/test starts it), and run by digest.

use morpheus_executors::image_build::{DockerfileSource, ImageBuild, ImageSource};
use morpheus_executors::DockerExecutor;
use morpheus_tests::docker::{docker_ok, test_image};
use morpheus_workflows::akash::build::{prepare, Framework};
use morpheus_workflows::akash::project::BuildSection;

#[tokio::test]
async fn a_project_directory_is_built_pushed_and_runs_by_digest() {
    let base = test_image();
    let registry = "127.0.0.1:5000";
    let answer = reqwest::get(format!("http://{registry}/v2/")).await;
    assert!(
        matches!(&answer, Ok(response) if response.status().is_success()),
        "no registry at {registry} ({answer:?}): run scripts/test, which starts docker-registry there"
    );
    let project = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY greeting.txt /greeting.txt\nCMD [\"cat\", \"/greeting.txt\"]\n"),
    )
    .unwrap();
    std::fs::write(project.path().join("greeting.txt"), "built by morpheus\n").unwrap();
    // Ignored by the snapshot rules: neither in the context nor in the hash.
    std::fs::write(project.path().join("debug.log"), "noise").unwrap();
    let repository = format!(
        "{registry}/morpheus-akash-build-{}",
        uuid::Uuid::new_v4().simple()
    );
    let build = BuildSection {
        context: ".".into(),
        dockerfile: None,
        tag: format!("{repository}:latest"),
        start: None,
    };
    let plan = prepare(project.path(), store.path(), &build, 8080).unwrap();
    assert_eq!(
        plan.framework,
        Framework::Dockerfile {
            path: "Dockerfile".into()
        }
    );
    assert_eq!(
        plan.tag,
        format!("{repository}:{}", &plan.content_hash[..16])
    );

    let executor = DockerExecutor::new();
    let mut lines = Vec::new();
    let pushed = executor
        .build_and_push(
            &ImageBuild {
                context_tar: &plan.context_tar,
                dockerfile: DockerfileSource::InContext("Dockerfile"),
                tag: &plan.tag,
            },
            &mut |line: &str| lines.push(line.to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(pushed.source, ImageSource::Built, "{lines:?}");
    assert!(
        pushed
            .by_digest
            .starts_with(&format!("{repository}@sha256:")),
        "{pushed:?}"
    );
    assert!(
        lines.iter().any(|line| line.starts_with("Step 2/3")),
        "{lines:?}"
    );

    // Run the image by its digest: what the SDL will name.
    let output = docker_ok(&["run", "--rm", &pushed.by_digest]);
    assert_eq!(output, "built by morpheus\n");

    // The same directory plans the same tag, which the registry already has.
    let again = prepare(project.path(), store.path(), &build, 8080).unwrap();
    assert_eq!(again.tag, plan.tag);
    let reused = executor
        .build_and_push(
            &ImageBuild {
                context_tar: &again.context_tar,
                dockerfile: DockerfileSource::InContext("Dockerfile"),
                tag: &again.tag,
            },
            &mut |_: &str| {},
        )
        .await
        .unwrap();
    assert_eq!(reused.source, ImageSource::Registry);
    assert_eq!(reused.by_digest, pushed.by_digest);

    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &plan.tag, &pushed.by_digest])
        .output();
}
