-- The key audit: one row per transaction an executor signed (recorded before the signed
-- bytes leave the executor), naming the key by its reference, never its material.
CREATE TABLE key_signatures (
    chain         TEXT NOT NULL,
    tx_hash       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    address       TEXT NOT NULL,
    message_types TEXT NOT NULL,
    run_id        TEXT,
    step_key      TEXT NOT NULL,
    signed_at     TEXT NOT NULL,
    PRIMARY KEY (chain, tx_hash)
);
CREATE INDEX key_signatures_by_time ON key_signatures (signed_at);
