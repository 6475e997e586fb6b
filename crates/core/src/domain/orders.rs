//! Orders: an order and its lines as stored and shown, their status, who bought them, and the counters
//! the statistics read.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

text_enum! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum OrderStatus("order status") {
        Pending => "pending",
        Processing => "processing",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
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

text_enum! {
    /// Why a line costs what it costs: an honoured quote, or the current dynamic price at the sale.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum PriceBasis("price source") {
        Quote => "quote",
        Current => "current",
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

/// What a caller brings to reach an order (`orders::access` issues and checks the tokens). The SQL that
/// applies it is `db::orders::order_access!`.
#[derive(Debug, Clone, Default)]
pub struct OrderAccess {
    /// An admin reaches every order.
    pub admin: bool,
    /// A verified shopper reaches their own.
    pub owner: Option<String>,
    /// The digest of an `X-Order-Token`, which reaches the one order it was issued for.
    pub token_hash: Option<Vec<u8>>,
}
