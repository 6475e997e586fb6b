//! The cheap order views any caller may read: counts per status, the average processing time, and what is
//! waiting in line. They show figures and ids, never whose an order is.

use axum::extract::State;
use pricing_core::{db::orders, domain::OrderStatus};
use serde::Serialize;
use utoipa::ToSchema;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ApiResult, ApiContext};

pub(super) fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(queue_status))
        // The older service's name for the queue view.
        .routes(routes!(queue_status_legacy))
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderMetrics {
    average_processing_time_seconds: f64,
    /// Orders per status.
    order_status_counts: std::collections::BTreeMap<String, i64>,
    total_processed: i64,
}

/// Order counts per status and the average processing time.
#[utoipa::path(get, path = "/metrics", security((), ("bearer" = [])), operation_id = "order_metrics", tag = "orders",
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
#[utoipa::path(get, path = "/queue", security((), ("bearer" = [])), operation_id = "order_queue", tag = "orders",
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
#[utoipa::path(get, path = "/status", operation_id = "order_queue_old_name", security((), ("bearer" = [])), tag = "orders",
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
