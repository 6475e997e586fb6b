//! What the cache stats endpoint reports: this process's hit and miss counts (kept in memory: counting in
//! Redis would double its load) and the server's clients, memory and key count.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Cache;
use crate::Result;

/// Hits and misses of this process's cache reads.
#[derive(Debug, Default)]
pub struct LookupCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl Cache {
    /// Counts a cache hit or miss of this process.
    pub fn count_lookup(&self, hit: bool) {
        let counter = if hit { &self.lookups.hits } else { &self.lookups.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(hits, misses)` of this process since it started.
    pub fn lookup_counts(&self) -> (u64, u64) {
        (self.lookups.hits.load(Ordering::Relaxed), self.lookups.misses.load(Ordering::Relaxed))
    }

    /// For the cache stats endpoint: connected clients and used memory (`INFO`), and the database's key
    /// count (`DBSIZE`). All O(1): nothing walks the keyspace.
    pub async fn server_info(&self) -> Result<(u64, u64, u64)> {
        let mut conn = self.conn().await?;
        let (info, keys): (redis::InfoDict, u64) = redis::pipe()
            .cmd("INFO")
            .arg("clients")
            .arg("memory")
            .cmd("DBSIZE")
            .query_async(&mut conn)
            .await?;
        Ok((info.get("connected_clients").unwrap_or(0), info.get("used_memory").unwrap_or(0), keys))
    }
}
