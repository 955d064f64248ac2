//! `morpheus devnet akash` as an operator runs it: the real binary on a port of its
//! own, its banner, and the chain API over HTTP with the seeded demo data.

use std::process::Command;
use std::time::Duration;

use morpheus_tests::devnet::{DevnetProcess, DEMO_MNEMONIC};
use morpheus_tests::{morpheus_bin, wait_for};
use serde_json::{json, Value};

fn height(devnet: &DevnetProcess) -> u64 {
    devnet.get_json("/cosmos/base/tendermint/v1beta1/blocks/latest")["block"]["header"]["height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn dseqs_and_states(list: &Value) -> Vec<(String, String)> {
    list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["deployment"]["id"]["dseq"].as_str().unwrap().to_owned(),
                d["deployment"]["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn devnet_akash_serves_the_seeded_demo_over_http_and_says_it_is_a_simulator() {
    let mut devnet = DevnetProcess::spawn_akash(&["--seed-demo", "--block-time-ms", "50"]);
    let wallet = devnet.demo_wallet();
    devnet.wait_for_line("the last demo deployment", |line| {
        line.contains("dseq 1003")
    });
    let banner = devnet.banner.join("\n");
    assert!(banner.contains("Akash devnet SIMULATOR"), "{banner}");
    assert!(banner.contains("chain-id morpheus-devnet-1"), "{banner}");
    assert!(
        banner.contains(&format!("export MORPHEUS_DEMO_MNEMONIC='{DEMO_MNEMONIC}'")),
        "{banner}"
    );
    assert!(wallet.starts_with("akash1"), "{wallet}");

    // Blocks advance on their own.
    let first = height(&devnet);
    wait_for("a few blocks", Duration::from_secs(20), || {
        (height(&devnet) >= first + 3).then_some(())
    });

    let account = devnet.get(&format!("/cosmos/auth/v1beta1/accounts/{wallet}"));
    assert_eq!(account.status, 200, "{}", account.body);
    assert_eq!(account.header("x-morpheus-simulator"), Some("akash-devnet"));
    let account = account.json();
    assert_eq!(account["account"]["address"], wallet.as_str());
    assert_eq!(account["account"]["account_number"], "1");
    assert_eq!(account["account"]["sequence"], "0");
    let balances = devnet.get_json(&format!("/cosmos/bank/v1beta1/balances/{wallet}"));
    assert_eq!(
        balances["balances"],
        json!([{"denom": "uakt", "amount": "500000000"}])
    );

    let all = devnet.get_json(&format!(
        "/akash/deployment/v1beta4/deployments/list?filters.owner={wallet}"
    ));
    assert_eq!(
        dseqs_and_states(&all),
        [
            ("1001".to_owned(), "active".to_owned()),
            ("1002".to_owned(), "active".to_owned()),
            ("1003".to_owned(), "closed".to_owned()),
        ]
    );
    let active = devnet.get_json(&format!(
        "/akash/deployment/v1beta4/deployments/list?filters.owner={wallet}&filters.state=active"
    ));
    assert_eq!(active["deployments"].as_array().unwrap().len(), 2);

    // The draining deployment's escrow goes down by 100 uakt a block.
    let escrow_of_1002 = || -> u64 {
        let info = devnet.get_json(&format!(
            "/akash/deployment/v1beta4/deployments/info?id.owner={wallet}&id.dseq=1002"
        ));
        let funds = info["escrow_account"]["state"]["funds"][0]["amount"]
            .as_str()
            .unwrap();
        funds.split('.').next().unwrap().parse().unwrap()
    };
    let before = escrow_of_1002();
    assert!(before < 120_000 && before % 100 == 0, "{before}");
    wait_for("escrow to drain", Duration::from_secs(20), || {
        (escrow_of_1002() < before).then_some(())
    });

    let legacy = devnet.get_json(&format!(
        "/akash/deployment/v1beta3/deployments/info?id.owner={wallet}&id.dseq=1001"
    ));
    assert_eq!(legacy["deployment"]["deployment_id"]["dseq"], "1001");
    assert_eq!(legacy["escrow_account"]["state"], "open");

    let leases = devnet.get_json(&format!(
        "/akash/market/v1beta5/leases/list?filters.owner={wallet}&filters.state=active"
    ));
    let prices: Vec<(String, String)> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["lease"]["id"]["dseq"].as_str().unwrap().to_owned(),
                l["lease"]["price"]["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        prices,
        [
            ("1001".to_owned(), "100.000000000000000000".to_owned()),
            ("1002".to_owned(), "60.000000000000000000".to_owned()),
            ("1002".to_owned(), "40.000000000000000000".to_owned()),
        ]
    );

    let missing = devnet.get("/cosmos/tx/v1beta1/txs/ABCDEF");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], 5);
    let garbage = devnet.post(
        "/cosmos/tx/v1beta1/txs",
        &json!({"tx_bytes": "bm90IGEgdHg=", "mode": "BROADCAST_MODE_SYNC"}),
    );
    assert_eq!(garbage.status, 200);
    let garbage = garbage.json();
    assert_eq!(garbage["tx_response"]["code"], 2, "{garbage}");
    assert!(garbage["tx_response"]["raw_log"]
        .as_str()
        .unwrap()
        .contains("tx parse error"));

    let ledger = devnet.get_json("/simulator/ledger");
    assert_eq!(ledger["simulator"], "akash-devnet");
    assert_eq!(ledger["deposits"], json!([]));
    assert_eq!(ledger["deployments"].as_array().unwrap().len(), 3);

    let status = devnet.terminate();
    assert!(status.success(), "exit {status:?}: {}", devnet.stderr());
}

#[test]
fn devnet_akash_demo_deployment_runs_dry_and_closes() {
    // 1200 blocks of 100 uakt drain deployment 1002; at 2 ms a block that is seconds.
    let mut devnet = DevnetProcess::spawn_akash(&["--seed-demo", "--block-time-ms", "2"]);
    let wallet = devnet.demo_wallet();
    let states = wait_for("deployment 1002 to close", Duration::from_secs(60), || {
        let list = devnet.get_json(&format!(
            "/akash/deployment/v1beta4/deployments/list?filters.owner={wallet}"
        ));
        let states = dseqs_and_states(&list);
        (states[1].1 == "closed").then_some(states)
    });
    assert_eq!(states[0], ("1001".to_owned(), "active".to_owned()));
    let ledger = devnet.get_json("/simulator/ledger");
    let closed = &ledger["deployments"][1];
    assert_eq!(closed["dseq"], "1002");
    assert_eq!(closed["escrow"], "0");
    assert_eq!(closed["transferred"], "120000");
    assert!(ledger["height"].as_u64().unwrap() > 1200);
}

#[test]
fn devnet_akash_without_demo_data_starts_empty_and_can_be_seeded_through_its_admin_api() {
    let devnet = DevnetProcess::spawn_akash(&["--block-time-ms", "0", "--chain-id", "sim-7"]);
    assert!(devnet.banner[0].contains("SIMULATOR"));
    assert!(!devnet.banner.join("\n").contains("MORPHEUS_DEMO_MNEMONIC"));
    let block = devnet.get_json("/cosmos/base/tendermint/v1beta1/blocks/latest");
    assert_eq!(block["block"]["header"]["chain_id"], "sim-7");
    let owner = "akash19rl4cm2hmr8afy4kldpxz3fka4jguq0a3mq6x0";
    let funded = devnet.post(
        "/simulator/accounts",
        &json!({"address": owner, "amount": "1000"}),
    );
    assert_eq!(funded.status, 200, "{}", funded.body);
    let created = devnet.post(
        "/simulator/deployments",
        &json!({"owner": owner, "dseq": "77", "escrow": "500", "lease_prices": ["10"]}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let again = devnet.post(
        "/simulator/deployments",
        &json!({"owner": owner, "dseq": "77", "escrow": "500"}),
    );
    assert_eq!(again.status, 409, "{}", again.body);
    let bad = devnet.post(
        "/simulator/accounts",
        &json!({"address": "nope", "amount": "1"}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let advanced = devnet.post("/simulator/blocks", &json!({"count": 5}));
    assert_eq!(advanced.json()["height"], 6);
    let info = devnet.get_json(&format!(
        "/akash/deployment/v1beta4/deployments/info?id.owner={owner}&id.dseq=77"
    ));
    assert_eq!(
        info["escrow_account"]["state"]["funds"][0]["amount"],
        "450.000000000000000000"
    );
}

#[test]
fn devnet_akash_refuses_a_busy_port_with_one_line() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(morpheus_bin())
        .args(["devnet", "akash", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no banner for a server that is not up"
    );

    let out = Command::new(morpheus_bin())
        .args(["devnet", "akash", "--listen", "localhost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid value 'localhost'"),
        "{stderr}"
    );
}
