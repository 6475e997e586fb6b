//! Reading a draft from a stream entry. Other services `XADD` either the JSON message in field `event` or,
//! as `redis-cli` makes easy, flat fields (`event_type`, `category`, `product_ids` comma-separated,
//! `multiplier`, `source`, `event_id`, `traceparent`); both become the same `MarketEventDraft`, checked by
//! the same `validate`.

use std::collections::HashMap;

use super::{MarketEventDraft, STREAM_FIELD};
use crate::domain::ProductRef;

impl MarketEventDraft {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

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
