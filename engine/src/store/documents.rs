//! [`DocumentStore`]: workflows' own JSON documents (see [`crate::documents`]).

use async_trait::async_trait;
use serde_json::Value;

use crate::documents::{Document, DocumentQuery};
use crate::error::EngineResult;

/// Documents by collection and key, compare-and-set on a version.
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// Writes a document (see [`crate::documents`]). With `expected_version` `None` it
    /// is created and must not exist yet; with `Some(v)` it replaces the stored body only
    /// while the stored version is still `v` (compare-and-set). Returns the document as
    /// stored (version 1 after a create, `v + 1` after a replace). A failed precondition
    /// is [`crate::EngineError::DocumentConflict`] and writes nothing.
    async fn put_document(
        &self,
        collection: &str,
        key: &str,
        body: &Value,
        expected_version: Option<i64>,
    ) -> EngineResult<Document>;

    /// One document.
    async fn get_document(&self, collection: &str, key: &str) -> EngineResult<Option<Document>>;

    /// Documents of one collection, newest first (see [`DocumentQuery`]).
    async fn list_documents(&self, query: &DocumentQuery) -> EngineResult<Vec<Document>>;

    /// Deletes a document (with `expected_version`, only while it is at that version,
    /// else [`crate::EngineError::DocumentConflict`]). Returns whether one was deleted.
    async fn delete_document(
        &self,
        collection: &str,
        key: &str,
        expected_version: Option<i64>,
    ) -> EngineResult<bool>;
}
