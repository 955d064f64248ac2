//! Automations end to end: `morpheus up` (the real binary, SQLite and Postgres) triggers
//! an external executor service on an interval, verifies its HMAC-signed answers and
//! relays the calls it asks for to a contract on a real anvil, exactly once per
//! non-skipped trigger, from the automation's own relayer.
//!
//! The executor service here is written as an external user would write one: a small
//! HTTP server (axum) that knows only the automation's HMAC key, checks the signature
//! of every trigger, and answers with `approve(spender, executionCount)` calls on the
//! devnet USDC contract (skipping every third trigger). Registration goes through
//! `POST /api/v1/automations`; the logs through the API and `morpheus automations logs`.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use hmac::{Hmac, Mac};
use morpheus_tests::anvil::{Anvil, Mining};
use morpheus_tests::devnet::free_port;
use morpheus_tests::{
    both_backends, wait_for, Backend, CliOutput, TestEnv, WorkerProcess, FAST_LEASES,
};
use serde_json::{json, Value};
use sha2::Sha256;

const PASSPHRASE_ENV: &str = "MORPHEUS_KEYS_PASSPHRASE";
const PASSPHRASE: &str = "automation test passphrase";
/// Who the relayed `approve` calls name.
const SPENDER: &str = "0x00000000000000000000000000000000000000a1";

fn hmac_hex(key: &[u8], message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// How the executor service answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Tasks (every third trigger skipped), correctly signed.
    Honest,
    /// A task signed with the wrong key.
    BadSignature,
    /// A task calling a contract the policy does not allow.
    WrongTarget,
    /// Not JSON.
    Malformed,
    /// 503 to everything.
    Down,
    /// Skips every trigger (correctly signed).
    SkipAll,
    /// Answers with an earlier request's id (and a signature valid for that id): a
    /// replay carrying a different task.
    Replay,
}

#[derive(Default)]
struct Seen {
    /// requestID → whether its signature verified.
    triggers: Vec<(String, bool, u64)>,
    /// The `trigger` of each request.
    trigger_data: Vec<Value>,
    /// The `kernel/executed` bodies.
    executed: Vec<Value>,
}

struct Service {
    key: Vec<u8>,
    mode: Mode,
    target: String,
    seen: Seen,
}

type Shared = Arc<Mutex<Service>>;

async fn trigger(State(shared): State<Shared>, body: String) -> (StatusCode, String) {
    let mut service = shared.lock().unwrap();
    if service.mode == Mode::Down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    if service.mode == Mode::Malformed {
        return (StatusCode::OK, "{not json".into());
    }
    let request: Value = serde_json::from_str(&body).unwrap();
    let request_id = request["requestID"].as_str().unwrap().to_owned();
    let count = request["context"]["executionCount"].as_u64().unwrap();
    let verified = hmac_hex(&service.key, &request_id) == request["signature"].as_str().unwrap();
    service
        .seen
        .triggers
        .push((request_id.clone(), verified, count));
    service.seen.trigger_data.push(request["trigger"].clone());
    // A replay answers as if to the first request this service saw.
    let answered_id = match service.mode {
        Mode::Replay => service.seen.triggers[0].0.clone(),
        _ => request_id.clone(),
    };
    let request_id = answered_id;
    let key = if service.mode == Mode::BadSignature {
        b"not the key".to_vec()
    } else {
        service.key.clone()
    };
    if service.mode == Mode::SkipAll || (service.mode == Mode::Honest && count.is_multiple_of(3)) {
        let answer = json!({"skip": true, "requestID": request_id, "task": null,
                            "signature": hmac_hex(&key, &format!("{request_id}:0x"))});
        return (StatusCode::OK, answer.to_string());
    }
    // approve(SPENDER, count)
    let data = format!(
        "0x095ea7b3{:0>64}{:064x}",
        SPENDER.trim_start_matches("0x"),
        count
    );
    let to = if service.mode == Mode::WrongTarget {
        "0x00000000000000000000000000000000000000b2".to_owned()
    } else {
        service.target.clone()
    };
    let executor_signature = format!("0x{}", hmac_hex(b"executor's own", &data));
    let answer = json!({
        "skip": false,
        "requestID": request_id,
        "task": {"executorSignature": executor_signature,
                 "executable": {"callType": 0, "to": to, "value": "0", "data": data}},
        "signature": hmac_hex(&key, &format!("{request_id}:{executor_signature}")),
    });
    (StatusCode::OK, answer.to_string())
}

async fn executed(State(shared): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let mut service = shared.lock().unwrap();
    service.seen.executed.push(body.clone());
    Json(json!({"log": {"seen": body["requestID"]}}))
}

fn start_service(target: &str) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(Service {
        key: Vec::new(),
        mode: Mode::Honest,
        target: target.to_owned(),
        seen: Seen::default(),
    }));
    let app = axum::Router::new()
        .route("/kernel/trigger", post(trigger))
        .route("/kernel/executed", post(executed))
        .with_state(shared.clone());
    let (bound, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
    });
    (format!("http://{}", address.recv().unwrap()), shared)
}

struct World {
    env: TestEnv,
    anvil: Anvil,
    usdc: String,
    config: std::path::PathBuf,
    api: String,
    service_url: String,
    service: Shared,
}

impl World {
    fn new(backend: Backend) -> Self {
        let env = TestEnv::new(backend);
        let anvil = Anvil::start(Mining::Instant);
        let deployed =
            CliOutput::from_command(Command::new(morpheus_tests::morpheus_bin()).args([
                "devnet",
                "contracts",
                "--evm-rpc",
                &anvil.url,
            ]));
        assert!(deployed.status.success(), "{}", deployed.stderr);
        let contracts: Value = serde_json::from_str(&deployed.stdout).unwrap();
        let usdc = contracts["usdc"].as_str().unwrap().to_owned();
        let api = format!("127.0.0.1:{}", free_port());
        let config = env.path("morpheus.toml");
        std::fs::write(
            &config,
            format!(
                "[evm]\nrpc_url = \"{}\"\nchain_id = 31337\n\n[api]\nlisten = \"{api}\"\n",
                anvil.url
            ),
        )
        .unwrap();
        let (service_url, service) = start_service(&usdc);
        Self {
            env,
            anvil,
            usdc,
            config,
            api: format!("http://{api}"),
            service_url,
            service,
        }
    }

    fn worker(&self, name: &str, crash_at: Option<&str>) -> WorkerProcess {
        let config = self.config.clone();
        let crash_at = crash_at.map(str::to_owned);
        let worker = self.env.spawn_worker_with(name, FAST_LEASES, |command| {
            command
                .env("MORPHEUS_CONFIG", config)
                .env(PASSPHRASE_ENV, PASSPHRASE);
            if let Some(point) = crash_at {
                command.env("MORPHEUS_CRASH_AT", point);
            }
        });
        wait_for("the API", Duration::from_secs(30), || {
            reqwest::blocking::get(format!("{}/api/health", self.api))
                .ok()
                .filter(|answer| answer.status().is_success())
        });
        worker
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        CliOutput::from_command(
            self.env
                .command()
                .env("MORPHEUS_CONFIG", &self.config)
                .env(PASSPHRASE_ENV, PASSPHRASE)
                .args(args),
        )
    }

    /// Registers an automation through the API; returns its registration answer and
    /// funds its relayers with gas.
    fn register(&self, every_s: u64) -> Value {
        let config = json!({
            "source": {"type": "INTERVAL", "value": every_s},
            "destination": {"baseURL": self.service_url},
            "verifyPayload": true,
            "relayerCount": 1,
            "policy": {"allowedTargets": [self.usdc], "maxValue": "0"},
        });
        let answer = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/automations", self.api))
            .json(&config)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 201);
        let registered: Value = answer.json().unwrap();
        let key = hex::decode(registered["hmacKey"].as_str().unwrap()).unwrap();
        assert_eq!(key.len(), 32, "a 256-bit key");
        self.service.lock().unwrap().key = key;
        for relayer in registered["relayerAddress"].as_array().unwrap() {
            self.anvil
                .rpc("anvil_setBalance", json!([relayer, "0x56BC75E2D63100000"]));
        }
        registered
    }

    fn logs(&self, id: &str, query: &str) -> Vec<Value> {
        reqwest::blocking::get(format!("{}/api/v1/automations/{id}/logs{query}", self.api))
            .unwrap()
            .json::<Value>()
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn set_mode(&self, mode: Mode) {
        self.service.lock().unwrap().mode = mode;
    }

    fn nonce(&self, address: &str) -> u64 {
        let count = self
            .anvil
            .rpc("eth_getTransactionCount", json!([address, "latest"]));
        u64::from_str_radix(count.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    fn allowance(&self, owner: &str) -> u64 {
        let data = format!(
            "0xdd62ed3e{:0>64}{:0>64}",
            owner.trim_start_matches("0x").to_lowercase(),
            SPENDER.trim_start_matches("0x")
        );
        let answer = self.anvil.rpc(
            "eth_call",
            json!([{"to": self.usdc, "data": data}, "latest"]),
        );
        u64::from_str_radix(answer.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }
}

fn an_interval_automation_relays_each_answer_once_and_logs_it(backend: Backend) {
    let world = World::new(backend);
    let _worker = world.worker("w1", None);
    let registered = world.register(1);
    let id = registered["id"].as_str().unwrap().to_owned();
    let relayer = registered["relayerAddress"][0].as_str().unwrap().to_owned();
    wait_for("six executions", Duration::from_secs(60), || {
        (world.logs(&id, "?limit=100").len() >= 6).then_some(())
    });
    let paused = world.cli(&["automations", "pause", &id]);
    assert!(paused.status.success(), "{}", paused.stderr);
    // An execution under way when it paused finishes; then nothing more.
    std::thread::sleep(Duration::from_secs(3));
    let records = world.logs(&id, "?limit=100");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(world.logs(&id, "?limit=100").len(), records.len(), "paused");

    // Newest first, one record per execution, numbered without gaps.
    let counts: Vec<u64> = records
        .iter()
        .map(|r| r["executionCount"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=counts.len() as u64).rev().collect();
    assert_eq!(counts, expected);
    let relayed: Vec<&Value> = records
        .iter()
        .filter(|r| r["outputTxHash"].is_string())
        .collect();
    let skipped: Vec<&Value> = records
        .iter()
        .filter(|r| r["message"] == "skipped")
        .collect();
    assert_eq!(relayed.len() + skipped.len(), records.len(), "{records:#?}");
    assert!(skipped
        .iter()
        .all(|r| r["executionCount"].as_u64().unwrap().is_multiple_of(3)));
    // Exactly one transaction per relayed execution, from the relayer, to the contract.
    assert_eq!(world.nonce(&relayer), relayed.len() as u64);
    let hashes: BTreeSet<&str> = relayed
        .iter()
        .map(|r| r["outputTxHash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), relayed.len());
    for hash in &hashes {
        let receipt = world.anvil.rpc("eth_getTransactionReceipt", json!([hash]));
        assert_eq!(receipt["status"], "0x1", "{receipt}");
        assert_eq!(
            receipt["from"].as_str().unwrap().to_lowercase(),
            relayer.to_lowercase()
        );
        assert_eq!(
            receipt["to"].as_str().unwrap().to_lowercase(),
            world.usdc.to_lowercase()
        );
    }
    let last_relayed = relayed[0]["executionCount"].as_u64().unwrap();
    assert_eq!(world.allowance(&relayer), last_relayed);

    // Every trigger was signed with the automation's key; every execution was told.
    let service = world.service.lock().unwrap();
    assert!(service
        .seen
        .triggers
        .iter()
        .all(|(_, verified, _)| *verified));
    let by_request: HashMap<&str, &Value> = service
        .seen
        .executed
        .iter()
        .map(|body| (body["requestID"].as_str().unwrap(), body))
        .collect();
    for record in &records {
        let hook = by_request[record["requestID"].as_str().unwrap()];
        assert_eq!(hook["successful"], true);
        assert_eq!(hook["relayResponse"]["txHash"], record["outputTxHash"]);
        assert_eq!(
            record["metadata"]["postExecution"]["hook"]["log"]["seen"],
            record["requestID"]
        );
    }
    drop(service);

    // Paging: the API and the CLI agree.
    let page = world.logs(&id, "?offset=1&limit=2");
    assert_eq!(page, records[1..3].to_vec());
    let cli = world.cli(&[
        "automations",
        "logs",
        &id,
        "--offset",
        "1",
        "--limit",
        "2",
        "--json",
    ]);
    assert!(cli.status.success(), "{}", cli.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&cli.stdout).unwrap(),
        json!(page)
    );
    // The list never shows the key.
    let listed = world.cli(&["automations", "list", "--json"]);
    assert!(listed.stdout.contains(&id));
    assert!(!listed
        .stdout
        .contains(registered["hmacKey"].as_str().unwrap()));
    let deleted = world.cli(&["automations", "delete", &id]);
    assert!(deleted.status.success(), "{}", deleted.stderr);
    let schedules = world.env.cli_ok(&["schedules", "list", "--json"]);
    assert!(
        !schedules.contains(&id),
        "its trigger is deregistered: {schedules}"
    );
}

both_backends! {
    an_interval_automation_relays_each_answer_once_and_logs_it => an_interval_automation_relays_each_answer_once_and_logs_it,
}

#[test]
fn refused_answers_relay_nothing_and_are_logged() {
    let world = World::new(Backend::Sqlite);
    let _worker = world.worker("w1", None);
    let registered = world.register(1);
    let id = registered["id"].as_str().unwrap().to_owned();
    let relayer = registered["relayerAddress"][0].as_str().unwrap().to_owned();
    let cases = [
        (Mode::BadSignature, "does not verify"),
        (
            Mode::WrongTarget,
            "not among the automation's allowed targets",
        ),
        (Mode::Malformed, "not JSON"),
        (Mode::Down, "could not be reached"),
        (Mode::Replay, "the answer is for request"),
    ];
    for (mode, expected) in cases {
        world.set_mode(mode);
        let record = wait_for(
            &format!("a refusal for {mode:?}"),
            Duration::from_secs(90),
            || {
                world
                    .logs(&id, "?limit=1")
                    .into_iter()
                    .next()
                    .filter(|r| r["message"].as_str().unwrap_or("").contains(expected))
            },
        );
        assert_eq!(record["successful"], false, "{record}");
        assert!(record["outputTxHash"].is_null());
    }
    assert_eq!(world.nonce(&relayer), 0, "nothing was relayed");
    world.set_mode(Mode::Honest);
    wait_for(
        "a relay once the executor behaves",
        Duration::from_secs(60),
        || (world.nonce(&relayer) == 1).then_some(()),
    );
}

#[test]
fn sigkill_after_the_relay_broadcast_confirms_the_same_transaction_and_delivers_the_hook() {
    let world = World::new(Backend::Sqlite);
    let mut first = world.worker("w1", Some("evm.broadcast.after_send:relay/broadcast"));
    let registered = world.register(30);
    let id = registered["id"].as_str().unwrap().to_owned();
    let relayer = registered["relayerAddress"][0].as_str().unwrap().to_owned();
    // Paused, so that no tick adds an execution: start one now, as the schedule would.
    let paused = world.cli(&["automations", "pause", &id]);
    assert!(paused.status.success(), "{}", paused.stderr);
    world.env.cli_ok(&[
        "start",
        "automation.execute",
        "--input",
        &json!({"automation_id": id}).to_string(),
    ]);
    wait_for(
        "the worker to die after the broadcast",
        Duration::from_secs(60),
        || first.try_exit(),
    );
    assert_eq!(
        world.nonce(&relayer),
        1,
        "the transaction was sent before the crash"
    );
    assert!(world.service.lock().unwrap().seen.executed.is_empty());
    let _second = world.worker("w2", None);
    let record = wait_for("the execution's record", Duration::from_secs(60), || {
        world.logs(&id, "?limit=1").into_iter().next()
    });
    assert_eq!(world.nonce(&relayer), 1, "confirmed, not sent again");
    let service = world.service.lock().unwrap();
    assert_eq!(
        service.seen.executed.len(),
        1,
        "{:#?}",
        service.seen.executed
    );
    assert_eq!(
        service.seen.executed[0]["relayResponse"]["txHash"],
        record["outputTxHash"]
    );
    assert_eq!(
        service.seen.triggers.len(),
        1,
        "the trigger is journaled, not repeated"
    );
}

#[test]
fn bad_configurations_are_one_line_errors_that_store_nothing() {
    let world = World::new(Backend::Sqlite);
    let cases = [
        (
            json!({"source": {"type": "INTERVAL", "value": 0}, "destination": {"baseURL": "https://e.example"}, "verifyPayload": true}),
            "below the minimum of 1 s",
        ),
        (
            json!({"source": {"type": "INTERVAL", "value": 5}, "destination": {"baseURL": "http://executor.example"}, "verifyPayload": true}),
            "must be https",
        ),
        (
            json!({"source": {"type": "HOURLY", "value": 5}, "destination": {"baseURL": "https://e.example"}, "verifyPayload": true}),
            "unknown variant",
        ),
        (
            json!({"source": {"type": "INTERVAL", "value": 5}, "destination": {"baseURL": "https://e.example"}, "verifyPayload": true, "relayerCount": 9}),
            "relayerCount",
        ),
    ];
    for (config, expected) in cases {
        let out = world.cli(&["automations", "add", &config.to_string()]);
        assert!(!out.status.success());
        assert_eq!(out.stderr_lines().len(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(expected), "{expected}: {}", out.stderr);
    }
    let listed = world.cli(&["automations", "list", "--json"]);
    assert!(listed.status.success(), "{}", listed.stderr);
    assert_eq!(listed.stdout.trim(), "[]");
}

/// anvil's first account (unlocked): the USDC deployer, whose approvals are watched.
const DEPLOYER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// `Approval(address,address,uint256)`.
const APPROVAL: &str = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925";

impl World {
    /// `approve(spender, amount)` from the deployer: one Approval log.
    fn approve(&self, spender: u64, amount: u64) -> String {
        let data = format!("0x095ea7b3{spender:064x}{amount:064x}");
        self.anvil
            .rpc(
                "eth_sendTransaction",
                json!([{"from": DEPLOYER, "to": self.usdc, "data": data}]),
            )
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until `tx` is in a block: anvil answers `eth_sendTransaction` once the
    /// transaction is in its pool and mines it (automine) a moment later.
    fn wait_mined(&self, tx: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self
            .anvil
            .rpc("eth_getTransactionReceipt", json!([tx]))
            .is_null()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{tx} was not mined within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn mine(&self, blocks: u64) {
        for _ in 0..blocks {
            self.anvil.rpc("evm_mine", json!([]));
        }
    }
}

#[test]
fn a_filter_automation_executes_once_per_log_that_survives_a_reorg() {
    let world = World::new(Backend::Sqlite);
    let _worker = world.worker("w1", None);
    world.set_mode(Mode::SkipAll);
    let owner_topic = format!("0x{:0>64}", DEPLOYER.trim_start_matches("0x"));
    let config = json!({
        "source": {"type": "FILTER", "value": {"chainId": 31337, "address": world.usdc,
                   "topics": [APPROVAL, owner_topic, null], "fromBlock": "latest"}},
        "destination": {"baseURL": world.service_url},
        "verifyPayload": true,
        "confirmations": 2,
        "policy": {"allowedTargets": [world.usdc]},
    });
    let out = world.cli(&["automations", "add", &config.to_string()]);
    assert!(out.status.success(), "{}", out.stderr);
    let registered: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = registered["id"].as_str().unwrap().to_owned();
    world.service.lock().unwrap().key =
        hex::decode(registered["hmacKey"].as_str().unwrap()).unwrap();
    // The watcher's first scan sets its cursor at the chain's head ("latest").
    std::thread::sleep(Duration::from_secs(3));

    let first = world.approve(1, 1);
    // Two logs in one block.
    world.anvil.rpc("evm_setAutomine", json!([false]));
    let second = world.approve(2, 2);
    let third = world.approve(3, 3);
    world.mine(1);
    world.anvil.rpc("evm_setAutomine", json!([true]));
    // A log in a block that a reorg removes before it is two blocks deep.
    let snapshot = world.anvil.rpc("evm_snapshot", json!([]));
    let reorged = world.approve(4, 4);
    // Reverted before it is mined, it would be mined after the revert and survive.
    world.wait_mined(&reorged);
    assert_eq!(
        world.anvil.rpc("evm_revert", json!([snapshot])),
        json!(true)
    );
    let last = world.approve(5, 5);
    world.mine(3);

    let surviving = world.anvil.rpc(
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest", "address": world.usdc,
                "topics": [APPROVAL, owner_topic]}]),
    );
    let surviving: BTreeSet<(String, u64)> = surviving
        .as_array()
        .unwrap()
        .iter()
        .map(|log| {
            let index = log["logIndex"].as_str().unwrap().trim_start_matches("0x");
            (
                log["transactionHash"].as_str().unwrap().to_lowercase(),
                u64::from_str_radix(index, 16).unwrap(),
            )
        })
        .collect();
    let surviving_txs: BTreeSet<String> = surviving.iter().map(|(tx, _)| tx.clone()).collect();
    let expected: BTreeSet<String> = [&first, &second, &third, &last]
        .iter()
        .map(|tx| tx.to_lowercase())
        .collect();
    assert_eq!(
        surviving_txs, expected,
        "the reorged approval is gone from the chain"
    );
    assert!(!surviving_txs.contains(&reorged.to_lowercase()));

    let records = wait_for(
        "an execution per surviving log",
        Duration::from_secs(60),
        || {
            let records = world.logs(&id, "?limit=100");
            (records.len() >= surviving.len()).then_some(records)
        },
    );
    // Several more scans: still exactly one execution per log.
    std::thread::sleep(Duration::from_secs(3));
    let again = world.logs(&id, "?limit=100");
    assert_eq!(again.len(), records.len());
    let executed: Vec<(String, u64)> = again
        .iter()
        .map(|record| {
            let log = &record["metadata"]["request"]["trigger"]["data"];
            (
                log["tx_hash"].as_str().unwrap().to_lowercase(),
                log["log_index"].as_u64().unwrap(),
            )
        })
        .collect();
    let distinct: BTreeSet<(String, u64)> = executed.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        executed.len(),
        "no log executed twice: {executed:?}"
    );
    assert_eq!(distinct, surviving);
    assert!(again.iter().all(|record| record["message"] == "skipped"));
    let service = world.service.lock().unwrap();
    assert!(service
        .seen
        .trigger_data
        .iter()
        .all(|trigger| trigger["type"] == "FILTER"));
    assert!(service
        .seen
        .triggers
        .iter()
        .all(|(_, verified, _)| *verified));
}
