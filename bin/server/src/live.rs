//! Live events: one pump per server follows the engine's change feed and broadcasts
//! each entry, turned into named events, to every connected client; a client that comes
//! with a cursor (`?after=` or `Last-Event-ID`) first reads what it missed from the
//! database, then joins the broadcast where its catch-up ended, so it sees every event
//! after its cursor once, in order.
//!
//! Event names: `run:new`, `run:update`, `log:append` for every run, and for directory
//! deploys `deployment:run:new`, `deployment:run:update`, `deployment:log:append` and
//! `deployment:snapshot:created`. One feed entry can give two events (a deploy run's log
//! line is both `log:append` and `deployment:log:append`); the second one's cursor has
//! the suffix `.1`, so a cursor still names exactly one event.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use morpheus_engine::Workflow;
use morpheus_engine::{FeedCursor, FeedEntry, FeedKind, RunId, World};
use morpheus_workflows::deploy::model::{DeploymentRun, SourceSnapshot};
use morpheus_workflows::deploy::store::{RUNS, SNAPSHOTS};
use morpheus_workflows::deploy::DeployStart;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Notify};

use crate::api::deployments::{RunView, SnapshotView};
use crate::api::logs::LogLine;

/// How many events a slow client may fall behind the broadcast before it is moved back
/// to reading from the database.
const BROADCAST_CAPACITY: usize = 4096;

/// The pump reads the feed at most this often while it is busy: short beside the
/// live-event budget (an event reaches clients within 100 ms), long enough to batch a
/// busy feed into few queries (each costs the database a round trip and a snapshot).
const MIN_READ_INTERVAL: Duration = Duration::from_millis(25);

/// Feed entries read per query.
pub const FEED_PAGE: u32 = 500;

/// Where an event is in the stream: a feed entry and which of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventCursor {
    /// The feed entry.
    pub feed: FeedCursor,
    /// 0 for the entry's first event, 1 for its second.
    pub sub: u8,
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sub {
            0 => write!(f, "{}", self.feed),
            sub => write!(f, "{}.{sub}", self.feed),
        }
    }
}

impl FromStr for EventCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (feed, sub) = match text.split_once('.') {
            Some((feed, sub)) => (
                feed,
                sub.parse::<u8>()
                    .map_err(|_| format!("invalid cursor '{text}': bad suffix"))?,
            ),
            None => (text, 0),
        };
        let feed = feed
            .parse::<FeedCursor>()
            .map_err(|error| error.to_string())?;
        Ok(Self { feed, sub })
    }
}

/// One event as clients receive it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    /// Resume after this event with `?after=<cursor>`.
    pub cursor: String,
    /// Its name (`run:update`, `deployment:log:append`, …).
    pub event: &'static str,
    /// What it says.
    pub data: Value,
    #[serde(skip)]
    position: EventCursor,
    #[serde(skip)]
    run_id: Option<RunId>,
    #[serde(skip)]
    agent_id: Option<String>,
    #[serde(skip)]
    workflow: Option<String>,
    /// The event as sent, serialized once, by the first client that sends it, however
    /// many clients follow it (an event no client's filter accepts is never
    /// serialized).
    #[serde(skip)]
    wire: OnceLock<Utf8Bytes>,
}

impl LiveEvent {
    /// Its position.
    pub fn position(&self) -> EventCursor {
        self.position
    }

    /// The JSON text a client receives (`{"cursor","event","data"}`); cloning it shares
    /// the bytes.
    pub fn wire(&self) -> Utf8Bytes {
        self.wire
            .get_or_init(|| {
                // Serializing a `Value` with string keys cannot fail.
                serde_json::to_string(self).unwrap_or_default().into()
            })
            .clone()
    }
}

/// Which events a client wants (all given filters must match).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events about this run.
    pub run_id: Option<RunId>,
    /// Only events about this agent's deploys.
    pub agent_id: Option<String>,
    /// Only events about runs of this workflow.
    pub workflow: Option<String>,
    /// Only these event names (empty: all).
    pub events: Vec<String>,
}

impl EventFilter {
    /// Whether `event` passes.
    pub fn accepts(&self, event: &LiveEvent) -> bool {
        (self.run_id.is_none() || self.run_id == event.run_id)
            && (self.agent_id.is_none() || self.agent_id == event.agent_id)
            && (self.workflow.is_none() || self.workflow == event.workflow)
            && (self.events.is_empty() || self.events.iter().any(|name| name == event.event))
    }
}

impl EventFilter {
    /// Whether some event of `entry` may pass, judged from the entry alone (before its
    /// events are built). Conservative: document entries name their run and agent in
    /// their body, so they always may.
    fn may_want(&self, entry: &FeedEntry) -> bool {
        if matches!(entry.kind, FeedKind::DocumentNew | FeedKind::DocumentUpdate) {
            return true;
        }
        let run = entry.run.as_ref();
        (self.run_id.is_none() || self.run_id == entry.run_id)
            && (self.workflow.is_none()
                || self.workflow.as_deref() == run.map(|r| r.workflow.as_str()))
            && (self.agent_id.is_none()
                || self.agent_id == run.and_then(|r| agent_of_queue(&r.queue)))
    }
}

/// What the connected clients follow, so the pump builds (and broadcasts) only the
/// events some client may want: with clients that each follow one run, the rest of a
/// busy feed costs the server a filter check per entry, not an event per client.
#[derive(Default)]
struct Interest {
    filters: std::sync::Mutex<std::collections::HashMap<u64, EventFilter>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Interest {
    fn wants(&self, entry: &FeedEntry) -> bool {
        self.filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .any(|filter| filter.may_want(entry))
    }
}

/// A client's registered filter; dropping it unregisters the filter.
pub struct InterestGuard {
    interest: Arc<Interest>,
    id: u64,
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        self.interest
            .filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The agent whose deploy pipeline runs in `queue` (`deploy:<agent>`).
fn agent_of_queue(queue: &str) -> Option<String> {
    queue.strip_prefix("deploy:").map(str::to_owned)
}

/// The events a feed entry gives, in order.
pub fn events_of(entry: &FeedEntry) -> Vec<LiveEvent> {
    let workflow = entry.run.as_ref().map(|run| run.workflow.clone());
    let agent_id = entry
        .run
        .as_ref()
        .and_then(|run| agent_of_queue(&run.queue));
    let event = |sub: u8, name: &'static str, data: Value, agent: Option<String>| {
        let position = EventCursor {
            feed: entry.cursor,
            sub,
        };
        LiveEvent {
            cursor: position.to_string(),
            event: name,
            data,
            position,
            run_id: entry.run_id,
            agent_id: agent,
            workflow: workflow.clone(),
            wire: OnceLock::new(),
        }
    };
    match entry.kind {
        FeedKind::RunNew | FeedKind::RunUpdate => {
            let name = if entry.kind == FeedKind::RunNew {
                "run:new"
            } else {
                "run:update"
            };
            let run = entry.run.as_ref();
            let data = json!({
                "run_id": entry.run_id,
                "status": entry.status,
                "workflow": run.map(|r| &r.workflow),
                "queue": run.map(|r| &r.queue),
                "current_status": run.map(|r| r.status),
                "error": run.and_then(|r| r.error.as_deref()),
                "parent_run_id": run.and_then(|r| r.parent_run_id),
                "at": entry.at,
            });
            vec![event(0, name, data, agent_id)]
        }
        FeedKind::LogAppend => {
            let Some(log) = &entry.log else {
                return Vec::new();
            };
            let line = LogLine::from(log);
            let mut events = vec![event(
                0,
                "log:append",
                serde_json::to_value(&line).unwrap_or(Value::Null),
                agent_id.clone(),
            )];
            if workflow.as_deref() == Some(DeployStart::NAME) {
                events.push(event(
                    1,
                    "deployment:log:append",
                    json!({
                        "runId": log.run_id.to_string(),
                        "agentId": agent_id,
                        "line": line,
                    }),
                    agent_id.clone(),
                ));
            }
            events
        }
        FeedKind::DocumentNew | FeedKind::DocumentUpdate => {
            let Some(body) = entry.document.clone() else {
                return Vec::new();
            };
            match entry.collection.as_deref() {
                Some(RUNS) => {
                    let Ok(run) = serde_json::from_value::<DeploymentRun>(body) else {
                        return Vec::new();
                    };
                    let name = if entry.kind == FeedKind::DocumentNew {
                        "deployment:run:new"
                    } else {
                        "deployment:run:update"
                    };
                    let agent = Some(run.agent_id.clone());
                    let mut live = event(
                        0,
                        name,
                        serde_json::to_value(RunView::from(&run)).unwrap_or(Value::Null),
                        agent,
                    );
                    live.run_id = run.id.parse().ok();
                    live.workflow = Some(DeployStart::NAME.to_owned());
                    vec![live]
                }
                Some(SNAPSHOTS) if entry.kind == FeedKind::DocumentNew => {
                    let Ok(snapshot) = serde_json::from_value::<SourceSnapshot>(body) else {
                        return Vec::new();
                    };
                    let agent = Some(snapshot.agent_id.clone());
                    vec![event(
                        0,
                        "deployment:snapshot:created",
                        serde_json::to_value(SnapshotView::from(&snapshot)).unwrap_or(Value::Null),
                        agent,
                    )]
                }
                _ => Vec::new(),
            }
        }
    }
}

/// Reads the events after `after` from the database (at most one page of feed entries):
/// what a reconnecting client missed.
pub async fn read_after(
    world: &Arc<dyn World>,
    after: EventCursor,
) -> morpheus_engine::EngineResult<Vec<LiveEvent>> {
    // Unless `after` covers its whole entry, that entry may still have a later event
    // (sub 1) to give: read from just before it. Nothing lies between (txid, seq - 1)
    // and (txid, seq) in feed order, so this re-reads only that entry.
    let from = if after.sub == u8::MAX || after.feed == FeedCursor::START {
        after.feed
    } else {
        FeedCursor {
            txid: after.feed.txid,
            seq: after.feed.seq.saturating_sub(1),
        }
    };
    let entries = world.read_feed(from, FEED_PAGE).await?;
    Ok(entries
        .iter()
        .flat_map(events_of)
        .filter(|event| event.position > after)
        .collect())
}

/// The pump's handle, shared by every request.
#[derive(Clone)]
pub struct LiveFeed {
    inner: Arc<Inner>,
}

struct Inner {
    world: Arc<dyn World>,
    interest: Arc<Interest>,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// The cursor of the newest event broadcast (clients join after it).
    position: watch::Receiver<EventCursor>,
    closed: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

impl LiveFeed {
    /// Starts the pump from the feed's head (what happens from now on), woken by the
    /// database's notifications where it has them and by `poll` otherwise.
    pub async fn start(world: Arc<dyn World>, poll: Duration) -> Self {
        let head = loop {
            match world.feed_head().await {
                Ok(head) => break head,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the change feed's head; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let start = EventCursor {
            feed: head,
            sub: u8::MAX,
        };
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (position_tx, position) = watch::channel(start);
        let (closed, _) = watch::channel(false);
        let changed = Arc::new(Notify::new());
        let interest = Arc::new(Interest::default());
        let mut tasks = Vec::new();
        if let Some(listener) = world.spawn_feed_listener(changed.clone()) {
            tasks.push(listener);
        }
        tasks.push(tokio::spawn(pump(
            world.clone(),
            interest.clone(),
            sender.clone(),
            position_tx,
            changed,
            poll,
        )));
        Self {
            inner: Arc::new(Inner {
                world,
                interest,
                sender,
                position,
                closed,
                tasks: std::sync::Mutex::new(tasks),
            }),
        }
    }

    /// The database.
    pub fn world(&self) -> &Arc<dyn World> {
        &self.inner.world
    }

    /// Registers what a client follows: until the guard is dropped, the pump builds the
    /// events `filter` may want. Register before [`LiveFeed::subscribe`], so nothing
    /// broadcast after the join is skipped for want of interest.
    pub fn register(&self, filter: EventFilter) -> InterestGuard {
        let interest = self.inner.interest.clone();
        let id = interest
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        interest
            .filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, filter);
        InterestGuard { interest, id }
    }

    /// Joins the broadcast: the receiver gets every event after the returned cursor
    /// that some registered client may want.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<LiveEvent>>, EventCursor) {
        // Subscribe first, then read the position: an event broadcast in between is
        // both received and after the position, so it is not lost (and a client
        // drops what it already has by cursor).
        let receiver = self.inner.sender.subscribe();
        let position = *self.inner.position.borrow();
        (receiver, position)
    }

    /// Resolves when the server shuts down (streams end then).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.inner.closed.subscribe();
        async move {
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// Ends every stream.
    pub fn close(&self) {
        let _ = self.inner.closed.send(true);
    }

    /// How many clients follow the broadcast now.
    pub fn clients(&self) -> usize {
        self.inner.sender.receiver_count()
    }
}

async fn pump(
    world: Arc<dyn World>,
    interest: Arc<Interest>,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    position: watch::Sender<EventCursor>,
    changed: Arc<Notify>,
    poll: Duration,
) {
    let mut cursor = position.borrow().feed;
    loop {
        let read_at = tokio::time::Instant::now();
        match world.read_feed(cursor, FEED_PAGE).await {
            Ok(entries) if !entries.is_empty() => {
                let full = entries.len() as u32 == FEED_PAGE;
                for entry in &entries {
                    let events = if interest.wants(entry) {
                        events_of(entry)
                    } else {
                        Vec::new()
                    };
                    for event in events {
                        let at = event.position;
                        // Publish the position before sending, so a client that
                        // subscribes now reads from here and misses nothing.
                        let _ = sender.send(Arc::new(event));
                        position.send_replace(at);
                    }
                    cursor = entry.cursor;
                    position.send_replace(EventCursor {
                        feed: cursor,
                        sub: u8::MAX,
                    });
                }
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "reading the change feed failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // A busy worker signals many commits a second: reading at most once per
        // interval gathers them into one query and one burst per client (a signal that
        // arrives meanwhile is kept by the `Notify`, so none is lost).
        tokio::time::sleep_until(read_at + MIN_READ_INTERVAL).await;
        let _ = tokio::time::timeout(poll, changed.notified()).await;
    }
}
