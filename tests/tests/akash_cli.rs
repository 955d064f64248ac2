//! `morpheus init` and `morpheus deploy --dry-run`, the real binary: every template's
//! file validates and synthesizes, the dry run names the image by the content hash of
//! the build context (and a changed file changes it), and its SDL, manifest version and
//! groups are what Akash's own SDK (`tests/sdl-judge`, pinned chain-sdk) derives from
//! the same SDL. Bad input is one line naming the field, and nothing is written.

use std::path::Path;
use std::process::Command;

use morpheus_tests::{morpheus_bin, CliOutput};
use serde_json::Value;

fn morpheus(dir: &Path, args: &[&str]) -> CliOutput {
    CliOutput::from_command(Command::new(morpheus_bin()).current_dir(dir).args(args))
}

/// chain-sdk's answer for one SDL file.
fn judge(sdl: &Path) -> Value {
    morpheus_tests::sdl_judge::judge(&[sdl.to_path_buf()]).remove(0)
}

/// A project with a Dockerfile (it wins over detection) and a page.
fn project(dir: &Path, page: &str) {
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY index.html /\n").unwrap();
    std::fs::write(dir.join("index.html"), page).unwrap();
}

fn dry_run(dir: &Path) -> Value {
    let out = morpheus(dir, &["deploy", "--dry-run", "--json"]);
    assert!(out.status.success(), "deploy --dry-run: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("--json prints one document")
}

#[test]
fn every_template_dry_runs_to_what_akash_sdk_derives() {
    for template in ["ai-agent", "mcp-server", "website", "custom"] {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path(), "hello");
        let out = morpheus(
            dir.path(),
            &["init", "--template", template, "--name", "demo"],
        );
        assert!(out.status.success(), "init {template}: {}", out.stderr);
        let plan = dry_run(dir.path());
        let image = plan["image"].as_str().unwrap();
        assert!(
            image.starts_with("registry.example.com/demo:"),
            "{template}: {image}"
        );
        let sdl = dir.path().join("sdl.yaml");
        std::fs::write(&sdl, plan["sdl"].as_str().unwrap()).unwrap();
        let judged = judge(&sdl);
        assert_eq!(
            judged["error"],
            Value::Null,
            "{template}: the SDK refused the SDL: {judged}"
        );
        assert_eq!(
            plan["manifest_version"], judged["manifestVersion"],
            "{template}"
        );
        assert_eq!(
            plan["manifest_sorted_json"], judged["manifestSortedJSON"],
            "{template}"
        );
        assert_eq!(
            plan["groups"].as_array().map(Vec::len),
            judged["groups"].as_array().map(Vec::len),
            "{template}"
        );
    }
}

#[test]
fn the_image_is_named_by_the_content_hash_of_the_build_context() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "first");
    assert!(morpheus(dir.path(), &["init", "--template", "website"])
        .status
        .success());
    let first = dry_run(dir.path());
    assert_eq!(
        dry_run(dir.path())["image"],
        first["image"],
        "the same content, the same tag"
    );
    std::fs::write(dir.path().join("index.html"), "second").unwrap();
    let second = dry_run(dir.path());
    assert_ne!(
        second["image"], first["image"],
        "a changed file changes the tag"
    );
    assert_ne!(second["manifest_version"], first["manifest_version"]);
}

#[test]
fn bad_projects_are_one_line_errors_and_init_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), "x");
    let missing = morpheus(dir.path(), &["deploy", "--dry-run"]);
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("morpheus init"),
        "{}",
        missing.stderr
    );
    std::fs::write(
        dir.path().join("morpheus.yaml"),
        "name: big\ntemplate: custom\nimage: nginx\nresources: {cpu: 64, memory: 1Gi}\n",
    )
    .unwrap();
    let too_big = morpheus(dir.path(), &["deploy", "--dry-run"]);
    assert!(!too_big.status.success());
    assert_eq!(too_big.stderr_lines().len(), 1, "{}", too_big.stderr);
    assert!(
        too_big
            .stderr
            .contains("resources.cpu: 64 is above the limit 32"),
        "{}",
        too_big.stderr
    );
    let overwrite = morpheus(dir.path(), &["init", "--template", "website"]);
    assert!(!overwrite.status.success());
    assert!(overwrite.stderr.contains("--force"), "{}", overwrite.stderr);
    let kept = std::fs::read_to_string(dir.path().join("morpheus.yaml")).unwrap();
    assert!(
        kept.contains("cpu: 64"),
        "init replaced the file without --force"
    );
    let bad_template = morpheus(dir.path(), &["init", "--template", "gpu", "--force"]);
    assert!(bad_template
        .stderr
        .contains("--template: 'gpu' is not a template"));
    // Without --dry-run the project is deployed: the same bad configuration
    // is refused before anything (not even a database) is created.
    let real_deploy = morpheus(dir.path(), &["deploy"]);
    assert!(!real_deploy.status.success());
    assert_eq!(
        real_deploy.stderr_lines().len(),
        1,
        "{}",
        real_deploy.stderr
    );
    assert!(
        real_deploy
            .stderr
            .contains("resources.cpu: 64 is above the limit 32"),
        "{}",
        real_deploy.stderr
    );
    let created: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !["morpheus.yaml", "Dockerfile", "index.html"].contains(&name.as_str()))
        .collect();
    assert!(created.is_empty(), "a refused deploy created {created:?}");
}
