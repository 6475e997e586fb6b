//! The router: one module per resource, each registering its handlers with their API description
//! (`utoipa_axum::routes!`), merged here with the description and docs page, the JSON fallbacks, the
//! limits and request tracing.

mod health;
mod market_events;
mod orders;
mod paging;
mod price;
mod products;
mod tasks;

use axum::{
    extract::Request,
    http::{StatusCode, Uri},
    response::IntoResponse,
    Json, Router,
};
use serde::Serialize;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ErrorBody, openapi, request_trace, ApiContext, ApiError};

pub fn router(ctx: ApiContext) -> Router {
    let settings = ctx.settings.clone();
    let api_v1 = OpenApiRouter::new()
        .nest("/products", products::router())
        .nest("/orders", orders::router())
        .nest("/health", health::router())
        .nest("/price", price::router())
        .merge(tasks::router())
        .merge(market_events::router());
    let (routes, api) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(index))
        .routes(routes!(crate::metrics::render))
        .nest("/api/v1", api_v1)
        .split_for_parts();
    let mut api = openapi::finish(api, "/api/v1/orders", "/orders");
    paging::describe_page_size(&mut api, &settings.limits);
    let routes = routes
        // The older order service's clients call /orders/... directly.
        .nest("/orders", orders::router().into())
        .merge(openapi::docs(api))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    crate::limits::apply(routes, &settings)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), crate::admission::admit))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(request_trace::in_caller_context))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_trace::make_span)
                .on_response(request_trace::on_response),
        )
        // Every request gets an `X-Request-Id` (the client's, else a new one), echoed on the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            let body = ErrorBody { detail: "Internal server error".into(), ..Default::default() };
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }))
        .with_state(ctx)
}

/// Trims a trailing slash before routing, so `/api/v1/products/` is `/api/v1/products`; the docs page's
/// own paths (`/docs/`, its assets) are left alone.
pub fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') && !path.starts_with(openapi::DOCS_PATH) {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

#[derive(Debug, Serialize, ToSchema)]
struct Index {
    name: &'static str,
    version: &'static str,
    /// The API description, and its interactive page.
    openapi: &'static str,
    docs: &'static str,
}

/// What this service is, and where its description is.
#[utoipa::path(get, path = "/", operation_id = "service_index", tag = "health", responses((status = 200, description = "The service", body = Index)))]
async fn index() -> Json<Index> {
    Json(Index {
        name: "Pricing Engine",
        version: env!("CARGO_PKG_VERSION"),
        openapi: openapi::SPEC_PATH,
        docs: openapi::DOCS_PATH,
    })
}

/// A listing's filter that names one of a closed set (`all`, each written as `name` writes it); anything
/// else is a 422 listing them.
fn one_of<T: Copy>(field: &str, value: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, ApiError> {
    all.iter().copied().find(|v| name(*v) == value).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        ApiError::Validation(format!("{field} must be one of {}; got {value:?}", names.join(", ")))
    })
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found".into())
}

async fn method_not_allowed() -> impl IntoResponse {
    let body = ErrorBody { detail: "Method not allowed".into(), ..Default::default() };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body))
}
