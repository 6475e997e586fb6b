//! Price quotes, cache-aside. A product's pricing state (`ProductPricing`, the same for every customer) is
//! read from Redis; on a miss it is computed once per product at a time (single-flight: concurrent misses
//! wait for the one computation), its lookups run concurrently, and it is stored with a jittered TTL. The
//! per-request part (location, membership) is applied on every quote, so no customer ever gets another's
//! price. Each quote is stored until it expires so an order can honour it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use chrono::{DateTime, Utc};
use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::{
    demand,
    model::{self, Adjustment, PricingConfig, PricingInputs, ProductPricing, Shopper},
};
use crate::{
    cache::{Cache, Lookup},
    db::{market, products},
    domain::ProductRef,
    Error, Result, Settings,
};

/// Where a quote's pricing state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// Computed on this request.
    Database,
    /// Served from Redis.
    Cache,
}

/// A price quote, as `POST /api/v1/price` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct PriceDetail {
    pub product_id: i64,
    pub sku: String,
    pub final_price: Decimal,
    pub base_price: Decimal,
    pub discount_rate: Decimal,
    pub currency: String,
    pub source: PriceSource,
    pub user_location: String,
    pub is_prime_member: bool,
    pub breakdown: Vec<Adjustment>,
    pub quote_id: String,
    pub valid_until: DateTime<Utc>,
}

/// A quote as an order sees it: who it was for, which product, at what price, until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredQuote {
    pub quote_id: String,
    pub product_id: i64,
    pub user_id: Option<String>,
    pub user_location: String,
    pub is_prime_member: bool,
    pub final_price: Decimal,
    pub valid_until: DateTime<Utc>,
}

/// What is stored for a quote: this header, a newline, and the versioned pricing state it was priced from
/// (copied by Redis itself on a cache hit, so a quote costs one round trip). The price is recomputed from
/// them; `model` fingerprints the pricing configuration and the model's source, so a quote made under other
/// rules is not honoured rather than honoured at a different price.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuoteHeader {
    quote_id: String,
    product_id: i64,
    user_id: Option<String>,
    user_location: String,
    is_prime_member: bool,
    valid_until: DateTime<Utc>,
    model: u64,
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
    db: PgPool,
    cache: Cache,
    pub config: PricingConfig,
    settings: Arc<Settings>,
    /// Computations under way, by product and the invalidation version their callers saw.
    inflight: Mutex<HashMap<(i64, i64), Computation>>,
    /// Identifies the pricing rules (configuration and code version) quotes are made under.
    model_fingerprint: u64,
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
            computations: AtomicU64::new(0),
        }))
    }

    /// Pricing states computed by this process (misses that did the work; waiters are not counted).
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
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
            let _: redis::RedisResult<()> = conn.set_ex(&key, product.id, 3_600).await;
        }
        Ok(product.id)
    }

    /// The product's pricing state: from the cache, or computed (once, however many ask at the same time).
    pub async fn pricing(self: &Arc<Self>, product_id: i64) -> Result<(ProductPricing, PriceSource)> {
        let key = self.cache.keys.price(product_id);
        // Concurrent misses share one computation, but only misses that saw the same invalidation: a
        // request that arrives after a newer change must not join a computation that may predate it.
        let seen = match self.cache.lookup::<ProductPricing>(&key).await {
            Ok(Lookup::Hit(pricing)) => {
                self.cache.count_lookup(true);
                return Ok((pricing, PriceSource::Cache));
            }
            Ok(Lookup::Invalidated(version)) => version,
            Ok(Lookup::Missing) => 0,
            Err(e) => {
                tracing::warn!(product_id, error = %e, "price cache unavailable; computing");
                0
            }
        };
        self.cache.count_lookup(false);
        let flight = (product_id, seen);
        let joinable = self.inflight.lock().expect("inflight map").get(&flight).cloned();
        if let Some(computation) = joinable {
            return Ok((computation.await?, PriceSource::Database));
        }
        // No computation under way: one may have just finished, storing its result after our read. Read
        // again (its result is in the cache before it leaves the map), so a late miss does not compute twice.
        if let Ok(Lookup::Hit(pricing)) = self.cache.lookup::<ProductPricing>(&key).await {
            return Ok((pricing, PriceSource::Cache));
        }
        let computation = {
            let mut inflight = self.inflight.lock().expect("inflight map");
            inflight
                .entry(flight)
                .or_insert_with(|| {
                    let this = Arc::clone(self);
                    // Its own task: it runs to the end even if every request waiting for it goes away
                    // (a client that disconnects drops its handler), so it never holds a connection
                    // half-way or leaves a stale computation in the map.
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
        Ok((computation.await?, PriceSource::Database))
    }

    /// Computes a product's pricing state from PostgreSQL and the demand counters (the lookups run
    /// concurrently) and stores it in the cache, unless a newer version is already there.
    pub async fn compute_and_store(&self, product_id: i64) -> Result<ProductPricing> {
        self.computations.fetch_add(1, Ordering::Relaxed);
        let window = self.settings.demand_window_minutes;
        let demand = async {
            // Demand counters are advisory: without Redis the price is computed with no demand surcharge.
            Ok::<_, Error>(
                demand::recent_orders(&self.cache, &[product_id], window)
                    .await
                    .inspect_err(|e| tracing::warn!(error = %e, "demand counters unavailable"))
                    .map(|v| v[0])
                    .unwrap_or(0),
            )
        };
        let (product, recent_orders, market) = tokio::try_join!(
            products::get(&self.db, product_id),
            demand,
            market::multiplier_for_product(&self.db, product_id),
        )?;
        let pricing = model::product_pricing(
            &PricingInputs {
                product_id,
                sku: product.sku,
                version: product.version,
                base_price: product.price,
                stock: product.stock,
                recent_orders,
                market_multiplier: market,
            },
            &self.config,
            Utc::now(),
        );
        let ttl = Cache::jittered(self.settings.price_cache_ttl);
        if let Err(e) =
            self.cache.set_versioned(&self.cache.keys.price(product_id), pricing.version, &pricing, ttl).await
        {
            tracing::warn!(product_id, error = %e, "could not cache the pricing state");
        }
        Ok(pricing)
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

    /// Quotes a price for one shopper and stores the quote so an order can honour it until `valid_until`.
    /// On a cache hit, reading the pricing state and storing the quote are one round trip.
    pub async fn quote(
        self: &Arc<Self>,
        product: &ProductRef,
        shopper: &Shopper,
        user_id: Option<&str>,
    ) -> Result<PriceDetail> {
        let product_id = self.resolve(product).await?;
        let header = QuoteHeader {
            quote_id: uuid::Uuid::new_v4().simple().to_string(),
            product_id,
            user_id: user_id.map(str::to_string),
            user_location: shopper.location.clone(),
            is_prime_member: shopper.is_member,
            valid_until: Utc::now() + self.settings.quote_ttl,
            model: self.model_fingerprint,
        };
        let header_json = serde_json::to_string(&header).expect("quote header serializes");
        let quote_key = self.cache.keys.quote(&header.quote_id);
        let ttl = self.settings.quote_ttl;
        let price_key = self.cache.keys.price(product_id);
        let hit = match self
            .cache
            .get_and_copy::<ProductPricing>(&price_key, &quote_key, &header_json, ttl)
            .await
        {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!(product_id, error = %e, "price cache unavailable; computing");
                None
            }
        };
        let (pricing, source) = match hit {
            Some(pricing) => {
                self.cache.count_lookup(true);
                (pricing, PriceSource::Cache)
            }
            None => {
                let (pricing, source) = self.pricing(product_id).await?;
                // Best effort: without Redis the price is still shown; an order naming this quote is then
                // refused with the current price (409), never charged something it cannot check.
                let state = serde_json::to_string(&pricing).expect("pricing serializes");
                let stored = format!("{header_json}\n{}|{state}", pricing.version);
                let result: redis::RedisResult<()> = match self.cache.conn().await {
                    Ok(mut conn) => conn.set_ex(&quote_key, stored, ttl.as_secs().max(1)).await,
                    Err(_) => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!(product_id, error = %e, "could not store the quote");
                }
                (pricing, source)
            }
        };
        let price = model::quote(&pricing, shopper, &self.config);
        Ok(PriceDetail {
            product_id,
            sku: pricing.sku,
            final_price: price.final_price,
            base_price: price.base_price,
            discount_rate: price.discount_rate,
            currency: self.settings.currency.clone(),
            source,
            user_location: header.user_location,
            is_prime_member: shopper.is_member,
            breakdown: price.breakdown,
            quote_id: header.quote_id,
            valid_until: header.valid_until,
        })
    }

    /// The current price of a product for a shopper, without storing a quote (orders without one pay this).
    pub async fn current_price(self: &Arc<Self>, product_id: i64, shopper: &Shopper) -> Result<Decimal> {
        let (pricing, _) = self.pricing(product_id).await?;
        Ok(model::quote(&pricing, shopper, &self.config).final_price)
    }

    /// The price function an order uses inside its transaction: the model applied to the locked product row
    /// (base price, stock), its market multiplier and the demand counted before the transaction, for this
    /// shopper. Demand is advisory: without Redis it counts as none.
    pub async fn order_pricer(
        &self,
        product_ids: &[i64],
        shopper: Shopper,
    ) -> impl Fn(&crate::domain::Product, Option<Decimal>) -> Decimal + use<'_> {
        let window = self.settings.demand_window_minutes;
        let demand = demand::recent_orders(&self.cache, product_ids, window)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "demand counters unavailable"))
            .unwrap_or_else(|_| vec![0; product_ids.len()]);
        let demand: HashMap<i64, u64> = product_ids.iter().copied().zip(demand).collect();
        let now = Utc::now();
        move |product, market_multiplier| {
            let inputs = PricingInputs {
                product_id: product.id,
                sku: product.sku.clone(),
                version: product.version,
                base_price: product.price,
                stock: product.stock,
                recent_orders: demand.get(&product.id).copied().unwrap_or(0),
                market_multiplier,
            };
            let pricing = model::product_pricing(&inputs, &self.config, now);
            model::quote(&pricing, &shopper, &self.config).final_price
        }
    }

    /// A stored quote, or `None` once it has expired (or never existed).
    pub async fn stored_quote(&self, quote_id: &str) -> Result<Option<StoredQuote>> {
        let raw: Option<String> = self.cache.conn().await?.get(self.cache.keys.quote(quote_id)).await?;
        let Some((header, state)) = raw.as_deref().and_then(|r| r.split_once('\n')) else { return Ok(None) };
        let (Ok(header), Some(pricing)) = (
            serde_json::from_str::<QuoteHeader>(header),
            crate::cache::decode_versioned::<ProductPricing>(state),
        ) else {
            return Ok(None);
        };
        if header.valid_until <= Utc::now() || header.model != self.model_fingerprint {
            return Ok(None);
        }
        let shopper = Shopper { location: header.user_location.clone(), is_member: header.is_prime_member };
        Ok(Some(StoredQuote {
            final_price: model::quote(&pricing, &shopper, &self.config).final_price,
            quote_id: header.quote_id,
            product_id: header.product_id,
            user_id: header.user_id,
            user_location: header.user_location,
            is_prime_member: header.is_prime_member,
            valid_until: header.valid_until,
        }))
    }
}
