//! HTTP routes of the route simulator: Skip Go's v2 subset and the `/simulator/…`
//! admin API. Bodies are parsed here (not by axum's extractor) so every malformed
//! request gets Skip's error shape with a one-line message.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::{SolCall, SolEvent};
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::quote::{min_amount_out, Decimal, Pricing};
use super::settlement::{STATUS_PENDING, STATUS_REFUNDED, STATUS_SETTLED};
use super::{Shared, DEST_DENOM, SIMULATOR_NAME};
use crate::evm::SkipBridge;

/// The router: Skip's v2 subset, the admin API, a fallback that names the simulator,
/// and a layer that marks every response.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/fungible/route", post(route))
        .route("/v2/fungible/msgs", post(msgs))
        .route("/v2/tx/track", post(track))
        .route("/v2/tx/status", get(status))
        .route("/simulator/price", get(get_price).post(set_price))
        .route("/simulator/faults", post(arm_fault))
        .fallback(not_served)
        .layer(middleware::from_fn(mark_simulator))
        .with_state(shared)
}

async fn mark_simulator(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        "x-morpheus-simulator",
        HeaderValue::from_static(SIMULATOR_NAME),
    );
    response
}

/// An error in Skip's gRPC-gateway shape, one line.
struct ApiError {
    status: StatusCode,
    code: i64,
    message: String,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 3,
            message: message.into(),
        }
    }

    fn refused(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: 9,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: 5,
            message: message.into(),
        }
    }

    fn upstream(message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            code: 14,
            message: format!("the EVM devnet does not answer: {message}").replace('\n', " "),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({
                "code": self.code,
                "message": self.message,
                "details": [],
                "simulator": SIMULATOR_NAME,
            })),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn not_served(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "{method} {} is not served by the Skip Go route simulator",
        uri.path()
    ))
}

/// Parses a JSON body into `T`, with serde's message on one line.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid request body: {e}").replace('\n', " ")))
}

/// A decimal string (Skip writes amounts as strings; numbers are accepted too).
fn amount(value: &Value, name: &str) -> Result<U256, ApiError> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) if number.is_u64() => number.to_string(),
        Value::Null => return Err(ApiError::invalid(format!("{name} is required"))),
        _ => String::new(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(format!(
            "{name} must be a non-negative integer string, got {value}"
        )));
    }
    U256::from_str_radix(&text, 10)
        .map_err(|_| ApiError::invalid(format!("{name} {text} does not fit 256 bits")))
}

fn percent(value: &Value, name: &str) -> Result<Decimal, ApiError> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Null => return Err(ApiError::invalid(format!("{name} is required"))),
        other => other.to_string(),
    };
    Decimal::parse(&text, name).map_err(ApiError::invalid)
}

/// The asset pair every route and msgs request names.
#[derive(Deserialize)]
struct AssetPair {
    #[serde(default)]
    amount_in: Value,
    #[serde(default)]
    amount_out: Value,
    source_asset_denom: String,
    source_asset_chain_id: String,
    dest_asset_denom: String,
    dest_asset_chain_id: String,
}

impl AssetPair {
    /// Checks the pair is the one route this simulator serves.
    fn check(&self, shared: &Shared) -> Result<(), ApiError> {
        let route = &shared.route;
        if self.source_asset_chain_id != route.evm_chain_id.to_string() {
            return Err(ApiError::invalid(format!(
                "source_asset_chain_id '{}' is not served: the simulator routes from chain {}",
                self.source_asset_chain_id, route.evm_chain_id
            )));
        }
        let usdc = self.source_asset_denom.parse::<Address>().ok();
        if usdc != Some(route.usdc) {
            return Err(ApiError::invalid(format!(
                "source_asset_denom '{}' is not served: the simulator swaps USDC at {}",
                self.source_asset_denom, route.usdc
            )));
        }
        if self.dest_asset_chain_id != route.akash_chain_id {
            return Err(ApiError::invalid(format!(
                "dest_asset_chain_id '{}' is not served: the simulator routes to {}",
                self.dest_asset_chain_id, route.akash_chain_id
            )));
        }
        if self.dest_asset_denom != DEST_DENOM {
            return Err(ApiError::invalid(format!(
                "dest_asset_denom '{}' is not served: the simulator delivers {DEST_DENOM}",
                self.dest_asset_denom
            )));
        }
        Ok(())
    }

    fn amount_in(&self) -> Result<U256, ApiError> {
        let amount_in = amount(&self.amount_in, "amount_in")?;
        if amount_in.is_zero() {
            return Err(ApiError::invalid("amount_in must be positive"));
        }
        Ok(amount_in)
    }
}

fn operations(shared: &Shared, amount_in: U256, amount_out: U256, pricing: &Pricing) -> Value {
    let route = &shared.route;
    let usdc = route.usdc.to_string();
    json!([{
        "swap": {
            "swap_in": {
                "swap_venue": {"name": "morpheus-skip-simulator", "chain_id": route.evm_chain_id.to_string()},
                "swap_operations": [{"pool": "simulated-usdc-akt", "denom_in": usdc, "denom_out": DEST_DENOM}],
                "swap_amount_in": amount_in.to_string(),
                "price_impact_percent": pricing.price_impact_pct.to_string(),
            },
            "from_chain_id": route.evm_chain_id.to_string(),
            "chain_id": route.evm_chain_id.to_string(),
            "to_chain_id": route.akash_chain_id,
            "denom_in": usdc,
            "denom_out": DEST_DENOM,
            "bridge_id": "MORPHEUS_SIMULATOR",
        },
        "tx_index": 0,
        "amount_in": amount_in.to_string(),
        "amount_out": amount_out.to_string(),
    }])
}

async fn route(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let pair: AssetPair = parse_body(&body)?;
    pair.check(&shared)?;
    if !pair.amount_out.is_null() {
        return Err(ApiError::invalid(
            "amount_out routes (exact out) are not simulated: give amount_in",
        ));
    }
    let amount_in = pair.amount_in()?;
    let pricing = shared.pricing();
    let quote = pricing
        .quote(amount_in)
        .ok_or_else(|| ApiError::invalid("amount_in is too large to quote"))?;
    let route = &shared.route;
    let chain_ids = json!([route.evm_chain_id.to_string(), route.akash_chain_id]);
    let warning = (pricing.price_impact_pct > Decimal::from_integer(10)).then(|| {
        json!({"type": "BAD_PRICE_WARNING", "message": format!("swap price impact is {} %", pricing.price_impact_pct)})
    });
    Ok(Json(json!({
        "simulator": SIMULATOR_NAME,
        "amount_in": amount_in.to_string(),
        "amount_out": quote.amount_out.to_string(),
        "estimated_amount_out": quote.amount_out.to_string(),
        "source_asset_denom": route.usdc.to_string(),
        "source_asset_chain_id": route.evm_chain_id.to_string(),
        "dest_asset_denom": DEST_DENOM,
        "dest_asset_chain_id": route.akash_chain_id,
        "operations": operations(&shared, amount_in, quote.amount_out, &pricing),
        "chain_ids": chain_ids,
        "required_chain_addresses": chain_ids,
        "does_swap": true,
        "txs_required": 1,
        "swap_price_impact_percent": pricing.price_impact_pct.to_string(),
        "swap_venues": [{"name": "morpheus-skip-simulator", "chain_id": route.evm_chain_id.to_string()}],
        "estimated_fees": [{
            "fee_type": "SWAP",
            "bridge_id": "MORPHEUS_SIMULATOR",
            "amount": quote.fee.to_string(),
            "origin_asset": {"denom": DEST_DENOM, "chain_id": route.akash_chain_id},
            "chain_id": route.akash_chain_id,
        }],
        "estimated_route_duration_seconds": 2,
        "warning": warning,
        "price": pricing.price.to_string(),
        "fee_bps": pricing.fee_bps,
    })))
}

#[derive(Deserialize)]
struct MsgsRequest {
    #[serde(flatten)]
    pair: AssetPair,
    address_list: Vec<String>,
    #[serde(default)]
    slippage_tolerance_percent: Value,
}

async fn msgs(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let request: MsgsRequest = parse_body(&body)?;
    request.pair.check(&shared)?;
    let amount_in = request.pair.amount_in()?;
    let amount_out = amount(&request.pair.amount_out, "amount_out")?;
    let slippage = percent(
        &request.slippage_tolerance_percent,
        "slippage_tolerance_percent",
    )?;
    let [sender, receiver] = request.address_list.as_slice() else {
        return Err(ApiError::invalid(format!(
            "address_list must hold 2 addresses (the 0x… sender on chain {}, the akash1… receiver), got {}",
            shared.route.evm_chain_id,
            request.address_list.len()
        )));
    };
    let sender: Address = sender.parse().map_err(|_| {
        ApiError::invalid(format!("address_list[0] '{sender}' is not a 0x… address"))
    })?;
    if !receiver
        .parse::<cosmrs::AccountId>()
        .is_ok_and(|id| id.prefix() == "akash")
    {
        return Err(ApiError::invalid(format!(
            "address_list[1] '{receiver}' is not an akash1… address"
        )));
    }
    let pricing = shared.pricing();
    if pricing.price_impact_pct > slippage {
        return Err(ApiError::refused(format!(
            "swap price impact {} % exceeds the slippage tolerance {slippage} %",
            pricing.price_impact_pct
        )));
    }
    let min_out = min_amount_out(amount_out, slippage).map_err(ApiError::invalid)?;
    let route = &shared.route;
    let data = SkipBridge::swapCall {
        amountIn: amount_in,
        destAddress: receiver.clone(),
        minAmountOut: min_out,
    }
    .abi_encode();
    let evm_tx = json!({
        "chain_id": route.evm_chain_id.to_string(),
        "to": route.bridge.to_string(),
        "value": "0",
        "data": alloy::hex::encode(data),
        "required_erc20_approvals": [{
            "token_contract": route.usdc.to_string(),
            "spender": route.bridge.to_string(),
            "amount": amount_in.to_string(),
        }],
        "signer_address": sender.to_string(),
    });
    let tx = json!({"evm_tx": evm_tx, "operations_indices": [0]});
    Ok(Json(json!({
        "simulator": SIMULATOR_NAME,
        "txs": [tx],
        "msgs": [{"evm_tx": evm_tx}],
        "min_amount_out": min_out.to_string(),
        "estimated_fees": [],
    })))
}

#[derive(Deserialize)]
struct TrackRequest {
    tx_hash: String,
    chain_id: String,
}

fn tx_hash(text: &str) -> Result<B256, ApiError> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if hex.len() != 64 {
        return Err(ApiError::invalid(format!(
            "tx_hash '{text}' is not a 32-byte hex hash"
        )));
    }
    hex.parse()
        .map_err(|_| ApiError::invalid(format!("tx_hash '{text}' is not a 32-byte hex hash")))
}

fn check_chain(shared: &Shared, chain_id: &str) -> Result<(), ApiError> {
    if chain_id != shared.route.evm_chain_id.to_string() {
        return Err(ApiError::invalid(format!(
            "chain_id '{chain_id}' is not tracked: the simulator's swaps start on chain {}",
            shared.route.evm_chain_id
        )));
    }
    Ok(())
}

async fn track(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let request: TrackRequest = parse_body(&body)?;
    let hash = tx_hash(&request.tx_hash)?;
    check_chain(&shared, &request.chain_id)?;
    shared
        .tracked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(hash);
    Ok(Json(json!({
        "simulator": SIMULATOR_NAME,
        "tx_hash": format!("{hash}"),
        "explorer_link": "",
    })))
}

fn error_json(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// One status answer: the overall state, repeated in `transfers[0]` as Skip does.
fn status_json(state: &str, transfer: Value, release: Value, error: Value) -> Value {
    let sequence = if transfer.is_null() {
        json!([])
    } else {
        json!([transfer])
    };
    let next_blocking = match state {
        "STATE_SUBMITTED" | "STATE_PENDING" => json!({"transfer_sequence_index": 0}),
        _ => Value::Null,
    };
    let entry = json!({
        "state": state,
        "transfer_sequence": sequence,
        "next_blocking_transfer": next_blocking,
        "transfer_asset_release": release,
        "error": error,
    });
    let mut answer = entry.clone();
    answer["transfers"] = json!([entry]);
    answer["simulator"] = json!(SIMULATOR_NAME);
    answer
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let hash_text = query
        .get("tx_hash")
        .ok_or_else(|| ApiError::invalid("tx_hash is required"))?;
    let chain_id = query
        .get("chain_id")
        .ok_or_else(|| ApiError::invalid("chain_id is required"))?;
    let hash = tx_hash(hash_text)?;
    check_chain(&shared, chain_id)?;
    let route = &shared.route;
    let receipt = shared
        .provider
        .get_transaction_receipt(hash)
        .await
        .map_err(ApiError::upstream)?;
    let Some(receipt) = receipt else {
        let tracked = shared
            .tracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&hash);
        return if tracked {
            Ok(Json(status_json(
                "STATE_SUBMITTED",
                Value::Null,
                Value::Null,
                Value::Null,
            )))
        } else {
            Err(ApiError::not_found(format!(
                "transaction {hash} is not on chain {} and was not tracked",
                route.evm_chain_id
            )))
        };
    };
    if !receipt.status() {
        return Ok(Json(status_json(
            "STATE_COMPLETED_ERROR",
            Value::Null,
            Value::Null,
            error_json(
                "STATUS_ERROR_TRANSACTION_EXECUTION",
                &format!(
                    "transaction {hash} reverted on chain {}",
                    route.evm_chain_id
                ),
            ),
        )));
    }
    let request = receipt
        .logs()
        .iter()
        .filter(|log| log.address() == route.bridge)
        .find_map(|log| log.log_decode::<SkipBridge::SwapRequested>().ok());
    let Some(request) = request else {
        return Ok(Json(status_json(
            "STATE_COMPLETED_ERROR",
            Value::Null,
            Value::Null,
            error_json(
                "STATUS_ERROR_TRANSACTION_EXECUTION",
                &format!(
                    "transaction {hash} made no swap request on the bridge {}",
                    route.bridge
                ),
            ),
        )));
    };
    let id = request.inner.data.id;
    let bridge = SkipBridge::new(route.bridge, &shared.provider);
    let swap = bridge.swaps(id).call().await.map_err(ApiError::upstream)?;
    let send_tx = json!({
        "chain_id": route.evm_chain_id.to_string(),
        "tx_hash": format!("{hash}"),
        "explorer_link": "",
    });
    let mut transfer = json!({
        "from_chain_id": route.evm_chain_id.to_string(),
        "to_chain_id": route.akash_chain_id,
        "swap_id": id.to_string(),
        "amount_in": swap.amountIn.to_string(),
        "min_amount_out": swap.minAmountOut.to_string(),
        "dest_address": swap.destAddress,
        "denom_in": route.usdc.to_string(),
        "denom_out": DEST_DENOM,
        "txs": {"send_tx": send_tx, "receive_tx": null},
    });
    let release = |released: bool, amount: U256| {
        json!({
            "chain_id": route.akash_chain_id,
            "denom": DEST_DENOM,
            "amount": amount.to_string(),
            "released": released,
        })
    };
    let answer = match swap.status {
        STATUS_PENDING => {
            transfer["state"] = json!("TRANSFER_PENDING");
            status_json(
                "STATE_PENDING",
                json!({"swap": transfer}),
                Value::Null,
                Value::Null,
            )
        }
        STATUS_SETTLED => {
            transfer["state"] = json!("TRANSFER_SUCCESS");
            transfer["amount_out"] = json!(swap.amountOut.to_string());
            status_json(
                "STATE_COMPLETED_SUCCESS",
                json!({"swap": transfer}),
                release(true, swap.amountOut),
                Value::Null,
            )
        }
        STATUS_REFUNDED => {
            let reason = refund_reason(&shared, id).await?;
            transfer["state"] = json!("TRANSFER_FAILURE");
            status_json(
                "STATE_ABANDONED",
                json!({"swap": transfer}),
                json!({
                    "chain_id": route.evm_chain_id.to_string(),
                    "denom": route.usdc.to_string(),
                    "amount": swap.amountIn.to_string(),
                    "released": true,
                }),
                error_json(
                    "STATUS_ERROR_TRANSFER",
                    &format!(
                        "swap {id} refunded {} USDC base units: {reason}",
                        swap.amountIn
                    ),
                ),
            )
        }
        other => {
            return Err(ApiError::upstream(format!(
                "swap {id} has status {other} on the bridge"
            )))
        }
    };
    Ok(Json(answer))
}

async fn refund_reason(shared: &Shared, id: U256) -> Result<String, ApiError> {
    let filter = Filter::new()
        .address(shared.route.bridge)
        .event_signature(SkipBridge::SwapRefunded::SIGNATURE_HASH)
        .topic1(B256::from(id))
        .from_block(0u64);
    let logs = shared
        .provider
        .get_logs(&filter)
        .await
        .map_err(ApiError::upstream)?;
    Ok(logs
        .iter()
        .find_map(|log| log.log_decode::<SkipBridge::SwapRefunded>().ok())
        .map(|log| log.inner.data.reason)
        .unwrap_or_else(|| "refunded".to_owned()))
}

fn pricing_json(pricing: &Pricing) -> Value {
    json!({
        "simulator": SIMULATOR_NAME,
        "price": pricing.price.to_string(),
        "fee_bps": pricing.fee_bps,
        "price_impact_pct": pricing.price_impact_pct.to_string(),
    })
}

async fn get_price(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(pricing_json(&shared.pricing())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceRequest {
    #[serde(default)]
    price: Option<Value>,
    #[serde(default)]
    fee_bps: Option<u32>,
    #[serde(default)]
    price_impact_pct: Option<Value>,
}

async fn set_price(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let request: PriceRequest = parse_body(&body)?;
    let mut pricing = shared.pricing();
    if let Some(price) = &request.price {
        pricing.price = percent(price, "price")?;
    }
    if let Some(fee_bps) = request.fee_bps {
        pricing.fee_bps = fee_bps;
    }
    if let Some(impact) = &request.price_impact_pct {
        pricing.price_impact_pct = percent(impact, "price_impact_pct")?;
    }
    pricing.validate().map_err(ApiError::invalid)?;
    *shared
        .pricing
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = pricing;
    Ok(Json(pricing_json(&pricing)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    kind: String,
}

async fn arm_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let request: FaultRequest = parse_body(&body)?;
    if request.kind != "stop_before_settle" {
        return Err(ApiError::invalid(format!(
            "unknown fault kind '{}' (stop_before_settle)",
            request.kind
        )));
    }
    *shared
        .stop_before_settle
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = true;
    Ok(Json(
        json!({"simulator": SIMULATOR_NAME, "armed": request.kind}),
    ))
}
