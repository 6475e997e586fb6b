//! The `orders` and `order_items` tables. Reading and the counters behind the metrics are here; buying
//! and cancelling (the transactions that move stock) are in `sale.rs`; the processing state machine the
//! worker drives is in `processing.rs`.

mod processing;
mod sale;

pub use processing::*;
pub use sale::*;

use crate::{
    domain::{Order, OrderAccess, OrderItem, OrderStats, OrderStatus, Page},
    Error, Result,
};
use sqlx::PgPool;

/// The order, if it exists and `access` reaches it (`None` otherwise: not yours reads as not there).
#[tracing::instrument(skip(pool, access), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "orders"))]
pub async fn find(pool: &PgPool, id: i64, access: &OrderAccess) -> Result<Option<Order>> {
    let order = sqlx::query_as::<_, Order>(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE id = $1 AND ",
        order_access!()
    ))
    .bind(id)
    .bind(access.admin)
    .bind(access.owner.as_deref())
    .bind(access.token_hash.as_deref())
    .fetch_optional(pool)
    .await?;
    let Some(mut order) = order else {
        return Ok(None);
    };
    order.items = sqlx::query_as::<_, OrderItem>(
        "SELECT product_id, quantity, unit_price, price_source FROM order_items WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(order))
}

pub async fn get(pool: &PgPool, id: i64, access: &OrderAccess) -> Result<Order> {
    find(pool, id, access).await?.ok_or_else(|| not_found(id))
}

pub(crate) fn not_found(id: i64) -> Error {
    Error::NotFound(format!("Order {id} not found"))
}

/// Adds an order access token (its digest) to a guest's order, keeping the four newest: a replayed guest
/// order is answered with a fresh token, since only digests are kept.
pub async fn add_access_token(pool: &PgPool, id: i64, token_hash: &[u8]) -> Result<()> {
    sqlx::query(
        "UPDATE orders SET access_token_hashes = (array_prepend($2::bytea, access_token_hashes))[1:4]
         WHERE id = $1 AND user_id IS NULL",
    )
    .bind(id)
    .bind(token_hash)
    .execute(pool)
    .await?;
    Ok(())
}

/// One page of orders, newest first, optionally one shopper's (`owner`) and of one status. The total of
/// all shoppers' orders comes from the counters table; one shopper's are counted (their index is small).
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "orders"))]
pub async fn list(
    pool: &PgPool,
    owner: Option<&str>,
    status: Option<OrderStatus>,
    page: i64,
    page_size: i64,
) -> Result<Page<Order>> {
    // Separate statements rather than `($1 IS NULL OR status = $1)`, whose generic plan could not use the
    // (status, id) index; one shopper's orders are found by the (user_id, id) index.
    let offset = (page - 1) * page_size;
    let mut orders = match (owner, status) {
        (Some(owner), status) => {
            sqlx::query_as::<_, Order>(concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
                  ORDER BY id DESC LIMIT $3 OFFSET $4"
            ))
            .bind(owner)
            .bind(status.map(|s| s.as_str()))
            .bind(page_size)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }
        (None, Some(status)) => {
            sqlx::query_as::<_, Order>(concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders WHERE status = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(status.as_str())
            .bind(page_size)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }
        (None, None) => {
            sqlx::query_as::<_, Order>(concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders ORDER BY id DESC LIMIT $1 OFFSET $2"
            ))
            .bind(page_size)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }
    };
    let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
    #[derive(sqlx::FromRow)]
    struct Row {
        order_id: i64,
        #[sqlx(flatten)]
        item: OrderItem,
    }
    let rows = sqlx::query_as::<_, Row>(
        "SELECT order_id, product_id, quantity, unit_price, price_source FROM order_items
         WHERE order_id = ANY($1) ORDER BY order_id, product_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for row in rows {
        if let Some(order) = orders.iter_mut().find(|o| o.id == row.order_id) {
            order.items.push(row.item);
        }
    }
    let total = match (owner, status) {
        (Some(owner), status) => {
            sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)",
            )
            .bind(owner)
            .bind(status.map(|s| s.as_str()))
            .fetch_one(pool)
            .await?
        }
        (None, Some(s)) => stats(pool).await?.count(s),
        (None, None) => stats(pool).await?.counts.iter().map(|(_, n)| n).sum(),
    };
    Ok(Page::new(orders, total, page, page_size))
}

/// The oldest pending orders' ids (what is next in line).
pub async fn oldest_pending(pool: &PgPool, limit: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM orders WHERE status = 'pending' ORDER BY id LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// Counts by status and the average processing time, from the trigger-maintained `order_stats` table.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "order_stats"))]
pub async fn stats(pool: &PgPool) -> Result<OrderStats> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT status, sum(orders)::bigint, sum(processing_seconds_total)::float8
         FROM order_stats GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    let counts = OrderStatus::ALL
        .iter()
        .copied()
        .map(|s| (s, rows.iter().find(|r| r.0 == s.as_str()).map_or(0, |r| r.1)))
        .collect::<Vec<_>>();
    let completed = counts.iter().find(|(s, _)| *s == OrderStatus::Completed).map_or(0, |c| c.1);
    let seconds = rows.iter().find(|r| r.0 == "completed").map_or(0.0, |r| r.2);
    let average_processing_time_seconds = if completed > 0 { seconds / completed as f64 } else { 0.0 };
    Ok(OrderStats { counts, average_processing_time_seconds })
}
