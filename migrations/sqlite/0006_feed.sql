-- The change feed: one row per thing an operator watches happen (a run created, a run
-- changing status, a log line, a document written), appended by triggers inside the
-- transaction that made the change, so it cannot disagree with the tables. Readers
-- (the HTTP API's live events) follow it by `seq`: the single writer assigns `seq` in
-- commit order, so a reader that has seen `seq` N has seen everything before it.
-- `seq` is a plain rowid (no AUTOINCREMENT, which would write sqlite_sequence on every
-- append): new rows get max(seq) + 1, and retention never deletes the newest row, so
-- `seq` never goes back.
CREATE TABLE workflow_feed (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    run_id     TEXT,
    status     TEXT,
    log_id     INTEGER,
    collection TEXT,
    doc_key    TEXT,
    ts         TEXT    NOT NULL,
    CONSTRAINT workflow_feed_kind_valid CHECK (kind IN
        ('run:new', 'run:update', 'log:append', 'document:new', 'document:update'))
);
-- No index on `ts`: `morpheus prune` scans the feed now and then, and every index
-- would cost each write that appends to the feed.

CREATE TRIGGER workflow_feed_run_insert AFTER INSERT ON workflow_runs BEGIN
    INSERT INTO workflow_feed (kind, run_id, status, ts)
    VALUES ('run:new', new.id, new.status, new.created_at);
END;
CREATE TRIGGER workflow_feed_run_status AFTER UPDATE OF status ON workflow_runs
    WHEN old.status IS NOT new.status BEGIN
    INSERT INTO workflow_feed (kind, run_id, status, ts)
    VALUES ('run:update', new.id, new.status, new.updated_at);
END;
CREATE TRIGGER workflow_feed_log_insert AFTER INSERT ON workflow_logs BEGIN
    INSERT INTO workflow_feed (kind, run_id, log_id, ts)
    VALUES ('log:append', new.run_id, new.id, new.ts);
END;
CREATE TRIGGER workflow_feed_document_insert AFTER INSERT ON workflow_documents BEGIN
    INSERT INTO workflow_feed (kind, collection, doc_key, ts)
    VALUES ('document:new', new.collection, new.key, new.updated_at);
END;
CREATE TRIGGER workflow_feed_document_update AFTER UPDATE ON workflow_documents BEGIN
    INSERT INTO workflow_feed (kind, collection, doc_key, ts)
    VALUES ('document:update', new.collection, new.key, new.updated_at);
END;
