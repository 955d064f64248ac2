//! The HTTP server's wiring: `[api]` and flags into a [`ServerConfig`], `morpheus serve`
//! (the API alone), and the server `morpheus up --listen` runs beside its workers.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use anyhow::{anyhow, Result};
use morpheus_engine::Engine;
use morpheus_server::{ApiToken, Metrics, Scope, Server, ServerConfig, TOKEN_ENV};
use morpheus_workflows::deploy::DeployService;
use tokio::sync::watch;

use crate::cli::ServeArgs;
use crate::commands::{open, redact, registries};
use crate::config::{ApiConfig, Config};

/// The server's settings: the listen address, `[api]`'s tokens (each read from where it
/// points; `MORPHEUS_API_TOKEN` is one more admin token), limits and deploy roots.
pub fn server_config(
    listen: SocketAddr,
    api: &ApiConfig,
    automations: &crate::config::AutomationsConfig,
    deploy_roots: Vec<std::path::PathBuf>,
) -> Result<ServerConfig> {
    let mut config = ServerConfig::new(listen);
    config.automations_passphrase = automations.passphrase.clone();
    config.automations_min_interval_s = automations.min_interval_s;
    for spec in &api.tokens {
        config
            .tokens
            .push(spec.resolve().map_err(|error| anyhow!("config {error}"))?);
    }
    if let Ok(secret) = std::env::var(TOKEN_ENV) {
        let secret = secret.trim().to_owned();
        if secret.len() < 16 {
            return Err(anyhow!(
                "{TOKEN_ENV} is shorter than 16 characters; use a long random token"
            ));
        }
        config
            .tokens
            .push(ApiToken::new("env", Scope::Admin, secret));
    }
    config.cors_origins = api.cors_origins.clone();
    if let Some(limit) = api.body_limit_bytes {
        config.body_limit = limit;
    }
    let positive = |value: Option<u32>, field: &str| -> Result<Option<NonZeroU32>> {
        value
            .map(|v| {
                NonZeroU32::new(v).ok_or_else(|| anyhow!("config [api] {field} must be at least 1"))
            })
            .transpose()
    };
    if let Some(rate) = positive(api.rate_per_second, "rate_per_second")? {
        config.rate_per_second = rate;
    }
    if let Some(burst) = positive(api.rate_burst, "rate_burst")? {
        config.rate_burst = burst;
    }
    config.deploy_roots = deploy_roots;
    config.check()?;
    Ok(config)
}

/// Installs the metrics recorder `/metrics` renders (unless [`install_metrics`] did
/// already), binds the server over `engine` (with the deploy API) and says where it is.
/// Called once per process, before any worker starts (`up` binds first), so the workers
/// record into that recorder.
pub async fn bind(engine: &Engine, mut config: ServerConfig) -> Result<Server> {
    if config.metrics.is_none() {
        install_metrics(&mut config)?;
    }
    let deploy = DeployService::new(engine.clone());
    let server = Server::bind(config, engine.clone(), Some(deploy)).await?;
    let url = format!("http://{}/", server.local_addr());
    tracing::info!(%url, "serving the API and dashboard");
    eprintln!("dashboard: {url}  (API: {url}api/v1, OpenAPI: {url}api/openapi.json, metrics: {url}metrics)");
    Ok(server)
}

/// Installs the Prometheus recorder for `config`'s `/metrics` and describes the
/// extensions' metrics beside the engine's. `up` calls it before loading extensions,
/// which resolve their metric handles when they load.
pub fn install_metrics(config: &mut ServerConfig) -> Result<()> {
    config.metrics = Some(Metrics::install().map_err(|error| anyhow!(error))?);
    morpheus_executors::extensions::metrics::describe();
    Ok(())
}

/// A shutdown signal several parts of the process wait on: [`Shutdown::trigger`] once,
/// every [`Shutdown::wait`] resolves.
#[derive(Clone)]
pub struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    /// Not yet triggered.
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// Stops everything waiting.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }

    /// Resolves once triggered.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }
}

/// `morpheus serve`: the API and dashboard alone, until SIGTERM or Ctrl-C.
pub async fn serve(url: &str, args: ServeArgs, config: &Config) -> Result<()> {
    let listen = args
        .listen
        .or(config.api.listen)
        .unwrap_or_else(|| morpheus_server::DEMO_LISTEN.parse().expect("valid address"));
    let deploy = crate::deploy::config(&args.deploy_paths)?;
    let server_config = server_config(
        listen,
        &config.api,
        &config.automations,
        deploy.allowed_roots.clone(),
    )?;
    // The workflows are registered so starts are validated exactly as workers would;
    // nothing here executes them.
    let (workflows, executors) = registries(deploy);
    let world = open(url).await?;
    tracing::info!(database = %redact(url), "morpheus serve (no workers)");
    let engine = Engine::new(world, workflows, executors);
    let server = bind(&engine, server_config).await?;
    server.serve(crate::commands::shutdown_signal()).await?;
    Ok(())
}
