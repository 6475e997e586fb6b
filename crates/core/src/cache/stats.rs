//! What the cache stats endpoint reports: this process's hit and miss counts (kept in memory: counting in
//! Redis would double its load) and the server's clients, memory and key count (of every primary, on a cluster).

use std::sync::atomic::{AtomicU64, Ordering};

use redis::cluster_routing::{AggregateOp, MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};

use super::{Cache, RedisConnection};
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

    /// For the cache stats endpoint: connected clients and used memory (`INFO`), and the key count
    /// (`DBSIZE`), summed over every primary on a cluster. All O(1): nothing walks the keyspace.
    pub async fn server_info(&self) -> Result<(u64, u64, u64)> {
        let mut conn = self.conn().await?;
        let RedisConnection::Cluster(cluster) = &self.connections[0] else {
            let (info, keys): (redis::InfoDict, u64) = redis::pipe()
                .cmd("INFO")
                .arg("clients")
                .arg("memory")
                .cmd("DBSIZE")
                .query_async(&mut conn)
                .await?;
            return Ok((
                info.get("connected_clients").unwrap_or(0),
                info.get("used_memory").unwrap_or(0),
                keys,
            ));
        };
        let mut cluster = cluster.clone();
        let primaries = || MultipleNodeRoutingInfo::AllMasters;
        let mut info = redis::cmd("INFO");
        info.arg("clients").arg("memory");
        // No policy: one reply per primary, keyed by its address.
        let per_node = cluster.route_command(info, RoutingInfo::MultiNode((primaries(), None))).await?;
        let (mut clients, mut memory) = (0, 0);
        for (_, reply) in redis::from_redis_value::<Vec<(String, redis::InfoDict)>>(per_node)
            .map_err(redis::RedisError::from)?
        {
            clients += reply.get::<u64>("connected_clients").unwrap_or(0);
            memory += reply.get::<u64>("used_memory").unwrap_or(0);
        }
        let sum = Some(ResponsePolicy::Aggregate(AggregateOp::Sum));
        let keys =
            cluster.route_command(redis::cmd("DBSIZE"), RoutingInfo::MultiNode((primaries(), sum))).await?;
        Ok((clients, memory, redis::from_redis_value(keys).map_err(redis::RedisError::from)?))
    }
}
