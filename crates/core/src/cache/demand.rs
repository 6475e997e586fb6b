//! Order velocity: how many orders each product had in the last `DEMAND_WINDOW_MINUTES`, kept cheaply in
//! Redis as one hash per minute (product id -> orders) that expires after the window. A sale is counted by
//! `Cache::products_changed` (HINCRBY in the same script that refreshes the cache); reading sums the
//! window's buckets.

use chrono::Utc;

use super::Cache;
use crate::Result;

/// The demand bucket new orders go to.
pub fn current_minute() -> i64 {
    Utc::now().timestamp() / 60
}

/// Orders in the window for each product, in the order given.
pub async fn recent_orders(cache: &Cache, product_ids: &[i64], window_minutes: u32) -> Result<Vec<u64>> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = current_minute();
    let mut pipe = redis::pipe();
    for minute in (now - i64::from(window_minutes.max(1)) + 1)..=now {
        pipe.cmd("HMGET").arg(cache.keys.demand_bucket(minute)).arg(product_ids);
    }
    let buckets: Vec<Vec<Option<u64>>> = pipe.query_async(&mut cache.conn().await?).await?;
    let mut totals = vec![0u64; product_ids.len()];
    for bucket in buckets {
        for (total, count) in totals.iter_mut().zip(bucket) {
            *total += count.unwrap_or(0);
        }
    }
    Ok(totals)
}
