//! The schema: connecting migrates it (and again is a no-op), and a database migrated by a
//! newer binary is refused rather than written to.

use std::sync::Arc;

use morpheus_engine::{Backend, World};
use serde_json::json;
use sqlx::Connection;

use crate::{common, start};

async fn schema_newer_than_binary_is_refused(url: String) {
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let connect = || async {
        match backend {
            Backend::Sqlite => morpheus_engine::sqlite::SqliteWorld::connect(&url)
                .await
                .map(|w| Arc::new(w) as Arc<dyn World>),
            Backend::Postgres => {
                morpheus_engine::postgres::PostgresWorld::connect(&url, common::PG_MAX_CONNECTIONS)
                    .await
                    .map(|w| Arc::new(w) as Arc<dyn World>)
            }
        }
    };
    // First connection migrates; connecting again to the same schema is fine.
    let world = connect().await.expect("first connect");
    start(&world, json!("kept")).await;
    drop(world);
    let world = connect().await.expect("second connect");
    drop(world);

    match backend {
        Backend::Sqlite => {
            let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
                 VALUES (9999, 'from the future', CURRENT_TIMESTAMP, 1, X'00', 0)",
            )
            .execute(&mut raw)
            .await
            .unwrap();
            raw.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
                 VALUES (9999, 'from the future', now(), true, '\\x00'::bytea, 0)",
            )
            .execute(&mut raw)
            .await
            .unwrap();
            raw.close().await.unwrap();
        }
    }
    common::assert_schema_too_new(connect().await);
    common::assert_schema_too_new(morpheus_engine::connect(&url).await);
}

for_each_backend!(schema_newer_than_binary_is_refused,);
