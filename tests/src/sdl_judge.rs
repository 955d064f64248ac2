//! Akash's own SDK as a judge: `tests/sdl-judge/judge.mjs` (pinned
//! `@akashnetwork/chain-sdk`) reads SDL files and answers, per file, the manifest's
//! sorted JSON, its version (hex) and the groups, or the SDK's refusal. Shared by the
//! synthesis tests (`workflows/tests/sdl_sdk.rs`) and the CLI tests
//! (`tests/tests/akash_cli.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where the judge and its `node_modules` live.
pub fn judge_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdl-judge")
}

/// Runs the judge on `files`: one answer per file, in order (`{"file",
/// "manifestSortedJSON", "manifestVersion", "groups"}` or `{"file", "error"}`).
///
/// # Panics
/// If the SDK is not installed (`npm ci` in `tests/sdl-judge`; scripts/test does), node
/// does not run, or the answers do not match the files.
pub fn judge(files: &[PathBuf]) -> Vec<Value> {
    let dir = judge_dir();
    assert!(
        dir.join("node_modules/@akashnetwork/chain-sdk/package.json")
            .exists(),
        "Akash's SDK is not installed: run `npm ci` in {} (scripts/test does)",
        dir.display()
    );
    let output = Command::new("node")
        .arg(dir.join("judge.mjs"))
        .args(files)
        .current_dir(&dir)
        .output()
        .expect("node runs (install nodejs)");
    assert!(
        output.status.success(),
        "the judge failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON answer per line"))
        .collect();
    assert_eq!(answers.len(), files.len(), "one answer per file");
    answers
}
