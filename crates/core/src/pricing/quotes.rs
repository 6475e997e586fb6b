//! Quotes: a price for one shopper that an order can honour until `valid_until`. This module owns the
//! stored quote's format, both ways: what is written (by Redis itself on a cache hit, by Rust on a miss)
//! and how an order reads it back.
//!
//! A stored quote is `{header json}\n{version}|{pricing state json}`: the header says who it is for and
//! until when; the pricing state is the one the quote was priced from. An order recomputes the price from
//! them, only under the same rules (`model` fingerprints the configuration and the model's source), so a
//! customer pays exactly what they were shown or is told the current price.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    model::{self, Adjustment, ProductPricing, Shopper},
    service::{PriceSource, PricingService},
};
use crate::{cache, domain::ProductRef, Result};

/// Between the header and the versioned pricing state (JSON never contains a raw newline).
const SEPARATOR: char = '\n';

/// Reads a versioned pricing state and, when it is live (not a tombstone), stores `ARGV[1]`, the separator
/// and the entry under `KEYS[2]` for `ARGV[2]` seconds, in the same round trip. Returns the entry.
const GET_AND_STORE_QUOTE: &str = r#"
local value = redis.call('GET', KEYS[1])
if not value then return false end
local sep = string.find(value, '|', 1, true)
if sep and string.sub(value, sep + 1) ~= 'null' then
    redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. value, 'EX', ARGV[2])
end
return value
"#;

/// A price quote, as `POST /api/v1/price` answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

impl QuoteHeader {
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("quote header serializes")
    }

    /// The stored form on a cache miss (on a hit the script above writes the same shape).
    fn stored_with(&self, pricing: &ProductPricing) -> String {
        let state = serde_json::to_string(pricing).expect("pricing serializes");
        format!("{}{SEPARATOR}{}", self.encode(), cache::encode_versioned(pricing.version, &state))
    }

    fn decode(raw: &str) -> Option<(Self, ProductPricing)> {
        let (header, state) = raw.split_once(SEPARATOR)?;
        Some((serde_json::from_str(header).ok()?, cache::decode_versioned(state)?))
    }
}

impl PricingService {
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
        let (pricing, source) = match self.read_and_store_quote(&header).await {
            Some(pricing) => {
                self.record_lookup(true);
                (pricing, PriceSource::Cache)
            }
            None => {
                let (pricing, source) = self.pricing(product_id).await?;
                self.store_quote(&header, &pricing).await;
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

    /// The cached pricing state, with the quote stored beside it by the same script; `None` on a miss
    /// (nothing was stored) or when Redis is unavailable.
    #[tracing::instrument(name = "quote store", skip_all, fields(db.system = "redis"))]
    async fn read_and_store_quote(&self, header: &QuoteHeader) -> Option<ProductPricing> {
        let result: redis::RedisResult<Option<String>> = match self.cache.conn().await {
            Ok(mut conn) => {
                Script::new(GET_AND_STORE_QUOTE)
                    .key(self.cache.keys.price(header.product_id))
                    .key(self.cache.keys.quote(&header.quote_id))
                    .arg(header.encode())
                    .arg(self.settings.quote_ttl.as_secs().max(1))
                    .invoke_async(&mut conn)
                    .await
            }
            Err(_) => Ok(None),
        };
        match result {
            Ok(raw) => raw.as_deref().and_then(cache::decode_versioned),
            Err(e) => {
                tracing::warn!(product_id = header.product_id, error = %e, "price cache unavailable; computing");
                None
            }
        }
    }

    /// Best effort: without Redis the price is still shown; an order naming this quote is then refused
    /// with the current price (409), never charged something it cannot check.
    async fn store_quote(&self, header: &QuoteHeader, pricing: &ProductPricing) {
        let key = self.cache.keys.quote(&header.quote_id);
        let ttl = self.settings.quote_ttl.as_secs().max(1);
        let result: redis::RedisResult<()> = match self.cache.conn().await {
            Ok(mut conn) => conn.set_ex(&key, header.stored_with(pricing), ttl).await,
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(product_id = header.product_id, error = %e, "could not store the quote");
        }
    }

    /// A stored quote, or `None` once it has expired, never existed, or was made under other rules.
    pub async fn stored_quote(&self, quote_id: &str) -> Result<Option<StoredQuote>> {
        let raw: Option<String> = self.cache.conn().await?.get(self.cache.keys.quote(quote_id)).await?;
        let Some((header, pricing)) = raw.as_deref().and_then(QuoteHeader::decode) else { return Ok(None) };
        if header.valid_until <= Utc::now() || header.model != self.model_fingerprint {
            return Ok(None);
        }
        let shopper = Shopper { location: header.user_location.clone(), is_member: header.is_prime_member };
        Ok(Some(StoredQuote {
            final_price: self.price_for(&pricing, &shopper),
            quote_id: header.quote_id,
            product_id: header.product_id,
            user_id: header.user_id,
            user_location: header.user_location,
            is_prime_member: header.is_prime_member,
            valid_until: header.valid_until,
        }))
    }
}
