//! What the listener's tests share: products and events made directly, and reads of what applying did.
//! The test's own database and Redis prefix come from `crates/core/testing/backends.rs`.

// Each test file uses a different part of it.
#![allow(dead_code)]

use pricing_core::events::{MarketEvent, MarketEventDraft};
use rust_decimal::Decimal;
use sqlx::PgPool;

/// A product with `sku` in `category`, straight into PostgreSQL; returns its id.
pub async fn product(db: &PgPool, sku: &str, category: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO products (sku, name, category, price, stock) VALUES ($1, $1, $2, 10, 100) RETURNING id",
    )
    .bind(sku)
    .bind(category)
    .fetch_one(db)
    .await
    .unwrap()
}

/// An event as a producer would send it, checked by the same rules the listener applies.
pub fn event(json: serde_json::Value) -> MarketEvent {
    serde_json::from_value::<MarketEventDraft>(json).unwrap().validate(MarketEvent::new_id).unwrap()
}

/// A `competitor_price` signal for `products` (ids or SKUs, as JSON).
pub fn signal(event_id: &str, products: serde_json::Value, multiplier: f64) -> MarketEvent {
    let fields = serde_json::json!({ "event_id": event_id, "event_type": "competitor_price",
                                     "product_ids": products, "multiplier": multiplier });
    event(fields)
}

/// The stored market multiplier of `scope` (`product:{id}` or `category:{name}`).
pub async fn multiplier(db: &PgPool, scope: &str) -> Option<Decimal> {
    sqlx::query_scalar("SELECT multiplier FROM market_multipliers WHERE scope = $1")
        .bind(scope)
        .fetch_optional(db)
        .await
        .unwrap()
}

/// An event's status in PostgreSQL, `None` when it is not recorded.
pub async fn status_of(db: &PgPool, event_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM market_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(db)
        .await
        .unwrap()
}

/// A `count(*)` query's answer.
pub async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

pub fn decimal(text: &str) -> Decimal {
    text.parse().unwrap()
}
