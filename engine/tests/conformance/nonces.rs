//! Nonce reservations (`reserve_nonce`, `release_nonce`, `nonce_reservations`): concurrent
//! holders get distinct, gap-free nonces from the chain's floor; a holder asking again
//! gets its nonce back; a released nonce is the next one handed out.

use std::collections::BTreeSet;
use std::sync::Arc;

use morpheus_engine::World;

const SCOPE: &str = "evm:31337:0xabc";

async fn concurrent_holders_get_distinct_gap_free_nonces(world: Arc<dyn World>) {
    let attempts = (0..30).map(|index| {
        let world = world.clone();
        async move {
            world
                .reserve_nonce(SCOPE, &format!("run{index}/sign"), 7, None)
                .await
                .unwrap()
                .nonce
        }
    });
    let nonces: BTreeSet<i64> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .collect();
    assert_eq!(nonces, (7..37).collect::<BTreeSet<_>>());
    // Another account's nonces are its own.
    let other = world
        .reserve_nonce("evm:31337:0xdef", "x/sign", 0, None)
        .await
        .unwrap();
    assert_eq!(other.nonce, 0);
    assert_eq!(world.nonce_reservations(SCOPE, 0).await.unwrap().len(), 30);
    assert_eq!(world.nonce_reservations(SCOPE, 30).await.unwrap().len(), 7);
}

async fn a_holder_keeps_its_nonce_and_released_ones_are_reused(world: Arc<dyn World>) {
    let first = world.reserve_nonce(SCOPE, "a/sign", 3, None).await.unwrap();
    assert_eq!(first.nonce, 3);
    // The same holder again (a re-run signing step), even with the chain's floor past
    // it: the same nonce, nothing more reserved.
    let again = world.reserve_nonce(SCOPE, "a/sign", 9, None).await.unwrap();
    assert_eq!(again.nonce, 3);
    let second = world.reserve_nonce(SCOPE, "b/sign", 3, None).await.unwrap();
    let third = world.reserve_nonce(SCOPE, "c/sign", 3, None).await.unwrap();
    assert_eq!((second.nonce, third.nonce), (4, 5));
    // b's transaction never reached the chain: its nonce is given back and is the next
    // one handed out, so the account's nonces stay without a gap.
    assert!(world.release_nonce(SCOPE, "b/sign").await.unwrap());
    assert!(!world.release_nonce(SCOPE, "b/sign").await.unwrap());
    let refill = world.reserve_nonce(SCOPE, "d/sign", 3, None).await.unwrap();
    assert_eq!(refill.nonce, 4);
    // The chain moved past everything held (other wallets' use): the floor wins.
    let ahead = world
        .reserve_nonce(SCOPE, "e/sign", 20, None)
        .await
        .unwrap();
    assert_eq!(ahead.nonce, 20);
    let held: Vec<(i64, String)> = world
        .nonce_reservations(SCOPE, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.nonce, r.holder))
        .collect();
    assert_eq!(
        held,
        vec![
            (3, "a/sign".to_owned()),
            (4, "d/sign".to_owned()),
            (5, "c/sign".to_owned()),
            (20, "e/sign".to_owned())
        ]
    );
}

for_each_backend!(
    concurrent_holders_get_distinct_gap_free_nonces,
    a_holder_keeps_its_nonce_and_released_ones_are_reused,
);
