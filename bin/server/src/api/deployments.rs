//! The directory-deploy API exactly as its design names it: the agent's spec (`GET` and
//! `PUT /api/agents/{id}/deployments/spec`), its runs newest first, start with
//! `{"target", "note"}`, stop one run, a run's logs, the agent's snapshots, and redeploy
//! of a snapshot into a fresh sandbox. Bodies use the design's camelCase field names;
//! times are Unix milliseconds, as the design's `createdAt: number`.

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use morpheus_workflows::deploy::model::{DeploymentRun, DeploymentSpec, SourceSnapshot, Target};
use morpheus_workflows::deploy::spec::check_agent_id;
use morpheus_workflows::deploy::{DeployService, SpecRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::logs::{read_page, LogPage, LogsQuery};
use super::parse_run_id;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// A deployment spec, as the design's `DeploymentSpec`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecView {
    /// Spec id.
    pub id: String,
    /// Its agent.
    pub agent_id: String,
    /// Display name.
    pub name: String,
    /// Absolute directory deployed.
    pub source_dir: String,
    /// Run before the build ("" for none).
    pub install_command: String,
    /// Run before start (`true` for none).
    pub build_command: String,
    /// The long-running command serving HTTP on `runtimePort`.
    pub start_command: String,
    /// The port the start command listens on.
    pub runtime_port: u16,
    /// Environment of the sandbox.
    pub env: BTreeMap<String, String>,
    /// `preview` or `production`.
    pub target_default: String,
    /// The sandbox's base image.
    pub image: String,
    /// CPU limit in cores.
    pub cpu: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

impl From<&DeploymentSpec> for SpecView {
    fn from(spec: &DeploymentSpec) -> Self {
        Self {
            id: spec.id.clone(),
            agent_id: spec.agent_id.clone(),
            name: spec.name.clone(),
            source_dir: spec.source_dir.clone(),
            install_command: spec.install_command.clone().unwrap_or_default(),
            build_command: spec.build_command.clone(),
            start_command: spec.start_command.clone(),
            runtime_port: spec.runtime_port,
            env: spec.env.clone(),
            target_default: target_name(spec.target_default).to_owned(),
            image: spec.image.clone(),
            cpu: spec.resources.cpu,
            memory_bytes: spec.resources.memory,
            created_at: spec.created_at.timestamp_millis(),
            updated_at: spec.updated_at.timestamp_millis(),
        }
    }
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Preview => "preview",
        Target::Production => "production",
    }
}

/// A deploy run, as the design's `DeploymentRun`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// Run id (also the engine run: its steps and logs).
    pub id: String,
    /// Its agent.
    pub agent_id: String,
    /// The spec's id.
    pub spec_id: String,
    /// The spec as it was when the run started.
    pub spec_snapshot: SpecView,
    /// The snapshot deployed (once captured).
    pub snapshot_id: Option<String>,
    /// Its content hash.
    pub snapshot_hash: Option<String>,
    /// The sandbox's container id.
    pub sandbox_id: Option<String>,
    /// `queued`, `capturing`, `provisioning`, `building`, `starting`, `ready`, `failed`,
    /// `stopping` or `stopped`.
    pub status: String,
    /// `preview` or `production`.
    pub target: String,
    /// Where it serves, once ready.
    pub url: Option<String>,
    /// The note given at start.
    pub note: Option<String>,
    /// For a redeploy: the snapshot asked for.
    pub redeploy_of: Option<String>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
    /// When it entered `stopped` (Unix ms).
    pub stopped_at: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<&DeploymentRun> for RunView {
    fn from(run: &DeploymentRun) -> Self {
        let stopped_at = run
            .history
            .iter()
            .rev()
            .find(|change| change.status.as_str() == "stopped")
            .map(|change| change.at.timestamp_millis());
        Self {
            id: run.id.clone(),
            agent_id: run.agent_id.clone(),
            spec_id: run.spec_id.clone(),
            spec_snapshot: SpecView::from(&run.spec_snapshot),
            snapshot_id: run.snapshot_id.clone(),
            snapshot_hash: run.snapshot_hash.clone(),
            sandbox_id: run.sandbox_id.clone(),
            status: run.status.as_str().to_owned(),
            target: target_name(run.target).to_owned(),
            url: run.url.clone(),
            note: run.note.clone(),
            redeploy_of: run.redeploy_of.clone(),
            created_at: run.created_at.timestamp_millis(),
            updated_at: run.updated_at.timestamp_millis(),
            stopped_at,
            error: run.error.clone(),
        }
    }
}

/// A source snapshot, as the design's `SourceSnapshot`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    /// Snapshot id.
    pub id: String,
    /// Its agent.
    pub agent_id: String,
    /// The spec it was captured for.
    pub spec_id: String,
    /// The directory captured.
    pub source_dir: String,
    /// The content-addressed tarball on the host.
    pub artifact_path: String,
    /// sha256 of the file tree.
    pub content_hash: String,
    /// Files in it.
    pub file_count: u64,
    /// Compressed size.
    pub size_bytes: u64,
    /// Created (Unix ms).
    pub created_at: i64,
}

impl From<&SourceSnapshot> for SnapshotView {
    fn from(snapshot: &SourceSnapshot) -> Self {
        Self {
            id: snapshot.id.clone(),
            agent_id: snapshot.agent_id.clone(),
            spec_id: snapshot.spec_id.clone(),
            source_dir: snapshot.source_dir.clone(),
            artifact_path: snapshot.artifact_path.clone(),
            content_hash: snapshot.content_hash.clone(),
            file_count: snapshot.file_count,
            size_bytes: snapshot.size_bytes,
            created_at: snapshot.created_at.timestamp_millis(),
        }
    }
}

fn service(state: &AppState) -> ApiResult<&DeployService> {
    state.deploy.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_configured",
            "this server has no deploy workflows registered",
        )
    })
}

fn check_agent(agent_id: &str) -> ApiResult<()> {
    check_agent_id(agent_id).map_err(|error| ApiError::invalid(error.to_string()))
}

fn parse_target(text: Option<&str>) -> ApiResult<Option<Target>> {
    match text {
        None => Ok(None),
        Some("preview") => Ok(Some(Target::Preview)),
        Some("production") => Ok(Some(Target::Production)),
        Some(other) => Err(ApiError::invalid(format!(
            "target: '{other}' is neither preview nor production"
        ))),
    }
}

/// The agent's spec.
#[utoipa::path(get, path = "/api/agents/{id}/deployments/spec", tag = "deployments",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = SpecView), (status = 404, body = ErrorBody)))]
pub async fn get_spec(
    State(state): State<AppState>,
    Path(agent): Path<String>,
) -> ApiResult<Json<SpecView>> {
    let spec = service(&state)?.spec(&agent).await?;
    Ok(Json(SpecView::from(&spec)))
}

/// `PUT /api/agents/{id}/deployments/spec`: required `name`, `sourceDir`,
/// `buildCommand`, `startCommand`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecBody {
    /// Display name.
    pub name: String,
    /// Absolute directory under an allowed root.
    pub source_dir: String,
    /// Run before the build (default none).
    #[serde(default)]
    pub install_command: Option<String>,
    /// Run before start (`true` for none).
    pub build_command: String,
    /// The long-running command serving HTTP.
    pub start_command: String,
    /// 1024–65535 (default 3000).
    #[serde(default)]
    pub runtime_port: Option<i64>,
    /// Environment of the sandbox, stored and shown as given: give a secret sealed
    /// (`sealed:v1:…`, from `morpheus secrets seal`); it is opened only in the sandbox.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `preview` (default) or `production`.
    #[serde(default)]
    pub target_default: Option<String>,
    /// Base image (must have /bin/sh).
    #[serde(default)]
    pub image: Option<String>,
    /// CPU limit in cores.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory limit (`512m`, `1g`).
    #[serde(default)]
    pub memory: Option<String>,
}

/// Creates or replaces the agent's spec (validated as `morpheus deploy spec set`
/// validates it; a bad spec writes nothing).
#[utoipa::path(put, path = "/api/agents/{id}/deployments/spec", tag = "deployments",
    request_body = SpecBody, params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = SpecView), (status = 201, body = SpecView),
        (status = 400, body = ErrorBody)))]
pub async fn put_spec(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    body: Result<Json<SpecBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<SpecView>)> {
    let service = service(&state)?;
    check_agent(&agent)?;
    let Json(body) = body?;
    let request = SpecRequest {
        agent_id: agent,
        name: body.name,
        source_dir: body.source_dir,
        install_command: body
            .install_command
            .filter(|command| !command.trim().is_empty()),
        build_command: body.build_command,
        start_command: body.start_command,
        runtime_port: body.runtime_port,
        env: body
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        image: body.image,
        target_default: parse_target(body.target_default.as_deref())?,
        cpu: body.cpu,
        memory: body.memory,
    };
    let now = Utc::now();
    let spec = request
        .validate(
            &state.deploy_roots,
            uuid::Uuid::now_v7().to_string(),
            now,
            now,
        )
        .map_err(|error| ApiError::invalid(error.to_string()))?;
    let (spec, created) = service.save_spec(spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SpecView::from(&spec))))
}

/// Paging of the agent's lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many (default 50, at most 500).
    pub limit: Option<u64>,
}

fn limit_of(query: &ListQuery) -> ApiResult<u64> {
    match query.limit.unwrap_or(50) {
        limit @ 1..=500 => Ok(limit),
        _ => Err(ApiError::invalid("limit must be 1..=500")),
    }
}

/// The agent's runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
}

/// The agent's deploy runs, newest first.
#[utoipa::path(get, path = "/api/agents/{id}/deployments", tag = "deployments",
    params(("id" = String, Path, description = "Agent id"), ListQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<RunList>> {
    let Query(query) = query?;
    let runs = service(&state)?.runs(&agent, limit_of(&query)?).await?;
    Ok(Json(RunList {
        runs: runs.iter().map(RunView::from).collect(),
    }))
}

/// `POST /api/agents/{id}/deployments/start`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// `preview` or `production` (default: the spec's `targetDefault`).
    #[serde(default)]
    pub target: Option<String>,
    /// Stored with the run.
    #[serde(default)]
    pub note: Option<String>,
}

/// Starts a deploy: snapshot the spec's directory, create the run, build and start it in
/// a fresh sandbox. Answers with the queued run.
#[utoipa::path(post, path = "/api/agents/{id}/deployments/start", tag = "deployments",
    request_body = StartBody, params(("id" = String, Path, description = "Agent id")),
    responses((status = 201, body = RunView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let service = service(&state)?;
    check_agent(&agent)?;
    let Json(body) = body?;
    let target = parse_target(body.target.as_deref())?;
    let run = service.start(&agent, target, body.note, None).await?;
    state.engine.wake_signal().notify_one();
    Ok((StatusCode::CREATED, Json(RunView::from(&run))))
}

/// Redeploys one of the agent's snapshots into a fresh sandbox (a rollback).
#[utoipa::path(post, path = "/api/agents/{id}/deployments/snapshots/{snapshot_id}/redeploy",
    tag = "deployments", request_body = StartBody,
    params(("id" = String, Path, description = "Agent id"),
        ("snapshot_id" = String, Path, description = "Snapshot id")),
    responses((status = 201, body = RunView), (status = 404, body = ErrorBody)))]
pub async fn redeploy(
    State(state): State<AppState>,
    Path((agent, snapshot_id)): Path<(String, String)>,
    body: Result<Json<StartBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let service = service(&state)?;
    check_agent(&agent)?;
    let Json(body) = body?;
    let target = parse_target(body.target.as_deref())?;
    let run = service
        .start(&agent, target, body.note, Some(snapshot_id))
        .await?;
    state.engine.wake_signal().notify_one();
    Ok((StatusCode::CREATED, Json(RunView::from(&run))))
}

/// What a stop did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StopAnswer {
    /// The deploy run being stopped.
    pub run_id: String,
    /// The engine run doing the stop.
    pub stop_run_id: String,
}

/// Stops one ready or failed run (its sandbox is removed).
#[utoipa::path(post, path = "/api/agents/{id}/deployments/{run_id}/stop", tag = "deployments",
    params(("id" = String, Path, description = "Agent id"),
        ("run_id" = String, Path, description = "Deploy run id")),
    responses((status = 202, body = StopAnswer), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Path((agent, run_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<StopAnswer>)> {
    let stop_run = service(&state)?.stop(&agent, &run_id).await?;
    state.engine.wake_signal().notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(StopAnswer {
            run_id,
            stop_run_id: stop_run.to_string(),
        }),
    ))
}

/// A deploy run's logs (the same filters and paging as a run's logs).
#[utoipa::path(get, path = "/api/agents/{id}/deployments/{run_id}/logs", tag = "deployments",
    params(("id" = String, Path, description = "Agent id"),
        ("run_id" = String, Path, description = "Deploy run id"), LogsQuery),
    responses((status = 200, body = LogPage), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path((agent, run_id)): Path<(String, String)>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Json<LogPage>> {
    let Query(query) = query?;
    let run = service(&state)?.run_of(&agent, &run_id).await?;
    Ok(Json(
        read_page(&state, parse_run_id(&run.id)?, query).await?,
    ))
}

/// The agent's snapshots.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotList {
    /// Newest first.
    pub snapshots: Vec<SnapshotView>,
}

/// The agent's snapshots, newest first.
#[utoipa::path(get, path = "/api/agents/{id}/deployments/snapshots", tag = "deployments",
    params(("id" = String, Path, description = "Agent id"), ListQuery),
    responses((status = 200, body = SnapshotList), (status = 400, body = ErrorBody)))]
pub async fn snapshots(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<SnapshotList>> {
    let Query(query) = query?;
    let snapshots = service(&state)?
        .snapshots(&agent, limit_of(&query)?)
        .await?;
    Ok(Json(SnapshotList {
        snapshots: snapshots.iter().map(SnapshotView::from).collect(),
    }))
}
