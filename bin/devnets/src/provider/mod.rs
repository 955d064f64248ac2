//! The Akash provider **simulator** behind `morpheus devnet provider`: the subset of an
//! Akash provider's gateway API a deploy uses (send the manifest, read the lease's
//! status and logs), running each lease's services as containers on the real local
//! Docker engine. It is not an Akash provider and says so: its banner, the
//! `x-morpheus-simulator: akash-provider` header on every response, and `GET /status`.
//!
//! # How it fits with the chain simulator
//!
//! At start it makes itself an address (a fresh key, or one from a mnemonic) and
//! registers with the Akash chain simulator (`POST /simulator/providers` with its
//! `host_uri`, attributes, price and bid delay); the chain then bids on its behalf on
//! every open order it matches. Everything else it learns from the chain's REST API:
//!
//! - who signed a JWT: the issuer's public key (`GET /cosmos/auth/v1beta1/accounts/{iss}`);
//! - whether the issuer holds an active lease with this provider
//!   (`GET /akash/market/v1beta5/leases/list?filters.owner=&filters.dseq=`);
//! - the manifest version the owner committed to on chain, and the name of each
//!   group (`GET /akash/deployment/v1beta4/deployments/info`);
//! - when a lease closes: a watcher polls the leases it runs containers for and
//!   removes their containers and volumes once the chain shows the lease closed (or
//!   no longer knows it).
//!
//! # API
//!
//! | method and path | answer |
//! |---|---|
//! | `PUT /deployment/{dseq}/manifest` (JWT; body: the manifest's JSON) | 200 `{"dseq", "manifest_version", "changed", "leases": [{"gseq", "oseq", "group", "created", "kept"}]}`; the same manifest again changes nothing |
//! | `GET /lease/{dseq}/{gseq}/{oseq}/status` (JWT) | `{"services": {"web": {"name", "available", "total", "uris", "ready_replicas", "available_replicas"}}, "forwarded_ports": {"web": [{"host", "port", "externalPort", "proto", "name"}]}}`; 404 before a manifest |
//! | `GET /lease/{dseq}/{gseq}/{oseq}/logs?follow=&tail=` (JWT, WebSocket) | one text message `{"name": "<service>-<n>", "message": "<line>"}` per log line |
//! | `GET /status`, `GET /address` | what it is: `"simulator": "akash-provider"`, its address, chain, leases, faults |
//! | `POST /simulator/faults` `{"kind": "refuse_manifest" \| "never_ready", "status"?}` | arms a fault: manifests are refused (with `status`, default 400), or services never report ready |
//! | `DELETE /simulator/faults` | clears them |
//!
//! A JWT is `Authorization: Bearer <token>` as Akash's SDK mints it ([`jwt`] says what
//! is verified). Errors are `{"error": "<one line>"}`: 401 for a missing, malformed,
//! badly signed or expired token; 403 when the issuer holds no active lease for the
//! deployment here (or the token does not grant the action); 422 when the manifest's
//! version is not the deployment's hash on chain or it cannot be run (an image that
//! cannot be pulled); 502 when the chain or Docker fails.
//!
//! # Containers
//!
//! [`containers`](self) documents pods (one network namespace per replica of a
//! group), volumes (one per group and name) and labels: every container carries
//! [`PROVIDER_LABEL`]` = <provider address>` and [`DSEQ_LABEL`]` = <dseq>`.

mod chain;
mod containers;
mod http;
pub mod jwt;
pub mod manifest;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use chain::ChainClient;
use containers::Engine;
pub use containers::{DSEQ_LABEL, PROVIDER_LABEL};

/// Value of the `x-morpheus-simulator` header and of `"simulator"` in `/status`.
pub const SIMULATOR_NAME: &str = "akash-provider";

/// The HD path a mnemonic's key is derived on (`akash keys add`'s).
pub const HD_PATH: &str = "m/44'/118'/0'/0/0";

/// How the provider simulator runs.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// The Akash chain simulator's REST URL.
    pub akash_rest: Url,
    /// The provider's attributes (`region=local`): the chain bids only on orders
    /// whose required attributes it all has.
    pub attributes: Vec<(String, String)>,
    /// Its bid price in uakt per block, as decimal text (`"10"`, `"12.5"`).
    pub price_uakt_per_block: String,
    /// How many blocks after an order opens the chain bids for it.
    pub bid_delay_blocks: u64,
    /// The mnemonic of the provider's key; `None` makes a fresh key (a new address
    /// each start, so a restarted provider does not adopt the previous one's leases).
    pub mnemonic: Option<String>,
    /// The `host_uri` it registers; `None` means `http://<listen address>`.
    pub host_uri: Option<Url>,
    /// How often it checks the chain for closed leases.
    pub poll_interval: Duration,
}

impl ProviderOptions {
    /// Defaults for a provider of the chain at `akash_rest`: no attributes, 10
    /// uakt/block, bids 2 blocks after an order opens, a fresh key, the chain
    /// checked every second.
    pub fn new(akash_rest: Url) -> Self {
        Self {
            akash_rest,
            attributes: Vec::new(),
            price_uakt_per_block: "10".to_owned(),
            bid_delay_blocks: 2,
            mnemonic: None,
            host_uri: None,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Why the provider simulator could not start (one line).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Faults armed through `POST /simulator/faults`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// Refuse every manifest with this status.
    pub refuse_manifest: Option<u16>,
    /// Report every service as not ready.
    pub never_ready: bool,
}

/// State shared by the HTTP handlers and the lease watcher.
pub(crate) struct Shared {
    pub address: String,
    pub host_uri: String,
    pub chain: ChainClient,
    pub engine: Engine,
    pub faults: Mutex<Faults>,
    /// Serializes changes to containers (manifests and teardowns), so a manifest sent
    /// twice at once, or while its lease closes, cannot create a container twice.
    pub changing: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One pass of the lease watcher: removes the containers of every lease this
    /// provider runs that the chain shows closed or does not know. Returns how many
    /// containers it removed; a chain that does not answer changes nothing.
    pub async fn reap_closed_leases(&self) -> Result<usize, String> {
        let leases = self.engine.leases().await.map_err(|e| e.to_string())?;
        let mut removed = 0;
        for lease in leases {
            let on_chain = self.chain.leases(&lease.owner, lease.dseq).await?;
            let active = on_chain
                .iter()
                .any(|listed| listed.id == lease && listed.state == "active");
            if active {
                continue;
            }
            let _changing = self.changing.lock().await;
            let count = self
                .engine
                .teardown(&lease)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                owner = %lease.owner,
                dseq = lease.dseq,
                gseq = lease.gseq,
                oseq = lease.oseq,
                containers = count,
                "lease closed on chain: containers removed"
            );
            removed += count;
        }
        Ok(removed)
    }
}

/// A running provider simulator. Dropping it stops the server and the lease watcher
/// (the containers stay: they belong to leases, and the next watcher of this
/// address removes them once their leases close).
pub struct ProviderHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    options: ProviderOptions,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl ProviderHandle {
    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its provider address (`akash1…`), as registered with the chain and put on its
    /// containers' [`PROVIDER_LABEL`].
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The `host_uri` it registered.
    pub fn host_uri(&self) -> &str {
        &self.shared.host_uri
    }

    /// The options it runs with.
    pub fn options(&self) -> &ProviderOptions {
        &self.options
    }

    /// Runs the lease watcher's check now (it also runs every `poll_interval`) and
    /// returns how many containers it removed: a test hook, so a test that closes a
    /// lease need not wait for the next poll.
    pub async fn reap_closed_leases(&self) -> Result<usize, String> {
        self.shared.reap_closed_leases().await
    }

    /// Stops serving and watching, and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        self.watcher.abort();
        let _ = (&mut self.server).await;
    }

    /// The startup banner: it says "simulator".
    pub fn banner(&self) -> String {
        let o = &self.options;
        let attributes = if o.attributes.is_empty() {
            "none".to_owned()
        } else {
            o.attributes
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "Akash provider SIMULATOR (not an Akash provider: runs leases as containers on the local Docker engine, ports on 127.0.0.1)\n\
             listening on {}  provider {}  host_uri {}\n\
             chain simulator {}  attributes {attributes}  price {}uakt/block  bids {} blocks after an order opens\n",
            self.url(),
            self.shared.address,
            self.shared.host_uri,
            o.akash_rest,
            o.price_uakt_per_block,
            o.bid_delay_blocks,
        )
    }
}

impl Drop for ProviderHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        self.watcher.abort();
    }
}

/// The provider address for `mnemonic` (on [`HD_PATH`]), or for a fresh random key.
pub fn provider_address(mnemonic: Option<&str>) -> Result<String, StartError> {
    use cosmrs::crypto::secp256k1::SigningKey;
    let key = match mnemonic {
        Some(words) => {
            let mnemonic = bip39::Mnemonic::parse_normalized(words.trim())
                .map_err(|e| StartError(format!("the provider mnemonic is not BIP-39: {e}")))?;
            let path = HD_PATH.parse().expect("a valid HD path");
            SigningKey::derive_from_path(mnemonic.to_seed_normalized(""), &path)
                .map_err(|e| StartError(format!("cannot derive the provider key: {e}")))?
        }
        // A random 32-byte scalar is a valid key but for a negligible few; retry those.
        None => loop {
            if let Ok(key) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        },
    };
    key.public_key()
        .account_id("akash")
        .map(|id| id.to_string())
        .map_err(|e| StartError(format!("cannot make the provider address: {e}")))
}

/// Starts the provider simulator on `listener`: connects to Docker, registers with
/// the chain simulator at `options.akash_rest`, then serves and watches leases until
/// the handle is dropped or shut down.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use morpheus_devnets::provider::{start_provider, ProviderOptions};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let mut options = ProviderOptions::new("http://127.0.0.1:26617".parse()?);
/// options.attributes.push(("region".into(), "local".into()));
/// let provider = start_provider(listener, options).await?;
/// print!("{}", provider.banner()); // "Akash provider SIMULATOR …", its address, …
/// provider.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn start_provider(
    listener: TcpListener,
    options: ProviderOptions,
) -> Result<ProviderHandle, StartError> {
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    let address = provider_address(options.mnemonic.as_deref())?;
    let host_uri = match &options.host_uri {
        Some(uri) => uri.as_str().trim_end_matches('/').to_owned(),
        None => format!("http://{addr}"),
    };
    let engine = Engine::connect(&address).await.map_err(StartError)?;
    let chain = ChainClient::new(options.akash_rest.clone());
    let attributes: Vec<_> = options
        .attributes
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    chain
        .register(&json!({
            "address": address,
            "host_uri": host_uri,
            "attributes": attributes,
            "price_uakt_per_block": options.price_uakt_per_block,
            "bid_delay_blocks": options.bid_delay_blocks,
        }))
        .await
        .map_err(StartError)?;
    let shared = Arc::new(Shared {
        address,
        host_uri,
        chain,
        engine,
        faults: Mutex::new(Faults::default()),
        changing: tokio::sync::Mutex::new(()),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let app = http::router(shared.clone());
    let server = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "akash provider simulator stopped");
        }
    });
    let watcher = {
        let shared = shared.clone();
        let every = options.poll_interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = shared.reap_closed_leases().await {
                    tracing::warn!(%error, "provider simulator: cannot check leases on chain");
                }
            }
        })
    };
    Ok(ProviderHandle {
        addr,
        shared,
        options,
        shutdown: Some(stop),
        server,
        watcher,
    })
}
