//! Building the listener from settings and running its loops until shutdown: the stream consumer, the
//! channel bridge, the resend sweep, and the small HTTP server for `/health` and `/metrics`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use pricing_core::{
    cache::Cache, events::EventStream, jobs::TaskQueue, prometheus::names, Backends, Settings,
};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{bridge, consumer::Consumer, http};

/// Counters this process keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub applied: AtomicU64,
    pub duplicate: AtomicU64,
    pub dead_letter: AtomicU64,
    pub batches: AtomicU64,
    pub claimed: AtomicU64,
    pub resent: AtomicU64,
    pub bridged: AtomicU64,
}

/// What the listener counts: in this process's `Counters` (tests read them) and as metrics.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    Applied,
    Duplicate,
    DeadLetter,
    Batch,
    Claimed,
    Resent,
    Bridged,
}

impl Counters {
    /// Zeroed counters, each exported from the start (so the first dead letter is an increase an alert
    /// sees, not a new series).
    pub fn exported() -> Self {
        let counters = Self::default();
        for what in [
            Counted::Applied,
            Counted::Duplicate,
            Counted::DeadLetter,
            Counted::Batch,
            Counted::Claimed,
            Counted::Resent,
            Counted::Bridged,
        ] {
            counters.add(what, 0);
        }
        counters
    }

    pub fn add(&self, what: Counted, n: usize) {
        let (counter, name, outcome) = match what {
            Counted::Applied => (&self.applied, names::MARKET_EVENTS, Some("applied")),
            Counted::Duplicate => (&self.duplicate, names::MARKET_EVENTS, Some("duplicate")),
            Counted::DeadLetter => (&self.dead_letter, names::MARKET_EVENTS, Some("dead_letter")),
            Counted::Batch => (&self.batches, names::LISTENER_BATCHES, None),
            Counted::Claimed => (&self.claimed, names::LISTENER_CLAIMED, None),
            Counted::Resent => (&self.resent, names::LISTENER_RESENT, None),
            Counted::Bridged => (&self.bridged, names::LISTENER_BRIDGED, None),
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        match outcome {
            Some(outcome) => metrics::counter!(name, "outcome" => outcome).increment(n as u64),
            None => metrics::counter!(name).increment(n as u64),
        }
    }
}

/// What every loop of the listener shares.
pub struct ListenerState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub cache: Cache,
    pub tasks: TaskQueue,
    pub events: EventStream,
    pub counters: Counters,
    /// When the stream consumer last completed a step, and its last error (for `/health`).
    pub consumer_beat: Mutex<(Instant, Option<String>)>,
}

impl ListenerState {
    pub fn consumer_ok(&self) {
        *self.consumer_beat.lock().expect("beat") = (Instant::now(), None);
    }

    pub fn consumer_failed(&self, error: String) {
        self.consumer_beat.lock().expect("beat").1 = Some(error);
    }
}

pub struct Listener {
    state: Arc<ListenerState>,
    http: TcpListener,
}

impl Listener {
    /// Connects (PostgreSQL is migrated; Redis is connected lazily, so the listener starts, and reports
    /// itself unhealthy, while Redis is down) and binds `LISTENER_ADDR` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        pricing_core::prometheus::install();
        let Backends { db, cache, tasks, .. } =
            Backends::connect(&settings, 2, pricing_core::db::Commits::Durable).await?;
        let http = TcpListener::bind(settings.listener_addr).await?;
        let events = EventStream::new(cache.clone(), settings.market_events_max_len);
        let state = Arc::new(ListenerState {
            settings: Arc::new(settings),
            db,
            cache,
            tasks,
            events,
            counters: Counters::exported(),
            consumer_beat: Mutex::new((Instant::now(), None)),
        });
        Ok(Self { state, http })
    }

    pub fn port(&self) -> u16 {
        self.http.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn state(&self) -> Arc<ListenerState> {
        self.state.clone()
    }

    /// Runs every loop until `shutdown` is cancelled; the consumer finishes the batch in hand first (for at
    /// most `SHUTDOWN_TIMEOUT`: a batch cut off is not acknowledged, so another listener claims it).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = &self.state.settings;
        tracing::info!(addr = %self.http.local_addr()?, batch = s.listener_batch_size, "pricing-listener started");
        let consumer = Consumer::new(self.state.clone())?;
        let tasks = [
            tokio::spawn(consumer.run(shutdown.clone())),
            tokio::spawn(bridge::run(self.state.clone(), shutdown.clone())),
            tokio::spawn(resend_lost(self.state.clone(), shutdown.clone())),
            tokio::spawn(http::serve(self.http, self.state.clone(), shutdown.clone())),
        ];
        let grace = s.shutdown_timeout;
        let all = futures::future::join_all(tasks);
        if let Some(results) = pricing_core::shutdown::within_grace(&shutdown, grace, all).await {
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        tracing::info!("pricing-listener stopped");
        Ok(())
    }
}

/// Every half `LISTENER_RESEND_AFTER_MS`: appends again the `received` events older than that (their
/// append failed, or Redis restarted empty). Applying stays exactly once: the stream may carry an event
/// twice, PostgreSQL applies it once.
async fn resend_lost(state: Arc<ListenerState>, shutdown: CancellationToken) {
    let period = (state.settings.listener_resend_after / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let result = async {
            let lost = pricing_core::db::market_events::take_unapplied(
                &state.db,
                state.settings.listener_resend_after,
                RESEND_LIMIT,
            )
            .await?;
            state.events.append(&lost).await?;
            Ok::<_, pricing_core::Error>(lost.len())
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => {
                state.counters.add(Counted::Resent, n);
                tracing::info!(events = n, "appended received events again");
            }
            Err(e) => tracing::warn!(error = %e, "resend sweep failed; retrying next period"),
        }
    }
}

/// Events one resend sweep appends at most.
const RESEND_LIMIT: i64 = 1_000;
