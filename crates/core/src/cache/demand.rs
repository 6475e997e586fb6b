//! Order velocity: how many orders each product had in the last `DEMAND_WINDOW_MINUTES`, kept cheaply in
//! Redis as one hash per minute (product id -> orders) that expires after the window. A sale is counted by
//! `Cache::products_changed` (a pipeline of HINCRBY beside the script that refreshes the cache); reading
//! sums the window's buckets. Every bucket carries the demand tag (`keys.rs`), so each of these pipelines
//! touches one cluster slot.

use std::collections::HashMap;

use chrono::Utc;

use super::{Cache, Keys};
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
    let pipe = window_read(&cache.keys, product_ids, window_minutes, current_minute());
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
    let keys = window_buckets(&cache.keys, window_minutes, current_minute());
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

/// The buckets of the window ending at minute `now`.
pub(super) fn window_buckets(keys: &Keys, window_minutes: u32, now: i64) -> Vec<String> {
    window(window_minutes, now).map(|minute| keys.demand_bucket(minute)).collect()
}

/// `HMGET` of these products from each bucket of the window.
pub(super) fn window_read(
    keys: &Keys,
    product_ids: &[i64],
    window_minutes: u32,
    now: i64,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for bucket in window_buckets(keys, window_minutes, now) {
        pipe.cmd("HMGET").arg(bucket).arg(product_ids);
    }
    pipe
}

/// Counts each sale's orders in the current bucket, which lives a little longer than the window.
pub(super) fn count_sales(
    keys: &Keys,
    sold: &[(i64, u32)],
    window_minutes: u32,
    now: i64,
) -> Option<redis::Pipeline> {
    let sold: Vec<_> = sold.iter().filter(|(_, orders)| *orders > 0).collect();
    if sold.is_empty() {
        return None;
    }
    let bucket = keys.demand_bucket(now);
    let mut pipe = redis::pipe();
    for (product_id, orders) in sold {
        pipe.cmd("HINCRBY").arg(&bucket).arg(product_id).arg(orders).ignore();
    }
    pipe.cmd("EXPIRE").arg(&bucket).arg((u64::from(window_minutes) + 2) * 60).ignore();
    Some(pipe)
}

/// The minutes of the demand window, ending with `now`.
fn window(window_minutes: u32, now: i64) -> std::ops::RangeInclusive<i64> {
    (now - i64::from(window_minutes) + 1)..=now
}
