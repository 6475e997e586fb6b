//! The body of `POST /orders`: the three shapes clients send, checked and turned into the order use case's
//! request for the caller (who buys, and with which pricing inputs, comes from `auth::Caller`).

use pricing_core::{
    config::Limits,
    domain::ProductRef,
    money,
    orders::{IdempotencyKey, OrderLine, OrderRequest},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{auth::Caller, error::ApiResult, extract::text_field, ApiError};

/// All three request shapes clients send: `{product_id, quantity}`, `{user_id, items: [...]}`, and the
/// older service's `{user_id, item_ids: [...], total_amount}`. Send exactly one of `product_id`, `items` and
/// `item_ids`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateOrder {
    /// A guest's label for themselves (the older clients' numeric ids are accepted too). It grants nothing:
    /// a shopper's orders belong to their token's `sub`, which replaces it.
    user_id: Option<UserLabel>,
    product_id: Option<ProductRef>,
    /// With `product_id`; 1 when absent.
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "pricing_core::domain::whole_i32_opt")]
    quantity: Option<i32>,
    /// With `product_id`: the quote to honour (its signed token), and the unit price the customer saw.
    #[schema(max_length = 1024)]
    quote_id: Option<String>,
    #[serde(default, deserialize_with = "money::from_json_text_opt")]
    #[schema(exclusive_minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_unit_price: Option<Decimal>,
    /// The ship-to region, for the dynamic price of lines without a quote (default: the token's
    /// `location`, else `DEFAULT_LOCATION`).
    #[schema(
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    user_location: Option<String>,
    /// Accepted for older clients; only a verified token's `member` claim grants the member price.
    #[serde(default)]
    is_prime_member: Option<bool>,
    #[schema(min_items = 1, max_items = 100)]
    items: Option<Vec<LineInput>>,
    #[schema(min_items = 1, max_items = 100)]
    item_ids: Option<Vec<ProductRef>>,
    /// The total the customer saw; `total_amount` is the older form's name for it.
    #[serde(default, deserialize_with = "money::from_json_text_opt")]
    #[schema(minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_total: Option<Decimal>,
    #[serde(default, deserialize_with = "money::from_json_text_opt")]
    #[schema(minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    total_amount: Option<Decimal>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LineInput {
    product_id: ProductRef,
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(deserialize_with = "pricing_core::domain::whole_i32")]
    quantity: i32,
    #[schema(max_length = 1024)]
    quote_id: Option<String>,
    #[serde(default, deserialize_with = "money::from_json_text_opt")]
    #[schema(exclusive_minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_unit_price: Option<Decimal>,
}

impl CreateOrder {
    /// Checks the request's shape and bounds; the pricing rules are the order use case's. `key` is the
    /// `Idempotency-Key` header, if sent.
    pub(super) fn validate(
        self,
        caller: &Caller,
        key: Option<&str>,
        limits: &Limits,
        deadline: tokio::time::Instant,
    ) -> ApiResult<OrderRequest> {
        // The request as parsed (ids and SKUs as sent, amounts as numbers): the same order sent twice
        // hashes the same however its JSON was spaced or ordered.
        let canonical = serde_json::to_string(&self).expect("an order request serializes");
        let label = self.user_id.as_ref().map(UserLabel::text);
        let label = label.as_deref().map(|u| text_field("user_id", u, 1, limits.max_text_len)).transpose()?;
        let forms = [self.product_id.is_some(), self.items.is_some(), self.item_ids.is_some()];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(ApiError::Validation(
                "send exactly one of product_id (with quantity), items, or item_ids".into(),
            ));
        }
        let single_only =
            [self.quantity.is_some(), self.quote_id.is_some(), self.expected_unit_price.is_some()];
        if single_only.contains(&true) && !forms[0] {
            return Err(ApiError::Validation(
                "quantity, quote_id and expected_unit_price go with product_id; with items, put them in each item"
                    .into(),
            ));
        }
        let line = |product: ProductRef, quantity, quote_id, expected_unit_price| OrderLine {
            product,
            quantity,
            quote_id,
            expected_unit_price,
        };
        let lines: Vec<OrderLine> = if let Some(product_id) = self.product_id {
            vec![line(product_id, self.quantity.unwrap_or(1), self.quote_id, self.expected_unit_price)]
        } else if let Some(items) = self.items {
            items
                .into_iter()
                .map(|l| line(l.product_id, l.quantity, l.quote_id, l.expected_unit_price))
                .collect()
        } else {
            self.item_ids.unwrap_or_default().into_iter().map(|r| line(r, 1, None, None)).collect()
        };
        if let Some(location) = self.user_location.as_deref() {
            text_field("user_location", location, 0, 32)?;
        }
        if lines.is_empty() {
            return Err(ApiError::Validation("an order needs at least one item".into()));
        }
        if lines.len() > limits.max_order_items {
            let max = limits.max_order_items;
            return Err(ApiError::Validation(format!("an order may have at most {max} items")));
        }
        if let Some(l) = lines.iter().find(|l| !(1..=limits.max_quantity).contains(&l.quantity)) {
            return Err(ApiError::Validation(format!(
                "quantity must be between 1 and {} (product {}: {})",
                limits.max_quantity, l.product, l.quantity
            )));
        }
        for price in lines.iter().filter_map(|l| l.expected_unit_price) {
            money::validate_price("expected_unit_price", price).map_err(ApiError::Validation)?;
        }
        for (field, total) in [("expected_total", self.expected_total), ("total_amount", self.total_amount)] {
            if let Some(total) = total {
                money::validate_amount(field, total).map_err(ApiError::Validation)?;
            }
        }
        // Both names for the total the customer saw: the lower one holds (never charge more than either).
        let expected_total = match (self.expected_total, self.total_amount) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let buyer = caller.buyer(label);
        let idempotency = key.map(|k| IdempotencyKey::new(k, &buyer, &canonical));
        let inputs = caller.pricing_inputs(self.user_location.as_deref());
        Ok(OrderRequest {
            buyer,
            lines,
            user_location: inputs.location.map(str::to_string),
            is_prime_member: inputs.member,
            expected_total,
            idempotency,
            deadline,
        })
    }
}

/// A guest's label: text, or a number as the older clients sent (`{"user_id": 1}`; `1.0` is the same
/// integer in JSON Schema).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum UserLabel {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for UserLabel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) => Ok(UserLabel::Text(text)),
            serde_json::Value::Number(n) => pricing_core::domain::whole_number(&n)
                .map(UserLabel::Number)
                .ok_or_else(|| D::Error::custom(format!("user_id must be text or a whole number, got {n}"))),
            other => Err(D::Error::custom(format!("user_id must be text or a whole number, got {other}"))),
        }
    }
}

impl utoipa::PartialSchema for UserLabel {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(255))
                    .pattern(Some(pricing_core::domain::PRINTABLE_NONBLANK_PATTERN)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
            )))
            .description(Some("A guest's label for themselves: it grants nothing"))
            .into()
    }
}

impl ToSchema for UserLabel {}

impl UserLabel {
    fn text(&self) -> String {
        match self {
            UserLabel::Text(t) => t.clone(),
            UserLabel::Number(n) => n.to_string(),
        }
    }
}
