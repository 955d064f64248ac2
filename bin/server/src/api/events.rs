//! `/api/v1/events`: `POST` delivers an event to runs waiting for it; `GET` streams live
//! events, over WebSocket when the request upgrades, else as server-sent events
//! (`Accept: text/event-stream`). Each message is one JSON object
//! `{"cursor", "event", "data"}`; reconnect with `?after=<cursor>` (or `Last-Event-ID`)
//! to get everything missed since, in order, nothing twice. Filters: `run`, `agent`,
//! `workflow`, `events` (comma-separated names).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::live::{read_after, EventCursor, EventFilter, InterestGuard, LiveEvent, LiveFeed};
use crate::AppState;

/// `POST /api/v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The key runs wait on (`ctx.wait_for_event(key)`).
    pub key: String,
    /// What they receive.
    #[serde(default)]
    pub payload: Value,
}

/// What sending did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    /// The key.
    pub key: String,
    /// False when an event with this key had already been delivered (events are
    /// delivered once per key; the first payload wins).
    pub delivered: bool,
}

/// Delivers an event.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = SendRequest,
    responses((status = 200, body = Sent), (status = 400, body = ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> ApiResult<Json<Sent>> {
    let Json(request) = body?;
    if request.key.trim().is_empty() || request.key.len() > 500 {
        return Err(ApiError::invalid("key must be 1 to 500 characters"));
    }
    let delivered = state
        .engine
        .world()
        .send_event(&request.key, request.payload)
        .await?;
    state.engine.wake_signal().notify_one();
    Ok(Json(Sent {
        key: request.key,
        delivered,
    }))
}

/// Parameters of the live stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this cursor (a previous event's `cursor`).
    pub after: Option<String>,
    /// Only events about this run.
    pub run: Option<String>,
    /// Only events about this agent's deploys.
    pub agent: Option<String>,
    /// Only events about runs of this workflow.
    pub workflow: Option<String>,
    /// Only these event names, comma-separated.
    pub events: Option<String>,
}

/// The WebSocket upgrade, when the request asks for one.
pub struct MaybeUpgrade(Option<WebSocketUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .ok(),
        ))
    }
}

/// Live events (WebSocket, or server-sent events).
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of {cursor, event, data}; or a WebSocket with one such JSON object per text message"),
        (status = 400, body = ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    upgrade: MaybeUpgrade,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query?;
    let after_text = query.after.clone().or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    });
    let after = after_text
        .as_deref()
        .map(|text| text.parse::<EventCursor>().map_err(ApiError::invalid))
        .transpose()?;
    let filter = EventFilter {
        run_id: query.run.as_deref().map(super::parse_run_id).transpose()?,
        agent_id: query.agent,
        workflow: query.workflow,
        events: query
            .events
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let follower = Follower::new(state.live.clone(), after, filter);
    Ok(match upgrade.0 {
        Some(upgrade) => upgrade
            .read_buffer_size(CLIENT_READ_BUFFER)
            .on_upgrade(move |socket| serve_socket(socket, follower))
            .into_response(),
        None => Sse::new(sse_stream(follower))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    })
}

/// One client's position in the event stream: it reads from the database until it has
/// caught up with the broadcast, then forwards the broadcast, dropping anything at or
/// before the last event it gave.
pub struct Follower {
    live: LiveFeed,
    filter: EventFilter,
    /// Keeps this client's filter registered with the pump while it follows.
    _interest: InterestGuard,
    /// The last event given (or skipped by the filter).
    last: Option<EventCursor>,
    receiver: Option<tokio::sync::broadcast::Receiver<Arc<LiveEvent>>>,
    /// Where the broadcast stood when this client joined it.
    joined_at: EventCursor,
    backlog: VecDeque<Arc<LiveEvent>>,
}

impl Follower {
    /// A client resuming after `after` (`None`: from now on).
    pub fn new(live: LiveFeed, after: Option<EventCursor>, filter: EventFilter) -> Self {
        let interest = live.register(filter.clone());
        let (receiver, joined_at) = live.subscribe();
        Self {
            live,
            filter,
            _interest: interest,
            last: Some(after.unwrap_or(joined_at)),
            receiver: Some(receiver),
            joined_at,
            backlog: VecDeque::new(),
        }
    }

    /// The next event for this client; `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<Result<Arc<LiveEvent>, String>> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return Some(Ok(event));
            }
            let last = self.last.expect("set at creation");
            if last < self.joined_at {
                // Catching up from the database.
                match read_after(self.live.world(), last).await {
                    Ok(events) if events.is_empty() => self.joined_at = last,
                    Ok(events) => {
                        for event in events {
                            self.last = Some(event.position());
                            if self.filter.accepts(&event) {
                                self.backlog.push_back(Arc::new(event));
                            }
                        }
                    }
                    Err(error) => return Some(Err(error.to_string())),
                }
                continue;
            }
            let receiver = self.receiver.as_mut()?;
            let received = tokio::select! {
                received = receiver.recv() => received,
                () = self.live.closed() => return None,
            };
            match received {
                Ok(event) => {
                    if event.position() <= last {
                        continue;
                    }
                    self.last = Some(event.position());
                    if self.filter.accepts(&event) {
                        return Some(Ok(event));
                    }
                }
                // Too slow for the broadcast: read what was missed from the database,
                // then join again.
                Err(RecvError::Lagged(_)) => {
                    let (receiver, joined_at) = self.live.subscribe();
                    self.receiver = Some(receiver);
                    self.joined_at = joined_at;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Most events written to one socket per flush.
const WRITE_BURST: usize = 256;

/// Bytes read from a client at a time: clients only send pings and a close, and the
/// reader zeroes its whole buffer on every read.
const CLIENT_READ_BUFFER: usize = 4096;

async fn serve_socket(socket: WebSocket, mut follower: Follower) {
    let (mut sink, mut stream) = socket.split();
    // The client's side is read by a task of its own, polled only when the client sends
    // something: polling a read beside every write costs a buffer clear per burst.
    let (gone, mut client_gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        let _ = gone.send(());
    });
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    ping.tick().await;
    loop {
        tokio::select! {
            next = follower.next() => match next {
                Some(Ok(event)) => {
                    // Queue every event that is already waiting, then write them in one
                    // flush: under a busy feed this turns one syscall per event into one
                    // per burst, for every client.
                    if sink.feed(Message::Text(event.wire())).await.is_err() {
                        break;
                    }
                    let mut queued = 1;
                    while queued < WRITE_BURST {
                        match follower.next().now_or_never() {
                            Some(Some(Ok(event))) => {
                                if sink.feed(Message::Text(event.wire())).await.is_err() {
                                    break;
                                }
                                queued += 1;
                            }
                            _ => break,
                        }
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
                Some(Err(error)) => {
                    let body = serde_json::json!({"error": {"code": "unavailable", "message": error}});
                    let _ = sink.send(Message::Text(body.to_string().into())).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            _ = &mut client_gone => break,
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    reader.abort();
}

fn sse_stream(follower: Follower) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follower, |mut follower| async move {
        loop {
            match follower.next().await? {
                Ok(event) => {
                    let sse = Event::default()
                        .id(event.cursor.clone())
                        .event(event.event)
                        .data(event.wire().as_str());
                    return Some((Ok(sse), follower));
                }
                Err(error) => {
                    tracing::warn!(%error, "live events: reading the feed failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}
