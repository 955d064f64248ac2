//! Morpheus's HTTP surface, served beside the workers (`morpheus up --listen`) or alone
//! (`morpheus serve`): the JSON API under `/api/v1` for every engine operation, the
//! directory-deploy API under `/api/agents/:id/deployments`, live events over WebSocket
//! and server-sent events at `/api/v1/events`, an OpenAPI 3.1 document at
//! `/api/openapi.json`, the dashboard at `/`, and Prometheus metrics at `/metrics`.
//!
//! Everything is read from and written to the database, never from memory shared with
//! a worker: a server and its workers may be different processes (or hosts, on
//! Postgres). Live events follow the engine's change feed
//! ([`morpheus_engine::FeedStore`]) by cursor, so a client that reconnects with the last
//! cursor it saw misses nothing and sees nothing twice.
//!
//! ```no_run
//! # async fn demo(engine: morpheus_engine::Engine) -> Result<(), morpheus_server::ServerError> {
//! use morpheus_server::{Server, ServerConfig};
//! let config = ServerConfig::new("127.0.0.1:7420".parse().unwrap());
//! let server = Server::bind(config, engine, None).await?;
//! println!("dashboard at http://{}/", server.local_addr());
//! server.serve(std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use morpheus_engine::Engine;
use morpheus_workflows::deploy::DeployService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod live;
pub mod metrics;

pub use auth::{ApiToken, Scope, TokenSpec, TOKEN_ENV};
pub use error::{ApiError, ApiResult};
pub use metrics::Metrics;

/// The header every answer carries its request id in (and that a caller may set).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The address `morpheus up --demo` serves on unless told otherwise.
pub const DEMO_LISTEN: &str = "127.0.0.1:7420";

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Accepted bearer tokens (none: requests need none, and only loopback is served).
    pub tokens: Vec<ApiToken>,
    /// Origins allowed to call the API from a browser page of another origin (CORS is
    /// off when empty).
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes (413 above).
    pub body_limit: usize,
    /// Requests per second allowed per token (or for everyone, without tokens).
    pub rate_per_second: NonZeroU32,
    /// Requests allowed in a burst above that rate.
    pub rate_burst: NonZeroU32,
    /// Directories deploy specs may point into (checked as `morpheus deploy spec set`
    /// checks them).
    pub deploy_roots: Vec<PathBuf>,
    /// How often the live-event pump looks at the feed when no notification woke it
    /// (SQLite has none).
    pub feed_poll: Duration,
    /// The installed metrics recorder `GET /metrics` renders ([`Metrics::install`]);
    /// without one that route answers 404.
    pub metrics: Option<Metrics>,
    /// Where the passphrase sealing automations' keys is.
    pub automations_passphrase: morpheus_workflows::automations::PassphraseSource,
    /// The shortest automation INTERVAL accepted, in seconds.
    pub automations_min_interval_s: u64,
}

impl ServerConfig {
    /// Defaults: no tokens, no CORS, 1 MiB bodies, 200 requests/s per token with bursts
    /// of 400, the current directory as the only deploy root.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tokens: Vec::new(),
            cors_origins: Vec::new(),
            body_limit: 1024 * 1024,
            rate_per_second: NonZeroU32::new(200).expect("non-zero"),
            rate_burst: NonZeroU32::new(400).expect("non-zero"),
            deploy_roots: std::env::current_dir().into_iter().collect(),
            feed_poll: Duration::from_millis(100),
            metrics: None,
            automations_passphrase: Default::default(),
            automations_min_interval_s:
                morpheus_workflows::automations::model::DEFAULT_MIN_INTERVAL_S,
        }
    }

    /// Refuses a setup that would expose the API without tokens beyond this host.
    pub fn check(&self) -> Result<(), ServerError> {
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ServerError::Unprotected(self.listen));
        }
        Ok(())
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process holds the address.
    #[error("cannot listen on {0}: the address is already in use (is another morpheus running? pick another with --listen)")]
    AddrInUse(SocketAddr),
    /// A non-loopback address without any token.
    #[error("refusing to serve the API on {0} without tokens: configure [[api.tokens]] or MORPHEUS_API_TOKEN, or listen on 127.0.0.1")]
    Unprotected(SocketAddr),
    /// Anything else the socket said.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine (its database and registered workflows).
    pub engine: Engine,
    /// Deploy operations, when the deploy workflows are registered.
    pub deploy: Option<DeployService>,
    /// Where deploy specs may point.
    pub deploy_roots: Arc<Vec<PathBuf>>,
    /// The live events.
    pub live: live::LiveFeed,
    /// The metrics recorder, when this process installed one.
    pub metrics: Option<Metrics>,
    /// The automations.
    pub automations: morpheus_workflows::automations::store::Automations,
}

/// A bound server, ready to serve.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    local_addr: SocketAddr,
    live: live::LiveFeed,
}

impl Server {
    /// Checks `config`, binds its address and builds the routes over `engine` (and the
    /// deploy API over `deploy`, when given). Starts following the change feed.
    pub async fn bind(
        config: ServerConfig,
        engine: Engine,
        deploy: Option<DeployService>,
    ) -> Result<Self, ServerError> {
        config.check()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => ServerError::AddrInUse(config.listen),
                _ => ServerError::Listen {
                    addr: config.listen,
                    source,
                },
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let live = live::LiveFeed::start(engine.world(), config.feed_poll).await;
        let state = AppState {
            deploy,
            deploy_roots: Arc::new(config.deploy_roots.clone()),
            live: live.clone(),
            metrics: config.metrics.clone(),
            automations: morpheus_workflows::automations::store::Automations::new(
                engine.world(),
                config.automations_passphrase.clone(),
                config.automations_min_interval_s,
            ),
            engine,
        };
        let router = router(state, &config);
        Ok(Self {
            listener,
            router,
            local_addr,
            live,
        })
    }

    /// The address it listens on (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish (live
    /// event streams end at once).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let live = self.live.clone();
        let result = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            live.close();
        })
        .await
        .map_err(ServerError::Serve);
        self.live.close();
        result
    }
}

/// Every route, with the layers every request goes through: request id, tracing, body
/// limit, CORS (when configured), then auth and the rate limit on the API.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    let auth = Arc::new(auth::Auth::new(
        config.tokens.clone(),
        config.rate_per_second,
        config.rate_burst,
    ));
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let protected = api::routes()
        .merge(dashboard::routes())
        .merge(metrics::routes())
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(auth, auth::authorize));
    let mut router = Router::new()
        .merge(protected)
        .merge(api::public_routes().merge(dashboard::public_routes()).with_state(state))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
            },
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    if !config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    axum::http::header::AUTHORIZATION,
                    axum::http::header::CONTENT_TYPE,
                    HeaderName::from_static("idempotency-key"),
                ]),
        );
    }
    router
}
