//! The Redis cache: a pooled connection, versioned writes that never let an older copy replace a newer one,
//! and hit/miss counters. Redis only ever holds copies; everything here can be rebuilt from PostgreSQL.

pub mod keys;

use std::time::Duration;

use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
use redis::{AsyncCommands, Script};
use serde::{de::DeserializeOwned, Serialize};

pub use keys::Keys;

use crate::Result;

/// How long one Redis command may take before it counts as failed (redis 1.8's default, 500 ms, is too
/// tight for a busy machine).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Stored values look like `{version}|{json}`. The script writes only when the stored version is older
/// (or absent), so a slow reader that fetched an old row cannot overwrite the copy a writer just refreshed.
const SET_IF_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
    local sep = string.find(current, '|', 1, true)
    local v = sep and tonumber(string.sub(current, 1, sep - 1))
    if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"#;

#[derive(Clone)]
pub struct Cache {
    pool: Pool,
    pub keys: Keys,
    set_if_newer: std::sync::Arc<Script>,
}

impl Cache {
    pub fn connect(redis_url: &str, prefix: &str, max_size: usize) -> anyhow::Result<Self> {
        let mut config = PoolConfig::from_url(redis_url);
        config.pool = Some(deadpool_redis::PoolConfig {
            max_size,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(Duration::from_secs(3)),
                create: Some(Duration::from_secs(3)),
                recycle: Some(Duration::from_secs(3)),
            },
            ..Default::default()
        });
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self {
            pool,
            keys: Keys::new(prefix),
            set_if_newer: std::sync::Arc::new(Script::new(SET_IF_NEWER)),
        })
    }

    pub async fn conn(&self) -> Result<deadpool_redis::Connection> {
        Ok(self.pool.get().await?)
    }

    /// Reads a versioned value; a missing, corrupt or old-format entry is `None` (a miss).
    pub async fn get_versioned<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let raw: Option<String> = self.conn().await?.get(key).await?;
        Ok(raw.and_then(|raw| {
            let (_, json) = raw.split_once('|')?;
            if json == "null" {
                return None; // a tombstone: the row was deleted
            }
            serde_json::from_str(json)
                .inspect_err(
                    |e| tracing::warn!(key, error = %e, "corrupt cache entry, treating as a miss"),
                )
                .ok()
        }))
    }

    /// Writes `value` unless the cache already holds `version` or newer. Returns whether it wrote.
    pub async fn set_versioned<T: Serialize>(
        &self,
        key: &str,
        version: i64,
        value: &T,
        ttl: Duration,
    ) -> Result<bool> {
        let json = serde_json::to_string(value).expect("cache values serialize");
        let written: i32 = self
            .set_if_newer
            .key(key)
            .arg(version)
            .arg(json)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(written == 1)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let _: () = self.conn().await?.del(key).await?;
        Ok(())
    }

    /// Counts a cache hit or miss (best effort: a failure here never fails a request).
    pub async fn count_lookup(&self, hit: bool) {
        let field = if hit { "hits" } else { "misses" };
        if let Ok(mut conn) = self.conn().await {
            let _: redis::RedisResult<()> = conn.hincr(self.keys.cache_stats(), field, 1).await;
        }
    }

    /// `(hits, misses)` since the counters were last reset.
    pub async fn lookup_counts(&self) -> Result<(u64, u64)> {
        let (hits, misses): (Option<u64>, Option<u64>) = self
            .conn()
            .await?
            .hmget(self.keys.cache_stats(), &["hits", "misses"])
            .await?;
        Ok((hits.unwrap_or(0), misses.unwrap_or(0)))
    }

    /// Keys under this deployment's prefix (SCAN, never KEYS, so Redis is not blocked).
    pub async fn count_keys(&self) -> Result<u64> {
        let mut conn = self.conn().await?;
        let mut iter: redis::AsyncIter<String> = conn.scan_match(self.keys.all()).await?;
        let mut n = 0;
        while let Some(item) = futures::StreamExt::next(&mut iter).await {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// `INFO` fields for the cache stats endpoint.
    pub async fn server_info(&self) -> Result<(u64, u64)> {
        let info: redis::InfoDict = redis::cmd("INFO")
            .query_async(&mut self.conn().await?)
            .await?;
        Ok((
            info.get("connected_clients").unwrap_or(0),
            info.get("used_memory").unwrap_or(0),
        ))
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(())
    }
}
