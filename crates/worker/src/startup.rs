//! Building the worker from settings and running it until shutdown: the apalis order workers, supervised
//! (restarted after a Redis error, under a fresh name, after a pause), and the sweeper beside them.

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use pricing_core::{
    cache::Cache,
    db,
    jobs::{OrderQueue, ProcessOrder},
    Settings,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{orders::OrderProcessor, sweeper::Sweeper};

/// How often an idle worker asks Redis for work (without it apalis waits for its heartbeat).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub struct Worker {
    settings: Arc<Settings>,
    db: PgPool,
    cache: Cache,
    queue: OrderQueue,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = db::connect(&settings).await?;
        db::migrate(&db).await?;
        let cache = Cache::connect(&settings.redis_url, &settings.redis_key_prefix, 16)?;
        let queue_conn = pricing_core::jobs::queue_connection(&settings.redis_url).await?;
        let queue = OrderQueue::new(queue_conn, &cache.keys);
        Ok(Self {
            settings: Arc::new(settings),
            db,
            cache,
            queue,
        })
    }

    pub fn processor(&self) -> OrderProcessor {
        OrderProcessor {
            db: self.db.clone(),
            cache: self.cache.clone(),
            settings: self.settings.clone(),
        }
    }

    pub fn sweeper(&self) -> Sweeper {
        Sweeper {
            db: self.db.clone(),
            queue: self.queue.clone(),
            settings: self.settings.clone(),
        }
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Before any fetch: un-jam a backlog that built up while no worker ran.
        if let Err(e) = self.queue.promote_due().await {
            tracing::warn!(error = %e, "could not promote the queued backlog; the sweeper will retry");
        }
        let sweeper = tokio::spawn(self.sweeper().run(shutdown.clone()));
        let processor = Arc::new(self.processor());
        let concurrency = self.settings.worker_concurrency.max(1);
        tracing::info!(concurrency, "pricing-worker started");
        while !shutdown.is_cancelled() {
            let storage = self.queue.storage_with_batch(concurrency);
            let processor = processor.clone();
            let result = Monitor::new()
                .register(move |_| {
                    // A unique name per start: apalis refuses a name still inside its heartbeat window.
                    let name = format!("orders-{}", uuid::Uuid::new_v4().simple());
                    WorkerBuilder::new(name)
                        .backend(storage.clone().poll_with_interval(POLL_INTERVAL))
                        .data(processor.clone())
                        .concurrency(concurrency)
                        .build(process_order)
                })
                .should_restart(|_, _| false)
                .shutdown_timeout(Duration::from_secs(30))
                .run_with_signal({
                    let shutdown = shutdown.clone();
                    async move {
                        shutdown.cancelled().await;
                        Ok(())
                    }
                })
                .await;
            if shutdown.is_cancelled() {
                break;
            }
            // One Redis error ends an apalis worker; start a fresh one after a pause.
            tracing::warn!(?result, "order worker stopped; restarting in 1 s");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let _ = sweeper.await;
        tracing::info!("pricing-worker stopped");
        Ok(())
    }
}

/// The apalis handler: a thin shell over `OrderProcessor::process`. Only infrastructure errors return
/// `Err`; the sweeper re-enqueues such orders in any case.
async fn process_order(
    job: ProcessOrder,
    processor: Data<Arc<OrderProcessor>>,
) -> Result<(), BoxDynError> {
    processor.process(job.order_id).await?;
    Ok(())
}
