//! [`DocumentStore`] on Postgres: bodies are JSONB.

use async_trait::async_trait;
use serde_json::Value;

use super::PostgresWorld;
use crate::documents::{check_key, Document, DocumentQuery, DEFAULT_DOCUMENT_LIMIT};
use crate::error::{EngineError, EngineResult};
use crate::store::rows::document_from_row;
use crate::store::DocumentStore;

#[async_trait]
impl DocumentStore for PostgresWorld {
    async fn put_document(
        &self,
        collection: &str,
        key: &str,
        body: &Value,
        expected_version: Option<i64>,
    ) -> EngineResult<Document> {
        check_key(collection, key)?;
        let written = match expected_version {
            None => {
                sqlx::query(
                    "INSERT INTO workflow_documents (collection, key, body, version)
                     VALUES ($1, $2, $3, 1)
                     ON CONFLICT (collection, key) DO NOTHING
                     RETURNING *",
                )
                .bind(collection)
                .bind(key)
                .bind(body)
                .fetch_optional(&self.pool)
                .await?
            }
            Some(expected) => sqlx::query(
                "UPDATE workflow_documents SET body = $3, version = version + 1, updated_at = now()
                     WHERE collection = $1 AND key = $2 AND version = $4
                     RETURNING *",
            )
            .bind(collection)
            .bind(key)
            .bind(body)
            .bind(expected)
            .fetch_optional(&self.pool)
            .await?,
        };
        match written {
            Some(row) => document_from_row(&row),
            None => {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM workflow_documents WHERE collection = $1 AND key = $2",
                )
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                Err(EngineError::DocumentConflict {
                    collection: collection.to_owned(),
                    key: key.to_owned(),
                    expected: expected_version,
                    found,
                })
            }
        }
    }

    async fn get_document(&self, collection: &str, key: &str) -> EngineResult<Option<Document>> {
        let row =
            sqlx::query("SELECT * FROM workflow_documents WHERE collection = $1 AND key = $2")
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(document_from_row).transpose()
    }

    async fn list_documents(&self, query: &DocumentQuery) -> EngineResult<Vec<Document>> {
        query.validate()?;
        let (field, value) = match &query.field_equals {
            Some((field, value)) => (Some(field.as_str()), Some(value.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM workflow_documents
             WHERE collection = $1
               AND ($2::text IS NULL OR (jsonb_typeof(body -> $2) = 'string' AND body ->> $2 = $3))
             ORDER BY created_at DESC, key DESC LIMIT $4",
        )
        .bind(&query.collection)
        .bind(field)
        .bind(value)
        .bind(query.limit.unwrap_or(DEFAULT_DOCUMENT_LIMIT) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    async fn delete_document(
        &self,
        collection: &str,
        key: &str,
        expected_version: Option<i64>,
    ) -> EngineResult<bool> {
        check_key(collection, key)?;
        let deleted = sqlx::query(
            "DELETE FROM workflow_documents
             WHERE collection = $1 AND key = $2 AND ($3::bigint IS NULL OR version = $3)",
        )
        .bind(collection)
        .bind(key)
        .bind(expected_version)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if deleted == 0 {
            if let Some(expected) = expected_version {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM workflow_documents WHERE collection = $1 AND key = $2",
                )
                .bind(collection)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                if found.is_some() {
                    return Err(EngineError::DocumentConflict {
                        collection: collection.to_owned(),
                        key: key.to_owned(),
                        expected: Some(expected),
                        found,
                    });
                }
            }
        }
        Ok(deleted > 0)
    }
}
