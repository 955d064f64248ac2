//! The Skip Go route **simulator** behind `morpheus devnet skip`: the subset of Skip Go's
//! API v2 the funding flow uses, with Skip's field names, over a swap that really moves
//! funds between two devnets. It is not Skip's API and says so: its banner, the
//! `x-morpheus-simulator: skip-go` header and a `"simulator"` field in every answer.
//!
//! # How a swap runs
//!
//! 1. `POST /v2/fungible/route` quotes USDC (the `MockUSDC` token on the EVM devnet) →
//!    `uakt` on the Akash devnet simulator at the configured price and fee
//!    ([`quote`] documents units and rounding).
//! 2. `POST /v2/fungible/msgs` returns one `evm_tx` calling
//!    `SkipBridge.swap(amount_in, dest akash1… address, min_amount_out)` with the USDC
//!    approval it needs; `min_amount_out` comes from the quote and the caller's slippage
//!    tolerance. It refuses (HTTP 400) a route whose price impact exceeds that tolerance.
//! 3. The caller signs and sends that transaction; the bridge takes the USDC and emits
//!    `SwapRequested`.
//! 4. The simulator's settlement worker polls the bridge's logs (`eth_getLogs`). For each
//!    request still pending on chain it prices the swap *now* (the price may have moved
//!    since the quote): if it yields at least `minAmountOut`, it credits the AKT to the
//!    destination through the Akash simulator's admin API with the reference
//!    `skip-simulator.{evm chain id}.{bridge}.{swap id}` (the Akash simulator credits a
//!    reference once) and then calls `settle(id, amountOut)` on the bridge; otherwise it
//!    calls `refund(id, reason)`, which returns the USDC.
//! 5. `GET /v2/tx/status` reads the outcome from the chain: the receipt, the request's
//!    on-chain status, its `SwapSettled`/`SwapRefunded` event.
//!
//! **Exactly once, across restarts.** Nothing the outcome depends on lives in the
//! simulator's memory: which requests are finished is on chain (`swaps(id).status`),
//! and whether a pending one was already credited is on the Akash simulator
//! (`GET /simulator/credits/{reference}`). A restarted simulator rescans the bridge's
//! logs from block 0, settles a pending request that was credited with the credited
//! amount (never refunding it, whatever the price is now), and credits the others.
//!
//! # API (the subset served)
//!
//! | method and path | body / query | answer |
//! |---|---|---|
//! | `POST /v2/fungible/route` | `amount_in`, `source_asset_denom` (the USDC address), `source_asset_chain_id` (the EVM chain id), `dest_asset_denom` (`uakt`), `dest_asset_chain_id` (the Akash simulator's) | `amount_in`, `amount_out`, `estimated_amount_out`, `operations`, `chain_ids`, `required_chain_addresses`, `does_swap`, `txs_required`, `swap_price_impact_percent`, `swap_venues`, `estimated_fees`, `estimated_route_duration_seconds`, `warning` |
//! | `POST /v2/fungible/msgs` | the route's fields plus `amount_out`, `address_list` (`[0x… sender, akash1… receiver]`), `slippage_tolerance_percent` | `txs: [{"evm_tx": {chain_id, to, value, data, required_erc20_approvals: [{token_contract, spender, amount}], signer_address}, "operations_indices": [0]}]`, `msgs` (the same, Skip's older name), `min_amount_out` |
//! | `POST /v2/tx/track` | `tx_hash`, `chain_id` | `tx_hash`, `explorer_link` |
//! | `GET /v2/tx/status?tx_hash=&chain_id=` | | `state` (`STATE_SUBMITTED`, `STATE_PENDING`, `STATE_COMPLETED_SUCCESS`, `STATE_COMPLETED_ERROR`, `STATE_ABANDONED`), `transfers`, `transfer_sequence`, `transfer_asset_release` (`chain_id`, `denom`, `amount` delivered, `released`), `next_blocking_transfer`, `error` |
//! | `GET /simulator/price`, `POST /simulator/price` | `{"price"?, "fee_bps"?, "price_impact_pct"?}` | the pricing now (admin: move the price between a quote and its execution) |
//! | `POST /simulator/faults` | `{"kind": "stop_before_settle"}` | the settlement worker stops after its next credit, before settling it (a crash at the worst moment, for restart tests) |
//!
//! `evm_tx.data` is hex calldata without `0x`, as Skip's API writes it; `to`, addresses
//! and `token_contract` are `0x…` checksummed. Errors are `{"code", "message",
//! "details", "simulator"}` (Skip's gRPC-gateway shape) with one-line messages: 400 for
//! a malformed or refused request, 404 for an unknown transaction, 502 when a devnet
//! does not answer.

mod http;
pub mod quote;
mod settlement;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use crate::evm::{signing_provider, SkipBridge};
use quote::Pricing;

/// Value of the `x-morpheus-simulator` header and of the `"simulator"` field.
pub const SIMULATOR_NAME: &str = "skip-go";

/// The destination denomination.
pub const DEST_DENOM: &str = "uakt";

/// How the route simulator runs.
#[derive(Debug, Clone)]
pub struct SkipOptions {
    /// The EVM devnet (anvil) JSON-RPC URL.
    pub evm_rpc: Url,
    /// The Akash devnet simulator's REST URL (its admin API credits the AKT).
    pub akash_rest: Url,
    /// The `SkipBridge` contract.
    pub bridge: Address,
    /// The input token; `None` reads it from the bridge (`token()`).
    pub usdc: Option<Address>,
    /// The bridge owner's key: it settles and refunds.
    pub owner_key: PrivateKeySigner,
    /// Price, fee and reported impact.
    pub pricing: Pricing,
    /// How often the bridge's logs are polled.
    pub poll_interval: Duration,
}

/// What a started simulator learned from the two devnets.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub evm_chain_id: u64,
    pub akash_chain_id: String,
    pub usdc: Address,
    pub bridge: Address,
    pub akash_rest: Url,
}

/// State shared by the HTTP handlers and the settlement worker.
pub(crate) struct Shared {
    pub route: Route,
    pub provider: DynProvider,
    pub pricing: Mutex<Pricing>,
    pub tracked: Mutex<HashSet<B256>>,
    pub stop_before_settle: Mutex<bool>,
    pub http: reqwest::Client,
}

impl Shared {
    pub fn pricing(&self) -> Pricing {
        *self.pricing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why the simulator could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A running route simulator. Dropping it stops the server and the settlement worker.
pub struct SkipHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    settlement: JoinHandle<()>,
}

impl SkipHandle {
    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The EVM chain id it routes from.
    pub fn evm_chain_id(&self) -> u64 {
        self.shared.route.evm_chain_id
    }

    /// The Akash chain id it routes to.
    pub fn akash_chain_id(&self) -> &str {
        &self.shared.route.akash_chain_id
    }

    /// The input token.
    pub fn usdc(&self) -> Address {
        self.shared.route.usdc
    }

    /// Stops serving and settling, and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        self.settlement.abort();
        let _ = (&mut self.server).await;
    }

    /// The startup banner: it says "simulator".
    pub fn banner(&self) -> String {
        let route = &self.shared.route;
        let pricing = self.shared.pricing();
        format!(
            "Skip Go route SIMULATOR (not Skip's API: swaps USDC on an EVM devnet for AKT on the Akash devnet simulator)\n\
             listening on {}  from chain {} USDC {}  bridge {}  to chain {} uakt via {}\n\
             price {} AKT per USDC  fee {} bps  reported price impact {} %\n",
            self.url(),
            route.evm_chain_id,
            route.usdc,
            route.bridge,
            route.akash_chain_id,
            route.akash_rest,
            pricing.price,
            pricing.fee_bps,
            pricing.price_impact_pct,
        )
    }
}

impl Drop for SkipHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        self.settlement.abort();
    }
}

/// Starts the simulator on `listener`: checks both devnets (the EVM chain id, the
/// bridge's code and owner, the Akash simulator's chain id), then serves and settles
/// until the handle is dropped or shut down.
pub async fn serve(listener: TcpListener, options: SkipOptions) -> Result<SkipHandle, StartError> {
    options.pricing.validate().map_err(StartError)?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    let owner = options.owner_key.address();
    let provider = signing_provider(&options.evm_rpc, options.owner_key);
    let evm = &options.evm_rpc;
    let evm_chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| StartError(format!("the EVM node at {evm} does not answer: {e}")))?;
    let code = provider
        .get_code_at(options.bridge)
        .await
        .map_err(|e| StartError(format!("the EVM node at {evm} does not answer: {e}")))?;
    if code.is_empty() {
        return Err(StartError(format!(
            "no contract at --bridge {} on chain {evm_chain_id}",
            options.bridge
        )));
    }
    let bridge = SkipBridge::new(options.bridge, &provider);
    let bridge_owner = bridge
        .owner()
        .call()
        .await
        .map_err(|e| StartError(format!("{} is not a SkipBridge: {e}", options.bridge)))?;
    if bridge_owner != owner {
        return Err(StartError(format!(
            "the bridge's owner is {bridge_owner}, but the settlement key is {owner}: pass the deployer's key"
        )));
    }
    let bridge_token = bridge
        .token()
        .call()
        .await
        .map_err(|e| StartError(format!("{} is not a SkipBridge: {e}", options.bridge)))?;
    let usdc = options.usdc.unwrap_or(bridge_token);
    if usdc != bridge_token {
        return Err(StartError(format!(
            "--usdc {usdc} is not the bridge's token ({bridge_token})"
        )));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError(format!("cannot build an HTTP client: {e}")))?;
    let akash_chain_id = akash_chain_id(&http, &options.akash_rest).await?;
    let shared = Arc::new(Shared {
        route: Route {
            evm_chain_id,
            akash_chain_id,
            usdc,
            bridge: options.bridge,
            akash_rest: options.akash_rest,
        },
        provider,
        pricing: Mutex::new(options.pricing),
        tracked: Mutex::new(HashSet::new()),
        stop_before_settle: Mutex::new(false),
        http,
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
            tracing::error!(%error, "skip route simulator stopped");
        }
    });
    let settlement = tokio::spawn(settlement::run(shared.clone(), options.poll_interval));
    Ok(SkipHandle {
        addr,
        shared,
        shutdown: Some(stop),
        server,
        settlement,
    })
}

async fn akash_chain_id(http: &reqwest::Client, rest: &Url) -> Result<String, StartError> {
    let url = format!(
        "{}/cosmos/base/tendermint/v1beta1/node_info",
        rest.as_str().trim_end_matches('/')
    );
    let unreachable = |e: &dyn std::fmt::Display| {
        StartError(format!("the Akash node at {rest} does not answer: {e}"))
    };
    let info: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .map_err(|e| unreachable(&e))?
        .error_for_status()
        .map_err(|e| unreachable(&e))?
        .json()
        .await
        .map_err(|e| unreachable(&e))?;
    info["default_node_info"]["network"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| StartError(format!("the Akash node at {rest} reports no chain id")))
}
