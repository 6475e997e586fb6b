//! `POST /api/v1/recalculate` starts a bulk price recalculation in the worker and returns at once (202);
//! `GET /api/v1/tasks/{task_id}` shows its progress from PostgreSQL.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use pricing_core::{
    db::tasks::{self, Coverage, Task, TaskKind, TaskStatus},
    jobs::RecalculatePrices,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Admin,
    error::{ApiResult, ErrorBody},
    extract::PathText,
    ApiContext, ApiError,
};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(recalculate)).routes(routes!(read))
}

/// A recalculation started: follow it at `status_url`.
#[derive(Debug, Serialize, ToSchema)]
struct TaskAccepted {
    task_id: Uuid,
    status: TaskStatus,
    status_url: String,
}

/// Records the task (`queued`), enqueues its job and answers. If the enqueue fails the task is still
/// recorded, and the worker's sweeper enqueues it again.
#[utoipa::path(post, path = "/recalculate", operation_id = "start_recalculation", tag = "tasks", security(("bearer" = [])),
    responses((status = 202, description = "Queued", body = TaskAccepted)))]
async fn recalculate(_: Admin, State(ctx): State<ApiContext>) -> ApiResult<impl IntoResponse> {
    let task = tasks::create(&ctx.db, TaskKind::RecalculateAll, Coverage::Everything).await?;
    if let Err(e) = ctx.task_queue.enqueue(RecalculatePrices::new(task.id), true).await {
        tracing::warn!(task_id = %task.id, error = %e, "enqueue failed; the sweeper will pick the task up");
    }
    tracing::info!(task_id = %task.id, "price recalculation queued");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(TaskAccepted {
            task_id: task.id,
            status: task.status,
            status_url: format!("/api/v1/tasks/{}", task.id),
        }),
    ))
}

/// A recalculation's progress.
#[utoipa::path(get, path = "/tasks/{task_id}", operation_id = "get_task", tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's id")),
    responses((status = 200, description = "The task", body = Task),
              (status = 404, description = "No such task", body = ErrorBody)))]
async fn read(State(ctx): State<ApiContext>, PathText(raw): PathText) -> ApiResult<axum::Json<Task>> {
    let id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::Validation(format!("task_id must be a UUID, got {raw:?}")))?;
    Ok(axum::Json(tasks::get(&ctx.db, id).await?))
}
