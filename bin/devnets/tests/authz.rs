//! AuthZ and fee grants on the Akash simulator, driven over HTTP on 127.0.0.1 with
//! hand-signed transactions: an owner grants a second key (the grantee, as Morpheus's
//! ephemeral key will be) the deployment messages, escrow deposits up to a spend
//! limit and its fees; the grantee then acts with the owner's funds, and only within
//! what was granted. Messages are encoded with cosmrs's Cosmos SDK types and, for the
//! Akash escrow types cosmrs lacks, prost structs written here from the Akash protos:
//! never the simulator's own types. Blocks are made on demand (block time 0).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use cosmrs::crypto::secp256k1::SigningKey;
use cosmrs::proto::cosmos::authz::v1beta1::{
    GenericAuthorization, Grant, MsgExec, MsgGrant, MsgRevoke,
};
use cosmrs::proto::cosmos::bank::v1beta1::MsgSend;
use cosmrs::proto::cosmos::base::v1beta1::Coin as ProtoCoin;
use cosmrs::proto::cosmos::feegrant::v1beta1::{
    BasicAllowance, MsgGrantAllowance, MsgRevokeAllowance,
};
use cosmrs::tx::{Body, Fee, SignDoc, SignerInfo};
use cosmrs::{AccountId, Any};
use morpheus_executors::cosmos::{
    groups_from_json, Coin, DeploymentId, MsgCloseDeployment, MsgCreateDeployment,
};
use prost::Message;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use morpheus_devnets::akash::{serve, SimulatorHandle, SimulatorOptions};

const MSG_GRANT: &str = "/cosmos.authz.v1beta1.MsgGrant";
const MSG_REVOKE: &str = "/cosmos.authz.v1beta1.MsgRevoke";
const MSG_EXEC: &str = "/cosmos.authz.v1beta1.MsgExec";
const MSG_SEND: &str = "/cosmos.bank.v1beta1.MsgSend";
const MSG_GRANT_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.MsgGrantAllowance";
const MSG_REVOKE_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.MsgRevokeAllowance";
const GENERIC_AUTHORIZATION: &str = "/cosmos.authz.v1beta1.GenericAuthorization";
const DEPOSIT_AUTHORIZATION: &str = "/akash.escrow.v1.DepositAuthorization";
const BASIC_ALLOWANCE: &str = "/cosmos.feegrant.v1beta1.BasicAllowance";
const MSG_CREATE_DEPLOYMENT: &str = "/akash.deployment.v1beta4.MsgCreateDeployment";
const MSG_CLOSE_DEPLOYMENT: &str = "/akash.deployment.v1beta4.MsgCloseDeployment";
const MSG_ACCOUNT_DEPOSIT: &str = "/akash.escrow.v1.MsgAccountDeposit";

/// The fee every transaction here pays unless it says otherwise: 200 000 gas at the
/// simulator's default 0.025 uakt.
const FEE: u128 = 5_000;
const GAS: u64 = 200_000;

/// `akash.escrow.v1.DepositAuthorization` (`escrow/v1/authz.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct DepositAuthorization {
    #[prost(message, optional, tag = "1")]
    spend_limit: Option<ProtoCoin>,
    /// `Scope`: `deployment = 1`, `bid = 2`.
    #[prost(int32, repeated, tag = "2")]
    scopes: Vec<i32>,
}

/// `akash.escrow.id.v1.Account`.
#[derive(Clone, PartialEq, prost::Message)]
struct EscrowAccount {
    #[prost(int32, tag = "1")]
    scope: i32,
    #[prost(string, tag = "2")]
    xid: String,
}

/// `akash.base.deposit.v1.Deposit`.
#[derive(Clone, PartialEq, prost::Message)]
struct Deposit {
    #[prost(message, optional, tag = "1")]
    amount: Option<ProtoCoin>,
    /// `Source`: `balance = 1`, `grant = 2`.
    #[prost(int32, repeated, tag = "5")]
    sources: Vec<i32>,
}

/// `akash.escrow.v1.MsgAccountDeposit`.
#[derive(Clone, PartialEq, prost::Message)]
struct MsgAccountDeposit {
    #[prost(string, tag = "1")]
    signer: String,
    #[prost(message, optional, tag = "2")]
    id: Option<EscrowAccount>,
    #[prost(message, optional, tag = "3")]
    deposit: Option<Deposit>,
}

const SOURCE_BALANCE: i32 = 1;
const SOURCE_GRANT: i32 = 2;

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

    /// `GET path`: the HTTP status and the JSON body.
    async fn get_status(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.sim.url()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.get_status(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn fund(&self, address: &str, amount: u128) {
        self.post(
            "/simulator/accounts",
            json!({"address": address, "amount": amount.to_string()}),
        )
        .await;
    }

    async fn block(&self) {
        self.post("/simulator/blocks", json!({"count": 1})).await;
    }

    async fn advance_clock(&self, seconds: u64) -> Value {
        self.post("/simulator/clock", json!({"advance_s": seconds}))
            .await
    }

    async fn ledger(&self) -> Value {
        self.get("/simulator/ledger").await
    }

    async fn block_time(&self) -> DateTime<Utc> {
        let block = self
            .get("/cosmos/base/tendermint/v1beta1/blocks/latest")
            .await;
        block["block"]["header"]["time"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
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

    async fn escrow(&self, owner: &str, dseq: u64) -> Value {
        let dseq = dseq.to_string();
        self.ledger().await["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["owner"] == owner && d["dseq"] == dseq.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("deployment {owner}/{dseq} not in the ledger"))
    }

    /// `(account_number, sequence)` of an account (committed state: every test
    /// confirms an accepted transaction with a block before signing the next).
    async fn account(&self, address: &str) -> (u64, u64) {
        let account = self
            .get(&format!("/cosmos/auth/v1beta1/accounts/{address}"))
            .await;
        let number = |field: &str| account["account"][field].as_str().unwrap().parse().unwrap();
        (number("account_number"), number("sequence"))
    }

    /// Signs `messages` with `key` (fee `fee` uakt for `gas`, paid by `granter`'s
    /// allowance when given) and broadcasts them: the check's `tx_response`.
    async fn broadcast(
        &self,
        key: &Key,
        messages: Vec<Any>,
        fee: u128,
        gas: u64,
        granter: Option<&Key>,
    ) -> Value {
        let (number, sequence) = self.account(&key.address).await;
        let body = Body::new(messages, "", 0u32);
        let mut fee = Fee::from_amount_and_gas(cosmrs::Coin::new(fee, "uakt").unwrap(), gas);
        fee.granter = granter.map(|g| g.address.parse::<AccountId>().unwrap());
        let auth_info =
            SignerInfo::single_direct(Some(key.signing.public_key()), sequence).auth_info(fee);
        let raw = SignDoc {
            body_bytes: body.into_bytes().unwrap(),
            auth_info_bytes: auth_info.into_bytes().unwrap(),
            chain_id: self.sim.options().chain_id.clone(),
            account_number: number,
        }
        .sign(&key.signing)
        .unwrap();
        let tx_bytes = BASE64.encode(raw.to_bytes().unwrap());
        self.post(
            "/cosmos/tx/v1beta1/txs",
            json!({"tx_bytes": tx_bytes, "mode": "BROADCAST_MODE_SYNC"}),
        )
        .await["tx_response"]
            .clone()
    }

    /// Broadcasts with the default fee, expects acceptance, makes the block and
    /// answers the committed transaction (`tx`, `tx_response`), which succeeded.
    async fn deliver(&self, key: &Key, messages: Vec<Any>, granter: Option<&Key>) -> Value {
        let checked = self.broadcast(key, messages, FEE, GAS, granter).await;
        assert_eq!(checked["code"], 0, "refused at broadcast: {checked}");
        self.block().await;
        let hash = checked["txhash"].as_str().unwrap();
        let committed = self.get(&format!("/cosmos/tx/v1beta1/txs/{hash}")).await;
        assert_eq!(
            committed["tx_response"]["code"], 0,
            "failed in the block: {committed}"
        );
        committed
    }

    /// Broadcasts with the default fee and expects the refusal at broadcast, with
    /// nothing left in the mempool.
    async fn refused(
        &self,
        key: &Key,
        messages: Vec<Any>,
        granter: Option<&Key>,
        code: u64,
        codespace: &str,
        text: &str,
    ) {
        let response = self.broadcast(key, messages, FEE, GAS, granter).await;
        refusal(&response, code, codespace, text);
        assert_eq!(self.ledger().await["mempool"], 0);
    }
}

fn refusal(response: &Value, code: u64, codespace: &str, text: &str) {
    assert_eq!(response["code"], code, "{response}");
    assert_eq!(response["codespace"], codespace, "{response}");
    let log = response["raw_log"].as_str().unwrap();
    assert!(log.contains(text), "{text:?} not in {log:?}");
}

/// A key derived from a label, and its address.
struct Key {
    signing: SigningKey,
    address: String,
}

fn key(label: &str) -> Key {
    let signing =
        SigningKey::from_slice(&Sha256::digest(format!("morpheus authz test {label}"))).unwrap();
    let address = signing
        .public_key()
        .account_id("akash")
        .unwrap()
        .to_string();
    Key { signing, address }
}

fn any(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

/// `at` to the whole second, as the grants here are encoded.
fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap()
}

fn timestamp(at: DateTime<Utc>) -> cosmrs::proto::Timestamp {
    cosmrs::proto::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

fn uakt(amount: u128) -> ProtoCoin {
    ProtoCoin {
        denom: "uakt".to_owned(),
        amount: amount.to_string(),
    }
}

fn grant(granter: &Key, grantee: &Key, authorization: Any, expires: Option<DateTime<Utc>>) -> Any {
    any(
        MSG_GRANT,
        &MsgGrant {
            granter: granter.address.clone(),
            grantee: grantee.address.clone(),
            grant: Some(Grant {
                authorization: Some(authorization),
                expiration: expires.map(timestamp),
            }),
        },
    )
}

fn generic(msg: &str) -> Any {
    any(
        GENERIC_AUTHORIZATION,
        &GenericAuthorization {
            msg: msg.to_owned(),
        },
    )
}

fn deposit_authorization(limit: u128) -> Any {
    any(
        DEPOSIT_AUTHORIZATION,
        &DepositAuthorization {
            spend_limit: Some(uakt(limit)),
            scopes: vec![1],
        },
    )
}

fn revoke(granter: &Key, grantee: &Key, msg_type_url: &str) -> Any {
    any(
        MSG_REVOKE,
        &MsgRevoke {
            granter: granter.address.clone(),
            grantee: grantee.address.clone(),
            msg_type_url: msg_type_url.to_owned(),
        },
    )
}

fn exec(grantee: &Key, msgs: Vec<Any>) -> Any {
    any(
        MSG_EXEC,
        &MsgExec {
            grantee: grantee.address.clone(),
            msgs,
        },
    )
}

fn allowance(granter: &Key, grantee: &Key, limit: u128, expires: Option<DateTime<Utc>>) -> Any {
    any(
        MSG_GRANT_ALLOWANCE,
        &MsgGrantAllowance {
            granter: granter.address.clone(),
            grantee: grantee.address.clone(),
            allowance: Some(any(
                BASIC_ALLOWANCE,
                &BasicAllowance {
                    spend_limit: vec![uakt(limit)],
                    expiration: expires.map(timestamp),
                },
            )),
        },
    )
}

fn send(from: &Key, to: &Key, amount: u128) -> Any {
    any(
        MSG_SEND,
        &MsgSend {
            from_address: from.address.clone(),
            to_address: to.address.clone(),
            amount: vec![uakt(amount)],
        },
    )
}

/// `MsgCreateDeployment` of `owner` with one small group, funded from the owner's
/// balance (the executor's own message type: the client Morpheus signs with).
fn create_deployment(owner: &Key, dseq: u64, deposit: u128) -> Any {
    let groups = json!([{
        "name": "web",
        "requirements": {"attributes": [], "signedBy": {"allOf": [], "anyOf": []}},
        "resources": [{
            "resource": {"id": 1, "cpu": {"units": {"val": "500"}},
                         "memory": {"quantity": {"val": "536870912"}},
                         "storage": [{"name": "default", "quantity": {"val": "1073741824"}}],
                         "gpu": {"units": {"val": "0"}},
                         "endpoints": [{"sequence_number": 0}]},
            "price": {"denom": "uakt", "amount": "100"},
            "count": 1
        }]
    }]);
    MsgCreateDeployment::new(
        &owner.address,
        dseq,
        groups_from_json(&groups).unwrap(),
        [7; 32],
        &Coin::new(deposit, "uakt"),
    )
    .to_any()
}

fn close_deployment(owner: &Key, dseq: u64) -> Any {
    MsgCloseDeployment {
        id: Some(DeploymentId {
            owner: owner.address.clone(),
            dseq,
        }),
    }
    .to_any()
}

/// `MsgAccountDeposit` signed by `signer` into `owner`'s deployment `dseq`.
fn account_deposit(signer: &Key, owner: &Key, dseq: u64, amount: u128, source: i32) -> Any {
    any(
        MSG_ACCOUNT_DEPOSIT,
        &MsgAccountDeposit {
            signer: signer.address.clone(),
            id: Some(EscrowAccount {
                scope: 1,
                xid: format!("{}/{dseq}", owner.address),
            }),
            deposit: Some(Deposit {
                amount: Some(uakt(amount)),
                sources: vec![source],
            }),
        },
    )
}

#[tokio::test]
async fn a_grantee_creates_and_closes_the_owners_deployment_with_the_owners_funds() {
    let net = Devnet::start().await;
    let (owner, grantee) = (key("owner"), key("grantee"));
    net.fund(&owner.address, 10_000_000).await;
    net.fund(&grantee.address, 100_000).await;
    let expires = whole_seconds(net.block_time().await + chrono::TimeDelta::hours(1));

    // Before any grant the grantee cannot act for the owner.
    net.refused(
        &grantee,
        vec![exec(
            &grantee,
            vec![create_deployment(&owner, 7, 1_000_000)],
        )],
        None,
        2,
        "authz",
        "authorization not found",
    )
    .await;
    net.deliver(
        &owner,
        vec![
            grant(
                &owner,
                &grantee,
                generic(MSG_CREATE_DEPLOYMENT),
                Some(expires),
            ),
            grant(&owner, &grantee, generic(MSG_CLOSE_DEPLOYMENT), None),
        ],
        None,
    )
    .await;
    let owner_before = net.balance(&owner.address).await;
    assert_eq!(owner_before, 10_000_000 - FEE);

    // Signed by the grantee, the message itself is still the owner's: without the
    // MsgExec it is refused as a signer mismatch.
    net.refused(
        &grantee,
        vec![create_deployment(&owner, 7, 1_000_000)],
        None,
        8,
        "sdk",
        "pubKey does not match signer address",
    )
    .await;

    let created = net
        .deliver(
            &grantee,
            vec![exec(
                &grantee,
                vec![create_deployment(&owner, 7, 1_000_000)],
            )],
            None,
        )
        .await;
    let message = &created["tx"]["body"]["messages"][0];
    assert_eq!(message["@type"], MSG_EXEC);
    assert_eq!(message["msgs"][0]["@type"], MSG_CREATE_DEPLOYMENT);
    assert_eq!(message["msgs"][0]["id"]["owner"], owner.address.as_str());
    let deployment = net.escrow(&owner.address, 7).await;
    assert_eq!(deployment["state"], "active");
    assert_eq!(deployment["escrow"], "1000000");
    // The deposit came from the owner, the fee from the grantee.
    assert_eq!(net.balance(&owner.address).await, owner_before - 1_000_000);
    assert_eq!(net.balance(&grantee.address).await, 100_000 - FEE);
    let orders = net
        .get(&format!(
            "/akash/market/v1beta5/orders/list?filters.owner={}&filters.dseq=7",
            owner.address
        ))
        .await;
    assert_eq!(orders["orders"][0]["state"], "open", "{orders}");

    net.deliver(
        &grantee,
        vec![exec(&grantee, vec![close_deployment(&owner, 7)])],
        None,
    )
    .await;
    assert_eq!(net.escrow(&owner.address, 7).await["state"], "closed");
    // The escrow went back to the owner, not to the grantee that closed it.
    assert_eq!(net.balance(&owner.address).await, owner_before);
    assert_eq!(net.balance(&grantee.address).await, 100_000 - 2 * FEE);
    let ledger = net.ledger().await;
    let refund = &ledger["refunds"][0];
    assert_eq!(
        (refund["owner"].as_str(), refund["amount"].as_str()),
        (Some(owner.address.as_str()), Some("1000000"))
    );

    // The grants, as the gateway serves them.
    let pair = format!("granter={}&grantee={}", owner.address, grantee.address);
    let grants = net
        .get(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
        .await;
    assert_eq!(grants["grants"].as_array().unwrap().len(), 2, "{grants}");
    assert_eq!(grants["pagination"]["total"], "2");
    let one = net
        .get(&format!(
            "/cosmos/authz/v1beta1/grants?{pair}&msg_type_url={MSG_CREATE_DEPLOYMENT}"
        ))
        .await;
    assert_eq!(
        one["grants"],
        json!([{
            "authorization": {"@type": GENERIC_AUTHORIZATION, "msg": MSG_CREATE_DEPLOYMENT},
            "expiration": expires.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        }])
    );
    let (status, none) = net
        .get_status(&format!(
            "/cosmos/authz/v1beta1/grants?{pair}&msg_type_url={MSG_SEND}"
        ))
        .await;
    assert_eq!((status, none["code"].as_u64()), (404, Some(5)), "{none}");
    assert!(none["message"]
        .as_str()
        .unwrap()
        .contains("no authorization found"));
    for path in [
        format!("/cosmos/authz/v1beta1/grants/granter/{}", owner.address),
        format!("/cosmos/authz/v1beta1/grants/grantee/{}", grantee.address),
    ] {
        let listed = net.get(&path).await;
        let listed = listed["grants"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "{path}: {listed:?}");
        for entry in listed {
            assert_eq!(entry["granter"], owner.address.as_str());
            assert_eq!(entry["grantee"], grantee.address.as_str());
            assert_eq!(entry["authorization"]["@type"], GENERIC_AUTHORIZATION);
        }
        let close = listed
            .iter()
            .find(|entry| entry["authorization"]["msg"] == MSG_CLOSE_DEPLOYMENT)
            .unwrap();
        assert_eq!(
            close["expiration"],
            Value::Null,
            "the close grant never expires"
        );
    }
    let empty = net
        .get(&format!(
            "/cosmos/authz/v1beta1/grants/granter/{}",
            grantee.address
        ))
        .await;
    assert_eq!(empty["grants"], json!([]));
    assert_eq!(ledger["grants"].as_array().unwrap().len(), 2, "{ledger}");
}

#[tokio::test]
async fn grant_funded_deposits_come_from_the_owner_within_the_spend_limit() {
    let net = Devnet::start().await;
    let (owner, grantee) = (key("deposit owner"), key("deposit grantee"));
    net.fund(&owner.address, 10_000_000).await;
    net.fund(&grantee.address, 100_000).await;
    net.deliver(&owner, vec![create_deployment(&owner, 3, 500_000)], None)
        .await;
    net.deliver(
        &owner,
        vec![grant(
            &owner,
            &grantee,
            deposit_authorization(300_000),
            None,
        )],
        None,
    )
    .await;
    let owner_before = net.balance(&owner.address).await;
    let grantee_before = net.balance(&grantee.address).await;

    // A grant deposit signed by the grantee: the owner's balance pays, the limit
    // shrinks.
    let landed = net
        .deliver(
            &grantee,
            vec![account_deposit(&grantee, &owner, 3, 200_000, SOURCE_GRANT)],
            None,
        )
        .await;
    assert_eq!(
        landed["tx"]["body"]["messages"][0]["deposit"]["sources"],
        json!(["grant"])
    );
    assert_eq!(net.escrow(&owner.address, 3).await["escrow"], "700000");
    assert_eq!(net.balance(&owner.address).await, owner_before - 200_000);
    assert_eq!(net.balance(&grantee.address).await, grantee_before - FEE);
    let ledger = net.ledger().await;
    let deposit = &ledger["deposits"][0];
    assert_eq!(deposit["signer"], grantee.address.as_str());
    assert_eq!(deposit["source"], "grant");
    assert_eq!(
        deposit["funded_by"],
        json!([{"address": owner.address, "amount": "200000"}])
    );
    let pair = format!(
        "granter={}&grantee={}&msg_type_url={MSG_ACCOUNT_DEPOSIT}",
        owner.address, grantee.address
    );
    let limit = |grants: &Value| grants["grants"][0]["authorization"]["spend_limit"].clone();
    let grants = net
        .get(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
        .await;
    assert_eq!(
        grants["grants"][0]["authorization"],
        json!({"@type": DEPOSIT_AUTHORIZATION, "spend_limit": {"denom": "uakt", "amount": "100000"},
               "scopes": ["deployment"]})
    );

    // Above what is left: refused whole, nothing deposited, the limit untouched.
    net.refused(
        &grantee,
        vec![account_deposit(&grantee, &owner, 3, 150_000, SOURCE_GRANT)],
        None,
        28,
        "market",
        "deposit invalid: insufficient balance",
    )
    .await;
    net.block().await;
    assert_eq!(net.escrow(&owner.address, 3).await["escrow"], "700000");
    assert_eq!(net.balance(&owner.address).await, owner_before - 200_000);
    assert_eq!(
        limit(
            &net.get(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
                .await
        ),
        json!({"denom": "uakt", "amount": "100000"})
    );
    assert_eq!(net.ledger().await["deposits"].as_array().unwrap().len(), 1);

    // Exactly what is left: lands; the spent grant stays with a zero limit (Akash's
    // keeper ignores the authorization's Delete here) and pays for nothing more.
    net.deliver(
        &grantee,
        vec![account_deposit(&grantee, &owner, 3, 100_000, SOURCE_GRANT)],
        None,
    )
    .await;
    assert_eq!(net.escrow(&owner.address, 3).await["escrow"], "800000");
    assert_eq!(
        limit(
            &net.get(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
                .await
        ),
        json!({"denom": "uakt", "amount": "0"})
    );
    net.refused(
        &grantee,
        vec![account_deposit(&grantee, &owner, 3, 1, SOURCE_GRANT)],
        None,
        28,
        "market",
        "insufficient balance",
    )
    .await;

    // A balance deposit by the grantee still pays from its own balance.
    let grantee_now = net.balance(&grantee.address).await;
    net.deliver(
        &grantee,
        vec![account_deposit(&grantee, &owner, 3, 10_000, SOURCE_BALANCE)],
        None,
    )
    .await;
    assert_eq!(
        net.balance(&grantee.address).await,
        grantee_now - 10_000 - FEE
    );
    assert_eq!(net.escrow(&owner.address, 3).await["escrow"], "810000");
    assert_eq!(net.balance(&owner.address).await, owner_before - 300_000);

    // Through MsgExec instead (the owner's own [balance] deposit, executed by the
    // grantee): a new grant replaces the spent one, its limit is checked and spent,
    // and a grant spent to zero this way is deleted (authz honours Delete).
    net.deliver(
        &owner,
        vec![grant(&owner, &grantee, deposit_authorization(50_000), None)],
        None,
    )
    .await;
    assert_eq!(
        limit(
            &net.get(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
                .await
        ),
        json!({"denom": "uakt", "amount": "50000"})
    );
    let owners_deposit = |amount| account_deposit(&owner, &owner, 3, amount, SOURCE_BALANCE);
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![owners_deposit(60_000)])],
        None,
        5,
        "sdk",
        "exceeds the grant's spend limit",
    )
    .await;
    let owner_now = net.balance(&owner.address).await;
    net.deliver(
        &grantee,
        vec![exec(&grantee, vec![owners_deposit(50_000)])],
        None,
    )
    .await;
    assert_eq!(net.balance(&owner.address).await, owner_now - 50_000);
    assert_eq!(net.escrow(&owner.address, 3).await["escrow"], "860000");
    let (status, _) = net
        .get_status(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
        .await;
    assert_eq!(status, 404, "the exhausted grant is gone");
}

#[tokio::test]
async fn expired_revoked_and_malformed_grants_are_refused() {
    let net = Devnet::start().await;
    let (owner, grantee) = (key("expiry owner"), key("expiry grantee"));
    net.fund(&owner.address, 10_000_000).await;
    net.fund(&grantee.address, 100_000).await;
    let now = net.block_time().await;

    // What MsgGrant refuses.
    let past = now - chrono::TimeDelta::seconds(1);
    let cases = [
        (
            grant(&owner, &grantee, generic(MSG_CREATE_DEPLOYMENT), Some(past)),
            3,
            "authz",
            "expiration time of authorization should be more than current time",
        ),
        (
            grant(&owner, &owner, generic(MSG_CREATE_DEPLOYMENT), None),
            7,
            "authz",
            "grantee and granter should be different",
        ),
        (
            grant(
                &owner,
                &grantee,
                any(
                    "/cosmos.bank.v1beta1.SendAuthorization",
                    &MsgSend::default(),
                ),
                None,
            ),
            2,
            "sdk",
            "unable to resolve type URL /cosmos.bank.v1beta1.SendAuthorization",
        ),
        (
            grant(
                &owner,
                &grantee,
                generic("/akash.nothing.v1.MsgNothing"),
                None,
            ),
            29,
            "sdk",
            "/akash.nothing.v1.MsgNothing doesn't exist.",
        ),
        (
            grant(
                &owner,
                &grantee,
                Any {
                    type_url: GENERIC_AUTHORIZATION.to_owned(),
                    // `msg` and then a field 2 GenericAuthorization does not have.
                    value: [generic(MSG_SEND).value, vec![0x10, 0x01]].concat(),
                },
                None,
            ),
            2,
            "sdk",
            "unknown field number 2",
        ),
        (
            grant(
                &owner,
                &grantee,
                any(
                    DEPOSIT_AUTHORIZATION,
                    &DepositAuthorization {
                        spend_limit: Some(uakt(1)),
                        scopes: vec![],
                    },
                ),
                None,
            ),
            17,
            "escrow",
            "empty scope",
        ),
    ];
    for (message, code, codespace, text) in cases {
        net.refused(&owner, vec![message], None, code, codespace, text)
            .await;
    }

    // A grant that expires: usable before, refused after the clock moves past it.
    let expires = now + chrono::TimeDelta::seconds(120);
    net.deliver(
        &owner,
        vec![
            grant(
                &owner,
                &grantee,
                generic(MSG_CREATE_DEPLOYMENT),
                Some(expires),
            ),
            grant(&owner, &grantee, generic(MSG_CLOSE_DEPLOYMENT), None),
        ],
        None,
    )
    .await;
    net.deliver(
        &grantee,
        vec![exec(&grantee, vec![create_deployment(&owner, 1, 500_000)])],
        None,
    )
    .await;
    let clock = net.advance_clock(300).await;
    assert_eq!(clock["clock_offset_s"], 300, "{clock}");
    net.block().await;
    assert!(net.block_time().await > expires);
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![create_deployment(&owner, 2, 500_000)])],
        None,
        2,
        "authz",
        &format!(
            "failed to get grant with given granter: {}, grantee: {} & msgType: {MSG_CREATE_DEPLOYMENT} : authorization not found",
            owner.address, grantee.address
        ),
    )
    .await;
    // Expired grants are pruned: the queries no longer show it.
    let pair = format!("granter={}&grantee={}", owner.address, grantee.address);
    let grants = net
        .get(&format!("/cosmos/authz/v1beta1/grants?{pair}"))
        .await;
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(
        grants["grants"][0]["authorization"]["msg"],
        MSG_CLOSE_DEPLOYMENT
    );

    // A revoked grant: revoking works once, the exec is refused, a second revoke too.
    net.deliver(
        &owner,
        vec![revoke(&owner, &grantee, MSG_CLOSE_DEPLOYMENT)],
        None,
    )
    .await;
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![close_deployment(&owner, 1)])],
        None,
        2,
        "authz",
        "authorization not found",
    )
    .await;
    net.refused(
        &owner,
        vec![revoke(&owner, &grantee, MSG_CLOSE_DEPLOYMENT)],
        None,
        2,
        "authz",
        "authorization not found",
    )
    .await;
    assert_eq!(net.escrow(&owner.address, 1).await["state"], "active");

    // All or nothing: with a new grant for closing only, an exec that closes and
    // then creates fails whole and the deployment stays open.
    net.deliver(
        &owner,
        vec![grant(&owner, &grantee, generic(MSG_CLOSE_DEPLOYMENT), None)],
        None,
    )
    .await;
    net.refused(
        &grantee,
        vec![exec(
            &grantee,
            vec![
                close_deployment(&owner, 1),
                create_deployment(&owner, 2, 500_000),
            ],
        )],
        None,
        2,
        "authz",
        MSG_CREATE_DEPLOYMENT,
    )
    .await;
    assert_eq!(net.escrow(&owner.address, 1).await["state"], "active");
    // Granting it again (with a new expiration) makes it usable again.
    let later = net.block_time().await + chrono::TimeDelta::hours(1);
    net.deliver(
        &owner,
        vec![grant(
            &owner,
            &grantee,
            generic(MSG_CREATE_DEPLOYMENT),
            Some(later),
        )],
        None,
    )
    .await;
    net.deliver(
        &grantee,
        vec![exec(
            &grantee,
            vec![
                close_deployment(&owner, 1),
                create_deployment(&owner, 2, 500_000),
            ],
        )],
        None,
    )
    .await;
    assert_eq!(net.escrow(&owner.address, 1).await["state"], "closed");
    assert_eq!(net.escrow(&owner.address, 2).await["state"], "active");
}

#[tokio::test]
async fn a_grantee_can_neither_send_the_owners_funds_nor_funds_it_does_not_have() {
    let net = Devnet::start().await;
    let (owner, grantee) = (key("send owner"), key("send grantee"));
    net.fund(&owner.address, 10_000_000).await;
    // The grantee never holds funds: the fee allowance creates its account and pays
    // its fees.
    net.deliver(
        &owner,
        vec![
            allowance(&owner, &grantee, 1_000_000, None),
            grant(&owner, &grantee, generic(MSG_CREATE_DEPLOYMENT), None),
        ],
        None,
    )
    .await;
    let owner_before = net.balance(&owner.address).await;

    net.refused(
        &grantee,
        vec![exec(&grantee, vec![send(&owner, &grantee, 1_000)])],
        Some(&owner),
        2,
        "authz",
        &format!("msgType: {MSG_SEND} : authorization not found"),
    )
    .await;
    net.refused(
        &grantee,
        vec![send(&grantee, &owner, 1_000)],
        Some(&owner),
        5,
        "sdk",
        "spendable balance 0uakt is smaller than 1000uakt: insufficient funds",
    )
    .await;
    // Without the allowance it cannot even pay the fee.
    net.refused(
        &grantee,
        vec![send(&grantee, &owner, 1_000)],
        None,
        5,
        "sdk",
        "insufficient funds to pay for fees",
    )
    .await;
    net.block().await;
    assert_eq!(net.balance(&owner.address).await, owner_before);
    assert_eq!(net.balance(&grantee.address).await, 0);

    // The owner's own send works, as a check that the message itself is fine.
    net.deliver(&owner, vec![send(&owner, &grantee, 1_000)], None)
        .await;
    assert_eq!(net.balance(&grantee.address).await, 1_000);
}

#[tokio::test]
async fn fees_through_an_allowance_come_from_the_granter_up_to_its_limit() {
    let net = Devnet::start().await;
    let (owner, grantee, stranger) = (key("fee owner"), key("fee grantee"), key("stranger"));
    net.fund(&owner.address, 10_000_000).await;
    net.fund(&stranger.address, 1_000_000).await;
    let expires = whole_seconds(net.block_time().await + chrono::TimeDelta::hours(1));
    // The grantee has no account yet; the allowance creates it.
    let (status, _) = net
        .get_status(&format!(
            "/cosmos/auth/v1beta1/accounts/{}",
            grantee.address
        ))
        .await;
    assert_eq!(status, 404);
    net.deliver(
        &owner,
        vec![
            allowance(&owner, &grantee, 13_000, Some(expires)),
            grant(&owner, &grantee, generic(MSG_CREATE_DEPLOYMENT), None),
            grant(&owner, &grantee, generic(MSG_CLOSE_DEPLOYMENT), None),
        ],
        None,
    )
    .await;
    net.account(&grantee.address).await;
    let owner_before = net.balance(&owner.address).await;

    let paid = net
        .deliver(
            &grantee,
            vec![exec(&grantee, vec![create_deployment(&owner, 5, 500_000)])],
            Some(&owner),
        )
        .await;
    assert_eq!(
        paid["tx"]["auth_info"]["fee"]["granter"],
        owner.address.as_str()
    );
    assert_eq!(
        net.balance(&owner.address).await,
        owner_before - 500_000 - FEE
    );
    assert_eq!(net.balance(&grantee.address).await, 0);
    let path = format!(
        "/cosmos/feegrant/v1beta1/allowance/{}/{}",
        owner.address, grantee.address
    );
    assert_eq!(
        net.get(&path).await,
        json!({"allowance": {
            "granter": owner.address,
            "grantee": grantee.address,
            "allowance": {
                "@type": BASIC_ALLOWANCE,
                "spend_limit": [{"denom": "uakt", "amount": "8000"}],
                "expiration": expires.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            },
        }})
    );

    net.deliver(
        &grantee,
        vec![exec(&grantee, vec![create_deployment(&owner, 6, 500_000)])],
        Some(&owner),
    )
    .await;
    // 3000 left: a 5000 fee is refused, nothing changes.
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![close_deployment(&owner, 5)])],
        Some(&owner),
        2,
        "feegrant",
        "does not allow to pay fees for",
    )
    .await;
    let response = net
        .broadcast(
            &grantee,
            vec![exec(&grantee, vec![close_deployment(&owner, 5)])],
            FEE,
            GAS,
            Some(&owner),
        )
        .await;
    refusal(&response, 2, "feegrant", "fee limit exceeded");
    // A fee the allowance covers exactly (120 000 gas: 3000 uakt) spends it, and a
    // spent allowance is removed.
    let owner_now = net.balance(&owner.address).await;
    let checked = net
        .broadcast(
            &grantee,
            vec![exec(&grantee, vec![close_deployment(&owner, 5)])],
            3_000,
            120_000,
            Some(&owner),
        )
        .await;
    assert_eq!(checked["code"], 0, "{checked}");
    net.block().await;
    assert_eq!(net.escrow(&owner.address, 5).await["state"], "closed");
    assert_eq!(
        net.balance(&owner.address).await,
        owner_now - 3_000 + 500_000,
        "the fee from the owner, the refund to the owner"
    );
    assert_eq!(net.balance(&grantee.address).await, 0);
    let (status, gone) = net.get_status(&path).await;
    assert_eq!((status, gone["code"].as_u64()), (500, Some(2)), "{gone}");
    assert!(gone["message"]
        .as_str()
        .unwrap()
        .contains("fee-grant not found"));
    assert_eq!(net.ledger().await["fee_allowances"], json!([]));
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![close_deployment(&owner, 6)])],
        Some(&owner),
        5,
        "feegrant",
        "fee-grant not found",
    )
    .await;
    // A granter that never granted an allowance.
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![close_deployment(&owner, 6)])],
        Some(&stranger),
        5,
        "feegrant",
        &format!(
            "{} does not allow to pay fees for {}",
            stranger.address, grantee.address
        ),
    )
    .await;
    assert_eq!(net.balance(&stranger.address).await, 1_000_000);

    // Allowances are not replaced; revoking works once.
    net.deliver(
        &owner,
        vec![allowance(&owner, &grantee, 50_000, None)],
        None,
    )
    .await;
    net.refused(
        &owner,
        vec![allowance(&owner, &grantee, 60_000, None)],
        None,
        18,
        "sdk",
        "fee allowance already exists",
    )
    .await;
    let ledger = net.ledger().await;
    assert_eq!(
        ledger["fee_allowances"],
        json!([{"granter": owner.address, "grantee": grantee.address,
                "spend_limit": [{"denom": "uakt", "amount": "50000"}], "expiration": null}])
    );
    let issued = net
        .get(&format!(
            "/cosmos/feegrant/v1beta1/issued/{}",
            owner.address
        ))
        .await;
    assert_eq!(
        issued["allowances"].as_array().unwrap().len(),
        1,
        "{issued}"
    );
    let revoke_allowance = any(
        MSG_REVOKE_ALLOWANCE,
        &MsgRevokeAllowance {
            granter: owner.address.clone(),
            grantee: grantee.address.clone(),
        },
    );
    net.deliver(&owner, vec![revoke_allowance.clone()], None)
        .await;
    net.refused(
        &owner,
        vec![revoke_allowance],
        None,
        5,
        "feegrant",
        "fee-grant not found",
    )
    .await;
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![close_deployment(&owner, 6)])],
        Some(&owner),
        5,
        "feegrant",
        "fee-grant not found",
    )
    .await;
}

#[tokio::test]
async fn an_allowance_expires_with_the_clock() {
    let net = Devnet::start().await;
    let (owner, grantee) = (key("clock owner"), key("clock grantee"));
    net.fund(&owner.address, 10_000_000).await;
    let expires = net.block_time().await + chrono::TimeDelta::seconds(60);
    net.deliver(
        &owner,
        vec![
            allowance(&owner, &grantee, 1_000_000, Some(expires)),
            grant(&owner, &grantee, generic(MSG_CREATE_DEPLOYMENT), None),
        ],
        None,
    )
    .await;
    net.deliver(
        &grantee,
        vec![exec(&grantee, vec![create_deployment(&owner, 1, 500_000)])],
        Some(&owner),
    )
    .await;
    net.advance_clock(120).await;
    net.block().await;
    assert_eq!(net.ledger().await["fee_allowances"], json!([]));
    net.refused(
        &grantee,
        vec![exec(&grantee, vec![create_deployment(&owner, 2, 500_000)])],
        Some(&owner),
        5,
        "feegrant",
        "fee-grant not found",
    )
    .await;
    // A new allowance may not already be expired.
    net.refused(
        &owner,
        vec![allowance(&owner, &grantee, 1_000, Some(expires))],
        None,
        18,
        "sdk",
        "expiration is before current block time",
    )
    .await;
}
