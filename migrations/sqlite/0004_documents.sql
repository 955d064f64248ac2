-- A small generic document store: JSON bodies by (collection, key), with a version for
-- compare-and-set writes. Workflows keep their domain records here (through the World
-- port, never SQL of their own). Times are RFC 3339 UTC text with fixed microsecond
-- precision, so text order is time order.
CREATE TABLE workflow_documents (
    collection TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (collection, key),
    CONSTRAINT workflow_documents_version_positive CHECK (version > 0),
    CONSTRAINT workflow_documents_body_is_json CHECK (json_valid(body))
);
-- Listing a collection newest first.
CREATE INDEX workflow_documents_newest ON workflow_documents (collection, created_at DESC, key DESC);
