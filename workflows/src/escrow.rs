//! Akash escrow deposits made exactly once, shared by the workflows that fund a
//! deployment (`topup.escrow`, `fund`): sign (journaled before anything is sent),
//! broadcast the journaled bytes, and handle a sequence race without ever abandoning
//! bytes that could still land.

use std::time::Duration;

use morpheus_engine::{Ctx, LogLevel, RetryPolicy, StepBuilder, WorkflowError, WorkflowResult};
use morpheus_executors::cosmos::{
    can_resign, AccountInfo, BroadcastResult, CosmosRequest, TxStatus, SEQUENCE_MISMATCH,
};
use serde::Deserialize;
use serde_json::json;

/// Retries for chain reads and broadcasts: transient node trouble, persisted times.
pub(crate) fn chain_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_delay_ms: 1_000,
        multiplier: 2.0,
        max_delay_ms: 30_000,
        jitter: 0.2,
    }
}

/// A step of the `cosmos` executor with the chain retry policy.
pub(crate) fn chain_step(ctx: &Ctx, name: impl AsRef<str>) -> StepBuilder<'_> {
    ctx.step(name).executor("cosmos").retry(chain_retry())
}

/// A deployment sequence number as the `cosmos` executor takes it.
pub(crate) fn dseq_number(dseq: &str) -> WorkflowResult<u64> {
    dseq.parse().map_err(|_| {
        WorkflowError::failed(format!(
            "dseqs: '{dseq}' is not a deployment sequence number"
        ))
    })
}

/// One deposit to make.
pub(crate) struct EscrowDeposit<'a> {
    /// The deployment's owner.
    pub owner: &'a str,
    /// The deployment.
    pub dseq: &'a str,
    /// How much, in base units of `denom`.
    pub amount: u128,
    /// The denom (`uakt`).
    pub denom: &'a str,
    /// Seconds per block: how long a competing transaction needs to settle.
    pub seconds_per_block: f64,
    /// Prefix of the step names (`deposit/123` → `deposit/123/sign`, …). Part of the
    /// journal: never change it for a workflow version that has runs.
    pub steps: &'a str,
    /// How log lines name the deposit (`dseq=123`).
    pub subject: &'a str,
}

/// Signs (journaled before anything is sent), broadcasts and confirms one deposit:
/// `Ok(Ok((tx_hash, height)))`. `Ok(Err(reason))`: the chain refused it for good
/// (nothing was deposited). See [`submit_once`].
pub(crate) async fn deposit(
    ctx: &Ctx,
    deposit: &EscrowDeposit<'_>,
) -> WorkflowResult<Result<(String, u64), String>> {
    let sign = serde_json::to_value(CosmosRequest::SignDeposit {
        owner: Some(deposit.owner.to_owned()),
        dseq: dseq_number(deposit.dseq)?,
        amount: format!("{}{}", deposit.amount, deposit.denom),
        memo: None,
    })?;
    submit_once(
        ctx,
        &Submission {
            sign,
            seconds_per_block: deposit.seconds_per_block,
            steps: deposit.steps,
            subject: deposit.subject,
        },
    )
    .await
}

/// The fields of a signed transaction that [`submit_once`] needs; every sign op of the
/// `cosmos` executor answers at least these.
#[derive(Debug, Deserialize)]
struct Signed {
    tx_bytes_b64: String,
    tx_hash: String,
    sequence: u64,
    /// The signing address (an ephemeral key's, when one signs for its granter): whose
    /// sequence decides whether the bytes can still land.
    signer: String,
}

/// One transaction to land exactly once.
pub(crate) struct Submission<'a> {
    /// The `cosmos` executor's sign request (`sign_deposit`, `sign_create_deployment`, …)
    /// as JSON.
    pub sign: serde_json::Value,
    /// Seconds per block: how long a competing transaction needs to settle.
    pub seconds_per_block: f64,
    /// Prefix of the step names (`deposit/123` → `deposit/123/sign`, …). Part of the
    /// journal: never change it for a workflow version that has runs.
    pub steps: &'a str,
    /// How log lines name the transaction (`dseq=123`).
    pub subject: &'a str,
}

/// Signs (journaled before anything is sent), broadcasts and confirms one transaction:
/// `Ok(Ok((tx_hash, height)))`. `Ok(Err(reason))`: the chain refused it for good
/// (nothing happened on chain but, perhaps, the fee).
///
/// A sequence mismatch means another transaction of the wallet took the sequence (a
/// concurrent sweep of another owner funded by the same wallet, say). The signed bytes
/// are only abandoned once they provably never landed ([`can_resign`]); while the other
/// transaction still sits in the mempool that is not provable yet, so the run waits a
/// block (durably) and broadcasts the same bytes again.
pub(crate) async fn submit_once(
    ctx: &Ctx,
    submission: &Submission<'_>,
) -> WorkflowResult<Result<(String, u64), String>> {
    const MAX_SIGNATURES: u32 = 3;
    const MAX_BROADCASTS_PER_SIGNATURE: u32 = 10;
    // About one block: the time a competing transaction needs to settle.
    let settle_pause = Duration::from_secs_f64(submission.seconds_per_block.clamp(0.2, 30.0));
    let (steps, subject) = (submission.steps, submission.subject);
    for signature in 1..=MAX_SIGNATURES {
        let signed: Signed = chain_step(ctx, format!("{steps}/sign"))
            .call_as(&submission.sign)
            .await?;
        let tx_hash = signed.tx_hash;
        let tx_sequence = signed.sequence;
        let mut broadcasts = 0;
        let account_sequence = loop {
            broadcasts += 1;
            let broadcast: WorkflowResult<BroadcastResult> =
                chain_step(ctx, format!("{steps}/broadcast"))
                    .timeout(Duration::from_secs(180))
                    .call_as(&CosmosRequest::Broadcast {
                        tx_bytes_b64: signed.tx_bytes_b64.clone(),
                    })
                    .await;
            let message = match broadcast {
                Ok(result) => return Ok(Ok((tx_hash, result.height))),
                Err(WorkflowError::StepFailed {
                    code: Some(code),
                    message,
                    ..
                }) if code == SEQUENCE_MISMATCH => message,
                Err(WorkflowError::StepFailed { message, .. }) => return Ok(Err(message)),
                Err(other) => return Err(other),
            };
            let status: TxStatus = chain_step(ctx, format!("{steps}/tx-status"))
                .call_as(&CosmosRequest::TxStatus {
                    tx_hash: tx_hash.clone(),
                })
                .await?;
            let found = status.found;
            if found {
                if status.code == Some(0) {
                    let height = status.height.ok_or_else(|| {
                        WorkflowError::failed(format!(
                            "tx_status: transaction {tx_hash} is on chain but has no height"
                        ))
                    })?;
                    return Ok(Ok((tx_hash, height)));
                }
                // The log as JSON (quoted, or null), as this message has always shown it.
                return Ok(Err(format!(
                    "transaction {tx_hash} failed on chain: {}",
                    json!(status.raw_log)
                )));
            }
            let account: AccountInfo = chain_step(ctx, format!("{steps}/account"))
                .call_as(&CosmosRequest::Account {
                    address: Some(signed.signer.clone()),
                })
                .await?;
            let account_sequence = account.sequence;
            if can_resign(found, account_sequence, tx_sequence) {
                break account_sequence;
            }
            if broadcasts == MAX_BROADCASTS_PER_SIGNATURE {
                return Ok(Err(format!(
                    "sequence mismatch for {broadcasts} broadcasts but transaction {tx_hash} (sequence {tx_sequence}) may still land (account at {account_sequence}); not re-signing: {message}"
                )));
            }
            ctx.log(
                LogLevel::Warn,
                format!("{subject} sequence mismatch: sequence {tx_sequence} is taken by another transaction of the wallet not yet in a block (account at {account_sequence}); broadcasting the same bytes again in {settle_pause:?}"),
            );
            ctx.sleep(settle_pause).await?;
        };
        ctx.log(
            LogLevel::Warn,
            format!("{subject} transaction {tx_hash} never landed (account sequence {account_sequence} > {tx_sequence}); signing again ({signature}/{MAX_SIGNATURES})"),
        );
    }
    Ok(Err(format!(
        "gave up after {MAX_SIGNATURES} signatures lost to sequence races"
    )))
}
