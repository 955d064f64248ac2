//! [`SignatureStore`] on Postgres.

use super::PostgresWorld;
use crate::error::EngineResult;
use crate::store::signatures::{
    join_message_types, signature_from_row, NewSignature, SignatureFilter, SignatureRecord,
    SignatureStore,
};
use async_trait::async_trait;

#[async_trait]
impl SignatureStore for PostgresWorld {
    async fn record_signature(&self, signature: &NewSignature) -> EngineResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO key_signatures
                 (chain, tx_hash, key_id, address, message_types, run_id, step_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (chain, tx_hash) DO NOTHING",
        )
        .bind(&signature.chain)
        .bind(&signature.tx_hash)
        .bind(&signature.key_id)
        .bind(&signature.address)
        .bind(join_message_types(&signature.message_types))
        .bind(signature.run_id.map(|id| id.0))
        .bind(&signature.step_key)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    async fn signatures(&self, filter: &SignatureFilter) -> EngineResult<Vec<SignatureRecord>> {
        let rows = sqlx::query(
            "SELECT chain, tx_hash, key_id, address, message_types, run_id, step_key, signed_at
             FROM key_signatures
             WHERE ($1::TEXT IS NULL OR key_id = $1 OR address = $1)
               AND ($2::TIMESTAMPTZ IS NULL OR signed_at >= $2)
             ORDER BY signed_at DESC, tx_hash
             LIMIT $3",
        )
        .bind(filter.key.as_deref())
        .bind(filter.since)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(signature_from_row).collect()
    }
}
