//! `morpheus.yaml`: a project's deploy configuration, and its validation.
//!
//! ```yaml
//! name: research-agent
//! template: ai-agent           # ai-agent | mcp-server | website | custom
//! image: ghcr.io/acme/agent:1.4   # or a build section:
//! # build: { context: ., dockerfile: Dockerfile, tag: ghcr.io/acme/agent:1.4 }
//! # build: { context: ., tag: ghcr.io/acme/api, start: "uvicorn app:app --host 0.0.0.0" }
//! resources: { cpu: 4, memory: 8Gi, storage: 20Gi, gpu: { units: 1, model: h100 } }
//! env:
//!   LOG_LEVEL: info
//!   ANTHROPIC_API_KEY: "sealed:v1:BASE64…"
//! ports:
//!   - { port: 8000, as: 80 }   # global unless `global: false`
//! sidecars:
//!   postgres: { password: "…" }
//!   vector: {}
//!   custom:
//!     - { name: redis, image: "redis:7-alpine", port: 6379, resources: { cpu: 0.5, memory: 256Mi } }
//! pricing: { denom: uakt, amount: 100000 }
//! ```
//!
//! Every error is one line that names the field (`resources.cpu: 64 is above the limit
//! 32`); nothing is started on a bad configuration.
//!
//! **Env values and secrets.** A value that starts with `sealed:v1:` is a sealed
//! secret: it stays sealed in the SDL and the journaled manifest, and is opened only
//! for the manifest upload (see [`super::secrets`]). Every other value is plain text
//! and reaches the provider as written.

use indexmap::IndexMap;
use serde::Deserialize;

use super::sdl::{sidecar_env, yaml_error_message};
use super::templates::{parse_size, template, TemplateName, LIMITS};

/// The prefix of a sealed env value, kept as written.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Names the synthesized SDL gives its services; a custom sidecar may not take them.
pub const RESERVED_SERVICE_NAMES: [&str; 3] = ["app", "postgres", "vector"];

/// A bad `morpheus.yaml`: one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ProjectError {
    /// The field (`resources.cpu`, `sidecars.custom[0].image`), `morpheus.yaml` for
    /// the whole file.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ProjectError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ProjectError {
        ProjectError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `morpheus.yaml`, as written (see [`Project::from_yaml`] for the validated form).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project's name: a DNS label.
    pub name: String,
    /// The template whose defaults fill what the file leaves out.
    pub template: TemplateName,
    /// A published image to run.
    #[serde(default)]
    pub image: Option<String>,
    /// Or: an image to build and push first.
    #[serde(default)]
    pub build: Option<BuildSection>,
    /// The main service's resources.
    #[serde(default)]
    pub resources: ResourcesConfig,
    /// Environment of the main service.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Ports of the main service; the template's HTTP port when absent.
    #[serde(default)]
    pub ports: Option<Vec<PortConfig>>,
    /// Sidecars in the same deployment.
    #[serde(default)]
    pub sidecars: SidecarsConfig,
    /// The most the project pays per block for each service.
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
    /// Provider requirements.
    #[serde(default)]
    pub placement: Option<PlacementConfig>,
}

/// `build`: what the deploy workflow builds and where it pushes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// The build context, relative to `morpheus.yaml`.
    pub context: String,
    /// The Dockerfile in the context; `Dockerfile` when absent.
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// The image reference the build is pushed to, and the SDL runs.
    pub tag: String,
    /// The command the built image starts with (`sh -c`), replacing the framework's
    /// default (`npm start`, `node server.js`); required for Python projects, which
    /// have no conventional one. Ignored for a project with its own Dockerfile.
    #[serde(default)]
    pub start: Option<String>,
}

/// `resources` of a service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Cores (`0.5`, `2`).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory (`512Mi`, `4Gi`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Root volume (`10Gi`).
    #[serde(default)]
    pub storage: Option<String>,
    /// GPU; `units: 0` turns a template's GPU off.
    #[serde(default)]
    pub gpu: Option<GpuConfig>,
}

/// `resources.gpu`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// How many GPUs.
    pub units: u32,
    /// Which model (`rtx4090`, `a100`, `h100`); the template's or `rtx4090` when absent.
    #[serde(default)]
    pub model: Option<String>,
}

/// One port of the main service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The container port.
    pub port: u32,
    /// The port seen from outside; `80` is served by the provider's HTTP ingress.
    #[serde(default, rename = "as")]
    pub external_port: Option<u32>,
    /// Reachable from outside the provider (default true).
    #[serde(default)]
    pub global: Option<bool>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub proto: Option<String>,
    /// Host names the ingress accepts.
    #[serde(default)]
    pub accept: Option<Vec<String>>,
}

/// `sidecars`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarsConfig {
    /// PostgreSQL on 5432, its data under `/data/postgres`.
    #[serde(default)]
    pub postgres: Option<PostgresSidecarConfig>,
    /// Vector on 8686 (its API), its data under `/data/vector`.
    #[serde(default)]
    pub vector: Option<VectorSidecarConfig>,
    /// Any other container.
    #[serde(default)]
    pub custom: Vec<CustomSidecarConfig>,
}

/// `sidecars.postgres`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSidecarConfig {
    /// The password of the `morpheus` role (plain, or `sealed:v1:…`).
    pub password: String,
    /// The image; `postgres:16-alpine` when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Its resources; 0.5 CPU, 512Mi, 10Gi of `/data` when absent.
    #[serde(default)]
    pub resources: ResourcesConfig,
}

/// `sidecars.vector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorSidecarConfig {
    /// The image; `timberio/vector:0.43.1-alpine` when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Its resources; 0.25 CPU, 256Mi, 1Gi of `/data` when absent.
    #[serde(default)]
    pub resources: ResourcesConfig,
}

/// One custom sidecar.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSidecarConfig {
    /// Its service name: a DNS label other than `app`, `postgres`, `vector`.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The port it serves to the main service, if any.
    #[serde(default)]
    pub port: Option<u32>,
    /// Its environment.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Its resources: `cpu` and `memory` are required, storage defaults to 1Gi.
    pub resources: ResourcesConfig,
}

/// `pricing`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// `uakt` or `uact`.
    pub denom: String,
    /// The most per block, for each service.
    pub amount: u64,
}

/// `placement`: which providers may bid.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// Required provider attributes (`region: us-west`).
    #[serde(default)]
    pub attributes: IndexMap<String, String>,
    /// Auditors, one of whom must have signed the provider's attributes.
    #[serde(default)]
    pub signed_by_any_of: Vec<String>,
    /// Auditors who all must have signed.
    #[serde(default)]
    pub signed_by_all_of: Vec<String>,
}

/// Resources after template defaults, checked against the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceResources {
    /// Cores.
    pub cpu: f64,
    /// Memory as written (`4Gi`).
    pub memory: String,
    /// Storage as written (`10Gi`).
    pub storage: String,
    /// GPUs and model, if any.
    pub gpu: Option<(u32, String)>,
}

/// A validated project: `morpheus.yaml` with the template's defaults applied and every
/// limit checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The configuration as written.
    pub config: ProjectConfig,
    /// The image the SDL runs (`image`, or `build.tag`).
    pub image: String,
    /// The main service's resources.
    pub resources: ServiceResources,
    /// The main service's ports.
    pub ports: Vec<PortConfig>,
    /// The sidecars' resources.
    pub sidecar_resources: SidecarResources,
}

impl Project {
    /// Reads and validates `morpheus.yaml`.
    ///
    /// ```
    /// use morpheus_workflows::akash::project::Project;
    /// let error = Project::from_yaml("name: a\ntemplate: website\nimage: nginx\nresources: {cpu: 64}\n")
    ///     .unwrap_err();
    /// assert_eq!(error.to_string(), "resources.cpu: 64 is above the limit 32");
    /// ```
    pub fn from_yaml(text: &str) -> Result<Project, ProjectError> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let config: ProjectConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let path = error.path().to_string();
                let field = if path == "." {
                    "morpheus.yaml".to_string()
                } else {
                    path
                };
                let message = yaml_error_message(&field, &error.inner().to_string());
                ProjectError::new(field, message)
            })?;
        Project::validate(config)
    }

    /// Validates a configuration and applies its template's defaults.
    pub fn validate(config: ProjectConfig) -> Result<Project, ProjectError> {
        check_dns_label("name", &config.name)?;
        let image = match (&config.image, &config.build) {
            (Some(_), Some(_)) => {
                return Err(ProjectError::new(
                    "image",
                    "give either image or a build section, not both",
                ))
            }
            (None, None) => {
                return Err(ProjectError::new(
                    "image",
                    "required (or a build section that names its tag)",
                ))
            }
            (Some(image), None) => {
                check_not_blank("image", image)?;
                image.clone()
            }
            (None, Some(build)) => {
                check_not_blank("build.context", &build.context)?;
                check_not_blank("build.tag", &build.tag)?;
                if let Some(start) = &build.start {
                    check_not_blank("build.start", start)?;
                    if start.contains(['\n', '\r']) {
                        return Err(ProjectError::new(
                            "build.start",
                            "must be one line (chain commands with && or put them in a script)",
                        ));
                    }
                }
                build.tag.clone()
            }
        };
        let template = template(config.template);
        let resources = resolve_resources(
            "resources",
            &config.resources,
            Defaults {
                cpu: template.cpu,
                memory: template.memory,
                storage: template.storage,
                gpu: template.gpu.map(|gpu| (gpu.units, gpu.model)),
                required_because: "the custom template",
            },
        )?;
        check_env("env", &config.env)?;
        let ports = match &config.ports {
            Some(ports) => ports.clone(),
            None => template
                .http_port
                .map(|port| PortConfig {
                    port,
                    external_port: Some(80),
                    global: None,
                    proto: None,
                    accept: None,
                })
                .into_iter()
                .collect(),
        };
        check_ports(&ports)?;
        let sidecar_resources = check_sidecars(&config.sidecars)?;
        for (key, _) in sidecar_env(&config.sidecars) {
            if config.env.contains_key(&key) {
                return Err(ProjectError::new(
                    format!("env.{key}"),
                    "is set by a sidecar; leave it out",
                ));
            }
        }
        if let Some(pricing) = &config.pricing {
            if !matches!(pricing.denom.as_str(), "uakt" | "uact") {
                return Err(ProjectError::new(
                    "pricing.denom",
                    format!("{:?} is not uakt or uact", pricing.denom),
                ));
            }
            if pricing.amount == 0 {
                return Err(ProjectError::new("pricing.amount", "must be above 0"));
            }
        }
        Ok(Project {
            config,
            image,
            resources,
            ports,
            sidecar_resources,
        })
    }
}

/// What a service falls back to when its `resources` leave something out.
pub(crate) struct Defaults {
    pub cpu: Option<f64>,
    pub memory: Option<&'static str>,
    pub storage: &'static str,
    pub gpu: Option<(u32, String)>,
    /// Why a missing `cpu` or `memory` is an error ("the custom template").
    pub required_because: &'static str,
}

/// Applies defaults and checks every limit of the table.
pub(crate) fn resolve_resources(
    field: &str,
    resources: &ResourcesConfig,
    defaults: Defaults,
) -> Result<ServiceResources, ProjectError> {
    let cpu = resources.cpu.or(defaults.cpu).ok_or_else(|| {
        ProjectError::new(
            format!("{field}.cpu"),
            format!("required for {}", defaults.required_because),
        )
    })?;
    if !cpu.is_finite() || cpu <= 0.0 {
        return Err(ProjectError::new(
            format!("{field}.cpu"),
            format!("{cpu} must be above 0"),
        ));
    }
    if cpu > LIMITS.cpu_max {
        return Err(ProjectError::new(
            format!("{field}.cpu"),
            format!("{cpu} is above the limit {}", LIMITS.cpu_max),
        ));
    }
    // Akash counts CPU in millicores.
    if (cpu * 1000.0).fract() != 0.0 {
        return Err(ProjectError::new(
            format!("{field}.cpu"),
            format!("{cpu} is finer than a millicore (0.001)"),
        ));
    }
    let memory = match (&resources.memory, defaults.memory) {
        (Some(memory), _) => memory.clone(),
        (None, Some(memory)) => memory.to_string(),
        (None, None) => {
            return Err(ProjectError::new(
                format!("{field}.memory"),
                format!("required for {}", defaults.required_because),
            ))
        }
    };
    check_size(
        &format!("{field}.memory"),
        &memory,
        LIMITS.memory.max,
        LIMITS.memory.max_bytes,
    )?;
    let storage = resources
        .storage
        .clone()
        .unwrap_or_else(|| defaults.storage.to_string());
    check_size(
        &format!("{field}.storage"),
        &storage,
        LIMITS.storage.max,
        LIMITS.storage.max_bytes,
    )?;
    let gpu = match &resources.gpu {
        Some(gpu) if gpu.units == 0 => None,
        Some(gpu) => {
            if gpu.units > LIMITS.gpu_max_units {
                return Err(ProjectError::new(
                    format!("{field}.gpu.units"),
                    format!("{} is above the limit {}", gpu.units, LIMITS.gpu_max_units),
                ));
            }
            let model = gpu
                .model
                .clone()
                .or_else(|| defaults.gpu.as_ref().map(|(_, model)| model.clone()))
                .unwrap_or_else(|| LIMITS.gpu_default.1.to_string());
            let valid_model = !model.is_empty()
                && model
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !valid_model {
                return Err(ProjectError::new(
                    format!("{field}.gpu.model"),
                    format!("{model:?} is not a model name such as rtx4090 or h100"),
                ));
            }
            Some((gpu.units, model))
        }
        None => defaults.gpu,
    };
    Ok(ServiceResources {
        cpu,
        memory,
        storage,
        gpu,
    })
}

fn check_size(field: &str, size: &str, max: &str, max_bytes: u64) -> Result<(), ProjectError> {
    let bytes = parse_size(size).ok_or_else(|| {
        ProjectError::new(
            field,
            format!("{size:?} is not a size such as 512Mi, 4Gi or 1Ti"),
        )
    })?;
    if bytes > max_bytes {
        return Err(ProjectError::new(
            field,
            format!("{size} is above the limit {max}"),
        ));
    }
    Ok(())
}

fn check_not_blank(field: &str, value: &str) -> Result<(), ProjectError> {
    if value.trim().is_empty() {
        return Err(ProjectError::new(field, "must not be empty"));
    }
    Ok(())
}

/// A lowercase DNS label: Akash service names and Kubernetes objects need one.
fn check_dns_label(field: &str, name: &str) -> Result<(), ProjectError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(ProjectError::new(
            field,
            format!("{name:?} is not a lowercase DNS label (a-z, 0-9, '-', at most 63)"),
        ));
    }
    Ok(())
}

fn check_env(field: &str, env: &IndexMap<String, String>) -> Result<(), ProjectError> {
    for key in env.keys() {
        let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ProjectError::new(
                format!("{field}.{key}"),
                "is not an environment variable name (letters, digits, '_')",
            ));
        }
    }
    Ok(())
}

fn check_port(field: &str, port: u32) -> Result<(), ProjectError> {
    if !(1..=65535).contains(&port) {
        return Err(ProjectError::new(
            field,
            format!("{port} is not a port (1-65535)"),
        ));
    }
    Ok(())
}

fn check_ports(ports: &[PortConfig]) -> Result<(), ProjectError> {
    let mut seen = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        check_port(&format!("ports[{index}].port"), port.port)?;
        if let Some(external) = port.external_port {
            check_port(&format!("ports[{index}].as"), external)?;
        }
        if let Some(proto) = &port.proto {
            if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp") {
                return Err(ProjectError::new(
                    format!("ports[{index}].proto"),
                    format!("{proto:?} is not tcp or udp"),
                ));
            }
        }
        let key = (
            port.port,
            port.proto.clone().unwrap_or_default().to_ascii_lowercase(),
        );
        if seen.contains(&key) {
            return Err(ProjectError::new(
                format!("ports[{index}].port"),
                format!("{} is listed twice", port.port),
            ));
        }
        seen.push(key);
    }
    Ok(())
}

/// Resources of the sidecars, in the order of [`SidecarsConfig`]: PostgreSQL, Vector,
/// then the custom ones.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarResources {
    /// PostgreSQL's.
    pub postgres: Option<ServiceResources>,
    /// Vector's.
    pub vector: Option<ServiceResources>,
    /// Each custom sidecar's, in the file's order.
    pub custom: Vec<ServiceResources>,
}

fn check_sidecars(sidecars: &SidecarsConfig) -> Result<SidecarResources, ProjectError> {
    let postgres = match &sidecars.postgres {
        Some(postgres) => {
            check_not_blank("sidecars.postgres.password", &postgres.password)?;
            if let Some(image) = &postgres.image {
                check_not_blank("sidecars.postgres.image", image)?;
            }
            Some(resolve_resources(
                "sidecars.postgres.resources",
                &postgres.resources,
                Defaults {
                    cpu: Some(0.5),
                    memory: Some("512Mi"),
                    storage: "10Gi",
                    gpu: None,
                    required_because: "the postgres sidecar",
                },
            )?)
        }
        None => None,
    };
    let vector = match &sidecars.vector {
        Some(vector) => {
            if let Some(image) = &vector.image {
                check_not_blank("sidecars.vector.image", image)?;
            }
            Some(resolve_resources(
                "sidecars.vector.resources",
                &vector.resources,
                Defaults {
                    cpu: Some(0.25),
                    memory: Some("256Mi"),
                    storage: "1Gi",
                    gpu: None,
                    required_because: "the vector sidecar",
                },
            )?)
        }
        None => None,
    };
    let mut custom_resources = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (index, custom) in sidecars.custom.iter().enumerate() {
        let field = format!("sidecars.custom[{index}]");
        check_dns_label(&format!("{field}.name"), &custom.name)?;
        if RESERVED_SERVICE_NAMES.contains(&custom.name.as_str()) {
            return Err(ProjectError::new(
                format!("{field}.name"),
                format!("{:?} is taken by a built-in service", custom.name),
            ));
        }
        if names.contains(&custom.name.as_str()) {
            return Err(ProjectError::new(
                format!("{field}.name"),
                format!("{:?} is used twice", custom.name),
            ));
        }
        names.push(&custom.name);
        check_not_blank(&format!("{field}.image"), &custom.image)?;
        if let Some(port) = custom.port {
            check_port(&format!("{field}.port"), port)?;
        }
        check_env(&format!("{field}.env"), &custom.env)?;
        custom_resources.push(resolve_resources(
            &format!("{field}.resources"),
            &custom.resources,
            Defaults {
                cpu: None,
                memory: None,
                storage: "1Gi",
                gpu: None,
                required_because: "a custom sidecar",
            },
        )?);
    }
    Ok(SidecarResources {
        postgres,
        vector,
        custom: custom_resources,
    })
}

/// Whether an env value is a sealed secret (kept sealed until the manifest upload).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name: demo\ntemplate: website\nimage: nginx:1.27\n";

    fn error_of(extra: &str) -> String {
        Project::from_yaml(&format!("{BASE}{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn each_limit_has_its_own_message() {
        let table = [
            ("resources: {cpu: 64}\n", "resources.cpu: 64 is above the limit 32"),
            ("resources: {cpu: 0}\n", "resources.cpu: 0 must be above 0"),
            ("resources: {cpu: 0.0005}\n", "resources.cpu: 0.0005 is finer than a millicore (0.001)"),
            ("resources: {memory: 128Gi}\n", "resources.memory: 128Gi is above the limit 64Gi"),
            ("resources: {memory: lots}\n", "resources.memory: \"lots\" is not a size such as 512Mi, 4Gi or 1Ti"),
            ("resources: {storage: 2Ti}\n", "resources.storage: 2Ti is above the limit 1Ti"),
            ("resources: {gpu: {units: 9, model: h100}}\n", "resources.gpu.units: 9 is above the limit 8"),
            ("resources: {gpu: {units: 1, model: H-100}}\n", "resources.gpu.model: \"H-100\" is not a model name such as rtx4090 or h100"),
            (
                "sidecars:\n  custom:\n  - {name: big, image: x, resources: {cpu: 33, memory: 1Gi}}\n",
                "sidecars.custom[0].resources.cpu: 33 is above the limit 32",
            ),
            (
                "sidecars:\n  custom:\n  - {name: big, image: x, resources: {cpu: 1}}\n",
                "sidecars.custom[0].resources.memory: required for a custom sidecar",
            ),
            (
                "sidecars: {postgres: {password: p, resources: {memory: 65Gi}}}\n",
                "sidecars.postgres.resources.memory: 65Gi is above the limit 64Gi",
            ),
            (
                "sidecars: {vector: {resources: {storage: 1.5Ti}}}\n",
                "sidecars.vector.resources.storage: 1.5Ti is above the limit 1Ti",
            ),
        ];
        for (extra, expected) in table {
            assert_eq!(error_of(extra), expected, "{extra}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let project = Project::from_yaml(&format!(
            "{BASE}resources: {{cpu: 32, memory: 64Gi, storage: 1Ti, gpu: {{units: 8, model: h100}}}}\n"
        ))
        .unwrap();
        assert_eq!(project.resources.cpu, 32.0);
        assert_eq!(project.resources.gpu, Some((8, "h100".to_string())));
    }

    #[test]
    fn bad_configuration_names_the_field_in_one_line() {
        let table = [
            ("colour: red\n", "colour: unknown field `colour`"),
            ("resources: {cpu: lots}\n", "resources.cpu: invalid type: string \"lots\""),
            ("env: {PORTS: [8000]}\n", "env.PORTS: invalid type: sequence"),
            ("env: {1BAD: x}\n", "env.1BAD: is not an environment variable name"),
            ("ports: [{port: 0}]\n", "ports[0].port: 0 is not a port (1-65535)"),
            ("ports: [{port: 80}, {port: 80}]\n", "ports[1].port: 80 is listed twice"),
            ("ports: [{port: 80, proto: sctp}]\n", "ports[0].proto: \"sctp\" is not tcp or udp"),
            ("build: {context: ., tag: x}\n", "image: give either image or a build section, not both"),
            ("sidecars: {postgres: {password: ''}}\n", "sidecars.postgres.password: must not be empty"),
            ("sidecars: {postgres: {}}\n", "sidecars.postgres: missing field `password`"),
            (
                "sidecars: {custom: [{name: postgres, image: x, resources: {cpu: 1, memory: 1Gi}}]}\n",
                "sidecars.custom[0].name: \"postgres\" is taken by a built-in service",
            ),
            ("pricing: {denom: usd, amount: 1}\n", "pricing.denom: \"usd\" is not uakt or uact"),
        ];
        for (extra, expected) in table {
            let error = error_of(extra);
            assert!(error.starts_with(expected), "{extra}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let table = [
            (
                "name: Demo\ntemplate: website\nimage: x\n",
                "name: \"Demo\" is not a lowercase DNS label",
            ),
            (
                "name: demo\ntemplate: blog\nimage: x\n",
                "template: unknown variant `blog`",
            ),
            (
                "name: demo\ntemplate: website\n",
                "image: required (or a build section that names its tag)",
            ),
            (
                "name: demo\ntemplate: custom\nimage: x\n",
                "resources.cpu: required for the custom template",
            ),
            (
                "name: demo\ntemplate: custom\nimage: x\nresources: {cpu: 1}\n",
                "resources.memory: required for the custom template",
            ),
        ];
        for (text, expected) in table {
            let error = Project::from_yaml(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text}: {error}");
        }
    }

    #[test]
    fn templates_fill_what_the_file_leaves_out() {
        // (template, cpu, memory, storage, gpu, default port)
        let table = [
            (
                "ai-agent",
                2.0,
                "4Gi",
                "10Gi",
                Some((1, "rtx4090")),
                Some(8000),
            ),
            ("mcp-server", 0.5, "512Mi", "10Gi", None, Some(8080)),
            ("website", 0.5, "256Mi", "10Gi", None, Some(3000)),
        ];
        for (name, cpu, memory, storage, gpu, port) in table {
            let project =
                Project::from_yaml(&format!("name: demo\ntemplate: {name}\nimage: x\n")).unwrap();
            let resources = &project.resources;
            assert_eq!(resources.cpu, cpu, "{name}");
            assert_eq!(resources.memory, memory, "{name}");
            assert_eq!(resources.storage, storage, "{name}");
            assert_eq!(
                resources
                    .gpu
                    .as_ref()
                    .map(|(units, model)| (*units, model.as_str())),
                gpu,
                "{name}"
            );
            assert_eq!(project.ports.first().map(|port| port.port), port, "{name}");
        }
        let custom = Project::from_yaml(
            "name: demo\ntemplate: custom\nimage: x\nresources: {cpu: 1, memory: 1Gi}\n",
        )
        .unwrap();
        assert!(custom.ports.is_empty());
        assert_eq!(custom.resources.storage, "10Gi");
        let no_gpu = Project::from_yaml(
            "name: demo\ntemplate: ai-agent\nimage: x\nresources: {gpu: {units: 0}}\n",
        )
        .unwrap();
        assert_eq!(no_gpu.resources.gpu, None);
    }

    #[test]
    fn plain_scalars_in_env_are_text() {
        let project =
            Project::from_yaml(&format!("{BASE}env: {{PORT: 8000, DEBUG: true}}\n")).unwrap();
        assert_eq!(project.config.env["PORT"], "8000");
        assert_eq!(project.config.env["DEBUG"], "true");
    }

    #[test]
    fn env_set_by_a_sidecar_is_refused() {
        let error = error_of("env: {DATABASE_URL: x}\nsidecars: {postgres: {password: p}}\n");
        assert_eq!(error, "env.DATABASE_URL: is set by a sidecar; leave it out");
    }

    #[test]
    fn sealed_values_are_kept_as_written() {
        let project = Project::from_yaml(&format!(
            "{BASE}env: {{API_KEY: 'sealed:v1:QUJD', MODE: plain}}\n"
        ))
        .unwrap();
        assert_eq!(project.config.env["API_KEY"], "sealed:v1:QUJD");
        assert!(is_sealed(&project.config.env["API_KEY"]));
        assert!(!is_sealed(&project.config.env["MODE"]));
    }

    #[test]
    fn a_build_section_gives_the_image_its_tag() {
        let project = Project::from_yaml(
            "name: demo\ntemplate: website\nbuild: {context: ., tag: 'ghcr.io/acme/site:1'}\n",
        )
        .unwrap();
        assert_eq!(project.image, "ghcr.io/acme/site:1");
    }

    #[test]
    fn build_start_is_one_line_and_not_empty() {
        let with_start = |start: &str| {
            Project::from_yaml(&format!(
                "name: demo\ntemplate: website\nbuild: {{context: ., tag: x, start: {start}}}\n"
            ))
        };
        let project = with_start("'uvicorn app:app --host 0.0.0.0'").unwrap();
        assert_eq!(
            project.config.build.unwrap().start.as_deref(),
            Some("uvicorn app:app --host 0.0.0.0")
        );
        let table = [
            ("''", "build.start: must not be empty"),
            (
                "\"a\\nb\"",
                "build.start: must be one line (chain commands with && or put them in a script)",
            ),
        ];
        for (start, expected) in table {
            assert_eq!(
                with_start(start).unwrap_err().to_string(),
                expected,
                "{start}"
            );
        }
    }
}
