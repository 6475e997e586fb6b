//! Dynamic pricing: the pure model, the service that computes and caches pricing states (single-flight
//! misses), and quotes an order can honour. Demand counters live with the cache (`cache::demand`).

pub mod model;
pub mod quote_token;
pub mod quotes;
pub mod service;

pub use model::{PricingConfig, ProductPricing, Shopper};
pub use quotes::{PriceDetail, StoredQuote};
pub use service::{PricingService, StateSource};

use crate::Settings;

impl PricingConfig {
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        // Ranges and relations were checked with the settings (`Settings::from_env`).
        Ok(Self {
            demand_saturation_orders: s.demand_saturation_orders,
            demand_max_surcharge: model::DEMAND_MAX_SURCHARGE,
            scarcity_threshold: s.scarcity_threshold,
            scarcity_max_surcharge: model::SCARCITY_MAX_SURCHARGE,
            location_multipliers: model::parse_location_multipliers(&s.location_multipliers)
                .map_err(|e| anyhow::anyhow!("LOCATION_MULTIPLIERS: {e}"))?,
            default_location: s.default_location.to_uppercase(),
            member_discount: s.member_discount,
            floor_ratio: s.price_floor_ratio,
            ceiling_ratio: s.price_ceiling_ratio,
        })
    }
}
