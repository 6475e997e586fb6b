//! The connections every process opens, in one place: PostgreSQL (created and migrated if needed), the
//! Redis cache, and the job queues.

use sqlx::PgPool;

use crate::{
    cache::{self, Cache, RedisTarget},
    db,
    jobs::{OrderQueue, TaskQueue},
    Settings,
};

#[derive(Clone)]
pub struct Backends {
    pub db: PgPool,
    pub cache: Cache,
    pub orders: OrderQueue,
    pub tasks: TaskQueue,
}

impl Backends {
    /// Connects, lazily, to Redis (a process starts while Redis is down and reports it in its readiness
    /// check; a cluster node given as `REDIS_URL` is refused, before anything else is touched), then to
    /// PostgreSQL (creating the database if needed, then migrating). `cache_connections` multiplexed
    /// connections serve the cache.
    pub async fn connect(
        settings: &Settings,
        cache_connections: usize,
        commits: db::Commits,
    ) -> anyhow::Result<Self> {
        let redis = RedisTarget::from_settings(settings);
        let cache = Cache::connect(&redis, &settings.redis_key_prefix, cache_connections)?;
        cache.refuse_misconfigured().await?;
        let db = db::connect(settings, commits).await?;
        db::migrate(&db).await?;
        let queue_conn = cache::redis_connection(&redis)?;
        metrics::gauge!(crate::prometheus::names::REDIS_CONNECTIONS)
            .set((cache_connections.max(1) + 1) as f64);
        let orders = OrderQueue::new(queue_conn.clone(), &cache.keys);
        let tasks = TaskQueue::new(queue_conn, &cache.keys);
        Ok(Self { db, cache, orders, tasks })
    }
}
