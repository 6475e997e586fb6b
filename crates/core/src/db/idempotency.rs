//! The `idempotency_keys` table: an order's `Idempotency-Key`, claimed inside the order's own transaction.
//! A second request with the key waits for the first one's transaction (the row lock), then replays its
//! order; if the first rolled back, the second goes ahead as new.

use std::time::Duration;

use sqlx::{PgExecutor, Postgres, Transaction};

use crate::{domain::Order, Result};

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// The key is this request's now (new, or expired and taken over): go ahead.
    New,
    /// The key's order, as it was first answered.
    Replay(Box<Order>),
    /// The key was used with a different request.
    Mismatch,
}

/// Claims `key` for a request whose canonical form hashes to `request_hash`. Keys older than `ttl` count as
/// unused.
#[tracing::instrument(skip(tx, request_hash), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "idempotency_keys"))]
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    request_hash: &str,
    ttl: Duration,
) -> Result<Claim> {
    let taken: Option<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (key, request_hash) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, order_id = NULL, response = NULL,
                                         created_at = now()
             WHERE idempotency_keys.created_at < now() - make_interval(secs => $3)
         RETURNING key",
    )
    .bind(key)
    .bind(request_hash)
    .bind(ttl.as_secs_f64())
    .fetch_optional(&mut **tx)
    .await?;
    if taken.is_some() {
        return Ok(Claim::New);
    }
    Ok(find(&mut **tx, key, request_hash, ttl).await?.unwrap_or(Claim::New))
}

/// Gives back keys claimed in this transaction by requests that were then refused (a group commit goes on
/// with the others), so a retry of those requests is not mistaken for another request.
pub async fn release(tx: &mut Transaction<'_, Postgres>, keys: &[&str]) -> Result<()> {
    if !keys.is_empty() {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = ANY($1) AND order_id IS NULL")
            .bind(keys)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What a live (unexpired, committed) key says about this request, without claiming it: `None` when the
/// key is unused.
pub async fn find(
    db: impl PgExecutor<'_>,
    key: &str,
    request_hash: &str,
    ttl: Duration,
) -> Result<Option<Claim>> {
    let found: Option<(String, Option<sqlx::types::Json<Order>>)> = sqlx::query_as(
        "SELECT request_hash, response FROM idempotency_keys
         WHERE key = $1 AND created_at >= now() - make_interval(secs => $2)",
    )
    .bind(key)
    .bind(ttl.as_secs_f64())
    .fetch_optional(db)
    .await?;
    Ok(found.map(|(hash, response)| match response {
        _ if hash != request_hash => Claim::Mismatch,
        Some(order) => Claim::Replay(Box::new(order.0)),
        // Recorded with its order in one transaction, so a committed key always has its response.
        None => Claim::Mismatch,
    }))
}

/// Records the order a claimed key created, in the same transaction.
pub async fn record(tx: &mut Transaction<'_, Postgres>, key: &str, order: &Order) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET order_id = $2, response = $3 WHERE key = $1")
        .bind(key)
        .bind(order.id)
        .bind(sqlx::types::Json(order))
        .execute(&mut **tx)
        .await?;
    Ok(())
}
