//! The `orders` and `order_items` tables: buying (all-or-nothing, never oversold), the processing state
//! machine the worker drives, cancellation, and the counters behind the metrics.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};

use crate::{
    domain::{NewOrder, Order, OrderItem, OrderStats, OrderStatus, Page, Product, ProductRef},
    money::round_cents,
    Error, Result,
};

/// A product row locked for a purchase, with the market multiplier that applies to it.
#[derive(sqlx::FromRow)]
struct LockedProduct {
    #[sqlx(flatten)]
    product: Product,
    market_multiplier: Option<Decimal>,
}

/// A product row after the sale, with the new order's id and time (one row per product sold).
#[derive(sqlx::FromRow)]
struct SoldProduct {
    #[sqlx(flatten)]
    product: Product,
    order_id: i64,
    order_created_at: DateTime<Utc>,
}

/// Places an order in one transaction: locks every product involved in ascending id order (so two orders
/// over the same products never deadlock), prices each line from the locked row (`price_of`, given the
/// product and its market multiplier; a quoted price in `new.unit_prices` wins), checks stock, then
/// decrements it and records the order and its items in one statement. Returns the order and the products
/// as they are after the sale (for the cache).
#[tracing::instrument(skip(pool, new, price_of), fields(lines = new.lines.len()))]
pub async fn create(
    pool: &PgPool,
    new: &NewOrder,
    price_of: impl Fn(&Product, Option<Decimal>) -> Decimal,
) -> Result<(Order, Vec<Product>)> {
    let (ids, skus): (Vec<i64>, Vec<String>) =
        new.lines.iter().fold((vec![], vec![]), |(mut i, mut s), (r, _)| {
            match r {
                ProductRef::Id(id) => i.push(*id),
                ProductRef::Sku(sku) => s.push(sku.clone()),
            }
            (i, s)
        });

    let mut tx = pool.begin().await?;
    let locked = sqlx::query_as::<_, LockedProduct>(concat!(
        "SELECT ",
        locked_product_columns!(),
        ", m.multiplier AS market_multiplier
         FROM products
         LEFT JOIN LATERAL (
             SELECT multiplier FROM market_multipliers
             WHERE scope IN ('product:' || products.id, 'category:' || products.category)
             ORDER BY scope LIKE 'product:%' DESC LIMIT 1) m ON true
         WHERE products.id = ANY($1) OR products.sku = ANY($2)
         ORDER BY products.id FOR UPDATE OF products"
    ))
    .bind(&ids)
    .bind(&skus)
    .fetch_all(&mut *tx)
    .await?;

    // Quantity and unit price per product id, lines naming the same product merged.
    let mut wanted: BTreeMap<i64, (i32, Decimal)> = BTreeMap::new();
    for (product_ref, quantity) in &new.lines {
        let LockedProduct { product, market_multiplier } = locked
            .iter()
            .find(|l| match product_ref {
                ProductRef::Id(id) => l.product.id == *id,
                ProductRef::Sku(sku) => &l.product.sku == sku,
            })
            .ok_or_else(|| Error::NotFound(format!("Product {product_ref} not found")))?;
        let entry = wanted.entry(product.id).or_insert_with(|| {
            let quoted = new.unit_prices.iter().find(|(id, _)| *id == product.id).map(|(_, p)| *p);
            (0, quoted.unwrap_or_else(|| price_of(product, *market_multiplier)))
        });
        entry.0 = entry
            .0
            .checked_add(*quantity)
            .ok_or_else(|| Error::Validation(format!("quantity for product {} is too large", product.id)))?;
    }
    for (&product_id, &(quantity, _)) in &wanted {
        let available = locked.iter().find(|l| l.product.id == product_id).map_or(0, |l| l.product.stock);
        if available < quantity {
            return Err(Error::InsufficientStock { product_id, available, requested: quantity });
        }
    }
    let total = round_cents(wanted.values().map(|(q, price)| price * Decimal::from(*q)).sum());
    if total > crate::money::MAX_AMOUNT {
        return Err(Error::Validation(format!(
            "the order total {total} exceeds the largest amount, {}",
            crate::money::MAX_AMOUNT
        )));
    }
    if let Some(shown) = new.expected_total {
        if shown != total {
            return Err(Error::TotalChanged { shown, current: total });
        }
    }

    let product_ids: Vec<i64> = wanted.keys().copied().collect();
    let quantities: Vec<i32> = wanted.values().map(|(q, _)| *q).collect();
    let prices: Vec<Decimal> = wanted.values().map(|(_, p)| *p).collect();
    // One round trip while the rows are locked: the stock, the order and its items.
    let sold = sqlx::query_as::<_, SoldProduct>(concat!(
        "WITH sold AS (
             UPDATE products SET stock = stock - v.quantity
             FROM unnest($1::bigint[], $2::int[]) AS v(id, quantity)
             WHERE products.id = v.id
             RETURNING ",
        locked_product_columns!(),
        "),
         placed AS (
             INSERT INTO orders (user_id, total_price) VALUES ($3, $4) RETURNING id, created_at),
         items AS (
             INSERT INTO order_items (order_id, product_id, quantity, unit_price)
             SELECT placed.id, v.id, v.quantity, v.unit_price
             FROM placed, unnest($1::bigint[], $2::int[], $5::numeric[]) AS v(id, quantity, unit_price))
         SELECT sold.*, placed.id AS order_id, placed.created_at AS order_created_at FROM sold, placed"
    ))
    .bind(&product_ids)
    .bind(&quantities)
    .bind(&new.user_id)
    .bind(total)
    .bind(&prices)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let (order_id, created_at) = sold
        .first()
        .map(|s| (s.order_id, s.order_created_at))
        .ok_or_else(|| Error::Unavailable("the order statement returned no rows".into()))?;
    let items = product_ids
        .iter()
        .zip(&quantities)
        .zip(&prices)
        .map(|((&product_id, &quantity), &unit_price)| OrderItem { product_id, quantity, unit_price })
        .collect();
    let order = Order {
        id: order_id,
        user_id: new.user_id.clone(),
        status: OrderStatus::Pending,
        total_price: total,
        attempts: 0,
        failure_reason: None,
        created_at,
        updated_at: created_at,
        processing_started_at: None,
        completed_at: None,
        items,
    };
    Ok((order, sold.into_iter().map(|s| s.product).collect()))
}

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
        "SELECT product_id, quantity, unit_price FROM order_items WHERE order_id = $1 ORDER BY product_id",
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
        "SELECT order_id, product_id, quantity, unit_price FROM order_items
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

/// Cancels a pending order and puts its stock back, in one transaction.
#[tracing::instrument(skip(pool))]
pub async fn cancel(pool: &PgPool, id: i64) -> Result<(Order, Vec<Product>)> {
    let mut tx = pool.begin().await?;
    lock_products_of(&mut tx, id).await?;
    let cancelled: Option<i64> = sqlx::query_scalar(
        "UPDATE orders SET status = 'cancelled' WHERE id = $1 AND status = 'pending' RETURNING id",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if cancelled.is_none() {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        return Err(match status {
            None => Error::NotFound(format!("Order {id} not found")),
            Some(status) => {
                Error::Conflict(format!("Order {id} is {status}; only pending orders can be cancelled"))
            }
        });
    }
    let products = restore_stock(&mut tx, id).await?;
    tx.commit().await?;
    Ok((get(pool, id).await?, products))
}

/// Locks an order's products in ascending id order, as a purchase does, before the order row and the
/// status counters: every transaction takes products first, so none can wait in a cycle.
async fn lock_products_of(tx: &mut Transaction<'_, Postgres>, order_id: i64) -> Result<()> {
    sqlx::query(
        "SELECT p.id FROM products p JOIN order_items i ON i.product_id = p.id
         WHERE i.order_id = $1 ORDER BY p.id FOR UPDATE OF p",
    )
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Gives an order's stock back; its products are already locked (`lock_products_of`).
async fn restore_stock(tx: &mut Transaction<'_, Postgres>, order_id: i64) -> Result<Vec<Product>> {
    Ok(sqlx::query_as::<_, Product>(concat!(
        "UPDATE products SET stock = stock + i.quantity FROM order_items i
         WHERE i.order_id = $1 AND i.product_id = products.id RETURNING ",
        locked_product_columns!()
    ))
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?)
}

/// Takes an order for processing: `pending -> processing`, or re-takes one whose processing was abandoned
/// (its worker died) longer than `stale_after` ago. Counts the delivery; returns the new attempt count,
/// which fences the later transitions, or `None` when there is nothing to do (a duplicate delivery).
#[tracing::instrument(skip(pool))]
pub async fn claim(pool: &PgPool, id: i64, stale_after: Duration) -> Result<Option<i32>> {
    Ok(sqlx::query_scalar(
        "UPDATE orders SET status = 'processing', attempts = attempts + 1, processing_started_at = now()
         WHERE id = $1 AND (status = 'pending'
               OR (status = 'processing' AND processing_started_at < now() - make_interval(secs => $2)))
         RETURNING attempts",
    )
    .bind(id)
    .bind(stale_after.as_secs_f64())
    .fetch_optional(pool)
    .await?)
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

/// `processing -> completed`, only by the holder of attempt `attempts`. Returns whether it happened.
#[tracing::instrument(skip(pool))]
pub async fn complete(pool: &PgPool, id: i64, attempts: i32) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'completed', completed_at = now()
         WHERE id = $1 AND status = 'processing' AND attempts = $2",
    )
    .bind(id)
    .bind(attempts)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `processing -> failed` with the reason, giving the stock back in the same transaction. Returns the
/// products whose stock changed, or `None` when the order was not ours to fail.
#[tracing::instrument(skip(pool))]
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
#[tracing::instrument(skip(pool))]
pub async fn take_stale(pool: &PgPool, older_than: Duration, limit: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE orders SET last_enqueued_at = now()
         WHERE id IN (SELECT id FROM orders
                      WHERE status IN ('pending', 'processing')
                        AND last_enqueued_at < now() - make_interval(secs => $1)
                      ORDER BY last_enqueued_at LIMIT $2
                      FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
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
