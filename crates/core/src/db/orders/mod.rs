//! The `orders` and `order_items` tables. Reading and the counters behind the metrics are here; buying
//! and cancelling (the transactions that move stock) are in `sale.rs`; the processing state machine the
//! worker drives is in `processing.rs`.

mod processing;
mod sale;

pub use processing::*;
pub use sale::*;

use crate::{
    domain::{Order, OrderItem, OrderStats, OrderStatus, Page},
    Error, Result,
};
use sqlx::PgPool;

#[tracing::instrument(skip(pool))]
pub async fn find(pool: &PgPool, id: i64) -> Result<Option<Order>> {
    let order =
        sqlx::query_as::<_, Order>(concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1"))
            .bind(id)
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

pub async fn get(pool: &PgPool, id: i64) -> Result<Order> {
    find(pool, id).await?.ok_or_else(|| Error::NotFound(format!("Order {id} not found")))
}

/// One page of orders, newest first, optionally of one status. The total comes from the counters table.
#[tracing::instrument(skip(pool))]
pub async fn list(
    pool: &PgPool,
    status: Option<OrderStatus>,
    page: i64,
    page_size: i64,
) -> Result<Page<Order>> {
    // Two statements rather than `($1 IS NULL OR status = $1)`, whose generic plan could not use the
    // (status, id) index.
    let offset = (page - 1) * page_size;
    let mut orders = match status {
        Some(status) => {
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
        None => {
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
    let stats = stats(pool).await?;
    let total = match status {
        Some(s) => stats.count(s),
        None => stats.counts.iter().map(|(_, n)| n).sum(),
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
#[tracing::instrument(skip(pool))]
pub async fn stats(pool: &PgPool) -> Result<OrderStats> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT status, sum(orders)::bigint, sum(processing_seconds_total)::float8
         FROM order_stats GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    let counts = OrderStatus::ALL
        .into_iter()
        .map(|s| (s, rows.iter().find(|r| r.0 == s.as_str()).map_or(0, |r| r.1)))
        .collect::<Vec<_>>();
    let completed = counts.iter().find(|(s, _)| *s == OrderStatus::Completed).map_or(0, |c| c.1);
    let seconds = rows.iter().find(|r| r.0 == "completed").map_or(0.0, |r| r.2);
    let average_processing_time_seconds = if completed > 0 { seconds / completed as f64 } else { 0.0 };
    Ok(OrderStats { counts, average_processing_time_seconds })
}
