//! Torture and fairness tests: real `morpheus up` processes, SIGKILL and SIGSTOP at random
//! moments, and an effect ledger written by every step body (harness in
//! [`morpheus_tests::torture`]). Run on their own with
//! `cargo nextest run -p morpheus-tests --test torture`.
//!
//! Sizes: K=3 workers (Postgres) / 1 (SQLite), R=40 runs of S=5 steps, T=20 s of chaos.
//! `MORPHEUS_SOAK=1` makes it T=300 s, R=400; `MORPHEUS_TORTURE_SECONDS`, `_RUNS`,
//! `_WORKERS`, `_STEPS` set each, and `MORPHEUS_TORTURE_SEED` replays a fault schedule
//! (the seed is printed at the start).
//!
//! What the torture asserts after the load has drained (`morpheus_tests::torture::analyze`):
//!
//! 1. Every run reached `completed`: none lost, none left `running` on an expired lease.
//! 2. Every `(run, step_key)` has exactly one recorded result (`workflow_steps`, read
//!    directly): status `completed`, one row per key, `R×S` rows.
//! 3. A step whose result was recorded never executed again afterwards: no ledger
//!    `start` for it later than its `completed_at`.
//! 4. Extra body executions (at-least-once) happen only for steps in flight at a kill or
//!    freeze: every execution other than the one that produced the recorded result
//!    overlaps a SIGKILL or SIGSTOP…SIGCONT of the worker process that ran it. (One
//!    exception, counted and printed apart as `reexecuted_after_host_stall`: a lease
//!    that expired while the shared machine itself was stalled, as measured by
//!    `HostWatch`; an extra execution explained by neither fails the test.)
//! 5. A worker that lost its lease wrote nothing after losing it: the recorded result of
//!    each step comes from the highest fencing token among that step's executions.
//!    Why that is the right check: every claim bumps the run's `lease_epoch`, which the
//!    body sees as `MORPHEUS_FENCING_TOKEN` and echoes into its output. Suppose a body
//!    ran under token `t` and the result was recorded by an execution with token
//!    `u < t`. The holder of `t` only ran the body because the step was *not* recorded
//!    when it claimed the run (it loads the journal after the claim, and a recorded
//!    step is never run again). So the `u` write committed after the `t` claim, i.e.
//!    after the epoch moved past `u`: a write by a holder that had lost its lease, which
//!    fencing (`WHERE run_id AND lease_epoch`) must reject. Hence recorded token = max.

use std::time::{Duration, Instant};

use morpheus_tests::torture::{
    executions, max_overlap, read_runs, read_steps, run_torture, start_run, wait_all_completed,
    EffectLedger, Fleet, PgHeavyLock, TortureConfig,
};
use morpheus_tests::{both_backends, Backend, TestEnv};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------
// 1. The torture.

#[test]
fn torture_postgres_workers_killed_and_frozen() {
    let _serial = PgHeavyLock::acquire("torture_postgres");
    let config = TortureConfig::from_env(Backend::Postgres);
    let report = run_torture(Backend::Postgres, &config);
    report.assert_clean();
    assert_eq!(report.steps, config.runs * config.steps);
}

#[test]
fn torture_sqlite_single_worker_killed_repeatedly() {
    let config = TortureConfig::from_env(Backend::Sqlite);
    let report = run_torture(Backend::Sqlite, &config);
    report.assert_clean();
    assert_eq!(report.steps, config.runs * config.steps);
}

// ---------------------------------------------------------------------------------
// 2. Many workers, fairly.

/// Recorded step results per worker pid (from the `"<pid> <token>"` line of each output).
fn results_per_pid(env: &TestEnv) -> std::collections::BTreeMap<u32, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for step in read_steps(env) {
        assert_eq!(step.status, "completed", "{step:?}");
        let (pid, _) = step
            .producer()
            .unwrap_or_else(|| panic!("no '<pid> <token>' in {step:?}"));
        *counts.entry(pid).or_insert(0usize) += 1;
    }
    counts
}

#[test]
fn four_postgres_workers_share_the_load() {
    let _serial = PgHeavyLock::acquire("four_postgres_workers_share_the_load");
    const RUNS: usize = 120;
    const STEPS: usize = 3;
    let env = TestEnv::postgres();
    let fleet = Fleet::start(&env, 4, 4, &[]);
    let pids = fleet.pids();
    let input = json!({"steps": (1..=STEPS).map(|i| json!({
        "name": format!("s{i}"),
        "run": "sleep 0.05; echo \"$PPID $MORPHEUS_FENCING_TOKEN\"",
    })).collect::<Vec<Value>>()});

    let started = Instant::now();
    // Four submitters, so the backlog builds up while the workers drain it.
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..RUNS / 4)
                        .map(|_| env.start_shell(&input))
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("submitter"))
            .collect()
    });
    let submitted = started.elapsed();
    let drained = wait_all_completed(&env, &ids, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("not all {RUNS} runs completed in 120 s"));

    let counts = results_per_pid(&env);
    let total: usize = counts.values().sum();
    let line: Vec<String> = pids
        .iter()
        .map(|pid| {
            format!(
                "{}={}",
                fleet.name_of(*pid),
                counts.get(pid).copied().unwrap_or(0)
            )
        })
        .collect();
    eprintln!(
        "per_worker_results: {} (total {total}; submitted in {:.1}s, all completed {:.1}s later)",
        line.join(" "),
        submitted.as_secs_f64(),
        drained.as_secs_f64()
    );
    assert_eq!(total, RUNS * STEPS, "one recorded result per step");
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        {
            let mut sorted = pids.clone();
            sorted.sort_unstable();
            sorted
        },
        "results from exactly the four workers"
    );
    for pid in &pids {
        let done = counts.get(pid).copied().unwrap_or(0);
        assert!(
            done * 10 >= total,
            "worker {} starved: {done} of {total} steps (< 10%): {}",
            fleet.name_of(*pid),
            line.join(" ")
        );
    }
}

#[test]
fn queue_concurrency_limit_holds_across_workers_postgres() {
    let _serial = PgHeavyLock::acquire("queue_concurrency_limit_holds_across_workers_postgres");
    const RUNS: usize = 12;
    let env = TestEnv::postgres();
    let ledger = EffectLedger::create(&env);
    env.cli_ok(&["queues", "set", "limited", "--concurrency", "2"]);
    let queues = env.cli_json(&["queues", "list", "--json"]);
    eprintln!("queues: {queues}");

    // The whole backlog is there before any worker starts, so all three compete for it
    // at once (24 free slots for 12 runs): only the database-side limit holds them back.
    let input = ledger.input(vec![ledger.step("s1", "sleep 0.5")]);
    let ids: Vec<String> = (0..RUNS)
        .map(|_| start_run(&env, &input, &["--queue", "limited"]))
        .collect();
    let started = Instant::now();
    let fleet = Fleet::start(&env, 3, 8, &[]);
    let took = wait_all_completed(&env, &ids, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("not all {RUNS} limited runs completed in 60 s"));
    let elapsed = started.elapsed();
    drop(fleet);

    let by_key = executions(&ledger.rows());
    assert_eq!(by_key.len(), RUNS, "every run's step ran: {by_key:#?}");
    let mut intervals = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    for list in by_key.values() {
        assert_eq!(list.len(), 1, "no fault, so one execution each: {list:#?}");
        let execution = &list[0];
        let done = execution
            .done_us
            .unwrap_or_else(|| panic!("unfinished execution {execution:?}"));
        intervals.push((execution.start_us, done));
        pids.insert(execution.pid);
    }
    let most = max_overlap(&intervals);
    eprintln!(
        "queue 'limited' (limit 2): max overlap {most}, {} workers ran its steps, \
         drained {:.1}s after the workers were started ({:.1}s after they were ready)",
        pids.len(),
        elapsed.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        most <= 2,
        "{most} runs of queue 'limited' executed at once; its limit is 2"
    );
    assert_eq!(most, 2, "the limit of 2 should be used, not just 1");
    for run in read_runs(&env) {
        assert_eq!(run.status, "completed", "{run:?}");
    }
}

fn high_priority_runs_first(backend: Backend) {
    // On Postgres, one at a time with the other tests that load the shared server.
    let _serial = (backend == Backend::Postgres)
        .then(|| PgHeavyLock::acquire("postgres::high_priority_run_is_claimed_first"));
    let env = TestEnv::new(backend);
    let ledger = EffectLedger::create(&env);
    // Migrate the schema (the CLI may need it) without any worker running.
    env.cli_ok(&["runs", "list", "--json"]);
    let input = ledger.input(vec![ledger.step("s1", "sleep 0.05")]);
    let low: Vec<String> = (0..5)
        .map(|_| start_run(&env, &input, &["--priority", "0"]))
        .collect();
    // Submitted last: first-in-first-out would run it last.
    let high = start_run(&env, &input, &["--priority", "10"]);
    let fleet = Fleet::start(&env, 1, 1, &[]);
    let mut all = low.clone();
    all.push(high.clone());
    wait_all_completed(&env, &all, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the six runs did not complete in 60 s"));
    drop(fleet);

    let mut order: Vec<(i64, String)> = executions(&ledger.rows())
        .into_values()
        .flatten()
        .map(|e| (e.start_us, e.run_id))
        .collect();
    order.sort();
    let order: Vec<String> = order.into_iter().map(|(_, run)| run).collect();
    let labels: Vec<&str> = order
        .iter()
        .map(|run| if *run == high { "HIGH" } else { "low" })
        .collect();
    eprintln!("{backend:?}: execution order {labels:?}");
    assert_eq!(order.len(), 6, "each run executed once: {order:?}");
    assert_eq!(
        order[0], high,
        "the priority-10 run must be claimed before the five priority-0 runs"
    );
    if order[1..] != low[..] {
        eprintln!("note: the priority-0 runs did not run in submission order");
    }
}

// ---------------------------------------------------------------------------------
// 3. A stale worker, thawed after a takeover, must not start a step that is recorded.

/// Worker A is SIGSTOPped while it waits for the commit of a step result; its leases
/// expire, worker B takes the runs over and records their next steps; then A is
/// SIGCONTed. A's commit went through before the freeze (the epoch was still A's), so
/// A's run task gets its acknowledgement on waking and goes on to the next step: it
/// starts that step's body although B already recorded it, before A's heartbeat
/// (a database round trip) tells it the lease is gone. Its write is then fenced off,
/// but the body (the side effect) ran again after its result was recorded.
///
/// The database is made slow to widen the two windows the random torture above hits
/// only now and then: a deferred constraint trigger makes every commit of a step result
/// take 20 ms per row (so a freeze usually lands while a commit is in flight), and a
/// statement trigger makes every `UPDATE workflow_runs` (claims, lease renewals) take
/// 100 ms (a slow heartbeat). Step bodies are `:` and record into a file ledger, so an
/// execution shows up within a millisecond of starting.
///
/// This fails against the engine as it is: `StepBuilder::run` (engine/src/ctx.rs)
/// starts a step body without checking that the run's lease is still held, and the
/// only thing that stops a run whose lease is gone is the heartbeat task
/// (engine/src/worker.rs), which needs a database round trip after waking. A local
/// check before each body (last successful claim/renewal + `--lease-ttl` on the
/// monotonic clock, which keeps running through SIGSTOP) would close the window.
#[test]
fn stale_worker_thawed_after_takeover_starts_no_recorded_step_postgres() {
    use morpheus_tests::torture::{analyze, now_us, Observed};
    let _serial = PgHeavyLock::acquire("stale_worker_thawed_after_takeover");
    const ROUNDS: usize = 6;
    let env = TestEnv::postgres();
    let ledger = EffectLedger::file(&env);
    env.cli_ok(&["runs", "list", "--json"]); // migrates the schema
    let url = env.url().to_owned();
    morpheus_tests::block_on(async move {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        for statement in [
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$",
            "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON workflow_steps
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
            "CREATE FUNCTION slow_update() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$",
            "CREATE TRIGGER slow_update BEFORE UPDATE ON workflow_runs
             FOR EACH STATEMENT EXECUTE FUNCTION slow_update()",
        ] {
            sqlx::query(statement).execute(&mut conn).await?;
        }
        conn.close().await
    })
    .expect("install the slow-database triggers");

    let t0_us = now_us();
    let mut fleet = Fleet::start(&env, 2, 8, &[]);
    let keys: Vec<String> = (1..=40).map(|i| format!("s{i}")).collect();
    let input = ledger.input(keys.iter().map(|key| ledger.step(key, ":")).collect());
    let late_starts = |ids: &[String]| -> usize {
        let by_key = executions(&ledger.rows());
        read_steps(&env)
            .iter()
            .filter(|step| ids.contains(&step.run_id))
            .map(|step| {
                let (Some(done), Some(list)) = (
                    step.completed_us,
                    by_key.get(&(step.run_id.clone(), step.step_key.clone())),
                ) else {
                    return 0;
                };
                list.iter().filter(|e| e.start_us > done).count()
            })
            .sum()
    };
    let mut ids = Vec::new();
    for round in 1..=ROUNDS {
        for _ in 0..6 {
            ids.push(env.start_shell(&input));
        }
        std::thread::sleep(Duration::from_millis(700));
        fleet.freeze(0, Duration::from_millis(3000));
        std::thread::sleep(Duration::from_millis(3100));
        fleet.tick(); // SIGCONT
        std::thread::sleep(Duration::from_millis(1000));
        let late = late_starts(&ids);
        eprintln!("round {round}: {late} step executions started after their result was recorded");
        if late > 0 {
            break;
        }
    }
    fleet.heal();
    let drained = wait_all_completed(&env, &ids, Duration::from_secs(120));
    fleet.stop_all();
    let report = analyze(&Observed {
        submitted: &ids,
        step_keys: &keys,
        runs: &read_runs(&env),
        steps: &read_steps(&env),
        ledger: &ledger.rows(),
        faults: &fleet.faults,
        names: &fleet.names,
        t0_us,
    });
    report.print();
    assert!(drained.is_some(), "runs did not complete");
    report.assert_clean();
}

// Every body above that takes a `Backend`, as `sqlite::<name>` and `postgres::<name>`.
both_backends! {
    high_priority_run_is_claimed_first => high_priority_runs_first,
}
