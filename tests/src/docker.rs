//! Docker helpers for end-to-end tests that run real containers.
//!
//! - [`require_docker`]: fails the test (never skips it) when the Docker engine does not
//!   answer, saying how to get one.
//! - [`test_image`]: a tiny base image built locally once per test process (no registry
//!   is reachable): `FROM scratch` plus a static busybox, whose `httpd` can serve a
//!   directory.
//! - [`containers_with_label`], [`ContainerGuard`]: count containers by label, and
//!   remove a test's containers when it ends (also when it panics).
//! - [`http_get`]: one GET with a short timeout.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Tag of the locally built test image.
pub const TEST_IMAGE: &str = "morpheus-test-busybox:latest";

/// Environment variable naming a statically linked busybox (default `/bin/busybox`, from
/// Debian's `busybox-static`).
pub const BUSYBOX_ENV: &str = "MORPHEUS_TEST_BUSYBOX";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run the docker CLI ({error}); these tests need a Docker engine: run \
                 scripts/test (it installs docker.io and starts dockerd) or start dockerd"
            )
        })
}

/// Panics with a clear message unless `docker info` succeeds.
pub fn require_docker() {
    let output = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        output.status.success(),
        "the Docker engine is unreachable, so this test cannot run (it is not skipped): {}\n\
         run scripts/test (it installs docker.io and starts dockerd), or start dockerd yourself",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Builds [`TEST_IMAGE`] (once per test process) and returns its tag.
///
/// # Panics
/// If Docker is unreachable, busybox is missing or not static, or the build fails.
pub fn test_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        let busybox = std::env::var_os(BUSYBOX_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
        assert!(
            busybox.is_file(),
            "{} does not exist: install Debian's busybox-static (scripts/test does) or set {BUSYBOX_ENV}",
            busybox.display()
        );
        let context = tempfile::tempdir().expect("build context");
        std::fs::copy(&busybox, context.path().join("busybox")).expect("copy busybox");
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .expect("write Dockerfile");
        let context_path = context.path().display().to_string();
        let output = docker(&["build", "-q", "-t", TEST_IMAGE, &context_path]);
        assert!(
            output.status.success(),
            "building {TEST_IMAGE} failed (is {} a static busybox? Debian's busybox-static is): {}",
            busybox.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    });
    TEST_IMAGE
}

/// Ids of the containers (running or not) carrying `key=value`.
pub fn containers_with_label(key: &str, value: &str) -> Vec<String> {
    containers_with_labels(&[(key, value)])
}

/// Ids of the containers (running or not) carrying every label `key=value` of `labels`,
/// in one `docker ps` (so a container removed meanwhile is simply not listed).
pub fn containers_with_labels(labels: &[(&str, &str)]) -> Vec<String> {
    let filters: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("label={key}={value}"))
        .collect();
    let mut args = vec!["ps", "-aq", "--no-trunc"];
    for filter in &filters {
        args.extend(["--filter", filter.as_str()]);
    }
    let output = docker(&args);
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs `docker <args>` and returns stdout, panicking (with stderr) on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Removes every container carrying `key=value` when dropped, so a test never leaves
/// containers behind, whatever happened.
pub struct ContainerGuard {
    key: String,
    value: String,
}

impl ContainerGuard {
    /// Guards the containers labelled `key=value`.
    pub fn new(key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let ids = containers_with_label(&self.key, &self.value);
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

/// `GET url`: the status and body, or why there was no answer.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| error.to_string())?;
    let response = client.get(url).send().map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().map_err(|error| error.to_string())?;
    Ok((status, body))
}
