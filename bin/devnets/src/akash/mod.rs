//! The Akash devnet **simulator**: a small HTTP server that speaks the subset of an
//! Akash node's REST API the Morpheus flows use, backed by an in-memory ledger. It is
//! not a chain and says so: its banner, the `x-morpheus-simulator: akash-devnet`
//! header on every response, its node info and its admin answers all name it a
//! simulator.
//!
//! It behaves like a chain where it matters to a client: it decodes and verifies
//! transactions (chain id, account number, sequence, secp256k1 signature, fees, funds,
//! deployment, order and bid state; see [`chain`] for the checks and codes), applies
//! them in the next block, indexes them by hash, lets simulated providers bid on the
//! orders of new deployments, and drains each deployment's escrow by its active
//! leases' prices as blocks advance, closing deployments that run dry.
//!
//! # Messages it executes
//!
//! | type URL | effect |
//! |---|---|
//! | `/akash.escrow.v1.MsgAccountDeposit`, `/akash.deployment.v1beta3.MsgDepositDeployment` | adds to an open deployment's escrow |
//! | `/akash.deployment.v1beta4.MsgCreateDeployment` | an active deployment with the deposit as escrow (at least `min_deposit_uakt`), its groups and one open order per group |
//! | `/akash.market.v1beta5.MsgCreateLease` | leases an open bid: lease active at the bid's price, the order active, its other bids lost |
//! | `/akash.deployment.v1beta4.MsgCloseDeployment` | closes the deployment with its groups, orders, bids and leases; the remaining escrow goes back to the owner |
//!
//! Their field numbers and validation are in [`messages`].
//!
//! # Chain API (the subset served)
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /cosmos/auth/v1beta1/accounts/{address}` | `{"account": {"@type": "/cosmos.auth.v1beta1.BaseAccount", "address", "pub_key", "account_number", "sequence"}}`; 404 for an unknown address |
//! | `GET /cosmos/bank/v1beta1/balances/{address}` | `{"balances": [{"denom", "amount"}], "pagination"}` |
//! | `GET /cosmos/base/tendermint/v1beta1/blocks/latest` | `{"block_id", "block": {"header": {"chain_id", "height", "time"}, …}, "sdk_block": …}` |
//! | `GET /cosmos/base/tendermint/v1beta1/node_info` | `{"default_node_info": {"network", "moniker"}, "application_version"}` |
//! | `POST /cosmos/tx/v1beta1/simulate` `{"tx_bytes"}` | `{"gas_info": {"gas_wanted", "gas_used"}, "result"}`; HTTP 500 `{"code": 2, "message"}` on a failing transaction |
//! | `POST /cosmos/tx/v1beta1/txs` `{"tx_bytes", "mode"}` | `{"tx_response": {"height": "0", "txhash", "codespace", "code", "raw_log", …}}` (sync mode whatever `mode` says) |
//! | `GET /cosmos/tx/v1beta1/txs/{hash}` | `{"tx", "tx_response": {"height", "txhash", "code", "raw_log", "gas_wanted", "gas_used", "timestamp", …}}`; 404 until it is in a block |
//! | `GET /akash/deployment/v1beta4/deployments/list?filters.owner=&filters.state=&filters.dseq=` | `{"deployments": [QueryDeploymentResponse], "pagination"}` with `deployment.id`, `escrow_account.state.funds` |
//! | `GET /akash/deployment/v1beta4/deployments/info?id.owner=&id.dseq=` | one `QueryDeploymentResponse`; 404 when unknown |
//! | `GET /akash/deployment/v1beta3/deployments/{list,info}` | the same in the v1beta3 shape (`deployment.deployment_id`, `escrow_account.balance`/`funds`) |
//! | `GET /akash/deployment/v1beta4/deployments/info` (detail) | `deployment.state` (`active` \| `closed`), `deployment.hash` (base64 of the 32 bytes; empty for admin-made deployments), `groups: [{"id": {"owner", "dseq", "gseq"}, "state": "open" \| "closed", "group_spec"}]` |
//! | `GET /akash/market/v1beta5/orders/list?filters.owner=&filters.dseq=&filters.gseq=&filters.oseq=&filters.state=` | `{"orders": [{"id": {"owner", "dseq", "gseq", "oseq"}, "state": "open" \| "active" \| "closed", "spec", "created_at"}], "pagination"}` |
//! | `GET /akash/market/v1beta5/bids/list?filters.owner=&filters.dseq=&filters.gseq=&filters.oseq=&filters.provider=&filters.state=` | `{"bids": [{"bid": {"id": {…, "provider", "bseq"}, "state": "open" \| "active" \| "lost" \| "closed", "price": {"denom", "amount": "12.000000000000000000"}, "created_at", "resources_offer": []}, "escrow_account"}], "pagination"}` |
//! | `GET /akash/market/v1beta5/leases/list?filters.owner=&filters.dseq=&filters.provider=&filters.state=` | `{"leases": [{"lease": {"id": {"owner", "dseq", "gseq", "oseq", "provider", "bseq"}, "state": "active" \| "closed", "price", "created_at", "closed_on"}, "escrow_payment"}], "pagination"}` |
//! | `GET /akash/market/v1beta4/leases/list` | the same with `lease.lease_id` (no `bseq`) |
//! | `GET /akash/provider/v1beta4/providers/{address}` | `{"provider": {"owner", "host_uri", "attributes": [{"key", "value"}], "info": {"email", "website"}}}`; 404 `{"code": 5, "message": "provider not found"}` |
//!
//! Errors use the gRPC-gateway shape `{"code", "message", "details": []}`.
//!
//! # Admin API (`/simulator/…`, for tests and the demo)
//!
//! | method and path | body | effect |
//! |---|---|---|
//! | `POST /simulator/accounts` | `{"address", "amount": "1000000", "denom"?, "reference"?}` | funds an address (creating its account); with a `reference`, once: a repeat credits nothing and answers the first credit (`"credited": false`) |
//! | `GET /simulator/credits/{reference}` | | the credit made with that reference; 404 when none |
//! | `POST /simulator/deployments` | `{"owner", "dseq"?, "escrow": "500000", "lease_prices"?: ["60", "40"], "closed"?: false}` | creates a deployment with one lease per price (uakt per block) |
//! | `POST /simulator/providers` | `{"address", "host_uri", "attributes"?: [{"key", "value"}], "price_uakt_per_block"?: "12" (default "10"), "bid_delay_blocks"?: 2 (default 2), "email"?, "website"?}` | registers a simulated provider (re-posting an address replaces its settings): it bids once on every open order whose required attributes it all has and whose ceiling (sum of price × count) is at least its price, `bid_delay_blocks` after the order opened; answers `{"address", "registered": true, "replaced"}` |
//! | `GET /simulator/providers` | | the registered providers with their settings |
//! | `POST /simulator/blocks` | `{"count": 100}` | produces blocks at once (time acceleration) |
//! | `GET /simulator/ledger` | | height, `mempool` size, the number of committed `txs` and each one in block order (`committed_txs`: hash, height, code, codespace, `msg_types`), `duplicate_broadcasts` (same bytes sent again), every deposit applied (`deposits`), every deployment with `state`, escrow, rate, deposit totals, `initial_deposit`, `refunded` and `hash_hex`, every `orders`/`bids`/`leases` entry with its state, the escrow `refunds` of closed deployments, the `providers`, every account |
//! | `POST /simulator/faults` | `{"path_prefix", "method"?, "kind": "http_500" \| "malformed_json", "count": 1}` | the next `count` matching chain requests fail that way |
//! | `DELETE /simulator/faults` | | clears armed faults |
//!
//! # Demo data (`--seed-demo`)
//!
//! A wallet derived from [`DEMO_MNEMONIC`] (a public test mnemonic: never use it for
//! real funds) holding 500 AKT, owning three deployments: dseq 1001 healthy (50 AKT at
//! 100 uakt/block), 1002 running dry within about four minutes at 200 ms blocks (two
//! leases, 60 + 40 uakt/block, 120 000 uakt of escrow), and 1003 closed. The end-to-end
//! tests depend on these numbers; `morpheus up --demo` tunes its top-up policy to them
//! (see [`DemoDeployment::runway_blocks`]), never the other way round.
//!
//! # Its own decoding
//!
//! Transactions are decoded with the simulator's own Akash message types
//! ([`messages`]), hashed by [`chain::tx_hash`], and the demo wallet is derived by
//! [`demo_address`]: nothing here comes from the `cosmos` executor it is meant to
//! check.

pub mod chain;
pub mod dec;
pub mod gas_price;
mod http;
pub mod messages;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use chain::{Chain, NewDeployment};
use gas_price::GasPrice;

pub use chain::SimulatedProvider;

/// The demo wallet's mnemonic: the BIP-39 test vector, public on purpose. Anything it
/// holds on a real chain is anyone's.
pub const DEMO_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// The HD path the demo wallet's key is derived on (Cosmos coin type 118, the path
/// `akash keys add` uses).
pub const DEMO_HD_PATH: &str = "m/44'/118'/0'/0/0";

/// The environment variable the banner tells operators to put the demo mnemonic in.
pub const DEMO_MNEMONIC_ENV: &str = "MORPHEUS_DEMO_MNEMONIC";

/// Value of the `x-morpheus-simulator` header on every response.
pub const SIMULATOR_HEADER_VALUE: &str = "akash-devnet";

/// The demo wallet's starting balance (500 AKT).
pub const DEMO_BALANCE_UAKT: u128 = 500_000_000;

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Chain id it reports and verifies signatures for.
    pub chain_id: String,
    /// Time between blocks; zero means blocks only advance through
    /// `POST /simulator/blocks`.
    pub block_time: Duration,
    /// Seed the demo wallet and deployments.
    pub seed_demo: bool,
    /// Fees must be at least `gas limit × this` (in uakt).
    pub min_gas_price: GasPrice,
    /// The smallest deposit `MsgCreateDeployment` may carry, in uakt (Akash's
    /// `min_deposits`; default [`chain::DEFAULT_MIN_DEPOSIT_UAKT`]).
    pub min_deposit_uakt: u128,
    /// Simulated providers registered from the start (more can register through
    /// `POST /simulator/providers`).
    pub providers: Vec<SimulatedProvider>,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            chain_id: "morpheus-devnet-1".to_owned(),
            block_time: Duration::from_millis(200),
            seed_demo: false,
            min_gas_price: "0.025".parse().expect("constant"),
            min_deposit_uakt: chain::DEFAULT_MIN_DEPOSIT_UAKT,
            providers: Vec::new(),
        }
    }
}

/// One seeded demo deployment, as `--seed-demo` created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoDeployment {
    /// Its sequence number (1001, 1002, 1003).
    pub dseq: u64,
    /// Escrow it started with, in uakt.
    pub escrow_uakt: u128,
    /// What one block costs it, in uakt (the sum of its lease prices).
    pub rate_per_block: u128,
    /// Whether it was created closed.
    pub closed: bool,
    /// What it shows, for banners (with its numbers).
    pub description: String,
}

impl DemoDeployment {
    /// Blocks its starting escrow pays for (`None` for a closed or free deployment).
    pub fn runway_blocks(&self) -> Option<u128> {
        (!self.closed && self.rate_per_block > 0).then(|| self.escrow_uakt / self.rate_per_block)
    }
}

/// What `--seed-demo` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoInfo {
    /// The demo wallet (derived from [`DEMO_MNEMONIC`]).
    pub address: String,
    /// Its deployments.
    pub deployments: Vec<DemoDeployment>,
}

/// State shared by the HTTP handlers and the block producer.
pub(crate) struct Shared {
    pub chain: Mutex<Chain>,
    pub faults: Mutex<Vec<http::Fault>>,
}

impl Shared {
    /// Runs `f` with the chain locked (a poisoned lock still holds a consistent
    /// ledger: every mutation completes before it can panic).
    pub fn with_chain<T>(&self, f: impl FnOnce(&mut Chain) -> T) -> T {
        let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut chain)
    }
}

/// A running simulator. Dropping it stops the server and the block producer.
pub struct SimulatorHandle {
    addr: SocketAddr,
    demo: Option<DemoInfo>,
    options: SimulatorOptions,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    blocks: Option<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The demo data, when seeded.
    pub fn demo(&self) -> Option<&DemoInfo> {
        self.demo.as_ref()
    }

    /// The options it runs with.
    pub fn options(&self) -> &SimulatorOptions {
        &self.options
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(blocks) = self.blocks.take() {
            blocks.abort();
        }
        let _ = (&mut self.server).await;
    }

    /// The startup banner: it says "simulator", and with demo data prints the
    /// mnemonic to export (public by design).
    pub fn banner(&self) -> String {
        let o = &self.options;
        let blocks = if o.block_time.is_zero() {
            "blocks only via POST /simulator/blocks".to_owned()
        } else {
            format!("block time {}", humantime::format_duration(o.block_time))
        };
        let mut text = format!(
            "Akash devnet SIMULATOR (in-memory ledger, not a real chain: verifies signatures, \
             sequences and funds, runs a simulated market, drains escrow by lease rate)\n\
             listening on {}  chain-id {}  {blocks}  min gas price {}uakt  min deposit {}uakt\n",
            self.url(),
            o.chain_id,
            o.min_gas_price,
            o.min_deposit_uakt
        );
        for provider in &o.providers {
            text.push_str(&format!(
                "simulated provider {} at {} bids {}uakt/block after {} blocks\n",
                provider.address, provider.host_uri, provider.price, provider.bid_delay_blocks
            ));
        }
        if let Some(demo) = &self.demo {
            text.push_str(&format!(
                "demo wallet {} holds {DEMO_BALANCE_UAKT}uakt; its key is the PUBLIC demo mnemonic (never use it for real funds):\n\
                 \x20 export {DEMO_MNEMONIC_ENV}='{DEMO_MNEMONIC}'\n",
                demo.address
            ));
            for deployment in &demo.deployments {
                text.push_str(&format!(
                    "demo deployment dseq {}: {}\n",
                    deployment.dseq, deployment.description
                ));
            }
        }
        text
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(blocks) = &self.blocks {
            blocks.abort();
        }
    }
}

/// Starts the simulator on `listener`. Blocks advance on a timer (unless
/// `block_time` is zero) until the handle is dropped or shut down.
pub async fn serve(
    listener: TcpListener,
    options: SimulatorOptions,
) -> std::io::Result<SimulatorHandle> {
    let addr = listener.local_addr()?;
    let mut chain = Chain::new(&options.chain_id, "uakt", options.min_gas_price, Utc::now());
    chain.min_deposit = options.min_deposit_uakt;
    for provider in &options.providers {
        chain.register_provider(provider.clone());
    }
    let demo = options.seed_demo.then(|| seed_demo(&mut chain));
    let shared = Arc::new(Shared {
        chain: Mutex::new(chain),
        faults: Mutex::new(Vec::new()),
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
            tracing::error!(%error, "akash devnet simulator stopped");
        }
    });
    let blocks = (!options.block_time.is_zero()).then(|| {
        let shared = shared.clone();
        let every = options.block_time;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                shared.with_chain(|chain| chain.produce_block(Utc::now()));
            }
        })
    });
    Ok(SimulatorHandle {
        addr,
        demo,
        options,
        shutdown: Some(stop),
        server,
        blocks,
    })
}

/// The demo wallet and its three deployments.
fn seed_demo(chain: &mut Chain) -> DemoInfo {
    let owner = demo_address();
    chain.fund(&owner, DEMO_BALANCE_UAKT, "uakt");
    let mut deployments = Vec::new();
    let mut add = |dseq: u64, escrow: u128, lease_prices: Vec<u128>, closed: bool, text: &str| {
        let rate_per_block = lease_prices.iter().sum();
        chain
            .create_deployment(NewDeployment {
                owner: owner.clone(),
                dseq: Some(dseq),
                escrow,
                lease_prices,
                closed,
            })
            .expect("demo dseqs are distinct");
        deployments.push(DemoDeployment {
            dseq,
            escrow_uakt: escrow,
            rate_per_block,
            closed,
            description: text.to_owned(),
        });
    };
    add(
        1001,
        50_000_000,
        vec![100],
        false,
        "healthy: 50000000uakt of escrow at 100uakt/block (500000 blocks: about 36 days at 6.174 s a block)",
    );
    add(
        1002,
        120_000,
        vec![60, 40],
        false,
        "draining: 120000uakt of escrow at 100uakt/block (two leases), dry after 1200 blocks (4 min at 200 ms)",
    );
    add(1003, 0, vec![100], true, "closed");
    DemoInfo {
        address: owner,
        deployments,
    }
}

/// The demo wallet's address: the key derived from [`DEMO_MNEMONIC`] on
/// [`DEMO_HD_PATH`], as bech32 with the `akash` prefix (RIPEMD-160 of SHA-256 of the
/// compressed public key). Derived here, not by the `cosmos` executor's signer, so a
/// test that signs with that signer checks the client's derivation too.
pub fn demo_address() -> String {
    let mnemonic = bip39::Mnemonic::parse_normalized(DEMO_MNEMONIC).expect("a valid mnemonic");
    let path = DEMO_HD_PATH.parse().expect("a valid HD path");
    let key = cosmrs::crypto::secp256k1::SigningKey::derive_from_path(
        mnemonic.to_seed_normalized(""),
        &path,
    )
    .expect("derivable key");
    key.public_key()
        .account_id(chain::ACCOUNT_PREFIX)
        .expect("a valid prefix")
        .to_string()
}
