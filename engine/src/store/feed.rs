//! [`FeedStore`]: the change feed, what an operator watching the engine live is told
//! about (a run created or changing status, a log line, a document written), in commit
//! order, resumable from a [`FeedCursor`].
//!
//! The feed is written by database triggers inside the transaction that made each
//! change (see `migrations/*/0006_feed.sql`), so it never disagrees with the tables and
//! covers every writer, in this process or another. Readers page through it with
//! [`FeedStore::read_feed`]; a reader that remembers the last cursor it handled and asks
//! again from there gets everything after it, in order, nothing twice.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::EngineResult;
use crate::ids::RunId;
use crate::model::{LogRecord, RunStatus};

/// A position in the feed: every entry after it is yet to be read.
///
/// Written as `<txid>-<seq>`. On SQLite `txid` is always 0 (its single writer assigns
/// `seq` in commit order); on Postgres it is the writing transaction's id, the first
/// sort key, because sequence numbers are taken before commit and so are not commit
/// order there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedCursor {
    /// The id of the transaction that wrote the entry (0 on SQLite).
    pub txid: u64,
    /// The entry's sequence number.
    pub seq: u64,
}

impl FeedCursor {
    /// Before the first entry.
    pub const START: FeedCursor = FeedCursor { txid: 0, seq: 0 };
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.txid, self.seq)
    }
}

/// A cursor that is not `<txid>-<seq>` with two unsigned integers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid feed cursor '{0}': expected <txid>-<seq>, as an event's `cursor` field gives it")]
pub struct InvalidFeedCursor(pub String);

impl FromStr for FeedCursor {
    type Err = InvalidFeedCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidFeedCursor(text.chars().take(64).collect());
        let (txid, seq) = text.split_once('-').ok_or_else(invalid)?;
        Ok(Self {
            txid: txid.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

/// What an entry says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// A run was created.
    RunNew,
    /// A run changed status.
    RunUpdate,
    /// A step (or the engine) wrote a log line.
    LogAppend,
    /// A document was created.
    DocumentNew,
    /// A document was replaced.
    DocumentUpdate,
}

impl FeedKind {
    /// The name stored in the feed and used as the event name (`run:new`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunNew => "run:new",
            Self::RunUpdate => "run:update",
            Self::LogAppend => "log:append",
            Self::DocumentNew => "document:new",
            Self::DocumentUpdate => "document:update",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "run:new" => Self::RunNew,
            "run:update" => Self::RunUpdate,
            "log:append" => Self::LogAppend,
            "document:new" => Self::DocumentNew,
            "document:update" => Self::DocumentUpdate,
            _ => return None,
        })
    }
}

/// The run an entry is about, as it is now (not as it was when the entry was written:
/// a reader behind the feed sees the newest state, which is what a display wants).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRun {
    /// Its workflow's name.
    pub workflow: String,
    /// Its queue.
    pub queue: String,
    /// Its status now.
    pub status: RunStatus,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The run that started it, for a child run.
    pub parent_run_id: Option<RunId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One entry of the feed, with what it points at read in the same query.
#[derive(Debug, Clone)]
pub struct FeedEntry {
    /// Where it is; reading after this cursor skips it.
    pub cursor: FeedCursor,
    /// What happened.
    pub kind: FeedKind,
    /// When it happened (the change's own timestamp).
    pub at: DateTime<Utc>,
    /// The run it is about (run and log entries).
    pub run_id: Option<RunId>,
    /// The status the run entered (run entries; `run` holds the newest status).
    pub status: Option<RunStatus>,
    /// The run, unless it has been deleted since (pruned).
    pub run: Option<FeedRun>,
    /// The log line (log entries, unless pruned since).
    pub log: Option<LogRecord>,
    /// The document's collection (document entries).
    pub collection: Option<String>,
    /// The document's key (document entries).
    pub document_key: Option<String>,
    /// The document's body now (document entries, unless deleted since).
    pub document: Option<Value>,
}

/// The change feed.
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// Up to `limit` entries after `after`, in commit order. Only entries of committed
    /// transactions that no later read can precede are returned, so reading again from
    /// the last entry's cursor never skips one.
    async fn read_feed(&self, after: FeedCursor, limit: u32) -> EngineResult<Vec<FeedEntry>>;

    /// The cursor of the newest readable entry ([`FeedCursor::START`] when empty): reading
    /// after it gives only what happens from now on.
    async fn feed_head(&self) -> EngineResult<FeedCursor>;

    /// Deletes entries older than `before` (retention), always keeping the newest one;
    /// returns how many.
    async fn prune_feed(&self, before: DateTime<Utc>) -> EngineResult<u64>;

    /// Starts a task that signals `changed` whenever the feed may have grown, and once
    /// after every (re)connection. Postgres hears every process (LISTEN/NOTIFY); SQLite
    /// has no notifications and hears only writes made through this same world, so
    /// readers still poll for other processes' writes. `None`: readers only poll.
    fn spawn_feed_listener(&self, changed: Arc<Notify>) -> Option<JoinHandle<()>> {
        let _ = changed;
        None
    }
}
