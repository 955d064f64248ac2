//! The `docker` executor: sandbox containers through the Docker Engine API (bollard).
//!
//! It knows nothing about deployments: a step hands it a [`DockerRequest`] (one
//! operation, tagged by `"op"`) and the idempotency key of the step, and it performs
//! that one effect so that repeating it is safe:
//!
//! | op | effect | on repeat |
//! |---|---|---|
//! | `ensure_container` | create and start a container with a given name and labels | adopts the container of that name if it carries the requested labels; never creates a second one (Docker names are unique) and refuses a foreign container of that name |
//! | `upload_archive` | unpack a tar (plain, gzip… or zstd) into a directory of the container | overwrites the same files |
//! | `exec` | run `/bin/sh -c COMMAND` in the container, streaming stdout/stderr lines into the step's logs | first kills what the previous attempt of the same step left running in the container |
//! | `start_command` | start a long-running command in the background; its output becomes the container's own log | no-op while the command started earlier is alive |
//! | `logs` | copy the last lines of the container's log into the step's logs | — |
//! | `inspect` | state, labels and published ports of a container | — |
//! | `remove` | stop and remove a container (and its anonymous volumes) | a missing container counts as removed |
//! | `list` | containers (running or not) carrying all given labels | — |
//! | `build_image` | build a context tar (plain or zstd) with the engine, push it, answer the image by digest, every build line in the step's logs ([`image_build`](crate::image_build)) | the tag is in the registry: nothing is built or pushed, the same digest comes back |
//!
//! Containers run a tiny keep-alive shell as their main process (under Docker's init,
//! which reaps orphans), so the image only needs `/bin/sh`; commands run through
//! `exec`. A container port can be published on `127.0.0.1` with a host port chosen by
//! Docker (read it back with `inspect`). Every container it creates carries
//! [`MANAGED_LABEL`]`=true` and [`CREATED_BY_LABEL`]`=<idempotency key>`.
//!
//! Errors: a Docker engine that cannot be reached, or answers 5xx, is `Retryable` (the
//! step's retry policy decides); bad requests, missing images that cannot be pulled, a
//! foreign container holding the name, a non-zero exit and a timed-out command are
//! `Permanent` (running the same command in the same sandbox again rarely helps).
//!
//! The connection honours `DOCKER_HOST` (default `unix:///var/run/docker.sock`), is
//! made on first use (so a worker starts even while Docker is down) and negotiates the
//! API version with the engine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;
use morpheus_engine::{ExecError, ExecOutput, ExecRequest, Executor, LogSink, StepError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::lines::{LineSplitter, Stream};

/// The executor's kind (`ctx.step(…).executor("docker")`).
pub const KIND: &str = "docker";

/// Label (value `true`) on every container this executor creates; `list` and garbage
/// collection select by it.
pub const MANAGED_LABEL: &str = "morpheus.managed";

/// Label holding the idempotency key of the step that created the container.
pub const CREATED_BY_LABEL: &str = "morpheus.created-by";

/// The engine used when `DOCKER_HOST` is unset (bollard's default too).
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Where per-step bookkeeping (pid files) lives inside a container.
const STATE_DIR: &str = "/tmp/.morpheus";

/// Main process of every sandbox: waits, and exits promptly on SIGTERM.
const KEEPALIVE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// Runs `$MORPHEUS_COMMAND` as the leader of its own process group (a `docker exec`
/// process starts a session) after killing the group a previous attempt of the same
/// step left behind, so a command never runs beside its own re-execution.
const EXEC_WRAPPER: &str = r#"mkdir -p "${MORPHEUS_PIDFILE%/*}"
if [ -s "$MORPHEUS_PIDFILE" ]; then
  previous=$(cat "$MORPHEUS_PIDFILE")
  if [ "$previous" != "$$" ]; then kill -9 -"$previous" 2>/dev/null; fi
fi
echo $$ > "$MORPHEUS_PIDFILE"
exec /bin/sh -c "$MORPHEUS_COMMAND""#;

/// Starts `$MORPHEUS_COMMAND` in the background unless the one started before is still
/// alive; its output goes to the main process's stdout/stderr, i.e. the container log.
const START_WRAPPER: &str = r#"mkdir -p "${MORPHEUS_PIDFILE%/*}"
if [ -s "$MORPHEUS_PIDFILE" ] && kill -0 "$(cat "$MORPHEUS_PIDFILE")" 2>/dev/null; then exit 0; fi
echo $$ > "$MORPHEUS_PIDFILE"
exec /bin/sh -c "$MORPHEUS_COMMAND" >/proc/1/fd/1 2>/proc/1/fd/2"#;

/// Kills the process group recorded in `$MORPHEUS_PIDFILE`.
const KILL_WRAPPER: &str =
    r#"[ -s "$MORPHEUS_PIDFILE" ] && kill -9 -"$(cat "$MORPHEUS_PIDFILE")" 2>/dev/null; true"#;

/// Exits 0 if the command recorded in `$MORPHEUS_PIDFILE` is alive.
const ALIVE_PROBE: &str = r#"[ -s "$MORPHEUS_PIDFILE" ] && kill -0 "$(cat "$MORPHEUS_PIDFILE")""#;

/// Upload chunk size.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// One operation (JSON: `{"op": "<name>", …fields}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DockerRequest {
    /// Create and start a container, or adopt the one of that name.
    EnsureContainer(ContainerSpec),
    /// Unpack an archive into a container.
    UploadArchive(UploadSpec),
    /// Run a command to completion.
    Exec(ExecSpec),
    /// Start a long-running command in the background.
    StartCommand(StartSpec),
    /// Copy the container log's last lines into the step's logs.
    Logs {
        /// Container name or id.
        container: String,
        /// How many lines from the end.
        tail: u32,
    },
    /// Describe a container.
    Inspect {
        /// Container name or id.
        container: String,
    },
    /// Stop and remove a container.
    Remove {
        /// Container name or id.
        container: String,
    },
    /// Containers carrying all of these labels.
    List {
        /// `label → value`.
        labels: BTreeMap<String, String>,
    },
    /// Build an image, push it, and answer it by digest.
    BuildImage(crate::image_build::BuildImageSpec),
}

/// A sandbox container to create (or adopt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Container name (`[A-Za-z0-9][A-Za-z0-9_.-]*`): the identity that makes the
    /// operation idempotent.
    pub name: String,
    /// Image reference; it is pulled if missing locally.
    pub image: String,
    /// Labels; an existing container of the same name is adopted only if it carries
    /// all of them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Environment of the container (and of every command run in it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (created if missing).
    pub workdir: String,
    /// A TCP port of the container to publish on `127.0.0.1` with a host port chosen
    /// by Docker.
    #[serde(default)]
    pub port: Option<u16>,
    /// CPU limit in cores.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// An archive to unpack into a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSpec {
    /// Container name or id.
    pub container: String,
    /// Path of a tar archive on this host: plain, or compressed with zstd (decompressed
    /// here) or gzip/bzip2/xz (decompressed by Docker).
    pub archive: PathBuf,
    /// Directory in the container to unpack into (created if missing).
    pub dest: String,
}

/// A command to run to completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Container name or id.
    pub container: String,
    /// Shell command line (`/bin/sh -c`).
    pub command: String,
    /// Working directory (default: the container's).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the command after this many seconds (the request's deadline applies too).
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

/// A long-running command to start in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSpec {
    /// Container name or id.
    pub container: String,
    /// Shell command line (`/bin/sh -c`).
    pub command: String,
    /// Working directory (default: the container's).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A container as Docker describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name (without Docker's leading `/`).
    pub name: String,
    /// `created`, `running`, `exited`, …
    pub state: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Published TCP ports: container port → host port.
    pub ports: BTreeMap<u16, u16>,
}

/// Output of `ensure_container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsureOutput {
    /// The container (running).
    pub container: ContainerInfo,
    /// True when an existing container of that name was adopted instead of created.
    pub adopted: bool,
}

/// Output of `exec` (only for exit code 0; other codes are errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutcome {
    /// Always 0 here.
    pub exit_code: i64,
    /// Last stdout lines.
    pub stdout_tail: Vec<String>,
    /// Last stderr lines.
    pub stderr_tail: Vec<String>,
    /// Wall-clock time.
    pub duration_ms: u64,
}

/// Output of `start_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOutcome {
    /// False when the command started by an earlier attempt was still alive.
    pub started: bool,
}

/// Output of `upload_archive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadOutcome {
    /// Bytes of (uncompressed, if it was zstd) tar sent to Docker.
    pub bytes: u64,
}

/// Output of `remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveOutcome {
    /// False when there was no such container (already removed).
    pub removed: bool,
}

/// Executor of kind `"docker"` (see the module docs).
#[derive(Debug, Default)]
pub struct DockerExecutor {
    client: OnceCell<Docker>,
}

impl DockerExecutor {
    /// An executor for the engine named by `DOCKER_HOST` (default: the local socket).
    /// Nothing is contacted until the first call.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client, connecting (and negotiating the API version) on first use. A failed
    /// attempt is not cached: the next call tries again.
    pub(crate) async fn docker(&self) -> Result<&Docker, StepError> {
        self.client
            .get_or_try_init(|| async {
                let host = std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_owned());
                let unreachable = |error: BollardError| {
                    StepError::retryable(format!(
                        "docker engine unreachable at {host}: {error} (is dockerd running? DOCKER_HOST selects another engine)"
                    ))
                };
                let docker = Docker::connect_with_defaults().map_err(unreachable)?;
                docker.negotiate_version().await.map_err(unreachable)
            })
            .await
    }

    /// Checks that the engine answers; returns its version.
    pub async fn ping(&self) -> Result<String, StepError> {
        let docker = self.docker().await?;
        let version = docker
            .version()
            .await
            .map_err(|e| api_error("ask the engine for its version", e))?;
        Ok(version.version.unwrap_or_else(|| "unknown".into()))
    }

    /// Creates and starts the container, or adopts (and starts, if stopped) the one
    /// that already has this name and all the requested labels.
    pub async fn ensure_container(
        &self,
        spec: &ContainerSpec,
        idempotency_key: &str,
        logs: &LogSink,
    ) -> Result<EnsureOutput, StepError> {
        check_name(&spec.name)?;
        if spec.image.trim().is_empty() {
            return Err(StepError::permanent("ensure_container: image is empty"));
        }
        let docker = self.docker().await?;
        let mut adopted = true;
        let info = match self.inspect(&spec.name).await? {
            Some(existing) => existing,
            None => match self.create(docker, spec, idempotency_key, logs).await? {
                Created::New => {
                    adopted = false;
                    self.require(&spec.name).await?
                }
                // Someone (an earlier attempt whose reply was lost) created it meanwhile.
                Created::NameTaken => self.require(&spec.name).await?,
            },
        };
        let missing: Vec<String> = spec
            .labels
            .iter()
            .filter(|(key, value)| info.labels.get(*key) != Some(*value))
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        if !missing.is_empty() {
            return Err(StepError::permanent(format!(
                "a container named '{}' exists but lacks the labels {}; refusing to adopt a container that is not this sandbox",
                spec.name,
                missing.join(", ")
            )));
        }
        let info = match info.state.as_str() {
            "running" => info,
            "created" | "exited" => {
                if adopted {
                    logs.info(format!(
                        "adopting existing container {} ({}), starting it",
                        info.name, info.state
                    ));
                }
                self.start(docker, &info.id).await?;
                self.require(&spec.name).await?
            }
            "paused" => {
                docker
                    .unpause_container(&info.id)
                    .await
                    .map_err(|e| api_error("unpause the container", e))?;
                self.require(&spec.name).await?
            }
            other => {
                return Err(StepError::retryable(format!(
                    "container {} is {other}; waiting for it to settle",
                    info.name
                )))
            }
        };
        if adopted {
            logs.info(format!(
                "adopted container {} ({})",
                info.name,
                short(&info.id)
            ));
        } else {
            logs.info(format!(
                "created container {} ({})",
                info.name,
                short(&info.id)
            ));
        }
        Ok(EnsureOutput {
            container: info,
            adopted,
        })
    }

    async fn create(
        &self,
        docker: &Docker,
        spec: &ContainerSpec,
        idempotency_key: &str,
        logs: &LogSink,
    ) -> Result<Created, StepError> {
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(MANAGED_LABEL.into(), "true".into());
        labels.insert(CREATED_BY_LABEL.into(), idempotency_key.into());
        let port_key = spec.port.map(|port| format!("{port}/tcp"));
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), KEEPALIVE.into()]),
            cmd: Some(Vec::new()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            working_dir: Some(spec.workdir.clone()),
            exposed_ports: port_key.clone().map(|key| vec![key]),
            host_config: Some(HostConfig {
                init: Some(true),
                port_bindings: port_key.map(|key| {
                    HashMap::from([(
                        key,
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            // Empty: Docker picks a free host port when the container starts.
                            host_port: Some(String::new()),
                        }]),
                    )])
                }),
                nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9) as i64),
                memory: spec.memory_bytes.map(|bytes| bytes as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let mut pulled = false;
        loop {
            match docker
                .create_container(Some(options.clone()), body.clone())
                .await
            {
                Ok(_) => return Ok(Created::New),
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => return Ok(Created::NameTaken),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                }) if !pulled => {
                    logs.info(format!(
                        "image {} not found locally ({message}); pulling it",
                        spec.image
                    ));
                    self.pull(docker, &spec.image).await?;
                    pulled = true;
                }
                Err(error) => return Err(api_error("create the container", error)),
            }
        }
    }

    async fn pull(&self, docker: &Docker, image: &str) -> Result<(), StepError> {
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            if let Err(error) = item {
                return Err(StepError::permanent(format!(
                    "image '{image}' is not available locally and could not be pulled: {error}"
                )));
            }
        }
        Ok(())
    }

    async fn start(&self, docker: &Docker, id: &str) -> Result<(), StepError> {
        match docker.start_container(id, None).await {
            // 304: already started.
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(error) => Err(api_error("start the container", error)),
        }
    }

    async fn require(&self, container: &str) -> Result<ContainerInfo, StepError> {
        self.inspect(container).await?.ok_or_else(|| {
            StepError::retryable(format!("container {container} vanished while starting it"))
        })
    }

    /// The container's state, labels and published ports; `None` if there is none.
    pub async fn inspect(&self, container: &str) -> Result<Option<ContainerInfo>, StepError> {
        let docker = self.docker().await?;
        match docker.inspect_container(container, None).await {
            Ok(response) => Ok(Some(info_from_inspect(response))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(api_error("inspect the container", error)),
        }
    }

    /// Unpacks `spec.archive` into `spec.dest`.
    pub async fn upload_archive(&self, spec: &UploadSpec) -> Result<UploadOutcome, StepError> {
        let docker = self.docker().await?;
        self.run_quietly(docker, &spec.container, "mkdir -p \"$1\"", &[&spec.dest])
            .await?;
        let mut file = std::fs::File::open(&spec.archive).map_err(|error| {
            StepError::permanent(format!(
                "cannot open archive {}: {error}",
                spec.archive.display()
            ))
        })?;
        let mut magic = [0u8; 4];
        let is_zstd = file.read_exact(&mut magic).is_ok() && magic == [0x28, 0xb5, 0x2f, 0xfd];
        let file = std::fs::File::open(&spec.archive).map_err(|error| {
            StepError::permanent(format!(
                "cannot open archive {}: {error}",
                spec.archive.display()
            ))
        })?;
        let reader: Box<dyn Read + Send> = if is_zstd {
            Box::new(zstd::Decoder::new(file).map_err(|error| {
                StepError::permanent(format!(
                    "cannot decompress {}: {error}",
                    spec.archive.display()
                ))
            })?)
        } else {
            Box::new(file)
        };
        // Read (and decompress) on a blocking thread, a few chunks ahead of the upload.
        let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let reader_task = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut sent = 0u64;
            loop {
                let mut chunk = vec![0u8; UPLOAD_CHUNK];
                match reader.read(&mut chunk) {
                    Ok(0) => return sent,
                    Ok(n) => {
                        chunk.truncate(n);
                        sent += n as u64;
                        if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                            return sent;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        let _ = sender.blocking_send(Err(error));
                        return sent;
                    }
                }
            }
        });
        let body = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        let options = UploadToContainerOptions {
            path: spec.dest.clone(),
            ..Default::default()
        };
        let uploaded = docker
            .upload_to_container(
                &spec.container,
                Some(options),
                bollard::body_try_stream(body),
            )
            .await;
        let bytes = reader_task
            .await
            .map_err(|error| StepError::retryable(format!("archive reader failed: {error}")))?;
        match uploaded {
            Ok(()) => Ok(UploadOutcome { bytes }),
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => Err(StepError::permanent(format!(
                "cannot upload into container {}: {message}",
                spec.container
            ))),
            Err(error) => Err(api_error("upload the archive", error)),
        }
    }

    /// Runs `spec.command` to completion, streaming its output into `logs`. Exit code 0
    /// is success; anything else, or running past the time limit, is a permanent error
    /// carrying the last lines of output.
    pub async fn exec(
        &self,
        spec: &ExecSpec,
        idempotency_key: &str,
        deadline: Option<Instant>,
        logs: &LogSink,
    ) -> Result<ExecOutcome, StepError> {
        let docker = self.docker().await?;
        let started = Instant::now();
        let limit = [
            spec.timeout_s.map(Duration::from_secs_f64),
            deadline.map(|d| d.saturating_duration_since(started)),
        ]
        .into_iter()
        .flatten()
        .min();
        let pidfile = pidfile(idempotency_key);
        let env = command_env(&spec.env, &spec.command, &pidfile);
        let exec = docker
            .create_exec(
                &spec.container,
                CreateExecOptions {
                    cmd: Some(vec!["/bin/sh".to_owned(), "-c".into(), EXEC_WRAPPER.into()]),
                    env: Some(env),
                    working_dir: spec.workdir.clone(),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| exec_error(&spec.container, e))?;
        let mut guard = KillOnDrop {
            docker: docker.clone(),
            container: spec.container.clone(),
            pidfile: pidfile.clone(),
            armed: true,
        };
        let started_exec = docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| exec_error(&spec.container, e))?;
        let StartExecResults::Attached { mut output, .. } = started_exec else {
            return Err(StepError::retryable("docker started the command detached"));
        };
        let mut stdout = LineSplitter::new(Stream::Stdout);
        let mut stderr = LineSplitter::new(Stream::Stderr);
        let pump = async {
            while let Some(frame) = output.next().await {
                match frame {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        stdout.push(&message, logs)
                    }
                    Ok(LogOutput::StdErr { message }) => stderr.push(&message, logs),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(error) => return Err(api_error("read the command's output", error)),
                }
            }
            Ok(())
        };
        let streamed = match limit {
            Some(limit) => tokio::time::timeout(limit, pump).await.ok(),
            None => Some(pump.await),
        };
        stdout.finish(logs);
        stderr.finish(logs);
        let Some(streamed) = streamed else {
            // The guard kills the command's process group.
            drop(guard);
            return Err(StepError::permanent(format!(
                "command timed out after {:.1}s and was killed: {}{}",
                limit.unwrap_or_default().as_secs_f64(),
                spec.command,
                tail_note(stdout.tail(), stderr.tail())
            )));
        };
        streamed?;
        guard.armed = false;
        let inspected = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| api_error("read the command's exit code", e))?;
        let exit_code = inspected.exit_code.unwrap_or(-1);
        if exit_code != 0 {
            return Err(StepError::permanent(format!(
                "command exited with code {exit_code}: {}{}",
                spec.command,
                tail_note(stdout.tail(), stderr.tail())
            )));
        }
        Ok(ExecOutcome {
            exit_code,
            stdout_tail: stdout.into_tail(),
            stderr_tail: stderr.into_tail(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Starts `spec.command` in the background (its output goes to the container log)
    /// unless the command an earlier attempt of this step started is still alive.
    pub async fn start_command(
        &self,
        spec: &StartSpec,
        idempotency_key: &str,
        logs: &LogSink,
    ) -> Result<StartOutcome, StepError> {
        let docker = self.docker().await?;
        let pidfile = pidfile(idempotency_key);
        let alive = self
            .run_quietly_env(docker, &spec.container, ALIVE_PROBE, &pidfile)
            .await?;
        if alive == 0 {
            logs.info("the command started earlier is still running; not starting another");
            return Ok(StartOutcome { started: false });
        }
        let exec = docker
            .create_exec(
                &spec.container,
                CreateExecOptions {
                    cmd: Some(vec![
                        "/bin/sh".to_owned(),
                        "-c".into(),
                        START_WRAPPER.into(),
                    ]),
                    env: Some(command_env(&spec.env, &spec.command, &pidfile)),
                    working_dir: spec.workdir.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| exec_error(&spec.container, e))?;
        docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| exec_error(&spec.container, e))?;
        logs.info(format!("started in the background: {}", spec.command));
        Ok(StartOutcome { started: true })
    }

    /// Copies the last `tail` lines of the container's log into `logs` (stdout at
    /// info, stderr at warn); returns how many lines.
    pub async fn logs(&self, container: &str, tail: u32, logs: &LogSink) -> Result<u64, StepError> {
        let docker = self.docker().await?;
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = docker.logs(container, Some(options));
        let mut stdout = LineSplitter::new(Stream::Stdout);
        let mut stderr = LineSplitter::new(Stream::Stderr);
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(LogOutput::StdErr { message }) => stderr.push(&message, logs),
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    stdout.push(&message, logs)
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(0),
                Err(error) => return Err(api_error("read the container log", error)),
            }
        }
        stdout.finish(logs);
        stderr.finish(logs);
        Ok(stdout.lines() + stderr.lines())
    }

    /// Stops and removes the container with its anonymous volumes. A container that
    /// does not exist counts as removed already (`removed: false`).
    pub async fn remove(&self, container: &str) -> Result<RemoveOutcome, StepError> {
        let docker = self.docker().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(RemoveOutcome { removed: true }),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(RemoveOutcome { removed: false }),
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Err(StepError::retryable(format!(
                "container {container} cannot be removed yet: {message}"
            ))),
            Err(error) => Err(api_error("remove the container", error)),
        }
    }

    /// Containers (running or not) that carry every label in `labels`.
    pub async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, StepError> {
        let docker = self.docker().await?;
        let filter: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), filter)])),
            ..Default::default()
        };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api_error("list containers", e))?;
        Ok(containers
            .into_iter()
            .map(|summary| ContainerInfo {
                id: summary.id.unwrap_or_default(),
                name: summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: summary.labels.unwrap_or_default().into_iter().collect(),
                ports: summary
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|port| Some((port.private_port, port.public_port?)))
                    .collect(),
            })
            .collect())
    }

    /// Runs a small helper script (`/bin/sh -c SCRIPT sh ARGS…`) and returns its exit
    /// code; output is discarded.
    async fn run_quietly(
        &self,
        docker: &Docker,
        container: &str,
        script: &str,
        args: &[&str],
    ) -> Result<i64, StepError> {
        let mut cmd = vec![
            "/bin/sh".to_owned(),
            "-c".into(),
            script.into(),
            "sh".into(),
        ];
        cmd.extend(args.iter().map(|a| (*a).to_owned()));
        run_to_end(docker, container, cmd, Vec::new()).await
    }

    async fn run_quietly_env(
        &self,
        docker: &Docker,
        container: &str,
        script: &str,
        pidfile: &str,
    ) -> Result<i64, StepError> {
        let cmd = vec!["/bin/sh".to_owned(), "-c".into(), script.into()];
        run_to_end(
            docker,
            container,
            cmd,
            vec![format!("MORPHEUS_PIDFILE={pidfile}")],
        )
        .await
    }
}

enum Created {
    New,
    NameTaken,
}

async fn run_to_end(
    docker: &Docker,
    container: &str,
    cmd: Vec<String>,
    env: Vec<String>,
) -> Result<i64, StepError> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd),
                env: Some(env),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| exec_error(container, e))?;
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec.id, None::<StartExecOptions>)
        .await
        .map_err(|e| exec_error(container, e))?
    {
        while let Some(frame) = output.next().await {
            frame.map_err(|e| api_error("run a helper command", e))?;
        }
    }
    let inspected = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| api_error("read a helper command's exit code", e))?;
    Ok(inspected.exit_code.unwrap_or(-1))
}

/// Kills the process group of an `exec` whose call was abandoned (timed out, or its
/// future dropped because the run was cancelled or its lease lost), so the command does
/// not keep running in the sandbox unobserved.
struct KillOnDrop {
    docker: Docker,
    container: String,
    pidfile: String,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let docker = self.docker.clone();
        let container = self.container.clone();
        let pidfile = self.pidfile.clone();
        runtime.spawn(async move {
            let cmd = vec!["/bin/sh".to_owned(), "-c".into(), KILL_WRAPPER.into()];
            let env = vec![format!("MORPHEUS_PIDFILE={pidfile}")];
            if let Err(error) = run_to_end(&docker, &container, cmd, env).await {
                tracing::warn!(%container, %error, "could not kill an abandoned command");
            }
        });
    }
}

fn command_env(extra: &BTreeMap<String, String>, command: &str, pidfile: &str) -> Vec<String> {
    let mut env: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Set last so the payload's env cannot override them.
    env.push(format!("MORPHEUS_COMMAND={command}"));
    env.push(format!("MORPHEUS_PIDFILE={pidfile}"));
    env
}

/// The pid file of a step's command: one per idempotency key, so a retry or a
/// re-execution after a crash finds what its predecessor started.
fn pidfile(idempotency_key: &str) -> String {
    let name: String = idempotency_key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{STATE_DIR}/{name}.pid")
}

fn check_name(name: &str) -> Result<(), StepError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(StepError::permanent(format!(
            "invalid container name '{name}' (allowed: [A-Za-z0-9][A-Za-z0-9_.-]*)"
        )))
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn info_from_inspect(response: ContainerInspectResponse) -> ContainerInfo {
    let ports = response
        .network_settings
        .and_then(|settings| settings.ports)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, bindings)| {
            let (port, protocol) = key.split_once('/')?;
            if protocol != "tcp" {
                return None;
            }
            let host_port = bindings?
                .into_iter()
                .find_map(|binding| binding.host_port?.parse::<u16>().ok())?;
            Some((port.parse::<u16>().ok()?, host_port))
        })
        .collect();
    ContainerInfo {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        state: response
            .state
            .and_then(|state| state.status)
            .map(|status| status.to_string())
            .unwrap_or_default(),
        labels: response
            .config
            .and_then(|config| config.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ports,
    }
}

/// Classifies a Docker API error: the engine refusing the request (4xx) will refuse it
/// again; anything else (no engine, 5xx, a broken connection) may pass.
pub(crate) fn api_error(action: &str, error: BollardError) -> StepError {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } if (400..500).contains(&status_code) => StepError::permanent(format!(
            "docker refused to {action} ({status_code}): {message}"
        )),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => StepError::retryable(format!(
            "docker failed to {action} ({status_code}): {message}"
        )),
        other => StepError::retryable(format!(
            "docker engine unreachable while trying to {action}: {other}"
        )),
    }
}

fn exec_error(container: &str, error: BollardError) -> StepError {
    match error {
        BollardError::DockerResponseServerError {
            status_code: 404 | 409,
            message,
        } => StepError::permanent(format!(
            "cannot run a command in container {container}: {message}"
        )),
        other => api_error("run a command", other),
    }
}

fn tail_note(stdout: &VecDeque<String>, stderr: &VecDeque<String>) -> String {
    let lines: Vec<&str> = if stderr.is_empty() {
        stdout.iter().map(String::as_str).collect()
    } else {
        stderr.iter().map(String::as_str).collect()
    };
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last output: {}", lines.join(" | "))
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    fn kind(&self) -> &str {
        KIND
    }

    async fn call(&self, request: ExecRequest) -> Result<ExecOutput, ExecError> {
        let op: DockerRequest = serde_json::from_value(request.payload.clone())
            .map_err(|error| StepError::permanent(format!("invalid docker request: {error}")))?;
        let logs = &request.logs;
        let key = &request.idempotency_key;
        let output = match op {
            DockerRequest::EnsureContainer(spec) => {
                serde_json::to_value(self.ensure_container(&spec, key, logs).await?)
            }
            DockerRequest::UploadArchive(spec) => {
                serde_json::to_value(self.upload_archive(&spec).await?)
            }
            DockerRequest::Exec(spec) => {
                serde_json::to_value(self.exec(&spec, key, request.deadline, logs).await?)
            }
            DockerRequest::StartCommand(spec) => {
                serde_json::to_value(self.start_command(&spec, key, logs).await?)
            }
            DockerRequest::Logs { container, tail } => {
                let lines = self.logs(&container, tail, logs).await?;
                Ok(json!({ "lines": lines }))
            }
            DockerRequest::Inspect { container } => {
                serde_json::to_value(self.inspect(&container).await?)
            }
            DockerRequest::Remove { container } => {
                serde_json::to_value(self.remove(&container).await?)
            }
            DockerRequest::List { labels } => serde_json::to_value(self.list(&labels).await?),
            DockerRequest::BuildImage(spec) => {
                serde_json::to_value(self.build_image(&spec, logs).await?)
            }
        };
        output.map_err(|error| StepError::permanent(format!("encoding the output: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json_tagged_by_op() {
        let request = DockerRequest::Exec(ExecSpec {
            container: "c".into(),
            command: "make".into(),
            workdir: Some("/workspace/app".into()),
            env: BTreeMap::from([("A".into(), "1".into())]),
            timeout_s: Some(5.0),
        });
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(value["op"], "exec");
        assert_eq!(value["command"], "make");
        let back: DockerRequest = serde_json::from_value(value).unwrap();
        assert_eq!(back, request);
        let remove: DockerRequest =
            serde_json::from_value(json!({"op": "remove", "container": "x"})).unwrap();
        assert_eq!(
            remove,
            DockerRequest::Remove {
                container: "x".into()
            }
        );
        let typo = serde_json::from_value::<DockerRequest>(
            json!({"op": "exec", "container": "c", "comand": "x"}),
        );
        assert!(typo.is_err(), "unknown fields are refused");
    }

    #[test]
    fn pidfiles_are_stable_per_idempotency_key_and_shell_safe() {
        let key = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/build";
        assert_eq!(pidfile(key), pidfile(key));
        assert_ne!(
            pidfile(key),
            pidfile("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/install")
        );
        let path = pidfile("x/$(rm -rf /);`y`");
        assert!(path.starts_with("/tmp/.morpheus/"));
        assert!(path[STATE_DIR.len() + 1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    }

    #[test]
    fn container_names_are_checked() {
        assert!(check_name("morpheus-deploy-0190a1b2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-leading-dash").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name("slash/name").is_err());
    }

    #[test]
    fn api_errors_are_classified_by_status() {
        let refused = api_error(
            "create the container",
            BollardError::DockerResponseServerError {
                status_code: 400,
                message: "bad".into(),
            },
        );
        assert!(!refused.is_retryable());
        let failing = api_error(
            "create the container",
            BollardError::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            },
        );
        assert!(failing.is_retryable());
        let gone = api_error("list containers", BollardError::RequestTimeoutError);
        assert!(gone.is_retryable());
        assert!(gone.message().contains("unreachable"));
    }

    #[test]
    fn tail_note_prefers_stderr() {
        let out: VecDeque<String> = ["o1".to_owned()].into();
        let err: VecDeque<String> = ["e1".to_owned(), "e2".to_owned()].into();
        assert_eq!(tail_note(&out, &err), "; last output: e1 | e2");
        assert_eq!(tail_note(&out, &VecDeque::new()), "; last output: o1");
        assert_eq!(tail_note(&VecDeque::new(), &VecDeque::new()), "");
    }
}
