//! Order velocity: how many orders each product had in the last `DEMAND_WINDOW_MINUTES`, kept cheaply in
//! Redis as one hash per minute (product id -> orders) that expires after the window. A sale is counted by
//! `Cache::products_changed` (HINCRBY in the same script that refreshes the cache); reading sums the
//! window's buckets.

use std::collections::HashMap;

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
    let mut pipe = redis::pipe();
    for minute in window(window_minutes) {
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

/// Orders in the window for every product that has any, read whole (one `HGETALL` per minute): for a walk
/// over many products, where asking for each product (mostly without orders) would cost far more. `None`
/// when the window counts more than `most` entries: then asking per product costs less memory.
pub async fn all_recent_orders(
    cache: &Cache,
    window_minutes: u32,
    most: usize,
) -> Result<Option<HashMap<i64, u64>>> {
    let keys: Vec<String> = window(window_minutes).map(|minute| cache.keys.demand_bucket(minute)).collect();
    let mut sizes = redis::pipe();
    for key in &keys {
        sizes.hlen(key);
    }
    let sizes: Vec<usize> = sizes.query_async(&mut cache.conn().await?).await?;
    if sizes.iter().sum::<usize>() > most {
        return Ok(None);
    }
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.hgetall(key);
    }
    let buckets: Vec<HashMap<i64, u64>> = pipe.query_async(&mut cache.conn().await?).await?;
    let mut totals: HashMap<i64, u64> = HashMap::new();
    for (product_id, count) in buckets.into_iter().flatten() {
        *totals.entry(product_id).or_default() += count;
    }
    Ok(Some(totals))
}

/// The minutes of the demand window, ending with the current one.
fn window(window_minutes: u32) -> std::ops::RangeInclusive<i64> {
    let now = current_minute();
    (now - i64::from(window_minutes.max(1)) + 1)..=now
}
