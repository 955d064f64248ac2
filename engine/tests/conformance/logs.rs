//! Run logs: fenced log writes and `query_logs` (filters by run, step, level and time,
//! and its cursor).

use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use morpheus_engine::{LogLevel, LogQuery, World, WriteOutcome};
use serde_json::json;

use crate::{claim, fence_of, log_op, start};

async fn logs_query_filters_and_cursor(world: Arc<dyn World>) {
    start(&world, json!(1)).await;
    start(&world, json!(2)).await;
    let claimed = claim(&world, "w", 10).await;
    assert_eq!(claimed.len(), 2);
    let fences = [fence_of(&claimed[0]), fence_of(&claimed[1])];
    let runs = [fences[0].run_id, fences[1].run_id];
    let base = (Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(6);
    let ts = |i: usize| base + chrono::Duration::seconds(i as i64);

    // (run index, step, level, message)
    let mut lines: Vec<(usize, Option<&str>, LogLevel, String)> = vec![
        (0, Some("s1"), LogLevel::Info, "disk almost full".into()),
        (0, Some("s1"), LogLevel::Debug, "cpu fine".into()),
        (0, Some("s2"), LogLevel::Warn, "full almost disk".into()),
        (0, None, LogLevel::Error, "run failed badly".into()),
        (1, Some("s1"), LogLevel::Info, "CPU Fine".into()),
    ];
    let levels = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];
    for i in 5..20 {
        let step = ["s1", "s2", "s3"][i % 3];
        lines.push((i % 2, Some(step), levels[i % 5], format!("tick {i}")));
    }
    let ops = lines
        .iter()
        .enumerate()
        .map(|(i, (run, step, level, message))| log_op(fences[*run], *step, *level, message, ts(i)))
        .collect();
    let outcomes = world.apply(ops).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == WriteOutcome::Applied));

    let messages = |records: &[morpheus_engine::LogRecord]| -> Vec<String> {
        records.iter().map(|r| r.message.clone()).collect()
    };
    let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..lines.len())
            .filter(|i| keep(*i))
            .map(|i| lines[i].3.clone())
            .collect()
    };
    let query = |q: LogQuery| {
        let world = world.clone();
        async move { world.query_logs(&q).await.expect("query_logs") }
    };

    // Everything, in emission order, with every field kept.
    let all = query(LogQuery::default()).await;
    assert_eq!(messages(&all), expect(&|_| true));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[0].run_id, runs[0]);
    assert_eq!(all[0].step_key.as_deref(), Some("s1"));
    assert_eq!(all[0].attempt, Some(1));
    assert_eq!(all[0].level, LogLevel::Info);
    assert_eq!(all[0].fields, Some(json!({"n": 16})));
    assert_eq!(all[0].ts, ts(0));
    assert_eq!(all[3].step_key, None);
    assert_eq!(all[3].attempt, None);

    let by_run = query(LogQuery {
        run_id: Some(runs[1]),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&by_run), expect(&|i| lines[i].0 == 1));

    let by_step = query(LogQuery {
        run_id: Some(runs[0]),
        step_key: Some("s1".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&by_step),
        expect(&|i| lines[i].0 == 0 && lines[i].1 == Some("s1"))
    );

    let warn_up = query(LogQuery {
        min_level: Some(LogLevel::Warn),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&warn_up),
        expect(&|i| lines[i].2 >= LogLevel::Warn)
    );

    let phrase = query(LogQuery {
        text: Some("almost full".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&phrase), vec!["disk almost full".to_owned()]);
    let phrase_upper = query(LogQuery {
        text: Some("ALMOST FULL".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&phrase_upper), vec!["disk almost full".to_owned()]);
    let word = query(LogQuery {
        text: Some("fine".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&word),
        vec!["cpu fine".to_owned(), "CPU Fine".to_owned()]
    );
    let word_in_run = query(LogQuery {
        run_id: Some(runs[1]),
        text: Some("fine".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&word_in_run), vec!["CPU Fine".to_owned()]);
    let quoted = query(LogQuery {
        text: Some("\"almost".into()),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(
        messages(&quoted).len(),
        2,
        "a stray quote is matched as text, not syntax"
    );

    let window = query(LogQuery {
        since: Some(ts(5)),
        until: Some(ts(10)),
        ..LogQuery::default()
    })
    .await;
    assert_eq!(messages(&window), expect(&|i| (5..10).contains(&i)));

    let page = query(LogQuery {
        run_id: Some(runs[0]),
        offset: 2,
        limit: Some(3),
        ..LogQuery::default()
    })
    .await;
    let run0 = expect(&|i| lines[i].0 == 0);
    assert_eq!(messages(&page), run0[2..5].to_vec());

    // Keyset paging visits every line once, in id order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let batch = query(LogQuery {
            after_id: after,
            limit: Some(3),
            ..LogQuery::default()
        })
        .await;
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 3);
        after = Some(batch.last().unwrap().id);
        seen.extend(batch);
    }
    let seen_ids: Vec<i64> = seen.iter().map(|r| r.id).collect();
    let all_ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(seen_ids, all_ids);
}

for_each_backend!(logs_query_filters_and_cursor,);
