//! `automation.execute`: one execution of an automation, as its hooks describe it.
//!
//! 1. `context`: the execution's number and the previous execution (journaled).
//! 2. `trigger`: `POST {baseURL}/kernel/trigger` with the context, params, the
//!    request id (the run id: the same on every retry, so the executor can
//!    deduplicate), the trigger and the HMAC of the request id. Retried at persisted
//!    times while the executor is down or answers 5xx.
//! 3. `verify`: the answer must answer this request, carry a valid HMAC (with
//!    `verifyPayload`) and a well-formed task within the policy; otherwise nothing is
//!    relayed and the refusal is logged and recorded.
//! 4. `relay`: the task through the `evm` executor, signed by one of the automation's
//!    relayers, exactly once (signed and journaled before broadcast).
//! 5. `executed`: `POST {baseURL}/kernel/executed` with the outcome; a 404 skips it; a
//!    JSON `{"log": …}` answer is kept with the execution.
//! 6. `record`: the execution's log record (`GET /api/v1/automations/:id/logs`).

use std::time::Duration;

use async_trait::async_trait;
use morpheus_engine::{
    Ctx, DocumentQuery, InvalidInput, LogLevel, RetryPolicy, StepError, Workflow, WorkflowError,
    WorkflowResult,
};
use morpheus_executors::cosmos::ephemeral::{EphemeralKey, PassphraseSource};
use morpheus_executors::evm::EvmRequest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::model::{
    check_answer, hmac_hex, Automation, Relay, TriggerAnswer, AUTOMATIONS_COLLECTION,
    AUTOMATION_LOGS_COLLECTION,
};
use crate::fund::evm_tx::{send_once, TxFailure};

/// Input of `automation.execute` (what the automation's schedule starts it with).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteInput {
    /// The automation.
    pub automation_id: String,
    /// What triggered it (`{"type": "FILTER", "data": <log>}` from the watcher);
    /// default: an INTERVAL tick at the run's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Value>,
}

/// The execution's place in the automation's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Context {
    #[serde(rename = "executionCount")]
    execution_count: u64,
    #[serde(rename = "prevExecutionAt")]
    prev_execution_at: Option<String>,
    #[serde(rename = "prevExecutionID")]
    prev_execution_id: Option<String>,
}

/// What `verify` decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
enum Verdict {
    Skip,
    Relay(Relay),
    Refuse { reason: String },
}

/// `automation.execute`.
#[derive(Debug, Clone, Default)]
pub struct AutomationExecute {
    passphrase: PassphraseSource,
}

impl AutomationExecute {
    /// Executions whose HMAC keys are sealed under the passphrase in `passphrase`.
    pub fn new(passphrase: PassphraseSource) -> Self {
        Self { passphrase }
    }
}

/// Retries of hook deliveries: the executor may be down for a while.
fn hook_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_delay_ms: 500,
        multiplier: 2.0,
        max_delay_ms: 10_000,
        jitter: 0.2,
    }
}

/// The automation and its opened HMAC key, read inside a step (never journaled).
async fn load(
    documents: &morpheus_engine::Documents,
    passphrase: &PassphraseSource,
    id: &str,
) -> Result<(Automation, Zeroizing<Vec<u8>>), StepError> {
    let automation = documents
        .get::<Automation>(AUTOMATIONS_COLLECTION, id)
        .await
        .map_err(StepError::retryable)?
        .ok_or_else(|| StepError::permanent(format!("automation {id} is unknown (deleted?)")))?
        .value;
    let passphrase = passphrase.read().map_err(StepError::permanent)?;
    let sealed = automation.hmac_key_sealed.clone();
    let key = tokio::task::spawn_blocking(move || EphemeralKey::open(&sealed, &passphrase))
        .await
        .map_err(StepError::retryable)?
        .map_err(|error| StepError::permanent(format!("automation {id}'s HMAC key: {error}")))?;
    Ok((automation, Zeroizing::new(key.secret().to_vec())))
}

/// POSTs `body` to `url`: the answer's status and body. Connection failures and 5xx
/// are retryable; other statuses are the caller's to judge.
async fn post(url: &str, body: &Value) -> Result<(u16, String), StepError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(StepError::permanent)?;
    let answer = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|error| StepError::retryable(format!("POST {url}: {error}")))?;
    let status = answer.status().as_u16();
    let text = answer
        .text()
        .await
        .map_err(|error| StepError::retryable(format!("POST {url}: {error}")))?;
    if status >= 500 {
        return Err(StepError::retryable(format!(
            "POST {url}: {status} {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    Ok((status, text))
}

#[async_trait]
impl Workflow for AutomationExecute {
    const NAME: &'static str = super::EXECUTE_WORKFLOW;
    type Input = ExecuteInput;
    type Output = Value;

    fn validate(&self, input: &ExecuteInput) -> Result<(), InvalidInput> {
        if !input.automation_id.starts_with("aut-") {
            return Err(InvalidInput::new(format!(
                "automation_id: '{}' is not an automation id (aut-…)",
                input.automation_id
            )));
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: ExecuteInput) -> WorkflowResult<Value> {
        let id = input.automation_id.clone();
        let request_id = ctx.run_id().to_string();
        let documents = ctx.documents();
        let context: Context = {
            let (documents, id) = (documents.clone(), id.clone());
            ctx.step("context")
                .run(move |_| async move {
                    let previous = documents
                        .list::<Value>(
                            &DocumentQuery::new(AUTOMATION_LOGS_COLLECTION)
                                .field_equals("automationID", id.as_str())
                                .limit(1),
                        )
                        .await
                        .map_err(StepError::retryable)?;
                    let previous = previous.first().map(|stored| &stored.value);
                    Ok(Context {
                        execution_count: previous
                            .and_then(|record| record["executionCount"].as_u64())
                            .map_or(1, |count| count + 1),
                        prev_execution_at: previous
                            .and_then(|record| record["createdAt"].as_str())
                            .map(str::to_owned),
                        prev_execution_id: previous
                            .and_then(|record| record["requestID"].as_str())
                            .map(str::to_owned),
                    })
                })
                .await?
        };
        let triggered_at = ctx.now().await?;
        let trigger = input
            .trigger
            .clone()
            .unwrap_or_else(|| json!({"type": "INTERVAL", "data": triggered_at}));
        let request = {
            let (documents, passphrase, id) =
                (documents.clone(), self.passphrase.clone(), id.clone());
            let (request_id, context, trigger) =
                (request_id.clone(), context.clone(), trigger.clone());
            ctx.step("request")
                .run(move |_| async move {
                    let (automation, key) = load(&documents, &passphrase, &id).await?;
                    let relayers: Vec<&str> = automation
                        .relayers
                        .iter()
                        .map(|r| r.address.as_str())
                        .collect();
                    Ok(json!({
                        "context": context,
                        "params": {
                            "executorAddress": relayers.first(),
                            "executorID": automation.id,
                            "relayers": relayers,
                            "subscription": {
                                "id": automation.id,
                                "createdAt": automation.created_at,
                                "source": automation.config.source,
                                "metadata": automation.config.metadata,
                            },
                        },
                        "requestID": request_id,
                        "trigger": trigger,
                        "signature": hmac_hex(&key, &request_id),
                    }))
                })
                .await?
        };
        let automation: Automation = {
            let (documents, id) = (documents.clone(), id.clone());
            let automation: Automation = ctx
                .step("automation")
                .run(move |_| async move {
                    let mut automation = documents
                        .get::<Automation>(AUTOMATIONS_COLLECTION, &id)
                        .await
                        .map_err(StepError::retryable)?
                        .map(|stored| stored.value)
                        .ok_or_else(|| {
                            StepError::permanent(format!("automation {id} is unknown"))
                        })?;
                    // What a run journals of it: never even the sealed key.
                    automation.hmac_key_sealed.clear();
                    Ok(automation)
                })
                .await?;
            automation
        };
        let base = automation
            .config
            .destination
            .base_url
            .trim_end_matches('/')
            .to_owned();
        let trigger_url = format!("{base}/kernel/trigger");
        let answer: Result<Value, String> = {
            let (url, body) = (trigger_url.clone(), request.clone());
            let delivered = ctx
                .step("trigger")
                .retry(hook_retry())
                .run(move |_| async move {
                    let (status, text) = post(&url, &body).await?;
                    if !(200..300).contains(&status) {
                        return Ok(Err(format!(
                            "POST {url}: {status} {}",
                            text.chars().take(200).collect::<String>()
                        )));
                    }
                    Ok(serde_json::from_str::<Value>(&text)
                        .map_err(|error| format!("the answer is not JSON ({error})")))
                })
                .await;
            match delivered {
                Ok(answer) => answer,
                Err(WorkflowError::StepFailed { message, .. }) => {
                    Err(format!("the executor could not be reached: {message}"))
                }
                Err(other) => return Err(other),
            }
        };
        let verdict: Verdict = match answer.clone() {
            Err(reason) => Verdict::Refuse { reason },
            Ok(answer) => {
                let (documents, passphrase, id) =
                    (documents.clone(), self.passphrase.clone(), id.clone());
                let request_id = request_id.clone();
                ctx.step("verify")
                    .run(move |_| async move {
                        let (automation, key) = load(&documents, &passphrase, &id).await?;
                        let parsed: TriggerAnswer = match serde_json::from_value(answer) {
                            Ok(parsed) => parsed,
                            Err(error) => {
                                return Ok(Verdict::Refuse {
                                    reason: format!("the answer is malformed: {error}"),
                                })
                            }
                        };
                        Ok(
                            match check_answer(
                                &parsed,
                                &request_id,
                                &key,
                                automation.config.verify_payload,
                                &automation.config.policy,
                            ) {
                                Ok(None) => Verdict::Skip,
                                Ok(Some(relay)) => Verdict::Relay(relay),
                                Err(reason) => Verdict::Refuse { reason },
                            },
                        )
                    })
                    .await?
            }
        };
        let (successful, error, relay_response, message) = match &verdict {
            Verdict::Skip => {
                ctx.log(
                    LogLevel::Info,
                    format!("automation {id}: the executor skipped request {request_id}"),
                );
                (true, Value::Null, Value::Null, "skipped".to_owned())
            }
            Verdict::Refuse { reason } => {
                ctx.log(
                    LogLevel::Warn,
                    format!(
                        "automation {id}: request {request_id} refused, nothing relayed: {reason}"
                    ),
                );
                (
                    false,
                    json!({"type": "refused", "message": reason}),
                    Value::Null,
                    format!("refused: {reason}"),
                )
            }
            Verdict::Relay(relay) => {
                let relayers = &automation.relayers;
                let relayer =
                    &relayers[(context.execution_count as usize - 1) % relayers.len().max(1)];
                ctx.log(
                    LogLevel::Info,
                    format!(
                        "automation {id}: relaying request {request_id} to {} (value {} wei) from relayer {}",
                        relay.to, relay.value, relayer.address
                    ),
                );
                let sign = EvmRequest::Sign {
                    to: relay.to.clone(),
                    function: None,
                    abi: None,
                    args: Vec::new(),
                    data: Some(relay.data.clone()),
                    value: Some(relay.value.clone()),
                    gas_limit: None,
                    relayer: Some(relayer.key_id.clone()),
                };
                match send_once(ctx, "relay", &sign).await? {
                    Ok(landed) => {
                        ctx.log(
                            LogLevel::Info,
                            format!(
                                "automation {id}: relayed in block {} (tx {})",
                                landed.block_number, landed.tx_hash
                            ),
                        );
                        (
                            true,
                            Value::Null,
                            json!({"txHash": landed.tx_hash, "blockNumber": landed.block_number,
                                   "relayer": relayer.address, "nonce": landed.nonce}),
                            format!("relayed in tx {}", landed.tx_hash),
                        )
                    }
                    Err(failure) => {
                        let kind = match &failure {
                            TxFailure::WouldRevert(_) | TxFailure::Reverted(_) => "reverted",
                            TxFailure::NotSent(_) => "not_sent",
                        };
                        ctx.log(
                            LogLevel::Warn,
                            format!("automation {id}: the relay failed: {}", failure.message()),
                        );
                        (
                            false,
                            json!({"type": kind, "message": failure.message()}),
                            Value::Null,
                            format!("relay failed: {}", failure.message()),
                        )
                    }
                }
            }
        };
        let executed = json!({
            "requestID": request_id,
            "successful": successful,
            "error": error,
            "relayResponse": relay_response,
        });
        let executed_url = format!("{base}/kernel/executed");
        let hook_log: Value = {
            let (url, body) = (executed_url, executed.clone());
            let delivered = ctx
                .step("executed")
                .retry(hook_retry())
                .run(move |_| async move {
                    let (status, text) = post(&url, &body).await?;
                    if status == 404 {
                        return Ok(json!({"skipped": "404"}));
                    }
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    Ok(json!({"status": status, "log": answer.get("log").cloned().unwrap_or(Value::Null)}))
                })
                .await;
            match delivered {
                Ok(log) => log,
                Err(WorkflowError::StepFailed { message, .. }) => json!({"error": message}),
                Err(other) => return Err(other),
            }
        };
        let record = json!({
            "automationID": id,
            "requestID": request_id,
            "executionCount": context.execution_count,
            "message": message,
            "successful": successful,
            "outputTxHash": relay_response.get("txHash").cloned().unwrap_or(Value::Null),
            "metadata": {
                "request": {"trigger": request["trigger"], "context": request["context"]},
                "response": answer.clone().unwrap_or(Value::Null),
                "postExecution": {"executed": executed, "hook": hook_log},
            },
            "createdAt": triggered_at,
        });
        {
            let (documents, record, request_id) =
                (documents.clone(), record.clone(), request_id.clone());
            // The run id: unique however executions interleave.
            let key = format!("{id}/{request_id}");
            ctx.step("record")
                .run(move |_| async move {
                    documents
                        .insert_if_absent(AUTOMATION_LOGS_COLLECTION, &key, &record)
                        .await
                        .map_err(StepError::retryable)?;
                    Ok(())
                })
                .await?;
        }
        if let Verdict::Refuse { reason } = &verdict {
            return Err(WorkflowError::failed(format!(
                "automation {id}: request {request_id} refused: {reason}"
            )));
        }
        Ok(record)
    }
}
