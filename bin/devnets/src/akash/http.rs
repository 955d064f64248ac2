//! HTTP routes of the simulator: the chain's REST subset in the shapes real nodes
//! answer with, and the `/simulator/…` admin API.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use chrono::{DateTime, Utc};

use super::chain::{
    rfc3339, Account, AuthzGrant, Bid, BidState, Chain, DecodedTx, Deployment, DeploymentState,
    FeeAllowance, NewDeployment, OrderState, ReferencedCredit, SimulatedProvider, TxRecord,
    SECP256K1_PUBKEY_TYPE_URL,
};
use super::dec::Dec;
use super::messages::{
    deposit_scope_name, valid_denom, Attribute, Authorization, ChainMessage, DepositMessage,
    GroupSpec, BASIC_ALLOWANCE,
};
use super::{Shared, SIMULATOR_HEADER_VALUE};

/// A failure armed through `POST /simulator/faults`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fault {
    /// Requests whose path starts with this.
    path_prefix: String,
    /// Only this method (default: any).
    #[serde(default)]
    method: Option<String>,
    /// What to answer.
    kind: FaultKind,
    /// How many requests to fail.
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    /// HTTP 500 with an HTML body, as a failing proxy answers.
    #[serde(rename = "http_500")]
    Http500,
    /// HTTP 200 with a truncated JSON body.
    MalformedJson,
}

/// The router: chain API, admin API, a fallback that names the simulator, and a layer
/// that marks every response and injects armed faults.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/cosmos/auth/v1beta1/accounts/{address}", get(account))
        .route("/cosmos/bank/v1beta1/balances/{address}", get(balances))
        .route(
            "/cosmos/base/tendermint/v1beta1/blocks/latest",
            get(latest_block),
        )
        .route("/cosmos/base/tendermint/v1beta1/node_info", get(node_info))
        .route("/cosmos/tx/v1beta1/simulate", post(simulate))
        .route("/cosmos/tx/v1beta1/txs", post(broadcast))
        .route("/cosmos/tx/v1beta1/txs/{hash}", get(tx_by_hash))
        .route(
            "/akash/deployment/{version}/deployments/list",
            get(deployments_list),
        )
        .route(
            "/akash/deployment/{version}/deployments/info",
            get(deployment_info),
        )
        .route("/akash/market/{version}/leases/list", get(leases_list))
        .route("/akash/market/{version}/orders/list", get(orders_list))
        .route("/akash/market/{version}/bids/list", get(bids_list))
        .route(
            "/akash/provider/{version}/providers/{address}",
            get(provider_info),
        )
        .route("/cosmos/authz/v1beta1/grants", get(authz_grants))
        .route(
            "/cosmos/authz/v1beta1/grants/granter/{granter}",
            get(authz_granter_grants),
        )
        .route(
            "/cosmos/authz/v1beta1/grants/grantee/{grantee}",
            get(authz_grantee_grants),
        )
        .route(
            "/cosmos/feegrant/v1beta1/allowance/{granter}/{grantee}",
            get(feegrant_allowance),
        )
        .route(
            "/cosmos/feegrant/v1beta1/allowances/{grantee}",
            get(feegrant_allowances),
        )
        .route(
            "/cosmos/feegrant/v1beta1/issued/{granter}",
            get(feegrant_issued),
        )
        .route(
            "/simulator/providers",
            post(admin_register_provider).get(admin_providers),
        )
        .route("/simulator/clock", post(admin_clock))
        .route("/simulator/accounts", post(admin_fund))
        .route("/simulator/credits/{reference}", get(admin_credit))
        .route("/simulator/deployments", post(admin_deployment))
        .route("/simulator/blocks", post(admin_blocks))
        .route("/simulator/ledger", get(admin_ledger))
        .route(
            "/simulator/faults",
            post(admin_arm_fault).delete(admin_clear_faults),
        )
        .fallback(not_served)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            simulator_layer,
        ))
        .with_state(shared)
}

async fn simulator_layer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let fault = take_fault(&shared, request.method(), request.uri().path());
    let mut response = match fault {
        Some(FaultKind::Http500) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><body>502 upstream hiccup (injected by the simulator)</body></html>",
        )
            .into_response(),
        Some(FaultKind::MalformedJson) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"injected": "by the simulator", "trunc"#,
        )
            .into_response(),
        None => next.run(request).await,
    };
    response.headers_mut().insert(
        "x-morpheus-simulator",
        HeaderValue::from_static(SIMULATOR_HEADER_VALUE),
    );
    response
}

fn take_fault(shared: &Shared, method: &Method, path: &str) -> Option<FaultKind> {
    if path.starts_with("/simulator/") {
        return None;
    }
    let mut faults = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
    let index = faults.iter().position(|fault| {
        path.starts_with(&fault.path_prefix)
            && fault
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
    })?;
    let kind = faults[index].kind;
    faults[index].count -= 1;
    if faults[index].count == 0 {
        faults.remove(index);
    }
    Some(kind)
}

/// An error in the gRPC-gateway shape.
struct ApiError {
    status: StatusCode,
    code: i64,
    message: String,
}

impl ApiError {
    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: 5,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 3,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message, "details": []})),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn not_served(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "{method} {} is not served by the Akash devnet simulator",
        uri.path()
    ))
}

fn coin(denom: &str, amount: u128) -> Value {
    json!({"denom": denom, "amount": amount.to_string()})
}

/// A `DecCoin` as the SDK writes it: always 18 decimals (`"100.000000000000000000"`).
/// Amounts beyond what a `LegacyDec` holds are written as its largest value.
fn dec_coin(denom: &str, amount: u128) -> Value {
    const ONE: u128 = 1_000_000_000_000_000_000;
    let amount = match amount.checked_mul(ONE) {
        Some(_) => format!("{amount}.{:018}", 0),
        None => format!("{}.{:018}", u128::MAX / ONE, u128::MAX % ONE),
    };
    json!({"denom": denom, "amount": amount})
}

/// A `DecCoin` from an exact decimal, as the SDK writes it (18 decimals).
fn dec_price(denom: &str, amount: Dec) -> Value {
    json!({"denom": denom, "amount": amount.to_sdk_string()})
}

fn attributes_json(list: &[Attribute]) -> Vec<Value> {
    list.iter()
        .map(|a| json!({"key": a.key, "value": a.value}))
        .collect()
}

/// A group spec in the gRPC-gateway shape (`ResourceValue.val` as its decimal text,
/// the endpoint kind by name, prices as 18-decimal `DecCoin`s).
fn group_spec_json(spec: &GroupSpec) -> Value {
    let resources: Vec<Value> = spec
        .resources
        .iter()
        .map(|unit| {
            let r = &unit.resources;
            json!({
                "resource": {
                    "id": r.id,
                    "cpu": {"units": {"val": r.cpu.value.to_string()}, "attributes": attributes_json(&r.cpu.attributes)},
                    "memory": {"quantity": {"val": r.memory.value.to_string()}, "attributes": attributes_json(&r.memory.attributes)},
                    "storage": r.storage.iter().map(|volume| json!({
                        "name": volume.name,
                        "quantity": {"val": volume.quantity.value.to_string()},
                        "attributes": attributes_json(&volume.quantity.attributes),
                    })).collect::<Vec<_>>(),
                    "gpu": {"units": {"val": r.gpu.value.to_string()}, "attributes": attributes_json(&r.gpu.attributes)},
                    "endpoints": r.endpoints.iter().map(|e| json!({
                        "kind": e.kind_name(),
                        "sequence_number": e.sequence_number,
                    })).collect::<Vec<_>>(),
                },
                "count": unit.count,
                "price": dec_price(&unit.denom, unit.price),
            })
        })
        .collect();
    json!({
        "name": spec.name,
        "requirements": {
            "signed_by": {
                "all_of": spec.requirements.signed_by_all_of,
                "any_of": spec.requirements.signed_by_any_of,
            },
            "attributes": attributes_json(&spec.requirements.attributes),
        },
        "resources": resources,
    })
}

fn pagination(total: usize) -> Value {
    json!({"next_key": null, "total": total.to_string()})
}

fn account_json(account: &Account) -> Value {
    let pub_key = account
        .pub_key
        .as_ref()
        .map(|key| json!({"@type": SECP256K1_PUBKEY_TYPE_URL, "key": BASE64.encode(key)}));
    json!({
        "@type": "/cosmos.auth.v1beta1.BaseAccount",
        "address": account.address,
        "pub_key": pub_key,
        "account_number": account.account_number.to_string(),
        "sequence": account.sequence.to_string(),
    })
}

async fn account(State(shared): State<Arc<Shared>>, Path(address): Path<String>) -> ApiResult {
    shared.with_chain(|chain| match chain.accounts.get(&address) {
        Some(account) => Ok(Json(json!({"account": account_json(account)}))),
        None => Err(ApiError::not_found(format!("account {address} not found"))),
    })
}

async fn balances(State(shared): State<Arc<Shared>>, Path(address): Path<String>) -> ApiResult {
    shared.with_chain(|chain| {
        let balances: Vec<Value> = chain
            .accounts
            .get(&address)
            .map(|account| {
                account
                    .balances
                    .iter()
                    .filter(|(_, amount)| **amount > 0)
                    .map(|(denom, amount)| coin(denom, *amount))
                    .collect()
            })
            .unwrap_or_default();
        let total = balances.len();
        Ok(Json(
            json!({"balances": balances, "pagination": pagination(total)}),
        ))
    })
}

async fn latest_block(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.with_chain(|chain| {
        let block_hash = Sha256::digest(format!("{}/{}", chain.chain_id, chain.height));
        let header = json!({
            "version": {"block": "11", "app": "0"},
            "chain_id": chain.chain_id,
            "height": chain.height.to_string(),
            "time": chain.block_time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "proposer_address": "",
        });
        let block = json!({
            "header": header,
            "data": {"txs": []},
            "evidence": {"evidence": []},
            "last_commit": null,
        });
        Ok(Json(json!({
            "block_id": {"hash": BASE64.encode(block_hash), "part_set_header": {"total": 1, "hash": ""}},
            "block": block,
            "sdk_block": block,
        })))
    })
}

async fn node_info(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.with_chain(|chain| {
        Ok(Json(json!({
            "default_node_info": {
                "network": chain.chain_id,
                "moniker": "morpheus-akash-devnet-simulator",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "application_version": {
                "name": "akash-devnet-simulator",
                "app_name": "morpheus devnet akash (simulator, not a chain)",
                "version": env!("CARGO_PKG_VERSION"),
            },
        })))
    })
}

/// Body of `simulate` and `txs`. `mode` is accepted and ignored: the simulator always
/// answers like `BROADCAST_MODE_SYNC` (the only mode current nodes support besides
/// async).
#[derive(Deserialize)]
struct TxBytes {
    tx_bytes: String,
}

fn decode_b64(text: &str) -> Result<Vec<u8>, ApiError> {
    BASE64
        .decode(text.trim())
        .map_err(|error| ApiError::invalid(format!("tx_bytes is not base64: {error}")))
}

async fn simulate(State(shared): State<Arc<Shared>>, Json(body): Json<TxBytes>) -> ApiResult {
    let bytes = decode_b64(&body.tx_bytes)?;
    shared.with_chain(|chain| match chain.simulate(&bytes) {
        Ok(gas_used) => Ok(Json(json!({
            "gas_info": {"gas_wanted": "0", "gas_used": gas_used.to_string()},
            "result": {"data": "", "log": "", "events": [], "msg_responses": []},
        }))),
        // The SDK answers a failing simulation with gRPC Unknown (HTTP 500).
        Err(message) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: 2,
            message,
        }),
    })
}

async fn broadcast(State(shared): State<Arc<Shared>>, Json(body): Json<TxBytes>) -> ApiResult {
    let bytes = decode_b64(&body.tx_bytes)?;
    shared.with_chain(|chain| {
        let outcome = chain.check_tx(&bytes);
        Ok(Json(json!({"tx_response": {
            "height": "0",
            "txhash": outcome.hash,
            "codespace": outcome.result.codespace,
            "code": outcome.result.code,
            "data": "",
            "raw_log": outcome.result.log,
            "logs": [],
            "info": "",
            "gas_wanted": outcome.gas_wanted.to_string(),
            "gas_used": outcome.gas_used.to_string(),
            "tx": null,
            "timestamp": "",
            "events": [],
        }})))
    })
}

async fn tx_by_hash(State(shared): State<Arc<Shared>>, Path(hash): Path<String>) -> ApiResult {
    let hash = hash.to_ascii_uppercase();
    shared.with_chain(|chain| match chain.tx(&hash) {
        Some(record) => Ok(Json(json!({
            "tx": tx_json(&record.tx, &chain.denom),
            "tx_response": tx_response_json(record, &chain.denom),
        }))),
        None => Err(ApiError::not_found(format!("tx not found: {hash}"))),
    })
}

fn coins_json<'a>(coins: impl IntoIterator<Item = (&'a String, &'a u128)>) -> Vec<Value> {
    coins
        .into_iter()
        .map(|(denom, amount)| coin(denom, *amount))
        .collect()
}

fn expiration_json(expiration: Option<DateTime<Utc>>) -> Value {
    expiration.map_or(Value::Null, |time| Value::String(rfc3339(time)))
}

/// An authorization as the gateway writes its `Any`: `@type` and its fields.
fn authorization_json(authorization: &Authorization) -> Value {
    match authorization {
        Authorization::Generic { msg } => json!({"@type": authorization.type_url(), "msg": msg}),
        Authorization::Deposit {
            spend_limit,
            denom,
            scopes,
        } => json!({
            "@type": authorization.type_url(),
            "spend_limit": coin(denom, *spend_limit),
            "scopes": scopes.iter().map(|s| deposit_scope_name(*s)).collect::<Vec<_>>(),
        }),
    }
}

/// A `BasicAllowance` as the gateway writes its `Any`.
fn basic_allowance_json(
    spend_limit: &BTreeMap<String, u128>,
    expiration: Option<DateTime<Utc>>,
) -> Value {
    json!({
        "@type": BASIC_ALLOWANCE,
        "spend_limit": coins_json(spend_limit),
        "expiration": expiration_json(expiration),
    })
}

/// One message of a transaction in the gateway's JSON shape.
fn message_json(message: &ChainMessage) -> Value {
    match message {
        ChainMessage::Deposit(deposit, source) => {
            let amount = coin(&deposit.denom, deposit.amount);
            match deposit.message {
                DepositMessage::AccountDeposit => json!({
                    "@type": deposit.message.type_url(),
                    "signer": deposit.signer,
                    "id": {"scope": "deployment", "xid": format!("{}/{}", deposit.owner, deposit.dseq)},
                    "deposit": {"amount": amount, "sources": [source.as_str()]},
                }),
                DepositMessage::DepositDeployment => json!({
                    "@type": deposit.message.type_url(),
                    "id": {"owner": deposit.owner, "dseq": deposit.dseq.to_string()},
                    "amount": amount,
                    "depositor": deposit.signer,
                }),
            }
        }
        ChainMessage::CreateDeployment(create) => json!({
            "@type": message.type_url(),
            "id": {"owner": create.owner, "dseq": create.dseq.to_string()},
            "groups": create.groups.iter().map(group_spec_json).collect::<Vec<_>>(),
            "hash": BASE64.encode(&create.hash),
            "deposit": {"amount": coin(&create.denom, create.deposit), "sources": ["balance"]},
        }),
        ChainMessage::CloseDeployment(close) => json!({
            "@type": message.type_url(),
            "id": {"owner": close.owner, "dseq": close.dseq.to_string()},
        }),
        ChainMessage::CreateLease(bid) => json!({
            "@type": message.type_url(),
            "bid_id": {
                "owner": bid.owner,
                "dseq": bid.dseq.to_string(),
                "gseq": bid.gseq,
                "oseq": bid.oseq,
                "provider": bid.provider,
                "bseq": bid.bseq,
            },
        }),
        ChainMessage::Grant(grant) => json!({
            "@type": message.type_url(),
            "granter": grant.granter,
            "grantee": grant.grantee,
            "grant": {
                "authorization": authorization_json(&grant.authorization),
                "expiration": expiration_json(grant.expiration),
            },
        }),
        ChainMessage::Revoke(revoke) => json!({
            "@type": message.type_url(),
            "granter": revoke.granter,
            "grantee": revoke.grantee,
            "msg_type_url": revoke.msg_type_url,
        }),
        ChainMessage::Exec(exec) => json!({
            "@type": message.type_url(),
            "grantee": exec.grantee,
            "msgs": exec.msgs.iter().map(message_json).collect::<Vec<_>>(),
        }),
        ChainMessage::GrantAllowance(allowance) => json!({
            "@type": message.type_url(),
            "granter": allowance.granter,
            "grantee": allowance.grantee,
            "allowance": basic_allowance_json(&allowance.spend_limit, allowance.expiration),
        }),
        ChainMessage::RevokeAllowance(allowance) => json!({
            "@type": message.type_url(),
            "granter": allowance.granter,
            "grantee": allowance.grantee,
        }),
        ChainMessage::Send(send) => json!({
            "@type": message.type_url(),
            "from_address": send.from,
            "to_address": send.to,
            "amount": send.amount.iter().map(|(denom, amount)| coin(denom, *amount)).collect::<Vec<_>>(),
        }),
    }
}

fn tx_json(tx: &DecodedTx, denom: &str) -> Value {
    let public_key = tx
        .pub_key
        .as_ref()
        .map(|key| json!({"@type": SECP256K1_PUBKEY_TYPE_URL, "key": BASE64.encode(key)}));
    json!({
        "@type": "/cosmos.tx.v1beta1.Tx",
        "body": {
            "messages": tx.messages.iter().map(message_json).collect::<Vec<_>>(),
            "memo": tx.memo,
            "timeout_height": "0",
            "extension_options": [],
            "non_critical_extension_options": [],
        },
        "auth_info": {
            "signer_infos": [{
                "public_key": public_key,
                "mode_info": {"single": {"mode": "SIGN_MODE_DIRECT"}},
                "sequence": tx.sequence.to_string(),
            }],
            "fee": {
                "amount": [coin(denom, tx.fee)],
                "gas_limit": tx.gas_limit.to_string(),
                "payer": "",
                "granter": tx.fee_granter.as_deref().unwrap_or(""),
            },
        },
        "signatures": [BASE64.encode(&tx.signature)],
    })
}

fn tx_response_json(record: &TxRecord, denom: &str) -> Value {
    json!({
        "height": record.height.to_string(),
        "txhash": record.tx.hash,
        "codespace": record.result.codespace,
        "code": record.result.code,
        "data": "",
        "raw_log": record.result.log,
        "logs": [],
        "info": "",
        "gas_wanted": record.tx.gas_limit.to_string(),
        "gas_used": record.gas_used.to_string(),
        "tx": tx_json(&record.tx, denom),
        "timestamp": record.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "events": [],
    })
}

/// Which response shapes a path version selects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Current,
    Legacy,
}

fn deployment_shape(version: &str) -> Result<Shape, ApiError> {
    match version {
        "v1beta4" => Ok(Shape::Current),
        "v1beta3" => Ok(Shape::Legacy),
        other => Err(ApiError::not_found(format!(
            "deployment API {other} is not served by the Akash devnet simulator (v1beta4, v1beta3)"
        ))),
    }
}

fn lease_shape(version: &str) -> Result<Shape, ApiError> {
    match version {
        "v1beta5" => Ok(Shape::Current),
        "v1beta4" => Ok(Shape::Legacy),
        other => Err(ApiError::not_found(format!(
            "market API {other} is not served by the Akash devnet simulator (v1beta5, v1beta4)"
        ))),
    }
}

fn escrow_state(deployment: &Deployment) -> &'static str {
    match deployment.state {
        DeploymentState::Active => "open",
        DeploymentState::Closed => "closed",
    }
}

fn deployment_json(chain: &Chain, deployment: &Deployment, shape: Shape) -> Value {
    let denom = &chain.denom;
    let owner = &deployment.owner;
    let dseq = deployment.dseq.to_string();
    let xid = format!("{owner}/{dseq}");
    let groups = if deployment.groups.is_empty() {
        // Deployments made by the admin API have no groups of their own; they show
        // the one group their leases are numbered in.
        let group_state = match deployment.state {
            DeploymentState::Active => "open",
            DeploymentState::Closed => "closed",
        };
        json!([{
            "id": {"owner": owner, "dseq": dseq, "gseq": 1},
            "state": group_state,
            "group_spec": {"name": "simulated", "requirements": {"signed_by": {"all_of": [], "any_of": []}, "attributes": []}, "resources": []},
            "created_at": deployment.created_at.to_string(),
        }])
    } else {
        deployment
            .groups
            .iter()
            .map(|group| {
                json!({
                    "id": {"owner": owner, "dseq": dseq, "gseq": group.gseq},
                    "state": group.state.as_str(),
                    "group_spec": group_spec_json(&group.spec),
                    "created_at": deployment.created_at.to_string(),
                })
            })
            .collect()
    };
    match shape {
        Shape::Current => json!({
            "deployment": {
                "id": {"owner": owner, "dseq": dseq},
                "state": deployment.state.as_str(),
                "hash": BASE64.encode(&deployment.hash),
                "created_at": deployment.created_at.to_string(),
            },
            "groups": groups,
            "escrow_account": {
                "id": {"scope": "deployment", "xid": xid},
                "state": {
                    "owner": owner,
                    "state": escrow_state(deployment),
                    "transferred": [dec_coin(denom, deployment.transferred)],
                    "settled_at": deployment.settled_at.to_string(),
                    "funds": [dec_coin(denom, deployment.escrow)],
                    "deposits": [],
                },
            },
        }),
        Shape::Legacy => json!({
            "deployment": {
                "deployment_id": {"owner": owner, "dseq": dseq},
                "state": deployment.state.as_str(),
                "version": "",
                "created_at": deployment.created_at.to_string(),
            },
            "groups": groups,
            "escrow_account": {
                "id": {"scope": "deployment", "xid": xid},
                "owner": owner,
                "state": escrow_state(deployment),
                "balance": dec_coin(denom, deployment.escrow),
                "transferred": dec_coin(denom, deployment.transferred),
                "settled_at": deployment.settled_at.to_string(),
                "depositor": owner,
                "funds": dec_coin(denom, 0),
            },
        }),
    }
}

fn parse_dseq_param(value: Option<&String>, name: &str) -> Result<Option<u64>, ApiError> {
    value
        .filter(|text| !text.is_empty())
        .map(|text| {
            text.parse()
                .map_err(|_| ApiError::invalid(format!("{name} '{text}' is not a number")))
        })
        .transpose()
}

fn parse_state_param(value: Option<&String>) -> Result<Option<DeploymentState>, ApiError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(None),
        Some("active") => Ok(Some(DeploymentState::Active)),
        Some("closed") => Ok(Some(DeploymentState::Closed)),
        Some(other) => Err(ApiError::invalid(format!("invalid state value '{other}'"))),
    }
}

async fn deployments_list(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let shape = deployment_shape(&version)?;
    let owner = query.get("filters.owner").filter(|o| !o.is_empty());
    let dseq = parse_dseq_param(query.get("filters.dseq"), "filters.dseq")?;
    let state = parse_state_param(query.get("filters.state"))?;
    shared.with_chain(|chain| {
        let deployments: Vec<Value> = chain
            .deployments
            .values()
            .filter(|d| owner.is_none_or(|owner| &d.owner == owner))
            .filter(|d| dseq.is_none_or(|dseq| d.dseq == dseq))
            .filter(|d| state.is_none_or(|state| d.state == state))
            .map(|d| deployment_json(chain, d, shape))
            .collect();
        let total = deployments.len();
        Ok(Json(
            json!({"deployments": deployments, "pagination": pagination(total)}),
        ))
    })
}

async fn deployment_info(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let shape = deployment_shape(&version)?;
    let owner = query
        .get("id.owner")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| ApiError::invalid("id.owner is required"))?;
    let dseq = parse_dseq_param(query.get("id.dseq"), "id.dseq")?
        .ok_or_else(|| ApiError::invalid("id.dseq is required"))?;
    shared.with_chain(
        |chain| match chain.deployments.get(&(owner.clone(), dseq)) {
            Some(deployment) => Ok(Json(deployment_json(chain, deployment, shape))),
            None => Err(ApiError::not_found(format!(
                "deployment {owner}/{dseq} not found: deployment not found"
            ))),
        },
    )
}

async fn leases_list(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let shape = lease_shape(&version)?;
    let owner = query.get("filters.owner").filter(|o| !o.is_empty());
    let provider = query.get("filters.provider").filter(|p| !p.is_empty());
    let dseq = parse_dseq_param(query.get("filters.dseq"), "filters.dseq")?;
    let state = parse_state_param(query.get("filters.state"))?;
    shared.with_chain(|chain| {
        let denom = &chain.denom;
        let mut leases = Vec::new();
        for deployment in chain.deployments.values() {
            if owner.is_some_and(|owner| &deployment.owner != owner)
                || dseq.is_some_and(|dseq| deployment.dseq != dseq)
            {
                continue;
            }
            for lease in &deployment.leases {
                if state.is_some_and(|state| lease.state != state)
                    || provider.is_some_and(|provider| &lease.provider != provider)
                {
                    continue;
                }
                let id = json!({
                    "owner": deployment.owner,
                    "dseq": deployment.dseq.to_string(),
                    "gseq": lease.gseq,
                    "oseq": lease.oseq,
                    "provider": lease.provider,
                });
                let payment_state = match lease.state {
                    DeploymentState::Active => "open",
                    DeploymentState::Closed => "closed",
                };
                let xid = format!("{}/{}", deployment.owner, deployment.dseq);
                let payment_xid = format!("{}/{}/{}", lease.gseq, lease.oseq, lease.provider);
                leases.push(match shape {
                    Shape::Current => {
                        let mut id = id;
                        id["bseq"] = json!(lease.bseq);
                        json!({
                            "lease": {
                                "id": id,
                                "state": lease.state.as_str(),
                                "price": dec_price(denom, lease.price),
                                "created_at": lease.created_at.to_string(),
                                "closed_on": lease.closed_on.to_string(),
                            },
                            "escrow_payment": {
                                "id": {"aid": {"scope": "deployment", "xid": xid}, "xid": payment_xid},
                                "state": {
                                    "owner": lease.provider,
                                    "state": payment_state,
                                    "rate": dec_price(denom, lease.price),
                                    "balance": dec_coin(denom, 0),
                                    "unsettled": dec_coin(denom, 0),
                                    "withdrawn": coin(denom, 0),
                                },
                            },
                        })
                    }
                    Shape::Legacy => json!({
                        "lease": {
                            "lease_id": id,
                            "state": lease.state.as_str(),
                            "price": dec_price(denom, lease.price),
                            "created_at": lease.created_at.to_string(),
                            "closed_on": lease.closed_on.to_string(),
                        },
                        "escrow_payment": {
                            "account_id": {"scope": "deployment", "xid": xid},
                            "payment_id": payment_xid,
                            "owner": lease.provider,
                            "state": payment_state,
                            "rate": dec_price(denom, lease.price),
                            "balance": dec_coin(denom, 0),
                            "withdrawn": coin(denom, 0),
                        },
                    }),
                });
            }
        }
        let total = leases.len();
        Ok(Json(json!({"leases": leases, "pagination": pagination(total)})))
    })
}

fn market_v1beta5(version: &str) -> Result<(), ApiError> {
    match version {
        "v1beta5" => Ok(()),
        other => Err(ApiError::not_found(format!(
            "market API {other} orders and bids are not served by the Akash devnet simulator (v1beta5)"
        ))),
    }
}

fn parse_seq_param(value: Option<&String>, name: &str) -> Result<Option<u32>, ApiError> {
    value
        .filter(|text| !text.is_empty())
        .map(|text| {
            text.parse()
                .map_err(|_| ApiError::invalid(format!("{name} '{text}' is not a number")))
        })
        .transpose()
}

/// The filters the order and bid lists share.
struct MarketFilters {
    owner: Option<String>,
    dseq: Option<u64>,
    gseq: Option<u32>,
    oseq: Option<u32>,
    provider: Option<String>,
}

impl MarketFilters {
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let text = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
        Ok(Self {
            owner: text("filters.owner"),
            dseq: parse_dseq_param(query.get("filters.dseq"), "filters.dseq")?,
            gseq: parse_seq_param(query.get("filters.gseq"), "filters.gseq")?,
            oseq: parse_seq_param(query.get("filters.oseq"), "filters.oseq")?,
            provider: text("filters.provider"),
        })
    }

    fn deployment(&self, deployment: &Deployment) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|owner| &deployment.owner == owner)
            && self.dseq.is_none_or(|dseq| deployment.dseq == dseq)
    }

    fn order(&self, gseq: u32, oseq: u32) -> bool {
        self.gseq.is_none_or(|g| g == gseq) && self.oseq.is_none_or(|o| o == oseq)
    }
}

fn parse_order_state(value: Option<&String>) -> Result<Option<OrderState>, ApiError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(None),
        Some("open") => Ok(Some(OrderState::Open)),
        Some("active") => Ok(Some(OrderState::Active)),
        Some("closed") => Ok(Some(OrderState::Closed)),
        Some(other) => Err(ApiError::invalid(format!(
            "invalid order state value '{other}' (open, active, closed)"
        ))),
    }
}

fn parse_bid_state(value: Option<&String>) -> Result<Option<BidState>, ApiError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(None),
        Some("open") => Ok(Some(BidState::Open)),
        Some("active") => Ok(Some(BidState::Active)),
        Some("lost") => Ok(Some(BidState::Lost)),
        Some("closed") => Ok(Some(BidState::Closed)),
        Some(other) => Err(ApiError::invalid(format!(
            "invalid bid state value '{other}' (open, active, lost, closed)"
        ))),
    }
}

async fn orders_list(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    market_v1beta5(&version)?;
    let filters = MarketFilters::parse(&query)?;
    let state = parse_order_state(query.get("filters.state"))?;
    shared.with_chain(|chain| {
        let mut orders = Vec::new();
        for deployment in chain.deployments.values().filter(|d| filters.deployment(d)) {
            for order in &deployment.orders {
                if !filters.order(order.gseq, order.oseq)
                    || state.is_some_and(|state| order.state != state)
                {
                    continue;
                }
                let spec = deployment
                    .groups
                    .iter()
                    .find(|g| g.gseq == order.gseq)
                    .map(|g| group_spec_json(&g.spec));
                orders.push(json!({
                    "id": {
                        "owner": deployment.owner,
                        "dseq": deployment.dseq.to_string(),
                        "gseq": order.gseq,
                        "oseq": order.oseq,
                    },
                    "state": order.state.as_str(),
                    "spec": spec,
                    "created_at": order.created_at.to_string(),
                }));
            }
        }
        let total = orders.len();
        Ok(Json(
            json!({"orders": orders, "pagination": pagination(total)}),
        ))
    })
}

fn bid_json(deployment: &Deployment, bid: &Bid, denom: &str) -> Value {
    let xid = format!(
        "{}/{}/{}/{}/{}/{}",
        deployment.owner, deployment.dseq, bid.gseq, bid.oseq, bid.provider, bid.bseq
    );
    // Simulated bids carry no deposit: the bid's escrow account is empty.
    let escrow_state = match bid.state {
        BidState::Open | BidState::Active => "open",
        BidState::Lost | BidState::Closed => "closed",
    };
    json!({
        "bid": {
            "id": {
                "owner": deployment.owner,
                "dseq": deployment.dseq.to_string(),
                "gseq": bid.gseq,
                "oseq": bid.oseq,
                "provider": bid.provider,
                "bseq": bid.bseq,
            },
            "state": bid.state.as_str(),
            "price": dec_price(denom, bid.price),
            "created_at": bid.created_at.to_string(),
            "resources_offer": [],
        },
        "escrow_account": {
            "id": {"scope": "bid", "xid": xid},
            "state": {
                "owner": bid.provider,
                "state": escrow_state,
                "transferred": [],
                "settled_at": bid.created_at.to_string(),
                "funds": [],
                "deposits": [],
            },
        },
    })
}

async fn bids_list(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    market_v1beta5(&version)?;
    let filters = MarketFilters::parse(&query)?;
    let state = parse_bid_state(query.get("filters.state"))?;
    shared.with_chain(|chain| {
        let mut bids = Vec::new();
        for deployment in chain.deployments.values().filter(|d| filters.deployment(d)) {
            for bid in &deployment.bids {
                if !filters.order(bid.gseq, bid.oseq)
                    || filters
                        .provider
                        .as_ref()
                        .is_some_and(|p| &bid.provider != p)
                    || state.is_some_and(|state| bid.state != state)
                {
                    continue;
                }
                bids.push(bid_json(deployment, bid, &chain.denom));
            }
        }
        let total = bids.len();
        Ok(Json(json!({"bids": bids, "pagination": pagination(total)})))
    })
}

async fn provider_info(
    State(shared): State<Arc<Shared>>,
    Path((version, address)): Path<(String, String)>,
) -> ApiResult {
    if version != "v1beta4" {
        return Err(ApiError::not_found(format!(
            "provider API {version} is not served by the Akash devnet simulator (v1beta4)"
        )));
    }
    shared.with_chain(|chain| match chain.providers.get(&address) {
        Some(provider) => Ok(Json(json!({"provider": {
            "owner": provider.address,
            "host_uri": provider.host_uri,
            "attributes": attributes_json(&provider.attributes),
            "info": {"email": provider.email, "website": provider.website},
        }}))),
        None => Err(ApiError::not_found("provider not found")),
    })
}

/// `cosmos.authz.v1beta1.Grant`: the authorization and its expiration.
fn grant_json(grant: &AuthzGrant) -> Value {
    json!({
        "authorization": authorization_json(&grant.authorization),
        "expiration": expiration_json(grant.expiration),
    })
}

/// `cosmos.authz.v1beta1.GrantAuthorization`: a grant with its parties.
fn grant_authorization_json(granter: &str, grantee: &str, grant: &AuthzGrant) -> Value {
    json!({
        "granter": granter,
        "grantee": grantee,
        "authorization": authorization_json(&grant.authorization),
        "expiration": expiration_json(grant.expiration),
    })
}

/// `cosmos.feegrant.v1beta1.Grant`: an allowance with its parties.
fn allowance_grant_json(granter: &str, grantee: &str, allowance: &FeeAllowance) -> Value {
    json!({
        "granter": granter,
        "grantee": grantee,
        "allowance": basic_allowance_json(&allowance.spend_limit, allowance.expiration),
    })
}

fn required_address(query: &HashMap<String, String>, name: &str) -> Result<String, ApiError> {
    let value = query.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::invalid(format!(
            "invalid {name} address: empty address string is not allowed"
        ))
    })?;
    valid_address(value)?;
    Ok(value.clone())
}

/// `GET /cosmos/authz/v1beta1/grants?granter=&grantee=&msg_type_url=`: the grants of
/// one pair; with a message type, that one grant (gRPC NotFound when there is none or
/// it has expired, as `GetAuthorization` answers).
async fn authz_grants(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let granter = required_address(&query, "granter")?;
    let grantee = required_address(&query, "grantee")?;
    let msg_type = query.get("msg_type_url").filter(|t| !t.is_empty()).cloned();
    shared.with_chain(|chain| {
        let time = chain.block_time;
        let grants: Vec<Value> = match &msg_type {
            Some(msg_type) => {
                let key = (granter.clone(), grantee.clone(), msg_type.clone());
                let grant = chain
                    .grants
                    .get(&key)
                    .filter(|g| g.expiration.is_none_or(|e| e > time))
                    .ok_or_else(|| {
                        ApiError::not_found(format!("no authorization found for {msg_type} type"))
                    })?;
                vec![grant_json(grant)]
            }
            None => chain
                .grants
                .iter()
                .filter(|((g, e, _), _)| *g == granter && *e == grantee)
                .map(|(_, grant)| grant_json(grant))
                .collect(),
        };
        let total = grants.len();
        Ok(Json(
            json!({"grants": grants, "pagination": pagination(total)}),
        ))
    })
}

/// `GET /cosmos/authz/v1beta1/grants/granter/{granter}` (`by_granter` true) and
/// `…/grantee/{grantee}`: `GrantAuthorization`s.
fn grants_of(chain: &Chain, address: &str, by_granter: bool) -> Value {
    let grants: Vec<Value> = chain
        .grants
        .iter()
        .filter(|((granter, grantee, _), _)| {
            if by_granter {
                granter == address
            } else {
                grantee == address
            }
        })
        .map(|((granter, grantee, _), grant)| grant_authorization_json(granter, grantee, grant))
        .collect();
    let total = grants.len();
    json!({"grants": grants, "pagination": pagination(total)})
}

async fn authz_granter_grants(
    State(shared): State<Arc<Shared>>,
    Path(granter): Path<String>,
) -> ApiResult {
    valid_address(&granter)?;
    shared.with_chain(|chain| Ok(Json(grants_of(chain, &granter, true))))
}

async fn authz_grantee_grants(
    State(shared): State<Arc<Shared>>,
    Path(grantee): Path<String>,
) -> ApiResult {
    valid_address(&grantee)?;
    shared.with_chain(|chain| Ok(Json(grants_of(chain, &grantee, false))))
}

/// `GET /cosmos/feegrant/v1beta1/allowance/{granter}/{grantee}`. None: the keeper's
/// error is a registered error without a gRPC code, so the gateway answers gRPC
/// Unknown (HTTP 500, `code` 2) with its text, not NotFound.
async fn feegrant_allowance(
    State(shared): State<Arc<Shared>>,
    Path((granter, grantee)): Path<(String, String)>,
) -> ApiResult {
    valid_address(&granter)?;
    valid_address(&grantee)?;
    shared.with_chain(
        |chain| match chain.allowances.get(&(granter.clone(), grantee.clone())) {
            Some(allowance) => Ok(Json(
                json!({"allowance": allowance_grant_json(&granter, &grantee, allowance)}),
            )),
            None => Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: 2,
                message: "fee-grant not found: no allowance".to_owned(),
            }),
        },
    )
}

/// `GET /cosmos/feegrant/v1beta1/allowances/{grantee}` (`by_granter` false) and
/// `…/issued/{granter}`: `{"allowances": [Grant], "pagination"}`.
fn allowances_of(chain: &Chain, address: &str, by_granter: bool) -> Value {
    let allowances: Vec<Value> = chain
        .allowances
        .iter()
        .filter(|((granter, grantee), _)| {
            if by_granter {
                granter == address
            } else {
                grantee == address
            }
        })
        .map(|((granter, grantee), allowance)| allowance_grant_json(granter, grantee, allowance))
        .collect();
    let total = allowances.len();
    json!({"allowances": allowances, "pagination": pagination(total)})
}

async fn feegrant_allowances(
    State(shared): State<Arc<Shared>>,
    Path(grantee): Path<String>,
) -> ApiResult {
    valid_address(&grantee)?;
    shared.with_chain(|chain| Ok(Json(allowances_of(chain, &grantee, false))))
}

async fn feegrant_issued(
    State(shared): State<Arc<Shared>>,
    Path(granter): Path<String>,
) -> ApiResult {
    valid_address(&granter)?;
    shared.with_chain(|chain| Ok(Json(allowances_of(chain, &granter, true))))
}

/// Amounts in admin bodies may be strings or numbers.
fn amount(value: &Value, name: &str) -> Result<u128, ApiError> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_u64().map(u128::from),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid(format!("{name} must be a non-negative integer")))
}

fn valid_address(address: &str) -> Result<(), ApiError> {
    match address.parse::<cosmrs::AccountId>() {
        Ok(id) if id.prefix() == super::chain::ACCOUNT_PREFIX => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "'{address}' is not an akash1… address"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FundRequest {
    address: String,
    amount: Value,
    #[serde(default)]
    denom: Option<String>,
    /// Makes the credit happen once: a later request with the same reference credits
    /// nothing and answers the first credit (`"credited": false`).
    #[serde(default)]
    reference: Option<String>,
}

fn credit_json(reference: &str, credit: &ReferencedCredit) -> Value {
    json!({
        "reference": reference,
        "address": credit.address,
        "amount": credit.amount.to_string(),
        "denom": credit.denom,
        "height": credit.height,
    })
}

async fn admin_fund(State(shared): State<Arc<Shared>>, Json(body): Json<FundRequest>) -> ApiResult {
    valid_address(&body.address)?;
    let amount = amount(&body.amount, "amount")?;
    let denom = body.denom.unwrap_or_else(|| "uakt".to_owned());
    if !valid_denom(&denom) {
        return Err(ApiError::invalid(format!(
            "'{denom}' is not a valid denomination"
        )));
    }
    if body
        .reference
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err(ApiError::invalid("reference must not be empty"));
    }
    // GET /simulator/credits/{reference} looks it up as one path segment.
    if body.reference.as_deref().is_some_and(|r| r.contains('/')) {
        return Err(ApiError::invalid("reference must not contain '/'"));
    }
    shared.with_chain(|chain| {
        let (credit, credited) = match &body.reference {
            Some(reference) => {
                let (credit, credited) = chain.fund_once(reference, &body.address, amount, &denom);
                (Some(credit_json(reference, &credit)), credited)
            }
            None => {
                chain.fund(&body.address, amount, &denom);
                (None, true)
            }
        };
        let account = &chain.accounts[&body.address];
        Ok(Json(json!({
            "simulator": SIMULATOR_HEADER_VALUE,
            "credited": credited,
            "credit": credit,
            "account": account_json(account),
            "balances": account.balances.iter().map(|(d, a)| coin(d, *a)).collect::<Vec<_>>(),
        })))
    })
}

async fn admin_credit(
    State(shared): State<Arc<Shared>>,
    Path(reference): Path<String>,
) -> ApiResult {
    shared.with_chain(|chain| match chain.referenced_credits.get(&reference) {
        Some(credit) => Ok(Json(json!({
            "simulator": SIMULATOR_HEADER_VALUE,
            "credit": credit_json(&reference, credit),
        }))),
        None => Err(ApiError::not_found(format!(
            "no credit with reference '{reference}'"
        ))),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentRequest {
    owner: String,
    #[serde(default)]
    dseq: Option<Value>,
    escrow: Value,
    #[serde(default)]
    lease_prices: Vec<Value>,
    #[serde(default)]
    closed: bool,
}

async fn admin_deployment(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<DeploymentRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    valid_address(&body.owner)?;
    let dseq = body
        .dseq
        .as_ref()
        .map(|value| amount(value, "dseq").map(|dseq| dseq as u64))
        .transpose()?;
    let escrow = amount(&body.escrow, "escrow")?;
    let lease_prices = body
        .lease_prices
        .iter()
        .map(|price| amount(price, "lease_prices[]"))
        .collect::<Result<Vec<_>, _>>()?;
    shared.with_chain(|chain| {
        let new = NewDeployment {
            owner: body.owner,
            dseq,
            escrow,
            lease_prices,
            closed: body.closed,
        };
        match chain.create_deployment(new) {
            Ok(deployment) => {
                let deployment = deployment.clone();
                Ok((
                    StatusCode::CREATED,
                    Json(json!({
                        "simulator": SIMULATOR_HEADER_VALUE,
                        "deployment": deployment_json(chain, &deployment, Shape::Current),
                        "rate_per_block": deployment.rate_per_block().to_string(),
                    })),
                ))
            }
            Err(message) => Err(ApiError {
                status: StatusCode::CONFLICT,
                code: 6,
                message,
            }),
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributeBody {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderRequest {
    address: String,
    host_uri: String,
    #[serde(default)]
    attributes: Vec<AttributeBody>,
    /// Decimal text (`"12"`, `"12.5"`) or an integer; default 10.
    #[serde(default)]
    price_uakt_per_block: Option<Value>,
    #[serde(default)]
    bid_delay_blocks: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    website: Option<String>,
}

fn provider_admin_json(provider: &SimulatedProvider) -> Value {
    json!({
        "address": provider.address,
        "host_uri": provider.host_uri,
        "attributes": attributes_json(&provider.attributes),
        "price_uakt_per_block": provider.price.to_string(),
        "bid_delay_blocks": provider.bid_delay_blocks,
        "email": provider.email,
        "website": provider.website,
    })
}

/// The provider a registration body describes, checked.
fn provider_from_request(body: ProviderRequest) -> Result<SimulatedProvider, ApiError> {
    valid_address(&body.address)?;
    let host = url::Url::parse(&body.host_uri).map_err(|error| {
        ApiError::invalid(format!(
            "host_uri '{}' is not a URL: {error}",
            body.host_uri
        ))
    })?;
    if !matches!(host.scheme(), "http" | "https") {
        return Err(ApiError::invalid(format!(
            "host_uri '{}' must be http:// or https://",
            body.host_uri
        )));
    }
    let mut provider = SimulatedProvider::new(&body.address, &body.host_uri);
    if let Some(price) = &body.price_uakt_per_block {
        provider.price = match price {
            Value::String(text) => text.parse().ok(),
            Value::Number(number) => number.as_u64().and_then(|n| Dec::from_whole(n.into())),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "price_uakt_per_block {price} must be a non-negative decimal like \"12\" or \"12.5\""
            ))
        })?;
    }
    if let Some(delay) = body.bid_delay_blocks {
        provider.bid_delay_blocks = delay;
    }
    provider.attributes = body
        .attributes
        .into_iter()
        .map(|a| Attribute {
            key: a.key,
            value: a.value,
        })
        .collect();
    if provider.attributes.iter().any(|a| a.key.is_empty()) {
        return Err(ApiError::invalid("attribute keys must not be empty"));
    }
    provider.email = body.email.unwrap_or_default();
    provider.website = body.website.unwrap_or_default();
    Ok(provider)
}

async fn admin_register_provider(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<ProviderRequest>,
) -> ApiResult {
    let provider = provider_from_request(body)?;
    let address = provider.address.clone();
    let answer = provider_admin_json(&provider);
    let replaced = shared.with_chain(|chain| chain.register_provider(provider));
    Ok(Json(json!({
        "simulator": SIMULATOR_HEADER_VALUE,
        "address": address,
        "registered": true,
        "replaced": replaced,
        "provider": answer,
    })))
}

async fn admin_providers(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.with_chain(|chain| {
        Ok(Json(json!({
            "simulator": SIMULATOR_HEADER_VALUE,
            "providers": chain.providers.values().map(provider_admin_json).collect::<Vec<_>>(),
        })))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlocksRequest {
    count: u64,
}

/// Most blocks one admin call may produce (a simulated week at 6 s blocks).
const MAX_BLOCKS_PER_CALL: u64 = 100_000;

async fn admin_blocks(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<BlocksRequest>,
) -> ApiResult {
    if body.count == 0 || body.count > MAX_BLOCKS_PER_CALL {
        return Err(ApiError::invalid(format!(
            "count must be between 1 and {MAX_BLOCKS_PER_CALL}"
        )));
    }
    shared.with_chain(|chain| {
        for _ in 0..body.count {
            chain.produce_block(chrono::Utc::now());
        }
        Ok(Json(
            json!({"simulator": SIMULATOR_HEADER_VALUE, "height": chain.height}),
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_s: u64,
}

/// Most one `POST /simulator/clock` may move the clock (ten years).
const MAX_ADVANCE_S: u64 = 10 * 366 * 24 * 3600;

/// `POST /simulator/clock {"advance_s": N}`: moves the simulator's clock forward (a
/// simulator facility: no chain has it). Blocks from the next one on are stamped N
/// seconds later; the latest block keeps its time, so expirations are judged by the
/// new time once a block has been produced.
async fn admin_clock(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<ClockRequest>,
) -> ApiResult {
    if body.advance_s == 0 || body.advance_s > MAX_ADVANCE_S {
        return Err(ApiError::invalid(format!(
            "advance_s must be between 1 and {MAX_ADVANCE_S}"
        )));
    }
    let seconds = i64::try_from(body.advance_s).expect("bounded above");
    shared.with_chain(|chain| {
        chain.advance_clock(chrono::TimeDelta::seconds(seconds));
        Ok(Json(json!({
            "simulator": SIMULATOR_HEADER_VALUE,
            "clock_offset_s": chain.clock_offset.num_seconds(),
            "block_time": rfc3339(chain.block_time),
            "next_block_not_before": rfc3339(Utc::now() + chain.clock_offset),
        })))
    })
}

async fn admin_ledger(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.with_chain(|chain| {
        let deposits: Vec<Value> = chain
            .deposits
            .iter()
            .map(|d| {
                json!({
                    "height": d.height,
                    "tx_hash": d.tx_hash,
                    "signer": d.signer,
                    "owner": d.owner,
                    "dseq": d.dseq.to_string(),
                    "amount": d.amount.to_string(),
                    "denom": d.denom,
                    "msg_type": d.message.type_url(),
                    "source": d.source.as_str(),
                    "funded_by": d.funded_by.iter().map(|(address, amount)| json!({
                        "address": address,
                        "amount": amount.to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let deployments: Vec<Value> = chain
            .deployments
            .values()
            .map(|d| {
                let landed = chain
                    .deposits
                    .iter()
                    .filter(|r| r.owner == d.owner && r.dseq == d.dseq);
                let (count, total) = landed.fold((0u64, 0u128), |(n, sum), r| (n + 1, sum + r.amount));
                json!({
                    "owner": d.owner,
                    "dseq": d.dseq.to_string(),
                    "state": d.state.as_str(),
                    "escrow": d.escrow.to_string(),
                    "rate_per_block": d.rate_per_block().to_string(),
                    "transferred": d.transferred.to_string(),
                    "deposit_count": count,
                    "deposited": total.to_string(),
                    "initial_deposit": d.initial_deposit.to_string(),
                    "refunded": d.refunded.to_string(),
                    "hash_hex": hex::encode(&d.hash),
                    "closed_at": d.closed_at,
                })
            })
            .collect();
        let mut orders = Vec::new();
        let mut bids = Vec::new();
        let mut leases = Vec::new();
        for d in chain.deployments.values() {
            let dseq = d.dseq.to_string();
            for o in &d.orders {
                orders.push(json!({
                    "owner": d.owner, "dseq": dseq, "gseq": o.gseq, "oseq": o.oseq,
                    "state": o.state.as_str(), "created_at": o.created_at,
                }));
            }
            for b in &d.bids {
                bids.push(json!({
                    "owner": d.owner, "dseq": dseq, "gseq": b.gseq, "oseq": b.oseq,
                    "provider": b.provider, "bseq": b.bseq, "state": b.state.as_str(),
                    "price": b.price.to_string(), "created_at": b.created_at,
                }));
            }
            for l in &d.leases {
                leases.push(json!({
                    "owner": d.owner, "dseq": dseq, "gseq": l.gseq, "oseq": l.oseq,
                    "provider": l.provider, "bseq": l.bseq, "state": l.state.as_str(),
                    "price": l.price.to_string(), "created_at": l.created_at,
                    "closed_on": l.closed_on,
                }));
            }
        }
        let refunds: Vec<Value> = chain
            .refunds
            .iter()
            .map(|r| {
                json!({
                    "height": r.height,
                    "tx_hash": r.tx_hash,
                    "owner": r.owner,
                    "dseq": r.dseq.to_string(),
                    "amount": r.amount.to_string(),
                    "denom": r.denom,
                })
            })
            .collect();
        let committed_txs: Vec<Value> = chain
            .committed_txs()
            .map(|record| {
                json!({
                    "hash": record.tx.hash,
                    "height": record.height,
                    "code": record.result.code,
                    "codespace": record.result.codespace,
                    "msg_types": record.tx.messages.iter().map(ChainMessage::type_url).collect::<Vec<_>>(),
                })
            })
            .collect();
        let accounts: Vec<Value> = chain
            .accounts
            .values()
            .map(|a| {
                json!({
                    "address": a.address,
                    "account_number": a.account_number,
                    "sequence": a.sequence,
                    "balances": a.balances.iter().map(|(d, amount)| coin(d, *amount)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let grants: Vec<Value> = chain
            .grants
            .iter()
            .map(|((granter, grantee, msg_type), grant)| {
                let mut entry = grant_authorization_json(granter, grantee, grant);
                entry["msg_type_url"] = json!(msg_type);
                entry
            })
            .collect();
        let fee_allowances: Vec<Value> = chain
            .allowances
            .iter()
            .map(|((granter, grantee), allowance)| json!({
                "granter": granter,
                "grantee": grantee,
                "spend_limit": coins_json(&allowance.spend_limit),
                "expiration": expiration_json(allowance.expiration),
            }))
            .collect();
        Ok(Json(json!({
            "simulator": SIMULATOR_HEADER_VALUE,
            "chain_id": chain.chain_id,
            "height": chain.height,
            "block_time": rfc3339(chain.block_time),
            "clock_offset_s": chain.clock_offset.num_seconds(),
            "grants": grants,
            "fee_allowances": fee_allowances,
            "mempool": chain.mempool_len(),
            "txs": chain.tx_count(),
            "duplicate_broadcasts": chain.duplicate_broadcasts,
            "deposits": deposits,
            "deployments": deployments,
            "orders": orders,
            "bids": bids,
            "leases": leases,
            "refunds": refunds,
            "committed_txs": committed_txs,
            "providers": chain.providers.values().map(provider_admin_json).collect::<Vec<_>>(),
            "accounts": accounts,
        })))
    })
}

async fn admin_arm_fault(State(shared): State<Arc<Shared>>, Json(fault): Json<Fault>) -> ApiResult {
    if fault.count == 0 || !fault.path_prefix.starts_with('/') {
        return Err(ApiError::invalid(
            "count must be positive and path_prefix must start with /",
        ));
    }
    let mut faults = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
    faults.push(fault);
    Ok(Json(
        json!({"simulator": SIMULATOR_HEADER_VALUE, "armed": faults.len()}),
    ))
}

async fn admin_clear_faults(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    Ok(Json(
        json!({"simulator": SIMULATOR_HEADER_VALUE, "armed": 0}),
    ))
}
