//! Sealed values in `morpheus.yaml` (`sealed:v1:…`, see [`morpheus_executors::sealed`]):
//! `env`, `sidecars.postgres.password` and each custom sidecar's `env`.
//!
//! The project travels sealed: the run's input, the synthesized SDL and manifest in the
//! journal, and every log line hold the sealed text. Only two moments need plaintext,
//! both inside the worker's memory: the manifest version (the hash the deployment
//! carries on chain is the hash of the manifest the provider receives, so it is taken
//! over the opened manifest), and the manifest upload itself. The key is the one
//! `morpheus up` is configured with (`[secrets] key`).

use morpheus_engine::StepError;
use morpheus_executors::sealed::{self, SecretKey};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::manifest::sorted_json;
use super::project::Project;
use crate::deploy::secrets::Masker;

/// Every sealed value of the project: its field path and the value.
fn sealed_fields(project: &mut Project) -> Vec<(String, &mut String)> {
    let config = &mut project.config;
    let mut fields = Vec::new();
    for (name, value) in config.env.iter_mut() {
        fields.push((format!("env.{name}"), value));
    }
    if let Some(postgres) = config.sidecars.postgres.as_mut() {
        fields.push((
            "sidecars.postgres.password".to_owned(),
            &mut postgres.password,
        ));
    }
    for (index, custom) in config.sidecars.custom.iter_mut().enumerate() {
        for (name, value) in custom.env.iter_mut() {
            fields.push((format!("sidecars.custom[{index}].env.{name}"), value));
        }
    }
    fields.retain(|(_, value)| sealed::is_sealed(value));
    fields
}

/// Whether the project holds any sealed value.
pub fn has_sealed(project: &Project) -> bool {
    !sealed_fields(&mut project.clone()).is_empty()
}

/// Checks every sealed value as far as it can be without the key (version, base64,
/// length, ephemeral key), so a damaged value is refused before anything is created.
/// The error names the field, never the value.
pub fn check_sealed(project: &Project) -> Result<(), String> {
    for (field, value) in sealed_fields(&mut project.clone()) {
        sealed::check(value).map_err(|error| format!("{field}: {error}"))?;
    }
    Ok(())
}

/// The sealed manifest (sorted JSON, as journaled) with every sealed value opened, as
/// sorted JSON again: what the provider receives and what the deployment's version
/// hashes. Env entries are `NAME=VALUE` strings; a VALUE that is sealed is opened. Also
/// returns a masker of the plaintexts, for anything a step would echo. A missing key, or
/// a value that does not open with it, is a permanent error naming the variable, never
/// the value.
pub fn open_manifest(
    sealed_json: &str,
    key: Option<&SecretKey>,
) -> Result<(Zeroizing<String>, Masker), StepError> {
    let mut manifest: Value = serde_json::from_str(sealed_json)
        .map_err(|error| StepError::permanent(format!("the journaled manifest: {error}")))?;
    let mut plaintexts = Vec::new();
    open_strings(&mut manifest, key, &mut plaintexts)?;
    let opened = Zeroizing::new(sorted_json(&manifest));
    wipe(&mut manifest);
    let masker = Masker::new(plaintexts.iter().map(|text| text.as_str()));
    Ok((opened, masker))
}

fn open_strings(
    value: &mut Value,
    key: Option<&SecretKey>,
    plaintexts: &mut Vec<Zeroizing<String>>,
) -> Result<(), StepError> {
    match value {
        Value::String(text) => {
            let (name, sealed_text) = match text.split_once('=') {
                Some((name, rest)) if sealed::is_sealed(rest) => (name.to_owned(), rest),
                _ if sealed::is_sealed(text) => (String::new(), text.as_str()),
                _ => return Ok(()),
            };
            let what = if name.is_empty() {
                "a sealed value".to_owned()
            } else {
                format!("env {name}")
            };
            let key = key.ok_or_else(|| {
                StepError::permanent(format!(
                    "morpheus.yaml: {what} is sealed, but this worker has no key to open it (set [secrets] key in morpheus.toml)"
                ))
            })?;
            let plaintext = sealed::open(key, sealed_text)
                .map_err(|error| StepError::permanent(format!("morpheus.yaml: {what}: {error}")))?;
            *text = if name.is_empty() {
                plaintext.to_string()
            } else {
                format!("{name}={}", plaintext.as_str())
            };
            plaintexts.push(plaintext);
        }
        Value::Array(items) => {
            for item in items {
                open_strings(item, key, plaintexts)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                open_strings(item, key, plaintexts)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Overwrites every string of `value` (the opened manifest's copies of plaintexts).
fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(env: &str, password: &str) -> Project {
        Project::from_yaml(&format!(
            "name: demo\ntemplate: website\nimage: nginx:1.27\n\
             env: {{ API_KEY: '{env}', MODE: plain }}\n\
             sidecars: {{ postgres: {{ password: '{password}' }} }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_opened_manifest_holds_the_plaintext_and_the_sealed_one_never_does() {
        let key = SecretKey::generate();
        let sealed_env = sealed::seal(&key.public_key(), "sk-live-123");
        let sealed_password = sealed::seal(&key.public_key(), "pg-secret");
        let project = project(&sealed_env, &sealed_password);
        assert!(has_sealed(&project));
        check_sealed(&project).unwrap();
        let synthesis = crate::akash::synthesize(&project).unwrap();
        assert!(!synthesis.manifest_sorted_json.contains("sk-live-123"));
        let (opened, masker) = open_manifest(&synthesis.manifest_sorted_json, Some(&key)).unwrap();
        assert!(
            opened.contains("API_KEY=sk-live-123"),
            "{}",
            opened.as_str()
        );
        assert!(
            opened.contains("POSTGRES_PASSWORD=pg-secret"),
            "{}",
            opened.as_str()
        );
        assert!(!opened.contains("sealed:v1:"));
        // The same text a project written in plaintext synthesizes: the provider's
        // hash of what it receives is the version the deployment carries.
        let mut plain = project.clone();
        plain
            .config
            .env
            .insert("API_KEY".into(), "sk-live-123".into());
        plain.config.sidecars.postgres.as_mut().unwrap().password = "pg-secret".into();
        let plain = crate::akash::synthesize(&plain).unwrap();
        assert_eq!(opened.as_str(), plain.manifest_sorted_json);
        assert_eq!(
            masker.mask("refused: API_KEY=sk-live-123"),
            "refused: API_KEY=***"
        );
    }

    #[test]
    fn without_the_key_or_with_another_the_error_names_the_variable_only() {
        let key = SecretKey::generate();
        let sealed_env = sealed::seal(&key.public_key(), "sk-live-123");
        let synthesis = crate::akash::synthesize(&project(&sealed_env, "plain-password")).unwrap();
        let missing = open_manifest(&synthesis.manifest_sorted_json, None).unwrap_err();
        assert!(
            missing.message().contains("env API_KEY is sealed")
                && missing.message().contains("[secrets] key"),
            "{}",
            missing.message()
        );
        let other = SecretKey::generate();
        let wrong = open_manifest(&synthesis.manifest_sorted_json, Some(&other)).unwrap_err();
        assert!(
            wrong.message().starts_with("morpheus.yaml: env API_KEY:"),
            "{}",
            wrong.message()
        );
        assert!(!wrong.message().contains(&sealed_env));
    }

    #[test]
    fn a_damaged_sealed_value_is_refused_before_any_key_is_needed() {
        let project = project("sealed:v1:not-base64!", "plain");
        let error = check_sealed(&project).unwrap_err();
        assert!(error.starts_with("env.API_KEY: "), "{error}");
        assert!(!has_sealed(&self::project("plain", "plain")));
    }
}
