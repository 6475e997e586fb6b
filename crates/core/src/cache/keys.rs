//! The one place that names Redis keys, and the one rule that places them on a Redis Cluster.
//!
//! Every key starts with the configured prefix, so several deployments (or parallel tests) share one Redis
//! without touching each other's data.
//!
//! **Hash tags.** On a cluster a command, script or pipeline may only touch keys of one slot, and a key's slot
//! is decided by its hash tag (the text between the first `{` and `}`) when it has one. So:
//! - a product's keys (its cached row and its pricing state) share the tag of its id range, `{r<id / 100>}`
//!   ([`IDS_PER_TAG`]): the post-sale script and the recalculation's batched writes each touch one range at
//!   a time, and the ranges spread over every primary;
//! - the demand buckets share `{demand}`: a walk reads whole minutes (`HGETALL`), and a sale's counts go in
//!   one pipeline beside the post-sale script;
//! - every job queue's keys carry apalis-redis's global key as their tag, `{core:apalis:queues:list}`:
//!   its `register_worker.lua` writes that key beside the queue's own (docs/apalis-redis.md);
//! - the rest (SKU lookups, the recalculation lock, the market-event streams) are used one key at a time
//!   and need no tag.
//!
//! A unit test (`cache::slots`) checks that every script and pipeline keeps to one slot.

use std::collections::BTreeMap;

/// Product ids per hash tag: big enough that a recalculation batch touches few tags, small enough that
/// the ranges spread over the cluster's primaries.
pub const IDS_PER_TAG: i64 = 100;

/// The tag apalis-redis's `register_worker.lua` needs every queue key to share (it writes this global key).
const QUEUE_TAG: &str = "{core:apalis:queues:list}";

/// The product-id range a product's keys are tagged with.
pub fn tag_of(product_id: i64) -> i64 {
    product_id.div_euclid(IDS_PER_TAG)
}

/// `items` split by the tag of their product id (in tag order; within a tag in the order given): one group
/// per script call or pipeline on a cluster.
pub fn group_by_tag<T>(items: impl IntoIterator<Item = T>, product_id: impl Fn(&T) -> i64) -> Vec<Vec<T>> {
    let mut groups: BTreeMap<i64, Vec<T>> = BTreeMap::new();
    for item in items {
        groups.entry(tag_of(product_id(&item))).or_default().push(item);
    }
    groups.into_values().collect()
}

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
        format!("{}:{{r{}}}:product:{id}", self.prefix, tag_of(id))
    }

    /// A product's cached pricing state (the product-level part of every quote).
    pub fn price(&self, id: i64) -> String {
        format!("{}:{{r{}}}:price:{id}", self.prefix, tag_of(id))
    }

    /// SKU -> product id (a SKU never changes, so this never goes stale).
    pub fn sku(&self, sku: &str) -> String {
        format!("{}:sku:{sku}", self.prefix)
    }

    /// Orders per product in one minute (a hash: product id -> count); the demand window sums the last few.
    pub fn demand_bucket(&self, minute: i64) -> String {
        format!("{}:{{demand}}:{minute}", self.prefix)
    }

    /// The lock that lets one bulk recalculation run at a time across all workers.
    pub fn recalculate_lock(&self) -> String {
        format!("{}:lock:recalculate_global_lock", self.prefix)
    }

    /// The market events stream (consumer group `market_event_listeners`) and the pub/sub channel of the
    /// same name, on which each event is also announced. Other services write to both: the name is part of
    /// the interface.
    pub fn market_events(&self) -> String {
        format!("{}:market_events", self.prefix)
    }

    /// Stream entries the listener could not understand, with the reason.
    pub fn market_events_dead(&self) -> String {
        format!("{}:market_events:dead", self.prefix)
    }

    /// An apalis queue's name; apalis derives its own keys (`{queue}:active`, ...) from it, so they all
    /// carry the queue tag.
    pub fn queue(&self, job_name: &str) -> String {
        format!("{}:{QUEUE_TAG}:queue:{job_name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_prefix_and_its_tag() {
        let keys = Keys::new("t1");
        assert_eq!(keys.product(712), "t1:{r7}:product:712");
        assert_eq!(keys.price(712), "t1:{r7}:price:712");
        assert_eq!(keys.demand_bucket(5), "t1:{demand}:5");
        assert_eq!(keys.queue("orders"), "t1:{core:apalis:queues:list}:queue:orders");
        assert_eq!(keys.recalculate_lock(), "t1:lock:recalculate_global_lock");
        assert_eq!(keys.market_events(), "t1:market_events");
        assert_eq!(keys.market_events_dead(), "t1:market_events:dead");
    }

    #[test]
    fn groups_follow_the_id_ranges() {
        let groups = group_by_tag([5, 250, 99, 100, 201], |id| *id);
        assert_eq!(groups, vec![vec![5, 99], vec![100], vec![250, 201]]);
        assert_eq!(tag_of(-1), -1, "no id is negative, but the rule still gives each id one tag");
    }
}
