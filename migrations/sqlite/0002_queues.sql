-- Queues with an optional concurrency limit: at most `concurrency_limit` runs of the
-- queue are `running` at once across every worker (the claim counts inside the single
-- write transaction).
CREATE TABLE workflow_queues (
    name              TEXT PRIMARY KEY,
    concurrency_limit INTEGER,
    updated_at        TEXT NOT NULL,
    CONSTRAINT workflow_queues_limit_positive CHECK (concurrency_limit IS NULL OR concurrency_limit > 0)
);
CREATE INDEX workflow_runs_running_by_queue ON workflow_runs (queue) WHERE status = 'running';
