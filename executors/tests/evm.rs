//! The `evm` executor against a real anvil and the devnet contracts (deployed from
//! their committed artifacts), with nonces reserved in a real SQLite database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use morpheus_engine::{ExecRequest, Executor, LeaseCheck, LogSink, NonceStore, StepError};
use morpheus_executors::evm::{
    can_resign, EvmConfig, EvmExecutor, EvmReceipt, EvmTxStatus, Released, SignedEvmTx,
    TokenAmount, CALL_REVERTED, NONCE_TAKEN, TX_REJECTED, TX_REVERTED,
};
use morpheus_tests::anvil::{Anvil, Mining};
use serde_json::{json, Value};

/// anvil's well-known accounts 0 and 1 (public keys of a public test mnemonic).
const DEPLOYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const DEPLOYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const OTHER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const OTHER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

struct Chain {
    anvil: Anvil,
    executor: EvmExecutor,
    usdc: String,
    vault: String,
    _db: tempfile::TempDir,
}

fn artifact_code(name: &str) -> String {
    let path = format!(
        "{}/../bin/devnets/contracts/artifacts/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let artifact: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    artifact["bytecode"].as_str().unwrap().to_owned()
}

/// Deploys a contract from anvil's unlocked account 0 (outside the executor).
fn deploy(anvil: &Anvil, code: String) -> String {
    let hash = anvil.rpc(
        "eth_sendTransaction",
        json!([{"from": DEPLOYER, "data": code}]),
    );
    receipt_of(anvil, &hash)["contractAddress"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// anvil mines at once, but its receipt can trail the answer to the send by a moment.
fn receipt_of(anvil: &Anvil, hash: &Value) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash]));
        if !receipt.is_null() {
            return receipt;
        }
        assert!(Instant::now() < until, "no receipt for {hash}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn address_word(address: &str) -> String {
    format!("{:0>64}", address.trim_start_matches("0x").to_lowercase())
}

async fn chain() -> Chain {
    let anvil = Anvil::start(Mining::Instant);
    let usdc = deploy(&anvil, artifact_code("MockUSDC"));
    let vault = deploy(
        &anvil,
        format!(
            "{}{}",
            artifact_code("MorStakingVault"),
            address_word(&usdc)
        ),
    );
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nonces.db?mode=rwc", db.path().display());
    let world = morpheus_engine::connect(&url).await.unwrap();
    let executor = executor_on(&anvil.url, 31337, world);
    Chain {
        anvil,
        executor,
        usdc,
        vault,
        _db: db,
    }
}

fn executor_on(url: &str, chain_id: u64, nonces: Arc<dyn NonceStore>) -> EvmExecutor {
    executor_with_key(url, chain_id, nonces, DEPLOYER_KEY)
}

fn executor_with_key(
    url: &str,
    chain_id: u64,
    nonces: Arc<dyn NonceStore>,
    key: &str,
) -> EvmExecutor {
    let mut config = EvmConfig::new(url, chain_id);
    config.timeouts.receipt = Duration::from_secs(10);
    config.timeouts.receipt_poll = Duration::from_millis(50);
    EvmExecutor::with_signer(&config, key.parse().unwrap(), nonces).unwrap()
}

async fn call(
    executor: &EvmExecutor,
    key: &str,
    payload: Value,
) -> (Result<Value, StepError>, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let lines = lines.clone();
        LogSink::new(move |_, message, _| lines.lock().unwrap().push(message))
    };
    let result = executor
        .call(ExecRequest {
            idempotency_key: key.to_owned(),
            attempt: 1,
            fencing_token: 1,
            lease: LeaseCheck::always(),
            deadline: Some(Instant::now() + Duration::from_secs(30)),
            payload,
            logs: sink,
        })
        .await;
    let lines = lines.lock().unwrap().clone();
    (result, lines)
}

async fn ok<T: serde::de::DeserializeOwned>(
    executor: &EvmExecutor,
    key: &str,
    payload: Value,
) -> T {
    let (result, lines) = call(executor, key, payload.clone()).await;
    let value = result.unwrap_or_else(|error| panic!("{payload}: {error:?}; logs {lines:?}"));
    serde_json::from_value(value).unwrap()
}

async fn transact(executor: &EvmExecutor, key: &str, payload: Value) -> (SignedEvmTx, EvmReceipt) {
    let signed: SignedEvmTx = ok(executor, &format!("{key}/sign"), payload).await;
    let receipt: EvmReceipt = ok(
        executor,
        &format!("{key}/broadcast"),
        json!({"op": "broadcast", "raw_tx": signed.raw_tx}),
    )
    .await;
    (signed, receipt)
}

fn failure(result: Result<Value, StepError>) -> StepError {
    result.expect_err("the call should fail")
}

#[tokio::test]
async fn reads_writes_and_a_resent_transaction_lands_once() {
    let chain = chain().await;
    let executor = &chain.executor;
    let decimals: Value = ok(
        executor,
        "r/decimals",
        json!({"op": "decimals", "token": chain.usdc}),
    )
    .await;
    assert_eq!(decimals["decimals"], 6);

    let (minted, receipt) = transact(
        executor,
        "r/mint",
        json!({"op": "sign", "to": chain.usdc, "function": "mint(address,uint256)", "args": [DEPLOYER, "100000000"]}),
    )
    .await;
    assert!(!receipt.already_known);
    assert_eq!(receipt.tx_hash, minted.tx_hash);
    // The same bytes again (a resumed run): the receipt of the same hash, nothing new.
    let again: EvmReceipt = ok(
        executor,
        "r/mint/broadcast",
        json!({"op": "broadcast", "raw_tx": minted.raw_tx}),
    )
    .await;
    assert!(again.already_known);
    assert_eq!(again.block_number, receipt.block_number);
    let balance: TokenAmount = ok(
        executor,
        "r/balance",
        json!({"op": "erc20_balance", "token": chain.usdc}),
    )
    .await;
    assert_eq!(balance.amount, "100000000");

    // An approve from a JSON ABI item, then the allowance read back.
    let approve = json!({"type": "function", "name": "approve", "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}]});
    let (approved, _) = transact(
        executor,
        "r/approve",
        json!({"op": "sign", "to": chain.usdc, "abi": approve, "args": [chain.vault, "60000000"]}),
    )
    .await;
    assert_eq!(approved.nonce, minted.nonce + 1);
    let allowance: TokenAmount = ok(
        executor,
        "r/allowance",
        json!({"op": "allowance", "token": chain.usdc, "spender": chain.vault}),
    )
    .await;
    assert_eq!(allowance.amount, "60000000");

    let (_, staked) = transact(
        executor,
        "r/stake",
        json!({"op": "sign", "to": chain.vault, "function": "stake(uint256)", "args": ["60000000"]}),
    )
    .await;
    assert_eq!(staked.logs, 2, "Transfer + Staked");
    let on_vault: Value = ok(
        executor,
        "r/staked",
        json!({"op": "call", "to": chain.vault, "function": "stakedOf(address) returns (uint256)", "args": [DEPLOYER]}),
    )
    .await;
    assert_eq!(on_vault["result"], json!(["60000000"]));

    // A re-executed sign step (crash before its output was journaled) keeps its nonce.
    let first: SignedEvmTx = ok(
        executor,
        "r/again/sign",
        json!({"op": "sign", "to": OTHER, "value": "1"}),
    )
    .await;
    let second: SignedEvmTx = ok(
        executor,
        "r/again/sign",
        json!({"op": "sign", "to": OTHER, "value": "1"}),
    )
    .await;
    assert_eq!(first.nonce, second.nonce);
}

#[tokio::test]
async fn reverts_fail_permanently_with_their_reason() {
    let chain = chain().await;
    // The staker is account 1; the vault's owner (account 0) pauses it from outside.
    let db = tempfile::tempdir().unwrap();
    let world =
        morpheus_engine::connect(&format!("sqlite://{}/s.db?mode=rwc", db.path().display()))
            .await
            .unwrap();
    let staker = executor_with_key(&chain.anvil.url, 31337, world, OTHER_KEY);
    let executor = &chain.executor;
    transact(executor, "p/mint", json!({"op": "sign", "to": chain.usdc, "function": "mint(address,uint256)", "args": [OTHER, "5000000"]})).await;
    transact(&staker, "p/approve", json!({"op": "sign", "to": chain.usdc, "function": "approve(address,uint256)", "args": [chain.vault, "5000000"]})).await;
    // Signed while the vault is open (fixed gas: no estimate), mined after it paused.
    let signed: SignedEvmTx = ok(
        &staker,
        "p/stake/sign",
        json!({"op": "sign", "to": chain.vault, "function": "stake(uint256)", "args": ["5000000"], "gas_limit": 200000}),
    )
    .await;
    let pause = chain.anvil.rpc(
        "eth_sendTransaction",
        json!([{"from": DEPLOYER, "to": chain.vault, "data": "0x8456cb59"}]),
    );
    assert_eq!(receipt_of(&chain.anvil, &pause)["status"], "0x1");
    // Refused at signing: the estimate reverts, no nonce is taken.
    let refused = failure(
        call(
            &staker,
            "p/stake2/sign",
            json!({"op": "sign", "to": chain.vault, "function": "stake(uint256)", "args": ["1"]}),
        )
        .await
        .0,
    );
    assert_eq!(refused.code(), Some(&CALL_REVERTED), "{refused:?}");
    assert!(refused.to_string().contains("staking paused"), "{refused}");
    let reverted = failure(
        call(
            &staker,
            "p/stake/broadcast",
            json!({"op": "broadcast", "raw_tx": signed.raw_tx}),
        )
        .await
        .0,
    );
    assert_eq!(reverted.code(), Some(&TX_REVERTED), "{reverted:?}");
    assert!(!reverted.is_retryable());
    assert!(
        reverted.to_string().contains("staking paused"),
        "{reverted}"
    );
}

#[tokio::test]
async fn concurrent_signers_get_distinct_gap_free_nonces() {
    let chain = chain().await;
    let start: u64 = {
        let count = chain
            .anvil
            .rpc("eth_getTransactionCount", json!([DEPLOYER, "pending"]));
        u64::from_str_radix(count.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };
    let signs = (0..8).map(|index| {
        let executor = chain.executor.clone();
        async move {
            ok::<SignedEvmTx>(
                &executor,
                &format!("c{index}/sign"),
                json!({"op": "sign", "to": OTHER, "value": "1"}),
            )
            .await
        }
    });
    let mut signed = futures::future::join_all(signs).await;
    let mut nonces: Vec<u64> = signed.iter().map(|tx| tx.nonce).collect();
    nonces.sort_unstable();
    assert_eq!(nonces, (start..start + 8).collect::<Vec<_>>());
    // Sent in nonce order: anvil's instant mining leaves a transaction that arrived
    // before a lower nonce unmined until another transaction arrives.
    signed.sort_by_key(|tx| tx.nonce);
    for (index, tx) in signed.iter().enumerate() {
        ok::<EvmReceipt>(
            &chain.executor,
            &format!("c{index}/broadcast"),
            json!({"op": "broadcast", "raw_tx": tx.raw_tx}),
        )
        .await;
    }
    let count = chain
        .anvil
        .rpc("eth_getTransactionCount", json!([DEPLOYER, "latest"]));
    assert_eq!(
        u64::from_str_radix(count.as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
        start + 8
    );
}

#[tokio::test]
async fn a_nonce_taken_elsewhere_and_a_refused_transaction() {
    let chain = chain().await;
    let executor = &chain.executor;
    // Signed and journaled, then the account sends another transaction outside Morpheus
    // with the same nonce.
    let ours: SignedEvmTx = ok(
        executor,
        "n/sign",
        json!({"op": "sign", "to": OTHER, "value": "7"}),
    )
    .await;
    chain.anvil.rpc(
        "eth_sendTransaction",
        json!([{"from": DEPLOYER, "to": OTHER, "value": "0x1"}]),
    );
    let taken = failure(
        call(
            executor,
            "n/broadcast",
            json!({"op": "broadcast", "raw_tx": ours.raw_tx}),
        )
        .await
        .0,
    );
    assert_eq!(taken.code(), Some(&NONCE_TAKEN), "{taken:?}");
    let status: EvmTxStatus = ok(
        executor,
        "n/status",
        json!({"op": "tx_status", "tx_hash": ours.tx_hash}),
    )
    .await;
    assert!(!status.found);
    assert!(can_resign(status.found, status.signer_nonce, ours.nonce));

    // More value than the account holds: the node refuses it, so its nonce comes back.
    let greedy: SignedEvmTx = ok(
        executor,
        "g/sign",
        json!({"op": "sign", "to": OTHER, "value": "1000000000000000000000000000", "gas_limit": 21000}),
    )
    .await;
    let rejected = failure(
        call(
            executor,
            "g/broadcast",
            json!({"op": "broadcast", "raw_tx": greedy.raw_tx}),
        )
        .await
        .0,
    );
    assert_eq!(rejected.code(), Some(&TX_REJECTED), "{rejected:?}");
    let released: Released = ok(
        executor,
        "g/release",
        json!({"op": "release_nonce", "raw_tx": greedy.raw_tx}),
    )
    .await;
    assert!(released.released);
    let next: SignedEvmTx = ok(
        executor,
        "h/sign",
        json!({"op": "sign", "to": OTHER, "value": "1"}),
    )
    .await;
    assert_eq!(next.nonce, greedy.nonce);
    ok::<EvmReceipt>(
        executor,
        "h/broadcast",
        json!({"op": "broadcast", "raw_tx": next.raw_tx}),
    )
    .await;
    // A mined transaction's nonce is never given back.
    let refused = failure(
        call(
            executor,
            "h/release",
            json!({"op": "release_nonce", "raw_tx": next.raw_tx}),
        )
        .await
        .0,
    );
    assert!(
        refused.to_string().contains("known to the node"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_wrong_chain_id_and_bad_payloads_are_refused() {
    let chain = chain().await;
    let db = tempfile::tempdir().unwrap();
    let world =
        morpheus_engine::connect(&format!("sqlite://{}/n.db?mode=rwc", db.path().display()))
            .await
            .unwrap();
    let wrong = executor_on(&chain.anvil.url, 8453, world);
    let error = failure(call(&wrong, "w/info", json!({"op": "chain_info"})).await.0);
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        format!(
            "chain id mismatch: configured 8453 but the node at {}/ reports 31337",
            chain.anvil.url
        )
    );
    let cases = [
        (
            json!({"op": "sign", "to": "0x12", "value": "1"}),
            "to '0x12' is not a 0x… address",
        ),
        (
            json!({"op": "sign", "to": OTHER, "function": "transfer(address,uint256)", "args": ["x", "1"]}),
            "argument 0",
        ),
        (
            json!({"op": "sign", "to": OTHER, "value": "-1"}),
            "value '-1'",
        ),
        (
            json!({"op": "broadcast", "raw_tx": "0xdeadbeef"}),
            "raw_tx is not a signed EIP-2718 transaction",
        ),
        (json!({"op": "fly"}), "invalid evm payload"),
    ];
    for (payload, expected) in cases {
        let error = failure(call(&chain.executor, "b/x", payload.clone()).await.0);
        assert!(!error.is_retryable(), "{payload}");
        assert!(error.to_string().contains(expected), "{payload}: {error}");
    }
    // A node that is down: retryable, after the in-process retries.
    let down = {
        let db = tempfile::tempdir().unwrap();
        let world =
            morpheus_engine::connect(&format!("sqlite://{}/d.db?mode=rwc", db.path().display()))
                .await
                .unwrap();
        let port = morpheus_tests::devnet::free_port();
        (
            executor_on(&format!("http://127.0.0.1:{port}"), 31337, world),
            db,
        )
    };
    let error = failure(call(&down.0, "d/info", json!({"op": "chain_info"})).await.0);
    assert!(error.is_retryable(), "{error:?}");
}
