//! The deploy domain's own records (keep these names): [`DeploymentSpec`] (one per
//! agent), [`SourceSnapshot`] (one per capture) and [`DeploymentRun`] (one per deploy
//! run, keyed by the engine run id), with the status machine of a run.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a deployment is meant to go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A preview (the default).
    #[default]
    Preview,
    /// Production.
    Production,
}

impl Target {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preview => "preview",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not a [`Target`]. It reads as its message
/// (`'prod' is not a target (expected preview or production)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownTarget(String);

impl std::ops::Deref for UnknownTarget {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "preview" => Ok(Self::Preview),
            "production" => Ok(Self::Production),
            other => Err(UnknownTarget(format!(
                "'{other}' is not a target (expected preview or production)"
            ))),
        }
    }
}

/// A status change the deploy state machine forbids ([`DeployStatus::can_become`]).
/// It reads as its message (`deploy run r is capturing; it cannot become ready`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ForbiddenTransition(String);

impl std::ops::Deref for ForbiddenTransition {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Resource limits of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in cores (`0.5` = half a core); none: unlimited.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory limit in bytes; none: unlimited.
    #[serde(default)]
    pub memory: Option<u64>,
}

/// How an agent's directory is deployed. One per agent (`agent_id` is its key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Stable id, kept across updates of the spec.
    pub id: String,
    /// The agent (or person) this spec belongs to.
    pub agent_id: String,
    /// Human-readable name.
    pub name: String,
    /// Absolute directory to snapshot; inside the configured allowed roots.
    pub source_dir: String,
    /// Run before the build, if any (e.g. `npm ci`).
    #[serde(default)]
    pub install_command: Option<String>,
    /// Build command (`true` for none).
    pub build_command: String,
    /// Long-running command serving on `runtime_port`.
    pub start_command: String,
    /// The port the start command listens on (1024–65535).
    pub runtime_port: u16,
    /// Environment of the sandbox (also seen by install, build and start).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Base image of the sandbox (must provide `/bin/sh`).
    pub image: String,
    /// Target of `deploy start` when none is given.
    pub target_default: Target,
    /// Sandbox limits.
    #[serde(default)]
    pub resources: Resources,
    /// When the spec was first set.
    pub created_at: DateTime<Utc>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// A content-addressed capture of a source directory. Every capture gets its own
/// record; identical trees share one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSnapshot {
    /// Snapshot id.
    pub id: String,
    /// Owner.
    pub agent_id: String,
    /// The spec it was captured for.
    pub spec_id: String,
    /// The directory captured.
    pub source_dir: String,
    /// `<data_dir>/artifacts/<agent_id>/<content_hash>.tar.zst`.
    pub artifact_path: String,
    /// Hex SHA-256 of the file tree (sorted paths, modes and contents; not mtimes).
    pub content_hash: String,
    /// Files (and symlinks) in the snapshot.
    pub file_count: u64,
    /// Size of the compressed artifact.
    pub size_bytes: u64,
    /// Total size of the files' contents.
    pub content_bytes: u64,
    /// When it was captured.
    pub created_at: DateTime<Utc>,
}

/// Where a deploy run is. Each state says which step moves a run into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployStatus {
    /// Created by `deploy start`/`redeploy`; waits for the agent's pipeline slot.
    Queued,
    /// `deploy.start` is snapshotting the source directory (or loading the snapshot
    /// to redeploy).
    Capturing,
    /// Creating the run's sandbox and copying the snapshot into it.
    Provisioning,
    /// Running the install and build commands in the sandbox.
    Building,
    /// Starting the start command and probing it over HTTP.
    Starting,
    /// Serving at its URL. `deploy stop` moves it on.
    Ready,
    /// The pipeline failed; its sandbox was removed.
    Failed,
    /// `deploy.stop` is removing the sandbox.
    Stopping,
    /// Stopped; its sandbox is gone. Terminal.
    Stopped,
}

impl DeployStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [DeployStatus; 9] = [
        Self::Queued,
        Self::Capturing,
        Self::Provisioning,
        Self::Building,
        Self::Starting,
        Self::Ready,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Capturing => "capturing",
            Self::Provisioning => "provisioning",
            Self::Building => "building",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    /// Whether the start pipeline is still working on the run.
    pub fn in_pipeline(self) -> bool {
        matches!(
            self,
            Self::Queued | Self::Capturing | Self::Provisioning | Self::Building | Self::Starting
        )
    }

    /// Whether `deploy stop` may act on a run in this status (`stopping` again, to
    /// retry a stop that did not finish).
    pub fn stoppable(self) -> bool {
        matches!(self, Self::Ready | Self::Failed | Self::Stopping)
    }

    /// The status machine: `queued → capturing → provisioning → building → starting →
    /// ready`; any pipeline status `→ failed`; `ready | failed → stopping → stopped`.
    /// Staying in the same status is allowed (a step re-executed after a crash).
    pub fn can_become(self, next: DeployStatus) -> bool {
        use DeployStatus::*;
        self == next
            || matches!(
                (self, next),
                (Queued, Capturing)
                    | (Capturing, Provisioning)
                    | (Provisioning, Building)
                    | (Building, Starting)
                    | (Starting, Ready)
                    | (Ready | Failed, Stopping)
                    | (Stopping, Stopped)
            )
            || (self.in_pipeline() && next == Failed)
    }
}

impl fmt::Display for DeployStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a run's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status entered.
    pub status: DeployStatus,
    /// When.
    pub at: DateTime<Utc>,
}

/// One deploy run: an engine run of `deploy.start` (same id), as the product sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRun {
    /// The engine run id (`morpheus logs <id>`, `runs show <id>`).
    pub id: String,
    /// Owner.
    pub agent_id: String,
    /// The spec's id.
    pub spec_id: String,
    /// The spec as it was when the run was started.
    pub spec_snapshot: DeploymentSpec,
    /// The snapshot deployed (set once captured or loaded).
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// Its content hash (shown by `deploy list`).
    #[serde(default)]
    pub snapshot_hash: Option<String>,
    /// For a redeploy: the snapshot asked for.
    #[serde(default)]
    pub redeploy_of: Option<String>,
    /// The sandbox's container id.
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// The sandbox's container name.
    #[serde(default)]
    pub sandbox_name: Option<String>,
    /// Current status.
    pub status: DeployStatus,
    /// Target.
    pub target: Target,
    /// Where it serves, once ready.
    #[serde(default)]
    pub url: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Operator note given at start.
    #[serde(default)]
    pub note: Option<String>,
    /// Every status entered, in order.
    #[serde(default)]
    pub history: Vec<StatusChange>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl DeploymentRun {
    /// A run that has just been queued.
    pub fn queued(
        id: String,
        spec: DeploymentSpec,
        target: Target,
        note: Option<String>,
        redeploy_of: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            agent_id: spec.agent_id.clone(),
            spec_id: spec.id.clone(),
            spec_snapshot: spec,
            snapshot_id: None,
            snapshot_hash: None,
            redeploy_of,
            sandbox_id: None,
            sandbox_name: None,
            status: DeployStatus::Queued,
            target,
            url: None,
            error: None,
            note,
            history: vec![StatusChange {
                status: DeployStatus::Queued,
                at: now,
            }],
            created_at: now,
            updated_at: now,
        }
    }

    /// Moves the run to `next` (recording it in the history), or explains why the
    /// status machine forbids it. Re-entering the current status changes nothing but
    /// `updated_at`.
    pub fn transition(
        &mut self,
        next: DeployStatus,
        now: DateTime<Utc>,
    ) -> Result<(), ForbiddenTransition> {
        if !self.status.can_become(next) {
            return Err(ForbiddenTransition(format!(
                "deploy run {} is {}; it cannot become {next}",
                self.id, self.status
            )));
        }
        if self.status != next {
            self.status = next;
            self.history.push(StatusChange {
                status: next,
                at: now,
            });
        }
        self.updated_at = now;
        Ok(())
    }

    /// When the run first entered `status`.
    pub fn entered(&self, status: DeployStatus) -> Option<DateTime<Utc>> {
        self.history
            .iter()
            .find(|change| change.status == status)
            .map(|change| change.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::test_fixtures::deployment_spec;

    #[test]
    fn the_pipeline_moves_forward_one_status_at_a_time() {
        use DeployStatus::*;
        let forward = [Queued, Capturing, Provisioning, Building, Starting, Ready];
        for pair in forward.windows(2) {
            assert!(pair[0].can_become(pair[1]), "{} → {}", pair[0], pair[1]);
            assert!(!pair[1].can_become(pair[0]), "{} ↛ {}", pair[1], pair[0]);
        }
        assert!(!Queued.can_become(Building), "no skipping");
        assert!(!Capturing.can_become(Ready), "no skipping");
    }

    #[test]
    fn any_pipeline_status_can_fail_but_finished_ones_cannot() {
        use DeployStatus::*;
        for status in [Queued, Capturing, Provisioning, Building, Starting] {
            assert!(status.can_become(Failed), "{status} → failed");
            assert!(!status.can_become(Stopping), "{status} ↛ stopping");
        }
        for status in [Ready, Stopping, Stopped] {
            assert!(!status.can_become(Failed), "{status} ↛ failed");
        }
    }

    #[test]
    fn only_ready_or_failed_runs_stop_and_stopped_is_terminal() {
        use DeployStatus::*;
        assert!(Ready.can_become(Stopping));
        assert!(Failed.can_become(Stopping));
        assert!(Stopping.can_become(Stopped));
        assert!(!Ready.can_become(Stopped), "stopping comes first");
        for next in DeployStatus::ALL {
            assert_eq!(
                Stopped.can_become(next),
                next == Stopped,
                "stopped → {next}"
            );
        }
    }

    fn spec() -> DeploymentSpec {
        deployment_spec(Utc::now())
    }

    #[test]
    fn transitions_are_recorded_once_and_refusals_change_nothing() {
        let start = Utc::now();
        let mut run = DeploymentRun::queued("r".into(), spec(), Target::Preview, None, None, start);
        run.transition(DeployStatus::Capturing, start).unwrap();
        // A step re-executed after a crash re-applies its status: no second entry.
        run.transition(DeployStatus::Capturing, start).unwrap();
        assert_eq!(run.history.len(), 2);
        let refused = run.transition(DeployStatus::Ready, start).unwrap_err();
        assert!(refused.contains("capturing"), "{refused}");
        assert_eq!(run.status, DeployStatus::Capturing);
        assert_eq!(run.entered(DeployStatus::Capturing), Some(start));
        assert_eq!(run.entered(DeployStatus::Ready), None);
    }

    #[test]
    fn targets_parse_and_print() {
        assert_eq!("preview".parse::<Target>(), Ok(Target::Preview));
        assert_eq!("production".parse::<Target>(), Ok(Target::Production));
        assert!("prod"
            .parse::<Target>()
            .unwrap_err()
            .contains("preview or production"));
        assert_eq!(Target::Production.to_string(), "production");
    }
}
