//! How every process reaches Redis: one Redis (`REDIS_URL`) or a Redis Cluster (`REDIS_CLUSTER_NODES`),
//! behind one connection type, [`RedisConnection`], that the cache, the job queues (apalis) and the
//! listener's blocking reads all use. On a cluster the `redis` crate's cluster client routes each command
//! to the primary of its key's slot and follows MOVED/ASK and failovers; every multi-key operation here keeps
//! its keys in one slot (the tags in `keys.rs`). The `Cache` holds a handful of shared connections, handed
//! out round-robin behind the circuit breaker.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    Cmd, Pipeline, RedisFuture, Script, Value,
};

use super::{
    breaker::{Breaker, GuardedConnection},
    scripts::{PRODUCTS_CHANGED, SET_IF_NEWER},
    Cache, Keys,
};
use crate::{Result, Settings};

/// How long one Redis command may take before it counts as failed (redis 1.8's default, 500 ms, is too
/// tight for a busy machine).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// Retries of one command on a cluster (after MOVED, ASK, or a node that does not answer).
const CLUSTER_RETRIES: u32 = 3;

/// Which Redis the processes use: one setting decides for all three binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `REDIS_URL`: one Redis server.
    Single(String),
    /// `REDIS_CLUSTER_NODES`: seed nodes of a Redis Cluster (any reachable one reveals the others).
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// `REDIS_CLUSTER_NODES` when set, else `REDIS_URL`.
    pub fn from_settings(settings: &Settings) -> Self {
        if settings.redis_cluster_nodes.is_empty() {
            Self::Single(settings.redis_url.clone())
        } else {
            Self::Cluster(settings.redis_cluster_nodes.clone())
        }
    }

    /// The addresses to open a plain (non-cluster) connection to, in order of preference: the URL, or each
    /// seed node (a SUBSCRIBE on any node of a cluster hears every PUBLISH).
    pub fn node_urls(&self) -> &[String] {
        match self {
            Self::Single(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }
}

/// A multiplexed, self-reconnecting connection to one Redis or to a cluster. Cheap to clone: clones share
/// the underlying sockets.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A connection with the standard response timeout, which a busy machine does not trip.
pub fn redis_connection(target: &RedisTarget) -> anyhow::Result<RedisConnection> {
    redis_connection_with_timeout(target, RESPONSE_TIMEOUT)
}

/// The same with another response timeout (a connection that blocks on purpose, e.g. `XREADGROUP BLOCK`,
/// needs one longer than its block). Lazy either way: a process starts (and reports itself not ready)
/// while Redis is down, and connects when it is back.
pub fn redis_connection_with_timeout(
    target: &RedisTarget,
    timeout: Duration,
) -> anyhow::Result<RedisConnection> {
    match target {
        RedisTarget::Single(url) => {
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(timeout))
                .set_connection_timeout(Some(CONNECTION_TIMEOUT))
                .set_number_of_retries(2);
            let client = redis::Client::open(url.as_str())?;
            Ok(RedisConnection::Single(ConnectionManager::new_lazy_with_config(client, config)?))
        }
        RedisTarget::Cluster(nodes) => {
            // A command on a failed primary is retried while its replica takes over (2 s node timeout and
            // a few more in the drill here): the crate's default waits 1.28 s per retry, up to 16 times, so
            // one order waited 3 to 4 s for its after-sale push. Retried briefly, the step fails fast and
            // its fallback takes over (the sweeper enqueues the job; PostgreSQL answers the quote).
            let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(50)
                .max_retry_wait(400)
                .build()?;
            let config =
                ClusterConfig::new().set_response_timeout(timeout).set_connection_timeout(CONNECTION_TIMEOUT);
            Ok(RedisConnection::Cluster(client.get_pending_async_connection_with_config(config)))
        }
    }
}

impl Cache {
    /// Opens `connections` multiplexed connections (lazily). Each pipelines the requests of many tasks at
    /// once, so a handful serve any load; a pool that checks a connection out per request would add a round
    /// trip (PING) to every read.
    pub fn connect(target: &RedisTarget, prefix: &str, connections: usize) -> anyhow::Result<Self> {
        let connections =
            (0..connections.max(1)).map(|_| redis_connection(target)).collect::<anyhow::Result<Vec<_>>>()?;
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

    /// Whether the cache talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.connections[0].is_cluster()
    }

    /// Whether Redis is being skipped (the circuit is open): callers with another way go that way at once.
    pub fn is_unavailable(&self) -> bool {
        self.breaker.is_open()
    }

    /// Whether Redis answers, as these settings expect it: a node of a cluster reached through `REDIS_URL`
    /// takes single-key commands but refuses most others (jobs could not be queued), so it fails this
    /// check, naming `REDIS_CLUSTER_NODES`.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        if self.is_cluster() {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            return Ok(());
        }
        let info: redis::InfoDict = redis::cmd("INFO").arg("cluster").query_async(&mut conn).await?;
        if info.get::<i64>("cluster_enabled") == Some(1) {
            return Err(crate::Error::Unavailable(CLUSTER_NODE_AS_URL.into()));
        }
        Ok(())
    }
}

/// What a process says (and its readiness fails with) when `REDIS_URL` names a cluster node.
pub const CLUSTER_NODE_AS_URL: &str =
    "REDIS_URL points at a node of a Redis Cluster: set REDIS_CLUSTER_NODES to \
     the cluster's nodes (redis://host:port,...) to use it as a cluster";

impl Cache {
    /// At start: refuses a cluster node given as `REDIS_URL` (left running, the process would accept work
    /// it cannot queue). A Redis that does not answer yet is not refused: readiness reports it, and reports
    /// a cluster node too once it answers.
    pub async fn refuse_misconfigured(&self) -> anyhow::Result<()> {
        match tokio::time::timeout(crate::health::CHECK_TIMEOUT, self.ping()).await {
            Ok(Err(crate::Error::Unavailable(message))) if message == CLUSTER_NODE_AS_URL => {
                anyhow::bail!(message)
            }
            _ => Ok(()),
        }
    }
}
