//! Deleting rows nobody needs any more, so PostgreSQL does not grow without bound: idempotency keys past
//! their TTL (they already count as unused, `idempotency::find`), and finished market events and tasks past
//! their retention. Never an unfinished row: a `received` event or a `queued`/`running` task is still work.
//!
//! One call deletes one bounded batch in one short transaction (the worker's retention job repeats it). The
//! rows are taken with `FOR UPDATE SKIP LOCKED`, oldest first through an index, so several workers
//! deleting at once split the rows between them (each row is deleted once) and never wait for each other.

use std::time::Duration;

use sqlx::PgPool;

use crate::Result;

/// A table the retention jobs keep lean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    IdempotencyKeys,
    MarketEvents,
    Tasks,
}

impl Retained {
    pub const ALL: [Retained; 3] = [Retained::IdempotencyKeys, Retained::MarketEvents, Retained::Tasks];

    /// The table's name (the `table` label of the retention metrics).
    pub fn table(self) -> &'static str {
        match self {
            Retained::IdempotencyKeys => "idempotency_keys",
            Retained::MarketEvents => "market_events",
            Retained::Tasks => "tasks",
        }
    }

    /// The batch's `DELETE`: up to `$2` rows older than `$1` seconds. Each age is the one its index holds
    /// (`idempotency_keys_created_at`, `market_events_finished`, `tasks_finished`), so the subquery reads
    /// only the rows it deletes. Public so a test can `EXPLAIN` it.
    pub fn delete_sql(self) -> &'static str {
        match self {
            // Keys expire from their claim (`created_at`), exactly when `idempotency::find` stops seeing them.
            Retained::IdempotencyKeys => {
                "DELETE FROM idempotency_keys WHERE key = ANY(ARRAY(
                     SELECT key FROM idempotency_keys
                     WHERE created_at < now() - make_interval(secs => $1)
                     ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            // Aged from when the event was applied (a dead letter has no such time: from when it was heard),
            // so an event applied late is not deleted while its stream entry may still be redelivered.
            Retained::MarketEvents => {
                "DELETE FROM market_events WHERE event_id = ANY(ARRAY(
                     SELECT event_id FROM market_events
                     WHERE status IN ('applied', 'dead_letter')
                       AND coalesce(applied_at, received_at) < now() - make_interval(secs => $1)
                     ORDER BY coalesce(applied_at, received_at) LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            Retained::Tasks => {
                "DELETE FROM tasks WHERE id = ANY(ARRAY(
                     SELECT id FROM tasks
                     WHERE status IN ('succeeded', 'failed', 'skipped')
                       AND finished_at < now() - make_interval(secs => $1)
                     ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
        }
    }
}

/// Deletes up to `limit` rows of `table` older than `older_than`, in one transaction; returns how many.
/// Fewer than `limit` means none is left (or another worker holds the rest, and deletes it).
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "DELETE", db.collection.name = table.table()))]
pub async fn delete_batch(pool: &PgPool, table: Retained, older_than: Duration, limit: i64) -> Result<u64> {
    let deleted =
        sqlx::query(table.delete_sql()).bind(older_than.as_secs_f64()).bind(limit).execute(pool).await?;
    Ok(deleted.rows_affected())
}
