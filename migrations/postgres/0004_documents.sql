-- A small generic document store: JSON bodies by (collection, key), with a version for
-- compare-and-set writes. Workflows keep their domain records here (through the World
-- port, never SQL of their own).
CREATE TABLE workflow_documents (
    collection TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    body       JSONB       NOT NULL,
    version    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, key),
    CONSTRAINT workflow_documents_version_positive CHECK (version > 0)
);
-- Listing a collection newest first.
CREATE INDEX workflow_documents_newest ON workflow_documents (collection, created_at DESC, key DESC);
