//! The retention jobs: every `RETENTION_INTERVAL_SECS` each worker deletes what PostgreSQL no longer needs,
//! so its tables do not grow without bound: idempotency keys past `IDEMPOTENCY_TTL_SECS`, applied and
//! dead-lettered market events past `MARKET_EVENTS_RETENTION_DAYS`, finished tasks past
//! `TASKS_RETENTION_DAYS` (0 days keeps them forever). A table's backlog is deleted
//! `RETENTION_BATCH_SIZE` rows per transaction until a batch comes back short, so even a million rows
//! never hold one long transaction. Several workers may run a pass at once: each batch skips the rows
//! another holds (`db::retention`), so they share the work and never wait for each other.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use pricing_core::{
    db::retention::{self, Retained},
    prometheus::names,
    Settings,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub struct Retention {
    pub db: PgPool,
    pub settings: Arc<Settings>,
}

/// Rows one pass deleted, by table, and the tables whose purge failed (logged; retried next pass).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub idempotency_keys: u64,
    pub market_events: u64,
    pub tasks: u64,
    pub failed: usize,
}

impl RetentionReport {
    fn add(&mut self, table: Retained, deleted: u64) {
        match table {
            Retained::IdempotencyKeys => self.idempotency_keys += deleted,
            Retained::MarketEvents => self.market_events += deleted,
            Retained::Tasks => self.tasks += deleted,
        }
    }
}

/// Exports each table's deleted-rows counter at 0, so dashboards see a 0 before the first deletion.
pub fn export_counters() {
    for table in Retained::ALL {
        metrics::counter!(names::RETENTION_DELETED, "table" => table.table()).increment(0);
    }
}

impl Retention {
    /// Runs a pass at start and every `RETENTION_INTERVAL_SECS` until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.retention.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.pass(&shutdown).await;
        }
    }

    /// One pass over every table (a table's failure does not stop the others); public so tests can drive
    /// it directly.
    pub async fn pass(&self, shutdown: &CancellationToken) -> RetentionReport {
        let mut report = RetentionReport::default();
        for table in Retained::ALL {
            let Some(older_than) = self.kept_for(table) else {
                tracing::debug!(table = table.table(), "retention: kept forever (0 days)");
                continue;
            };
            let started = Instant::now();
            match self.purge(table, older_than, shutdown).await {
                Ok(deleted) => {
                    report.add(table, deleted);
                    let unix_now =
                        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    metrics::gauge!(names::RETENTION_LAST_SUCCESS, "table" => table.table())
                        .set(unix_now.as_secs_f64());
                    log_purge(table, deleted, started.elapsed());
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(table = table.table(), error = %e, "retention failed; retrying next pass");
                }
            }
        }
        report
    }

    /// How long `table`'s rows are kept; `None`: forever.
    fn kept_for(&self, table: Retained) -> Option<Duration> {
        match table {
            Retained::IdempotencyKeys => Some(self.settings.idempotency_ttl),
            Retained::MarketEvents => self.settings.retention.market_events,
            Retained::Tasks => self.settings.retention.tasks,
        }
    }

    /// Deletes `table`'s rows older than `older_than`, one batch per transaction, until a batch comes back
    /// short or shutdown is asked for; counts each batch as it commits.
    async fn purge(
        &self,
        table: Retained,
        older_than: Duration,
        shutdown: &CancellationToken,
    ) -> pricing_core::Result<u64> {
        let batch_size = self.settings.retention.batch_size;
        let mut total = 0;
        loop {
            let deleted = retention::delete_batch(&self.db, table, older_than, batch_size).await?;
            metrics::counter!(names::RETENTION_DELETED, "table" => table.table()).increment(deleted);
            total += deleted;
            if deleted < batch_size as u64 || shutdown.is_cancelled() {
                return Ok(total);
            }
        }
    }
}

fn log_purge(table: Retained, deleted: u64, took: Duration) {
    let duration_ms = took.as_millis() as u64;
    if deleted > 0 {
        tracing::info!(table = table.table(), rows = deleted, duration_ms, "retention deleted old rows");
    } else {
        tracing::debug!(table = table.table(), duration_ms, "retention: nothing to delete");
    }
}
