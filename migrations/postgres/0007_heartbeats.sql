-- Heartbeat pings, the uptime-monitor convention (healthchecks.io, Cronitor): a schedule
-- may name a URL that is pinged after each of its runs completes, and `<url>/fail` after
-- one fails. Cancelled runs are not pinged (an operator stopped them; neither success
-- nor failure is true). A ping never changes its run.
ALTER TABLE workflow_schedules ADD COLUMN heartbeat_url TEXT;

-- The outbox: one row per finished run of a schedule with a heartbeat URL, written before
-- the ping is sent. The primary key makes enqueuing idempotent, so any number of
-- `morpheus up` processes following the feed enqueue each run once. A sender claims due
-- rows (FOR UPDATE SKIP LOCKED) by moving `next_attempt_at` past its lease and stamping
-- `claim_token`, and writes the result only under that token; a sender that died leaves
-- the row due again once the lease has passed. `url` is the schedule's URL when the run
-- ended.
CREATE TABLE heartbeat_pings (
    run_id          UUID PRIMARY KEY REFERENCES workflow_runs (id) ON DELETE CASCADE,
    schedule        TEXT        NOT NULL,
    url             TEXT        NOT NULL,
    outcome         TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending',
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    claim_token     UUID,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    CONSTRAINT heartbeat_pings_outcome_valid CHECK (outcome IN ('completed', 'failed')),
    CONSTRAINT heartbeat_pings_state_valid CHECK (state IN ('pending', 'delivered', 'abandoned')),
    CONSTRAINT heartbeat_pings_finished_has_time CHECK (state = 'pending' OR finished_at IS NOT NULL)
);
CREATE INDEX heartbeat_pings_due ON heartbeat_pings (next_attempt_at) WHERE state = 'pending';
CREATE INDEX heartbeat_pings_by_schedule ON heartbeat_pings (schedule, created_at DESC);

-- How far the enqueuers have followed the change feed (`workflow_feed`, read by
-- (txid, seq) as its readers do): one row, locked by the one enqueuer at a time. It
-- starts at the feed's head, so runs that ended before this migration are never pinged.
CREATE TABLE heartbeat_feed_cursor (
    id   INTEGER PRIMARY KEY,
    txid XID8   NOT NULL,
    seq  BIGINT NOT NULL,
    CONSTRAINT heartbeat_feed_cursor_one_row CHECK (id = 1)
);
INSERT INTO heartbeat_feed_cursor (id, txid, seq)
SELECT 1, COALESCE(last.txid, '0'::xid8), COALESCE(last.seq, 0)
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (SELECT txid, seq FROM workflow_feed ORDER BY txid DESC, seq DESC LIMIT 1) AS last
    ON true;
