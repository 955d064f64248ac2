//! The `cosmos` executor against the simulator over real HTTP on 127.0.0.1, with
//! real keys and signatures: every check the simulator makes is exercised through
//! the client code the workflows use.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::proto::cosmos::tx::v1beta1::TxRaw;
use cosmrs::tx::{Body, Fee, SignDoc, SignerInfo};
use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogSink, StepError};
use morpheus_executors::cosmos::{
    can_resign, CosmosConfig, CosmosExecutor, DeploymentsApi, DepositIntent, Gas, KeySource,
    LeasesApi, MsgVersion, Signer, SEQUENCE_MISMATCH_PREFIX, TX_FAILED_PREFIX, TX_REJECTED_PREFIX,
};
use prost::Message;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use morpheus_devnets::akash::messages::{decode_deposit, DepositMessage, DepositRequest};
use morpheus_devnets::akash::{
    demo_address, serve, SimulatorHandle, SimulatorOptions, DEMO_HD_PATH, DEMO_MNEMONIC,
};

/// A running simulator plus an HTTP client for its admin API.
struct Devnet {
    sim: SimulatorHandle,
    http: reqwest::Client,
}

impl Devnet {
    /// Blocks every 20 ms, or only on demand with `block_ms == 0`.
    async fn start(block_ms: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = serve(
            listener,
            SimulatorOptions {
                block_time: Duration::from_millis(block_ms),
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
        assert!(response.status().is_success(), "{path}: {:?}", response);
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn fund(&self, address: &str, amount: u128) {
        self.post(
            "/simulator/accounts",
            json!({"address": address, "amount": amount.to_string()}),
        )
        .await;
    }

    async fn deployment(&self, owner: &str, escrow: u128, prices: &[u128]) -> u64 {
        let created = self
            .post(
                "/simulator/deployments",
                json!({"owner": owner, "escrow": escrow.to_string(),
                       "lease_prices": prices.iter().map(u128::to_string).collect::<Vec<_>>()}),
            )
            .await;
        created["deployment"]["deployment"]["id"]["dseq"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn closed_deployment(&self, owner: &str) -> u64 {
        let created = self
            .post(
                "/simulator/deployments",
                json!({"owner": owner, "escrow": "0", "lease_prices": ["5"], "closed": true}),
            )
            .await;
        created["deployment"]["deployment"]["id"]["dseq"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn blocks(&self, count: u64) {
        self.post("/simulator/blocks", json!({"count": count}))
            .await;
    }

    async fn ledger(&self) -> Value {
        self.get("/simulator/ledger").await
    }

    /// Deposits that landed in (owner, dseq), from the ledger.
    async fn deposits(&self, dseq: u64) -> Vec<Value> {
        let dseq = dseq.to_string();
        self.ledger().await["deposits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dseq"] == dseq.as_str())
            .cloned()
            .collect()
    }

    async fn escrow(&self, dseq: u64) -> u128 {
        let dseq = dseq.to_string();
        let ledger = self.ledger().await;
        ledger["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dseq"] == dseq.as_str())
            .unwrap()["escrow"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Posts tx bytes straight to the node, as a worker that crashed right after
    /// broadcasting would have.
    async fn raw_broadcast(&self, tx_bytes_b64: &str) -> Value {
        self.post(
            "/cosmos/tx/v1beta1/txs",
            json!({"tx_bytes": tx_bytes_b64, "mode": "BROADCAST_MODE_SYNC"}),
        )
        .await["tx_response"]
            .clone()
    }

    fn config(&self, key: KeySource) -> CosmosConfig {
        let mut config = CosmosConfig::new(self.sim.url(), &self.sim.options().chain_id);
        config.key = Some(key);
        config.gas = Gas::Fixed(200_000);
        config.timeouts.confirm = Duration::from_secs(10);
        config.timeouts.confirm_poll = Duration::from_millis(20);
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
    let hex = hex::encode(Sha256::digest(format!("morpheus devnet test key {name}")));
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

/// Log lines a call wrote.
type Lines = Arc<Mutex<Vec<String>>>;

async fn call_logged(
    executor: &CosmosExecutor,
    payload: Value,
) -> (Result<Value, StepError>, Lines) {
    call_with_lease(executor, payload, LeaseCheck::always()).await
}

async fn call_with_lease(
    executor: &CosmosExecutor,
    payload: Value,
    lease: LeaseCheck,
) -> (Result<Value, StepError>, Lines) {
    let lines: Lines = Arc::default();
    let sink = {
        let lines = lines.clone();
        LogSink::new(move |_, message, fields| {
            lines
                .lock()
                .unwrap()
                .push(format!("{message} {}", fields.unwrap_or_default()));
        })
    };
    let result = executor
        .call(ExecRequest {
            idempotency_key: "run-1/deposit".to_owned(),
            attempt: 1,
            fencing_token: 1,
            lease,
            deadline: Some(Instant::now() + Duration::from_secs(30)),
            payload,
            logs: sink,
        })
        .await;
    (result, lines)
}

async fn call(executor: &CosmosExecutor, payload: Value) -> Result<Value, StepError> {
    call_logged(executor, payload).await.0
}

async fn sign(executor: &CosmosExecutor, dseq: u64, amount: &str) -> Value {
    call(
        executor,
        json!({"op": "sign_deposit", "dseq": dseq.to_string(), "amount": amount}),
    )
    .await
    .unwrap()
}

async fn broadcast(executor: &CosmosExecutor, signed: &Value) -> Result<Value, StepError> {
    call(
        executor,
        json!({"op": "broadcast", "tx_bytes_b64": signed["tx_bytes_b64"]}),
    )
    .await
}

fn permanent(result: Result<Value, StepError>) -> String {
    match result {
        Err(error @ StepError::Permanent(_)) => error.message().to_owned(),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn deposit_lands_exactly_once_however_often_the_same_bytes_are_broadcast() {
    let net = Devnet::start(20).await;
    let key = test_key("once");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 1_000, &[]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();

    let signed = sign(&executor, dseq, "500000uakt").await;
    assert_eq!(signed["sequence"], 0);
    assert_eq!(signed["signer"], key.address.as_str());
    assert_eq!(signed["amount"], "500000");
    let first = broadcast(&executor, &signed).await.unwrap();
    assert_eq!(first["tx_hash"], signed["tx_hash"]);
    assert_eq!(first["code"], 0);
    assert_eq!(first["already_known"], false);
    assert!(first["height"].as_u64().unwrap() > 1);
    assert_eq!(net.escrow(dseq).await, 500_000 + 1_000);

    // A resumed run broadcasts the journaled bytes again: same hash, nothing new.
    let again = broadcast(&executor, &signed).await.unwrap();
    assert_eq!(again["tx_hash"], signed["tx_hash"]);
    assert_eq!(again["height"], first["height"]);
    assert_eq!(again["already_known"], true);
    // The node itself refuses the duplicate.
    let duplicate = net
        .raw_broadcast(signed["tx_bytes_b64"].as_str().unwrap())
        .await;
    assert_eq!(duplicate["code"], 19);
    assert_eq!(duplicate["raw_log"], "tx already exists in cache");

    let deposits = net.deposits(dseq).await;
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    assert_eq!(deposits[0]["tx_hash"], signed["tx_hash"]);
    assert_eq!(deposits[0]["amount"], "500000");
    assert_eq!(net.escrow(dseq).await, 501_000);
    let account = call(&executor, json!({"op": "account"})).await.unwrap();
    assert_eq!(account["sequence"], 1);
    let status = call(
        &executor,
        json!({"op": "tx_status", "tx_hash": signed["tx_hash"]}),
    )
    .await
    .unwrap();
    assert_eq!(status["found"], true);
    assert_eq!(status["code"], 0);
    assert_eq!(status["height"], first["height"]);
}

#[tokio::test]
async fn a_broadcast_interrupted_before_confirmation_confirms_on_resume() {
    let net = Devnet::start(20).await;
    let key = test_key("crash");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let signed = sign(&executor, dseq, "1234").await;
    // The worker sent the bytes and died before recording anything.
    let sent = net
        .raw_broadcast(signed["tx_bytes_b64"].as_str().unwrap())
        .await;
    assert_eq!(sent["code"], 0);
    let resumed = broadcast(&executor, &signed).await.unwrap();
    assert_eq!(resumed["tx_hash"], signed["tx_hash"]);
    assert_eq!(resumed["already_known"], true);
    assert_eq!(net.deposits(dseq).await.len(), 1);
}

#[tokio::test]
async fn a_worker_whose_lease_lapsed_broadcasts_nothing() {
    let net = Devnet::start(20).await;
    let key = test_key("stale-worker");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let signed = sign(&executor, dseq, "10").await;
    let payload = json!({"op": "broadcast", "tx_bytes_b64": signed["tx_bytes_b64"]});
    let (result, _) = call_with_lease(&executor, payload, LeaseCheck::new(|| false)).await;
    let error = result.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(error.message().contains("lease lapsed"), "{error}");
    let ledger = net.ledger().await;
    assert_eq!(ledger["mempool"], 0);
    assert_eq!(ledger["txs"], 0);
    // The run's next holder broadcasts the same bytes.
    broadcast(&executor, &signed).await.unwrap();
    assert_eq!(net.deposits(dseq).await.len(), 1);
}

#[tokio::test]
async fn a_tampered_signature_is_rejected_as_unauthorized() {
    let net = Devnet::start(20).await;
    let key = test_key("tamper");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let signed = sign(&executor, dseq, "1000").await;
    let bytes = BASE64
        .decode(signed["tx_bytes_b64"].as_str().unwrap())
        .unwrap();
    let mut raw = TxRaw::decode(bytes.as_slice()).unwrap();
    raw.signatures[0][10] ^= 0x01;
    let tampered = BASE64.encode(raw.encode_to_vec());
    let error = permanent(
        call(
            &executor,
            json!({"op": "broadcast", "tx_bytes_b64": tampered}),
        )
        .await,
    );
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 4 (sdk)")),
        "{error}"
    );
    assert!(error.contains("signature verification failed"), "{error}");
    assert!(net.deposits(dseq).await.is_empty());
    let account = call(&executor, json!({"op": "account"})).await.unwrap();
    assert_eq!(account["sequence"], 0);
}

#[tokio::test]
async fn a_stale_sequence_is_a_sequence_mismatch_and_resigning_waits_for_proof() {
    let net = Devnet::start(20).await;
    let key = test_key("sequence");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let first = sign(&executor, dseq, "100").await;
    let stale = sign(&executor, dseq, "200").await;
    assert_eq!(first["sequence"], stale["sequence"]);
    // Before anything moved, the stale transaction could still land: no re-signing.
    let account = call(&executor, json!({"op": "account"})).await.unwrap();
    assert!(!can_resign(false, account["sequence"].as_u64().unwrap(), 0));

    broadcast(&executor, &first).await.unwrap();
    let error = permanent(broadcast(&executor, &stale).await);
    assert!(error.starts_with(SEQUENCE_MISMATCH_PREFIX), "{error}");
    assert!(error.contains("expected 1, got 0"), "{error}");
    assert!(
        error.contains(stale["tx_hash"].as_str().unwrap()),
        "{error}"
    );

    let status = call(
        &executor,
        json!({"op": "tx_status", "tx_hash": stale["tx_hash"]}),
    )
    .await
    .unwrap();
    assert_eq!(status["found"], false);
    let account = call(&executor, json!({"op": "account"})).await.unwrap();
    assert_eq!(account["sequence"], 1);
    assert!(can_resign(
        status["found"].as_bool().unwrap(),
        account["sequence"].as_u64().unwrap(),
        stale["sequence"].as_u64().unwrap()
    ));
    let resigned = sign(&executor, dseq, "200").await;
    assert_eq!(resigned["sequence"], 1);
    broadcast(&executor, &resigned).await.unwrap();
    let amounts: Vec<Value> = net
        .deposits(dseq)
        .await
        .iter()
        .map(|d| d["amount"].clone())
        .collect();
    assert_eq!(amounts, [json!("100"), json!("200")]);
}

#[tokio::test]
async fn insufficient_funds_are_rejected_at_broadcast_and_at_simulation() {
    let net = Devnet::start(20).await;
    let key = test_key("poor");
    net.fund(&key.address, 100_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let signed = sign(&executor, dseq, "1000000").await;
    let error = permanent(broadcast(&executor, &signed).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 5 (sdk)")),
        "{error}"
    );
    assert!(error.contains("insufficient funds"), "{error}");

    let mut config = net.config(key.source.clone());
    config.gas = Gas::Simulate;
    let simulating = CosmosExecutor::new(&config).unwrap();
    let error = permanent(
        call(
            &simulating,
            json!({"op": "sign_deposit", "dseq": dseq, "amount": "1000000"}),
        )
        .await,
    );
    assert!(error.starts_with("simulate: spendable balance"), "{error}");
    assert!(net.deposits(dseq).await.is_empty());
    let balance = call(&executor, json!({"op": "balance"})).await.unwrap();
    assert_eq!(balance["amount"], "100000");
}

#[tokio::test]
async fn unknown_and_closed_deployments_are_rejected_in_both_message_versions() {
    let net = Devnet::start(20).await;
    let key = test_key("nowhere");
    net.fund(&key.address, 10_000_000).await;
    let closed = net.closed_deployment(&key.address).await;
    for (version, codespace, not_found, closed_code) in [
        (MsgVersion::EscrowV1, "escrow", 3, 2),
        (MsgVersion::DeploymentV1beta3, "deployment", 4, 5),
    ] {
        let mut config = net.config(key.source.clone());
        config.msg_version = version;
        let executor = CosmosExecutor::new(&config).unwrap();
        let unknown = sign(&executor, 999_999, "10").await;
        let error = permanent(broadcast(&executor, &unknown).await);
        assert!(
            error.starts_with(&format!(
                "{TX_REJECTED_PREFIX} code {not_found} ({codespace})"
            )),
            "{error}"
        );
        assert!(error.contains("not found"), "{error}");
        let to_closed = sign(&executor, closed, "10").await;
        let error = permanent(broadcast(&executor, &to_closed).await);
        assert!(
            error.starts_with(&format!(
                "{TX_REJECTED_PREFIX} code {closed_code} ({codespace})"
            )),
            "{error}"
        );
        assert!(error.contains("closed"), "{error}");
    }
    assert!(net.ledger().await["deposits"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Signs a deposit by hand, for the chain checks the executor itself would never let
/// through (another chain id, another account number).
fn hand_signed(key: &TestKey, dseq: u64, chain_id: &str, account_number: u64) -> String {
    let signing_key = SigningKey::from_slice(&hex::decode(&key.hex).unwrap()).unwrap();
    let intent = DepositIntent {
        signer: key.address.clone(),
        owner: key.address.clone(),
        dseq,
        amount: 10,
        denom: "uakt".into(),
        from_grant: false,
    };
    let body = Body::new(vec![intent.to_any(MsgVersion::EscrowV1)], "", 0u32);
    let fee = Fee::from_amount_and_gas(cosmrs::Coin::new(5_000, "uakt").unwrap(), 200_000u64);
    let auth_info = SignerInfo::single_direct(Some(signing_key.public_key()), 0).auth_info(fee);
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

#[tokio::test]
async fn wrong_chain_id_is_refused_before_signing_and_rejected_by_the_chain() {
    let net = Devnet::start(20).await;
    let key = test_key("chain-id");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;

    let mut config = net.config(key.source.clone());
    config.chain_id = "akashnet-2".into();
    let misconfigured = CosmosExecutor::new(&config).unwrap();
    let error = permanent(
        call(
            &misconfigured,
            json!({"op": "sign_deposit", "dseq": dseq, "amount": "10"}),
        )
        .await,
    );
    assert!(
        error.starts_with("chain id mismatch: configured 'akashnet-2'"),
        "{error}"
    );
    assert!(error.contains("morpheus-devnet-1"), "{error}");

    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    for (chain_id, account_number) in [("akashnet-2", 1), ("morpheus-devnet-1", 77)] {
        let tx = hand_signed(&key, dseq, chain_id, account_number);
        let error =
            permanent(call(&executor, json!({"op": "broadcast", "tx_bytes_b64": tx})).await);
        assert!(
            error.starts_with(&format!("{TX_REJECTED_PREFIX} code 4 (sdk)")),
            "{error}"
        );
        assert!(
            error.contains("please verify account number (1) and chain-id (morpheus-devnet-1)"),
            "{error}"
        );
    }
    // The same hand-made transaction with the right chain id and number lands.
    let good = hand_signed(&key, dseq, "morpheus-devnet-1", 1);
    call(&executor, json!({"op": "broadcast", "tx_bytes_b64": good}))
        .await
        .unwrap();
    assert_eq!(net.deposits(dseq).await.len(), 1);
}

#[tokio::test]
async fn simulated_gas_and_fees_follow_the_configuration() {
    let net = Devnet::start(20).await;
    let key = test_key("gas");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;

    let mut config = net.config(key.source.clone());
    config.gas = Gas::Simulate;
    config.gas_adjustment = 1.3;
    config.gas_price = Some("0.03uakt".into());
    let executor = CosmosExecutor::new(&config).unwrap();
    let signed = sign(&executor, dseq, "1000").await;
    let gas_limit = signed["gas_limit"].as_u64().unwrap();
    let landed = broadcast(&executor, &signed).await.unwrap();
    let gas_used = landed["gas_used"].as_u64().unwrap();
    assert!(
        gas_used > 50_000 && gas_used < gas_limit,
        "{gas_used} / {gas_limit}"
    );
    // The limit is the simulated gas × 1.3: close to, but above, what it used.
    assert!(gas_limit < gas_used * 14 / 10, "{gas_used} / {gas_limit}");
    let expected_fee = (gas_limit * 3).div_ceil(100);
    assert_eq!(signed["fee"], format!("{expected_fee}uakt"));

    let mut fixed_fee = net.config(key.source.clone());
    fixed_fee.fee = Some("7000uakt".into());
    let executor = CosmosExecutor::new(&fixed_fee).unwrap();
    let signed = sign(&executor, dseq, "1000").await;
    assert_eq!(signed["fee"], "7000uakt");
    assert_eq!(signed["gas_limit"], 200_000);
    broadcast(&executor, &signed).await.unwrap();

    let mut cheap = net.config(key.source.clone());
    cheap.gas_price = Some("0.001uakt".into());
    let executor = CosmosExecutor::new(&cheap).unwrap();
    let error = permanent(broadcast(&executor, &sign(&executor, dseq, "1").await).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 13 (sdk)")),
        "{error}"
    );
    assert!(
        error.contains("insufficient fees; got: 200uakt required: 5000uakt"),
        "{error}"
    );

    let mut starved = net.config(key.source.clone());
    starved.gas = Gas::Fixed(1_000);
    starved.fee = Some("5000uakt".into());
    let executor = CosmosExecutor::new(&starved).unwrap();
    let error = permanent(broadcast(&executor, &sign(&executor, dseq, "1").await).await);
    assert!(
        error.starts_with(&format!("{TX_REJECTED_PREFIX} code 11 (sdk)")),
        "{error}"
    );
    assert!(error.contains("out of gas"), "{error}");
    assert_eq!(net.deposits(dseq).await.len(), 2);
}

#[tokio::test]
async fn both_message_versions_deposit_and_read_back_through_both_query_apis() {
    let net = Devnet::start(20).await;
    let key = test_key("versions");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 1_000, &[]).await;
    for (version, deployments_api, leases_api, amount, total) in [
        (
            MsgVersion::EscrowV1,
            DeploymentsApi::V1beta4,
            LeasesApi::V1beta5,
            111,
            "1111",
        ),
        (
            MsgVersion::DeploymentV1beta3,
            DeploymentsApi::V1beta3,
            LeasesApi::V1beta4,
            222,
            "1333",
        ),
    ] {
        let mut config = net.config(key.source.clone());
        config.msg_version = version;
        config.deployments_api = deployments_api;
        config.leases_api = leases_api;
        let executor = CosmosExecutor::new(&config).unwrap();
        let signed = sign(&executor, dseq, &amount.to_string()).await;
        assert_eq!(signed["msg_type"], version.type_url());
        broadcast(&executor, &signed).await.unwrap();
        let listed = call(&executor, json!({"op": "deployments"})).await.unwrap();
        assert_eq!(listed["deployments"][0]["dseq"], dseq.to_string());
        assert_eq!(listed["deployments"][0]["escrow_funds"], total);
        assert_eq!(listed["deployments"][0]["state"], "active");
        assert_eq!(listed["deployments"][0]["escrow_state"], "open");
        let leases = call(&executor, json!({"op": "leases", "dseqs": [dseq]}))
            .await
            .unwrap();
        assert_eq!(
            leases["rates"],
            json!([{"dseq": dseq.to_string(), "rate_per_block": "0", "denom": "uakt", "leases": 0}])
        );
    }
    let types: Vec<Value> = net
        .deposits(dseq)
        .await
        .iter()
        .map(|d| d["msg_type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            json!("/akash.escrow.v1.MsgAccountDeposit"),
            json!("/akash.deployment.v1beta3.MsgDepositDeployment")
        ]
    );
}

#[tokio::test]
async fn escrow_drains_by_the_summed_lease_rate_and_a_dry_deployment_closes() {
    let net = Devnet::start(0).await;
    let key = test_key("drain");
    let healthy = net.deployment(&key.address, 1_000_000, &[1]).await;
    let draining = net.deployment(&key.address, 1_000, &[60, 40]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();

    let rates = call(&executor, json!({"op": "leases"})).await.unwrap();
    assert_eq!(
        rates["rates"],
        json!([
            {"dseq": healthy.to_string(), "rate_per_block": "1", "denom": "uakt", "leases": 1},
            {"dseq": draining.to_string(), "rate_per_block": "100", "denom": "uakt", "leases": 2},
        ])
    );
    let start = call(&executor, json!({"op": "latest_height"}))
        .await
        .unwrap()["height"]
        .as_u64()
        .unwrap();
    net.blocks(3).await;
    let listed = call(
        &executor,
        json!({"op": "deployments", "dseqs": [draining, 424242]}),
    )
    .await
    .unwrap();
    assert_eq!(listed["deployments"][0]["escrow_funds"], "700");
    assert_eq!(listed["deployments"][0]["settled_at"], start + 3);
    assert_eq!(listed["missing"], json!(["424242"]));

    net.blocks(7).await; // 10 blocks × 100 = 1000: empty but paid up
    net.blocks(1).await; // cannot pay: closes
    let active = call(&executor, json!({"op": "deployments"})).await.unwrap();
    let dseqs: Vec<&Value> = active["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["dseq"])
        .collect();
    assert_eq!(dseqs, [&json!(healthy.to_string())]);
    let all = call(
        &executor,
        json!({"op": "deployments", "include_closed": true}),
    )
    .await
    .unwrap();
    let closed = &all["deployments"][1];
    assert_eq!(closed["dseq"], draining.to_string());
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["escrow_state"], "closed");
    assert_eq!(closed["escrow_funds"], "0");
    assert_eq!(all["deployments"][0]["escrow_funds"], "999989");
    let rates = call(&executor, json!({"op": "leases", "dseqs": [draining]}))
        .await
        .unwrap();
    assert_eq!(rates["rates"][0]["rate_per_block"], "0");
    assert_eq!(rates["rates"][0]["leases"], 0);
}

#[tokio::test]
async fn a_deposit_into_a_deployment_that_closes_in_its_block_fails_there() {
    let net = Devnet::start(0).await;
    let key = test_key("too-late");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 50, &[100]).await;
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let signed = sign(&executor, dseq, "10").await;
    let sent = net
        .raw_broadcast(signed["tx_bytes_b64"].as_str().unwrap())
        .await;
    assert_eq!(sent["code"], 0, "still open at check time: {sent}");
    net.blocks(1).await;
    let error = permanent(broadcast(&executor, &signed).await);
    assert!(
        error.starts_with(&format!("{TX_FAILED_PREFIX} code 2 (escrow)")),
        "{error}"
    );
    assert!(error.contains("closed"), "{error}");
    assert!(net.deposits(dseq).await.is_empty());
    // The fee was paid and the sequence used, as on a chain.
    let account = call(&executor, json!({"op": "account"})).await.unwrap();
    assert_eq!(account["sequence"], 1);
    let balance = call(&executor, json!({"op": "balance"})).await.unwrap();
    assert_eq!(balance["amount"], (10_000_000 - 5_000).to_string());
}

#[tokio::test]
async fn an_unconfirmed_broadcast_is_retryable_and_the_same_bytes_confirm_later() {
    let net = Devnet::start(0).await;
    let key = test_key("slow");
    net.fund(&key.address, 10_000_000).await;
    let dseq = net.deployment(&key.address, 0, &[]).await;
    let mut config = net.config(key.source.clone());
    config.timeouts.confirm = Duration::from_millis(300);
    let executor = CosmosExecutor::new(&config).unwrap();
    let signed = sign(&executor, dseq, "10").await;
    let error = broadcast(&executor, &signed).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(error.message().contains("not in a block after"), "{error}");
    net.blocks(1).await;
    let landed = broadcast(&executor, &signed).await.unwrap();
    assert_eq!(landed["already_known"], true);
    assert_eq!(net.deposits(dseq).await.len(), 1);
}

#[tokio::test]
async fn transient_http_failures_are_retried_in_process_then_reported_retryable() {
    let net = Devnet::start(20).await;
    let key = test_key("flaky");
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    net.post(
        "/simulator/faults",
        json!({"path_prefix": "/cosmos/base/tendermint", "kind": "http_500", "count": 2}),
    )
    .await;
    let height = call(&executor, json!({"op": "latest_height"}))
        .await
        .unwrap();
    assert_eq!(height["chain_id"], "morpheus-devnet-1");

    net.post(
        "/simulator/faults",
        json!({"path_prefix": "/cosmos/base/tendermint", "method": "GET", "kind": "malformed_json", "count": 3}),
    )
    .await;
    let error = call(&executor, json!({"op": "latest_height"}))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(error.message().contains("not JSON"), "{error}");
    call(&executor, json!({"op": "latest_height"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn keys_from_an_env_var_and_a_file_sign_for_the_same_account() {
    let net = Devnet::start(20).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mnemonic");
    std::fs::write(&file, format!("{DEMO_MNEMONIC}\n")).unwrap();
    std::env::set_var("MORPHEUS_TEST_DEVNET_KEYS_MNEMONIC", DEMO_MNEMONIC);
    let from_env = CosmosExecutor::new(&net.config(KeySource::MnemonicEnv(
        "MORPHEUS_TEST_DEVNET_KEYS_MNEMONIC".into(),
    )))
    .unwrap();
    let from_file = CosmosExecutor::new(&net.config(KeySource::MnemonicFile(file))).unwrap();
    let address = from_env.address().unwrap().to_owned();
    assert_eq!(from_file.address(), Some(address.as_str()));
    net.fund(&address, 10_000_000).await;
    let dseq = net.deployment(&address, 0, &[]).await;
    broadcast(&from_env, &sign(&from_env, dseq, "1").await)
        .await
        .unwrap();
    let second = sign(&from_file, dseq, "2").await;
    assert_eq!(second["sequence"], 1);
    broadcast(&from_file, &second).await.unwrap();
    assert_eq!(net.deposits(dseq).await.len(), 2);

    let missing = CosmosExecutor::new(&net.config(KeySource::MnemonicEnv(
        "MORPHEUS_TEST_DEVNET_KEYS_UNSET".into(),
    )))
    .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "cosmos key: environment variable MORPHEUS_TEST_DEVNET_KEYS_UNSET is not set"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_outputs_errors_or_logs() {
    let net = Devnet::start(20).await;
    std::env::set_var("MORPHEUS_TEST_DEVNET_SECRET_MNEMONIC", DEMO_MNEMONIC);
    let executor = CosmosExecutor::new(&net.config(KeySource::MnemonicEnv(
        "MORPHEUS_TEST_DEVNET_SECRET_MNEMONIC".into(),
    )))
    .unwrap();
    let address = executor.address().unwrap().to_owned();
    net.fund(&address, 10_000_000).await;
    let dseq = net.deployment(&address, 1_000, &[7]).await;
    let hex_key = test_key("secret-hex");
    let hex_executor = CosmosExecutor::new(&net.config(hex_key.source.clone())).unwrap();

    let mut transcript = vec![format!("{executor:?}"), format!("{hex_executor:?}")];
    let signed = sign(&executor, dseq, "5").await;
    let payloads = [
        json!({"op": "latest_height"}),
        json!({"op": "account"}),
        json!({"op": "balance"}),
        json!({"op": "deployments"}),
        json!({"op": "leases"}),
        json!({"op": "sign_deposit", "dseq": dseq, "amount": "7"}),
        json!({"op": "broadcast", "tx_bytes_b64": signed["tx_bytes_b64"]}),
        json!({"op": "tx_status", "tx_hash": signed["tx_hash"]}),
        json!({"op": "sign_deposit", "dseq": 31337, "amount": "7"}),
        json!({"op": "broadcast", "tx_bytes_b64": "bm90IGEgdHg="}),
        json!({"op": "sign_deposit", "dseq": dseq, "amount": "seven"}),
        json!({"op": "account", "address": "not-an-address"}),
    ];
    for payload in payloads {
        for executor in [&executor, &hex_executor] {
            let (result, lines) = call_logged(executor, payload.clone()).await;
            transcript.push(match result {
                Ok(output) => output.to_string(),
                Err(error) => error.message().to_owned(),
            });
            transcript.extend(lines.lock().unwrap().iter().cloned());
        }
    }
    let transcript = transcript.join("\n");
    assert!(
        transcript.contains("signed deposit tx"),
        "logs were captured"
    );
    assert!(!transcript.contains(DEMO_MNEMONIC));
    assert!(!transcript.contains("abandon"));
    assert!(!transcript.to_lowercase().contains(&hex_key.hex));
    assert!(!transcript.contains("MORPHEUS_TEST_DEVNET_SECRET_MNEMONIC="));
}

#[tokio::test]
async fn read_operations_answer_for_any_address_and_refuse_bad_ones() {
    let net = Devnet::start(20).await;
    let key = test_key("reader");
    let stranger = test_key("stranger");
    let executor = CosmosExecutor::new(&net.config(key.source.clone())).unwrap();
    let unknown = call(
        &executor,
        json!({"op": "account", "address": stranger.address}),
    )
    .await
    .unwrap();
    assert_eq!(
        unknown,
        json!({"address": stranger.address, "exists": false, "account_number": null, "sequence": 0})
    );
    net.fund(&stranger.address, 42).await;
    let known = call(
        &executor,
        json!({"op": "account", "address": stranger.address}),
    )
    .await
    .unwrap();
    assert_eq!(known["exists"], true);
    assert!(known["account_number"].as_u64().is_some());
    let balance = call(
        &executor,
        json!({"op": "balance", "address": stranger.address}),
    )
    .await
    .unwrap();
    assert_eq!(balance["amount"], "42");
    let none = call(
        &executor,
        json!({"op": "balance", "address": stranger.address, "denom": "uusdc"}),
    )
    .await
    .unwrap();
    assert_eq!(none["amount"], "0");
    let error = permanent(
        call(
            &executor,
            json!({"op": "deployments", "owner": "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4"}),
        )
        .await,
    );
    assert!(error.contains("is not an akash1… address"), "{error}");
    let error = permanent(call(&executor, json!({"op": "teleport"})).await);
    assert!(error.starts_with("invalid cosmos payload"), "{error}");
    // Without a key only reads work.
    let keyless =
        CosmosExecutor::new(&CosmosConfig::new(net.sim.url(), "morpheus-devnet-1")).unwrap();
    let error = permanent(
        call(
            &keyless,
            json!({"op": "sign_deposit", "dseq": 1, "amount": "1"}),
        )
        .await,
    );
    assert!(error.contains("no key configured"), "{error}");
    call(&keyless, json!({"op": "latest_height"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_response_says_it_comes_from_the_simulator() {
    let net = Devnet::start(20).await;
    for path in [
        "/cosmos/base/tendermint/v1beta1/blocks/latest",
        "/cosmos/tx/v1beta1/txs/00",
        "/no/such/endpoint",
        "/simulator/ledger",
    ] {
        let response = net
            .http
            .get(format!("{}{path}", net.sim.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-morpheus-simulator"],
            "akash-devnet",
            "{path}"
        );
    }
    let missing: Value = net.get("/no/such/endpoint").await;
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("not served by the Akash devnet simulator"),
        "{missing}"
    );
    let info = net.get("/cosmos/base/tendermint/v1beta1/node_info").await;
    assert_eq!(info["default_node_info"]["network"], "morpheus-devnet-1");
    assert!(info["application_version"]["name"]
        .as_str()
        .unwrap()
        .contains("simulator"));
    assert!(net.sim.banner().contains("SIMULATOR"));
}

#[tokio::test]
async fn the_demo_seed_has_a_funded_wallet_and_three_deployments() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = serve(
        listener,
        SimulatorOptions {
            seed_demo: true,
            block_time: Duration::ZERO,
            ..SimulatorOptions::default()
        },
    )
    .await
    .unwrap();
    let demo = sim.demo().unwrap().clone();
    let signer = Signer::from_mnemonic(DEMO_MNEMONIC, "m/44'/118'/0'/0/0", "akash").unwrap();
    assert_eq!(demo.address, signer.address());
    let dseqs: Vec<u64> = demo.deployments.iter().map(|d| d.dseq).collect();
    assert_eq!(dseqs, [1001, 1002, 1003]);
    let banner = sim.banner();
    assert!(banner.contains(&format!("export MORPHEUS_DEMO_MNEMONIC='{DEMO_MNEMONIC}'")));
    assert!(banner.contains(&demo.address));

    let executor =
        CosmosExecutor::with_signer(&CosmosConfig::new(sim.url(), "morpheus-devnet-1"), signer)
            .unwrap();
    let all = call(
        &executor,
        json!({"op": "deployments", "include_closed": true}),
    )
    .await
    .unwrap();
    let summary: Vec<(String, String, String)> = all["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["dseq"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
                d["escrow_funds"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("1001".into(), "active".into(), "50000000".into()),
            ("1002".into(), "active".into(), "120000".into()),
            ("1003".into(), "closed".into(), "0".into()),
        ]
    );
    let rates = call(&executor, json!({"op": "leases"})).await.unwrap();
    let rates: Vec<(&str, &str)> = rates["rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dseq"].as_str().unwrap(),
                r["rate_per_block"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rates, [("1001", "100"), ("1002", "100")]);
    let balance = call(&executor, json!({"op": "balance"})).await.unwrap();
    assert_eq!(balance["amount"], "500000000");
    let height = call(&executor, json!({"op": "latest_height"}))
        .await
        .unwrap();
    assert_eq!(height["height"], 1, "no blocks without a block time");
}

/// The simulator derives the demo wallet on its own; the client's signer agrees with it.
#[test]
fn the_simulator_and_the_client_derive_the_same_demo_wallet() {
    let signer = Signer::from_mnemonic(DEMO_MNEMONIC, DEMO_HD_PATH, "akash").unwrap();
    assert_eq!(demo_address(), signer.address());
}

/// Both deposit messages the client encodes decode, with the simulator's own types
/// (written from the Akash protos), to exactly what the client was asked to deposit.
#[test]
fn the_clients_deposit_messages_decode_with_the_simulators_own_types() {
    let intent = DepositIntent {
        signer: "akash1signer".into(),
        owner: "akash1owner".into(),
        dseq: 1234,
        amount: 5_000_000,
        denom: "uakt".into(),
        from_grant: false,
    };
    for (version, message) in [
        (MsgVersion::EscrowV1, DepositMessage::AccountDeposit),
        (
            MsgVersion::DeploymentV1beta3,
            DepositMessage::DepositDeployment,
        ),
    ] {
        let any = intent.to_any(version);
        assert_eq!(any.type_url, message.type_url());
        assert_eq!(
            decode_deposit(&any).unwrap(),
            DepositRequest {
                signer: intent.signer.clone(),
                owner: intent.owner.clone(),
                dseq: intent.dseq,
                amount: intent.amount,
                denom: intent.denom.clone(),
                message,
            }
        );
    }
}
