//! The Redis cache: a few shared multiplexed connections, versioned writes that never let an older copy replace a newer one,
//! and hit/miss counters. Redis only ever holds copies; everything here can be rebuilt from PostgreSQL.

mod breaker;
pub mod demand;
pub mod keys;

pub use breaker::GuardedConnection;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands, Script,
};
use serde::{de::DeserializeOwned, Serialize};

pub use keys::Keys;

use crate::Result;

/// How long one Redis command may take before it counts as failed (redis 1.8's default, 500 ms, is too
/// tight for a busy machine).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Stored values look like `{version}|{json}`; `{version}|null` is a tombstone (the entry was invalidated
/// at that version). The script refuses to write when the stored version is newer, so a slow reader that
/// fetched an old row cannot overwrite the copy or tombstone a writer stored after a later commit. An equal
/// version may be rewritten: the value was computed from the same row (a recalculation refreshing it).
macro_rules! set_if_newer_lua {
    () => {
        r#"
local function set_if_newer(key, version, value, ttl)
    local current = redis.call('GET', key)
    if current then
        local sep = string.find(current, '|', 1, true)
        local v = sep and tonumber(string.sub(current, 1, sep - 1))
        if v and v > tonumber(version) then return 0 end
    end
    redis.call('SET', key, version .. '|' .. value, 'PX', ttl)
    return 1
end
"#
    };
}

/// `set_if_newer` for each key; ARGV holds version, value, ttl per key. Returns how many were written.
const SET_IF_NEWER: &str = concat!(
    set_if_newer_lua!(),
    r#"
local written = 0
for i = 1, #KEYS do
    written = written + set_if_newer(KEYS[i], ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i])
end
return written
"#
);

/// Keys per script call in `set_versioned_many`: enough to spread the call's cost, few enough that Redis
/// never blocks other clients for long (about 0.1 ms).
const KEYS_PER_CALL: usize = 100;

/// After committed changes to products, in one round trip: each product's new row stored for `/cached`,
/// its pricing state replaced by a tombstone of the new version, and, for a sale, its orders counted per
/// product in the current demand bucket (the last key).
/// KEYS: product key, price key (per product), demand bucket. ARGV: product ttl ms, price ttl ms, demand
/// bucket ttl s, then per product: version, row json, id, orders sold (0: none).
const PRODUCTS_CHANGED: &str = concat!(
    set_if_newer_lua!(),
    r#"
local sold = 0
for i = 1, (#KEYS - 1) / 2 do
    local at = 3 + 4 * (i - 1)
    local version, json, id, orders = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
    set_if_newer(KEYS[2 * i - 1], version, json, ARGV[1])
    set_if_newer(KEYS[2 * i], version, 'null', ARGV[2])
    if orders > 0 then
        redis.call('HINCRBY', KEYS[#KEYS], id, orders)
        sold = sold + orders
    end
end
if sold > 0 then redis.call('EXPIRE', KEYS[#KEYS], ARGV[3]) end
return 1
"#
);

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

/// Deletes a key only if it still holds the value that was read (a corrupt entry here, a lock's token in
/// `lock`).
pub(crate) const DELETE_IF_EQUAL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// What a versioned read found.
#[derive(Debug)]
pub enum Lookup<T> {
    Hit(T),
    /// A tombstone: invalidated after the commit that made this version.
    Invalidated(i64),
    Missing,
}

/// Hits and misses of this process's cache reads (in memory: counting in Redis would double its load).
#[derive(Debug, Default)]
pub struct LookupCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// What `products_changed` needs to know besides the products.
#[derive(Debug, Clone, Copy)]
pub struct ProductChange {
    pub product_ttl: Duration,
    pub price_ttl: Duration,
    pub demand_window_minutes: u32,
}

impl ProductChange {
    pub fn new(settings: &crate::Settings) -> Self {
        Self {
            product_ttl: settings.cache_ttl,
            price_ttl: settings.price_cache_ttl,
            demand_window_minutes: settings.demand_window_minutes,
        }
    }
}

#[derive(Clone)]
pub struct Cache {
    connections: Arc<[ConnectionManager]>,
    /// Opened by a command that finds Redis unreachable; while open, commands fail at once.
    breaker: Arc<breaker::Breaker>,
    next: Arc<AtomicU64>,
    pub keys: Keys,
    set_if_newer: Arc<Script>,
    products_changed: Arc<Script>,
    pub lookups: Arc<LookupCounts>,
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
            return Err(breaker::Breaker::open_error().into());
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.connections.len();
        Ok(GuardedConnection { inner: self.connections[i].clone(), breaker: self.breaker.clone() })
    }

    /// Whether Redis is being skipped (the circuit is open): callers with another way go that way at once.
    pub fn is_unavailable(&self) -> bool {
        self.breaker.is_open()
    }

    /// Reads a versioned value; a missing, invalidated, corrupt or old-format entry is `None` (a miss).
    pub async fn get_versioned<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(match self.lookup(key).await? {
            Lookup::Hit(value) => Some(value),
            Lookup::Invalidated(_) | Lookup::Missing => None,
        })
    }

    /// Reads a versioned value and tells a miss on an invalidated entry (with its version) from one on an
    /// absent entry.
    #[tracing::instrument(name = "cache lookup", skip_all, fields(db.system.name = "redis"))]
    pub async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Result<Lookup<T>> {
        let raw: Option<String> = self.conn().await?.get(key).await?;
        self.decode_entry(key, raw).await
    }

    /// Reads several entries in one round trip (`MGET`), raw; decode each with `decode_entry`.
    #[tracing::instrument(name = "cache get many", skip_all, fields(db.system.name = "redis"))]
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut self.conn().await?).await?)
    }

    /// Decodes an entry read from `key`. A corrupt or older-format entry is dropped (unless it changed
    /// meanwhile) so the recomputed value can take its place, and counts as missing.
    pub async fn decode_entry<T: DeserializeOwned>(
        &self,
        key: &str,
        raw: Option<String>,
    ) -> Result<Lookup<T>> {
        let Some(raw) = raw else { return Ok(Lookup::Missing) };
        let decoded = match raw.split_once('|').map(|(v, json)| (v.parse::<i64>(), json)) {
            Some((Ok(version), "null")) => return Ok(Lookup::Invalidated(version)),
            Some((Ok(_), json)) => serde_json::from_str(json).map_err(|e| e.to_string()),
            _ => Err("not a versioned entry".to_string()),
        };
        match decoded {
            Ok(value) => Ok(Lookup::Hit(value)),
            Err(error) => {
                tracing::warn!(key, %error, "corrupt cache entry, treating as a miss");
                let _: i32 = Script::new(DELETE_IF_EQUAL)
                    .key(key)
                    .arg(&raw)
                    .invoke_async(&mut self.conn().await?)
                    .await?;
                Ok(Lookup::Missing)
            }
        }
    }

    /// Writes `value` unless the cache already holds `version` or newer. Returns whether it wrote.
    #[tracing::instrument(name = "cache set versioned", skip_all, fields(db.system.name = "redis"))]
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

    /// Writes many versioned values in one pipeline of script calls, `KEYS_PER_CALL` keys each (the bulk
    /// recalculation). Returns how many were written.
    #[tracing::instrument(name = "cache set versioned many", skip_all, fields(db.system.name = "redis"))]
    pub async fn set_versioned_many(
        &self,
        entries: &[(String, i64, String)],
        ttl: impl Fn() -> Duration,
    ) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn().await?;
        // Load the script once so the pipeline can use EVALSHA.
        let _: String = redis::cmd("SCRIPT").arg("LOAD").arg(SET_IF_NEWER).query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        for chunk in entries.chunks(KEYS_PER_CALL) {
            let call = pipe.cmd("EVALSHA").arg(self.set_if_newer.get_hash()).arg(chunk.len());
            for (key, _, _) in chunk {
                call.arg(key);
            }
            for (_, version, json) in chunk {
                call.arg(*version).arg(json).arg(ttl().as_millis() as u64);
            }
        }
        let written: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(written.iter().sum())
    }

    /// After a commit that changed products (an update, a sale, stock given back): stores their new rows
    /// for `/cached`, invalidates their pricing states as of the new versions and counts the orders sold
    /// of each (0: not a sale) for the demand multiplier; one script, one round trip. Best effort: a Redis
    /// failure is logged, and the versioned entries still refuse anything older than what PostgreSQL
    /// committed.
    #[tracing::instrument(name = "cache products changed", skip_all, fields(db.system.name = "redis"))]
    pub async fn products_changed(
        &self,
        products: &[(&crate::domain::Product, u32)],
        change: &ProductChange,
    ) {
        if products.is_empty() {
            return;
        }
        let mut invocation = self.products_changed.prepare_invoke();
        for (product, _) in products {
            invocation.key(self.keys.product(product.id)).key(self.keys.price(product.id));
        }
        invocation
            .key(self.keys.demand_bucket(demand::current_minute()))
            .arg(change.product_ttl.as_millis() as u64)
            .arg(change.price_ttl.as_millis() as u64)
            .arg((u64::from(change.demand_window_minutes) + 2) * 60);
        for (product, orders) in products {
            let json = serde_json::to_string(product).expect("products serialize");
            invocation.arg(product.version).arg(json).arg(product.id).arg(*orders);
        }
        let result: Result<i32> = match self.conn().await {
            Ok(mut conn) => invocation.invoke_async(&mut conn).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let ids: Vec<i64> = products.iter().map(|(p, _)| p.id).collect();
            tracing::warn!(?ids, error = %e, "could not refresh the cached products");
        }
    }

    /// Drops the pricing states of these products (a market signal changed them), so the next quote
    /// recomputes them. One pipeline.
    #[tracing::instrument(name = "cache forget pricing", skip_all, fields(db.system.name = "redis"))]
    pub async fn forget_pricing(&self, product_ids: &[i64]) -> Result<()> {
        if product_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for chunk in product_ids.chunks(1_000) {
            pipe.cmd("UNLINK").arg(chunk.iter().map(|id| self.keys.price(*id)).collect::<Vec<_>>()).ignore();
        }
        let () = pipe.query_async(&mut self.conn().await?).await?;
        Ok(())
    }

    /// After a product was deleted: tombstones of the highest version for its row and its pricing state (a
    /// reader that fetched it just before the delete cannot write it back), and its SKU forgotten (the SKU
    /// may be reused by a new product).
    pub async fn product_deleted(&self, product: &crate::domain::Product, ttl: Duration) {
        let row = self.invalidate(&self.keys.product(product.id), i64::MAX, ttl).await;
        let price = self.invalidate(&self.keys.price(product.id), i64::MAX, ttl).await;
        let sku = self.delete(&self.keys.sku(&product.sku)).await;
        if let Err(e) = row.and(price).and(sku) {
            tracing::warn!(product_id = product.id, error = %e, "could not clear the deleted product's cache");
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let _: () = self.conn().await?.del(key).await?;
        Ok(())
    }

    /// Invalidates an entry as of `version`: a tombstone that only a value of that version or newer replaces.
    pub async fn invalidate(&self, key: &str, version: i64, ttl: Duration) -> Result<()> {
        self.set_versioned(key, version, &serde_json::Value::Null, ttl).await?;
        Ok(())
    }

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

    /// `ttl` shortened by up to 10% at random, so entries written together do not all expire together.
    pub fn jittered(ttl: Duration) -> Duration {
        use rand::Rng;
        ttl.mul_f64(1.0 - rand::rng().random_range(0.0..0.1))
    }

    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await?;
        Ok(())
    }
}

/// `{version}|{json}`: how every versioned entry is stored (the Lua scripts above write the same shape).
pub fn encode_versioned(version: i64, json: &str) -> String {
    format!("{version}|{json}")
}

/// Decodes `{version}|{json}`; `None` for a tombstone or anything that does not decode.
pub fn decode_versioned<T: DeserializeOwned>(raw: &str) -> Option<T> {
    let (version, json) = raw.split_once('|')?;
    version.parse::<i64>().ok()?;
    if json == "null" {
        return None;
    }
    serde_json::from_str(json).ok()
}
