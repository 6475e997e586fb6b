//! The limits every request passes through before a handler sees it: the body size (413), the time it may
//! take (503) and which browser origins may call the api (CORS, off unless `CORS_ORIGINS` lists some). The
//! per-field caps (`page_size`, `quantity`, items per order, text lengths) are checked where each field is
//! parsed, from the same `Limits`.

use std::time::Duration;

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{header, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
    Router,
};
use pricing_core::Settings;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::ApiError;

/// Wraps `router` in the body limit, the request timeout and, when configured, CORS.
pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, settings: &Settings) -> Router<S> {
    let timeout = settings.limits.request_timeout;
    let router = router
        .layer(axum::middleware::from_fn(move |req, next| within(timeout, req, next)))
        .layer(DefaultBodyLimit::max(settings.limits.max_body_bytes));
    match cors(&settings.cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// When the client stops waiting for this request (`REQUEST_TIMEOUT_MS` after it arrived). A sale takes
/// its own deadline from it ([`RequestDeadline::for_sale`]), so it has answered before this fires.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub tokio::time::Instant);

impl RequestDeadline {
    /// The moment a sale must have committed by: early enough that the commit's answer (and the post-sale
    /// steps' bounded wait) reach the client before the request timeout does: a fifth of the timeout
    /// before it, between 50 ms and 1 s.
    pub fn for_sale(self, timeout: Duration) -> tokio::time::Instant {
        let margin = (timeout / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.0 - margin
    }
}

/// Answers 503 when the handler takes longer than `timeout`. A sale is bounded by an earlier deadline
/// (`RequestDeadline::for_sale`), so an order is never committed after this answer; if one ever could be,
/// the answer says to retry with the same `Idempotency-Key`.
async fn within(timeout: Duration, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(RequestDeadline(tokio::time::Instant::now() + timeout));
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout.as_millis()).into_response(),
    }
}

/// The allowlist as a CORS layer; `None` (no CORS headers at all) when it is empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(origin = %o, "CORS_ORIGINS: not a valid origin, ignored");
                None
            }
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                HeaderName::from_static("idempotent-replayed"),
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
