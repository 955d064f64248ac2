//! The document store ([`World::put_document`] and friends): create-only inserts,
//! compare-and-set replaces, newest-first listing with a top-level string filter, deletes;
//! a rejected write changes nothing.

use std::sync::Arc;

use morpheus_engine::{DocumentQuery, Documents, EngineError, World};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn assert_conflict(
    result: Result<impl std::fmt::Debug, EngineError>,
    expected: Option<i64>,
    found: Option<i64>,
) {
    match result {
        Err(EngineError::DocumentConflict {
            expected: e,
            found: f,
            ..
        }) => {
            assert_eq!((e, f), (expected, found), "conflict details");
        }
        other => panic!("expected DocumentConflict, got {other:?}"),
    }
}

async fn create_then_get_returns_the_body_at_version_one(world: Arc<dyn World>) {
    let body = json!({"name": "site", "port": 3000, "nested": {"a": [1, 2]}});
    let stored = world
        .put_document("specs", "agent-1", &body, None)
        .await
        .expect("create");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.body, body);
    assert_eq!(stored.created_at, stored.updated_at);
    let read = world
        .get_document("specs", "agent-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read, stored);
    assert!(world
        .get_document("specs", "agent-2")
        .await
        .expect("get")
        .is_none());
    assert!(
        world
            .get_document("other", "agent-1")
            .await
            .expect("get")
            .is_none(),
        "collections are separate namespaces"
    );
}

async fn creating_an_existing_document_conflicts_and_keeps_the_first(world: Arc<dyn World>) {
    world
        .put_document("specs", "a", &json!({"v": "first"}), None)
        .await
        .expect("create");
    assert_conflict(
        world
            .put_document("specs", "a", &json!({"v": "second"}), None)
            .await,
        None,
        Some(1),
    );
    let read = world.get_document("specs", "a").await.unwrap().unwrap();
    assert_eq!(read.body, json!({"v": "first"}));
    assert_eq!(read.version, 1);
}

async fn compare_and_set_replaces_only_at_the_expected_version(world: Arc<dyn World>) {
    world
        .put_document("runs", "r", &json!({"status": "queued"}), None)
        .await
        .unwrap();
    let second = world
        .put_document("runs", "r", &json!({"status": "capturing"}), Some(1))
        .await
        .expect("replace at version 1");
    assert_eq!(second.version, 2);
    assert!(second.updated_at >= second.created_at);
    // A writer still holding version 1 loses and writes nothing.
    assert_conflict(
        world
            .put_document("runs", "r", &json!({"status": "stale"}), Some(1))
            .await,
        Some(1),
        Some(2),
    );
    let read = world.get_document("runs", "r").await.unwrap().unwrap();
    assert_eq!(read.body, json!({"status": "capturing"}));
    assert_eq!(read.version, 2);
    assert_eq!(read.created_at, second.created_at);
    // Replacing a document that does not exist is a conflict too, and creates nothing.
    assert_conflict(
        world
            .put_document("runs", "missing", &json!({}), Some(1))
            .await,
        Some(1),
        None,
    );
    assert!(world
        .get_document("runs", "missing")
        .await
        .unwrap()
        .is_none());
}

async fn list_is_newest_first_filtered_and_limited(world: Arc<dyn World>) {
    for (key, agent) in [("1", "a"), ("2", "b"), ("3", "a"), ("4", "a")] {
        world
            .put_document("runs", key, &json!({"agent_id": agent, "n": key}), None)
            .await
            .unwrap();
        // Distinct creation times on both backends.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    world
        .put_document("snapshots", "x", &json!({"agent_id": "a"}), None)
        .await
        .unwrap();
    let keys = |docs: Vec<morpheus_engine::Document>| -> Vec<String> {
        docs.into_iter().map(|d| d.key).collect()
    };
    let all = world
        .list_documents(&DocumentQuery::new("runs"))
        .await
        .unwrap();
    assert_eq!(keys(all), ["4", "3", "2", "1"]);
    let of_a = world
        .list_documents(&DocumentQuery::new("runs").field_equals("agent_id", "a"))
        .await
        .unwrap();
    assert_eq!(keys(of_a), ["4", "3", "1"]);
    let limited = world
        .list_documents(
            &DocumentQuery::new("runs")
                .field_equals("agent_id", "a")
                .limit(2),
        )
        .await
        .unwrap();
    assert_eq!(keys(limited), ["4", "3"]);
    // A replace keeps the creation order.
    world
        .put_document("runs", "1", &json!({"agent_id": "a", "n": "1b"}), Some(1))
        .await
        .unwrap();
    let after = world
        .list_documents(&DocumentQuery::new("runs").field_equals("agent_id", "a"))
        .await
        .unwrap();
    assert_eq!(keys(after), ["4", "3", "1"]);
    assert!(world
        .list_documents(&DocumentQuery::new("empty"))
        .await
        .unwrap()
        .is_empty());
}

async fn filter_matches_only_top_level_strings(world: Arc<dyn World>) {
    let docs = [
        ("string", json!({"port": "3000"})),
        ("number", json!({"port": 3000})),
        ("nested", json!({"inner": {"port": "3000"}})),
        ("array", json!(["port", "3000"])),
        ("null", json!({"port": null})),
    ];
    for (key, body) in &docs {
        world.put_document("c", key, body, None).await.unwrap();
    }
    let matched = world
        .list_documents(&DocumentQuery::new("c").field_equals("port", "3000"))
        .await
        .unwrap();
    let keys: Vec<_> = matched.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["string"]);
}

async fn bad_names_are_rejected_before_anything_is_written(world: Arc<dyn World>) {
    for field in [
        "",
        "a.b",
        "x'); DROP TABLE workflow_documents; --",
        "1abc",
        "a b",
    ] {
        match world
            .list_documents(&DocumentQuery::new("c").field_equals(field, "v"))
            .await
        {
            Err(EngineError::InvalidDocument(message)) => {
                assert!(message.contains("filter field"), "{message}")
            }
            other => panic!("field {field:?}: expected InvalidDocument, got {other:?}"),
        }
    }
    assert!(matches!(
        world.put_document("", "k", &json!({}), None).await,
        Err(EngineError::InvalidDocument(_))
    ));
    assert!(matches!(
        world.put_document("c", "", &json!({}), None).await,
        Err(EngineError::InvalidDocument(_))
    ));
    assert!(world
        .list_documents(&DocumentQuery::new("c"))
        .await
        .unwrap()
        .is_empty());
}

async fn delete_removes_once_and_honours_the_expected_version(world: Arc<dyn World>) {
    world
        .put_document("c", "k", &json!({"a": 1}), None)
        .await
        .unwrap();
    world
        .put_document("c", "k", &json!({"a": 2}), Some(1))
        .await
        .unwrap();
    assert_conflict(
        world.delete_document("c", "k", Some(1)).await,
        Some(1),
        Some(2),
    );
    assert!(world.get_document("c", "k").await.unwrap().is_some());
    assert!(world.delete_document("c", "k", Some(2)).await.unwrap());
    assert!(world.get_document("c", "k").await.unwrap().is_none());
    assert!(!world.delete_document("c", "k", None).await.unwrap());
    assert!(!world.delete_document("c", "k", Some(3)).await.unwrap());
    // The key can be created afresh, starting at version 1 again.
    let again = world
        .put_document("c", "k", &json!({"a": 3}), None)
        .await
        .unwrap();
    assert_eq!(again.version, 1);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    owner: String,
    count: u32,
}

async fn typed_updates_from_many_writers_are_never_lost(world: Arc<dyn World>) {
    let docs = Documents::new(world.clone());
    let initial = Counter {
        owner: "x".into(),
        count: 0,
    };
    assert!(docs
        .insert_if_absent("counters", "c", &initial)
        .await
        .unwrap());
    assert!(
        !docs
            .insert_if_absent("counters", "c", &initial)
            .await
            .unwrap(),
        "a second create-if-absent is a no-op"
    );
    let writers = 8;
    let increments = 5;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let docs = docs.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..increments {
                docs.update::<Counter, EngineError, _>("counters", "c", |counter| {
                    counter.count += 1;
                    Ok(())
                })
                .await
                .expect("update")
                .expect("exists");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let counter = docs
        .get::<Counter>("counters", "c")
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(counter.value.count, writers * increments);
    assert_eq!(counter.version, i64::from(writers * increments) + 1);
    // A change that refuses writes nothing.
    let refused = docs
        .update::<Counter, Refusal, _>("counters", "c", |counter| {
            counter.count = 0;
            Err(Refusal::No)
        })
        .await;
    assert_eq!(refused, Err(Refusal::No));
    let unchanged = docs.get::<Counter>("counters", "c").await.unwrap().unwrap();
    assert_eq!(unchanged.version, counter.version);
    // Updating a missing document reports None and creates nothing.
    let missing = docs
        .update::<Counter, EngineError, _>("counters", "nope", |c| {
            c.count = 1;
            Ok(())
        })
        .await
        .unwrap();
    assert!(missing.is_none());
    assert!(docs
        .get::<Counter>("counters", "nope")
        .await
        .unwrap()
        .is_none());
    let listed = docs
        .list::<Counter>(&DocumentQuery::new("counters").field_equals("owner", "x"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].value.count, writers * increments);
}

/// A caller's own error type for [`Documents::update`].
#[derive(Debug, PartialEq)]
enum Refusal {
    No,
    Engine(String),
}

impl From<EngineError> for Refusal {
    fn from(error: EngineError) -> Self {
        Self::Engine(error.to_string())
    }
}

for_each_backend!(
    create_then_get_returns_the_body_at_version_one,
    creating_an_existing_document_conflicts_and_keeps_the_first,
    compare_and_set_replaces_only_at_the_expected_version,
    list_is_newest_first_filtered_and_limited,
    filter_matches_only_top_level_strings,
    bad_names_are_rejected_before_anything_is_written,
    delete_removes_once_and_honours_the_expected_version,
    typed_updates_from_many_writers_are_never_lost,
);
