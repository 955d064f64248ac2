//! EVM transactions made exactly once through the `evm` executor, and ERC-20 approvals
//! made only when the allowance does not already cover the spend.
//!
//! `sign` reserves the nonce and its output (the raw transaction) is journaled before
//! `broadcast` sends exactly those bytes; a resumed run re-sends them. A nonce taken by
//! a transaction signed elsewhere is handled as the cosmos deposits handle a sequence
//! race: the bytes are abandoned, and new ones signed, only once
//! [`can_resign`] proves they can never land.

use std::time::Duration;

use morpheus_engine::{Ctx, LogLevel, RetryPolicy, StepBuilder, WorkflowError, WorkflowResult};
use morpheus_executors::evm::{
    can_resign, EvmReceipt, EvmRequest, EvmTxStatus, Released, SignedEvmTx, TokenAmount,
    CALL_REVERTED, NONCE_TAKEN, TX_REJECTED, TX_REVERTED,
};
use serde::{Deserialize, Serialize};

/// Retries for EVM reads and broadcasts and for route API calls: transient trouble,
/// at persisted times.
pub(crate) fn evm_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        initial_delay_ms: 500,
        multiplier: 2.0,
        max_delay_ms: 30_000,
        jitter: 0.2,
    }
}

/// A step of the `evm` executor with the EVM retry policy.
pub(crate) fn evm_step(ctx: &Ctx, name: impl AsRef<str>) -> StepBuilder<'_> {
    ctx.step(name)
        .executor("evm")
        .retry(evm_retry())
        .timeout(Duration::from_secs(300))
}

/// A transaction that landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandedTx {
    /// Its hash.
    pub tx_hash: String,
    /// Its nonce.
    pub nonce: u64,
    /// The block that included it.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
}

/// Why a transaction did not land with its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxFailure {
    /// Executing it would revert, so nothing was signed or sent (the reason decoded).
    WouldRevert(String),
    /// It was mined and reverted: gas paid, nonce used, no effect.
    Reverted(String),
    /// The node refused it, or it lost its nonce too often; nothing was spent.
    NotSent(String),
}

impl TxFailure {
    /// The reason, as the executor gave it.
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::WouldRevert(message) | Self::Reverted(message) | Self::NotSent(message) => {
                message
            }
        }
    }

    /// Whether it failed for want of allowance: another run of the same wallet spent
    /// or replaced the approval between ours and this transaction.
    pub(crate) fn lacks_allowance(&self) -> bool {
        matches!(self, Self::WouldRevert(_) | Self::Reverted(_))
            && self.message().contains("allowance")
    }
}

/// Signs `request` (an `EvmRequest::Sign`) under the step names `{steps}/sign`,
/// `{steps}/broadcast`, … and sends it exactly once: `Ok(Ok(landed))`, or
/// `Ok(Err(failure))` when it provably did not take effect.
pub(crate) async fn send_once(
    ctx: &Ctx,
    steps: &str,
    request: &EvmRequest,
) -> WorkflowResult<Result<LandedTx, TxFailure>> {
    const MAX_SIGNATURES: u32 = 3;
    const MAX_BROADCASTS_PER_SIGNATURE: u32 = 10;
    // A relayer key signs for itself: its nonce is the one that matters.
    let relayer = match request {
        EvmRequest::Sign { relayer, .. } => relayer.clone(),
        _ => None,
    };
    for signature in 1..=MAX_SIGNATURES {
        let signed: SignedEvmTx = match evm_step(ctx, format!("{steps}/sign"))
            .call_as(request)
            .await
        {
            Ok(signed) => signed,
            Err(WorkflowError::StepFailed {
                code: Some(code),
                message,
                ..
            }) if code == CALL_REVERTED => return Ok(Err(TxFailure::WouldRevert(message))),
            Err(other) => return Err(other),
        };
        ctx.log(
            LogLevel::Info,
            format!(
                "{steps}: signed tx={} nonce={} to={} gas_limit={} max_fee_per_gas={}",
                signed.tx_hash, signed.nonce, signed.to, signed.gas_limit, signed.max_fee_per_gas
            ),
        );
        let mut broadcasts = 0;
        let signer_nonce = loop {
            broadcasts += 1;
            let sent: WorkflowResult<EvmReceipt> = evm_step(ctx, format!("{steps}/broadcast"))
                .call_as(&EvmRequest::Broadcast {
                    raw_tx: signed.raw_tx.clone(),
                })
                .await;
            let message = match sent {
                Ok(receipt) => {
                    return Ok(Ok(LandedTx {
                        tx_hash: receipt.tx_hash,
                        nonce: signed.nonce,
                        block_number: receipt.block_number,
                        gas_used: receipt.gas_used,
                    }))
                }
                Err(WorkflowError::StepFailed {
                    code: Some(code),
                    message,
                    ..
                }) if code == NONCE_TAKEN => message,
                Err(WorkflowError::StepFailed {
                    code: Some(code),
                    message,
                    ..
                }) if code == TX_REVERTED => return Ok(Err(TxFailure::Reverted(message))),
                Err(WorkflowError::StepFailed {
                    code: Some(code),
                    message,
                    ..
                }) if code == TX_REJECTED => {
                    // In no mempool: give the nonce back so the next transaction of
                    // the wallet leaves no gap.
                    let _: Released = evm_step(ctx, format!("{steps}/release-nonce"))
                        .call_as(&EvmRequest::ReleaseNonce {
                            raw_tx: signed.raw_tx.clone(),
                            relayer: relayer.clone(),
                        })
                        .await?;
                    return Ok(Err(TxFailure::NotSent(message)));
                }
                Err(other) => return Err(other),
            };
            let status: EvmTxStatus = evm_step(ctx, format!("{steps}/tx-status"))
                .call_as(&EvmRequest::TxStatus {
                    tx_hash: signed.tx_hash.clone(),
                    relayer: relayer.clone(),
                })
                .await?;
            if status.found {
                return match status.success {
                    Some(true) => Ok(Ok(LandedTx {
                        tx_hash: signed.tx_hash.clone(),
                        nonce: signed.nonce,
                        block_number: status.block_number.unwrap_or_default(),
                        gas_used: 0,
                    })),
                    _ => Ok(Err(TxFailure::Reverted(format!(
                        "transaction {} was mined and reverted",
                        signed.tx_hash
                    )))),
                };
            }
            if can_resign(status.found, status.signer_nonce, signed.nonce) {
                break status.signer_nonce;
            }
            if broadcasts == MAX_BROADCASTS_PER_SIGNATURE {
                return Ok(Err(TxFailure::NotSent(format!(
                    "nonce {} taken for {broadcasts} broadcasts but transaction {} may still land (signer at nonce {}); not re-signing: {message}",
                    signed.nonce, signed.tx_hash, status.signer_nonce
                ))));
            }
            ctx.log(
                LogLevel::Warn,
                format!(
                    "{steps}: nonce {} is used by a pending transaction signed elsewhere (signer at {}); broadcasting the same bytes again in 1s",
                    signed.nonce, status.signer_nonce
                ),
            );
            ctx.sleep(Duration::from_secs(1)).await?;
        };
        ctx.log(
            LogLevel::Warn,
            format!(
                "{steps}: transaction {} can never land (signer's mined nonce {signer_nonce} > {}); signing again ({signature}/{MAX_SIGNATURES})",
                signed.tx_hash, signed.nonce
            ),
        );
    }
    Ok(Err(TxFailure::NotSent(format!(
        "gave up after {MAX_SIGNATURES} signatures lost their nonce"
    ))))
}

/// What [`approve_if_needed`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalOutcome {
    /// The allowance found.
    pub allowance: String,
    /// The approval sent, when the allowance did not cover the spend.
    pub approve_tx: Option<LandedTx>,
}

/// Reads `spender`'s allowance over the wallet's `token` and, when it is below
/// `amount`, approves exactly `amount` (steps `{steps}/allowance` and
/// `{steps}/approve/…`). Every decision is logged with its numbers.
pub(crate) async fn approve_if_needed(
    ctx: &Ctx,
    steps: &str,
    token: &str,
    spender: &str,
    amount: u128,
) -> WorkflowResult<Result<ApprovalOutcome, TxFailure>> {
    let allowance: TokenAmount = evm_step(ctx, format!("{steps}/allowance"))
        .call_as(&EvmRequest::Allowance {
            token: token.to_owned(),
            owner: None,
            spender: spender.to_owned(),
        })
        .await?;
    let current: u128 = allowance.amount.parse().map_err(|_| {
        WorkflowError::failed(format!(
            "allowance: '{}' is not an amount",
            allowance.amount
        ))
    })?;
    if current >= amount {
        ctx.log(
            LogLevel::Info,
            format!("{steps}: approve skipped: allowance {current} of spender {spender} covers {amount}"),
        );
        return Ok(Ok(ApprovalOutcome {
            allowance: allowance.amount,
            approve_tx: None,
        }));
    }
    ctx.log(
        LogLevel::Info,
        format!("{steps}: approving {amount} for spender {spender} (allowance {current})"),
    );
    let request = EvmRequest::Sign {
        to: token.to_owned(),
        function: Some("approve(address,uint256)".into()),
        abi: None,
        args: vec![spender.into(), amount.to_string().into()],
        data: None,
        value: None,
        gas_limit: None,
        relayer: None,
    };
    Ok(send_once(ctx, &format!("{steps}/approve"), &request)
        .await?
        .map(|landed| ApprovalOutcome {
            allowance: allowance.amount,
            approve_tx: Some(landed),
        }))
}

/// The approvals a spend needs (steps `{steps}/allowance`, `{steps}/approve/…`), then
/// the spend itself (`{steps}/{spend_name}/…`), exactly once each: when another
/// run of the same wallet consumed or replaced the allowance in between (approvals
/// set, they do not add), the spend reverts for want of allowance without effect, and
/// the pair is tried again, at most `MAX_ROUNDS` times.
pub(crate) async fn approve_and_send(
    ctx: &Ctx,
    steps: &str,
    spend_name: &str,
    approvals: &[(String, String, u128)],
    spend: &EvmRequest,
) -> WorkflowResult<Result<(Vec<ApprovalOutcome>, LandedTx), TxFailure>> {
    const MAX_ROUNDS: u32 = 3;
    let mut last = None;
    for round in 1..=MAX_ROUNDS {
        let mut outcomes = Vec::with_capacity(approvals.len());
        for (token, spender, amount) in approvals {
            match approve_if_needed(ctx, steps, token, spender, *amount).await? {
                Ok(outcome) => outcomes.push(outcome),
                Err(failure) => return Ok(Err(failure)),
            }
        }
        // A mined revert whose reason could not be decoded (the replay on the parent
        // block succeeds when several transactions share a block) is retried only when
        // the allowance was indeed gone: otherwise it reverted for its own reasons.
        if let Some(failure) = last.take() {
            let reapproved = outcomes.iter().any(|outcome| outcome.approve_tx.is_some());
            if !reapproved && !TxFailure::lacks_allowance(&failure) {
                return Ok(Err(failure));
            }
        }
        match send_once(ctx, &format!("{steps}/{spend_name}"), spend).await? {
            Ok(landed) => return Ok(Ok((outcomes, landed))),
            Err(failure)
                if round < MAX_ROUNDS
                    && (failure.lacks_allowance() || matches!(failure, TxFailure::Reverted(_))) =>
            {
                ctx.log(
                    LogLevel::Warn,
                    format!(
                        "{steps}: {spend_name} failed, perhaps because another transaction of the wallet spent or replaced the allowance ({}); checking the allowance again ({round}/{MAX_ROUNDS})",
                        failure.message()
                    ),
                );
                last = Some(failure);
            }
            Err(failure) => return Ok(Err(failure)),
        }
    }
    Ok(Err(last.unwrap_or_else(|| {
        TxFailure::NotSent("no allowance after approving".into())
    })))
}
