//! The `market_multipliers` table: the latest market signal per product or category.

use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Transaction};

use crate::Result;

/// Multipliers for a batch of products: `(product_id, multiplier)` for those that have one.
#[tracing::instrument(skip(pool), fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "products", products = product_ids.len()))]
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

/// Records the latest signal for a scope (`product_scope` or `category_scope`).
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

/// Inside a transaction: records the latest signal for each scope, in the order given (when one scope
/// appears twice, the later signal wins). Scopes are written in sorted order so concurrent writers never
/// deadlock.
pub async fn set_multipliers(
    tx: &mut Transaction<'_, Postgres>,
    signals: &[(String, Decimal, String)],
) -> Result<()> {
    if signals.is_empty() {
        return Ok(());
    }
    let scopes: Vec<&str> = signals.iter().map(|s| s.0.as_str()).collect();
    let multipliers: Vec<Decimal> = signals.iter().map(|s| s.1).collect();
    let sources: Vec<&str> = signals.iter().map(|s| s.2.as_str()).collect();
    sqlx::query(
        "INSERT INTO market_multipliers (scope, multiplier, source)
         SELECT scope, multiplier, source FROM (
             SELECT DISTINCT ON (scope) scope, multiplier, source
             FROM unnest($1::text[], $2::numeric[], $3::text[]) WITH ORDINALITY AS v(scope, multiplier, source, n)
             ORDER BY scope, n DESC) latest
         ORDER BY scope
         ON CONFLICT (scope) DO UPDATE SET multiplier = EXCLUDED.multiplier, source = EXCLUDED.source,
                                           updated_at = now()",
    )
    .bind(&scopes)
    .bind(&multipliers)
    .bind(&sources)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The scope key of a product's signal and of a category's (`product_scope_prefix!`: the same key
/// `market_multiplier_of!` looks up).
pub fn product_scope(product_id: i64) -> String {
    format!(concat!(product_scope_prefix!(), "{}"), product_id)
}

pub fn category_scope(category: &str) -> String {
    format!(concat!(category_scope_prefix!(), "{}"), category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_are_the_prefix_and_the_id_or_name() {
        assert_eq!(product_scope(42), "product:42");
        assert_eq!(category_scope("toys"), "category:toys");
        // The SQL side builds the same keys from the same prefixes.
        let sql = market_multiplier_of!("p");
        assert!(sql.contains("m.scope = 'product:' || p.id"), "{sql}");
        assert!(sql.contains("m.scope = 'category:' || p.category"), "{sql}");
    }
}
