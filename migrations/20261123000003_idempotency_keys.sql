-- Idempotent orders: a client's Idempotency-Key, recorded in the order's own transaction with the order
-- it created, so a retry (even after a crash between commit and answer) replays that order instead of
-- buying twice. Keys are scoped per user_id; an expired key may be taken over by a new request.
CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 600),
    request_hash  TEXT NOT NULL,
    order_id      BIGINT NULL REFERENCES orders (id) ON DELETE CASCADE,
    -- The order as first answered (the replay shows exactly this).
    response      JSONB NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
