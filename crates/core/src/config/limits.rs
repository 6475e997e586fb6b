//! What one request may ask: the caps every handler checks, read with the other settings. Apart from
//! `mod.rs` so the settings' one list stays short; `Settings::check` calls `Limits::check`.

use std::time::Duration;

/// What one request may ask. Every cap answers with a JSON error naming it, and none is hidden in a handler.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 beyond it).
    pub max_body_bytes: usize,
    /// A request not answered within this gets a 503 (an order it started may still commit: retry it with
    /// the same `Idempotency-Key`).
    pub request_timeout: Duration,
    /// Longest wait for a PostgreSQL connection from the pool before a 503, so an outage never hangs a request.
    pub database_acquire_timeout: Duration,
    /// Largest `page_size` of any list.
    pub max_page_size: i64,
    /// Most lines one order may have.
    pub max_order_items: usize,
    /// Largest quantity one order line may ask for.
    pub max_quantity: i32,
    /// Longest free text (names, categories, user ids, searches), in characters: at most 255, the columns'
    /// own limit.
    pub max_text_len: usize,
}

impl Limits {
    /// The caps the schema itself enforces cannot be raised, and none may be zero.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=255).contains(&self.max_text_len), "MAX_TEXT_LEN must be between 1 and 255");
        anyhow::ensure!(self.max_page_size >= 1, "MAX_PAGE_SIZE must be at least 1");
        anyhow::ensure!(self.max_order_items >= 1, "MAX_ORDER_ITEMS must be at least 1");
        anyhow::ensure!(self.max_quantity >= 1, "MAX_ORDER_QUANTITY must be at least 1");
        anyhow::ensure!(self.max_body_bytes >= 1024, "MAX_BODY_BYTES must be at least 1024");
        Ok(())
    }
}
