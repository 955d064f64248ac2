-- Schedules: cron or interval triggers that start runs. A scheduler locks a due row
-- (FOR UPDATE SKIP LOCKED), starts the tick's run with the idempotency key
-- schedule:{name}:{tick} and moves next_fire_at, all in one transaction.
CREATE TABLE workflow_schedules (
    name          TEXT PRIMARY KEY,
    workflow      TEXT        NOT NULL,
    input         JSONB       NOT NULL,
    cron_expr     TEXT,
    timezone      TEXT,
    every_ms      BIGINT,
    overlap       TEXT        NOT NULL DEFAULT 'skip',
    catch_up      TEXT        NOT NULL DEFAULT 'skip_missed',
    queue         TEXT        NOT NULL DEFAULT 'default',
    priority      INTEGER     NOT NULL DEFAULT 0,
    paused        BOOLEAN     NOT NULL DEFAULT false,
    next_fire_at  TIMESTAMPTZ NOT NULL,
    last_fire_at  TIMESTAMPTZ,
    last_run_id   UUID,
    queued_tick   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT workflow_schedules_one_trigger CHECK ((cron_expr IS NULL) <> (every_ms IS NULL)),
    CONSTRAINT workflow_schedules_every_positive CHECK (every_ms IS NULL OR every_ms >= 1000),
    CONSTRAINT workflow_schedules_overlap_valid CHECK (overlap IN ('skip', 'queue_one', 'allow')),
    CONSTRAINT workflow_schedules_catch_up_valid CHECK (catch_up IN ('skip_missed', 'run_once', 'run_all'))
);
CREATE INDEX workflow_schedules_due ON workflow_schedules (next_fire_at) WHERE NOT paused;
