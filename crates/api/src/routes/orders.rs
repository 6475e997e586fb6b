//! `/api/v1/orders` (and `/orders` for the older order service's clients): buying, reading, cancelling,
//! and the cheap metrics and queue views. Processing happens in `pricing-worker`; this only enqueues.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName, StatusCode},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use pricing_core::{
    config::Limits,
    db::orders,
    domain::{Order, OrderItem, OrderStatus, Page, ProductRef},
    money,
    orders::{IdempotencyKey, OrderLine, OrderRequest},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiResult, ErrorBody},
    extract::{page_params, text_field, Id, Json, Query},
    ApiContext, ApiError,
};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(metrics))
        .routes(routes!(queue_status))
        // The older service's name for the queue view.
        .routes(routes!(queue_status_legacy))
        .routes(routes!(read))
        .routes(routes!(status))
        .routes(routes!(cancel))
}

/// All three request shapes clients send: `{product_id, quantity}`, `{user_id, items: [...]}`, and the
/// older service's `{user_id, item_ids: [...], total_amount}`. Send exactly one of `product_id`, `items` and
/// `item_ids`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateOrder {
    #[schema(min_length = 1, max_length = 255)]
    user_id: Option<String>,
    product_id: Option<ProductRef>,
    /// With `product_id`; 1 when absent.
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: Option<i32>,
    /// With `product_id`: the quote to honour (its signed token), and the unit price the customer saw.
    #[schema(max_length = 1024)]
    quote_id: Option<String>,
    expected_unit_price: Option<Decimal>,
    /// Who is buying, for the dynamic price of lines without a quote.
    #[schema(max_length = 32)]
    user_location: Option<String>,
    #[serde(default)]
    is_prime_member: bool,
    #[schema(min_items = 1, max_items = 100)]
    items: Option<Vec<LineInput>>,
    #[schema(min_items = 1, max_items = 100)]
    item_ids: Option<Vec<ProductRef>>,
    /// The total the customer saw; `total_amount` is the older form's name for it.
    expected_total: Option<Decimal>,
    total_amount: Option<Decimal>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LineInput {
    product_id: ProductRef,
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i32,
    #[schema(max_length = 1024)]
    quote_id: Option<String>,
    expected_unit_price: Option<Decimal>,
}

impl CreateOrder {
    /// Checks the request's shape and bounds; the pricing rules are the order use case's. `key` is the
    /// `Idempotency-Key` header, if sent.
    fn validate(self, key: Option<&str>, limits: &Limits) -> ApiResult<OrderRequest> {
        // The request as parsed (ids and SKUs as sent, amounts as numbers): the same order sent twice
        // hashes the same however its JSON was spaced or ordered.
        let canonical = serde_json::to_string(&self).expect("an order request serializes");
        let user_id =
            self.user_id.as_deref().map(|u| text_field("user_id", u, 1, limits.max_text_len)).transpose()?;
        let forms = [self.product_id.is_some(), self.items.is_some(), self.item_ids.is_some()];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(ApiError::Validation(
                "send exactly one of product_id (with quantity), items, or item_ids".into(),
            ));
        }
        let single_only =
            [self.quantity.is_some(), self.quote_id.is_some(), self.expected_unit_price.is_some()];
        if single_only.contains(&true) && !forms[0] {
            return Err(ApiError::Validation(
                "quantity, quote_id and expected_unit_price go with product_id; with items, put them in each item"
                    .into(),
            ));
        }
        let line = |product: ProductRef, quantity, quote_id, expected_unit_price| OrderLine {
            product,
            quantity,
            quote_id,
            expected_unit_price,
        };
        let lines: Vec<OrderLine> = if let Some(product_id) = self.product_id {
            vec![line(product_id, self.quantity.unwrap_or(1), self.quote_id, self.expected_unit_price)]
        } else if let Some(items) = self.items {
            items
                .into_iter()
                .map(|l| line(l.product_id, l.quantity, l.quote_id, l.expected_unit_price))
                .collect()
        } else {
            self.item_ids.unwrap_or_default().into_iter().map(|r| line(r, 1, None, None)).collect()
        };
        if let Some(location) = self.user_location.as_deref() {
            text_field("user_location", location, 0, 32)?;
        }
        if lines.is_empty() {
            return Err(ApiError::Validation("an order needs at least one item".into()));
        }
        if lines.len() > limits.max_order_items {
            let max = limits.max_order_items;
            return Err(ApiError::Validation(format!("an order may have at most {max} items")));
        }
        if let Some(l) = lines.iter().find(|l| !(1..=limits.max_quantity).contains(&l.quantity)) {
            return Err(ApiError::Validation(format!(
                "quantity must be between 1 and {} (product {}: {})",
                limits.max_quantity, l.product, l.quantity
            )));
        }
        for price in lines.iter().filter_map(|l| l.expected_unit_price) {
            money::validate_price("expected_unit_price", price).map_err(ApiError::Validation)?;
        }
        if self.expected_total.is_some() && self.total_amount.is_some() {
            return Err(ApiError::Validation("send expected_total or total_amount, not both".into()));
        }
        let (field, expected_total) = match (self.expected_total, self.total_amount) {
            (Some(total), _) => ("expected_total", Some(total)),
            (None, total) => ("total_amount", total),
        };
        if expected_total.is_some_and(|total| total < Decimal::ZERO) {
            return Err(ApiError::Validation(format!("{field} must not be negative")));
        }
        let idempotency = key.map(|k| IdempotencyKey::new(k, user_id.as_deref(), &canonical));
        Ok(OrderRequest {
            user_id,
            lines,
            user_location: self.user_location,
            is_prime_member: self.is_prime_member,
            expected_total,
            idempotency,
        })
    }
}

/// An order as clients see it; `product_id` and `quantity` are also given for single-item orders.
#[derive(Debug, Serialize, ToSchema)]
struct OrderResponse {
    id: i64,
    user_id: Option<String>,
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
            user_id: o.user_id,
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
/// (201, the same body, `Idempotent-Replayed: true`) and buys nothing.
#[utoipa::path(post, path = "", operation_id = "create_order", tag = "orders", request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255,
            description = "Retry-safe key: the same key and body replay the first order")),
    responses(
        (status = 201, description = "Placed (or replayed)", body = OrderResponse,
         headers(("Idempotent-Replayed" = String, description = "true when this is the first order, replayed"))),
        (status = 400, description = "Not enough stock", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 409, description = "The price changed since the customer saw it", body = ErrorBody)))]
async fn create(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Json(body): Json<CreateOrder>,
) -> ApiResult<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    let placed = ctx.orders.place(body.validate(key, &ctx.settings.limits)?).await?;
    let replayed = [(IDEMPOTENT_REPLAYED, if placed.replayed { "true" } else { "false" })];
    Ok((StatusCode::CREATED, replayed, axum::Json(OrderResponse::from(placed.order))))
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

#[utoipa::path(get, path = "/{id}", operation_id = "get_order", tag = "orders", params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses((status = 200, description = "The order", body = OrderResponse),
              (status = 404, description = "No such order", body = ErrorBody)))]
async fn read(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<OrderResponse>> {
    Ok(axum::Json(orders::get(&ctx.db, id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderStatusView {
    order_id: i64,
    status: OrderStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An order's status only.
#[utoipa::path(get, path = "/{id}/status", operation_id = "get_order_status", tag = "orders", params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses((status = 200, description = "Its status", body = OrderStatusView),
              (status = 404, description = "No such order", body = ErrorBody)))]
async fn status(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<OrderStatusView>> {
    let order = orders::get(&ctx.db, id).await?;
    Ok(axum::Json(OrderStatusView {
        order_id: order.id,
        status: order.status,
        created_at: order.created_at,
        updated_at: order.updated_at,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// From 1.
    #[param(minimum = 1, maximum = 1_000_000)]
    page: Option<i64>,
    /// 1 to MAX_PAGE_SIZE (100); 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
}

/// Orders, newest first.
#[utoipa::path(get, path = "", operation_id = "list_orders", tag = "orders", params(ListParams),
    responses((status = 200, description = "A page of orders", body = Page<OrderResponse>)))]
async fn list(
    State(ctx): State<ApiContext>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Page<OrderResponse>>> {
    let (page, page_size) = page_params(&ctx.settings.limits, params.page, params.page_size)?;
    let status = params
        .status
        .as_deref()
        .map(|s| {
            OrderStatus::parse(s).ok_or_else(|| {
                ApiError::Validation(format!(
                    "status must be one of pending, processing, completed, failed, cancelled; got {s:?}"
                ))
            })
        })
        .transpose()?;
    let page = orders::list(&ctx.db, status, page, page_size).await?;
    Ok(axum::Json(Page::new(
        page.items.into_iter().map(Into::into).collect(),
        page.total,
        page.page,
        page.page_size,
    )))
}

/// Cancels a `pending` order and gives its stock back.
#[utoipa::path(post, path = "/{id}/cancel", operation_id = "cancel_order", tag = "orders", params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses((status = 200, description = "Cancelled", body = OrderResponse),
              (status = 404, description = "No such order", body = ErrorBody),
              (status = 409, description = "No longer pending", body = ErrorBody)))]
async fn cancel(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<OrderResponse>> {
    Ok(axum::Json(ctx.orders.cancel(id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderMetrics {
    average_processing_time_seconds: f64,
    /// Orders per status.
    order_status_counts: std::collections::BTreeMap<String, i64>,
    total_processed: i64,
}

/// Order counts per status and the average processing time.
#[utoipa::path(get, path = "/metrics", operation_id = "order_metrics", tag = "orders",
    responses((status = 200, description = "The figures", body = OrderMetrics)))]
async fn metrics(State(ctx): State<ApiContext>) -> ApiResult<axum::Json<OrderMetrics>> {
    let stats = orders::stats(&ctx.db).await?;
    Ok(axum::Json(OrderMetrics {
        average_processing_time_seconds: stats.average_processing_time_seconds,
        order_status_counts: stats.counts.iter().map(|(s, n)| (s.as_str().to_string(), *n)).collect(),
        total_processed: stats.total_processed(),
    }))
}

/// What is waiting: orders still `pending` (the truth, from PostgreSQL), the first ten in line, and the
/// depth of the Redis wake-up queue.
#[utoipa::path(get, path = "/queue", operation_id = "order_queue", tag = "orders",
    responses((status = 200, description = "The queue", body = QueueStatus)))]
async fn queue_status(State(ctx): State<ApiContext>) -> ApiResult<axum::Json<QueueStatus>> {
    let stats = orders::stats(&ctx.db).await?;
    let pending_orders = orders::oldest_pending(&ctx.db, 10).await?;
    let redis_queue_depth = ctx.order_queue.depth().await.ok();
    Ok(axum::Json(QueueStatus {
        queue_length: stats.count(OrderStatus::Pending),
        pending_orders,
        total_processed: stats.total_processed(),
        processing: stats.count(OrderStatus::Processing),
        redis_queue_depth,
    }))
}

/// The queue view under the older service's name.
#[utoipa::path(get, path = "/status", operation_id = "order_queue_old_name", tag = "orders",
    responses((status = 200, description = "The queue", body = QueueStatus)))]
async fn queue_status_legacy(ctx: State<ApiContext>) -> ApiResult<axum::Json<QueueStatus>> {
    queue_status(ctx).await
}

#[derive(Debug, Serialize, ToSchema)]
struct QueueStatus {
    /// Orders still `pending` (from PostgreSQL).
    queue_length: i64,
    /// The first ten in line.
    pending_orders: Vec<i64>,
    total_processed: i64,
    processing: i64,
    /// Wake-up jobs in the Redis queue; absent when Redis does not answer.
    redis_queue_depth: Option<u64>,
}
