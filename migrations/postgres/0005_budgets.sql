-- Budgets: amounts reserved against a named limit across runs (a daily spending cap,
-- say). One row per reservation; its key (the reserving step's idempotency key) makes a
-- retried reservation a no-op. Reservations of one budget are serialized by an advisory
-- lock, so two runs can never both fit under the limit by racing.
CREATE TABLE workflow_budget_reservations (
    budget          TEXT        NOT NULL,
    reservation_key TEXT        NOT NULL,
    amount          BIGINT      NOT NULL,
    run_id          UUID,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (budget, reservation_key),
    CONSTRAINT workflow_budget_reservations_amount_positive CHECK (amount > 0)
);
