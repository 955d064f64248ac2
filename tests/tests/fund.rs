//! The funding flow end to end: `morpheus up` (the real binary, SQLite and Postgres)
//! runs `fund` through the `evm` executor against a real anvil (the devnet contracts
//! deployed by `morpheus devnet contracts`), the Skip Go route **simulator** (`morpheus
//! devnet skip`, which settles swaps on the Akash simulator) and the Akash devnet
//! **simulator** (`morpheus devnet akash`), each a separate process.
//!
//! Every check reads the chains' own records — `Approval`, `Staked` and
//! `SwapRequested` logs and nonces on anvil, deposits and escrow on the Akash
//! simulator's ledger — never the workflow's report alone:
//!
//! - the happy path lands exactly what the split says, on both backends;
//! - the crash matrix SIGKILLs `morpheus up` at every leg boundary (after sign before
//!   broadcast, after broadcast before the receipt, after the receipt before the
//!   journal; for approve, stake, bridge and deposit), restarts it, and finds every
//!   effect exactly once with no nonce gap. `MORPHEUS_FUND_CRASH_RUNS=N` (or
//!   `MORPHEUS_SOAK=1`: 200) adds N crashes at random points and random times;
//! - two runs from one signer at once both land without reusing a nonce;
//! - refusals change nothing: too little USDC, a wrong chain id, a route over the
//!   slippage bound (the swap goes first, so nothing is staked), malformed route
//!   answers; a paused vault fails the run naming what landed, and `runs resume`
//!   finishes it without repeating a leg; a route API that is down is retried at
//!   persisted times until it is back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use morpheus_tests::anvil::{Anvil, Mining};
use morpheus_tests::devnet::{free_port, DevnetProcess, DEMO_MNEMONIC};
use morpheus_tests::{
    both_backends, wait_for, Backend, CliOutput, TestEnv, WorkerProcess, FAST_LEASES,
};
use rand::Rng;
use serde_json::{json, Value};

/// anvil's second well-known account (public): the user whose USDC is funded.
const USER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const USER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
/// anvil's first account: deployer, USDC minter, vault owner (unlocked on anvil).
const DEPLOYER: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const EVM_KEY_ENV: &str = "MORPHEUS_TEST_FUND_EVM_KEY";
const MNEMONIC_ENV: &str = "MORPHEUS_DEMO_MNEMONIC";
const AKASH_CHAIN_ID: &str = "morpheus-devnet-1";

/// 1,000,000 USDC minted to the user: enough for hundreds of crash runs.
const MINTED: u128 = 1_000_000_000_000;
/// 100 USDC funded per run, 60 % staked.
const AMOUNT: u128 = 100_000_000;
const STAKE: u128 = 60_000_000;
const SWAP: u128 = 40_000_000;
/// The simulator's pricing: 2.5 uakt per USDC base unit, 30 bps fee.
const PRICE_NUM: u128 = 25;
const PRICE_DEN: u128 = 10;
const FEE_BPS: u128 = 30;
/// The workflow's default fee reserve.
const FEE_RESERVE: u128 = 50_000;

/// What the route delivers for `swap` USDC base units, by the simulator's rules.
fn delivered(swap: u128) -> u128 {
    let gross = swap * PRICE_NUM / PRICE_DEN;
    gross - gross * FEE_BPS / 10_000
}

/// Every process of one funding world: the database, anvil with the contracts, both
/// simulators, the configuration.
struct FundWorld {
    env: TestEnv,
    anvil: Anvil,
    akash: DevnetProcess,
    skip: Option<DevnetProcess>,
    usdc: String,
    vault: String,
    bridge: String,
    owner: String,
    dseq: String,
    config: PathBuf,
}

/// How the world is set up.
struct Setup {
    /// Reported price impact of the route simulator, percent.
    price_impact_pct: &'static str,
    /// `[evm] chain_id`.
    evm_chain_id: u64,
    /// `[fund] route_api` (default: the simulator).
    route_api: Option<String>,
    /// Start the route simulator.
    start_skip: bool,
    /// `[evm] rpc_url` (default: anvil itself).
    evm_rpc: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            price_impact_pct: "0.5",
            evm_chain_id: 31337,
            route_api: None,
            start_skip: true,
            evm_rpc: None,
        }
    }
}

impl FundWorld {
    fn new(backend: Backend) -> Self {
        Self::with(backend, Setup::default())
    }

    fn with(backend: Backend, setup: Setup) -> Self {
        let env = TestEnv::new(backend);
        let anvil = Anvil::start(Mining::Instant);
        let deployed =
            CliOutput::from_command(Command::new(morpheus_tests::morpheus_bin()).args([
                "devnet",
                "contracts",
                "--evm-rpc",
                &anvil.url,
                "--mint",
                &format!("{USER}={MINTED}"),
            ]));
        assert!(
            deployed.status.success(),
            "devnet contracts: {}",
            deployed.stderr
        );
        let contracts: Value = serde_json::from_str(&deployed.stdout).expect("contracts JSON");
        let address = |name: &str| {
            contracts[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {contracts}"))
                .to_owned()
        };
        let (usdc, vault, bridge) = (address("usdc"), address("staking_vault"), address("bridge"));
        let mut akash = DevnetProcess::spawn_akash(&["--seed-demo", "--block-time-ms", "100"]);
        let owner = akash.demo_wallet();
        let created = akash.post(
            "/simulator/deployments",
            &json!({"owner": owner, "escrow": "5000000", "lease_prices": ["10"]}),
        );
        assert!((200..300).contains(&created.status), "{}", created.body);
        let dseq = created.json()["deployment"]["deployment"]["id"]["dseq"]
            .as_str()
            .expect("a dseq")
            .to_owned();
        let skip = setup.start_skip.then(|| {
            spawn_skip(
                &anvil,
                &akash,
                &bridge,
                setup.price_impact_pct,
                format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            )
        });
        let route_api = setup.route_api.unwrap_or_else(|| {
            format!(
                "http://{}",
                skip.as_ref().expect("the route simulator").addr
            )
        });
        let config = env.path("morpheus.toml");
        std::fs::write(
            &config,
            format!(
                "[cosmos]\nrest_url = \"http://{akash}\"\nchain_id = \"{AKASH_CHAIN_ID}\"\n\
                 key = {{ mnemonic_env = \"{MNEMONIC_ENV}\" }}\n\
                 timeouts = {{ confirm_poll = \"100ms\", confirm = \"10s\" }}\n\n\
                 [evm]\nrpc_url = \"{rpc}\"\nchain_id = {chain}\n\
                 key = {{ hex_key_env = \"{EVM_KEY_ENV}\" }}\n\n\
                 [fund]\nusdc = \"{usdc}\"\nstaking_vault = \"{vault}\"\nroute_api = \"{route_api}\"\n\
                 status_poll = \"100ms\"\nakash_seconds_per_block = 0.2\n",
                akash = akash.addr,
                rpc = setup.evm_rpc.as_deref().unwrap_or(&anvil.url),
                chain = setup.evm_chain_id,
            ),
        )
        .expect("write morpheus.toml");
        Self {
            env,
            anvil,
            akash,
            skip,
            usdc,
            vault,
            bridge,
            owner,
            dseq,
            config,
        }
    }

    /// `morpheus up` with fast leases, the configuration and both keys by reference;
    /// `crash_at` arms `MORPHEUS_CRASH_AT`.
    fn worker(&self, name: &str, crash_at: Option<&str>) -> WorkerProcess {
        self.env.spawn_worker_with(name, FAST_LEASES, |command| {
            command
                .env("MORPHEUS_CONFIG", &self.config)
                .env(MNEMONIC_ENV, DEMO_MNEMONIC)
                .env(EVM_KEY_ENV, USER_KEY);
            if let Some(point) = crash_at {
                command.env("MORPHEUS_CRASH_AT", point);
            }
        })
    }

    /// `morpheus fund … ARGS` with the configuration and the Akash key.
    fn fund(&self, args: &[&str]) -> CliOutput {
        let mut command = self.env.command();
        command
            .env("MORPHEUS_CONFIG", &self.config)
            .env(MNEMONIC_ENV, DEMO_MNEMONIC)
            .arg("fund")
            .args(args);
        CliOutput::from_command(&mut command)
    }

    /// Starts a fund run of `usdc` whole USDC; returns its id.
    fn start(&self, usdc: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "--usdc",
            usdc,
            "--dseq",
            &self.dseq,
            "--owner",
            &self.owner,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.fund(&args);
        assert!(out.status.success(), "morpheus fund: {}", out.stderr);
        let started: Value = serde_json::from_str(&out.stdout).expect("fund --json");
        started["run_id"].as_str().expect("a run id").to_owned()
    }

    fn rpc(&self, method: &str, params: Value) -> Value {
        self.anvil.rpc(method, params)
    }

    /// keccak256 of `text`, by anvil (`web3_sha3`).
    fn keccak(&self, text: &str) -> String {
        let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
        self.rpc("web3_sha3", json!([format!("0x{hex}")]))
            .as_str()
            .expect("a hash")
            .to_owned()
    }

    /// A uint256 view function of one address argument, `eth_call`ed.
    fn read_uint(&self, contract: &str, signature: &str, holder: &str) -> u128 {
        let selector = &self.keccak(signature)[..10];
        let data = format!("{selector}{:0>64}", holder.trim_start_matches("0x"));
        let result = self.rpc(
            "eth_call",
            json!([{"to": contract, "data": data}, "latest"]),
        );
        u128::from_str_radix(result.as_str().expect("hex").trim_start_matches("0x"), 16)
            .expect("a uint that fits u128")
    }

    /// Logs of `event` emitted by `contract` with `topic1` (an address) from `from_block`.
    fn logs(
        &self,
        contract: &str,
        event: &str,
        topic1: Option<&str>,
        from_block: u64,
    ) -> Vec<Value> {
        let mut topics = vec![json!(self.keccak(event))];
        if let Some(address) = topic1 {
            topics.push(json!(format!(
                "0x{:0>64}",
                address.trim_start_matches("0x")
            )));
        }
        let logs = self.rpc(
            "eth_getLogs",
            json!([{"address": contract, "topics": topics,
                    "fromBlock": format!("0x{from_block:x}"), "toBlock": "latest"}]),
        );
        logs.as_array().expect("logs").clone()
    }

    /// The user's USDC approvals for `spender` from `from_block`.
    fn approvals(&self, spender: &str, from_block: u64) -> usize {
        self.logs(
            &self.usdc,
            "Approval(address,address,uint256)",
            Some(USER),
            from_block,
        )
        .iter()
        .filter(|log| {
            log["topics"][2]
                .as_str()
                .is_some_and(|topic| topic.ends_with(&spender.to_lowercase()[2..]))
        })
        .count()
    }

    fn nonce(&self, block: &str) -> u64 {
        let count = self.rpc("eth_getTransactionCount", json!([USER, block]));
        u64::from_str_radix(count.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    fn ledger(&self) -> Value {
        self.akash.get_json("/simulator/ledger")
    }

    /// Deposits that landed in the world's deployment.
    fn deposits(&self) -> Vec<Value> {
        self.ledger()["deposits"]
            .as_array()
            .expect("deposits")
            .iter()
            .filter(|deposit| deposit["dseq"] == self.dseq.as_str())
            .cloned()
            .collect()
    }

    /// Everything deposited into the world's deployment (its escrow drains per block,
    /// so the deposits are what a test can compare exactly).
    fn deposited(&self) -> u128 {
        let ledger = self.ledger();
        let deployment = ledger["deployments"]
            .as_array()
            .expect("deployments")
            .iter()
            .find(|d| d["dseq"] == self.dseq.as_str())
            .unwrap_or_else(|| panic!("deployment {} in {ledger}", self.dseq))
            .clone();
        amount(&deployment["deposited"])
    }

    /// What every landed fund run of `AMOUNT` must have left on the chains, counted
    /// from `from_block`, with `runs` runs since then.
    /// Every transaction in a `fund` report is in the key audit (`morpheus keys audit`),
    /// under its chain, its key's reference and its signer, and the audit holds no key
    /// material.
    fn assert_audited(&self, report: &Value, why: &str) {
        let listed = self
            .env
            .cli_ok(&["keys", "audit", "--json", "--limit", "100000"]);
        assert!(
            !listed.contains(USER_KEY.trim_start_matches("0x"))
                && !listed.contains(DEMO_MNEMONIC.split(' ').next().unwrap()),
            "{why}: key material in the audit: {listed}"
        );
        let audit: Vec<Value> = serde_json::from_str(&listed).expect("keys audit --json");
        let evm: Vec<&str> = report["swap"]["approve_txs"]
            .as_array()
            .into_iter()
            .chain(report["swap"]["tx_hashes"].as_array())
            .flatten()
            .chain([&report["stake"]["approve_tx"], &report["stake"]["tx_hash"]])
            .filter_map(Value::as_str)
            .collect();
        assert!(evm.len() >= 2, "{why}: {report:#}");
        let deposit = report["deposit"]["tx_hash"].as_str().expect("deposit tx");
        let expected = evm
            .iter()
            .map(|tx| (*tx, "evm:", format!("hex key in ${EVM_KEY_ENV}"), USER))
            .chain([(
                deposit,
                "cosmos:",
                format!("mnemonic in ${MNEMONIC_ENV}"),
                self.owner.as_str(),
            )]);
        for (tx, chain, key, address) in expected {
            let found = audit
                .iter()
                .find(|record| {
                    record["tx_hash"]
                        .as_str()
                        .is_some_and(|hash| hash.eq_ignore_ascii_case(tx))
                })
                .unwrap_or_else(|| panic!("{why}: {tx} is not in the key audit: {listed}"));
            assert!(
                found["chain"].as_str().unwrap().starts_with(chain),
                "{why}: {found}"
            );
            assert_eq!(found["key_id"], key.as_str(), "{why}: {found}");
            assert!(
                found["address"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(address),
                "{why}: {found}"
            );
            assert!(found["run_id"].is_string(), "{why}: {found}");
            assert!(
                found["message_types"]
                    .as_array()
                    .is_some_and(|types| !types.is_empty()),
                "{why}: {found}"
            );
        }
    }

    fn assert_landed_once_each(
        &self,
        from_block: u64,
        runs: usize,
        deposits_before: usize,
        why: &str,
    ) {
        assert_eq!(
            self.approvals(&self.vault, from_block),
            runs,
            "{why}: one vault approval per run"
        );
        assert_eq!(
            self.approvals(&self.bridge, from_block),
            runs,
            "{why}: one bridge approval per run"
        );
        let staked = self.logs(
            &self.vault,
            "Staked(address,uint256)",
            Some(USER),
            from_block,
        );
        assert_eq!(staked.len(), runs, "{why}: one Staked per run: {staked:?}");
        let swaps = self.logs(
            &self.bridge,
            "SwapRequested(uint256,address,uint256,string,uint256)",
            None,
            from_block,
        );
        assert_eq!(
            swaps.len(),
            runs,
            "{why}: one SwapRequested per run: {swaps:?}"
        );
        let deposits = self.deposits();
        assert_eq!(
            deposits.len(),
            deposits_before + runs,
            "{why}: one deposit per run: {deposits:?}"
        );
        for deposit in &deposits[deposits_before..] {
            assert_eq!(
                amount(&deposit["amount"]),
                delivered(SWAP) - FEE_RESERVE,
                "{why}: {deposit}"
            );
        }
        let (mined, pending) = (self.nonce("latest"), self.nonce("pending"));
        assert_eq!(
            mined, pending,
            "{why}: a transaction of the user is stuck unmined"
        );
    }
}

/// `morpheus devnet skip` for the world's chains, listening on `addr`.
fn spawn_skip(
    anvil: &Anvil,
    akash: &DevnetProcess,
    bridge: &str,
    price_impact_pct: &str,
    addr: SocketAddr,
) -> DevnetProcess {
    DevnetProcess::spawn_on(
        "skip",
        addr,
        &[
            "--evm-rpc",
            &anvil.url,
            "--akash-rest",
            &format!("http://{}", akash.addr),
            "--bridge",
            bridge,
            "--price",
            "2.5",
            "--fee-bps",
            "30",
            "--price-impact-pct",
            price_impact_pct,
            "--poll-interval-ms",
            "100",
        ],
    )
}

fn amount(value: &Value) -> u128 {
    match value {
        Value::String(text) => text.parse().unwrap_or_else(|_| panic!("amount {text}")),
        Value::Number(number) => number.as_u64().expect("an integer") as u128,
        other => panic!("not an amount: {other}"),
    }
}

/// A run's `runs show` error, once it failed.
fn failed_with(world: &FundWorld, run: &str) -> String {
    let shown = world
        .env
        .wait_for_status(run, "failed", Duration::from_secs(90));
    shown["run"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn happy_path_lands_exactly_the_split(backend: Backend) {
    let world = FundWorld::new(backend);
    let _worker = world.worker("w1", None);
    // The CLI as a user runs it: whole USDC, the owner taken from [cosmos], --wait.
    let out = world.fund(&["--usdc", "100", "--dseq", &world.dseq, "--wait"]);
    assert!(
        out.status.success(),
        "fund --wait: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("funded 100 USDC from"),
        "{}",
        out.stdout
    );
    for leg in ["swap     done", "deposit  done", "stake    done"] {
        assert!(out.stdout.contains(leg), "{leg}: {}", out.stdout);
    }
    // Progress: the run's log lines were shown while it ran.
    assert!(
        out.stderr.contains(
            "split usdc_amount=100000000 stake_share_pct=60 stake=60000000 swap=40000000"
        ),
        "{}",
        out.stderr
    );
    world.assert_landed_once_each(0, 1, 0, "happy path");
    assert_eq!(
        world.read_uint(&world.usdc, "balanceOf(address)", USER),
        MINTED - AMOUNT
    );
    assert_eq!(
        world.read_uint(&world.vault, "stakedOf(address)", USER),
        STAKE
    );
    assert_eq!(
        world.read_uint(&world.usdc, "balanceOf(address)", &world.bridge),
        SWAP
    );
    assert_eq!(world.deposited(), delivered(SWAP) - FEE_RESERVE);
    // approve, approve, bridge, stake: four nonces, no gap.
    assert_eq!(world.nonce("latest"), 4);

    // The report holds every leg's transactions; a dry run sends nothing.
    let runs = world.env.list();
    let report = &runs[0]["output"];
    let shown = if report.is_null() {
        world.env.show(runs[0]["id"].as_str().unwrap())["run"]["output"].clone()
    } else {
        report.clone()
    };
    assert_eq!(
        shown["swap"]["uakt_received"],
        delivered(SWAP).to_string(),
        "{shown:#}"
    );
    assert_eq!(shown["stake"]["status"], "done");
    assert!(shown["stake"]["tx_hash"]
        .as_str()
        .is_some_and(|h| h.starts_with("0x")));
    world.assert_audited(&shown, "happy path");
    let dry = world.fund(&["--usdc", "10", "--dseq", &world.dseq, "--dry-run", "--wait"]);
    assert!(dry.status.success(), "{}", dry.stderr);
    assert!(dry.stdout.contains("DRY RUN"), "{}", dry.stdout);
    assert!(dry.stdout.contains("planned"), "{}", dry.stdout);
    assert_eq!(world.nonce("latest"), 4, "a dry run sent a transaction");
    assert_eq!(world.deposits().len(), 1, "a dry run deposited");
}

/// The named crash points: every leg boundary of every effect.
/// `MORPHEUS_FUND_CRASH_POINTS=fragment` keeps only the points containing it.
fn crash_points() -> Vec<String> {
    let only = std::env::var("MORPHEUS_FUND_CRASH_POINTS").unwrap_or_default();
    let mut points = Vec::new();
    for steps in [
        "/swap/approve/broadcast",
        "/swap/bridge/broadcast",
        "/stake/approve/broadcast",
        "/stake/stake/broadcast",
    ] {
        for point in ["before_send", "after_send", "after_receipt"] {
            points.push(format!("evm.broadcast.{point}:{steps}"));
        }
    }
    for point in ["before_send", "after_send", "after_confirm"] {
        points.push(format!("cosmos.broadcast.{point}:/deposit/broadcast"));
    }
    points.retain(|point| point.contains(&only));
    points
}

/// Extra random crashes: `MORPHEUS_FUND_CRASH_RUNS`, or 200 under `MORPHEUS_SOAK=1`.
fn random_crash_runs() -> usize {
    if let Ok(runs) = std::env::var("MORPHEUS_FUND_CRASH_RUNS") {
        return runs.parse().expect("MORPHEUS_FUND_CRASH_RUNS is a count");
    }
    if std::env::var("MORPHEUS_SOAK").is_ok_and(|soak| soak == "1") {
        200
    } else {
        0
    }
}

#[test]
fn a_crash_at_any_leg_boundary_never_repeats_or_loses_an_effect() {
    let world = FundWorld::new(Backend::Sqlite);
    let points = crash_points();
    let random_runs = random_crash_runs();
    let mut rng = rand::thread_rng();
    let total = points.len() + random_runs;
    let started_at = Instant::now();
    for index in 0..total {
        let from_block = world.anvil.block_number() + 1;
        let deposits_before = world.deposits().len();
        let nonce_before = world.nonce("latest");
        let (crash, timed_kill) = match points.get(index) {
            Some(point) => (Some(point.clone()), None),
            // Random: a named point, or a SIGKILL at a random moment.
            None if rng.gen_bool(0.5) => {
                (Some(points[rng.gen_range(0..points.len())].clone()), None)
            }
            None => (None, Some(Duration::from_millis(rng.gen_range(0..2_500)))),
        };
        let why = crash
            .clone()
            .unwrap_or_else(|| format!("SIGKILL after {timed_kill:?}"));
        let mut doomed = world.worker(&format!("crash-{index}"), crash.as_deref());
        let run = world.start("100", &["--idempotency-key", &format!("crash-{index}")]);
        match timed_kill {
            Some(delay) => {
                std::thread::sleep(delay);
                doomed.kill();
            }
            None => {
                let deadline = Instant::now() + Duration::from_secs(90);
                while doomed.try_exit().is_none() {
                    let shown = world.env.show(&run);
                    let status = shown["run"]["status"].as_str().unwrap_or_default();
                    if ["completed", "failed", "cancelled"].contains(&status)
                        || Instant::now() > deadline
                    {
                        panic!("{why}: the run is {status} and the worker did not reach the crash point: {shown:#}");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let point = crash.as_deref().unwrap().split(':').next().unwrap();
                assert!(
                    doomed
                        .stderr()
                        .contains(&format!("crash point {point} reached")),
                    "{why}: the worker died elsewhere: {}",
                    doomed.stderr()
                );
            }
        }
        let mut survivor = world.worker(&format!("resume-{index}"), None);
        world
            .env
            .wait_for_status(&run, "completed", Duration::from_secs(120));
        survivor.kill();
        world.assert_landed_once_each(from_block, 1, deposits_before, &why);
        world.assert_audited(&world.env.show(&run)["run"]["output"], &why);
        assert_eq!(
            world.nonce("latest"),
            nonce_before + 4,
            "{why}: nonces with a gap or extra transactions"
        );
    }
    eprintln!(
        "crash matrix: {total} crash points run ({} at named leg boundaries, {random_runs} random) in {:?}",
        points.len(),
        started_at.elapsed()
    );
    assert_eq!(
        world.read_uint(&world.vault, "stakedOf(address)", USER),
        STAKE * total as u128
    );
}

fn two_runs_from_one_signer_both_land(backend: Backend) {
    let world = FundWorld::new(backend);
    let _first = world.worker("w1", None);
    let _second = world.worker("w2", None);
    let runs: Vec<String> = (0..2)
        .map(|i| world.start("100", &["--idempotency-key", &format!("concurrent-{i}")]))
        .collect();
    for run in &runs {
        world
            .env
            .wait_for_status(run, "completed", Duration::from_secs(120));
    }
    let staked = world.logs(&world.vault, "Staked(address,uint256)", Some(USER), 0);
    assert_eq!(staked.len(), 2, "{staked:?}");
    assert_eq!(
        world.read_uint(&world.vault, "stakedOf(address)", USER),
        2 * STAKE
    );
    let swaps = world.logs(
        &world.bridge,
        "SwapRequested(uint256,address,uint256,string,uint256)",
        None,
        0,
    );
    assert_eq!(swaps.len(), 2);
    assert_eq!(world.deposits().len(), 2);
    // Every transaction of the user mined with its own nonce: the mined count is the
    // number of transactions, none is stuck, and no transaction hash repeats.
    let (mined, pending) = (world.nonce("latest"), world.nonce("pending"));
    assert_eq!(mined, pending);
    let mut hashes = Vec::new();
    for run in &runs {
        let output = &world.env.show(run)["run"]["output"];
        hashes.extend(
            output["swap"]["approve_txs"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        hashes.extend(
            output["swap"]["tx_hashes"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        hashes.push(output["stake"]["tx_hash"].clone());
        if !output["stake"]["approve_tx"].is_null() {
            hashes.push(output["stake"]["approve_tx"].clone());
        }
    }
    let count = hashes.len();
    hashes.sort_by_key(|hash| hash.to_string());
    hashes.dedup();
    assert_eq!(hashes.len(), count, "a transaction counted twice");
    assert!(mined as usize >= count, "{mined} mined < {count} reported");
}

#[test]
fn too_little_usdc_is_a_refusal_that_sends_nothing() {
    let world = FundWorld::new(Backend::Sqlite);
    let _worker = world.worker("w1", None);
    let run = world.start("2000000", &[]);
    let error = failed_with(&world, &run);
    assert!(
        error.contains(&format!("refused: USDC balance {MINTED}")),
        "{error}"
    );
    assert!(error.contains("nothing was sent"), "{error}");
    assert_eq!(world.nonce("latest"), 0);
    assert!(world.deposits().is_empty());
    // Bad input is refused before anything is written.
    for (args, expected) in [
        (
            vec![
                "--usdc",
                "1.0000001",
                "--dseq",
                "1",
                "--owner",
                &world.owner,
            ],
            "more than 6 decimals",
        ),
        (
            vec!["--usdc", "abc", "--dseq", "1", "--owner", &world.owner],
            "is not an amount of USDC",
        ),
        (
            vec!["--usdc", "1", "--dseq", "x1", "--owner", &world.owner],
            "dseq:",
        ),
        (
            vec!["--usdc", "1", "--dseq", "1", "--owner", "cosmos1zzz"],
            "owner:",
        ),
        (
            vec![
                "--usdc",
                "1",
                "--dseq",
                "1",
                "--owner",
                &world.owner,
                "--slippage",
                "80",
            ],
            "slippage_pct:",
        ),
    ] {
        let out = world.fund(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "one line: {}",
            out.stderr
        );
    }
    assert_eq!(world.env.list().len(), 1, "a refused input started a run");
}

#[test]
fn a_closed_or_unknown_deployment_is_refused_before_anything_is_sent() {
    let world = FundWorld::new(Backend::Sqlite);
    let _worker = world.worker("w1", None);
    let out = world.fund(&[
        "--usdc",
        "10",
        "--dseq",
        "999999",
        "--owner",
        &world.owner,
        "--json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let run: Value = serde_json::from_str(&out.stdout).unwrap();
    let error = failed_with(&world, run["run_id"].as_str().unwrap());
    assert!(
        error.contains("deployment 999999") && error.contains("not open"),
        "{error}"
    );
    assert_eq!(world.nonce("latest"), 0);
}

#[test]
fn a_wrong_chain_id_sends_nothing() {
    let world = FundWorld::with(
        Backend::Sqlite,
        Setup {
            evm_chain_id: 8453,
            ..Setup::default()
        },
    );
    let _worker = world.worker("w1", None);
    let run = world.start("100", &[]);
    let error = failed_with(&world, &run);
    assert!(error.contains("8453") && error.contains("31337"), "{error}");
    assert_eq!(world.nonce("latest"), 0);
    assert!(world.deposits().is_empty());
}

#[test]
fn a_route_over_the_slippage_bound_stakes_nothing() {
    let world = FundWorld::with(
        Backend::Sqlite,
        Setup {
            price_impact_pct: "5",
            ..Setup::default()
        },
    );
    let _worker = world.worker("w1", None);
    let run = world.start("100", &["--slippage", "1"]);
    let error = failed_with(&world, &run);
    assert!(error.starts_with("swap leg failed"), "{error}");
    assert!(
        error.contains("exceeds the slippage tolerance 1 %"),
        "{error}"
    );
    assert!(error.contains("Done: nothing"), "{error}");
    assert_eq!(world.nonce("latest"), 0, "something was sent");
    assert_eq!(world.read_uint(&world.vault, "stakedOf(address)", USER), 0);
    assert_eq!(
        world.read_uint(&world.usdc, "balanceOf(address)", USER),
        MINTED
    );
}

#[test]
fn a_paused_vault_fails_the_stake_leg_and_resume_finishes_without_repeating() {
    let world = FundWorld::new(Backend::Sqlite);
    let pause = |function: &str| {
        let selector = &world.keccak(function)[..10];
        world.rpc(
            "eth_sendTransaction",
            json!([{"from": DEPLOYER, "to": world.vault, "data": selector}]),
        );
    };
    pause("pause()");
    let _worker = world.worker("w1", None);
    let run = world.start("100", &[]);
    let error = failed_with(&world, &run);
    assert!(error.starts_with("stake leg failed"), "{error}");
    assert!(
        error.contains("staking paused"),
        "the revert reason: {error}"
    );
    assert!(
        error.contains("Done: swapped 40000000 USDC base units"),
        "{error}"
    );
    assert!(error.contains("deposited"), "{error}");
    assert!(error.contains("Not done: stake"), "{error}");
    assert_eq!(world.deposits().len(), 1);
    pause("unpause()");
    let resumed = world.env.cli(&["runs", "resume", &run]);
    assert!(resumed.status.success(), "{}", resumed.stderr);
    world
        .env
        .wait_for_status(&run, "completed", Duration::from_secs(90));
    world.assert_landed_once_each(0, 1, 0, "resumed after a paused vault");
    assert_eq!(
        world.read_uint(&world.vault, "stakedOf(address)", USER),
        STAKE
    );
}

#[test]
fn a_route_api_that_is_down_is_retried_until_it_is_back() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut world = FundWorld::with(
        Backend::Sqlite,
        Setup {
            route_api: Some(format!("http://{addr}")),
            start_skip: false,
            ..Setup::default()
        },
    );
    let _worker = world.worker("w1", None);
    let run = world.start("100", &[]);
    // The first attempts find nothing listening; each retry is at a persisted time.
    wait_for(
        "a failed attempt at the route",
        Duration::from_secs(60),
        || {
            let shown = world.env.show(&run);
            shown["steps"]
                .as_array()?
                .iter()
                .find(|step| {
                    step["step_key"] == "swap/route"
                        && step["attempts"].as_u64() >= Some(1)
                        && !step["error"].is_null()
                })
                .cloned()
        },
    );
    world.skip = Some(spawn_skip(
        &world.anvil,
        &world.akash,
        &world.bridge,
        "0.5",
        addr,
    ));
    world
        .env
        .wait_for_status(&run, "completed", Duration::from_secs(120));
    world.assert_landed_once_each(0, 1, 0, "after the route API came back");
}

/// A TCP forwarder to another address that can be taken down (connections refused,
/// open ones cut) and brought back on the same port: an RPC node going away.
struct Forwarder {
    addr: SocketAddr,
    target: String,
    running: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Forwarder {
    fn new(target: &str) -> Self {
        Self {
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            target: target.to_owned(),
            running: None,
        }
    }

    fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("bind the forwarder's port again");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, target) = (stop.clone(), self.target.clone());
        let handle = std::thread::spawn(move || {
            let mut open = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server.try_clone().unwrap(), client.try_clone().unwrap()),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(Shutdown::Write);
                            });
                        }
                        open.push((client, server));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for (client, server) in open {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
        });
        self.running = Some((stop, handle));
    }

    fn down(&mut self) {
        if let Some((stop, handle)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().unwrap();
        }
    }
}

#[test]
fn an_evm_node_that_goes_away_is_retried_at_persisted_times_until_it_is_back() {
    // The configuration names the forwarder, which is down until the run has failed an
    // attempt; it forwards to anvil once the world (and anvil) exists.
    let mut forwarder = Forwarder::new("127.0.0.1:1");
    let world = FundWorld::with(
        Backend::Sqlite,
        Setup {
            evm_rpc: Some(format!("http://{}", forwarder.addr)),
            ..Setup::default()
        },
    );
    forwarder.target = world.anvil.url.trim_start_matches("http://").to_owned();
    let _worker = world.worker("w1", None);
    let run = world.start("100", &[]);
    let failed_attempt = wait_for(
        "a failed attempt at the EVM node",
        Duration::from_secs(60),
        || {
            let shown = world.env.show(&run);
            shown["steps"]
                .as_array()?
                .iter()
                .find(|step| step["step_key"] == "evm-chain" && !step["error"].is_null())
                .cloned()
        },
    );
    assert_eq!(failed_attempt["status"], "retrying", "{failed_attempt:#}");
    forwarder.up();
    world
        .env
        .wait_for_status(&run, "completed", Duration::from_secs(120));
    world.assert_landed_once_each(0, 1, 0, "after the EVM node came back");
    forwarder.down();
}

/// What a fake route API answers: `(path prefix, JSON body)` pairs, HTTP 200 each.
type FakeRoutes = Vec<(&'static str, Value)>;

/// A fake route API answering each request with the body of the first route whose
/// prefix its path starts with.
fn serve_route_api(routes: FakeRoutes) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let answer = routes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix))
                .map(|(_, answer)| answer.to_string())
                .unwrap_or_else(|| "{\"message\":\"not found\"}".into());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    addr
}

#[test]
fn malformed_route_answers_are_refused_and_send_nothing() {
    let good_route = json!({"estimated_amount_out": "99700000", "txs_required": 1,
                            "operations": [{"swap": {}}]});
    let attacker = "0x000000000000000000000000000000000000dead";
    let cases: Vec<(&str, FakeRoutes, &str)> = vec![
        (
            "not an amount",
            vec![(
                "/v2/fungible/route",
                json!({"estimated_amount_out": "lots", "txs_required": 1, "operations": [{}]}),
            )],
            "route API /v2/fungible/route: malformed answer: 'estimated_amount_out'",
        ),
        (
            "no operations",
            vec![(
                "/v2/fungible/route",
                json!({"estimated_amount_out": "5", "txs_required": 1}),
            )],
            "'operations' is missing or empty",
        ),
        (
            "an approval for a third party",
            vec![
                ("/v2/fungible/route", good_route.clone()),
                (
                    "/v2/fungible/msgs",
                    json!({"txs": [{"evm_tx": {"chain_id": "31337", "to": "0x0000000000000000000000000000000000000001",
                "value": "0", "data": "a9059cbb00", "required_erc20_approvals": [{"token_contract": "0x0000000000000000000000000000000000000002", "spender": attacker, "amount": "40000000"}]}}]}),
                ),
            ],
            "is not the called contract",
        ),
        (
            "ETH sent along",
            vec![
                ("/v2/fungible/route", good_route.clone()),
                (
                    "/v2/fungible/msgs",
                    json!({"txs": [{"evm_tx": {"chain_id": "31337", "to": attacker, "value": "1000", "data": "a9059cbb00"}}]}),
                ),
            ],
            "this flow sends no ETH",
        ),
        (
            "another chain",
            vec![
                ("/v2/fungible/route", good_route.clone()),
                (
                    "/v2/fungible/msgs",
                    json!({"txs": [{"evm_tx": {"chain_id": "1", "to": attacker, "value": "0", "data": "a9059cbb00"}}]}),
                ),
            ],
            "is not the source chain 31337",
        ),
    ];
    for (name, routes, expected) in cases {
        let api = serve_route_api(routes);
        let world = FundWorld::with(
            Backend::Sqlite,
            Setup {
                route_api: Some(format!("http://{api}")),
                start_skip: false,
                ..Setup::default()
            },
        );
        let _worker = world.worker("w1", None);
        let run = world.start("100", &[]);
        let error = failed_with(&world, &run);
        assert!(error.contains(expected), "{name}: {error}");
        assert_eq!(world.nonce("latest"), 0, "{name}: something was sent");
    }
}

both_backends! {
    happy_path_lands_exactly_the_split => happy_path_lands_exactly_the_split,
    two_runs_from_one_signer_both_land => two_runs_from_one_signer_both_land,
}
