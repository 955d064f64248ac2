//! Durations in configuration files written like `10s`, `1m 30s`, `250ms` (serde
//! `with` module).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes a duration as humantime text (`1m 30s`).
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

/// Reads a duration from humantime text (`10s`, `250ms`).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|error| serde::de::Error::custom(format!("'{text}': {error}")))
}
