//! Benchmark support (`BenchSupport`): the raw write path behind `morpheus bench
//! --ceiling` writes every step it times (each fenced update finds its run) and leaves
//! nothing behind.

use morpheus_engine::store::connect_bench;
use morpheus_engine::RunFilter;

async fn the_ceiling_writes_every_step_and_cleans_up(url: String) {
    let bench = connect_bench(&url).await.unwrap();
    let raw = bench.raw_step_writes(7, 3, 2).await.unwrap();
    assert_eq!(raw.steps, 21, "every fenced update found its run");
    assert!(!raw.took.is_zero());
    let world = morpheus_engine::connect(&url).await.unwrap();
    let left = world
        .list_runs(&RunFilter {
            workflow: Some("bench.ceiling".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the ceiling's runs were left behind: {left:?}"
    );
}

for_each_backend!(the_ceiling_writes_every_step_and_cleans_up);
