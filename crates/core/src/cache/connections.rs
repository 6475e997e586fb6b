//! How the cache reaches Redis: the factory for multiplexed, self-reconnecting connections (also used by
//! the job queues and the listener's blocking reads), and the `Cache`'s handful of shared connections,
//! handed out round-robin behind the circuit breaker.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Script,
};

use super::{
    breaker::{Breaker, GuardedConnection},
    scripts::{PRODUCTS_CHANGED, SET_IF_NEWER},
    Cache, Keys,
};
use crate::Result;

/// How long one Redis command may take before it counts as failed (redis 1.8's default, 500 ms, is too
/// tight for a busy machine).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A multiplexed, self-reconnecting Redis connection with a response timeout a busy machine does not trip
/// (apalis needs a `Clone` connection too).
pub fn redis_connection(redis_url: &str) -> anyhow::Result<ConnectionManager> {
    redis_connection_with_timeout(redis_url, RESPONSE_TIMEOUT)
}

/// The same with another response timeout (a connection that blocks on purpose, e.g. `XREADGROUP BLOCK`,
/// needs one longer than its block).
pub fn redis_connection_with_timeout(
    redis_url: &str,
    timeout: Duration,
) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(redis_url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2);
    // Lazy: a process starts (and reports itself not ready) while Redis is down, and connects when it is back.
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

impl Cache {
    /// Opens `connections` multiplexed connections (lazily: a process starts while Redis is down and
    /// connects when it is back). Each pipelines the requests of many tasks at once, so a handful serve any
    /// load; a pool that checks a connection out per request would add a round trip (PING) to every read.
    pub fn connect(redis_url: &str, prefix: &str, connections: usize) -> anyhow::Result<Self> {
        let connections = (0..connections.max(1))
            .map(|_| redis_connection(redis_url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            connections: connections.into(),
            breaker: Arc::default(),
            next: Arc::default(),
            keys: Keys::new(prefix),
            set_if_newer: Arc::new(Script::new(SET_IF_NEWER)),
            products_changed: Arc::new(Script::new(PRODUCTS_CHANGED)),
            lookups: Arc::default(),
        })
    }

    /// A connection handle (cheap: connections are shared and multiplexed), taken round-robin.
    pub async fn conn(&self) -> Result<GuardedConnection> {
        if self.breaker.is_open() {
            return Err(Breaker::open_error().into());
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.connections.len();
        Ok(GuardedConnection { inner: self.connections[i].clone(), breaker: self.breaker.clone() })
    }

    /// Whether Redis is being skipped (the circuit is open): callers with another way go that way at once.
    pub fn is_unavailable(&self) -> bool {
        self.breaker.is_open()
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await?;
        Ok(())
    }
}
