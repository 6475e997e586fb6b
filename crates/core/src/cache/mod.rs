//! The Redis cache: a few shared multiplexed connections, versioned writes that never let an older copy
//! replace a newer one, and hit/miss counters. Redis only ever holds copies; everything here can be rebuilt
//! from PostgreSQL.
//!
//! This file holds the `Cache` type; its methods live with their concern:
//! - `connections`: the connection factory and the `Cache`'s shared connections (`connect`, `conn`, `ping`);
//! - `breaker`: the circuit breaker those connections go through;
//! - `scripts`: the Lua scripts (compare-and-set of versioned entries, the post-sale script);
//! - `versioned`: the `{version}|{json}` entry format, its reads (`lookup`, `decode_entry`) and writes;
//! - `products`: what a product change, a market signal or a delete does to the cache;
//! - `stats`: hit/miss counts and the server's figures for the cache stats endpoint;
//! - `keys`: every key's name and the cluster hash-tag rule (`slots` tests it); `demand`: the orders-per-minute
//!   counters.

mod breaker;
mod connections;
pub mod demand;
pub mod keys;
mod products;
mod scripts;
#[cfg(test)]
mod slots;
mod stats;
mod versioned;

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use redis::{AsyncCommands, Script};

pub use breaker::GuardedConnection;
pub use connections::{
    redis_connection, redis_connection_with_timeout, RedisConnection, RedisTarget, RESPONSE_TIMEOUT,
};
pub use keys::Keys;
pub use products::CacheLifetimes;
pub(crate) use scripts::DELETE_IF_EQUAL;
pub use stats::LookupCounts;
pub use versioned::Lookup;

use crate::Result;

#[derive(Clone)]
pub struct Cache {
    connections: Arc<[RedisConnection]>,
    /// Opened by a command that finds Redis unreachable; while open, commands fail at once.
    breaker: Arc<breaker::Breaker>,
    next: Arc<AtomicU64>,
    pub keys: Keys,
    set_if_newer: Arc<Script>,
    products_changed: Arc<Script>,
    pub lookups: Arc<LookupCounts>,
}

impl Cache {
    pub async fn delete(&self, key: &str) -> Result<()> {
        let _: () = self.conn().await?.del(key).await?;
        Ok(())
    }

    /// `ttl` shortened by up to 10% at random, so entries written together do not all expire together.
    pub fn jittered(ttl: Duration) -> Duration {
        use rand::Rng;
        ttl.mul_f64(1.0 - rand::rng().random_range(0.0..0.1))
    }
}
