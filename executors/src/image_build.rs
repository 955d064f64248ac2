//! Image builds: build a context with the local Docker engine, push it, and answer
//! the image **by digest** (`repository@sha256:…`), which is what an SDL should run:
//! a tag can move, a digest cannot.
//!
//! It knows nothing about frameworks or content hashes (the workflows decide those):
//! it gets a plain tar of the build context, the Dockerfile to use (a path in the
//! context, or a generated text that it adds to the archive as
//! [`GENERATED_DOCKERFILE`]) and the tag, which should already name the content
//! (`127.0.0.1:5000/web:0123456789abcdef`). Then [`DockerExecutor::build_and_push`]:
//!
//! 1. asks the registry whether the tag is there: if so, that is the image, and nothing
//!    is built or pushed ([`ImageSource::Registry`]);
//! 2. else, if the engine has an image of that tag, pushes it ([`ImageSource::Local`]);
//! 3. else builds it (the classic builder; every output line goes to the callback, the
//!    step's log sink) and pushes it ([`ImageSource::Built`]).
//!
//! The digest comes from the push's final status (`…: digest: sha256:… size: N`), or,
//! failing that, from the image's `RepoDigests`. Pushing an unchanged image again
//! uploads nothing and answers the same digest.
//!
//! As a step, it is the docker executor's `build_image` op ([`BuildImageSpec`]): the
//! context is a tar file on this host (plain, or zstd like the deploy snapshots), each
//! build line a log row at info with `{"stream": "build"}`, the output a [`PushedImage`]:
//!
//! ```json
//! {"op": "build_image", "context": "/srv/artifacts/web/ab12….tar.zst",
//!  "generated_dockerfile": "FROM node:20-alpine AS build\n…", "tag": "127.0.0.1:5000/web:ab12cd34ef56ab12"}
//! ```
//!
//! Errors: a failing build is `Permanent` and its message ends with the last lines of
//! its output (the failing step's); an unreachable engine or a registry that fails
//! during the push is `Retryable`.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::PathBuf;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use bytes::Bytes;
use futures::StreamExt;
use morpheus_engine::{LogLevel, LogSink, StepError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::docker::{api_error, DockerExecutor};

/// Name under which a generated Dockerfile is added to the context (chosen so that it
/// never replaces a file of the project).
pub const GENERATED_DOCKERFILE: &str = ".morpheus.Dockerfile";

/// How many trailing output lines a failed build's error carries.
const ERROR_TAIL_LINES: usize = 12;

/// What to build, and where to push it.
#[derive(Debug, Clone, Copy)]
pub struct ImageBuild<'a> {
    /// A plain (uncompressed) tar of the build context.
    pub context_tar: &'a [u8],
    /// Which Dockerfile builds it.
    pub dockerfile: DockerfileSource<'a>,
    /// The tag to push (`registry/repository:tag`); it should name the content, since
    /// an existing tag is taken to be this build.
    pub tag: &'a str,
}

/// The Dockerfile of a build.
#[derive(Debug, Clone, Copy)]
pub enum DockerfileSource<'a> {
    /// The project's own, at this path in the context.
    InContext(&'a str),
    /// A generated text, added to the context as [`GENERATED_DOCKERFILE`].
    Generated(&'a str),
}

/// The `build_image` op of the docker executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildImageSpec {
    /// Path of the context's tar on this host: plain, or compressed with zstd.
    pub context: PathBuf,
    /// The project's own Dockerfile, as a path in the context (default `Dockerfile`);
    /// not allowed beside `generated_dockerfile`.
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// A generated Dockerfile's text, added to the context.
    #[serde(default)]
    pub generated_dockerfile: Option<String>,
    /// The tag to push; it should name the content.
    pub tag: String,
}

/// Where the image that was pushed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// The registry already had the tag: nothing was built or pushed.
    Registry,
    /// The engine had an image of that tag: it was pushed, not built.
    Local,
    /// It was built, then pushed.
    Built,
}

/// A pushed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedImage {
    /// The tag it was pushed under.
    pub tag: String,
    /// The image by digest: `repository@sha256:…`.
    pub by_digest: String,
    /// Where it came from.
    pub source: ImageSource,
}

/// The repository of an image reference: without its `:tag` or `@digest` (the
/// registry's `:port` stays).
pub fn repository(reference: &str) -> &str {
    let without_digest = reference
        .split_once('@')
        .map_or(reference, |(name, _)| name);
    let last_slash = without_digest.rfind('/').map_or(0, |index| index + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    }
}

/// The tag part of a reference (`latest` when it names none).
fn tag_part(reference: &str) -> &str {
    let repository = repository(reference);
    reference[repository.len()..]
        .strip_prefix(':')
        .and_then(|rest| rest.split('@').next())
        .filter(|tag| !tag.is_empty())
        .unwrap_or("latest")
}

/// The context tar with `dockerfile` appended as [`GENERATED_DOCKERFILE`]; an entry of
/// that name already in the context is dropped (the generated one is the build's).
pub fn context_with_dockerfile(context_tar: &[u8], dockerfile: &str) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::with_capacity(context_tar.len() + 4096));
    let mut archive = tar::Archive::new(context_tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path == std::path::Path::new(GENERATED_DOCKERFILE) {
            continue;
        }
        let mut header = entry.header().clone();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents)?;
        match header.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                builder.append_link(&mut header, &path, target)?;
            }
            _ => builder.append_data(&mut header, &path, contents.as_slice())?,
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(dockerfile.len() as u64);
    header.set_mtime(1);
    builder.append_data(&mut header, GENERATED_DOCKERFILE, dockerfile.as_bytes())?;
    builder.into_inner()
}

/// Reassembles the build's output into lines, hands each to the callback, and keeps
/// the last few for an error message.
struct BuildOutput<'a> {
    on_line: &'a mut (dyn FnMut(&str) + Send),
    partial: String,
    tail: VecDeque<String>,
}

impl BuildOutput<'_> {
    fn push(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
    }

    fn line(&mut self, line: &str) {
        (self.on_line)(line);
        if self.tail.len() == ERROR_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(rest.trim_end_matches('\r'));
        }
    }

    fn tail_note(&self) -> String {
        let lines: Vec<&str> = self
            .tail
            .iter()
            .map(String::as_str)
            .filter(|line| !line.trim().is_empty())
            .collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; last output: {}", lines.join(" | "))
        }
    }
}

/// The digest in a push's final status (`1a2b: digest: sha256:… size: 528`).
fn digest_in_status(status: &str) -> Option<&str> {
    let (_, rest) = status.split_once("digest: ")?;
    let digest = rest.split_whitespace().next()?;
    digest.starts_with("sha256:").then_some(digest)
}

/// Reads a context tar from disk, decompressing zstd (recognised by its magic).
fn read_context(path: &std::path::Path) -> Result<Vec<u8>, StepError> {
    let unreadable = |error: io::Error| {
        StepError::permanent(format!(
            "cannot read the build context {}: {error}",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(unreadable)?;
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut plain = Vec::new();
        zstd::Decoder::new(bytes.as_slice())
            .and_then(|mut decoder| decoder.read_to_end(&mut plain))
            .map_err(unreadable)?;
        return Ok(plain);
    }
    Ok(bytes)
}

impl DockerExecutor {
    /// The `build_image` op: [`build_and_push`](Self::build_and_push) with the context
    /// read from disk and every output line logged at info (`{"stream": "build"}`).
    pub async fn build_image(
        &self,
        spec: &BuildImageSpec,
        logs: &LogSink,
    ) -> Result<PushedImage, StepError> {
        let dockerfile = match (&spec.dockerfile, &spec.generated_dockerfile) {
            (Some(_), Some(_)) => return Err(StepError::permanent(
                "invalid build_image request: give dockerfile or generated_dockerfile, not both",
            )),
            (None, Some(text)) => DockerfileSource::Generated(text),
            (Some(path), None) => DockerfileSource::InContext(path),
            (None, None) => DockerfileSource::InContext("Dockerfile"),
        };
        let context_path = spec.context.clone();
        let context = tokio::task::spawn_blocking(move || read_context(&context_path))
            .await
            .map_err(|error| StepError::retryable(format!("context reader failed: {error}")))??;
        let mut on_line =
            |line: &str| logs.log(LogLevel::Info, line, Some(json!({"stream": "build"})));
        self.build_and_push(
            &ImageBuild {
                context_tar: &context,
                dockerfile,
                tag: &spec.tag,
            },
            &mut on_line,
        )
        .await
    }

    /// Builds (unless the registry or the engine already has the tag), pushes, and
    /// answers the image by digest; see the [module documentation](self).
    pub async fn build_and_push(
        &self,
        build: &ImageBuild<'_>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<PushedImage, StepError> {
        if let Some(by_digest) = self.registry_digest(build.tag).await? {
            on_line(&format!(
                "{} is already in the registry as {by_digest}: nothing to build",
                build.tag
            ));
            return Ok(PushedImage {
                tag: build.tag.to_owned(),
                by_digest,
                source: ImageSource::Registry,
            });
        }
        let docker = self.docker().await?;
        let source = match docker.inspect_image(build.tag).await {
            Ok(_) => {
                on_line(&format!(
                    "{} is already built here: pushing it without building",
                    build.tag
                ));
                ImageSource::Local
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.build(build, on_line).await?;
                ImageSource::Built
            }
            Err(error) => return Err(api_error("inspect the image", error)),
        };
        let by_digest = self.push(build.tag, on_line).await?;
        Ok(PushedImage {
            tag: build.tag.to_owned(),
            by_digest,
            source,
        })
    }

    /// The image of `tag` in its registry, by digest, if the registry has that tag.
    /// A registry that answers no (unknown tag, or not reachable) is `None`: the build
    /// goes on, and its push says what is wrong with the registry.
    pub async fn registry_digest(&self, tag: &str) -> Result<Option<String>, StepError> {
        let docker = self.docker().await?;
        match docker.inspect_registry_image(tag, None).await {
            Ok(inspect) => Ok(inspect
                .descriptor
                .digest
                .map(|digest| format!("{}@{digest}", repository(tag)))),
            Err(BollardError::DockerResponseServerError { .. }) => Ok(None),
            Err(error) => Err(api_error("ask the registry for the image", error)),
        }
    }

    /// Builds `build.tag` from the context, streaming every output line to `on_line`.
    async fn build(
        &self,
        build: &ImageBuild<'_>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), StepError> {
        let docker = self.docker().await?;
        let (body, dockerfile) = match build.dockerfile {
            DockerfileSource::InContext(path) => (build.context_tar.to_vec(), path),
            DockerfileSource::Generated(text) => (
                context_with_dockerfile(build.context_tar, text).map_err(|error| {
                    StepError::permanent(format!("the build context is not a tar: {error}"))
                })?,
                GENERATED_DOCKERFILE,
            ),
        };
        // The classic builder, without pulling: a base image the engine already has
        // (such as a locally built one) is used as it is.
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(build.tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(Bytes::from(body))));
        let mut output = BuildOutput {
            on_line,
            partial: String::new(),
            tail: VecDeque::new(),
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = &info.stream {
                        output.push(text);
                    }
                    if let Some(status) = &info.status {
                        output.push(&format!("{status}\n"));
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    output.finish();
                    return Err(StepError::permanent(format!(
                        "building {} failed: {}{}",
                        build.tag,
                        error.trim(),
                        output.tail_note()
                    )));
                }
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) if (400..500).contains(&status_code) => {
                    output.finish();
                    return Err(StepError::permanent(format!(
                        "docker refused to build {} ({status_code}): {}{}",
                        build.tag,
                        message.trim(),
                        output.tail_note()
                    )));
                }
                Err(error) => return Err(api_error("build the image", error)),
            }
        }
        output.finish();
        Ok(())
    }

    /// Pushes `tag` to its registry and answers the image by digest. Pushing an
    /// unchanged image again uploads nothing and answers the same digest.
    pub async fn push(
        &self,
        tag: &str,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, StepError> {
        let docker = self.docker().await?;
        let repository = repository(tag);
        let options = PushImageOptionsBuilder::default()
            .tag(tag_part(tag))
            .build();
        let mut stream = docker.push_image(repository, Some(options), None);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    let Some(status) = info.status else { continue };
                    // Progress ticks ("Pushing" with a byte count) would flood the logs.
                    if status == "Pushing" {
                        continue;
                    }
                    on_line(&status);
                    if let Some(found) = digest_in_status(&status) {
                        digest = Some(found.to_owned());
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(StepError::retryable(format!(
                        "pushing {tag} failed: {}",
                        error.trim()
                    )))
                }
                Err(error) => return Err(api_error("push the image", error)),
            }
        }
        if let Some(digest) = digest {
            return Ok(format!("{repository}@{digest}"));
        }
        // No digest in the statuses (older engines): the image's RepoDigests has it.
        let image = docker
            .inspect_image(tag)
            .await
            .map_err(|error| api_error("inspect the pushed image", error))?;
        image
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|candidate| repository_of_digest(candidate) == repository)
            .ok_or_else(|| {
                StepError::retryable(format!(
                    "pushed {tag}, but neither the push nor the image names its digest in {repository}"
                ))
            })
    }
}

fn repository_of_digest(reference: &str) -> &str {
    reference
        .split_once('@')
        .map_or(reference, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        let table = [
            ("127.0.0.1:5000/web:0123", "127.0.0.1:5000/web", "0123"),
            (
                "127.0.0.1:5000/team/web",
                "127.0.0.1:5000/team/web",
                "latest",
            ),
            ("web:1@sha256:ff", "web", "1"),
            ("ghcr.io/acme/web", "ghcr.io/acme/web", "latest"),
        ];
        for (reference, expected_repository, expected_tag) in table {
            assert_eq!(repository(reference), expected_repository, "{reference}");
            assert_eq!(tag_part(reference), expected_tag, "{reference}");
        }
    }

    #[test]
    fn the_push_digest_is_read_from_its_final_status() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            digest_in_status(&format!("0123: digest: {digest} size: 528")),
            Some(digest.as_str())
        );
        assert_eq!(digest_in_status("Layer already exists"), None);
        assert_eq!(digest_in_status("digest: md5:abc size: 1"), None);
    }

    #[test]
    fn a_generated_dockerfile_joins_the_context_and_replaces_a_stale_one() {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents) in [("app.txt", "hello"), (GENERATED_DOCKERFILE, "FROM stale")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, path, contents.as_bytes())
                .unwrap();
        }
        let context = builder.into_inner().unwrap();
        let combined = context_with_dockerfile(&context, "FROM fresh\n").unwrap();
        let mut archive = tar::Archive::new(combined.as_slice());
        let mut entries: Vec<(String, String)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                let mut contents = String::new();
                entry.read_to_string(&mut contents).unwrap();
                (path, contents)
            })
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                (GENERATED_DOCKERFILE.to_owned(), "FROM fresh\n".to_owned()),
                ("app.txt".to_owned(), "hello".to_owned()),
            ]
        );
    }

    #[test]
    fn build_output_is_split_into_lines_and_keeps_a_tail() {
        let mut seen = Vec::new();
        let mut on_line = |line: &str| seen.push(line.to_owned());
        let mut output = BuildOutput {
            on_line: &mut on_line,
            partial: String::new(),
            tail: VecDeque::new(),
        };
        output.push("Step 1/2 : FROM x\n ---> ab");
        output.push("c\r\nStep 2/2");
        output.push(" : RUN false\n");
        for n in 0..ERROR_TAIL_LINES {
            output.push(&format!("line {n}\n"));
        }
        output.push("unterminated");
        output.finish();
        let note = output.tail_note();
        assert!(note.starts_with("; last output: line 1 | line 2"), "{note}");
        assert!(note.ends_with("| unterminated"), "{note}");
        assert_eq!(
            &seen[..3],
            ["Step 1/2 : FROM x", " ---> abc", "Step 2/2 : RUN false"]
        );
        assert_eq!(seen.len(), 3 + ERROR_TAIL_LINES + 1);
    }
}
