//! The server span of each request: named `METHOD /route/template`, with the OpenTelemetry semantic
//! attributes (`http.request.method`, `http.route`, `http.response.status_code`), a child of the caller's
//! span when the request carries a W3C `traceparent`, and carrying the request's `X-Request-Id` and its
//! `trace_id`, so every log line written while handling it can be found from either. The handler runs in
//! the caller's OpenTelemetry context (`in_caller_context`), so with export off the caller's
//! `traceparent` still reaches the jobs and events the request creates.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, Request},
    http::Response,
    middleware::Next,
};
use pricing_core::telemetry;
use tracing::{field::Empty, Span};

pub fn make_span<B>(request: &Request<B>) -> Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
        request_id = header("x-request-id").unwrap_or_default(),
        trace_id = Empty,
        span_id = Empty,
    );
    telemetry::parent_from(&span, header("traceparent"));
    telemetry::record_ids(&span);
    span
}

pub fn on_response<B>(response: &Response<B>, _latency: Duration, span: &Span) {
    span.record("http.response.status_code", response.status().as_u16());
}

/// Runs the rest of the request in the caller's trace context (`telemetry::within_caller`).
pub async fn in_caller_context(request: Request, next: Next) -> axum::response::Response {
    let caller =
        request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(telemetry::context_from);
    telemetry::within_caller(caller, next.run(request)).await
}
