//! The transactions that move stock: a sale (lock the products, then stock, order and items in one
//! statement) and a cancellation (stock given back). Every transaction that touches products locks them
//! first, in ascending id order, before any order row or counter, so none can wait in a cycle.
//! What a line costs is decided by the order use case (`crate::orders`); this module only runs the SQL.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};

use super::get;
use crate::{
    db::products::ProductWithMarket,
    domain::{Buyer, Order, OrderAccess, OrderItem, Product},
    Error, Result,
};

/// Bounds a sale's transaction: each statement ends by `deadline` (it is rolled back otherwise), and a row
/// lock is waited for at most `lock_timeout`. One round trip, first in the transaction.
pub async fn bound_sale(
    tx: &mut Transaction<'_, Postgres>,
    lock_timeout: std::time::Duration,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis().max(1);
    let lock = lock_timeout.as_millis().min(left).max(1);
    sqlx::query("SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true)")
        .bind(left.to_string())
        .bind(lock.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Commits a sale, unless its deadline has passed (then it rolls back: the client is being told it failed).
/// A COMMIT that fails in flight leaves the outcome unknown, and says so.
pub async fn commit_sale(tx: Transaction<'_, Postgres>, deadline: tokio::time::Instant) -> Result<()> {
    if tokio::time::Instant::now() >= deadline {
        tx.rollback().await?;
        return Err(Error::NotSold(
            "The order could not be completed within REQUEST_TIMEOUT_MS; nothing was sold".into(),
        ));
    }
    tx.commit().await.map_err(|e| {
        Error::OutcomeUnknown(format!(
            "The order's commit was interrupted ({e}); retry with the same Idempotency-Key to learn its outcome"
        ))
    })
}

/// Locks the products in ascending id order (`FOR UPDATE`) and reads each with its market multiplier.
/// Ids that name no product are simply absent from the result.
#[tracing::instrument(skip(tx), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "products"))]
pub async fn lock_for_sale(
    tx: &mut Transaction<'_, Postgres>,
    product_ids: &[i64],
) -> Result<Vec<ProductWithMarket>> {
    Ok(sqlx::query_as::<_, ProductWithMarket>(concat!(
        "SELECT ",
        locked_product_columns!(),
        ", ",
        market_multiplier_of!("products"),
        " AS market_multiplier FROM products WHERE products.id = ANY($1) ORDER BY products.id FOR UPDATE OF products"
    ))
    .bind(product_ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// Whose an order is: the buyer, and for a guest the digest of their order access token; and the trace
/// of the request that placed it (W3C `traceparent`), kept with the order for the jobs it gets later.
#[derive(Debug, Clone)]
pub struct OrderOwner {
    pub buyer: Buyer,
    pub access_token_hash: Option<Vec<u8>>,
    pub traceparent: Option<String>,
}

/// One order of a sale: whose it is, its total and its lines.
pub struct SaleOrder {
    pub owner: OrderOwner,
    pub total: Decimal,
    pub items: Vec<OrderItem>,
}

/// What `record_sale` wrote: each order's id and time, in the sale's order, and the products after.
pub struct Sale {
    pub orders: Vec<(i64, DateTime<Utc>)>,
    pub products: Vec<Product>,
}

/// In one statement, while the products' rows are locked: decrements each product's stock by the
/// quantities of every order's lines and inserts the orders and their items. Ids are drawn in the sale's
/// order, so the answer maps back to it. The caller has checked the stock (the `CHECK (stock >= 0)` is the
/// last line).
#[tracing::instrument(skip(tx, orders), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "INSERT", db.collection.name = "orders", orders = orders.len()))]
pub async fn record_sale(tx: &mut Transaction<'_, Postgres>, orders: &[SaleOrder]) -> Result<Sale> {
    let users: Vec<Option<&str>> = orders.iter().map(|o| o.owner.buyer.user_id()).collect();
    let labels: Vec<Option<&str>> = orders.iter().map(|o| o.owner.buyer.guest_label()).collect();
    let hashes: Vec<Option<&[u8]>> = orders.iter().map(|o| o.owner.access_token_hash.as_deref()).collect();
    let traces: Vec<Option<&str>> = orders.iter().map(|o| o.owner.traceparent.as_deref()).collect();
    let totals: Vec<Decimal> = orders.iter().map(|o| o.total).collect();
    // The lines of every order, each with its order's position (1-based, as `WITH ORDINALITY` counts).
    let lines = orders.iter().zip(1i64..).flat_map(|(o, ord)| o.items.iter().map(move |i| (ord, i)));
    let (line_orders, items): (Vec<i64>, Vec<&OrderItem>) = lines.unzip();
    let products: Vec<i64> = items.iter().map(|i| i.product_id).collect();
    let quantities: Vec<i32> = items.iter().map(|i| i.quantity).collect();
    let prices: Vec<Decimal> = items.iter().map(|i| i.unit_price).collect();
    let sources: Vec<&str> = items.iter().map(|i| i.price_source.as_str()).collect();
    let placed: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::numeric[], $3::text[], $4::bytea[], $5::text[])
                 WITH ORDINALITY AS t(user_id, total, guest_label, token_hash, traceparent, ord)),
         lines AS (
             SELECT * FROM unnest($6::bigint[], $7::bigint[], $8::int[], $9::numeric[], $10::text[])
                 AS l(ord, product_id, quantity, unit_price, source)),
         numbered AS MATERIALIZED (
             SELECT input.*, nextval(pg_get_serial_sequence('orders', 'id')) AS id FROM input ORDER BY ord),
         sold AS (
             UPDATE products SET stock = stock - s.quantity
             FROM (SELECT product_id, sum(quantity) AS quantity FROM lines GROUP BY product_id) s
             WHERE products.id = s.product_id),
         placed AS (
             INSERT INTO orders (id, user_id, guest_label, access_token_hashes, total_price, traceparent)
             OVERRIDING SYSTEM VALUE
             SELECT id, user_id, guest_label, CASE WHEN token_hash IS NULL THEN NULL ELSE ARRAY[token_hash] END,
                    total, traceparent
             FROM numbered ORDER BY ord RETURNING id, created_at),
         items AS (
             INSERT INTO order_items (order_id, product_id, quantity, unit_price, price_source)
             SELECT numbered.id, lines.product_id, lines.quantity, lines.unit_price, lines.source
             FROM lines JOIN numbered USING (ord))
         SELECT placed.id, placed.created_at FROM numbered JOIN placed USING (id) ORDER BY numbered.ord",
    )
    .bind(&users)
    .bind(&totals)
    .bind(&labels)
    .bind(&hashes)
    .bind(&traces)
    .bind(&line_orders)
    .bind(&products)
    .bind(&quantities)
    .bind(&prices)
    .bind(&sources)
    .fetch_all(&mut **tx)
    .await?;
    // The statement's own snapshot does not show its UPDATE; this one does.
    let products = sqlx::query_as::<_, Product>(concat!(
        "SELECT ",
        locked_product_columns!(),
        " FROM products WHERE products.id = ANY($1) ORDER BY products.id"
    ))
    .bind(&products)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Sale { orders: placed, products })
}

/// Cancels a pending order that `access` reaches and puts its stock back, in one transaction.
#[tracing::instrument(skip(pool, access), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "orders"))]
pub async fn cancel(pool: &PgPool, id: i64, access: &OrderAccess) -> Result<(Order, Vec<Product>)> {
    // Not reachable reads as not there, before any lock is taken.
    get(pool, id, access).await?;
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
            None => super::not_found(id),
            Some(status) => {
                Error::Conflict(format!("Order {id} is {status}; only pending orders can be cancelled"))
            }
        });
    }
    let products = restore_stock(&mut tx, id).await?;
    tx.commit().await?;
    Ok((get(pool, id, access).await?, products))
}

/// Locks an order's products in ascending id order, as a purchase does, before the order row and the
/// status counters: every transaction takes products first, so none can wait in a cycle.
pub(super) async fn lock_products_of(tx: &mut Transaction<'_, Postgres>, order_id: i64) -> Result<()> {
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
pub(super) async fn restore_stock(tx: &mut Transaction<'_, Postgres>, order_id: i64) -> Result<Vec<Product>> {
    Ok(sqlx::query_as::<_, Product>(concat!(
        "UPDATE products SET stock = stock + i.quantity FROM order_items i
         WHERE i.order_id = $1 AND i.product_id = products.id RETURNING ",
        locked_product_columns!()
    ))
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?)
}
