//! A small generic document store: JSON documents by `(collection, key)`, each with a
//! version for compare-and-set writes. It lets workflows keep their own domain records
//! (a deployment spec, a snapshot, the status of a deploy) in the engine's database
//! without writing SQL: both adapters implement the same four [`World`] methods and one
//! conformance suite (`engine/tests/conformance/documents.rs`) holds them to the same behaviour.
//!
//! [`Documents`] is the typed handle workflows and tools use. Inside a workflow, get it
//! from [`Ctx::documents`](crate::Ctx::documents) and call it **inside a step**: the
//! store is not journaled, so a replay must find the step's recorded output instead of
//! reading or writing again, and since a step body may run more than once its writes
//! should be idempotent (create-if-absent, or a compare-and-set that accepts "already
//! done").
//!
//! ```
//! use morpheus_engine::{Ctx, EngineError, ResultExt, WorkflowResult};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Order { done: bool }
//!
//! async fn mark_done(ctx: &Ctx, id: String) -> WorkflowResult<()> {
//!     let docs = ctx.documents();
//!     ctx.step("mark-done")
//!         .run(move |_| async move {
//!             docs.update("orders", &id, |order: &mut Order| {
//!                 order.done = true;
//!                 Ok::<(), EngineError>(())
//!             })
//!             .await
//!             .map(|updated| updated.is_some())
//!             .retryable()
//!         })
//!         .await?;
//!     Ok(())
//! }
//! ```

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EngineError, EngineResult};
use crate::world::World;

/// How many compare-and-set rounds [`Documents::update`] tries before giving up: each
/// lost round means another writer changed the document in between.
const UPDATE_ATTEMPTS: u32 = 64;

/// Longest random pause between lost rounds. Contending writers that retry at once
/// keep colliding; a short jittered pause lets one of them through.
const UPDATE_MAX_BACKOFF_MS: u64 = 20;

/// Default page size of [`DocumentQuery`].
pub const DEFAULT_DOCUMENT_LIMIT: u64 = 100;

/// A stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The collection (a namespace, like a table name).
    pub collection: String,
    /// Unique within the collection.
    pub key: String,
    /// The JSON body.
    pub body: Value,
    /// 1 when created, +1 on every replace.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last replaced.
    pub updated_at: DateTime<Utc>,
}

/// Which documents [`DocumentStore::list_documents`](crate::DocumentStore::list_documents) returns: one collection, newest first
/// (by creation time, then key), optionally only those whose top-level `field` is the
/// JSON string `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentQuery {
    /// The collection.
    pub collection: String,
    /// `(field, value)`: only documents whose body is an object whose top-level `field`
    /// is the JSON string `value` (numbers, booleans and nested fields never match).
    pub field_equals: Option<(String, String)>,
    /// At most this many (default [`DEFAULT_DOCUMENT_LIMIT`]).
    pub limit: Option<u64>,
}

impl DocumentQuery {
    /// Every document of `collection`, newest first (up to the default limit).
    pub fn new(collection: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            field_equals: None,
            limit: None,
        }
    }

    /// Only documents whose top-level `field` is the string `value`.
    pub fn field_equals(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.field_equals = Some((field.into(), value.into()));
        self
    }

    /// At most `limit` documents.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Checks the names before they reach SQL (adapters call this first).
    pub fn validate(&self) -> EngineResult<()> {
        check_collection(&self.collection)?;
        if let Some((field, _)) = &self.field_equals {
            let valid = field
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(EngineError::InvalidDocument(format!(
                    "filter field '{field}' must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a collection name (adapters call this before writing).
pub fn check_collection(collection: &str) -> EngineResult<()> {
    if collection.trim().is_empty() {
        return Err(EngineError::InvalidDocument(
            "collection name must not be empty".into(),
        ));
    }
    Ok(())
}

/// Checks a collection and key (adapters call this before writing).
pub fn check_key(collection: &str, key: &str) -> EngineResult<()> {
    check_collection(collection)?;
    if key.is_empty() {
        return Err(EngineError::InvalidDocument(format!(
            "document key in collection '{collection}' must not be empty"
        )));
    }
    Ok(())
}

/// A decoded document with its version and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The decoded body.
    pub value: T,
    /// The stored version (what a compare-and-set must name).
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last replaced.
    pub updated_at: DateTime<Utc>,
}

impl<T: DeserializeOwned> Versioned<T> {
    fn decode(document: Document) -> EngineResult<Self> {
        let value = serde_json::from_value(document.body).map_err(|error| {
            EngineError::InvalidDocument(format!(
                "document {}/{} does not decode: {error}",
                document.collection, document.key
            ))
        })?;
        Ok(Self {
            value,
            version: document.version,
            created_at: document.created_at,
            updated_at: document.updated_at,
        })
    }
}

/// Typed access to the document store over any [`World`]. Cheap to clone.
#[derive(Clone)]
pub struct Documents {
    world: Arc<dyn World>,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("backend", &self.world.backend())
            .finish()
    }
}

impl Documents {
    /// A handle on `world`'s document store.
    pub fn new(world: Arc<dyn World>) -> Self {
        Self { world }
    }

    /// The document, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        collection: &str,
        key: &str,
    ) -> EngineResult<Option<Versioned<T>>> {
        self.world
            .get_document(collection, key)
            .await?
            .map(Versioned::decode)
            .transpose()
    }

    /// Creates the document; [`EngineError::DocumentConflict`] if it exists already.
    /// Returns its version (1).
    pub async fn insert<T: Serialize>(
        &self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> EngineResult<i64> {
        let body = serde_json::to_value(value)?;
        Ok(self
            .world
            .put_document(collection, key, &body, None)
            .await?
            .version)
    }

    /// Creates the document unless it exists; returns whether it was created. Safe to
    /// repeat (a step body that may run twice).
    pub async fn insert_if_absent<T: Serialize>(
        &self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> EngineResult<bool> {
        match self.insert(collection, key, value).await {
            Ok(_) => Ok(true),
            Err(EngineError::DocumentConflict { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Replaces the document if its version is still `expected_version`
    /// ([`EngineError::DocumentConflict`] otherwise). Returns the new version.
    pub async fn replace<T: Serialize>(
        &self,
        collection: &str,
        key: &str,
        value: &T,
        expected_version: i64,
    ) -> EngineResult<i64> {
        let body = serde_json::to_value(value)?;
        Ok(self
            .world
            .put_document(collection, key, &body, Some(expected_version))
            .await?
            .version)
    }

    /// Read-modify-write: applies `change` to the current document and writes it back
    /// with a compare-and-set, re-reading and re-applying when another writer got in
    /// between. `change` may refuse with its own error (nothing is written then).
    /// Returns the stored result, or `None` if the document does not exist.
    pub async fn update<T, E, F>(
        &self,
        collection: &str,
        key: &str,
        mut change: F,
    ) -> Result<Option<Versioned<T>>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<EngineError>,
        F: FnMut(&mut T) -> Result<(), E>,
    {
        for round in 0..UPDATE_ATTEMPTS {
            if round > 0 {
                let ceiling = (1u64 << round.min(5)).min(UPDATE_MAX_BACKOFF_MS);
                let pause = rand::thread_rng().gen_range(0..=ceiling);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            let Some(mut current) = self.get::<T>(collection, key).await? else {
                return Ok(None);
            };
            change(&mut current.value)?;
            let body = serde_json::to_value(&current.value).map_err(EngineError::from)?;
            match self
                .world
                .put_document(collection, key, &body, Some(current.version))
                .await
            {
                Ok(stored) => {
                    return Ok(Some(Versioned {
                        value: current.value,
                        version: stored.version,
                        created_at: stored.created_at,
                        updated_at: stored.updated_at,
                    }))
                }
                Err(EngineError::DocumentConflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(EngineError::DocumentConflict {
            collection: collection.to_owned(),
            key: key.to_owned(),
            expected: None,
            found: None,
        }
        .into())
    }

    /// Documents of a collection, newest first, decoded as `T`.
    pub async fn list<T: DeserializeOwned>(
        &self,
        query: &DocumentQuery,
    ) -> EngineResult<Vec<Versioned<T>>> {
        self.world
            .list_documents(query)
            .await?
            .into_iter()
            .map(Versioned::decode)
            .collect()
    }

    /// Deletes the document; returns whether it existed.
    pub async fn delete(&self, collection: &str, key: &str) -> EngineResult<bool> {
        self.world.delete_document(collection, key, None).await
    }
}
