//! The simulator's market driven by the real `cosmos` executor (the client under
//! test) over HTTP on 127.0.0.1: create a deployment with a deposit, simulated
//! providers bidding on the orders they can serve, a lease on the cheapest bid, closing
//! with the escrow refunded, and the chain's refusals, each with its code. Blocks are
//! only made on demand (block time 0), so bids land at known heights; a broadcast is
//! confirmed by producing exactly one block once its transaction is in the mempool.
//! The signed transactions are also decoded by Akash's own SDK
//! (`tests/sdl-judge/tx-judge.mjs`).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::proto::cosmos::tx::v1beta1::TxRaw;
use cosmrs::tx::{Body, Fee, SignDoc, SignerInfo};
use cosmrs::Any;
use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogSink, StepError};
use morpheus_executors::cosmos::{
    groups_from_json, CosmosConfig, CosmosExecutor, DeploymentId, Gas, KeySource,
    MsgCloseDeployment, MsgCreateDeployment, Signer, TX_REJECTED_PREFIX,
};
use morpheus_tests::sdl_judge::judge_dir;
use prost::Message;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use morpheus_devnets::akash::{serve, SimulatorHandle, SimulatorOptions};

/// A simulator that makes blocks only when asked, plus a client for its APIs.
struct Devnet {
    sim: SimulatorHandle,
    http: reqwest::Client,
}

impl Devnet {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = serve(
            listener,
            SimulatorOptions {
                block_time: Duration::ZERO,
                ..SimulatorOptions::default()
            },
        )
        .await
        .unwrap();
        Self {
            sim,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.sim.url()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    async fn fund(&self, address: &str, amount: u128) {
        self.post(
            "/simulator/accounts",
            json!({"address": address, "amount": amount.to_string()}),
        )
        .await;
    }

    async fn provider(&self, address: &str, region: &str, price: &str, delay: u64) {
        let answer = self
            .post(
                "/simulator/providers",
                json!({"address": address, "host_uri": format!("https://{region}.provider.test:8443"),
                       "attributes": [{"key": "region", "value": region}, {"key": "tier", "value": "community"}],
                       "price_uakt_per_block": price, "bid_delay_blocks": delay}),
            )
            .await;
        assert_eq!(answer["registered"], true, "{answer}");
    }

    /// Produces `count` blocks; answers the new height.
    async fn blocks(&self, count: u64) -> u64 {
        self.post("/simulator/blocks", json!({"count": count}))
            .await["height"]
            .as_u64()
            .unwrap()
    }

    async fn ledger(&self) -> Value {
        self.get("/simulator/ledger").await
    }

    async fn raw_broadcast(&self, tx_bytes_b64: &str) -> Value {
        self.post(
            "/cosmos/tx/v1beta1/txs",
            json!({"tx_bytes": tx_bytes_b64, "mode": "BROADCAST_MODE_SYNC"}),
        )
        .await["tx_response"]
            .clone()
    }

    async fn balance(&self, address: &str) -> u128 {
        let balances = self
            .get(&format!("/cosmos/bank/v1beta1/balances/{address}"))
            .await;
        balances["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|coin| coin["denom"] == "uakt")
            .map_or(0, |coin| coin["amount"].as_str().unwrap().parse().unwrap())
    }

    async fn orders(&self, owner: &str, dseq: u64) -> Vec<Value> {
        self.get(&format!(
            "/akash/market/v1beta5/orders/list?filters.owner={owner}&filters.dseq={dseq}"
        ))
        .await["orders"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn leases(&self, owner: &str, dseq: u64) -> Vec<Value> {
        self.get(&format!(
            "/akash/market/v1beta5/leases/list?filters.owner={owner}&filters.dseq={dseq}"
        ))
        .await["leases"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The ledger's summary of one deployment.
    async fn ledger_deployment(&self, owner: &str, dseq: u64) -> Value {
        let dseq = dseq.to_string();
        self.ledger().await["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["owner"] == owner && d["dseq"] == dseq.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("deployment {owner}/{dseq} not in the ledger"))
    }

    fn config(&self, key: KeySource) -> CosmosConfig {
        let mut config = CosmosConfig::new(self.sim.url(), &self.sim.options().chain_id);
        config.key = Some(key);
        config.gas = Gas::Fixed(200_000);
        config.timeouts.confirm = Duration::from_secs(10);
        config.timeouts.confirm_poll = Duration::from_millis(10);
        config.timeouts.request = Duration::from_secs(5);
        config.timeouts.http_attempts = 3;
        config
    }
}

/// A fresh key, its hex in a file the test keeps alive, and its address.
struct TestKey {
    _dir: tempfile::TempDir,
    source: KeySource,
    hex: String,
    address: String,
}

fn test_key(name: &str) -> TestKey {
    let hex = hex::encode(Sha256::digest(format!("morpheus market test key {name}")));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.hex");
    std::fs::write(&path, &hex).unwrap();
    let address = Signer::from_hex(&hex, "akash")
        .unwrap()
        .address()
        .to_owned();
    TestKey {
        _dir: dir,
        source: KeySource::HexKeyFile(path),
        hex,
        address,
    }
}

async fn call(executor: &CosmosExecutor, payload: Value) -> Result<Value, StepError> {
    executor
        .call(ExecRequest {
            idempotency_key: "run-1/market".to_owned(),
            attempt: 1,
            fencing_token: 1,
            lease: LeaseCheck::always(),
            deadline: Some(Instant::now() + Duration::from_secs(30)),
            payload,
            logs: LogSink::new(|_, _, _| {}),
        })
        .await
}

fn permanent(result: Result<Value, StepError>) -> String {
    match result {
        Err(error @ StepError::Permanent(_)) => error.message().to_owned(),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

/// `broadcast` through the executor while a block is produced as soon as the
/// transaction is in the mempool: exactly one block per accepted transaction, none for
/// a rejected one.
async fn broadcast_in_block(
    net: &Devnet,
    executor: &CosmosExecutor,
    tx_bytes_b64: &Value,
) -> Result<Value, StepError> {
    let executor = executor.clone();
    let payload = json!({"op": "broadcast", "tx_bytes_b64": tx_bytes_b64});
    let broadcast = tokio::spawn(async move { call(&executor, payload).await });
    while !broadcast.is_finished() {
        if net.ledger().await["mempool"].as_u64().unwrap() > 0 {
            net.blocks(1).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broadcast.await.unwrap()
}

/// Groups in the shape of the SDK's `SDL.groups()`: one per `(name, region, price,
/// count)`, each requiring `region` of its providers.
fn groups(specs: &[(&str, &str, &str, u32)]) -> Value {
    let groups: Vec<Value> = specs
        .iter()
        .map(|(name, region, price, count)| {
            json!({
                "name": name,
                "requirements": {"attributes": [{"key": "region", "value": region}],
                                 "signedBy": {"allOf": [], "anyOf": []}},
                "resources": [{
                    "resource": {"id": 1, "cpu": {"units": {"val": "500"}},
                                 "memory": {"quantity": {"val": "536870912"}},
                                 "storage": [{"name": "default", "quantity": {"val": "1073741824"}}],
                                 "gpu": {"units": {"val": "0"}},
                                 "endpoints": [{"sequence_number": 0}, {"kind": 1, "sequence_number": 0}]},
                    "price": {"denom": "uakt", "amount": price},
                    "count": count
                }]
            })
        })
        .collect();
    Value::Array(groups)
}

/// A manifest hash (the test's deployments are never sent to a provider).
fn hash_hex(label: &str) -> String {
    hex::encode(Sha256::digest(label))
}

async fn sign_create(
    executor: &CosmosExecutor,
    dseq: u64,
    groups: &Value,
    deposit: &str,
) -> Result<Value, StepError> {
    call(
        executor,
        json!({"op": "sign_create_deployment", "dseq": dseq.to_string(), "groups": groups,
               "hash_hex": hash_hex("manifest"), "deposit": deposit}),
    )
    .await
}

fn fee_of(signed: &Value) -> u128 {
    signed["fee"]
        .as_str()
        .unwrap()
        .strip_suffix("uakt")
        .unwrap()
        .parse()
        .unwrap()
}

/// Creates deployment `dseq` of the executor's key with `deposit` uakt and the given
/// groups, confirmed in one block; answers the signed transaction.
async fn create(
    net: &Devnet,
    executor: &CosmosExecutor,
    dseq: u64,
    groups: &Value,
    deposit: u128,
) -> Value {
    let signed = sign_create(executor, dseq, groups, &format!("{deposit}uakt"))
        .await
        .unwrap();
    let landed = broadcast_in_block(net, executor, &signed["tx_bytes_b64"])
        .await
        .unwrap();
    assert_eq!(landed["code"], 0, "{landed}");
    signed
}

async fn sign_lease(executor: &CosmosExecutor, dseq: u64, bid: &Value) -> Value {
    call(
        executor,
        json!({"op": "sign_create_lease", "dseq": dseq.to_string(), "gseq": bid["gseq"],
               "oseq": bid["oseq"], "provider": bid["provider"], "bseq": bid["bseq"]}),
    )
    .await
    .unwrap()
}

async fn bids(executor: &CosmosExecutor, dseq: u64, state: Option<&str>) -> Vec<Value> {
    let mut payload = json!({"op": "bids", "dseq": dseq.to_string()});
    if let Some(state) = state {
        payload["state"] = json!(state);
    }
    call(executor, payload).await.unwrap()["bids"]
        .as_array()
        .unwrap()
        .clone()
}

fn summary(bids: &[Value]) -> Vec<(u64, String, String, String)> {
    bids.iter()
        .map(|b| {
            (
                b["gseq"].as_u64().unwrap(),
                b["provider"].as_str().unwrap().to_owned(),
                b["price"]["amount"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_deposit_creates_the_deployment_and_its_order_exactly_once() {
    let net = Devnet::start().await;
    let key = test_key("create");
    net.fund(&key.address, 10_000_000).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let before = net.balance(&key.address).await;
    let spec = groups(&[("web", "us-west", "100", 1)]);

    let signed = sign_create(&executor, 4242, &spec, "2000000uakt")
        .await
        .unwrap();
    assert_eq!(
        signed["msg_type"],
        "/akash.deployment.v1beta4.MsgCreateDeployment"
    );
    assert_eq!(signed["dseq"], "4242");
    assert_eq!(signed["signer"], key.address.as_str());
    let landed = broadcast_in_block(&net, &executor, &signed["tx_bytes_b64"])
        .await
        .unwrap();
    assert_eq!(landed["tx_hash"], signed["tx_hash"]);
    assert_eq!(landed["already_known"], false);
    let height = landed["height"].as_u64().unwrap();
    let fee = fee_of(&signed);
    assert_eq!(fee, 5_000);
    assert_eq!(net.balance(&key.address).await, before - 2_000_000 - fee);

    let info = net
        .get(&format!(
            "/akash/deployment/v1beta4/deployments/info?id.owner={}&id.dseq=4242",
            key.address
        ))
        .await;
    assert_eq!(info["deployment"]["state"], "active");
    assert_eq!(
        hex::encode(
            BASE64
                .decode(info["deployment"]["hash"].as_str().unwrap())
                .unwrap()
        ),
        hash_hex("manifest")
    );
    assert_eq!(
        info["escrow_account"]["state"]["funds"][0]["amount"],
        "2000000.000000000000000000"
    );
    let group = &info["groups"][0];
    assert_eq!(group["state"], "open");
    assert_eq!(group["group_spec"]["name"], "web");
    assert_eq!(
        group["group_spec"]["requirements"]["attributes"],
        json!([{"key": "region", "value": "us-west"}])
    );
    assert_eq!(
        group["group_spec"]["resources"][0]["price"]["amount"],
        "100.000000000000000000"
    );
    let orders = net.orders(&key.address, 4242).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["state"], "open");
    assert_eq!(orders[0]["id"]["gseq"], 1);
    assert_eq!(orders[0]["id"]["oseq"], 1);
    assert_eq!(orders[0]["created_at"], height.to_string());
    // The executor reads the same deployment back.
    let read = call(&executor, json!({"op": "deployments", "dseqs": ["4242"]}))
        .await
        .unwrap();
    assert_eq!(read["deployments"][0]["escrow_funds"], "2000000");
    assert_eq!(read["deployments"][0]["state"], "active");

    // The same bytes again: the executor finds them in their block, the node refuses
    // them as a duplicate, and nothing is created or charged twice.
    let again = call(
        &executor,
        json!({"op": "broadcast", "tx_bytes_b64": signed["tx_bytes_b64"]}),
    )
    .await
    .unwrap();
    assert_eq!(again["already_known"], true);
    assert_eq!(again["height"], height);
    let duplicate = net
        .raw_broadcast(signed["tx_bytes_b64"].as_str().unwrap())
        .await;
    assert_eq!(duplicate["code"], 19, "{duplicate}");
    net.blocks(2).await;
    let ledger = net.ledger().await;
    let hash = signed["tx_hash"].as_str().unwrap();
    let committed: Vec<&Value> = ledger["committed_txs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|tx| tx["hash"] == hash)
        .collect();
    assert_eq!(committed.len(), 1, "{ledger}");
    assert_eq!(
        committed[0]["msg_types"],
        json!(["/akash.deployment.v1beta4.MsgCreateDeployment"])
    );
    assert_eq!(ledger["txs"], 1);
    assert_eq!(ledger["duplicate_broadcasts"], 1);
    assert_eq!(ledger["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["deployments"][0]["initial_deposit"], "2000000");
    assert_eq!(net.balance(&key.address).await, before - 2_000_000 - fee);
}

#[tokio::test]
async fn providers_bid_after_their_delay_only_on_orders_whose_attributes_they_have() {
    let net = Devnet::start().await;
    let owner = test_key("bids-owner");
    let (west_a, west_b, east) = (test_key("west-a"), test_key("west-b"), test_key("east"));
    net.fund(&owner.address, 10_000_000).await;
    net.provider(&west_a.address, "us-west", "12.5", 3).await;
    net.provider(&west_b.address, "us-west", "8", 3).await;
    net.provider(&east.address, "us-east", "5", 1).await;
    let executor = CosmosExecutor::new(&net.config(owner.source.clone())).unwrap();
    let spec = groups(&[("west", "us-west", "100", 1), ("east", "us-east", "10", 1)]);
    create(&net, &executor, 77, &spec, 1_000_000).await;
    let orders = net.orders(&owner.address, 77).await;
    assert_eq!(orders.len(), 2);
    let opened: u64 = orders[0]["created_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        net.ledger().await["height"].as_u64().unwrap(),
        opened,
        "no block after the creating one"
    );
    assert!(bids(&executor, 77, None).await.is_empty());

    // One block later only the east provider (delay 1) has bid, on the east group.
    net.blocks(1).await;
    assert_eq!(
        summary(&bids(&executor, 77, None).await),
        [(2, east.address.clone(), "5".into(), "open".into())]
    );
    net.blocks(1).await;
    assert_eq!(bids(&executor, 77, None).await.len(), 1);
    // Three blocks after the order opened the west providers bid on the west group;
    // the answer is ordered by group, then cheapest first.
    net.blocks(1).await;
    let all = bids(&executor, 77, None).await;
    assert_eq!(
        summary(&all),
        [
            (1, west_b.address.clone(), "8".into(), "open".into()),
            (1, west_a.address.clone(), "12.5".into(), "open".into()),
            (2, east.address.clone(), "5".into(), "open".into()),
        ]
    );
    assert_eq!(all[0]["dseq"], "77");
    assert_eq!(all[0]["oseq"], 1);
    assert_eq!(all[0]["bseq"], 0);
    assert_eq!(all[0]["price"]["denom"], "uakt");
    // Bids are placed once: more blocks change nothing.
    net.blocks(10).await;
    assert_eq!(summary(&bids(&executor, 77, None).await), summary(&all));
    let ledger = net.ledger().await;
    let created_at: Vec<u64> = ledger["bids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["created_at"].as_u64().unwrap())
        .collect();
    assert_eq!(created_at.len(), 3);
    assert!(created_at.contains(&(opened + 1)) && created_at.contains(&(opened + 3)));
    // A provider asking more than a group's ceiling does not bid on it.
    let pricey = test_key("pricey");
    net.provider(&pricey.address, "us-east", "11", 0).await;
    net.blocks(1).await;
    assert!(summary(&bids(&executor, 77, None).await)
        .iter()
        .all(|(_, provider, _, _)| provider != &pricey.address));
}

/// A deployment of `owner` with one group in us-west and two providers' bids on it
/// (8 and 12.5 uakt per block): answers (executor, the bids cheapest first).
async fn bid_on(net: &Devnet, owner: &TestKey, dseq: u64) -> (CosmosExecutor, Vec<Value>) {
    let (cheap, dear) = (test_key("cheap"), test_key("dear"));
    net.fund(&owner.address, 10_000_000).await;
    net.provider(&cheap.address, "us-west", "8", 1).await;
    net.provider(&dear.address, "us-west", "12.5", 1).await;
    let executor = CosmosExecutor::new(&net.config(owner.source.clone())).unwrap();
    let spec = groups(&[("west", "us-west", "100", 1)]);
    create(net, &executor, dseq, &spec, 1_000_000).await;
    net.blocks(1).await;
    let open = bids(&executor, dseq, Some("open")).await;
    assert_eq!(open.len(), 2, "{open:?}");
    assert_eq!(open[0]["provider"], cheap.address.as_str());
    (executor, open)
}

#[tokio::test]
async fn a_lease_on_an_open_bid_is_active_and_the_other_bids_are_lost() {
    let net = Devnet::start().await;
    let owner = test_key("lease-owner");
    let (executor, open) = bid_on(&net, &owner, 900).await;
    let signed = sign_lease(&executor, 900, &open[0]).await;
    assert_eq!(signed["msg_type"], "/akash.market.v1beta5.MsgCreateLease");
    let landed = broadcast_in_block(&net, &executor, &signed["tx_bytes_b64"])
        .await
        .unwrap();
    assert_eq!(landed["code"], 0);

    let leases = net.leases(&owner.address, 900).await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    let lease = &leases[0]["lease"];
    assert_eq!(lease["state"], "active");
    assert_eq!(lease["id"]["provider"], open[0]["provider"]);
    assert_eq!(lease["id"]["gseq"], 1);
    assert_eq!(lease["id"]["oseq"], 1);
    assert_eq!(lease["id"]["bseq"], 0);
    assert_eq!(lease["price"]["amount"], "8.000000000000000000");
    assert_eq!(lease["created_at"], landed["height"].to_string());
    assert_eq!(net.orders(&owner.address, 900).await[0]["state"], "active");
    let states: Vec<(String, String)> = bids(&executor, 900, None)
        .await
        .iter()
        .map(|b| {
            (
                b["provider"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (
                open[0]["provider"].as_str().unwrap().into(),
                "active".into()
            ),
            (open[1]["provider"].as_str().unwrap().into(), "lost".into()),
        ]
    );
    // The executor's lease rates see it, and the escrow drains by its price.
    let rates = call(&executor, json!({"op": "leases", "dseqs": ["900"]}))
        .await
        .unwrap();
    assert_eq!(rates["rates"][0]["rate_per_block"], "8");
    let escrow_before: u128 = net.ledger_deployment(&owner.address, 900).await["escrow"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    net.blocks(5).await;
    let escrow_after: u128 = net.ledger_deployment(&owner.address, 900).await["escrow"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(escrow_before - escrow_after, 40);

    // The lost bid cannot be leased, nor a bid nobody placed.
    let lost = sign_lease(&executor, 900, &open[1]).await;
    let error = permanent(broadcast_in_block(&net, &executor, &lost["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 12 (market)")),
        "{error}"
    );
    assert!(error.contains("is lost: bid not open"), "{error}");
    let mut missing = open[0].clone();
    missing["bseq"] = json!(5);
    let nobody = sign_lease(&executor, 900, &missing).await;
    let error = permanent(broadcast_in_block(&net, &executor, &nobody["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 18 (market)")),
        "{error}"
    );
    assert!(error.contains("bid not found"), "{error}");
    assert_eq!(net.leases(&owner.address, 900).await.len(), 1);
}

#[tokio::test]
async fn closing_refunds_the_rest_of_the_escrow_and_closes_the_lease_once() {
    let net = Devnet::start().await;
    let owner = test_key("close-owner");
    let (executor, open) = bid_on(&net, &owner, 31).await;
    let lease = sign_lease(&executor, 31, &open[0]).await;
    broadcast_in_block(&net, &executor, &lease["tx_bytes_b64"])
        .await
        .unwrap();
    net.blocks(10).await;
    let balance_before = net.balance(&owner.address).await;

    let signed = call(
        &executor,
        json!({"op": "sign_close_deployment", "dseq": "31"}),
    )
    .await
    .unwrap();
    assert_eq!(
        signed["msg_type"],
        "/akash.deployment.v1beta4.MsgCloseDeployment"
    );
    let landed = broadcast_in_block(&net, &executor, &signed["tx_bytes_b64"])
        .await
        .unwrap();
    let height = landed["height"].as_u64().unwrap();

    let deployment = net.ledger_deployment(&owner.address, 31).await;
    assert_eq!(deployment["state"], "closed");
    assert_eq!(deployment["escrow"], "0");
    assert_eq!(deployment["closed_at"], height);
    let number = |field: &str| -> u128 { deployment[field].as_str().unwrap().parse().unwrap() };
    let (initial, transferred, refunded) = (
        number("initial_deposit"),
        number("transferred"),
        number("refunded"),
    );
    // Everything deposited is either paid to the provider or back with the owner.
    assert_eq!(initial, 1_000_000);
    assert!(transferred > 0 && transferred % 8 == 0, "{deployment}");
    assert_eq!(transferred + refunded, initial);
    let ledger = net.ledger().await;
    let refunds = ledger["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{ledger}");
    assert_eq!(refunds[0]["tx_hash"], signed["tx_hash"]);
    assert_eq!(refunds[0]["amount"], refunded.to_string());
    assert_eq!(
        net.balance(&owner.address).await,
        balance_before - fee_of(&signed) + refunded
    );
    let leases = net.leases(&owner.address, 31).await;
    assert_eq!(leases[0]["lease"]["state"], "closed");
    assert_eq!(leases[0]["lease"]["closed_on"], height.to_string());
    assert_eq!(net.orders(&owner.address, 31).await[0]["state"], "closed");
    let states: Vec<String> = bids(&executor, 31, None)
        .await
        .iter()
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["closed", "lost"]);
    // A closed deployment drains nothing more.
    net.blocks(5).await;
    assert_eq!(
        net.ledger_deployment(&owner.address, 31).await["transferred"],
        transferred.to_string()
    );

    // Closing again is refused by the chain, and refunds nothing.
    let twice = call(
        &executor,
        json!({"op": "sign_close_deployment", "dseq": "31"}),
    )
    .await
    .unwrap();
    let error = permanent(broadcast_in_block(&net, &executor, &twice["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 5 (deployment)")),
        "{error}"
    );
    assert!(error.contains("Deployment closed"), "{error}");
    // And closing one that never existed.
    let unknown = call(
        &executor,
        json!({"op": "sign_close_deployment", "dseq": "32"}),
    )
    .await
    .unwrap();
    let error = permanent(broadcast_in_block(&net, &executor, &unknown["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 4 (deployment)")),
        "{error}"
    );
    assert_eq!(net.ledger().await["refunds"].as_array().unwrap().len(), 1);
}

/// Signs `messages` by hand with `key`, for what the executor itself never signs (a
/// message of another owner, a malformed deployment).
fn hand_signed(
    key: &TestKey,
    messages: Vec<Any>,
    chain_id: &str,
    account_number: u64,
    sequence: u64,
) -> String {
    let signing_key = SigningKey::from_slice(&hex::decode(&key.hex).unwrap()).unwrap();
    let body = Body::new(messages, "", 0u32);
    let fee = Fee::from_amount_and_gas(cosmrs::Coin::new(5_000, "uakt").unwrap(), 200_000u64);
    let auth_info =
        SignerInfo::single_direct(Some(signing_key.public_key()), sequence).auth_info(fee);
    let raw = SignDoc {
        body_bytes: body.into_bytes().unwrap(),
        auth_info_bytes: auth_info.into_bytes().unwrap(),
        chain_id: chain_id.to_owned(),
        account_number,
    }
    .sign(&signing_key)
    .unwrap();
    BASE64.encode(raw.to_bytes().unwrap())
}

fn rejected(response: &Value, code: u64, codespace: &str, text: &str) {
    assert_eq!(response["code"], code, "{response}");
    assert_eq!(response["codespace"], codespace, "{response}");
    let log = response["raw_log"].as_str().unwrap();
    assert!(log.contains(text), "{log}");
    assert!(!log.contains('\n'), "one line: {log}");
}

#[tokio::test]
async fn the_chain_refuses_bad_deployments_each_with_its_code() {
    let net = Devnet::start().await;
    let key = test_key("refusals");
    let other = test_key("someone-else");
    net.fund(&key.address, 3_000_000).await;
    net.fund(&other.address, 3_000_000).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let spec = groups(&[("web", "us-west", "100", 1)]);
    let chain_id = net.sim.options().chain_id.clone();
    let account = call(&executor, json!({"op": "account"})).await.unwrap();
    let number = account["account_number"].as_u64().unwrap();

    // Through the executor: a deposit below the minimum, more than the balance.
    let small = sign_create(&executor, 5, &spec, "1000uakt").await.unwrap();
    let error = permanent(broadcast_in_block(&net, &executor, &small["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 20 (deployment)")),
        "{error}"
    );
    assert!(
        error.contains("deposit 1000uakt is below the minimum 500000uakt"),
        "{error}"
    );
    let large = sign_create(&executor, 5, &spec, "4000000uakt")
        .await
        .unwrap();
    let error = permanent(broadcast_in_block(&net, &executor, &large["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 5 (sdk)")),
        "{error}"
    );
    assert!(error.contains("insufficient funds"), "{error}");
    // A tampered signature.
    let good = sign_create(&executor, 5, &spec, "500000uakt")
        .await
        .unwrap();
    let mut raw = TxRaw::decode(
        BASE64
            .decode(good["tx_bytes_b64"].as_str().unwrap())
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    raw.signatures[0][7] ^= 0x40;
    let tampered = net.raw_broadcast(&BASE64.encode(raw.encode_to_vec())).await;
    rejected(&tampered, 4, "sdk", "signature verification failed");
    // A taken dseq.
    broadcast_in_block(&net, &executor, &good["tx_bytes_b64"])
        .await
        .unwrap();
    let taken = sign_create(&executor, 5, &spec, "500000uakt")
        .await
        .unwrap();
    let error = permanent(broadcast_in_block(&net, &executor, &taken["tx_bytes_b64"]).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 3 (deployment)")),
        "{error}"
    );
    assert!(error.contains("Deployment exists"), "{error}");

    // The executor refuses to sign what the chain would refuse to decode.
    let error = permanent(
        call(
            &executor,
            json!({"op": "sign_create_deployment", "dseq": "6", "groups": [],
                   "hash_hex": hash_hex("m"), "deposit": "500000uakt"}),
        )
        .await,
    );
    assert!(error.contains("groups is empty"), "{error}");
    let error = permanent(
        call(
            &executor,
            json!({"op": "sign_create_deployment", "dseq": "6", "groups": spec,
                   "hash_hex": "abcd", "deposit": "500000uakt"}),
        )
        .await,
    );
    assert!(error.contains("is not 64 hex digits"), "{error}");

    // By hand, so the chain's own checks answer: another owner's deployment, a hash
    // of the wrong length, no hash, no groups.
    let specs = groups_from_json(&spec).unwrap();
    let deposit = morpheus_executors::cosmos::Coin::new(500_000, "uakt");
    let create = |owner: &str, hash: Vec<u8>, groups| {
        let mut message = MsgCreateDeployment::new(owner, 6, groups, [0; 32], &deposit);
        message.hash = hash;
        message.to_any()
    };
    let cases = [
        (
            create(&other.address, vec![1; 32], specs.clone()),
            8,
            "sdk",
            "pubKey does not match signer address",
        ),
        (
            MsgCloseDeployment {
                id: Some(DeploymentId {
                    owner: other.address.clone(),
                    dseq: 5,
                }),
            }
            .to_any(),
            8,
            "sdk",
            "pubKey does not match signer address",
        ),
        (
            create(&key.address, vec![1; 31], specs.clone()),
            10,
            "deployment",
            "hash has 31 bytes, not 32: Invalid: deployment hash",
        ),
        (
            create(&key.address, Vec::new(), specs.clone()),
            9,
            "deployment",
            "Invalid: empty hash",
        ),
        (
            create(&key.address, vec![1; 32], Vec::new()),
            7,
            "deployment",
            "no groups: Invalid groups",
        ),
    ];
    let sequence = call(&executor, json!({"op": "account"})).await.unwrap()["sequence"]
        .as_u64()
        .unwrap();
    for (message, code, codespace, text) in cases {
        let tx = hand_signed(&key, vec![message], &chain_id, number, sequence);
        rejected(&net.raw_broadcast(&tx).await, code, codespace, text);
    }
    net.blocks(1).await;
    let ledger = net.ledger().await;
    assert_eq!(ledger["mempool"], 0);
    assert_eq!(
        ledger["deployments"].as_array().unwrap().len(),
        1,
        "{ledger}"
    );
    // The one good deployment cost its deposit and a fee, nothing else was charged.
    assert_eq!(
        net.balance(&key.address).await,
        3_000_000 - 500_000 - fee_of(&good)
    );
    assert_eq!(net.balance(&other.address).await, 3_000_000);
}

#[tokio::test]
async fn the_provider_op_reads_host_uri_and_attributes() {
    let net = Devnet::start().await;
    let key = test_key("reader");
    let provider = test_key("listed");
    net.provider(&provider.address, "eu-central", "10", 2).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let info = call(
        &executor,
        json!({"op": "provider", "address": provider.address}),
    )
    .await
    .unwrap();
    assert_eq!(
        info,
        json!({
            "address": provider.address,
            "host_uri": "https://eu-central.provider.test:8443",
            "attributes": [{"key": "region", "value": "eu-central"}, {"key": "tier", "value": "community"}],
        })
    );
    let unknown = test_key("unlisted");
    let error = permanent(
        call(
            &executor,
            json!({"op": "provider", "address": unknown.address}),
        )
        .await,
    );
    assert!(
        error.contains(&format!("provider {} is not registered", unknown.address)),
        "{error}"
    );
}

/// Runs `tests/sdl-judge/tx-judge.mjs` (Akash's SDK) on signed transactions.
fn sdk_decode(txs: &[&Value]) -> Vec<Value> {
    let dir = judge_dir();
    assert!(
        dir.join("node_modules/@akashnetwork/chain-sdk/package.json")
            .exists(),
        "Akash's SDK is not installed: run `scripts/test` (or `npm ci` in {})",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg(dir.join("tx-judge.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (install nodejs)");
    let mut stdin = child.stdin.take().unwrap();
    for tx in txs {
        writeln!(stdin, "{}", json!({"tx_b64": tx})).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "tx-judge failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers.len(), txs.len());
    answers
}

#[tokio::test]
async fn the_signed_market_transactions_decode_with_akashs_sdk() {
    let net = Devnet::start().await;
    let owner = test_key("sdk-owner");
    let (executor, open) = bid_on(&net, &owner, 64).await;
    let spec = groups(&[("web", "us-west", "12.5", 2)]);
    let create = sign_create(&executor, 65, &spec, "600000uakt")
        .await
        .unwrap();
    let lease = sign_lease(&executor, 64, &open[0]).await;
    let close = call(
        &executor,
        json!({"op": "sign_close_deployment", "dseq": "64"}),
    )
    .await
    .unwrap();
    let answers = sdk_decode(&[
        &create["tx_bytes_b64"],
        &lease["tx_bytes_b64"],
        &close["tx_bytes_b64"],
    ]);
    for (answer, signed) in answers.iter().zip([&create, &lease, &close]) {
        assert!(answer.get("error").is_none(), "{answer}");
        let tx = &answer["tx"];
        assert_eq!(tx["memo"], "morpheus:run-1/market");
        let signer_info = &tx["auth_info"]["signer_infos"][0];
        assert_eq!(
            signer_info["sequence"].as_str().unwrap_or("0"),
            signed["sequence"].to_string()
        );
        assert_eq!(tx["auth_info"]["fee"]["gas_limit"], "200000");
        assert_eq!(tx["auth_info"]["fee"]["amount"][0]["amount"], "5000");
        let messages = tx["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["type_url"], signed["msg_type"]);
        let bytes = BASE64
            .decode(signed["tx_bytes_b64"].as_str().unwrap())
            .unwrap();
        let body = cosmrs::proto::cosmos::tx::v1beta1::TxBody::decode(
            TxRaw::decode(bytes.as_slice())
                .unwrap()
                .body_bytes
                .as_slice(),
        )
        .unwrap();
        assert_eq!(
            messages[0]["reencoded_b64"],
            BASE64.encode(&body.messages[0].value),
            "the SDK re-encodes {} to other bytes",
            signed["msg_type"]
        );
    }
    let created = &answers[0]["tx"]["messages"][0]["message"];
    assert_eq!(created["id"], json!({"owner": owner.address, "dseq": "65"}));
    assert_eq!(
        created["deposit"]["amount"],
        json!({"denom": "uakt", "amount": "600000"})
    );
    assert_eq!(created["deposit"]["sources"], json!(["balance"]));
    let group = &created["groups"][0];
    assert_eq!(group["name"], "web");
    assert_eq!(
        group["requirements"]["attributes"],
        json!([{"key": "region", "value": "us-west"}])
    );
    assert_eq!(group["resources"][0]["count"], 2);
    assert_eq!(
        group["resources"][0]["price"],
        json!({"denom": "uakt", "amount": "12.5"})
    );
    assert_eq!(
        group["resources"][0]["resource"]["endpoints"][1]["kind"],
        "RANDOM_PORT"
    );
    assert_eq!(
        hex::encode(BASE64.decode(created["hash"].as_str().unwrap()).unwrap()),
        hash_hex("manifest")
    );
    let leased = &answers[1]["tx"]["messages"][0]["message"]["bid_id"];
    assert_eq!(leased["owner"], owner.address.as_str());
    assert_eq!(leased["dseq"], "64");
    assert_eq!(leased["gseq"], 1);
    assert_eq!(leased["oseq"], 1);
    assert_eq!(leased["provider"], open[0]["provider"]);
    assert_eq!(
        answers[2]["tx"]["messages"][0]["message"],
        json!({"id": {"owner": owner.address, "dseq": "64"}})
    );
}
