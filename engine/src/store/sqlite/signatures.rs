//! [`SignatureStore`] on SQLite.

use async_trait::async_trait;
use chrono::Utc;

use super::SqliteWorld;
use crate::batch::format_ts;
use crate::error::EngineResult;
use crate::store::signatures::{
    join_message_types, signature_from_row, NewSignature, SignatureFilter, SignatureRecord,
    SignatureStore,
};

#[async_trait]
impl SignatureStore for SqliteWorld {
    async fn record_signature(&self, signature: &NewSignature) -> EngineResult<bool> {
        let mut writer = self.writer().await?;
        let inserted = sqlx::query(
            "INSERT INTO key_signatures
                 (chain, tx_hash, key_id, address, message_types, run_id, step_key, signed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (chain, tx_hash) DO NOTHING",
        )
        .bind(&signature.chain)
        .bind(&signature.tx_hash)
        .bind(&signature.key_id)
        .bind(&signature.address)
        .bind(join_message_types(&signature.message_types))
        .bind(signature.run_id.map(|id| id.to_string()))
        .bind(&signature.step_key)
        .bind(format_ts(Utc::now()))
        .execute(&mut *writer)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    async fn signatures(&self, filter: &SignatureFilter) -> EngineResult<Vec<SignatureRecord>> {
        let rows = sqlx::query(
            "SELECT chain, tx_hash, key_id, address, message_types, run_id, step_key, signed_at
             FROM key_signatures
             WHERE (?1 IS NULL OR key_id = ?1 OR address = ?1)
               AND (?2 IS NULL OR signed_at >= ?2)
             ORDER BY signed_at DESC, tx_hash
             LIMIT ?3",
        )
        .bind(filter.key.as_deref())
        .bind(filter.since.map(format_ts))
        .bind(filter.limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(signature_from_row).collect()
    }
}
