//! The `pipeline` workflow: steps defined in JSON, each a durable call to any executor,
//! built-in or extension, so an extension is usable without writing Rust.
//!
//! ```json
//! {"steps": [
//!   {"name": "build", "executor": "builder", "method": "build", "params": {"dir": "/srv/app"},
//!    "retry": {"max_attempts": 5, "initial_delay_ms": 500}, "timeout_s": 600},
//!   {"name": "publish", "executor": "registry", "method": "push",
//!    "params": {"artifact": "${steps.build.output.path}", "note": "built ${steps.build.output.version}"}}
//! ]}
//! ```
//!
//! - With `method`, the executor is sent `{"method", "params"}` (what extensions take);
//!   without it, `params` itself is the payload (what `process`, `docker` and `cosmos`
//!   take).
//! - **References**: a string in `params` may name an earlier step's output as
//!   `${steps.<name>.output}` or a part of it, `${steps.<name>.output.<key>.<index>…}`.
//!   A string that is exactly one reference becomes that JSON value (number, object,
//!   …); references inside a longer string are replaced by their text (strings as they
//!   are, other values as JSON). `$${` is a literal `${`. A reference to a step that is
//!   not earlier in the list is refused when the run is started; a path the output does
//!   not have fails the run, naming the reference.
//! - Each step is retried per its `retry` (default: 3 attempts, 1 s then 2 s apart;
//!   extensions restart after a crash, so a retry usually finds them back) and each
//!   attempt gets `timeout_s` (default 3600). Retries wait at persisted times, and a
//!   crash resumes at the first step not yet recorded.
//! - The output lists every step's output in order.

use std::collections::HashSet;
use std::time::Duration;

use morpheus_engine::{
    async_trait, Ctx, InvalidInput, RetryPolicy, Workflow, WorkflowError, WorkflowResult,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Input of the `pipeline` workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineInput {
    /// The steps, run in order.
    pub steps: Vec<PipelineStep>,
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineStep {
    /// Step name (unique within the run; used in references and in `logs --step`).
    pub name: String,
    /// The executor (a built-in kind or an extension's name).
    pub executor: String,
    /// The extension method; absent for built-in executors (the payload is `params`).
    #[serde(default)]
    pub method: Option<String>,
    /// The params, with `${steps.<name>.output…}` references (default `{}`).
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Retry policy (default: 3 attempts, 1 s initial delay, doubling).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt time limit in seconds (default 3600).
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// What one step answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineStepOutput {
    /// Step name.
    pub name: String,
    /// The executor's answer.
    pub output: Value,
}

/// Output of the `pipeline` workflow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineOutput {
    /// One entry per step, in order.
    pub steps: Vec<PipelineStepOutput>,
}

/// The `pipeline` workflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pipeline;

const DEFAULT_TIMEOUT_S: f64 = 3600.0;

#[async_trait]
impl Workflow for Pipeline {
    const NAME: &'static str = "pipeline";
    type Input = PipelineInput;
    type Output = PipelineOutput;

    fn validate(&self, input: &PipelineInput) -> Result<(), InvalidInput> {
        if input.steps.is_empty() {
            return Err("steps: at least one step is required".into());
        }
        let mut earlier = HashSet::new();
        for (index, step) in input.steps.iter().enumerate() {
            let at = |field: &str, problem: String| {
                InvalidInput::new(format!("steps[{index}].{field}: {problem}"))
            };
            if step.name.trim().is_empty() {
                return Err(at("name", "must not be empty".into()));
            }
            if step.name.starts_with('$') || step.name.contains('#') || step.name.contains('.') {
                return Err(at(
                    "name",
                    format!(
                        "'{}' may not start with '$' or contain '#' or '.'",
                        step.name
                    ),
                ));
            }
            if step.executor.trim().is_empty() {
                return Err(at("executor", "must not be empty".into()));
            }
            if step
                .method
                .as_deref()
                .is_some_and(|method| method.trim().is_empty())
            {
                return Err(at("method", "must not be empty when given".into()));
            }
            if let Some(timeout) = step.timeout_s {
                if !(timeout > 0.0 && timeout.is_finite()) {
                    return Err(at("timeout_s", "must be a positive number".into()));
                }
            }
            if let Some(retry) = &step.retry {
                retry
                    .validate()
                    .map_err(|reason| format!("steps[{index}].{reason}"))?;
            }
            for reference in references(&step.params).map_err(|problem| at("params", problem))? {
                if !earlier.contains(reference.step.as_str()) {
                    return Err(at(
                        "params",
                        format!(
                            "'${{{}}}' names step '{}', which is not an earlier step",
                            reference.text, reference.step
                        ),
                    ));
                }
            }
            if !earlier.insert(step.name.as_str()) {
                return Err(at("name", format!("'{}' is used twice", step.name)));
            }
        }
        Ok(())
    }

    async fn run(&self, ctx: &Ctx, input: PipelineInput) -> WorkflowResult<PipelineOutput> {
        let mut outputs: Vec<PipelineStepOutput> = Vec::with_capacity(input.steps.len());
        for step in &input.steps {
            let params = resolve(&step.params, &outputs).map_err(|problem| {
                WorkflowError::failed(format!("step '{}': params: {problem}", step.name))
            })?;
            let payload = match &step.method {
                Some(method) => json!({"method": method, "params": params}),
                None => params,
            };
            let timeout_s = step.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
            let output = ctx
                .step(&step.name)
                .executor(step.executor.clone())
                .retry(step.retry.clone().unwrap_or_default())
                .timeout(Duration::from_secs_f64(timeout_s))
                .call(payload)
                .await?;
            outputs.push(PipelineStepOutput {
                name: step.name.clone(),
                output,
            });
        }
        Ok(PipelineOutput { steps: outputs })
    }
}

/// A `${steps.<step>.output<path>}` reference.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    /// The text between `${` and `}`.
    text: String,
    step: String,
    path: Vec<String>,
}

/// One piece of a string with references.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Reference(Reference),
}

/// Splits a string into text and references.
fn pieces(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        literal.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = escaped;
        } else if let Some(open) = after.strip_prefix("${") {
            let end = open
                .find('}')
                .ok_or_else(|| format!("'{after}' has no closing '}}'"))?;
            let inner = &open[..end];
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Reference(parse_reference(inner)?));
            rest = &open[end + 1..];
        } else {
            literal.push('$');
            rest = &after[1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

fn parse_reference(inner: &str) -> Result<Reference, String> {
    let mut parts = inner.split('.');
    let bad = || {
        format!("'${{{inner}}}' is not a reference: write ${{steps.<name>.output}} or ${{steps.<name>.output.<key>…}}")
    };
    if parts.next() != Some("steps") {
        return Err(bad());
    }
    let step = parts
        .next()
        .filter(|step| !step.is_empty())
        .ok_or_else(bad)?;
    if parts.next() != Some("output") {
        return Err(bad());
    }
    let path: Vec<String> = parts.map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(Reference {
        text: inner.to_owned(),
        step: step.to_owned(),
        path,
    })
}

/// Every reference in `value`'s strings.
fn references(value: &Value) -> Result<Vec<Reference>, String> {
    let mut found = Vec::new();
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => {
                for piece in pieces(text)? {
                    if let Piece::Reference(reference) = piece {
                        found.push(reference);
                    }
                }
            }
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
    Ok(found)
}

/// `value` with its references replaced by the outputs they name.
fn resolve(value: &Value, outputs: &[PipelineStepOutput]) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) => {
            let pieces = pieces(text)?;
            match pieces.as_slice() {
                [Piece::Reference(reference)] => lookup(reference, outputs)?.clone(),
                _ => {
                    let mut resolved = String::new();
                    for piece in &pieces {
                        match piece {
                            Piece::Text(text) => resolved.push_str(text),
                            Piece::Reference(reference) => match lookup(reference, outputs)? {
                                Value::String(text) => resolved.push_str(text),
                                other => resolved.push_str(&other.to_string()),
                            },
                        }
                    }
                    Value::String(resolved)
                }
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve(item, outputs))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), resolve(item, outputs)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn lookup<'a>(
    reference: &Reference,
    outputs: &'a [PipelineStepOutput],
) -> Result<&'a Value, String> {
    let output = outputs
        .iter()
        .find(|output| output.name == reference.step)
        .map(|output| &output.output)
        .ok_or_else(|| {
            format!(
                "'${{{}}}': step '{}' has no output yet",
                reference.text, reference.step
            )
        })?;
    let mut value = output;
    for key in &reference.path {
        let next = match value {
            Value::Object(fields) => fields.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|index| items.get(index)),
            _ => None,
        };
        value = next.ok_or_else(|| {
            format!(
                "'${{{}}}': the output of step '{}' has no '{key}' there",
                reference.text, reference.step
            )
        })?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(value: Value) -> PipelineInput {
        serde_json::from_value(value).expect("decodes")
    }

    fn outputs() -> Vec<PipelineStepOutput> {
        vec![PipelineStepOutput {
            name: "build".into(),
            output: json!({"path": "/out/app.tar", "size": 42, "tags": ["a", "b"]}),
        }]
    }

    #[test]
    fn references_resolve_to_values_or_text() {
        let params = json!({
            "whole": "${steps.build.output}",
            "typed": "${steps.build.output.size}",
            "indexed": "${steps.build.output.tags.1}",
            "text": "file ${steps.build.output.path} (${steps.build.output.size} bytes)",
            "escaped": "$${not.a.reference} and $5",
            "nested": [{"deep": "${steps.build.output.path}"}],
        });
        let resolved = resolve(&params, &outputs()).unwrap();
        assert_eq!(resolved["whole"], outputs()[0].output);
        assert_eq!(resolved["typed"], 42);
        assert_eq!(resolved["indexed"], "b");
        assert_eq!(resolved["text"], "file /out/app.tar (42 bytes)");
        assert_eq!(resolved["escaped"], "${not.a.reference} and $5");
        assert_eq!(resolved["nested"][0]["deep"], "/out/app.tar");
    }

    #[test]
    fn a_missing_path_is_named() {
        let error = resolve(&json!("${steps.build.output.digest}"), &outputs()).unwrap_err();
        assert_eq!(
            error,
            "'${steps.build.output.digest}': the output of step 'build' has no 'digest' there"
        );
    }

    #[test]
    fn validation_refuses_forward_and_malformed_references() {
        let forward = input(json!({"steps": [
            {"name": "a", "executor": "x", "method": "m", "params": {"p": "${steps.b.output}"}},
            {"name": "b", "executor": "x", "method": "m"}]}));
        let error = Pipeline.validate(&forward).unwrap_err();
        assert!(error.contains("steps[0].params"), "{error}");
        assert!(error.contains("not an earlier step"), "{error}");
        let malformed = input(json!({"steps": [
            {"name": "a", "executor": "x", "params": {"p": "${input.x}"}}]}));
        assert!(Pipeline
            .validate(&malformed)
            .unwrap_err()
            .contains("is not a reference"));
        let unclosed = input(json!({"steps": [
            {"name": "a", "executor": "x", "params": {"p": "${steps.a.output"}}]}));
        assert!(Pipeline
            .validate(&unclosed)
            .unwrap_err()
            .contains("no closing"));
        let fine = input(json!({"steps": [
            {"name": "a", "executor": "x", "method": "m"},
            {"name": "b", "executor": "y", "params": {"p": "${steps.a.output.k}"}}]}));
        assert_eq!(Pipeline.validate(&fine), Ok(()));
    }

    #[test]
    fn validation_refuses_bad_steps() {
        let empty = input(json!({"steps": []}));
        assert!(Pipeline
            .validate(&empty)
            .unwrap_err()
            .contains("at least one"));
        let twice = input(json!({"steps": [
            {"name": "a", "executor": "x"}, {"name": "a", "executor": "x"}]}));
        assert!(Pipeline
            .validate(&twice)
            .unwrap_err()
            .contains("used twice"));
        let dotted = input(json!({"steps": [{"name": "a.b", "executor": "x"}]}));
        assert!(Pipeline
            .validate(&dotted)
            .unwrap_err()
            .contains("steps[0].name"));
        let no_executor = input(json!({"steps": [{"name": "a", "executor": " "}]}));
        assert!(Pipeline
            .validate(&no_executor)
            .unwrap_err()
            .contains("steps[0].executor"));
        let typo = serde_json::from_value::<PipelineInput>(
            json!({"steps": [{"name": "a", "executor": "x", "parms": {}}]}),
        );
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
    }
}
