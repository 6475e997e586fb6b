//! Processing one order: `pending -> processing -> completed`, or `failed` with its stock given back.
//!
//! Every transition is a guarded UPDATE in PostgreSQL, fenced by the attempt count, so a job delivered twice
//! (apalis delivers at least once) or a stale handler whose order was re-taken changes nothing. Deliveries
//! and tries are counted in PostgreSQL: an order whose processing keeps dying ends `failed`, not looping.
//!
//! Claims and completions of the orders in fulfilment at once are gathered (`coalesce`): one UPDATE takes
//! or completes a whole batch, so the worker's cost in PostgreSQL per order falls as the load grows.

use std::{sync::Arc, time::Duration};

use pricing_core::{
    cache::{Cache, CacheLifetimes},
    coalesce::Coalescer,
    db,
    domain::OrderStatus,
    orders::count_order,
    retry, Settings,
};
use rand::Rng;
use sqlx::PgPool;
use tracing::Instrument;

/// What happened to an order on one delivery of its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(String),
    /// Nothing to do: already finished, cancelled, or being processed by another delivery.
    Skipped,
    /// Another delivery re-took the order while this one was working; this one stopped.
    Superseded,
}

pub struct OrderProcessor {
    db: PgPool,
    cache: Cache,
    settings: Arc<Settings>,
    /// `pending -> processing` for the orders whose jobs arrive together.
    claims: Coalescer<i64, Option<i32>>,
    /// `processing -> completed` for the orders whose fulfilment ends together, by `(id, attempts)`.
    completions: Coalescer<(i64, i32), bool>,
}

/// The most orders one claim or completion statement carries.
const MAX_BATCH: usize = 512;

impl OrderProcessor {
    pub fn new(db: PgPool, cache: Cache, settings: Arc<Settings>) -> Self {
        let stale_after = settings.order_stale_after;
        let claims = Coalescer::new("order claims", MAX_BATCH, {
            let db = db.clone();
            move |ids: Vec<i64>| {
                let db = db.clone();
                async move { db::orders::claim(&db, &ids, stale_after).await }
            }
        });
        let completions = Coalescer::new("order completions", MAX_BATCH, {
            let db = db.clone();
            move |held: Vec<(i64, i32)>| {
                let db = db.clone();
                async move { db::orders::complete(&db, &held).await }
            }
        });
        Self { db, cache, settings, claims, completions }
    }

    /// One delivery of an order's job: `process`, with PostgreSQL or Redis errors retried with exponential
    /// backoff, at most `TRIES_PER_DELIVERY` tries (`ORDER_MAX_ATTEMPTS` counts fulfilment attempts, a
    /// different thing). If they all fail the order is left where PostgreSQL has it; the sweeper enqueues
    /// it again once it is stale, so it is never lost.
    pub async fn handle(&self, order_id: i64) -> Option<Outcome> {
        let tries = TRIES_PER_DELIVERY;
        for attempt in 1..=tries {
            // Each try is a span of its own in the job's trace.
            let span = tracing::info_span!("process order", order_id, attempt);
            match self.process(order_id).instrument(span).await {
                Ok(outcome) => return Some(outcome),
                Err(e) if attempt < tries => {
                    let delay = backoff(attempt);
                    tracing::warn!(order_id, attempt, error = %e, ?delay, "processing hit an error; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::error!(order_id, attempt, error = %e, "processing kept failing; the sweeper will retry");
                }
            }
        }
        None
    }

    pub async fn process(&self, order_id: i64) -> pricing_core::Result<Outcome> {
        let s = &self.settings;
        let Some(mut attempts) = self.claims.submit(order_id).await? else {
            return Ok(Outcome::Skipped);
        };
        if attempts > s.order_max_attempts {
            // Earlier deliveries took the order and never finished it: their worker died each time.
            let reason = format!("processing was interrupted {} times", attempts - 1);
            return self.fail(order_id, attempts, reason).await;
        }
        loop {
            // Each fulfilment attempt is a span of its own, numbered as PostgreSQL counts it.
            match self.fulfil().instrument(tracing::info_span!("fulfil", attempt = attempts)).await {
                Ok(()) => {
                    return Ok(if self.completions.submit((order_id, attempts)).await? {
                        tracing::info!(order_id, attempts, "order completed");
                        count_order(OrderStatus::Completed);
                        Outcome::Completed
                    } else {
                        Outcome::Superseded
                    });
                }
                Err(reason) if attempts < s.order_max_attempts => {
                    let delay = backoff(attempts);
                    tracing::warn!(order_id, attempts, %reason, ?delay, "fulfilment failed; retrying");
                    tokio::time::sleep(delay).await;
                    match db::orders::record_retry(&self.db, order_id, attempts).await? {
                        Some(n) => attempts = n,
                        None => return Ok(Outcome::Superseded),
                    }
                }
                Err(reason) => {
                    let reason = format!("{reason} (gave up after {attempts} attempts)");
                    return self.fail(order_id, attempts, reason).await;
                }
            }
        }
    }

    async fn fail(&self, order_id: i64, attempts: i32, reason: String) -> pricing_core::Result<Outcome> {
        match db::orders::fail(&self.db, order_id, attempts, &reason).await? {
            Some(products) => {
                tracing::warn!(order_id, attempts, %reason, "order failed; stock given back");
                count_order(OrderStatus::Failed);
                let changed: Vec<_> = products.iter().map(|p| (p, 0)).collect();
                self.cache.products_changed(&changed, &CacheLifetimes::new(&self.settings)).await;
                Ok(Outcome::Failed(reason))
            }
            None => Ok(Outcome::Superseded),
        }
    }

    /// The simulated fulfilment step (payment, warehouse): takes `ORDER_PROCESSING_DELAY_MS` and fails with
    /// probability `ORDER_FAILURE_RATE`.
    async fn fulfil(&self) -> Result<(), String> {
        tokio::time::sleep(self.settings.order_processing_delay).await;
        let rate = self.settings.order_failure_rate;
        if rate > 0.0 && rand::rng().random_bool(rate.clamp(0.0, 1.0)) {
            return Err("fulfilment provider declined the order (simulated)".into());
        }
        Ok(())
    }
}

/// Tries one delivery makes when PostgreSQL or Redis fails it; then the sweeper delivers it again later.
const TRIES_PER_DELIVERY: i32 = 3;

/// Retries of one order wait 100 ms, 200 ms, 400 ms ... at most 5 s (with jitter).
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

fn backoff(attempt: i32) -> Duration {
    retry::backoff(attempt.max(1) as u32, RETRY_BASE, RETRY_CAP)
}
