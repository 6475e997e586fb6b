//! Market events: the one definition of an event, its rules, and how it travels. The api records an event
//! in PostgreSQL (`db::market_events`) and appends it to the Redis stream `{prefix}:market_events` (field
//! `event`: the JSON message), announcing it on the channel of the same name; the listener reads the stream
//! with a consumer group and applies each event once.
//!
//! Other services may also `XADD` to the stream (the JSON field `event`, or flat fields as `redis-cli`
//! sends them: `event_type`, `category`, `product_ids` comma-separated, `multiplier`, `source`, `event_id`)
//! or only `PUBLISH` the JSON on the channel; the listener accepts all three.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    cache::Cache,
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
/// Set on the copy the api announces on the channel: it is already in the stream, so a listener's
/// bridge does not append it again.
const APPENDED_MARK: &str = "appended";

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

    /// A draft from a stream entry: the JSON in field `event`, or flat fields as `redis-cli` sends them.
    pub fn from_stream_fields(fields: &HashMap<String, String>) -> Result<Self, String> {
        if let Some(json) = fields.get(STREAM_FIELD) {
            return serde_json::from_str(json)
                .map_err(|e| format!("field {STREAM_FIELD} is not an event: {e}"));
        }
        if !fields.contains_key("event_type") {
            return Err(format!("no {STREAM_FIELD} field and no event_type field"));
        }
        let product_ids = match fields.get("product_ids") {
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(ProductRef::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let multiplier = match fields.get("multiplier") {
            Some(m) => Some(m.trim().parse().map_err(|e| format!("multiplier {m:?}: {e}"))?),
            None => None,
        };
        Ok(Self {
            event_id: fields.get("event_id").cloned(),
            event_type: fields.get("event_type").cloned(),
            category: fields.get("category").cloned(),
            product_ids,
            multiplier,
            source: fields.get("source").cloned(),
            traceparent: fields.get("traceparent").cloned(),
            ..Self::default()
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

/// The most undelivered entries `EventStream::backlog` counts one by one when Redis cannot tell.
const BACKLOG_COUNT_MAX: usize = 10_000;

/// What `EventStream::backlog` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBacklog {
    pub entries: u64,
    pub pending: u64,
    pub lag: u64,
}

/// Appending events to the stream and announcing them on the channel.
#[derive(Clone)]
pub struct EventStream {
    cache: Cache,
    max_len: usize,
}

impl EventStream {
    pub fn new(cache: Cache, max_len: usize) -> Self {
        Self { cache, max_len }
    }

    /// `XADD` (bounded with `MAXLEN ~`) and `PUBLISH` of each event, in one pipeline.
    #[tracing::instrument(name = "stream append", skip_all, fields(db.system.name = "redis", events = events.len()))]
    pub async fn append(&self, events: &[MarketEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = self.cache.keys.market_events();
        let mut pipe = redis::pipe();
        for event in events {
            let json = event.to_json();
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_len)
                .arg("*")
                .arg(STREAM_FIELD)
                .arg(&json)
                .ignore();
            let mut announced: serde_json::Value = serde_json::from_str(&json).expect("valid json");
            announced[APPENDED_MARK] = serde_json::Value::Bool(true);
            pipe.cmd("PUBLISH").arg(&key).arg(announced.to_string()).ignore();
        }
        let () = pipe.query_async(&mut self.cache.conn().await?).await?;
        Ok(())
    }

    /// How far the listeners are behind: the stream's entries, and of the consumer group the entries
    /// delivered but not yet acknowledged (`pending`) and not yet delivered (`lag`). Zeros before the
    /// stream exists.
    pub async fn backlog(&self) -> Result<StreamBacklog> {
        let key = self.cache.keys.market_events();
        let mut conn = self.cache.conn().await?;
        let entries: u64 = conn.xlen(&key).await?;
        if entries == 0 {
            return Ok(StreamBacklog { entries, pending: 0, lag: 0 });
        }
        let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(&key).await?;
        let Some(group) = groups.groups.into_iter().find(|g| g.name == CONSUMER_GROUP) else {
            // No listener has joined yet: everything waits.
            return Ok(StreamBacklog { entries, pending: 0, lag: entries });
        };
        let lag = match group.lag {
            Some(lag) => lag as u64,
            // Redis cannot tell (a trim or deletion since the group's position): count what follows the
            // last delivered entry, up to a bound.
            None => {
                let after = format!("({}", group.last_delivered_id);
                let ids: redis::streams::StreamRangeReply =
                    conn.xrange_count(&key, after, "+", BACKLOG_COUNT_MAX).await?;
                ids.ids.len() as u64
            }
        };
        Ok(StreamBacklog { entries, pending: group.pending as u64, lag })
    }

    /// Whether a channel message is one the api already appended to the stream.
    pub fn already_appended(message: &serde_json::Value) -> bool {
        message.get(APPENDED_MARK).and_then(serde_json::Value::as_bool) == Some(true)
    }

    /// Copies an entry that could not be understood to `{prefix}:market_events:dead`, with the reason.
    #[tracing::instrument(name = "dead letter", skip_all, fields(db.system.name = "redis", entry = entry_id))]
    pub async fn dead_letter(
        &self,
        entry_id: &str,
        fields: &HashMap<String, String>,
        reason: &str,
    ) -> Result<()> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.cache.keys.market_events_dead()).arg("MAXLEN").arg("~").arg(self.max_len).arg("*");
        cmd.arg("source_entry").arg(entry_id).arg("reason").arg(reason);
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        let _: String = cmd.query_async(&mut self.cache.conn().await?).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

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

    #[test]
    fn flat_redis_cli_fields_read_like_the_json_form() {
        let fields: HashMap<String, String> = [
            ("event_type", "competitor_price"),
            ("category", "books"),
            ("product_ids", "42, P-142"),
            ("multiplier", "1.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e =
            MarketEventDraft::from_stream_fields(&fields).unwrap().validate(|| "stream:1-0".into()).unwrap();
        assert_eq!(e.product_ids, vec![ProductRef::Id(42), ProductRef::Sku("P-142".into())]);
        assert_eq!(e.multiplier, Some(dec!(1.1)));
        assert_eq!(e.event_id, "stream:1-0");
    }
}
