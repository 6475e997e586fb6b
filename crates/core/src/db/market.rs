//! The `market_multipliers` table: the latest market signal per product or category.

use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::Result;

/// The multiplier for one product: its own signal, else its category's, else `None`.
#[tracing::instrument(skip(pool))]
pub async fn multiplier_for_product(pool: &PgPool, product_id: i64) -> Result<Option<Decimal>> {
    Ok(sqlx::query_scalar(
        "SELECT m.multiplier FROM products p
         JOIN market_multipliers m ON m.scope IN ('product:' || p.id, 'category:' || p.category)
         WHERE p.id = $1
         ORDER BY m.scope LIKE 'product:%' DESC LIMIT 1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await?)
}

/// Multipliers for a batch of products: `(product_id, multiplier)` for those that have one.
pub async fn multipliers_for_products(pool: &PgPool, product_ids: &[i64]) -> Result<Vec<(i64, Decimal)>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (p.id) p.id, m.multiplier FROM products p
         JOIN market_multipliers m ON m.scope IN ('product:' || p.id, 'category:' || p.category)
         WHERE p.id = ANY($1)
         ORDER BY p.id, m.scope LIKE 'product:%' DESC",
    )
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
