//! Reading Postgres rows: the driver decodes UUID, TIMESTAMPTZ and JSONB itself, and each
//! integer is read in its column's width (SMALLINT, INTEGER, BIGINT) and widened.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::store::rows::ReadRow;

impl ReadRow for PgRow {
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
        Ok(self.try_get::<i16, _>(column)?.into())
    }

    fn integer(&self, column: &str) -> EngineResult<i64> {
        Ok(self.try_get::<i32, _>(column)?.into())
    }

    fn opt_integer(&self, column: &str) -> EngineResult<Option<i64>> {
        Ok(self.try_get::<Option<i32>, _>(column)?.map(i64::from))
    }

    fn bigint(&self, column: &str) -> EngineResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_bigint(&self, column: &str) -> EngineResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn run_id(&self, column: &str) -> EngineResult<RunId> {
        Ok(RunId(self.try_get(column)?))
    }

    fn opt_run_id(&self, column: &str) -> EngineResult<Option<RunId>> {
        Ok(self.try_get::<Option<Uuid>, _>(column)?.map(RunId))
    }

    fn timestamp(&self, column: &str) -> EngineResult<DateTime<Utc>> {
        Ok(self.try_get(column)?)
    }

    fn opt_timestamp(&self, column: &str) -> EngineResult<Option<DateTime<Utc>>> {
        Ok(self.try_get(column)?)
    }

    fn json(&self, column: &str) -> EngineResult<Option<Value>> {
        Ok(self.try_get(column)?)
    }
}
