-- Market events: every event the service heard of, the truth the listener applies exactly once.
-- `received` until its effect commits (then `applied`, in the same transaction); `dead_letter` when it could
-- not be understood. The Redis stream only carries them; the sweep re-appends `received` events it lost.
CREATE TABLE market_events (
    event_id          TEXT PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 200),
    event_type        TEXT NOT NULL,
    payload           JSONB NOT NULL,
    status            TEXT NOT NULL DEFAULT 'received' CHECK (status IN ('received', 'applied', 'dead_letter')),
    received_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_at        TIMESTAMPTZ NULL,
    error             TEXT NULL,
    -- The recalculation its effect started (one task may serve many events).
    task_id           UUID NULL,
    -- When it was last put on the stream: the sweep re-appends `received` events where this is old.
    last_appended_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX market_events_unapplied ON market_events (last_appended_at) WHERE status = 'received';
CREATE INDEX market_events_latest ON market_events (received_at DESC);
CREATE INDEX market_events_status_latest ON market_events (status, received_at DESC);

-- Recalculations started by market events cover only their scope and wait for a running recalculation
-- instead of being skipped (an event's effect is never dropped).
ALTER TABLE tasks
    ADD COLUMN scope JSONB NULL,
    ADD COLUMN waits_for_lock BOOLEAN NOT NULL DEFAULT false;
