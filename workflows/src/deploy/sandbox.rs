//! How a deploy run's sandbox is named, labelled and configured. The name and labels
//! come from the run id alone, so every step (and every worker, after a crash) finds
//! the same container without guessing, and the `docker` executor never creates a
//! second one.

use std::collections::BTreeMap;

use morpheus_executors::docker::ContainerSpec;

use super::model::DeploymentSpec;

/// The sandbox's work directory: the snapshot is unpacked here, and commands run here.
pub const WORKDIR: &str = "/workspace/app";

/// Label: the deploy run the container belongs to.
pub const RUN_LABEL: &str = "morpheus.run";

/// Label: the agent.
pub const AGENT_LABEL: &str = "morpheus.agent";

/// Label: the Morpheus installation (database) that owns the container, so garbage
/// collection never touches sandboxes of another installation sharing the Docker host.
pub const INSTANCE_LABEL: &str = "morpheus.instance";

/// Label: what kind of Morpheus container this is (value [`KIND_VALUE`]).
pub const KIND_LABEL: &str = "morpheus.kind";

/// Value of [`KIND_LABEL`] on deploy sandboxes.
pub const KIND_VALUE: &str = "deploy";

/// The container name of a run's sandbox.
pub fn container_name(run_id: &str) -> String {
    format!("morpheus-deploy-{run_id}")
}

/// The labels of a run's sandbox in installation `instance`.
pub fn labels(run_id: &str, agent_id: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN_LABEL.to_owned(), run_id.to_owned()),
        (AGENT_LABEL.to_owned(), agent_id.to_owned()),
        (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        (KIND_LABEL.to_owned(), KIND_VALUE.to_owned()),
    ])
}

/// The sandbox's environment: `env` (the spec's, its sealed values opened; see
/// [`super::secrets`]), plus `PORT` (the runtime port) unless it sets it.
pub fn environment(env: &BTreeMap<String, String>, runtime_port: u16) -> BTreeMap<String, String> {
    let mut env = env.clone();
    env.entry("PORT".to_owned())
        .or_insert_with(|| runtime_port.to_string());
    env
}

/// The container to ensure for `run_id` in installation `instance`, with `env` as the
/// spec's environment (its sealed values opened).
pub fn container_spec(
    run_id: &str,
    spec: &DeploymentSpec,
    instance: &str,
    env: &BTreeMap<String, String>,
) -> ContainerSpec {
    ContainerSpec {
        name: container_name(run_id),
        image: spec.image.clone(),
        labels: labels(run_id, &spec.agent_id, instance),
        env: environment(env, spec.runtime_port),
        workdir: WORKDIR.to_owned(),
        port: Some(spec.runtime_port),
        cpus: spec.resources.cpu,
        memory_bytes: spec.resources.memory,
    }
}

/// The URL of a sandbox whose runtime port is published on `host_port`.
pub fn url(host_port: u16) -> String {
    format!("http://127.0.0.1:{host_port}/")
}
