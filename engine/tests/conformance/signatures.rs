//! The key audit (`record_signature`, `signatures`): one record per signed transaction
//! however often it is recorded, filters by key reference or address and by time,
//! newest first, run ids and message types kept as given.

use std::sync::Arc;

use chrono::{Duration, Utc};
use morpheus_engine::{NewSignature, RunId, SignatureFilter, World};

fn signature(tx_hash: &str, key_id: &str, address: &str, run: Option<RunId>) -> NewSignature {
    NewSignature {
        chain: "evm:31337".to_owned(),
        tx_hash: tx_hash.to_owned(),
        key_id: key_id.to_owned(),
        address: address.to_owned(),
        message_types: vec![
            "approve(address,uint256) to 0xabc".to_owned(),
            "second".to_owned(),
        ],
        run_id: run,
        step_key: "stake/approve/sign".to_owned(),
    }
}

fn all() -> SignatureFilter {
    SignatureFilter {
        limit: 100,
        ..SignatureFilter::default()
    }
}

async fn one_record_per_transaction_filtered_by_key_and_time(world: Arc<dyn World>) {
    let run = RunId::new();
    let first = signature("0x01", "hex key in $OWNER", "0xA1", Some(run));
    assert!(world.record_signature(&first).await.unwrap());
    // The same transaction again (a resumed signing step): nothing more is recorded.
    assert!(!world.record_signature(&first).await.unwrap());
    // The same hash on another chain is another transaction.
    let elsewhere = NewSignature {
        chain: "cosmos:akash-devnet".to_owned(),
        ..first.clone()
    };
    assert!(world.record_signature(&elsewhere).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let other = signature("0x02", "mnemonic in $EPHEMERAL", "akash1xyz", None);
    assert!(world.record_signature(&other).await.unwrap());

    let listed = world.signatures(&all()).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].tx_hash, "0x02", "newest first: {listed:?}");
    let recorded = listed
        .iter()
        .find(|s| s.chain == "evm:31337" && s.tx_hash == "0x01")
        .unwrap();
    assert_eq!(recorded.run_id, Some(run));
    assert_eq!(recorded.step_key, "stake/approve/sign");
    assert_eq!(recorded.message_types, first.message_types);
    assert_eq!(listed[0].run_id, None);

    for key in ["mnemonic in $EPHEMERAL", "akash1xyz"] {
        let by_key = world
            .signatures(&SignatureFilter {
                key: Some(key.to_owned()),
                ..all()
            })
            .await
            .unwrap();
        assert_eq!(by_key.len(), 1, "{key}: {by_key:?}");
        assert_eq!(by_key[0].tx_hash, "0x02");
    }
    let future = world
        .signatures(&SignatureFilter {
            since: Some(Utc::now() + Duration::minutes(1)),
            ..all()
        })
        .await
        .unwrap();
    assert!(future.is_empty());
    let recent = world
        .signatures(&SignatureFilter {
            since: Some(Utc::now() - Duration::minutes(1)),
            limit: 2,
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
}

for_each_backend!(one_record_per_transaction_filtered_by_key_and_time,);
