//! Sealed env values in deploy specs (`sealed:v1:…`, see [`morpheus_executors::sealed`]).
//!
//! A spec stores and shows them sealed, and a run's input carries them sealed. They are
//! opened only inside the bodies of the steps that talk to the sandbox (`provision`
//! hands Docker the container's environment; `install`, `build` and `start-output`
//! carry what the sandbox's commands print), with the key `morpheus up` was configured
//! with (`[secrets] key`). So a plaintext lives in the worker's memory and the
//! container only: it is never part of a step's input, output or error in the journal.
//! Whatever those steps log, return or fail with is masked first: every opened value
//! becomes [`MASK`].

use std::collections::BTreeMap;
use std::sync::Arc;

use morpheus_engine::{LogSink, StepError};
use morpheus_executors::sealed::{self, SecretKey};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use super::spec::SpecError;

/// What an opened value is replaced with in logs, step outputs and errors.
pub const MASK: &str = "***";

/// Whether any value of `env` is sealed.
pub fn has_sealed(env: &BTreeMap<String, String>) -> bool {
    env.values().any(|value| sealed::is_sealed(value))
}

/// Checks every sealed value of `env` as far as it can be without the key (prefix,
/// version, base64, length, ephemeral key), so a damaged value is refused when the
/// spec is set or a run is started, not halfway through a deploy. The error names the
/// variable, never its value.
pub fn check_sealed_env(env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for (key, value) in env {
        if sealed::is_sealed(value) {
            sealed::check(value)
                .map_err(|error| SpecError::new("env", format!("{key}: {error}")))?;
        }
    }
    Ok(())
}

/// A spec's environment with every sealed value opened. The values are wiped from
/// memory when it is dropped.
pub struct OpenedEnv {
    env: BTreeMap<String, String>,
    opened: Vec<String>,
}

impl OpenedEnv {
    /// Opens every sealed value of `env` with `key`. A value that does not open (or a
    /// missing key) is a permanent error naming the variable, never the value.
    pub fn open(
        env: &BTreeMap<String, String>,
        key: Option<&SecretKey>,
    ) -> Result<Self, StepError> {
        let mut opened_env = Self {
            env: BTreeMap::new(),
            opened: Vec::new(),
        };
        for (name, value) in env {
            if !sealed::is_sealed(value) {
                opened_env.env.insert(name.clone(), value.clone());
                continue;
            }
            let key = key.ok_or_else(|| {
                StepError::permanent(format!(
                    "spec.env.{name} is sealed, but this worker has no key to open it (set [secrets] key in morpheus.toml)"
                ))
            })?;
            let plaintext = sealed::open(key, value)
                .map_err(|error| StepError::permanent(format!("spec.env.{name}: {error}")))?;
            opened_env.env.insert(name.clone(), plaintext.to_string());
            opened_env.opened.push(plaintext.to_string());
        }
        Ok(opened_env)
    }

    /// The environment, sealed values replaced by their plaintext.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// A masker of the values that were opened.
    pub fn masker(&self) -> Masker {
        Masker::new(self.opened.iter().map(String::as_str))
    }
}

impl Drop for OpenedEnv {
    fn drop(&mut self) {
        for value in self.env.values_mut() {
            value.zeroize();
        }
        for value in &mut self.opened {
            value.zeroize();
        }
    }
}

impl std::fmt::Debug for OpenedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedEnv")
            .field("keys", &self.env.keys().collect::<Vec<_>>())
            .field("opened", &self.opened.len())
            .finish()
    }
}

/// Replaces opened values with [`MASK`] in text, JSON and step errors.
#[derive(Default)]
pub struct Masker {
    /// Longest first, so a value that contains another is masked whole.
    secrets: Vec<Zeroizing<String>>,
}

impl Masker {
    /// A masker of `plaintexts`. A value spanning several lines is also masked line by
    /// line, since logs arrive one line at a time. Empty values mask nothing.
    pub fn new<'a>(plaintexts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Zeroizing<String>> = Vec::new();
        for plaintext in plaintexts {
            let lines = plaintext.lines().map(str::trim_end);
            for part in std::iter::once(plaintext).chain(lines) {
                if !part.is_empty() && !secrets.iter().any(|known| known.as_str() == part) {
                    secrets.push(Zeroizing::new(part.to_owned()));
                }
            }
        }
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Self { secrets }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every opened value replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let mut masked = text.to_owned();
        for secret in &self.secrets {
            if masked.contains(secret.as_str()) {
                masked = masked.replace(secret.as_str(), MASK);
            }
        }
        masked
    }

    /// `value` with every string in it (keys too) masked.
    pub fn mask_json(&self, value: Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.mask(&text)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|item| self.mask_json(item)).collect())
            }
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(key, value)| (self.mask(&key), self.mask_json(value)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// The same failure (class and code) with its message masked.
    pub fn mask_error(&self, error: StepError) -> StepError {
        let masked = self.mask(error.message());
        let rebuilt = if error.is_retryable() {
            StepError::retryable(masked)
        } else {
            StepError::permanent(masked)
        };
        match error.code() {
            Some(code) => rebuilt.with_code(code.clone()),
            None => rebuilt,
        }
    }

    /// A sink that masks every line (and its fields) before handing it to `inner`.
    pub fn sink(self: &Arc<Self>, inner: LogSink) -> LogSink {
        let masker = self.clone();
        LogSink::new(move |level, message, fields| {
            inner.log(
                level,
                masker.mask(&message),
                fields.map(|fields| masker.mask_json(fields)),
            )
        })
    }
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} values)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use morpheus_engine::LogLevel;
    use serde_json::json;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn sealed_values_open_with_the_key_and_plain_ones_pass_through() {
        let key = SecretKey::generate();
        let env = env_of(&[
            ("TOKEN", &sealed::seal(&key.public_key(), "s3cr3t-token")),
            ("MODE", "production"),
        ]);
        assert!(has_sealed(&env));
        assert_eq!(check_sealed_env(&env), Ok(()));
        let opened = OpenedEnv::open(&env, Some(&key)).unwrap();
        assert_eq!(opened.env()["TOKEN"], "s3cr3t-token");
        assert_eq!(opened.env()["MODE"], "production");
        assert_eq!(
            opened.masker().mask("token=s3cr3t-token mode=production"),
            "token=*** mode=production"
        );
        assert!(!format!("{opened:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_value_that_does_not_open_names_the_variable_and_not_the_value() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        let env = env_of(&[("TOKEN", &sealed::seal(&key.public_key(), "s3cr3t-token"))]);
        let wrong = OpenedEnv::open(&env, Some(&other)).unwrap_err();
        assert!(!wrong.is_retryable());
        assert!(wrong.message().starts_with("spec.env.TOKEN: "), "{wrong}");
        assert!(wrong.message().contains("wrong key"), "{wrong}");
        let keyless = OpenedEnv::open(&env, None).unwrap_err();
        assert!(keyless.message().contains("no key"), "{keyless}");
        assert!(!keyless.message().contains(env["TOKEN"].as_str()));

        let damaged = env_of(&[("TOKEN", "sealed:v1:AAAA")]);
        let refused = check_sealed_env(&damaged).unwrap_err();
        assert_eq!(refused.field, "env");
        assert!(refused.message.starts_with("TOKEN: "), "{refused}");
        assert_eq!(check_sealed_env(&env_of(&[("A", "plain")])), Ok(()));
    }

    #[test]
    fn masking_covers_text_json_errors_and_log_lines() {
        let masker = Arc::new(Masker::new(["hunter2", "multi\nline", ""]));
        assert_eq!(masker.mask("pw hunter2hunter2"), "pw ******");
        assert_eq!(masker.mask("first: multi"), "first: ***");
        assert_eq!(
            masker.mask_json(json!({"stdout_tail": ["a hunter2", "line"], "n": 1})),
            json!({"stdout_tail": ["a ***", "***"], "n": 1})
        );
        let error = masker.mask_error(StepError::permanent("exited: hunter2"));
        assert_eq!(error, StepError::permanent("exited: ***"));
        assert!(masker.mask_error(StepError::retryable("x")).is_retryable());

        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = {
            let seen = seen.clone();
            LogSink::new(move |_, message, fields| seen.lock().unwrap().push((message, fields)))
        };
        let sink = masker.sink(inner);
        sink.log(
            LogLevel::Info,
            "echo hunter2",
            Some(json!({"stream": "stdout"})),
        );
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [("echo ***".to_owned(), Some(json!({"stream": "stdout"})))]
        );
        // The longer value first: one that contains another is masked whole.
        let nested = Masker::new(["abc", "xabcx"]);
        assert_eq!(nested.mask("xabcx abc"), "*** ***");
        assert!(Masker::new([""]).is_empty());
    }
}
