//! The `market_multipliers` table: the latest market signal per product or category.

use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::Result;

/// Multipliers for a batch of products: `(product_id, multiplier)` for those that have one.
#[tracing::instrument(skip(pool), fields(products = product_ids.len()))]
pub async fn multipliers_for_products(pool: &PgPool, product_ids: &[i64]) -> Result<Vec<(i64, Decimal)>> {
    Ok(sqlx::query_as(concat!(
        "SELECT id, multiplier FROM (SELECT p.id, ",
        market_multiplier_of!("p"),
        " AS multiplier FROM products p WHERE p.id = ANY($1)) s WHERE multiplier IS NOT NULL"
    ))
    .bind(product_ids)
    .fetch_all(pool)
    .await?)
}

/// Records the latest signal for a scope (`product:{id}` or `category:{name}`).
pub async fn set_multiplier(pool: &PgPool, scope: &str, multiplier: Decimal, source: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO market_multipliers (scope, multiplier, source) VALUES ($1, $2, $3)
         ON CONFLICT (scope) DO UPDATE SET multiplier = EXCLUDED.multiplier, source = EXCLUDED.source,
                                           updated_at = now()",
    )
    .bind(scope)
    .bind(multiplier)
    .bind(source)
    .execute(pool)
    .await?;
    Ok(())
}
