//! Fixtures shared by the deploy modules' unit tests, written once (River's
//! `rivershared/testfactory` is the model): a deployment spec whose fields no test reads
//! unless it sets them itself.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::model::{DeploymentSpec, Resources, Target};

/// The spec `spec` of agent `agent`: site `/srv/site` built with `true` and started with
/// `serve` on port 3000 in image `img`, preview by default, default resources, created
/// and updated at `now`. Tests change the fields they care about with struct update syntax.
pub(crate) fn deployment_spec(now: DateTime<Utc>) -> DeploymentSpec {
    DeploymentSpec {
        id: "spec".into(),
        agent_id: "agent".into(),
        name: "site".into(),
        source_dir: "/srv/site".into(),
        install_command: None,
        build_command: "true".into(),
        start_command: "serve".into(),
        runtime_port: 3000,
        env: BTreeMap::new(),
        image: "img".into(),
        target_default: Target::Preview,
        resources: Resources::default(),
        created_at: now,
        updated_at: now,
    }
}
