//! A Redis lock for work that must run once at a time across all workers (the bulk recalculation).
//!
//! `SET key token NX PX ttl` takes it; only the holder's token can renew or release it (compare-and-set in
//! Lua), so a holder whose lease ran out cannot delete a successor's lock. A holder that dies stops
//! renewing and the lock expires on its own.

use std::{sync::Arc, time::Duration};

use redis::{AsyncCommands, Script};
use tokio_util::sync::CancellationToken;

use crate::{cache::Cache, prometheus::names, Result};

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// A held lock. Dropping it without `release` leaves the lock to expire after its lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub key: String,
    pub token: String,
    pub ttl: Duration,
}

/// Takes the lock if it is free; `None` if someone holds it. Never waits. `purpose` names what the lock is
/// taken for (`holder` tells it to others; may be empty); the token stays unique.
#[tracing::instrument(name = "lock acquire", skip(cache, ttl), fields(db.system.name = "redis"))]
pub async fn try_acquire_for(
    cache: &Cache,
    key: &str,
    ttl: Duration,
    purpose: &str,
) -> Result<Option<Lease>> {
    let token = format!("{purpose}:{}", uuid::Uuid::new_v4());
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
    let taken: Option<String> = cache.conn().await?.set_options(key, &token, options).await?;
    let result = if taken.is_some() { "acquired" } else { "busy" };
    metrics::counter!(names::LOCK_ACQUISITIONS, "lock" => label(key), "result" => result).increment(1);
    Ok(taken.map(|_| Lease { key: key.to_string(), token, ttl }))
}

/// The lock's name without the deployment prefix: a bounded label.
fn label(key: &str) -> String {
    key.rsplit(':').next().unwrap_or(key).to_string()
}

/// What the current holder took the lock for (`try_acquire_for`), if anyone holds it.
pub async fn holder(cache: &Cache, key: &str) -> Result<Option<String>> {
    let token: Option<String> = cache.conn().await?.get(key).await?;
    Ok(token.and_then(|t| t.rsplit_once(':').map(|(purpose, _)| purpose.to_string())))
}

impl Lease {
    /// Extends the lease; `false` if the lock is no longer ours (it expired, someone else took it).
    pub async fn renew(&self, cache: &Cache) -> Result<bool> {
        let renewed: i32 = Script::new(RENEW)
            .key(&self.key)
            .arg(&self.token)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut cache.conn().await?)
            .await?;
        Ok(renewed == 1)
    }

    /// Releases the lock if it is still ours. Returns whether it was.
    pub async fn release(&self, cache: &Cache) -> Result<bool> {
        let released: i32 = Script::new(crate::cache::DELETE_IF_EQUAL)
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut cache.conn().await?)
            .await?;
        Ok(released == 1)
    }

    /// Renews the lease every third of its length until `stop` is cancelled. If renewal shows the lock
    /// was lost, cancels `lost` so the holder stops working. Meanwhile `lock_held_seconds` tells how long
    /// the lock has been held, and a lost lease is counted (`lock_leases_lost_total`).
    pub fn keep_alive(
        self: Arc<Self>,
        cache: Cache,
        stop: CancellationToken,
        lost: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let period = self.ttl / 3;
            let since = std::time::Instant::now();
            let held = metrics::gauge!(names::LOCK_HELD, "lock" => label(&self.key));
            // Exported from the first hold on, so an alert on it sees a 0 rather than no series.
            metrics::counter!(names::LOCK_LEASES_LOST, "lock" => label(&self.key)).increment(0);
            loop {
                held.set(since.elapsed().as_secs_f64());
                tokio::select! {
                    _ = stop.cancelled() => return held.set(0.0),
                    _ = tokio::time::sleep(period) => {}
                }
                match self.renew(&cache).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(key = %self.key, "lock lost: its lease ran out before renewal");
                        metrics::counter!(names::LOCK_LEASES_LOST, "lock" => label(&self.key)).increment(1);
                        lost.cancel();
                        return held.set(0.0);
                    }
                    // A transient error: the lease still has two thirds left; try again next period.
                    Err(e) => tracing::warn!(key = %self.key, error = %e, "lock renewal failed"),
                }
            }
        })
    }
}
