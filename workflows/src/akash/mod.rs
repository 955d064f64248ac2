//! Akash deploys, synthesis part: `morpheus.yaml` → SDL v2.0 → the manifest, its
//! version and the deployment groups, all pure functions (no I/O).
//!
//! - [`build`]: the build engine's pure part: framework detection, the generated
//!   Dockerfile, the content hash and the image tag it gives.
//! - [`project`]: `morpheus.yaml` and its validation (one-line errors naming the field).
//! - [`templates`]: the templates' defaults and the limits table.
//! - [`sdl`]: the SDL model, its YAML, and the synthesis of a project's SDL with its
//!   sidecars.
//! - [`manifest`]: what Akash derives from an SDL, computed as Akash's own SDK does
//!   (judged against it by `workflows/tests/sdl_sdk.rs`).
//!
//! - [`bids`]: the pure choice of a provider's bid.
//! - [`deploy`]: the `akash.deploy` and `akash.close` workflows (build and push, create
//!   the deployment, choose a bid, lease, send the manifest, wait until it runs).
//!
//! [`synthesize`] is the synthesis, for `morpheus deploy --dry-run` and the deploy
//! workflow's journaled synthesis step.
//!
//! ```
//! use morpheus_workflows::akash::{project::Project, synthesize};
//! let project = Project::from_yaml(
//!     "name: notes\ntemplate: website\nimage: ghcr.io/acme/notes:1\n",
//! )
//! .unwrap();
//! let synthesis = synthesize(&project).unwrap();
//! assert!(synthesis.sdl_yaml.contains("image: ghcr.io/acme/notes:1"));
//! assert_eq!(synthesis.manifest_version_hex.len(), 64);
//! ```

pub mod bids;
pub mod build;
pub mod deploy;
pub mod manifest;
pub mod project;
pub mod sdl;
pub mod secrets;
pub mod templates;

use manifest::{GroupSpec, ManifestError};
use project::Project;

/// Everything a dry run shows: the SDL, the manifest as the provider will hash it, its
/// version, and the groups the deployment will ask providers to bid on.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthesis {
    /// The SDL v2.0 document as YAML.
    pub sdl_yaml: String,
    /// The manifest's sorted JSON.
    pub manifest_sorted_json: String,
    /// SHA-256 of the sorted JSON, lowercase hex: the deployment's version.
    pub manifest_version_hex: String,
    /// The deployment groups.
    pub groups: Vec<GroupSpec>,
}

/// Synthesizes a validated project's SDL and derives its manifest, version and groups.
pub fn synthesize(project: &Project) -> Result<Synthesis, ManifestError> {
    let document = sdl::synthesize_sdl(project);
    derive(&document).map(
        |(manifest_sorted_json, manifest_version_hex, groups)| Synthesis {
            sdl_yaml: document.to_yaml(),
            manifest_sorted_json,
            manifest_version_hex,
            groups,
        },
    )
}

/// The sorted manifest JSON, its version (hex) and the groups of any SDL document.
pub fn derive(document: &sdl::Sdl) -> Result<(String, String, Vec<GroupSpec>), ManifestError> {
    let manifest = manifest::manifest(document)?;
    let sorted_json = manifest::manifest_sorted_json(&manifest);
    let version = hex::encode(manifest::manifest_version(&sorted_json));
    Ok((sorted_json, version, manifest::groups(document)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_with_three_sidecars_takes_at_most_50_ms() {
        let text = "name: agent\ntemplate: ai-agent\nimage: ghcr.io/acme/agent:1\nsidecars:\n  postgres: {password: p}\n  vector: {}\n  custom:\n  - {name: redis, image: 'redis:7', port: 6379, resources: {cpu: 0.5, memory: 256Mi}}\n";
        let started = std::time::Instant::now();
        let project = Project::from_yaml(text).unwrap();
        let synthesis = synthesize(&project).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(synthesis.groups[0].resources.len(), 4);
        assert!(
            elapsed <= std::time::Duration::from_millis(50),
            "synthesis took {elapsed:?}"
        );
    }
}
