//! `POST /api/v1/price`: a price quote for one product and one shopper, answered from the cached pricing
//! state when there is one. The quote is stored until `valid_until` so an order can honour it.

use axum::extract::State;
use pricing_core::{domain::ProductRef, pricing::PriceDetail};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
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
    #[schema(max_length = 32)]
    user_location: Option<String>,
    #[serde(default)]
    is_prime_member: bool,
    /// Ties the quote to a customer: only an order with the same `user_id` can use it.
    #[schema(min_length = 1, max_length = 255)]
    user_id: Option<String>,
}

/// Quotes a product's price for one shopper; the `quote_id` lets an order pay exactly this price.
#[utoipa::path(post, path = "", operation_id = "quote_price", tag = "pricing", request_body = PriceRequest,
    responses((status = 200, description = "The quote", body = PriceDetail),
              (status = 404, description = "No such product", body = ErrorBody)))]
async fn quote(
    State(ctx): State<ApiContext>,
    Json(body): Json<PriceRequest>,
) -> ApiResult<axum::Json<PriceDetail>> {
    if let Some(location) = body.user_location.as_deref() {
        text_field("user_location", location, 0, 32)?;
    }
    let user_id = body
        .user_id
        .as_deref()
        .map(|u| text_field("user_id", u, 1, ctx.settings.limits.max_text_len))
        .transpose()?;
    let shopper = ctx.pricing.shopper(body.user_location.as_deref(), body.is_prime_member);
    Ok(axum::Json(ctx.pricing.quote(&body.product_id, &shopper, user_id.as_deref()).await?))
}
