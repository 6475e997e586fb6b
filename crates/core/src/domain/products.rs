//! Products: the catalogue row, its writes, how an order or an event names a product (id or SKU, and the
//! one SKU rule) and which products a recalculation covers.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::whole_float;

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

impl std::fmt::Display for ProductRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProductRef::Id(id) => write!(f, "{id}"),
            ProductRef::Sku(sku) => f.write_str(sku),
        }
    }
}

/// The longest SKU.
pub const MAX_SKU_LEN: usize = 64;

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
