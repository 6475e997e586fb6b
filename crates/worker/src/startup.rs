//! Building the worker from settings and running it until shutdown: one apalis worker per job type, each
//! supervised (one Redis error ends an apalis worker; it is restarted under a fresh name after a pause),
//! and the sweeper and the retention jobs beside them.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::*;
use pricing_core::{
    cache::Cache,
    jobs::{self, JobOutcome, OrderQueue, ProcessOrder, RecalculatePrices, TaskQueue},
    shutdown, Backends, Settings,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    idle_poll::IdlePoll,
    orders::{OrderProcessor, Outcome},
    recalculate::{RecalcOutcome, Recalculator},
    retention::Retention,
    sweeper::Sweeper,
};

/// How often an idle worker asks Redis for work (without it apalis waits for its heartbeat).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Recalculations at once per worker: more than one, so a second finds the lock held and is skipped at
/// once instead of waiting behind the first.
const RECALC_CONCURRENCY: usize = 2;
/// Order jobs fetched at once (at most `WORKER_CONCURRENCY`): apalis fetches as many as its concurrency by
/// default, and a fetch of 2,048 stalled the worker for seconds (`docs/apalis-redis.md`).
const FETCH_BATCH: usize = 512;

pub struct Worker {
    http: tokio::net::TcpListener,
    settings: Arc<Settings>,
    db: PgPool,
    cache: Cache,
    orders: OrderQueue,
    tasks: TaskQueue,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        pricing_core::prometheus::install();
        crate::retention::export_counters();
        let Backends { db, cache, orders, tasks } =
            Backends::connect(&settings, 2, pricing_core::db::Commits::Relaxed).await?;
        let http = tokio::net::TcpListener::bind(settings.worker_addr).await?;
        Ok(Self { http, settings: Arc::new(settings), db, cache, orders, tasks })
    }

    /// The port `/health` and `/metrics` are served on (`WORKER_ADDR`; port 0 picks a free one).
    pub fn port(&self) -> u16 {
        self.http.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn processor(&self) -> OrderProcessor {
        OrderProcessor::new(self.db.clone(), self.cache.clone(), self.settings.clone())
    }

    pub fn recalculator(&self) -> anyhow::Result<Recalculator> {
        Recalculator::new(self.db.clone(), self.cache.clone(), self.settings.clone())
    }

    pub fn sweeper(&self) -> Sweeper {
        Sweeper {
            db: self.db.clone(),
            orders: self.orders.clone(),
            tasks: self.tasks.clone(),
            settings: self.settings.clone(),
        }
    }

    pub fn retention(&self) -> Retention {
        Retention { db: self.db.clone(), settings: self.settings.clone() }
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // The bound address: with port 0 in WORKER_ADDR, this line is where a supervisor learns the port.
        tracing::info!(addr = %self.http.local_addr()?, "pricing-worker listening");
        let recalculator = Arc::new(self.recalculator()?);
        self.run_with(recalculator, shutdown).await
    }

    /// Runs with a given recalculator (tests pass one whose failures they inject).
    pub async fn run_with(
        self,
        recalculator: Arc<Recalculator>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        // Before any fetch: un-jam a backlog that built up while no worker ran.
        for result in [self.orders.promote_due().await, self.tasks.promote_due().await] {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not promote the queued backlog; the sweeper will retry");
            }
        }
        let sweeper = tokio::spawn(self.sweeper().run(shutdown.clone()));
        let retention = tokio::spawn(self.retention().run(shutdown.clone()));
        let promoter = tokio::spawn(crate::sweeper::promote_orders(self.orders.clone(), shutdown.clone()));
        let http_addr = self.http.local_addr()?;
        let processor = Arc::new(self.processor());
        let concurrency = self.settings.worker_concurrency;
        tracing::info!(concurrency, %http_addr, "pricing-worker started");

        let orders = supervise("orders", shutdown.clone(), {
            let (queue, shutdown) = (self.orders.clone(), shutdown.clone());
            move || {
                WorkerBuilder::new(unique_name("orders"))
                    .backend(IdlePoll::new(
                        queue.storage_with_batch(concurrency.min(FETCH_BATCH)),
                        POLL_INTERVAL,
                    ))
                    .data(processor.clone())
                    .concurrency(concurrency)
                    .build(process_order)
                    .run_until(stopped(shutdown.clone()))
            }
        });
        let recalculations = supervise("recalculations", shutdown.clone(), {
            let (queue, shutdown) = (self.tasks.clone(), shutdown.clone());
            move || {
                WorkerBuilder::new(unique_name("recalculate"))
                    .backend(IdlePoll::new(queue.storage_with_batch(RECALC_CONCURRENCY), POLL_INTERVAL))
                    .data(recalculator.clone())
                    .concurrency(RECALC_CONCURRENCY)
                    .build(recalculate_prices)
                    .run_until(stopped(shutdown.clone()))
            }
        });
        let http = tokio::spawn(crate::http::serve(self.http, self.db, self.cache, shutdown.clone()));
        // apalis stops fetching on shutdown and drains the jobs in flight; whatever SHUTDOWN_TIMEOUT_SECS cuts off
        // stays `processing`/`running` in PostgreSQL and is re-enqueued by a sweeper.
        let grace = self.settings.shutdown_timeout;
        shutdown::within_grace(&shutdown, grace, async {
            tokio::join!(orders, recalculations);
            let _ = tokio::join!(sweeper, retention, promoter, http);
        })
        .await;
        tracing::info!("pricing-worker stopped");
        Ok(())
    }
}

/// A fresh name per start: apalis refuses a name still inside its heartbeat window.
fn unique_name(kind: &str) -> String {
    format!("{kind}-{}", uuid::Uuid::new_v4().simple())
}

async fn stopped(shutdown: CancellationToken) -> Result<(), std::io::Error> {
    shutdown.cancelled().await;
    Ok(())
}

/// Runs an apalis worker until shutdown, starting a fresh one a second after each failure.
async fn supervise<F, Fut>(kind: &'static str, shutdown: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), WorkerError>>,
{
    while !shutdown.is_cancelled() {
        match start().await {
            Ok(()) => {}
            Err(e) => tracing::warn!(kind, error = %e, "worker stopped on an error; restarting in 1 s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn process_order(job: ProcessOrder, processor: Data<Arc<OrderProcessor>>) -> Result<(), BoxDynError> {
    jobs::measured(&job, async {
        match processor.handle(job.order_id).await {
            Some(Outcome::Completed) => JobOutcome::Succeeded,
            Some(Outcome::Failed(_)) => JobOutcome::Failed,
            Some(Outcome::Skipped | Outcome::Superseded) => JobOutcome::Skipped,
            // Left where PostgreSQL has it: the sweeper enqueues it again.
            None => JobOutcome::Retried,
        }
    })
    .await;
    Ok(())
}

async fn recalculate_prices(
    job: RecalculatePrices,
    recalculator: Data<Arc<Recalculator>>,
) -> Result<(), BoxDynError> {
    let mut error = None;
    jobs::measured(&job, async {
        match recalculator.run(job.task_id).await {
            Ok(RecalcOutcome::Succeeded { .. }) => JobOutcome::Succeeded,
            Ok(RecalcOutcome::Failed(_)) => JobOutcome::Failed,
            Ok(RecalcOutcome::Skipped | RecalcOutcome::Duplicate) => JobOutcome::Skipped,
            Ok(RecalcOutcome::Deferred) => JobOutcome::Retried,
            Err(e) => {
                error = Some(e);
                JobOutcome::Failed
            }
        }
    })
    .await;
    error.map_or(Ok(()), |e| Err(e.into()))
}
