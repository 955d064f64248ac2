//! The Akash SDL v2.0 document as a serde model: what synthesis writes and what the
//! plain-SDL parser reads (the SDK's fixtures, a user's own SDL).
//!
//! Maps are [`IndexMap`]s because Akash's SDK walks them in the document's key order
//! (placements, deployments, GPU vendors, storage attributes before sorting), and
//! that order shows in the manifest and the groups.
//!
//! Scalars the SDK turns into text with JavaScript's `toString` (CPU units, GPU units,
//! attribute values, prices) are kept as [`serde_json::Value`], so that `1`, `1.5`
//! and `"1"` stay what the document said; [`js_to_string`] renders them as
//! JavaScript would.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::project::{Project, ServiceResources, SidecarsConfig};
use super::templates::template;

/// An SDL v2.0 document: `version`, `services`, `profiles` and `deployment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sdl {
    /// The SDL version; `"2.0"`.
    pub version: String,
    /// The containers, by service name.
    pub services: IndexMap<String, Service>,
    /// Compute profiles (resources) and placements (where, at what price).
    pub profiles: Profiles,
    /// For each service, per placement: which compute profile, how many replicas.
    pub deployment: IndexMap<String, IndexMap<String, ServiceDeployment>>,
    /// Named IP endpoints (`kind: ip`) that exposes refer to with `ip:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<IndexMap<String, EndpointDeclaration>>,
}

/// One container of the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The image reference the provider pulls.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The ports the service offers, and to whom. Required, if only as `[]`: Akash's
    /// SDK cannot derive a manifest without it.
    pub expose: Vec<Expose>,
    /// Volume mounts and permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<ServiceParams>,
    /// Registry credentials for a private image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// A port a service offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    /// The container port.
    pub port: u32,
    /// The port seen from outside (`as`); the container port when absent.
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub external_port: Option<u32>,
    /// `tcp` (the default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Who may connect: other services, or the world (`global: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<ExposeTo>>,
    /// Host names the provider's ingress accepts for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<Vec<String>>,
    /// Ingress HTTP tunables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_options: Option<HttpOptions>,
}

/// One audience of an exposed port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeTo {
    /// Another service of the same deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Reachable from outside the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<bool>,
    /// A named IP endpoint (see [`Sdl::endpoints`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// Ingress HTTP options; zero or absent fields take Akash's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// Largest request body, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<u64>,
    /// Read timeout, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<u64>,
    /// Send timeout, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout: Option<u64>,
    /// How many upstream attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_tries: Option<u64>,
    /// Time budget for retries, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_timeout: Option<u64>,
    /// Which failures are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cases: Option<Vec<String>>,
}

/// `params` of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    /// Mounts of the compute profile's named volumes, by volume name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<IndexMap<String, Option<StorageMount>>>,
    /// What the service may read from the provider (`read: [deployment, logs]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<ServicePermissions>,
}

/// `params.permissions` of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePermissions {
    /// What the service may read about its own lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<ReadPermission>>,
}

/// Something a service may read from the provider about its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadPermission {
    /// The deployment's status.
    Deployment,
    /// The lease's logs.
    Logs,
}

/// Where a named volume is mounted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageMount {
    /// The path inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Mounted read-only.
    #[serde(rename = "readOnly", default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Registry credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The registry host.
    pub host: String,
    /// The account's e-mail (Akash sends `""` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The account name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

/// `profiles`: compute and placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// Resources, by profile name.
    pub compute: IndexMap<String, ComputeProfile>,
    /// Provider requirements and prices, by placement name.
    pub placement: IndexMap<String, Placement>,
}

/// A compute profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeProfile {
    /// What one replica gets.
    pub resources: ComputeResources,
}

/// CPU, memory, storage and GPU of one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeResources {
    /// CPU.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
    /// One volume or several.
    pub storage: StorageVolumes,
    /// GPU, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
}

/// CPU request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Cores as a number (`0.5`) or text (`"500m"`, `"2"`).
    pub units: Value,
    /// Provider attributes (`arch: amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<IndexMap<String, Value>>,
}

/// Memory request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// A size such as `512Mi` or `1G`.
    pub size: String,
    /// Provider attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<IndexMap<String, Value>>,
}

/// `storage`: a single volume or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StorageVolumes {
    /// One unnamed (`default`) or named volume.
    One(StorageVolume),
    /// Several volumes.
    Many(Vec<StorageVolume>),
}

impl StorageVolumes {
    /// The volumes in document order.
    pub fn volumes(&self) -> &[StorageVolume] {
        match self {
            StorageVolumes::One(volume) => std::slice::from_ref(volume),
            StorageVolumes::Many(volumes) => volumes,
        }
    }
}

/// One storage volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageVolume {
    /// The volume's name; `default` (the container's root filesystem) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A size such as `10Gi`.
    pub size: String,
    /// `persistent`, `class` (`beta1`..`beta3`, `ram`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<IndexMap<String, Value>>,
}

/// GPU request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// How many GPUs.
    pub units: Value,
    /// Which vendors and models are acceptable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<GpuAttributes>,
}

/// GPU attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuAttributes {
    /// By vendor (`nvidia`): the acceptable models, or any model when empty.
    pub vendor: IndexMap<String, Option<Vec<GpuModel>>>,
}

/// One acceptable GPU model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuModel {
    /// The model (`rtx4090`, `h100`).
    pub model: String,
    /// Its memory (`80Gi`), when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<String>,
    /// Its interface (`pcie`, `sxm`), when it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// A placement: provider requirements and the price per compute profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Provider attributes required (`region: us-west`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<IndexMap<String, Value>>,
    /// Auditors whose signature on the provider's attributes is required.
    #[serde(rename = "signedBy", default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<SignedBy>,
    /// The highest price per block, by compute profile.
    pub pricing: IndexMap<String, Price>,
}

/// Auditor requirements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBy {
    /// Every one of these must have signed.
    #[serde(rename = "allOf", default, skip_serializing_if = "Option::is_none")]
    pub all_of: Option<Vec<String>>,
    /// At least one of these must have signed.
    #[serde(rename = "anyOf", default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<String>>,
}

/// A price per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// `uakt`, `uact` or an IBC denom.
    pub denom: String,
    /// The amount, a number.
    pub amount: Value,
}

/// One service in one placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDeployment {
    /// The compute profile's name.
    pub profile: String,
    /// Replicas.
    pub count: u64,
}

/// A named endpoint declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointDeclaration {
    /// `ip`: a leased IP address.
    pub kind: String,
}

/// An SDL document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SdlParseError {
    /// Where in the document (`profiles.compute.web.resources`), `.` for the whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Sdl {
    /// Reads an SDL v2.0 document: its shape (unknown fields are refused), not every
    /// rule of the SDK's JSON schema (denom patterns, `next_cases` values, endpoint
    /// names); [`super::derive`] refuses what it cannot compute.
    ///
    /// ```
    /// let sdl = morpheus_workflows::akash::sdl::Sdl::from_yaml(
    ///     "version: '2.0'\nservices: {}\nprofiles: {compute: {}, placement: {}}\ndeployment: {}\n",
    /// )
    /// .unwrap();
    /// assert_eq!(sdl.version, "2.0");
    /// ```
    pub fn from_yaml(text: &str) -> Result<Sdl, SdlParseError> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let sdl: Sdl = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            SdlParseError {
                message: yaml_error_message(&path, &error.inner().to_string()),
                path,
            }
        })?;
        if sdl.version != "2.0" {
            return Err(SdlParseError {
                path: "version".into(),
                message: format!("{:?} is not supported (only \"2.0\")", sdl.version),
            });
        }
        Ok(sdl)
    }

    /// Renders the document as YAML text.
    pub fn to_yaml(&self) -> String {
        // Every field is a string, number, bool, list or string-keyed map.
        serde_yaml::to_string(self).expect("an SDL model always renders as YAML")
    }
}

/// serde_yaml's message on one line, without the path it starts with when the error
/// is nested (`services.web: …`): the caller names the field itself, more precisely.
pub(crate) fn yaml_error_message(path: &str, message: &str) -> String {
    let message = one_line(message);
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_string(),
        _ => message,
    }
}

/// Joins a possibly multi-line message into one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A scalar as JavaScript's `String(value)` renders it (`1` → `"1"`, `0.5` → `"0.5"`,
/// `true` → `"true"`), or `None` for values the SDK cannot render (null, lists, maps:
/// `toString` on them throws or yields `[object Object]`).
pub fn js_to_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(js_number_of(number)),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn js_number_of(number: &serde_json::Number) -> String {
    if let Some(integer) = number.as_i64() {
        integer.to_string()
    } else if let Some(integer) = number.as_u64() {
        integer.to_string()
    } else {
        js_number(number.as_f64().unwrap_or(f64::NAN))
    }
}

/// A double as JavaScript's `Number.prototype.toString` renders it: the shortest
/// digits that read back as the same double, positional from 1e-6 up to 1e21,
/// exponential (`1e-7`, `1.5e+21`) outside.
pub fn js_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if value == 0.0 {
        // Both zeros print as "0".
        return "0".into();
    }
    let magnitude = value.abs();
    if (1e-6..1e21).contains(&magnitude) {
        // Rust's Display is also shortest-round-trip and positional.
        return format!("{value}");
    }
    let exponential = format!("{value:e}");
    match exponential.split_once('e') {
        Some((digits, exponent)) if !exponent.starts_with('-') => format!("{digits}e+{exponent}"),
        _ => exponential,
    }
}

/// The main service's name in a synthesized SDL.
pub const APP_SERVICE: &str = "app";
/// The placement (and so the deployment group) of a synthesized SDL.
pub const PLACEMENT: &str = "akash";
/// The volume every service of a pod with PostgreSQL or Vector mounts at [`DATA_MOUNT`].
pub const DATA_VOLUME: &str = "data";
/// Where the data volume is mounted.
pub const DATA_MOUNT: &str = "/data";
/// PostgreSQL's port.
pub const POSTGRES_PORT: u32 = 5432;
/// Vector's API port.
pub const VECTOR_PORT: u32 = 8686;
/// PostgreSQL's image unless `sidecars.postgres.image` says otherwise.
pub const POSTGRES_IMAGE: &str = "postgres:16-alpine";
/// Vector's image unless `sidecars.vector.image` says otherwise.
pub const VECTOR_IMAGE: &str = "timberio/vector:0.43.1-alpine";
/// The database role and database PostgreSQL creates.
pub const POSTGRES_USER: &str = "morpheus";
/// The root filesystem of a service whose own data lives on the data volume.
const ROOT_WITH_DATA_VOLUME: &str = "1Gi";

/// The env the sidecars give the main service, in order: for PostgreSQL
/// `DATABASE_URL` and libpq's `PG*` variables (the password travels in `PGPASSWORD`,
/// never inside the URL, so a sealed password stays one string), for Vector
/// `VECTOR_ADDR`, for a custom sidecar `<NAME>_HOST` and, with a port, `<NAME>_PORT`.
pub fn sidecar_env(sidecars: &SidecarsConfig) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(postgres) = &sidecars.postgres {
        env.push((
            "DATABASE_URL".to_string(),
            format!("postgres://{POSTGRES_USER}@postgres:{POSTGRES_PORT}/{POSTGRES_USER}"),
        ));
        env.push(("PGHOST".into(), "postgres".into()));
        env.push(("PGPORT".into(), POSTGRES_PORT.to_string()));
        env.push(("PGUSER".into(), POSTGRES_USER.into()));
        env.push(("PGDATABASE".into(), POSTGRES_USER.into()));
        env.push(("PGPASSWORD".into(), postgres.password.clone()));
    }
    if sidecars.vector.is_some() {
        env.push(("VECTOR_ADDR".into(), format!("http://vector:{VECTOR_PORT}")));
    }
    for custom in &sidecars.custom {
        let prefix = custom.name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{prefix}_HOST"), custom.name.clone()));
        if let Some(port) = custom.port {
            env.push((format!("{prefix}_PORT"), port.to_string()));
        }
    }
    env
}

/// A number for the SDL: whole numbers without a fraction, so that the YAML reads `2`.
fn sdl_number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        Value::from(value as i64)
    } else {
        Value::from(value)
    }
}

fn env_entries<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Vec<String>> {
    let entries: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    (!entries.is_empty()).then_some(entries)
}

/// One service of the pod before it is split into service, profile and deployment.
struct PodService {
    name: String,
    service: Service,
    resources: ServiceResources,
}

fn compute_profile(resources: &ServiceResources, with_data_volume: bool) -> ComputeProfile {
    let volumes = if with_data_volume {
        let mut attributes = IndexMap::new();
        attributes.insert("persistent".to_string(), Value::Bool(true));
        attributes.insert("class".to_string(), Value::String("beta3".into()));
        vec![
            StorageVolume {
                name: None,
                size: ROOT_WITH_DATA_VOLUME.into(),
                attributes: None,
            },
            StorageVolume {
                name: Some(DATA_VOLUME.into()),
                size: resources.storage.clone(),
                attributes: Some(attributes),
            },
        ]
    } else {
        vec![StorageVolume {
            name: None,
            size: resources.storage.clone(),
            attributes: None,
        }]
    };
    ComputeProfile {
        resources: ComputeResources {
            cpu: Cpu {
                units: sdl_number(resources.cpu),
                attributes: None,
            },
            memory: Memory {
                size: resources.memory.clone(),
                attributes: None,
            },
            storage: StorageVolumes::Many(volumes),
            gpu: resources.gpu.as_ref().map(|(units, model)| {
                let mut vendor = IndexMap::new();
                // The GPU models Akash providers list (rtx4090, a100, h100) are NVIDIA's.
                vendor.insert(
                    "nvidia".to_string(),
                    Some(vec![GpuModel {
                        model: model.clone(),
                        ram: None,
                        interface: None,
                    }]),
                );
                Gpu {
                    units: Value::from(*units),
                    attributes: Some(GpuAttributes { vendor }),
                }
            }),
        },
    }
}

fn data_volume_params() -> ServiceParams {
    let mut storage = IndexMap::new();
    storage.insert(
        DATA_VOLUME.to_string(),
        Some(StorageMount {
            mount: Some(DATA_MOUNT.into()),
            read_only: None,
        }),
    );
    ServiceParams {
        storage: Some(storage),
        permissions: None,
    }
}

fn exposed_to_app(port: u32) -> Expose {
    Expose {
        port,
        external_port: None,
        proto: None,
        to: Some(vec![ExposeTo {
            service: Some(APP_SERVICE.into()),
            ..ExposeTo::default()
        }]),
        accept: None,
        http_options: None,
    }
}

/// The SDL v2.0 document of a validated project: the main service `app` and its
/// sidecars in one placement (`akash`), so one lease on one provider runs them all,
/// each service with its own compute profile and price.
///
/// With PostgreSQL or Vector, `app` and those two each mount a persistent volume
/// `data` at `/data` (PostgreSQL keeps its cluster in `/data/postgres`): Akash gives
/// every service its own volumes, so the services share the mount point and the
/// lease, not the blocks. Such a service's `resources.storage` is then the size of its
/// `/data`, and its root filesystem gets 1Gi. Sidecars are reachable from `app` only,
/// by service name; every service is offered the same price.
pub fn synthesize_sdl(project: &Project) -> Sdl {
    let config = &project.config;
    let sidecars = &config.sidecars;
    let with_data_volume = sidecars.postgres.is_some() || sidecars.vector.is_some();
    let sidecar_names: Vec<String> = sidecars
        .postgres
        .iter()
        .map(|_| "postgres".to_string())
        .chain(sidecars.vector.iter().map(|_| "vector".to_string()))
        .chain(sidecars.custom.iter().map(|custom| custom.name.clone()))
        .collect();

    let app_expose = project
        .ports
        .iter()
        .map(|port| {
            let to = if port.global.unwrap_or(true) {
                Some(vec![ExposeTo {
                    global: Some(true),
                    ..ExposeTo::default()
                }])
            } else if sidecar_names.is_empty() {
                None
            } else {
                // Not for the world: for the services of the pod.
                Some(
                    sidecar_names
                        .iter()
                        .map(|name| ExposeTo {
                            service: Some(name.clone()),
                            ..ExposeTo::default()
                        })
                        .collect(),
                )
            };
            Expose {
                port: port.port,
                external_port: port.external_port,
                proto: port.proto.clone(),
                to,
                accept: port.accept.clone(),
                http_options: None,
            }
        })
        .collect();
    let injected = sidecar_env(sidecars);
    let app_env = env_entries(
        config
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain(
                injected
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            ),
    );
    let mut pod = vec![PodService {
        name: APP_SERVICE.into(),
        service: Service {
            image: project.image.clone(),
            command: None,
            args: None,
            env: app_env,
            expose: app_expose,
            params: with_data_volume.then(data_volume_params),
            credentials: None,
        },
        resources: project.resources.clone(),
    }];
    if let (Some(postgres), Some(resources)) =
        (&sidecars.postgres, &project.sidecar_resources.postgres)
    {
        let pgdata = format!("{DATA_MOUNT}/postgres");
        pod.push(PodService {
            name: "postgres".into(),
            service: Service {
                image: postgres
                    .image
                    .clone()
                    .unwrap_or_else(|| POSTGRES_IMAGE.into()),
                command: None,
                args: None,
                env: env_entries([
                    ("POSTGRES_USER", POSTGRES_USER),
                    ("POSTGRES_DB", POSTGRES_USER),
                    ("POSTGRES_PASSWORD", postgres.password.as_str()),
                    ("PGDATA", pgdata.as_str()),
                ]),
                expose: vec![exposed_to_app(POSTGRES_PORT)],
                params: Some(data_volume_params()),
                credentials: None,
            },
            resources: resources.clone(),
        });
    }
    if let (Some(vector), Some(resources)) = (&sidecars.vector, &project.sidecar_resources.vector) {
        pod.push(PodService {
            name: "vector".into(),
            service: Service {
                image: vector.image.clone().unwrap_or_else(|| VECTOR_IMAGE.into()),
                command: None,
                args: None,
                env: None,
                expose: vec![exposed_to_app(VECTOR_PORT)],
                params: Some(data_volume_params()),
                credentials: None,
            },
            resources: resources.clone(),
        });
    }
    for (custom, resources) in sidecars
        .custom
        .iter()
        .zip(&project.sidecar_resources.custom)
    {
        pod.push(PodService {
            name: custom.name.clone(),
            service: Service {
                image: custom.image.clone(),
                command: None,
                args: None,
                env: env_entries(
                    custom
                        .env
                        .iter()
                        .map(|(key, value)| (key.as_str(), value.as_str())),
                ),
                expose: custom.port.map(exposed_to_app).into_iter().collect(),
                params: None,
                credentials: None,
            },
            resources: resources.clone(),
        });
    }

    let template = template(config.template);
    let price = match &config.pricing {
        Some(pricing) => Price {
            denom: pricing.denom.clone(),
            amount: Value::from(pricing.amount),
        },
        None => Price {
            denom: "uakt".into(),
            amount: Value::from(template.price_uakt),
        },
    };
    let placement_config = config.placement.clone().unwrap_or_default();
    let mut services = IndexMap::new();
    let mut compute = IndexMap::new();
    let mut pricing = IndexMap::new();
    let mut deployment = IndexMap::new();
    for member in pod {
        // The data volume belongs to the services that use /data: app, postgres, vector.
        let uses_data = with_data_volume && member.service.params.is_some();
        compute.insert(
            member.name.clone(),
            compute_profile(&member.resources, uses_data),
        );
        pricing.insert(member.name.clone(), price.clone());
        let mut placements = IndexMap::new();
        placements.insert(
            PLACEMENT.to_string(),
            ServiceDeployment {
                profile: member.name.clone(),
                count: 1,
            },
        );
        deployment.insert(member.name.clone(), placements);
        services.insert(member.name, member.service);
    }
    let signed_by = (!placement_config.signed_by_all_of.is_empty()
        || !placement_config.signed_by_any_of.is_empty())
    .then(|| SignedBy {
        all_of: (!placement_config.signed_by_all_of.is_empty())
            .then(|| placement_config.signed_by_all_of.clone()),
        any_of: (!placement_config.signed_by_any_of.is_empty())
            .then(|| placement_config.signed_by_any_of.clone()),
    });
    let attributes = (!placement_config.attributes.is_empty()).then(|| {
        placement_config
            .attributes
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect()
    });
    let mut placement = IndexMap::new();
    placement.insert(
        PLACEMENT.to_string(),
        Placement {
            attributes,
            signed_by,
            pricing,
        },
    );
    Sdl {
        version: "2.0".into(),
        services,
        profiles: Profiles { compute, placement },
        deployment,
        endpoints: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthesized(morpheus_yaml: &str) -> Sdl {
        synthesize_sdl(&Project::from_yaml(morpheus_yaml).unwrap())
    }

    fn env_of(service: &Service) -> Vec<&str> {
        service.env.iter().flatten().map(String::as_str).collect()
    }

    fn mount_of<'a>(sdl: &'a Sdl, service: &str) -> Option<&'a str> {
        let storage = sdl.services[service].params.as_ref()?.storage.as_ref()?;
        storage.get(DATA_VOLUME)?.as_ref()?.mount.as_deref()
    }

    const WITH_SIDECARS: &str = "name: agent\ntemplate: ai-agent\nimage: ghcr.io/acme/agent:1\nenv: {MODE: live}\nsidecars:\n  postgres: {password: 'sealed:v1:UEFTUw'}\n  vector: {}\n  custom:\n  - {name: redis-cache, image: 'redis:7', port: 6379, resources: {cpu: 0.5, memory: 256Mi}}\n";

    #[test]
    fn sidecars_join_the_app_in_one_placement() {
        let sdl = synthesized(WITH_SIDECARS);
        let names: Vec<&str> = sdl.services.keys().map(String::as_str).collect();
        assert_eq!(names, ["app", "postgres", "vector", "redis-cache"]);
        for name in names {
            let placements: Vec<&String> = sdl.deployment[name].keys().collect();
            assert_eq!(placements, [PLACEMENT], "{name}");
            assert_eq!(sdl.deployment[name][PLACEMENT].profile, name);
            assert!(sdl.profiles.placement[PLACEMENT].pricing.contains_key(name));
        }
    }

    #[test]
    fn sidecars_listen_on_their_ports_for_the_app_only() {
        let sdl = synthesized(WITH_SIDECARS);
        // (service, port)
        let table = [("postgres", 5432), ("vector", 8686), ("redis-cache", 6379)];
        for (service, port) in table {
            let expose = &sdl.services[service].expose;
            assert_eq!(expose.len(), 1, "{service}");
            assert_eq!(expose[0].port, port, "{service}");
            let to = expose[0].to.as_ref().unwrap();
            assert_eq!(to.len(), 1, "{service}");
            assert_eq!(to[0].service.as_deref(), Some(APP_SERVICE), "{service}");
            assert_eq!(to[0].global, None, "{service}: not for the world");
        }
    }

    #[test]
    fn app_postgres_and_vector_mount_data() {
        let sdl = synthesized(WITH_SIDECARS);
        // (service, mounts /data)
        let table = [
            ("app", Some("/data")),
            ("postgres", Some("/data")),
            ("vector", Some("/data")),
            ("redis-cache", None),
        ];
        for (service, mount) in table {
            assert_eq!(mount_of(&sdl, service), mount, "{service}");
            let volumes = sdl.profiles.compute[service].resources.storage.volumes();
            let data = volumes
                .iter()
                .find(|volume| volume.name.as_deref() == Some(DATA_VOLUME));
            assert_eq!(data.is_some(), mount.is_some(), "{service}");
            if let Some(data) = data {
                let attributes = data.attributes.as_ref().unwrap();
                assert_eq!(attributes["persistent"], Value::Bool(true), "{service}");
                assert_eq!(attributes["class"], Value::from("beta3"), "{service}");
            }
        }
        assert!(env_of(&sdl.services["postgres"]).contains(&"PGDATA=/data/postgres"));
    }

    #[test]
    fn the_app_gets_the_connection_env() {
        let sdl = synthesized(WITH_SIDECARS);
        let env = env_of(&sdl.services[APP_SERVICE]);
        assert_eq!(
            env,
            [
                "MODE=live",
                "DATABASE_URL=postgres://morpheus@postgres:5432/morpheus",
                "PGHOST=postgres",
                "PGPORT=5432",
                "PGUSER=morpheus",
                "PGDATABASE=morpheus",
                "PGPASSWORD=sealed:v1:UEFTUw",
                "VECTOR_ADDR=http://vector:8686",
                "REDIS_CACHE_HOST=redis-cache",
                "REDIS_CACHE_PORT=6379",
            ]
        );
        let postgres = env_of(&sdl.services["postgres"]);
        assert!(postgres.contains(&"POSTGRES_PASSWORD=sealed:v1:UEFTUw"));
        assert!(postgres.contains(&"POSTGRES_USER=morpheus"));
    }

    #[test]
    fn without_postgres_or_vector_there_is_no_data_volume() {
        let table = [
            "name: site\ntemplate: website\nimage: nginx\n",
            "name: site\ntemplate: website\nimage: nginx\nsidecars: {custom: [{name: worker, image: w, resources: {cpu: 1, memory: 1Gi}}]}\n",
        ];
        for text in table {
            let sdl = synthesized(text);
            assert_eq!(mount_of(&sdl, APP_SERVICE), None, "{text}");
            let volumes = sdl.profiles.compute[APP_SERVICE]
                .resources
                .storage
                .volumes();
            assert_eq!(volumes.len(), 1, "{text}");
            assert_eq!(volumes[0].size, "10Gi", "{text}");
        }
    }

    #[test]
    fn templates_shape_the_app_service() {
        // (morpheus.yaml, cpu units, memory, GPU model, exposed port → as)
        let table = [
            (
                "name: a\ntemplate: ai-agent\nimage: x\n",
                Value::from(2),
                "4Gi",
                Some("rtx4090"),
                Some((8000, 80)),
            ),
            (
                "name: a\ntemplate: mcp-server\nimage: x\n",
                Value::from(0.5),
                "512Mi",
                None,
                Some((8080, 80)),
            ),
            (
                "name: a\ntemplate: website\nimage: x\n",
                Value::from(0.5),
                "256Mi",
                None,
                Some((3000, 80)),
            ),
            (
                "name: a\ntemplate: custom\nimage: x\nresources: {cpu: 3, memory: 3Gi}\n",
                Value::from(3),
                "3Gi",
                None,
                None,
            ),
        ];
        for (text, cpu, memory, gpu, port) in table {
            let sdl = synthesized(text);
            let resources = &sdl.profiles.compute[APP_SERVICE].resources;
            assert_eq!(resources.cpu.units, cpu, "{text}");
            assert_eq!(resources.memory.size, memory, "{text}");
            let model = resources.gpu.as_ref().map(|gpu| {
                gpu.attributes.as_ref().unwrap().vendor["nvidia"]
                    .as_ref()
                    .unwrap()[0]
                    .model
                    .as_str()
            });
            assert_eq!(model, gpu, "{text}");
            let expose = sdl.services[APP_SERVICE]
                .expose
                .first()
                .map(|expose| (expose.port, expose.external_port.unwrap()));
            assert_eq!(expose, port, "{text}");
        }
    }

    #[test]
    fn numbers_render_as_javascript_renders_them() {
        let table: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (500.0, "500"),
            (0.5, "0.5"),
            (1.25, "1.25"),
            (100.5, "100.5"),
            (1099511627776.0, "1099511627776"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-8, "1.5e-8"),
            (1e21, "1e+21"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (value, expected) in table {
            assert_eq!(js_number(*value), *expected, "{value}");
        }
    }

    #[test]
    fn scalars_render_as_javascript_strings() {
        let table = [
            (serde_json::json!("amd64"), Some("amd64")),
            (serde_json::json!(true), Some("true")),
            (serde_json::json!(7), Some("7")),
            (serde_json::json!(2.5), Some("2.5")),
            (serde_json::json!(null), None),
            (serde_json::json!([1]), None),
        ];
        for (value, expected) in table {
            assert_eq!(js_to_string(&value).as_deref(), expected, "{value}");
        }
    }

    #[test]
    fn storage_is_one_volume_or_a_list() {
        let one: StorageVolumes = serde_yaml::from_str("size: 1Gi").unwrap();
        assert_eq!(one.volumes().len(), 1);
        let many: StorageVolumes =
            serde_yaml::from_str("- size: 1Gi\n- name: data\n  size: 2Gi").unwrap();
        assert_eq!(many.volumes()[1].name.as_deref(), Some("data"));
    }

    #[test]
    fn a_document_reads_back_as_it_was_rendered() {
        let text = "version: '2.0'\nservices:\n  web:\n    image: nginx\n    expose:\n    - port: 80\n      as: 80\n      to:\n      - global: true\nprofiles:\n  compute:\n    web:\n      resources:\n        cpu: {units: 0.5}\n        memory: {size: 512Mi}\n        storage: {size: 1Gi}\n  placement:\n    dcloud:\n      pricing:\n        web: {denom: uakt, amount: 1000}\ndeployment:\n  web:\n    dcloud: {profile: web, count: 1}\n";
        let sdl = Sdl::from_yaml(text).unwrap();
        assert_eq!(Sdl::from_yaml(&sdl.to_yaml()).unwrap(), sdl);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let table = [
            ("version: '1.0'\nservices: {}\nprofiles: {compute: {}, placement: {}}\ndeployment: {}\n", "version: \"1.0\" is not supported (only \"2.0\")"),
            ("version: '2.0'\nservices: {web: {image: nginx, colour: red}}\nprofiles: {compute: {}, placement: {}}\ndeployment: {}\n", "services.web.colour: unknown field `colour`"),
        ];
        for (text, expected) in table {
            let error = Sdl::from_yaml(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
