-- Dynamic pricing: the latest market multiplier per product or category, and background task records.

-- One row per scope, 'product:{id}' or 'category:{name}': the latest signal wins. A product-level row
-- takes precedence over its category's.
CREATE TABLE market_multipliers (
    scope       TEXT PRIMARY KEY CHECK (scope ~ '^(product|category):.+'),
    multiplier  NUMERIC(8, 4) NOT NULL CHECK (multiplier > 0),
    source      TEXT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Background tasks (the bulk recalculation): the truth of what was asked and how far it got. The Redis
-- job that runs one is only a wake-up call; the sweeper re-enqueues a task whose job was lost.
CREATE TABLE tasks (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'skipped')),
    processed         BIGINT NOT NULL DEFAULT 0,
    total             BIGINT NOT NULL DEFAULT 0,
    attempts          INT NOT NULL DEFAULT 0,
    -- Keyset position: a retried attempt resumes after the last product it finished.
    cursor            BIGINT NOT NULL DEFAULT 0,
    error             TEXT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at        TIMESTAMPTZ NULL,
    finished_at       TIMESTAMPTZ NULL,
    -- Refreshed by the running job after each batch; a running task silent for long lost its worker.
    heartbeat_at      TIMESTAMPTZ NULL,
    last_enqueued_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX tasks_unfinished ON tasks (last_enqueued_at) WHERE status IN ('queued', 'running');
