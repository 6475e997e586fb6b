//! `/api/v1/orders` (and `/orders` for the older order service's clients): buying, reading, cancelling,
//! and the cheap metrics and queue views (`queue.rs`). Processing happens in `pricing-worker`; this only
//! enqueues. Who may do what: anyone may buy (a guest gets an `order_access_token` for that one order); an
//! order is read or cancelled by its owner (the token's `sub`), an admin, or whoever sends its
//! `X-Order-Token`; anyone else is told it does not exist. Listing needs a token: a shopper sees their own
//! orders, an admin all (or one `user_id`'s).

mod forms;
mod queue;
mod request;

use axum::{
    extract::{Extension, State},
    http::{HeaderMap, HeaderName, StatusCode},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use pricing_core::{
    db::orders,
    domain::{Order, OrderItem, OrderStatus, Page},
};
use request::CreateOrder;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::paging::PageParams;
use crate::{
    auth::Caller,
    error::{ApiResult, ErrorBody},
    extract::{text_field, Id, Json, Query},
    limits::RequestDeadline,
    ApiContext, ApiError,
};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .merge(queue::router())
        .routes(routes!(read))
        .routes(routes!(status))
        .routes(routes!(cancel))
}

/// An order as clients see it; `product_id` and `quantity` are also given for single-item orders.
#[derive(Debug, Serialize, ToSchema)]
struct OrderResponse {
    id: i64,
    /// The owner's id (their token's `sub`); for a guest's order, the label its client sent, if any.
    user_id: Option<String>,
    /// A guest's order: reached only with its `order_access_token`.
    guest: bool,
    /// With a guest's new (or replayed) order only: send it as `X-Order-Token` to read or cancel this
    /// order. It is not stored and cannot be shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_access_token: Option<String>,
    status: OrderStatus,
    items: Vec<OrderItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<i32>,
    total_price: Decimal,
    attempts: i32,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    processing_started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl From<Order> for OrderResponse {
    fn from(o: Order) -> Self {
        let single = (o.items.len() == 1).then(|| (o.items[0].product_id, o.items[0].quantity));
        Self {
            id: o.id,
            guest: o.user_id.is_none(),
            user_id: o.user_id.or(o.guest_label),
            order_access_token: None,
            status: o.status,
            product_id: single.map(|s| s.0),
            quantity: single.map(|s| s.1),
            items: o.items,
            total_price: o.total_price,
            attempts: o.attempts,
            failure_reason: o.failure_reason,
            created_at: o.created_at,
            updated_at: o.updated_at,
            processing_started_at: o.processing_started_at,
            completed_at: o.completed_at,
        }
    }
}

/// Buys: the order use case resolves and prices the lines, runs the sale and enqueues the wake-up job;
/// this answers 201 with the order `pending`. With an `Idempotency-Key` a retry gets the first order back
/// (201, the same body, `Idempotent-Replayed: true`) and buys nothing. Anyone may buy: a shopper's order
/// is theirs (their token's `sub`), a guest's comes with an `order_access_token`.
#[utoipa::path(post, path = "", operation_id = "create_order", tag = "orders", request_body = forms::OrderForms,
    security((), ("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Retry-safe key, scoped to the shopper (guests share one scope: use a random key): \
                           the same key and body replay the first order")),
    responses(
        (status = 201, description = "Placed (or replayed)", body = OrderResponse,
         headers(("Idempotent-Replayed" = String, description = "true when this is the first order, replayed"))),
        (status = 400, description = "Not enough stock", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 409, description = "The price changed since the customer saw it, or the Idempotency-Key was used with another request", body = ErrorBody)))]
async fn create(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Extension(deadline): Extension<RequestDeadline>,
    headers: HeaderMap,
    Json(body): Json<CreateOrder>,
) -> ApiResult<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    let limits = &ctx.settings.limits;
    let request = body.validate(&caller, key, limits, deadline.for_sale(limits.request_timeout))?;
    let placed = ctx.orders.place(request).await?;
    let replayed = [(IDEMPOTENT_REPLAYED, if placed.replayed { "true" } else { "false" })];
    let mut answer = OrderResponse::from(placed.order);
    answer.order_access_token = placed.access_token;
    Ok((StatusCode::CREATED, replayed, axum::Json(answer)))
}

const ORDER_TOKEN: &str = "x-order-token";

/// The order `id`, if this caller (with the `X-Order-Token` they sent, if any) may reach it; 404 otherwise.
async fn reachable_order(
    ctx: &ApiContext,
    caller: &Caller,
    headers: &HeaderMap,
    id: i64,
) -> ApiResult<Order> {
    let access = caller.order_access(order_token(headers));
    Ok(orders::get(&ctx.db, id, &access).await?)
}

fn order_token(headers: &HeaderMap) -> Option<&str> {
    headers.get(ORDER_TOKEN).and_then(|v| v.to_str().ok()).map(str::trim)
}

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str().map(str::trim) {
        Ok(key) if (1..=MAX_KEY_LEN).contains(&key.len()) && key.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(key))
        }
        _ => Err(ApiError::Validation(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))),
    }
}

/// An order, for its owner, an admin, or whoever sends its `X-Order-Token`.
#[utoipa::path(get, path = "/{id}", operation_id = "get_order", tag = "orders",
    security(("bearer" = []), ("order_token" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses((status = 200, description = "The order", body = OrderResponse),
              (status = 404, description = "No such order, or not yours", body = ErrorBody)))]
async fn read(
    State(ctx): State<ApiContext>,
    caller: Caller,
    headers: HeaderMap,
    Id(id): Id,
) -> ApiResult<axum::Json<OrderResponse>> {
    Ok(axum::Json(reachable_order(&ctx, &caller, &headers, id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderStatusView {
    order_id: i64,
    status: OrderStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An order's status only; who may read it as for the order.
#[utoipa::path(get, path = "/{id}/status", operation_id = "get_order_status", tag = "orders",
    security(("bearer" = []), ("order_token" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses((status = 200, description = "Its status", body = OrderStatusView),
              (status = 404, description = "No such order, or not yours", body = ErrorBody)))]
async fn status(
    State(ctx): State<ApiContext>,
    caller: Caller,
    headers: HeaderMap,
    Id(id): Id,
) -> ApiResult<axum::Json<OrderStatusView>> {
    let order = reachable_order(&ctx, &caller, &headers, id).await?;
    Ok(axum::Json(OrderStatusView {
        order_id: order.id,
        status: order.status,
        created_at: order.created_at,
        updated_at: order.updated_at,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListFilter {
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
    /// Admins only: one shopper's orders. A shopper always sees their own.
    #[param(min_length = 1, max_length = 255)]
    user_id: Option<String>,
}

/// The caller's orders, newest first (an admin's: everyone's, or one `user_id`'s). A guest has no list:
/// their orders are reached one by one with each order's token.
#[utoipa::path(get, path = "", operation_id = "list_orders", tag = "orders", params(PageParams, ListFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of orders", body = Page<OrderResponse>)))]
async fn list(
    State(ctx): State<ApiContext>,
    caller: Caller,
    Query(paging): Query<PageParams>,
    Query(filter): Query<ListFilter>,
) -> ApiResult<axum::Json<Page<OrderResponse>>> {
    let (page, page_size) = paging.checked(&ctx.settings.limits)?;
    let owner = match &caller {
        Caller::Guest => return Err(ApiError::Unauthorized),
        c if c.is_admin() => match filter.user_id.as_deref() {
            // No shopper's id holds such characters (tokens with them are refused): nobody's orders.
            Some(u) if !pricing_core::domain::is_printable_text(u) => {
                return Ok(axum::Json(Page::new(vec![], 0, page, page_size)));
            }
            u => u.map(|u| text_field("user_id", u, 1, ctx.settings.limits.max_text_len)).transpose()?,
        },
        c => c.user_id().map(str::to_string),
    };
    let status = filter
        .status
        .as_deref()
        .map(|s| super::one_of("status", s, OrderStatus::ALL, OrderStatus::as_str))
        .transpose()?;
    let page = orders::list(&ctx.db, owner.as_deref(), status, page, page_size).await?;
    Ok(axum::Json(Page::new(
        page.items.into_iter().map(Into::into).collect(),
        page.total,
        page.page,
        page.page_size,
    )))
}

/// Cancels a pending order and gives its stock back; for its owner, an admin, or its `X-Order-Token`.
#[utoipa::path(post, path = "/{id}/cancel", operation_id = "cancel_order", tag = "orders",
    security(("bearer" = []), ("order_token" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses((status = 200, description = "Cancelled", body = OrderResponse),
              (status = 404, description = "No such order, or not yours", body = ErrorBody),
              (status = 409, description = "No longer pending", body = ErrorBody)))]
async fn cancel(
    State(ctx): State<ApiContext>,
    caller: Caller,
    headers: HeaderMap,
    Id(id): Id,
) -> ApiResult<axum::Json<OrderResponse>> {
    let access = caller.order_access(order_token(&headers));
    Ok(axum::Json(ctx.orders.cancel(id, access).await?.into()))
}
