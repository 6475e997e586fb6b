//! `/api/v1/orders` (and `/orders` for the older order service's clients): buying, reading, cancelling,
//! and the cheap metrics and queue views. Processing happens in `pricing-worker`; this only enqueues.

use axum::{
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use pricing_core::{
    db::orders,
    domain::{NewOrder, Order, OrderItem, OrderStatus, Page, Product, ProductRef},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

use crate::{
    error::ApiResult,
    extract::{page_params, Id, Json, Query},
    routes::products::refresh_cached,
    ApiContext, ApiError,
};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/", get(list).post(create))
        .route("/metrics", get(metrics))
        .route("/queue", get(queue_status))
        // The older service's name for the queue view.
        .route("/status", get(queue_status))
        .route("/{id}", get(read))
        .route("/{id}/status", get(status))
        .route("/{id}/cancel", post(cancel))
}

/// The most lines one order may have.
const MAX_LINES: usize = 100;

/// All three request shapes clients send: `{product_id, quantity}`, `{user_id, items: [...]}`, and the
/// older service's `{user_id, item_ids: [...], total_amount}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrder {
    user_id: Option<String>,
    product_id: Option<ProductRefInput>,
    quantity: Option<i32>,
    items: Option<Vec<OrderLine>>,
    item_ids: Option<Vec<ProductRefInput>>,
    total_amount: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderLine {
    product_id: ProductRefInput,
    quantity: i32,
}

/// A product named by integer id or by SKU string.
#[derive(Debug, Clone)]
struct ProductRefInput(ProductRef);

impl<'de> Deserialize<'de> for ProductRefInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProductRefInput;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a product id (positive integer) or SKU (string)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v > 0 {
                    Ok(ProductRefInput(ProductRef::Id(v)))
                } else {
                    Err(E::custom("product id must be a positive integer"))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map_err(|_| E::custom("product id is too large"))
                    .and_then(|v| self.visit_i64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let v = v.trim();
                if let Ok(id) = v.parse::<i64>() {
                    return self.visit_i64(id);
                }
                if v.is_empty() || v.len() > 64 {
                    return Err(E::custom("product SKU must be 1 to 64 characters"));
                }
                Ok(ProductRefInput(ProductRef::Sku(v.to_string())))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl CreateOrder {
    fn validate(self) -> ApiResult<NewOrder> {
        let user_id = match self.user_id.map(|u| u.trim().to_string()) {
            Some(u) if u.is_empty() || u.len() > 255 => {
                return Err(ApiError::Validation(
                    "user_id must be 1 to 255 characters".into(),
                ))
            }
            other => other,
        };
        let forms = [
            self.product_id.is_some(),
            self.items.is_some(),
            self.item_ids.is_some(),
        ];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(ApiError::Validation(
                "send exactly one of product_id (with quantity), items, or item_ids".into(),
            ));
        }
        let lines: Vec<(ProductRef, i32)> = if let Some(product_id) = self.product_id {
            vec![(product_id.0, self.quantity.unwrap_or(1))]
        } else if let Some(items) = self.items {
            items
                .into_iter()
                .map(|l| (l.product_id.0, l.quantity))
                .collect()
        } else {
            self.item_ids
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.0, 1))
                .collect()
        };
        if self.quantity.is_some() && forms[0] == false {
            return Err(ApiError::Validation(
                "quantity goes with product_id; put it in each item".into(),
            ));
        }
        if lines.is_empty() {
            return Err(ApiError::Validation(
                "an order needs at least one item".into(),
            ));
        }
        if lines.len() > MAX_LINES {
            return Err(ApiError::Validation(format!(
                "an order may have at most {MAX_LINES} items"
            )));
        }
        if let Some((r, q)) = lines.iter().find(|(_, q)| !(1..=10_000).contains(q)) {
            return Err(ApiError::Validation(format!(
                "quantity must be between 1 and 10000 (product {r}: {q})"
            )));
        }
        if let Some(total) = self.total_amount {
            if total < Decimal::ZERO {
                return Err(ApiError::Validation(
                    "total_amount must not be negative".into(),
                ));
            }
        }
        Ok(NewOrder {
            user_id,
            lines,
            expected_total: self.total_amount,
        })
    }
}

/// An order as clients see it; `product_id` and `quantity` are also given for single-item orders.
#[derive(Debug, Serialize)]
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

/// Buys: one transaction in PostgreSQL, then the cached products are refreshed and a wake-up job is
/// enqueued. If the enqueue fails the order is still safe: the worker's sweeper finds it in PostgreSQL.
async fn create(
    State(ctx): State<ApiContext>,
    Json(body): Json<CreateOrder>,
) -> ApiResult<impl IntoResponse> {
    let new = body.validate()?;
    let (order, products) = orders::create(&ctx.db, &new).await?;
    after_stock_change(&ctx, &products).await;
    if let Err(e) = ctx.order_queue.enqueue(order.id, true).await {
        tracing::warn!(order_id = order.id, error = %e, "enqueue failed; the sweeper will pick the order up");
    }
    tracing::info!(order_id = order.id, total = %order.total_price, "order placed");
    Ok((StatusCode::CREATED, axum::Json(OrderResponse::from(order))))
}

async fn after_stock_change(ctx: &ApiContext, products: &[Product]) {
    for product in products {
        refresh_cached(ctx, product).await;
    }
}

async fn read(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<OrderResponse>> {
    Ok(axum::Json(orders::get(&ctx.db, id).await?.into()))
}

async fn status(
    State(ctx): State<ApiContext>,
    Id(id): Id,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let order = orders::get(&ctx.db, id).await?;
    Ok(axum::Json(json!({
        "order_id": order.id,
        "status": order.status,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    })))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    page: Option<i64>,
    page_size: Option<i64>,
    status: Option<String>,
}

async fn list(
    State(ctx): State<ApiContext>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Page<OrderResponse>>> {
    let (page, page_size) = page_params(params.page, params.page_size)?;
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

async fn cancel(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<OrderResponse>> {
    let (order, products) = orders::cancel(&ctx.db, id).await?;
    after_stock_change(&ctx, &products).await;
    tracing::info!(order_id = id, "order cancelled");
    Ok(axum::Json(order.into()))
}

async fn metrics(State(ctx): State<ApiContext>) -> ApiResult<axum::Json<serde_json::Value>> {
    let stats = orders::stats(&ctx.db).await?;
    let counts: serde_json::Map<String, serde_json::Value> = stats
        .counts
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    Ok(axum::Json(json!({
        "average_processing_time_seconds": stats.average_processing_time_seconds,
        "order_status_counts": counts,
        "total_processed": stats.total_processed(),
    })))
}

/// What is waiting: orders still `pending` (the truth, from PostgreSQL), the first ten in line, and the
/// depth of the Redis wake-up queue.
async fn queue_status(State(ctx): State<ApiContext>) -> ApiResult<axum::Json<serde_json::Value>> {
    let stats = orders::stats(&ctx.db).await?;
    let pending = orders::oldest_pending(&ctx.db, 10).await?;
    let redis_queue_depth = ctx.order_queue.depth().await.ok();
    Ok(axum::Json(json!({
        "queue_length": stats.count(OrderStatus::Pending),
        "pending_orders": pending,
        "total_processed": stats.total_processed(),
        "processing": stats.count(OrderStatus::Processing),
        "redis_queue_depth": redis_queue_depth,
    })))
}
