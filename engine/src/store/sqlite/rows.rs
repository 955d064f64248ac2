//! Reading SQLite rows. Differs from Postgres because SQLite has no UUID, timestamp or
//! JSON types: ids, times (RFC 3339, see `format_ts`) and JSON are TEXT and parsed here,
//! and every integer is a 64-bit INTEGER.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::rows::{decode_error, workflow_keys, ReadRow};

impl ReadRow for SqliteRow {
    fn text(&self, column: &str) -> EngineResult<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> EngineResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn boolean(&self, column: &str) -> EngineResult<bool> {
        Ok(self.try_get(column)?)
    }

    fn smallint(&self, column: &str) -> EngineResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn integer(&self, column: &str) -> EngineResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_integer(&self, column: &str) -> EngineResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn bigint(&self, column: &str) -> EngineResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_bigint(&self, column: &str) -> EngineResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn run_id(&self, column: &str) -> EngineResult<RunId> {
        parse_run_id(&self.try_get::<String, _>(column)?)
    }

    fn opt_run_id(&self, column: &str) -> EngineResult<Option<RunId>> {
        let text: Option<String> = self.try_get(column)?;
        text.as_deref().map(parse_run_id).transpose()
    }

    fn timestamp(&self, column: &str) -> EngineResult<DateTime<Utc>> {
        parse_ts(&self.try_get::<String, _>(column)?)
    }

    fn opt_timestamp(&self, column: &str) -> EngineResult<Option<DateTime<Utc>>> {
        parse_opt_ts(self.try_get(column)?)
    }

    fn json(&self, column: &str) -> EngineResult<Option<Value>> {
        parse_json(self.try_get(column)?)
    }
}

pub(super) fn parse_ts(text: &str) -> EngineResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|ts| ts.with_timezone(&Utc))
        .map_err(|error| decode_error(format!("bad timestamp '{text}': {error}")))
}

pub(super) fn parse_opt_ts(text: Option<String>) -> EngineResult<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

pub(super) fn parse_json(text: Option<String>) -> EngineResult<Option<Value>> {
    Ok(text.as_deref().map(serde_json::from_str).transpose()?)
}

pub(super) fn parse_run_id(text: &str) -> EngineResult<RunId> {
    RunId::from_str(text).map_err(decode_error)
}

/// The `workflow@version` keys as a JSON array, for `json_each` (SQLite has no arrays).
pub(super) fn workflow_keys_json(workflows: &[(String, u32)]) -> String {
    serde_json::to_string(&workflow_keys(workflows)).expect("strings serialize")
}
