//! The bulk price recalculation: walks every product in keyset batches, computes each pricing state with
//! the same model the api uses, and writes the cache in one pipeline per batch, recording progress in the
//! task row. One run at a time across all workers: it holds the Redis lock `recalculate_global_lock`
//! (renewed while it runs, released between attempts); a run that finds the lock held ends `skipped`.
//! Transient errors (PostgreSQL or Redis unreachable, a lost lock) are retried with exponential backoff, up
//! to `RECALC_MAX_ATTEMPTS`, resuming after the last finished batch.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use pricing_core::{
    cache::Cache,
    db::{market, products, tasks},
    lock,
    pricing::{demand, model, PricingConfig},
    Error, Settings,
};
use rand::Rng;
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecalcOutcome {
    Succeeded {
        processed: i64,
    },
    /// Another recalculation held the lock.
    Skipped,
    Failed(String),
    /// The task had already finished or is running elsewhere (a duplicate delivery).
    Duplicate,
}

pub struct Recalculator {
    pub db: PgPool,
    pub cache: Cache,
    pub config: PricingConfig,
    pub settings: Arc<Settings>,
    /// Batches that will fail with a transient error before doing anything: for demos and tests of retries.
    pub injected_failures: Arc<AtomicU32>,
}

impl Recalculator {
    pub fn new(db: PgPool, cache: Cache, settings: Arc<Settings>) -> anyhow::Result<Self> {
        Ok(Self {
            config: PricingConfig::from_settings(&settings)?,
            db,
            cache,
            settings,
            injected_failures: Arc::default(),
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn run(&self, task_id: Uuid) -> pricing_core::Result<RecalcOutcome> {
        let s = &self.settings;
        let lock_key = self.cache.keys.recalculate_lock();
        let mut lock_waits = 0;
        loop {
            let owner = task_id.to_string();
            let Some(lease) =
                lock::try_acquire_for(&self.cache, &lock_key, s.recalc_lock_ttl, &owner).await?
            else {
                if lock::holder(&self.cache, &lock_key).await?.as_deref() == Some(owner.as_str()) {
                    // Another delivery of this very task holds the lock: it is the one that runs.
                    return Ok(RecalcOutcome::Duplicate);
                }
                if tasks::skip(&self.db, task_id, "another recalculation was running").await? {
                    tracing::info!(%task_id, "recalculation skipped: the lock is held");
                    return Ok(RecalcOutcome::Skipped);
                }
                let task = tasks::get(&self.db, task_id).await?;
                if task.status != "queued" {
                    return Ok(RecalcOutcome::Duplicate);
                }
                // A retry of a task that already did part of the work: wait for the other run to finish.
                lock_waits += 1;
                if lock_waits > MAX_LOCK_WAITS {
                    tasks::finish(&self.db, task_id, "skipped", Some("another recalculation kept the lock"))
                        .await?;
                    return Ok(RecalcOutcome::Skipped);
                }
                tokio::time::sleep(backoff(lock_waits)).await;
                continue;
            };
            let lease = Arc::new(lease);
            // A running task is re-taken only once its heartbeat is older than the lock's lease.
            let Some(task) = tasks::start(&self.db, task_id, s.recalc_lock_ttl).await? else {
                lease.release(&self.cache).await?;
                return Ok(RecalcOutcome::Duplicate);
            };
            tracing::info!(%task_id, attempt = task.attempts, from_product = task.cursor, "recalculation started");
            let (stop, lost) = (CancellationToken::new(), CancellationToken::new());
            let renewer = lease.clone().keep_alive(self.cache.clone(), stop.clone(), lost.clone());
            let result = self.walk(task_id, task.cursor, &lost).await;
            stop.cancel();
            let _ = renewer.await;
            if let Err(e) = lease.release(&self.cache).await {
                tracing::warn!(error = %e, "could not release the lock; it expires on its own");
            }
            match result {
                Ok(()) => {
                    tasks::finish(&self.db, task_id, "succeeded", None).await?;
                    let processed = tasks::get(&self.db, task_id).await?.processed;
                    tracing::info!(%task_id, processed, "recalculation succeeded");
                    return Ok(RecalcOutcome::Succeeded { processed });
                }
                Err(e) if is_transient(&e) && task.attempts < s.recalc_max_attempts => {
                    let delay = backoff(task.attempts);
                    tracing::warn!(%task_id, attempt = task.attempts, error = %e, ?delay, "recalculation failed; retrying");
                    tasks::record_retry(&self.db, task_id, &e.to_string()).await?;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let reason = format!("{e} (attempt {} of {})", task.attempts, s.recalc_max_attempts);
                    tracing::error!(%task_id, %reason, "recalculation failed");
                    tasks::finish(&self.db, task_id, "failed", Some(&reason)).await?;
                    return Ok(RecalcOutcome::Failed(reason));
                }
            }
        }
    }

    /// Recomputes every product after `cursor`, batch by batch.
    async fn walk(
        &self,
        task_id: Uuid,
        mut cursor: i64,
        lost: &CancellationToken,
    ) -> pricing_core::Result<()> {
        let remaining = products::count_after(&self.db, cursor).await?;
        let done = tasks::get(&self.db, task_id).await?.processed;
        tasks::set_total(&self.db, task_id, done + remaining).await?;
        let window = self.settings.demand_window_minutes;
        let price_ttl = self.settings.price_cache_ttl;
        loop {
            if lost.is_cancelled() {
                return Err(Error::Unavailable("lost the recalculation lock".into()));
            }
            let injected =
                self.injected_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if injected.is_ok() {
                return Err(Error::Unavailable("injected transient failure".into()));
            }
            let batch = products::batch_after(&self.db, cursor, self.settings.recalc_batch_size).await?;
            let Some(last) = batch.last() else { return Ok(()) };
            let last_id = last.id;
            let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
            let (recent, markets) = tokio::try_join!(
                demand::recent_orders(&self.cache, &ids, window),
                market::multipliers_for_products(&self.db, &ids),
            )?;
            let markets: HashMap<i64, Decimal> = markets.into_iter().collect();
            let now = Utc::now();
            let entries: Vec<(String, i64, String)> = batch
                .into_iter()
                .zip(recent)
                .map(|(product, recent_orders)| {
                    let market_multiplier = markets.get(&product.id).copied();
                    let pricing = model::product_pricing(
                        &model::PricingInputs {
                            product_id: product.id,
                            sku: product.sku,
                            version: product.version,
                            base_price: product.price,
                            stock: product.stock,
                            recent_orders,
                            market_multiplier,
                        },
                        &self.config,
                        now,
                    );
                    let json = serde_json::to_string(&pricing).expect("pricing serializes");
                    (self.cache.keys.price(product.id), product.version, json)
                })
                .collect();
            let count = entries.len() as i64;
            self.cache.set_versioned_many(&entries, || Cache::jittered(price_ttl)).await?;
            cursor = last_id;
            tasks::record_progress(&self.db, task_id, count, cursor).await?;
        }
    }
}

/// Waits for another run's lock before a partly done task gives up: with the 10 s backoff cap, minutes,
/// longer than a whole run of a million products takes.
const MAX_LOCK_WAITS: i32 = 30;

/// Connection trouble and a lost lock pass; anything else (a bug, bad data) would fail again.
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Database(_) | Error::Redis(_) | Error::Unavailable(_))
}

/// 200 ms, 400 ms, 800 ms ... capped at 10 s, with up to 25% jitter.
fn backoff(attempt: i32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.clamp(1, 16).saturating_sub(1)).min(10_000);
    Duration::from_millis(base + rand::rng().random_range(0..=base / 4))
}
