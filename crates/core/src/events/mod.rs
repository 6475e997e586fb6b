//! Market events: the one definition of an event, its rules, and how it travels. The api records an event
//! in PostgreSQL (`db::market_events`) and appends it to the Redis stream `{prefix}:market_events` (field
//! `event`: the JSON message), announcing it on the channel of the same name; the listener reads the stream
//! with a consumer group and applies each event once.
//!
//! Other services may also `XADD` to the stream (the JSON field `event`, or flat fields as `redis-cli`
//! sends them: `event_type`, `category`, `product_ids` comma-separated, `multiplier`, `source`, `event_id`)
//! or only `PUBLISH` the JSON on the channel; the listener accepts all three.
//!
//! This file holds the event, its draft and the rules that make one from the other; `fields` reads a
//! draft from a stream entry (JSON or flat fields), and `stream` is the Redis transport (`EventStream`).

mod fields;
mod stream;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use stream::{EventStream, StreamBacklog};

use crate::{
    domain::ProductRef,
    pricing::model::{MARKET_MAX, MARKET_MIN},
    Result,
};

/// The stream field holding the JSON message.
pub const STREAM_FIELD: &str = "event";
/// The consumer group every listener joins.
pub const CONSUMER_GROUP: &str = "market_event_listeners";
/// Most products one event may name.
pub const MAX_PRODUCTS_PER_EVENT: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketEventType {
    /// A competitor's price moved: the market part of the scope's prices follows `multiplier`.
    CompetitorPrice,
    /// Demand moved outside this service (a promotion, the news): the same, from another source.
    DemandShock,
    /// Recompute the scope's prices (all products when no scope is named).
    Recalculate,
}

impl MarketEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            MarketEventType::CompetitorPrice => "competitor_price",
            MarketEventType::DemandShock => "demand_shock",
            MarketEventType::Recalculate => "recalculate",
        }
    }

    /// Whether it carries a market signal (a multiplier for its scope).
    pub fn is_signal(self) -> bool {
        !matches!(self, MarketEventType::Recalculate)
    }
}

/// A valid market event, as the stream carries it and the listener applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketEvent {
    pub event_id: String,
    pub event_type: MarketEventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_ids: Vec<ProductRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the publisher, so the listener's work joins its trace. Always written (`null`
    /// when there is none), so a reader can tell a publisher without trace context from a message format
    /// that lacks the field.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// The event id rule, as the API description states it.
pub const EVENT_ID_PATTERN: &str = "^[A-Za-z0-9_:.-]{1,200}$";

/// An event as sent, every field optional and unchecked; `validate` makes it a `MarketEvent`. How the
/// API description states the rules is `MarketEventForms` in the api.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct MarketEventDraft {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub category: Option<String>,
    pub product_ids: Option<Vec<ProductRef>>,
    pub multiplier: Option<Decimal>,
    pub source: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
    /// Fields this service does not know (the api refuses them; the listener ignores them).
    #[serde(flatten)]
    #[schema(ignore)]
    pub unknown: HashMap<String, serde_json::Value>,
}

/// Why an event was refused: the field, and the rule it broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidEvent {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidEvent {
    InvalidEvent { field, message: message.into() }
}

fn text(field: &'static str, value: Option<String>, max: usize) -> Result<Option<String>, InvalidEvent> {
    let Some(value) = value.map(|v| v.trim().to_string()) else { return Ok(None) };
    if value.is_empty() || value.chars().count() > max || !crate::domain::is_printable_text(&value) {
        return Err(invalid(field, format!("must be 1 to {max} printable characters")));
    }
    Ok(Some(value))
}

impl MarketEventDraft {
    /// Applies the rules: a known `event_type` (none means a full recalculation), a `multiplier` within the
    /// model's market range for the two signal types (and none for `recalculate`), a scope (`category` or
    /// `product_ids`) for signals, and sane lengths. A missing `event_id` becomes `default_id`.
    pub fn validate(self, default_id: impl FnOnce() -> String) -> Result<MarketEvent, InvalidEvent> {
        // Taken as written (no trimming): the API description states these rules as exact patterns.
        let event_type = match self.event_type.as_deref() {
            None => MarketEventType::Recalculate,
            Some(t) => serde_json::from_value(serde_json::Value::String(t.to_string())).map_err(|_| {
                invalid(
                    "event_type",
                    format!("must be competitor_price, demand_shock or recalculate, got {t:?}"),
                )
            })?,
        };
        let event_id = match self.event_id {
            Some(id)
                if (1..=200).contains(&id.len())
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c)) =>
            {
                id
            }
            Some(_) => {
                return Err(invalid(
                    "event_id",
                    "must be 1 to 200 letters, digits, '-', '_', ':' or '.' (EVENT_ID_PATTERN)",
                ))
            }
            None => default_id(),
        };
        let category = text("category", self.category, 100)?;
        let product_ids = self.product_ids.unwrap_or_default();
        if product_ids.len() > MAX_PRODUCTS_PER_EVENT {
            return Err(invalid(
                "product_ids",
                format!("at most {MAX_PRODUCTS_PER_EVENT} products per event"),
            ));
        }
        match (event_type.is_signal(), self.multiplier) {
            (true, None) => {
                return Err(invalid("multiplier", format!("is required for {}", event_type.as_str())))
            }
            (true, Some(m)) if !(MARKET_MIN..=MARKET_MAX).contains(&m) => {
                return Err(invalid(
                    "multiplier",
                    format!("must be between {MARKET_MIN} and {MARKET_MAX}, got {m}"),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid("multiplier", "applies only to competitor_price and demand_shock"))
            }
            _ => {}
        }
        if event_type.is_signal() && category.is_none() && product_ids.is_empty() {
            return Err(invalid(
                "category",
                format!("{} needs a category or product_ids", event_type.as_str()),
            ));
        }
        Ok(MarketEvent {
            event_id,
            event_type,
            category,
            product_ids,
            multiplier: self.multiplier,
            source: text("source", self.source, 255)?,
            occurred_at: self.occurred_at.unwrap_or_else(Utc::now),
            traceparent: text("traceparent", self.traceparent, 128)?,
        })
    }
}

impl MarketEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }

    /// A new id for an event that came without one.
    pub fn new_id() -> String {
        format!("evt-{}", uuid::Uuid::new_v4().simple())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(json: serde_json::Value) -> MarketEventDraft {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn an_empty_draft_is_a_full_recalculation() {
        let e = MarketEventDraft::default().validate(|| "id-1".into()).unwrap();
        assert_eq!((e.event_type, e.event_id.as_str()), (MarketEventType::Recalculate, "id-1"));
        assert!(e.category.is_none() && e.product_ids.is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (serde_json::json!({ "event_type": "nope" }), "event_type"),
            (serde_json::json!({ "event_type": "competitor_price", "category": "x" }), "multiplier"),
            (
                serde_json::json!({ "event_type": "demand_shock", "category": "x", "multiplier": 2.5 }),
                "multiplier",
            ),
            (serde_json::json!({ "event_type": "recalculate", "multiplier": 1.1 }), "multiplier"),
            (serde_json::json!({ "event_type": "competitor_price", "multiplier": 1.1 }), "category"),
            (serde_json::json!({ "event_id": "has space" }), "event_id"),
            (serde_json::json!({ "category": "" }), "category"),
        ];
        for (json, field) in cases {
            let err = draft(json.clone()).validate(MarketEvent::new_id).unwrap_err();
            assert_eq!(err.field, field, "{json}");
        }
    }
}
