//! The price recalculation: walks every product (or a task's scope) in keyset batches, computes each pricing
//! state with the same code a quote miss uses, and writes the cache in one pipeline per batch, recording
//! progress in the task row. Reading, computing and writing overlap (`walk`). One run at a time across all
//! workers: it holds the Redis lock `recalculate_global_lock` (renewed while it runs, released between
//! attempts); an explicit run that finds the lock held ends `skipped`, a run started by market events
//! waits for it.
//! Transient errors (PostgreSQL or Redis unreachable, a lost lock) are retried with exponential backoff, up
//! to `RECALC_MAX_ATTEMPTS`, resuming after the last finished batch.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{stream, StreamExt};
use pricing_core::{
    cache::Cache,
    db::{
        products::{self, ProductWithMarket},
        tasks::{self, TaskStatus},
    },
    domain::ProductScope,
    lock,
    pricing::PricingService,
    prometheus::names,
    retry, Error, Settings,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
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
    /// A task that waits for the lock (market events) waited long; it stays `queued` and the sweeper
    /// enqueues it again.
    Deferred,
}

pub struct Recalculator {
    pub db: PgPool,
    pub cache: Cache,
    /// The same pricing code quotes use: a recalculation computes exactly what a quote miss would.
    pub pricing: Arc<PricingService>,
    pub settings: Arc<Settings>,
}

impl Recalculator {
    pub fn new(db: PgPool, cache: Cache, settings: Arc<Settings>) -> anyhow::Result<Self> {
        Ok(Self {
            pricing: PricingService::new(db.clone(), cache.clone(), settings.clone())?,
            db,
            cache,
            settings,
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
                if task.status != TaskStatus::Queued {
                    return Ok(RecalcOutcome::Duplicate);
                }
                // A retry of a task that already did part of the work: wait for the other run to finish.
                lock_waits += 1;
                if lock_waits > MAX_LOCK_WAITS && task.waits_for_lock() {
                    tracing::info!(%task_id, "recalculation deferred: another run keeps the lock");
                    return Ok(RecalcOutcome::Deferred);
                }
                if lock_waits > MAX_LOCK_WAITS {
                    tasks::finish(
                        &self.db,
                        task_id,
                        TaskStatus::Skipped,
                        Some("another recalculation kept the lock"),
                    )
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
            // Each attempt is a span of its own in the task's trace.
            let attempt = tracing::info_span!(
                "recalculation attempt",
                attempt = task.attempts,
                from_product = task.cursor
            );
            let result =
                self.walk(task_id, &task.product_scope(), task.cursor, &lost).instrument(attempt).await;
            stop.cancel();
            let _ = renewer.await;
            if let Err(e) = lease.release(&self.cache).await {
                tracing::warn!(error = %e, "could not release the lock; it expires on its own");
            }
            match result {
                Ok(()) => {
                    tasks::finish(&self.db, task_id, TaskStatus::Succeeded, None).await?;
                    let processed = tasks::get(&self.db, task_id).await?.processed;
                    tracing::info!(%task_id, processed, "recalculation succeeded");
                    return Ok(RecalcOutcome::Succeeded { processed });
                }
                // Connection trouble and a lost lock pass; anything else (a bug, bad data) would fail again.
                Err(e) if e.is_outage() && task.attempts < s.recalc_max_attempts => {
                    let delay = backoff(task.attempts);
                    tracing::warn!(%task_id, attempt = task.attempts, error = %e, ?delay, "recalculation failed; retrying");
                    tasks::record_retry(&self.db, task_id, &e.public_reason()).await?;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let attempts = format!("(attempt {} of {})", task.attempts, s.recalc_max_attempts);
                    tracing::error!(%task_id, error = %e, attempts, "recalculation failed");
                    let reason = format!("{} {attempts}", e.public_reason());
                    tasks::finish(&self.db, task_id, TaskStatus::Failed, Some(&reason)).await?;
                    return Ok(RecalcOutcome::Failed(reason));
                }
            }
        }
    }

    /// Recomputes every product of `scope` after `cursor`, batch by batch, in a pipeline: the next batch is
    /// read from PostgreSQL while up to `IN_FLIGHT` batches are computed (on the blocking pool, so on every
    /// core) and written to Redis (one pipeline each). Progress is recorded in order, only for batches
    /// whose states are stored, so a retry resumes after the last batch known to be done.
    async fn walk(
        &self,
        task_id: Uuid,
        scope: &ProductScope,
        cursor: i64,
        lost: &CancellationToken,
    ) -> pricing_core::Result<()> {
        let remaining = products::count_after(&self.db, scope, cursor).await?;
        let mut done = tasks::get(&self.db, task_id).await?.processed;
        let total = done + remaining;
        tasks::set_total(&self.db, task_id, total).await?;
        let progress = metrics::gauge!(names::RECALC_PROGRESS);
        let share = move |done: i64| if total > 0 { done as f64 / total as f64 } else { 1.0 };
        progress.set(share(done));
        let size = self.settings.recalc_batch_size;
        let (db, scope) = (self.db.clone(), scope.clone());
        let batches = stream::try_unfold(cursor, move |after| {
            let (db, scope) = (db.clone(), scope.clone());
            async move {
                let batch = products::batch_after(&db, &scope, after, size).await?;
                Ok(batch.last().map(|row| row.product.id).map(|last| (batch, last)))
            }
        });
        // Demand as of the walk's start, read once: it is advisory, and asking per batch for every product
        // (mostly without orders) would cost Redis more than the writes. Unless the window is huge.
        let demand = self.pricing.all_recent_orders(DEMAND_SNAPSHOT_MAX).await.map(Arc::new);
        let finished = batches.map(|batch| self.recalculate(batch, demand.clone())).buffered(IN_FLIGHT);
        let mut finished = std::pin::pin!(finished);
        while let Some(batch) = finished.next().await {
            let (count, last_id) = batch?;
            if lost.is_cancelled() {
                return Err(Error::Unavailable("lost the recalculation lock".into()));
            }
            tasks::record_progress(&self.db, task_id, count, last_id).await?;
            done += count;
            progress.set(share(done));
        }
        Ok(())
    }

    /// One batch: its states computed and stored. Returns its size and last id.
    async fn recalculate(
        &self,
        batch: pricing_core::Result<Vec<ProductWithMarket>>,
        demand: Option<Arc<HashMap<i64, u64>>>,
    ) -> pricing_core::Result<(i64, i64)> {
        let batch = batch?;
        let ids: Vec<i64> = batch.iter().map(|row| row.product.id).collect();
        let (count, last_id) = (ids.len() as i64, ids.last().copied().unwrap_or_default());
        let recent = match demand {
            Some(demand) => ids.iter().map(|id| demand.get(id).copied().unwrap_or(0)).collect(),
            None => self.pricing.recent_orders(&ids).await,
        };
        let pricing = self.pricing.clone();
        let states = tokio::task::spawn_blocking(move || pricing.states_for(batch, &recent))
            .await
            .map_err(|e| Error::Unavailable(format!("the pricing computation failed: {e}")))?;
        self.pricing.store_states(&states).await?;
        Ok((count, last_id))
    }
}

/// Batches computed and written at once while the next one is read.
const IN_FLIGHT: usize = 3;
/// The most demand counters a walk reads at its start (a few MB); above, it asks per batch.
const DEMAND_SNAPSHOT_MAX: usize = 200_000;

/// Waits for another run's lock before a partly done task gives up: with the 10 s backoff cap, minutes,
/// longer than a whole run of a million products takes.
const MAX_LOCK_WAITS: i32 = 30;

/// Retries of a recalculation (and waits for another run's lock) take 200 ms, 400 ms ... at most 10 s.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(10);

fn backoff(attempt: i32) -> Duration {
    retry::backoff(attempt.max(1) as u32, RETRY_BASE, RETRY_CAP)
}
