//! Pricing states, cache-aside. A product's pricing state (`ProductPricing`, the same for every customer)
//! is read from Redis; on a miss it is computed once per product at a time (single-flight: concurrent
//! misses wait for the one computation) and stored with a jittered TTL. `compute_states` is the one place
//! that turns product rows into pricing states: quote misses, product views and the bulk recalculation all
//! call it. Quotes (`quotes.rs`) and orders apply the per-shopper part on top.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use chrono::Utc;
use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::model::{self, PricingConfig, PricingInputs, ProductPricing, Shopper};
use crate::{
    cache::{demand, Cache, Lookup},
    db::{market, products, products::ProductWithMarket},
    domain::{Product, ProductRef},
    prometheus::names,
    Error, Result, Settings,
};

/// How long a SKU -> id mapping is cached (a SKU never changes; the row is checked on every use).
const SKU_CACHE_TTL_SECS: u64 = 3_600;

/// Where a quote's pricing state came from (its `source`): not what the price is based on (an order
/// line's `price_source`, `PriceBasis`). Named `PriceSource` in the API description, as it always was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = PriceSource)]
pub enum StateSource {
    /// Computed on this request.
    Database,
    /// Served from Redis.
    Cache,
}

/// Why a shared computation failed; clonable, so every waiter gets it.
#[derive(Debug, Clone)]
enum ComputeError {
    NotFound(String),
    Unavailable(String),
}

impl From<ComputeError> for Error {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::NotFound(m) => Error::NotFound(m),
            ComputeError::Unavailable(m) => Error::Unavailable(m),
        }
    }
}

type Computation = Shared<BoxFuture<'static, Result<ProductPricing, ComputeError>>>;

pub struct PricingService {
    pub(super) db: PgPool,
    pub(super) cache: Cache,
    pub config: PricingConfig,
    pub(super) settings: Arc<Settings>,
    /// Computations under way, by product and the invalidation version their callers saw.
    inflight: Mutex<HashMap<(i64, i64), Computation>>,
    /// Identifies the pricing rules (configuration and code version) quotes are made under.
    pub(super) model_fingerprint: u64,
    pub(super) quote_signer: std::sync::OnceLock<super::quote_token::QuoteSigner>,
    computations: AtomicU64,
}

impl PricingService {
    pub fn new(db: PgPool, cache: Cache, settings: Arc<Settings>) -> anyhow::Result<Arc<Self>> {
        let config = PricingConfig::from_settings(&settings)?;
        let model_fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (format!("{config:?}"), include_str!("model.rs")).hash(&mut hasher);
            hasher.finish()
        };
        Ok(Arc::new(Self {
            config,
            model_fingerprint,
            db,
            cache,
            settings,
            inflight: Mutex::default(),
            quote_signer: std::sync::OnceLock::new(),
            computations: AtomicU64::new(0),
        }))
    }

    /// Pricing states computed by this process on a miss (waiters are not counted).
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }

    /// The shopper for a request, with the default location when none is given.
    pub fn shopper(&self, location: Option<&str>, is_member: bool) -> Shopper {
        let location = location
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_uppercase)
            .unwrap_or_else(|| self.config.default_location.clone());
        Shopper { location, is_member }
    }

    /// The shopper product views price for: default location, not a member.
    pub fn default_shopper(&self) -> Shopper {
        self.shopper(None, false)
    }

    /// The product id for an id or a SKU (SKU lookups are cached: a SKU never changes).
    pub async fn resolve(&self, product: &ProductRef) -> Result<i64> {
        let sku = match product {
            ProductRef::Id(id) => return Ok(*id),
            ProductRef::Sku(sku) => sku,
        };
        let key = self.cache.keys.sku(sku);
        if let Ok(mut conn) = self.cache.conn().await {
            if let Ok(Some(id)) = conn.get::<_, Option<i64>>(&key).await {
                // A deleted product's SKU may have been reused: trust the mapping only while the row exists.
                if products::find(&self.db, id).await?.is_some_and(|p| &p.sku == sku) {
                    return Ok(id);
                }
            }
        }
        let product = products::find_by_sku(&self.db, sku)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Product {sku} not found")))?;
        if let Ok(mut conn) = self.cache.conn().await {
            let _: redis::RedisResult<()> = conn.set_ex(&key, product.id, SKU_CACHE_TTL_SECS).await;
        }
        Ok(product.id)
    }

    /// The product's pricing state: from the cache, or computed (once, however many ask at the same time).
    /// Counts the cache read as a hit or a miss.
    pub async fn pricing(self: &Arc<Self>, product_id: i64) -> Result<(ProductPricing, StateSource)> {
        let key = self.cache.keys.price(product_id);
        let lookup = self.cache.lookup::<ProductPricing>(&key).await.unwrap_or_else(|e| {
            tracing::warn!(product_id, error = %e, "price cache unavailable; computing");
            record_lookup(LookupResult::Error);
            Lookup::Missing
        });
        self.record_lookup(matches!(lookup, Lookup::Hit(_)));
        self.pricing_after(product_id, lookup).await
    }

    /// The same, given what a cache read already found (callers that read it with other keys in one go,
    /// and count their read themselves).
    pub async fn pricing_after(
        self: &Arc<Self>,
        product_id: i64,
        lookup: Lookup<ProductPricing>,
    ) -> Result<(ProductPricing, StateSource)> {
        // Concurrent misses share one computation, but only misses that saw the same invalidation: a
        // request that arrives after a newer change must not join a computation that may predate it.
        let seen = match lookup {
            Lookup::Hit(pricing) => return Ok((pricing, StateSource::Cache)),
            Lookup::Invalidated(version) => version,
            Lookup::Missing => 0,
        };
        let flight = (product_id, seen);
        let joinable = self.inflight.lock().expect("inflight map").get(&flight).cloned();
        if let Some(computation) = joinable {
            return Ok((computation.await?, StateSource::Database));
        }
        // No computation under way: one may have just finished, storing its result after our read. Read
        // again (its result is in the cache before it leaves the map), so a late miss does not compute twice.
        let key = self.cache.keys.price(product_id);
        if let Ok(Lookup::Hit(pricing)) = self.cache.lookup::<ProductPricing>(&key).await {
            return Ok((pricing, StateSource::Cache));
        }
        let computation = {
            let mut inflight = self.inflight.lock().expect("inflight map");
            inflight.entry(flight).or_insert_with(|| {
            let this = Arc::clone(self);
            // Its own task: it runs to the end even if every request waiting for it goes away (a client
            // that disconnects drops its handler), so it never leaves a stale computation in the map.
            let task = tokio::spawn(async move {
                let result = this.compute_and_store(product_id).await.map_err(|e| match e {
                    Error::NotFound(m) => ComputeError::NotFound(m),
                    other => ComputeError::Unavailable(other.to_string()),
                });
                // Done: later misses (after the cache entry expires) compute afresh.
                this.inflight.lock().expect("inflight map").remove(&flight);
                result
            });
            async move { task.await.unwrap_or_else(|e| Err(ComputeError::Unavailable(e.to_string()))) }
                .boxed()
                .shared()
            })
            .clone()
        };
        Ok((computation.await?, StateSource::Database))
    }

    /// Computes one product's pricing state and stores it, unless a newer version is already there.
    pub async fn compute_and_store(&self, product_id: i64) -> Result<ProductPricing> {
        self.computations.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::PRICE_COMPUTATIONS).increment(1);
        // The row, its demand and its market signal, all at once: a miss costs one round trip of each.
        let ids = [product_id];
        let (product, recent, markets) = tokio::join!(
            products::get(&self.db, product_id),
            self.recent_orders(&ids),
            market::multipliers_for_products(&self.db, &ids),
        );
        let pricing = self.states_from(vec![product?], recent, markets?).remove(0);
        let ttl = Cache::jittered(self.settings.price_cache_ttl);
        if let Err(e) =
            self.cache.set_versioned(&self.cache.keys.price(product_id), pricing.version, &pricing, ttl).await
        {
            tracing::warn!(product_id, error = %e, "could not cache the pricing state");
        }
        Ok(pricing)
    }

    /// Pricing states for product rows, in the order given: their demand counters (Redis) and market
    /// signals (PostgreSQL) read concurrently, one query each for the whole batch. Demand is advisory:
    /// without Redis it counts as none.
    pub async fn compute_states(&self, products: Vec<Product>) -> Result<Vec<ProductPricing>> {
        let ids: Vec<i64> = products.iter().map(|p| p.id).collect();
        let (recent, markets) =
            tokio::join!(self.recent_orders(&ids), market::multipliers_for_products(&self.db, &ids));
        Ok(self.states_from(products, recent, markets?))
    }

    /// The model applied to product rows, their demand (in the same order) and their market signals.
    fn states_from(
        &self,
        products: Vec<Product>,
        recent: Vec<u64>,
        markets: Vec<(i64, Decimal)>,
    ) -> Vec<ProductPricing> {
        let markets: HashMap<i64, Decimal> = markets.into_iter().collect();
        let rows = products
            .into_iter()
            .map(|product| ProductWithMarket {
                market_multiplier: markets.get(&product.id).copied(),
                product,
            })
            .collect();
        self.states_for(rows, &recent)
    }

    /// The model applied to product rows with their market signals and their demand (in the same order):
    /// computation only, no I/O, so a bulk run can do it off the async threads.
    pub fn states_for(&self, rows: Vec<ProductWithMarket>, recent: &[u64]) -> Vec<ProductPricing> {
        let now = Utc::now();
        rows.into_iter()
            .zip(recent)
            .map(|(row, &recent_orders)| {
                let inputs = PricingInputs::from_product(row.product, recent_orders, row.market_multiplier);
                model::product_pricing(&inputs, &self.config, now)
            })
            .collect()
    }

    /// Counts a pricing-state read: this process's cache statistics and the `price_cache_requests_total`
    /// metric.
    pub(super) fn record_lookup(&self, hit: bool) {
        self.cache.count_lookup(hit);
        record_lookup(if hit { LookupResult::Hit } else { LookupResult::Miss });
    }

    /// Orders in the demand window for each product; zeros when the counters cannot be read.
    pub async fn recent_orders(&self, product_ids: &[i64]) -> Vec<u64> {
        demand::recent_orders(&self.cache, product_ids, self.settings.demand_window_minutes)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "demand counters unavailable"))
            .unwrap_or_else(|_| vec![0; product_ids.len()])
    }

    /// Orders in the demand window of every product that has any (for a walk over many products): `None`
    /// when the window holds more than `most` counters (ask per batch with `recent_orders` then); empty
    /// when the counters cannot be read.
    pub async fn all_recent_orders(&self, most: usize) -> Option<HashMap<i64, u64>> {
        demand::all_recent_orders(&self.cache, self.settings.demand_window_minutes, most)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "demand counters unavailable"))
            .unwrap_or_else(|_| Some(HashMap::new()))
    }

    /// Stores pricing states in one pipeline (versioned: a newer entry is never replaced). Returns how many
    /// were written.
    pub async fn store_states(&self, states: &[ProductPricing]) -> Result<u64> {
        let entries: Vec<(String, i64, String)> = states
            .iter()
            .map(|p| {
                let json = serde_json::to_string(p).expect("pricing serializes");
                (self.cache.keys.price(p.product_id), p.version, json)
            })
            .collect();
        let ttl = self.settings.price_cache_ttl;
        self.cache.set_versioned_many(&entries, || Cache::jittered(ttl)).await
    }

    /// The final price of a product for a shopper, from its pricing state.
    pub fn price_for(&self, pricing: &ProductPricing, shopper: &Shopper) -> Decimal {
        model::quote(pricing, shopper, &self.config).final_price
    }

    /// The current price of a product for a shopper, without storing a quote.
    pub async fn current_price(self: &Arc<Self>, product_id: i64, shopper: &Shopper) -> Result<Decimal> {
        let (pricing, _) = self.pricing(product_id).await?;
        Ok(self.price_for(&pricing, shopper))
    }

    /// What the default shopper pays for each product now (the `current_price` of product views): cached
    /// pricing states read in one round trip, the missing ones computed in one batch and stored.
    pub async fn current_prices(&self, products: &[Product]) -> Result<Vec<Decimal>> {
        let keys: Vec<String> = products.iter().map(|p| self.cache.keys.price(p.id)).collect();
        let raw = self.cache.get_many(&keys).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "price cache unavailable; computing");
            vec![None; keys.len()]
        });
        let mut states: Vec<Option<ProductPricing>> = Vec::with_capacity(products.len());
        for (key, raw) in keys.iter().zip(raw) {
            let hit = match self.cache.decode_entry::<ProductPricing>(key, raw).await {
                Ok(Lookup::Hit(pricing)) => Some(pricing),
                _ => None,
            };
            self.record_lookup(hit.is_some());
            states.push(hit);
        }
        let missing: Vec<Product> =
            products.iter().zip(&states).filter(|(_, s)| s.is_none()).map(|(p, _)| p.clone()).collect();
        let mut computed = self.compute_states(missing).await?.into_iter();
        if computed.len() > 0 {
            if let Err(e) = self.store_states(computed.as_slice()).await {
                tracing::warn!(error = %e, "could not cache the pricing states");
            }
        }
        let shopper = self.default_shopper();
        Ok(states
            .into_iter()
            .map(|state| {
                let pricing = state.or_else(|| computed.next()).expect("one state per product");
                self.price_for(&pricing, &shopper)
            })
            .collect())
    }
}

#[derive(Debug, Clone, Copy)]
enum LookupResult {
    Hit,
    Miss,
    Error,
}

fn record_lookup(result: LookupResult) {
    let result = match result {
        LookupResult::Hit => "hit",
        LookupResult::Miss => "miss",
        LookupResult::Error => "error",
    };
    metrics::counter!(names::PRICE_CACHE_REQUESTS, "result" => result).increment(1);
}
