-- Morpheus core schema (SQLite). Never edit after it lands; add a new file.
-- Times are stored as RFC 3339 UTC text with fixed microsecond precision
-- ('%Y-%m-%dT%H:%M:%fZ' style), so text order is time order.

CREATE TABLE workflow_runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT    NOT NULL,
    workflow_version INTEGER NOT NULL DEFAULT 1,
    input            TEXT    NOT NULL,
    output           TEXT,
    error            TEXT,
    status           TEXT    NOT NULL DEFAULT 'pending',
    idempotency_key  TEXT,
    parent_run_id    TEXT REFERENCES workflow_runs (id) ON DELETE SET NULL,
    queue            TEXT    NOT NULL DEFAULT 'default',
    priority         INTEGER NOT NULL DEFAULT 0,
    wake_at          TEXT,
    wait_event_key   TEXT,
    lease_owner      TEXT,
    lease_epoch      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at TEXT,
    metadata         TEXT    NOT NULL DEFAULT '{}',
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    completed_at     TEXT,
    CONSTRAINT workflow_runs_status_valid CHECK (status IN
        ('pending', 'running', 'sleeping', 'retrying', 'waiting', 'completed', 'failed', 'cancelled')),
    CONSTRAINT workflow_runs_running_has_lease CHECK (status <> 'running'
        OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT workflow_runs_finished_has_time CHECK (status NOT IN ('completed', 'failed', 'cancelled')
        OR completed_at IS NOT NULL),
    CONSTRAINT workflow_runs_waiting_has_key CHECK (status <> 'waiting' OR wait_event_key IS NOT NULL)
);

CREATE UNIQUE INDEX workflow_runs_idempotency_key ON workflow_runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX workflow_runs_ready ON workflow_runs (priority DESC, wake_at, id)
    WHERE status IN ('pending', 'sleeping', 'retrying', 'waiting');
CREATE INDEX workflow_runs_lease_expiry ON workflow_runs (lease_expires_at)
    WHERE status = 'running';
CREATE INDEX workflow_runs_lease_owner ON workflow_runs (lease_owner)
    WHERE status = 'running';
CREATE INDEX workflow_runs_waiting_event ON workflow_runs (wait_event_key)
    WHERE status = 'waiting';
CREATE INDEX workflow_runs_created ON workflow_runs (created_at DESC, id DESC);
-- Operators list failed runs often; a partial index keeps that cheap without steering
-- the planner away from the ready/lease indexes for the hot queries.
CREATE INDEX workflow_runs_failed ON workflow_runs (created_at DESC) WHERE status = 'failed';
-- Retention (`morpheus prune`) walks finished runs oldest first.
CREATE INDEX workflow_runs_finished ON workflow_runs (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
CREATE INDEX workflow_runs_parent ON workflow_runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE workflow_steps (
    run_id          TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_key        TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    output          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    executor        TEXT,
    started_at      TEXT    NOT NULL,
    completed_at    TEXT,
    PRIMARY KEY (run_id, step_key),
    CONSTRAINT workflow_steps_status_valid CHECK (status IN ('retrying', 'waiting', 'completed', 'failed')),
    CONSTRAINT workflow_steps_completed_has_time CHECK (status <> 'completed' OR completed_at IS NOT NULL)
) WITHOUT ROWID;

CREATE TABLE workflow_logs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_key TEXT,
    attempt  INTEGER,
    level    INTEGER NOT NULL,
    message  TEXT    NOT NULL,
    fields   TEXT,
    ts       TEXT    NOT NULL,
    CONSTRAINT workflow_logs_level_valid CHECK (level BETWEEN 1 AND 5)
);
CREATE INDEX workflow_logs_by_run ON workflow_logs (run_id, id);
CREATE INDEX workflow_logs_by_time ON workflow_logs (ts);
CREATE INDEX workflow_logs_by_level ON workflow_logs (run_id, level, id);

-- Full-text search over log messages (external-content FTS5 kept in sync by triggers).
CREATE VIRTUAL TABLE workflow_logs_fts USING fts5 (message, content = 'workflow_logs', content_rowid = 'id');
CREATE TRIGGER workflow_logs_fts_insert AFTER INSERT ON workflow_logs BEGIN
    INSERT INTO workflow_logs_fts (rowid, message) VALUES (new.id, new.message);
END;
CREATE TRIGGER workflow_logs_fts_delete AFTER DELETE ON workflow_logs BEGIN
    INSERT INTO workflow_logs_fts (workflow_logs_fts, rowid, message) VALUES ('delete', old.id, old.message);
END;

CREATE TABLE workflow_events (
    key        TEXT PRIMARY KEY,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
