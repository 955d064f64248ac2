//! `morpheus init` (a commented `morpheus.yaml` for a template) and `morpheus deploy
//! --dry-run` (the project's SDL, manifest version, groups and image, synthesized
//! without building anything or touching a chain).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use morpheus_workflows::akash::project::Project;
use morpheus_workflows::akash::templates::TemplateName;
use morpheus_workflows::akash::{build, synthesize};
use serde_json::json;

use crate::cli::{DeployDryRunArgs, InitArgs};

/// The file a project is configured by.
pub const PROJECT_FILE: &str = "morpheus.yaml";

/// The commented `morpheus.yaml` `morpheus init` writes for `template`.
pub fn template_text(template: TemplateName, name: &str) -> String {
    let (resources, note) = match template {
        TemplateName::AiAgent => (
            "# resources: { cpu: 2, memory: 4Gi, storage: 10Gi, gpu: { units: 1, model: rtx4090 } }",
            "an AI agent: 2 CPU, 4Gi, one RTX 4090 by default",
        ),
        TemplateName::McpServer => (
            "# resources: { cpu: 0.5, memory: 512Mi, storage: 1Gi }",
            "an MCP server: 0.5 CPU, 512Mi by default",
        ),
        TemplateName::Website => (
            "# resources: { cpu: 0.5, memory: 256Mi, storage: 1Gi }",
            "a website: 0.5 CPU, 256Mi by default",
        ),
        TemplateName::Custom => (
            "resources: { cpu: 1, memory: 1Gi, storage: 5Gi }",
            "custom: you state the resources",
        ),
    };
    format!(
        "# morpheus.yaml: how `morpheus deploy` runs this project on Akash ({note}).\n\
         # `morpheus deploy --dry-run` prints the SDL, manifest version and groups it gives.\n\
         name: {name}\n\
         template: {template}   # ai-agent | mcp-server | website | custom\n\
         \n\
         # The image to run, or a build section (a Dockerfile in the context wins; otherwise\n\
         # Next.js, Node.js or Python is detected and a Dockerfile generated). The built image\n\
         # is tagged with the content hash and used by digest.\n\
         build: {{ context: ., tag: registry.example.com/{name} }}\n\
         # image: ghcr.io/acme/{name}:1.0\n\
         \n\
         # Limits: CPU ≤ 32, memory ≤ 64Gi, storage ≤ 1Ti, GPU ≤ 8.\n\
         {resources}\n\
         \n\
         ports:\n\
         \x20 - {{ port: 8080, as: 80 }}   # global unless `global: false`\n\
         \n\
         # Values may be sealed (`morpheus secrets seal`): sealed:v1:…\n\
         env:\n\
         \x20 LOG_LEVEL: info\n\
         \n\
         # Sidecars in the same deployment: PostgreSQL on 5432, Vector on 8686, custom ones.\n\
         # sidecars:\n\
         #   postgres: {{ password: \"change-me\" }}\n\
         #   vector: {{}}\n\
         \n\
         # pricing: {{ denom: uakt, amount: 100000 }}\n"
    )
}

/// `morpheus init`: writes a commented `morpheus.yaml` (refusing to overwrite one
/// unless `--force`), checked by the same validation `morpheus deploy` uses.
pub fn init(args: InitArgs) -> Result<()> {
    let template = TemplateName::ALL
        .into_iter()
        .find(|template| template.as_str() == args.template)
        .ok_or_else(|| {
            anyhow!(
                "--template: '{}' is not a template (ai-agent, mcp-server, website, custom)",
                args.template
            )
        })?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let name = match args.name {
        Some(name) => name,
        None => dir
            .canonicalize()
            .ok()
            .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|name| dns_label(&name))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "app".into()),
    };
    let text = template_text(template, &name);
    Project::from_yaml(&text).map_err(|error| anyhow!("--name: {error}"))?;
    let path = dir.join(PROJECT_FILE);
    if path.exists() && !args.force {
        bail!("{} exists: pass --force to replace it", path.display());
    }
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {} (template {template})", path.display());
    Ok(())
}

/// A directory name as a project name (a lowercase DNS label): letters and digits kept,
/// anything else a single `-`, no `-` at either end, at most 63 characters.
fn dns_label(text: &str) -> String {
    let mut label = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c);
        } else if !label.ends_with('-') {
            label.push('-');
        }
    }
    let label: String = label.trim_matches('-').chars().take(63).collect();
    label.trim_end_matches('-').to_owned()
}

/// Reads and validates the project in `dir`.
pub fn load(dir: &Path) -> Result<Project> {
    let path = dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (create one with `morpheus init`)",
            path.display()
        )
    })?;
    Project::from_yaml(&text).map_err(|error| anyhow!("{}: {error}", path.display()))
}

/// `morpheus deploy --dry-run`: synthesis only. A build section is captured and
/// hashed (in a temporary directory) to name the image it would get; nothing is built,
/// pushed or sent.
pub fn dry_run(args: DeployDryRunArgs) -> Result<()> {
    let started = Instant::now();
    let dir = args.project_dir.unwrap_or_else(|| PathBuf::from("."));
    let mut project = load(&dir)?;
    let mut framework = None;
    if let Some(section) = project.config.build.clone() {
        let context = dir.join(&section.context);
        let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
        let port = project.ports.first().map_or(80, |port| port.port);
        let plan = build::prepare(&context, scratch.path(), &section, port)
            .map_err(|error| anyhow!("build: {error}"))?;
        framework = Some(format!("{:?}", plan.framework));
        project.image = plan.tag;
    }
    let synthesis = synthesize(&project).map_err(|error| anyhow!("{error}"))?;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "dry_run": true,
                "image": project.image,
                "framework": framework,
                "sdl": synthesis.sdl_yaml,
                "manifest_version": synthesis.manifest_version_hex,
                "manifest_sorted_json": synthesis.manifest_sorted_json,
                "groups": synthesis.groups,
                "took_ms": (took_ms * 1000.0).round() / 1000.0,
            })
        );
        return Ok(());
    }
    println!("DRY RUN: nothing built, pushed or sent to a chain");
    println!(
        "project   {} (template {})",
        project.config.name, project.config.template
    );
    match &framework {
        Some(framework) => println!("image     {} (would be built: {framework})", project.image),
        None => println!("image     {}", project.image),
    }
    println!("manifest  version {}", synthesis.manifest_version_hex);
    println!("groups    {}", synthesis.groups.len());
    println!(
        "synthesized in {took_ms:.1} ms\n--- SDL ---\n{}",
        synthesis.sdl_yaml
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_become_dns_labels() {
        for (dir, label) in [
            (".tmpAQPO5s", "tmpaqpo5s"),
            ("My Agent_v2", "my-agent-v2"),
            ("---", ""),
            ("ok", "ok"),
        ] {
            assert_eq!(dns_label(dir), label, "{dir}");
        }
        assert_eq!(dns_label(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn every_template_file_validates_and_synthesizes() {
        for template in TemplateName::ALL {
            let text = template_text(template, "demo-app");
            let project = Project::from_yaml(&text)
                .unwrap_or_else(|error| panic!("{template}: {error}\n{text}"));
            assert_eq!(project.config.template, template);
            synthesize(&project).unwrap_or_else(|error| panic!("{template}: {error}"));
        }
    }
}
