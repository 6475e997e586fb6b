//! The processing state machine the worker drives: `pending -> processing -> completed | failed`, every
//! step a guarded UPDATE fenced by the attempt count, and the sweeper's query for orders a queue lost.

use std::time::Duration;

use sqlx::PgPool;

use super::sale::{lock_products_of, restore_stock};
use crate::{domain::Product, Result};

/// Takes orders for processing: `pending -> processing`, or re-takes one whose processing was abandoned
/// (its worker died) longer than `stale_after` ago. Counts the delivery; returns, per id in `ids`' order,
/// the new attempt count, which fences the later transitions, or `None` when there is nothing to do (a
/// duplicate delivery, also one in this very batch). One statement for the whole batch.
#[tracing::instrument(skip(pool, ids), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "orders", count = ids.len()))]
pub async fn claim(pool: &PgPool, ids: &[i64], stale_after: Duration) -> Result<Vec<Option<i32>>> {
    let taken: Vec<(i64, i32)> = sqlx::query_as(
        "UPDATE orders SET status = 'processing', attempts = attempts + 1, processing_started_at = now()
         WHERE id = ANY($1) AND (status = 'pending'
               OR (status = 'processing' AND processing_started_at < now() - make_interval(secs => $2)))
         RETURNING id, attempts",
    )
    .bind(ids)
    .bind(stale_after.as_secs_f64())
    .fetch_all(pool)
    .await?;
    // One row per order taken: the first delivery of it in `ids` holds it, a second in the same batch
    // is a duplicate like any other (`remove`, not `get`).
    let mut taken: std::collections::HashMap<i64, i32> = taken.into_iter().collect();
    Ok(ids.iter().map(|id| taken.remove(id)).collect())
}

/// Records one more fulfilment try of an order this handler holds; `None` if it no longer holds it.
pub async fn record_retry(pool: &PgPool, id: i64, attempts: i32) -> Result<Option<i32>> {
    Ok(sqlx::query_scalar(
        "UPDATE orders SET attempts = attempts + 1
         WHERE id = $1 AND status = 'processing' AND attempts = $2 RETURNING attempts",
    )
    .bind(id)
    .bind(attempts)
    .fetch_optional(pool)
    .await?)
}

/// `processing -> completed` for each `(id, attempts)`, only by the holder of that attempt. Returns, per
/// pair in order, whether it happened. One statement for the whole batch.
#[tracing::instrument(skip(pool, held), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "orders", count = held.len()))]
pub async fn complete(pool: &PgPool, held: &[(i64, i32)]) -> Result<Vec<bool>> {
    let (ids, attempts): (Vec<i64>, Vec<i32>) = held.iter().copied().unzip();
    let done: Vec<i64> = sqlx::query_scalar(
        "UPDATE orders o SET status = 'completed', completed_at = now()
         FROM unnest($1::bigint[], $2::int[]) AS held(id, attempts)
         WHERE o.id = held.id AND o.status = 'processing' AND o.attempts = held.attempts
         RETURNING o.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .fetch_all(pool)
    .await?;
    let done: std::collections::HashSet<i64> = done.into_iter().collect();
    Ok(ids.iter().map(|id| done.contains(id)).collect())
}

/// `processing -> failed` with the reason, giving the stock back in the same transaction. Returns the
/// products whose stock changed, or `None` when the order was not ours to fail.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "orders"))]
pub async fn fail(pool: &PgPool, id: i64, attempts: i32, reason: &str) -> Result<Option<Vec<Product>>> {
    let mut tx = pool.begin().await?;
    lock_products_of(&mut tx, id).await?;
    let failed = sqlx::query(
        "UPDATE orders SET status = 'failed', failure_reason = $3
         WHERE id = $1 AND status = 'processing' AND attempts = $2",
    )
    .bind(id)
    .bind(attempts)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    if failed.rows_affected() == 0 {
        return Ok(None);
    }
    let products = restore_stock(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some(products))
}

/// Unfinished orders whose last wake-up job is older than `older_than`, oldest first: the queue lost
/// them, or their worker died. Marks them as enqueued now, so the next sweep does not pick them again.
/// Each comes with the trace context of the request that placed it.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "orders"))]
pub async fn take_stale(
    pool: &PgPool,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<(i64, Option<String>)>> {
    Ok(sqlx::query_as(
        "UPDATE orders SET last_enqueued_at = now()
         WHERE id IN (SELECT id FROM orders
                      WHERE status IN ('pending', 'processing')
                        AND last_enqueued_at < now() - make_interval(secs => $1)
                      ORDER BY last_enqueued_at LIMIT $2
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, traceparent",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// How many orders sit in `pending` and in `processing` with no change a client could see for longer than
/// `older_than` (the sweeper re-enqueues those; staying stuck means processing is not happening).
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "orders"))]
pub async fn count_stuck(pool: &PgPool, older_than: Duration) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing')
         FROM orders
         WHERE status IN ('pending', 'processing') AND updated_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than.as_secs_f64())
    .fetch_one(pool)
    .await?)
}
