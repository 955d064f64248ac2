-- Nonce reservations: which transaction (its holder, the signing step's idempotency key)
-- owns which nonce of an account (scope: chain and address). A nonce is reserved before a
-- transaction is signed, so two runs or two workers never sign different transactions
-- with one nonce; a repeated reservation by the same holder returns its nonce.
-- Reservations of one scope are serialized by an advisory lock.
CREATE TABLE nonce_reservations (
    scope       TEXT        NOT NULL,
    nonce       BIGINT      NOT NULL,
    holder      TEXT        NOT NULL,
    run_id      UUID,
    reserved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, nonce),
    CONSTRAINT nonce_reservations_holder_unique UNIQUE (scope, holder),
    CONSTRAINT nonce_reservations_nonce_non_negative CHECK (nonce >= 0)
);
