//! The api's request metrics and `GET /metrics`. Recording goes through the `metrics` facade into the
//! recorder every binary installs (`pricing_core::prometheus`); the `track` middleware counts each request by
//! method, route template and status and records its latency.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use pricing_core::prometheus::{self, names};

use crate::ApiContext;

/// Middleware: counts each request by method, route template and status, and records its latency.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_string()),
        ("endpoint", endpoint),
        ("status", response.status().as_str().to_string()),
    ];
    ::metrics::counter!(names::HTTP_REQUESTS, &labels).increment(1);
    ::metrics::histogram!(names::HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard ones by name, anything else as `OTHER` (labels stay bounded).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `GET /metrics`: Prometheus text, with the gauges of the moment (pool, queue depth) read first.
#[utoipa::path(get, path = "/metrics", operation_id = "prometheus_metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn render(State(ctx): State<ApiContext>) -> impl IntoResponse {
    prometheus::record_pool(&ctx.db);
    // Sets `job_queue_depth` for the queues this process fills.
    let _ = tokio::join!(ctx.order_queue.depth(), ctx.task_queue.depth());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus::render())
}
