//! The change feed: triggers append an entry for every run created or changing status,
//! every log line and every document write, in commit order; readers page through it by
//! cursor and never see an entry twice or miss one, even with writers racing them.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use morpheus_engine::{
    FeedCursor, FeedEntry, FeedKind, LogLevel, Outcome, RunId, RunStatus, World, WriteOp,
};
use serde_json::json;

use crate::{apply_one, claim_one, log_op, start};

/// Reads after `after` until `expected` entries are readable (at most 20 s). On Postgres
/// an entry becomes readable once every transaction older than it has ended, in any
/// database of the cluster (tests running beside this one included), so right after a
/// write the feed may lag for a moment; it never skips.
async fn read_settled(
    world: &Arc<dyn World>,
    after: FeedCursor,
    page: u32,
    expected: usize,
) -> Vec<FeedEntry> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let entries = read_all(world, after, page).await;
        if entries.len() >= expected || tokio::time::Instant::now() >= deadline {
            return entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads everything readable after `after`, `page` entries at a time.
async fn read_all(world: &Arc<dyn World>, mut after: FeedCursor, page: u32) -> Vec<FeedEntry> {
    let mut entries = Vec::new();
    loop {
        let batch = world.read_feed(after, page).await.expect("read_feed");
        if batch.is_empty() {
            return entries;
        }
        assert!(batch.len() <= page as usize);
        after = batch.last().unwrap().cursor;
        entries.extend(batch);
    }
}

async fn feed_records_runs_logs_and_documents_in_commit_order(world: Arc<dyn World>) {
    assert_eq!(world.feed_head().await.unwrap(), FeedCursor::START);
    let run_id = start(&world, json!({"n": 1})).await;
    let fence = claim_one(&world, "w").await;
    apply_one(
        &world,
        log_op(
            fence,
            Some("s1"),
            LogLevel::Warn,
            "<b>disk</b> full",
            Utc::now(),
        ),
    )
    .await;
    world
        .put_document("things", "a", &json!({"v": 1}), None)
        .await
        .unwrap();
    world
        .put_document("things", "a", &json!({"v": 2}), Some(1))
        .await
        .unwrap();
    apply_one(
        &world,
        WriteOp::Finish {
            fence,
            outcome: Outcome::Completed(json!("done")),
        },
    )
    .await;

    let entries = read_settled(&world, FeedCursor::START, 100, 6).await;
    let kinds: Vec<FeedKind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            FeedKind::RunNew,
            FeedKind::RunUpdate,
            FeedKind::LogAppend,
            FeedKind::DocumentNew,
            FeedKind::DocumentUpdate,
            FeedKind::RunUpdate,
        ]
    );
    assert_eq!(entries[0].status, Some(RunStatus::Pending));
    assert_eq!(entries[1].status, Some(RunStatus::Running));
    assert_eq!(entries[5].status, Some(RunStatus::Completed));
    for entry in [&entries[0], &entries[1], &entries[2], &entries[5]] {
        assert_eq!(entry.run_id, Some(run_id));
        let run = entry.run.as_ref().expect("the run is joined");
        assert_eq!(run.workflow, crate::WF);
        assert_eq!(run.status, RunStatus::Completed, "the run as it is now");
    }
    let log = entries[2].log.as_ref().expect("the log line is joined");
    assert_eq!(log.message, "<b>disk</b> full");
    assert_eq!(log.step_key.as_deref(), Some("s1"));
    assert_eq!(log.level, LogLevel::Warn);
    assert_eq!(entries[3].collection.as_deref(), Some("things"));
    assert_eq!(entries[3].document_key.as_deref(), Some("a"));
    assert_eq!(entries[4].document, Some(json!({"v": 2})));

    // Cursors strictly increase and round-trip through their text form.
    for pair in entries.windows(2) {
        assert!(pair[0].cursor < pair[1].cursor);
    }
    for entry in &entries {
        let text = entry.cursor.to_string();
        assert_eq!(text.parse::<FeedCursor>().unwrap(), entry.cursor);
    }
    // One entry a page visits the same entries; the head is the last one.
    let paged = read_all(&world, FeedCursor::START, 1).await;
    let cursors = |list: &[FeedEntry]| list.iter().map(|e| e.cursor).collect::<Vec<_>>();
    assert_eq!(cursors(&paged), cursors(&entries));
    let head = world.feed_head().await.unwrap();
    assert_eq!(head, entries.last().unwrap().cursor);
    assert!(world.read_feed(head, 10).await.unwrap().is_empty());
    // From the middle: only what came after.
    let rest = read_all(&world, entries[2].cursor, 100).await;
    assert_eq!(cursors(&rest), cursors(&entries[3..]));
}

async fn feed_readers_racing_writers_see_every_entry_once(world: Arc<dyn World>) {
    const WRITERS: usize = 8;
    const RUNS_EACH: usize = 25;
    let start_cursor = world.feed_head().await.unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let world = world.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..RUNS_EACH {
                    ids.push(start(&world, json!({"w": w, "i": i})).await);
                }
                ids
            })
        })
        .collect();
    // Follow the feed while the writers write, the way a live view does.
    let reader = {
        let world = world.clone();
        tokio::spawn(async move {
            let mut seen: Vec<RunId> = Vec::new();
            let mut after = start_cursor;
            while seen.len() < WRITERS * RUNS_EACH {
                let batch = world.read_feed(after, 7).await.expect("read_feed");
                for entry in &batch {
                    assert!(entry.cursor > after, "cursors only move forward");
                    after = entry.cursor;
                    if entry.kind == FeedKind::RunNew {
                        seen.push(entry.run_id.unwrap());
                    }
                }
                if batch.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            (seen, after)
        })
    };
    let mut started = HashSet::new();
    for writer in writers {
        started.extend(writer.await.unwrap());
    }
    let (seen, after) = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the reader saw every run within 30 s")
        .unwrap();
    let unique: HashSet<RunId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no entry twice");
    assert_eq!(unique, started, "no entry missed");
    assert!(world.read_feed(after, 10).await.unwrap().is_empty());
}

async fn feed_prune_deletes_old_entries_only(world: Arc<dyn World>) {
    start(&world, json!(1)).await;
    start(&world, json!(2)).await;
    assert_eq!(
        world
            .prune_feed(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    let before = read_settled(&world, FeedCursor::START, 10, 2).await;
    assert_eq!(before.len(), 2);
    // Everything is old now, but the newest entry always stays (on SQLite it keeps
    // sequence numbers from going back after a prune).
    let deleted = world
        .prune_feed(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let after = read_all(&world, FeedCursor::START, 10).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].cursor, before[1].cursor);
    start(&world, json!(3)).await;
    let newer = read_settled(&world, before[1].cursor, 10, 1).await;
    assert_eq!(
        newer.len(),
        1,
        "an entry after a prune lies after every earlier cursor"
    );
    assert!(newer[0].cursor > before[1].cursor);
}

async fn feed_cursor_text_is_checked(_world: Arc<dyn World>) {
    for bad in ["", "12", "a-b", "1-", "-1", "1-2-3", "1.2"] {
        let error = bad.parse::<FeedCursor>().unwrap_err();
        assert!(error.to_string().contains("invalid feed cursor"), "{error}");
    }
    assert_eq!(
        "3-4".parse::<FeedCursor>().unwrap(),
        FeedCursor { txid: 3, seq: 4 }
    );
}

for_each_backend!(
    feed_records_runs_logs_and_documents_in_commit_order,
    feed_readers_racing_writers_see_every_entry_once,
    feed_prune_deletes_old_entries_only,
    feed_cursor_text_is_checked,
);
