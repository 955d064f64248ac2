//! The build engine's pure part: which framework a project is, the Dockerfile that
//! builds it, and the content-hash tag its image is pushed under.
//!
//! - [`detect`] reads the project's file list and the few files that tell frameworks
//!   apart ([`ProjectFiles`]) and answers a [`Framework`]. In this order:
//!   1. **A Dockerfile in the project wins**: `build.dockerfile` when set (it must be in
//!      the context), else `Dockerfile` at the context's root. Nothing is generated.
//!   2. **Next.js**: `next` in `dependencies` (or `devDependencies`) of `package.json`.
//!      With `output: 'standalone'` in `next.config.{js,mjs,cjs,ts}` the image holds only
//!      `.next/standalone`, `.next/static` and `public`, and runs `node server.js`.
//!      **Without it**, the app is built and run like any Node.js app (`next build`,
//!      then `npm start`, the whole `node_modules` in the image): it works, but the
//!      image is several times larger; set `output: 'standalone'` to slim it.
//!   3. **Node.js**: any other `package.json`. The package manager comes from the
//!      lockfile: `pnpm-lock.yaml` → pnpm, `yarn.lock` → yarn, otherwise npm. The
//!      `build` script runs when `package.json` has one; the image starts with
//!      `npm start`.
//!   4. **Python**: `[tool.poetry]` in `pyproject.toml` → poetry (main dependencies
//!      only), else `requirements.txt` → pip. Python has no conventional start
//!      command, so `build.start` is required (`uvicorn app:app --host 0.0.0.0`).
//!
//!   Anything else is a one-line [`BuildError`] naming what was looked for.
//! - [`dockerfile`] writes a multi-stage Dockerfile for a detected framework: the
//!   dependencies and the build in one stage, only what runs in the last one, under a
//!   non-root user (`node` in the Node images, `app` (uid 10001) in the Python ones).
//!   `PORT` is set to the service's port and exposed; `build.start`, when given,
//!   replaces the default start command (run by `sh -c exec …`, so it gets signals).
//! - [`content_hash`] is the build's identity: the context's tree hash (as
//!   [`snapshot::capture`](crate::deploy::snapshot::capture) computes it, with its
//!   ignore rules) plus the generated Dockerfile's text, so a new Dockerfile template
//!   rebuilds even an unchanged project. [`image_tag`] turns it into the tag the image
//!   is pushed under: `{repository}:{first 16 hex}`, whatever tag `build.tag` named.
//!
//! [`prepare`] puts them together for a directory on disk: it captures the context with
//! the snapshot code (into the artifact store, so an unchanged context is stored once),
//! reads the file list and the deciding files from that capture, and answers a
//! [`BuildPlan`]: the plain context tar, the Dockerfile, the content hash and the tag,
//! which is what `DockerExecutor::build_and_push` takes.
//!
//! ```
//! use morpheus_workflows::akash::build::{detect, dockerfile, image_tag, Framework, ProjectFiles};
//! let files = ProjectFiles::new(["package.json", "package-lock.json", "server.js"])
//!     .with_content("package.json", r#"{"scripts": {"start": "node server.js"}}"#);
//! let framework = detect(&files, None).unwrap();
//! assert!(matches!(framework, Framework::Node { .. }));
//! let text = dockerfile(&framework, 3000, None).unwrap().unwrap();
//! assert!(text.contains("RUN npm ci"));
//! assert_eq!(
//!     image_tag("127.0.0.1:5000/web:latest", &"ab".repeat(32)),
//!     "127.0.0.1:5000/web:abababababababab"
//! );
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::project::BuildSection;
use crate::deploy::snapshot::{self, SnapshotError, SnapshotLimits};

/// How many hex digits of the content hash the image tag keeps (64 bits: collisions
/// within one repository are not a concern).
pub const TAG_HASH_DIGITS: usize = 16;

/// Version of the content-hash encoding; bump it to rebuild every image.
const CONTENT_HASH_DOMAIN: &str = "morpheus-build-v1";

/// Node.js images used by the generated Dockerfiles (the LTS line, Alpine for size).
const NODE_IMAGE: &str = "node:20-alpine";

/// Python images used by the generated Dockerfiles (slim Debian: wheels for glibc).
const PYTHON_IMAGE: &str = "python:3.12-slim";

/// The files that decide the framework: their contents are read, not only their names.
pub const FILES_READ: [&str; 11] = [
    "package.json",
    "next.config.js",
    "next.config.mjs",
    "next.config.cjs",
    "next.config.ts",
    "pyproject.toml",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "requirements.txt",
];

/// What [`detect`] looks at: every path in the build context (relative, `/`-separated)
/// and the contents of those of [`FILES_READ`] that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectFiles {
    /// Relative paths of the context's files (`src/app.js`, `public/favicon.ico`).
    pub paths: BTreeSet<String>,
    /// Contents of the files that tell frameworks apart, by path.
    pub contents: BTreeMap<String, String>,
}

impl ProjectFiles {
    /// A file list without contents.
    pub fn new<I, S>(paths: I) -> ProjectFiles
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ProjectFiles {
            paths: paths.into_iter().map(Into::into).collect(),
            contents: BTreeMap::new(),
        }
    }

    /// Adds a file's contents (and its path, if it was not listed).
    pub fn with_content(mut self, path: &str, contents: &str) -> ProjectFiles {
        self.paths.insert(path.to_owned());
        self.contents.insert(path.to_owned(), contents.to_owned());
        self
    }

    fn has(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    fn has_dir(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.paths.iter().any(|path| path.starts_with(&prefix))
    }

    fn content(&self, path: &str) -> Option<&str> {
        self.contents.get(path).map(String::as_str)
    }
}

/// A Node.js package manager, chosen by the project's lockfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    /// `package-lock.json`, or no lockfile at all.
    Npm,
    /// `yarn.lock`.
    Yarn,
    /// `pnpm-lock.yaml`.
    Pnpm,
}

impl PackageManager {
    /// The lockfile this package manager writes.
    pub fn lockfile(self) -> &'static str {
        match self {
            PackageManager::Npm => "package-lock.json",
            PackageManager::Yarn => "yarn.lock",
            PackageManager::Pnpm => "pnpm-lock.yaml",
        }
    }

    /// The install command: the locked versions exactly when there is a lockfile.
    fn install(self, locked: bool) -> &'static str {
        match (self, locked) {
            (PackageManager::Npm, true) => "npm ci",
            (PackageManager::Npm, false) => "npm install",
            (PackageManager::Yarn, true) => "yarn install --frozen-lockfile",
            (PackageManager::Yarn, false) => "yarn install",
            // Corepack ships with Node and fetches the pnpm that package.json asks for.
            (PackageManager::Pnpm, true) => {
                "corepack enable pnpm && pnpm install --frozen-lockfile"
            }
            (PackageManager::Pnpm, false) => "corepack enable pnpm && pnpm install",
        }
    }

    fn run_build(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm run build",
            PackageManager::Yarn => "yarn build",
            PackageManager::Pnpm => "pnpm run build",
        }
    }
}

/// What the Node.js Dockerfiles need to know about a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProject {
    /// The package manager.
    pub package_manager: PackageManager,
    /// Whether its lockfile is in the context.
    pub locked: bool,
    /// Whether `package.json` has a `build` script.
    pub build_script: bool,
    /// Whether the project has a `public/` directory (Next.js serves it).
    pub public_dir: bool,
}

/// The Python tool that installs a project's dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonTool {
    /// `requirements.txt`, installed with pip.
    Pip,
    /// `[tool.poetry]` in `pyproject.toml`; `locked` when `poetry.lock` is there.
    Poetry {
        /// Whether `poetry.lock` is in the context.
        locked: bool,
    },
}

/// A project's framework, as [`detect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framework {
    /// The project's own Dockerfile, at this path in the context: built as it is.
    Dockerfile {
        /// Its path in the context.
        path: String,
    },
    /// Next.js (`next` in package.json).
    NextJs {
        /// The Node.js side of it.
        node: NodeProject,
        /// `output: 'standalone'` in next.config: only the standalone server ships.
        standalone: bool,
    },
    /// Any other Node.js project.
    Node {
        /// The project.
        node: NodeProject,
    },
    /// A Python project.
    Python {
        /// How its dependencies are installed.
        tool: PythonTool,
    },
}

/// Why no image can be built: one line, naming the field or the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Nothing in the context says how to build it.
    #[error("cannot tell how to build this project: found no Dockerfile, package.json, pyproject.toml with [tool.poetry], or requirements.txt in the build context; add a Dockerfile or one of those")]
    UnknownFramework,
    /// `build.dockerfile` names a file the context does not have.
    #[error("build.dockerfile: {0:?} is not in the build context")]
    MissingDockerfile(String),
    /// `package.json` is not JSON.
    #[error("package.json: not valid JSON ({0})")]
    BadPackageJson(String),
    /// A Python project without `build.start`.
    #[error("build.start: required for a Python project (the command that serves it, e.g. 'uvicorn app:app --host 0.0.0.0 --port $PORT')")]
    MissingStartCommand,
    /// The context could not be captured (see [`SnapshotError`]).
    #[error("build.context: {0}")]
    Context(#[from] SnapshotError),
}

/// Detects the framework of a build context. `configured_dockerfile` is
/// `build.dockerfile`; see the [module documentation](self) for the rules.
pub fn detect(
    files: &ProjectFiles,
    configured_dockerfile: Option<&str>,
) -> Result<Framework, BuildError> {
    if let Some(path) = configured_dockerfile {
        let path = path.trim_start_matches("./");
        if !files.has(path) {
            return Err(BuildError::MissingDockerfile(path.to_owned()));
        }
        return Ok(Framework::Dockerfile {
            path: path.to_owned(),
        });
    }
    if files.has("Dockerfile") {
        return Ok(Framework::Dockerfile {
            path: "Dockerfile".to_owned(),
        });
    }
    if files.has("package.json") {
        let text = files.content("package.json").unwrap_or("{}");
        let package: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| BuildError::BadPackageJson(error.to_string()))?;
        let depends_on = |name: &str| {
            ["dependencies", "devDependencies"]
                .iter()
                .any(|section| package[section].get(name).is_some())
        };
        let package_manager = if files.has("pnpm-lock.yaml") {
            PackageManager::Pnpm
        } else if files.has("yarn.lock") {
            PackageManager::Yarn
        } else {
            PackageManager::Npm
        };
        let node = NodeProject {
            package_manager,
            locked: files.has(package_manager.lockfile()),
            build_script: package["scripts"].get("build").is_some(),
            public_dir: files.has_dir("public"),
        };
        if depends_on("next") {
            let standalone = ["js", "mjs", "cjs", "ts"].iter().any(|extension| {
                files
                    .content(&format!("next.config.{extension}"))
                    .is_some_and(sets_standalone_output)
            });
            return Ok(Framework::NextJs { node, standalone });
        }
        return Ok(Framework::Node { node });
    }
    let poetry = files
        .content("pyproject.toml")
        .is_some_and(|text| text.lines().any(|line| line.trim() == "[tool.poetry]"));
    if poetry {
        return Ok(Framework::Python {
            tool: PythonTool::Poetry {
                locked: files.has("poetry.lock"),
            },
        });
    }
    if files.has("requirements.txt") {
        return Ok(Framework::Python {
            tool: PythonTool::Pip,
        });
    }
    Err(BuildError::UnknownFramework)
}

/// Whether a next.config sets `output: 'standalone'` (any quotes, any spacing). It
/// reads the text, not the program: a config that computes `output` is not seen.
fn sets_standalone_output(config: &str) -> bool {
    let compact: String = config.chars().filter(|c| !c.is_whitespace()).collect();
    ["'", "\"", "`"].iter().any(|quote| {
        compact.contains(&format!("output:{quote}standalone{quote}"))
            || compact.contains(&format!("\"output\":{quote}standalone{quote}"))
    })
}

/// The generated Dockerfile for `framework`, serving on `port`; `None` for a project
/// with its own Dockerfile. `start` (`build.start`) replaces the default start
/// command and is required for Python.
pub fn dockerfile(
    framework: &Framework,
    port: u32,
    start: Option<&str>,
) -> Result<Option<String>, BuildError> {
    let text = match framework {
        Framework::Dockerfile { .. } => return Ok(None),
        Framework::NextJs {
            node,
            standalone: true,
        } => next_standalone(node, port, start),
        Framework::NextJs {
            node,
            standalone: false,
        } => node_app(node, port, start, true),
        Framework::Node { node } => node_app(node, port, start, node.build_script),
        Framework::Python { tool } => {
            python_app(*tool, port, start.ok_or(BuildError::MissingStartCommand)?)
        }
    };
    Ok(Some(text))
}

/// `CMD` running a start command through the shell, `exec`ed so it is PID 1's child no
/// more and receives the container's signals.
fn shell_cmd(start: &str) -> String {
    let line = serde_json::Value::String(format!("exec {start}"));
    format!("CMD [\"sh\", \"-c\", {line}]")
}

fn node_manifests(node: &NodeProject) -> String {
    if node.locked {
        format!("package.json {}", node.package_manager.lockfile())
    } else {
        "package.json".to_owned()
    }
}

fn next_standalone(node: &NodeProject, port: u32, start: Option<&str>) -> String {
    let manager = node.package_manager;
    let public = if node.public_dir {
        "COPY --from=build --chown=node:node /app/public ./public\n"
    } else {
        ""
    };
    let cmd = start.map_or_else(|| "CMD [\"node\", \"server.js\"]".to_owned(), shell_cmd);
    format!(
        "# Generated by Morpheus: Next.js, standalone output.\n\
         FROM {NODE_IMAGE} AS build\n\
         WORKDIR /app\n\
         COPY {manifests} ./\n\
         RUN {install}\n\
         COPY . .\n\
         ENV NEXT_TELEMETRY_DISABLED=1\n\
         RUN {build}\n\
         \n\
         FROM {NODE_IMAGE}\n\
         WORKDIR /app\n\
         ENV NODE_ENV=production NEXT_TELEMETRY_DISABLED=1 HOSTNAME=0.0.0.0 PORT={port}\n\
         {public}\
         COPY --from=build --chown=node:node /app/.next/standalone ./\n\
         COPY --from=build --chown=node:node /app/.next/static ./.next/static\n\
         USER node\n\
         EXPOSE {port}\n\
         {cmd}\n",
        manifests = node_manifests(node),
        install = manager.install(node.locked),
        build = manager.run_build(),
    )
}

fn node_app(node: &NodeProject, port: u32, start: Option<&str>, build: bool) -> String {
    let manager = node.package_manager;
    let build_step = if build {
        format!("RUN {}\n", manager.run_build())
    } else {
        String::new()
    };
    let cmd = start.map_or_else(|| "CMD [\"npm\", \"start\"]".to_owned(), shell_cmd);
    format!(
        "# Generated by Morpheus: Node.js ({manager:?}).\n\
         FROM {NODE_IMAGE} AS build\n\
         WORKDIR /app\n\
         COPY {manifests} ./\n\
         RUN {install}\n\
         COPY . .\n\
         {build_step}\
         \n\
         FROM {NODE_IMAGE}\n\
         WORKDIR /app\n\
         ENV NODE_ENV=production HOSTNAME=0.0.0.0 PORT={port}\n\
         COPY --from=build --chown=node:node /app ./\n\
         USER node\n\
         EXPOSE {port}\n\
         {cmd}\n",
        manifests = node_manifests(node),
        install = manager.install(node.locked),
    )
}

fn python_app(tool: PythonTool, port: u32, start: &str) -> String {
    // Dependencies go into /opt/venv in the first stage; the last stage copies that
    // venv, not the compilers and caches that built it. Poetry itself is installed
    // with the system pip, before the venv exists, so it stays out of the image.
    let (tool_name, tool_setup, install) = match tool {
        PythonTool::Pip => (
            "pip",
            String::new(),
            "COPY requirements.txt ./\n\
             RUN pip install --no-cache-dir -r requirements.txt\n"
                .to_owned(),
        ),
        PythonTool::Poetry { locked } => {
            let manifests = if locked {
                "pyproject.toml poetry.lock"
            } else {
                "pyproject.toml"
            };
            (
                "poetry",
                "RUN pip install --no-cache-dir poetry\n".to_owned(),
                // Poetry installs into the environment VIRTUAL_ENV names.
                format!(
                    "COPY {manifests} ./\n\
                     RUN poetry install --only main --no-root --no-interaction\n"
                ),
            )
        }
    };
    format!(
        "# Generated by Morpheus: Python ({tool_name}).\n\
         FROM {PYTHON_IMAGE} AS build\n\
         WORKDIR /app\n\
         {tool_setup}\
         RUN python -m venv /opt/venv\n\
         ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH\n\
         {install}\
         \n\
         FROM {PYTHON_IMAGE}\n\
         RUN useradd --create-home --uid 10001 app\n\
         WORKDIR /app\n\
         ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PORT={port}\n\
         COPY --from=build /opt/venv /opt/venv\n\
         COPY --chown=app:app . .\n\
         USER app\n\
         EXPOSE {port}\n\
         {cmd}\n",
        cmd = shell_cmd(start),
    )
}

/// The build's content hash (lowercase hex SHA-256): the context's tree hash, as
/// [`snapshot::capture`](crate::deploy::snapshot::capture) reports it, and the
/// generated Dockerfile's text (`None` for a project with its own, which the tree
/// already holds).
pub fn content_hash(context_tree_hash: &str, generated_dockerfile: Option<&str>) -> String {
    let mut sha = Sha256::new();
    sha.update(CONTENT_HASH_DOMAIN.as_bytes());
    sha.update(b"\0");
    sha.update(context_tree_hash.as_bytes());
    sha.update(b"\0");
    match generated_dockerfile {
        Some(text) => {
            sha.update(b"generated\0");
            sha.update(text.as_bytes());
        }
        None => sha.update(b"own"),
    }
    hex::encode(sha.finalize())
}

/// The repository of an image reference (`127.0.0.1:5000/web:1` → `127.0.0.1:5000/web`):
/// the executor's own reading, so the tag planned here is the one it pushes.
pub use morpheus_executors::image_build::repository;

/// The tag a build is pushed under: `{repository}:{first 16 hex of content_hash}`,
/// replacing any tag or digest `tag` carried.
pub fn image_tag(tag: &str, content_hash: &str) -> String {
    let digits = content_hash.get(..TAG_HASH_DIGITS).unwrap_or(content_hash);
    format!("{}:{digits}", repository(tag))
}

/// Everything `DockerExecutor::build_and_push` needs, and what it was derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// The detected framework.
    pub framework: Framework,
    /// The generated Dockerfile; `None` when the project has its own.
    pub generated_dockerfile: Option<String>,
    /// The build's content hash ([`content_hash`]).
    pub content_hash: String,
    /// The tag to push ([`image_tag`] of `build.tag`).
    pub tag: String,
    /// The context as a plain tar, the snapshot's ignore rules applied.
    pub context_tar: Vec<u8>,
}

/// Captures `context_dir` into `artifacts_dir` (the snapshot store's directory for this
/// project), detects its framework and plans its build for a service on `port`.
pub fn prepare(
    context_dir: &Path,
    artifacts_dir: &Path,
    build: &BuildSection,
    port: u32,
) -> Result<BuildPlan, BuildError> {
    let captured = snapshot::capture(context_dir, artifacts_dir, &SnapshotLimits::default(), &[])?;
    let artifact_error = |error: std::io::Error| {
        BuildError::Context(SnapshotError::Artifact {
            path: captured.artifact_path.display().to_string(),
            problem: error.to_string(),
        })
    };
    let compressed = std::fs::File::open(&captured.artifact_path).map_err(artifact_error)?;
    let mut context_tar = Vec::new();
    zstd::Decoder::new(compressed)
        .and_then(|mut decoder| decoder.read_to_end(&mut context_tar))
        .map_err(artifact_error)?;
    let files = files_in_tar(&context_tar).map_err(artifact_error)?;
    let framework = detect(&files, build.dockerfile.as_deref())?;
    let generated_dockerfile = dockerfile(&framework, port, build.start.as_deref())?;
    let hash = content_hash(&captured.content_hash, generated_dockerfile.as_deref());
    Ok(BuildPlan {
        framework,
        generated_dockerfile,
        tag: image_tag(&build.tag, &hash),
        content_hash: hash,
        context_tar,
    })
}

/// The paths of a context tar's files and links, with the contents of [`FILES_READ`].
fn files_in_tar(context_tar: &[u8]) -> std::io::Result<ProjectFiles> {
    let mut files = ProjectFiles::default();
    let mut archive = tar::Archive::new(context_tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        if FILES_READ.contains(&path.as_str()) && entry.header().entry_type().is_file() {
            let mut contents = String::new();
            entry.read_to_string(&mut contents)?;
            files.contents.insert(path.clone(), contents);
        }
        files.paths.insert(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::snapshot::{capture, SnapshotLimits};

    fn node_project(manager: PackageManager) -> NodeProject {
        NodeProject {
            package_manager: manager,
            locked: true,
            build_script: true,
            public_dir: false,
        }
    }

    #[test]
    fn detection_follows_the_documented_order() {
        let next_deps = r#"{"dependencies": {"next": "15.0.0", "react": "19.0.0"}, "scripts": {"build": "next build"}}"#;
        let table: Vec<(&str, ProjectFiles, Option<&str>, Framework)> = vec![
            (
                "a Dockerfile wins over package.json",
                ProjectFiles::new(["Dockerfile", "yarn.lock"])
                    .with_content("package.json", next_deps),
                None,
                Framework::Dockerfile {
                    path: "Dockerfile".into(),
                },
            ),
            (
                "build.dockerfile names another one",
                ProjectFiles::new(["Dockerfile", "deploy/web.Dockerfile"]),
                Some("./deploy/web.Dockerfile"),
                Framework::Dockerfile {
                    path: "deploy/web.Dockerfile".into(),
                },
            ),
            (
                "Next.js standalone with pnpm and public/",
                ProjectFiles::new(["pnpm-lock.yaml", "public/logo.svg", "app/page.tsx"])
                    .with_content("package.json", next_deps)
                    .with_content(
                        "next.config.mjs",
                        "export default {\n  output: \"standalone\",\n};\n",
                    ),
                None,
                Framework::NextJs {
                    node: NodeProject {
                        public_dir: true,
                        ..node_project(PackageManager::Pnpm)
                    },
                    standalone: true,
                },
            ),
            (
                "Next.js without standalone output",
                ProjectFiles::new(["package-lock.json"])
                    .with_content("package.json", next_deps)
                    .with_content("next.config.js", "module.exports = { reactStrictMode: true }"),
                None,
                Framework::NextJs {
                    node: node_project(PackageManager::Npm),
                    standalone: false,
                },
            ),
            (
                "Node.js with yarn, no build script",
                ProjectFiles::new(["yarn.lock", "index.js"]).with_content(
                    "package.json",
                    r#"{"dependencies": {"express": "4"}, "scripts": {"start": "node index.js"}}"#,
                ),
                None,
                Framework::Node {
                    node: NodeProject {
                        build_script: false,
                        ..node_project(PackageManager::Yarn)
                    },
                },
            ),
            (
                "Node.js without a lockfile is npm, unlocked",
                ProjectFiles::new(["index.js"]).with_content("package.json", "{}"),
                None,
                Framework::Node {
                    node: NodeProject {
                        locked: false,
                        build_script: false,
                        ..node_project(PackageManager::Npm)
                    },
                },
            ),
            (
                "Python with poetry",
                ProjectFiles::new(["poetry.lock", "requirements.txt", "app.py"]).with_content(
                    "pyproject.toml",
                    "[tool.poetry]\nname = \"api\"\n\n[tool.poetry.dependencies]\npython = \"^3.12\"\n",
                ),
                None,
                Framework::Python {
                    tool: PythonTool::Poetry { locked: true },
                },
            ),
            (
                "Python with pip (a pyproject.toml without poetry)",
                ProjectFiles::new(["requirements.txt", "app.py"])
                    .with_content("pyproject.toml", "[tool.ruff]\nline-length = 100\n"),
                None,
                Framework::Python {
                    tool: PythonTool::Pip,
                },
            ),
        ];
        for (name, files, configured, expected) in table {
            assert_eq!(detect(&files, configured), Ok(expected), "{name}");
        }
    }

    #[test]
    fn what_cannot_be_built_says_what_was_looked_for_in_one_line() {
        let table = [
            (
                ProjectFiles::new(["README.md", "main.go"]),
                None,
                "cannot tell how to build this project: found no Dockerfile, package.json, pyproject.toml with [tool.poetry], or requirements.txt",
            ),
            (
                ProjectFiles::new(["Dockerfile"]),
                Some("web.Dockerfile"),
                "build.dockerfile: \"web.Dockerfile\" is not in the build context",
            ),
            (
                ProjectFiles::new(["x"]).with_content("package.json", "{name: x}"),
                None,
                "package.json: not valid JSON",
            ),
        ];
        for (files, configured, expected) in table {
            let message = detect(&files, configured).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn standalone_output_is_read_whatever_the_quotes_and_spacing() {
        let table = [
            ("module.exports = { output: 'standalone' }", true),
            ("const c = {output:\"standalone\"}; export default c", true),
            ("export default { output : `standalone` }", true),
            ("{\"output\": \"standalone\"}", true),
            ("module.exports = { output: 'export' }", false),
            ("module.exports = {}", false),
        ];
        for (config, expected) in table {
            assert_eq!(sets_standalone_output(config), expected, "{config}");
        }
    }

    #[test]
    fn each_framework_gets_a_multi_stage_dockerfile_with_its_start_command() {
        let next_standalone = Framework::NextJs {
            node: NodeProject {
                public_dir: true,
                ..node_project(PackageManager::Pnpm)
            },
            standalone: true,
        };
        let next_plain = Framework::NextJs {
            node: node_project(PackageManager::Npm),
            standalone: false,
        };
        let node_yarn = Framework::Node {
            node: NodeProject {
                build_script: false,
                ..node_project(PackageManager::Yarn)
            },
        };
        let poetry = Framework::Python {
            tool: PythonTool::Poetry { locked: false },
        };
        let pip = Framework::Python {
            tool: PythonTool::Pip,
        };
        // (framework, start, lines that must be there, texts that must not)
        type Case<'a> = (&'a Framework, Option<&'a str>, Vec<&'a str>, Vec<&'a str>);
        let table: Vec<Case> = vec![
            (
                &next_standalone,
                None,
                vec![
                    "COPY package.json pnpm-lock.yaml ./",
                    "RUN corepack enable pnpm && pnpm install --frozen-lockfile",
                    "RUN pnpm run build",
                    "COPY --from=build --chown=node:node /app/public ./public",
                    "COPY --from=build --chown=node:node /app/.next/standalone ./",
                    "COPY --from=build --chown=node:node /app/.next/static ./.next/static",
                    "ENV NODE_ENV=production NEXT_TELEMETRY_DISABLED=1 HOSTNAME=0.0.0.0 PORT=3000",
                    "USER node",
                    "EXPOSE 3000",
                    "CMD [\"node\", \"server.js\"]",
                ],
                vec!["npm start", "node_modules"],
            ),
            (
                &next_plain,
                None,
                vec![
                    "RUN npm ci",
                    "RUN npm run build",
                    "COPY --from=build --chown=node:node /app ./",
                    "CMD [\"npm\", \"start\"]",
                ],
                vec!["standalone"],
            ),
            (
                &node_yarn,
                Some("node dist/server.js --port $PORT"),
                vec![
                    "COPY package.json yarn.lock ./",
                    "RUN yarn install --frozen-lockfile",
                    "USER node",
                    "CMD [\"sh\", \"-c\", \"exec node dist/server.js --port $PORT\"]",
                ],
                vec!["yarn build", "npm start"],
            ),
            (
                &poetry,
                Some("uvicorn app:app --host 0.0.0.0 --port \"$PORT\""),
                vec![
                    "RUN pip install --no-cache-dir poetry",
                    "COPY pyproject.toml ./",
                    "RUN poetry install --only main --no-root --no-interaction",
                    "COPY --from=build /opt/venv /opt/venv",
                    "RUN useradd --create-home --uid 10001 app",
                    "USER app",
                    "EXPOSE 8000",
                    "CMD [\"sh\", \"-c\", \"exec uvicorn app:app --host 0.0.0.0 --port \\\"$PORT\\\"\"]",
                ],
                vec!["poetry.lock"],
            ),
            (
                &pip,
                Some("gunicorn app:app"),
                vec![
                    "COPY requirements.txt ./",
                    "RUN pip install --no-cache-dir -r requirements.txt",
                    "USER app",
                ],
                vec!["poetry"],
            ),
        ];
        for (framework, start, present, absent) in table {
            let port = if matches!(framework, Framework::Python { .. }) {
                8000
            } else {
                3000
            };
            let text = dockerfile(framework, port, start).unwrap().unwrap();
            let lines: Vec<&str> = text.lines().collect();
            if let Framework::Python {
                tool: PythonTool::Poetry { .. },
            } = framework
            {
                let position = |wanted: &str| lines.iter().position(|line| *line == wanted);
                assert!(
                    position("RUN pip install --no-cache-dir poetry")
                        < position("RUN python -m venv /opt/venv"),
                    "poetry stays out of the app's venv\n{text}"
                );
            }
            for line in present {
                assert!(
                    lines.contains(&line),
                    "{framework:?}: no line {line:?} in\n{text}"
                );
            }
            for fragment in absent {
                assert!(
                    !text.contains(fragment),
                    "{framework:?}: {fragment:?} in\n{text}"
                );
            }
            assert_eq!(
                lines
                    .iter()
                    .filter(|line| line.starts_with("FROM "))
                    .count(),
                2,
                "{framework:?}: two stages\n{text}"
            );
            assert!(
                lines.last().unwrap().starts_with("CMD "),
                "{framework:?}\n{text}"
            );
        }
    }

    #[test]
    fn a_project_dockerfile_generates_nothing_and_python_needs_a_start_command() {
        let own = Framework::Dockerfile {
            path: "Dockerfile".into(),
        };
        assert_eq!(dockerfile(&own, 80, None), Ok(None));
        let pip = Framework::Python {
            tool: PythonTool::Pip,
        };
        let error = dockerfile(&pip, 8000, None).unwrap_err();
        assert_eq!(error, BuildError::MissingStartCommand);
        assert!(error.to_string().starts_with("build.start: required"));
    }

    #[test]
    fn prepare_plans_a_build_from_a_directory_with_the_snapshot_rules() {
        let project = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let write = |path: &str, contents: &str| {
            let path = project.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        };
        write("package.json", r#"{"scripts": {"start": "node index.js"}}"#);
        write("package-lock.json", "{}");
        write("index.js", "console.log(1)");
        write("node_modules/left-pad/index.js", "ignored");
        let build = BuildSection {
            context: ".".into(),
            dockerfile: None,
            tag: "127.0.0.1:5000/web:latest".into(),
            start: None,
        };
        let plan = prepare(project.path(), store.path(), &build, 3000).unwrap();
        assert_eq!(
            plan.framework,
            Framework::Node {
                node: NodeProject {
                    build_script: false,
                    ..node_project(PackageManager::Npm)
                }
            }
        );
        assert_eq!(
            plan.tag,
            format!("127.0.0.1:5000/web:{}", &plan.content_hash[..16])
        );
        let generated = plan.generated_dockerfile.as_deref().unwrap();
        assert!(generated.contains("RUN npm ci"), "{generated}");
        let files = files_in_tar(&plan.context_tar).unwrap();
        assert_eq!(
            files.paths.iter().map(String::as_str).collect::<Vec<_>>(),
            ["index.js", "package-lock.json", "package.json"],
            "node_modules/ stays out of the context"
        );
        assert_eq!(
            plan,
            prepare(project.path(), store.path(), &build, 3000).unwrap()
        );

        write("index.js", "console.log(2)");
        let edited = prepare(project.path(), store.path(), &build, 3000).unwrap();
        assert_ne!(edited.tag, plan.tag);

        write("Dockerfile", "FROM scratch\n");
        let own = prepare(project.path(), store.path(), &build, 3000).unwrap();
        assert_eq!(
            own.framework,
            Framework::Dockerfile {
                path: "Dockerfile".into()
            }
        );
        assert_eq!(own.generated_dockerfile, None);

        let python = BuildSection {
            dockerfile: Some("Containerfile".into()),
            ..build
        };
        let error = prepare(project.path(), store.path(), &python, 8000).unwrap_err();
        assert_eq!(
            error.to_string(),
            "build.dockerfile: \"Containerfile\" is not in the build context"
        );
    }

    #[test]
    fn the_tag_keeps_the_repository_and_replaces_the_tag_with_the_hash() {
        let hash = "0123456789abcdef".repeat(4);
        let table = [
            ("ghcr.io/acme/web:1.4", "ghcr.io/acme/web:0123456789abcdef"),
            ("ghcr.io/acme/web", "ghcr.io/acme/web:0123456789abcdef"),
            ("127.0.0.1:5000/web", "127.0.0.1:5000/web:0123456789abcdef"),
            (
                "127.0.0.1:5000/team/web:latest",
                "127.0.0.1:5000/team/web:0123456789abcdef",
            ),
            ("web@sha256:ffff", "web:0123456789abcdef"),
            (
                "localhost:5000/web:v1@sha256:ffff",
                "localhost:5000/web:0123456789abcdef",
            ),
        ];
        for (tag, expected) in table {
            assert_eq!(image_tag(tag, &hash), expected, "{tag}");
        }
    }

    fn tree_hash(dir: &std::path::Path) -> String {
        let store = tempfile::tempdir().unwrap();
        capture(dir, store.path(), &SnapshotLimits::default(), &[])
            .unwrap()
            .content_hash
    }

    #[test]
    fn the_content_hash_follows_the_files_and_the_generated_dockerfile() {
        let project = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join("package.json"), "{}").unwrap();
        std::fs::write(project.path().join("index.js"), "console.log(1)").unwrap();
        let framework = Framework::Node {
            node: node_project(PackageManager::Npm),
        };
        let generated = dockerfile(&framework, 3000, None).unwrap().unwrap();
        let base = content_hash(&tree_hash(project.path()), Some(&generated));
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            content_hash(&tree_hash(project.path()), Some(&generated)),
            "same tree, same Dockerfile, same hash"
        );

        // Ignored paths (the snapshot's rules) do not change it.
        std::fs::create_dir(project.path().join("node_modules")).unwrap();
        std::fs::write(project.path().join("node_modules/x.js"), "x").unwrap();
        std::fs::write(project.path().join("npm-debug.log"), "noise").unwrap();
        assert_eq!(
            base,
            content_hash(&tree_hash(project.path()), Some(&generated))
        );

        let other_port = dockerfile(&framework, 8080, None).unwrap().unwrap();
        let changed_template = content_hash(&tree_hash(project.path()), Some(&other_port));
        assert_ne!(
            base, changed_template,
            "a changed Dockerfile changes the hash"
        );
        assert_ne!(
            base,
            content_hash(&tree_hash(project.path()), None),
            "generated or own Dockerfile"
        );

        std::fs::write(project.path().join("index.js"), "console.log(2)").unwrap();
        let edited = content_hash(&tree_hash(project.path()), Some(&generated));
        assert_ne!(base, edited, "a changed file changes the hash");
        assert_ne!(
            image_tag("127.0.0.1:5000/web", &base),
            image_tag("127.0.0.1:5000/web", &edited)
        );
    }
}
