//! The one place that names Redis keys. Every key starts with the configured prefix, so several
//! deployments (or parallel tests) share one Redis without touching each other's data.

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Pattern matching every key of this deployment (for `SCAN`).
    pub fn all(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The cached product row served by `GET /products/{id}/cached`.
    pub fn product(&self, id: i64) -> String {
        format!("{}:product:{id}", self.prefix)
    }

    /// A product's cached pricing state (the product-level part of every quote).
    pub fn price(&self, id: i64) -> String {
        format!("{}:price:{id}", self.prefix)
    }

    /// SKU -> product id (a SKU never changes, so this never goes stale).
    pub fn sku(&self, sku: &str) -> String {
        format!("{}:sku:{sku}", self.prefix)
    }

    /// Orders per product in one minute (a hash: product id -> count); the demand window sums the last few.
    pub fn demand_bucket(&self, minute: i64) -> String {
        format!("{}:demand:{minute}", self.prefix)
    }

    /// The lock that lets one bulk recalculation run at a time across all workers.
    pub fn recalculate_lock(&self) -> String {
        format!("{}:lock:recalculate_global_lock", self.prefix)
    }

    /// The market events stream (consumer group `market_event_listeners`) and the pub/sub channel of the
    /// same name, on which each event is also announced.
    pub fn market_events(&self) -> String {
        format!("{}:market_events", self.prefix)
    }

    /// Stream entries the listener could not understand, with the reason.
    pub fn market_events_dead(&self) -> String {
        format!("{}:market_events:dead", self.prefix)
    }

    /// An apalis queue's name; apalis derives its own keys (`{queue}:active`, ...) from it.
    pub fn queue(&self, job_name: &str) -> String {
        format!("{}:queue:{job_name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_prefix() {
        let keys = Keys::new("t1");
        assert_eq!(keys.product(7), "t1:product:7");
        assert_eq!(keys.queue("orders"), "t1:queue:orders");
        assert_eq!(keys.price(7), "t1:price:7");
        assert_eq!(keys.recalculate_lock(), "t1:lock:recalculate_global_lock");
        assert_eq!(keys.market_events(), "t1:market_events");
        assert_eq!(keys.market_events_dead(), "t1:market_events:dead");
    }
}
