//! The domain's types: what a product and an order are, as stored in PostgreSQL and shown in JSON.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderItem {
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Order {
    pub id: i64,
    pub user_id: Option<String>,
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

/// Which product a line of an order means: its id, or its SKU (the older order service sent SKUs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProductRef {
    Id(i64),
    Sku(String),
}

impl std::fmt::Display for ProductRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProductRef::Id(id) => write!(f, "{id}"),
            ProductRef::Sku(sku) => f.write_str(sku),
        }
    }
}

/// An order as the client placed it, already validated: at least one line, quantities positive.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub user_id: Option<String>,
    pub lines: Vec<(ProductRef, i32)>,
    /// The total the customer saw, if the client sent one: the order is refused if the server's differs.
    pub expected_total: Option<Decimal>,
    /// Quoted prices being honoured, by product id; other products sell at the price computed from their
    /// locked row.
    pub unit_prices: Vec<(i64, Decimal)>,
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
#[derive(Debug, Clone, Serialize)]
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
