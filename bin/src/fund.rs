//! `morpheus fund`: starts the `fund` workflow (USDC → MOR staking + AKT in a
//! deployment's escrow) and, with `--wait`, follows its logs and prints the report.

use anyhow::{anyhow, bail, Result};
use morpheus_engine::{Engine, RunStatus};
use morpheus_workflows::fund::{FundReport, LegStatus, MAX_AMOUNT};
use serde_json::json;

use crate::cli::FundArgs;
use crate::commands::{default_registries, open};
use crate::config::Config;

/// USDC has 6 decimals.
const USDC_DECIMALS: u32 = 6;

/// Parses whole USDC (`100`, `12.5`, `0.000001`) into base units.
pub fn usdc_base_units(text: &str) -> Result<u128> {
    let invalid = || anyhow!("--usdc '{text}' is not an amount of USDC (for example 100 or 12.5)");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    if fraction.len() > USDC_DECIMALS as usize {
        bail!("--usdc '{text}' has more than {USDC_DECIMALS} decimals (USDC's smallest unit is 0.000001)");
    }
    let scale = 10u128.pow(USDC_DECIMALS);
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| invalid())?
    };
    let padded = format!("{fraction:0<width$}", width = USDC_DECIMALS as usize);
    let fraction: u128 = padded.parse().map_err(|_| invalid())?;
    let units = whole
        .checked_mul(scale)
        .and_then(|units| units.checked_add(fraction))
        .filter(|units| *units <= MAX_AMOUNT)
        .ok_or_else(|| anyhow!("--usdc '{text}' is too large"))?;
    if units == 0 {
        bail!("--usdc must be more than 0");
    }
    Ok(units)
}

/// Base units as whole USDC (`60000000` → `60`, `1500000` → `1.5`).
fn usdc_text(units: &str) -> String {
    let Ok(units) = units.parse::<u128>() else {
        return units.to_owned();
    };
    let scale = 10u128.pow(USDC_DECIMALS);
    let fraction = format!("{:06}", units % scale);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", units / scale)
    } else {
        format!("{}.{fraction}", units / scale)
    }
}

/// Runs `morpheus fund`.
pub async fn run(url: &str, args: FundArgs, config: &Config) -> Result<()> {
    let amount = usdc_base_units(&args.usdc)?;
    let owner = crate::akash_deploy::cosmos_owner(config, args.owner)?;
    let input = json!({
        "usdc_amount": amount.to_string(),
        "stake_share_pct": args.stake_share,
        "owner": owner,
        "dseq": args.dseq,
        "slippage_pct": args.slippage,
        "dry_run": args.dry_run,
    });
    let (workflows, executors) = default_registries();
    // Validated before the database is opened: bad input writes nothing.
    let new_run = workflows.prepare("fund", input, args.idempotency_key)?;
    let world = open(url).await?;
    let engine = Engine::new(world.clone(), workflows, executors);
    let started = engine.start_prepared(new_run).await?;
    if !started.created {
        eprintln!("note: a fund run with this idempotency key already exists: following it");
    }
    let run_id = started.run_id;
    if !args.wait {
        if args.json {
            println!("{}", json!({"run_id": run_id, "created": started.created}));
        } else {
            println!("{run_id}");
            eprintln!("started fund run {run_id} ({} USDC, {} % staked, dseq {}); a `morpheus up` with [evm], [cosmos] and [fund] runs it. Follow it with `morpheus logs {run_id} --follow`, or pass --wait", usdc_text(&amount.to_string()), args.stake_share, args.dseq);
        }
        return Ok(());
    }
    eprintln!("fund run {run_id}: waiting for a `morpheus up` serving this database to run it (Ctrl-C stops waiting, not the run)");
    let run = crate::akash_deploy::follow_run(&world, run_id, args.timeout, "fund").await?;
    match run.status {
        RunStatus::Completed => {
            let output = run.output.unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&json!({"run_id": run_id, "report": output}))?
                );
                return Ok(());
            }
            let report: FundReport = serde_json::from_value(output)
                .map_err(|error| anyhow!("fund run {run_id}: unexpected report: {error}"))?;
            print!("{}", render(&report));
            Ok(())
        }
        status => bail!(
            "fund run {run_id} {status}: {}",
            run.error.as_deref().unwrap_or("no error recorded")
        ),
    }
}

fn status_text(status: LegStatus) -> &'static str {
    match status {
        LegStatus::Done => "done",
        LegStatus::Planned => "planned (dry run)",
        LegStatus::Skipped => "skipped",
    }
}

/// The report as a table, one block per leg.
pub fn render(report: &FundReport) -> String {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let mut text = format!(
        "funded {} USDC from {} ({} % staked){}\n",
        usdc_text(&report.usdc_amount),
        report.evm_address,
        report.stake_share_pct,
        if report.dry_run {
            " — DRY RUN, nothing sent"
        } else {
            ""
        }
    );
    let swap = &report.swap;
    text += &format!(
        "  swap     {:<18} {} USDC → {} uakt (quoted {}, min {}) to {}\n           approvals: {}  txs: {}\n",
        status_text(swap.status),
        usdc_text(&swap.usdc_in),
        dash(&swap.uakt_received),
        dash(&swap.estimated_uakt_out),
        dash(&swap.min_uakt_out),
        report.akash_address,
        if swap.approve_txs.is_empty() { "-".into() } else { swap.approve_txs.join(", ") },
        if swap.tx_hashes.is_empty() { "-".into() } else { swap.tx_hashes.join(", ") },
    );
    let deposit = &report.deposit;
    text += &format!(
        "  deposit  {:<18} {} uakt into dseq {} (fee reserve {} uakt)  tx: {}{}\n",
        status_text(deposit.status),
        dash(&deposit.uakt),
        deposit.dseq,
        deposit.fee_reserve_uakt,
        dash(&deposit.tx_hash),
        deposit
            .height
            .map(|h| format!(" at height {h}"))
            .unwrap_or_default(),
    );
    let stake = &report.stake;
    text += &format!(
        "  stake    {:<18} {} USDC  approval: {}  tx: {}{}\n",
        status_text(stake.status),
        usdc_text(&stake.usdc),
        dash(&stake.approve_tx),
        dash(&stake.tx_hash),
        stake
            .block_number
            .map(|b| format!(" in block {b}"))
            .unwrap_or_default(),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usdc_amounts_parse_to_base_units() {
        assert_eq!(usdc_base_units("100").unwrap(), 100_000_000);
        assert_eq!(usdc_base_units("12.5").unwrap(), 12_500_000);
        assert_eq!(usdc_base_units("0.000001").unwrap(), 1);
        assert_eq!(usdc_base_units(".5").unwrap(), 500_000);
        for bad in ["", ".", "1,5", "-1", "1e3", "abc", "0", "0.0"] {
            assert!(usdc_base_units(bad).is_err(), "{bad}");
        }
        let error = usdc_base_units("1.0000001").unwrap_err().to_string();
        assert!(error.contains("more than 6 decimals"), "{error}");
    }

    #[test]
    fn base_units_print_as_usdc() {
        assert_eq!(usdc_text("60000000"), "60");
        assert_eq!(usdc_text("1500000"), "1.5");
        assert_eq!(usdc_text("1"), "0.000001");
    }
}
