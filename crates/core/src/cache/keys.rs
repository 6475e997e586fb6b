//! The one place that names Redis keys. Every key starts with the configured prefix, so several
//! deployments (or parallel tests) share one Redis without touching each other's data.

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
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

    /// Hit and miss counters of the cache (a hash with fields `hits`, `misses`).
    pub fn cache_stats(&self) -> String {
        format!("{}:stats:cache", self.prefix)
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
        assert!(keys.cache_stats().starts_with("t1:"));
    }
}
