//! The domain's types: what a product and an order are, as stored in PostgreSQL and shown in JSON, and the
//! rules client input meets. One file per concern; every type is re-exported here, so callers name
//! `domain::X` whichever file holds it.

mod input;
mod orders;
mod products;

pub use input::*;
pub use orders::*;
pub use products::*;

use serde::Serialize;

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
