//! The api's one error type. Every failure becomes `{"detail": "..."}` with the right status; the cause of a
//! server-side failure is logged, never shown to the client.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use pricing_core::domain::OrderItem;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("This needs a bearer token: send Authorization: Bearer <token>")]
    Unauthorized,
    /// A bearer token that is present but refused: why, in words (never the token).
    #[error("The bearer token is not valid: {0}")]
    InvalidToken(String),
    #[error("The bearer token does not grant this: it needs the admin token or a token with the admin role")]
    Forbidden,
    #[error("The request body is larger than {0} bytes (MAX_BODY_BYTES)")]
    PayloadTooLarge(usize),
    #[error("The request was not answered within {0} ms (REQUEST_TIMEOUT_MS); if it placed an order, retry with the same Idempotency-Key")]
    Timeout(u128),
    /// Over the client's rate limit (429, with `Retry-After`).
    #[error("{0}")]
    RateLimited(String),
    /// Too many requests in flight in this process (503, with `Retry-After`).
    #[error("{0}")]
    Overloaded(String),
    #[error(transparent)]
    Core(#[from] pricing_core::Error),
}

/// Every error's body: `detail` says what was wrong; the other fields come with the errors that name them.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    /// With 400 (not enough stock) and 409 (a price changed): the product concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
    /// With 400: the stock there is, and the quantity asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<i32>,
    /// With 409 for a unit price or a quote: what the product costs now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub current_price: Option<Decimal>,
    /// With 409 for a changed total: the total now, and each line's current price.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub current_total: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_items: Option<Vec<OrderItem>>,
    /// `true` when whether an order was placed cannot be known yet: retry with the same `Idempotency-Key`,
    /// which replays the real outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_with_same_idempotency_key: Option<bool>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use pricing_core::Error as Core;
        match self {
            ApiError::Validation(_) | ApiError::Core(Core::Validation(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) | ApiError::Core(Core::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_)
            | ApiError::Core(Core::Conflict(_))
            | ApiError::Core(Core::TotalChanged { .. })
            | ApiError::Core(Core::UnitPriceChanged { .. })
            | ApiError::Core(Core::QuoteRejected { .. }) => StatusCode::CONFLICT,
            ApiError::Core(Core::InsufficientStock { .. }) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded(_) | ApiError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Core(
                core @ (Core::Database(_)
                | Core::Redis(_)
                | Core::Queue(_)
                | Core::Unavailable(_)
                | Core::NotSold(_)
                | Core::OutcomeUnknown(_)
                | Core::Internal(_)),
            ) => match core.is_outage() {
                true => StatusCode::SERVICE_UNAVAILABLE,
                false => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn body(&self) -> ErrorBody {
        use pricing_core::Error as Core;
        let detail = self.to_string();
        match self {
            ApiError::Core(core) => match core {
                Core::InsufficientStock { product_id, available, requested } => ErrorBody {
                    detail,
                    product_id: Some(*product_id),
                    available: Some(*available),
                    requested: Some(*requested),
                    ..Default::default()
                },
                Core::TotalChanged { current, items, .. } => ErrorBody {
                    detail,
                    current_total: Some(*current),
                    current_items: Some(items.clone()),
                    ..Default::default()
                },
                Core::UnitPriceChanged { product_id, current, .. }
                | Core::QuoteRejected { product_id, current_price: current, .. } => ErrorBody {
                    detail,
                    product_id: Some(*product_id),
                    current_price: Some(*current),
                    ..Default::default()
                },
                Core::Database(_) | Core::Redis(_) | Core::Internal(_) if !core.is_outage() => {
                    // A bug, not an outage: the cause goes to the log (with the request's id, from its
                    // span), never to the client, who must not retry it as if it would pass.
                    tracing::error!(error = %core, "request failed: internal error");
                    ErrorBody { detail: "Internal server error".into(), ..Default::default() }
                }
                Core::Database(_)
                | Core::Redis(_)
                | Core::Queue(_)
                | Core::Unavailable(_)
                | Core::Internal(_) => {
                    tracing::error!(error = %core, "request failed on a backing service");
                    let detail = match core {
                        Core::Database(sqlx::Error::PoolTimedOut) => {
                            "PostgreSQL is overloaded or unavailable (no connection within DATABASE_ACQUIRE_TIMEOUT_MS); try again shortly"
                        }
                        Core::Database(_) => "PostgreSQL is unavailable; try again shortly",
                        Core::Redis(_) | Core::Queue(_) => "Redis is unavailable; try again shortly",
                        _ => "A backing service is unavailable; try again shortly",
                    };
                    ErrorBody { detail: detail.into(), ..Default::default() }
                }
                Core::NotFound(_) | Core::Validation(_) | Core::Conflict(_) | Core::NotSold(_) => {
                    ErrorBody { detail, ..Default::default() }
                }
                Core::OutcomeUnknown(_) => {
                    tracing::error!(error = %core, "an order's outcome is unknown");
                    ErrorBody { detail, retry_with_same_idempotency_key: Some(true), ..Default::default() }
                }
            },
            ApiError::Timeout(_) => {
                ErrorBody { detail, retry_with_same_idempotency_key: Some(true), ..Default::default() }
            }
            _ => ErrorBody { detail, ..Default::default() },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        // RFC 6750: a 401 says which scheme it wants, and whether the token sent was the problem.
        let challenge = match self {
            ApiError::Unauthorized => Some("Bearer"),
            ApiError::InvalidToken(_) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(challenge));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
