//! The domain's types: what a product and an order are, as stored in PostgreSQL and shown in JSON.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price: Decimal,
    pub stock: i32,
    /// Bumped by a trigger on every change; orders cache writes so an older copy never replaces a newer one.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new product, already validated.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Option<String>,
    pub name: String,
    pub category: String,
    pub price: Decimal,
    pub stock: i32,
}

/// A partial update: `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub category: Option<String>,
    pub price: Option<Decimal>,
    pub stock: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Processing,
        OrderStatus::Completed,
        OrderStatus::Failed,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Processing => "processing",
            OrderStatus::Completed => "completed",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl TryFrom<String> for OrderStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown order status {s:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OrderItem {
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price: Decimal,
    #[sqlx(try_from = "String")]
    pub price_source: PriceBasis,
}

/// Why a line costs what it costs: an honoured quote, or the current dynamic price at the sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PriceBasis {
    Quote,
    Current,
}

impl PriceBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceBasis::Quote => "quote",
            PriceBasis::Current => "current",
        }
    }
}

impl TryFrom<String> for PriceBasis {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "quote" => Ok(PriceBasis::Quote),
            "current" => Ok(PriceBasis::Current),
            other => Err(format!("unknown price source {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Order {
    pub id: i64,
    /// The verified shopper who owns it (their token's `sub`); `None` for a guest's order.
    pub user_id: Option<String>,
    /// A guest's own label for themselves, as their client sent it; it grants nothing.
    #[serde(default)]
    pub guest_label: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    pub total_price: Decimal,
    /// Processing deliveries so far (fulfilment tries and crashed deliveries), counted in PostgreSQL.
    pub attempts: i32,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub items: Vec<OrderItem>,
}

impl Order {
    /// An order just placed: `pending`, not yet tried.
    pub fn placed(
        id: i64,
        created_at: DateTime<Utc>,
        buyer: &Buyer,
        total_price: Decimal,
        items: Vec<OrderItem>,
    ) -> Self {
        Self {
            id,
            user_id: buyer.user_id().map(str::to_string),
            guest_label: buyer.guest_label().map(str::to_string),
            status: OrderStatus::Pending,
            total_price,
            attempts: 0,
            failure_reason: None,
            created_at,
            updated_at: created_at,
            processing_started_at: None,
            completed_at: None,
            items,
        }
    }
}

/// Who places an order: a shopper verified by their bearer token, or a guest (who may label themselves,
/// as the older clients' `user_id` did, but that label grants nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buyer {
    Shopper(String),
    Guest { label: Option<String> },
}

impl Buyer {
    /// The verified shopper's id.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Buyer::Shopper(sub) => Some(sub),
            Buyer::Guest { .. } => None,
        }
    }

    pub fn guest_label(&self) -> Option<&str> {
        match self {
            Buyer::Guest { label } => label.as_deref(),
            Buyer::Shopper(_) => None,
        }
    }
}

/// Which product a line of an order means: its id, or its SKU (the older order service sent SKUs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProductRef {
    Id(i64),
    Sku(String),
}

/// In the API description: a positive integer id, or a SKU.
impl utoipa::PartialSchema for ProductRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
            )))
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(SKU_PATTERN)))
            .description(Some("A product id, or its SKU"))
            .into()
    }
}

impl utoipa::ToSchema for ProductRef {}

/// In JSON a product is named by its id (a positive integer, or digits in a string) or by its SKU.
impl<'de> Deserialize<'de> for ProductRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProductRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a product id (positive integer) or SKU (string)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                ProductRef::id(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map_err(|_| E::custom("product id is too large"))
                    .and_then(|v| self.visit_i64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ProductRef::parse(v).map_err(E::custom)
            }
            /// `1.0` is the integer 1 in JSON Schema: accepted as an id when it is whole.
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                match whole_float(v) {
                    Some(id) => self.visit_i64(id),
                    None => Err(E::custom(format!("product id must be a positive integer, got {v}"))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for ProductRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ProductRef::Id(id) => s.serialize_i64(*id),
            ProductRef::Sku(sku) => s.serialize_str(sku),
        }
    }
}

/// The longest SKU.
pub const MAX_SKU_LEN: usize = 64;

impl ProductRef {
    /// Reads a product named in text: digits are an id (positive), anything else a SKU (`validate_sku`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(id) = text.parse::<i64>() {
            return Self::id(id);
        }
        validate_sku(text).map(ProductRef::Sku)
    }

    /// A product id, which must be positive.
    pub fn id(id: i64) -> Result<Self, String> {
        if id > 0 {
            Ok(ProductRef::Id(id))
        } else {
            Err("product id must be a positive integer".into())
        }
    }
}

/// `is_printable_text` as the API description states it (a JSON Schema pattern).
pub const PRINTABLE_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$";
/// The same, for text that must not be blank (it is trimmed, then must keep a character).
pub const PRINTABLE_NONBLANK_PATTERN: &str =
    "^(?=.*\\S)[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$";

/// The integer a JSON number stands for, written `3` or `3.0` (JSON Schema's `integer` admits both);
/// `None` for a fraction or a float too large to be exact. The one rule for "whole number" in a body.
pub fn whole_number(value: &serde_json::Number) -> Option<i64> {
    value.as_i64().or_else(|| whole_float(value.as_f64()?))
}

/// `v` as an integer when it is whole and exact (below 2^53).
pub fn whole_float(v: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
}

/// Reads a whole number (`whole_number`) within `i32`.
pub fn whole_i32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    use serde::de::Error;
    let value = serde_json::Number::deserialize(d)?;
    whole_number(&value)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| D::Error::custom(format!("expected a whole number within 32 bits, got {value}")))
}

pub fn whole_i32_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    use serde::Deserialize;
    Option::<serde_json::Value>::deserialize(d)?
        .map(|v| whole_i32(v).map_err(serde::de::Error::custom))
        .transpose()
}

/// The one rule for free text a client sends (names, categories, ids, labels): no control characters
/// (PostgreSQL refuses NUL, and none belongs in a name) and no bidirectional overrides or isolates
/// (U+202A..U+202E, U+2066..U+2069), which make a text display as something other than what it is.
pub fn is_printable_text(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

/// The SKU rule below, as the API description states it.
pub const SKU_PATTERN: &str = "^(?![0-9]+$)[A-Za-z0-9._-]{1,64}$";

/// The one SKU rule: 1 to 64 letters, digits, '-', '_' or '.', and not digits only (an all-digit SKU
/// would read as a product id where clients may send either). Returns the trimmed SKU.
pub fn validate_sku(sku: &str) -> Result<String, String> {
    let sku = sku.trim();
    let ok = (1..=MAX_SKU_LEN).contains(&sku.len())
        && !sku.chars().all(|c| c.is_ascii_digit())
        && sku.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(sku.to_string())
    } else {
        Err(format!("sku must be 1 to {MAX_SKU_LEN} letters, digits, '-', '_' or '.', not digits only"))
    }
}

impl std::fmt::Display for ProductRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProductRef::Id(id) => write!(f, "{id}"),
            ProductRef::Sku(sku) => f.write_str(sku),
        }
    }
}

/// Orders by status, and how long processing takes: kept in a small counters table, never a scan of `orders`.
#[derive(Debug, Clone, Serialize)]
pub struct OrderStats {
    pub counts: Vec<(OrderStatus, i64)>,
    pub average_processing_time_seconds: f64,
}

impl OrderStats {
    pub fn count(&self, status: OrderStatus) -> i64 {
        self.counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }

    /// Orders whose processing ended (completed or failed).
    pub fn total_processed(&self) -> i64 {
        self.count(OrderStatus::Completed) + self.count(OrderStatus::Failed)
    }
}

/// A page of results and the numbers a client needs to walk the rest.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
    pub total_pages: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, page: i64, page_size: i64) -> Self {
        let total_pages = if total == 0 { 0 } else { (total + page_size - 1) / page_size };
        Self { items, total, page, page_size, total_pages }
    }
}

/// Which products a recalculation or a market event covers: these ids and these categories; neither means
/// every product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductScope {
    #[serde(default)]
    pub product_ids: Vec<i64>,
    #[serde(default)]
    pub categories: Vec<String>,
}

impl ProductScope {
    pub fn is_all(&self) -> bool {
        self.product_ids.is_empty() && self.categories.is_empty()
    }

    /// Adds another scope to this one (a batch of events starts one recalculation for all of them). Only for
    /// specific scopes: a batch that asks for every product starts a recalculation without a scope instead.
    pub fn merge(&mut self, other: &ProductScope) {
        self.product_ids.extend(&other.product_ids);
        self.product_ids.sort_unstable();
        self.product_ids.dedup();
        self.categories.extend(other.categories.iter().cloned());
        self.categories.sort();
        self.categories.dedup();
    }
}
