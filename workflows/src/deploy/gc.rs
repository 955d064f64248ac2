//! `deploy gc`: removes sandbox containers labelled by Morpheus whose runs are
//! finished. Only containers labelled with this installation's id are considered: a
//! container of another Morpheus database on the same Docker host has runs this one
//! cannot see, so it is never touched. Normally there are none (a failed or stopped run removes its own
//! container); they appear when a run was cancelled mid-pipeline, when Docker was
//! unreachable during a cleanup, or when a run's records were deleted.
//!
//! The decision is a pure function of what the records say ([`verdict`]); a container
//! whose run cannot be identified from its labels is kept, never guessed at.

use std::collections::BTreeMap;

use chrono::Utc;
use morpheus_engine::{RunId, RunStatus, World};
use morpheus_executors::docker::{DockerExecutor, MANAGED_LABEL};
use serde::Serialize;

use super::error::DeployError;
use super::model::{DeployStatus, DeploymentRun};
use super::sandbox::{INSTANCE_LABEL, RUN_LABEL};
use super::store::DeployStore;

/// What to do with one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    /// Leave it (why).
    Keep(String),
    /// Remove it (why).
    Remove(String),
}

/// Decides a container's fate from its run label, the deploy record of that run and
/// the engine run's status (`None` when the record or run does not exist).
pub fn verdict(
    run_label: Option<&str>,
    record: Option<&DeploymentRun>,
    engine_status: Option<RunStatus>,
) -> Verdict {
    if run_label.is_none() {
        return Verdict::Keep(format!(
            "it has no {RUN_LABEL} label, so its run cannot be known"
        ));
    }
    match (record, engine_status) {
        (Some(run), _) if run.status == DeployStatus::Ready => {
            Verdict::Keep("its deploy is ready (serving)".into())
        }
        (Some(run), _) if !run.status.in_pipeline() => {
            Verdict::Remove(format!("its deploy is {}", run.status))
        }
        (_, Some(status)) if status.is_terminal() => Verdict::Remove(format!(
            "its run ended ({status}) before the deploy became ready"
        )),
        (_, Some(status)) => Verdict::Keep(format!("its run is still in progress ({status})")),
        (_, None) => Verdict::Remove("its run no longer exists".into()),
    }
}

/// One container examined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcEntry {
    /// Container name.
    pub container: String,
    /// Container id.
    pub container_id: String,
    /// Its run, from the label.
    pub run_id: Option<String>,
    /// The decision.
    pub verdict: Verdict,
    /// Whether it was removed (false in a dry run).
    pub removed: bool,
}

/// Examines every container labelled [`MANAGED_LABEL`] and with this installation's
/// [`INSTANCE_LABEL`], and removes those whose runs are finished (none with `dry_run`). A deploy record left in a pipeline status by a
/// run that ended (cancelled, say) is marked failed along the way.
pub async fn collect_garbage(
    store: &DeployStore,
    world: &dyn World,
    docker: &DockerExecutor,
    dry_run: bool,
) -> Result<Vec<GcEntry>, DeployError> {
    let Some(instance) = store.existing_instance_id().await? else {
        // No sandbox was ever provisioned from this database.
        return Ok(Vec::new());
    };
    let ours = BTreeMap::from([
        (MANAGED_LABEL.to_owned(), "true".to_owned()),
        (INSTANCE_LABEL.to_owned(), instance),
    ]);
    let containers = docker
        .list(&ours)
        .await
        .map_err(|error| DeployError::Sandbox(error.to_string()))?;
    let mut entries = Vec::with_capacity(containers.len());
    for container in containers {
        let run_label = container.labels.get(RUN_LABEL).cloned();
        let (record, engine_status) = match &run_label {
            Some(run) => {
                let record = store.run(run).await?;
                let engine_status = match run.parse::<RunId>() {
                    Ok(run_id) => world.get_run(run_id).await?.map(|r| r.status),
                    Err(_) => None,
                };
                (record, engine_status)
            }
            None => (None, None),
        };
        let decision = verdict(run_label.as_deref(), record.as_ref(), engine_status);
        let mut removed = false;
        if let (Verdict::Remove(reason), false) = (&decision, dry_run) {
            docker
                .remove(&container.id)
                .await
                .map_err(|error| DeployError::Sandbox(error.to_string()))?;
            removed = true;
            if let Some(run) = record.as_ref().filter(|run| run.status.in_pipeline()) {
                let note = format!("sandbox removed by deploy gc: {reason}");
                // Another writer may have moved it on meanwhile; that one stands.
                let _ = store
                    .transition(&run.id, DeployStatus::Failed, Utc::now(), |run| {
                        run.error.get_or_insert_with(|| note.clone());
                    })
                    .await;
            }
        }
        entries.push(GcEntry {
            container: container.name,
            container_id: container.id,
            run_id: run_label,
            verdict: decision,
            removed,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::model::Target;
    use crate::deploy::test_fixtures::deployment_spec;

    fn record(status: DeployStatus) -> DeploymentRun {
        let now = Utc::now();
        let spec = deployment_spec(now);
        let mut run = DeploymentRun::queued("r".into(), spec, Target::Preview, None, None, now);
        run.status = status;
        run
    }

    fn removes(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Remove(_))
    }

    #[test]
    fn serving_and_in_progress_sandboxes_are_kept() {
        let ready = record(DeployStatus::Ready);
        assert!(!removes(&verdict(
            Some("r"),
            Some(&ready),
            Some(RunStatus::Completed)
        )));
        let building = record(DeployStatus::Building);
        assert!(!removes(&verdict(
            Some("r"),
            Some(&building),
            Some(RunStatus::Running)
        )));
        assert!(!removes(&verdict(
            Some("r"),
            Some(&building),
            Some(RunStatus::Retrying)
        )));
        // The record is written right after the run starts; until then, keep.
        assert!(!removes(&verdict(
            Some("r"),
            None,
            Some(RunStatus::Pending)
        )));
    }

    #[test]
    fn sandboxes_of_finished_runs_are_removed() {
        for status in [
            DeployStatus::Failed,
            DeployStatus::Stopped,
            DeployStatus::Stopping,
        ] {
            let run = record(status);
            assert!(removes(&verdict(Some("r"), Some(&run), None)), "{status}");
        }
        let building = record(DeployStatus::Building);
        let cancelled = verdict(Some("r"), Some(&building), Some(RunStatus::Cancelled));
        assert_eq!(
            cancelled,
            Verdict::Remove("its run ended (cancelled) before the deploy became ready".into())
        );
        assert!(removes(&verdict(Some("r"), Some(&building), None)));
        assert!(removes(&verdict(Some("r"), None, Some(RunStatus::Failed))));
        assert!(removes(&verdict(Some("r"), None, None)));
    }

    #[test]
    fn containers_without_a_run_label_are_never_guessed_at() {
        let keep = verdict(None, None, None);
        assert!(!removes(&keep));
        assert!(matches!(keep, Verdict::Keep(reason) if reason.contains("morpheus.run")));
    }
}
