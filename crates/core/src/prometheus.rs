//! Metrics, the same way in every binary: the `metrics` facade records, and one Prometheus recorder
//! (`metrics-exporter-prometheus`) installed here renders `/metrics`. Names follow the dashboards of the
//! service this one replaces; labels are bounded (route templates, job and queue names, outcomes), never
//! raw paths or ids. Histogram buckets fit a sub-millisecond service: 100 us to 10 s.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Every metric name a binary exports: the dashboard test checks queries against what a scrape shows.
pub mod names {
    pub const HTTP_REQUESTS: &str = "http_requests_total";
    pub const HTTP_DURATION: &str = "http_request_duration_seconds";
    pub const HTTP_CONNECTIONS_OPEN: &str = "http_connections_open";
    pub const HTTP_CONNECTIONS_REFUSED: &str = "http_connections_refused_total";
    pub const HTTP_RATE_LIMITED: &str = "http_requests_rate_limited_total";
    pub const HTTP_SHED: &str = "http_requests_shed_total";
    pub const PRICE_CACHE_REQUESTS: &str = "price_cache_requests_total";
    pub const PRICE_COMPUTATIONS: &str = "price_computations_total";
    pub const JOBS: &str = "jobs_total";
    pub const JOB_DURATION: &str = "job_duration_seconds";
    pub const JOB_QUEUE_WAIT: &str = "job_queue_wait_seconds";
    pub const JOB_QUEUE_DEPTH: &str = "job_queue_depth";
    pub const LOCK_ACQUISITIONS: &str = "lock_acquisitions_total";
    pub const ORDERS: &str = "orders_total";
    pub const ORDER_BATCH_SIZE: &str = "order_batch_size";
    pub const MARKET_EVENTS: &str = "market_events_total";
    pub const SPANS_DROPPED: &str = "otel_spans_dropped_total";
    pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
    pub const REDIS_CONNECTIONS: &str = "redis_connections";
    pub const REDIS_CIRCUIT_OPEN: &str = "redis_circuit_open";
    pub const LISTENER_BATCHES: &str = "listener_batches_total";
    pub const LISTENER_CLAIMED: &str = "listener_claimed_entries_total";
    pub const LISTENER_RESENT: &str = "listener_resent_events_total";
    pub const LISTENER_BRIDGED: &str = "listener_bridged_messages_total";
    pub const LISTENER_STREAM_ENTRIES: &str = "listener_stream_entries";
    pub const LISTENER_PENDING: &str = "listener_pending_entries";
    pub const LISTENER_LAG: &str = "listener_lag_entries";
    pub const ORDERS_STUCK: &str = "orders_stuck";
    pub const RECALC_PROGRESS: &str = "recalculation_progress_ratio";
    pub const LOCK_HELD: &str = "lock_held_seconds";
    pub const LOCK_LEASES_LOST: &str = "lock_leases_lost_total";
    pub const RETENTION_DELETED: &str = "retention_deleted_total";
    pub const RETENTION_LAST_SUCCESS: &str = "retention_last_success_timestamp_seconds";
}

/// Latency buckets in seconds: 100 us .. 10 s.
const BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often recorded histogram samples are folded into their buckets. The recorder keeps every sample until
/// then: with upkeep only on a scrape, an api nobody scraped grew by 8 bytes per request per histogram (to
/// 64 MB of RSS in one `bench/run.sh`).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Installs the process's recorder (once; later calls, as tests make, reuse it) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    let mut first = false;
    let handle = HANDLE.get_or_init(|| {
        first = true;
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("valid buckets")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        // Exported from the start, so dashboards and alerts see a 0 rather than no series.
        metrics::counter!(names::SPANS_DROPPED).absolute(0);
        handle
    });
    if first {
        // A thread, not a task: the recorder may be installed before (or outside) any tokio runtime.
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            })
            .expect("the metrics upkeep thread starts");
    }
    handle
}

/// The text exposition of every metric this process recorded.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// Records the PostgreSQL pool's connections (on each scrape: gauges of the moment).
pub fn record_pool(pool: &sqlx::PgPool) {
    let idle = pool.num_idle() as f64;
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use").set(pool.size() as f64 - idle);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(names::HTTP_REQUESTS, "HTTP requests by method, route template and status.");
    describe_histogram!(
        names::HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by method, route and status."
    );
    describe_gauge!(names::HTTP_CONNECTIONS_OPEN, "Open HTTP connections of this api process.");
    describe_counter!(
        names::HTTP_CONNECTIONS_REFUSED,
        "Connections closed at once because HTTP_MAX_CONNECTIONS were open."
    );
    describe_counter!(
        names::HTTP_RATE_LIMITED,
        "Requests answered 429: over their client's rate limit, by class."
    );
    describe_counter!(names::HTTP_SHED, "Requests answered 503 at once: HTTP_MAX_IN_FLIGHT were in flight.");
    describe_gauge!(
        names::REDIS_CIRCUIT_OPEN,
        "1 while the cache's circuit to Redis is open (Redis skipped), else 0."
    );
    describe_counter!(names::PRICE_CACHE_REQUESTS, "Pricing-state cache reads by result (hit, miss, error).");
    describe_counter!(names::PRICE_COMPUTATIONS, "Pricing states computed on a cache miss.");
    describe_counter!(
        names::JOBS,
        "Jobs by name and outcome (enqueued, succeeded, failed, retried, skipped)."
    );
    describe_histogram!(names::JOB_DURATION, Unit::Seconds, "Time a job's handler ran.");
    describe_histogram!(
        names::JOB_QUEUE_WAIT,
        Unit::Seconds,
        "Time from enqueue to the start of the handler."
    );
    describe_gauge!(names::JOB_QUEUE_DEPTH, "Jobs waiting in a Redis queue.");
    describe_counter!(names::LOCK_ACQUISITIONS, "Lock attempts by lock and result (acquired, busy).");
    describe_counter!(names::ORDERS, "Order transitions by the status reached.");
    describe_histogram!(names::ORDER_BATCH_SIZE, "Single-product orders committed by one transaction.");
    describe_counter!(names::MARKET_EVENTS, "Market events by outcome (applied, duplicate, dead_letter).");
    describe_counter!(names::SPANS_DROPPED, "Trace spans dropped because the export queue was full.");
    describe_gauge!(names::DB_POOL_CONNECTIONS, "PostgreSQL pool connections by state.");
    describe_gauge!(names::REDIS_CONNECTIONS, "Multiplexed Redis connections this process holds.");
    describe_counter!(names::LISTENER_BATCHES, "Stream batches the listener applied.");
    describe_counter!(names::LISTENER_CLAIMED, "Stream entries claimed from silent listeners.");
    describe_counter!(names::LISTENER_RESENT, "Received events appended to the stream again.");
    describe_counter!(names::LISTENER_BRIDGED, "Channel messages moved into the stream.");
    describe_gauge!(names::LISTENER_STREAM_ENTRIES, "Entries in the market-event stream (capped by MAXLEN).");
    describe_gauge!(
        names::LISTENER_PENDING,
        "Market events delivered to a listener and not yet acknowledged (applied)."
    );
    describe_gauge!(names::LISTENER_LAG, "Market events in the stream not yet delivered to any listener.");
    describe_gauge!(
        names::ORDERS_STUCK,
        "Orders in a status (pending, processing) unchanged for longer than ORDER_STALE_AFTER_SECS."
    );
    describe_gauge!(
        names::RECALC_PROGRESS,
        "Share of its products the running (or last) price recalculation has done, 0 to 1."
    );
    describe_gauge!(
        names::LOCK_HELD,
        Unit::Seconds,
        "How long this process has held a lock, 0 while it holds none."
    );
    describe_counter!(
        names::LOCK_LEASES_LOST,
        "Locks whose lease ran out while their holder was still working (found at renewal)."
    );
    describe_counter!(
        names::RETENTION_DELETED,
        "Rows the worker's retention jobs deleted, by table (idempotency_keys, market_events, tasks)."
    );
    describe_gauge!(
        names::RETENTION_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of this worker's last retention pass over a table that ended without an error."
    );
}
