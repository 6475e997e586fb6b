//! `POST /api/v1/recalculate` starts a bulk price recalculation in the worker and returns at once (202);
//! `GET /api/v1/tasks/{task_id}` shows its progress from PostgreSQL.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use pricing_core::{
    db::tasks::{self, Task},
    jobs::RecalculatePrices,
};
use serde_json::json;
use uuid::Uuid;

use crate::{auth::Admin, error::ApiResult, ApiContext, ApiError};

pub fn router() -> Router<ApiContext> {
    Router::new().route("/recalculate", post(recalculate)).route("/tasks/{task_id}", get(read))
}

/// Records the task (`queued`), enqueues its job and answers. If the enqueue fails the task is still
/// recorded, and the worker's sweeper enqueues it again.
async fn recalculate(_: Admin, State(ctx): State<ApiContext>) -> ApiResult<impl IntoResponse> {
    let task = tasks::create(&ctx.db, RecalculatePrices::KIND_ALL, None, false).await?;
    if let Err(e) = ctx.task_queue.enqueue(RecalculatePrices::new(task.id), true).await {
        tracing::warn!(task_id = %task.id, error = %e, "enqueue failed; the sweeper will pick the task up");
    }
    tracing::info!(task_id = %task.id, "price recalculation queued");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "task_id": task.id,
            "status": task.status,
            "status_url": format!("/api/v1/tasks/{}", task.id),
        })),
    ))
}

async fn read(State(ctx): State<ApiContext>, Path(raw): Path<String>) -> ApiResult<axum::Json<Task>> {
    let id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::Validation(format!("task_id must be a UUID, got {raw:?}")))?;
    Ok(axum::Json(tasks::get(&ctx.db, id).await?))
}
