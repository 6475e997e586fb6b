//! What the listener's loops share, in a module of its own: the loops (`consumer`, `bridge`, `resend`,
//! `http`) import it, `startup` builds it and starts them, and none of them imports `startup`. Tests build
//! it from their own connections (`ListenerState::new`) and drive one loop's step without a process.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use pricing_core::{cache::Cache, events::EventStream, jobs::TaskQueue, prometheus::names, Settings};
use sqlx::PgPool;

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
        self.counter(what).fetch_add(n as u64, Ordering::Relaxed);
        let (name, outcome) = match what {
            Counted::Applied => (names::MARKET_EVENTS, Some("applied")),
            Counted::Duplicate => (names::MARKET_EVENTS, Some("duplicate")),
            Counted::DeadLetter => (names::MARKET_EVENTS, Some("dead_letter")),
            Counted::Batch => (names::LISTENER_BATCHES, None),
            Counted::Claimed => (names::LISTENER_CLAIMED, None),
            Counted::Resent => (names::LISTENER_RESENT, None),
            Counted::Bridged => (names::LISTENER_BRIDGED, None),
        };
        match outcome {
            Some(outcome) => metrics::counter!(name, "outcome" => outcome).increment(n as u64),
            None => metrics::counter!(name).increment(n as u64),
        }
    }

    /// One counter's value now.
    pub fn get(&self, what: Counted) -> u64 {
        self.counter(what).load(Ordering::Relaxed)
    }

    fn counter(&self, what: Counted) -> &AtomicU64 {
        match what {
            Counted::Applied => &self.applied,
            Counted::Duplicate => &self.duplicate,
            Counted::DeadLetter => &self.dead_letter,
            Counted::Batch => &self.batches,
            Counted::Claimed => &self.claimed,
            Counted::Resent => &self.resent,
            Counted::Bridged => &self.bridged,
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
    /// The state of a listener on these connections (PostgreSQL migrated); nothing is started.
    pub fn new(settings: Settings, db: PgPool, cache: Cache, tasks: TaskQueue) -> Self {
        let events = EventStream::new(cache.clone(), settings.market_events_max_len);
        Self {
            settings: Arc::new(settings),
            db,
            cache,
            tasks,
            events,
            counters: Counters::exported(),
            consumer_beat: Mutex::new((Instant::now(), None)),
        }
    }

    pub fn consumer_ok(&self) {
        *self.consumer_beat.lock().expect("beat") = (Instant::now(), None);
    }

    pub fn consumer_failed(&self, error: String) {
        self.consumer_beat.lock().expect("beat").1 = Some(error);
    }
}
