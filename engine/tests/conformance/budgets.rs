//! Cross-run budgets (`reserve_budget`, `release_budget`, `budget_used`): concurrent
//! reservations never exceed the limit, a repeated reservation is a no-op, releases give
//! room back.

use std::sync::Arc;

use morpheus_engine::World;

async fn concurrent_reservations_never_exceed_the_limit(world: Arc<dyn World>) {
    // 40 reservations of 30 against a limit of 500: exactly 16 fit.
    let attempts = (0..40).map(|index| {
        let world = world.clone();
        async move {
            world
                .reserve_budget("cap:day1", &format!("run{index}/reserve"), 30, 500, None)
                .await
                .unwrap()
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let granted = answers.iter().filter(|a| a.granted).count();
    assert_eq!(granted, 16);
    assert_eq!(world.budget_used("cap:day1").await.unwrap(), 480);
    assert!(answers.iter().all(|a| a.used <= 500));
    // Other budgets are separate.
    assert_eq!(world.budget_used("cap:day2").await.unwrap(), 0);
}

async fn repeated_reservation_is_a_no_op_and_release_gives_room_back(world: Arc<dyn World>) {
    let first = world
        .reserve_budget("cap", "run/a", 400, 500, None)
        .await
        .unwrap();
    assert!(first.granted);
    assert_eq!(first.used, 400);
    // The same reservation again (a retried step): still granted, nothing more reserved.
    let again = world
        .reserve_budget("cap", "run/a", 400, 500, None)
        .await
        .unwrap();
    assert!(again.granted);
    assert_eq!(world.budget_used("cap").await.unwrap(), 400);
    // Another one that does not fit.
    let refused = world
        .reserve_budget("cap", "run/b", 200, 500, None)
        .await
        .unwrap();
    assert!(!refused.granted);
    assert_eq!(refused.used, 400);
    // Releasing the first makes room.
    world.release_budget("cap", "run/a").await.unwrap();
    world.release_budget("cap", "run/a").await.unwrap();
    let fits = world
        .reserve_budget("cap", "run/b", 200, 500, None)
        .await
        .unwrap();
    assert!(fits.granted);
    assert_eq!(world.budget_used("cap").await.unwrap(), 200);
    assert!(world
        .reserve_budget("cap", "run/c", 0, 500, None)
        .await
        .is_err());
}

for_each_backend!(
    concurrent_reservations_never_exceed_the_limit,
    repeated_reservation_is_a_no_op_and_release_gives_room_back,
);
