//! A lease's services as containers on the real Docker engine.
//!
//! **Pods.** Replica `n` of every service of a group shares one network namespace (the
//! services reach each other on `localhost`, as containers of one pod do): its first
//! service's container owns the namespace and publishes the pod's global ports on
//! `127.0.0.1` (random host ports), the others join it with
//! `network_mode: container:<owner>`. Replicas get pods of their own, so two replicas
//! of a service never fight over a port.
//!
//! **Volumes.** A volume a service mounts (`params.storage[].mount`) is one Docker
//! volume per group and name, so services of a group mounting `data` at `/data` share
//! it.
//!
//! **Nothing in memory.** Everything the simulator needs later is on the containers'
//! labels (lease, service, replica, manifest version, published ports, replica count),
//! so status, logs, re-sent manifests and teardown work the same after a restart of
//! the simulator, and a test can find and remove what it started by label.

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, PortBinding,
    PortSummaryTypeEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListVolumesOptions,
    LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::chain::LeaseId;
use super::manifest::{Group, Service};

/// Label naming the provider (its address) on every container and volume it creates.
pub const PROVIDER_LABEL: &str = "morpheus.provider-simulator";
/// Label with the deployment sequence.
pub const DSEQ_LABEL: &str = "akash.dseq";
/// Label with the deployment owner.
pub const OWNER_LABEL: &str = "akash.owner";
/// Label with the group sequence.
pub const GSEQ_LABEL: &str = "akash.gseq";
/// Label with the order sequence.
pub const OSEQ_LABEL: &str = "akash.oseq";
/// Label with the service name (containers only).
pub const SERVICE_LABEL: &str = "akash.service";
/// Label with the replica index (containers only).
pub const REPLICA_LABEL: &str = "akash.replica";
/// Label with the manifest version (hex) the container was created for.
pub const VERSION_LABEL: &str = "akash.manifest-version";
const COUNT_LABEL: &str = "akash.count";
const PORTS_LABEL: &str = "akash.ports";
const POD_LABEL: &str = "akash.pod";

/// Why a deployment could not be run.
#[derive(Debug)]
pub enum DeployError {
    /// An image is not in the registry (the manifest cannot run: a 422).
    Image(String),
    /// The engine failed (a 502: another attempt may pass).
    Engine(String),
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployError::Image(text) | DeployError::Engine(text) => f.write_str(text),
        }
    }
}

fn engine_error(action: &str) -> impl FnOnce(BollardError) -> DeployError + '_ {
    move |error| DeployError::Engine(format!("docker failed to {action}: {error}"))
}

/// What deploying a lease's group did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeployOutcome {
    /// Containers created.
    pub created: usize,
    /// Existing containers (started again if they had stopped) kept as they were.
    pub kept: usize,
}

/// One container of a lease, read back from the engine.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The container's name.
    pub container: String,
    /// Its service.
    pub service: String,
    /// Its replica index.
    pub index: u32,
    /// The service's replica count.
    pub count: u32,
    /// Running now.
    pub running: bool,
    /// `(container port, protocol "TCP"/"UDP", host port)` of its service's published
    /// ports (host port 0 while not running).
    pub ports: Vec<(u16, String, u16)>,
}

/// The Docker side of the provider.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    provider: String,
}

impl Engine {
    /// Connects to the engine named by `DOCKER_HOST` (default: the local socket) and
    /// checks that it answers.
    pub async fn connect(provider: &str) -> Result<Self, String> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local socket".into());
        let unreachable = |error: BollardError| {
            format!("docker engine unreachable at {host}: {error} (is dockerd running? DOCKER_HOST selects another engine)")
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(Self {
            docker,
            provider: provider.to_owned(),
        })
    }

    /// `akash-<owner/provider digest>-<dseq>-<gseq>-<oseq>`: unique per lease and
    /// provider (dseqs are only unique per owner), valid as a Docker name.
    fn lease_prefix(&self, lease: &LeaseId) -> String {
        let digest = Sha256::digest(format!("{}/{}", lease.owner, self.provider));
        format!(
            "akash-{}-{}-{}-{}",
            &hex::encode(digest)[..10],
            lease.dseq,
            lease.gseq,
            lease.oseq
        )
    }

    fn lease_labels(&self, lease: &LeaseId) -> HashMap<String, String> {
        HashMap::from([
            (PROVIDER_LABEL.to_owned(), self.provider.clone()),
            (OWNER_LABEL.to_owned(), lease.owner.clone()),
            (DSEQ_LABEL.to_owned(), lease.dseq.to_string()),
            (GSEQ_LABEL.to_owned(), lease.gseq.to_string()),
            (OSEQ_LABEL.to_owned(), lease.oseq.to_string()),
        ])
    }

    fn label_filter(labels: &HashMap<String, String>) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )])
    }

    async fn list(
        &self,
        labels: &HashMap<String, String>,
    ) -> Result<Vec<ContainerSummary>, DeployError> {
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(Self::label_filter(labels)),
                ..Default::default()
            }))
            .await
            .map_err(engine_error("list containers"))
    }

    /// Runs `group` for `lease` at manifest version `version_hex`: pulls the images and
    /// creates and starts what is missing; containers already there for this version
    /// are kept (a stopped one is started). Containers of another version are removed
    /// first.
    pub async fn deploy(
        &self,
        lease: &LeaseId,
        group: &Group,
        version_hex: &str,
    ) -> Result<DeployOutcome, DeployError> {
        let labels = self.lease_labels(lease);
        let existing = self.list(&labels).await?;
        if existing
            .iter()
            .any(|c| label(c, VERSION_LABEL) != Some(version_hex))
        {
            self.teardown(lease).await?;
            return Box::pin(self.deploy(lease, group, version_hex)).await;
        }
        let by_name: HashMap<String, &ContainerSummary> = existing
            .iter()
            .filter_map(|c| Some((container_name(c)?, c)))
            .collect();
        let prefix = self.lease_prefix(lease);
        let mut outcome = DeployOutcome::default();
        let mut pulled: Vec<&str> = Vec::new();
        let pods = group.services.iter().map(|s| s.count).max().unwrap_or(0);
        for index in 0..pods {
            let members: Vec<&Service> =
                group.services.iter().filter(|s| s.count > index).collect();
            for (position, service) in members.iter().enumerate() {
                let name = format!("{prefix}-{}-{index}", service.name);
                if let Some(container) = by_name.get(&name) {
                    if container.state != Some(ContainerSummaryStateEnum::RUNNING) {
                        self.start(&name).await?;
                    }
                    outcome.kept += 1;
                    continue;
                }
                if !pulled.contains(&service.image.as_str()) {
                    self.pull(&service.image).await?;
                    pulled.push(&service.image);
                }
                // The pod's first member owns the network namespace and publishes
                // every member's ports; the others join it.
                let owner = format!("{prefix}-{}-{index}", members[0].name);
                let network = (position > 0).then(|| format!("container:{owner}"));
                let published: Vec<&Service> = if position == 0 {
                    members.clone()
                } else {
                    Vec::new()
                };
                let mut container_labels = labels.clone();
                container_labels.extend([
                    (SERVICE_LABEL.to_owned(), service.name.clone()),
                    (REPLICA_LABEL.to_owned(), index.to_string()),
                    (COUNT_LABEL.to_owned(), service.count.to_string()),
                    (VERSION_LABEL.to_owned(), version_hex.to_owned()),
                    (POD_LABEL.to_owned(), owner.clone()),
                    (
                        PORTS_LABEL.to_owned(),
                        service
                            .published()
                            .iter()
                            .map(|e| format!("{}/{}", e.port, e.proto.to_ascii_lowercase()))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ]);
                let binds = self.volumes(&prefix, service, &labels).await?;
                self.create(&name, service, container_labels, network, &published, binds)
                    .await?;
                self.start(&name).await?;
                outcome.created += 1;
            }
        }
        Ok(outcome)
    }

    /// Creates (idempotently: Docker answers an existing volume of that name) the
    /// volumes `service` mounts and returns its binds.
    async fn volumes(
        &self,
        prefix: &str,
        service: &Service,
        labels: &HashMap<String, String>,
    ) -> Result<Vec<String>, DeployError> {
        let mut binds = Vec::new();
        for (path, mount) in service.mounts() {
            let volume: String = format!("{prefix}-{}", mount.name)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            self.docker
                .create_volume(VolumeCreateRequest {
                    name: Some(volume.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(engine_error("create a volume"))?;
            let mode = if mount.read_only { "ro" } else { "rw" };
            binds.push(format!("{volume}:{path}:{mode}"));
        }
        Ok(binds)
    }

    async fn pull(&self, image: &str) -> Result<(), DeployError> {
        let mut progress = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_owned()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(item) = progress.next().await {
            match item {
                Ok(_) => {}
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) if (400..500).contains(&status_code) => {
                    return Err(DeployError::Image(format!(
                        "cannot pull image '{image}': {message}"
                    )))
                }
                // The engine reports a missing image in the progress stream too.
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(DeployError::Image(format!(
                        "cannot pull image '{image}': {error}"
                    )))
                }
                Err(error) => {
                    return Err(DeployError::Engine(format!(
                        "docker failed to pull image '{image}': {error}"
                    )))
                }
            }
        }
        Ok(())
    }

    async fn create(
        &self,
        name: &str,
        service: &Service,
        labels: HashMap<String, String>,
        network: Option<String>,
        published: &[&Service],
        binds: Vec<String>,
    ) -> Result<(), DeployError> {
        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        for member in published {
            for expose in member.published() {
                let key = format!("{}/{}", expose.port, expose.proto.to_ascii_lowercase());
                if bindings.contains_key(&key) {
                    continue;
                }
                exposed.push(key.clone());
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        // Empty: Docker picks a free host port when the container starts.
                        host_port: Some(String::new()),
                    }]),
                );
            }
        }
        let body = ContainerCreateBody {
            image: Some(service.image.clone()),
            entrypoint: service.command.clone(),
            cmd: service.args.clone(),
            env: service.env.clone(),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                network_mode: network,
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                binds: (!binds.is_empty()).then_some(binds),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|error| match error {
                BollardError::DockerResponseServerError {
                    status_code: 400,
                    message,
                } => DeployError::Image(format!(
                    "docker refused service '{}': {message}",
                    service.name
                )),
                other => DeployError::Engine(format!(
                    "docker failed to create container {name}: {other}"
                )),
            })?;
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), DeployError> {
        match self.docker.start_container(name, None).await {
            // 304: already started.
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(error) => Err(DeployError::Engine(format!(
                "docker failed to start container {name}: {error}"
            ))),
        }
    }

    /// The lease's containers, by service and replica.
    pub async fn replicas(&self, lease: &LeaseId) -> Result<Vec<Replica>, DeployError> {
        let containers = self.list(&self.lease_labels(lease)).await?;
        // Host ports are on the pod owner's container.
        let host_ports: HashMap<String, Vec<(u16, String, u16)>> = containers
            .iter()
            .filter_map(|c| {
                let ports = c
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|port| {
                        let proto = match port.typ? {
                            PortSummaryTypeEnum::TCP => "tcp",
                            PortSummaryTypeEnum::UDP => "udp",
                            _ => return None,
                        };
                        Some((port.private_port, proto.to_owned(), port.public_port?))
                    })
                    .collect();
                Some((container_name(c)?, ports))
            })
            .collect();
        let mut replicas: Vec<Replica> = containers
            .iter()
            .filter_map(|c| {
                let pod_ports = label(c, POD_LABEL)
                    .and_then(|pod| host_ports.get(pod))
                    .cloned()
                    .unwrap_or_default();
                let ports = label(c, PORTS_LABEL)
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|key| {
                        let (port, proto) = key.split_once('/')?;
                        let port: u16 = port.parse().ok()?;
                        let host = pod_ports
                            .iter()
                            .find(|(p, pr, _)| *p == port && pr == proto)
                            .map_or(0, |(_, _, host)| *host);
                        Some((port, proto.to_ascii_uppercase(), host))
                    })
                    .collect();
                Some(Replica {
                    container: container_name(c)?,
                    service: label(c, SERVICE_LABEL)?.to_owned(),
                    index: label(c, REPLICA_LABEL)?.parse().ok()?,
                    count: label(c, COUNT_LABEL)?.parse().ok()?,
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    ports,
                })
            })
            .collect();
        replicas.sort_by(|a, b| (&a.service, a.index).cmp(&(&b.service, b.index)));
        Ok(replicas)
    }

    /// Every lease this provider has containers for (read from their labels).
    pub async fn leases(&self) -> Result<Vec<LeaseId>, DeployError> {
        let containers = self
            .list(&HashMap::from([(
                PROVIDER_LABEL.to_owned(),
                self.provider.clone(),
            )]))
            .await?;
        let mut leases: Vec<LeaseId> = containers
            .iter()
            .filter_map(|c| {
                Some(LeaseId {
                    owner: label(c, OWNER_LABEL)?.to_owned(),
                    dseq: label(c, DSEQ_LABEL)?.parse().ok()?,
                    gseq: label(c, GSEQ_LABEL)?.parse().ok()?,
                    oseq: label(c, OSEQ_LABEL)?.parse().ok()?,
                    provider: self.provider.clone(),
                })
            })
            .collect();
        leases.sort_by(|a, b| {
            (&a.owner, a.dseq, a.gseq, a.oseq).cmp(&(&b.owner, b.dseq, b.gseq, b.oseq))
        });
        leases.dedup();
        Ok(leases)
    }

    /// Stops and removes the lease's containers and volumes; returns how many
    /// containers were removed.
    pub async fn teardown(&self, lease: &LeaseId) -> Result<usize, DeployError> {
        let labels = self.lease_labels(lease);
        let containers = self.list(&labels).await?;
        let mut removed = 0;
        for container in &containers {
            let Some(id) = &container.id else { continue };
            match self
                .docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => removed += 1,
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(error) => {
                    return Err(DeployError::Engine(format!(
                        "docker failed to remove container {id}: {error}"
                    )))
                }
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(Self::label_filter(&labels)),
            }))
            .await
            .map_err(engine_error("list volumes"))?;
        for volume in volumes.volumes.into_iter().flatten() {
            match self
                .docker
                .remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true }))
                .await
            {
                Ok(())
                | Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(error) => {
                    return Err(DeployError::Engine(format!(
                        "docker failed to remove volume {}: {error}",
                        volume.name
                    )))
                }
            }
        }
        Ok(removed)
    }

    /// The container's log (stdout and stderr) as raw chunks: the last `tail` lines
    /// (`"all"` for everything), then, with `follow`, what it writes until it stops.
    pub fn logs(
        &self,
        container: &str,
        follow: bool,
        tail: &str,
    ) -> impl Stream<Item = Result<Vec<u8>, String>> + Send + 'static {
        self.docker
            .logs(
                container,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    tail: tail.to_owned(),
                    ..Default::default()
                }),
            )
            .map(|frame| {
                frame
                    .map(|output| output.into_bytes().to_vec())
                    .map_err(|e| format!("docker stopped the log stream: {e}"))
            })
    }
}

fn label<'a>(container: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    container.labels.as_ref()?.get(key).map(String::as_str)
}

fn container_name(container: &ContainerSummary) -> Option<String> {
    container
        .names
        .as_ref()?
        .first()
        .map(|name| name.trim_start_matches('/').to_owned())
}

/// Replicas grouped by service, in name order.
pub fn by_service(replicas: &[Replica]) -> BTreeMap<&str, Vec<&Replica>> {
    let mut services: BTreeMap<&str, Vec<&Replica>> = BTreeMap::new();
    for replica in replicas {
        services
            .entry(replica.service.as_str())
            .or_default()
            .push(replica);
    }
    services
}
