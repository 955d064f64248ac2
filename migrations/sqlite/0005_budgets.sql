-- Budgets: amounts reserved against a named limit across runs (a daily spending cap,
-- say). One row per reservation; its key (the reserving step's idempotency key) makes a
-- retried reservation a no-op. The single writer serializes reservations.
CREATE TABLE workflow_budget_reservations (
    budget          TEXT    NOT NULL,
    reservation_key TEXT    NOT NULL,
    amount          INTEGER NOT NULL,
    run_id          TEXT,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (budget, reservation_key),
    CONSTRAINT workflow_budget_reservations_amount_positive CHECK (amount > 0)
) WITHOUT ROWID;
