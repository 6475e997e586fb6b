//! The api's one error type. Every failure becomes `{"detail": "..."}` with the right status; the cause of a
//! server-side failure is logged, never shown to the client.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Missing bearer token: send Authorization: Bearer <ADMIN_TOKEN>")]
    Unauthorized,
    #[error("The bearer token is not valid")]
    Forbidden,
    #[error(transparent)]
    Core(#[from] pricing_core::Error),
}

impl ApiError {
    fn status_and_body(&self) -> (StatusCode, serde_json::Value) {
        use pricing_core::Error as Core;
        let detail = self.to_string();
        match self {
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": detail })),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, json!({ "detail": detail })),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, json!({ "detail": detail })),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, json!({ "detail": detail })),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, json!({ "detail": detail })),
            ApiError::Core(core) => match core {
                Core::NotFound(_) => (StatusCode::NOT_FOUND, json!({ "detail": detail })),
                Core::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, json!({ "detail": detail })),
                Core::Conflict(_) => (StatusCode::CONFLICT, json!({ "detail": detail })),
                Core::InsufficientStock { product_id, available, requested } => (
                    StatusCode::BAD_REQUEST,
                    json!({ "detail": detail, "product_id": product_id,
                            "available": available, "requested": requested }),
                ),
                Core::TotalChanged { current, items, .. } => (
                    StatusCode::CONFLICT,
                    json!({ "detail": detail, "current_total": current, "current_items": items }),
                ),
                Core::UnitPriceChanged { product_id, current, .. } => (
                    StatusCode::CONFLICT,
                    json!({ "detail": detail, "product_id": product_id, "current_price": current }),
                ),
                Core::QuoteRejected { product_id, current_price, .. } => (
                    StatusCode::CONFLICT,
                    json!({ "detail": detail, "product_id": product_id, "current_price": current_price }),
                ),
                Core::Database(_) | Core::Redis(_) | Core::Queue(_) | Core::Unavailable(_) => {
                    tracing::error!(error = %core, "request failed on a backing service");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({ "detail": "A backing service is unavailable; try again shortly" }),
                    )
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
