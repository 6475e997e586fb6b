//! `POST /api/v1/price`: a price quote for one product and one shopper, answered from the cached pricing
//! state when there is one. Anyone may ask: a guest gets the guest price; a verified shopper's token decides
//! their membership and default location, and binds the quote to them, so no one else can order with it.

use axum::extract::State;
use pricing_core::{domain::ProductRef, pricing::PriceDetail};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Caller,
    error::{ApiResult, ErrorBody},
    extract::{text_field, Json},
    ApiContext,
};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(quote))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PriceRequest {
    product_id: ProductRef,
    /// Defaults to `DEFAULT_LOCATION`.
    /// The ship-to region; defaults to the token's `location`, else `DEFAULT_LOCATION`.
    #[schema(
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    user_location: Option<String>,
    /// Accepted for older clients; only a verified token's `member` claim grants the member price.
    #[serde(default)]
    #[allow(dead_code)]
    is_prime_member: Option<bool>,
    /// Accepted for older clients and ignored: a quote is bound to the token's `sub` (or to guests).
    #[schema(value_type = Option<String>)]
    #[allow(dead_code)]
    user_id: Option<serde_json::Value>,
}

/// Quotes a product's price for one shopper; the `quote_id` lets an order pay exactly this price.
#[utoipa::path(post, path = "", operation_id = "quote_price", tag = "pricing", request_body = PriceRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "The quote", body = PriceDetail),
              (status = 404, description = "No such product", body = ErrorBody)))]
async fn quote(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Json(body): Json<PriceRequest>,
) -> ApiResult<axum::Json<PriceDetail>> {
    if let Some(location) = body.user_location.as_deref() {
        text_field("user_location", location, 0, 32)?;
    }
    let inputs = caller.pricing_inputs(body.user_location.as_deref());
    let shopper = ctx.pricing.shopper(inputs.location, inputs.member);
    let mut detail = ctx.pricing.quote(&body.product_id, &shopper, caller.user_id()).await?;
    detail.from_token = inputs.from_token.into_iter().map(str::to_string).collect();
    Ok(axum::Json(detail))
}
