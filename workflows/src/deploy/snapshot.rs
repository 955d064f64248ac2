//! Snapshots: capture a source directory into a content-addressed artifact.
//!
//! - **What is captured**: regular files, directories and symlinks under the source
//!   directory, minus the ignore rules ([`DEFAULT_IGNORES`], gitignore semantics:
//!   `name/` matches a directory at any depth, `a/b/` only at the root, `*.log` any
//!   file). Sockets, FIFOs and devices are skipped (they cannot be shipped).
//! - **Content hash**: hex SHA-256 over the entries in walk order (siblings sorted by
//!   name), each encoded as kind, path, permission bits and the file's bytes (or the
//!   link's target). Modification times, owners and the archive's compression never
//!   enter it: the same tree always has the same hash.
//! - **Artifact**: a tar (fixed mtimes and owners, so the same tree gives the same
//!   bytes) compressed with zstd, stored once per hash at
//!   `<artifacts>/<agent_id>/<content_hash>.tar.zst`, written to a temporary file and
//!   renamed into place so a crash never leaves a partial artifact under its final name.
//! - **Limits**: at most [`SnapshotLimits::max_files`] files and
//!   [`SnapshotLimits::max_compressed_bytes`] of compressed artifact; a symlink whose
//!   target leaves the source directory (absolute, `..` past the root, or resolving
//!   outside it) is refused. Each has its own [`SnapshotError`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

/// Paths left out of every snapshot (gitignore syntax).
pub const DEFAULT_IGNORES: [&str; 6] = [
    ".git/",
    "node_modules/",
    ".next/cache/",
    "dist/",
    "build/",
    "*.log",
];

/// Default most files in a snapshot.
pub const DEFAULT_MAX_FILES: u64 = 100_000;

/// Default most bytes of compressed artifact (1 GiB).
pub const DEFAULT_MAX_COMPRESSED_BYTES: u64 = 1 << 30;

/// Modification time written for every archive entry (as Nix does): archives of the
/// same tree are byte-identical, and nothing in the sandbox looks newer than the build.
const ARCHIVE_MTIME: u64 = 1;

/// zstd level: fast, and still a good ratio for source trees.
const ZSTD_LEVEL: i32 = 3;

/// Bounds on what one snapshot may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLimits {
    /// Most files (regular files and symlinks; directories are not counted).
    pub max_files: u64,
    /// Most bytes of compressed artifact.
    pub max_compressed_bytes: u64,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        Self {
            max_files: DEFAULT_MAX_FILES,
            max_compressed_bytes: DEFAULT_MAX_COMPRESSED_BYTES,
        }
    }
}

/// Why a snapshot could not be taken (or an artifact not trusted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// More files than the limit.
    #[error("snapshot limit exceeded: {dir} holds more than {limit} files (after the ignore rules); deploy a smaller directory or raise the limit")]
    TooManyFiles {
        /// The source directory.
        dir: String,
        /// The limit.
        limit: u64,
    },
    /// The compressed artifact grew past the limit.
    #[error("snapshot limit exceeded: the compressed snapshot of {dir} is larger than {limit} bytes; deploy a smaller directory or raise the limit")]
    TooLarge {
        /// The source directory.
        dir: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A symlink points outside the source directory.
    #[error("symlink '{link}' points outside the source directory (to '{target}'); snapshots may only contain links that stay inside it")]
    SymlinkEscapes {
        /// The link, relative to the source directory.
        link: String,
        /// Where it points.
        target: String,
    },
    /// The source directory could not be read.
    #[error("cannot read {path}: {message}")]
    Source {
        /// What could not be read.
        path: String,
        /// Why.
        message: String,
    },
    /// The artifact store could not be written (disk full, permissions).
    #[error("cannot write the artifact store at {path}: {message}")]
    Store {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
    /// A stored artifact is missing, unreadable, or does not hash to its name.
    #[error("artifact {path} cannot be used: {problem}")]
    Artifact {
        /// The artifact.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

impl SnapshotError {
    /// Whether trying again may help (only the artifact store's own trouble may pass;
    /// a source tree over a limit stays over it).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store { .. })
    }
}

/// What a capture produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Hex SHA-256 of the tree.
    pub content_hash: String,
    /// Files and symlinks captured.
    pub file_count: u64,
    /// Total bytes of file contents.
    pub content_bytes: u64,
    /// Size of the compressed artifact.
    pub size_bytes: u64,
    /// Where the artifact is.
    pub artifact_path: PathBuf,
    /// True when an identical tree had been stored before (nothing new was kept).
    pub reused: bool,
    /// Entries skipped because they cannot be shipped (sockets, FIFOs, devices).
    pub skipped: Vec<String>,
}

/// A tree's digest, as recomputed from an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDigest {
    /// Hex SHA-256 of the tree.
    pub content_hash: String,
    /// Files and symlinks.
    pub file_count: u64,
    /// Total bytes of file contents.
    pub content_bytes: u64,
}

/// Where the artifact of `content_hash` for `agent_id` lives.
pub fn artifact_path(artifacts_dir: &Path, agent_id: &str, content_hash: &str) -> PathBuf {
    artifacts_dir
        .join(agent_id)
        .join(format!("{content_hash}.tar.zst"))
}

/// The canonical encoding of a tree, hashed. Both the capture (from the directory) and
/// [`verify_artifact`] (from the archive) feed it the same entries in the same order.
struct TreeHasher {
    sha: Sha256,
    files: u64,
    bytes: u64,
}

impl TreeHasher {
    fn new() -> Self {
        Self {
            sha: Sha256::new(),
            files: 0,
            bytes: 0,
        }
    }

    fn dir(&mut self, path: &str, mode: u32) {
        self.sha
            .update(format!("D\0{path}\0{:o}\n", mode & 0o7777).as_bytes());
    }

    fn file(&mut self, path: &str, mode: u32, size: u64) {
        self.files += 1;
        self.bytes += size;
        self.sha
            .update(format!("F\0{path}\0{:o}\0{size}\n", mode & 0o7777).as_bytes());
    }

    fn content(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.files += 1;
        self.sha.update(format!("L\0{path}\0{target}\n").as_bytes());
    }

    fn finish(self) -> TreeDigest {
        TreeDigest {
            content_hash: hex::encode(self.sha.finalize()),
            file_count: self.files,
            content_bytes: self.bytes,
        }
    }
}

/// Feeds what is read through it into the tree hash and counts it.
struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut TreeHasher,
    read: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.content(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// A file writer that fails once more than `limit` bytes went through it.
struct LimitedWriter {
    inner: File,
    written: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl Write for LimitedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::other("compressed size limit exceeded"));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn ignore_rules(root: &Path) -> Result<Gitignore, SnapshotError> {
    let mut builder = GitignoreBuilder::new(root);
    for pattern in DEFAULT_IGNORES {
        builder
            .add_line(None, pattern)
            .map_err(|error| SnapshotError::Source {
                path: pattern.into(),
                message: format!("bad ignore pattern: {error}"),
            })?;
    }
    builder.build().map_err(|error| SnapshotError::Source {
        path: root.display().to_string(),
        message: format!("bad ignore rules: {error}"),
    })
}

/// Whether a symlink at `link` (relative to the root) pointing at `target` leaves the
/// root, judged on the text of the target (it may dangle).
fn escapes_lexically(link: &Path, target: &Path) -> bool {
    let mut depth = link
        .parent()
        .map(|parent| parent.components().count() as i64)
        .unwrap_or(0);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

fn relative_name(root: &Path, path: &Path) -> Result<String, SnapshotError> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| SnapshotError::Source {
            path: path.display().to_string(),
            message: "file names must be valid UTF-8".into(),
        })
}

fn source_error(path: &Path, error: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Source {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

fn store_error(path: &Path, error: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Store {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

fn entry_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode & 0o7777);
    header.set_size(size);
    header.set_mtime(ARCHIVE_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Captures `source_dir` into the artifact store directory `agent_dir`
/// (`<artifacts>/<agent_id>`), leaving out the ignore rules and anything under
/// `exclude` (the data directory, when it lives inside the source directory).
pub fn capture(
    source_dir: &Path,
    agent_dir: &Path,
    limits: &SnapshotLimits,
    exclude: &[PathBuf],
) -> Result<Captured, SnapshotError> {
    let root = source_dir
        .canonicalize()
        .map_err(|error| source_error(source_dir, error))?;
    if !root.is_dir() {
        return Err(source_error(&root, "not a directory"));
    }
    let canonical_excludes: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|path| path.canonicalize().ok())
        .collect();
    let rules = ignore_rules(&root)?;
    std::fs::create_dir_all(agent_dir).map_err(|error| store_error(agent_dir, error))?;
    let temp_path = agent_dir.join(format!(
        ".partial-{}-{}.tar.zst",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = write_archive(&root, &rules, &canonical_excludes, &temp_path, limits);
    let (digest, size_bytes, skipped) = match result {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&temp_path);
            return Err(error);
        }
    };
    let final_path = agent_dir.join(format!("{}.tar.zst", digest.content_hash));
    let reused = final_path.is_file();
    if reused {
        // Same tree, stored before: keep the existing artifact (identical bytes).
        let _ = std::fs::remove_file(&temp_path);
    } else {
        std::fs::rename(&temp_path, &final_path).map_err(|error| {
            let _ = std::fs::remove_file(&temp_path);
            store_error(&final_path, error)
        })?;
        // The rename itself must survive a crash, not only the file's contents.
        if let Ok(dir) = File::open(agent_dir) {
            let _ = dir.sync_all();
        }
    }
    let size_bytes = if reused {
        std::fs::metadata(&final_path)
            .map(|m| m.len())
            .unwrap_or(size_bytes)
    } else {
        size_bytes
    };
    Ok(Captured {
        content_hash: digest.content_hash,
        file_count: digest.file_count,
        content_bytes: digest.content_bytes,
        size_bytes,
        artifact_path: final_path,
        reused,
        skipped,
    })
}

type ArchiveResult = (TreeDigest, u64, Vec<String>);

fn write_archive(
    root: &Path,
    rules: &Gitignore,
    excludes: &[PathBuf],
    temp_path: &Path,
    limits: &SnapshotLimits,
) -> Result<ArchiveResult, SnapshotError> {
    let dir_name = root.display().to_string();
    let too_large = || SnapshotError::TooLarge {
        dir: dir_name.clone(),
        limit: limits.max_compressed_bytes,
    };
    let file = File::create(temp_path).map_err(|error| store_error(temp_path, error))?;
    let exceeded = Arc::new(AtomicBool::new(false));
    let writer = LimitedWriter {
        inner: file,
        written: 0,
        limit: limits.max_compressed_bytes,
        exceeded: exceeded.clone(),
    };
    let write_error = |path: &Path, error: io::Error| {
        if exceeded.load(Ordering::Relaxed) {
            too_large()
        } else {
            store_error(path, error)
        }
    };
    let encoder = zstd::Encoder::new(writer, ZSTD_LEVEL).map_err(|e| write_error(temp_path, e))?;
    let mut archive = tar::Builder::new(encoder);
    let mut hasher = TreeHasher::new();
    let mut skipped = Vec::new();
    let walk = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            let is_dir = entry.file_type().is_dir();
            !rules.matched(entry.path(), is_dir).is_ignore()
                && !excludes.iter().any(|excluded| entry.path() == excluded)
        });
    for entry in walk {
        let entry = entry.map_err(|error| {
            let path = error
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            source_error(&path, error)
        })?;
        let path = entry.path();
        let name = relative_name(root, path)?;
        let file_type = entry.file_type();
        if !file_type.is_dir() && hasher.files >= limits.max_files {
            return Err(SnapshotError::TooManyFiles {
                dir: dir_name.clone(),
                limit: limits.max_files,
            });
        }
        if file_type.is_dir() {
            let mode = entry
                .metadata()
                .map_err(|e| source_error(path, e))?
                .permissions()
                .mode();
            hasher.dir(&name, mode);
            let mut header = entry_header(tar::EntryType::Directory, mode, 0);
            archive
                .append_data(&mut header, format!("{name}/"), io::empty())
                .map_err(|e| write_error(temp_path, e))?;
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| source_error(path, e))?;
            let target_text = target
                .to_str()
                .ok_or_else(|| source_error(path, "symlink targets must be valid UTF-8"))?;
            let resolved_outside = path
                .canonicalize()
                .is_ok_and(|resolved| !resolved.starts_with(root));
            if escapes_lexically(Path::new(&name), &target) || resolved_outside {
                return Err(SnapshotError::SymlinkEscapes {
                    link: name,
                    target: target_text.to_owned(),
                });
            }
            hasher.symlink(&name, target_text);
            let mut header = entry_header(tar::EntryType::Symlink, 0o777, 0);
            archive
                .append_link(&mut header, &name, &target)
                .map_err(|e| write_error(temp_path, e))?;
        } else if file_type.is_file() {
            let metadata = entry.metadata().map_err(|e| source_error(path, e))?;
            let mode = metadata.permissions().mode();
            let size = metadata.len();
            let file = File::open(path).map_err(|e| source_error(path, e))?;
            hasher.file(&name, mode, size);
            let mut header = entry_header(tar::EntryType::Regular, mode, size);
            let mut reader = HashingReader {
                // A file that grows while it is read is cut at the size in its header.
                inner: file.take(size),
                hasher: &mut hasher,
                read: 0,
            };
            let appended = archive.append_data(&mut header, &name, &mut reader);
            let read = reader.read;
            appended.map_err(|e| write_error(temp_path, e))?;
            if read != size {
                return Err(source_error(
                    path,
                    format!("the file changed while it was captured ({size} bytes expected, {read} read)"),
                ));
            }
        } else {
            let kind = if file_type.is_socket() {
                "socket"
            } else if file_type.is_fifo() {
                "fifo"
            } else {
                "device"
            };
            skipped.push(format!("{name} ({kind})"));
        }
    }
    let encoder = archive
        .into_inner()
        .map_err(|e| write_error(temp_path, e))?;
    let writer = encoder.finish().map_err(|e| write_error(temp_path, e))?;
    let size = writer.written;
    writer
        .inner
        .sync_all()
        .map_err(|e| store_error(temp_path, e))?;
    Ok((hasher.finish(), size, skipped))
}

/// Recomputes the tree digest from an artifact (refusing entries that are not plain
/// relative paths), so a stored artifact can be checked against its hash before it is
/// deployed again.
pub fn verify_artifact(artifact: &Path) -> Result<TreeDigest, SnapshotError> {
    let problem = |message: String| SnapshotError::Artifact {
        path: artifact.display().to_string(),
        problem: message,
    };
    let file = File::open(artifact).map_err(|error| problem(error.to_string()))?;
    let decoder = zstd::Decoder::new(file).map_err(|error| problem(error.to_string()))?;
    let mut archive = tar::Archive::new(decoder);
    let mut hasher = TreeHasher::new();
    let entries = archive
        .entries()
        .map_err(|error| problem(error.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| problem(error.to_string()))?;
        let path = entry
            .path()
            .map_err(|error| problem(error.to_string()))?
            .into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(problem(format!(
                "entry '{}' is not a plain relative path",
                path.display()
            )));
        }
        let name = path
            .to_str()
            .ok_or_else(|| problem("entry names must be valid UTF-8".into()))?
            .trim_end_matches('/')
            .to_owned();
        let mode = entry
            .header()
            .mode()
            .map_err(|error| problem(error.to_string()))?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => hasher.dir(&name, mode),
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|error| problem(error.to_string()))?
                    .ok_or_else(|| problem(format!("symlink '{name}' has no target")))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| problem("link targets must be valid UTF-8".into()))?
                    .to_owned();
                hasher.symlink(&name, &target);
            }
            tar::EntryType::Regular => {
                let size = entry.size();
                hasher.file(&name, mode, size);
                let mut reader = HashingReader {
                    inner: &mut entry,
                    hasher: &mut hasher,
                    read: 0,
                };
                io::copy(&mut reader, &mut io::sink())
                    .map_err(|error| problem(error.to_string()))?;
            }
            other => return Err(problem(format!("unexpected entry type {other:?}"))),
        }
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    struct Tree {
        dir: tempfile::TempDir,
        store: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                store: tempfile::tempdir().unwrap(),
            }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn write(&self, path: &str, contents: &[u8]) {
            let path = self.root().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }

        fn link(&self, path: &str, target: &str) {
            let path = self.root().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, path).unwrap();
        }

        fn capture_with(&self, limits: SnapshotLimits) -> Result<Captured, SnapshotError> {
            capture(self.root(), &self.store.path().join("agent"), &limits, &[])
        }

        fn capture(&self) -> Captured {
            self.capture_with(SnapshotLimits::default())
                .expect("capture")
        }

        /// Relative names of the regular files and links in the artifact.
        fn archived(&self, captured: &Captured) -> Vec<String> {
            let file = File::open(&captured.artifact_path).unwrap();
            let mut archive = tar::Archive::new(zstd::Decoder::new(file).unwrap());
            let mut names: Vec<String> = archive
                .entries()
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.header().entry_type() != tar::EntryType::Directory)
                .map(|e| e.path().unwrap().display().to_string())
                .collect();
            names.sort();
            names
        }
    }

    fn sample(tree: &Tree) {
        tree.write("index.html", b"<h1>hello</h1>");
        tree.write("src/app.js", b"console.log(1)");
        tree.write("src/lib/util.js", b"export {}");
    }

    fn set_mtime(path: &Path, when: SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn the_same_tree_has_the_same_hash_whatever_its_mtimes() {
        let first = Tree::new();
        sample(&first);
        let second = Tree::new();
        sample(&second);
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for path in ["index.html", "src/app.js", "src/lib/util.js"] {
            set_mtime(&second.root().join(path), old);
        }
        let a = first.capture();
        let b = second.capture();
        assert_eq!(a.content_hash, b.content_hash);
        assert_eq!(a.file_count, 3);
        assert_eq!(a.content_bytes, 14 + 14 + 9);
        // The archives are byte-identical too.
        assert_eq!(
            std::fs::read(&a.artifact_path).unwrap(),
            std::fs::read(&b.artifact_path).unwrap()
        );
    }

    #[test]
    fn contents_names_and_modes_change_the_hash() {
        let tree = Tree::new();
        sample(&tree);
        let base = tree.capture().content_hash;
        tree.write("src/app.js", b"console.log(2)");
        let edited = tree.capture().content_hash;
        assert_ne!(base, edited, "content");
        std::fs::rename(
            tree.root().join("src/app.js"),
            tree.root().join("src/main.js"),
        )
        .unwrap();
        let renamed = tree.capture().content_hash;
        assert_ne!(edited, renamed, "name");
        let script = tree.root().join("src/main.js");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let executable = tree.capture().content_hash;
        assert_ne!(renamed, executable, "mode");
        std::fs::create_dir(tree.root().join("empty")).unwrap();
        assert_ne!(executable, tree.capture().content_hash, "empty directory");
    }

    #[test]
    fn the_default_ignore_rules_leave_out_build_output_and_logs() {
        let tree = Tree::new();
        sample(&tree);
        for ignored in [
            ".git/HEAD",
            "node_modules/left-pad/index.js",
            "packages/web/node_modules/x.js",
            ".next/cache/webpack/a.pack",
            "dist/bundle.js",
            "build/out.o",
            "src/build/generated.js",
            "server.log",
            "logs/today.log",
        ] {
            tree.write(ignored, b"ignored");
        }
        for kept in [
            ".next/server/page.js",
            "logs/README",
            "src/build.rs",
            "notes.log.txt",
        ] {
            tree.write(kept, b"kept");
        }
        let captured = tree.capture();
        assert_eq!(
            tree.archived(&captured),
            [
                ".next/server/page.js",
                "index.html",
                "logs/README",
                "notes.log.txt",
                "src/app.js",
                "src/build.rs",
                "src/lib/util.js",
            ]
        );
        assert_eq!(captured.file_count, 7);
        let clean = Tree::new();
        sample(&clean);
        for kept in [
            ".next/server/page.js",
            "logs/README",
            "src/build.rs",
            "notes.log.txt",
        ] {
            clean.write(kept, b"kept");
        }
        // Directories that only held ignored entries stay, empty, in the tree.
        std::fs::create_dir_all(clean.root().join("packages/web")).unwrap();
        assert_eq!(
            captured.content_hash,
            clean.capture().content_hash,
            "ignored paths do not enter the hash"
        );
    }

    #[test]
    fn the_data_directory_inside_the_source_is_left_out() {
        let tree = Tree::new();
        sample(&tree);
        tree.write(".morpheus/morpheus.db", b"db");
        let data_dir = tree.root().join(".morpheus");
        let captured = capture(
            tree.root(),
            &data_dir.join("artifacts/agent"),
            &SnapshotLimits::default(),
            std::slice::from_ref(&data_dir),
        )
        .unwrap();
        assert!(captured.artifact_path.starts_with(&data_dir));
        assert_eq!(captured.file_count, 3);
    }

    #[test]
    fn links_inside_the_tree_are_kept_as_links() {
        let tree = Tree::new();
        sample(&tree);
        tree.link("current", "src");
        tree.link("src/lib/app.js", "../app.js");
        tree.link("dangling", "not-there-yet");
        let captured = tree.capture();
        assert_eq!(captured.file_count, 6);
        let digest = verify_artifact(&captured.artifact_path).unwrap();
        assert_eq!(digest.content_hash, captured.content_hash);
    }

    #[test]
    fn a_symlink_escaping_the_source_directory_is_refused() {
        for (link, target) in [
            ("leak", "/etc/passwd"),
            ("up", "../outside"),
            ("src/deep/up", "../../../outside"),
            ("sneaky", "src/../../outside"),
        ] {
            let tree = Tree::new();
            sample(&tree);
            tree.link(link, target);
            match tree.capture_with(SnapshotLimits::default()) {
                Err(SnapshotError::SymlinkEscapes {
                    link: reported,
                    target: reported_target,
                }) => {
                    assert_eq!(reported, link);
                    assert_eq!(reported_target, target);
                }
                other => panic!("{link} -> {target}: expected SymlinkEscapes, got {other:?}"),
            }
            assert_no_artifacts(&tree);
        }
        // Lexically inside, but through a link to the root it resolves outside.
        let tree = Tree::new();
        sample(&tree);
        tree.link("self", ".");
        tree.link("src/parent", "../self/..");
        let error = tree.capture_with(SnapshotLimits::default()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::SymlinkEscapes { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("points outside the source directory"),
            "{message}"
        );
    }

    fn assert_no_artifacts(tree: &Tree) {
        let agent_dir = tree.store.path().join("agent");
        let leftovers: Vec<_> = std::fs::read_dir(&agent_dir)
            .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }

    #[test]
    fn the_file_count_limit_is_enforced_with_a_clear_error() {
        let tree = Tree::new();
        for n in 0..5 {
            tree.write(&format!("f{n}"), b"x");
        }
        tree.write("node_modules/a", b"ignored files do not count");
        let limits = SnapshotLimits {
            max_files: 5,
            ..SnapshotLimits::default()
        };
        assert_eq!(tree.capture_with(limits).unwrap().file_count, 5);
        tree.write("f5", b"x");
        let error = tree.capture_with(limits).unwrap_err();
        assert!(
            matches!(error, SnapshotError::TooManyFiles { limit: 5, .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("more than 5 files"), "{message}");
        assert!(!error.is_retryable());
        // Only the artifact of the earlier, accepted capture remains.
        let stored: Vec<_> = std::fs::read_dir(tree.store.path().join("agent"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert!(!stored[0].starts_with(".partial"), "{stored:?}");
    }

    #[test]
    fn the_compressed_size_limit_is_enforced_with_a_clear_error() {
        let tree = Tree::new();
        // Incompressible bytes (xorshift), so the compressed size follows the input.
        let noise = morpheus_tests::noise(0x9e37_79b9_7f4a_7c15, 64 * 1024);
        tree.write("noise.bin", &noise);
        let limits = SnapshotLimits {
            max_compressed_bytes: 16 * 1024,
            ..SnapshotLimits::default()
        };
        let error = tree.capture_with(limits).unwrap_err();
        assert!(
            matches!(error, SnapshotError::TooLarge { limit: 16384, .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("larger than 16384 bytes"),
            "{error}"
        );
        assert_no_artifacts(&tree);
        let roomy = SnapshotLimits {
            max_compressed_bytes: 1 << 20,
            ..SnapshotLimits::default()
        };
        let captured = tree.capture_with(roomy).unwrap();
        assert!(captured.size_bytes > 60 * 1024, "{}", captured.size_bytes);
    }

    #[test]
    fn identical_trees_are_stored_once_and_verify_against_their_hash() {
        let tree = Tree::new();
        sample(&tree);
        let first = tree.capture();
        assert!(!first.reused);
        let second = tree.capture();
        assert!(second.reused);
        assert_eq!(first.artifact_path, second.artifact_path);
        assert_eq!(
            first.artifact_path,
            artifact_path(tree.store.path(), "agent", &first.content_hash)
        );
        let digest = verify_artifact(&first.artifact_path).unwrap();
        assert_eq!(digest.content_hash, first.content_hash);
        assert_eq!(digest.file_count, 3);

        // A damaged artifact no longer verifies.
        let mut bytes = std::fs::read(&first.artifact_path).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&first.artifact_path, bytes).unwrap();
        let error = verify_artifact(&first.artifact_path).unwrap_err();
        assert!(matches!(error, SnapshotError::Artifact { .. }), "{error:?}");
        let missing = verify_artifact(&tree.store.path().join("nope.tar.zst")).unwrap_err();
        assert!(
            matches!(missing, SnapshotError::Artifact { .. }),
            "{missing:?}"
        );
    }

    #[test]
    fn special_files_are_skipped_and_reported() {
        let tree = Tree::new();
        sample(&tree);
        let socket = tree.root().join("dev.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let captured = tree.capture();
        assert_eq!(captured.skipped, ["dev.sock (socket)"]);
        assert_eq!(captured.file_count, 3);
    }

    #[test]
    fn lexical_escape_checks() {
        assert!(!escapes_lexically(Path::new("a"), Path::new("b")));
        assert!(!escapes_lexically(Path::new("x/a"), Path::new("../b")));
        assert!(escapes_lexically(Path::new("a"), Path::new("../b")));
        assert!(escapes_lexically(Path::new("a"), Path::new("/b")));
        assert!(!escapes_lexically(
            Path::new("x/y/a"),
            Path::new("./../../b")
        ));
        assert!(escapes_lexically(
            Path::new("x/y/a"),
            Path::new("../../../b")
        ));
    }
}
