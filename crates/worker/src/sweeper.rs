//! The sweeper: PostgreSQL is the truth and the Redis queue only wakes workers up, so every few seconds
//! this finds orders left `pending`/`processing` past `ORDER_STALE_AFTER_SECS` (their job was lost: the
//! enqueue failed, Redis restarted empty, a worker died) and enqueues them again. It also keeps the queue
//! healthy: promotes due jobs in bounded chunks (apalis' fetch script jams on a backlog of about 8,000;
//! `promote_orders` does it for orders ten times a second) and deletes finished jobs' data, which apalis
//! keeps forever. And it counts the orders stuck past that age (`orders_stuck`), for the alert.

use std::{sync::Arc, time::Duration};

use pricing_core::{
    db,
    jobs::{self, OrderQueue, ProcessOrder, RecalculatePrices, TaskQueue},
    prometheus::names,
    telemetry, Settings,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub struct Sweeper {
    pub db: PgPool,
    pub orders: OrderQueue,
    pub tasks: TaskQueue,
    pub settings: Arc<Settings>,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub promoted: u64,
    pub requeued: usize,
    pub purged: u64,
}

impl Sweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.sweep_once().await {
                Ok(r) if r.requeued > 0 || r.promoted > 1_000 => {
                    tracing::info!(requeued = r.requeued, promoted = r.promoted, purged = r.purged, "sweep")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweep failed; retrying next tick"),
            }
        }
    }

    /// One pass; public so tests can drive it directly.
    pub async fn sweep_once(&self) -> anyhow::Result<SweepReport> {
        let mut promoted = self.orders.promote_due().await? + self.tasks.promote_due().await?;
        let depth = self.orders.depth().await?;
        let room = self.settings.queue_max_backlog.saturating_sub(depth as usize);
        let stale_after = self.settings.order_stale_after;
        let mut requeued = 0;
        if room > 0 {
            let stale = db::orders::take_stale(&self.db, stale_after, room as i64).await?;
            requeued += stale.len();
            if !stale.is_empty() {
                self.requeue(stale).await?;
            }
        }
        for task_id in db::tasks::take_stale(&self.db, stale_after, 100).await? {
            self.tasks.enqueue(RecalculatePrices::new(task_id), false).await?;
            requeued += 1;
        }
        if requeued > 0 {
            // Re-pushed jobs land in the scheduled set; make them fetchable in bounded chunks too.
            promoted += self.orders.promote_due().await? + self.tasks.promote_due().await?;
        }
        let (pending, processing) = db::orders::count_stuck(&self.db, stale_after).await?;
        metrics::gauge!(names::ORDERS_STUCK, "status" => "pending").set(pending as f64);
        metrics::gauge!(names::ORDERS_STUCK, "status" => "processing").set(processing as f64);
        let purged = self.orders.purge_finished(1_000).await? + self.tasks.purge_finished(100).await?;
        Ok(SweepReport { promoted, requeued, purged })
    }
}

impl Sweeper {
    /// Enqueues lost orders' jobs again, in a trace of the sweep's own: each job's run links to the trace
    /// that placed its order (kept with the order in PostgreSQL), as does this span.
    async fn requeue(&self, stale: Vec<(i64, Option<String>)>) -> pricing_core::Result<()> {
        use tracing::Instrument;
        let span = tracing::info_span!("requeue lost orders", otel.kind = "producer", orders = stale.len());
        // Links to the first few: a span keeps at most 128 (the SDK's default), and a few name the story.
        for (_, origin) in stale.iter().take(MAX_LINKS) {
            telemetry::link_to(&span, origin.as_deref());
        }
        async {
            let jobs = stale.into_iter().map(|(id, origin)| jobs::stamped(ProcessOrder::again(id, origin)));
            self.orders.push(jobs.collect(), false).await
        }
        .instrument(span)
        .await
    }
}

/// The most orders whose traces one requeue span links to (each job's run links to its own).
const MAX_LINKS: usize = 32;

/// How often `promote_orders` moves due order jobs to the active list: at the api's full order rate
/// (thousands a second) a few hundred arrive between two runs, far below the backlog that jams a fetch.
const PROMOTE_INTERVAL: Duration = Duration::from_millis(100);

/// Every job apalis pushes lands in its scheduled set, and its fetch script promotes all the due ones at
/// once, which fails above about 8,000. Under sustained load the sweep's promotion (every
/// `SWEEP_INTERVAL_MS`) is too rare; this keeps the set small until shutdown.
pub async fn promote_orders(orders: OrderQueue, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PROMOTE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = orders.promote_due().await {
            tracing::debug!(error = %e, "could not promote due order jobs; retrying next tick");
        }
    }
}
