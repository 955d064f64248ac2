//! Human-readable rendering of runs, steps and log lines.

use chrono::{DateTime, SecondsFormat, Utc};
use morpheus_engine::{LogRecord, RunRecord, StepRecord};
use morpheus_workflows::deploy::{DeploymentRun, DeploymentSpec, SourceSnapshot};

/// `2026-11-23T10:00:00.123Z`.
pub fn time(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn optional_time(ts: Option<DateTime<Utc>>) -> String {
    ts.map(time).unwrap_or_else(|| "-".into())
}

fn duration_ms(start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> String {
    match end {
        Some(end) => format!("{}ms", (end - start).num_milliseconds()),
        None => "-".into(),
    }
}

/// One line per run.
pub fn run_table(runs: &[RunRecord]) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<9}  {:<24}  {}\n",
        "ID", "WORKFLOW", "STATUS", "CREATED", "ERROR"
    );
    for run in runs {
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<9}  {:<24}  {}\n",
            run.id,
            format!("{}@{}", run.workflow, run.workflow_version),
            run.status,
            time(run.created_at),
            run.error.as_deref().unwrap_or("").replace('\n', " ")
        ));
    }
    out
}

/// A run with its steps.
pub fn run_detail(run: &RunRecord, steps: &[StepRecord]) -> String {
    let mut out = String::new();
    out.push_str(&format!("run:        {}\n", run.id));
    out.push_str(&format!(
        "workflow:   {} (version {})\n",
        run.workflow, run.workflow_version
    ));
    out.push_str(&format!("status:     {}\n", run.status));
    out.push_str(&format!("created:    {}\n", time(run.created_at)));
    out.push_str(&format!("updated:    {}\n", time(run.updated_at)));
    out.push_str(&format!(
        "finished:   {}\n",
        optional_time(run.completed_at)
    ));
    if let Some(wake_at) = run.wake_at.filter(|_| !run.status.is_terminal()) {
        out.push_str(&format!("wakes at:   {}\n", time(wake_at)));
    }
    if let Some(key) = &run.wait_event_key {
        out.push_str(&format!("waiting on: event '{key}'\n"));
    }
    if let Some(owner) = &run.lease_owner {
        out.push_str(&format!(
            "lease:      {owner} (epoch {}, expires {})\n",
            run.lease_epoch,
            optional_time(run.lease_expires_at)
        ));
    }
    if let Some(key) = &run.idempotency_key {
        out.push_str(&format!("idem. key:  {key}\n"));
    }
    if let Some(parent) = run.parent_run_id {
        out.push_str(&format!("parent:     {parent}\n"));
    }
    if let Some(error) = &run.error {
        out.push_str(&format!("error:      {error}\n"));
    }
    out.push_str(&format!("input:      {}\n", run.input));
    if let Some(output) = &run.output {
        out.push_str(&format!("output:     {output}\n"));
    }
    out.push_str(&format!("steps ({}):\n", steps.len()));
    out.push_str(&format!(
        "  {:>3}  {:<28}  {:<9}  {:>8}  {:<24}  {:>9}  {}\n",
        "SEQ", "KEY", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "ERROR / NEXT ATTEMPT"
    ));
    for step in steps {
        let note = match (&step.error, step.next_attempt_at) {
            (Some(error), Some(next)) => {
                format!("{} (next attempt {})", first_line(error), time(next))
            }
            (Some(error), None) => first_line(error).to_owned(),
            (None, Some(next)) => format!("until {}", time(next)),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "  {:>3}  {:<28}  {:<9}  {:>8}  {:<24}  {:>9}  {}\n",
            step.seq,
            step.step_key,
            step.status.as_str(),
            step.attempts,
            time(step.started_at),
            duration_ms(step.started_at, step.completed_at),
            note
        ));
    }
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// One log line.
pub fn log_line(log: &LogRecord) -> String {
    let origin = match (&log.step_key, log.attempt) {
        (Some(step), Some(attempt)) => format!("[{step} #{attempt}] "),
        (Some(step), None) => format!("[{step}] "),
        _ => String::new(),
    };
    let fields = match &log.fields {
        Some(serde_json::Value::Object(map)) if !map.is_empty() => {
            let mut parts: Vec<String> = map
                .iter()
                .filter(|(key, _)| key.as_str() != "stream" && key.as_str() != "target")
                .map(|(key, value)| match value {
                    serde_json::Value::String(text) => format!("{key}={text}"),
                    other => format!("{key}={other}"),
                })
                .collect();
            parts.sort();
            if parts.is_empty() {
                String::new()
            } else {
                format!("  {}", parts.join(" "))
            }
        }
        _ => String::new(),
    };
    format!(
        "{} {:<5} {}{}{}",
        time(log.ts),
        log.level.as_str().to_uppercase(),
        origin,
        log.message,
        fields
    )
}

fn short(text: Option<&str>) -> String {
    text.map(|t| t[..t.len().min(12)].to_owned())
        .unwrap_or_else(|| "-".into())
}

/// Bytes in binary units (`1.5 MiB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A deployment spec.
pub fn spec_detail(spec: &DeploymentSpec) -> String {
    let mut out = String::new();
    out.push_str(&format!("agent:       {}\n", spec.agent_id));
    out.push_str(&format!("name:        {}\n", spec.name));
    out.push_str(&format!("id:          {}\n", spec.id));
    out.push_str(&format!("source dir:  {}\n", spec.source_dir));
    out.push_str(&format!(
        "install:     {}\n",
        spec.install_command.as_deref().unwrap_or("-")
    ));
    out.push_str(&format!("build:       {}\n", spec.build_command));
    out.push_str(&format!("start:       {}\n", spec.start_command));
    out.push_str(&format!("port:        {}\n", spec.runtime_port));
    out.push_str(&format!("image:       {}\n", spec.image));
    out.push_str(&format!("target:      {}\n", spec.target_default));
    let cpu = spec
        .resources
        .cpu
        .map(|cpu| format!("{cpu} cores"))
        .unwrap_or_else(|| "unlimited".into());
    let memory = spec
        .resources
        .memory
        .map(size)
        .unwrap_or_else(|| "unlimited".into());
    out.push_str(&format!("resources:   cpu {cpu}, memory {memory}\n"));
    if spec.env.is_empty() {
        out.push_str("env:         -\n");
    } else {
        out.push_str("env:\n");
        for (key, value) in &spec.env {
            out.push_str(&format!("  {key}={value}\n"));
        }
    }
    out.push_str(&format!("created:     {}\n", time(spec.created_at)));
    out.push_str(&format!("updated:     {}\n", time(spec.updated_at)));
    out
}

/// One line per deploy run.
pub fn deploy_table(runs: &[DeploymentRun]) -> String {
    let mut out = format!(
        "{:<36}  {:<12}  {:<10}  {:<12}  {:<12}  {:<24}  {}\n",
        "RUN", "STATUS", "TARGET", "SNAPSHOT", "SANDBOX", "CREATED", "URL / ERROR"
    );
    for run in runs {
        let detail = match (&run.url, &run.error) {
            (_, Some(error)) => error.replace('\n', " "),
            (Some(url), None) => url.clone(),
            (None, None) => run.note.clone().unwrap_or_default(),
        };
        out.push_str(&format!(
            "{:<36}  {:<12}  {:<10}  {:<12}  {:<12}  {:<24}  {}\n",
            run.id,
            run.status.as_str(),
            run.target.as_str(),
            short(run.snapshot_hash.as_deref()),
            short(run.sandbox_id.as_deref()),
            time(run.created_at),
            detail
        ));
    }
    out
}

/// One line per snapshot.
pub fn snapshot_table(snapshots: &[SourceSnapshot]) -> String {
    let mut out = format!(
        "{:<36}  {:<12}  {:>7}  {:>10}  {:<24}  {}\n",
        "SNAPSHOT", "HASH", "FILES", "SIZE", "CREATED", "SOURCE"
    );
    for snapshot in snapshots {
        out.push_str(&format!(
            "{:<36}  {:<12}  {:>7}  {:>10}  {:<24}  {}\n",
            snapshot.id,
            short(Some(&snapshot.content_hash)),
            snapshot.file_count,
            size(snapshot.size_bytes),
            time(snapshot.created_at),
            snapshot.source_dir
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_printed_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1 << 30), "1.0 GiB");
    }
}
