//! HTTP routes of the provider simulator: the gateway subset (manifest, lease status,
//! lease logs) behind JWT checks, `/status`, and the `/simulator/faults` admin API.

use std::sync::{Arc, PoisonError};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::chain::{Lease, LeaseId};
use super::containers::{by_service, DeployError};
use super::jwt::{self, Action, Claims};
use super::{manifest, Shared, SIMULATOR_NAME};

/// An error answer: `{"error": "<one line>"}` with its status.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn chain(message: String) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<DeployError> for ApiError {
    fn from(error: DeployError) -> Self {
        match error {
            DeployError::Image(text) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, text),
            DeployError::Engine(text) => Self::new(StatusCode::BAD_GATEWAY, text),
        }
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/deployment/{dseq}/manifest", put(send_manifest))
        .route("/lease/{dseq}/{gseq}/{oseq}/status", get(lease_status))
        .route("/lease/{dseq}/{gseq}/{oseq}/logs", get(lease_logs))
        .route("/status", get(status))
        .route("/address", get(address))
        .route("/simulator/faults", post(arm_fault).delete(clear_faults))
        .fallback(not_served)
        .layer(middleware::from_fn(simulator_header))
        .with_state(shared)
}

async fn simulator_header(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        "x-morpheus-simulator",
        HeaderValue::from_static(SIMULATOR_NAME),
    );
    response
}

async fn not_served(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "{} {} is not served by the Akash provider simulator",
            request.method(),
            request.uri().path()
        ),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Checks the bearer JWT: its shape, its signature by the issuer's key on chain, its
/// validity window, and that it grants `action` on `dseq` here.
async fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    action: Action,
    dseq: u64,
) -> Result<Claims, ApiError> {
    let unauthorized = |message: String| ApiError::new(StatusCode::UNAUTHORIZED, message);
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing 'Authorization: Bearer <provider JWT>'".to_owned()))?;
    let token = jwt::decode(token).map_err(|e| unauthorized(e.to_string()))?;
    let issuer = token.issuer().to_owned();
    let key = shared
        .chain
        .account_pub_key(&issuer)
        .await
        .map_err(ApiError::chain)?
        .ok_or_else(|| {
            unauthorized(format!(
                "the JWT issuer {issuer} has no public key on chain (unknown, or it never signed a transaction)"
            ))
        })?;
    let claims = token
        .verify(&key, now())
        .map_err(|e| unauthorized(e.to_string()))?;
    claims
        .permits(action, &shared.address, dseq)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    Ok(claims)
}

/// The issuer's active leases of deployment `dseq` with this provider; 403 when none.
async fn active_leases(shared: &Shared, owner: &str, dseq: u64) -> Result<Vec<Lease>, ApiError> {
    let leases: Vec<Lease> = shared
        .chain
        .leases(owner, dseq)
        .await
        .map_err(ApiError::chain)?
        .into_iter()
        .filter(|lease| lease.id.provider == shared.address && lease.state == "active")
        .collect();
    if leases.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{owner} has no active lease for deployment {dseq} with provider {}",
                shared.address
            ),
        ));
    }
    Ok(leases)
}

fn parse_dseq(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("dseq '{text}' is not a whole number"),
        )
    })
}

async fn send_manifest(
    State(shared): State<Arc<Shared>>,
    Path(dseq): Path<String>,
    headers: HeaderMap,
    body: String,
) -> ApiResult {
    let dseq = parse_dseq(&dseq)?;
    let claims = authorize(&shared, &headers, Action::SendManifest, dseq).await?;
    let leases = active_leases(&shared, &claims.iss, dseq).await?;
    if let Some(status) = shared.faults().refuse_manifest {
        return Err(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            format!(
                "the provider refuses the manifest for deployment {dseq} (fault refuse_manifest armed with POST /simulator/faults)"
            ),
        ));
    }
    let value: Value = serde_json::from_str(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the manifest is not JSON: {e}"),
        )
    })?;
    let version = manifest::version(&value);
    let deployment = shared
        .chain
        .deployment(&claims.iss, dseq)
        .await
        .map_err(ApiError::chain)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the chain does not know deployment {dseq} of {}",
                    claims.iss
                ),
            )
        })?;
    if deployment.state != "active" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "deployment {dseq} of {} is {} on chain, not active",
                claims.iss, deployment.state
            ),
        ));
    }
    let unprocessable = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    let on_chain = deployment.hash.as_deref().ok_or_else(|| {
        unprocessable(format!(
            "deployment {dseq} has no manifest hash on chain to check the manifest against"
        ))
    })?;
    if on_chain != version {
        return Err(unprocessable(format!(
            "manifest version {} does not match deployment {dseq}'s hash on chain {}",
            hex::encode(version),
            hex::encode(on_chain)
        )));
    }
    let groups = manifest::decode(&value).map_err(unprocessable)?;
    let version_hex = hex::encode(version);
    // Check every lease's group before running anything: a manifest that cannot be
    // run whole changes nothing.
    let mut plan = Vec::new();
    for lease in &leases {
        let name = deployment
            .groups
            .iter()
            .find(|(gseq, _)| *gseq == lease.id.gseq)
            .map(|(_, name)| name.as_str());
        let group = match name {
            Some(name) => groups.iter().find(|group| group.name == name),
            // A chain that does not name its groups: the manifest lists them in gseq order.
            None => groups.get(lease.id.gseq.saturating_sub(1) as usize),
        }
        .ok_or_else(|| {
            unprocessable(format!(
                "the manifest has no group {} for lease gseq {}",
                name.map_or_else(|| format!("#{}", lease.id.gseq), |n| format!("'{n}'")),
                lease.id.gseq
            ))
        })?;
        plan.push((lease, group));
    }
    let _changing = shared.changing.lock().await;
    let mut changed = false;
    let mut answers = Vec::new();
    for (lease, group) in plan {
        let outcome = shared.engine.deploy(&lease.id, group, &version_hex).await?;
        changed |= outcome.created > 0;
        tracing::info!(
            owner = %lease.id.owner,
            dseq,
            gseq = lease.id.gseq,
            oseq = lease.id.oseq,
            group = %group.name,
            created = outcome.created,
            kept = outcome.kept,
            "manifest deployed"
        );
        answers.push(json!({
            "gseq": lease.id.gseq,
            "oseq": lease.id.oseq,
            "group": group.name,
            "created": outcome.created,
            "kept": outcome.kept,
        }));
    }
    Ok(Json(json!({
        "dseq": dseq.to_string(),
        "manifest_version": version_hex,
        "changed": changed,
        "leases": answers,
    })))
}

/// Authorizes a lease request: the token, then an active lease `(iss, dseq, gseq,
/// oseq)` with this provider.
async fn authorize_lease(
    shared: &Shared,
    headers: &HeaderMap,
    action: Action,
    (dseq, gseq, oseq): (String, u32, u32),
) -> Result<LeaseId, ApiError> {
    let dseq = parse_dseq(&dseq)?;
    let claims = authorize(shared, headers, action, dseq).await?;
    let leases = active_leases(shared, &claims.iss, dseq).await?;
    leases
        .into_iter()
        .map(|lease| lease.id)
        .find(|id| id.gseq == gseq && id.oseq == oseq)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} has no active lease {dseq}/{gseq}/{oseq} with provider {}",
                    claims.iss, shared.address
                ),
            )
        })
}

async fn lease_status(
    State(shared): State<Arc<Shared>>,
    Path(lease): Path<(String, u32, u32)>,
    headers: HeaderMap,
) -> ApiResult {
    let label = format!("{}/{}/{}", lease.0, lease.1, lease.2);
    let lease = authorize_lease(&shared, &headers, Action::Status, lease).await?;
    let replicas = shared.engine.replicas(&lease).await?;
    if replicas.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no manifest has been deployed for lease {label}"),
        ));
    }
    let never_ready = shared.faults().never_ready;
    let mut services = serde_json::Map::new();
    let mut forwarded = serde_json::Map::new();
    for (name, replicas) in by_service(&replicas) {
        let total = replicas.first().map_or(0, |r| r.count);
        let ready = if never_ready {
            0
        } else {
            replicas.iter().filter(|r| r.running).count()
        };
        let mut uris = Vec::new();
        let mut ports = Vec::new();
        for replica in replicas.iter().filter(|r| r.running) {
            for (port, proto, host_port) in replica.ports.iter().filter(|p| p.2 != 0) {
                uris.push(format!("127.0.0.1:{host_port}"));
                ports.push(json!({
                    "host": "127.0.0.1",
                    "port": port,
                    "externalPort": host_port,
                    "proto": proto,
                    "name": name,
                }));
            }
        }
        services.insert(
            name.to_owned(),
            json!({
                "name": name,
                "available": ready,
                "total": total,
                "uris": uris,
                "observed_generation": 1,
                "replicas": total,
                "updated_replicas": total,
                "ready_replicas": ready,
                "available_replicas": ready,
            }),
        );
        if !ports.is_empty() {
            forwarded.insert(name.to_owned(), Value::Array(ports));
        }
    }
    Ok(Json(
        json!({"services": services, "forwarded_ports": forwarded}),
    ))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    tail: Option<String>,
}

async fn lease_logs(
    State(shared): State<Arc<Shared>>,
    Path(lease): Path<(String, u32, u32)>,
    Query(query): Query<LogsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let lease = authorize_lease(&shared, &headers, Action::Logs, lease).await?;
    let follow = matches!(query.follow.as_deref(), Some("true" | "1"));
    let tail = match query.tail.as_deref() {
        None | Some("") | Some("-1") => "all".to_owned(),
        Some(text) => {
            let lines: u32 = text.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("tail '{text}' is not a number of lines"),
                )
            })?;
            lines.to_string()
        }
    };
    let replicas = shared.engine.replicas(&lease).await?;
    let engine = shared.engine.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let (lines, mut receive) = tokio::sync::mpsc::channel::<String>(256);
        for replica in replicas {
            let lines = lines.clone();
            let name = format!("{}-{}", replica.service, replica.index);
            let mut stream = Box::pin(engine.logs(&replica.container, follow, &tail));
            tokio::spawn(async move {
                let mut pending: Vec<u8> = Vec::new();
                while let Some(Ok(chunk)) = stream.next().await {
                    pending.extend_from_slice(&chunk);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1])
                            .trim_end_matches('\r')
                            .to_owned();
                        let message = json!({"name": name, "message": text}).to_string();
                        if lines.send(message).await.is_err() {
                            return;
                        }
                    }
                }
                if !pending.is_empty() {
                    let text = String::from_utf8_lossy(&pending).into_owned();
                    let _ = lines
                        .send(json!({"name": name, "message": text}).to_string())
                        .await;
                }
            });
        }
        drop(lines);
        stream_lines(socket, &mut receive).await;
    }))
}

/// Sends each line as a text message until the lines end (every log stream ended) or
/// the client goes away, then closes.
async fn stream_lines(mut socket: WebSocket, lines: &mut tokio::sync::mpsc::Receiver<String>) {
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    if socket.send(Message::Text(line.into())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn status(State(shared): State<Arc<Shared>>) -> ApiResult {
    let leases = shared.engine.leases().await?;
    let faults = shared.faults();
    let mut armed = Vec::new();
    if let Some(status) = faults.refuse_manifest {
        armed.push(json!({"kind": "refuse_manifest", "status": status}));
    }
    if faults.never_ready {
        armed.push(json!({"kind": "never_ready"}));
    }
    let leases: Vec<Value> = leases
        .iter()
        .map(|lease| {
            json!({
                "owner": lease.owner,
                "dseq": lease.dseq.to_string(),
                "gseq": lease.gseq,
                "oseq": lease.oseq,
            })
        })
        .collect();
    Ok(Json(json!({
        "simulator": SIMULATOR_NAME,
        "note": "an Akash provider SIMULATOR: leases run as containers on the local Docker engine",
        "address": shared.address,
        "host_uri": shared.host_uri,
        "chain": shared.chain.base().as_str(),
        "leases": leases,
        "faults": armed,
    })))
}

async fn address(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(
        json!({"address": shared.address, "simulator": SIMULATOR_NAME}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    kind: String,
    #[serde(default)]
    status: Option<u16>,
}

async fn arm_fault(State(shared): State<Arc<Shared>>, body: String) -> ApiResult {
    let request: FaultRequest = serde_json::from_str(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "a fault is {{\"kind\": \"refuse_manifest\" | \"never_ready\", \"status\"?}}: {e}"
            ),
        )
    })?;
    let mut faults = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
    match request.kind.as_str() {
        "refuse_manifest" => {
            let status = request.status.unwrap_or(400);
            if !(400..600).contains(&status) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("refuse_manifest status {status} is not an error status (400-599)"),
                ));
            }
            faults.refuse_manifest = Some(status);
        }
        "never_ready" => faults.never_ready = true,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown fault kind '{other}' (refuse_manifest, never_ready)"),
            ))
        }
    }
    Ok(Json(json!({"armed": request.kind})))
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> ApiResult {
    *shared.faults.lock().unwrap_or_else(PoisonError::into_inner) = Default::default();
    Ok(Json(json!({"cleared": true})))
}
