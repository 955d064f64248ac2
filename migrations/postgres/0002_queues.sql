-- Queues with an optional concurrency limit: at most `concurrency_limit` runs of the
-- queue are `running` at once across every worker (enforced by the claim, which locks
-- the queue's row while it counts).
CREATE TABLE workflow_queues (
    name              TEXT PRIMARY KEY,
    concurrency_limit INTEGER,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT workflow_queues_limit_positive CHECK (concurrency_limit IS NULL OR concurrency_limit > 0)
);
CREATE INDEX workflow_runs_running_by_queue ON workflow_runs (queue) WHERE status = 'running';
