//! The api's metrics, all in this module so replacing the exposition is a swap of one file: the request
//! counters (`HttpMetrics`, kept by the `track` middleware) and `GET /metrics`, Prometheus text. Request counts and latencies are kept in memory by the
//! `track` middleware (no lock on the hot path but one short map update); order counts come from
//! PostgreSQL's counters table, queue depth from Redis.

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use pricing_core::{
    db::orders,
    jobs::{Job, ProcessOrder},
};

use crate::ApiContext;

/// Upper bounds (seconds) of the request latency histogram.
const BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Middleware: counts each request by method, route and status, and records its latency.
pub async fn track(State(ctx): State<ApiContext>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let m = &ctx.http_metrics;
    *m.requests
        .lock()
        .expect("metrics map")
        .entry((method, route, response.status().as_u16()))
        .or_default() += 1;
    for (bucket, le) in m.buckets.iter().zip(BUCKETS) {
        if elapsed <= le {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }
    m.count.fetch_add(1, Ordering::Relaxed);
    m.sum_micros.fetch_add((elapsed * 1e6) as u64, Ordering::Relaxed);
    response
}

pub async fn render(State(ctx): State<ApiContext>) -> impl IntoResponse {
    let mut out = String::new();
    let m = &ctx.http_metrics;
    let _ = writeln!(out, "# HELP pricing_http_requests_total HTTP requests by method, route and status.");
    let _ = writeln!(out, "# TYPE pricing_http_requests_total counter");
    let requests = m.requests.lock().expect("metrics map").clone();
    let mut rows: Vec<_> = requests.into_iter().collect();
    rows.sort();
    for ((method, route, status), n) in rows {
        let _ = writeln!(
            out,
            "pricing_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP pricing_http_request_duration_seconds HTTP request latency.");
    let _ = writeln!(out, "# TYPE pricing_http_request_duration_seconds histogram");
    for (bucket, le) in m.buckets.iter().zip(BUCKETS) {
        let _ = writeln!(
            out,
            "pricing_http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
            bucket.load(Ordering::Relaxed)
        );
    }
    let count = m.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "pricing_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "pricing_http_request_duration_seconds_sum {}",
        m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "pricing_http_request_duration_seconds_count {count}");

    let (hits, misses) = ctx.cache.lookup_counts();
    let _ = writeln!(out, "# HELP pricing_cache_lookups_total Cache reads by this api process.");
    let _ = writeln!(out, "# TYPE pricing_cache_lookups_total counter");
    let _ = writeln!(out, "pricing_cache_lookups_total{{result=\"hit\"}} {hits}");
    let _ = writeln!(out, "pricing_cache_lookups_total{{result=\"miss\"}} {misses}");
    let _ = writeln!(out, "# HELP pricing_price_computations_total Pricing states computed on a cache miss.");
    let _ = writeln!(out, "# TYPE pricing_price_computations_total counter");
    let _ = writeln!(out, "pricing_price_computations_total {}", ctx.pricing.computations());

    if let Ok(stats) = orders::stats(&ctx.db).await {
        let _ = writeln!(out, "# HELP pricing_orders Orders by status (from PostgreSQL).");
        let _ = writeln!(out, "# TYPE pricing_orders gauge");
        for (status, n) in &stats.counts {
            let _ = writeln!(out, "pricing_orders{{status=\"{}\"}} {n}", status.as_str());
        }
        let _ = writeln!(
            out,
            "# HELP pricing_order_processing_seconds_average Mean time from processing start to completion."
        );
        let _ = writeln!(out, "# TYPE pricing_order_processing_seconds_average gauge");
        let _ = writeln!(
            out,
            "pricing_order_processing_seconds_average {}",
            stats.average_processing_time_seconds
        );
    }
    if let Ok(depth) = ctx.order_queue.depth().await {
        let _ = writeln!(out, "# HELP pricing_queue_depth Jobs waiting in the Redis queue.");
        let _ = writeln!(out, "# TYPE pricing_queue_depth gauge");
        let _ = writeln!(out, "pricing_queue_depth{{queue=\"{}\"}} {depth}", ProcessOrder::QUEUE);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
