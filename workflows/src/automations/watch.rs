//! `automation.watch`: one scan of a FILTER automation's logs, started by its schedule
//! every [`WATCH_POLL`](super::WATCH_POLL).
//!
//! The cursor (the last block scanned) is a document
//! ([`AUTOMATION_CURSORS_COLLECTION`]): a watcher that restarts resumes from it. Only
//! blocks at least `confirmations` deep are scanned, so a reorg above that depth can
//! neither trigger a log twice nor make one be missed. Each matching log starts one
//! `automation.execute` run with the idempotency key `(automation, chain, tx hash,
//! log index)`: scanning a range again (a crash before the cursor moved) starts nothing
//! new.

use async_trait::async_trait;
use morpheus_engine::{
    Ctx, InvalidInput, LogLevel, NewRun, StepError, Workflow, WorkflowError, WorkflowResult,
};
use morpheus_executors::evm::{ChainInfo, EvmLogs, EvmRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::execute::ExecuteInput;
use super::model::{log_filter, Automation, Source, AUTOMATIONS_COLLECTION};
use super::EXECUTE_WORKFLOW;
use crate::fund::evm_tx::evm_step;

/// The document collection of FILTER cursors (key: the automation's id).
pub const AUTOMATION_CURSORS_COLLECTION: &str = "automation_cursors";
/// Most blocks one scan covers (a long-stopped watcher catches up over several).
pub const MAX_BLOCKS_PER_SCAN: u64 = 1_000;

/// A FILTER's cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    /// The last block scanned.
    scanned_to: u64,
}

/// Input of `automation.watch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchInput {
    /// The automation.
    pub automation_id: String,
}

/// What one scan did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReport {
    /// The blocks scanned (none when the chain has not moved past the cursor).
    pub scanned: Option<(u64, u64)>,
    /// Matching logs found.
    pub logs: usize,
    /// Executions started (fewer than `logs` when a range was scanned before).
    pub started: usize,
}

/// `automation.watch`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutomationWatch;

#[async_trait]
impl Workflow for AutomationWatch {
    const NAME: &'static str = super::WATCH_WORKFLOW;
    type Input = WatchInput;
    type Output = WatchReport;

    fn validate(&self, input: &WatchInput) -> Result<(), InvalidInput> {
        if !input.automation_id.starts_with("aut-") {
            return Err(InvalidInput::new(format!(
                "automation_id: '{}' is not an automation id (aut-…)",
                input.automation_id
            )));
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: WatchInput) -> WorkflowResult<WatchReport> {
        let id = input.automation_id.clone();
        let documents = ctx.documents();
        let (filter, confirmations): (Value, u64) = {
            let (documents, id) = (documents.clone(), id.clone());
            ctx.step("automation")
                .run(move |_| async move {
                    let automation = documents
                        .get::<Automation>(AUTOMATIONS_COLLECTION, &id)
                        .await
                        .map_err(StepError::retryable)?
                        .ok_or_else(|| StepError::permanent(format!("automation {id} is unknown")))?
                        .value;
                    match automation.config.source {
                        Source::Filter(filter) => Ok((filter, automation.config.confirmations)),
                        Source::Interval(_) => Err(StepError::permanent(format!(
                            "automation {id} is an INTERVAL automation: it has no log watcher"
                        ))),
                    }
                })
                .await?
        };
        let filter = log_filter(&filter).map_err(|error| WorkflowError::failed(error.0))?;
        let chain: ChainInfo = evm_step(ctx, "head")
            .call_as(&EvmRequest::ChainInfo)
            .await?;
        if chain.chain_id != filter.chain_id {
            return Err(WorkflowError::failed(format!(
                "automation {id}: its filter is for chain {}, but the evm executor is on chain {}",
                filter.chain_id, chain.chain_id
            )));
        }
        let safe_head = chain.block_number.saturating_sub(confirmations);
        let cursor: Option<u64> = {
            let (documents, id) = (documents.clone(), id.clone());
            ctx.step("cursor")
                .run(move |_| async move {
                    Ok(documents
                        .get::<Cursor>(AUTOMATION_CURSORS_COLLECTION, &id)
                        .await
                        .map_err(StepError::retryable)?
                        .map(|stored| stored.value.scanned_to))
                })
                .await?
        };
        let from = match (cursor, filter.start_block()) {
            (Some(scanned_to), _) => scanned_to + 1,
            (None, Some(start)) => start,
            // "latest": logs from the first scan on.
            (None, None) => safe_head + 1,
        };
        let to = safe_head.min(from.saturating_add(MAX_BLOCKS_PER_SCAN - 1));
        if from > to {
            if cursor.is_none() {
                advance(ctx, &id, from.saturating_sub(1)).await?;
            }
            return Ok(WatchReport {
                scanned: None,
                logs: 0,
                started: 0,
            });
        }
        let found: EvmLogs = evm_step(ctx, "logs")
            .call_as(&EvmRequest::Logs {
                address: filter.address.clone(),
                topics: filter.topics.clone(),
                from_block: from,
                to_block: to,
            })
            .await?;
        let started: usize = {
            let world = ctx.world();
            let (id, logs, chain_id) = (id.clone(), found.logs.clone(), filter.chain_id);
            ctx.step("start")
                .run(move |_| async move {
                    let mut started = 0;
                    for log in logs {
                        let input = serde_json::to_value(ExecuteInput {
                            automation_id: id.clone(),
                            trigger: Some(json!({"type": "FILTER", "data": log})),
                        })
                        .map_err(StepError::permanent)?;
                        let mut run = NewRun::new(EXECUTE_WORKFLOW, input);
                        run.queue = super::store::execution_queue(&id);
                        run.idempotency_key = Some(format!(
                            "automation:{id}:{chain_id}:{}:{}",
                            log.tx_hash.to_lowercase(),
                            log.log_index
                        ));
                        if world
                            .start_run(run)
                            .await
                            .map_err(StepError::retryable)?
                            .created
                        {
                            started += 1;
                        }
                    }
                    Ok(started)
                })
                .await?
        };
        advance(ctx, &id, to).await?;
        if !found.logs.is_empty() {
            ctx.log(
                LogLevel::Info,
                format!(
                    "automation {id}: blocks {from}..={to}: {} matching log(s), {started} execution(s) started",
                    found.logs.len()
                ),
            );
        }
        Ok(WatchReport {
            scanned: Some((from, to)),
            logs: found.logs.len(),
            started,
        })
    }
}

/// Moves the cursor to `scanned_to`.
async fn advance(ctx: &Ctx, id: &str, scanned_to: u64) -> WorkflowResult<()> {
    let (documents, id) = (ctx.documents(), id.to_owned());
    ctx.step("advance")
        .run(move |_| async move {
            let cursor = Cursor { scanned_to };
            let updated = documents
                .update::<Cursor, morpheus_engine::EngineError, _>(
                    AUTOMATION_CURSORS_COLLECTION,
                    &id,
                    |stored| {
                        stored.scanned_to = stored.scanned_to.max(scanned_to);
                        Ok(())
                    },
                )
                .await
                .map_err(StepError::retryable)?;
            if updated.is_none() {
                documents
                    .insert_if_absent(AUTOMATION_CURSORS_COLLECTION, &id, &cursor)
                    .await
                    .map_err(StepError::retryable)?;
            }
            Ok(())
        })
        .await
}
