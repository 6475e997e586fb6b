-- The retention jobs (`db/retention.rs`) delete finished rows oldest first, a bounded batch at a time:
-- these partial indexes hold only finished rows, in the order of the age each job reads, so a batch reads
-- the rows it deletes and nothing else. (`idempotency_keys_created_at` already serves the keys.)
-- On a table already large, an operator may build them first with CREATE INDEX CONCURRENTLY under the
-- same names: this migration then changes nothing.
CREATE INDEX IF NOT EXISTS market_events_finished ON market_events ((coalesce(applied_at, received_at)))
    WHERE status IN ('applied', 'dead_letter');
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at)
    WHERE status IN ('succeeded', 'failed', 'skipped');
