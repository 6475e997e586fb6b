//! The router: one module per resource, merged here with the JSON fallbacks and request tracing.

mod health;
mod market_events;
mod orders;
mod price;
mod products;
mod tasks;

use axum::{http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde_json::json;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{request_trace, ApiContext, ApiError};

pub fn router(ctx: ApiContext) -> Router {
    let api_v1 = Router::new()
        .nest("/products", products::router())
        .nest("/orders", orders::router())
        .nest("/health", health::router())
        .nest("/price", price::router())
        .merge(tasks::router())
        .merge(market_events::router());
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(openapi))
        .nest("/api/v1", api_v1)
        // The older order service's clients call /orders/... directly.
        .nest("/orders", orders::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_trace::make_span)
                .on_response(request_trace::on_response),
        )
        // Every request gets an `X-Request-Id` (the client's, else a new one), echoed on the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "detail": "Internal server error" })))
                .into_response()
        }))
        .with_state(ctx)
}

async fn index() -> Json<serde_json::Value> {
    Json(json!({
        "name": "Pricing Engine",
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "/openapi.json",
    }))
}

/// The OpenAPI description of this api (kept beside the code in `crates/api/openapi.json`).
async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], include_str!("../../openapi.json"))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found".into())
}

async fn method_not_allowed() -> impl IntoResponse {
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "detail": "Method not allowed" })))
}
