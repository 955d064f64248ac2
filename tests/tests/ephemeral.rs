//! Ephemeral keys end to end: `morpheus keys ephemeral create | list | revoke` (the real
//! binary) against `morpheus devnet akash` (the Akash devnet **simulator**, which
//! enforces AuthZ and fee grants as the chain does), and the gas station
//! (`topup.escrow` under `morpheus up`) signing through the grant with no owner key in
//! its process.
//!
//! - deposits land through the grant, the owner's balance pays (deposit and fee), the
//!   ephemeral key never holds funds, the audit names the ephemeral key; after a
//!   revocation, and after an expiry, the next sweep fails saying how to rotate;
//! - with `keys.ephemeral.rotate` scheduled, sweeps never fail across an expiry;
//! - SIGKILL between the grant's broadcast and its record: one grant on chain, one key;
//! - bad input is one line and writes nothing.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use morpheus_tests::devnet::{DevnetProcess, DEMO_MNEMONIC};
use morpheus_tests::{
    both_backends, wait_for, Backend, CliOutput, TestEnv, WorkerProcess, FAST_LEASES,
};
use serde_json::{json, Value};

const MNEMONIC_ENV: &str = "MORPHEUS_DEMO_MNEMONIC";
const PASSPHRASE_ENV: &str = "MORPHEUS_KEYS_PASSPHRASE";
const PASSPHRASE: &str = "a test passphrase, not a secret";
const CHAIN_ID: &str = "morpheus-devnet-1";
const GRANTER: &str = "mnemonic-env:MORPHEUS_DEMO_MNEMONIC";

struct Station {
    env: TestEnv,
    devnet: DevnetProcess,
    owner: String,
    /// `[cosmos]` without a key: sweeps sign with ephemeral keys only.
    keyless: PathBuf,
    /// `[cosmos]` with the owner's key and ephemeral signing (rotation grants).
    with_key: PathBuf,
}

impl Station {
    fn new(backend: Backend, block_time_ms: &str) -> Self {
        let env = TestEnv::new(backend);
        let mut devnet =
            DevnetProcess::spawn_akash(&["--seed-demo", "--block-time-ms", block_time_ms]);
        let owner = devnet.demo_wallet();
        let config = |name: &str, key: &str| {
            let path = env.path(name);
            std::fs::write(
                &path,
                format!(
                    "[cosmos]\nrest_url = \"http://{}\"\nchain_id = \"{CHAIN_ID}\"\n{key}\
                     timeouts = {{ confirm_poll = \"100ms\", confirm = \"5s\" }}\n\
                     ephemeral = {{ granter = \"{owner}\" }}\n",
                    devnet.addr
                ),
            )
            .unwrap();
            path
        };
        let keyless = config("keyless.toml", "");
        let with_key = config(
            "with-key.toml",
            &format!("key = {{ mnemonic_env = \"{MNEMONIC_ENV}\" }}\n"),
        );
        Self {
            env,
            devnet,
            owner,
            keyless,
            with_key,
        }
    }

    /// A `morpheus` command with the keyless configuration, the passphrase and the
    /// owner's mnemonic (read only where `--granter` names it).
    fn command(&self) -> Command {
        let mut command = self.env.command();
        command
            .env("MORPHEUS_CONFIG", &self.keyless)
            .env(PASSPHRASE_ENV, PASSPHRASE)
            .env(MNEMONIC_ENV, DEMO_MNEMONIC);
        command
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        CliOutput::from_command(self.command().args(args))
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "morpheus {args:?}: {}\n{}",
            out.status,
            out.stderr
        );
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|error| panic!("morpheus {args:?}: not JSON ({error}): {}", out.stdout))
    }

    fn create(&self, ttl: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "keys",
            "ephemeral",
            "create",
            "--granter",
            GRANTER,
            "--ttl",
            ttl,
            "--spend-limit",
            "100000000uakt",
            "--seconds-per-block",
            "0.1",
            "--json",
        ];
        args.extend_from_slice(extra);
        self.cli_json(&args)
    }

    fn keys(&self) -> Vec<Value> {
        self.cli_json(&["keys", "ephemeral", "list", "--json"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// `morpheus up` with the sweep's configuration: no owner key in its environment.
    fn sweeper(&self, name: &str) -> WorkerProcess {
        let config = self.keyless.clone();
        self.env.spawn_worker_with(name, FAST_LEASES, |command| {
            command
                .env("MORPHEUS_CONFIG", config)
                .env(PASSPHRASE_ENV, PASSPHRASE)
                .env_remove(MNEMONIC_ENV);
        })
    }

    /// `morpheus up` holding the owner's key too (it signs rotations' grants).
    fn rotator(&self, name: &str) -> WorkerProcess {
        let config = self.with_key.clone();
        self.env.spawn_worker_with(name, FAST_LEASES, |command| {
            command
                .env("MORPHEUS_CONFIG", config)
                .env(PASSPHRASE_ENV, PASSPHRASE)
                .env(MNEMONIC_ENV, DEMO_MNEMONIC);
        })
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

    fn ledger(&self) -> Value {
        self.devnet.get_json("/simulator/ledger")
    }

    /// A deployment of the owner that runs dry soon: every sweep of it deposits.
    fn draining_deployment(&self) -> String {
        let created = self.post(
            "/simulator/deployments",
            json!({"owner": self.owner, "escrow": "10000", "lease_prices": ["100"]}),
        );
        created["deployment"]["deployment"]["id"]["dseq"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Starts one sweep of `dseq`; returns the run id.
    fn sweep(&self, dseq: &str) -> String {
        let input = json!({
            "owner": self.owner, "dseqs": [dseq], "look_ahead_h": 8.0, "target_runway_h": 16.0,
            "max_per_deposit": "2000000uakt", "daily_cap": "500000000uakt",
            "wallet_headroom": "1000000uakt", "cooldown_min": 0, "dry_run": false,
        });
        let started = self.env.cli_json(&[
            "start",
            "topup.escrow",
            "--input",
            &input.to_string(),
            "--json",
        ]);
        started["run_id"].as_str().unwrap().to_owned()
    }

    fn wait_end(&self, run: &str) -> Value {
        wait_for("the sweep to end", Duration::from_secs(60), || {
            let shown = self.env.show(run);
            matches!(
                shown["run"]["status"].as_str(),
                Some("completed" | "failed")
            )
            .then_some(shown)
        })
    }

    fn deposits_into(&self, dseq: &str) -> Vec<Value> {
        self.ledger()["deposits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|deposit| deposit["dseq"] == dseq)
            .cloned()
            .collect()
    }

    fn grants(&self, grantee: &str) -> Vec<Value> {
        self.devnet.get_json(&format!(
            "/cosmos/authz/v1beta1/grants?granter={}&grantee={grantee}",
            self.owner
        ))["grants"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn account(&self, address: &str) -> Option<Value> {
        self.ledger()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|account| account["address"] == address)
            .cloned()
    }
}

/// A sweep that deposited once, through `key`'s grant, funded by the owner.
fn assert_swept_through(station: &Station, run: &str, dseq: &str, key: &Value) {
    let shown = station.wait_end(run);
    assert_eq!(shown["run"]["status"], "completed", "{shown:#}");
    let deposits = station.deposits_into(dseq);
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    let deposit = &deposits[0];
    assert_eq!(deposit["signer"], key["address"], "{deposit}");
    assert_eq!(deposit["source"], "grant", "{deposit}");
    assert_eq!(
        deposit["funded_by"],
        json!([{"address": station.owner, "amount": deposit["amount"]}]),
        "the owner's balance pays: {deposit}"
    );
}

/// A sweep that failed before anything was sent, with `expected` in its error and the
/// way to rotate.
fn assert_sweep_refused(station: &Station, run: &str, dseq: &str, expected: &str) {
    let shown = station.wait_end(run);
    assert_eq!(shown["run"]["status"], "failed", "{shown:#}");
    let error = shown["run"]["error"].as_str().unwrap_or_default();
    assert!(error.contains(expected), "{error}");
    assert!(error.contains("morpheus keys ephemeral create"), "{error}");
    assert!(station.deposits_into(dseq).is_empty());
}

fn the_gas_station_signs_through_an_ephemeral_key(backend: Backend) {
    let station = Station::new(backend, "100");
    let owner_before = station.account(&station.owner).unwrap();
    let key = station.create("60s", &[]);
    let id = key["id"].as_str().unwrap().to_owned();
    let address = key["address"].as_str().unwrap().to_owned();
    // One transaction granted the deployment messages and the deposits.
    let granted: BTreeSet<String> = station
        .grants(&address)
        .iter()
        .map(|grant| grant["authorization"]["@type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        granted,
        BTreeSet::from([
            "/akash.escrow.v1.DepositAuthorization".to_owned(),
            "/cosmos.authz.v1beta1.GenericAuthorization".to_owned()
        ])
    );
    assert_eq!(station.grants(&address).len(), 4);

    let _worker = station.sweeper("sweeper");
    let first = station.draining_deployment();
    let run = station.sweep(&first);
    assert_swept_through(&station, &run, &first, &key);
    // The ephemeral key never held funds: its fee came from the owner's allowance.
    let account = station.account(&address).unwrap();
    assert_eq!(account["balances"], json!([]), "{account}");
    let owner_after = station.account(&station.owner).unwrap();
    assert_ne!(owner_before["balances"], owner_after["balances"]);

    let listed = station.keys();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "active");
    let deposited = station.deposits_into(&first)[0]["amount"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(listed[0]["spent"], format!("{deposited}uakt"));
    // A deployment message goes through MsgExec: the key closes the owner's deployment
    // (`akash.close`), and the escrow goes back to the owner.
    let close_input = json!({"owner": station.owner, "dseq": first, "seconds_per_block": 0.1});
    let close = station.env.cli_json(&[
        "start",
        "akash.close",
        "--input",
        &close_input.to_string(),
        "--json",
    ]);
    let closed = station.wait_end(close["run_id"].as_str().unwrap());
    assert_eq!(closed["run"]["status"], "completed", "{closed:#}");
    let deployment = station.ledger()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|deployment| deployment["dseq"] == first.as_str())
        .cloned()
        .unwrap();
    assert_eq!(deployment["state"], "closed", "{deployment}");
    assert_eq!(station.account(&address).unwrap()["balances"], json!([]));

    let audit = station.env.cli_json(&["keys", "audit", "--json"]);
    let signed_by_key: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|signature| signature["key_id"] == format!("ephemeral:{id}"))
        .collect();
    assert_eq!(signed_by_key.len(), 2, "{audit:#}");
    assert!(signed_by_key
        .iter()
        .all(|signature| signature["address"] == address.as_str()));
    let signed_types: BTreeSet<String> = signed_by_key
        .iter()
        .flat_map(|signature| signature["message_types"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        signed_types,
        BTreeSet::from([
            "/akash.deployment.v1beta4.MsgCloseDeployment".to_owned(),
            "/akash.escrow.v1.MsgAccountDeposit".to_owned()
        ])
    );

    // Revoked: every grant is gone from the chain, the key material from the store,
    // and the next sweep fails saying how to rotate.
    let revoked = station.cli_json(&[
        "keys",
        "ephemeral",
        "revoke",
        &id,
        "--granter",
        GRANTER,
        "--seconds-per-block",
        "0.1",
        "--json",
    ]);
    assert!(revoked["revoke_tx"].is_string(), "{revoked}");
    assert!(station.grants(&address).is_empty());
    let listed = station.keys();
    assert_eq!(listed[0]["status"], "revoked");
    let second = station.draining_deployment();
    let run = station.sweep(&second);
    assert_sweep_refused(&station, &run, &second, "was revoked");

    // A new key signs again; once it expires, the next sweep fails clearly.
    let short = station.create("12s", &[]);
    let run = station.sweep(&second);
    assert_swept_through(&station, &run, &second, &short);
    let expires_at = chrono::DateTime::parse_from_rfc3339(short["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    while chrono::Utc::now() <= expires_at + chrono::Duration::milliseconds(500) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let third = station.draining_deployment();
    let run = station.sweep(&third);
    assert_sweep_refused(&station, &run, &third, "expired at");
    let listed = station.keys();
    assert_eq!(listed[0]["status"], "expired", "{listed:#?}");
}

both_backends! {
    the_gas_station_signs_through_an_ephemeral_key => the_gas_station_signs_through_an_ephemeral_key,
}

#[test]
fn with_rotation_scheduled_sweeps_never_fail_across_an_expiry() {
    let station = Station::new(Backend::Sqlite, "100");
    let first = station.create("15s", &[]);
    let rotate = json!({
        "granter": station.owner, "rotate_before_s": 8, "ttl_s": 15, "seconds_per_block": 0.1,
        "spend_limit": "100000000uakt",
    });
    station.env.cli_ok(&[
        "schedules",
        "add",
        "rotate-keys",
        "--workflow",
        "keys.ephemeral.rotate",
        "--input",
        &rotate.to_string(),
        "--every",
        "2s",
    ]);
    let _worker = station.rotator("rotator");
    // Sweep a fresh draining deployment every ~700 ms for well past the first key's
    // expiry: each must deposit.
    let until = Instant::now() + Duration::from_secs(24);
    let mut sweeps = Vec::new();
    while Instant::now() < until {
        let dseq = station.draining_deployment();
        sweeps.push((station.sweep(&dseq), dseq));
        std::thread::sleep(Duration::from_millis(700));
    }
    let mut signers = BTreeSet::new();
    for (run, dseq) in &sweeps {
        let shown = station.wait_end(run);
        assert_eq!(
            shown["run"]["status"], "completed",
            "sweep of {dseq}: {shown:#}"
        );
        let deposits = station.deposits_into(dseq);
        assert_eq!(deposits.len(), 1, "{deposits:?}");
        assert_eq!(deposits[0]["source"], "grant");
        signers.insert(deposits[0]["signer"].as_str().unwrap().to_owned());
    }
    assert!(
        signers.len() >= 2,
        "the sweeps crossed a rotation: {signers:?}"
    );
    assert!(
        !signers.contains(&station.owner),
        "the owner never signed a sweep"
    );
    let keys = station.keys();
    let first_now = keys.iter().find(|key| key["id"] == first["id"]).unwrap();
    assert_eq!(first_now["status"], "revoked", "{keys:#?}");
    assert!(
        keys.iter().any(|key| key["status"] == "active"),
        "{keys:#?}"
    );
}

#[test]
fn sigkill_between_the_grant_broadcast_and_its_record_leaves_one_grant_and_one_key() {
    // Blocks only when the test posts them: the grant waits in the mempool.
    let station = Station::new(Backend::Sqlite, "0");
    let txs_before = station.ledger()["txs"].as_u64().unwrap();
    let args = [
        "keys",
        "ephemeral",
        "create",
        "--granter",
        GRANTER,
        "--ttl",
        "1h",
        "--seconds-per-block",
        "0.1",
        "--idempotency-key",
        "crash-grant",
        "--json",
    ];
    let mut first = station
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the grant in the mempool", Duration::from_secs(30), || {
        (station.ledger()["mempool"] == 1).then_some(())
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let stored = station.keys();
    assert_eq!(
        stored.len(),
        1,
        "stored before anything was signed: {stored:#?}"
    );
    assert_eq!(stored[0]["status"], "granting");
    // The grant lands while nothing runs.
    station.post("/simulator/blocks", json!({"count": 1}));

    // The same command resumes the same run: the journaled bytes again, no new key.
    let blocks = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poster = {
        let (blocks, addr) = (blocks.clone(), station.devnet.addr);
        std::thread::spawn(move || {
            while blocks.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = morpheus_tests::devnet::http_request(
                    addr,
                    "POST",
                    "/simulator/blocks",
                    Some(r#"{"count": 1}"#),
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let resumed = station.cli_json(&args);
    blocks.store(false, std::sync::atomic::Ordering::Relaxed);
    poster.join().unwrap();
    assert_eq!(resumed["id"], stored[0]["id"]);
    let keys = station.keys();
    assert_eq!(keys.len(), 1, "{keys:#?}");
    assert_eq!(keys[0]["status"], "active");
    assert_eq!(
        station.grants(resumed["address"].as_str().unwrap()).len(),
        4
    );
    let ledger = station.ledger();
    assert_eq!(ledger["mempool"], 0);
    assert_eq!(
        ledger["grants"].as_array().unwrap().len(),
        4,
        "one set of grants on chain: {:#}",
        ledger["grants"]
    );
    assert_eq!(ledger["fee_allowances"].as_array().unwrap().len(), 1);
    assert_eq!(
        ledger["txs"].as_u64().unwrap(),
        txs_before + 1,
        "one grant transaction"
    );
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let station = Station::new(Backend::Sqlite, "100");
    let owner_before = station.account(&station.owner).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--ttl", "0s"], "ttl: 0 s is outside"),
        (&["--ttl", "31d"], "ttl: 2678400 s is outside"),
        (
            &["--spend-limit", "lots"],
            "spend_limit: 'lots' is not an amount",
        ),
        (&["--granter", "AKASH_MNEMONIC"], "is not a key reference"),
        (
            &["--granter", "mnemonic-env:NOT_SET_ANYWHERE"],
            "NOT_SET_ANYWHERE is not set",
        ),
        (
            &["--passphrase-env", "NO_SUCH_PASSPHRASE"],
            "NO_SUCH_PASSPHRASE is not set",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["keys", "ephemeral", "create"];
        if !extra.contains(&"--granter") {
            args.extend(["--granter", GRANTER]);
        }
        args.extend_from_slice(extra);
        let out = station.cli(&args);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(out.stderr_lines().len(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    let unknown = station.cli(&["keys", "ephemeral", "revoke", "eph-0000000000000000"]);
    assert!(!unknown.status.success());
    assert_eq!(unknown.stderr_lines().len(), 1, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("is unknown"), "{}", unknown.stderr);
    assert!(station.keys().is_empty());
    assert_eq!(
        station.account(&station.owner).unwrap()["sequence"],
        owner_before["sequence"],
        "the owner signed nothing"
    );
}
