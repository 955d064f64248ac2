//! `morpheus bench workers` end to end: on the Postgres server of `MORPHEUS_TEST_PG_URL`
//! it runs the workload through 1 and then 2 real worker processes, reports one row per
//! worker count (steps/s, claim latency percentiles from the workers' own claims), every
//! run completes, the worker processes are gone afterwards and so is its database
//! `morpheus_bench_workers`; a SQLite URL is refused with one line.
//!
//! The benchmark owns that database name on the server: do not run `bench workers` by
//! hand against the same server while this test runs.

use std::path::Path;

use morpheus_tests::{block_on, morpheus_bin, CliOutput, TestEnv, PG_URL_ENV};
use serde_json::Value;
use sqlx::Connection as _;

/// The database the benchmark creates and drops.
const DATABASE: &str = "morpheus_bench_workers";

fn admin_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_ENV} is not set: this test needs a Postgres superuser URL, e.g. \
             {PG_URL_ENV}=postgres://morpheus:morpheus@127.0.0.1:5432/postgres"
        )
    })
}

/// Whether `name` exists on the server of `admin`.
fn database_exists(admin: &str, name: &str) -> bool {
    block_on(async {
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(count > 0)
    })
    .expect("query pg_database")
}

/// Processes still running `binary` as a benchmark worker (`--child-queue`).
fn worker_processes(binary: &Path) -> Vec<String> {
    let binary = binary.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if args.first() == Some(&binary) && args.iter().any(|arg| arg == "--child-queue") {
            found.push(args.join(" "));
        }
    }
    found
}

#[test]
fn one_row_per_worker_count_every_run_completes_and_the_database_is_dropped() {
    let admin = admin_url();
    let env = TestEnv::sqlite();
    let out = CliOutput::from_command(env.command_for(&admin).args([
        "bench",
        "workers",
        "--workers",
        "1,2",
        "--runs",
        "100",
        "--steps",
        "2",
        "--json",
    ]));
    assert!(
        out.status.success(),
        "bench workers failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|error| {
        panic!("stdout is not one JSON document ({error}): {}", out.stdout)
    });
    assert_eq!(report["bench"], "workers");
    assert_eq!(report["runs"], 100);
    assert_eq!(report["steps_per_run"], 2);
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{report}");
    for (row, workers) in rows.iter().zip([1u64, 2]) {
        assert_eq!(row["workers"], workers, "{row}");
        // Counted in the measurement's own queue after the clock stopped (and checked
        // by id before the process exits 0).
        assert_eq!(row["runs_completed"], 100, "{row}");
        assert!(row["steps_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["seconds"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["claims"].as_u64().unwrap() > 0, "{row}");
        let p50 = row["claim_p50_ms"].as_f64().expect("claim p50");
        let p99 = row["claim_p99_ms"].as_f64().expect("claim p99");
        assert!(p99 > 0.0 && p99 >= p50, "{row}");
        assert!(row["claim_p99_within_budget"].is_boolean(), "{row}");
        // Every worker process reported, and between them they ran every run.
        let executed = row["runs_executed_by_worker"]
            .as_array()
            .expect("per worker");
        assert_eq!(executed.len() as u64, workers, "{row}");
        let total: u64 = executed.iter().map(|runs| runs.as_u64().unwrap()).sum();
        assert!(total >= 100, "{row}");
    }
    assert_eq!(report["scaling"]["from_workers"], 1);
    assert_eq!(report["scaling"]["to_workers"], 2);
    assert!(report["scaling"]["ratio"].as_f64().unwrap() > 0.0);
    assert!(
        worker_processes(&morpheus_bin()).is_empty(),
        "worker processes outlived the benchmark: {:?}",
        worker_processes(&morpheus_bin())
    );
    assert!(
        !database_exists(&admin, DATABASE),
        "the benchmark left its database {DATABASE} behind"
    );
}

#[test]
fn a_sqlite_url_is_refused_with_one_line() {
    let env = TestEnv::sqlite();
    let out = env.cli(&["bench", "workers", "--workers", "1", "--runs", "10"]);
    assert!(!out.status.success(), "stdout: {}", out.stdout);
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "stderr: {}", out.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("postgres://"),
        "{}",
        lines[0]
    );
    assert!(out.stdout.trim().is_empty(), "stdout: {}", out.stdout);
}
