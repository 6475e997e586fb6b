//! Quotes: a price for one shopper that an order can honour until `valid_until`. The quote carries itself
//! (`quote_token`): its `quote_id` is a signed token holding the pricing state's inputs and the shopper's
//! parts, so quoting is a pure read (one cached pricing state, no write) and an order recomputes the price
//! from the token, only under the same rules (`model` is fingerprinted with the configuration), so a
//! customer pays exactly what they were shown or is told the current price.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    model::{self, Adjustment, Shopper},
    quote_token::{QuoteClaims, QuoteSigner},
    service::{PricingService, StateSource},
};
use crate::{domain::ProductRef, Result};

/// A price quote, as `POST /api/v1/price` answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceDetail {
    pub product_id: i64,
    pub sku: String,
    pub final_price: Decimal,
    pub base_price: Decimal,
    pub discount_rate: Decimal,
    pub currency: String,
    pub source: StateSource,
    pub user_location: String,
    pub is_prime_member: bool,
    /// The shopper the quote is bound to (their token's `sub`); `null` for a guest's quote, which only
    /// a guest's order can use.
    pub user_id: Option<String>,
    /// Which of the shopper's inputs came from their verified token (`user_id`, `is_prime_member`,
    /// `user_location`); the others came from the request or the defaults.
    pub from_token: Vec<String>,
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

impl PricingService {
    /// Quotes a price for one shopper: the pricing state (cached, or computed once), the shopper's parts
    /// applied, and a signed token an order can honour until `valid_until`. Nothing is written.
    pub async fn quote(
        self: &Arc<Self>,
        product: &ProductRef,
        shopper: &Shopper,
        user_id: Option<&str>,
    ) -> Result<PriceDetail> {
        let product_id = self.resolve(product).await?;
        let (pricing, source) = self.pricing(product_id).await?;
        let price = model::quote(&pricing, shopper, &self.config);
        let valid_until = Utc::now() + self.settings.quote_ttl;
        let claims = QuoteClaims::new(&pricing, shopper, user_id, valid_until, self.model_fingerprint);
        Ok(PriceDetail {
            product_id,
            sku: pricing.sku,
            final_price: price.final_price,
            base_price: price.base_price,
            discount_rate: price.discount_rate,
            currency: self.settings.currency.clone(),
            source,
            user_location: shopper.location.clone(),
            is_prime_member: shopper.is_member,
            user_id: user_id.map(str::to_string),
            from_token: Vec::new(),
            breakdown: price.breakdown,
            quote_id: self.signer().sign(&claims),
            // What the token says (whole seconds), so the answer and the token agree.
            valid_until: claims.valid_until(),
        })
    }

    /// The quote a token carries, or `None` when it is not one this service signed, has expired, or was
    /// made under other rules.
    pub fn verified_quote(&self, quote_id: &str) -> Option<StoredQuote> {
        let claims = self.signer().verify(quote_id)?;
        if claims.valid_until() <= Utc::now() || claims.rules != self.model_fingerprint {
            return None;
        }
        let shopper = claims.shopper();
        Some(StoredQuote {
            final_price: self.price_for(&claims.pricing(), &shopper),
            quote_id: quote_id.to_string(),
            product_id: claims.product_id,
            valid_until: claims.valid_until(),
            user_id: claims.user_id,
            user_location: shopper.location,
            is_prime_member: shopper.is_member,
        })
    }

    /// The signing keys, set up on first use (a process that never quotes never generates one).
    fn signer(&self) -> &QuoteSigner {
        self.quote_signer.get_or_init(|| QuoteSigner::from_keys(&self.settings.secrets.quote_signing_keys))
    }
}
