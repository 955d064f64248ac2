-- The change feed: one row per thing an operator watches happen (a run created, a run
-- changing status, a log line, a document written), appended by triggers inside the
-- transaction that made the change, so it cannot disagree with the tables.
--
-- Readers (the HTTP API's live events) follow it by (txid, seq). `seq` alone is not
-- enough on Postgres: sequence values are taken before commit, so a reader could see
-- seq 12 while 11 is still uncommitted and skip it for ever. Each row keeps the id of
-- the transaction that wrote it, and readers only take rows whose transaction is older
-- than every transaction still in flight (`pg_snapshot_xmin`): no row can appear behind
-- the cursor afterwards. Each transaction that writes the feed notifies
-- `morpheus_feed` (notifications with equal payloads collapse into one per commit).
CREATE TABLE workflow_feed (
    seq        BIGSERIAL PRIMARY KEY,
    txid       XID8        NOT NULL DEFAULT pg_current_xact_id(),
    kind       TEXT        NOT NULL,
    run_id     UUID,
    status     TEXT,
    log_id     BIGINT,
    collection TEXT,
    doc_key    TEXT,
    ts         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT workflow_feed_kind_valid CHECK (kind IN
        ('run:new', 'run:update', 'log:append', 'document:new', 'document:update'))
);
CREATE INDEX workflow_feed_by_cursor ON workflow_feed (txid, seq);
-- No index on `ts`: `morpheus prune` scans the feed now and then, and every index
-- would cost each write that appends to the feed.

CREATE FUNCTION workflow_feed_append() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'workflow_runs' THEN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO workflow_feed (kind, run_id, status) VALUES ('run:new', NEW.id, NEW.status);
        ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
            INSERT INTO workflow_feed (kind, run_id, status) VALUES ('run:update', NEW.id, NEW.status);
        ELSE
            RETURN NULL;
        END IF;
    ELSIF TG_TABLE_NAME = 'workflow_logs' THEN
        INSERT INTO workflow_feed (kind, run_id, log_id) VALUES ('log:append', NEW.run_id, NEW.id);
    ELSE
        INSERT INTO workflow_feed (kind, collection, doc_key)
        VALUES (CASE TG_OP WHEN 'INSERT' THEN 'document:new' ELSE 'document:update' END,
                NEW.collection, NEW.key);
    END IF;
    PERFORM pg_notify('morpheus_feed', '');
    RETURN NULL;
END $$;

CREATE TRIGGER workflow_feed_runs AFTER INSERT OR UPDATE OF status ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION workflow_feed_append();
CREATE TRIGGER workflow_feed_logs AFTER INSERT ON workflow_logs
    FOR EACH ROW EXECUTE FUNCTION workflow_feed_append();
CREATE TRIGGER workflow_feed_documents AFTER INSERT OR UPDATE ON workflow_documents
    FOR EACH ROW EXECUTE FUNCTION workflow_feed_append();
