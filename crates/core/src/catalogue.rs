//! The catalogue use case, like `orders` for sales: reading products (from PostgreSQL, or cache-aside
//! through Redis with PostgreSQL behind it) and writing them with what a write does to the cache, each
//! product with its current price. The api parses and answers; `db::products` only runs SQL; the cache
//! entries themselves belong to `cache`.

use std::sync::Arc;

use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::{
    cache::{Cache, CacheLifetimes, Lookup},
    db::products,
    domain::{NewProduct, Page, Product, ProductChanges},
    pricing::{PricingService, ProductPricing},
    Result, Settings,
};

/// A product and what the default shopper (default location, not a member) pays for it now, from the
/// same pricing state a quote uses.
#[derive(Debug, Clone)]
pub struct PricedProduct {
    pub product: Product,
    pub current_price: Decimal,
}

/// Whether a cache-aside read found the product's row in Redis. Counted, and told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

pub struct Catalogue {
    db: PgPool,
    cache: Cache,
    pricing: Arc<PricingService>,
    settings: Arc<Settings>,
}

impl Catalogue {
    pub fn new(db: PgPool, cache: Cache, pricing: Arc<PricingService>, settings: Arc<Settings>) -> Arc<Self> {
        Arc::new(Self { db, cache, pricing, settings })
    }

    /// A page of products, oldest first (by id), optionally those whose name or SKU matches `search`.
    pub async fn list(&self, search: Option<&str>, page: i64, page_size: i64) -> Result<Page<PricedProduct>> {
        let page = products::list(&self.db, search, page, page_size).await?;
        let prices = self.pricing.current_prices(&page.items).await?;
        let items = page
            .items
            .into_iter()
            .zip(prices)
            .map(|(product, current_price)| PricedProduct { product, current_price });
        Ok(Page::new(items.collect(), page.total, page.page, page.page_size))
    }

    /// One product, read from PostgreSQL; its price from its pricing state (cached, or computed once).
    pub async fn get(&self, id: i64) -> Result<PricedProduct> {
        let product = products::get(&self.db, id).await?;
        let current_price = self.pricing.current_price(product.id, &self.pricing.default_shopper()).await?;
        Ok(PricedProduct { product, current_price })
    }

    /// Cache-aside: the cached row and its pricing state read from Redis in one round trip; on a miss,
    /// PostgreSQL, then a versioned write so a slower reader can never put back a copy older than the one
    /// a writer just stored. Redis being down is a miss, served from PostgreSQL.
    pub async fn get_cached(&self, id: i64) -> Result<(PricedProduct, CacheOutcome)> {
        let (product_key, price_key) = (self.cache.keys.product(id), self.cache.keys.price(id));
        let (cached, pricing) = match self.cache.get_many(&[product_key.clone(), price_key.clone()]).await {
            Ok(mut raw) => {
                let (price_raw, product_raw) = (raw.pop().flatten(), raw.pop().flatten());
                (
                    self.cache.decode_entry::<Product>(&product_key, product_raw).await?,
                    self.cache.decode_entry::<ProductPricing>(&price_key, price_raw).await?,
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache read failed; serving from PostgreSQL");
                (Lookup::Missing, Lookup::Missing)
            }
        };
        let (product, outcome) = match cached {
            Lookup::Hit(product) => (product, CacheOutcome::Hit),
            Lookup::Invalidated(_) | Lookup::Missing => {
                let product = products::get(&self.db, id).await?;
                let ttl = self.settings.cache_ttl;
                if let Err(e) = self.cache.set_versioned(&product_key, product.version, &product, ttl).await {
                    tracing::warn!(product_id = id, error = %e, "could not cache the product");
                }
                (product, CacheOutcome::Miss)
            }
        };
        self.cache.count_lookup(outcome == CacheOutcome::Hit);
        let (pricing, _) = self.pricing.pricing_after(id, pricing).await?;
        let current_price = self.pricing.price_for(&pricing, &self.pricing.default_shopper());
        Ok((PricedProduct { product, current_price }, outcome))
    }

    /// Adds a product (already validated).
    pub async fn create(&self, new: &NewProduct) -> Result<PricedProduct> {
        let product = products::create(&self.db, new).await?;
        tracing::info!(product_id = product.id, sku = %product.sku, "product created");
        self.written(product).await
    }

    /// Changes a product, then refreshes its cached row and invalidates its pricing state, so no read
    /// returns anything older than the commit. (Sales and cancellations do this in `OrderService`.)
    pub async fn update(&self, id: i64, changes: &ProductChanges) -> Result<PricedProduct> {
        let product = products::update(&self.db, id, changes).await?;
        self.cache.products_changed(&[(&product, 0)], &CacheLifetimes::new(&self.settings)).await;
        tracing::info!(product_id = id, version = product.version, "product updated");
        self.written(product).await
    }

    /// Deletes a product that no order names, and tombstones what the cache holds of it for as long as
    /// either of its entries may live.
    pub async fn delete(&self, id: i64) -> Result<()> {
        let deleted = products::delete(&self.db, id).await?;
        let ttl = self.settings.cache_ttl.max(self.settings.price_cache_ttl);
        self.cache.product_deleted(&deleted, ttl).await;
        tracing::info!(product_id = id, "product deleted");
        Ok(())
    }

    /// A row just written, priced from a pricing state computed from that row (the cache is left to the
    /// next quote, which stores what it computes).
    async fn written(&self, product: Product) -> Result<PricedProduct> {
        let state = self.pricing.compute_states(vec![product.clone()]).await?.remove(0);
        let current_price = self.pricing.price_for(&state, &self.pricing.default_shopper());
        Ok(PricedProduct { product, current_price })
    }
}
