//! The devnet EVM contracts and the Skip Go route simulator against a real anvil and
//! the Akash devnet simulator, over HTTP and JSON-RPC: stakes and reverts, swaps that
//! credit exactly the computed AKT once (also across a restart at the worst moment),
//! refunds when the price moves past the slippage bound, refusals and malformed input.

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use morpheus_devnets::akash;
use morpheus_devnets::evm::{
    deploy, mint, signer_from_hex, signing_provider, DeployedContracts, MockUSDC, MorStakingVault,
    SkipBridge, ANVIL_CHAIN_ID, ANVIL_DEV_KEY,
};
use morpheus_devnets::skip::{self, quote::Decimal, quote::Pricing, SkipHandle, SkipOptions};
use morpheus_tests::anvil::{Anvil, Mining};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use url::Url;

/// anvil's second well-known account (public): the user who stakes and swaps.
const USER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

struct World {
    anvil: Anvil,
    akash: akash::SimulatorHandle,
    contracts: DeployedContracts,
    user: DynProvider,
    user_address: Address,
    http: reqwest::Client,
}

impl World {
    async fn start(mining: Mining) -> Self {
        let anvil = Anvil::start(mining);
        let url: Url = anvil.url.parse().unwrap();
        let deployer = signer_from_hex(ANVIL_DEV_KEY).unwrap();
        let contracts = deploy(&url, deployer.clone()).await.unwrap();
        let user_signer: PrivateKeySigner = USER_KEY.parse().unwrap();
        let user_address = user_signer.address();
        mint(
            &url,
            deployer,
            contracts.usdc,
            &[(user_address, 1_000_000_000)],
        )
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let akash = akash::serve(
            listener,
            akash::SimulatorOptions {
                block_time: Duration::ZERO,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        Self {
            user: signing_provider(&url, user_signer),
            anvil,
            akash,
            contracts,
            user_address,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self) -> Url {
        self.anvil.url.parse().unwrap()
    }

    async fn start_skip(&self, price: &str) -> SkipHandle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        skip::serve(
            listener,
            SkipOptions {
                evm_rpc: self.url(),
                akash_rest: self.akash.url().parse().unwrap(),
                bridge: self.contracts.bridge,
                usdc: None,
                owner_key: signer_from_hex(ANVIL_DEV_KEY).unwrap(),
                pricing: Pricing {
                    price: Decimal::parse(price, "price").unwrap(),
                    fee_bps: 30,
                    price_impact_pct: Decimal::parse("0.5", "impact").unwrap(),
                },
                poll_interval: Duration::from_millis(100),
            },
        )
        .await
        .unwrap()
    }

    async fn post(&self, base: &str, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn get(&self, base: &str, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{base}{path}")).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn uakt_balance(&self, address: &str) -> u128 {
        let (_, body) = self
            .get(
                &self.akash.url(),
                &format!("/cosmos/bank/v1beta1/balances/{address}"),
            )
            .await;
        body["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|coin| coin["denom"] == "uakt")
            .map(|coin| coin["amount"].as_str().unwrap().parse().unwrap())
            .unwrap_or(0)
    }

    async fn usdc_balance(&self, holder: Address) -> U256 {
        MockUSDC::new(self.contracts.usdc, &self.user)
            .balanceOf(holder)
            .call()
            .await
            .unwrap()
    }

    fn route_body(&self, skip: &SkipHandle, amount_in: &str) -> Value {
        json!({
            "amount_in": amount_in,
            "source_asset_denom": self.contracts.usdc.to_string(),
            "source_asset_chain_id": skip.evm_chain_id().to_string(),
            "dest_asset_denom": "uakt",
            "dest_asset_chain_id": skip.akash_chain_id(),
            "allow_multi_tx": true,
        })
    }

    /// route → msgs → approvals → the evm_tx, as the funding flow does. Returns the
    /// swap transaction's hash and the quoted amount out.
    async fn swap_through_route(
        &self,
        skip: &SkipHandle,
        amount_in: &str,
        dest: &str,
        slippage: &str,
    ) -> (String, String) {
        let (status, route) = self
            .post(
                &skip.url(),
                "/v2/fungible/route",
                self.route_body(skip, amount_in),
            )
            .await;
        assert_eq!(status, 200, "{route}");
        let mut msgs_body = self.route_body(skip, amount_in);
        msgs_body["amount_out"] = route["amount_out"].clone();
        msgs_body["address_list"] = json!([self.user_address.to_string(), dest]);
        msgs_body["slippage_tolerance_percent"] = json!(slippage);
        msgs_body["operations"] = route["operations"].clone();
        let (status, msgs) = self.post(&skip.url(), "/v2/fungible/msgs", msgs_body).await;
        assert_eq!(status, 200, "{msgs}");
        let evm_tx = &msgs["txs"][0]["evm_tx"];
        assert_eq!(evm_tx["chain_id"], ANVIL_CHAIN_ID.to_string());
        for approval in evm_tx["required_erc20_approvals"].as_array().unwrap() {
            let token: Address = approval["token_contract"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let spender: Address = approval["spender"].as_str().unwrap().parse().unwrap();
            let amount: U256 = approval["amount"].as_str().unwrap().parse().unwrap();
            let receipt = MockUSDC::new(token, &self.user)
                .approve(spender, amount)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert!(receipt.status());
        }
        let data: Bytes = alloy::hex::decode(evm_tx["data"].as_str().unwrap())
            .unwrap()
            .into();
        let to: Address = evm_tx["to"].as_str().unwrap().parse().unwrap();
        let receipt = self
            .user
            .send_transaction(TransactionRequest::default().with_to(to).with_input(data))
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "the swap transaction reverted");
        let hash = format!("{}", receipt.transaction_hash);
        let (status, tracked) = self
            .post(
                &skip.url(),
                "/v2/tx/track",
                json!({"tx_hash": hash, "chain_id": ANVIL_CHAIN_ID.to_string()}),
            )
            .await;
        assert_eq!(status, 200, "{tracked}");
        (hash, route["amount_out"].as_str().unwrap().to_owned())
    }

    async fn status(&self, skip: &SkipHandle, hash: &str) -> Value {
        let (status, body) = self
            .get(
                &skip.url(),
                &format!("/v2/tx/status?tx_hash={hash}&chain_id={ANVIL_CHAIN_ID}"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn wait_for_state(&self, skip: &SkipHandle, hash: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = self.status(skip, hash).await;
            if body["state"] == state {
                return body;
            }
            assert!(Instant::now() < deadline, "no {state} in time: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn bridge_events(&self, signature: alloy::primitives::B256) -> usize {
        let filter = Filter::new()
            .address(self.contracts.bridge)
            .event_signature(signature)
            .from_block(0u64);
        self.user.get_logs(&filter).await.unwrap().len()
    }
}

#[tokio::test]
async fn staking_vault_records_stakes_emits_staked_and_reverts_with_its_reason_while_paused() {
    let world = World::start(Mining::Instant).await;
    let usdc = MockUSDC::new(world.contracts.usdc, &world.user);
    assert_eq!(usdc.decimals().call().await.unwrap(), 6);
    assert_eq!(usdc.symbol().call().await.unwrap(), "USDC");
    assert_eq!(usdc.name().call().await.unwrap(), "USD Coin");
    assert_eq!(
        usdc.balanceOf(world.user_address).call().await.unwrap(),
        U256::from(1_000_000_000u64)
    );
    let vault = MorStakingVault::new(world.contracts.staking_vault, &world.user);
    usdc.approve(world.contracts.staking_vault, U256::from(60_000_000u64))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let receipt = vault
        .stake(U256::from(60_000_000u64))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    let staked: Vec<_> = receipt
        .logs()
        .iter()
        .filter_map(|log| log.log_decode::<MorStakingVault::Staked>().ok())
        .collect();
    assert_eq!(staked.len(), 1);
    assert_eq!(staked[0].inner.data.staker, world.user_address);
    assert_eq!(staked[0].inner.data.amount, U256::from(60_000_000u64));
    assert_eq!(
        vault.stakedOf(world.user_address).call().await.unwrap(),
        U256::from(60_000_000u64)
    );
    assert_eq!(
        vault.totalStaked().call().await.unwrap(),
        U256::from(60_000_000u64)
    );
    assert_eq!(
        world.usdc_balance(world.contracts.staking_vault).await,
        U256::from(60_000_000u64)
    );

    // Only the owner pauses; paused, a stake reverts with the reason and moves nothing.
    // Expected reverts are checked with eth_call: a failed `send` would leave the
    // provider's cached nonce ahead of the chain and stall the next transaction.
    let not_owner = vault.pause().call().await.unwrap_err().to_string();
    assert!(not_owner.contains("caller is not the owner"), "{not_owner}");
    let owner = signing_provider(&world.url(), signer_from_hex(ANVIL_DEV_KEY).unwrap());
    MorStakingVault::new(world.contracts.staking_vault, &owner)
        .pause()
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    usdc.approve(world.contracts.staking_vault, U256::from(1u64))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let paused = vault
        .stake(U256::from(1u64))
        .call()
        .await
        .unwrap_err()
        .to_string();
    assert!(paused.contains("staking paused"), "{paused}");
    assert_eq!(
        vault.totalStaked().call().await.unwrap(),
        U256::from(60_000_000u64)
    );
    // Without an allowance the token's own reason comes back.
    MorStakingVault::new(world.contracts.staking_vault, &owner)
        .unpause()
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let no_allowance = vault
        .stake(U256::from(5u64))
        .call()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        no_allowance.contains("ERC20: insufficient allowance"),
        "{no_allowance}"
    );
}

#[tokio::test]
async fn a_swap_through_the_route_credits_exactly_the_computed_akt_once_and_completes() {
    let world = World::start(Mining::Instant).await;
    let skip = world.start_skip("2.5").await;
    assert!(skip.banner().contains("Skip Go route SIMULATOR"));
    let dest = akash::demo_address();
    let before = world.usdc_balance(world.user_address).await;
    // 40 USDC at 2.5 AKT/USDC = 100 AKT, minus 0.3 % = 99.7 AKT.
    let (hash, quoted) = world
        .swap_through_route(&skip, "40000000", &dest, "1")
        .await;
    assert_eq!(quoted, "99700000");
    let status = world
        .wait_for_state(&skip, &hash, "STATE_COMPLETED_SUCCESS")
        .await;
    assert_eq!(status["simulator"], "skip-go");
    assert_eq!(status["transfer_asset_release"]["amount"], "99700000");
    assert_eq!(status["transfer_asset_release"]["released"], true);
    assert_eq!(status["transfers"][0]["state"], "STATE_COMPLETED_SUCCESS");
    assert_eq!(status["error"], Value::Null);
    assert_eq!(world.uakt_balance(&dest).await, 99_700_000);
    assert_eq!(
        world.usdc_balance(world.user_address).await,
        before - U256::from(40_000_000u64)
    );
    assert_eq!(
        world.usdc_balance(world.contracts.bridge).await,
        U256::from(40_000_000u64)
    );
    // Polling longer changes nothing: one credit, one settlement.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.uakt_balance(&dest).await, 99_700_000);
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapSettled::SIGNATURE_HASH)
            .await,
        1
    );
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapRequested::SIGNATURE_HASH)
            .await,
        1
    );
}

#[tokio::test]
async fn a_restart_between_credit_and_settle_settles_with_the_first_credit_and_never_credits_twice()
{
    let world = World::start(Mining::Instant).await;
    let skip = world.start_skip("2.5").await;
    let dest = akash::demo_address();
    let (status, _) = world
        .post(
            &skip.url(),
            "/simulator/faults",
            json!({"kind": "stop_before_settle"}),
        )
        .await;
    assert_eq!(status, 200);
    let (hash, _) = world
        .swap_through_route(&skip, "40000000", &dest, "1")
        .await;
    // The credit lands, the settlement does not: the swap stays pending on chain.
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.uakt_balance(&dest).await == 0 {
        assert!(Instant::now() < deadline, "no credit in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.status(&skip, &hash).await["state"], "STATE_PENDING");
    skip.shutdown().await;

    // A new simulator whose price would now refund the swap (0.1 AKT/USDC is far
    // below the bound): it must settle what was credited, not refund, not re-credit.
    let restarted = world.start_skip("0.1").await;
    let status = world
        .wait_for_state(&restarted, &hash, "STATE_COMPLETED_SUCCESS")
        .await;
    assert_eq!(status["transfer_asset_release"]["amount"], "99700000");
    assert_eq!(world.uakt_balance(&dest).await, 99_700_000);
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapSettled::SIGNATURE_HASH)
            .await,
        1
    );
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapRefunded::SIGNATURE_HASH)
            .await,
        0
    );
    restarted.shutdown().await;

    // A third start finds everything finished and does nothing more.
    let again = world.start_skip("2.5").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(world.uakt_balance(&dest).await, 99_700_000);
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapSettled::SIGNATURE_HASH)
            .await,
        1
    );
    assert_eq!(
        world.status(&again, &hash).await["state"],
        "STATE_COMPLETED_SUCCESS"
    );
}

#[tokio::test]
async fn a_swap_made_while_the_simulator_is_down_is_delivered_once_it_starts() {
    let world = World::start(Mining::BlockTime(1)).await;
    let skip = world.start_skip("2").await;
    let dest = akash::demo_address();
    let (hash, quoted) = world
        .swap_through_route(&skip, "10000000", &dest, "1")
        .await;
    assert_eq!(quoted, "19940000");
    skip.shutdown().await;
    // Stopped before its next poll, or after: either way the new one finishes it once.
    let restarted = world.start_skip("2").await;
    let status = world
        .wait_for_state(&restarted, &hash, "STATE_COMPLETED_SUCCESS")
        .await;
    assert_eq!(status["transfer_asset_release"]["amount"], "19940000");
    assert_eq!(world.uakt_balance(&dest).await, 19_940_000);
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapSettled::SIGNATURE_HASH)
            .await,
        1
    );
}

#[tokio::test]
async fn a_price_move_beyond_the_slippage_bound_refunds_the_usdc_and_abandons_the_swap() {
    let world = World::start(Mining::Instant).await;
    let skip = world.start_skip("2.5").await;
    let dest = akash::demo_address();
    let before = world.usdc_balance(world.user_address).await;
    // Quote at 2.5 (99.7 AKT, min 98.703 AKT at 1 %), then move the price to 2.4
    // before the swap is sent: 95.712 AKT is below the bound.
    let (status, route) = world
        .post(
            &skip.url(),
            "/v2/fungible/route",
            world.route_body(&skip, "40000000"),
        )
        .await;
    assert_eq!(status, 200, "{route}");
    let mut msgs_body = world.route_body(&skip, "40000000");
    msgs_body["amount_out"] = route["amount_out"].clone();
    msgs_body["address_list"] = json!([world.user_address.to_string(), dest]);
    msgs_body["slippage_tolerance_percent"] = json!("1");
    let (status, msgs) = world
        .post(&skip.url(), "/v2/fungible/msgs", msgs_body)
        .await;
    assert_eq!(status, 200, "{msgs}");
    assert_eq!(msgs["min_amount_out"], "98703000");
    let (status, price) = world
        .post(&skip.url(), "/simulator/price", json!({"price": "2.4"}))
        .await;
    assert_eq!((status, price["price"].as_str()), (200, Some("2.4")));
    let evm_tx = &msgs["txs"][0]["evm_tx"];
    MockUSDC::new(world.contracts.usdc, &world.user)
        .approve(world.contracts.bridge, U256::from(40_000_000u64))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let data: Bytes = alloy::hex::decode(evm_tx["data"].as_str().unwrap())
        .unwrap()
        .into();
    let receipt = world
        .user
        .send_transaction(
            TransactionRequest::default()
                .with_to(world.contracts.bridge)
                .with_input(data),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let hash = format!("{}", receipt.transaction_hash);
    let status = world.wait_for_state(&skip, &hash, "STATE_ABANDONED").await;
    let message = status["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("refunded 40000000 USDC base units"),
        "{message}"
    );
    assert!(
        message.contains("below the minimum 98703000uakt"),
        "{message}"
    );
    assert_eq!(world.uakt_balance(&dest).await, 0);
    assert_eq!(world.usdc_balance(world.user_address).await, before);
    assert_eq!(world.usdc_balance(world.contracts.bridge).await, U256::ZERO);
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapRefunded::SIGNATURE_HASH)
            .await,
        1
    );
    assert_eq!(
        world
            .bridge_events(SkipBridge::SwapSettled::SIGNATURE_HASH)
            .await,
        0
    );
}

#[tokio::test]
async fn the_route_refuses_an_impact_above_the_tolerance_and_malformed_requests_with_one_line() {
    let world = World::start(Mining::Instant).await;
    let skip = world.start_skip("2.5").await;
    let dest = akash::demo_address();
    let url = skip.url();
    let mut msgs_body = world.route_body(&skip, "40000000");
    msgs_body["amount_out"] = json!("99700000");
    msgs_body["address_list"] = json!([world.user_address.to_string(), dest]);
    msgs_body["slippage_tolerance_percent"] = json!("0.25");
    let (status, refused) = world
        .post(&url, "/v2/fungible/msgs", msgs_body.clone())
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["message"],
        "swap price impact 0.5 % exceeds the slippage tolerance 0.25 %"
    );
    assert_eq!(refused["simulator"], "skip-go");

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v2/fungible/route",
            json!({"amount_in": "1"}),
            "invalid request body",
        ),
        (
            "/v2/fungible/route",
            {
                let mut body = world.route_body(&skip, "-5");
                body["amount_in"] = json!("-5");
                body
            },
            "amount_in must be a non-negative integer string",
        ),
        (
            "/v2/fungible/route",
            {
                let mut body = world.route_body(&skip, "1");
                body["dest_asset_denom"] = json!("uatom");
                body
            },
            "dest_asset_denom 'uatom' is not served",
        ),
        (
            "/v2/fungible/route",
            {
                let mut body = world.route_body(&skip, "1");
                body["source_asset_chain_id"] = json!("8453");
                body
            },
            "source_asset_chain_id '8453' is not served",
        ),
        (
            "/v2/fungible/msgs",
            {
                let mut body = msgs_body.clone();
                body["address_list"] = json!([world.user_address.to_string(), "cosmos1nope"]);
                body["slippage_tolerance_percent"] = json!("1");
                body
            },
            "address_list[1] 'cosmos1nope' is not an akash1… address",
        ),
        (
            "/v2/fungible/msgs",
            {
                let mut body = msgs_body.clone();
                body["slippage_tolerance_percent"] = json!("abc");
                body
            },
            "slippage_tolerance_percent 'abc' is not a non-negative decimal number",
        ),
        (
            "/v2/tx/track",
            json!({"tx_hash": "0x1234", "chain_id": "31337"}),
            "tx_hash '0x1234' is not a 32-byte hex hash",
        ),
        (
            "/simulator/price",
            json!({"fee_bps": 20000}),
            "fee_bps 20000 is more than 10000",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = world.post(&url, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(expected), "{path}: {message}");
        assert!(!message.contains('\n'), "{message}");
    }
    // Not JSON at all.
    let response = world
        .http
        .post(format!("{url}/v2/fungible/route"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.headers()["x-morpheus-simulator"].to_str().unwrap(),
        "skip-go"
    );
    // An unknown transaction, and a bad query.
    let unknown = format!("0x{}", "ab".repeat(32));
    let (status, answer) = world
        .get(
            &url,
            &format!("/v2/tx/status?tx_hash={unknown}&chain_id=31337"),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = world
        .get(&url, "/v2/tx/status?tx_hash=zz&chain_id=31337")
        .await;
    assert_eq!(status, 400);
    // Nothing was moved by any of it.
    assert_eq!(world.uakt_balance(&dest).await, 0);
    assert_eq!(world.usdc_balance(world.contracts.bridge).await, U256::ZERO);
}

#[tokio::test]
async fn the_simulator_refuses_to_start_with_a_key_that_does_not_own_the_bridge() {
    let world = World::start(Mining::Instant).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = skip::serve(
        listener,
        SkipOptions {
            evm_rpc: world.url(),
            akash_rest: world.akash.url().parse().unwrap(),
            bridge: world.contracts.bridge,
            usdc: None,
            owner_key: USER_KEY.parse().unwrap(),
            pricing: Pricing {
                price: Decimal::from_integer(1),
                fee_bps: 0,
                price_impact_pct: Decimal::from_integer(0),
            },
            poll_interval: Duration::from_millis(100),
        },
    )
    .await
    .err()
    .expect("refused");
    assert!(
        error.to_string().contains("the bridge's owner is"),
        "{error}"
    );
}
