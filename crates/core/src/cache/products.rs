//! What a product change does to the cache: after a commit (an update, a sale, stock given back) the
//! post-sale script refreshes the cached rows and tombstones the pricing states (one call per id range, all
//! at once) while a pipeline counts the orders sold; a market signal drops pricing states; a delete
//! tombstones everything of the product.

use std::time::Duration;

use futures::future::try_join_all;

use super::{
    demand,
    keys::{group_by_tag, Keys},
    scripts::ScriptCall,
    Cache,
};
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
    /// of each (0: not a sale) for the demand multiplier, all at once. Best effort: a Redis
    /// failure is logged, and the versioned entries still refuse anything older than what PostgreSQL
    /// committed.
    #[tracing::instrument(name = "cache products changed", skip_all, fields(db.system.name = "redis"))]
    pub async fn products_changed(&self, products: &[(&Product, u32)], change: &CacheLifetimes) {
        let calls = products_changed_calls(&self.keys, products, change);
        let refreshed = try_join_all(calls.iter().map(|call| async move {
            call.invoke::<i32>(&self.products_changed, &mut self.conn().await?)
                .await
                .map_err(crate::Error::from)
        }));
        let sold: Vec<(i64, u32)> = products.iter().map(|(product, orders)| (product.id, *orders)).collect();
        let counting =
            demand::count_sales(&self.keys, &sold, change.demand_window_minutes, demand::current_minute());
        let counted = async {
            let Some(pipe) = counting else { return Ok(()) };
            let () = pipe.query_async(&mut self.conn().await?).await?;
            Ok::<_, crate::Error>(())
        };
        let (refreshed, counted) = tokio::join!(refreshed, counted);
        if let Err(e) = refreshed.map(drop).and(counted) {
            let ids: Vec<i64> = products.iter().map(|(p, _)| p.id).collect();
            tracing::warn!(?ids, error = %e, "could not refresh the cached products");
        }
    }

    /// Drops the pricing states of these products (a market signal changed them), so the next quote
    /// recomputes them. One `UNLINK` per id range, at once.
    #[tracing::instrument(name = "cache forget pricing", skip_all, fields(db.system.name = "redis"))]
    pub async fn forget_pricing(&self, product_ids: &[i64]) -> Result<()> {
        try_join_all(forget_pricing_commands(&self.keys, product_ids).iter().map(|unlink| async move {
            let _: u64 = unlink.query_async(&mut self.conn().await?).await?;
            Ok::<_, crate::Error>(())
        }))
        .await?;
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

/// The post-sale script's calls (`PRODUCTS_CHANGED`), one per id range.
pub(super) fn products_changed_calls(
    keys: &Keys,
    products: &[(&Product, u32)],
    change: &CacheLifetimes,
) -> Vec<ScriptCall> {
    group_by_tag(products.iter(), |(product, _)| product.id)
        .into_iter()
        .map(|group| {
            let mut call = ScriptCall::default();
            for (product, _) in &group {
                call.key(keys.product(product.id)).key(keys.price(product.id));
            }
            call.arg(change.product_ttl.as_millis() as u64).arg(change.price_ttl.as_millis() as u64);
            for (product, _) in group {
                let json = serde_json::to_string(product).expect("products serialize");
                call.arg(product.version).arg(json);
            }
            call
        })
        .collect()
}

/// `UNLINK` of the pricing states, one command per id range.
pub(super) fn forget_pricing_commands(keys: &Keys, product_ids: &[i64]) -> Vec<redis::Cmd> {
    group_by_tag(product_ids.iter().copied(), |id| *id)
        .into_iter()
        .map(|ids| {
            let mut unlink = redis::cmd("UNLINK");
            unlink.arg(ids.iter().map(|id| keys.price(*id)).collect::<Vec<_>>());
            unlink
        })
        .collect()
}
