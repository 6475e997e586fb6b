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
    domain::{NewOrder, Order, OrderItem, OrderStatus, Page, ProductRef},
    jobs::ProcessOrder,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    error::ApiResult,
    extract::{page_params, text_field, Id, Json, ProductRefInput, Query},
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
    /// With `product_id`: the quote to honour.
    quote_id: Option<String>,
    /// Who is buying, for the dynamic price of lines without a quote.
    user_location: Option<String>,
    #[serde(default)]
    is_prime_member: bool,
    items: Option<Vec<OrderLine>>,
    item_ids: Option<Vec<ProductRefInput>>,
    total_amount: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderLine {
    product_id: ProductRefInput,
    quantity: i32,
    quote_id: Option<String>,
}

/// A validated order request: the order, and the quote (if any) each line asks to honour.
struct OrderRequest {
    order: NewOrder,
    quotes: Vec<Option<String>>,
    location: Option<String>,
    is_member: bool,
}

impl CreateOrder {
    fn validate(self) -> ApiResult<OrderRequest> {
        let user_id = self.user_id.as_deref().map(|u| text_field("user_id", u, 1, 255)).transpose()?;
        let forms = [self.product_id.is_some(), self.items.is_some(), self.item_ids.is_some()];
        if forms.iter().filter(|f| **f).count() != 1 {
            return Err(ApiError::Validation(
                "send exactly one of product_id (with quantity), items, or item_ids".into(),
            ));
        }
        if (self.quantity.is_some() || self.quote_id.is_some()) && !forms[0] {
            return Err(ApiError::Validation(
                "quantity and quote_id go with product_id; with items, put them in each item".into(),
            ));
        }
        let (lines, quotes): (Vec<(ProductRef, i32)>, Vec<Option<String>>) =
            if let Some(product_id) = self.product_id {
                (vec![(product_id.0, self.quantity.unwrap_or(1))], vec![self.quote_id])
            } else if let Some(items) = self.items {
                items.into_iter().map(|l| ((l.product_id.0, l.quantity), l.quote_id)).unzip()
            } else {
                self.item_ids.unwrap_or_default().into_iter().map(|r| ((r.0, 1), None)).unzip()
            };
        if let Some(location) = self.user_location.as_deref() {
            text_field("user_location", location, 0, 32)?;
        }
        if lines.is_empty() {
            return Err(ApiError::Validation("an order needs at least one item".into()));
        }
        if lines.len() > MAX_LINES {
            return Err(ApiError::Validation(format!("an order may have at most {MAX_LINES} items")));
        }
        if let Some((r, q)) = lines.iter().find(|(_, q)| !(1..=10_000).contains(q)) {
            return Err(ApiError::Validation(format!(
                "quantity must be between 1 and 10000 (product {r}: {q})"
            )));
        }
        if let Some(total) = self.total_amount {
            if total < Decimal::ZERO {
                return Err(ApiError::Validation("total_amount must not be negative".into()));
            }
        }
        Ok(OrderRequest {
            order: NewOrder { user_id, lines, expected_total: self.total_amount, unit_prices: Vec::new() },
            quotes,
            location: self.user_location,
            is_member: self.is_prime_member,
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

/// Buys: prices each line (an honoured quote, or the current dynamic price), then one transaction in
/// PostgreSQL, then the cached products are refreshed, demand is counted and a wake-up job is enqueued. If
/// the enqueue fails the order is still safe: the worker's sweeper finds it in PostgreSQL.
async fn create(
    State(ctx): State<ApiContext>,
    Json(body): Json<CreateOrder>,
) -> ApiResult<impl IntoResponse> {
    let request = body.validate()?;
    let (new, shopper) = resolve_lines(&ctx, request).await?;
    let product_ids: Vec<i64> = new.lines.iter().filter_map(|(r, _)| product_id(r)).collect();
    // Its own task: once the transaction starts, the purchase, the cache refresh and the enqueue finish
    // even if the client disconnects (which drops this handler).
    let order = run_to_completion(&ctx, move |ctx| async move {
        let price_of = ctx.pricing.order_pricer(&product_ids, shopper).await;
        let (order, products) = orders::create(&ctx.db, &new, price_of).await?;
        ctx.products_changed(&products, true).await;
        if let Err(e) = ctx.order_queue.enqueue(ProcessOrder { order_id: order.id }, true).await {
            tracing::warn!(order_id = order.id, error = %e, "enqueue failed; the sweeper will pick the order up");
        }
        Ok(order)
    })
    .await?;
    tracing::info!(order_id = order.id, total = %order.total_price, "order placed");
    Ok((StatusCode::CREATED, axum::Json(OrderResponse::from(order))))
}

/// Runs `work` in its own task and waits for it: a write and what must follow its commit are never cut off
/// half-way by a client going away.
async fn run_to_completion<T, F, Fut>(ctx: &ApiContext, work: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(ApiContext) -> Fut,
    Fut: std::future::Future<Output = pricing_core::Result<T>> + Send + 'static,
{
    tokio::spawn(work(ctx.clone()))
        .await
        .map_err(|e| pricing_core::Error::Unavailable(format!("the request's task failed: {e}")))?
        .map_err(Into::into)
}

fn product_id(r: &ProductRef) -> Option<i64> {
    match r {
        ProductRef::Id(id) => Some(*id),
        ProductRef::Sku(_) => None,
    }
}

/// Resolves SKUs to ids and checks the quotes lines name: a valid quote for that product and customer
/// fixes the line's unit price; other lines are priced from the locked row inside the transaction.
async fn resolve_lines(
    ctx: &ApiContext,
    request: OrderRequest,
) -> ApiResult<(NewOrder, pricing_core::pricing::Shopper)> {
    let OrderRequest { mut order, quotes, location, is_member } = request;
    let shopper = ctx.pricing.shopper(location.as_deref(), is_member);
    let mut unit_prices: Vec<(i64, Decimal)> = Vec::new();
    let mut unquoted: Vec<i64> = Vec::new();
    for ((product_ref, _), quote_id) in order.lines.iter_mut().zip(quotes) {
        let product_id = ctx.pricing.resolve(product_ref).await?;
        *product_ref = ProductRef::Id(product_id);
        let Some(quote_id) = quote_id else {
            unquoted.push(product_id);
            continue;
        };
        let price = honoured_quote(ctx, &quote_id, product_id, order.user_id.as_deref(), &shopper).await?;
        match unit_prices.iter().find(|(id, _)| *id == product_id) {
            Some((_, p)) if *p != price => {
                return Err(ApiError::Validation(format!(
                    "product {product_id} appears twice with different quotes; list it once"
                )))
            }
            Some(_) => {}
            None => unit_prices.push((product_id, price)),
        }
    }
    if let Some((id, _)) = unit_prices.iter().find(|(id, _)| unquoted.contains(id)) {
        return Err(ApiError::Validation(format!(
            "product {id} appears both with and without a quote; list it once"
        )));
    }
    order.unit_prices = unit_prices;
    Ok((order, shopper))
}

/// The quoted price, if the quote is still valid and was made for this product and customer.
async fn honoured_quote(
    ctx: &ApiContext,
    quote_id: &str,
    product_id: i64,
    user_id: Option<&str>,
    shopper: &pricing_core::pricing::Shopper,
) -> ApiResult<Decimal> {
    let quote = ctx.pricing.stored_quote(quote_id).await?;
    let reason = match &quote {
        None => format!("Quote {quote_id} has expired or does not exist"),
        Some(q) if q.product_id != product_id => format!("Quote {quote_id} is for product {}", q.product_id),
        Some(q) if q.user_id.as_deref() != user_id => {
            format!("Quote {quote_id} was made for another customer")
        }
        Some(q) => return Ok(q.final_price),
    };
    let current_price = ctx.pricing.current_price(product_id, shopper).await?;
    Err(pricing_core::Error::QuoteRejected { reason, product_id, current_price }.into())
}

async fn read(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<OrderResponse>> {
    Ok(axum::Json(orders::get(&ctx.db, id).await?.into()))
}

async fn status(State(ctx): State<ApiContext>, Id(id): Id) -> ApiResult<axum::Json<serde_json::Value>> {
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
    let order = run_to_completion(&ctx, move |ctx| async move {
        let (order, products) = orders::cancel(&ctx.db, id).await?;
        ctx.products_changed(&products, false).await;
        Ok(order)
    })
    .await?;
    tracing::info!(order_id = id, "order cancelled");
    Ok(axum::Json(order.into()))
}

async fn metrics(State(ctx): State<ApiContext>) -> ApiResult<axum::Json<serde_json::Value>> {
    let stats = orders::stats(&ctx.db).await?;
    let counts: serde_json::Map<String, serde_json::Value> =
        stats.counts.iter().map(|(s, n)| (s.as_str().to_string(), json!(n))).collect();
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
