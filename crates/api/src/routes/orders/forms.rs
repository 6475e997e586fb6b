//! How the API description states the order body: exactly one of three shapes, each closed
//! (`additionalProperties: false`), so the rule "send one of `product_id`, `items`, `item_ids`, and
//! `quantity`/`quote_id`/`expected_unit_price` only with `product_id`" is in the schema as well as in
//! `CreateOrder::validate`. These types are never deserialized: `request.rs` reads the body.
#![allow(dead_code)]

use pricing_core::domain::ProductRef;
use serde::Deserialize;
use utoipa::ToSchema;

use super::request::{LineInput, UserLabel};

/// An order: one product, several lines, or the older service's list of ids.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum OrderForms {
    OneProduct(OneProductOrder),
    Lines(LinesOrder),
    ItemIds(ItemIdsOrder),
}

/// One product: `{product_id, quantity}`, with its quote and the unit price the customer saw if any.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OneProductOrder {
    user_id: Option<UserLabel>,
    product_id: ProductRef,
    /// 1 when absent.
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: Option<i32>,
    #[schema(max_length = 1024)]
    quote_id: Option<String>,
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_unit_price: Option<String>,
    #[schema(
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    user_location: Option<String>,
    is_prime_member: Option<bool>,
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_total: Option<String>,
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    total_amount: Option<String>,
}

/// Several lines, each with its own quantity, quote and seen price.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinesOrder {
    user_id: Option<UserLabel>,
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<LineInput>,
    #[schema(
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    user_location: Option<String>,
    is_prime_member: Option<bool>,
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_total: Option<String>,
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    total_amount: Option<String>,
}

/// The older service's form: product ids or SKUs, one of each, and the total the customer saw.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ItemIdsOrder {
    user_id: Option<UserLabel>,
    #[schema(min_items = 1, max_items = 100)]
    item_ids: Vec<ProductRef>,
    #[schema(
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    user_location: Option<String>,
    is_prime_member: Option<bool>,
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    expected_total: Option<String>,
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 9_999_999_999.99, multiple_of = 0.01)]
    total_amount: Option<String>,
}
