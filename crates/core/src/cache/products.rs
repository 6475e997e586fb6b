//! What a product change does to the cache: after a commit (an update, a sale, stock given back) the
//! post-sale script refreshes the cached rows, tombstones the pricing states and counts the orders sold, in
//! one round trip; a market signal drops pricing states; a delete tombstones everything of the product.

use std::time::Duration;

use super::{demand, Cache};
use crate::{domain::Product, Result};

/// How long what `products_changed` writes lives: cached products, pricing states, demand counters.
#[derive(Debug, Clone, Copy)]
pub struct CacheLifetimes {
    pub product_ttl: Duration,
    pub price_ttl: Duration,
    pub demand_window_minutes: u32,
}

impl CacheLifetimes {
    pub fn new(settings: &crate::Settings) -> Self {
        Self {
            product_ttl: settings.cache_ttl,
            price_ttl: settings.price_cache_ttl,
            demand_window_minutes: settings.demand_window_minutes,
        }
    }
}

impl Cache {
    /// After a commit that changed products (an update, a sale, stock given back): stores their new rows
    /// for `/cached`, invalidates their pricing states as of the new versions and counts the orders sold
    /// of each (0: not a sale) for the demand multiplier; one script, one round trip. Best effort: a Redis
    /// failure is logged, and the versioned entries still refuse anything older than what PostgreSQL
    /// committed.
    #[tracing::instrument(name = "cache products changed", skip_all, fields(db.system.name = "redis"))]
    pub async fn products_changed(&self, products: &[(&Product, u32)], change: &CacheLifetimes) {
        if products.is_empty() {
            return;
        }
        let mut invocation = self.products_changed.prepare_invoke();
        for (product, _) in products {
            invocation.key(self.keys.product(product.id)).key(self.keys.price(product.id));
        }
        invocation
            .key(self.keys.demand_bucket(demand::current_minute()))
            .arg(change.product_ttl.as_millis() as u64)
            .arg(change.price_ttl.as_millis() as u64)
            .arg((u64::from(change.demand_window_minutes) + 2) * 60);
        for (product, orders) in products {
            let json = serde_json::to_string(product).expect("products serialize");
            invocation.arg(product.version).arg(json).arg(product.id).arg(*orders);
        }
        let result: Result<i32> = match self.conn().await {
            Ok(mut conn) => invocation.invoke_async(&mut conn).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let ids: Vec<i64> = products.iter().map(|(p, _)| p.id).collect();
            tracing::warn!(?ids, error = %e, "could not refresh the cached products");
        }
    }

    /// Drops the pricing states of these products (a market signal changed them), so the next quote
    /// recomputes them. One pipeline.
    #[tracing::instrument(name = "cache forget pricing", skip_all, fields(db.system.name = "redis"))]
    pub async fn forget_pricing(&self, product_ids: &[i64]) -> Result<()> {
        if product_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for chunk in product_ids.chunks(1_000) {
            pipe.cmd("UNLINK").arg(chunk.iter().map(|id| self.keys.price(*id)).collect::<Vec<_>>()).ignore();
        }
        let () = pipe.query_async(&mut self.conn().await?).await?;
        Ok(())
    }

    /// After a product was deleted: tombstones of the highest version for its row and its pricing state (a
    /// reader that fetched it just before the delete cannot write it back), and its SKU forgotten (the SKU
    /// may be reused by a new product).
    pub async fn product_deleted(&self, product: &Product, ttl: Duration) {
        let row = self.invalidate(&self.keys.product(product.id), i64::MAX, ttl).await;
        let price = self.invalidate(&self.keys.price(product.id), i64::MAX, ttl).await;
        let sku = self.delete(&self.keys.sku(&product.sku)).await;
        if let Err(e) = row.and(price).and(sku) {
            tracing::warn!(product_id = product.id, error = %e, "could not clear the deleted product's cache");
        }
    }
}
