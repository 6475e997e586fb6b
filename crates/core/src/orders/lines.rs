//! What an order's lines cost: the one place for the pricing rules an order follows.
//!
//! - A line with a valid quote (same product, same customer, not expired, same pricing rules) pays the
//!   quoted price; an invalid one refuses the order with 409 and the current price.
//! - Any other line pays the current dynamic price for this shopper, computed from the product row locked
//!   by the sale, so the price and the stock it depends on are read at the same instant.
//! - A customer may state what they saw: `expected_unit_price` per line, or `expected_total` per order. A
//!   server figure above it refuses the order (409, with the current figures); at or below it, the order
//!   is charged the server figure. A customer is never charged more than they saw.
//! - Lines naming the same product are merged; they must agree on quote and expected price.

use std::{collections::BTreeMap, sync::Arc};

use chrono::Utc;
use rust_decimal::Decimal;

use crate::{
    db::products::ProductWithMarket,
    domain::{Buyer, OrderItem, PriceBasis, ProductRef},
    money::{round_cents, MAX_AMOUNT},
    pricing::{
        model::{self, PricingInputs},
        PricingService, Shopper,
    },
    Error, Result,
};

/// An order as a client asks for it, its shape already checked (at least one line, quantities in range).
#[derive(Debug, Clone)]
pub struct OrderRequest {
    /// Who is buying: the verified shopper, or a guest.
    pub buyer: Buyer,
    pub lines: Vec<OrderLine>,
    /// Who is buying, for the dynamic price of lines without a quote.
    pub user_location: Option<String>,
    pub is_prime_member: bool,
    /// The total the customer saw, if the client sent one.
    pub expected_total: Option<Decimal>,
    /// The client's `Idempotency-Key`, if it sent one: a retry with it replays the first order.
    pub idempotency: Option<IdempotencyKey>,
    /// When the client stops waiting: a sale not committed by then is not committed at all (it is dropped
    /// from its queue, or its transaction rolled back), so an answered client was never sold anything.
    pub deadline: tokio::time::Instant,
}

/// An `Idempotency-Key` and the canonical hash of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The key as the client sent it.
    pub key: String,
    /// Scoped per shopper, unambiguously: `s{length of sub}:{sub}:{key}` for a shopper, `g:{key}` for
    /// guests. The length prefix means no two (shopper, key) pairs share a scoped key (with a bare
    /// delimiter, user `a` with key `k:1` was user `a:k` with key `1`).
    pub scoped_key: String,
    pub request_hash: String,
}

impl IdempotencyKey {
    /// The key as a client sent it, for `buyer`, with the hash of the request's canonical form.
    pub fn new(key: &str, buyer: &Buyer, canonical_request: &str) -> Self {
        let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, canonical_request.as_bytes());
        let scoped_key = match buyer.user_id() {
            Some(sub) => format!("s{}:{sub}:{key}", sub.len()),
            None => format!("g:{key}"),
        };
        Self { key: key.to_string(), scoped_key, request_hash: hash.simple().to_string() }
    }
}

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub product: ProductRef,
    pub quantity: i32,
    pub quote_id: Option<String>,
    /// The unit price the customer saw, if the client sent one.
    pub expected_unit_price: Option<Decimal>,
}

/// One product of an order, its lines merged, with the quoted price it will pay if it has a quote.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct WantedLine {
    pub product_id: i64,
    pub quantity: i32,
    pub quoted: Option<Decimal>,
    pub expected_unit_price: Option<Decimal>,
}

/// Resolves SKUs to ids, checks each quote, and merges lines naming the same product (in id order); a
/// product's merged quantity is at most `max_quantity`.
pub(super) async fn resolve(
    pricing: &Arc<PricingService>,
    request: &OrderRequest,
    shopper: &Shopper,
    max_quantity: i32,
) -> Result<Vec<WantedLine>> {
    let mut wanted: BTreeMap<i64, WantedLine> = BTreeMap::new();
    for line in &request.lines {
        let product_id = pricing.resolve(&line.product).await?;
        let quoted = match &line.quote_id {
            Some(quote_id) => {
                Some(honoured_quote(pricing, quote_id, product_id, request.buyer.user_id(), shopper).await?)
            }
            None => None,
        };
        let next = WantedLine {
            product_id,
            quantity: line.quantity,
            quoted,
            expected_unit_price: line.expected_unit_price,
        };
        match wanted.get_mut(&product_id) {
            Some(existing) => merge(existing, next)?,
            None => {
                wanted.insert(product_id, next);
            }
        }
    }
    // The cap holds per product, after lines naming it are merged (three lines of 10,000 are 30,000).
    if let Some(line) = wanted.values().find(|l| l.quantity > max_quantity) {
        return Err(Error::Validation(format!(
            "quantity must be between 1 and {max_quantity} per product, lines naming the same product added \
             up (product {}: {})",
            line.product_id, line.quantity
        )));
    }
    Ok(wanted.into_values().collect())
}

/// The quoted price, if the quote is still valid and was made for this product and this shopper (a
/// guest's quote, `user_id` `None`, serves only guests).
async fn honoured_quote(
    pricing: &Arc<PricingService>,
    quote_id: &str,
    product_id: i64,
    user_id: Option<&str>,
    shopper: &Shopper,
) -> Result<Decimal> {
    let quote = pricing.verified_quote(quote_id);
    let reason = match &quote {
        None => "The quote has expired or is not valid".to_string(),
        Some(q) if q.product_id != product_id => format!("The quote is for product {}", q.product_id),
        Some(q) if q.user_id.as_deref() != user_id => {
            "The quote was made for another shopper; ask for a quote of your own".to_string()
        }
        Some(q) => return Ok(q.final_price),
    };
    let current_price = pricing.current_price(product_id, shopper).await?;
    Err(Error::QuoteRejected { reason, product_id, current_price })
}

/// Adds a second line for the same product to the first.
fn merge(existing: &mut WantedLine, next: WantedLine) -> Result<()> {
    let id = existing.product_id;
    if existing.quoted.is_some() != next.quoted.is_some() {
        return Err(Error::Validation(format!(
            "product {id} appears both with and without a quote; list it once"
        )));
    }
    if existing.quoted != next.quoted {
        return Err(Error::Validation(format!(
            "product {id} appears twice with different quotes; list it once"
        )));
    }
    if existing.expected_unit_price != next.expected_unit_price {
        return Err(Error::Validation(format!(
            "product {id} appears twice with different expected_unit_price; list it once"
        )));
    }
    existing.quantity = existing
        .quantity
        .checked_add(next.quantity)
        .ok_or_else(|| Error::Validation(format!("quantity for product {id} is too large")))?;
    Ok(())
}

/// Prices each line from its locked product row (or its quote), checks the stock and the unit price the
/// customer saw. `demand` holds the orders in the demand window per line, in the same order as `wanted`.
pub(super) fn price_lines(
    pricing: &PricingService,
    wanted: &[WantedLine],
    locked: &[ProductWithMarket],
    demand: &[u64],
    shopper: &Shopper,
) -> Result<Vec<OrderItem>> {
    let now = Utc::now();
    wanted
        .iter()
        .zip(demand)
        .map(|(line, &recent_orders)| {
            let ProductWithMarket { product, market_multiplier } = locked
                .iter()
                .find(|l| l.product.id == line.product_id)
                .ok_or_else(|| Error::NotFound(format!("Product {} not found", line.product_id)))?;
            if product.stock < line.quantity {
                return Err(Error::InsufficientStock {
                    product_id: product.id,
                    available: product.stock,
                    requested: line.quantity,
                });
            }
            let (unit_price, price_source) = match line.quoted {
                Some(price) => (price, PriceBasis::Quote),
                None => {
                    let inputs =
                        PricingInputs::from_product(product.clone(), recent_orders, *market_multiplier);
                    let state = model::product_pricing(&inputs, &pricing.config, now);
                    (pricing.price_for(&state, shopper), PriceBasis::Current)
                }
            };
            if let Some(shown) = line.expected_unit_price.filter(|shown| unit_price > *shown) {
                return Err(Error::UnitPriceChanged { product_id: product.id, shown, current: unit_price });
            }
            Ok(OrderItem { product_id: product.id, quantity: line.quantity, unit_price, price_source })
        })
        .collect()
}

/// The order's total; refused when it is above what the customer saw or beyond the largest amount.
pub(super) fn order_total(items: &[OrderItem], expected_total: Option<Decimal>) -> Result<Decimal> {
    let total = round_cents(items.iter().map(|i| i.unit_price * Decimal::from(i.quantity)).sum());
    if total > MAX_AMOUNT {
        return Err(Error::Validation(format!(
            "the order total {total} exceeds the largest amount, {MAX_AMOUNT}"
        )));
    }
    if let Some(shown) = expected_total.filter(|shown| total > *shown) {
        return Err(Error::TotalChanged { shown, current: total, items: items.to_vec() });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_of_different_shoppers_never_collide() {
        let shopper = |s: &str| Buyer::Shopper(s.into());
        let a = IdempotencyKey::new("k:1", &shopper("a"), "{}");
        let b = IdempotencyKey::new("1", &shopper("a:k"), "{}");
        assert_ne!(a.scoped_key, b.scoped_key);
        let guest = IdempotencyKey::new("k", &Buyer::Guest { label: Some("g".into()) }, "{}");
        let named_g = IdempotencyKey::new("k", &shopper("g"), "{}");
        assert_ne!(guest.scoped_key, named_g.scoped_key);
        assert_eq!(a.key, "k:1");
    }
}
