//! Validation of deployment specs. Pure functions (plus reading the source directory's
//! metadata): a bad spec is refused with a [`SpecError`] that names the field, before
//! anything is written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};

use super::model::{DeploymentSpec, Resources, Target};
use super::secrets::check_sealed_env;

/// Port used when a spec does not name one.
pub const DEFAULT_RUNTIME_PORT: u16 = 3000;

/// Lowest allowed runtime port (unprivileged ports only).
pub const MIN_RUNTIME_PORT: i64 = 1024;

/// Base image used when a spec does not name one.
pub const DEFAULT_IMAGE: &str = "node:22-bookworm-slim";

/// Docker refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// Most cores a spec may ask for.
const MAX_CPUS: f64 = 1024.0;

/// A spec that cannot be accepted, naming the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field (`source_dir`, `runtime_port`, `env`, …).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    /// An error about `field`.
    pub fn new(field: &'static str, message: impl fmt::Display) -> Self {
        Self {
            field,
            message: message.to_string(),
        }
    }
}

/// What an operator asks for with `deploy spec set` (before validation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecRequest {
    /// Agent id.
    pub agent_id: String,
    /// Name.
    pub name: String,
    /// Source directory.
    pub source_dir: String,
    /// Install command.
    pub install_command: Option<String>,
    /// Build command (required; `true` for none).
    pub build_command: String,
    /// Start command (required).
    pub start_command: String,
    /// Port (default 3000).
    pub runtime_port: Option<i64>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Base image (default [`DEFAULT_IMAGE`]).
    pub image: Option<String>,
    /// Default target (default preview).
    pub target_default: Option<Target>,
    /// CPU limit in cores.
    pub cpu: Option<f64>,
    /// Memory limit: bytes, or with a unit (`512m`, `1g`, `256MiB`).
    pub memory: Option<String>,
}

impl SpecRequest {
    /// Validates the request against the allowed source roots and builds the spec.
    /// `id` and `created_at` are kept from the spec being replaced, if any.
    pub fn validate(
        &self,
        allowed_roots: &[PathBuf],
        id: String,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DeploymentSpec, SpecError> {
        check_agent_id(&self.agent_id)?;
        let name = required("name", &self.name)?;
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(SpecError::new(
                "name",
                "must be at most 100 printable characters",
            ));
        }
        let source_dir = check_source_dir(&self.source_dir, allowed_roots)?;
        let install_command = match &self.install_command {
            None => None,
            Some(command) => Some(required("install_command", command)?),
        };
        let build_command = required("build_command", &self.build_command)?;
        let start_command = required("start_command", &self.start_command)?;
        let runtime_port = check_port(self.runtime_port)?;
        let env = parse_env(&self.env)?;
        check_sealed_env(&env)?;
        let image = match &self.image {
            None => DEFAULT_IMAGE.to_owned(),
            Some(image) => check_image(image)?,
        };
        let resources = Resources {
            cpu: self.cpu.map(check_cpu).transpose()?,
            memory: self.memory.as_deref().map(parse_memory).transpose()?,
        };
        let spec = DeploymentSpec {
            id,
            agent_id: self.agent_id.clone(),
            name,
            source_dir: source_dir.display().to_string(),
            install_command,
            build_command,
            start_command,
            runtime_port,
            env,
            image,
            target_default: self.target_default.unwrap_or_default(),
            resources,
            created_at,
            updated_at: now,
        };
        Ok(spec)
    }
}

/// Checks a spec's shape (everything but the filesystem), e.g. one embedded in a run's
/// input.
pub fn check_shape(spec: &DeploymentSpec) -> Result<(), SpecError> {
    check_agent_id(&spec.agent_id)?;
    required("name", &spec.name)?;
    check_lexically(&spec.source_dir)?;
    if let Some(install) = &spec.install_command {
        required("install_command", install)?;
    }
    required("build_command", &spec.build_command)?;
    required("start_command", &spec.start_command)?;
    check_port(Some(i64::from(spec.runtime_port)))?;
    for key in spec.env.keys() {
        check_env_key(key)?;
    }
    check_sealed_env(&spec.env)?;
    check_image(&spec.image)?;
    if let Some(cpu) = spec.resources.cpu {
        check_cpu(cpu)?;
    }
    if let Some(memory) = spec.resources.memory {
        if memory < MIN_MEMORY_BYTES {
            return Err(SpecError::new("memory", "must be at least 6 MiB"));
        }
    }
    Ok(())
}

/// An agent id: 1–63 characters `[A-Za-z0-9_.-]`, starting with a letter or digit.
/// It names a directory, a queue and container labels, so nothing else is allowed.
pub fn check_agent_id(agent_id: &str) -> Result<(), SpecError> {
    let valid = agent_id.len() <= 63
        && agent_id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && agent_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(SpecError::new(
            "agent_id",
            format!("'{agent_id}' must be 1-63 characters of [A-Za-z0-9_.-], starting with a letter or digit"),
        ))
    }
}

fn required(field: &'static str, value: &str) -> Result<String, SpecError> {
    if value.trim().is_empty() {
        return Err(SpecError::new(field, "is required and must not be empty"));
    }
    if value.contains('\0') {
        return Err(SpecError::new(field, "must not contain NUL characters"));
    }
    Ok(value.to_owned())
}

/// Absolute, and without `.` or `..` components.
fn check_lexically(source_dir: &str) -> Result<&Path, SpecError> {
    if source_dir.trim().is_empty() {
        return Err(SpecError::new("source_dir", "is required"));
    }
    let path = Path::new(source_dir);
    if !path.is_absolute() {
        return Err(SpecError::new(
            "source_dir",
            format!("'{source_dir}' must be an absolute path"),
        ));
    }
    // `Path::components` drops `.` except at the start, so look at the text as well.
    let has_dots = path.components().any(|c| c == Component::ParentDir)
        || source_dir
            .split('/')
            .any(|part| part == ".." || part == ".");
    if has_dots {
        return Err(SpecError::new(
            "source_dir",
            format!("'{source_dir}' must not contain '.' or '..' components"),
        ));
    }
    Ok(path)
}

/// Checks that `source_dir` is an absolute path without `..`, an existing directory,
/// and (after resolving symlinks, so a link cannot smuggle it out) inside one of
/// `allowed_roots`. Returns the resolved path.
pub fn check_source_dir(source_dir: &str, allowed_roots: &[PathBuf]) -> Result<PathBuf, SpecError> {
    let path = check_lexically(source_dir)?;
    if allowed_roots.is_empty() {
        return Err(SpecError::new(
            "source_dir",
            "no allowed source roots are configured (--allowed-root or MORPHEUS_DEPLOY_ALLOWED_ROOTS)",
        ));
    }
    let resolved = path.canonicalize().map_err(|error| {
        SpecError::new(
            "source_dir",
            format!("'{source_dir}' cannot be read: {error}"),
        )
    })?;
    if !resolved.is_dir() {
        return Err(SpecError::new(
            "source_dir",
            format!("'{source_dir}' is not a directory"),
        ));
    }
    let inside = allowed_roots.iter().any(|root| {
        root.canonicalize()
            .is_ok_and(|root| resolved.starts_with(&root))
    });
    if !inside {
        let roots: Vec<String> = allowed_roots
            .iter()
            .map(|root| root.display().to_string())
            .collect();
        return Err(SpecError::new(
            "source_dir",
            format!(
                "'{source_dir}' is outside the allowed roots ({})",
                roots.join(", ")
            ),
        ));
    }
    Ok(resolved)
}

fn check_port(port: Option<i64>) -> Result<u16, SpecError> {
    let Some(port) = port else {
        return Ok(DEFAULT_RUNTIME_PORT);
    };
    if (MIN_RUNTIME_PORT..=i64::from(u16::MAX)).contains(&port) {
        Ok(port as u16)
    } else {
        Err(SpecError::new(
            "runtime_port",
            format!("{port} is out of range (allowed {MIN_RUNTIME_PORT}-65535)"),
        ))
    }
}

fn check_env_key(key: &str) -> Result<(), SpecError> {
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(SpecError::new(
            "env",
            format!("'{key}' is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ))
    }
}

/// Parses `KEY=VALUE` pairs; a key given twice is refused (which one was meant?).
pub fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>, SpecError> {
    let mut env = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(SpecError::new("env", format!("'{pair}' is not KEY=VALUE")));
        };
        check_env_key(key)?;
        if value.contains('\0') {
            return Err(SpecError::new(
                "env",
                format!("the value of {key} contains a NUL character"),
            ));
        }
        if env.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(SpecError::new("env", format!("{key} is given twice")));
        }
    }
    Ok(env)
}

fn check_image(image: &str) -> Result<String, SpecError> {
    if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::new(
            "image",
            format!("'{image}' is not an image reference"),
        ));
    }
    Ok(image.to_owned())
}

fn check_cpu(cpu: f64) -> Result<f64, SpecError> {
    if cpu.is_finite() && cpu > 0.0 && cpu <= MAX_CPUS {
        Ok(cpu)
    } else {
        Err(SpecError::new(
            "cpu",
            format!("{cpu} must be a number of cores above 0"),
        ))
    }
}

/// Parses a memory size: plain bytes, or a number with `k`, `m`, `g` (powers of 1024;
/// `kb`, `mib`, … accepted too).
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let trimmed = text.trim().to_ascii_lowercase();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| {
        SpecError::new(
            "memory",
            format!("'{text}' is not a size (e.g. 512m, 1g, 268435456)"),
        )
    })?;
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(SpecError::new(
                "memory",
                format!("'{text}' has an unknown unit (use k, m or g)"),
            ))
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| SpecError::new("memory", format!("'{text}' is too large")))?;
    if bytes < MIN_MEMORY_BYTES {
        return Err(SpecError::new(
            "memory",
            format!("'{text}' is below the 6 MiB Docker accepts"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        root: tempfile::TempDir,
        site: PathBuf,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let site = root.path().join("site");
        std::fs::create_dir(&site).unwrap();
        Fixture { root, site }
    }

    fn request(source_dir: &Path) -> SpecRequest {
        SpecRequest {
            agent_id: "agent-1".into(),
            name: "Site".into(),
            source_dir: source_dir.display().to_string(),
            build_command: "true".into(),
            start_command: "httpd -f -p 3000".into(),
            ..SpecRequest::default()
        }
    }

    fn validate(request: &SpecRequest, roots: &[PathBuf]) -> Result<DeploymentSpec, SpecError> {
        let now = Utc::now();
        request.validate(roots, "id".into(), now, now)
    }

    fn field_of(result: Result<DeploymentSpec, SpecError>) -> &'static str {
        result.expect_err("should be refused").field
    }

    #[test]
    fn a_minimal_spec_gets_the_defaults() {
        let f = fixture();
        let spec = validate(&request(&f.site), &[f.root.path().to_owned()]).unwrap();
        assert_eq!(spec.runtime_port, 3000);
        assert_eq!(spec.image, DEFAULT_IMAGE);
        assert_eq!(spec.target_default, Target::Preview);
        assert_eq!(spec.install_command, None);
        assert_eq!(
            spec.source_dir,
            f.site.canonicalize().unwrap().display().to_string()
        );
        check_shape(&spec).unwrap();
    }

    #[test]
    fn source_dir_must_be_absolute_without_dots_and_inside_an_allowed_root() {
        let f = fixture();
        let roots = [f.site.clone()];
        let mut relative = request(&f.site);
        relative.source_dir = "site".into();
        assert_eq!(field_of(validate(&relative, &roots)), "source_dir");

        let mut traversal = request(&f.site);
        traversal.source_dir = format!("{}/../site", f.site.display());
        let error = validate(&traversal, &roots).unwrap_err();
        assert_eq!(error.field, "source_dir");
        assert!(error.message.contains(".."), "{error}");

        let mut dotted = request(&f.site);
        dotted.source_dir = format!("{}/./x", f.site.display());
        assert_eq!(field_of(validate(&dotted, &roots)), "source_dir");

        let outside = request(f.root.path());
        let error = validate(&outside, &roots).unwrap_err();
        assert!(
            error.message.contains("outside the allowed roots"),
            "{error}"
        );

        let missing = request(&f.site.join("nope"));
        assert_eq!(field_of(validate(&missing, &roots)), "source_dir");

        let file = f.site.join("file");
        std::fs::write(&file, "x").unwrap();
        let error = validate(&request(&file), &roots).unwrap_err();
        assert!(error.message.contains("not a directory"), "{error}");

        let error = validate(&request(&f.site), &[]).unwrap_err();
        assert!(error.message.contains("no allowed source roots"), "{error}");
    }

    #[test]
    fn a_symlink_cannot_smuggle_source_dir_out_of_the_roots() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        let link = f.site.join("elsewhere");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let error = validate(&request(&link), std::slice::from_ref(&f.site)).unwrap_err();
        assert_eq!(error.field, "source_dir");
        assert!(
            error.message.contains("outside the allowed roots"),
            "{error}"
        );
    }

    #[test]
    fn required_commands_and_names_are_checked() {
        let f = fixture();
        let roots = [f.root.path().to_owned()];
        let mut no_build = request(&f.site);
        no_build.build_command = " ".into();
        assert_eq!(field_of(validate(&no_build, &roots)), "build_command");
        let mut no_start = request(&f.site);
        no_start.start_command = String::new();
        assert_eq!(field_of(validate(&no_start, &roots)), "start_command");
        let mut empty_install = request(&f.site);
        empty_install.install_command = Some(String::new());
        assert_eq!(
            field_of(validate(&empty_install, &roots)),
            "install_command"
        );
        let mut no_name = request(&f.site);
        no_name.name = String::new();
        assert_eq!(field_of(validate(&no_name, &roots)), "name");
        for bad in ["", "has space", "a/b", "-x", &"x".repeat(64)] {
            let mut agent = request(&f.site);
            agent.agent_id = bad.to_owned();
            assert_eq!(field_of(validate(&agent, &roots)), "agent_id", "{bad:?}");
        }
    }

    #[test]
    fn ports_must_be_unprivileged_and_in_range() {
        let f = fixture();
        let roots = [f.root.path().to_owned()];
        for port in [0, 80, 1023, 65536, -1] {
            let mut spec = request(&f.site);
            spec.runtime_port = Some(port);
            let error = validate(&spec, &roots).unwrap_err();
            assert_eq!(error.field, "runtime_port", "{port}");
            assert!(error.message.contains("1024-65535"), "{error}");
        }
        for port in [1024, 8080, 65535] {
            let mut spec = request(&f.site);
            spec.runtime_port = Some(port);
            assert_eq!(validate(&spec, &roots).unwrap().runtime_port as i64, port);
        }
    }

    #[test]
    fn env_pairs_are_parsed_and_checked() {
        let env = parse_env(&["A=1".into(), "B_2=x=y".into(), "EMPTY=".into()]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B_2"], "x=y");
        assert_eq!(env["EMPTY"], "");
        for bad in ["NOEQUALS", "1A=x", "A-B=x", "=x"] {
            assert_eq!(parse_env(&[bad.into()]).unwrap_err().field, "env", "{bad}");
        }
        let twice = parse_env(&["A=1".into(), "A=2".into()]).unwrap_err();
        assert!(twice.message.contains("twice"), "{twice}");
    }

    #[test]
    fn memory_sizes_and_cpus_are_parsed_and_bounded() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1m").unwrap_err().message.contains("6 MiB"));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("5t").unwrap_err().message.contains("unit"));
        assert_eq!(check_cpu(0.5).unwrap(), 0.5);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(check_cpu(bad).unwrap_err().field, "cpu");
        }
    }

    #[test]
    fn images_must_be_single_references() {
        assert!(check_image("morpheus-test-busybox:latest").is_ok());
        assert_eq!(check_image("").unwrap_err().field, "image");
        assert_eq!(check_image("two words").unwrap_err().field, "image");
    }
}
