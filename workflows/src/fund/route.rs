//! A client of the subset of Skip Go's API v2 the funding flow uses (`/v2/fungible/route`,
//! `/v2/fungible/msgs`, `/v2/tx/track`, `/v2/tx/status`), with every answer checked
//! before the flow acts on it: a route API decides where money goes, so an answer that
//! is malformed, or that asks for more than the flow offered, is refused with a
//! one-line error naming the field.
//!
//! The client is plain HTTP + JSON; each call runs inside a workflow step, so its
//! result is journaled and a resumed run never asks again for what it already used.
//! Errors are classified for the step's retry policy: the API unreachable, a timeout or
//! an HTTP 5xx/429 is retryable; a 4xx (a refused route: slippage, unsupported assets)
//! or a malformed answer is permanent.

use std::time::Duration;

use morpheus_engine::StepError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::split::parse_base_units;

/// The state `/v2/tx/status` reports when the transfer was delivered.
pub const STATE_COMPLETED_SUCCESS: &str = "STATE_COMPLETED_SUCCESS";

/// The route the flow asks for: USDC on the EVM chain → `uakt` on Akash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAsk {
    /// USDC base units in.
    pub amount_in: u128,
    /// The USDC token (`0x…`).
    pub source_asset_denom: String,
    /// The EVM chain id.
    pub source_asset_chain_id: String,
    /// `uakt`.
    pub dest_asset_denom: String,
    /// The Akash chain id.
    pub dest_asset_chain_id: String,
}

impl RouteAsk {
    fn body(&self) -> Value {
        json!({
            "amount_in": self.amount_in.to_string(),
            "source_asset_denom": self.source_asset_denom,
            "source_asset_chain_id": self.source_asset_chain_id,
            "dest_asset_denom": self.dest_asset_denom,
            "dest_asset_chain_id": self.dest_asset_chain_id,
        })
    }
}

/// A quoted route (what the flow keeps of `/v2/fungible/route`'s answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// What the route expects to deliver, `uakt` base units.
    pub estimated_amount_out: u128,
    /// How many transactions the caller must send.
    pub txs_required: u64,
    /// The price impact the route reports, in percent (as text), if any.
    pub swap_price_impact_percent: Option<String>,
    /// The answer's `operations`, kept for `msgs` (which takes them back).
    pub operations: Value,
}

/// One ERC-20 approval a route transaction needs first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The token (`0x…`).
    pub token_contract: String,
    /// Who may spend: the contract the transaction calls.
    pub spender: String,
    /// Base units.
    pub amount: u128,
}

/// One EVM transaction of a route, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTx {
    /// The contract to call.
    pub to: String,
    /// The calldata, `0x…`.
    pub data: String,
    /// Approvals to make before it.
    pub approvals: Vec<Approval>,
}

/// What `/v2/fungible/msgs` returned, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMsgs {
    /// The transactions, in the order they must be sent.
    pub txs: Vec<RouteTx>,
    /// The least the route may deliver, when the API says.
    pub min_amount_out: Option<u128>,
}

/// What `/v2/tx/status` says of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// `STATE_SUBMITTED`, `STATE_PENDING`, `STATE_COMPLETED_SUCCESS`,
    /// `STATE_COMPLETED_ERROR`, `STATE_ABANDONED`.
    pub state: String,
    /// What was released on the destination, base units (when completed).
    pub released_amount: Option<u128>,
    /// The released asset's denom.
    pub released_denom: Option<String>,
    /// The chain it was released on.
    pub released_chain_id: Option<String>,
    /// The API's error message, when the transfer failed.
    pub error: Option<String>,
}

impl TransferStatus {
    /// Whether the transfer has ended (delivered, failed or abandoned).
    pub fn is_final(&self) -> bool {
        !matches!(self.state.as_str(), "STATE_SUBMITTED" | "STATE_PENDING")
    }
}

/// A client of one route API (`https://api.skip.build`, or the devnet simulator).
#[derive(Debug, Clone)]
pub struct RouteApi {
    base: String,
    http: reqwest::Client,
}

/// A malformed answer: permanent, naming the endpoint and the field.
fn malformed(endpoint: &str, what: impl std::fmt::Display) -> StepError {
    StepError::permanent(format!("route API {endpoint}: malformed answer: {what}"))
}

fn text_field<'a>(value: &'a Value, endpoint: &str, name: &str) -> Result<&'a str, StepError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(endpoint, format!("'{name}' is missing or not a string")))
}

fn amount_field(value: &Value, endpoint: &str, name: &str) -> Result<u128, StepError> {
    let amount = match value.get(name) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) if number.is_u64() => number.to_string(),
        _ => {
            return Err(malformed(
                endpoint,
                format!("'{name}' is missing or not an amount"),
            ))
        }
    };
    parse_base_units(&amount).map_err(|error| malformed(endpoint, format!("'{name}': {error}")))
}

/// Whether `text` is a `0x…` address (20 bytes of hex).
pub(crate) fn is_hex_address(text: &str) -> bool {
    text.len() == 42 && text.starts_with("0x") && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl RouteApi {
    /// A client of the API at `base` (no trailing path: `/v2/…` is appended), each
    /// request bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(base)
            .map_err(|error| format!("route_api: '{base}' is not a URL: {error}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("route_api: '{base}' is not an http(s) URL"));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| format!("route_api: cannot build an HTTP client: {error}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn send(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, StepError> {
        let response = request.send().await.map_err(|error| {
            StepError::retryable(format!("route API {endpoint}: {}", describe(&error)))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            StepError::retryable(format!(
                "route API {endpoint}: reading the answer: {}",
                describe(&error)
            ))
        })?;
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        if !status.is_success() {
            // Skip's errors are `{"code", "message", …}`; say what it said, on one line.
            let said = parsed
                .ok()
                .and_then(|value| {
                    value
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            let message = format!(
                "route API {endpoint}: HTTP {}: {}",
                status.as_u16(),
                said.replace('\n', " ")
            );
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                StepError::retryable(message)
            } else {
                StepError::permanent(message)
            });
        }
        let value = parsed.map_err(|error| malformed(endpoint, format!("not JSON: {error}")))?;
        if !value.is_object() {
            return Err(malformed(endpoint, "not a JSON object"));
        }
        Ok(value)
    }

    async fn post(&self, endpoint: &str, body: &Value) -> Result<Value, StepError> {
        let request = self
            .http
            .post(format!("{}{endpoint}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.send(endpoint, request).await
    }

    /// `POST /v2/fungible/route`: a quote for `ask`.
    pub async fn route(&self, ask: &RouteAsk) -> Result<Quote, StepError> {
        const ENDPOINT: &str = "/v2/fungible/route";
        let answer = self.post(ENDPOINT, &ask.body()).await?;
        let estimated = if answer.get("estimated_amount_out").is_some() {
            amount_field(&answer, ENDPOINT, "estimated_amount_out")?
        } else {
            amount_field(&answer, ENDPOINT, "amount_out")?
        };
        let txs_required = answer
            .get("txs_required")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed(ENDPOINT, "'txs_required' is missing or not a count"))?;
        let operations = answer
            .get("operations")
            .filter(|operations| operations.as_array().is_some_and(|ops| !ops.is_empty()))
            .cloned()
            .ok_or_else(|| malformed(ENDPOINT, "'operations' is missing or empty"))?;
        Ok(Quote {
            estimated_amount_out: estimated,
            txs_required,
            swap_price_impact_percent: answer.get("swap_price_impact_percent").and_then(|value| {
                match value {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(number) => Some(number.to_string()),
                    _ => None,
                }
            }),
            operations,
        })
    }

    /// `POST /v2/fungible/msgs`: the transactions that execute `quote` from `sender`
    /// (`0x…`) to `receiver` (`akash1…`) within `slippage_pct`, each checked: an EVM
    /// transaction on `chain_id`, sending no ETH, from `sender`, whose approvals are
    /// for the contract it calls and add up to no more than `ask.amount_in`.
    pub async fn msgs(
        &self,
        ask: &RouteAsk,
        quote: &Quote,
        sender: &str,
        receiver: &str,
        slippage_pct: &str,
    ) -> Result<RouteMsgs, StepError> {
        const ENDPOINT: &str = "/v2/fungible/msgs";
        let mut body = ask.body();
        body["amount_out"] = json!(quote.estimated_amount_out.to_string());
        body["operations"] = quote.operations.clone();
        body["address_list"] = json!([sender, receiver]);
        body["slippage_tolerance_percent"] = json!(slippage_pct);
        let answer = self.post(ENDPOINT, &body).await?;
        let txs = answer
            .get("txs")
            .and_then(Value::as_array)
            .filter(|txs| !txs.is_empty())
            .ok_or_else(|| malformed(ENDPOINT, "'txs' is missing or empty"))?;
        let mut checked = Vec::with_capacity(txs.len());
        let mut approved_total = 0u128;
        for (index, tx) in txs.iter().enumerate() {
            let at = |what: &str| format!("txs[{index}]: {what}");
            let Some(evm_tx) = tx.get("evm_tx") else {
                return Err(malformed(
                    ENDPOINT,
                    at("not an evm_tx (only EVM transactions are sent by this flow)"),
                ));
            };
            let chain_id = text_field(evm_tx, ENDPOINT, "chain_id")?;
            if chain_id != ask.source_asset_chain_id {
                return Err(malformed(
                    ENDPOINT,
                    at(&format!(
                        "evm_tx.chain_id {chain_id} is not the source chain {}",
                        ask.source_asset_chain_id
                    )),
                ));
            }
            let to = text_field(evm_tx, ENDPOINT, "to")?;
            if !is_hex_address(to) {
                return Err(malformed(
                    ENDPOINT,
                    at(&format!("evm_tx.to '{to}' is not a 0x… address")),
                ));
            }
            let data = text_field(evm_tx, ENDPOINT, "data")?;
            let hex = data.strip_prefix("0x").unwrap_or(data);
            if hex.len() < 8 || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed(ENDPOINT, at("evm_tx.data is not hex calldata")));
            }
            let value = evm_tx.get("value").and_then(Value::as_str).unwrap_or("0");
            if !value.bytes().all(|b| b == b'0') {
                return Err(malformed(
                    ENDPOINT,
                    at(&format!(
                        "evm_tx.value is {value} wei: this flow sends no ETH"
                    )),
                ));
            }
            if let Some(signer) = evm_tx.get("signer_address").and_then(Value::as_str) {
                if !signer.eq_ignore_ascii_case(sender) {
                    return Err(malformed(
                        ENDPOINT,
                        at(&format!(
                            "evm_tx.signer_address {signer} is not the sender {sender}"
                        )),
                    ));
                }
            }
            let mut approvals = Vec::new();
            let listed = evm_tx
                .get("required_erc20_approvals")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let listed = listed.as_array().ok_or_else(|| {
                malformed(
                    ENDPOINT,
                    at("evm_tx.required_erc20_approvals is not a list"),
                )
            })?;
            for approval in listed {
                let token = text_field(approval, ENDPOINT, "token_contract")?;
                let spender = text_field(approval, ENDPOINT, "spender")?;
                let amount = amount_field(approval, ENDPOINT, "amount")?;
                if !is_hex_address(token) || !is_hex_address(spender) {
                    return Err(malformed(
                        ENDPOINT,
                        at("an approval's token_contract or spender is not a 0x… address"),
                    ));
                }
                // An approval for a contract other than the one called would let a
                // third party spend the wallet's tokens.
                if !spender.eq_ignore_ascii_case(to) {
                    return Err(malformed(
                        ENDPOINT,
                        at(&format!(
                            "approval spender {spender} is not the called contract {to}"
                        )),
                    ));
                }
                approved_total = approved_total.saturating_add(amount);
                approvals.push(Approval {
                    token_contract: token.to_owned(),
                    spender: spender.to_owned(),
                    amount,
                });
            }
            checked.push(RouteTx {
                to: to.to_owned(),
                data: format!("0x{hex}"),
                approvals,
            });
        }
        if approved_total > ask.amount_in {
            return Err(malformed(
                ENDPOINT,
                format!(
                    "the approvals add up to {approved_total}, more than amount_in {}",
                    ask.amount_in
                ),
            ));
        }
        let min_amount_out = match answer.get("min_amount_out") {
            None | Some(Value::Null) => None,
            Some(_) => Some(amount_field(&answer, ENDPOINT, "min_amount_out")?),
        };
        Ok(RouteMsgs {
            txs: checked,
            min_amount_out,
        })
    }

    /// `POST /v2/tx/track`: asks the API to follow a sent transaction.
    pub async fn track(&self, tx_hash: &str, chain_id: &str) -> Result<(), StepError> {
        self.post(
            "/v2/tx/track",
            &json!({"tx_hash": tx_hash, "chain_id": chain_id}),
        )
        .await
        .map(|_| ())
    }

    /// `GET /v2/tx/status`: where the transfer a transaction started stands.
    pub async fn status(&self, tx_hash: &str, chain_id: &str) -> Result<TransferStatus, StepError> {
        const ENDPOINT: &str = "/v2/tx/status";
        let mut url = reqwest::Url::parse(&format!("{}{ENDPOINT}", self.base))
            .map_err(|error| StepError::permanent(format!("route API {ENDPOINT}: {error}")))?;
        url.query_pairs_mut()
            .append_pair("tx_hash", tx_hash)
            .append_pair("chain_id", chain_id);
        let request = self.http.get(url);
        let answer = self.send(ENDPOINT, request).await?;
        let state = text_field(&answer, ENDPOINT, "state")?.to_owned();
        let release = answer
            .get("transfer_asset_release")
            .filter(|r| !r.is_null());
        let released_amount = match release {
            Some(release) if state == STATE_COMPLETED_SUCCESS => {
                Some(amount_field(release, ENDPOINT, "amount")?)
            }
            _ => None,
        };
        if state == STATE_COMPLETED_SUCCESS && released_amount.is_none() {
            return Err(malformed(
                ENDPOINT,
                "completed without 'transfer_asset_release'",
            ));
        }
        let release_text = |name: &str| {
            release
                .and_then(|release| release.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(TransferStatus {
            released_denom: release_text("denom"),
            released_chain_id: release_text("chain_id"),
            released_amount,
            error: answer
                .get("error")
                .and_then(|error| error.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            state,
        })
    }
}

/// The root cause of a transport error ("Connection refused") says more than
/// reqwest's wrapper.
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}
