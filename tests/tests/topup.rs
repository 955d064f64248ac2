//! The gas station end to end: `morpheus up` (the real binary, SQLite and Postgres) runs
//! `topup.escrow` through the `cosmos` executor against `morpheus devnet akash` (the Akash
//! devnet **simulator**, a separate process that verifies signatures, sequences and funds
//! and drains escrow per block).
//!
//! The simulator runs with `--block-time-ms 0`: blocks advance only when a test posts
//! them, so a test owns the chain's clock. A simulated day is ~14,000 blocks at 6.174 s,
//! posted in steps of 58 blocks (6 simulated minutes) every 100 ms: about one simulated
//! hour per wall-clock second, while the schedule sweeps every second.
//!
//! - a draining deployment is topped up once per due tick and never runs dry over a
//!   simulated day; a healthy one is left alone; closed ones are not touched;
//! - the daily cap holds across runs (two workers, one schedule); a wallet that cannot
//!   pay above its headroom is a recorded skip and a warning, never a partial deposit; a
//!   dry run logs its decisions, sends nothing and reserves no cap;
//! - SIGKILL after the broadcast, before the confirmation is recorded: the deposit lands
//!   exactly once, whether it lands while no worker runs or is still in the mempool when
//!   the next worker re-broadcasts the journaled bytes;
//! - two sweeps of one wallet racing for its sequence: the loser waits until its signed
//!   bytes are provably dead, signs again, and each deposit lands once;
//! - bad chain answers (HTTP 500, malformed JSON, a rejected transaction, a wrong chain
//!   id): retried per policy, then the run fails with a clear error; nothing is
//!   deposited twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use morpheus_tests::devnet::{http_request, DevnetProcess, DEMO_MNEMONIC};
use morpheus_tests::{both_backends, wait_for, Backend, TestEnv, WorkerProcess, FAST_LEASES};
use serde_json::{json, Value};

/// The variable the workers read the simulator's public demo mnemonic from; the key is
/// never in a file or the database.
const MNEMONIC_ENV: &str = "MORPHEUS_DEMO_MNEMONIC";
const CHAIN_ID: &str = "morpheus-devnet-1";

/// The policy under test: top up when the escrow runs dry within 8 h, to 16 h of runway.
const LOOK_AHEAD_H: f64 = 8.0;
const TARGET_RUNWAY_H: f64 = 16.0;
/// The same in blocks of 6.174 s (rounded up, as the workflow does).
const LOOK_AHEAD_BLOCKS: u64 = 4_665;
const TARGET_RUNWAY_BLOCKS: u64 = 9_330;
/// One simulated day: 86,400 s / 6.174 s.
const DAY_BLOCKS: u64 = 13_994;
/// Blocks posted per 100 ms of wall-clock time: 6 simulated minutes.
const BLOCKS_PER_STEP: u64 = 58;

/// One environment: a fresh database, the simulator seeded with the demo wallet (500 AKT)
/// and its deployments (1001 healthy, 1002 draining at 100 uakt/block, 1003 closed), and
/// a `morpheus.toml` whose `[cosmos]` section points at the simulator.
struct GasStation {
    env: TestEnv,
    devnet: DevnetProcess,
    owner: String,
    config: PathBuf,
}

impl GasStation {
    fn new(backend: Backend) -> Self {
        let env = TestEnv::new(backend);
        let mut devnet = DevnetProcess::spawn_akash(&["--seed-demo", "--block-time-ms", "0"]);
        let owner = devnet.demo_wallet();
        let mut station = Self {
            env,
            devnet,
            owner,
            config: PathBuf::new(),
        };
        station.config = station.write_config("morpheus.toml", CHAIN_ID, "");
        station
    }

    /// Writes a configuration for the simulator, signing for `chain_id`, with `extra`
    /// lines appended to its `[cosmos]` section.
    fn write_config(&self, name: &str, chain_id: &str, extra: &str) -> PathBuf {
        let path = self.env.path(name);
        let text = format!(
            "[cosmos]\nrest_url = \"http://{}\"\nchain_id = \"{chain_id}\"\n\
             key = {{ mnemonic_env = \"{MNEMONIC_ENV}\" }}\n\
             timeouts = {{ confirm_poll = \"100ms\", confirm = \"5s\" }}\n{extra}",
            self.devnet.addr
        );
        std::fs::write(&path, text).expect("write morpheus.toml");
        path
    }

    /// `morpheus up` with fast leases, the `[cosmos]` executor and the demo key.
    fn worker(&self, name: &str) -> WorkerProcess {
        self.worker_with_config(name, &self.config)
    }

    fn worker_with_config(&self, name: &str, config: &Path) -> WorkerProcess {
        self.env.spawn_worker_with(name, FAST_LEASES, |command| {
            command
                .env("MORPHEUS_CONFIG", config)
                .env(MNEMONIC_ENV, DEMO_MNEMONIC);
        })
    }

    /// The policy under test for the demo owner, with `overrides` applied.
    fn input(&self, overrides: Value) -> Value {
        let mut input = json!({
            "owner": self.owner,
            "dseqs": null,
            "look_ahead_h": LOOK_AHEAD_H,
            "target_runway_h": TARGET_RUNWAY_H,
            "max_per_deposit": "5000000uakt",
            "daily_cap": "50000000uakt",
            "wallet_headroom": "1000000uakt",
            "cooldown_min": 0,
            "dry_run": false,
        });
        for (key, value) in overrides.as_object().expect("overrides are an object") {
            input[key] = value.clone();
        }
        input
    }

    /// `morpheus start topup.escrow --input INPUT`: the run id.
    fn start(&self, input: &Value) -> String {
        let started = self.env.cli_json(&[
            "start",
            "topup.escrow",
            "--input",
            &input.to_string(),
            "--json",
        ]);
        started["run_id"].as_str().expect("a run id").to_owned()
    }

    fn get(&self, path: &str) -> Value {
        self.devnet.get_json(path)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let response = self.devnet.post(path, &body);
        assert!(
            (200..300).contains(&response.status),
            "POST {path}: {} {}",
            response.status,
            response.body
        );
        response.json()
    }

    /// `GET /simulator/ledger`: height, mempool size, deposits, deployments, accounts.
    fn ledger(&self) -> Value {
        self.get("/simulator/ledger")
    }

    /// The demo wallet's account in a ledger (`address`, `sequence`, `balances`).
    fn wallet(&self, ledger: &Value) -> Value {
        ledger["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .find(|account| account["address"] == self.owner.as_str())
            .expect("the demo wallet")
            .clone()
    }

    /// Produces `count` blocks; returns the new height.
    fn blocks(&self, count: u64) -> u64 {
        self.post("/simulator/blocks", json!({"count": count}))["height"]
            .as_u64()
            .expect("a height")
    }

    /// Creates a deployment of the demo owner; returns its dseq.
    fn add_deployment(&self, escrow: u128, lease_prices: &[u128]) -> String {
        let prices: Vec<String> = lease_prices.iter().map(u128::to_string).collect();
        let created = self.post(
            "/simulator/deployments",
            json!({"owner": self.owner, "escrow": escrow.to_string(), "lease_prices": prices}),
        );
        created["deployment"]["deployment"]["id"]["dseq"]
            .as_str()
            .expect("a dseq")
            .to_owned()
    }

    /// The next `count` chain requests to `path_prefix` (by `method`) fail as `kind`.
    fn arm_fault(&self, path_prefix: &str, method: &str, kind: &str, count: u32) {
        self.post(
            "/simulator/faults",
            json!({"path_prefix": path_prefix, "method": method, "kind": kind, "count": count}),
        );
    }

    fn clear_faults(&self) {
        http_request(self.devnet.addr, "DELETE", "/simulator/faults", None)
            .expect("DELETE /simulator/faults");
    }
}

/// The ledger's entry for one deployment.
fn chain_deployment(ledger: &Value, dseq: &str) -> Value {
    ledger["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .find(|d| d["dseq"] == dseq)
        .unwrap_or_else(|| panic!("no deployment {dseq} in the simulator's ledger: {ledger}"))
        .clone()
}

/// The deposits that landed in one deployment, in block order.
fn chain_deposits(ledger: &Value, dseq: &str) -> Vec<Value> {
    ledger["deposits"]
        .as_array()
        .expect("deposits")
        .iter()
        .filter(|d| d["dseq"] == dseq)
        .cloned()
        .collect()
}

fn amount(value: &Value) -> u128 {
    match value {
        Value::String(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("not an amount: {value}")),
        Value::Number(number) => number.as_u64().expect("a whole amount") as u128,
        other => panic!("not an amount: {other}"),
    }
}

/// The report for one deployment in a run's output.
fn report<'a>(output: &'a Value, dseq: &str) -> Option<&'a Value> {
    output["deployments"]
        .as_array()?
        .iter()
        .find(|report| report["dseq"] == dseq)
}

/// The schedule's runs, oldest first.
fn schedule_runs(env: &TestEnv, name: &str) -> Vec<Value> {
    let mut runs = env.schedule_runs(name);
    runs.sort_by(|a, b| {
        a["created_at"]
            .as_str()
            .cmp(&b["created_at"].as_str())
            .then(a["id"].as_str().cmp(&b["id"].as_str()))
    });
    runs
}

/// One line per run: status, then the decision for `dseq` or the error.
fn summary(runs: &[Value], dseq: &str) -> String {
    runs.iter()
        .map(|run| {
            let decided = report(&run["output"], dseq).map(Value::to_string);
            format!(
                "{} {} {}",
                run["status"],
                decided.unwrap_or_default(),
                run["error"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_terminal(run: &Value) -> bool {
    ["completed", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or_default())
}

/// Pauses the schedule, then keeps the chain moving until every run it started has
/// ended; returns them, oldest first.
fn drain_schedule(station: &GasStation, name: &str) -> Vec<Value> {
    station.env.cli_ok(&["schedules", "pause", name]);
    wait_for(
        &format!("every run of schedule {name} to end"),
        Duration::from_secs(90),
        || {
            station.blocks(1);
            let runs = schedule_runs(&station.env, name);
            runs.iter().all(is_terminal).then_some(runs)
        },
    )
}

/// A step of a run (`runs show --json`), if it has been journaled.
fn step(shown: &Value, key: &str) -> Option<Value> {
    shown["steps"]
        .as_array()?
        .iter()
        .find(|step| step["step_key"] == key)
        .cloned()
}

/// Waits (up to 60 s) until one transaction waits in the simulator's mempool.
fn wait_for_mempool(station: &GasStation, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        (station.ledger()["mempool"] == 1).then_some(())
    });
}

/// The wallet sent exactly `count` transactions, and the chain holds exactly those.
fn assert_transactions(station: &GasStation, count: u64) {
    let ledger = station.ledger();
    let wallet = station.wallet(&ledger);
    assert_eq!(
        wallet["sequence"], count,
        "{count} transactions in all: {wallet}"
    );
    assert_eq!(ledger["txs"], count, "{ledger}");
}

/// Waits for a run to end with `status`, producing a block per poll so broadcasts
/// confirm; returns its `runs show` document.
fn wait_for_end(station: &GasStation, run: &str, status: &str, timeout: Duration) -> Value {
    let shown = wait_for(&format!("run {run} to end"), timeout, || {
        station.blocks(1);
        let shown = station.env.show(run);
        is_terminal(&shown["run"]).then_some(shown)
    });
    assert_eq!(
        shown["run"]["status"], status,
        "run {run} ended otherwise: {shown:#}"
    );
    shown
}

fn a_draining_deployment_is_topped_up_once_per_due_tick_and_never_runs_dry_over_a_day(
    backend: Backend,
) {
    let station = GasStation::new(backend);
    let input = station.input(json!({}));
    station.env.cli_ok(&[
        "schedules",
        "add",
        "gas-station",
        "--workflow",
        "topup.escrow",
        "--input",
        &input.to_string(),
        "--every",
        "1s",
        "--overlap",
        "skip",
    ]);
    let _worker = station.worker("w1");

    // dseq 1002 starts with 1,200 blocks of escrow (under two hours): due at once. The
    // simulated day starts when that first top-up has landed.
    wait_for(
        "the first top-up of dseq 1002",
        Duration::from_secs(60),
        || {
            station.blocks(1);
            (!chain_deposits(&station.ledger(), "1002").is_empty()).then_some(())
        },
    );
    let day_start = station.ledger()["height"].as_u64().expect("height");
    let mut height = day_start;
    let mut lowest_runway = u128::MAX;
    while height < day_start + DAY_BLOCKS {
        height = station.blocks(BLOCKS_PER_STEP);
        let draining = chain_deployment(&station.ledger(), "1002");
        assert_eq!(
            draining["state"],
            "active",
            "dseq 1002 ran dry at height {height}, {} blocks into the simulated day: {draining}",
            height - day_start
        );
        lowest_runway = lowest_runway.min(amount(&draining["escrow"]) / 100);
        std::thread::sleep(Duration::from_millis(100));
    }
    let runs = drain_schedule(&station, "gas-station");
    let ledger = station.ledger();

    let mut sweeps = 0;
    let mut reported = Vec::new();
    let mut previous_deposited = false;
    for run in &runs {
        assert_eq!(
            run["status"], "completed",
            "a sweep did not complete: {run:#}"
        );
        let output = &run["output"];
        let sweep_height = output["height"].as_u64().expect("report height");
        sweeps += 1;

        let healthy = report(output, "1001").expect("a report for healthy dseq 1001");
        assert_eq!(
            (&healthy["decision"], &healthy["reason"]),
            (&json!("skip"), &json!("healthy")),
            "{healthy}"
        );
        assert!(
            report(output, "1003").is_none(),
            "closed dseq 1003 is not an open deployment: {output}"
        );

        let draining = report(output, "1002").expect("a report for draining dseq 1002");
        let close = draining["predicted_close"]
            .as_u64()
            .expect("a close height");
        let due = close <= sweep_height + LOOK_AHEAD_BLOCKS;
        let deposited = draining["decision"] == "deposit";
        assert_eq!(
            deposited, due,
            "a sweep at height {sweep_height} (close {close}) decided wrongly: {draining}"
        );
        if deposited {
            assert!(
                !previous_deposited,
                "two sweeps in a row topped up dseq 1002: {draining}"
            );
            let funds = amount(&draining["funds"]);
            assert_eq!(
                amount(&draining["amount"]),
                100 * TARGET_RUNWAY_BLOCKS as u128 - funds,
                "a deposit tops up to exactly the target runway: {draining}"
            );
            let tx = draining["tx_hash"].as_str().expect("a deposit has its tx");
            reported.push((tx.to_owned(), amount(&draining["amount"])));
        } else {
            assert_eq!(draining["reason"], "healthy", "{draining}");
        }
        previous_deposited = deposited;
    }

    // Every decided deposit landed exactly once, and nothing else did.
    let landed: Vec<(String, u128)> = chain_deposits(&ledger, "1002")
        .iter()
        .map(|d| {
            (
                d["tx_hash"].as_str().unwrap().to_owned(),
                amount(&d["amount"]),
            )
        })
        .collect();
    assert_eq!(
        landed, reported,
        "the chain's deposits are the reported ones"
    );
    assert!(
        reported.len() >= 3,
        "a day with an 8 h look-ahead and 16 h runway needs at least 3 top-ups: {reported:?}"
    );
    assert!(
        sweeps > reported.len() * 3,
        "most sweeps found nothing due ({sweeps} sweeps)"
    );
    assert_eq!(chain_deployment(&ledger, "1002")["state"], "active");
    assert_eq!(chain_deployment(&ledger, "1001")["deposit_count"], 0);
    assert_eq!(chain_deployment(&ledger, "1003")["deposit_count"], 0);
    eprintln!(
        "simulated_day blocks={} sweeps={sweeps} deposits={} lowest_runway_blocks={lowest_runway}",
        height - day_start,
        reported.len()
    );
}

fn the_daily_cap_holds_across_runs(backend: Backend) {
    let station = GasStation::new(backend);
    // 1,000 uakt a block: 16 h of runway would take 9.33 AKT, far above the cap. Capped,
    // the escrow stays under the 8 h look-ahead (4.665 AKT), so every later sweep finds it
    // due and the cap used up.
    let hungry = station.add_deployment(60_000, &[1_000]);
    let max_per_deposit: u128 = 1_500_000;
    let daily_cap: u128 = 4_000_000;
    let input = station.input(json!({
        "dseqs": [hungry],
        "max_per_deposit": format!("{max_per_deposit}uakt"),
        "daily_cap": format!("{daily_cap}uakt"),
    }));
    station.env.cli_ok(&[
        "schedules",
        "add",
        "capped",
        "--workflow",
        "topup.escrow",
        "--input",
        &input.to_string(),
        "--every",
        "1s",
    ]);
    // Two schedulers and workers on one database: the cap is counted in it, not in a process.
    let _a = station.worker("a");
    let _b = station.worker("b");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let runs = schedule_runs(&station.env, "capped");
        // The chain's clock starts once the schedule has fired: on a loaded machine the
        // workers may take seconds to start, and 60 blocks before the first sweep would
        // drain the escrow before its deposit. (Blocks must go on once a sweep runs:
        // its deposit waits for one.)
        if !runs.is_empty() {
            station.blocks(1);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        let capped = runs
            .iter()
            .filter(|run| {
                report(&run["output"], &hungry).is_some_and(|r| r["reason"] == "daily_cap_reached")
            })
            .count();
        if capped >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no two sweeps found the cap used up in 90 s; sweeps:\n{}\nchain: {}",
            summary(&runs, &hungry),
            chain_deployment(&station.ledger(), &hungry)
        );
    }
    let runs = drain_schedule(&station, "capped");
    let ledger = station.ledger();

    let landed: Vec<u128> = chain_deposits(&ledger, &hungry)
        .iter()
        .map(|d| amount(&d["amount"]))
        .collect();
    assert_eq!(
        landed,
        vec![
            max_per_deposit,
            max_per_deposit,
            daily_cap - 2 * max_per_deposit
        ],
        "two full deposits, then what the cap leaves"
    );
    let mut cap_reached = false;
    for run in &runs {
        assert_eq!(run["status"], "completed", "{run:#}");
        let decided = report(&run["output"], &hungry).expect("a report");
        if cap_reached {
            assert_eq!(
                (&decided["decision"], &decided["reason"]),
                (&json!("skip"), &json!("daily_cap_reached")),
                "once the cap is used up no sweep deposits: {decided}"
            );
        }
        if decided["reason"] == "daily_cap_reached" {
            cap_reached = true;
            let id = run["id"].as_str().unwrap();
            let warned =
                station
                    .env
                    .cli_ok(&["logs", id, "--level", "warn", "--grep", "daily cap reached"]);
            assert!(
                warned.contains(&format!("dseq={hungry}"))
                    && warned.contains("decision=skip reason=\"daily cap reached\""),
                "the skip is a warning with its numbers: {warned}"
            );
        }
    }
    assert!(cap_reached);

    // A wallet that cannot pay without dipping under its headroom: a recorded decision
    // and a warning, not a crash and never a partial deposit.
    let wallet = amount(&station.wallet(&ledger)["balances"][0]["amount"]);
    let poor = station.add_deployment(10_000, &[100]);
    let run = station.start(&station.input(json!({
        "dseqs": [poor],
        "wallet_headroom": format!("{}uakt", wallet - 1_000),
    })));
    let shown = wait_for_end(&station, &run, "completed", Duration::from_secs(60));
    let decided = report(&shown["run"]["output"], &poor).expect("a report");
    assert_eq!(
        (&decided["decision"], &decided["reason"]),
        (&json!("skip"), &json!("insufficient_balance")),
        "{decided}"
    );
    let warned = station.env.cli_ok(&["logs", &run, "--level", "warn"]);
    assert!(
        warned.contains(&format!("dseq={poor}"))
            && warned.contains("reason=\"insufficient balance\""),
        "{warned}"
    );
    assert!(chain_deposits(&station.ledger(), &poor).is_empty());

    // A dry run decides and logs the deposit, sends nothing and reserves none of the cap:
    // a real sweep whose cap leaves room for exactly that deposit still makes it.
    let dry = station.start(&station.input(json!({"dseqs": [poor], "dry_run": true})));
    let shown = wait_for_end(&station, &dry, "completed", Duration::from_secs(60));
    let decided = report(&shown["run"]["output"], &poor).expect("a report");
    assert_eq!(decided["decision"], "deposit", "{decided}");
    assert_eq!(decided["tx_hash"], Value::Null, "{decided}");
    let planned = amount(&decided["amount"]);
    let logged = station.env.cli_ok(&["logs", &dry]);
    assert!(
        logged.contains(&format!("dseq={poor}"))
            && logged.contains(&format!("decision=deposit amount={planned} dry_run=true")),
        "{logged}"
    );
    assert!(chain_deposits(&station.ledger(), &poor).is_empty());
    let real = station.start(&station.input(json!({
        "dseqs": [poor],
        "daily_cap": format!("{}uakt", daily_cap + planned + 100),
    })));
    let shown = wait_for_end(&station, &real, "completed", Duration::from_secs(60));
    let decided = report(&shown["run"]["output"], &poor).expect("a report");
    assert_eq!(decided["decision"], "deposit", "{decided}");
    // Had the dry run reserved its amount, only 100 uakt of cap would be left.
    assert!(
        amount(&decided["amount"]) >= planned,
        "the dry run reserved cap: {decided}"
    );
    let landed = chain_deposits(&station.ledger(), &poor);
    assert_eq!(landed.len(), 1, "{landed:?}");
}

/// Starts a sweep of one deployment, waits until its deposit is in the simulator's
/// mempool (broadcast, not confirmed: no block is produced meanwhile), checks that no
/// confirmation is journaled, and SIGKILLs the worker.
fn kill_after_broadcast(station: &GasStation, worker: &mut WorkerProcess, dseq: &str) -> String {
    let run = station.start(&station.input(json!({"dseqs": [dseq]})));
    wait_for_mempool(
        station,
        &format!("the deposit into {dseq} to reach the mempool"),
    );
    worker.kill();
    let shown = station.env.show(&run);
    // The signed bytes were journaled before they were sent; the broadcast's outcome
    // was not (the engine journals a step when it ends).
    assert!(
        step(&shown, &format!("deposit/{dseq}/sign"))
            .is_some_and(|sign| sign["status"] == "completed"),
        "the signature is journaled before the broadcast: {shown:#}"
    );
    if let Some(broadcast) = step(&shown, &format!("deposit/{dseq}/broadcast")) {
        assert_ne!(
            broadcast["status"], "completed",
            "killed before the confirmation was recorded: {broadcast}"
        );
    }
    run
}

/// The run completed, its report names the one deposit that landed, it signed once, and
/// its recorded broadcast is the resumed one (the journaled bytes, which the chain knew).
fn assert_deposited_once(station: &GasStation, shown: &Value, dseq: &str) {
    let ledger = station.ledger();
    let landed = chain_deposits(&ledger, dseq);
    assert_eq!(
        landed.len(),
        1,
        "exactly one deposit into {dseq}: {landed:?}"
    );
    let reported = report(&shown["run"]["output"], dseq).expect("a report");
    assert_eq!(reported["tx_hash"], landed[0]["tx_hash"], "{reported}");
    assert_eq!(amount(&reported["amount"]), amount(&landed[0]["amount"]));
    let broadcast = step(shown, &format!("deposit/{dseq}/broadcast")).unwrap();
    assert_eq!(
        broadcast["output"]["already_known"], true,
        "the re-broadcast sent the same bytes: {broadcast}"
    );
    let sign = step(shown, &format!("deposit/{dseq}/sign")).unwrap();
    assert_eq!(sign["attempts"], 1, "signed once: {sign}");
}

fn killed_after_broadcast_the_deposit_lands_exactly_once(backend: Backend) {
    let station = GasStation::new(backend);
    let first = station.add_deployment(10_000, &[100]);
    let second = station.add_deployment(10_000, &[100]);

    // 1. The transaction lands while no worker runs.
    let mut worker = station.worker("w1");
    let run = kill_after_broadcast(&station, &mut worker, &first);
    station.blocks(1);
    assert_eq!(chain_deposits(&station.ledger(), &first).len(), 1);
    let mut worker = station.worker("w2");
    let shown = wait_for_end(&station, &run, "completed", Duration::from_secs(60));
    assert_deposited_once(&station, &shown, &first);

    // 2. The transaction is still in the mempool when the next worker re-broadcasts it.
    let run = kill_after_broadcast(&station, &mut worker, &second);
    let duplicates_before = station.ledger()["duplicate_broadcasts"].clone();
    let _worker = station.worker("w3");
    let ledger = wait_for(
        "the resumed run to broadcast the same bytes again",
        Duration::from_secs(60),
        || {
            let ledger = station.ledger();
            (ledger["duplicate_broadcasts"] != duplicates_before).then_some(ledger)
        },
    );
    assert_eq!(
        ledger["mempool"], 1,
        "the same bytes again: still one transaction waiting"
    );
    let shown = wait_for_end(&station, &run, "completed", Duration::from_secs(60));
    assert_deposited_once(&station, &shown, &second);

    assert_transactions(&station, 2);
}

/// Two sweeps of one wallet racing for its sequence: the first sweep's deposit waits in
/// the mempool (no block yet) when the second signs against the committed account, as a
/// real node's REST API answers it: the same sequence. Returns both runs once they end.
fn race_for_the_sequence(station: &GasStation, first: &str, second: &str) -> (Value, Value) {
    let racing_first = station.start(&station.input(json!({"dseqs": [first]})));
    wait_for_mempool(station, "the first deposit to reach the mempool");
    let racing_second = station.start(&station.input(json!({"dseqs": [second]})));
    wait_for(
        "the second sweep to meet the sequence mismatch",
        Duration::from_secs(60),
        || {
            let warned = station
                .env
                .cli_ok(&["logs", &racing_second, "--level", "warn"]);
            warned.contains("sequence mismatch").then_some(())
        },
    );
    assert_eq!(
        station.ledger()["mempool"],
        1,
        "nothing of the second sweep is waiting in the mempool"
    );
    // A block lands the first; the second then goes on with the next sequence.
    let shown_first = wait_for_end(station, &racing_first, "completed", Duration::from_secs(60));
    let shown_second = wait_for_end(
        station,
        &racing_second,
        "completed",
        Duration::from_secs(60),
    );
    let ledger = station.ledger();
    for (shown, dseq) in [(&shown_first, first), (&shown_second, second)] {
        let landed = chain_deposits(&ledger, dseq);
        assert_eq!(
            landed.len(),
            1,
            "exactly one deposit into {dseq}: {landed:?}"
        );
        let reported = report(&shown["run"]["output"], dseq).expect("a report");
        assert_eq!(reported["tx_hash"], landed[0]["tx_hash"], "{reported}");
    }
    (shown_first, shown_second)
}

fn two_sweeps_racing_for_the_wallet_sequence_each_deposit_once(backend: Backend) {
    let station = GasStation::new(backend);
    // Due (1,000 blocks of escrow) yet far from dry while the sweeps wait on each other.
    let dseqs: Vec<String> = (0..4)
        .map(|_| station.add_deployment(1_000_000, &[1_000]))
        .collect();

    // Gas by simulation: the node simulates against its mempool state, so the second
    // sweep's signature fails the simulation (retried at persisted times) until the
    // first transaction is in a block, then signs with the next sequence.
    let mut worker = station.worker("simulated-gas");
    let (_, second) = race_for_the_sequence(&station, &dseqs[0], &dseqs[1]);
    let sign = step(&second, &format!("deposit/{}/sign", dseqs[1])).unwrap();
    assert!(sign["attempts"].as_u64().unwrap() >= 2, "{sign}");
    assert_eq!(sign["output"]["sequence"], 1, "{sign}");
    worker.terminate();
    worker.wait_exit(Duration::from_secs(30));

    // Fixed gas: nothing is simulated, the second sweep's broadcast is refused as a
    // sequence mismatch, and its bytes cannot be proven dead while the first transaction
    // may still land: it waits a block, sends the same bytes again, proves them dead
    // once the first is in a block, and signs again.
    let fixed_gas = station.write_config("fixed-gas.toml", CHAIN_ID, "gas = 200000\n");
    let _worker = station.worker_with_config("fixed-gas", &fixed_gas);
    let (_, second) = race_for_the_sequence(&station, &dseqs[2], &dseqs[3]);
    let abandoned = step(&second, &format!("deposit/{}/sign", dseqs[3])).unwrap();
    let resigned = step(&second, &format!("deposit/{}/sign#2", dseqs[3]))
        .expect("the second sweep signed again");
    assert_eq!(abandoned["output"]["sequence"], 2, "{abandoned}");
    assert_eq!(resigned["output"]["sequence"], 3, "{resigned}");
    let landed = chain_deposits(&station.ledger(), &dseqs[3]);
    assert_eq!(landed[0]["tx_hash"], resigned["output"]["tx_hash"]);

    assert_transactions(&station, 4);
}

fn bad_chain_answers_are_retried_then_fail_clearly(backend: Backend) {
    let station = GasStation::new(backend);
    let mut worker = station.worker("w1");

    // Malformed JSON from the broadcast endpoint, more times than the executor retries in
    // process: the step fails once as retryable, the engine retries it at its persisted
    // time, and the journaled bytes land once.
    let flaky = station.add_deployment(10_000, &[100]);
    station.arm_fault("/cosmos/tx/v1beta1/txs", "POST", "malformed_json", 5);
    let run = station.start(&station.input(json!({"dseqs": [flaky]})));
    let shown = wait_for_end(&station, &run, "completed", Duration::from_secs(60));
    let broadcast = step(&shown, &format!("deposit/{flaky}/broadcast")).unwrap();
    assert_eq!(broadcast["attempts"], 2, "{broadcast}");
    assert_eq!(chain_deposits(&station.ledger(), &flaky).len(), 1);

    // HTTP 500 from the node for good: five attempts (1, 2, 4, 8 s apart), then the run
    // fails naming the step and the answer; nothing is signed or deposited.
    station.arm_fault(
        "/cosmos/base/tendermint/v1beta1/blocks/latest",
        "GET",
        "http_500",
        1_000,
    );
    let run = station.start(&station.input(json!({"dseqs": [flaky]})));
    let shown = wait_for_end(&station, &run, "failed", Duration::from_secs(90));
    station.clear_faults();
    let error = shown["run"]["error"].as_str().unwrap_or_default();
    eprintln!("run {run} failed: {error}");
    assert!(
        error.starts_with("step 'height' failed after 5 attempts: ") && error.contains("HTTP 500"),
        "a clear error: {error}"
    );
    assert_eq!(step(&shown, "height").unwrap()["attempts"], 5);
    assert!(step(&shown, &format!("deposit/{flaky}/sign")).is_none());

    // A deposit the chain rejects (the deployment closes in the very block the deposit
    // would land in): the sweep ends, the run fails naming the deployment and the chain's
    // answer, and no deposit is made or retried.
    let doomed = station.add_deployment(50, &[100]);
    let run = station.start(&station.input(json!({"dseqs": [doomed]})));
    wait_for_mempool(&station, "the doomed deposit to reach the mempool");
    let shown = wait_for_end(&station, &run, "failed", Duration::from_secs(60));
    let error = shown["run"]["error"].as_str().unwrap_or_default();
    eprintln!("run {run} failed: {error}");
    assert!(
        error.contains(&format!("dseq={doomed}")) && error.contains("tx failed"),
        "{error}"
    );
    assert!(chain_deposits(&station.ledger(), &doomed).is_empty());
    assert_eq!(
        chain_deployment(&station.ledger(), &doomed)["state"],
        "closed"
    );
    let broadcast = step(&shown, &format!("deposit/{doomed}/broadcast")).unwrap();
    assert_eq!(
        broadcast["attempts"], 1,
        "a rejection is not retried: {broadcast}"
    );

    // A worker configured for another chain refuses to sign: the run fails at once with
    // both chain ids in the error, and nothing reaches the chain.
    worker.terminate();
    worker.wait_exit(Duration::from_secs(30));
    let wrong = station.write_config("wrong-chain.toml", "akashnet-2", "");
    let _worker = station.worker_with_config("w2", &wrong);
    let txs_before = station.ledger()["txs"].clone();
    let due = station.add_deployment(10_000, &[100]);
    let run = station.start(&station.input(json!({"dseqs": [due]})));
    let shown = wait_for_end(&station, &run, "failed", Duration::from_secs(60));
    let error = shown["run"]["error"].as_str().unwrap_or_default();
    eprintln!("run {run} failed: {error}");
    assert!(
        error.contains("chain id mismatch")
            && error.contains("akashnet-2")
            && error.contains(CHAIN_ID),
        "{error}"
    );
    let ledger = station.ledger();
    assert_eq!(ledger["txs"], txs_before);
    assert_eq!(ledger["mempool"], 0);
    assert!(chain_deposits(&ledger, &due).is_empty());
}

// Every body above that takes a `Backend`, as `sqlite::<name>` and `postgres::<name>`.
both_backends! {
    draining_deployment_topped_up_once_per_due_tick_never_dry_over_a_day => a_draining_deployment_is_topped_up_once_per_due_tick_and_never_runs_dry_over_a_day,
    the_daily_cap_holds_across_runs_and_workers => the_daily_cap_holds_across_runs,
    killed_after_broadcast_the_deposit_lands_exactly_once => killed_after_broadcast_the_deposit_lands_exactly_once,
    two_sweeps_racing_for_the_wallet_sequence_each_deposit_once => two_sweeps_racing_for_the_wallet_sequence_each_deposit_once,
    bad_chain_answers_are_retried_then_fail_clearly => bad_chain_answers_are_retried_then_fail_clearly,
}
