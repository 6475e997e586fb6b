//! The pricing model: pure functions, no I/O, so every rule is unit-tested and the api and the bulk
//! recalculation compute prices the same way.
//!
//! A price is built in two parts. The product-level part (`ProductPricing`: base price, demand, scarcity,
//! market) is the same for every customer and is what the cache holds. The per-request part (location,
//! membership) is applied on every quote, so one customer's discount can never be served to another.
//!
//! `final = clamp(base x demand x scarcity x market x location x (1 - discount), floor x base, ceiling x base)`,
//! rounded to cents half away from zero, once, at the end.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::round_cents;

/// The model's knobs; `PricingConfig::from_settings` fills them from the checked settings.
#[derive(Debug, Clone)]
pub struct PricingConfig {
    /// Orders in the demand window at which the demand multiplier reaches its maximum.
    pub demand_saturation_orders: u64,
    /// The largest demand surcharge (0.25 = +25%).
    pub demand_max_surcharge: Decimal,
    /// Below this stock the scarcity surcharge starts, growing linearly to its maximum at stock 0.
    pub scarcity_threshold: i32,
    pub scarcity_max_surcharge: Decimal,
    /// Location code -> multiplier; a location not listed uses 1.0.
    pub location_multipliers: Vec<(String, Decimal)>,
    pub default_location: String,
    /// Members' discount (0.05 = 5%).
    pub member_discount: Decimal,
    /// Guardrails: the final price stays within [floor, ceiling] x base price.
    pub floor_ratio: Decimal,
    pub ceiling_ratio: Decimal,
}

/// The product-level part of a price: what the cache holds, identical for every customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductPricing {
    pub product_id: i64,
    pub sku: String,
    /// The product row's version this was computed from.
    pub version: i64,
    pub base_price: Decimal,
    pub demand_multiplier: Decimal,
    pub scarcity_multiplier: Decimal,
    pub market_multiplier: Decimal,
    /// Orders counted in the demand window, and stock, for the breakdown.
    pub recent_orders: u64,
    pub stock: i32,
    pub computed_at: DateTime<Utc>,
}

/// What the product-level part is computed from.
#[derive(Debug, Clone)]
pub struct PricingInputs {
    pub product_id: i64,
    pub sku: String,
    pub version: i64,
    pub base_price: Decimal,
    pub stock: i32,
    pub recent_orders: u64,
    pub market_multiplier: Option<Decimal>,
}

impl PricingInputs {
    /// The one way a product row becomes pricing inputs (quote misses, orders and recalculations alike).
    pub fn from_product(
        product: crate::domain::Product,
        recent_orders: u64,
        market: Option<Decimal>,
    ) -> Self {
        Self {
            product_id: product.id,
            sku: product.sku,
            version: product.version,
            base_price: product.price,
            stock: product.stock,
            recent_orders,
            market_multiplier: market,
        }
    }
}

/// Who is asking: the per-request part of a price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shopper {
    pub location: String,
    pub is_member: bool,
}

/// One multiplier applied, so a price can be explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Adjustment {
    pub name: String,
    pub multiplier: Decimal,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub base_price: Decimal,
    pub final_price: Decimal,
    pub discount_rate: Decimal,
    pub breakdown: Vec<Adjustment>,
}

/// The largest demand surcharge (+25% at saturation) and scarcity surcharge (+20% at stock 0).
pub const DEMAND_MAX_SURCHARGE: Decimal = Decimal::from_parts(25, 0, 0, false, 2);
pub const SCARCITY_MAX_SURCHARGE: Decimal = Decimal::from_parts(20, 0, 0, false, 2);

/// The market multiplier is bounded so a bad signal cannot zero or explode a price.
pub const MARKET_MIN: Decimal = Decimal::from_parts(5, 0, 0, false, 1); // 0.5
pub const MARKET_MAX: Decimal = Decimal::TWO;

pub fn product_pricing(inputs: &PricingInputs, config: &PricingConfig, now: DateTime<Utc>) -> ProductPricing {
    ProductPricing {
        product_id: inputs.product_id,
        sku: inputs.sku.clone(),
        version: inputs.version,
        base_price: inputs.base_price,
        demand_multiplier: demand_multiplier(inputs.recent_orders, config),
        scarcity_multiplier: scarcity_multiplier(inputs.stock, config),
        market_multiplier: inputs.market_multiplier.unwrap_or(Decimal::ONE).clamp(MARKET_MIN, MARKET_MAX),
        recent_orders: inputs.recent_orders,
        stock: inputs.stock,
        computed_at: now,
    }
}

/// 1.0 with no recent orders, rising linearly to `1 + demand_max_surcharge` at saturation.
pub fn demand_multiplier(recent_orders: u64, config: &PricingConfig) -> Decimal {
    let saturation = config.demand_saturation_orders.max(1);
    let share = Decimal::from(recent_orders.min(saturation)) / Decimal::from(saturation);
    (Decimal::ONE + config.demand_max_surcharge * share).round_dp(4)
}

/// 1.0 at or above the threshold, rising linearly to `1 + scarcity_max_surcharge` at stock 0.
pub fn scarcity_multiplier(stock: i32, config: &PricingConfig) -> Decimal {
    let threshold = config.scarcity_threshold.max(1);
    if stock >= threshold {
        return Decimal::ONE;
    }
    let missing = Decimal::from(threshold - stock.max(0)) / Decimal::from(threshold);
    (Decimal::ONE + config.scarcity_max_surcharge * missing).round_dp(4)
}

pub fn location_multiplier(location: &str, config: &PricingConfig) -> Decimal {
    config
        .location_multipliers
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(location))
        .map_or(Decimal::ONE, |(_, m)| *m)
}

/// Applies the per-request part to the cached product-level part.
pub fn quote(pricing: &ProductPricing, shopper: &Shopper, config: &PricingConfig) -> Price {
    let location = location_multiplier(&shopper.location, config);
    let discount_rate = if shopper.is_member { config.member_discount } else { Decimal::ZERO };
    let mut breakdown = vec![
        Adjustment {
            name: "demand".into(),
            multiplier: pricing.demand_multiplier,
            reason: format!("{} orders in the demand window", pricing.recent_orders),
        },
        Adjustment {
            name: "scarcity".into(),
            multiplier: pricing.scarcity_multiplier,
            reason: format!("{} in stock", pricing.stock),
        },
        Adjustment {
            name: "market".into(),
            multiplier: pricing.market_multiplier,
            reason: "latest market signal for the product or its category".into(),
        },
        Adjustment {
            name: "location".into(),
            multiplier: location,
            reason: format!("location {}", shopper.location),
        },
    ];
    if shopper.is_member {
        breakdown.push(Adjustment {
            name: "member_discount".into(),
            multiplier: Decimal::ONE - discount_rate,
            reason: format!("{}% member discount", (discount_rate * Decimal::ONE_HUNDRED).normalize()),
        });
    }
    let raw = breakdown.iter().fold(pricing.base_price, |p, a| p * a.multiplier);
    let floor = pricing.base_price * config.floor_ratio;
    let ceiling = pricing.base_price * config.ceiling_ratio;
    let bounded = raw.clamp(floor, ceiling);
    if bounded != raw {
        breakdown.push(Adjustment {
            name: "guardrail".into(),
            multiplier: (bounded / raw).round_dp(6),
            reason: format!(
                "kept within {}x..{}x of the base price",
                config.floor_ratio.normalize(),
                config.ceiling_ratio.normalize()
            ),
        });
    }
    // Never below one cent, whatever the floor ratio.
    let final_price = round_cents(bounded).max(Decimal::new(1, 2));
    Price { base_price: pricing.base_price, final_price, discount_rate, breakdown }
}

/// Parses `NY=1.10,CA=1.08` into the location table.
pub fn parse_location_multipliers(spec: &str) -> Result<Vec<(String, Decimal)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (code, value) =
                pair.split_once('=').ok_or_else(|| format!("{pair:?} is not CODE=MULTIPLIER"))?;
            let m: Decimal = value.trim().parse().map_err(|e| format!("{pair:?}: {e}"))?;
            if m <= Decimal::ZERO {
                return Err(format!("{pair:?}: the multiplier must be positive"));
            }
            Ok((code.trim().to_uppercase(), m))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn config() -> PricingConfig {
        PricingConfig {
            demand_saturation_orders: 100,
            demand_max_surcharge: dec!(0.25),
            scarcity_threshold: 100,
            scarcity_max_surcharge: dec!(0.20),
            location_multipliers: parse_location_multipliers("NY=1.10,TX=0.95").unwrap(),
            default_location: "US".into(),
            member_discount: dec!(0.05),
            floor_ratio: dec!(0.5),
            ceiling_ratio: dec!(2.0),
        }
    }

    fn inputs(price: Decimal, stock: i32, orders: u64, market: Option<Decimal>) -> PricingInputs {
        PricingInputs {
            product_id: 1,
            sku: "P-1".into(),
            version: 1,
            base_price: price,
            stock,
            recent_orders: orders,
            market_multiplier: market,
        }
    }

    fn shopper(location: &str, is_member: bool) -> Shopper {
        Shopper { location: location.into(), is_member }
    }

    #[test]
    fn a_quiet_well_stocked_product_sells_at_its_base_price() {
        let c = config();
        let p = product_pricing(&inputs(dec!(100), 500, 0, None), &c, Utc::now());
        let q = quote(&p, &shopper("US", false), &c);
        assert_eq!(q.final_price, dec!(100.00));
        assert_eq!(q.discount_rate, dec!(0));
    }

    #[test]
    fn demand_rises_linearly_to_saturation() {
        let c = config();
        assert_eq!(demand_multiplier(0, &c), dec!(1));
        assert_eq!(demand_multiplier(50, &c), dec!(1.125));
        assert_eq!(demand_multiplier(100, &c), dec!(1.25));
        assert_eq!(demand_multiplier(10_000, &c), dec!(1.25));
    }

    #[test]
    fn scarcity_rises_as_stock_falls() {
        let c = config();
        assert_eq!(scarcity_multiplier(100, &c), dec!(1));
        assert_eq!(scarcity_multiplier(50, &c), dec!(1.1));
        assert_eq!(scarcity_multiplier(0, &c), dec!(1.2));
    }

    #[test]
    fn members_get_the_discount_and_non_members_do_not() {
        let c = config();
        let p = product_pricing(&inputs(dec!(100), 500, 0, None), &c, Utc::now());
        assert_eq!(quote(&p, &shopper("US", true), &c).final_price, dec!(95.00));
        assert_eq!(quote(&p, &shopper("US", true), &c).discount_rate, dec!(0.05));
        assert_eq!(quote(&p, &shopper("US", false), &c).final_price, dec!(100.00));
    }

    #[test]
    fn location_changes_the_price_and_unknown_locations_pay_base() {
        let c = config();
        let p = product_pricing(&inputs(dec!(100), 500, 0, None), &c, Utc::now());
        assert_eq!(quote(&p, &shopper("ny", false), &c).final_price, dec!(110.00));
        assert_eq!(quote(&p, &shopper("TX", false), &c).final_price, dec!(95.00));
        assert_eq!(quote(&p, &shopper("ZZ", false), &c).final_price, dec!(100.00));
    }

    #[test]
    fn market_signal_is_bounded() {
        let c = config();
        let p = product_pricing(&inputs(dec!(10), 500, 0, Some(dec!(50))), &c, Utc::now());
        assert_eq!(p.market_multiplier, MARKET_MAX);
        let p = product_pricing(&inputs(dec!(10), 500, 0, Some(dec!(0))), &c, Utc::now());
        assert_eq!(p.market_multiplier, MARKET_MIN);
    }

    #[test]
    fn guardrails_cap_the_final_price_and_say_so() {
        let mut c = config();
        c.ceiling_ratio = dec!(1.3);
        // 1.25 demand x 1.2 scarcity x 2.0 market x 1.1 location = 3.3x, capped at 1.3x.
        let p = product_pricing(&inputs(dec!(10), 0, 1000, Some(dec!(2))), &c, Utc::now());
        let q = quote(&p, &shopper("NY", false), &c);
        assert_eq!(q.final_price, dec!(13.00));
        assert_eq!(q.breakdown.last().unwrap().name, "guardrail");
        c.floor_ratio = dec!(0.9);
        let p = product_pricing(&inputs(dec!(10), 500, 0, Some(dec!(0.5))), &c, Utc::now());
        assert_eq!(quote(&p, &shopper("US", false), &c).final_price, dec!(9.00));
    }

    #[test]
    fn rounds_to_cents_half_away_from_zero_once_at_the_end() {
        let c = config();
        // 9.99 x 0.95 = 9.4905 -> 9.49; with NY 9.99 x 1.1 x 0.95 = 10.43955 -> 10.44
        let p = product_pricing(&inputs(dec!(9.99), 500, 0, None), &c, Utc::now());
        assert_eq!(quote(&p, &shopper("US", true), &c).final_price, dec!(9.49));
        assert_eq!(quote(&p, &shopper("NY", true), &c).final_price, dec!(10.44));
    }

    #[test]
    fn parses_location_tables_and_rejects_bad_ones() {
        assert_eq!(parse_location_multipliers("ny=1.1, CA=1.05").unwrap().len(), 2);
        assert!(parse_location_multipliers("NY").is_err());
        assert!(parse_location_multipliers("NY=-1").is_err());
        assert!(parse_location_multipliers("").unwrap().is_empty());
    }
}
