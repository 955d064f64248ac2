//! The settlement worker: polls the bridge's `SwapRequested` logs and ends every pending
//! request exactly once — credit on the Akash simulator (by reference) then `settle`, or
//! `refund` — reading what is already done from the two devnets, never from memory (see
//! the module guide in [`super`]).

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use serde_json::{json, Value};

use super::{Shared, DEST_DENOM};
use crate::evm::SkipBridge;

/// `swaps(id).status` values.
pub(crate) const STATUS_PENDING: u8 = 1;
pub(crate) const STATUS_SETTLED: u8 = 2;
pub(crate) const STATUS_REFUNDED: u8 = 3;

/// The Akash credit reference of swap `id`: unique per chain, bridge and request. One
/// path segment (no `/`), since a restarted simulator looks it up with
/// `GET /simulator/credits/{reference}`.
pub(crate) fn credit_reference(shared: &Shared, id: U256) -> String {
    format!(
        "skip-simulator.{}.{}.{id}",
        shared.route.evm_chain_id, shared.route.bridge
    )
}

/// Runs until aborted. Errors (a devnet not answering) are logged and retried on the
/// next tick; a request stays in the work list until it is settled or refunded.
pub(crate) async fn run(shared: Arc<Shared>, poll_interval: Duration) {
    let mut next_block = 0u64;
    let mut pending: BTreeSet<U256> = BTreeSet::new();
    let mut ticks = tokio::time::interval(poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match new_requests(&shared, next_block).await {
            Ok((ids, scanned_to)) => {
                pending.extend(ids);
                next_block = scanned_to + 1;
            }
            Err(error) => tracing::warn!(%error, "skip simulator: cannot read the bridge's logs"),
        }
        for id in pending.clone() {
            match finish(&shared, id).await {
                Ok(Finished::Yes) => {
                    pending.remove(&id);
                }
                Ok(Finished::StopWorker) => {
                    tracing::warn!(%id, "skip simulator: stopping the settlement worker before settle (armed fault)");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%id, %error, "skip simulator: swap not finished yet; retrying")
                }
            }
        }
    }
}

async fn new_requests(shared: &Shared, from: u64) -> Result<(Vec<U256>, u64), String> {
    let latest = shared
        .provider
        .get_block_number()
        .await
        .map_err(|e| e.to_string())?;
    if latest < from {
        return Ok((Vec::new(), from.saturating_sub(1)));
    }
    let filter = Filter::new()
        .address(shared.route.bridge)
        .event_signature(SkipBridge::SwapRequested::SIGNATURE_HASH)
        .from_block(from)
        .to_block(latest);
    let logs = shared
        .provider
        .get_logs(&filter)
        .await
        .map_err(|e| e.to_string())?;
    let ids = logs
        .iter()
        .filter_map(|log| log.log_decode::<SkipBridge::SwapRequested>().ok())
        .map(|log| log.inner.data.id)
        .collect();
    Ok((ids, latest))
}

enum Finished {
    Yes,
    StopWorker,
}

async fn finish(shared: &Shared, id: U256) -> Result<Finished, String> {
    let bridge = SkipBridge::new(shared.route.bridge, &shared.provider);
    let swap = bridge
        .swaps(id)
        .call()
        .await
        .map_err(|e| format!("reading swap {id}: {e}"))?;
    if swap.status != STATUS_PENDING {
        return Ok(Finished::Yes);
    }
    let reference = credit_reference(shared, id);
    // Credited before (by this process or one that died before settling)? Then settle
    // with what was credited, whatever the price says now.
    let credited = match earlier_credit(shared, &reference).await? {
        Some(amount) => amount,
        None => {
            let pricing = shared.pricing();
            let amount_out = pricing.quote(swap.amountIn).map(|q| q.amount_out);
            let refusal = match amount_out {
                None => Some("the amount out overflows".to_owned()),
                Some(out) if out < swap.minAmountOut => Some(format!(
                    "price moved: {} AKT per USDC yields {out}uakt, below the minimum {}uakt",
                    pricing.price, swap.minAmountOut
                )),
                Some(out) if u128::try_from(out).is_err() => {
                    Some(format!("{out}uakt does not fit the Akash ledger"))
                }
                Some(_) if !valid_akash_address(&swap.destAddress) => Some(format!(
                    "destination '{}' is not an akash1… address",
                    swap.destAddress
                )),
                Some(_) => None,
            };
            if let Some(reason) = refusal {
                send(bridge.refund(id, reason.clone()), "refund", id).await?;
                tracing::info!(%id, %reason, "skip simulator: swap refunded");
                return Ok(Finished::Yes);
            }
            let out = amount_out.expect("checked above");
            credit(shared, &reference, &swap.destAddress, out).await?
        }
    };
    if std::mem::take(
        &mut *shared
            .stop_before_settle
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    ) {
        return Ok(Finished::StopWorker);
    }
    send(bridge.settle(id, credited), "settle", id).await?;
    tracing::info!(%id, amount_out = %credited, dest = %swap.destAddress, "skip simulator: swap settled");
    Ok(Finished::Yes)
}

fn valid_akash_address(address: &str) -> bool {
    address
        .parse::<cosmrs::AccountId>()
        .is_ok_and(|id| id.prefix() == "akash")
}

fn akash_url(shared: &Shared, path: &str) -> String {
    format!(
        "{}{path}",
        shared.route.akash_rest.as_str().trim_end_matches('/')
    )
}

async fn earlier_credit(shared: &Shared, reference: &str) -> Result<Option<U256>, String> {
    let url = akash_url(shared, &format!("/simulator/credits/{reference}"));
    let response = shared
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("asking the Akash simulator for credit {reference}: {e}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body: Value = response
        .error_for_status()
        .map_err(|e| format!("asking the Akash simulator for credit {reference}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("the Akash simulator's credit {reference}: {e}"))?;
    credited_amount(&body).map(Some)
}

fn credited_amount(body: &Value) -> Result<U256, String> {
    body["credit"]["amount"]
        .as_str()
        .and_then(|amount| amount.parse().ok())
        .ok_or_else(|| format!("the Akash simulator's credit answer has no amount: {body}"))
}

async fn credit(
    shared: &Shared,
    reference: &str,
    address: &str,
    amount: U256,
) -> Result<U256, String> {
    let response = shared
        .http
        .post(akash_url(shared, "/simulator/accounts"))
        .json(&json!({
            "address": address,
            "amount": amount.to_string(),
            "denom": DEST_DENOM,
            "reference": reference,
        }))
        .send()
        .await
        .map_err(|e| format!("crediting {reference} on the Akash simulator: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("crediting {reference}: the answer is not JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!("crediting {reference}: HTTP {status}: {body}"));
    }
    credited_amount(&body)
}

async fn send<P, C>(
    call: alloy::contract::CallBuilder<P, C>,
    what: &str,
    id: U256,
) -> Result<(), String>
where
    P: Provider,
    C: alloy::contract::CallDecoder,
{
    let receipt = call
        .send()
        .await
        .map_err(|e| format!("{what} of swap {id}: {e}"))?
        .get_receipt()
        .await
        .map_err(|e| format!("{what} of swap {id}: {e}"))?;
    if !receipt.status() {
        return Err(format!("{what} of swap {id} reverted"));
    }
    Ok(())
}
